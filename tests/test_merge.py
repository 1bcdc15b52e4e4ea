"""Snapshots by merging columns (nearstate.merge): a merged snapshot holds exactly the
records of the layered version it was made from — the same records and checksums as a
snapshot built from scratch — on every field kind, under both cores."""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import random
import zlib
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nearstate
from nearstate import merge
from nearstate.blob import encode_blob, parse_blob
from nearstate.errors import FormatError
from nearstate.read_state import ReadState

SCHEMA = nearstate.Schema.from_json({"types": [
    {"name": "Person", "key": ["id"], "fields": [
        {"name": "id", "type": "int"},
        {"name": "name", "type": "str"},
        {"name": "nick", "type": "str?"},
    ]},
    {"name": "Tag", "key": ["code"], "fields": [
        {"name": "code", "type": "str"},
        {"name": "weight", "type": "float"},
    ]},
    {"name": "Dims", "fields": [{"name": "w", "type": "int"}, {"name": "h", "type": "float"}]},
    {"name": "Film", "key": ["id"], "fields": [
        {"name": "id", "type": "int"},
        {"name": "title", "type": "str"},
        {"name": "year", "type": "int"},
        {"name": "big", "type": "int"},
        {"name": "tags", "type": "list<str>"},
        {"name": "labels", "type": "set<ref<Tag>>"},
        {"name": "rating", "type": "float?"},
        {"name": "ok", "type": "bool"},
        {"name": "dims", "type": "record<Dims>?"},
        {"name": "director", "type": "ref<Person>"},
        {"name": "writer", "type": "ref<Person>?"},
        {"name": "meta", "type": "dict<str,int>"},
        {"name": "blob", "type": "bytes?"},
        {"name": "when", "type": "datetime"},
        {"name": "body", "type": "text?"},
    ]},
]})  # fmt: skip

T0 = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)


def person(i: int, v: int = 0) -> dict[str, Any]:
    return {"id": i, "name": f"person {i}.{v}", "nick": None if (i + v) % 3 == 0 else f"n{i % 7}"}


def tag(i: int, v: int = 0) -> dict[str, Any]:
    return {"code": f"tag-{i}", "weight": (i + v) / 4}


def film(i: int, v: int = 0, *, people: int = 10, tags: int = 6) -> dict[str, Any]:
    r: dict[str, Any] = {
        "id": i,
        "title": f"film {i} version {v}",
        "year": 1950 + (i + v) % 70,
        "big": 2**70 + i if (i + v) % 11 == 0 else i * 1000,
        "tags": [f"t{j}" for j in range((i + v) % 4)],
        "labels": [f"tag-{(i + j) % tags}" for j in range((i + v) % 3)],
        "rating": None if i % 4 == 0 else (i + v) / 10,
        "ok": (i + v) % 2 == 0,
        "dims": None if i % 6 == 0 else {"w": (i + v) % 3, "h": 2.5},
        "director": (i + v) % people,
        "writer": None if i % 5 == 0 else (i * 3 + v) % people,
        "meta": {"a": i, "b": v},
        "blob": None if i % 7 == 0 else bytes([i % 256, v % 256]),
        "when": T0 + dt.timedelta(hours=i + v),
        "body": None if i % 9 == 0 else ("lorem ipsum dolor sit amet " * (i % 5)) + str(v),
    }
    if i % 8 == 1:
        del r["rating"]  # left out, not null
    return r


def records(state: Any, t: str) -> dict[Any, dict[str, Any]]:
    return {r.key: r.to_dict() for r in state[t]}


def merged(state: Any, spill_min: int | None = None) -> ReadState:
    spill = merge.Spill(min_bytes=spill_min) if spill_min is not None else None
    header, sections = merge.merged_snapshot(
        state,
        dataset=state.dataset,
        version=state.version,
        tags=state.tags,
        created=0.0,
        spill=spill,
    )
    if spill is not None:
        spill.close()  # the moved sections stay readable through their maps
        merged.spilled = sum(isinstance(a, np.memmap) for a in sections.values())
    blob = parse_blob(b"".join(bytes(p) for p in encode_blob(header, sections)))
    return ReadState(blob)


