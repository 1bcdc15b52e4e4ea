"""One immutable version of a dataset, compact, in memory.

A :class:`ReadState` holds a :class:`TypeState` per type; each is a set of columns indexed
by ordinal. ``state["Movie"].get(key)`` returns a :class:`Record`: a two-slot view (type,
ordinal) that decodes a field only when you read it. Nothing in a ReadState changes after
it is built, so any number of threads may read it at once; the lazily built hash indexes
are created under a lock.

Over ~600 lines on purpose: the read path's core. :class:`Record`, :class:`TypeState`
and :class:`ReadState` and the loading of a blob into them (choosing types, narrowing,
checking sections) share a TypeState's layout — its columns, key table and lazily built
indexes — which no other module touches; :mod:`nearstate.layered` builds on the public
parts.
"""

from __future__ import annotations

import mmap as _mmap
from collections.abc import Collection, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

from . import digest as _digest
from ._native import core as _core
from .blob import ALIGN, Blob, parse_blob, read_blob
from .encoding import Column, ColumnContext, open_column
from .errors import ChecksumError, FormatError, SchemaError
from .index import HashIndex, LazyIndexes, check_orderable, make_pk_lookup
from .ordered import OrderedIndex, Query, build_ordered, match
from .schema import Field, FieldType, Schema, TypeDef, schema_from_json
from .shared_index import mapped_index, shared_root

if _core is not None:
    _RecordBase: type = _core.RecordBase  # the two slots, __init__ and to_dict, in C
else:

    class _RecordBase:
        __slots__ = ("_ord", "_ts")
        _ts: TypeState
        _ord: int

        def __init__(self, ts: TypeState, ordinal: int):
            self._ts = ts
            self._ord = ordinal

        def to_dict(self) -> dict[str, Any]:
            """The record as plain Python values; nested records become dicts, references
            keys."""
            return {name: _plain(c.get(self._ord)) for name, c in self._ts._columns.items()}


class Record(_RecordBase):
    """A view of one record: attribute access per field, ``to_dict()``, equality by value.

    Views are cheap (two slots: ``_ts``, ``_ord``); each attribute read decodes that field
    from the columns. With the compiled core the slots, ``to_dict`` and each field's
    attribute are native; the behaviour is the same.
    """

    __slots__ = ()
    _ts: TypeState
    _ord: int

    @property
    def ordinal(self) -> int:
        return self._ord

    @property
    def key(self) -> Any:
        """The primary key value (a tuple for composite keys)."""
        return self._ts._key_at(self._ord)

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"{self._ts.name} has no field {name!r}")

    def __getitem__(self, name: str) -> Any:
        col = self._ts._columns.get(name)
        if col is None:
            raise KeyError(name)
        return col.get(self._ord)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Record):
            if other._ts is self._ts:
                return other._ord == self._ord
            return self._ts.name == other._ts.name and self.to_dict() == other.to_dict()
        return NotImplemented

    def __hash__(self) -> int:
        # equal records of different states must hash alike: hash what equality compares
        if self._ts.typedef.key is not None:
            return hash((self._ts.name, self.key))
        return hash((self._ts.name, _freeze(self.to_dict())))

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in list(self.to_dict().items())[:6])
        more = ", ..." if len(self._ts._columns) > 6 else ""
        return f"<{self._ts.name} #{self._ord} {fields}{more}>"


def _freeze(v: Any) -> Any:
    """A hashable form equal where the values are equal (0.0 and -0.0 alike)."""
    if isinstance(v, dict):
        return tuple((k, _freeze(x)) for k, x in v.items())
    if isinstance(v, list):
        return tuple(_freeze(x) for x in v)
    if isinstance(v, set):
        return frozenset(_freeze(x) for x in v)
    return v


def _plain(v: Any) -> Any:
    if isinstance(v, Record):
        ts = v._ts
        return ts._key_at(v._ord) if ts.typedef.key is not None else v.to_dict()
    if isinstance(v, list):
        return [_plain(x) for x in v]
    if isinstance(v, set):
        return {_plain(x) for x in v}
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


