"""The records of the next version, staged before they are encoded.

:meth:`WriteState.add` checks a record against the schema and normalises it (a value that
contradicts the schema raises :class:`SchemaError` naming the type, record and field);
nested records are staged in their own types and de-duplicated, so identical nested values
share one ordinal; references keep the target's key until :meth:`WriteState.build`
resolves them to ordinals.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .blob import write_blob
from .encoding import Sections, canonical_float, encode_column
from .errors import SchemaError
from .index import build_pk_table, key_bytes
from .schema import FieldType, Schema, TypeDef


class _Staged:
    __slots__ = ("columns", "count", "keys", "tdef")

    def __init__(self, tdef: TypeDef):
        self.tdef = tdef
        self.columns: list[list[Any]] = [[] for _ in tdef.fields]
        self.keys: dict[Any, int] = {}  # primary key (keyed) or canonical record (nested)
        self.count = 0


class WriteState:
    """Records staged for one version. Not thread-safe; build once."""

    def __init__(self, schema: Schema):
        self.schema = schema
        self._types = {t.name: _Staged(t) for t in schema}

    def __len__(self) -> int:
        return sum(s.count for s in self._types.values() if s.tdef.key is not None)

    def count(self, type_name: str) -> int:
        return self._staged(type_name).count

    def _staged(self, type_name: str) -> _Staged:
        try:
            return self._types[type_name]
        except KeyError:
            raise SchemaError(f"schema has no type {type_name!r}") from None

    def has_key(self, type_name: str, key: Any) -> bool:
        return key in self._staged(type_name).keys

    def add(self, type_name: str, record: Any) -> int:
        """Stage one record (a mapping or a dataclass instance); return its ordinal.

        Raises SchemaError for a missing or mistyped field, or a duplicate primary key.
        Fields the schema does not know are refused too, so nothing is silently dropped.
        """
        st = self._staged(type_name)
        if st.tdef.key is None:
            raise SchemaError(f"type {type_name!r} has no key; it is only used nested")
        return self._add(st, record, None)

    def _add(self, st: _Staged, record: Any, where: str | None) -> int:
        tdef = st.tdef
        rec = _as_mapping(record, tdef.name)
        values = []
        label = where or tdef.name
        if tdef.key is not None:
            try:
                kv = tuple(rec[k] for k in tdef.key)
            except KeyError as e:
                raise SchemaError(f"{tdef.name}: record lacks its key field {e.args[0]!r}") from None
            label = f"{tdef.name} {kv[0] if len(kv) == 1 else kv!r}"
        for f in tdef.fields:
            if f.name in rec:
                v = rec[f.name]
            elif f.has_default:
                v = f.default
            elif f.type.nullable:
                v = None
            else:
                raise SchemaError(f"{label}: field {f.name!r} is missing")
            values.append(self._convert(f.type, v, f"{label}: field {f.name!r}"))
        if len(rec) > len(tdef.fields):
            extra = sorted(set(rec) - set(tdef.field_names))
            if extra:
                raise SchemaError(f"{label}: field {extra[0]!r} is not in type {tdef.name!r}")
        if tdef.key is not None:
            idx = [tdef.field_names.index(k) for k in tdef.key]
            key = values[idx[0]] if len(idx) == 1 else tuple(values[i] for i in idx)
            if key in st.keys:
                raise SchemaError(f"{label}: duplicate key {key!r}")
        else:
            key = _canon(tdef, values)
            found = st.keys.get(key)
            if found is not None:
                return found
        ordinal = st.count
        st.keys[key] = ordinal
        for col, v in zip(st.columns, values, strict=True):
            col.append(v)
        st.count += 1
        return ordinal

    def _convert(self, ft: FieldType, v: Any, where: str) -> Any:
        if v is None:
            if ft.nullable:
                return None
            raise SchemaError(f"{where} is null but the type {ft.spec()} does not allow null")
        k = ft.kind
        if k in ("str", "text"):
            if type(v) is str:
                return v
        elif k == "int":
            if isinstance(v, int) and not isinstance(v, bool):
                return int(v)
        elif k == "float":
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                try:
                    return float(v)
                except OverflowError:
                    raise SchemaError(f"{where}: {v} is too large for a float") from None
        elif k == "bool":
            if isinstance(v, bool):
                return v
        elif k == "bytes":
            if isinstance(v, (bytes, bytearray, memoryview)):
                return bytes(v)
        elif k == "datetime":
            if isinstance(v, _dt.datetime):
                return v
        elif k in ("list", "set"):
            if isinstance(v, (list, tuple, set, frozenset)):
                assert ft.item is not None
                items = [self._convert(ft.item, x, where + "[]") for x in v]
                if k == "set":
                    items = list(dict.fromkeys(items))
                return items
        elif k == "dict":
            if isinstance(v, Mapping):
                assert ft.key is not None and ft.item is not None
                return {
                    self._convert(ft.key, kk, where + "{key}"): self._convert(
                        ft.item, vv, f"{where}[{kk!r}]"
                    )
                    for kk, vv in v.items()
                }
        elif k == "record":
            assert ft.target is not None
            if isinstance(v, Mapping) or dataclasses.is_dataclass(v):
                return self._add(self._types[ft.target], v, where)
        elif k == "ref":
            assert ft.target is not None
            target = self.schema[ft.target]
            assert target.key is not None
            if isinstance(v, Mapping) or dataclasses.is_dataclass(v):
                m = _as_mapping(v, target.name)
                v = tuple(m[x] for x in target.key)
                return v[0] if len(v) == 1 else v
            if hasattr(v, "to_dict") and hasattr(v, "key"):  # a record view
                return v.key
            return v
        raise SchemaError(f"{where}: expected {ft.spec()}, got {_describe(v)}")

    def build(self) -> tuple[dict[str, Any], Sections]:
        """Encode every staged type: ``(types meta, sections)`` for a blob."""
        ordinals = {name: st.keys for name, st in self._types.items() if st.tdef.key}
        sections: Sections = {}
        types_meta: dict[str, Any] = {}
        for name, st in self._types.items():
            cols_meta = {}
            for f, col in zip(st.tdef.fields, st.columns, strict=True):
                if _has_ref(f.type):
                    col = [
                        _resolve(f.type, v, ordinals, f"{name}: field {f.name!r}") for v in col
                    ]
                cols_meta[f.name] = encode_column(f.type, col, sections, f"{name}/{f.name}")
            meta: dict[str, Any] = {"count": st.count, "columns": cols_meta}
            if st.tdef.key is not None:
                sections[f"{name}/#pk"] = build_pk_table(
                    (key_bytes(k) for k in st.keys), st.count
                )
            types_meta[name] = meta
        return types_meta, sections

    def write_snapshot(
        self,
        path: str | Path,
        *,
        dataset: str = "default",
        version: int = 1,
        tags: Mapping[str, str] | None = None,
    ) -> int:
        """Encode and write a snapshot blob atomically; return its size in bytes."""
        types_meta, sections = self.build()
        header = {
            "kind": "snapshot",
            "dataset": dataset,
            "version": version,
            "created": time.time(),
            "tags": dict(tags or {}),
            "schema": self.schema.to_json(),
            "types": types_meta,
        }
        return write_blob(path, header, sections)


def _as_mapping(record: Any, type_name: str) -> Mapping[str, Any]:
    if isinstance(record, Mapping):
        return record
    if dataclasses.is_dataclass(record) and not isinstance(record, type):
        return {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}
    to_dict = getattr(record, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    raise SchemaError(f"{type_name}: a record must be a mapping or a dataclass, not {_describe(record)}")


def _describe(v: Any) -> str:
    r = repr(v)
    return f"{type(v).__name__} {r[:40] + '...' if len(r) > 40 else r}"


def _canon(tdef: TypeDef, values: list[Any]) -> tuple:
    return tuple(_canon_value(f.type, v) for f, v in zip(tdef.fields, values, strict=True))


def _canon_value(ft: FieldType, v: Any) -> Any:
    if v is None:
        return None
    k = ft.kind
    if k == "float":
        return canonical_float(v)
    if k in ("list", "set"):
        assert ft.item is not None
        return (k, tuple(_canon_value(ft.item, x) for x in v))
    if k == "dict":
        assert ft.item is not None
        return ("d", tuple((kk, _canon_value(ft.item, x)) for kk, x in v.items()))
    if k == "datetime":
        return (v, v.tzinfo is not None, v.utcoffset())
    if k == "ref":
        return ("r", v)
    return v


def _has_ref(ft: FieldType) -> bool:
    return ft.kind == "ref" or any(_has_ref(s) for s in (ft.item, ft.key) if s is not None)


def _resolve(ft: FieldType, v: Any, ordinals: Mapping[str, Mapping[Any, int]], where: str) -> Any:
    if v is None:
        return None
    if ft.kind == "ref":
        assert ft.target is not None
        o = ordinals[ft.target].get(v)
        if o is None:
            raise SchemaError(f"{where} refers to {ft.target} {v!r}, which is not in the state")
        return o
    if ft.kind in ("list", "set"):
        assert ft.item is not None
        return [_resolve(ft.item, x, ordinals, where) for x in v]
    if ft.kind == "dict":
        assert ft.item is not None
        return {kk: _resolve(ft.item, x, ordinals, where) for kk, x in v.items()}
    return v


def stage(schema: Schema, records: Mapping[str, Iterable[Any]]) -> WriteState:
    """A WriteState with the given records per type."""
    ws = WriteState(schema)
    for type_name, recs in records.items():
        for r in recs:
            ws.add(type_name, r)
    return ws