@contextlib.contextmanager
def small_steps(step: int = 16):
    """The chunked helpers working ``step`` values at a time (one block), so that a small
    column crosses many chunk boundaries."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(merge, "STEP", step)
        yield


def sections_of(state: ReadState) -> dict[str, tuple[str, bytes]]:
    return {k: (v.dtype.str, v.tobytes()) for k, v in state.blob.arrays.items()}


def scratch(state: Any) -> ReadState:
    ws = nearstate.WriteState(state.stored_schema)
    for t in ("Person", "Tag", "Film"):
        ws.add_many(t, [r.to_dict() for r in state[t]])
    types_meta, sections = ws.build()
    header = {"kind": "snapshot", "dataset": "d", "version": state.version, "tags": {},
              "schema": state.stored_schema.to_json(), "types": types_meta}  # fmt: skip
    return ReadState(parse_blob(b"".join(bytes(p) for p in encode_blob(header, sections))))


def assert_same(a: Any, b: Any) -> None:
    for t in ("Person", "Tag", "Film"):
        ra, rb = records(a, t), records(b, t)
        assert ra == rb, t
        for k in list(ra)[:40]:
            assert b[t].get(k).to_dict() == ra[k]
        assert b[t].get(10**9 if t != "Tag" else "nope") is None
        assert len(b[t]) == len(ra)
    assert a.checksums() == b.checksums()


def first_version(p: nearstate.Producer, n: int) -> None:
    ws = nearstate.WriteState(SCHEMA)
    ws.add_many("Person", [person(i) for i in range(10)])
    ws.add_many("Tag", [tag(i) for i in range(6)])
    ws.add_many("Film", [film(i) for i in range(n)])
    p.run_cycle(ws)


op = st.tuples(
    st.sampled_from(["film", "film", "film", "del", "person", "tag"]),
    st.integers(0, 40),
    st.integers(1, 5),
)
ops = st.lists(op, max_size=12)


def apply_ops(cyc: list[tuple[str, int, int]]):
    """An incremental cycle's ``mutate`` doing the drawn operations."""

    def mutate(inc: Any) -> None:
        for what, k, v in cyc:
            if what == "film":
                inc.upsert("Film", film(k, v))
            elif what == "del":
                inc.delete("Film", k)
            elif what == "person":  # persons are referred to: modified, never removed
                inc.upsert("Person", person(k % 10, v))
            else:
                inc.upsert("Tag", tag(k % 6, v))

    return mutate


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(n=st.integers(0, 30), cycles=st.lists(ops, min_size=1, max_size=4))
def test_merged_snapshot_equals_one_built_from_scratch(tmp_path_factory, n, cycles) -> None:
    ds = nearstate.LocalDataset(tmp_path_factory.mktemp("m"))
    with ds.producer(snapshot_every=1000) as p:
        first_version(p, n)
        for cyc in cycles:
            p.run_incremental(apply_ops(cyc))
        state = p.state
        m = merged(state)
        assert_same(state, m)
        assert_same(scratch(state), m)
        # a merged snapshot merges again (the next snapshot starts from it)
        assert_same(state, merged(m))
        # sections moved out of the heap as they are finished read the same
        assert_same(state, merged(state, spill_min=1))
        # columns worked a few values at a time give the same sections, byte for byte
        with small_steps():
            assert sections_of(merged(state)) == sections_of(m)