class TypeState:
    """The records of one type in one version."""

    def __init__(
        self,
        state: ReadState,
        typedef: TypeDef,
        count: int,
        columns: dict[str, Column],
        pk_table: np.ndarray | None,
        nbytes: int,
        views: bool = True,
        pk_tags: np.ndarray | None = None,
    ):
        self.name = typedef.name
        self.typedef = typedef
        self._state = state
        self._count = count
        self._columns = columns
        self.nbytes = nbytes
        if views:
            cls = _view_class(typedef.name, columns)
            self._cls = cls
            self.view = cls  # ordinal -> Record (no bounds check: internal)
        self._indexes = LazyIndexes(self._build_index)
        if typedef.key is not None:
            kcols = [columns[k].get for k in typedef.key]
            if len(kcols) == 1:
                self._key_at = kcols[0]
            else:
                self._key_at = lambda o: tuple(g(o) for g in kcols)
            if pk_table is None:
                raise FormatError(f"type {self.name!r} lacks its primary key table")
            key = columns[typedef.key[0]] if len(kcols) == 1 else None
            self._lookup = make_pk_lookup(pk_table, self._key_at, key_column=key, tags=pk_tags)
            if views:
                self.get = self._make_get(self._lookup)  # shadows the method: one call less
        else:
            self._key_at = lambda o: None
            self._lookup = None

    def __getattr__(self, name: str) -> Any:
        # without ``views`` (a delta layer's records, read through a LayeredState) the view
        # class is made on first use: a class per layer would be garbage the cycle
        # collector must walk (long pauses when the Log is applied many times a second)
        if name in ("_cls", "view"):
            cls = _view_class(self.typedef.name, self._columns)
            self._cls = self.view = cls
            return cls
        if name == "_maker":  # compiled core only: cls(self, o) without the interpreter
            maker = self._maker = _core.Maker(self._cls, self)
            return maker
        raise AttributeError(name)

    def __len__(self) -> int:
        return self._count

    _digests: np.ndarray | None = None

    def digest(self, ordinal: int) -> int:
        """The content digest of the record at ``ordinal`` (see :mod:`nearstate.digest`)."""
        d = self._digests
        if d is not None:
            return int(d[ordinal])
        return _digest.digest_record(self._cls(self, ordinal), self._state.schema)

    def all_digests(self) -> np.ndarray:
        if self._digests is None:
            self._digests = np.fromiter(
                (self.digest(o) for o in range(self._count)), np.uint64, self._count
            )
        return self._digests

    def __iter__(self) -> Iterator[Record]:
        cls = self._cls
        for o in range(self._count):
            yield cls(self, o)

    def __getitem__(self, ordinal: int) -> Record:
        """The record at an ordinal (0 <= ordinal < len)."""
        if not 0 <= ordinal < self._count:
            raise IndexError(f"{self.name}: ordinal {ordinal} out of range 0..{self._count - 1}")
        return self._cls(self, ordinal)

    def get(self, key: Any, default: Any = None) -> Record | Any:
        """The record with this primary key (a tuple for composite keys), or ``default``."""
        lookup = self._lookup
        if lookup is None:
            raise SchemaError(f"type {self.name!r} has no primary key")
        o = lookup(key)
        if o < 0:
            return default
        return self._cls(self, o)

    def _make_get(self, lookup):
        if _core is not None:
            return _core.Getter(lookup, self._maker)
        cls = self._cls

        def get(key: Any, default: Any = None) -> Record | Any:
            o = lookup(key)
            return default if o < 0 else cls(self, o)

        get.__doc__ = TypeState.get.__doc__
        return get

    def __contains__(self, key: Any) -> bool:
        return self._lookup is not None and self._lookup(key) >= 0

    def ordinal_of(self, key: Any) -> int:
        """The ordinal of a key, or -1."""
        if self._lookup is None:
            raise SchemaError(f"type {self.name!r} has no primary key")
        return self._lookup(key)

    def keys(self) -> Iterator[Any]:
        for o in range(self._count):
            yield self._key_at(o)

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(self._columns)

    def field_nbytes(self) -> dict[str, int]:
        """Bytes held per field (its columns, nested element columns included)."""
        return {name: c.nbytes for name, c in self._columns.items()}

    def column(self, name: str) -> Column:
        try:
            return self._columns[name]
        except KeyError:
            raise SchemaError(f"type {self.name!r} has no field {name!r}") from None

    # -- indexes: hash (equality) and ordered (ranges, prefixes, IN), built on first use --

    def index(self, *fields: str) -> HashIndex:
        """The hash index on a field or tuple of fields, built on first use and kept."""
        for f in fields:
            self.column(f)
        if not fields:
            raise SchemaError("an index needs at least one field")
        return self._indexes.get(tuple(fields))

    def ordered(self, field: str) -> OrderedIndex:
        """The ordered index on ``field`` (int, float, bool, str, datetime, or a list or set
        of those): records in the field's order by ``range``, ``prefix`` and ``one_of``
        (see :mod:`nearstate.ordered`). Built on first use, once, under a lock, and kept."""
        check_orderable(f"{self.name}.{field}", self.column(field).ftype)
        cache = self.__dict__.get("_ordered")
        if cache is None:
            cache = self.__dict__.setdefault("_ordered", LazyIndexes(self._build_ordered))
        return cache.get((field,))

    def find(self, **where: Any) -> list[Record]:
        """Records whose fields equal the given values, e.g. ``find(year=1999, kind="news")``.

        A list or set field matches records that contain the value. A value may be a
        query — ``between(lo, hi)``, ``above(x)``, ``below(x)``, ``prefix(p)``,
        ``one_of([...])`` — answered by the field's ordered index; several conditions
        intersect. Records come in ordinal order (``ordered(field)`` gives a field's order).
        """
        if any(isinstance(v, Query) for v in where.values()):
            return self._records(match(self, where, index_value))
        idx = self.index(*where)
        vals = [index_value(v) for v in where.values()]
        value = tuple(vals) if len(vals) > 1 else vals[0]
        if _core is not None:
            return self._maker.many(idx.ordinals(value))
        cls = self._cls
        return [cls(self, int(o)) for o in idx.ordinals(value)]

    def find_one(self, **where: Any) -> Record | None:
        found = self.find(**where)
        return found[0] if found else None

    def _build_index(self, fields: tuple[str, ...]) -> HashIndex:
        for f in fields:
            if self._columns[f].ftype.kind == "dict":
                raise SchemaError(f"{self.name}.{f}: dict fields cannot be indexed")
        if shared_root() is not None:  # built once per host and mapped
            state = self._state
            key = (state.dataset, state.version, self.name, state.checksums().get(self.name),
                   repr(self.typedef))  # fmt: skip
            shared = mapped_index(key, fields, lambda: self._hash_index(fields))
            if shared is not None:
                return shared  # type: ignore[return-value]
        return self._hash_index(fields)

    def _hash_index(self, fields: tuple[str, ...]) -> HashIndex:
        cols = [self._columns[f] for f in fields]

        def hashable(ft: FieldType, v: Any) -> list[Any]:
            if ft.kind in ("list", "set"):
                return list(dict.fromkeys(index_value(x) for x in (v or ())))
            return [index_value(v)]

        def values():
            for o in range(self._count):
                per_field = [hashable(c.ftype, c.get(o)) for c in cols]
                if len(per_field) == 1:
                    for v in per_field[0]:
                        yield o, v
                else:
                    yield from ((o, combo) for combo in _product(per_field))

        return HashIndex(fields, values())

    def _records(self, ordinals: np.ndarray) -> list[Record]:
        if _core is not None:
            return self._maker.many(np.ascontiguousarray(ordinals, dtype=np.uint32))
        cls = self._cls
        return [cls(self, o) for o in ordinals.tolist()]

    def _build_ordered(self, fields: tuple[str, ...]) -> OrderedIndex:
        (name,) = fields
        col = self._columns[name]
        where = f"{self.name}.{name}"
        return build_ordered(where, col, self._count, self._records, self._stored(name))

    def _stored(self, name: str) -> tuple[dict[str, Any], ColumnContext, str] | None:
        """A field's stored layout (meta, sections, section name) where the column reads
        it as it is stored; None where it reads a default or converts the stored value."""
        state = self._state
        stored_def = state.stored_schema.types.get(self.name)
        meta = state.blob.header.get("types", {}).get(self.name)
        if stored_def is None or not isinstance(meta, dict):
            return None
        mine = next(f for f in self.typedef.fields if f.name == name)
        theirs = next((f for f in stored_def.fields if f.name == name), None)
        if theirs is None or theirs.type != mine.type or name not in meta.get("columns", {}):
            return None
        ctx = ColumnContext(state.blob.arrays, state._viewer)
        return meta["columns"][name], ctx, f"{self.name}/{name}"


