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
(``msgspec.Raw``) in the tail, and is staged when a reader first reads one of its commit's
records (:meth:`LogStage.defer`, :class:`_Chunk`). Laying a commit over then costs its keys
(a story commit: 350k instructions instead of 580k), and a process that never reads a
changed record never decodes it; one that does pays the decoding on that read, as it paid
it before on the commit. Such commits are appended to the one Log layer the state ends with
(:meth:`PlainLayer.append`), which only ever adds rows: its types and columns are made once
for all the commits after a version, not once per commit, and a state made before a commit
never reads the rows it added. Types keyed by anything but ints and strings, and commits
of more than ``DEFER_MAX`` records (a re-laid tail), are staged at once, in a layer of
their own.

Over ~600 lines on purpose: :class:`LogStage` converts staged values exactly as
:class:`PlainLayer` reads them back, so the two conversions (``_conv`` and
``_plain_conv``) stay side by side, with the tail that drives them.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import itertools
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

import msgspec
import numpy as np

from .blob import encode_blob, parse_blob
from .delta import DeltaLayer, encode_delta
from .encoding import ABSENT, Column
from .errors import DatasetError, SchemaError
from .layered import Changes, LayeredState, State, apply_delta, type_shape
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
        self._n = 0  # the keys held (asked for on every commit)

    def __len__(self) -> int:
        return self._n

    def add(self, entries: Iterable[Entry]) -> Net:
        """Add entries (in Log order); return their net changes."""
        net: Net = {}
        changes = self._changes
        for e in entries:
            if e.position <= self.position:
                continue
            for type_name, key, rec in e.mutations:
                m = changes.get(type_name)
                if m is None:
                    m = changes[type_name] = {}
                if key not in m:
                    self._n += 1
                m[key] = (e.position, rec)
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
                out._n += len(kept)
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
    removed: dict[str, list[Any]] = {}
    upserts: dict[str, list[dict[str, Any]]] = {}
    keys: dict[str, list[Any]] = {}  # the keys of ``upserts``, in their order
    raw, n = False, 0  # whether a record is the Log's bytes; how many are upserted
    for type_name, changes in net.items():
        if type_name not in state:
            continue  # the caller reloads with the Log's types first; never silently here
        ts = state[type_name]
        gone, ks, ups = [], [], []
        for k, rec in changes.items():
            if rec is None:
                if k in ts:
                    gone.append(k)
            else:
                ks.append(k)
                ups.append(rec)
                raw = raw or type(rec) is msgspec.Raw
        if gone:
            removed[type_name] = gone
        if ups:
            upserts[type_name], keys[type_name] = ups, ks
            n += len(ups)
    if not removed and not upserts:
        return state, {}
    if (not encoded and (raw or not upserts) and n <= DEFER_MAX
            and _deferrable(state.schema, ()).issuperset(upserts)):  # fmt: skip
        # records as the Log gave them, appended to the Log layer the commits since the
        # version share, and staged when a reader first reads them
        layer = _open_layer(state, name)
        commit = layer.append(removed, {t: (keys[t], ups) for t, ups in upserts.items()}, name)
        return apply_delta(state, commit, trusted=True)
    # the layer holds only the types changed (and the nested and referenced types their
    # fields need): a layer of the whole schema cost 20 ms a commit on a schema of ten
    # types with nested records, most of it encoding and opening empty columns
    schema = _needed(state.schema, [t for t in net if t in state])
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


def _open_layer(state: State, name: str) -> PlainLayer:
    """The Log layer ``state`` ends with, if commits may be appended to it (laid over this
    version, on this schema); else a new one."""
    last = state.layers[-1] if isinstance(state, LayeredState) and state.layers else None
    if (isinstance(last, PlainLayer) and last.appending and last.schema is state.schema
            and last.version == state.version):  # fmt: skip
        return last
    return PlainLayer(
        LogStage(state.schema, appending=True), {}, state.version, f"log layer from {name}"
    )


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


class _Chunk:
    """One commit's records of a type in an appending :class:`LogStage`, laid over before
    they are staged. Until a reader first reads one of them, each of their rows holds the
    chunk itself in every column; reading it stages the chunk's records in place (once,
    under the stage's lock). A chunk that cannot be staged (bytes that are not msgpack, a
    value the schema refuses, a column mixing naive and aware datetimes) keeps its rows
    holding it, and every read of them raises the error that names what is wrong: the
    other commits of the layer read on."""

    __slots__ = ("decoded", "digests", "error", "name", "records", "stage", "start",
                 "type_name")  # fmt: skip

    def __init__(self, stage: LogStage, type_name: str, start: int, records: list[Any],
                 name: str):  # fmt: skip
        self.stage = stage
        self.type_name = type_name
        self.start = start
        self.records: list[Any] | None = records  # None once staged (or refused)
        self.name = name
        self.decoded: list[Any] = []
        self.digests: Any = None
        self.error: SchemaError | None = None

    def read(self) -> None:
        """Stage the chunk now, or raise the error that stops it."""
        if self.records is not None:
            self.stage._stage_chunk(self)
        if self.error is not None:
            raise SchemaError(str(self.error)) from None


