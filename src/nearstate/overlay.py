"""Committed Log entries shown over a version, before the Producer folds them into one.

A consumer keeps a :class:`LogTail`: every key changed by an entry past its version's Log
position, with the last record written (or None for a delete) and the position of that
change. To show a batch of new entries it stages their net changes (checked and converted
as a Producer stages records) and applies them over the state it shows as a
:class:`PlainLayer`: a delta layer read straight from the staged Python values, never
encoded into columns and parsed back (that cost a reader a third of a millisecond for a
single-record commit). Lookups, iteration, references and indexes see the writes exactly
as they will read once a version includes them; ``lay_over(..., encoded=True)`` builds the
same layer the Producer's way, the reference the plain one is tested against. When a
version that includes some entries arrives, the tail drops them and the remaining ones are
laid over the new version.

A consumer decodes an entry's keys only: each record stays its msgpack bytes
(``msgspec.Raw``) in the tail, and a layer of them is staged when a reader first reads it
(:meth:`LogStage.defer`). Laying a commit over then costs its keys (a story commit: 350k
instructions instead of 580k), and a process that never reads a changed record never
decodes it; one that does pays the decoding on that read, as it paid it before on the
commit. Types keyed by anything but ints and strings, and layers of more than
``DEFER_MAX`` records (a re-laid tail), are staged at once.

Over ~600 lines on purpose: :class:`LogStage` converts staged values exactly as
:class:`PlainLayer` reads them back, so the two conversions (``_conv`` and
``_plain_conv``) stay side by side, with the tail that drives them.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from functools import cached_property
from typing import Any

import msgspec

from .blob import encode_blob, parse_blob
from .delta import DeltaLayer, encode_delta
from .encoding import ABSENT, Column
from .errors import DatasetError, SchemaError
from .layered import Changes, State, apply_delta, type_shape
from .lazymap import LazyMap
from .read_state import ReadState, TypeMap
from .schema import FieldType, Schema, TypeDef, per_schema
from .write_state import WriteState
from .writer import Entry

Net = dict[str, dict[Any, dict[str, Any] | None]]  # type -> key -> record (None: deleted)


class LogTail:
    """The keys changed by Log entries after position ``after`` (the version's)."""

    def __init__(self, after: int):
        self.after = after
        self.position = after  # the last entry added
        self._changes: dict[str, dict[Any, tuple[int, dict[str, Any] | None]]] = {}

    def __len__(self) -> int:
        return sum(len(m) for m in self._changes.values())

    def add(self, entries: Iterable[Entry]) -> Net:
        """Add entries (in Log order); return their net changes."""
        net: Net = {}
        for e in entries:
            if e.position <= self.position:
                continue
            for type_name, key, rec in e.mutations:
                self._changes.setdefault(type_name, {})[key] = (e.position, rec)
                net.setdefault(type_name, {})[key] = rec
            self.position = e.position
        return net

    def since(self, after: int) -> LogTail:
        """The entries after ``after`` only (those up to it are in a version now)."""
        out = LogTail(max(after, self.after))
        out.position = max(self.position, out.after)
        for t, m in self._changes.items():
            kept = {k: v for k, v in m.items() if v[0] > out.after}
            if kept:
                out._changes[t] = kept
        return out

    def net(self) -> Net:
        return {t: {k: rec for k, (_, rec) in m.items()} for t, m in self._changes.items()}


def lay_over(
    state: State, net: Net, *, name: str, encoded: bool = False
) -> tuple[State, dict[str, Changes]]:
    """``state`` with ``net`` applied as one layer (same version number), and the keys that
    changed. Deleting a key the state does not have changes nothing. ``encoded``: encode
    the layer as a delta blob and read it back (the reference; slower) instead of reading
    the staged values (:class:`PlainLayer`)."""
    # the layer holds only the types changed (and the nested and referenced types their
    # fields need): a layer of the whole schema cost 20 ms a commit on a schema of ten
    # types with nested records, most of it encoding and opening empty columns
    schema = _needed(state.schema, [t for t in net if t in state])
    removed: dict[str, list[Any]] = {}
    upserts: dict[str, list[dict[str, Any]]] = {}
    for type_name, changes in net.items():
        if type_name not in state:
            continue  # the caller reloads with the Log's types first; never silently here
        ts = state[type_name]
        gone = [k for k, rec in changes.items() if rec is None and k in ts]
        if gone:
            removed[type_name] = gone
        ups = [rec for rec in changes.values() if rec is not None]
        if ups:
            upserts[type_name] = ups
    if not removed and not upserts:
        return state, {}
    raw = any(type(r) is msgspec.Raw for ups in upserts.values() for r in ups)
    if (raw and not encoded and sum(map(len, upserts.values())) <= DEFER_MAX
            and _deferrable(schema, ()).issuperset(upserts)):  # fmt: skip
        # records as the Log gave them: staged when a reader first reads the layer
        stage = LogStage(schema)
        for t, ups in upserts.items():
            stage.defer(t, [k for k, r in net[t].items() if r is not None], ups)
        return apply_delta(state, PlainLayer(stage, removed, state.version, name), trusted=True)
    if raw:
        upserts = {t: [_decoded(r) for r in ups] for t, ups in upserts.items()}
    if not encoded:
        stage = LogStage(schema)
        if not all(stage.add_many(t, ups) for t, ups in upserts.items()):
            stage = _checked(schema, upserts)  # names what is wrong, or stages it as it is
        return apply_delta(state, PlainLayer(stage, removed, state.version, name), trusted=True)
    ws = _checked(schema, upserts, dedupe=True)
    pieces = encode_delta(
        kind="delta", dataset=state.dataset, schema=schema, from_version=state.version,
        version=state.version, upserts=ws, removed=removed, from_checksums={}, checksums={},
    )  # fmt: skip
    layer = DeltaLayer(parse_blob(b"".join(pieces), verify=False, source=name), name)
    return apply_delta(state, layer, trusted=True)


def _checked(schema: Schema, upserts: dict[str, list[dict[str, Any]]], *,
             dedupe: bool = False) -> WriteState:  # fmt: skip
    """The records staged by :class:`WriteState`, with its checks (a SchemaError names the
    record and field it refuses)."""
    ws = WriteState(schema, dedupe=dedupe)
    for type_name, ups in upserts.items():
        ws.add_many(type_name, ups)
    return ws


def _decoded(rec: Any) -> Any:
    """A record as a dict: a :class:`msgspec.Raw` one (the Log's bytes) decoded."""
    if type(rec) is not msgspec.Raw:
        return rec
    try:
        return msgspec.msgpack.decode(rec)
    except msgspec.DecodeError as e:
        raise SchemaError(f"a record in the Log is not valid msgpack: {e}") from e


_KEY_KINDS_DEFERRED = frozenset({"int", "str", "text"})
# A deferred layer is staged whole on its first read, on the reader's thread: a layer of
# more records (a consumer catching up on many commits at once, or laying its whole tail
# over a new version) is staged when laid over, on the thread that follows the Log, so a
# request never stages thousands of records (it cost one ~250 ms in bench site).
DEFER_MAX = 64


@per_schema
def _deferrable(schema: Schema, _: frozenset[str]) -> frozenset[str]:
    """The types whose records can be laid over before they are staged: keyed, with a key
    of ints and strings, which the Log's mutation gives exactly as staging would (a
    datetime or float key is staged first: its staged form is the one looked up)."""
    return frozenset(
        t.name for t in schema
        if t.key is not None and all(t.field(k).type.kind in _KEY_KINDS_DEFERRED for k in t.key)
    )  # fmt: skip


def _as_logged(v: Any) -> Any:
    """``v`` in the forms the Log gives values in (lists for sets and tuples, dicts for
    dataclasses, bytes for byte buffers), everything else as it is."""
    if isinstance(v, dict):
        return {k: _as_logged(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set, frozenset)):
        return [_as_logged(x) for x in v]
    if isinstance(v, (bytearray, memoryview)):
        return bytes(v)
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {f.name: _as_logged(getattr(v, f.name)) for f in dataclasses.fields(v)}
    return v


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 80 else r[:77] + "..."


class _Slow(Exception):
    """A value the fast path does not take as it is (LogStage hands the batch over)."""


class _Rows:
    __slots__ = ("columns", "count")

    def __init__(self, n_fields: int):
        self.columns: list[list[Any]] = [[] for _ in range(n_fields)]
        self.count = 0


class LogStage:
    """A commit's records staged for reading, the way a reader's Log layer needs them:
    the same columns :class:`WriteState` stages (converted values; a nested record's
    ordinal in its type, staged as it comes, not de-duplicated), made in one pass of
    per-field converters without WriteState's per-column checks. The Writer checked
    every record against the Log's schema before committing it, so a value of another
    type than its field expects, a missing field without a default or an unknown field
    is not expected here: :meth:`add_many` then says False and stages nothing of that
    batch, and the caller stages the commit with WriteState, which names what is wrong.
    Digests (for a checksum someone asks for) come from a WriteState made on first use
    from the same records, in the same order.

    A nested record (a story's blocks, a card's image) stays the dict it came as until a
    reader asks for it (:meth:`nested`): most commits are read by few of the processes
    that follow them, and a story's nested rows were half of what a commit cost each one.
    A nested value the Writer would not have let through is refused when it is read,
    with a SchemaError naming the field."""

    def __init__(self, schema: Schema):
        self.schema = schema
        self._rows: dict[str, _Rows] = {}
        self._records: dict[str, list[dict[str, Any]]] = {}
        self._ws: WriteState | None = None
        self._plans = _plans(schema, ())
        self._made: dict[int, int] = {}  # id of a nested dict staged on a read -> ordinal
        self._lock = threading.Lock()  # readers on several threads stage nested rows
        # records laid over before they are staged (:meth:`defer`): type -> (keys, records)
        self._pending: dict[str, tuple[list[Any], list[Any]]] | None = None
        self._fallback: WriteState | None = None  # where staging them needed WriteState

    def defer(self, type_name: str, keys: list[Any], records: list[Any]) -> None:
        """Take ``records`` of a keyed type (dicts, or :class:`msgspec.Raw` as the Log
        gives them) with their ``keys``, to be staged when first read: laying a commit
        over then costs its keys, and a reader that never reads the records never
        decodes them. All of a stage's records are deferred, or none."""
        assert not self._rows, "a stage defers all of its records or none"
        if self._pending is None:
            self._pending = {}
        ks, recs = self._pending.setdefault(type_name, ([], []))
        ks.extend(keys)
        recs.extend(records)

    def deferred_keys(self, type_name: str) -> list[Any] | None:
        """The keys of the records deferred for ``type_name`` (None: staged ones)."""
        p = self._pending
        if p is None:
            return None
        got = p.get(type_name)
        return None if got is None else got[0]

    def staged(self) -> None:
        """Stage the deferred records now (once; readers on any thread): with LogStage's
        converters, or where one needs the checked path, with WriteState, whose
        SchemaError names the record and field it refuses."""
        if self._pending is None:
            return
        with self._lock:
            pending = self._pending
            if pending is None:
                return
            decoded = {t: [_decoded(r) for r in recs] for t, (_, recs) in pending.items()}
            saved = self._mark()
            try:
                for t, recs in decoded.items():
                    for rec in recs:
                        self._add(t, rec)
            except _Slow:
                self._undo(saved)
                self._fallback = _checked(self.schema, decoded)
            else:
                for t, recs in decoded.items():
                    self._records.setdefault(t, []).extend(recs)
            self._pending = None

    def nested(self, type_name: str, v: Any, where: str) -> int:
        """The ordinal of the nested record ``v`` (a dict kept as it came) in
        ``type_name``'s rows, staged on the first read (the dict is kept alive by its
        column, so its id stays its own)."""
        with self._lock:
            o = self._made.get(id(v))
            if o is None:
                try:
                    o = self._add(type_name, v)  # on _Slow it leaves no row behind
                except _Slow:
                    # given as Python values (sets, tuples, dataclasses), not as the Log
                    # gives them: once more in the Log's forms, then refused
                    try:
                        o = self._add(type_name, _as_logged(v))
                    except _Slow:
                        raise SchemaError(
                            f"{where}: a nested {type_name} record the type does not "
                            f"allow: {_short(v)}"
                        ) from None
                self._made[id(v)] = o
            return o

    def _mark(self) -> dict[str, tuple[int, list[int]]]:
        return {n: (r.count, [len(c) for c in r.columns]) for n, r in self._rows.items()}

    def _undo(self, saved: dict[str, tuple[int, list[int]]]) -> None:
        """Drop the rows staged since :meth:`_mark` (nested ones included)."""
        for n, r in list(self._rows.items()):
            if n not in saved:
                del self._rows[n]
                continue
            r.count, lens = saved[n]
            for c, k in zip(r.columns, lens, strict=True):
                del c[k:]

    def __len__(self) -> int:
        if self._pending is not None:
            return sum(len(ks) for ks, _ in self._pending.values())
        if self._fallback is not None:
            return sum(self._fallback.count(t.name) for t in self.schema if t.key is not None)
        return sum(len(r) for r in self._records.values())

    def count(self, type_name: str) -> int:
        keys = self.deferred_keys(type_name)
        if keys is not None:
            return len(keys)
        if self._fallback is not None:
            return self._fallback.count(type_name)
        rows = self._rows.get(type_name)
        return 0 if rows is None else rows.count

    def _staged(self, type_name: str) -> Any:
        """A type's staged rows (what a layer reads): the deferred records staged first."""
        self.staged()
        if self._fallback is not None:
            return self._fallback._staged(type_name)
        return self._rows_of(type_name)

    def _rows_of(self, type_name: str) -> _Rows:
        rows = self._rows.get(type_name)
        if rows is None:
            rows = self._rows[type_name] = _Rows(len(self.schema[type_name].fields))
        return rows

    def add_many(self, type_name: str, records: list[dict[str, Any]]) -> bool:
        """Stage ``records`` of a keyed type; False (nothing staged) where one needs the
        checked path."""
        saved = self._mark()
        try:
            for rec in records:
                self._add(type_name, rec)
        except _Slow:
            self._undo(saved)  # the batch, nested rows included
            return False
        self._records.setdefault(type_name, []).extend(records)
        return True

    def _add(self, type_name: str, rec: Any) -> int:
        """Stage one record; on _Slow its row is taken back (a nested record's fields
        are kept as they came, so a record adds to its own type's rows only)."""
        if type(rec) is not dict:
            raise _Slow
        plan = self._plans[type_name]
        rows = self._rows_of(type_name)
        present = 0
        try:
            for (fname, conv, default, nullable), col in zip(plan, rows.columns, strict=True):
                v = rec.get(fname, ABSENT)
                if v is ABSENT:
                    if default is not _NO_DEFAULT:
                        v = conv(self, default)
                    elif nullable:
                        v = ABSENT  # null, remembered as left out
                    else:
                        raise _Slow
                else:
                    present += 1
                    if v is not None or not nullable:
                        v = conv(self, v)
                col.append(v)
            if present != len(rec):
                raise _Slow  # a field not in the type
        except _Slow:
            n = rows.count
            for col in rows.columns:
                del col[n:]
            raise
        o = rows.count
        rows.count += 1
        return o

    def digests(self, type_name: str) -> Any:
        self.staged()
        if self._fallback is not None:
            return self._fallback.digests(type_name)
        if self._ws is None:
            self._ws = _checked(self.schema, self._records)
        return self._ws.digests(type_name)


_NO_DEFAULT: Any = object()
Conv = Callable[[LogStage, Any], Any]


@per_schema
def _plans(schema: Schema, _: frozenset[str]) -> dict[str, list[tuple[str, Conv, Any, bool]]]:
    """Per type, per field: (name, converter, default or _NO_DEFAULT, nullable)."""
    out = {}
    for t in schema:
        out[t.name] = [
            (
                f.name,
                _conv(f.type, schema),
                f.default if f.has_default else _NO_DEFAULT,
                f.type.nullable,
            )
            for f in t.fields
        ]
    return out


def _exact(kind: type) -> Conv:
    def conv(_st: LogStage, v: Any) -> Any:
        if type(v) is not kind:
            raise _Slow
        return v

    return conv


def _conv(ft: FieldType, schema: Schema) -> Conv:
    """A converter of one value of ``ft`` as WriteState converts it (None where nullable;
    anything else it would have to check: _Slow)."""
    k = ft.kind
    nullable = ft.nullable
    if k in ("str", "text"):
        inner = _exact(str)
    elif k == "int":
        inner = _exact(int)
    elif k == "bool":
        inner = _exact(bool)
    elif k == "bytes":
        inner = _exact(bytes)
    elif k == "float":

        def inner(_st: LogStage, v: Any) -> Any:
            t = type(v)
            if t is float:
                return v
            if t is not int:
                raise _Slow
            try:
                return float(v)
            except OverflowError:
                raise _Slow from None

    elif k == "datetime":

        def inner(_st: LogStage, v: Any) -> Any:
            if isinstance(v, _dt.datetime):
                return v
            if type(v) is str:
                try:
                    return _dt.datetime.fromisoformat(v)
                except ValueError:
                    raise _Slow from None
            raise _Slow

    elif k in ("list", "set"):
        assert ft.item is not None
        item = _conv(ft.item, schema)
        unique = k == "set"

        def inner(st: LogStage, v: Any) -> Any:
            if type(v) is not list:
                raise _Slow
            items = [item(st, x) for x in v]
            return list(dict.fromkeys(items)) if unique else items

    elif k == "dict":
        assert ft.key is not None and ft.item is not None
        kc, vc = _conv(ft.key, schema), _conv(ft.item, schema)

        def inner(st: LogStage, v: Any) -> Any:
            if type(v) is not dict:
                raise _Slow
            return {kc(st, a): vc(st, b) for a, b in v.items()}

    elif k == "record":

        def inner(_st: LogStage, v: Any) -> Any:
            if type(v) is not dict:
                raise _Slow
            return v  # staged when read (LogStage.nested)

    elif k == "ref":
        assert ft.target is not None
        target = schema[ft.target]
        assert target.key is not None
        kinds = [target.field(x).type.kind for x in target.key]
        if kinds == ["datetime"]:  # the key arrives as ISO text
            inner = _conv(FieldType("datetime"), schema)
        else:

            def inner(_st: LogStage, v: Any) -> Any:
                # a key as it is (WriteState keeps any value that is not a record)
                if isinstance(v, Mapping) or hasattr(v, "to_dict") or (
                        dataclasses.is_dataclass(v) and not isinstance(v, type)):  # fmt: skip
                    raise _Slow  # a record or a view given as the reference
                return v

    else:  # pragma: no cover - the schema validates kinds
        raise AssertionError(k)
    if not nullable:
        return inner

    def maybe(st: LogStage, v: Any) -> Any:
        return None if v is None else inner(st, v)

    return maybe


class PlainLayer:
    """Staged records (a :class:`WriteState` of Log entries' net changes) and removed keys,
    applied like a delta layer (:func:`nearstate.layered.apply_delta`) but read as they
    were staged: each value is the Python value the Writer checked and converted, given
    out as an encoded column would give it (nulls left out read None, aware datetimes in
    UTC, sets as sets, nested records as views, references as keys the layered state
    resolves). It has no blob: a Log layer is never merged into a snapshot (the Producer
    folds the Log itself)."""

    kind = "delta"
    lazy_checksums = True  # apply_delta leaves the sums to LayeredState, worked out if asked

    def __init__(self, ws: LogStage | WriteState, removed: dict[str, list[Any]], version: int,
                 name: str):  # fmt: skip
        self.name = name
        self.version = self.from_version = version
        self.schema = ws.schema
        self.checksums: dict[str, Any] = {}  # trusted: made here from the state's own types
        self.from_checksums: dict[str, Any] = {}
        self.tags: dict[str, str] = {}
        self.removed = removed
        self.state = _PlainState(ws, name)

    @property
    def blob(self) -> Any:
        raise DatasetError(f"{self.name}: a layer of Log entries has no blob")

    @cached_property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.state.types.values())

    def upserted(self, type_name: str) -> int:
        ts = self.state.get(type_name)
        return len(ts) if ts is not None and ts.typedef.key is not None else 0


