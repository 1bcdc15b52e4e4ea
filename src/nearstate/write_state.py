"""The records of the next version, staged before they are encoded.

:meth:`WriteState.add` checks a record against the schema and normalises it (a value that
contradicts the schema raises :class:`SchemaError` naming the type, record and field);
nested records are staged in their own types and de-duplicated, so identical nested values
share one ordinal; references keep the target's key until :meth:`WriteState.build`
resolves them to ordinals.

Over ~600 lines on purpose: :class:`WriteState` is one class whose checks, normalisation,
de-duplication of nested records and :meth:`WriteState.build` share its private staged
rows; the helpers below serve it alone.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import time
from collections.abc import Mapping, Sequence
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from ._native import core as _core
from .blob import write_blob
from .digest import Checksum, checksum_of, digest_columns
from .digest import fmt as fmt_checksum
from .encoding import ABSENT as _ABSENT
from .encoding import Absent as _Absent
from .encoding import Sections, canonical_float, encode_column
from .errors import SchemaError
from .index import build_pk_tables, key_bytes
from .lazymap import LazyMap
from .schema import Field, FieldType, Schema, TypeDef, refs_to_keys

_EXACT = {"str": str, "text": str, "int": int, "bool": bool, "float": float}


class _Staged:
    __slots__ = (
        "absent",
        "columns",
        "count",
        "digests",
        "key_idx",
        "keys",
        "names",
        "nulls",
        "plan",
        "tdef",
    )  # fmt: skip

    def __init__(self, tdef: TypeDef):
        self.tdef = tdef
        names, key_idx, exact = _shape_of(tdef)
        self.names = names
        self.key_idx = key_idx
        self.columns: list[list[Any]] = [[] for _ in tdef.fields]
        self.keys: dict[Any, int] = {}  # primary key (keyed) or canonical record (nested)
        self.count = 0
        # per field: (name, exact python type for the fast path or None, field, column)
        self.plan = [(n, x, f, col) for (n, x, f), col in zip(exact, self.columns, strict=True)]
        self.absent: set[str] = set()  # fields some record left out
        self.nulls: set[str] = set()  # fields some record set to null
        self.digests: np.ndarray | None = None


_SHAPES: dict[int, tuple[TypeDef, tuple[Any, ...]]] = {}


def _shape_of(tdef: TypeDef) -> tuple[Any, ...]:
    """A type's field names, key positions and per-field fast-path types, kept per TypeDef
    object (a Writer stages one record in a new WriteState per commit). Held with the
    TypeDef, so a freed one's id is never taken for another's."""
    hit = _SHAPES.get(id(tdef))
    if hit is not None and hit[0] is tdef:
        return hit[1]
    names = tdef.field_names
    key_idx = [names.index(k) for k in tdef.key] if tdef.key else []
    exact = tuple((f.name, _EXACT.get(f.type.kind), f) for f in tdef.fields)
    if len(_SHAPES) > 1024:
        _SHAPES.clear()
    _SHAPES[id(tdef)] = (tdef, (names, key_idx, exact))
    return names, key_idx, exact


class RowError(SchemaError):
    """A SchemaError raised by :meth:`WriteState.add_many`; ``index`` is the bad record's
    position in the batch."""

    def __init__(self, message: str, index: int):
        self.index = index
        super().__init__(message)


class WriteState:
    """Records staged for one version. Not thread-safe; build once."""

    def __init__(self, schema: Schema, *, dedupe: bool = True):
        """``dedupe=False``: nested records are staged as they come, not de-duplicated
        (for a few records read once, such as a commit's in a reader's Log layer, the
        canonical forms cost more than the copies)."""
        self.schema = schema
        self._dedupe = dedupe
        # a type's staging is made on first use: a Writer stages one record of one type
        # per commit, and a schema's other types cost it nothing
        self._types = LazyMap((t.name for t in schema), lambda name: _Staged(schema[name]))

    def __len__(self) -> int:
        return sum(s.count for s in self._types.values() if s.tdef.key is not None)

    def count(self, type_name: str) -> int:
        return self._staged(type_name).count

    def _staged(self, type_name: str) -> _Staged:
        try:
            return self._types[type_name]
        except KeyError:
            raise SchemaError(f"schema has no type {type_name!r}") from None

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
        append = values.append
        label = where or tdef.name
        if tdef.key is not None:
            try:
                kv = tuple(rec[k] for k in tdef.key)
            except KeyError as e:
                raise SchemaError(
                    f"{tdef.name}: record lacks its key field {e.args[0]!r}"
                ) from None
            label = f"{tdef.name} {kv[0] if len(kv) == 1 else kv!r}"
        present = 0
        for name, exact, f, _ in st.plan:
            v = rec.get(name, _ABSENT)
            if type(v) is exact:  # the common case: nothing to convert
                append(v)
                present += 1
                continue
            if v is _ABSENT:
                present -= 1
                st.absent.add(name)
                if f.has_default:
                    v = f.default
                elif f.type.nullable:
                    append(_ABSENT)  # null, remembered as left out
                    present += 1
                    continue
                else:
                    raise SchemaError(f"{label}: field {name!r} is missing")
            elif v is None:
                st.nulls.add(name)
            present += 1
            append(self._convert(f.type, v, f"{label}: field {name!r}"))
        if len(rec) != present:
            extra = sorted(set(rec) - set(tdef.field_names))
            raise SchemaError(f"{label}: field {extra[0]!r} is not in type {tdef.name!r}")
        if tdef.key is not None:
            if len(tdef.key) == 1:
                key = values[tdef.field_names.index(tdef.key[0])]
            else:
                key = tuple(values[tdef.field_names.index(k)] for k in tdef.key)
            if key in st.keys:
                raise SchemaError(f"{label}: duplicate key {key!r}")
        elif self._dedupe:
            key = _canon(tdef, values)
            found = st.keys.get(key)
            if found is not None:
                return found
        ordinal = st.count
        if tdef.key is not None or self._dedupe:
            st.keys[key] = ordinal
        for (_, _, _, col), v in zip(st.plan, values, strict=True):
            col.append(v)
        st.count += 1
        return ordinal

    def add_many(self, type_name: str, records: Sequence[Mapping[str, Any]]) -> None:
        """Stage many records (mappings) at once, column by column.

        Same checks and results as calling :meth:`add` per record, several times faster:
        each column is validated with one pass over the types of its values. On a bad
        value raises :class:`RowError` (a SchemaError) whose ``index`` is the position of
        the offending record in ``records``; nothing of the batch is staged then.
        """
        st = self._staged(type_name)
        if st.tdef.key is None:
            raise SchemaError(f"type {type_name!r} has no key; it is only used nested")
        if not records:
            return
        self._add_many(st, records, type_name)

    def _add_many(self, st: _Staged, records: Sequence[Any], where: str) -> list[int]:
        tdef = st.tdef
        n = len(records)
        names = st.names
        # plain dicts in a list (decoded JSON): every column in one compiled pass
        got = _core.gather(records, names, _ABSENT) if _core and type(records) is list else None
        if got is None or got[1] >= 0:
            for i, r in enumerate(records):
                if not isinstance(r, Mapping):
                    raise RowError(f"{where}: a record must be a mapping, not {_describe(r)}", i)
            extra = set(chain.from_iterable(records)) - set(names)
            if extra:
                bad = sorted(extra)[0]
                i = next(i for i, r in enumerate(records) if bad in r)
                raise RowError(f"{where}: field {bad!r} is not in type {tdef.name!r}", i)
            gathered = [[r.get(name, _ABSENT) for r in records] for name in names]
        else:
            gathered = got[0]
        cols: list[list[Any]] = []
        absent_in: list[bool] = []
        for f, col in zip(tdef.fields, gathered, strict=True):
            types_ = set(map(type, col))
            absent = _Absent in types_
            absent_in.append(absent)
            cols.append(
                self._bulk_convert(st, f, col, absent, types_, f"{where}: field {f.name!r}")
            )
        if tdef.key is not None:
            idx = st.key_idx
            keys = (
                cols[idx[0]] if len(idx) == 1 else list(zip(*(cols[i] for i in idx), strict=True))
            )
            seen = st.keys
            if len(set(keys)) != n or not seen.keys().isdisjoint(keys):
                first: dict[Any, int] = {}
                for i, k in enumerate(keys):
                    if k in seen or k in first:
                        raise RowError(f"{where}: duplicate key {k!r}", i)
                    first[k] = i
            base = st.count
            seen.update(zip(keys, range(base, base + n), strict=True))
            for c, col in zip(st.columns, cols, strict=True):
                c.extend(col)
            st.count += n
            out = list(range(base, base + n))
        elif not self._dedupe:
            base = st.count
            for c, col in zip(st.columns, cols, strict=True):
                c.extend(col)
            st.count += n
            out = list(range(base, base + n))
        else:
            out = []
            seen = st.keys
            plain = all(_plain_canon(f.type, col) for f, col in zip(tdef.fields, cols, strict=True))
            for row in zip(*cols, strict=True) if cols else ([()] * n):
                key = row if plain else _canon(tdef, list(row))
                o = seen.get(key)
                if o is None:
                    o = seen[key] = st.count
                    for c, v in zip(st.columns, row, strict=True):
                        c.append(v)
                    st.count += 1
                out.append(o)
        for f, absent in zip(tdef.fields, absent_in, strict=True):
            if absent:
                st.absent.add(f.name)
        return out

    def _bulk_convert(
        self, st: _Staged, f: Field, col: list[Any], absent: bool, types_: set[type], where: str
    ) -> list[Any]:
        ft = f.type
        if type(None) in types_:
            if ft.nullable:
                st.nulls.add(f.name)
            else:
                i = next(i for i, v in enumerate(col) if v is None)
                raise RowError(f"{where} is null but the type {ft.spec()} does not allow null", i)
        left_out = None
        if absent:
            if f.has_default:
                d = f.default
            elif ft.nullable:
                d = None
                left_out = [v is _ABSENT for v in col]
            else:
                raise RowError(f"{where} is missing", col.index(_ABSENT))
            col = [d if v is _ABSENT else v for v in col]
            types_ = set(map(type, col))
        col = self._bulk_values(ft, col, where, types_)
        if left_out is not None:  # null, remembered as left out
            col = [_ABSENT if a else v for v, a in zip(col, left_out, strict=True)]
        return col

    def _bulk_values(
        self, ft: FieldType, col: list[Any], where: str, types_: set[type] | None = None
    ) -> list[Any]:
        """``col`` checked and normalised for ``ft`` (None allowed where nullable)."""
        k = ft.kind
        types_ = set(map(type, col)) if types_ is None else set(types_)
        types_.discard(type(None))
        exact = _EXACT.get(k)
        if exact is not None and types_ <= {exact}:
            return col
        if k == "float" and types_ <= {int, float}:
            try:
                return [None if v is None else float(v) for v in col]
            except OverflowError:
                pass  # found below
        elif k in ("list", "set") and types_ <= {list, tuple}:
            assert ft.item is not None
            lens = [0 if v is None else len(v) for v in col]
            flat = [x for v in col if v is not None for x in v]
            try:
                flat = self._bulk_values(ft.item, flat, where + "[]")
            except RowError as e:
                bounds = np.cumsum(lens)
                raise RowError(
                    str(e), int(np.searchsorted(bounds, e.index, side="right"))
                ) from None
            out: list[Any] = []
            pos = 0
            for v, n in zip(col, lens, strict=True):
                if v is None:
                    out.append(None)
                else:
                    items = flat[pos : pos + n]
                    out.append(list(dict.fromkeys(items)) if k == "set" else items)
                pos += n
            return out
        elif k == "record" and (
            types_ <= {dict} or all(isinstance(v, Mapping) for v in col if v is not None)
        ):
            assert ft.target is not None
            present = [v for v in col if v is not None]
            ords = iter(self._add_many(self._types[ft.target], present, where))
            return [None if v is None else next(ords) for v in col]
        # anything the fast checks above did not settle: value by value
        out = []
        for i, v in enumerate(col):
            try:
                out.append(None if v is None else self._convert(ft, v, where))
            except SchemaError as e:
                raise RowError(str(e), i) from None
        return out

    def presence(self, type_name: str) -> tuple[set[str], set[str]]:
        """The fields some staged record of ``type_name`` left out, and those some set to
        null."""
        st = self._staged(type_name)
        return set(st.absent), set(st.nulls)

    def final_schema(self) -> Schema:
        """The schema as written: ``omit_null`` set on fields that records left out but never
        set to null (so an export reproduces the records exactly)."""
        tdefs = []
        for st in self._types.values():
            fields = tuple(
                dataclasses.replace(
                    f, omit_null=f.name in st.absent and f.name not in st.nulls
                ) if f.type.nullable and not f.has_default else f
                for f in st.tdef.fields
            )  # fmt: skip
            tdefs.append(TypeDef(st.tdef.name, fields, st.tdef.key))
        return Schema(tdefs)

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
            if isinstance(v, str):  # JSON has no datetime: ISO 8601 text is accepted
                try:
                    return _dt.datetime.fromisoformat(v)
                except ValueError:
                    pass
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
            if len(target.key) == 1 and type(v) is str:
                kt = target.field(target.key[0]).type
                if kt.kind == "datetime":  # a datetime key as ISO text (JSON, the Log)
                    return self._convert(kt, v, where)
            return v
        raise SchemaError(f"{where}: expected {ft.spec()}, got {_describe(v)}")

    # -- digests -----------------------------------------------------------------------

    def _nested(self, target: str, ordinal: Any) -> dict[str, Any]:
        st = self._types[target]
        return {f.name: col[ordinal] for f, col in zip(st.tdef.fields, st.columns, strict=True)}

    def digests(self, type_name: str) -> np.ndarray:
        """The digest of every staged record of a keyed type, by ordinal (kept once made)."""
        st = self._staged(type_name)
        if st.digests is None or len(st.digests) != st.count:
            st.digests = digest_columns(
                st.tdef, st.columns, self.schema, self._nested, st.count,
                lambda target: self._types[target].columns,
            )  # fmt: skip
        return st.digests

    def checksums(self) -> dict[str, Checksum]:
        """``(count, sum of digests)`` per keyed type."""
        return {
            name: checksum_of(self.digests(name))
            for name, st in self._types.items()
            if st.tdef.key is not None
        }

    def staged_keys(self, type_name: str) -> dict[Any, int]:
        """Primary key -> ordinal of every staged record of a keyed type (do not modify)."""
        return self._staged(type_name).keys

    def staged_column(self, type_name: str, field_name: str) -> list[Any]:
        """The staged values of one field, by ordinal (references as keys; do not modify)."""
        st = self._staged(type_name)
        return st.columns[st.tdef.field_names.index(field_name)]

    def staged_record(self, type_name: str, ordinal: int) -> dict[str, Any]:
        """A staged record as a plain mapping (nested records as mappings, references as
        keys, left-out fields left out), fit to :meth:`add` to another WriteState."""
        st = self._staged(type_name)
        out = {}
        for f, col in zip(st.tdef.fields, st.columns, strict=True):
            v = col[ordinal]
            if v is _ABSENT:
                continue
            out[f.name] = self._plain(f.type, v)
        return out

    def _plain(self, ft: FieldType, v: Any) -> Any:
        if v is None:
            return None
        k = ft.kind
        if k == "record":
            assert ft.target is not None
            return self.staged_record(ft.target, v)
        if k in ("list", "set") and _has_record(ft):
            assert ft.item is not None
            return [self._plain(ft.item, x) for x in v]
        if k == "dict" and _has_record(ft):
            assert ft.item is not None
            return {a: self._plain(ft.item, b) for a, b in v.items()}
        return v

    # -- encoding ----------------------------------------------------------------------

    def build(
        self, *, refs_as_keys: bool = False, learned: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], Sections]:
        """Encode every staged type: ``(types meta, sections)`` for a blob.

        ``refs_as_keys`` encodes a delta: references are stored as the target's key instead
        of its ordinal (a delta's records refer to records that are not in it; the reader
        opens those fields with :func:`nearstate.schema.refs_to_keys` types), and text is
        compressed without training a dictionary (not worth it for a few records).
        ``learned``: see :func:`nearstate.encoding.encode_column` (a streamed import
        encodes its parts with the tables and dictionaries the first part chose).
        """
        ordinals = {name: st.keys for name, st in self._types.items() if st.tdef.key}
        sections: Sections = {}
        types_meta: dict[str, Any] = {}
        for name, st in self._types.items():
            cols_meta = {}
            for f, col in zip(st.tdef.fields, st.columns, strict=True):
                ft = f.type
                if _has_ref(ft):
                    if refs_as_keys:
                        ft = refs_to_keys(ft, self.schema)
                    else:
                        col = [_resolve(ft, v, ordinals, f"{name}: field {f.name!r}") for v in col]
                cols_meta[f.name] = encode_column(
                    ft, col, sections, f"{name}/{f.name}", train=not refs_as_keys,
                    learned=learned,
                )  # fmt: skip
            meta: dict[str, Any] = {"count": st.count, "columns": cols_meta}
            if st.tdef.key is not None:
                sections[f"{name}/#pk"], sections[f"{name}/#pktag"] = build_pk_tables(
                    (key_bytes(k) for k in st.keys), st.count
                )
                sections[f"{name}/#digest"] = self.digests(name)
                meta["checksum"] = fmt_checksum(checksum_of(self.digests(name)))
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
            "schema": self.final_schema().to_json(),
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
    raise SchemaError(
        f"{type_name}: a record must be a mapping or a dataclass, not {_describe(record)}"
    )


def _describe(v: Any) -> str:
    try:
        r = repr(v)
    except RecursionError:  # a value nested too deeply to show (schemas nest far less)
        return f"{type(v).__name__} nested too deeply to show"
    return f"{type(v).__name__} {r[:40] + '...' if len(r) > 40 else r}"


def _canon(tdef: TypeDef, values: list[Any]) -> tuple:
    """A hashable form of a nested record's values, for de-duplication."""
    out = list(values)
    for i, f in enumerate(tdef.fields):
        k = f.type.kind
        v = out[i]
        if v is None or v is _ABSENT or k in _PLAIN_CANON:
            continue
        if k == "float":
            if v == 0.0 or v != v:
                out[i] = canonical_float(v)
        else:
            out[i] = _canon_value(f.type, v)
    return tuple(out)


_PLAIN_CANON = frozenset({"int", "str", "text", "bool", "bytes", "record"})


def _plain_canon(ft: FieldType, col: list[Any]) -> bool:
    """Whether ``col``'s values serve as their own canonical form (:func:`_canon`): a kind
    compared as it is, or floats none of which is a zero (0.0 equals -0.0) or NaN (equal
    to nothing)."""
    if ft.kind in _PLAIN_CANON:
        return True
    if ft.kind != "float":
        return False
    vals = [v for v in col if v is not None and v is not _ABSENT]
    if not set(map(type, vals)) <= {float}:
        return False
    a = np.array(vals, dtype=np.float64)
    return not (a == 0).any() and not np.isnan(a).any()


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


def _has_record(ft: FieldType) -> bool:
    return ft.kind == "record" or any(_has_record(s) for s in (ft.item, ft.key) if s is not None)


def _has_ref(ft: FieldType) -> bool:
    return ft.kind == "ref" or any(_has_ref(s) for s in (ft.item, ft.key) if s is not None)


def _resolve(ft: FieldType, v: Any, ordinals: Mapping[str, Mapping[Any, int]], where: str) -> Any:
    if v is None or v is _ABSENT:
        return v
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