_NAN_KEY = ("nan",)  # NaN != NaN, yet find(x=nan) should find the NaNs


def index_value(v: Any) -> Any:
    if isinstance(v, Record):
        return v.key if v._ts.typedef.key is not None else v.ordinal
    if type(v) is float and v != v:
        return _NAN_KEY
    return v


def _product(lists: list[list[Any]]) -> list[tuple]:
    out: list[tuple] = [()]
    for vs in lists:
        out = [(*t, v) for t in out for v in vs]
    return out


def _view_class(type_name: str, columns: Mapping[str, Column]) -> type[Record]:
    ns: dict[str, Any] = {"__slots__": ()}
    for name, col in columns.items():
        if name.isidentifier() and not hasattr(Record, name):
            if _core is not None:
                ns[name] = _core.Field(col.get)
            else:
                ns[name] = property(lambda self, _g=col.get: _g(self._ord))
    return type(type_name.replace(".", "_"), (Record,), ns)


class TypeMap:
    """Reading a state's types by name: shared by ReadState and LayeredState."""

    _types: dict[str, Any]
    #: the type names a filtered state was asked for (``types=...``); None: every type
    type_filter: tuple[str, ...] | None = None
    #: the types of the dataset a filtered state leaves out (never opened)
    left_out: frozenset[str] = frozenset()

    def __getitem__(self, type_name: str) -> TypeState:
        try:
            return self._types[type_name]
        except KeyError:
            if type_name in self.left_out:
                raise SchemaError(
                    f"type {type_name!r} was filtered out: this state loads "
                    f"types={list(self.type_filter or ())} only (and the types they "
                    f"nest); add {type_name!r} to types=... to read it"
                ) from None
            raise SchemaError(
                f"no type {type_name!r} in this state (types: {', '.join(self._types)})"
            ) from None

    def __contains__(self, type_name: object) -> bool:
        return type_name in self._types

    def get(self, type_name: str, default: Any = None) -> TypeState | Any:
        """The type's records, or ``default`` when the state has no such type."""
        return self._types.get(type_name, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._types)

    @property
    def types(self) -> dict[str, TypeState]:
        """Every type, nested ones included."""
        return dict(self._types)