class _PlainState(TypeMap):
    def __init__(self, ws: LogStage | WriteState, name: str):
        self._types = _PlainTypes(ws, name)
        for tdef in ws.schema:
            if ws.count(tdef.name):
                self._types[tdef.name] = _PlainType(ws, tdef, self._types, name)


class _PlainTypes(dict):
    """The layer's types by name: those with staged records made at once, a nested type
    with none on first use (``[]``; ``get`` says None), since a commit of one record
    leaves most of a schema's nested types empty."""

    def __init__(self, ws: LogStage | WriteState, layer: str):
        super().__init__()
        self._ws = ws
        self._layer = layer

    def __missing__(self, name: str) -> _PlainType:
        tdef = self._ws.schema.types.get(name)
        if tdef is None or tdef.key is not None:
            raise KeyError(name)
        t = self[name] = _PlainType(self._ws, tdef, self, self._layer)
        return t


class _PlainType:
    """One type's staged records, read by ordinal (the reading API a layer's type needs)."""

    def __init__(self, ws: LogStage | WriteState, tdef: TypeDef, types: dict[str, _PlainType],
                 layer: str):  # fmt: skip
        self.name = tdef.name
        self.typedef = tdef
        self._layer = layer
        self._ws = ws
        sh = self._shape = type_shape(tdef)
        ftypes, index = sh.ftypes, sh.index
        # records a LogStage deferred are staged when a column is first read; until then
        # the layer knows their keys only (what laying it over needs)
        keys = ws.deferred_keys(tdef.name) if isinstance(ws, LogStage) else None
        self._cols: list[list[Any]] | None = None
        if keys is None:
            self._n = ws._staged(tdef.name).count
            self._stage()
        else:
            self._n = len(keys)

        def column(fname: str) -> Column:
            cols = self._cols if self._cols is not None else self._stage()
            ft, col = ftypes[fname], cols[index[fname]]
            return Column(fname, ft, _plain_get(ft, col, types, f"{layer}: {tdef.name}.{fname}"),
                          0)  # fmt: skip

        self._columns = LazyMap.over(sh.names, sh.name_set, column)
        self._cls = self.view = sh.view
        self._digests: Any = None  # made on first use: only a checksum or a diff asks
        if keys is not None:
            self._key_at = keys.__getitem__  # ints and strings, or tuples of them
        elif tdef.key is not None:
            cols = self._cols
            assert cols is not None
            kcols = [cols[i] for i in sh.key_idx]
            first = kcols[0]
            self._key_at = first.__getitem__ if len(kcols) == 1 else (
                lambda o: tuple(c[o] for c in kcols))  # fmt: skip

    def _stage(self) -> list[list[Any]]:
        """The staged columns (staging deferred records now), checked as the encoder
        checks them: a column holds naive or aware datetimes, not both."""
        cols = self._ws._staged(self.name).columns
        sh = self._shape
        for i in sh.dt_fields:
            _one_datetime_kind(cols[i], f"{self._layer}: {self.name}.{sh.names[i]}")
        self._cols = cols
        return cols

    @property
    def _values(self) -> list[list[Any]]:
        return self._cols if self._cols is not None else self._stage()

    def __len__(self) -> int:
        return self._n

    def view_of(self, v: Any, where: str) -> Any:
        """The view of a nested value: a staged ordinal, or a dict a LogStage keeps as it
        came (staged now, once)."""
        if type(v) is not int:
            v = self._ws.nested(self.name, v, where)  # type: ignore[union-attr]
            if v >= self._n:
                self._n = v + 1
        return self._cls(self, v)

    def digest(self, o: int) -> int:
        if self._digests is None:
            assert self.typedef.key is not None
            self._digests = self._ws.digests(self.name)
        return int(self._digests[o])

    @cached_property
    def nbytes(self) -> int:
        """About the bytes the staged values take (Python objects, counted shallowly)."""
        return sum(sys.getsizeof(v) for col in self._values for v in col)


