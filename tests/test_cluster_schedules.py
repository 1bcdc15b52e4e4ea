"""More fault schedules for the Log at R=3 (issue 21), on the workload and checks of
tests/test_cluster_faults.py (two writers, two readers, each a process on a host of its
own; the history checked with tests/history.py after the run):

* the Log's stream leader cut off from the other servers only, while a reader keeps its
  connection to it (the client's link stays up, so nothing tells it to move);
* an asymmetric cut: the leader no longer sees one server, which still sees the third,
  and the third sees the leader (A sees B, B sees C, A does not see C);
* the JetStream metadata leader cut off (it places streams and consumers), with a
  reader connected to it and a new consumer started on the majority side meanwhile;
* repeated elections: the leader killed three times in a row, then cut off once.

As in test_cluster_faults, a failure after a healed partition counts as an expected
failure on servers older than nats-server 2.10; everything up to the heal is checked on
every version.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import cluster as cl
import history
from history import Child
from test_cluster_faults import (
    CONTROL,
    READERS,
    WRITERS,
    Run,
    acked_after,
    acks,
    cut_checks,
    new_cluster,
    run,
    tried,
)

pytest.importorskip("nats", reason="the 'nats' extra is not installed")


@pytest.fixture
def healthy() -> Iterator[cl.Cluster]:
    """Three servers and the workload's hosts, new for each test."""
    yield from new_cluster()


def _others(x: str) -> list[str]:
    return [s for s in cl.SERVERS if s != x]


def _gaps(evs: list[dict], proc: str, since: float, until: float) -> float:
    """The longest time within [since, until] in which ``proc`` had no write
    acknowledged (from ``since`` to its first, between two, from its last to ``until``)."""
    ts = sorted(e["t1"] for e in evs if e["proc"] == proc and e["kind"] in ("put", "cas", "ryw")
                and since < e["t1"] < until)  # fmt: skip
    points = [since, *ts, until]
    return max(b - a for a, b in itertools.pairwise(points))


def test_leader_cut_from_its_peers_while_a_reader_holds_a_connection_to_it(
    healthy: cl.Cluster, children: list[Child], tmp_path: Path
) -> None:
    """Cut the Log's stream leader off from the two other servers, and from nothing else:
    reader r1, connected to it alone, keeps a working connection (its pings are answered)
    and so never moves. The others elect a leader and the writers (connected to them) go
    on. r1's strong reads and its own writes must fail for as long as the cut lasts (its
    server can neither replicate a barrier nor reach the new leader), its consumer's
    staleness grows, and nothing it was shown goes back after the heal."""

    def fault(r: Run) -> None:
        x = r.leader
        healthy.cut(x, *_others(x))
        t = r.mark("partition")
        r.wait_for("writes on the majority side", acked_after(t, *WRITERS), timeout=30)
        t = r.mark("majority")
        r.wait_for("a strong read tried through the cut-off server", tried(t, "r1", "strong"))
        r.wait_for("a write tried through the cut-off server", tried(t, "r1", "ryw-put"))
        cut_checks(r, "r1")
        evs = r.history()
        assert acks(evs, "r1", r.marks["partition"] + 1, time.monotonic()) == 0
        # the majority's leader is one of the other two
        assert healthy.leader("NEARSTATE_LOG_peers-cut", CONTROL, _others(x)) in _others(x)
        healthy.heal()
        t = r.mark("healed")
        r.wait_for("writes after healing", acked_after(t + 0.5, *WRITERS, *READERS), timeout=20)

    def pins(x: str) -> dict[str, str]:
        a, b = _others(x)
        return {"r1": x, "w1": a, "w2": b, "r2": a}

    run(healthy, children, tmp_path, "peers-cut", fault, pins)


def test_asymmetric_cut_around_the_leader(
    healthy: cl.Cluster, children: list[Child], tmp_path: Path
) -> None:
    """Cut the link between the Log's stream leader A and one other server C only: A
    still sees B, B still sees C, and every client sees all three. C stops hearing from
    A and stands for election, and a client connected to a server that does not see the
    leader of the moment cannot reach it (NATS routes do not relay). Writes may stall;
    what must hold is every promise of the reads, and nothing acknowledged lost. Heal
    after 12 s (longer than an election) and check the whole history; what the writers
    got done during the cut, and who led, is printed (pytest -s) for docs/operations.md."""
    seen: list[str] = []

    def fault(r: Run) -> None:
        a = r.leader
        b, c = _others(a)
        healthy.cut(a, c)
        t = r.mark("partition")
        while time.monotonic() - t < 12:
            try:  # B sees everyone: ask it who leads
                seen.append(healthy.leader("NEARSTATE_LOG_asymmetric", CONTROL, (b,)))
            except RuntimeError:
                seen.append("?")
            time.sleep(0.5)
        t_end = r.mark("majority")
        evs = r.history()
        bad = history.check_strong_reads(evs)
        assert bad == [], "\n".join(bad[:30])
        for w in WRITERS:
            r.marks[f"{w} acks"] = acks(evs, w, t, t_end)
            r.marks[f"{w} gap"] = _gaps(evs, w, t, t_end)
        healthy.heal()
        t = r.mark("healed")
        r.wait_for("writes after healing", acked_after(t + 0.5, *WRITERS, *READERS), timeout=30)

    r = run(healthy, children, tmp_path, "asymmetric", fault)
    print(
        f"asymmetric cut: A={r.leader}, leaders seen from B: {seen}; "
        + ", ".join(f"{k} {v:.1f}" for k, v in r.marks.items() if " " in k)
    )


