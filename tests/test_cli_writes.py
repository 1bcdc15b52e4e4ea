"""The write-path verbs end to end: put, delete, get with each consistency, watch, compact,
and bench raw (a tiny run: the figures' shape, not their speed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import nearstate
from nearstate.bench.raw import describe, run_raw
from nearstate.cli import main


def run(*args: str, input: str | None = None) -> tuple[int, str, str]:
    r = CliRunner().invoke(main, [str(a) for a in args], input=input)
    return r.exit_code, r.stdout, r.stderr


def test_put_prints_the_token_and_get_reads_it(tmp_path: Path) -> None:
    """put commits and prints the token; get shows the record at each consistency."""
    d = tmp_path / "ds"
    code, out, err = run("put", d, "Story", '{"id": "s1", "title": "Hello"}')
    assert code == 0, err
    token = int(out.strip())
    assert token == 1
    assert "Committed 1 Story record at token 1" in err
    for consistency in ("eventual", "strong"):
        code, out, err = run("get", d, "Story", "s1", "--consistency", consistency)
        assert code == 0, err
        assert json.loads(out) == {"id": "s1", "title": "Hello"}
    code, out, err = run("get", d, "Story", "s1", "--consistency", "read-your-writes",
                         "--token", str(token))  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["title"] == "Hello"


def test_put_an_array_commits_one_transaction(tmp_path: Path) -> None:
    d = tmp_path / "ds"
    recs = [{"id": f"s{i}", "title": f"T{i}"} for i in range(3)]
    code, out, err = run("put", d, "Story", json.dumps(recs))
    assert code == 0, err
    assert int(out) == 1  # one token for the three
    assert "Committed 3 Story records" in err
    state = nearstate.open(d).consumer().sync()
    assert sorted(state["Story"].keys()) == ["s0", "s1", "s2"]


def test_put_reads_standard_input(tmp_path: Path) -> None:
    d = tmp_path / "ds"
    code, out, err = run("put", d, "Story", "-", input='{"id": "s9", "title": "Piped"}')
    assert code == 0, err
    code, out, _ = run("get", d, "Story", "s9")
    assert json.loads(out)["title"] == "Piped"


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "a record is a JSON object"),
        ('{"title": "no key"}', "'id'"),
        ('{"id": "s2", "title": 5}', "expected str"),
        ('{"id": "s2", "title": "x", "extra": 1}', "'extra' is not in type 'Story'"),
    ],
)
def test_put_refuses_bad_input_and_commits_nothing(tmp_path: Path, record: str,
                                                   message: str) -> None:  # fmt: skip
    d = tmp_path / "ds"
    assert run("put", d, "Story", '{"id": "s1", "title": "Hello"}')[0] == 0
    code, out, err = run("put", d, "Story", record)
    assert code == 1
    assert message in err
    assert out == ""
    assert nearstate.open(d).log.head() == 1


def test_conditions_from_the_command_line(tmp_path: Path) -> None:
    d = tmp_path / "ds"
    t1 = int(run("put", d, "Story", '{"id": "s1", "title": "A"}')[1])
    code, _, err = run("put", d, "Story", '{"id": "s1", "title": "B"}', "--expect-absent")
    assert code == 1 and "already exists" in err
    code, _, err = run("put", d, "Story", '{"id": "s1", "title": "B"}', "--expect-token", "99")
    assert code == 1 and "last changed at token 1, not 99" in err
    code, _, err = run("put", d, "Story", '{"id": "s1", "title": "B"}', "--expect-token",
                         str(t1))  # fmt: skip
    assert code == 0, err
    assert json.loads(run("get", d, "Story", "s1")[1])["title"] == "B"


def test_delete_and_get_of_a_missing_key(tmp_path: Path) -> None:
    d = tmp_path / "ds"
    run("put", d, "Story", '{"id": "s1", "title": "A"}')
    code, out, err = run("delete", d, "Story", "s1")
    assert code == 0, err
    assert int(out) == 2
    code, _, err = run("get", d, "Story", "s1")
    assert code == 1
    assert "no Story with key 's1'" in err


def test_read_your_writes_needs_a_token_and_times_out_clearly(tmp_path: Path) -> None:
    d = tmp_path / "ds"
    run("put", d, "Story", '{"id": "s1", "title": "A"}')
    code, _, err = run("get", d, "Story", "s1", "--consistency", "read-your-writes")
    assert code == 1 and "needs the token" in err
    code, out, err = run("get", d, "Story", "s1", "--consistency", "read-your-writes",
                         "--token", "50", "--timeout", "0.3")  # fmt: skip
    assert code == 1
    assert out == ""
    assert "token 50 is not visible after 0.3 s" in err


def test_get_on_a_missing_dataset(tmp_path: Path) -> None:
    code, _, err = run("get", tmp_path / "nothing", "Story", "s1")
    assert code == 1
    assert "holds no dataset" in " ".join(err.split())  # the console wraps long paths


def _nice_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[16])  # field 19: nice


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_compact_follow_runs_at_a_lower_cpu_priority(tmp_path: Path) -> None:
    """Following, the compactor yields the CPU to readers on the same host (nice 10, or
    --nice N), and still folds the Log; once, it keeps the caller's priority; a nice out
    of range is refused before anything runs."""
    import os
    import time

    d = tmp_path / "ds"
    for i, (extra, want) in enumerate((([], 10), (["--nice", "15"], 15))):
        run("put", d, "Story", json.dumps({"id": f"s{i}", "title": "T"}))
        v0 = nearstate.open(d).latest_version() or 0
        p = subprocess.Popen([sys.executable, "-m", "nearstate", "compact", str(d), "--follow",
                              "--interval", "0.1", *extra],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while (nearstate.open(d).latest_version() or 0) <= v0 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert (nearstate.open(d).latest_version() or 0) > v0, "it folded nothing"
            assert _nice_of(p.pid) == max(want, os.getpriority(os.PRIO_PROCESS, 0))
        finally:
            p.kill()
            p.wait()
    code, _, err = run("compact", d, "--follow", "--nice", "20")
    assert code == 2 and "--nice" in err
    before = os.getpriority(os.PRIO_PROCESS, 0)
    code, _, _ = run("compact", d)  # once, in this process: its priority unchanged
    assert code == 0 and os.getpriority(os.PRIO_PROCESS, 0) == before


def test_compact_folds_the_log_into_a_version(tmp_path: Path) -> None:
    d = tmp_path / "ds"
    for i in range(3):
        run("put", d, "Story", json.dumps({"id": f"s{i}", "title": "T"}))
    code, out, err = run("compact", d)
    assert code == 0, err
    assert "Folded the log up to token 3 into version 1" in out
    code, out, _ = run("compact", d)
    assert code == 0
    assert "Nothing to fold: version 1 includes every commit" in out
    run("put", d, "Story", json.dumps({"id": "s0", "title": "changed"}))
    code, out, _ = run("compact", d)
    assert "into version 2 (1 records changed, a delta)" in out
    ds = nearstate.open(d)
    assert ds.latest_version() == 2
    assert ds.load()["Story"].get("s0").title == "changed"


def test_watch_prints_commits_as_they_arrive(tmp_path: Path) -> None:
    """watch in another process prints commits made after it started, as JSON lines."""
    d = tmp_path / "ds"
    run("put", d, "Story", '{"id": "s0", "title": "before"}')
    p = subprocess.Popen(
        [sys.executable, "-c", "from nearstate.cli import main; main()", "watch", str(d),
         "--json", "--count", "2", "--from", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        first = json.loads(p.stdout.readline())  # type: ignore[union-attr]
        assert first["token"] == 1
        assert first["changes"] == [{"type": "Story", "key": "s0", "op": "upsert",
                                     "record": {"id": "s0", "title": "before"}}]  # fmt: skip
        run("delete", d, "Story", "s0")
        second = json.loads(p.stdout.readline())  # type: ignore[union-attr]
        assert second["token"] == 2
        assert second["changes"][0]["op"] == "delete"
        assert p.wait(timeout=20) == 0
    finally:
        if p.poll() is None:
            p.kill()


def test_watch_in_words(tmp_path: Path) -> None:
    d = tmp_path / "ds"
    run("put", d, "Story", '{"id": "s0", "title": "before"}')
    code, out, _ = run("watch", d, "--from", "0", "--count", "1")
    assert code == 0
    assert "token 1  upserted Story 's0'" in out


def test_bench_raw_reports_every_figure(tmp_path: Path) -> None:
    """A tiny run: every key of the issue's JSON is there with a plausible value."""
    res = run_raw(probes=20, commits=50, batch=50, batches=2, peers=False, workdir=tmp_path,
                  compact_every=0, consumers=2)  # fmt: skip
    for k in ("visible_ms", "strong_overhead_ms"):
        assert set(res[k]) >= {"p50", "p99"}
        assert 0 < res[k]["p50"] <= res[k]["p99"]
    assert res["visible_ms"]["n"] == 20  # every probe was seen by the other processes
    cpu = res["reader_cpu_ms_per_commit"]  # measured in each consumer process
    assert len(cpu) == 2 and all(0 < x < 1000 for x in cpu)
    assert "a reader's CPU per single-record commit" in describe(res)
    wakes = res["consumer_wakeups"]  # each consumer's Log: waits woken and commits found late
    assert len(wakes) == 2 and all(w["woken"] + w["late"] >= 1 for w in wakes)
    assert res["commits_per_s"] > 0
    assert res["batched_mutations_per_s"] > 0