class ReadState(TypeMap):
    """One immutable version of a dataset: ``state["Movie"]`` is a :class:`TypeState`.

    ``types`` (Hollow's filter config): open only these types and the nested types their
    ``record`` fields need; other types are never wrapped, and reading one raises
    :class:`SchemaError` saying it was filtered out (see :func:`select_types` for what is
    refused). The blob is used as it is: :func:`load` and :func:`from_bytes` with
    ``types`` also leave the other types' sections unread and unchecked.
    """

    def __init__(
        self,
        blob: Blob,
        *,
        schema: Schema | None = None,
        views: bool = True,
        types: Iterable[str] | None = None,
    ):
        h = blob.header
        self.blob = blob
        self.dataset: str = h.get("dataset", "default")
        self.version: int = int(h.get("version", 0))
        self.tags: dict[str, str] = dict(h.get("tags", {}))
        try:
            stored = schema_from_json(h["schema"])
            types_meta = h["types"]
        except KeyError as e:
            raise FormatError(f"{blob.source}: header lacks {e.args[0]!r}") from None
        self.stored_schema = stored
        self.schema = schema if schema is not None else stored
        if types is not None:
            self.type_filter = type_names(types)
            everything = {*stored.types, *self.schema.types}
            self.schema = select_types(self.schema, self.type_filter)
            self.left_out = frozenset(everything.difference(self.schema.types))
        self._types: dict[str, TypeState] = {}
        self._viewers: dict[str, Any] = {}
        ctx = ColumnContext(blob.arrays, self._viewer)
        sizes = blob.section_sizes
        for tdef in self.schema:
            meta = types_meta.get(tdef.name) if tdef.name in stored else None
            stored_def = stored.types.get(tdef.name)
            count = int(meta["count"]) if meta else 0
            columns: dict[str, Column] = {}
            for f in tdef.fields:
                columns[f.name] = _column_for(f, stored_def, meta, ctx, tdef.name, count)
            pk = blob.arrays.get(f"{tdef.name}/#pk") if meta else None
            if tdef.key is not None and stored_def is not None and stored_def.key != tdef.key:
                raise SchemaError(
                    f"type {tdef.name!r}: primary key changed from {list(stored_def.key or ())} "
                    f"to {list(tdef.key)}"
                )
            if tdef.key is not None and pk is None:
                pk = np.zeros(8, dtype=np.uint8)  # a type this blob does not have: empty
            nbytes = sum(v for k, v in sizes.items() if k.startswith(tdef.name + "/"))
            tags = blob.arrays.get(f"{tdef.name}/#pktag") if meta else None
            ts = TypeState(self, tdef, count, columns, pk, nbytes, views, tags)
            ts._digests = blob.arrays.get(f"{tdef.name}/#digest") if meta else None
            self._types[tdef.name] = ts
        # the checksums the blob claims: of the types opened and (a filtered state) of those
        # left out, which are carried, never verified
        known = self._types.keys() | self.left_out
        self._checksums = {
            name: _digest.parse(m["checksum"])
            for name, m in types_meta.items()
            if isinstance(m, dict) and "checksum" in m and name in known
        }

    def _viewer(self, type_name: str):
        v = self._viewers.get(type_name)
        if v is None:
            ts = self._types[type_name]
            if _core is not None:
                v = self._viewers[type_name] = ts._maker
            else:
                cls = ts.view
                v = self._viewers[type_name] = lambda o: cls(ts, o)
        return v

    @property
    def nbytes(self) -> int:
        """Bytes of the blob this state reads from (header and all sections)."""
        return self.blob.nbytes

    @property
    def base(self) -> ReadState:
        """The snapshot this state reads from (itself: a ReadState has no deltas applied)."""
        return self

    def type_nbytes(self) -> dict[str, int]:
        """Bytes held per type."""
        return {n: t.nbytes for n, t in self._types.items()}

    def checksums(self) -> dict[str, _digest.Checksum]:
        """``(count, sum of record digests)`` per keyed type (computed for old blobs).

        A filtered state (``types=...``) adds the checksums its blob claims for the types
        it leaves out, as they are: they are carried, never verified."""
        out = {}
        for name, ts in self._types.items():
            if ts.typedef.key is None:
                continue
            c = self._checksums.get(name)
            if c is None:
                c = self._checksums[name] = _digest.checksum_of(ts.all_digests())
            out[name] = c
        if self.left_out:
            out.update((n, c) for n, c in self._checksums.items() if n in self.left_out)
        return out

    def __repr__(self) -> str:
        counts = ", ".join(f"{n}={len(t)}" for n, t in self._types.items() if t.typedef.key)
        return f"<ReadState {self.dataset} v{self.version}: {counts}>"


