"""``nearstate bench raw``: the write path's own figures, in one run.

* ``visible_ms`` — a write committed in this process until a consumer in *another*
  process shows it (its listener runs after the new state is swapped in), while a third
  process folds the Log into new versions every ``compact_every`` seconds (so the figure
  shows the latency does not wait for, or suffer from, producer cycles). The clock is
  CLOCK_MONOTONIC, which every process on a Linux host shares.
* ``reader_cpu_ms_per_commit`` — per consumer process, its CPU time (every thread:
  following the Log and the versions, listeners) while the probes ran, per probe.
* ``consumer_wakeups`` — per consumer process on the local backend, its Log's
  ``wake_stats()``: waits ended by a commit's wake-up (``woken``) and commits found only
  on a recheck (``late``: a wake-up that never came).
* ``strong_overhead_ms`` — what a strong read (``consumer.sync()``) costs when the
  consumer is already caught up: one question to the Log about its head.
* ``commits_per_s`` — single-record transactions, one after another, each durable
  (fsynced) before the next starts.
* ``batched_mutations_per_s`` — upserts committed in transactions of ``batch``.

``--backend nats`` runs the same on a NATS JetStream dataset (``nats://.../bench-raw-PID``,
dropped afterwards) with four consumer processes: ``visible_ms`` is then, per probe, the
time until the *slowest* of them shows it. It adds ``snapshot``: a snapshot of
``snapshot_mb`` MB (incompressible records) published (blob put + announce) and fetched (a
blob get in another process, every byte read) through the backend, and the same through a
local directory alongside.

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

from ..dataset import Dataset, LocalDataset, open_dataset
from .stats import percentiles

SEED_RECORDS = 10_000


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
    backend: str = "local",
    nats_url: str | None = None,
    consumers: int | None = None,
    snapshot_mb: int = 200,
    replicas: int = 1,
    writer_threads: int = 8,
) -> dict[str, Any]:
    root = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="nearstate-bench-raw-"))
    d = root / "ds"
    shutil.rmtree(d, ignore_errors=True)
    if consumers is None:
        consumers = 4
    ds: Dataset
    if backend == "nats":
        base = nats_url or os.environ.get("NEARSTATE_NATS_URL") or "nats://127.0.0.1:4222"
        target = f"{base.rstrip('/')}/bench-raw-{os.getpid()}"
        if replicas > 1:  # the streams this run creates, on a cluster
            target += f"?replicas={replicas}"
        ds = open_dataset(target)
        _drop_nats(ds)  # a leftover of an earlier run under this pid
        ds = open_dataset(target)
    elif backend == "local":
        target = str(d)
        ds = LocalDataset(d)
    else:
        raise ValueError(f"unknown backend {backend!r} (local or nats)")
    try:
        w = ds.writer()
        _say(progress, f"Seeding {SEED_RECORDS:,} stories and a first version in {target} ...")
        for start in range(0, SEED_RECORDS, 1000):
            with w.transaction() as tx:
                for i in range(start, min(start + 1000, SEED_RECORDS)):
                    tx.upsert("Story", _story(i))
        ds.compact()
        w.upsert("Probe", {"id": -1, "sent": 0})  # the type exists before timing starts

        _say(progress, f"Timing {probes:,} writes until visible in {consumers} other "
                       f"process{'es' if consumers != 1 else ''} ...")  # fmt: skip
        commit_ms: list[float] = []
        cpu_ms: list[float] = []
        wakeups: list[dict[str, int]] = []
        per_consumer = _visible(target, w, probes, compact_every, commit_ms, consumers, cpu_ms,
                                wakeups)  # fmt: skip
        # a probe is visible on all consumers when the slowest one shows it
        visible = [max(ms) for ms in zip(*per_consumer, strict=True)]

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

        _say(progress, f"Committing {commits:,} single-record transactions from "
                       f"{writer_threads} threads at once ...")  # fmt: skip
        stats0 = _commit_stats(ds)
        threaded_rate = _threaded(
            lambda i: w.upsert("Story", _story(i % SEED_RECORDS)), writer_threads, commits
        )
        stats1 = _commit_stats(ds)

        _say(progress, f"Committing {batches} transactions of {batch:,} upserts ...")
        t0 = time.perf_counter()
        for b in range(batches):
            with w.transaction() as tx:
                for j in range(batch):
                    tx.upsert("Story", _story((b * batch + j) % SEED_RECORDS))
        batched_rate = batches * batch / (time.perf_counter() - t0)

        res: dict[str, Any] = {
            "backend": backend,
            "visible_ms": percentiles(visible, digits=3),
            "strong_overhead_ms": percentiles(strong, digits=3),
            "commits_per_s": round(commit_rate),
            # the same from writer_threads threads sharing the writer (group commit)
            "threaded_commits_per_s": round(threaded_rate),
            "threaded_commits_per_fsync": _per_fsync(stats0, stats1),
            "batched_mutations_per_s": round(batched_rate),
            "eventual_lookup_us": percentiles(eventual, digits=3),
            "probe_commit_ms": percentiles(commit_ms, digits=3),
            "visible_ms_per_consumer": [percentiles(ms, digits=3) for ms in per_consumer],
            "reader_cpu_ms_per_commit": [round(x, 4) for x in cpu_ms],
            # per consumer (local backend): waits ended by a commit's wake-up, and commits
            # found only on a recheck (their wake-up lost): LocalLog.wake_stats()
            "consumer_wakeups": wakeups,
            "config": {
                "probes": probes,
                "commits": commits,
                "batch": batch,
                "batches": batches,
                "seed_records": SEED_RECORDS,
                "consumers": consumers,
                "writer_threads": writer_threads,
                "dataset": target,
                "cpus": os.cpu_count(),
                "compact_every_s": compact_every,
                "replicas": replicas,
            },
        }
        if backend == "local":
            res["config"]["log_poll_ms"] = ds.log.poll_interval * 1e3
        if backend == "nats" and snapshot_mb > 0:
            _say(progress, f"Publishing and fetching a {snapshot_mb} MB snapshot ...")
            res["snapshot"] = _snapshot(ds, target, root, snapshot_mb)
        if peers:
            res["peers"] = {"sqlite": _sqlite_peer(root, commits, batch, batches,
                                                   writer_threads)}  # fmt: skip
            _say(progress, "Running the same on Redis ...")
            res["peers"]["redis"] = _redis_peer(probes, commits, batch, batches)
        return res
    finally:
        if backend == "nats":
            _drop_nats(ds)
        if workdir is None:
            shutil.rmtree(root, ignore_errors=True)


def _commit_stats(ds: Any) -> dict[str, int] | None:
    """The Log handle's group-commit counters (the local backend's), else None."""
    stats = getattr(ds.log, "commit_stats", None)
    return stats() if stats is not None else None


def _per_fsync(before: dict[str, int] | None, after: dict[str, int] | None) -> float | None:
    """Entries per SQLite transaction (each one fsync) between two ``_commit_stats``."""
    if before is None or after is None:
        return None
    tx = after["transactions"] - before["transactions"]
    return round((after["entries"] - before["entries"]) / max(1, tx), 2)


def _threaded(commit: Any, threads: int, total: int) -> float:
    """``total`` calls of ``commit(i)`` split over ``threads`` threads started together;
    calls per second of wall time."""
    import threading

    start = threading.Barrier(threads + 1)
    errors: list[BaseException] = []

    def run(t: int) -> None:
        start.wait()
        try:
            for i in range(t, total, threads):
                commit(i)
        except BaseException as e:  # reported below, not lost in the thread
            errors.append(e)

    pool = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for t in pool:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in pool:
        t.join()
    rate = total / (time.perf_counter() - t0)
    if errors:
        raise errors[0]
    return rate


def _drop_nats(ds: Any) -> None:
    """Delete a benchmark dataset from the server (best effort)."""
    import contextlib

    with contextlib.suppress(Exception):
        ds.delete()


# -- a big snapshot through the backend ------------------------------------------------------


def _snapshot(ds: Any, target: str, root: Path, mb: int) -> dict[str, Any]:
    """Encode a real snapshot of about ``mb`` MB (random bytes, so it does not compress),
    then time publishing it (blob put + announce) and fetching it in another process
    (blob get, every byte read), through the dataset's backend and a local directory."""
    from ..schema import Field, FieldType, Schema, TypeDef
    from ..write_state import WriteState

    fields = (Field("id", FieldType("int")), Field("data", FieldType("bytes")))
    schema = Schema([TypeDef("Blob", fields, key=("id",))])
    ws = WriteState(schema)
    rnd = random.Random(1)
    for i in range(mb * 1000):
        ws.add("Blob", {"id": i, "data": rnd.randbytes(1000)})
    local = LocalDataset(root / "snapshot-local")
    v = local.publish(ws)
    data = local.snapshot_path(v).read_bytes()
    name = f"snapshots/bench-{mb}mb.blob"
    out: dict[str, Any] = {"bytes": len(data)}
    for where, blobs, announcer, dataset in (
        ("nats", ds.blobs, ds.announcer, target),
        ("local", local.blobs, local.announcer, str(local.path)),
    ):
        t0 = time.perf_counter()
        blobs.put(name, [data])
        announcer.announce({"version": v, "bench_blob": name})
        publish_s = time.perf_counter() - t0
        r = subprocess.run(
            [sys.executable, "-m", "nearstate.bench.raw", "fetch", dataset, name],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        if r.returncode != 0:
            raise RuntimeError(f"fetching the snapshot failed: {r.stderr.strip()}")
        fetched = json.loads(r.stdout)
        if fetched["bytes"] != len(data) or fetched["xxh3"] != _xxh(data):
            raise RuntimeError(f"the {where} snapshot came back different")
        out[where] = {"publish_s": round(publish_s, 3), "fetch_s": fetched["seconds"]}
        blobs.delete(name)
    return out


def _xxh(data: Any) -> str:
    import xxhash

    return xxhash.xxh3_64_hexdigest(data)


def _fetch_main(dataset: str, name: str) -> None:
    ds = open_dataset(dataset)
    ds.announced()  # connected, before the clock starts
    t0 = time.perf_counter()
    data = ds.blobs.get(name)
    digest = _xxh(data)  # every byte read (a local blob is a memory map)
    seconds = time.perf_counter() - t0
    print(json.dumps({"bytes": len(data), "xxh3": digest, "seconds": round(seconds, 3)}))


# -- write -> visible in another process ----------------------------------------------------


def _visible(
    target: str, w: Any, probes: int, compact_every: float, commit_ms: list[float],
    consumers: int, cpu_ms: list[float], wakeups: list[dict[str, int]] | None = None,
) -> list[list[float]]:  # fmt: skip
    """Probe writes, timed until each of ``consumers`` consumer processes shows them, while
    (with ``compact_every``) a producer process folds the Log into versions meanwhile.
    Returns, per consumer, each probe's milliseconds; appends to ``cpu_ms`` each consumer
    process's CPU time (all its threads: following the Log and the versions, listeners)
    per probe committed, and to ``wakeups`` its Log's wake-up counts (local backend)."""
    if wakeups is None:
        wakeups = []
    compactor = None
    if compact_every > 0:
        compactor = subprocess.Popen(
            [sys.executable, "-c", "from nearstate.cli import main; main()", "compact",
             target, "--follow", "--interval", str(compact_every)],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
    cmd = [sys.executable, "-m", "nearstate.bench.raw", "consumer", target, str(probes)]
    children = [
        subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(consumers)
    ]
    try:
        for child in children:
            assert child.stdout is not None
            if child.stdout.readline().strip() != "ready":
                raise RuntimeError("a consumer process did not start")
        rnd = random.Random(0)
        for i in range(probes):
            sent = time.monotonic_ns()
            w.upsert("Probe", {"id": i, "sent": sent})
            commit_ms.append((time.monotonic_ns() - sent) / 1e6)
            time.sleep(rnd.uniform(0.002, 0.008))
        out = []
        for child in children:
            assert child.stdin is not None and child.stdout is not None
            child.stdin.write("done\n")
            child.stdin.flush()
        for child in children:
            assert child.stdout is not None
            reply = json.loads(child.stdout.readline())
            got = reply["visible_ms"]
            cpu_ms.append(reply["cpu_ms_per_commit"])
            if reply.get("wakeups") is not None:
                wakeups.append(reply["wakeups"])
            child.wait(timeout=60)
            if len(got) != probes:
                raise RuntimeError(f"a consumer showed {len(got)} of {probes} probes")
            out.append(got)
        return out
    finally:
        for p in (*children, compactor):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()


def _consumer_main(dataset: str, probes: int) -> None:
    import threading

    ds = open_dataset(dataset if "://" in dataset else Path(dataset))
    c = ds.consumer()
    seen: dict[int, float] = {}
    done = threading.Event()

    def on_refresh(ev: Any) -> None:
        now = time.monotonic_ns()
        state = c.state
        if "Probe" not in state:
            return
        ts = state["Probe"]
        if ev.changes is None:  # a snapshot was loaded: any record may be new
            keys: Any = ts.keys()
        else:
            ch = ev.changes.get("Probe")
            if ch is None:
                return
            keys = (*ch.added, *ch.modified)
        for k in keys:
            if k >= 0 and k not in seen:
                seen[k] = (now - ts.get(k).sent) / 1e6
        if len(seen) >= probes:
            done.set()

    c.add_listener(on_refresh)
    c.start(freeze_gc=True)  # as a service process would (see Consumer.start)
    cpu0 = time.process_time()  # this process's CPU, every thread: what the probes cost it
    print("ready", flush=True)
    sys.stdin.readline()
    done.wait(30)
    cpu = time.process_time() - cpu0
    stats = getattr(c.log, "wake_stats", None)  # the local Log: wake-ups heard and missed
    wakeups = stats() if stats is not None else None
    c.stop()
    print(json.dumps({"visible_ms": [seen[k] for k in sorted(seen)],
                      "cpu_ms_per_commit": cpu * 1000 / max(1, probes),
                      "wakeups": wakeups}), flush=True)  # fmt: skip


# -- peers ----------------------------------------------------------------------------------


def _sqlite_peer(root: Path, commits: int, batch: int, batches: int,
                 threads: int) -> dict[str, Any]:  # fmt: skip
    """A plain durable SQLite table (WAL, synchronous=FULL): the floor under our Log.
    ``threaded_commits_per_s``: the same commits from ``threads`` threads, each on its own
    connection (SQLite commits each transaction with its own fsync)."""
    import threading

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
    local = threading.local()

    def one(i: int) -> None:
        c = getattr(local, "conn", None)
        if c is None:
            c = local.conn = sqlite3.connect(p, isolation_level=None, timeout=60,
                                             check_same_thread=False)  # fmt: skip
            c.execute("PRAGMA synchronous=FULL")
        k = i % SEED_RECORDS
        c.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (f"s{k}", bodies[k]))

    threaded = _threaded(one, threads, commits)
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
    return {"commits_per_s": round(single), "threaded_commits_per_s": round(threaded),
            "batched_mutations_per_s": round(batched)}  # fmt: skip


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
        "visible_ms": percentiles(visible, digits=3),
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


def _threaded_line(res: dict[str, Any], ok: Any) -> str:
    rate = res.get("threaded_commits_per_s")
    if rate is None:  # a result from before threaded commits were measured
        return "single-record commits from several threads: not measured"
    n = res["config"].get("writer_threads", "?")
    per = res.get("threaded_commits_per_fsync")
    shared = f", {per:.1f} commits per fsync" if per is not None else ""
    return (
        f"single-record commits from {n} threads at once: {rate:,}/s{shared} "
        f"({ok(rate >= 5000)} >= 5k/s)"
    )


def describe(res: dict[str, Any]) -> str:
    """The figures in plain words, against the issue's targets."""
    v, s = res["visible_ms"], res["strong_overhead_ms"]

    def ok(good: bool) -> str:
        return "meets" if good else "MISSES"

    n = res.get("config", {}).get("consumers", 1)
    where = f"on all {n} consumer processes" if n > 1 else "in another process"
    if res.get("backend") == "nats":
        visible = (f"write -> visible {where}: p50 {v['p50']:.2f} ms, "
                   f"p99 {v['p99']:.2f} ms ({ok(v['p99'] <= 15)} p99 <= 15 ms)")  # fmt: skip
    else:
        visible = (f"write -> visible {where}: p50 {v['p50']:.2f} ms, p99 "
                   f"{v['p99']:.2f} ms ({ok(v['p50'] <= 1 and v['p99'] <= 5)} p50 <= 1 ms, "
                   "p99 <= 5 ms)")  # fmt: skip
    lines = [visible]
    for i, wk in enumerate(res.get("consumer_wakeups") or ()):
        if wk["late"]:
            lines.append(f"consumer {i + 1} found {wk['late']:,} commits only on a recheck "
                         f"(woken for {wk['woken']:,}): their wake-ups never came")  # fmt: skip
    cpu = res.get("reader_cpu_ms_per_commit")
    if cpu:
        lines.append(f"a reader's CPU per single-record commit: {max(cpu):.3f} ms at most "
                     f"({ok(max(cpu) <= 0.1)} <= 0.1 ms)")  # fmt: skip
    lines += [
        f"strong-read overhead, caught up: p50 {s['p50']:.3f} ms, p99 {s['p99']:.3f} ms "
        f"({ok(s['p99'] <= 1)} p99 <= 1 ms)",
        f"single-record commits, one after another: {res['commits_per_s']:,}/s "
        f"({ok(res['commits_per_s'] >= 5000)} >= 5k/s)",
        _threaded_line(res, ok),
        f"batched mutations: {res['batched_mutations_per_s']:,}/s "
        f"({ok(res['batched_mutations_per_s'] >= 50_000)} >= 50k/s)",
    ]
    snap = res.get("snapshot")
    if snap is not None:
        nb, lb = snap["nats"], snap["local"]
        good = nb["publish_s"] <= 5 and nb["fetch_s"] <= 5
        lines.append(f"{snap['bytes'] / 1e6:,.0f} MB snapshot through NATS: publish "
                     f"{nb['publish_s']:.2f} s, fetch {nb['fetch_s']:.2f} s ({ok(good)} <= 5 s "
                     f"each); a local directory: {lb['publish_s']:.2f} s / "
                     f"{lb['fetch_s']:.2f} s")  # fmt: skip
    for name, p in res.get("peers", {}).items():
        if "skipped" in p:
            lines.append(f"{name}: skipped ({p['skipped']})")
            continue
        vis = p.get("visible_ms")
        extra = f"visible p50 {vis['p50']:.2f} / p99 {vis['p99']:.2f} ms, " if vis else ""
        if "threaded_commits_per_s" in p:
            extra += f"{p['threaded_commits_per_s']:,} commits/s from threads, "
        lines.append(f"{name}: {extra}{p['commits_per_s']:,} commits/s, "
                     f"{p['batched_mutations_per_s']:,} batched/s"
                     + (f" ({p['durability']})" if "durability" in p else ""))  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1] == "consumer":
        _consumer_main(sys.argv[2], int(sys.argv[3]))
    elif sys.argv[1] == "fetch":
        _fetch_main(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "redis-subscriber":
        _redis_subscriber_main(sys.argv[2], int(sys.argv[3]))