def test_bench_raw_on_nats_times_every_consumer_and_the_snapshot(tmp_path: Path) -> None:
    """A tiny NATS run: visible_ms is, per probe, the slowest of the consumer processes
    (so at least each one's median), the snapshot came back whole both ways, and the
    benchmark dataset is gone from the server afterwards."""
    import asyncio

    import nats

    from natsserver import server_url

    res = run_raw(probes=20, commits=20, batch=50, batches=2, peers=False, workdir=tmp_path,
                  compact_every=0.3, backend="nats", nats_url=server_url(), consumers=2,
                  snapshot_mb=2)  # fmt: skip
    assert res["backend"] == "nats" and res["visible_ms"]["n"] == 20
    per = res["visible_ms_per_consumer"]
    assert len(per) == 2 and all(c["n"] == 20 for c in per)
    assert res["visible_ms"]["max"] >= max(c["max"] for c in per) - 1e-9
    assert res["visible_ms"]["p50"] >= min(c["p50"] for c in per) - 1e-9
    snap = res["snapshot"]
    assert snap["bytes"] > 2_000_000
    assert snap["nats"]["publish_s"] > 0 and snap["nats"]["fetch_s"] > 0
    assert snap["local"]["publish_s"] > 0 and snap["local"]["fetch_s"] >= 0  # ms: rounds to 0
    dataset = res["config"]["dataset"].rsplit("/", 1)[1]

    async def streams() -> list[str]:
        nc = await nats.connect(server_url())
        try:
            return [s.config.name for s in await nc.jetstream().streams_info()]
        finally:
            await nc.close()

    assert not [s for s in asyncio.run(streams()) if dataset in s]


def test_inspect_shows_the_log(tmp_path: Path) -> None:
    d = tmp_path / "ds"
    for i in range(3):
        run("put", d, "Story", json.dumps({"id": f"s{i}", "title": "T"}))
    run("compact", d)
    run("put", d, "Story", json.dumps({"id": "s9", "title": "after"}))
    code, out, _ = run("inspect", d)
    assert code == 0
    assert "this version includes up to token 3" in out
    code, out, _ = run("inspect", d, "--json")
    assert json.loads(out)["log"]["head"] == 4