def test_merge_keeps_compressed_pools_text_dictionaries_and_sparse_nulls(tmp_path) -> None:
    rnd = random.Random(5)
    ds = nearstate.LocalDataset(tmp_path)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "theta", "kappa"]

    def rec(i: int, v: int) -> dict[str, Any]:
        return {
            "id": i,
            "title": " ".join(rnd.choice(words) for _ in range(6)) + f" #{i}",  # FSST pool
            "kind": rnd.choice(words),  # a dictionary pool
            "note": f"rare {i}" if i % 40 == 0 else None,  # sparse: mostly null
            "body": " ".join(rnd.choice(words) for _ in range(60)) + str(v),  # zstd dictionary
        }

    schema = nearstate.Schema.from_json({"types": [{"name": "Doc", "key": ["id"], "fields": [
        {"name": "id", "type": "int"}, {"name": "title", "type": "str"},
        {"name": "kind", "type": "str"}, {"name": "note", "type": "str?"},
        {"name": "body", "type": "text"},
    ]}]})  # fmt: skip
    ws = nearstate.WriteState(schema)
    ws.add_many("Doc", [rec(i, 0) for i in range(3000)])
    with ds.producer(snapshot_every=1000) as p:
        p.run_cycle(ws)
        meta = p.state.blob.header["types"]["Doc"]["columns"]
        assert meta["title"].get("fsst") and meta["kind"]["pool"] == "ids"
        assert meta["note"].get("sparse") and meta["body"].get("dict")
        for cyc in range(3):

            def mutate(inc, cyc=cyc):
                for _ in range(50):
                    inc.upsert("Doc", rec(rnd.randrange(3100), cyc + 1))
                for _ in range(20):
                    inc.delete("Doc", rnd.randrange(3000))

            p.run_incremental(mutate)
        state = p.state
        m = merged(state)
        assert records(m, "Doc") == records(state, "Doc")
        spilled = merged(state, spill_min=1)
        assert merged.spilled > 5  # every section of the rewritten type left the heap
        assert records(spilled, "Doc") == records(state, "Doc")
        assert m.checksums() == state.checksums()
        cols = m.blob.header["types"]["Doc"]["columns"]
        # the layouts stay: the symbol table, the dictionary pool, the sparse nulls, the
        # text dictionary (the delta's frames were recompressed with it)
        assert cols["title"].get("fsst") and cols["kind"]["pool"] == "ids"
        assert cols["note"].get("sparse") and cols["body"].get("dict")
        assert m.nbytes < 1.1 * scratch_doc(state).nbytes


def scratch_doc(state: Any) -> ReadState:
    ws = nearstate.WriteState(state.stored_schema)
    ws.add_many("Doc", [r.to_dict() for r in state["Doc"]])
    types_meta, sections = ws.build()
    header = {"kind": "snapshot", "dataset": "d", "version": 1, "tags": {},
              "schema": state.stored_schema.to_json(), "types": types_meta}  # fmt: skip
    return ReadState(parse_blob(b"".join(bytes(p) for p in encode_blob(header, sections))))


def test_producer_snapshots_are_merged_and_consumers_read_them(tmp_path) -> None:
    ds = nearstate.LocalDataset(tmp_path)
    states = {}
    with ds.producer(snapshot_every=3) as p:
        first_version(p, 50)
        for v in range(1, 6):
            r = p.run_incremental(lambda inc, v=v: [inc.upsert("Film", film(i, v))
                                                    for i in range(v, 60, 7)])  # fmt: skip
            states[v + 1] = records(p.state, "Film")
    snaps = [int(n.split("/")[1].split(".")[0]) for n in ds.blobs.list("snapshots/")]
    assert len(snaps) >= 2 and r.version == 6
    for version in snaps[1:]:  # the ones the producer merged
        loaded = ds.load(version)
        assert type(loaded) is ReadState
        assert records(loaded, "Film") == states[version]
    fresh = ds.load()
    assert records(fresh, "Film") == records(p.state, "Film")


