"""Record types and their fields.

A :class:`Schema` is a set of :class:`TypeDef`, each an ordered tuple of :class:`Field`.
Keyed types (with a primary key) are the ones you look records up in; nested types (no key)
hold the values of fields whose type is another dataclass or, for inferred schemas, a JSON
object. Schemas are written into every blob as JSON (:meth:`Schema.to_json`).

Declaring types with dataclasses::

    @nearstate.record(key="id")
    @dataclass
    class Movie:
        id: int
        title: str
        synopsis: nearstate.LongText          # compressed per record
        director: nearstate.Ref["Person"]     # stored as the Person's ordinal
        genres: list[str]
        rating: float | None = None

Nesting is limited: a record holds at most :data:`MAX_DEPTH` (64) levels of nested
records, lists, sets and dicts below itself (a field ``a: list[list[int]]`` is two levels
deep; a reference is none, it is stored as an ordinal). A schema that nests deeper — or a
nested record type that contains itself, which nests without end — is refused with
:class:`SchemaError` naming the type and field; inference and import refuse deeper JSON
with :class:`InputError` naming the line and field. The limit keeps every recursive walk
over values and types (staging, encoding, digests, reading) far inside Python's
recursion limit.

Over ~600 lines on purpose: the schema's vocabulary — field types and their text form,
fields, types, the schema and its JSON, and declaring types with dataclasses — is one
concept that every other module imports; the dataclass part is its last section.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

import msgspec

from .errors import SchemaError

Kind = Literal[
    "int", "float", "bool", "str", "bytes", "datetime", "text", "list", "set", "dict",
    "record", "ref",
]  # fmt: skip
SCALAR_KINDS = frozenset({"int", "float", "bool", "str", "bytes", "datetime", "text"})
KEY_KINDS = frozenset({"int", "str", "bytes", "bool", "datetime"})

#: The most levels of nested records, lists, sets and dicts a record may hold below itself
#: (a JSON record ``{"a": {"b": [1]}}`` is two levels deep). Deeper schemas raise
#: SchemaError, deeper JSON input raises InputError; see the module docstring.
MAX_DEPTH = 64


def too_deep(levels: int) -> str:
    """The message for nesting ``levels`` deep, beyond :data:`MAX_DEPTH`."""
    return f"nested {levels} levels deep; nearstate allows at most {MAX_DEPTH}"


_DC_MISSING: Any = dataclasses.MISSING


class _NoDefault:
    """Marks a field without a default (distinct from a default of None)."""

    def __repr__(self) -> str:
        return "NO_DEFAULT"


_MISSING: Any = _NoDefault()


@dataclass(frozen=True, slots=True)
class FieldType:
    """The type of a field or of a collection's element.

    ``item`` is the element type of a list or set and the value type of a dict; ``key`` is a
    dict's key type; ``target`` names the type of a nested record or a reference.
    """

    kind: Kind
    nullable: bool = False
    item: FieldType | None = None
    key: FieldType | None = None
    target: str | None = None

    def spec(self) -> str:
        """A compact text form, e.g. ``list<str?>?`` or ``ref<Person>``; see :func:`parse_spec`."""
        if self.kind in ("list", "set"):
            assert self.item is not None
            body = f"{self.kind}<{self.item.spec()}>"
        elif self.kind == "dict":
            assert self.item is not None and self.key is not None
            body = f"dict<{self.key.spec()},{self.item.spec()}>"
        elif self.kind in ("record", "ref"):
            body = f"{self.kind}<{self.target}>"
        else:
            body = self.kind
        return body + ("?" if self.nullable else "")

    def with_nullable(self, nullable: bool = True) -> FieldType:
        return dataclasses.replace(self, nullable=nullable)

    def __str__(self) -> str:
        return self.spec()


def refs_to_keys(ft: FieldType, schema: Schema) -> FieldType:
    """``ft`` with every reference replaced by the type of its target's key (how a delta
    stores references). Composite keys cannot be stored so: SchemaError."""
    if ft.kind == "ref":
        assert ft.target is not None
        target = schema[ft.target]
        if target.key is None or len(target.key) != 1:
            raise SchemaError(
                f"a reference to {ft.target} (composite or no key) cannot be kept in a delta"
            )
        kf = next(f for f in target.fields if f.name == target.key[0])
        return dataclasses.replace(kf.type, nullable=ft.nullable)
    if ft.item is None and ft.key is None:
        return ft
    return dataclasses.replace(
        ft,
        item=None if ft.item is None else refs_to_keys(ft.item, schema),
        key=None if ft.key is None else refs_to_keys(ft.key, schema),
    )


def parse_spec(spec: str) -> FieldType:
    """Parse the text form written by :meth:`FieldType.spec`; SchemaError if malformed or
    nested more than :data:`MAX_DEPTH` levels deep."""
    text = spec.replace(" ", "")
    try:
        ftype, rest = _parse(text, 0, 0)
    except IndexError:
        raise SchemaError(f"bad type spec {spec!r}") from None
    if rest != len(text):
        raise SchemaError(f"bad type spec {spec!r}")
    return ftype


def _parse(s: str, i: int, level: int) -> tuple[FieldType, int]:
    """The type at ``s[i:]`` and where it ends; ``level`` counts the enclosing types."""
    j = i
    while j < len(s) and (s[j].isalnum() or s[j] == "_"):
        j += 1
    kind = s[i:j]
    item = key = None
    target = None
    if kind in ("list", "set", "dict", "record", "ref"):
        if j >= len(s) or s[j] != "<":
            raise SchemaError(f"bad type spec {s!r}: {kind} needs <...>")
        j += 1
        if kind in ("record", "ref"):
            end = _matching(s, j)
            target = s[j:end]
            if not target:
                raise SchemaError(f"bad type spec {s!r}: {kind} names no type")
            j = end + 1
        elif level >= MAX_DEPTH:
            short = s if len(s) <= 40 else s[:37] + "..."
            raise SchemaError(f"type spec {short!r} is {too_deep(level + 1)}")
        elif kind == "dict":
            key, j = _parse(s, j, level + 1)
            if s[j] != ",":
                raise SchemaError(f"bad type spec {s!r}")
            item, j = _parse(s, j + 1, level + 1)
            if s[j] != ">":
                raise SchemaError(f"bad type spec {s!r}")
            j += 1
        else:
            item, j = _parse(s, j, level + 1)
            if s[j] != ">":
                raise SchemaError(f"bad type spec {s!r}")
            j += 1
    elif kind not in SCALAR_KINDS:
        raise SchemaError(f"unknown field kind {kind!r} in {s!r}")
    nullable = j < len(s) and s[j] == "?"
    if nullable:
        j += 1
    return FieldType(kind, nullable, item, key, target), j  # type: ignore[arg-type]


def _matching(s: str, j: int) -> int:
    depth = 1
    for k in range(j, len(s)):
        if s[k] == "<":
            depth += 1
        elif s[k] == ">":
            depth -= 1
            if depth == 0:
                return k
    raise SchemaError(f"bad type spec {s!r}: unbalanced <>")


@dataclass(frozen=True, slots=True)
class Field:
    """One field of a record type. ``default`` is used when an older blob lacks the field.

    ``omit_null`` records that, in the JSON this type was inferred from, the field was
    sometimes absent and never null: an export leaves it out where it is null, so a JSON
    Lines file round-trips exactly.
    """

    name: str
    type: FieldType
    default: Any = _MISSING
    omit_null: bool = False

    @property
    def has_default(self) -> bool:
        return self.default is not _MISSING

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type.spec()}
        if self.has_default and _json_safe(self.default):
            d = self.default
            out["default"] = sorted(d, key=repr) if isinstance(d, (set, frozenset)) else (
                list(d) if isinstance(d, tuple) else d
            )  # fmt: skip
        if self.omit_null:
            out["omit_null"] = True
        return out


def _json_safe(v: Any) -> bool:
    """Whether a default survives a JSON round trip (collections of scalars do: a set
    default comes back as a list, which staging treats as the same set)."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return True
    if isinstance(v, (list, tuple, set, frozenset)):
        return all(_json_safe(x) for x in v)
    if isinstance(v, dict):
        return all(isinstance(k, str) and _json_safe(x) for k, x in v.items())
    return False


