"""``nearstate bench versions``: what a change costs as the dataset grows.

For each state size (100k, 1M, 3M generated Tudum-like stories by default) it builds a
snapshot once (cached in the work directory), then runs ``CYCLES`` incremental cycles of
``CHANGE`` changed records each (90% modified, 5% added, 5% removed) through a
:class:`~nearstate.Producer`, and after each cycle moves a :class:`~nearstate.Consumer`
to the new version. Figures (medians over the cycles):

* **delta_apply_ms** — wall time of ``consumer.move_to(new version)``: list the blobs,
  map and verify the delta, apply it to the held state.
* **incremental_cycle_ms** — wall time of ``producer.run_incremental(...)`` on the 1M
  state (or the largest state not above 1M): diff, encode the delta and reverse delta,
  the integrity check (decode both, apply forward and back, compare checksums), validate,
  write with fsync, announce.
* **refresh_peak_memory_ratio** — on the 1M state held in memory (snapshot bytes read
  into the heap, not mapped): (state bytes + delta bytes + peak bytes allocated while
  applying one delta, by tracemalloc) / state bytes.
* **snapshot_load_ms** (the peer) — loading the whole new state instead: mapping and
  verifying a snapshot of that size, per size. (Building one costs far more: see
  ``import_s`` in ``bench store``.)
* **cycle_p99_ms** — per size, the 99th percentile of every cycle's wall time; the
  producer writes its snapshots in the background (every ``SNAPSHOT_EVERY`` versions), so
  many cycles run while one is written; **cycles_during_snapshot** counts them.
* **snapshot_write_s** — per size, after the cycles: writing the snapshot of the layered
  state by merging columns (:mod:`nearstate.merge`), storing it and reading it back with
  every checksum verified; **snapshot_extra_memory_ratio** — the peak bytes allocated
  meanwhile (tracemalloc, numpy's arrays included) / the state's bytes.
* **lookup_ns** — per size, a key lookup plus one field on the held state (median of
  5 rounds of 20,000 random keys); **lookup_ratio** = largest size / smallest.

``data``: ``tudum`` (generated stories, ~650 bytes a record as stored) or ``catalog``
(the ``bench data catalog`` products, ~275 bytes a record as JSON). Base snapshots are
built a part at a time and joined by columns (as a streamed import does), so memory
follows the snapshot, not the records.
"""

from __future__ import annotations

import gc
import itertools
import os
import random
import shutil
import statistics
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec

from nearstate.backends.memory import MemoryAnnouncer, MemoryBlobStore
from nearstate.bench.datasets import catalog_batches, story_batches
from nearstate.bench.stats import percentile
from nearstate.blob import encode_blob
from nearstate.consumer import Consumer
from nearstate.dataset import LocalDataset
from nearstate.infer import infer_schema
from nearstate.jsonl import join_staged, stage_parts
from nearstate.merge import Spill, merged_snapshot
from nearstate.producer import Incremental
from nearstate.versions import open_snapshot, record_name, snapshot_name

SIZES = (100_000, 1_000_000, 3_000_000)
CHANGE = 1_000
CYCLES = 7
SEED = 7
SNAPSHOT_EVERY = 10
PART = 200_000  # records staged and encoded at a time when a base is built
TARGETS = {
    "delta_apply_ms_1m": 50.0, "incremental_cycle_ms": 500.0, "peak_ratio": 1.5,
    "delta_apply_ms_flat": 20.0, "cycle_p99_ms_10m": 300.0, "snapshot_write_s_10m": 20.0,
    "snapshot_extra_memory_ratio": 1.2, "lookup_ratio": 1.3,
}  # fmt: skip
DATA = {"tudum": ("Story", "id"), "catalog": ("Product", "id")}


