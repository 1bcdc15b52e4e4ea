"""Record digests and state checksums.

Every keyed record has a 64-bit *digest* of its content: xxh3 over a canonical JSON form
of its field values (sets sorted, -0.0 as 0.0, aware datetimes in UTC, nested records as
their values, references as the target's key). The same digest comes out of a record
staged in a :class:`~nearstate.WriteState` and of the record decoded from a blob, which is
what lets a producer check that a blob reproduces what it meant to write.

A type's *checksum* is ``(count, sum of digests mod 2**64)``: independent of ordinal order
and cheap to update — a delta subtracts the digests of the records it replaces and adds
those of the records it brings, so checking a delta costs what the delta costs.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Callable, Mapping
from typing import Any

import msgspec
import numpy as np
import xxhash

from .encoding import ABSENT
from .schema import FieldType, Schema, TypeDef

_SIMPLE = frozenset({"str", "text", "int", "bool", "bytes", "ref"})
_MASK = (1 << 64) - 1
_msgspec_encode = msgspec.json.Encoder().encode


def _encode(x: Any) -> bytes:
    try:
        return _msgspec_encode(x)
    except UnicodeEncodeError:  # a lone surrogate in some string: escape every string
        return _msgspec_encode(_escape(x))


def _escape(x: Any) -> Any:
    if isinstance(x, str):
        return ["\\u", x.encode("utf-8", "surrogatepass").hex()]
    if isinstance(x, (list, tuple)):
        return [_escape(v) for v in x]
    if isinstance(x, dict):
        return [[_escape(k), _escape(v)] for k, v in x.items()]
    return x


_hash = xxhash.xxh3_64_intdigest

Checksum = tuple[int, int]  # (count, sum of digests mod 2**64)
# nested(target type, staged ordinal or decoded dict) -> the nested record's field values
Nested = Callable[[str, Any], Mapping[str, Any]]


def needs_canon(ft: FieldType) -> bool:
    """Whether values of this type need rewriting before they are encoded for a digest."""
    if ft.kind in _SIMPLE:
        return False
    if ft.kind == "list":
        assert ft.item is not None
        return needs_canon(ft.item)
    return True


def canon(ft: FieldType, v: Any, schema: Schema, nested: Nested) -> Any:
    """The canonical, JSON-encodable form of one value of type ``ft``."""
    if v is None or v is ABSENT:
        return None
    k = ft.kind
    if k in _SIMPLE:
        return v
    if k == "float":
        if v == 0.0:
            return 0.0
        if math.isnan(v):
            return "NaN"
        if math.isinf(v):  # JSON has no infinity: the encoder would write null
            return "Infinity" if v > 0 else "-Infinity"
        return float(v)
    if k == "datetime":
        if v.tzinfo is not None:
            return ["Z", v.astimezone(_dt.UTC).replace(tzinfo=None).isoformat()]
        return v.isoformat()
    if k == "list":
        assert ft.item is not None
        it = ft.item
        return [canon(it, x, schema, nested) for x in v]
    if k == "set":
        assert ft.item is not None
        it = ft.item
        return sorted((canon(it, x, schema, nested) for x in v), key=_sort_key)
    if k == "dict":
        assert ft.item is not None and ft.key is not None
        it, kt = ft.item, ft.key
        return sorted(
            ([canon(kt, a, schema, nested), canon(it, b, schema, nested)] for a, b in v.items()),
            key=_sort_key,
        )
    if k == "record":
        assert ft.target is not None
        tdef = schema[ft.target]
        vals = nested(ft.target, v)
        return [canon(f.type, vals.get(f.name), schema, nested) for f in tdef.fields]
    return v


def _sort_key(x: Any) -> bytes:
    return _encode(x)


def digest_values(tdef: TypeDef, values: Mapping[str, Any], schema: Schema, nested: Nested) -> int:
    """The digest of one record given as field name -> value."""
    row = [canon(f.type, values.get(f.name), schema, nested) for f in tdef.fields]
    return _hash(_encode(row))


def digest_columns(
    tdef: TypeDef,
    columns: list[list[Any]],
    schema: Schema,
    nested: Nested,
    count: int,
    nested_columns: Callable[[str], list[list[Any]]] | None = None,
) -> np.ndarray:
    """Digests of ``count`` staged records given column by column (the fast path: only the
    columns that need it are rewritten, then each row is encoded once). With
    ``nested_columns`` (a nested type's staged columns by its name), a column of nested
    records is rewritten once per nested record, not once per reference."""
    memo: dict[str, list[Any]] = {}
    cols = [
        _canon_column(f.type, col, schema, nested, nested_columns, memo)
        for f, col in zip(tdef.fields, columns, strict=True)
    ]
    out = np.empty(count, dtype=np.uint64)
    if not cols:
        out[:] = _hash(_encode([]))
        return out
    enc, h = _encode, _hash
    out[:] = np.fromiter((h(enc(row)) for row in zip(*cols, strict=True)), np.uint64, count)
    return out


def _canon_column(
    ft: FieldType,
    col: list[Any],
    schema: Schema,
    nested: Nested,
    nested_columns: Callable[[str], list[list[Any]]] | None,
    memo: dict[str, list[Any]],
) -> list[Any]:
    """``[canon(ft, v) for v in col]``, a column at a time where the kind allows."""
    k = ft.kind
    absent = any(v is ABSENT for v in col)
    if not needs_canon(ft):
        return [None if v is ABSENT else v for v in col] if absent else col
    if k == "float":
        vals = [v for v in col if v is not None and v is not ABSENT]
        a = np.array(vals, dtype=np.float64)
        # finite and no -0.0: canon() would return every value as it is
        plain = set(map(type, vals)) <= {float}
        if plain and np.isfinite(a).all() and not (np.signbit(a) & (a == 0)).any():
            return [None if v is ABSENT else v for v in col] if absent else col
    elif k == "record" and nested_columns is not None:
        assert ft.target is not None
        rows = memo.get(ft.target)
        if rows is None:
            target = schema[ft.target]
            parts = [
                _canon_column(f.type, c, schema, nested, nested_columns, memo)
                for f, c in zip(target.fields, nested_columns(ft.target), strict=True)
            ]
            rows = memo[ft.target] = list(zip(*parts, strict=True)) if parts else []
        if not rows:  # a nested type without fields
            return [None if v is None or v is ABSENT else [] for v in col]
        return [None if v is None or v is ABSENT else rows[v] for v in col]
    return [canon(ft, v, schema, nested) for v in col]


def digest_record(rec: Any, schema: Schema) -> int:
    """The digest of a decoded record view (recomputed from its values)."""
    tdef = schema[rec._ts.name]
    return digest_values(tdef, rec.to_dict(), schema, nested_dict)


def nested_dict(_target: str, v: Any) -> Mapping[str, Any]:
    return v


def checksum_of(digests: np.ndarray) -> Checksum:
    return (len(digests), int(digests.sum(dtype=np.uint64)))


def add(c: Checksum, d: int) -> Checksum:
    return (c[0] + 1, (c[1] + d) & _MASK)


def sub(c: Checksum, d: int) -> Checksum:
    return (c[0] - 1, (c[1] - d) & _MASK)


def fmt(c: Checksum) -> list[Any]:
    """The JSON form kept in headers and announcements."""
    return [c[0], f"{c[1]:016x}"]


def parse(v: Any) -> Checksum:
    return (int(v[0]), int(v[1], 16))