@dataclass(frozen=True, slots=True)
class TypeDef:
    """A record type: its fields in order and, for keyed types, the primary key fields."""

    name: str
    fields: tuple[Field, ...]
    key: tuple[str, ...] | None = None

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise SchemaError(f"type {self.name!r} has no field {name!r}")

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "fields": [f.to_json() for f in self.fields]}
        if self.key is not None:
            out["key"] = list(self.key)
        return out

    @staticmethod
    def from_json(obj: Mapping[str, Any]) -> TypeDef:
        fields = tuple(
            Field(
                f["name"],
                _field_spec(obj["name"], f["name"], f["type"]),
                f.get("default", _MISSING),
                f.get("omit_null", False),
            )
            for f in obj["fields"]
        )
        key = tuple(obj["key"]) if obj.get("key") is not None else None
        return TypeDef(obj["name"], fields, key)


def _field_spec(type_name: str, field_name: str, spec: str) -> FieldType:
    try:
        return parse_spec(spec)
    except SchemaError as e:
        raise SchemaError(f"{type_name}.{field_name}: {e}") from None


class Schema:
    """An ordered, validated set of record types.

    Contracts: construction validates — every field type is well formed, every record and
    ref target exists, keys are scalar, and no type nests more than :data:`MAX_DEPTH`
    levels deep (nor contains itself as a nested record); else SchemaError naming the type
    and field. Immutable once built.
    """

    __slots__ = ("types",)

    def __init__(self, types: Iterable[TypeDef]):
        self.types: dict[str, TypeDef] = {}
        for t in types:
            if t.name in self.types:
                raise SchemaError(f"type {t.name!r} is declared twice")
            self.types[t.name] = t
        self._validate()

    def __getitem__(self, name: str) -> TypeDef:
        try:
            return self.types[name]
        except KeyError:
            raise SchemaError(f"schema has no type {name!r}") from None

    def __contains__(self, name: object) -> bool:
        return name in self.types

    def __iter__(self):
        return iter(self.types.values())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Schema) and self.to_json() == other.to_json()

    def __repr__(self) -> str:
        return f"Schema({', '.join(self.types)})"

    @property
    def keyed_types(self) -> list[TypeDef]:
        return [t for t in self.types.values() if t.key is not None]

    def _validate(self) -> None:
        below: dict[str, int] = {}
        # first: the checks below and every later walk over types recurse; this bounds them.
        # Keyed types first, so an error names the path from the record a reader sees.
        for t in sorted(self.types.values(), key=lambda t: t.key is None):
            if t.name not in below:
                below[t.name] = self._levels_below(t, 0, t.name, below, (t.name,))
        for t in self.types.values():
            names = [f.name for f in t.fields]
            if len(set(names)) != len(names):
                raise SchemaError(f"type {t.name!r} has a field declared twice")
            for f in t.fields:
                self._check_type(t, f.name, f.type)
            if t.key is not None:
                if not t.key:
                    raise SchemaError(f"type {t.name!r}: the primary key names no field")
                for k in t.key:
                    ft = t.field(k).type
                    if ft.kind not in KEY_KINDS or ft.nullable:
                        raise SchemaError(
                            f"type {t.name!r}: key field {k!r} must be a non-null "
                            f"int, str, bytes, bool or datetime, not {ft.spec()}"
                        )

    def _levels_below(
        self, t: TypeDef, level: int, path: str, below: dict[str, int], stack: tuple[str, ...]
    ) -> int:
        """Levels of nesting below a record of ``t`` found at ``level`` of a walk (memoised
        in ``below``); SchemaError naming ``path`` once the walk passes MAX_DEPTH. The walk
        never recurses more than MAX_DEPTH levels, however long a chain of types is."""
        deepest = 0
        for f in t.fields:
            d = self._ft_levels(f.type, level, f"{path}.{f.name}", below, stack)
            deepest = max(deepest, d)
        return deepest

    def _ft_levels(
        self, ft: FieldType, level: int, path: str, below: dict[str, int], stack: tuple[str, ...]
    ) -> int:
        k = ft.kind
        if k not in ("list", "set", "dict", "record"):
            return 0
        here = level + 1
        if here > MAX_DEPTH:
            raise SchemaError(f"{path}: {too_deep(here)}")
        if k != "record":
            item = ft.item
            if item is None:
                return 1  # reported by _check_type
            sub = path + ("{}" if k == "dict" else "[]")
            return 1 + self._ft_levels(item, here, sub, below, stack)
        target = ft.target
        tdef = self.types.get(target) if target is not None else None
        if tdef is None:
            return 1  # reported by _check_type
        if tdef.name in stack:
            raise SchemaError(
                f"{path}: record<{tdef.name}> nests a {tdef.name} inside itself without end; "
                f"nearstate allows at most {MAX_DEPTH} levels (a ref<...> does not nest)"
            )
        d = below.get(tdef.name)
        if d is None:
            d = below[tdef.name] = self._levels_below(tdef, here, path, below, (*stack, tdef.name))
        elif here + d > MAX_DEPTH:
            raise SchemaError(f"{path}: {too_deep(here + d)}")
        return 1 + d

    def _check_type(self, t: TypeDef, fname: str, ft: FieldType) -> None:
        if ft.kind in ("list", "set", "dict") and ft.item is None:
            raise SchemaError(f"{t.name}.{fname}: {ft.kind} needs an element type")
        if ft.kind == "dict" and (ft.key is None or ft.key.kind not in KEY_KINDS):
            raise SchemaError(
                f"{t.name}.{fname}: dict keys must be int, str, bytes, bool or datetime"
            )
        if ft.kind in ("record", "ref"):
            if ft.target not in self.types:
                raise SchemaError(
                    f"{t.name}.{fname}: {ft.kind} target {ft.target!r} is not a type of this schema"
                )
            if ft.kind == "ref" and self.types[ft.target].key is None:
                raise SchemaError(f"{t.name}.{fname}: ref target {ft.target!r} has no key")
        for sub in (ft.item, ft.key):
            if sub is not None:
                self._check_type(t, fname, sub)

    def to_json(self) -> dict[str, Any]:
        return {"types": [t.to_json() for t in self.types.values()]}

    @staticmethod
    def from_json(obj: Mapping[str, Any]) -> Schema:
        try:
            return Schema(TypeDef.from_json(t) for t in obj["types"])
        except (KeyError, TypeError) as e:
            raise SchemaError(f"malformed schema: {e!r}") from e

    def extended(self, other: Schema | None) -> Schema:
        """This schema plus the types only ``other`` has (ours win where both define one)."""
        if other is None:
            return self
        extra = [t for t in other if t.name not in self.types]
        return Schema([*self, *extra]) if extra else self

    def merged(self, other: Schema) -> Schema:
        """This schema with ``other``'s types added or replacing ours of the same name."""
        types_ = dict(self.types)
        types_.update(other.types)
        return Schema(types_.values())

    @staticmethod
    def from_dataclasses(*classes: type) -> Schema:
        """Build a schema from ``@record`` dataclasses; nested dataclasses are found too."""
        found: dict[str, TypeDef] = {}
        pending = list(classes)
        by_name: dict[str, type] = {}
        while pending:
            cls = pending.pop()
            name = type_name(cls)
            if name in found:
                continue
            if not dataclasses.is_dataclass(cls):
                raise SchemaError(f"{cls!r} is not a dataclass")
            by_name[name] = cls
            try:
                hints = typing.get_type_hints(cls, include_extras=True)
            except RecursionError:  # hundreds of levels: too many for typing itself
                raise SchemaError(_too_deep_hints(cls, name)) from None
            fields = []
            for f in dataclasses.fields(cls):
                ft, nested = _from_hint(hints[f.name], f"{name}.{f.name}")
                pending.extend(nested)
                default = _MISSING if f.default is _DC_MISSING else f.default
                if f.default_factory is not _DC_MISSING:
                    default = f.default_factory()
                fields.append(Field(f.name, ft, default))
            key = getattr(cls, "__nearstate_key__", None)
            found[name] = TypeDef(name, tuple(fields), key)
        return Schema(reversed(list(found.values())))