def _column_for(
    f: Field,
    stored_def: TypeDef | None,
    meta: dict[str, Any] | None,
    ctx: ColumnContext,
    type_name: str,
    count: int,
) -> Column:
    stored_field = None
    if stored_def is not None:
        stored_field = next((sf for sf in stored_def.fields if sf.name == f.name), None)
    if stored_field is None or meta is None:
        # a field (or type) the blob does not have: every record reads the default
        if not f.has_default and not f.type.nullable and count:
            raise SchemaError(
                f"{type_name}.{f.name}: the blob has no such field and the reader's schema "
                "gives it no default (make it Optional or give it a default)"
            )
        default = f.default if f.has_default else None
        return Column(f.name, f.type, lambda o, _d=default: _d, 0)
    col = open_column(stored_field.type, meta["columns"][f.name], ctx, f"{type_name}/{f.name}")
    conv = _compatible(stored_field.type, f.type, f"{type_name}.{f.name}")
    if conv is not None:
        inner = col.get
        return Column(f.name, f.type, lambda o: conv(inner(o)), col.nbytes)
    return col


def _compatible(stored: FieldType, wanted: FieldType, where: str):
    """None if values read as they are; a converter for a widening; SchemaError otherwise."""
    if stored.nullable and not wanted.nullable:
        raise SchemaError(
            f"{where}: the blob allows null ({stored.spec()}), "
            f"the reader does not ({wanted.spec()})"
        )
    sk, wk = stored.kind, wanted.kind
    if sk == wk:
        if sk in ("list", "set", "dict"):
            assert stored.item is not None and wanted.item is not None
            if _compatible(stored.item, wanted.item, where + "[]") is not None:
                raise SchemaError(
                    f"{where}: element type changed from {stored.spec()} to {wanted.spec()}"
                )
            if sk == "dict" and stored.key != wanted.key:
                raise SchemaError(
                    f"{where}: key type changed from {stored.spec()} to {wanted.spec()}"
                )
        if sk in ("record", "ref") and stored.target != wanted.target:
            raise SchemaError(f"{where}: target changed from {stored.target} to {wanted.target}")
        return None
    if {sk, wk} == {"str", "text"}:
        return None
    if sk == "int" and wk == "float":
        return lambda v: None if v is None else float(v)
    if (sk == "list" and wk == "set") or (sk == "set" and wk == "list"):
        if stored.item != wanted.item:
            raise SchemaError(
                f"{where}: element type changed from {stored.spec()} to {wanted.spec()}"
            )
        return (
            (lambda v: None if v is None else set(v))
            if wk == "set"
            else (lambda v: None if v is None else list(v))
        )
    raise SchemaError(
        f"{where}: the blob stores {stored.spec()} but the reader expects {wanted.spec()}"
    )