def _plain_get(ft: FieldType, col: list[Any], types: dict[str, _PlainType],
               where: str) -> Callable[[int], Any]:  # fmt: skip
    conv = _plain_conv(ft, types, where)
    if conv is None:

        def get(o: int) -> Any:
            v = col[o]
            return None if v is ABSENT else v
    else:

        def get(o: int) -> Any:
            v = col[o]
            return None if v is None or v is ABSENT else conv(v)

    return get


def _plain_conv(ft: FieldType, types: dict[str, _PlainType],
                where: str) -> Callable[[Any], Any] | None:  # fmt: skip
    """How a staged value of ``ft`` reads (None: as it is; a column mixing naive and aware
    datetimes was refused when the layer was made)."""
    k = ft.kind
    if k == "datetime":
        return lambda v: v if v.tzinfo is None else v.astimezone(_dt.UTC)
    if k in ("list", "set"):
        assert ft.item is not None
        item = _nullable(_plain_conv(ft.item, types, where))
        if k == "set":
            return set if item is None else (lambda v: {item(x) for x in v})
        return None if item is None else (lambda v: [item(x) for x in v])
    if k == "dict":
        assert ft.item is not None and ft.key is not None
        kc = _nullable(_plain_conv(ft.key, types, where))
        vc = _nullable(_plain_conv(ft.item, types, where))
        if kc is None and vc is None:
            return None
        kf = kc or (lambda x: x)
        vf = vc or (lambda x: x)
        return lambda v: {kf(a): vf(b) for a, b in v.items()}
    if k == "record":
        assert ft.target is not None
        target = ft.target
        return lambda v: types[target].view_of(v, where)
    return None