def test_unused_pool_entries_are_dropped() -> None:
    data = np.frombuffer(b"aaabbbcccddd", dtype=np.uint8)
    offs = np.array([0, 3, 6, 9, 12], dtype=np.int64)
    out: dict[str, Any] = {}
    meta = merge._write_pool(merge.Pool(data, offs, np.array([3, 3, 0], dtype=np.int64)), out, "x")
    assert meta["pool"] == "ids"
    assert out["x.pool"].tobytes() == b"aaaddd"  # b and c: nobody points at them
    assert out["x.ids"].tolist() == [1, 1, 0]
    # equal entries joined from two pools become one; all distinct: an entry per row
    data = np.frombuffer(b"xyzxyzxyzxyzq", dtype=np.uint8)
    offs = np.array([0, 3, 6, 9, 12, 13], dtype=np.int64)
    out = {}
    pool = merge.Pool(data, offs, np.array([0, 1, 2, 3, 4, 0, 1], dtype=np.int64))
    assert merge._write_pool(pool, out, "y")["pool"] == "ids"
    assert out["y.pool"].tobytes() == b"xyzq" and out["y.ids"].tolist() == [0, 0, 0, 0, 1, 0, 0]
    out = {}
    pool = merge.Pool(data, offs, np.array([4, 0], dtype=np.int64))
    assert merge._write_pool(pool, out, "z")["pool"] == "identity"
    assert out["z.pool"].tobytes() == b"qxyz" and "z.ids" not in out
    # an entry per row with one value twice: the entries as they lie, from offset 0
    data = np.frombuffer(b"_aabbbbbbbbcccccccc_", dtype=np.uint8)
    offs = np.array([1, 2, 3, 11, 19], dtype=np.int64)
    out = {}
    assert merge._write_pool(merge.Pool(data, offs, None), out, "w")["pool"] == "identity"
    assert out["w.pool"].tobytes() == b"aabbbbbbbbcccccccc"
    got_offs = out["w.poffs"].astype(np.int64)
    if "w.poffs.blk" in out:
        got_offs += np.repeat(out["w.poffs.blk"].astype(np.int64), 16)[: len(got_offs)]
    assert got_offs.tolist() == [0, 1, 2, 10, 18]


# --- the chunked helpers against the encoder's whole-column forms ----------------------


@settings(deadline=None)
@given(st.lists(st.integers(0, 2**64 - 1), max_size=80), st.integers(-(2**63), 2**63 - 1),
       st.sampled_from([16, 32, 1 << 16]), st.booleans())  # fmt: skip
def test_chunked_put_uints_equals_the_encoders(values, lo, step, signed) -> None:
    from nearstate.encoding import put_uints

    if signed:  # an int column less its smallest value, wrapping as uint64
        a = np.array(values, dtype=np.uint64).view(np.int64)
        want: dict[str, Any] = {}
        put_uints(a.view(np.uint64) - np.uint64(lo & 0xFFFFFFFFFFFFFFFF), want, "x")
    else:
        a, lo = np.array(values, dtype=np.uint64), 0
        want = {}
        put_uints(a, want, "x")
    got: dict[str, Any] = {}
    with small_steps(step):
        merge._put_uints(a, got, "x", lo)
    assert {k: (v.dtype.str, v.tobytes()) for k, v in got.items()} == {
        k: (v.dtype.str, v.tobytes()) for k, v in want.items()
    }


@settings(deadline=None)
@given(st.lists(st.one_of(st.floats(), st.integers(-(10**6), 10**6).map(lambda i: i / 100),
                          st.integers(-(10**9), 10**9).map(lambda i: i / 10**6)),
                max_size=90), st.sampled_from([16, 1 << 16]))  # fmt: skip
def test_chunked_decimal_scale_is_the_smallest_exact_scale(values, step) -> None:
    from nearstate.encoding import DECIMAL_DIGITS, DECIMAL_LIMIT, decimal_scale

    a = np.array(values, dtype=np.float64)
    want = None  # the reference: every value, one at a time, in plain Python
    if values and all(math.isfinite(v) and not (v == 0 and math.copysign(1, v) < 0)
                      for v in values):  # fmt: skip
        for d in range(DECIMAL_DIGITS + 1):
            if max(map(abs, values)) * 10**d >= DECIMAL_LIMIT:
                break
            if all(float(np.round(v * 10**d)) / 10**d == v for v in values):
                want = 10**d
                break
    assert decimal_scale(a, step) == want


@settings(deadline=None)
@given(st.lists(st.tuples(st.integers(0, 50), st.integers(0, 5)), max_size=60),
       st.sampled_from([16, 1 << 16]))  # fmt: skip