def load(
    path: str | Path,
    *,
    mmap: bool = True,
    verify: bool = True,
    schema: Schema | None = None,
    types: Iterable[str] | None = None,
) -> ReadState:
    """Load a snapshot blob: mapped without copying (default) or read into memory.

    ``schema`` is the reader's own schema when it differs from the blob's: fields it adds
    read as their defaults, fields it lacks are ignored, incompatible changes raise
    :class:`SchemaError` naming the field.

    ``types``: load only these types (and the nested types they need; see
    :func:`select_types`). The other types' sections are never read: mapped, their pages
    are never touched; read into memory (``mmap=False``), only the sections loaded are
    read from the file, into one buffer. ``verify`` then checks the header and the
    sections loaded.
    """
    if types is None:
        return ReadState(read_blob(path, mmap=mmap, verify=verify), schema=schema)
    names = type_names(types)
    try:
        with open(path, "rb") as f:
            try:
                buf: Any = _mmap.mmap(f.fileno(), 0, access=_mmap.ACCESS_READ)
            except ValueError as e:  # empty file
                raise FormatError(f"{path}: not a nearstate blob ({e})") from e
            whole = parse_blob(buf, verify=False, source=str(path))  # reads the header only
            blob = narrow_blob(whole, _kept(whole, schema, names), verify=False, copy=False)
            if not mmap:  # read the sections kept, without mapping them
                start = whole.nbytes - int(whole.header["data_length"])
                arrays = _read_sections(f, blob.header["sections"], start, blob.source)
                blob = Blob(blob.header, arrays, blob.nbytes, blob.source)
    except OSError as e:
        raise FormatError(f"cannot read blob {path}: {e.strerror or e}") from e
    if verify:
        check_sections(blob)
    return ReadState(blob, schema=schema, types=names)


