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
"""

from __future__ import annotations

import gc
import os
import random
import shutil
import statistics
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from nearstate.backends.memory import MemoryAnnouncer, MemoryBlobStore
from nearstate.bench.datasets import _stories
from nearstate.consumer import Consumer
from nearstate.dataset import LocalDataset
from nearstate.infer import infer_schema
from nearstate.producer import Incremental
from nearstate.versions import record_name, snapshot_name
from nearstate.write_state import WriteState

SIZES = (100_000, 1_000_000, 3_000_000)
CHANGE = 1_000
CYCLES = 7
SEED = 7
TARGETS = {"delta_apply_ms_1m": 50.0, "incremental_cycle_ms": 500.0, "peak_ratio": 1.5}


def run_versions_bench(
    *,
    sizes: tuple[int, ...] = SIZES,
    change: int = CHANGE,
    cycles: int = CYCLES,
    workdir: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
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
        "change": change,
        "cycles": cycles,
        "targets": TARGETS,
    }
    cycle_size = max((n for n in sizes if n <= 1_000_000), default=min(sizes))
    for n in sizes:
        base = _base(work, n, say)
        run = work / f"run-{n}"
        shutil.rmtree(run, ignore_errors=True)
        _link_base(base, run)
        ds = LocalDataset(run)
        rng = random.Random(SEED + n)
        applies, cycle_ms, sizes_b = [], [], []
        with ds.producer(snapshot_every=10**9, retain_snapshots=None) as prod:
            cons = ds.consumer()
            cons.refresh()
            out["state_bytes"][str(n)] = cons.state.nbytes
            next_id = n + 1
            for c in range(cycles):
                say(f"{n:,} records: cycle {c + 1}/{cycles}")
                ups, dels, next_id = _change(cons.state, rng, n, change, next_id)

                def mutate(inc: Incremental, ups: list = ups, dels: list = dels) -> None:
                    for r in ups:
                        inc.upsert("Story", r)
                    for k in dels:
                        inc.delete("Story", k)

                gc.collect()
                t0 = time.perf_counter()
                res = prod.run_incremental(mutate)
                cycle_ms.append((time.perf_counter() - t0) * 1000)
                assert res.version is not None
                sizes_b.append(sum(res.blob_bytes.values()) // 2)
                t0 = time.perf_counter()
                cons.move_to(res.version)
                applies.append((time.perf_counter() - t0) * 1000)
                ch = res.changes["Story"] if res.changes else None
                assert ch is not None and len(ch) == change, ch
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
        shutil.rmtree(run, ignore_errors=True)
    return out


def _base(work: Path, n: int, say: Callable[[str], None]) -> Path:
    """A dataset directory holding version 1: ``n`` stories (built once, then reused)."""
    d = work / f"base-{n}-seed{SEED}"
    if (d / "announced.json").is_file():
        return d
    shutil.rmtree(d, ignore_errors=True)
    gc_on = gc.isenabled()
    gc.disable()
    try:
        ws: WriteState | None = None
        done = 0
        for batch in _stories(n, SEED, 50_000):
            recs = msgspec.to_builtins(batch)
            if ws is None:
                ws = WriteState(infer_schema(recs[:20_000], type_name="Story", key="id"))
            ws.add_many("Story", recs)
            done += len(recs)
            say(f"{n:,} records: staging the snapshot ({done:,})")
        assert ws is not None
        say(f"{n:,} records: encoding the snapshot")
        tmp = d.with_name(d.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        ds = LocalDataset(tmp)
        with ds.producer(retain_snapshots=None) as p:
            p.run_cycle(ws, snapshot=True)
        del ws
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
    state: Any, rng: random.Random, n: int, change: int, next_id: int
) -> tuple[list[dict[str, Any]], list[str], int]:
    ts = state["Story"]
    n_add = n_del = max(1, change // 20)
    n_mod = change - n_add - n_del
    picked: set[str] = set()
    while len(picked) < n_mod + n_del:
        k = f"s{rng.randrange(1, n + 1):07d}"
        if k not in picked and k in ts:
            picked.add(k)
    keys = sorted(picked)
    rng.shuffle(keys)
    mods, dels = keys[:n_mod], keys[n_mod:]
    ups = []
    for k in mods:
        r = ts.get(k).to_dict()
        r["title"] = f"{r['title']} (updated {rng.randrange(10**6)})"
        r["score"] = round(rng.random(), 4)
        ups.append(r)
    for i in range(n_add):
        r = ts.get(mods[i]).to_dict()
        r["id"] = f"s{next_id + i:07d}"
        r["slug"] = f"{r['slug']}-{next_id + i}"
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
    ]
    return "\n".join(lines)