class LogStage:
    """Records staged for reading, the way a reader's Log layer needs them: the same
    columns :class:`WriteState` stages (converted values; a nested record's ordinal in its
    type, staged as it comes, not de-duplicated), made in one pass of per-field converters
    without WriteState's per-column checks. The Writer checked every record against the
    Log's schema before committing it, so a value of another type than its field expects,
    a missing field without a default or an unknown field is not expected here:
    :meth:`add_many` then says False and stages nothing of that batch, and the caller
    stages the commit with WriteState, which names what is wrong. Digests (for a checksum
    someone asks for) come from a WriteState made on first use from the same records, in
    the same order.

    ``appending``: the stage of a Log layer that the commits after a version share
    (:meth:`PlainLayer.append`). Each commit's records are added with their keys only
    (:meth:`defer`, as the Log gives them: ``msgspec.Raw`` or dicts) and staged when a
    reader first reads one of them (:class:`_Chunk`), so laying a commit over costs its
    keys, and a process that never reads a changed record never decodes it. Rows are only
    ever added: a state made before a commit never reads the rows it added.

    A nested record (a story's blocks, a card's image) stays the dict it came as until a
    reader asks for it (:meth:`nested`): most commits are read by few of the processes
    that follow them, and a story's nested rows were half of what a commit cost each one.
    A nested value the Writer would not have let through is refused when it is read,
    with a SchemaError naming the field."""

    def __init__(self, schema: Schema, *, appending: bool = False):
        self.schema = schema
        self.appending = appending
        self._rows: dict[str, _Rows] = {}
        self._records: dict[str, list[dict[str, Any]]] = {}
        self._ws: WriteState | None = None
        self._plans = _plans(schema, ())
        self._made: dict[int, int] = {}  # id of a nested dict staged on a read -> ordinal
        # readers on several threads stage chunks and nested rows; a commit appends
        self._lock = threading.RLock()
        # appending: per type, every row's key, and the chunks (commits) that added them
        self._keys: dict[str, list[Any]] = {}
        self._chunks: dict[str, list[_Chunk]] = {}

    def defer(self, type_name: str, keys: list[Any], records: list[Any], name: str) -> int:
        """Add ``records`` of a keyed type (with their ``keys``) as rows staged when first
        read; returns the first row's ordinal."""
        assert self.appending, "records are deferred in an appending stage only"
        with self._lock:
            rows = self._rows_of(type_name)
            start, n = rows.count, len(records)
            chunk = _Chunk(self, type_name, start, records, name)
            if n == 1:  # most commits write one record
                for col in rows.columns:
                    col.append(chunk)
            else:
                for col in rows.columns:
                    col.extend(itertools.repeat(chunk, n))
            rows.count += n
            self._keys.setdefault(type_name, []).extend(keys)
            self._chunks.setdefault(type_name, []).append(chunk)
            return start

    def deferred_keys(self, type_name: str) -> list[Any] | None:
        """Every row's key of a type whose records are deferred (None: staged ones)."""
        return self._keys.get(type_name) if self.appending else None

    def _stage_chunk(self, chunk: _Chunk) -> None:
        """Stage a chunk's records into its rows: with LogStage's converters, or where one
        needs the checked path, through WriteState (whose SchemaError names the record
        and field it refuses)."""
        with self._lock:
            recs = chunk.records
            if recs is None:
                return  # staged by another reader meanwhile
            t = chunk.type_name
            try:
                decoded = [_decoded(r) for r in recs]
                try:
                    rows = [self._convert(t, rec) for rec in decoded]
                except _Slow:
                    rows = self._checked_rows(t, decoded, chunk.name)
                sh = type_shape(self.schema[t])
                for i in sh.dt_fields:
                    _one_datetime_kind([r[i] for r in rows], f"{t}.{sh.names[i]}")
            except SchemaError as e:
                chunk.error = SchemaError(f"{chunk.name}: {e}")  # names the commit
                chunk.records = None
                return
            start, end = chunk.start, chunk.start + len(rows)
            for i, col in enumerate(self._rows[t].columns):
                col[start:end] = [r[i] for r in rows]
            chunk.decoded = decoded
            chunk.records = None

    def _checked_rows(self, type_name: str, decoded: list[Any], name: str) -> list[list[Any]]:
        """Rows of records the converters do not take as they are, staged by WriteState
        (which raises a SchemaError naming what it refuses) and read back in the forms
        the Log gives values in."""
        ws = _checked(self.schema, {type_name: decoded})
        pt = PlainLayer(ws, {}, 0, name).state[type_name]
        out = []
        for o in range(ws.count(type_name)):
            rec = _as_logged(pt.view(pt, o).to_dict())
            try:
                out.append(self._convert(type_name, rec))
            except _Slow:
                raise SchemaError(f"{name}: a {type_name} record the reader cannot stage: "
                                  f"{_short(rec)}") from None  # fmt: skip
        return out

    def nested(self, type_name: str, v: Any, where: str) -> int:
        """The ordinal of the nested record ``v`` (a dict kept as it came) in
        ``type_name``'s rows, staged on the first read (the dict is kept alive by its
        column, so its id stays its own)."""
        with self._lock:
            o = self._made.get(id(v))
            if o is None:
                try:
                    o = self._add(type_name, v)
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
        if self.appending:
            return sum(len(ks) for ks in self._keys.values())
        return sum(len(r) for r in self._records.values())

    def count(self, type_name: str) -> int:
        rows = self._rows.get(type_name)
        return 0 if rows is None else rows.count

    def _staged(self, type_name: str) -> Any:
        """A type's staged rows (what a layer reads)."""
        return self._rows_of(type_name)

    def _rows_of(self, type_name: str) -> _Rows:
        rows = self._rows.get(type_name)
        if rows is None:  # readers on two threads may ask at once: one _Rows wins
            rows = self._rows.setdefault(type_name, _Rows(len(self.schema[type_name].fields)))
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

    def _convert(self, type_name: str, rec: Any) -> list[Any]:
        """One record's field values as staged (in the type's field order); _Slow where
        a value needs the checked path (a nested record's fields are kept as they came)."""
        if type(rec) is not dict:
            raise _Slow
        out = []
        present = 0
        for fname, conv, default, nullable in self._plans[type_name]:
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
            out.append(v)
        if present != len(rec):
            raise _Slow  # a field not in the type
        return out

    def _add(self, type_name: str, rec: Any) -> int:
        """Stage one record as a new row (none on _Slow)."""
        values = self._convert(type_name, rec)
        rows = self._rows_of(type_name)
        for col, v in zip(rows.columns, values, strict=True):
            col.append(v)
        o = rows.count
        rows.count += 1
        return o

    def digests(self, type_name: str, upto: int = 0) -> Any:
        """The digests of a type's rows, in row order: in an appending stage, of the
        commits that added rows before ``upto`` only (what a state that knows those rows
        asks for: a commit added after it, even a bad one, is none of its business)."""
        chunks = self._chunks.get(type_name) if self.appending else None
        if chunks is None:
            if self._ws is None:
                self._ws = _checked(self.schema, self._records)
            return self._ws.digests(type_name)
        parts = []
        for ch in list(chunks):
            if ch.start >= upto:
                break
            if ch.digests is None:
                ch.read()  # staged, or its error raised
                ch.digests = np.asarray(_checked(self.schema, {type_name: ch.decoded})
                                        .digests(type_name))  # fmt: skip
            parts.append(ch.digests)
        return np.concatenate(parts) if parts else np.zeros(0, np.uint64)


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
        self._stage = ws
        self.appending = isinstance(ws, LogStage) and ws.appending

    @property
    def blob(self) -> Any:
        raise DatasetError(f"{self.name}: a layer of Log entries has no blob")

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in list(self.state.types.values()))

    def append(self, removed: dict[str, list[Any]],
               upserts: dict[str, tuple[list[Any], list[Any]]], name: str) -> _Commit:  # fmt: skip
        """Add one commit to this layer (an ``appending`` one): ``upserts`` per type,
        (keys, records as the Log gives them). Returns the commit, which
        :func:`~nearstate.layered.apply_delta` applies over the state that ends with this
        layer (or a state of its version without it) as it applies a layer."""
        stage = self._stage
        assert isinstance(stage, LogStage) and stage.appending
        rows: dict[str, tuple[int, int]] = {}
        types = self.state._types
        with stage._lock:
            for t, (keys, recs) in upserts.items():
                rows[t] = (stage.defer(t, keys, recs, name), len(recs))
                if t not in types:
                    types[t] = _PlainType(stage, stage.schema[t], types, self.name)
        return _Commit(self, removed, rows, name)

    def upserted(self, type_name: str) -> int:
        ts = self.state.get(type_name)
        return len(ts) if ts is not None and ts.typedef.key is not None else 0