def from_bytes(
    buf: bytes,
    *,
    verify: bool = True,
    schema: Schema | None = None,
    types: Iterable[str] | None = None,
) -> ReadState:
    """A ReadState over a blob held in memory (e.g. one just fetched).

    With ``types``, the sections of the types loaded are copied out of ``buf`` (so the
    caller may drop it and keep only what is read) and checked; the rest are not read.
    """
    return read_buffer(buf, verify=verify, schema=schema, types=types)


def read_buffer(
    buf: Any,
    *,
    source: str = "<bytes>",
    verify: bool = True,
    schema: Schema | None = None,
    types: Iterable[str] | None = None,
    copy: bool | None = None,
) -> ReadState:
    """A ReadState over a blob in ``buf`` (bytes, an mmap...), of every type or of
    ``types`` only. ``copy`` (default: unless ``buf`` is a mapped file): with ``types``,
    copy the sections loaded into a buffer of their own, so ``buf`` can be freed."""
    if types is None:
        return ReadState(parse_blob(buf, verify=verify, source=source), schema=schema)
    names = type_names(types)
    blob = parse_blob(buf, verify=False, source=source)  # the structure and the header
    if copy is None:
        copy = not isinstance(buf, _mmap.mmap)
    keep = _kept(blob, schema, names)
    return ReadState(narrow_blob(blob, keep, verify=verify, copy=copy), schema=schema,
                     types=names)  # fmt: skip


def _kept(blob: Blob, schema: Schema | None, names: tuple[str, ...]) -> Collection[str]:
    """The types a state of ``names`` opens, read with ``schema`` (None: the blob's)."""
    if schema is None:
        try:
            schema = schema_from_json(blob.header["schema"])
        except KeyError as e:
            raise FormatError(f"{blob.source}: header lacks {e.args[0]!r}") from None
    return select_types(schema, names).types


def type_names(types: Iterable[str]) -> tuple[str, ...]:
    """``types=`` as a tuple of names (one name alone is taken as a list of one)."""
    names = (types,) if isinstance(types, str) else tuple(types)
    for n in names:
        if not isinstance(n, str):
            raise SchemaError(f"types=... takes type names, not {n!r}")
    if not names:
        raise SchemaError("types=[] loads no type: name at least one (or pass None for all)")
    return tuple(dict.fromkeys(names))


def select_types(schema: Schema, types: Iterable[str]) -> Schema:
    """``schema`` cut to ``types`` plus every type their ``record`` fields nest (those
    come along by themselves, at any depth).

    Contracts: a name ``schema`` lacks raises :class:`SchemaError` listing the types there
    are; a ``ref`` field of a type kept into a type left out is refused with
    :class:`SchemaError` naming the type, the field and the target (``Story.author refers
    to Person, which types=['Story'] leaves out; add it``). Pure: reads nothing else.
    """
    names = type_names(types)
    unknown = [n for n in names if n not in schema.types]
    if unknown:
        raise SchemaError(
            f"types={list(names)} names {', '.join(map(repr, unknown))}, which the "
            f"dataset's schema does not have (types: {', '.join(schema.types)})"
        )
    keep: dict[str, None] = {}
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in keep:
            continue
        keep[name] = None
        for f in schema[name].fields:
            todo.extend(_targets(f.type, "record"))
    for name in keep:
        for f in schema[name].fields:
            for target in _targets(f.type, "ref"):
                if target not in keep:
                    raise SchemaError(
                        f"{name}.{f.name} refers to {target}, which types={list(names)} "
                        "leaves out; add it"
                    )
    if len(keep) == len(schema.types):
        return schema
    return Schema([t for t in schema if t.name in keep])