def run_versions_bench(
    *,
    sizes: tuple[int, ...] = SIZES,
    change: int = CHANGE,
    cycles: int = CYCLES,
    workdir: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
    data: str = "tudum",
) -> dict[str, Any]:
    if data not in DATA:
        raise ValueError(f"data must be one of {', '.join(DATA)}, got {data!r}")
    type_name = DATA[data][0]
    say = progress or (lambda _m: None)
    work = Path(workdir or Path(os.environ.get("TMPDIR", "/tmp")) / "nearstate-bench-versions")
    work.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {
        "delta_apply_ms": {},
        "incremental_cycle_ms": None,
        "refresh_peak_memory_ratio": None,
        "incremental_cycle_ms_by_size": {},
        "snapshot_load_ms": {},
        "delta_bytes": {},
        "state_bytes": {},
        "cycle_p99_ms": {},
        "cycles_during_snapshot": {},
        "snapshot_write_s": {},
        "snapshot_extra_memory_ratio": {},
        "lookup_ns": {},
        "lookup_ratio": None,
        "change": change,
        "cycles": cycles,
        "data": data,
        "snapshot_every": SNAPSHOT_EVERY,
        "targets": TARGETS,
    }
    cycle_size = max((n for n in sizes if n <= 1_000_000), default=min(sizes))
    for n in sizes:
        base = _base(work, n, say, data)
        run = work / f"run-{data}-{n}"
        shutil.rmtree(run, ignore_errors=True)
        _link_base(base, run)
        ds = LocalDataset(run)
        rng = random.Random(SEED + n)
        applies, cycle_ms, sizes_b = [], [], []
        during = 0
        with ds.producer(snapshot_every=SNAPSHOT_EVERY, retain_snapshots=None,
                         background_snapshots=True) as prod:  # fmt: skip
            cons = ds.consumer()
            cons.refresh()
            out["state_bytes"][str(n)] = cons.state.nbytes
            say(f"{n:,} records: lookups")
            out["lookup_ns"][str(n)] = _lookup_ns(cons.state[type_name], n, data)
            next_id = n + 1
            for c in range(cycles):
                say(f"{n:,} records: cycle {c + 1}/{cycles}")
                ups, dels, next_id = _change(cons.state, rng, n, change, next_id, data)

                def mutate(inc: Incremental, ups: list = ups, dels: list = dels) -> None:
                    for r in ups:
                        inc.upsert(type_name, r)
                    for k in dels:
                        inc.delete(type_name, k)

                gc.collect()
                writing = prod.writing_snapshot is not None
                t0 = time.perf_counter()
                res = prod.run_incremental(mutate)
                cycle_ms.append((time.perf_counter() - t0) * 1000)
                during += writing or prod.writing_snapshot is not None
                assert res.version is not None
                sizes_b.append(sum(res.blob_bytes.values()) // 2)
                t0 = time.perf_counter()
                cons.move_to(res.version)
                applies.append((time.perf_counter() - t0) * 1000)
                ch = res.changes[type_name] if res.changes else None
                assert ch is not None and len(ch) == change, ch
            out["cycle_p99_ms"][str(n)] = round(percentile(cycle_ms, 0.99), 1)
            out["cycles_during_snapshot"][str(n)] = during
            say(f"{n:,} records: waiting for the background snapshot")
            prod.wait_snapshot()
            say(f"{n:,} records: writing a snapshot by merging columns")
            secs, ratio = _snapshot_write(ds, prod.state)
            out["snapshot_write_s"][str(n)] = secs
            out["snapshot_extra_memory_ratio"][str(n)] = ratio
            out["delta_apply_ms"][str(n)] = round(statistics.median(applies), 2)
            out["incremental_cycle_ms_by_size"][str(n)] = round(statistics.median(cycle_ms), 1)
            out["delta_bytes"][str(n)] = int(statistics.median(sizes_b))
            if n == cycle_size:
                out["incremental_cycle_ms"] = out["incremental_cycle_ms_by_size"][str(n)]
                say(f"{n:,} records: memory during a refresh")
                out["refresh_peak_memory_ratio"] = _peak_ratio(ds, cons.state.version)
            loads = []
            for _ in range(5):
                t0 = time.perf_counter()
                ds.load(1)
                loads.append((time.perf_counter() - t0) * 1000)
            out["snapshot_load_ms"][str(n)] = round(statistics.median(loads), 2)
            del cons
        shutil.rmtree(run, ignore_errors=True)
    lk = out["lookup_ns"]
    if len(lk) > 1:
        out["lookup_ratio"] = round(lk[str(max(sizes))] / lk[str(min(sizes))], 3)
    return out


def _lookup_ns(ts: Any, n: int, data: str) -> float:
    rng = random.Random(SEED)
    keys = [_key(rng.randrange(1, n + 1), data) for _ in range(20_000)]
    field = "title"
    get = ts.get
    rounds = []
    for _ in range(5):
        t0 = time.perf_counter_ns()
        for k in keys:
            getattr(get(k), field)
        rounds.append((time.perf_counter_ns() - t0) / len(keys))
    return round(statistics.median(rounds), 1)


def _key(i: int, data: str) -> Any:
    return f"s{i:07d}" if data == "tudum" else i


def _snapshot_write(ds: LocalDataset, state: Any) -> tuple[float, float]:
    """Seconds to merge, store and verify a snapshot of ``state``; extra memory ratio."""

    def write() -> None:  # stored as a version no reader asks for, then removed
        with Spill() as spill:  # as the producer's background snapshots do
            header, sections = merged_snapshot(state, dataset="bench", version=10**9, tags={},
                                               created=0.0, spill=spill)  # fmt: skip
            ds.blobs.put(snapshot_name(10**9), encode_blob(header, sections))
            del sections
        open_snapshot(ds.blobs, 10**9, verify=True)
        ds.blobs.delete(snapshot_name(10**9))

    gc.collect()
    t0 = time.perf_counter()
    write()
    secs = time.perf_counter() - t0
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        write()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return round(secs, 4), round((peak - before) / state.nbytes, 3)


def _base(work: Path, n: int, say: Callable[[str], None], data: str = "tudum") -> Path:
    """A dataset directory holding version 1: ``n`` records (built once, then reused),
    staged and encoded a part at a time, the parts joined by columns."""
    d = work / (f"base-{n}-seed{SEED}" if data == "tudum" else f"base-{data}-{n}-seed{SEED}")
    if (d / "announced.json").is_file():
        return d
    shutil.rmtree(d, ignore_errors=True)
    type_name, key = DATA[data]
    gc_on = gc.isenabled()
    gc.disable()
    try:
        batches = (
            story_batches(n, SEED, 50_000)
            if data == "tudum"
            else catalog_batches(n, SEED, rows=50_000)
        )
        first = msgspec.to_builtins(next(batches))
        schema = infer_schema(first[:20_000], type_name=type_name, key=key)

        def records() -> Iterator[tuple[int, Any]]:
            done = 0
            for recs in itertools.chain([first], map(msgspec.to_builtins, batches)):
                yield from enumerate(recs, done + 1)
                done += len(recs)
                say(f"{n:,} records: staging the snapshot ({done:,})")

        # as a streamed import stages and joins its parts (nearstate.jsonl)
        parts = stage_parts(records(), schema, type_name, (key,), {}, None, PART)
        say(f"{n:,} records: joining {len(parts)} parts")
        final, types_meta, sections = join_staged(schema, type_name, parts)
        tmp = d.with_name(d.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        ds = LocalDataset(tmp)
        with ds.producer(retain_snapshots=None) as p:
            p.run_built(final, types_meta, sections)
        del sections
        os.replace(tmp, d)
    finally:
        if gc_on:
            gc.enable()
        gc.collect()
    return d


def _link_base(base: Path, run: Path) -> None:
    """A fresh dataset directory sharing version 1's files with the cached base."""
    (run / "snapshots").mkdir(parents=True)
    (run / "versions").mkdir()
    for name in (snapshot_name(1), record_name(1)):
        os.link(base / name, run / name)
    shutil.copy(base / "announced.json", run / "announced.json")


def _change(
    state: Any, rng: random.Random, n: int, change: int, next_id: int, data: str = "tudum"
) -> tuple[list[dict[str, Any]], list[Any], int]:
    ts = state[DATA[data][0]]
    n_add = n_del = max(1, change // 20)
    n_mod = change - n_add - n_del
    picked: set[Any] = set()
    while len(picked) < n_mod + n_del:
        k = _key(rng.randrange(1, n + 1), data)
        if k not in picked and k in ts:
            picked.add(k)
    keys = sorted(picked)
    rng.shuffle(keys)
    mods, dels = keys[:n_mod], keys[n_mod:]
    ups = []
    for k in mods:
        r = ts.get(k).to_dict()
        r["title"] = f"{r['title']} (updated {rng.randrange(10**6)})"
        if data == "tudum":
            r["score"] = round(rng.random(), 4)
        else:
            r["price"] = round(rng.random() * 100, 2)
        ups.append(r)
    for i in range(n_add):
        r = ts.get(mods[i]).to_dict()
        r["id"] = _key(next_id + i, data)
        if data == "tudum":
            r["slug"] = f"{r['slug']}-{next_id + i}"
        else:
            r["sku"] = f"{r['sku']}-{next_id + i}"
        ups.append(r)
    return ups, dels, next_id + n_add


def _peak_ratio(ds: LocalDataset, version: int) -> float:
    """Apply the last delta to the previous version held in heap memory; see module doc."""
    mem = MemoryBlobStore()
    for name in ds.blobs.list():
        if name.startswith(("snapshots/", "deltas/", "versions/")):
            mem.put(name, [ds.blobs.get(name)])
    ann = MemoryAnnouncer()
    cons = Consumer(mem, ann)
    cons.move_to(version - 1)
    state_bytes = cons.state.nbytes
    delta_bytes = len(mem.get(f"deltas/{version - 1:020d}-{version:020d}.blob"))
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        cons.move_to(version)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return round((state_bytes + delta_bytes + (peak - before)) / state_bytes, 4)


def format_versions_bench(r: dict[str, Any]) -> str:
    lines = [
        f"change per cycle: {r['change']:,} records; median of {r['cycles']} cycles",
        "",
        f"{'records':>10}  {'delta apply':>12}  {'full load (peer)':>16}  {'cycle':>10}  "
        f"{'delta size':>10}",
    ]
    for n, ms in r["delta_apply_ms"].items():
        lines.append(
            f"{int(n):>10,}  {ms:>9.2f} ms  {r['snapshot_load_ms'][n]:>13.2f} ms  "
            f"{r['incremental_cycle_ms_by_size'][n]:>7.1f} ms  "
            f"{r['delta_bytes'][n] / 1e3:>7.0f} kB"
        )
    lines += [
        "",
        f"incremental cycle (1M): {r['incremental_cycle_ms']} ms "
        f"(target <= {TARGETS['incremental_cycle_ms']:.0f})",
        f"peak memory during a refresh: {r['refresh_peak_memory_ratio']} x the state "
        f"(target < {TARGETS['peak_ratio']})",
        "",
        f"{'records':>10}  {'cycle p99':>10}  {'during snapshot':>15}  {'snapshot write':>14}  "
        f"{'extra memory':>12}  {'lookup':>9}",
    ]
    for n in r["cycle_p99_ms"]:
        lines.append(
            f"{int(n):>10,}  {r['cycle_p99_ms'][n]:>7.1f} ms  "
            f"{r['cycles_during_snapshot'][n]:>8} cycles  {r['snapshot_write_s'][n]:>12.2f} s  "
            f"{r['snapshot_extra_memory_ratio'][n]:>10.3f} x  {r['lookup_ns'][n]:>6.0f} ns"
        )
    if r.get("lookup_ratio") is not None:
        lines.append(f"lookup, largest / smallest state: {r['lookup_ratio']} x "
                     f"(target <= {TARGETS['lookup_ratio']})")  # fmt: skip
    return "\n".join(lines)
