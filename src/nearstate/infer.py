"""Schema inference from JSON records.

Rules (each field is judged over every record observed):

* ``true``/``false`` → bool; integers → int; any float among them → float (ints widen to
  float: the documented widening rule); strings → str, or **text** (compressed long text)
  when their mean length is at least :data:`LONG_TEXT_MEAN` bytes.
* ``null`` or an absent field → the field is nullable (optional).
* arrays → list of their elements' type; an array only ever empty is ``list<str>``.
* objects → a nested record type named ``Parent.field`` whose fields are inferred the same
  way (identical nested values are stored once).
* a field only ever null is ``str?``.
* objects and arrays nested more than :data:`~nearstate.schema.MAX_DEPTH` levels below the
  record are refused: :class:`InputError` names the line and the path of the first value
  past the limit (nothing deeper is looked at, so any depth fails the same way).
* anything else — a string where numbers were seen, an object where a list was — is a
  contradiction: :class:`InputError` names the line and the field's path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .errors import InputError, SchemaError
from .schema import MAX_DEPTH, Field, FieldType, Schema, TypeDef, too_deep

LONG_TEXT_MEAN = 256

_CLASS_NAMES = {
    "bool": "a boolean", "number": "a number", "str": "a string", "list": "a list",
    "object": "an object",
}  # fmt: skip


class _Node:
    """What has been seen at one path."""

    __slots__ = (
        "cls",
        "fields",
        "float",
        "item",
        "n_objects",
        "n_str",
        "nullable",
        "present",
        "str_bytes",
    )

    def __init__(self) -> None:
        self.cls: str | None = None  # bool | number | str | list | object
        self.nullable = False
        self.float = False
        self.n_str = 0
        self.str_bytes = 0
        self.item: _Node | None = None
        self.fields: dict[str, _Node] = {}
        self.n_objects = 0
        self.present = 0  # times the field was present in its parent object

    def observe(self, v: Any, path: str, line: int | None, level: int) -> None:
        """Take value ``v`` at ``path`` into account. ``level`` is its depth: 0 for the
        record, 1 for the record's field values, one more inside each object or list."""
        if v is None:
            self.nullable = True
            return
        t = type(v)
        if t is bool:
            c = "bool"
        elif t is int or t is float:
            c = "number"
        elif t is str:
            c = "str"
        elif t is list:
            c = "list"
        elif isinstance(v, Mapping):
            c = "object"
        else:
            raise InputError(f"unsupported value {v!r}", line=line, field=path)
        if level > MAX_DEPTH and (c == "list" or c == "object"):
            raise InputError(too_deep(level), line=line, field=path)
        if self.cls is None:
            self.cls = c
        elif self.cls != c:
            raise InputError(
                f"is {_CLASS_NAMES[c]} here but {_CLASS_NAMES[self.cls]} in earlier records",
                line=line,
                field=path,
            )
        if c == "number":
            if t is float:
                self.float = True
        elif c == "str":
            self.n_str += 1
            self.str_bytes += len(v)
        elif c == "list":
            if self.item is None:
                self.item = _Node()
            item = self.item
            for x in v:
                item.observe(x, path + "[]", line, level + 1)
        elif c == "object":
            self.n_objects += 1
            fields = self.fields
            for k, x in v.items():
                node = fields.get(k)
                if node is None:
                    node = fields[k] = _Node()
                node.present += 1
                node.observe(x, f"{path}.{k}" if path else k, line, level + 1)

    def ftype(self, type_name: str, out: list[TypeDef]) -> FieldType:
        nullable = self.nullable
        c = self.cls
        if c is None:
            return FieldType("str", nullable=True)
        if c == "bool":
            return FieldType("bool", nullable)
        if c == "number":
            return FieldType("float" if self.float else "int", nullable)
        if c == "str":
            long = self.n_str and self.str_bytes / self.n_str >= LONG_TEXT_MEAN
            return FieldType("text" if long else "str", nullable)
        if c == "list":
            item = (
                FieldType("str")
                if self.item is None or (self.item.cls is None and not self.item.nullable)
                else self.item.ftype(type_name, out)
            )
            return FieldType("list", nullable, item=item)
        out.append(self.typedef(type_name, None, out))
        return FieldType("record", nullable, target=type_name)

    def typedef(self, name: str, key: Sequence[str] | None, out: list[TypeDef]) -> TypeDef:
        fields = []
        for fname, node in self.fields.items():
            ft = node.ftype(f"{name}.{fname}", out)
            absent = node.present < self.n_objects
            if absent and not ft.nullable:
                ft = ft.with_nullable()
            fields.append(Field(fname, ft, omit_null=absent and not node.nullable))
        return TypeDef(name, tuple(fields), tuple(key) if key else None)


class SchemaInferrer:
    """Accumulates JSON records of one type and proposes a schema for them."""

    def __init__(self, type_name: str, key: str | Sequence[str]):
        self.type_name = type_name
        self.key = (key,) if isinstance(key, str) else tuple(key)
        self._root = _Node()
        self._root.cls = "object"

    def observe(self, record: Any, line: int | None = None) -> None:
        """Take one record into account; a contradiction, or nesting deeper than
        :data:`~nearstate.schema.MAX_DEPTH`, raises InputError (naming ``line`` and the
        field's path)."""
        if not isinstance(record, Mapping):
            raise InputError(
                f"a record must be a JSON object, not {type(record).__name__}", line=line
            )
        for k in self.key:
            v = record.get(k)
            if v is None:
                raise InputError("the key field is missing or null", line=line, field=k)
            if type(v) not in (int, str):
                raise InputError(
                    f"a key must be a string or an integer, not {type(v).__name__}",
                    line=line,
                    field=k,
                )
        self._root.observe(record, "", line, 0)

    def schema(self) -> Schema:
        out: list[TypeDef] = []
        root = self._root.typedef(self.type_name, self.key, out)
        try:
            return Schema([*out, root])
        except SchemaError as e:
            raise InputError(str(e)) from e


def infer_schema(records: Iterable[Any], type_name: str, key: str | Sequence[str]) -> Schema:
    """Infer the schema of ``records`` (JSON-like dicts) as type ``type_name``."""
    inf = SchemaInferrer(type_name, key)
    for i, r in enumerate(records, 1):
        inf.observe(r, line=i)
    return inf.schema()