def _one_datetime_kind(col: list[Any], where: str) -> None:
    """One column holds naive or aware datetimes, as the encoder says."""
    aware = {v.tzinfo is not None for v in col if v is not None and v is not ABSENT}
    if len(aware) > 1:
        raise SchemaError(f"{where} mixes naive and timezone-aware datetimes; a column holds "
                          "one or the other")  # fmt: skip


def _nullable(conv: Callable[[Any], Any] | None) -> Callable[[Any], Any] | None:
    if conv is None:
        return None
    return lambda v: None if v is None else conv(v)


@per_schema
def _needed(schema: Schema, names: frozenset[str]) -> Schema:
    """``schema`` cut to ``names`` and every type their fields nest or refer to."""
    want: list[str] = []
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in want or name not in schema.types:
            continue
        want.append(name)
        for f in schema[name].fields:
            todo.extend(_targets(f.type))
    if len(want) == len(schema.types):
        return schema
    return Schema([t for t in schema if t.name in want])


def _targets(ft: Any) -> list[str]:
    out = [ft.target] if ft.kind in ("record", "ref") and ft.target else []
    for sub in (ft.item, ft.key):
        if sub is not None:
            out.extend(_targets(sub))
    return out


def empty_state(schema: Schema, dataset: str) -> ReadState:
    """Version 0: no records, the given types (what a consumer shows before any version)."""
    types_meta, sections = WriteState(schema).build()
    header = {"kind": "snapshot", "dataset": dataset, "version": 0, "created": 0.0,
              "tags": {}, "schema": schema.to_json(), "types": types_meta}  # fmt: skip
    return ReadState(parse_blob(b"".join(encode_blob(header, sections)), source="<empty>"))


def with_types(schema: Schema | None, log_schema: Schema | None) -> Schema | None:
    """``schema`` plus the types only the Log has."""
    return log_schema if schema is None else schema.extended(log_schema)
