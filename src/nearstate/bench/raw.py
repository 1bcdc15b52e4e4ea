"""``nearstate bench raw``: the write path's own figures, in one run.

* ``visible_ms`` — a write committed in this process until a consumer in *another*
  process shows it (its listener runs after the new state is swapped in), while a third
  process folds the Log into new versions every ``compact_every`` seconds (so the figure
  shows the latency does not wait for, or suffer from, producer cycles). The clock is
  CLOCK_MONOTONIC, which every process on a Linux host shares.
* ``strong_overhead_ms`` — what a strong read (``consumer.sync()``) costs when the
  consumer is already caught up: one question to the Log about its head.
* ``commits_per_s`` — single-record transactions, one after another, each durable
  (fsynced) before the next starts.
* ``batched_mutations_per_s`` — upserts committed in transactions of ``batch``.

Alongside, the same measures on what a Python user might pick instead: SQLite itself (the
floor under our Log: a plain durable insert) and Redis (SET + PUBLISH to a subscriber;
note that Redis acknowledges before anything reaches the disk unless configured with
``appendfsync always``).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..dataset import LocalDataset

SEED_RECORDS = 10_000


def _pct(xs: list[float]) -> dict[str, float]:
    a = np.asarray(xs, dtype=float)
    if not len(a):
        return {"p50": float("nan"), "p99": float("nan"), "max": float("nan"), "n": 0}
    return {
        "p50": round(float(np.percentile(a, 50)), 3),
        "p99": round(float(np.percentile(a, 99)), 3),
        "max": round(float(a.max()), 3),
        "n": len(a),
    }


def _story(i: int) -> dict[str, Any]:
    return {
        "id": f"s{i}",
        "title": f"Behind the scenes, part {i}",
        "body": ("An editor's long read about a film. " * 9)[: 200 + i % 100],
        "tags": ["film", f"tag{i % 20}"],
        "rank": i,
    }


def _say(progress: Any, text: str) -> None:
    if progress is not None:
        progress.print(text, highlight=False)


def run_raw(
    *,
    probes: int = 1000,
    commits: int = 10_000,
    batch: int = 1000,
    batches: int = 100,
    peers: bool = True,
    workdir: Path | None = None,
    progress: Any = None,
    compact_every: float = 0.5,
) -> dict[str, Any]:
    root = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="nearstate-bench-raw-"))
    d = root / "ds"
    shutil.rmtree(d, ignore_errors=True)
    try:
        ds = LocalDataset(d)
        w = ds.writer()
        _say(progress, f"Seeding {SEED_RECORDS:,} stories and a first version in {d} ...")
        for start in range(0, SEED_RECORDS, 1000):
            with w.transaction() as tx:
                for i in range(start, min(start + 1000, SEED_RECORDS)):
                    tx.upsert("Story", _story(i))
        ds.compact()
        w.upsert("Probe", {"id": -1, "sent": 0})  # the type exists before timing starts

        _say(progress, f"Timing {probes:,} writes until visible in another process ...")
        commit_ms: list[float] = []
        visible = _visible(ds, w, probes, compact_every, commit_ms)

        _say(progress, "Timing strong reads on a caught-up consumer ...")
        c = ds.consumer().start()
        c.sync()
        strong, eventual = [], []
        for _ in range(5000):
            t0 = time.perf_counter_ns()
            c.sync()
            t1 = time.perf_counter_ns()
            c.state["Story"].get("s1")
            t2 = time.perf_counter_ns()
            strong.append((t1 - t0) / 1e6)
            eventual.append((t2 - t1) / 1e3)
        c.stop()

        _say(progress, f"Committing {commits:,} single-record transactions ...")
        t0 = time.perf_counter()
        for i in range(commits):
            w.upsert("Story", _story(i % SEED_RECORDS))
        commit_rate = commits / (time.perf_counter() - t0)

        _say(progress, f"Committing {batches} transactions of {batch:,} upserts ...")
        t0 = time.perf_counter()
        for b in range(batches):
            with w.transaction() as tx:
                for j in range(batch):
                    tx.upsert("Story", _story((b * batch + j) % SEED_RECORDS))
        batched_rate = batches * batch / (time.perf_counter() - t0)

        res: dict[str, Any] = {
            "visible_ms": _pct(visible),
            "strong_overhead_ms": _pct(strong),
            "commits_per_s": round(commit_rate),
            "batched_mutations_per_s": round(batched_rate),
            "eventual_lookup_us": _pct(eventual),
            "probe_commit_ms": _pct(commit_ms),
            "config": {
                "probes": probes,
                "commits": commits,
                "batch": batch,
                "batches": batches,
                "seed_records": SEED_RECORDS,
                "log_poll_ms": ds.log.poll_interval * 1e3,
                "cpus": os.cpu_count(),
                "compact_every_s": compact_every,
            },
        }
        if peers:
            res["peers"] = {"sqlite": _sqlite_peer(root, commits, batch, batches)}
            _say(progress, "Running the same on Redis ...")
            res["peers"]["redis"] = _redis_peer(probes, commits, batch, batches)
        return res
    finally:
        if workdir is None:
            shutil.rmtree(root, ignore_errors=True)


# -- write -> visible in another process ----------------------------------------------------


def _visible(
    ds: LocalDataset, w: Any, probes: int, compact_every: float, commit_ms: list[float]
) -> list[float]:
    """Probe writes, timed until a consumer in another process shows them, while (with
    ``compact_every``) a producer process folds the Log into versions meanwhile."""
    compactor = None
    if compact_every > 0:
        compactor = subprocess.Popen(
            [sys.executable, "-c", "from nearstate.cli import main; main()", "compact",
             str(ds.path), "--follow", "--interval", str(compact_every)],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
    child = subprocess.Popen(
        [sys.executable, "-m", "nearstate.bench.raw", "consumer", str(ds.path), str(probes)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert child.stdout is not None and child.stdin is not None
        if child.stdout.readline().strip() != "ready":
            raise RuntimeError("the consumer process did not start")
        rnd = random.Random(0)
        for i in range(probes):
            sent = time.monotonic_ns()
            w.upsert("Probe", {"id": i, "sent": sent})
            commit_ms.append((time.monotonic_ns() - sent) / 1e6)
            time.sleep(rnd.uniform(0.002, 0.008))
        child.stdin.write("done\n")
        child.stdin.flush()
        line = child.stdout.readline()
        child.wait(timeout=60)
        return json.loads(line)["visible_ms"]
    finally:
        for p in (child, compactor):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()


def _consumer_main(directory: str, probes: int) -> None:
    import threading

    ds = LocalDataset(directory)
    c = ds.consumer()
    seen: dict[int, float] = {}
    done = threading.Event()

    def on_refresh(ev: Any) -> None:
        now = time.monotonic_ns()
        ch = (ev.changes or {}).get("Probe")
        if ch is None:
            return
        ts = c.state["Probe"]
        for k in (*ch.added, *ch.modified):
            if k >= 0 and k not in seen:
                seen[k] = (now - ts.get(k).sent) / 1e6
        if len(seen) >= probes:
            done.set()

    c.add_listener(on_refresh)
    c.start()
    print("ready", flush=True)
    sys.stdin.readline()
    done.wait(30)
    c.stop()
    print(json.dumps({"visible_ms": [seen[k] for k in sorted(seen)]}), flush=True)


# -- peers ----------------------------------------------------------------------------------


def _sqlite_peer(root: Path, commits: int, batch: int, batches: int) -> dict[str, Any]:
    """A plain durable SQLite table (WAL, synchronous=FULL): the floor under our Log."""
    p = root / "peer.sqlite"
    conn = sqlite3.connect(p, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE kv(k TEXT PRIMARY KEY, v BLOB)")
    bodies = [json.dumps(_story(i)).encode() for i in range(SEED_RECORDS)]
    t0 = time.perf_counter()
    for i in range(commits):
        k = i % SEED_RECORDS
        conn.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (f"s{k}", bodies[k]))
    single = commits / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for b in range(batches):
        conn.execute("BEGIN")
        conn.executemany("INSERT OR REPLACE INTO kv VALUES (?, ?)", [
            (f"s{(b * batch + j) % SEED_RECORDS}", bodies[(b * batch + j) % SEED_RECORDS])
            for j in range(batch)
        ])  # fmt: skip
        conn.execute("COMMIT")
    batched = batches * batch / (time.perf_counter() - t0)
    conn.close()
    return {"commits_per_s": round(single), "batched_mutations_per_s": round(batched)}


def _redis_peer(probes: int, commits: int, batch: int, batches: int) -> dict[str, Any]:
    try:
        import redis
    except ImportError:
        return {"skipped": "the redis package is not installed (pip install nearstate[bench])"}
    url = os.environ.get("NEARSTATE_REDIS_URL", "redis://127.0.0.1:6379/15")
    r = redis.Redis.from_url(url)
    try:
        r.ping()
    except redis.RedisError as e:
        return {"skipped": f"no Redis at {url} ({e})"}
    fsync = r.config_get("appendfsync").get("appendfsync", "?")
    aof = r.config_get("appendonly").get("appendonly", "?")
    child = subprocess.Popen(
        [sys.executable, "-m", "nearstate.bench.raw", "redis-subscriber", url, str(probes)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert child.stdout is not None and child.stdin is not None
        if child.stdout.readline().strip() != "ready":
            raise RuntimeError("the Redis subscriber did not start")
        rnd = random.Random(0)
        for i in range(probes):
            r.set(f"nearstate-bench:probe:{i}", str(time.monotonic_ns()))
            r.publish("nearstate-bench", str(i))
            time.sleep(rnd.uniform(0.002, 0.008))
        child.stdin.write("done\n")
        child.stdin.flush()
        visible = json.loads(child.stdout.readline())["visible_ms"]
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    bodies = [json.dumps(_story(i)) for i in range(SEED_RECORDS)]
    t0 = time.perf_counter()
    for i in range(commits):
        r.set(f"nearstate-bench:s{i % SEED_RECORDS}", bodies[i % SEED_RECORDS])
    single = commits / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for b in range(batches):
        pipe = r.pipeline(transaction=True)
        for j in range(batch):
            k = (b * batch + j) % SEED_RECORDS
            pipe.set(f"nearstate-bench:s{k}", bodies[k])
        pipe.execute()
    batched = batches * batch / (time.perf_counter() - t0)
    for key in r.scan_iter("nearstate-bench:*", count=1000):
        r.delete(key)
    return {
        "visible_ms": _pct(visible),
        "commits_per_s": round(single),
        "batched_mutations_per_s": round(batched),
        "durability": f"appendonly={aof}, appendfsync={fsync}",
    }


def _redis_subscriber_main(url: str, probes: int) -> None:
    import threading

    import redis

    r = redis.Redis.from_url(url)
    ps = r.pubsub()
    ps.subscribe("nearstate-bench")
    ps.get_message(timeout=5)  # the subscribe confirmation
    seen: list[float] = []
    stop = threading.Event()

    def listen() -> None:
        while not stop.is_set() and len(seen) < probes:
            m = ps.get_message(timeout=0.5)
            if m is None or m["type"] != "message":
                continue
            sent = int(r.get(f"nearstate-bench:probe:{int(m['data'])}"))
            seen.append((time.monotonic_ns() - sent) / 1e6)

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    print("ready", flush=True)
    sys.stdin.readline()
    t.join(30)
    stop.set()
    print(json.dumps({"visible_ms": seen}), flush=True)


def describe(res: dict[str, Any]) -> str:
    """The figures in plain words, against the issue's targets."""
    v, s = res["visible_ms"], res["strong_overhead_ms"]

    def ok(good: bool) -> str:
        return "meets" if good else "MISSES"

    lines = [
        f"write -> visible in another process: p50 {v['p50']:.2f} ms, p99 {v['p99']:.2f} ms "
        f"({ok(v['p50'] <= 5 and v['p99'] <= 20)} p50 <= 5 ms, p99 <= 20 ms)",
        f"strong-read overhead, caught up: p50 {s['p50']:.3f} ms, p99 {s['p99']:.3f} ms "
        f"({ok(s['p99'] <= 5)} p99 <= 5 ms)",
        f"single-record commits: {res['commits_per_s']:,}/s ({ok(res['commits_per_s'] >= 5000)} "
        ">= 5k/s)",
        f"batched mutations: {res['batched_mutations_per_s']:,}/s "
        f"({ok(res['batched_mutations_per_s'] >= 50_000)} >= 50k/s)",
    ]
    for name, p in res.get("peers", {}).items():
        if "skipped" in p:
            lines.append(f"{name}: skipped ({p['skipped']})")
            continue
        vis = p.get("visible_ms")
        extra = f"visible p50 {vis['p50']:.2f} / p99 {vis['p99']:.2f} ms, " if vis else ""
        lines.append(f"{name}: {extra}{p['commits_per_s']:,} commits/s, "
                     f"{p['batched_mutations_per_s']:,} batched/s"
                     + (f" ({p['durability']})" if "durability" in p else ""))  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1] == "consumer":
        _consumer_main(sys.argv[2], int(sys.argv[3]))
    elif sys.argv[1] == "redis-subscriber":
        _redis_subscriber_main(sys.argv[2], int(sys.argv[3]))