NEW_READER = """
import json, sys, time
import nearstate
t0 = time.monotonic()
errors = []
while True:  # as a service would: start again until it loads
    try:
        ds = nearstate.open(sys.argv[1])
        c = ds.consumer().start(timeout=20)
        s = c.sync(timeout=20)
        break
    except nearstate.NearstateError as e:
        errors.append(f"{time.monotonic() - t0:.1f} s: {e}"[:300])
        if time.monotonic() - t0 > 60:
            raise SystemExit("no consumer within 60 s: " + " | ".join(errors))
        time.sleep(0.5)
print(json.dumps({"t0": t0, "t1": time.monotonic(), "pos": c.position, "errors": errors}),
      flush=True)
c.stop()
"""


def test_meta_leader_cut_off(healthy: cl.Cluster, children: list[Child], tmp_path: Path) -> None:
    """Cut off the server leading JetStream's metadata (made not to lead the Log first),
    with reader r1 connected to it alone. The writers, connected to the Log's leader,
    keep writing (the Log's group keeps its quorum), pausing at most for the catch-up
    timeout where a writer's own Log subscription lived on the cut-off server and must be
    placed again by a new metadata leader;
    r1's strong reads fail; a consumer started on the majority side during the cut (its
    ordered consumers need a metadata leader to be placed) loads and shows every write
    acknowledged before it started, once the majority has elected a metadata leader."""
    state: dict[str, str] = {}

    def pins(x: str) -> dict[str, str]:
        m = healthy.meta_leader(CONTROL)
        for _ in range(3):
            if m != x:
                break
            x = healthy.step_down(f"NEARSTATE_LOG_{NAME}", CONTROL)
        assert m != x, f"{m} leads both the metadata and the Log"
        state.update(meta=m, log=x)
        other = next(s for s in _others(m) if s != x)
        return {"r1": m, "w1": x, "w2": x, "r2": other}

    def fault(r: Run) -> None:
        m = state["meta"]
        healthy.partition([m, "r1"], [*_others(m), "w1", "w2", "r2", CONTROL])
        t = r.mark("partition")
        r.wait_for("writes on the majority side", acked_after(t, *WRITERS), timeout=30)
        t = r.mark("majority")
        url = f"{healthy.url(*_others(m))}/{NAME}"
        p = healthy.spawn(children, CONTROL, NEW_READER, url)
        loaded = json.loads(p.read_line(timeout=90))
        r.marks["new consumer"] = loaded["t1"] - loaded["t0"]
        p.wait()
        r.wait_for("a strong read tried on the cut-off side", tried(t, "r1", "strong"))
        cut_checks(r, "r1")
        t_end = r.mark("checked")
        evs = r.history()
        before = [e["token"] for e in evs if e["kind"] in ("put", "cas", "ryw")
                  and e["t1"] < loaded["t0"]]  # fmt: skip
        assert loaded["pos"] >= max(before), (loaded, max(before))
        gap = max(_gaps(evs, w, r.marks["partition"], t_end) for w in WRITERS)
        # a writer whose Log subscription lived on the cut-off server waits for nats-py to
        # notice (missed heartbeats) and re-create it, which needs the new metadata leader;
        # until then its commits wait to catch up (at most the 10 s catch-up timeout)
        r.marks["longest gap"] = gap
        assert gap < 14, f"writes paused {gap:.1f} s with the Log's quorum intact"
        assert healthy.meta_leader(CONTROL) in _others(m)
        healthy.heal()
        t = r.mark("healed")
        r.wait_for("writes after healing", acked_after(t + 0.5, *WRITERS, *READERS), timeout=20)

    r = run(healthy, children, tmp_path, NAME, fault, pins)
    print(
        f"metadata leader cut: longest pause of a writer {r.marks['longest gap']:.1f} s, "
        f"a new consumer loaded in {r.marks['new consumer']:.1f} s"
    )


NAME = "meta-cut"


@pytest.mark.slow
def test_repeated_elections(healthy: cl.Cluster, children: list[Child], tmp_path: Path) -> None:
    """Three rounds of SIGKILL of whichever server leads the Log (started again after
    writes resumed), then the leader of the fourth term cut off from everyone and healed:
    four elections in a row under writes, and the whole history still checks."""
    gaps: list[float] = []

    def fault(r: Run) -> None:
        for i in range(3):
            x = healthy.leader("NEARSTATE_LOG_elections", CONTROL)
            healthy.kill(x)
            t = r.mark(f"kill {i}")
            gaps.append(r.wait_for(f"writes after kill {i}", acked_after(t, *WRITERS), 40))
            healthy.start(x)
            t = r.mark(f"restart {i}")
            r.wait_for(f"writes after restart {i}", acked_after(t + 1, *WRITERS))
            healthy.wait_ready()
        x = healthy.leader("NEARSTATE_LOG_elections", CONTROL)
        healthy.partition([x], [*_others(x), *WRITERS, *READERS, CONTROL])
        t = r.mark("partition")
        gaps.append(r.wait_for("writes after the cut", acked_after(t, *WRITERS), 40))
        r.mark("majority")
        bad = history.check_strong_reads(r.history())
        assert bad == [], "\n".join(bad[:30])
        healthy.heal()
        t = r.mark("healed")
        r.wait_for("writes after healing", acked_after(t + 0.5, *WRITERS, *READERS), timeout=20)

    run(healthy, children, tmp_path, "elections", fault)
    assert max(gaps) < 30, gaps
