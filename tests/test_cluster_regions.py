"""A second region, in network namespaces (docs/decisions/0021-regions.md): the home
region's three servers (R=3) take every write; server s4, a JetStream server of its own in
another JetStream domain joined to them as a leaf node, holds mirrors of the dataset's
Log, KV bucket and Object Store and serves the readers of its region (hosts g1, g2, which
reach s4 only).

The link between the regions is cut (every link between s4 and its readers on one side
and the home servers on the other set down, inside the test's namespaces) while a home
writer goes on. The remote region must serve its readers from its mirrors the whole time:
reads from memory never go back, a consumer started during the cut loads the announced
version and the Log from the mirrors alone, strong reads fail rather than answer from
the mirror (their head is asked of the home region), and staleness grows. Once the link
is back, the mirror and its readers catch up with every write acknowledged meanwhile.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import cluster as cl
import history
from history import Child

pytest.importorskip("nats", reason="the 'nats' extra is not installed")

DS = "regions"
KEYS = 8
HOME_HOSTS = ("w1", "c0")
REMOTE_HOSTS = ("g1", "g2")


@pytest.fixture
def regions() -> Iterator[cl.Cluster]:
    why = cl.unavailable()
    if why:
        import os

        if os.environ.get("CI"):
            pytest.fail(f"no test cluster: {why}; under CI these tests must run")
        pytest.skip(f"no test cluster: {why}")
    c = cl.Cluster((*HOME_HOSTS, *REMOTE_HOSTS), remote=True)
    try:
        # the remote region's readers reach their own server only
        for h in REMOTE_HOSTS:
            c.cut(h, *cl.SERVERS)
        yield c
    finally:
        c.close()


SEED = """
import sys, time
import nearstate
ds = nearstate.open(sys.argv[1])
deadline = time.monotonic() + 30
while True:
    try:
        ds.log.head()
        break
    except nearstate.LogUnavailable:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.2)
w = ds.writer()
for k in range(int(sys.argv[2])):
    w.upsert("Item", {"id": f"k{k}", "n": 0})
print(ds.compact().version)
"""

# mirrors in the remote domain of the dataset's three streams, under the same names (so
# nearstate opens them as the dataset); rollup headers allowed, as KV and Object Store use
MIRRORS = """
import asyncio, sys, time
import nats
from nats.js import api

async def main(url, ds):
    nc = await nats.connect(url)
    js = nc.jetstream(timeout=5)
    ext = api.ExternalStream(api="$JS.home.API")
    names = (f"NEARSTATE_LOG_{ds}", f"KV_nearstate_{ds}", f"OBJ_nearstate_{ds}")
    for name in names:
        extra = {"max_msgs_per_subject": 1} if name.startswith("KV_") else {}
        await js.add_stream(api.StreamConfig(
            name=name, storage=api.StorageType.FILE, allow_rollup_hdrs=True,
            mirror=api.StreamSource(name=name, external=ext), **extra))
    deadline = time.monotonic() + 30
    while True:
        infos = [await js.stream_info(n) for n in names]
        if all(i.mirror and i.mirror.lag == 0 and i.state.last_seq for i in infos):
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"the mirrors did not catch up: {infos}")
        await asyncio.sleep(0.2)
    await nc.close()

asyncio.run(main(*sys.argv[1:3]))
"""

WRITER = """
import json, os, sys, time
import nearstate
url, out_path, stop, keys = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
w = nearstate.open(url).writer()
out = open(out_path, "w")
print("ready", flush=True)
i = 0
while not os.path.exists(stop):
    i += 1
    key, t0 = f"k{i % keys}", time.monotonic()
    try:
        tok = w.upsert("Item", {"id": key, "n": i})
    except nearstate.NearstateError as e:
        out.write(json.dumps({"kind": "fail", "proc": "w1", "op": "put", "t0": t0,
                              "type": type(e).__name__, "msg": str(e)[:300]}) + "\\n")
        time.sleep(0.05)
        continue
    out.write(json.dumps({"kind": "put", "proc": "w1", "key": key, "n": i, "token": int(tok),
                          "t0": t0, "t1": time.monotonic()}) + "\\n")
    out.flush()
    time.sleep(0.02)
print("done", flush=True)
"""

READER = """
import json, os, sys, time
import nearstate
url, out_path, stop, me, keys = sys.argv[1:6]
t_start = time.monotonic()
ds = nearstate.open(url)
c = ds.consumer().start(timeout=60)
out = open(out_path, "w")
ALL = [f"k{k}" for k in range(int(keys))]

def rec(**e):
    e["proc"] = me
    out.write(json.dumps(e) + "\\n")
    out.flush()

def values(s):
    return {k: (None if (r := s["Item"].get(k)) is None else r["n"]) for k in ALL}

print(json.dumps({"ready": c.position, "version": c.version,
                  "loaded_s": time.monotonic() - t_start}), flush=True)
i = 0
while not os.path.exists(stop):
    i += 1
    rec(kind="read", pos=c.position, vals=values(c.state), t=time.monotonic(),
        stale=c.staleness(), err=c.last_error)
    if i % 3 == 0:
        t0 = time.monotonic()
        try:
            s = c.sync(timeout=3)
        except nearstate.NearstateError as e:
            rec(kind="fail", op="sync", type=type(e).__name__, msg=str(e)[:300], t0=t0,
                t1=time.monotonic())
        else:
            rec(kind="strong", t0=t0, t1=time.monotonic(), pos=c.position, vals=values(s))
    time.sleep(0.05)