# --- declaring types with dataclasses -------------------------------------------------------


class _LongTextMarker:
    def __repr__(self) -> str:
        return "LongText"


_LONG = _LongTextMarker()

#: A string field whose values are long: each is compressed on its own with a per-field
#: trained zstd dictionary, so one record decompresses without its neighbours.
LongText = Annotated[str, _LONG]


@dataclass(frozen=True)
class _RefTo:
    target: str


class Ref:
    """``Ref["Person"]`` (or ``Ref[Person]``): a reference to a record of another keyed type.

    The value you store is the target's primary key; the blob stores its ordinal, and reading
    the field gives the target record.
    """

    def __class_getitem__(cls, target: type | str) -> Any:
        name = target if isinstance(target, str) else type_name(target)
        return Annotated[Any, _RefTo(name)]


def record(*, key: str | Iterable[str], name: str | None = None):
    """Mark a dataclass as a keyed record type with the given primary key field(s)."""
    key_t = (key,) if isinstance(key, str) else tuple(key)

    def wrap(cls: type) -> type:
        cls.__nearstate_key__ = key_t  # type: ignore[attr-defined]
        if name is not None:
            cls.__nearstate_name__ = name  # type: ignore[attr-defined]
        return cls

    return wrap


def type_name(cls: type) -> str:
    return cls.__dict__.get("__nearstate_name__", cls.__name__)