def test_chunked_spans_and_pool_helpers(spans, step) -> None:
    lens = np.array([n for _, n in spans], dtype=np.int64)
    offs = np.zeros(len(spans) + 1, dtype=np.int64)
    np.cumsum(lens, out=offs[1:])
    idx = np.array([s % max(len(spans), 1) for s, _ in spans], dtype=np.int64)
    want_offs = np.zeros(len(idx) + 1, dtype=np.int64)
    np.cumsum(lens[idx], out=want_offs[1:])
    want = [x for i in idx.tolist() for x in range(int(offs[i]), int(offs[i + 1]))]
    mask = lens > 2
    with small_steps(step):
        got_offs = merge._span_offsets(offs, idx)
        assert got_offs.tolist() == want_offs.tolist()
        assert merge._spans(offs, idx, got_offs, np.int32).tolist() == want
        assert (
            merge._is_arange(np.arange(len(spans))) and merge._is_self(np.arange(len(spans))).all()
        )
        assert merge._nonzero(mask, np.int32).tolist() == np.flatnonzero(mask).tolist()
        keep = np.flatnonzero(mask)
        assert merge._span_bytes(offs, keep) == int(lens[keep].sum())
    if len(spans) > 1:
        assert not merge._is_arange(np.arange(len(spans))[::-1].copy())


# --- the compiled helpers against the reference ----------------------------------------


def _py_gather(data: bytes, offs: list[int], idx: list[int]) -> bytes:
    return b"".join(data[offs[i] : offs[i + 1]] for i in idx)


@given(st.lists(st.binary(max_size=12), min_size=1, max_size=30), st.data())
def test_bulk_helpers_match_python(values, data) -> None:
    joined = b"".join(values)
    offs = np.zeros(len(values) + 1, dtype=np.int64)
    np.cumsum([len(v) for v in values], out=offs[1:])
    idx = np.array(data.draw(st.lists(st.integers(0, len(values) - 1), max_size=40)),
                   dtype=np.int64)  # fmt: skip
    buf = np.frombuffer(joined, dtype=np.uint8)
    got, got_offs = merge.gather_slices(buf, offs, idx)
    assert got.tobytes() == _py_gather(joined, offs.tolist(), idx.tolist())
    assert got_offs[-1] == len(got)
    assert merge.crc32_slices(buf, offs).tolist() == [zlib.crc32(v) for v in values]
    firsts = merge.dedupe_slices(buf, offs).tolist()
    assert firsts == [values.index(v) for v in values]
    ints = np.array(data.draw(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=20)),
                    dtype=np.int64)  # fmt: skip
    assert merge.crc32_ints(ints).tolist() == [zlib.crc32(b"%d" % v) for v in ints.tolist()]
    table = nearstate.fsst.train(values)
    codes, ends = nearstate.fsst.encode(table, values)
    coffs = np.zeros(len(values) + 1, dtype=np.int64)
    coffs[1:] = ends
    plain, poffs = merge.fsst_decode_slices(np.frombuffer(codes, np.uint8), coffs, table)
    assert plain.tobytes() == joined and poffs.tolist() == offs.tolist()


@pytest.mark.skipif(nearstate._native.core is None, reason="the compiled core is not in use")
def test_compiled_helpers_refuse_bad_offsets_and_indexes() -> None:
    core = nearstate._native.core
    data = b"abcdef"
    bad = np.array([0, 4, 2], dtype=np.int64)  # out of order
    past = np.array([0, 3, 9], dtype=np.int64)  # past the data
    good = np.array([0, 3, 6], dtype=np.int64)
    for offs in (bad, past):
        with pytest.raises(FormatError, match="offset"):
            core.gather_slices(data, offs, np.array([0], dtype=np.int64))
        with pytest.raises(FormatError, match="offset"):
            core.crc32_slices(data, offs)
        with pytest.raises(FormatError, match="offset"):
            core.dedupe_slices(data, offs)
    with pytest.raises(IndexError):
        core.gather_slices(data, good, np.array([2], dtype=np.int64))
    with pytest.raises(IndexError):
        core.gather_slices(data, good, np.array([-1], dtype=np.int64))
    fsym, flen = nearstate.fsst.pack([b"ab"])
    with pytest.raises(FormatError, match="bad code"):
        core.fsst_decode_slices(bytes([7]), np.array([0, 1], np.int64), fsym, flen)
    with pytest.raises(FormatError, match="bad code"):
        core.fsst_decode_slices(bytes([255]), np.array([0, 1], np.int64), fsym, flen)


# --- snapshots written in the background ------------------------------------------------


