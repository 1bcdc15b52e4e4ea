"""``nearstate bench workers``' parts on a small dataset: the memory read from smaps_rollup
and one pool measured (every worker counted, the parent apart)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import nearstate
from nearstate.bench.workers import cpu_seconds, measure_pool, memory, summary
from nearstate.content.records import SCHEMA
from test_search import person, story


def test_memory_reads_smaps_rollup() -> None:
    m = memory(os.getpid())
    assert 0 < m["uss"] <= m["rss"] and 0 < m["pss"] <= m["rss"]
    blob = bytearray(64 << 20)  # private pages written: USS grows by about that much
    blob[::4096] = b"x" * len(blob[::4096])
    assert memory(os.getpid())["uss"] - m["uss"] > 60 << 20


def test_cpu_seconds_reads_proc_stat() -> None:
    before = cpu_seconds([os.getpid(), 2**22 + 1])[os.getpid()]  # a pid that is not: left out
    assert list(cpu_seconds([os.getpid(), 2**22 + 1])) == [os.getpid()]
    t = time.process_time()
    while time.process_time() - t < 0.3:  # a busy loop: 0.3 s of this process's CPU
        pass
    used = cpu_seconds([os.getpid()])[os.getpid()] - before
    assert 0.25 <= used < 1.0


def test_a_pool_is_measured(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ds = nearstate.open(data / "dataset")
    w = ds.writer(schema=SCHEMA)
    for i in range(1, 40):
        w.upsert("Story", story(i, f"Story {i} about love"))
        w.upsert("Person", person(i, f"Person {i}"))
    ds.compact()
    r = measure_pool(data, 2, tmp_path / "cache", ["/api/search?q=love"], 1.0, 4,
                     warm=("/people/p-1",))  # fmt: skip
    assert len(r["workers"]) == 2 and r["parent"]["pss"] > 0
    assert r["host_pss"] == r["parent"]["pss"] + sum(x["pss"] for x in r["workers"])
    assert r["requests_per_s"]["/api/search?q=love"] > 0
    # served per CPU-second of the two workers: two workers use at most two CPU-seconds a
    # second, so at least half the requests of one second, finite. The CPU is read in
    # ticks (10 ms) around wrk, whose window runs a little past its `seconds`: two workers
    # busy all along (a loaded host) come out a tick or two above two CPU-seconds.
    per_cpu = r["requests_per_cpu_s"]["/api/search?q=love"]
    assert 0.9 * r["requests_per_s"]["/api/search?q=love"] / 2 <= per_cpu < 100_000
    assert len(list((tmp_path / "cache").glob("search-*.arrays"))) == 1
    assert len(list((tmp_path / "cache").glob("index-*.arrays"))) >= 1  # the slug index
    one = measure_pool(data, 1, tmp_path / "cache", ["/healthz"], 1.0, 4)
    assert len(one["workers"]) == 1 and one["parent"]["pss"] == 0
    pools = {"1": {**_med(one)}, "2": {**_med(r), "added_per_worker": 1 << 20,
                                      "added_pct_of_state": 50.0}}  # fmt: skip
    lines = summary({"cpus": 2, "runs": 1, "seconds": 1, "connections": 4, "datasets": {
        "films": {"records": 78, "state_bytes": 2 << 20, "search_file_bytes": 1 << 20,
                  "dicts_process_uss": 30 << 20, "pools": pools}}})  # fmt: skip
    assert "NOT met" in lines[-1] and lines[-2].lstrip().startswith("1")
    assert lines[-3].endswith("req/s  req/CPU-s")
    assert lines[-1].endswith(f"{r['requests_per_s']['/api/search?q=love']:,}  {per_cpu:,}")


def _med(r: dict) -> dict:
    return {"requests_per_s": r["requests_per_s"], "host_pss": r["host_pss"],
            "requests_per_cpu_s": r["requests_per_cpu_s"],
            "worker_uss": r["workers"][0]["uss"], "worker_pss": r["workers"][0]["pss"]}  # fmt: skip


def test_what_a_worker_adds_in_a_pool_and_the_state_size_the_target_needs() -> None:
    from nearstate.bench.workers import pool_increment

    mb = 1 << 20
    per_n = {1: {"host_pss": 80 * mb}, 2: {"host_pss": 110 * mb}, 4: {"host_pss": 130 * mb},
             8: {"host_pss": 170 * mb}}  # fmt: skip
    f = pool_increment(per_n, 100 * mb)
    # between 2 and 8 workers: 60 MB for 6 workers; the single process (no parent) apart
    assert f == {"from": 2, "to": 8, "added_per_worker": 10 * mb, "added_pct_of_state": 10.0,
                 "state_bytes_for_target": 200 * mb}  # fmt: skip
    assert pool_increment({1: per_n[1], 2: per_n[2]}, 100 * mb) is None  # one pool only
    lines = summary({"cpus": 2, "runs": 1, "seconds": 1, "connections": 4, "datasets": {
        "catalog": {"records": 9, "state_bytes": 100 * mb, "search_file_bytes": 0,
                    "dicts_process_uss": mb, "in_pool": f, "pools": {}}}})  # fmt: skip
    assert lines[-1].strip() == ("in a pool (2 to 8 workers) each worker adds 10.0 MB, 10.0% "
                                 "of the state: 5% from a state of 200 MB")  # fmt: skip