c.stop()
print("done", flush=True)
"""


def _wait(what: str, cond: Any, procs: dict[str, Child], timeout: float) -> float:
    t0 = time.monotonic()
    while not cond():
        for name, p in procs.items():
            if p.proc.poll() is not None:
                pytest.fail(f"{name} exited ({p.proc.returncode}): {p.stderr()[-3000:]}")
        if time.monotonic() - t0 > timeout:
            pytest.fail(f"no {what} within {timeout:g} s")
        time.sleep(0.1)
    return time.monotonic() - t0


def test_remote_region_serves_its_readers_through_a_cut_and_catches_up(
    regions: cl.Cluster, children: list[Child], tmp_path: Path
) -> None:
    c = regions
    home = f"{c.url()}/{DS}?replicas=3"
    remote = f"{c.url(cl.REMOTE)}/{DS}"
    assert c.python("c0", SEED, home, str(KEYS)).strip() == "1"
    c.python("g1", MIRRORS, c.url(cl.REMOTE), DS)
    stop = tmp_path / "stop"
    procs = {
        "w1": c.spawn(children, "w1", WRITER, home, str(tmp_path / "w1.jsonl"), str(stop),
                      str(KEYS)),
        "g1": c.spawn(children, "g1", READER, remote, str(tmp_path / "g1.jsonl"), str(stop),
                      "g1", str(KEYS)),
    }  # fmt: skip
    assert procs["w1"].read_line() == "ready"
    first = json.loads(procs["g1"].read_line())
    assert first["version"] == 1, first  # the announced version, from the mirrored blobs

    def evs() -> list[dict[str, Any]]:
        return history.load(sorted(tmp_path.glob("*.jsonl")))

    def since(t: float, proc: str, kind: str) -> list[dict[str, Any]]:
        return [e for e in evs() if e["proc"] == proc and e["kind"] == kind
                and e.get("t0", e.get("t", 0)) > t]  # fmt: skip

    t = time.monotonic()
    _wait("a strong read in the remote region", lambda: since(t, "g1", "strong"), procs, 30)
    _wait("home writes", lambda: len(since(t, "w1", "put")) >= 20, procs, 30)

    # -- the link between the regions goes down ---------------------------------------------
    c.cut(cl.REMOTE, *cl.SERVERS)
    t_cut = time.monotonic()
    _wait("home writes during the cut", lambda: len(since(t_cut + 1, "w1", "put")) >= 20,
          procs, 30)  # fmt: skip
    _wait("a strong read tried after the cut", lambda: [
        e for e in since(t_cut + 6, "g1", "fail") if e["op"] == "sync"], procs, 30)  # fmt: skip
    # a consumer started in the remote region now loads from its mirrors alone
    g2 = c.spawn(children, "g2", READER, remote, str(tmp_path / "g2.jsonl"), str(stop), "g2",
                 str(KEYS))  # fmt: skip
    procs["g2"] = g2
    started = json.loads(g2.read_line(timeout=90))
    assert started["version"] == 1, started
    pre = [e["pos"] for e in evs() if e["proc"] == "g1" and e["kind"] == "read"
           and e["t"] < t_cut]  # fmt: skip
    _wait("the new consumer to show what the mirror holds", lambda: [
        e for e in since(t_cut, "g2", "read") if e["pos"] >= max(pre)], procs, 30)  # fmt: skip
    time.sleep(2)
    cut_evs = evs()
    t_heal = time.monotonic()
    # strong reads during the cut (past the time the leaf link takes to be given up)
    # failed, none answered; staleness grew
    late = [e for e in cut_evs if e["proc"] in REMOTE_HOSTS and e.get("t0", e.get("t", 0))
            > t_cut + 6]  # fmt: skip
    assert not [e for e in late if e["kind"] == "strong"], "a strong read answered from the mirror"
    assert [e for e in late if e["kind"] == "fail" and e["proc"] == "g2"], "g2 tried no sync"
    reads = [e for e in late if e["kind"] == "read" and e["proc"] == "g1"]
    assert reads and all(e["stale"] > e["t"] - t_cut - 8 for e in reads), reads[:3]
    # the remote readers kept serving: reads went on, at the position the mirror held
    assert len(reads) > 20
    home_head = max(e["token"] for e in cut_evs if e["kind"] == "put")
    assert max(e["pos"] for e in reads) < home_head

    # -- the link comes back -------------------------------------------------------------------
    c.heal()
    for h in REMOTE_HOSTS:  # the remote readers still reach their own region only
        c.cut(h, *cl.SERVERS)
    acked = max(e["token"] for e in evs() if e["kind"] == "put")
    took = _wait("the remote readers to catch up", lambda: all(
        [e for e in since(t_heal, p, "read") if e["pos"] >= acked] for p in REMOTE_HOSTS),
        procs, 60)  # fmt: skip
    t = time.monotonic()
    _wait("strong reads after the heal",
          lambda: all(since(t, p, "strong") for p in REMOTE_HOSTS), procs, 30)  # fmt: skip
    stop.touch()
    for p in procs.values():
        p.expect("done", timeout=30)
        p.wait()
    all_evs = evs()
    bad = history.check_monotonic_reads(all_evs) + history.check_strong_reads(all_evs)
    assert bad == [], "\n".join(bad[:30])
    # the last reads show every write acknowledged before the catch-up began
    last: dict[str, int] = {}
    for e in all_evs:
        if e["kind"] == "put" and e["token"] <= acked:
            last[e["key"]] = max(last.get(e["key"], 0), e["n"])
    for p in REMOTE_HOSTS:
        final = [e for e in all_evs if e["proc"] == p and e["kind"] == "read"][-1]
        assert all(final["vals"][k] >= n for k, n in last.items()), (p, final, last)
    print(
        f"regions: remote readers caught up {took:.1f} s after the link came back; "
        f"a consumer started during the cut loaded in {started['loaded_s']:.1f} s"
    )