def _targets(ft: FieldType, kind: str) -> list[str]:
    """The types a field's ``kind`` ("record" or "ref") values point into, at any depth
    of lists, sets and dicts."""
    out = [ft.target] if ft.kind == kind and ft.target is not None else []
    for sub in (ft.item, ft.key):
        if sub is not None:
            out.extend(_targets(sub, kind))
    return out


def narrow_blob(blob: Blob, types: Collection[str], *, verify: bool, copy: bool) -> Blob:
    """``blob`` with the sections of ``types`` only (a delta's removed keys too): the other
    types' sections are never read. ``verify``: check each section kept against its
    checksum (over its bytes and zero padding); ``copy``: copy the sections kept into one
    buffer of their own, so what ``blob`` reads from can be freed. The header's schema,
    type metadata and checksums stay whole; read the result with the same ``types``.
    ``nbytes`` counts the header and the sections kept."""
    h = blob.header
    kept_sections = []
    dropped = 0
    for s in h["sections"]:
        length = int(s["length"])
        if s["name"].split("/", 1)[0] in types:
            kept_sections.append(s)
        else:
            dropped += length + (-length % ALIGN)
    arrays = {s["name"]: blob.arrays[s["name"]] for s in kept_sections}
    head = dict(h)
    head["sections"] = kept_sections
    if "removed" in h:
        head["removed"] = {n: m for n, m in h["removed"].items() if n in types}
    out = Blob(head, arrays, blob.nbytes - dropped, blob.source)
    if verify:
        check_sections(out)
    if copy:
        out = Blob(head, _copied(arrays), out.nbytes, out.source)
    return out


def check_sections(blob: Blob) -> None:
    """Check each section ``blob`` lists against its checksum (over its bytes and the zero
    padding it was written with); ChecksumError naming the first that fails."""
    for s in blob.header["sections"]:
        name, length = s["name"], int(s["length"])
        a = blob.arrays[name]
        x = xxhash.xxh3_64()
        x.update(memoryview(a).cast("B") if a.size else b"")
        x.update(b"\0" * (-length % ALIGN))
        if x.hexdigest() != s["xxh3"]:
            raise ChecksumError(f"{blob.source}: section {name!r} fails its checksum",
                                section=name)  # fmt: skip


def _read_sections(
    f: Any, sections: list[dict[str, Any]], start: int, source: str
) -> dict[str, np.ndarray]:
    """The ``sections`` read from the open file ``f`` (data at offset ``start``) into one
    new buffer, each at a multiple of ALIGN in it: nothing else of the file is read."""
    total = sum(int(s["length"]) + (-int(s["length"]) % ALIGN) for s in sections)
    buf = bytearray(total)
    mv = memoryview(buf)
    arrays: dict[str, np.ndarray] = {}
    at = 0
    for s in sections:
        length = int(s["length"])
        f.seek(start + int(s["offset"]))
        got = 0
        while got < length:
            n = f.readinto(mv[at + got : at + length])
            if not n:
                raise FormatError(f"{source}: truncated in section {s['name']!r}")
            got += n
        dtype = np.dtype(s["dtype"])
        a = np.frombuffer(buf, dtype=dtype, count=length // dtype.itemsize, offset=at)
        a.flags.writeable = False
        arrays[s["name"]] = a
        at += length + (-length % ALIGN)
    return arrays


def _copied(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays copied into one new buffer (each at a multiple of ALIGN in it)."""
    pieces: list[Any] = []
    at: dict[str, int] = {}
    offset = 0
    for name, a in arrays.items():
        raw = memoryview(a).cast("B") if a.size else memoryview(b"")
        at[name] = offset
        pad = -raw.nbytes % ALIGN
        pieces += [raw, b"\0" * pad]
        offset += raw.nbytes + pad
    buf = b"".join(pieces)
    return {
        name: np.frombuffer(buf, dtype=a.dtype, count=a.size, offset=at[name])
        for name, a in arrays.items()
    }
