"""The producer: turns the next state of a dataset into a new version.

One cycle runs these stages, and any failure announces nothing, leaves the producer on
its last good version, and raises :class:`CycleError` naming the stage::

    populate   the records of the next version (full state, or upserts and deletes)
    diff       against the last version; nothing changed means no new version
    write      encode the delta, the reverse delta, and a snapshot when one is due
    integrity  decode both deltas, apply the delta to the last version and the reverse
               delta back, and compare checksums; check the snapshot's checksums
    validate   built-in and user validators
    publish    store every blob and the version record
    announce   make the version current

Only one producer may publish a dataset: the lock is taken when the producer starts
(:class:`LockedError` if another holds it) and released by :meth:`Producer.close`.

Over ~600 lines on purpose: :class:`Producer` is one class whose cycle runs the stages above
in order under one failure rule (nothing is announced unless every stage passed); what
follows it — the full diff, reference checks and clean-up of old blobs — serves that cycle
alone.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import digest as _digest
from .blob import encode_blob, parse_blob
from .delta import DeltaLayer, encode_delta, shape
from .errors import CycleError, LockedError, SchemaError
from .layered import Changes, State, apply_delta
from .merge import Spill, merged_snapshot
from .ports import Announcer, BlobStore
from .read_state import ReadState
from .schema import Schema
from .versions import (
    Catalog,
    announced_version,
    delta_name,
    load_version,
    open_snapshot,
    record_name,
    reverse_name,
    snapshot_name,
)
from .write_state import WriteState
from .writer import LOG_POSITION

log = logging.getLogger("nearstate.producer")


@dataclass(frozen=True)
class CycleResult:
    """What a cycle did. ``version`` is None when nothing changed."""

    version: int | None
    previous: int | None
    changes: dict[str, Changes] | None  # None: a snapshot-only version (everything may change)
    snapshot: bool
    timings_ms: dict[str, float]
    blob_bytes: dict[str, int] = field(default_factory=dict)

    @property
    def changed(self) -> int:
        if self.changes is None:
            return -1
        return sum(len(c) for c in self.changes.values())


@dataclass(frozen=True)
class CycleContext:
    """What a validator sees: the last version, the changes, the counts after the cycle."""

    previous: State | None
    changes: dict[str, Changes] | None
    counts: dict[str, int]
    records: Callable[[str], Iterable[Mapping[str, Any]]]  # upserted records of a type


Validator = Callable[[CycleContext], str | Sequence[str] | None]


@dataclass(frozen=True)
class CountChange:
    """Refuse a cycle that changes a type's record count by more than ``max_fraction``
    (of the previous count, for types that held at least ``min_records``)."""

    max_fraction: float = 0.5
    min_records: int = 100

    def __call__(self, ctx: CycleContext) -> list[str]:
        out = []
        if ctx.previous is None:
            return out
        for name, n in ctx.counts.items():
            if name not in ctx.previous:
                continue
            before = len(ctx.previous[name])
            if before >= self.min_records and abs(n - before) > self.max_fraction * before:
                out.append(
                    f"{name}: record count would change from {before:,} to {n:,} "
                    f"(more than {self.max_fraction:.0%})"
                )
        return out


@dataclass(frozen=True)
class RequiredFields:
    """Refuse records whose named fields are null or empty, e.g.
    ``RequiredFields({"Story": ["title", "slug"]})``."""

    fields: Mapping[str, Sequence[str]]

    def __call__(self, ctx: CycleContext) -> list[str]:
        out = []
        for tname, names in self.fields.items():
            for rec in ctx.records(tname):
                for f in names:
                    v = rec.get(f)
                    if v is None or (hasattr(v, "__len__") and len(v) == 0):
                        key = next(iter(rec.values()), None)
                        out.append(f"{tname} {key!r}: required field {f!r} is empty")
                        if len(out) >= 20:
                            return out
        return out


class Incremental:
    """The upserts and deletes of an incremental cycle (the last one given for a key wins)."""

    def __init__(self, schema: Schema):
        self.schema = schema
        self._ops: dict[str, dict[Any, Any]] = {}

    def upsert(self, type_name: str, record: Mapping[str, Any]) -> None:
        tdef = self.schema[type_name]
        if tdef.key is None:
            raise SchemaError(f"type {type_name!r} has no key; it is only used nested")
        try:
            k = tuple(record[f] for f in tdef.key)
        except KeyError as e:
            raise SchemaError(f"{type_name}: record lacks its key field {e.args[0]!r}") from None
        self._ops.setdefault(type_name, {})[k[0] if len(k) == 1 else k] = record

    def delete(self, type_name: str, key: Any) -> None:
        tdef = self.schema[type_name]
        if tdef.key is None:
            raise SchemaError(f"type {type_name!r} has no key")
        self._ops.setdefault(type_name, {})[key] = _DELETE

    def __len__(self) -> int:
        return sum(len(v) for v in self._ops.values())


_DELETE = object()


class Producer:
    """Publishes versions of one dataset to a BlobStore and an Announcer.

    ``snapshot_every``: write a snapshot every N versions (1 = every version); deltas are
    written for every version that can have one. ``retain_snapshots``: after each
    version, keep the newest N snapshots and the deltas between them (None: keep all).
    ``background_snapshots``: an incremental cycle that makes a snapshot due publishes
    its delta as usual and leaves the snapshot to a background thread (merging columns,
    see :mod:`nearstate.merge`), so cycles keep their cost while a snapshot is written.
    The snapshot appears beside the version's delta once it is stored and read back;
    consumers route through it from then on. :meth:`close` waits for it.
    """

    def __init__(
        self,
        blobs: BlobStore,
        announcer: Announcer,
        *,
        dataset: str = "default",
        snapshot_every: int = 10,
        retain_snapshots: int | None = 5,
        validators: Sequence[Validator] = (),
        verify: bool = True,
        holder: str | None = None,
        background_snapshots: bool = False,
    ):
        if snapshot_every < 1:
            raise ValueError("snapshot_every must be at least 1")
        self.blobs = blobs
        self.announcer = announcer
        self.dataset = dataset
        self.snapshot_every = snapshot_every
        self.retain_snapshots = retain_snapshots
        self.validators = list(validators)
        self.verify = verify
        self._lease = announcer.lock(holder or f"pid {os.getpid()} on {socket.gethostname()}")
        self._state: State | None = None
        self._since_snapshot = 0
        self.background_snapshots = background_snapshots
        self._bg: threading.Thread | None = None
        self._bg_done: tuple[int, ReadState | None, BaseException | None] | None = None
        try:
            self._restore()
        except BaseException:
            self.close()
            raise

    def _restore(self) -> None:
        ann = self.announcer.latest()  # type: ignore[attr-defined]
        v = announced_version(ann) if ann is not None else 0
        # blobs of versions after the announced one are leftovers of a producer that died
        # mid-publish; this producer will reuse those numbers, so a reader must never
        # route through them (a stale snapshot would shadow the new version's delta)
        _drop_unannounced(self.blobs, v)
        if ann is None:
            return
        self._state = load_version(self.blobs, v, verify=self.verify)
        cat = Catalog(self.blobs)
        last_snap = max((s for s in cat.snapshots if s <= v), default=v)
        self._since_snapshot = v - last_snap

    def close(self) -> None:
        """Wait for a snapshot being written in the background, then give up the lock
        (idempotent)."""
        bg = self._bg
        if bg is not None:
            bg.join()
            self._adopt_snapshot()
        self._lease.release()

    # -- snapshots in the background ----------------------------------------------------

    @property
    def writing_snapshot(self) -> int | None:
        """The version whose snapshot a background thread is writing, or None."""
        bg = self._bg
        return int(bg.name.rsplit(" ", 1)[1]) if bg is not None and bg.is_alive() else None

    def wait_snapshot(self, timeout: float | None = None) -> bool:
        """Wait for the background snapshot (if any) to be stored; False on timeout."""
        bg = self._bg
        if bg is not None:
            bg.join(timeout)
            if bg.is_alive():
                return False
        self._adopt_snapshot()
        return True

    def _start_snapshot(self, state: State) -> None:
        v = state.version

        def write() -> None:
            snap: ReadState | None = None
            err: BaseException | None = None
            _yield_cpu()
            try:
                name = snapshot_name(v)
                with Spill() as spill:
                    header, sections = merged_snapshot(
                        state, dataset=self.dataset, version=v, tags=dict(state.tags),
                        created=time.time(), spill=spill,
                    )  # fmt: skip
                    self.blobs.put(name, encode_blob(header, sections))
                    del sections
                snap = open_snapshot(self.blobs, v, verify=True)
                if snap.checksums() != state.checksums():
                    self.blobs.delete(name)
                    raise CycleError(f"{name}: its checksums differ from version {v}'s",
                                     stage="snapshot")  # fmt: skip
            except BaseException as e:  # reported by the next cycle; the deltas stand
                log.warning("the background snapshot of version %s failed: %s", v, e)
                snap, err = None, e
            self._bg_done = (v, snap, err)

        self._bg = threading.Thread(target=write, name=f"nearstate snapshot {v}", daemon=True)
        self._bg.start()

    def _adopt_snapshot(self) -> None:
        """Hold the state over the snapshot written in the background: the deltas after
        it replayed on it (few), so the old snapshot and its layers can be let go."""
        done, self._bg_done = self._bg_done, None
        if done is None:
            return
        self._bg = None
        v, snap, _err = done
        cur = self._state
        if snap is None or cur is None:
            return
        state: State = snap
        if cur.version != v:
            layers = [x for x in getattr(cur, "layers", ()) if x.version > v]
            if not layers or layers[0].from_version != v:
                return  # the state moved past another way (a full cycle): keep it
            for layer in layers:
                state, _ = apply_delta(state, layer)
        if state.checksums() == cur.checksums():
            self._state = state
            self._since_snapshot = cur.version - v

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def state(self) -> State | None:
        """The last announced version, as this producer holds it."""
        return self._state

    @property
    def version(self) -> int | None:
        return None if self._state is None else self._state.version

    # -- full-state cycles --------------------------------------------------------------

    def run_cycle(
        self,
        populate: Callable[[WriteState], Any] | WriteState,
        *,
        schema: Schema | None = None,
        snapshot: bool = False,
        tags: Mapping[str, str] | None = None,
    ) -> CycleResult:
        """A full-state cycle: ``populate(ws)`` stages every record of the next version
        (or pass a staged WriteState). The new state is diffed against the last one."""
        t = _Timer()
        prior = self._state
        with t.stage("populate"):
            if isinstance(populate, WriteState):
                ws = populate
            else:
                sch = schema or (prior.stored_schema if prior is not None else None)
                if sch is None:
                    raise SchemaError("the first cycle needs a schema (pass schema=...)")
                ws = WriteState(sch)
                populate(ws)
        with t.stage("diff"):
            new_schema = ws.final_schema()
            same_shape = prior is not None and shape(new_schema) == shape(prior.stored_schema)
            changes: dict[str, Changes] | None = None
            _check_full_refs(ws)
            if prior is not None and same_shape:
                changes = _diff_full(prior, ws)
                if not any(changes.values()):
                    return CycleResult(None, prior.version, changes, False, t.ms)
            checksums = ws.checksums()
        return self._finish(
            t, prior, ws, changes, checksums, snapshot=snapshot or not same_shape, tags=tags,
            full=ws, new_schema=new_schema,
        )  # fmt: skip

    # -- incremental cycles -------------------------------------------------------------

    def run_incremental(
        self,
        mutate: Callable[[Incremental], Any],
        *,
        snapshot: bool = False,
        tags: Mapping[str, str] | None = None,
    ) -> CycleResult:
        """An incremental cycle: ``mutate(inc)`` calls ``inc.upsert(type, record)`` and
        ``inc.delete(type, key)``. Costs in proportion to the change (plus a snapshot when
        one is due, which costs in proportion to the dataset)."""
        t = _Timer()
        prior = self._state
        if prior is None:
            raise CycleError("the dataset has no version yet; run a full cycle first",
                             stage="populate")  # fmt: skip
        sch = prior.stored_schema
        with t.stage("populate"):
            inc = Incremental(sch)
            mutate(inc)
        with t.stage("diff"):
            ws = WriteState(sch)
            changes: dict[str, Changes] = {}
            sums = prior.checksums()
            for tname, ops in inc._ops.items():
                ts = prior[tname]
                ch = Changes()
                ups = [(k, r) for k, r in ops.items() if r is not _DELETE]
                if ups:
                    staged = WriteState(sch)
                    staged.add_many(tname, [r for _, r in ups])
                    digests = staged.digests(tname)
                    keys = list(staged.staged_keys(tname))
                    for i, k in enumerate(keys):
                        o = ts.ordinal_of(k)
                        d = int(digests[i])
                        if o >= 0:
                            if ts.digest(o) == d:
                                continue
                            ch.modified.append(k)
                        else:
                            ch.added.append(k)
                        ws.add(tname, staged.staged_record(tname, i))
                for k, r in ops.items():
                    if r is _DELETE and ts.ordinal_of(k) >= 0:
                        ch.removed.append(k)
                if ch:
                    changes[tname] = ch
            if not changes:
                return CycleResult(None, prior.version, changes, False, t.ms)
            _check_refs(prior, ws, changes)
            _check_referrers(prior, changes)
            checksums = dict(sums)
            for tname, ch in changes.items():
                ts = prior[tname]
                c = checksums.get(tname, (0, 0))
                for k in (*ch.modified, *ch.removed):
                    c = _digest.sub(c, ts.digest(ts.ordinal_of(k)))
                if ch.added or ch.modified:
                    for d in ws.digests(tname):
                        c = _digest.add(c, int(d))
                checksums[tname] = c
        return self._finish(t, prior, ws, changes, checksums, snapshot=snapshot, tags=tags,
                            full=None, new_schema=sch)  # fmt: skip

    # -- a snapshot built elsewhere ----------------------------------------------------

    def run_built(
        self,
        schema: Schema,
        types_meta: dict[str, Any],
        sections: dict[str, Any],
        *,
        tags: Mapping[str, str] | None = None,
    ) -> CycleResult:
        """Publish a whole state already encoded (``types_meta`` and ``sections`` as
        :meth:`WriteState.build` gives them — a streamed import joins its parts so) as a
        snapshot. No delta is written: consumers load the new version whole. Nothing is
        published if the state equals the last version."""
        t = _Timer()
        prior = self._state
        checksums = {
            n: _digest.parse(m["checksum"]) for n, m in types_meta.items() if "checksum" in m
        }
        if (
            prior is not None
            and prior.checksums() == checksums
            and shape(prior.stored_schema) == shape(schema)
        ):
            return CycleResult(None, prior.version, {}, False, t.ms)
        return self._finish(t, prior, None, None, checksums, snapshot=True, tags=tags,
                            full=None, new_schema=schema, built=(types_meta, sections))  # fmt: skip

    # -- the common tail: write, check, validate, publish, announce ----------------------

    def _finish(
        self,
        t: _Timer,
        prior: State | None,
        ws: WriteState | None,
        changes: dict[str, Changes] | None,
        checksums: dict[str, _digest.Checksum],
        *,
        snapshot: bool,
        tags: Mapping[str, str] | None,
        full: WriteState | None,
        new_schema: Schema,
        built: tuple[dict[str, Any], dict[str, Any]] | None = None,
    ) -> CycleResult:
        v = 1 if prior is None else prior.version + 1
        if prior is not None and LOG_POSITION in prior.tags:
            # a version includes the Log up to where the last one did, unless told more
            tags = {LOG_POSITION: prior.tags[LOG_POSITION], **(tags or {})}
        self._adopt_snapshot()
        if prior is not None and self._state is not prior and prior.version == self.version:
            prior = self._state  # the same version, now over its new snapshot
        want_snapshot = (
            snapshot or changes is None or self._since_snapshot + 1 >= self.snapshot_every
        )
        in_background = (
            want_snapshot and not snapshot and changes is not None and full is None
            and built is None and self.background_snapshots
        )  # fmt: skip
        if in_background:
            want_snapshot = False
        blobs: dict[str, list[bytes | memoryview]] = {}
        new_state: State | None = None
        with t.stage("write"):
            if changes is not None:
                assert prior is not None
                upserts = ws if full is None else _upserts(prior, full, changes)
                reverse = _reverse(prior, changes)
                removed = {n: c.removed for n, c in changes.items()}
                added = {n: c.added for n, c in changes.items()}
                sums_p = prior.checksums()
                common = dict(dataset=self.dataset, schema=prior.stored_schema)
                blobs[delta_name(v)] = encode_delta(
                    kind="delta", from_version=v - 1, version=v, upserts=upserts,
                    removed=removed, from_checksums=sums_p, checksums=checksums, tags=tags,
                    **common,
                )  # fmt: skip
                blobs[reverse_name(v)] = encode_delta(
                    kind="reverse", from_version=v, version=v - 1, upserts=reverse,
                    removed=added, from_checksums=checksums, checksums=sums_p,
                    tags=dict(prior.tags), **common,
                )  # fmt: skip
        with t.stage("integrity"):
            if changes is not None:
                assert prior is not None
                d = _open(blobs[delta_name(v)], delta_name(v))
                r = _open(blobs[reverse_name(v)], reverse_name(v))
                d.check_digests()
                r.check_digests()
                new_state, _ = apply_delta(prior, d)
                back, _ = apply_delta(new_state, r)
                if back.checksums() != prior.checksums():
                    raise CycleError("the reverse delta does not lead back to the last version",
                                     stage="integrity")  # fmt: skip
            if want_snapshot:
                if full is None or changes is not None:
                    # deltas read with the last version's schema; the snapshot keeps it
                    snap_schema = prior.stored_schema if prior is not None else new_schema
                else:
                    snap_schema = full.final_schema()
                if built is not None:
                    header = {
                        "kind": "snapshot", "dataset": self.dataset, "version": v,
                        "created": time.time(), "tags": dict(tags or {}),
                        "schema": new_schema.to_json(), "types": built[0],
                    }  # fmt: skip
                    sections = built[1]
                elif full is None:
                    # the last snapshot's columns merged with the deltas': never a record
                    # decoded (see nearstate.merge)
                    assert new_state is not None
                    with Spill() as spill:  # the sections stay mapped after it is closed
                        header, sections = merged_snapshot(
                            new_state, dataset=self.dataset, version=v, tags=dict(tags or {}),
                            created=time.time(), spill=spill,
                        )  # fmt: skip
                else:
                    types_meta, sections = full.build()
                    header = {
                        "kind": "snapshot", "dataset": self.dataset, "version": v,
                        "created": time.time(), "tags": dict(tags or {}),
                        "schema": snap_schema.to_json(), "types": types_meta,
                    }  # fmt: skip
                blobs[snapshot_name(v)] = encode_blob(header, sections)
        with t.stage("validate"):
            counts = {n: c[0] for n, c in checksums.items()}
            if built is not None:
                records = _built_records(blobs[snapshot_name(v)]) if self.validators else None
            else:
                records = _records_of(ws if full is None else full)
            ctx = CycleContext(prior, changes, counts, records)  # type: ignore[arg-type]
            problems: list[str] = []
            for val in self.validators:
                out = val(ctx)
                if isinstance(out, str):
                    problems.append(out)
                elif out:
                    problems.extend(out)
            if problems:
                raise CycleError("; ".join(problems), stage="validate")
        record = {
            "version": v,
            "from": None if prior is None else prior.version,
            "snapshot": snapshot_name(v) if snapshot_name(v) in blobs else None,
            "delta": delta_name(v) if delta_name(v) in blobs else None,
            "reverse": reverse_name(v) if reverse_name(v) in blobs else None,
            "created": time.time(),
            "tags": dict(tags or {}),
            "checksums": {n: _digest.fmt(c) for n, c in checksums.items()},
            "changes": None if changes is None else {
                n: {"added": len(c.added), "modified": len(c.modified), "removed": len(c.removed)}
                for n, c in changes.items()
            },
        }  # fmt: skip
        sizes: dict[str, int] = {}
        with t.stage("publish"):
            for name, pieces in blobs.items():
                sizes[name] = self.blobs.put(name, pieces)
            if snapshot_name(v) in blobs:
                # read the stored snapshot back (every section checked) before announcing
                snap = open_snapshot(self.blobs, v, verify=True)
                if snap.checksums() != checksums:
                    raise CycleError(
                        f"{snapshot_name(v)}: its checksums differ from the staged records",
                        stage="publish",
                    )
                new_state = snap
            self.blobs.put(record_name(v), [json.dumps(record).encode()])
        assert new_state is not None
        if getattr(self._lease, "lost", False):  # a lease-based lock (NATS) expired
            raise LockedError(
                "this producer lost its lock (its lease was not renewed in time and another "
                f"producer may have taken it); version {v} was stored but not announced"
            )
        with t.stage("announce"):
            self.announcer.announce(record)
        # announced: this is now the producer's state
        self._since_snapshot = 0 if snapshot_name(v) in blobs else self._since_snapshot + 1
        self._state = new_state
        if in_background and (self._bg is None or not self._bg.is_alive()):
            self._adopt_snapshot()
            self._start_snapshot(new_state)
        if self.retain_snapshots is not None:
            try:
                cleanup(self.blobs, keep_snapshots=self.retain_snapshots)
            except Exception as e:  # retention never fails a published version
                log.warning("retention cleanup failed: %s", e)
        return CycleResult(v, None if prior is None else prior.version, changes,
                           snapshot_name(v) in blobs, t.ms, sizes)  # fmt: skip


def _version_numbers(name: str) -> list[int] | None:
    """The version numbers a blob name carries (``snapshots/7.blob`` -> [7],
    ``deltas/6-7.blob`` -> [6, 7]), or None for another name."""
    stem = name.rsplit("/", 1)[-1].split(".", 1)[0]
    try:
        return [int(p) for p in stem.split("-")]
    except ValueError:
        return None


def _drop_unannounced(blobs: BlobStore, announced: int) -> list[str]:
    """Delete the blobs of versions after ``announced`` (only the lock holder may)."""
    gone = []
    for name in blobs.list():
        vs = _version_numbers(name)
        if vs is not None and max(vs) > announced:
            blobs.delete(name)
            gone.append(name)
    if gone:
        log.warning("removed %d blob(s) of versions after %d that were never announced: %s",
                    len(gone), announced, ", ".join(gone[:5]))  # fmt: skip
    return gone


def cleanup(blobs: BlobStore, *, keep_snapshots: int) -> list[str]:
    """Keep the newest ``keep_snapshots`` snapshots and everything from the oldest of them
    on (deltas, reverse deltas, version records); delete the rest. Returns what it deleted.
    The announced version is never left without a route."""
    if keep_snapshots < 1:
        raise ValueError("keep at least one snapshot")
    cat = Catalog(blobs)
    snaps = sorted(cat.snapshots)
    if len(snaps) <= keep_snapshots:
        return []
    oldest = snaps[-keep_snapshots]
    gone = []
    for name in blobs.list():
        vs = _version_numbers(name)
        if vs is not None and min(vs) < oldest:
            blobs.delete(name)
            gone.append(name)
    return gone


def materialize(state: State) -> WriteState:
    """A WriteState holding every record of ``state`` (to write it as a snapshot)."""
    ws = WriteState(state.stored_schema)
    for name in state:
        ts = state[name]
        if ts.typedef.key is None:
            continue
        batch: list[dict[str, Any]] = []
        for rec in ts:
            batch.append(rec.to_dict())
            if len(batch) >= 50_000:
                ws.add_many(name, batch)
                batch = []
        if batch:
            ws.add_many(name, batch)
    return ws


def _diff_full(prior: State, ws: WriteState) -> dict[str, Changes]:
    out: dict[str, Changes] = {}
    for tdef in ws.schema:
        if tdef.key is None:
            continue
        name = tdef.name
        keys = ws.staged_keys(name)
        digests = ws.digests(name)
        ch = Changes()
        if name in prior:
            ts = prior[name]
            ordinal_of, dig = ts.ordinal_of, ts.digest
            for k, i in keys.items():
                o = ordinal_of(k)
                if o < 0:
                    ch.added.append(k)
                elif dig(o) != int(digests[i]):
                    ch.modified.append(k)
            ch.removed.extend(k for k in ts.keys() if k not in keys)  # noqa: SIM118
        else:
            ch.added.extend(keys)
        if ch:
            out[name] = ch
    return out


def _upserts(prior: State, full: WriteState, changes: dict[str, Changes]) -> WriteState:
    ws = WriteState(prior.stored_schema)
    for name, ch in changes.items():
        keys = full.staged_keys(name)
        recs = [full.staged_record(name, keys[k]) for k in (*ch.added, *ch.modified)]
        if recs:
            ws.add_many(name, recs)
    return ws


def _reverse(prior: State, changes: dict[str, Changes]) -> WriteState:
    ws = WriteState(prior.stored_schema)
    for name, ch in changes.items():
        ts = prior[name]
        recs = [ts.get(k).to_dict() for k in (*ch.modified, *ch.removed)]
        if recs:
            ws.add_many(name, recs)
    return ws


def _check_refs(prior: State, ws: WriteState, changes: dict[str, Changes]) -> None:
    removed = {n: set(c.removed) for n, c in changes.items()}
    for tdef in ws.schema:
        if tdef.key is None or tdef.name not in changes:
            continue
        for f in tdef.fields:
            if f.type.kind != "ref":
                continue
            target = f.type.target
            assert target is not None
            staged_t = ws.staged_keys(target) if target in changes else {}
            for i in range(ws.count(tdef.name)):
                k = ws.staged_record(tdef.name, i).get(f.name)
                if k is None:
                    continue
                ok = k in staged_t or (
                    prior[target].ordinal_of(k) >= 0 and k not in removed.get(target, ())
                )
                if not ok:
                    raise SchemaError(
                        f"{tdef.name}: field {f.name!r} refers to {target} {k!r}, "
                        "which is not in the state"
                    )


def _ref_fields(schema: Schema, target: str) -> list[tuple[str, str]]:
    """(type, field) of every top-level field referring to ``target`` (directly or as
    elements of a list, set or dict)."""
    out = []
    for t in schema:
        if t.key is None:
            continue
        for f in t.fields:
            ft = f.type
            while ft.kind in ("list", "set", "dict") and ft.item is not None:
                ft = ft.item
            if ft.kind == "ref" and ft.target == target:
                out.append((t.name, f.name))
    return out


def _check_referrers(prior: State, changes: dict[str, Changes]) -> None:
    """Refuse removing a record that a record left unchanged still refers to."""
    for target, ch in changes.items():
        if not ch.removed:
            continue
        for tname, fname in _ref_fields(prior.stored_schema, target):
            touched = changes.get(tname)
            rewritten = set() if touched is None else {*touched.modified, *touched.removed}
            ts = prior[tname]
            for k in ch.removed:
                for rec in ts.find(**{fname: k}):
                    if rec.key not in rewritten:
                        raise SchemaError(
                            f"cannot remove {target} {k!r}: {tname} {rec.key!r} refers to it "
                            f"(field {fname!r}); change or remove that record too"
                        )


def _check_full_refs(ws: WriteState) -> None:
    """Every reference in a full state must name a record of that state."""
    for t in ws.schema:
        if t.key is None:
            continue
        for f in t.fields:
            if not _has_ref(f.type):
                continue
            col = ws.staged_column(t.name, f.name)
            for v in col:
                _check_ref_value(ws, f.type, v, t.name, f.name)


def _has_ref(ft: Any) -> bool:
    return ft.kind == "ref" or any(_has_ref(s) for s in (ft.item, ft.key) if s is not None)


def _check_ref_value(ws: WriteState, ft: Any, v: Any, tname: str, fname: str) -> None:
    if v is None or type(v).__name__ == "Absent":
        return
    if ft.kind == "ref":
        if v not in ws.staged_keys(ft.target):
            raise SchemaError(
                f"{tname}: field {fname!r} refers to {ft.target} {v!r}, which is not in the state"
            )
    elif ft.kind in ("list", "set"):
        for x in v:
            _check_ref_value(ws, ft.item, x, tname, fname)
    elif ft.kind == "dict":
        for x in v.values():
            _check_ref_value(ws, ft.item, x, tname, fname)


def _built_records(
    pieces: list[bytes | memoryview],
) -> Callable[[str], Iterable[Mapping[str, Any]]]:
    state = ReadState(parse_blob(b"".join(pieces), source="<the new snapshot>"))

    def records(name: str) -> Iterable[Mapping[str, Any]]:
        if name in state:
            yield from (r.to_dict() for r in state[name])

    return records


def _records_of(ws: WriteState) -> Callable[[str], Iterable[Mapping[str, Any]]]:
    def records(name: str) -> Iterable[Mapping[str, Any]]:
        if name not in ws.schema:
            return
        for i in range(ws.count(name)):
            yield ws.staged_record(name, i)

    return records


def _open(pieces: list[bytes | memoryview], name: str) -> DeltaLayer:
    return DeltaLayer(parse_blob(b"".join(pieces), verify=True, source=name), name)


class _Timer:
    def __init__(self) -> None:
        self.ms: dict[str, float] = {}

    def stage(self, name: str) -> _Stage:
        return _Stage(self, name)


class _Stage:
    def __init__(self, timer: _Timer, name: str):
        self.timer, self.name = timer, name

    def __enter__(self) -> None:
        self.t0 = time.perf_counter()

    def __exit__(self, et: type | None, e: BaseException | None, tb: object) -> bool:
        self.timer.ms[self.name] = (time.perf_counter() - self.t0) * 1000
        if e is None or isinstance(e, CycleError) or not isinstance(e, Exception):
            return False
        raise CycleError(f"{type(e).__name__}: {e}", stage=self.name) from e


#: the nice value of a thread writing a background snapshot (Linux: a thread has its own)
SNAPSHOT_NICENESS = 10


def _yield_cpu() -> None:
    """Lower this thread's CPU priority, so that on a busy host the readers (consumers,
    request threads) come first and a snapshot written in the background takes the CPU
    they leave: it is not due at any moment, they are. Where a thread's priority cannot be
    set (not Linux), nothing changes."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, max(os.getpriority(os.PRIO_PROCESS, tid),
                                                 SNAPSHOT_NICENESS))  # fmt: skip
    except (AttributeError, OSError):
        pass