_SCALARS: dict[Any, Kind] = {
    int: "int", float: "float", bool: "bool", str: "str", bytes: "bytes",
    _dt.datetime: "datetime",
}  # fmt: skip


def _from_hint(hint: Any, where: str, level: int = 0) -> tuple[FieldType, list[type]]:
    """The field type of a type hint and the dataclasses it nests; ``level`` counts the
    collections around it (more than MAX_DEPTH: SchemaError, before recursing further)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is Annotated:
        base, *meta = args
        for m in meta:
            if m is _LONG:
                return FieldType("text"), []
            if isinstance(m, _RefTo):
                return FieldType("ref", target=m.target), []
        return _from_hint(base, where, level)
    if origin in (typing.Union, types.UnionType):
        non_null = [a for a in args if a is not type(None)]
        if len(non_null) != 1:
            raise SchemaError(f"{where}: unions other than Optional[X] are not supported")
        ft, nested = _from_hint(non_null[0], where, level)
        return ft.with_nullable(len(non_null) != len(args)), nested
    if hint in _SCALARS:
        return FieldType(_SCALARS[hint]), []
    if origin in (list, set, frozenset, tuple, dict) and level >= MAX_DEPTH:
        raise SchemaError(f"{where}: {too_deep(level + 1)}")
    if origin in (list, set, frozenset, tuple):
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            raise SchemaError(f"{where}: only tuple[X, ...] is supported")
        if not args:
            raise SchemaError(f"{where}: give the element type, e.g. list[str]")
        item, nested = _from_hint(args[0], where + "[]", level + 1)
        kind: Kind = "set" if origin in (set, frozenset) else "list"
        return FieldType(kind, item=item), nested
    if origin is dict:
        if len(args) != 2:
            raise SchemaError(f"{where}: give key and value types, e.g. dict[str, int]")
        k, n1 = _from_hint(args[0], where + "{}", level + 1)
        v, n2 = _from_hint(args[1], where + "{}", level + 1)
        if k.kind not in KEY_KINDS:
            raise SchemaError(f"{where}: dict keys must be scalars, not {k.spec()}")
        return FieldType("dict", item=v, key=k), n1 + n2
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        name = type_name(hint)
        if getattr(hint, "__nearstate_key__", None) is not None:
            # a keyed type used inline is a reference; use Ref[...] to say so explicitly
            return FieldType("ref", target=name), [hint]
        return FieldType("record", target=name), [hint]
    raise SchemaError(f"{where}: unsupported type {hint!r}")


def _too_deep_hints(cls: type, name: str) -> str:
    """The message for a dataclass whose type hints nest too deeply to evaluate: names its
    deepest field (found without recursion)."""
    deepest, where = 0, name
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        todo, levels = [(f.type, 0)], 0
        while todo:
            hint, level = todo.pop()
            if typing.get_origin(hint) in (list, set, frozenset, tuple, dict):
                level += 1
            levels = max(levels, level)
            todo.extend((a, level) for a in typing.get_args(hint))
        if levels > deepest:
            deepest, where = levels, f"{name}.{f.name}"
    if deepest <= MAX_DEPTH:
        return (
            f"{name}: its type hints are nested too deeply to read; nearstate allows at most "
            f"{MAX_DEPTH} levels"
        )
    return f"{where}: {too_deep(deepest)}"


@functools.lru_cache(maxsize=64)
def _schema_from_text(text: bytes) -> Schema:
    return Schema.from_json(msgspec.json.decode(text))


def schema_from_json(obj: Mapping[str, Any]) -> Schema:
    """:meth:`Schema.from_json`, shared: a schema is immutable, so blobs whose headers
    hold the same schema (every delta of a dataset) share one object."""
    return _schema_from_text(msgspec.json.encode(obj))


T = TypeVar("T")


def per_schema(fn: Callable[[Schema, frozenset[str]], T]) -> Callable[[Schema, Iterable[str]], T]:
    """``fn(schema, names)`` kept per schema object and set of names, for what a reader
    asks again on every commit. A Schema is not hashable: it is kept by identity, and held
    with its result, so a freed schema's id is never taken for another's. The result is
    shared: ``fn`` must return something no caller changes."""
    cache: dict[tuple[int, frozenset[str]], tuple[Schema, T]] = {}
    whole: dict[int, tuple[Schema, T]] = {}  # asked with no names: a dict lookup less

    @functools.wraps(fn)
    def kept(schema: Schema, names: Iterable[str]) -> T:
        if type(names) is tuple and not names:
            hit = whole.get(id(schema))
            if hit is None or hit[0] is not schema:
                if len(whole) > 64:
                    whole.clear()
                hit = whole[id(schema)] = (schema, fn(schema, frozenset()))
            return hit[1]
        key = (id(schema), frozenset(names))
        hit = cache.get(key)
        if hit is not None and hit[0] is schema:
            return hit[1]
        out = fn(schema, key[1])
        if len(cache) > 256:
            cache.clear()
        cache[key] = (schema, out)
        return out

    return kept