def test_background_snapshots_leave_cycles_to_deltas_and_appear_when_stored(tmp_path) -> None:
    ds = nearstate.LocalDataset(tmp_path)
    expect: dict[int, dict[Any, dict[str, Any]]] = {}
    with ds.producer(snapshot_every=2, background_snapshots=True) as p:
        first_version(p, 40)
        for v in range(1, 8):
            r = p.run_incremental(lambda inc, v=v: [inc.upsert("Film", film(i, v))
                                                    for i in range(v, 50, 5)])  # fmt: skip
            assert not r.snapshot  # the cycle itself wrote only its deltas
            expect[r.version] = records(p.state, "Film")
        assert p.wait_snapshot(timeout=60)
        held = p.state
        # the producer now holds its state over the newest snapshot, not seven deltas
        assert len(getattr(held, "layers", ())) <= 2
        assert records(held, "Film") == expect[8]
    snaps = [int(n.split("/")[1].split(".")[0]) for n in ds.blobs.list("snapshots/")]
    assert len(snaps) >= 2 and max(snaps) > 1
    for v in snaps[1:]:
        loaded = ds.load(v)
        assert type(loaded) is ReadState and records(loaded, "Film") == expect[v]
    assert records(ds.load(), "Film") == expect[8]


def test_a_failed_background_snapshot_keeps_the_deltas_and_is_tried_again(tmp_path) -> None:
    from nearstate.backends import MemoryAnnouncer, MemoryBlobStore

    class FailingSnapshots(MemoryBlobStore):
        fail = True

        def put(self, name, pieces):
            first = name == "snapshots/" + "1".zfill(20) + ".blob"
            if name.startswith("snapshots/") and self.fail and not first:
                raise OSError("disk full (injected)")
            return super().put(name, pieces)

    blobs, ann = FailingSnapshots(), MemoryAnnouncer()
    p = nearstate.Producer(blobs, ann, snapshot_every=2, background_snapshots=True)
    try:
        first_version(p, 20)
        p.run_incremental(lambda inc: inc.upsert("Film", film(3, 9)))
        p.run_incremental(lambda inc: inc.upsert("Film", film(4, 9)))
        assert p.wait_snapshot(timeout=60)
        assert [n for n in blobs.list("snapshots/")] == ["snapshots/" + "1".zfill(20) + ".blob"]
        c = nearstate.Consumer(blobs, ann)
        c.refresh()
        assert c.state.version == 3 and c.state["Film"].get(4).title == film(4, 9)["title"]
        blobs.fail = False
        p.run_incremental(lambda inc: inc.upsert("Film", film(5, 9)))
        assert p.wait_snapshot(timeout=60)
        assert len(blobs.list("snapshots/")) == 2
    finally:
        p.close()


@given(st.lists(st.integers(0, 2**32 - 1), max_size=300), st.integers(0, 40))
def test_compiled_primary_key_slots_equal_the_reference(hashes, crowd) -> None:
    # many keys on a few home slots, some at the end of the table (probes wrap around)
    size = nearstate.index.table_size(len(hashes) + crowd)
    hs = np.array(hashes + [size - 1 + i * size for i in range(crowd)], dtype=np.uint64)
    hs = (hs % 2**32).astype(np.uint32)
    got = nearstate.index.build_pk_tables(None, len(hs), hashes=hs)
    core = nearstate.index._core
    try:
        nearstate.index._core = None
        want = nearstate.index.build_pk_tables(None, len(hs), hashes=hs)
    finally:
        nearstate.index._core = core
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])


@pytest.mark.skipif(nearstate._native.core is None, reason="the compiled core is not in use")
@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=40),
    st.lists(st.integers(-5, 60), max_size=12),
    st.lists(st.integers(-3, 15), max_size=12),
    st.binary(max_size=24),
    st.binary(max_size=4),
)
def test_compiled_helpers_survive_any_offsets(data, offs, idx, fsym, flen) -> None:
    """Whatever bytes and offsets come in (a damaged blob), the helpers return or raise
    one of the errors they name; they never read out of bounds (run under scripts/asan)."""
    core = nearstate._native.core
    o = np.array(offs, dtype=np.int64)
    x = np.array(idx, dtype=np.int64)
    fine = (FormatError, IndexError, ValueError)
    for call in (
        lambda: core.gather_slices(data, o, x),
        lambda: core.crc32_slices(data, o),
        lambda: core.dedupe_slices(data, o),
        lambda: core.fsst_decode_slices(data, o, fsym, flen),
        lambda: core.crc32_ints(o),
        lambda: core.pk_slots(x.astype(np.uint32).tobytes(), len(idx) + 1),
    ):
        with contextlib.suppress(*fine):
            call()