class _Commit:
    """One commit appended to a Log layer, as :func:`~nearstate.layered.apply_delta`
    takes a layer: the keys it removed and the rows it added (``first_row`` on), read
    from the layer it was appended to (``layer``), which the new state holds once."""

    kind = "delta"
    lazy_checksums = True
    checksums: Mapping[str, Any] = MappingProxyType({})  # a Log layer claims none
    from_checksums: Mapping[str, Any] = MappingProxyType({})
    tags: Mapping[str, str] = MappingProxyType({})

    __slots__ = ("from_version", "layer", "name", "removed", "rows", "schema", "state",
                 "type_names", "version")  # fmt: skip

    def __init__(self, layer: PlainLayer, removed: dict[str, list[Any]],
                 rows: dict[str, tuple[int, int]], name: str):  # fmt: skip
        self.layer = layer
        self.state = layer.state
        self.schema = layer.schema
        self.version = self.from_version = layer.version
        self.removed = removed
        self.rows = rows  # type -> (first row, rows)
        self.name = name
        # the types it changes (what apply_delta walks instead of the schema)
        self.type_names = [*rows, *(t for t in removed if t not in rows)]

    def upserted(self, type_name: str) -> int:
        r = self.rows.get(type_name)
        return 0 if r is None else r[1]

    def first_row(self, type_name: str) -> int:
        return self.rows[type_name][0]


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
        # readers on two threads may make it at once: both read the one that is kept
        return self.setdefault(name, _PlainType(self._ws, tdef, self, self._layer))


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
        # the records of an appending LogStage are staged commit by commit when first
        # read (its rows hold their _Chunk until then): the layer knows their keys, which
        # is what laying them over needs
        keys = self._keys = ws.deferred_keys(tdef.name) if isinstance(ws, LogStage) else None
        self._cols: list[list[Any]]
        self._n = 0
        if keys is None:
            self._n = ws._staged(tdef.name).count
            self._stage()
        else:
            self._cols = ws._staged(tdef.name).columns
        chunked = keys is not None

        def column(fname: str) -> Column:
            ft, col = ftypes[fname], self._cols[index[fname]]
            return Column(fname, ft, _plain_get(ft, col, types, f"{layer}: {tdef.name}.{fname}",
                                                chunked), 0)  # fmt: skip

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
        """The staged columns, checked as the encoder checks them: a column holds naive
        or aware datetimes, not both."""
        cols = self._ws._staged(self.name).columns
        sh = self._shape
        for i in sh.dt_fields:
            _one_datetime_kind(cols[i], f"{self._layer}: {self.name}.{sh.names[i]}")
        self._cols = cols
        return cols

    def __len__(self) -> int:
        return self._n if self._keys is None else len(self._keys)

    def view_of(self, v: Any, where: str) -> Any:
        """The view of a nested value: a staged ordinal, or a dict a LogStage keeps as it
        came (staged now, once)."""
        if type(v) is not int:
            v = self._ws.nested(self.name, v, where)  # type: ignore[union-attr]
            if v >= self._n:
                self._n = v + 1
        return self._cls(self, v)

    def digest(self, o: int) -> int:
        d = self._digests
        if d is None or o >= len(d):  # made on first use, again once commits added rows
            assert self.typedef.key is not None
            got = (self._ws.digests(self.name, o + 1) if isinstance(self._ws, LogStage)
                   else self._ws.digests(self.name))  # fmt: skip
            if d is None or len(got) > len(d):
                self._digests = got
            d = got
        return int(d[o])

    @property
    def nbytes(self) -> int:
        """About the bytes the staged values take (Python objects, counted shallowly)."""
        return sum(sys.getsizeof(v) for col in self._cols for v in col)


def _plain_get(ft: FieldType, col: list[Any], types: dict[str, _PlainType], where: str,
               chunked: bool = False) -> Callable[[int], Any]:  # fmt: skip
    """How a column reads a row. ``chunked``: a row may still hold the _Chunk of the
    commit that added it (staged on this first read, or its error raised)."""
    conv = _plain_conv(ft, types, where)
    if chunked:
        if conv is None:

            def get(o: int) -> Any:
                v = col[o]
                if type(v) is _Chunk:
                    v.read()
                    v = col[o]
                return None if v is ABSENT else v
        else:

            def get(o: int) -> Any:
                v = col[o]
                if type(v) is _Chunk:
                    v.read()
                    v = col[o]
                return None if v is None or v is ABSENT else conv(v)

    elif conv is None:

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