# --- hash indexes carried from one layered version to the next ----------------------------


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(n=st.integers(0, 25), cycles=st.lists(ops, min_size=1, max_size=5))
def test_indexes_carried_across_deltas_equal_a_scan(tmp_path_factory, n, cycles) -> None:
    """After every delta, find() answers as a scan of the records does — with the
    overlay's index handed from version to version (updated for the change), never
    rebuilt."""
    ds = nearstate.LocalDataset(tmp_path_factory.mktemp("i"))
    with ds.producer(snapshot_every=1000) as p:
        first_version(p, n)
        cons = ds.consumer()
        cons.refresh()
        for cyc in cycles:
            r = p.run_incremental(apply_ops(cyc))
            if r.version is not None:
                cons.move_to(r.version)
            ts = cons.state["Film"]
            recs = list(ts)
            for year in (1950, 1951, 1955, 1990):
                want = sorted(x.key for x in recs if x.year == year)
                assert sorted(x.key for x in ts.find(year=year)) == want
            for t in ("t0", "t1", "t2"):
                want = sorted(x.key for x in recs if t in x.tags)
                assert sorted(x.key for x in ts.find(tags=t)) == want
            for d in (0, 3):
                want = sorted(x.key for x in recs if x.director.key == d)
                assert sorted(x.key for x in ts.find(director=d)) == want
            want = sorted(x.key for x in recs if x.year == 1951 and x.ok)
            assert sorted(x.key for x in ts.find(year=1951, ok=True)) == want


def test_a_find_after_a_delta_updates_the_last_index(tmp_path) -> None:
    ds = nearstate.LocalDataset(tmp_path)
    with ds.producer(snapshot_every=1000) as p:
        first_version(p, 30)
        for v in range(1, 4):
            p.run_incremental(lambda inc, v=v: [inc.upsert("Film", film(i, v))
                                                for i in range(v, 30, 4)])  # fmt: skip
            before = p.state["Film"]
            before.find(year=1960)  # builds this version's overlay index
        p.run_incremental(lambda inc: inc.upsert("Film", film(2, 9)))
        after = p.state["Film"]
        carried = after._ov_indexes.get(("year",))
        assert carried is not None  # handed over with the delta, not built on demand
        assert carried is not before._ov_indexes[("year",)]
        assert sorted(x.key for x in after.find(year=film(2, 9)["year"])) == sorted(
            x.key for x in after if x.year == film(2, 9)["year"]
        )


@pytest.mark.skipif(not hasattr(os, "setpriority"), reason="thread priorities: Linux")
def test_a_background_snapshot_is_written_at_a_lower_cpu_priority(tmp_path, monkeypatch) -> None:
    """The thread writing a background snapshot yields the CPU to readers: its nice value
    is raised (threads have their own on Linux), the producer's own thread is left alone."""
    import threading

    from nearstate import producer as producer_mod

    seen: list[int] = []
    real = producer_mod.merged_snapshot

    def spy(*a: Any, **kw: Any) -> Any:
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return real(*a, **kw)

    monkeypatch.setattr(producer_mod, "merged_snapshot", spy)
    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    ds = nearstate.LocalDataset(tmp_path)
    with ds.producer(snapshot_every=2, background_snapshots=True) as p:
        first_version(p, 10)
        for v in range(1, 4):
            p.run_incremental(lambda inc, v=v: inc.upsert("Film", film(v, v)))
        assert p.wait_snapshot(timeout=60)
    assert seen and all(n >= max(mine, producer_mod.SNAPSHOT_NICENESS) for n in seen)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == mine
