"""The NATS JetStream backend under faults, with real processes on loopback.

* The NATS server is stopped (SIGTERM, and SIGKILL) in the middle of a run of one writer,
  one compactor (the producer) and four consumer processes, kept down a few seconds and
  started again on the same port and store. Meanwhile the consumers go on answering
  reads from memory and report their growing staleness and why; the writer's commits
  fail at once with ``LogUnavailable``. After the restart every process carries on by
  itself; no acknowledged write is lost or in the Log twice; every consumer, and one
  started late (from a snapshot plus the Log), ends with the same state.
* A producer is SIGKILLed in the middle of publishing (mid-snapshot with no version yet,
  mid-snapshot of the next version, and with every blob stored but nothing announced yet):
  nothing incomplete is ever announced or listed, the previous version stays announced and
  loads with its checksums verified, the dead producer's lock holds until its lease runs
  out, and then the next producer takes it and publishes.

Each test has a ``nats-server`` of its own (tests/natsserver.py ``Throwaway``): the shared
one is never stopped. Without a nats-server binary the tests skip, except under ``CI``.
"""

from __future__ import annotations

import json
import queue
import signal
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import nearstate
from history import LONG, Child
from natsserver import Throwaway, private_server
from nearstate import DatasetError, LockedError
from nearstate.versions import snapshot_name
from nearstate.writer import decode_entry

pytest.importorskip("nats", reason="the 'nats' extra is not installed")

Event = dict[str, Any]


# --- the server and the children --------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[Throwaway]:
    """A nats-server of this test's own, which it may stop and start again."""
    yield from private_server()


class Proc(Child):
    """A child printing one JSON object a line; :meth:`poll` gathers what it printed so
    far without waiting, so one test can follow several children at once."""

    def __init__(self, name: str, code: str, *args: str):
        super().__init__(code, *args)
        self.name = name
        self.events: list[Event] = []
        self.ended = False

    def poll(self) -> list[Event]:
        """Take in every line printed so far; return the new events."""
        new: list[Event] = []
        while not self.ended:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line is None:
                self._lines.put(None)
                self.ended = True
                break
            if line.endswith("\n"):  # a line cut short by a kill is no event
                new.append(json.loads(line))
        self.events.extend(new)
        return new

    def of(self, kind: str) -> list[Event]:
        self.poll()
        return [e for e in self.events if e["kind"] == kind]


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    """Children a test starts; any still running at the end are killed."""
    out: list[Proc] = []
    yield out
    for p in out:
        p.close()


def spawn(procs: list[Proc], name: str, code: str, *args: object) -> Proc:
    p = Proc(name, code, *map(str, args))
    procs.append(p)
    return p


def wait_until(
    cond: Callable[[], bool], what: str, procs: list[Proc], timeout: float = LONG
) -> None:
    """Poll ``cond`` (after taking in every child's output) until it holds; fail naming
    ``what``, with the children's stderr, after ``timeout`` seconds or if a child died."""
    deadline = time.monotonic() + timeout
    while True:
        for p in procs:
            p.poll()
            if p.ended and p.proc.poll() not in (None, 0, -signal.SIGKILL):
                pytest.fail(f"{p.name} died ({p.proc.returncode}) waiting for {what}: "
                            f"{p.stderr()[-3000:]}")  # fmt: skip
        if cond():
            return
        if time.monotonic() > deadline:
            errs = "\n".join(f"--- {p.name}:\n{p.stderr()[-1500:]}" for p in procs)
            pytest.fail(f"no {what} within {timeout:g} s\n{errs}")
        time.sleep(0.02)


def finish(p: Proc, timeout: float = LONG) -> None:
    """Wait for ``p`` to end by itself (status 0), then take in all it printed. Past
    ``timeout``, fail with the last things it said and its stderr."""
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.poll()
        pytest.fail(f"{p.name} did not end within {timeout:g} s; its last events: "
                    f"{p.events[-5:]}; stderr: {p.stderr()[-2000:]}")  # fmt: skip
    p._pump.join(LONG)
    p.poll()


# --- a server restart in the middle of a run ---------------------------------------------------

KEYS = 40  # counters the writer keeps overwriting: k0 .. k39
BASE = 100  # records written before the run: b0 .. b99, never changed afterwards
OUTAGE = 3.0  # seconds the server is down
CONSUMERS = 4

_WRITER = """
import json, os, sys, time
import nearstate
url, stop, keys = sys.argv[1], sys.argv[2], int(sys.argv[3])
w = nearstate.open(url).writer()
print(json.dumps({"kind": "ready", "pid": os.getpid()}), flush=True)
i = 0
while not os.path.exists(stop):
    t0 = time.monotonic()
    try:
        tok = w.upsert("Item", {"id": f"k{i % keys}", "n": i})
    except Exception as e:
        t1 = time.monotonic()
        print(json.dumps({"kind": "fail", "i": i, "t0": t0, "t1": t1, "type": type(e).__name__,
                          "log_error": isinstance(e, nearstate.LogError), "msg": str(e)}),
              flush=True)
        time.sleep(0.01)
    else:
        t1 = time.monotonic()  # acknowledged: the token came back
        print(json.dumps({"kind": "ack", "i": i, "token": int(tok), "t0": t0, "t1": t1}),
              flush=True)
        time.sleep(0.005)
    i += 1
print(json.dumps({"kind": "finished", "pid": os.getpid()}), flush=True)
"""

_COMPACTOR = """
import json, os, sys, time
import nearstate
url, stop = sys.argv[1:3]
ds = nearstate.open(url)
# keep every version: the Log is trimmed only up to the first one, so it keeps every write
# of the run for the test to check
comp = ds.compactor(interval=0.3, snapshot_every=3, retain_snapshots=None).start()
print(json.dumps({"kind": "ready", "pid": os.getpid(), "version": comp.producer.version}),
      flush=True)
last = None
while not os.path.exists(stop):
    now = (comp.producer.version, comp.last_error)
    if now != last:
        print(json.dumps({"kind": "status", "t": time.monotonic(), "version": now[0],
                          "error": now[1]}), flush=True)
        last = now
    time.sleep(0.05)
comp.stop()
comp.producer.close()
print(json.dumps({"kind": "finished", "pid": os.getpid(), "version": comp.producer.version}),
      flush=True)
"""

_CONSUMER = """
import json, os, sys, time
import nearstate
from nearstate.versions import read_record
url, stop = sys.argv[1:3]
ds = nearstate.open(url)
c = ds.consumer()
c.start(timeout=60)
v = c.version
want = ds.log.head()
s = c.sync(timeout=60)  # caught up: the version plus the Log up to the head asked for
print(json.dumps({
    "kind": "ready", "pid": os.getpid(), "version": v, "position": c.position,
    "version_position": int(read_record(ds.blobs, v)["tags"].get("log_position", 0)),
    "want": want, "items": {r.key: r["n"] for r in s["Item"]},
}), flush=True)
while not os.path.exists(stop):
    t0 = time.monotonic()
    s = c.state  # an eventual read: from memory, never blocks
    items = s["Item"]
    count = len(items)
    k0, b7 = items.get("k0"), items.get("b7")
    dt = time.monotonic() - t0
    print(json.dumps({
        "kind": "read", "t": t0, "dt": dt, "count": count, "k0": k0 and k0["n"],
        "b7": b7 and b7["n"], "pos": c.position, "version": c.version,
        "stale": c.staleness(), "err": c.last_error,
    }), flush=True)
    time.sleep(0.1)
s = c.sync(timeout=60)
print(json.dumps({"kind": "final", "pos": c.position, "version": c.version,
                  "items": {r.key: r["n"] for r in s["Item"]}}), flush=True)
c.stop()
"""


def _log_entries(ds: Any, after: int) -> list[Any]:
    """Every entry of the Log past ``after``, decoded, oldest first."""
    out: list[Any] = []
    while True:
        rows = ds.log.read(after, 5000)
        if not rows:
            return out
        out.extend(decode_entry(p, b) for p, b in rows)
        after = rows[-1][0]


def _replay(base: dict[str, int], entries: list[Any]) -> Iterator[tuple[int, dict[str, int]]]:
    """(position, Item key -> n) after each entry, starting from ``base``."""
    state = dict(base)
    for e in entries:
        for type_name, key, rec in e.mutations:
            assert type_name == "Item"
            if rec is None:
                state.pop(key, None)
            else:
                state[key] = rec["n"]
        yield e.position, dict(state)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_server_restart_mid_run(
    server: Throwaway, tmp_path: Path, procs: list[Proc], sig: signal.Signals
) -> None:
    """One writer, one compactor and four consumer processes run while the server is
    stopped for a few seconds and started again on the same port and store.

    During the outage every consumer keeps answering reads from memory (same records,
    each read in well under a second) and reports a staleness growing past a second and
    a last_error saying the log is unavailable; every commit of the writer fails with
    LogUnavailable saying so, each at once rather than after a timeout. After the restart,
    with no process restarted, the writer's commits are acknowledged again, the compactor
    publishes new versions, and the consumers are caught up and fresh again. At the end
    the Log holds every acknowledged write once, at its token, and nothing the writer was
    told was not written; all four consumers, and a fifth started after the restart from
    a snapshot plus the Log, show exactly the Log's final state."""
    url = f"{server.url}/run?lease=2"
    ds = nearstate.open(url)
    w = ds.writer()
    for i in range(BASE):
        w.upsert("Item", {"id": f"b{i}", "n": 1000 + i})
    for k in range(KEYS):
        w.upsert("Item", {"id": f"k{k}", "n": -1})
    assert ds.compact().version == 1
    floor = BASE + KEYS
    # the first version holds b0.. and k0..; the Log has been trimmed up to it, so from
    # here on they come from a snapshot only
    assert ds.log.stats()["floor"] == floor
    base = {**{f"b{i}": 1000 + i for i in range(BASE)}, **{f"k{k}": -1 for k in range(KEYS)}}

    stop_writes, stop_reads = tmp_path / "stop-writes", tmp_path / "stop-reads"
    writer = spawn(procs, "writer", _WRITER, url, stop_writes, KEYS)
    compactor = spawn(procs, "compactor", _COMPACTOR, url, stop_writes)
    consumers = [spawn(procs, f"consumer{j}", _CONSUMER, url, stop_reads)
                 for j in range(CONSUMERS)]  # fmt: skip

    def fresh(c: Proc, since: float) -> bool:
        """``c`` has read since ``since``, caught up with the Log (confirmed less than a
        second ago)."""
        return any(
            e["t"] > since and e["stale"] is not None and e["stale"] < 1.0 for e in c.of("read")
        )

    def versions(since: float = 0.0, until: float = float("inf")) -> list[int]:
        """The versions the compactor said it holds between ``since`` and ``until``."""
        return [e["version"] for e in compactor.of("status")
                if e["version"] is not None and since < e["t"] < until]  # fmt: skip

    # -- running: writes acknowledged, versions published, consumers following the Log
    start = time.monotonic()
    wait_until(lambda: len(writer.of("ack")) >= 50 and max(versions(), default=0) >= 2
               and all(fresh(c, start) and c.of("read")[-1]["err"] is None for c in consumers),
               "a steady run", procs)  # fmt: skip
    time.sleep(max(0.0, 1.5 - (time.monotonic() - start)))

    # -- the outage
    t_down = time.monotonic()
    server.stop(sig)
    t_stopped = time.monotonic()  # the server process is gone
    time.sleep(OUTAGE)
    t_restart = time.monotonic()
    server.start()
    t_up = time.monotonic()  # it listens again
    before = max(versions(until=t_restart))  # nothing can be published while it is down

    # -- everything resumes by itself: writes are acknowledged, consumers follow the Log
    wait_until(lambda: any(e["t0"] > t_up for e in writer.of("ack"))
               and all(fresh(c, t_up) for c in consumers), "recovery after the restart",
               procs, timeout=30)  # fmt: skip
    t_recovered = time.monotonic()
    # ... and the compactor publishes again (checked at the end: waited for here, so the
    # late consumer starts from a version published after the restart)
    deadline = time.monotonic() + 10
    while max(versions(), default=0) <= before and time.monotonic() < deadline:
        time.sleep(0.05)
    late = spawn(procs, "late", _CONSUMER, url, stop_reads)
    wait_until(lambda: bool(late.of("ready")), "the late consumer to start", procs)
    time.sleep(1.0)

    stop_writes.touch()
    finish(writer)
    finish(compactor)
    stop_reads.touch()
    for c in [*consumers, late]:
        finish(c)

    # -- the writer -----------------------------------------------------------------------
    acks, fails = writer.of("ack"), writer.of("fail")
    assert len(acks) >= 100, len(acks)
    # no write was acknowledged while the server was down
    assert not [a for a in acks if t_stopped < a["t0"] and a["t1"] < t_restart]
    # tokens grow as the writer received them (one writer: strictly)
    tokens = [a["token"] for a in acks]
    assert tokens == sorted(set(tokens)) and tokens[0] > floor
    # it kept trying during the outage, and each try failed with a clear LogUnavailable
    during = [f for f in fails if t_stopped < f["t0"] < t_restart]
    assert len(during) >= 20, f"{len(during)} failed writes during a {OUTAGE} s outage"
    wrong = [f for f in fails if f["type"] != "LogUnavailable" or not f["log_error"]
             or "unavailable" not in f["msg"] or server.url not in f["msg"]]  # fmt: skip
    assert not wrong, wrong[:3]
    # failures only around the outage: none well before the stop, none long after the
    # restart (reconnecting takes 0.2 s; JetStream may need a moment to come back)
    assert all(f["t1"] >= t_down and f["t0"] < t_up + 10 for f in fails), [
        (f["t0"] - t_down, f["t1"] - t_down) for f in fails
    ]
    # failing fast: a commit tried while the client knows it is disconnected is refused at
    # once (a few ms). 1 s is far above that even on a loaded two-core machine, and far
    # below a timeout (the client's request timeout is 2 s, a call's limit 6 s). A commit
    # already in flight when the server died is the exception: its reply may never come,
    # and the client only gives up on it after its request timeout; allow at most one per
    # phase of the outage (going down, coming up), bounded by the call's limit.
    slow = [f for f in fails if f["t1"] - f["t0"] >= 1.0]
    assert len(slow) <= 2 and all(f["t1"] - f["t0"] < 7.0 for f in slow), [
        (f["t0"] - t_down, f["t1"] - f["t0"], f["msg"]) for f in slow
    ]
    fast = [f["t1"] - f["t0"] for f in during if f["t0"] > t_stopped + 0.1]
    assert fast and statistics.median(fast) < 0.05, statistics.median(fast or [0])
    # after the restart, the same process commits again
    assert len([a for a in acks if a["t0"] > t_up]) >= 20
    assert writer.of("finished")[0]["pid"] == writer.of("ready")[0]["pid"] == writer.pid

    # -- the Log: each acknowledged write once, at its token; nothing refused is in it ----
    check = nearstate.open(url)
    entries = _log_entries(check, floor)
    positions = [e.position for e in entries]
    assert positions == sorted(set(positions)) and positions[0] == floor + 1
    logged: dict[int, int] = {}  # n (one per write) -> position
    for e in entries:
        assert len(e.mutations) == 1, e
        (_, key, rec) = e.mutations[0]
        assert key == f"k{rec['n'] % KEYS}", e
        assert rec["n"] not in logged, f"write {rec['n']} is in the Log twice"
        logged[rec["n"]] = e.position
    for a in acks:
        assert logged.get(a["i"]) == a["token"], f"acknowledged write {a} lost or misplaced"
    # a failed commit is in the Log only if the error said it might be ("may or may not
    # have been stored": its reply was lost); one refused as "nothing was written" never
    unacked = set(logged) - {a["i"] for a in acks}
    maybe = {f["i"] for f in fails if "may or may not" in f["msg"]}
    assert unacked <= maybe, (sorted(unacked - maybe), [f for f in fails if f["i"] in unacked])
    assert len(unacked) <= 2
    final_pos, final = list(_replay(base, entries))[-1]
    assert final_pos == check.log.head()
    # the final value of each key is its last acknowledged write (or a later write whose
    # outcome the writer could not know, when the Log holds it)
    last_ack: dict[str, int] = {}
    for a in acks:
        last_ack[f"k{a['i'] % KEYS}"] = a["i"]
    for key, n in last_ack.items():
        assert final[key] == n or (final[key] in unacked and final[key] > n), (key, n, final[key])

    # -- the consumers --------------------------------------------------------------------
    log_errors = 0  # reads during the outage whose last_error says the Log is unavailable
    for c in consumers:
        reads = c.of("read")
        out = [e for e in reads if t_stopped < e["t"] < t_restart]
        assert len(out) >= 5, f"{c.name}: {len(out)} reads during the outage"
        # answered from memory: at once, the whole dataset, the records as they were
        assert max(e["dt"] for e in out) < 0.5, (c.name, max(e["dt"] for e in out))
        assert all(e["count"] == BASE + KEYS and e["b7"] == 1007 for e in out), c.name
        settled = {e["pos"] for e in out if e["t"] > t_stopped + 0.5}
        assert len(settled) == 1, f"{c.name} moved on without a server: {settled}"
        # the staleness keeps growing: every read reports at least its time since the
        # server went away (nothing can have been confirmed after; 0.3 s for a reply
        # already received being handled late on a loaded machine), so past a second
        # and a half every one is over a second
        for e in out:
            assert e["stale"] is not None and e["stale"] >= e["t"] - t_stopped - 0.3, (c.name, e)
        late_out = [e for e in out if e["t"] > t_stopped + 1.5]
        assert late_out and all(e["stale"] > 1.0 for e in late_out), (c.name, late_out[:2])
        stales = [e["stale"] for e in late_out]
        assert stales == sorted(stales), (c.name, stales)
        # ... and says why. A follower notices within one round (0.5 s) when idle, but
        # one whose request was in flight as the server died waits for the request's
        # timeout (2 s) first: from 2.5 s on, every read must carry the reason. (The
        # consumer's two followers, of the Log and of the announcement, each set it: the
        # reason names the log or the KV bucket, and the server)
        errs = [e["err"] for e in out if e["t"] > t_stopped + 2.5]
        assert errs and all(e and "unavailable" in e and server.url in e for e in errs), (
            c.name, errs)  # fmt: skip
        log_errors += sum("the log NEARSTATE_LOG_run" in (e["err"] or "") for e in out)
        # ... and resumed by itself: fresh again after the restart, and moved on
        after = [e for e in reads if e["t"] > t_recovered]
        assert after and all(e["stale"] < 2.0 for e in after), (c.name, after[:3])
        assert max(e["pos"] for e in after) > out[0]["pos"]

    assert log_errors > 0

    # every consumer, started at the beginning or late, ends with the Log's final state
    for c in [*consumers, late]:
        (f,) = c.of("final")
        assert f["pos"] == final_pos, c.name
        assert f["items"] == final, (c.name, {k: (v, final.get(k)) for k, v in f["items"].items()
                                              if final.get(k) != v})  # fmt: skip

    # the late consumer started from a snapshot (plus deltas: every record b0.. is in the
    # versions only), laid the Log over it, and its first state was the Log's state at
    # some position
    (r,) = late.of("ready")
    assert r["version"] >= before and r["version_position"] > floor
    assert r["position"] >= r["want"] >= r["version_position"]
    at = dict(_replay(base, entries))
    assert any(at.get(p) == r["items"] for p in range(r["want"], r["position"] + 1)), (
        "the late consumer's first state is no state the Log went through"
    )
    assert len(r["items"]) == BASE + KEYS

    # -- the compactor, the same process, published again after the restart ---------------
    assert before >= 2
    assert compactor.of("finished")[0]["pid"] == compactor.pid
    assert ds.latest_version() == compactor.of("finished")[0]["version"]
    errors = [e["error"] for e in compactor.of("status") if e["t"] > t_up and e["error"]]
    assert max(versions(since=t_up), default=0) > before, (
        f"no version published after the restart; the compactor said: {errors[-1:]}"
    )
    # which the consumers and the late one moved to, their last_error cleared
    assert r["version"] > before
    for c in consumers:
        after = [e for e in c.of("read") if e["t"] > t_recovered]
        assert max(e["version"] for e in after) > before, c.name
        assert after[-1]["err"] is None, (c.name, after[-1]["err"])


# --- a producer killed mid-publish -------------------------------------------------------------

LEASE = 2.0  # seconds a dead producer's lock lasts (renewed every LEASE / 3 while alive)
RECORDS = 12_000  # about 29 MB of snapshot: long enough to publish to be killed midway
PUBLISH_LONG = 180.0  # how long a publisher of such a version may take to end by itself
MB = 1 << 20

_PUBLISHER = """
import json, random, sys, time
import nearstate
from nearstate import Field, FieldType, LockedError, Schema, TypeDef, WriteState
url, tag, n, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]

def say(kind, **kw):
    print(json.dumps({"kind": kind, "t": time.monotonic(), **kw}), flush=True)

ds = nearstate.open(url)
schema = Schema([TypeDef("Blob", (Field("id", FieldType("int")), Field("round", FieldType("str")),
                                  Field("data", FieldType("str"))), key=("id",))])
rng = random.Random(tag)
ws = WriteState(schema)
ws.add_many("Blob", [{"id": i, "round": tag, "data": rng.randbytes(1200).hex()}
                     for i in range(n)])

lock = ds.announcer.lock
def patient_lock(holder):
    # wait for the lock like an operator's retry loop would, saying when it was refused
    while True:
        try:
            lease = lock(holder)
        except LockedError as e:
            say("locked-out", msg=str(e))
            time.sleep(0.05)
            continue
        say("locked")
        return lease
ds.announcer.lock = patient_lock

put = ds.blobs.put
def traced_put(name, parts):
    # hand the store 1 MB at a time, saying how much it has taken, so the test can kill
    # this process at a known point of an upload (a snapshot's taken a little slower, so
    # the kill lands before its end even when the test is slow to react)
    def pieces():
        sent = 0
        for part in parts:
            mv = memoryview(part).cast("B")
            for i in range(0, len(mv), 1 << 20):
                yield mv[i:i + (1 << 20)]
                sent += len(mv[i:i + (1 << 20)])
                say("sent", name=name, bytes=sent)
                if name.startswith("snapshots/"):
                    time.sleep(0.01)
    say("put", name=name)
    size = put(name, pieces())
    say("stored", name=name, size=size)
    return size
ds.blobs.put = traced_put

announce = ds.announcer.announce
def held_announce(record):
    say("announcing", version=record["version"])
    if mode == "pause":
        sys.stdin.readline()  # every blob is stored: wait here (to be killed)
    announce(record)
    say("announced", version=record["version"])
ds.announcer.announce = held_announce

say("built")
v = ds.publish(ws)
say("published", version=v)
"""


def _published(ds: Any, version: int | None, tag: str | None) -> None:
    """The dataset announces ``version`` (None: nothing), published by round ``tag``, and
    that version is whole: it loads with every checksum verified, a fresh consumer holds
    it, and every blob listed can be read in full."""
    ann = ds.announced()
    if version is None:
        assert ann is None, ann
        with pytest.raises(DatasetError, match="nothing announced"):
            ds.load()
    else:
        assert ann is not None and ann["version"] == version, ann
        for name in (ann["snapshot"], ann["delta"], ann["reverse"]):
            assert name is None or name in ds.blobs.list(), name
        s = ds.load(verify=True)
        assert s.version == version
        assert len(s["Blob"]) == RECORDS
        assert {r["round"] for r in s["Blob"]} == {tag}
        c = ds.consumer()
        c.refresh()
        assert c.version == version and len(c.state["Blob"]) == RECORDS
    for name in ds.blobs.list():
        ds.blobs.get(name)  # the whole blob, its SHA-256 digest checked


def _obj_bytes(ds: Any) -> int:
    """Bytes in the object store's stream (chunks included, listed or not)."""
    conn = ds.blobs.conn
    return conn.run(conn.js.stream_info(ds.blobs.names.obj_stream)).state.bytes


def _kill_publisher(
    procs: list[Proc], url: str, tag: str, mode: str, when: Callable[[Proc], bool]
) -> tuple[Proc, float]:
    """Start a publisher of round ``tag``; SIGKILL it as soon as ``when(it)`` holds.
    Returns it (with all it printed) and the time of the kill."""
    p = spawn(procs, f"publisher-{tag}", _PUBLISHER, url, tag, RECORDS, mode)
    wait_until(lambda: when(p), f"publisher {tag} to reach its kill point", [p])
    p.kill()
    t_kill = time.monotonic()
    p._pump.join(LONG)
    p.poll()
    assert not p.of("published") and not p.of("announced"), p.events[-3:]
    return p, t_kill


def _sent(p: Proc, prefix: str, at_least: int) -> bool:
    return any(e["name"].startswith(prefix) and e["bytes"] >= at_least for e in p.of("sent"))


def _still_locked(ds: Any, t_kill: float) -> None:
    """Right after the kill, the dead producer's lease still holds the lock: a new
    producer is refused (the lock was renewed at most LEASE / 3 before the kill)."""
    with pytest.raises(LockedError, match="another producer"):
        ds.producer()
    assert time.monotonic() - t_kill < LEASE / 2, "the check came too late to mean anything"


def _publish(procs: list[Proc], url: str, tag: str, t_kill: float) -> Proc:
    """A publisher of round ``tag`` started after a kill: it takes the lock once the dead
    one's lease has run out, and publishes."""
    p = spawn(procs, f"publisher-{tag}", _PUBLISHER, url, tag, RECORDS, "finish")
    # a whole ~29 MB version (with its delta and reverse delta the second time): about
    # 20 s on a quiet machine, three times that once under a loaded CI run
    finish(p, PUBLISH_LONG)
    (locked,) = p.of("locked")
    # not before the lease ran out (it was renewed at most LEASE / 3 before the kill; a
    # slack for a late renewal) and not long after (the child's start, a 0.05 s retry)
    waited = locked["t"] - t_kill
    assert LEASE / 3 < waited < LEASE + 5, waited
    assert p.of("published") and p.of("announced")
    return p


def test_producer_killed_mid_publish_announces_nothing_incomplete(
    server: Throwaway, procs: list[Proc]
) -> None:
    """Producers of ~29 MB versions are SIGKILLed at three points of a publish; after each
    kill nothing incomplete is announced or even listed, the previous version (or none)
    stays announced and loads with every checksum verified, the dead producer's lock is
    refused to others until its lease runs out, and the next producer then takes it and
    publishes a version that loads whole.

    1. mid-snapshot of the first version (8 MB of it handed to the store): nothing
       announced, no blob listed, though chunks are in the store;
    2. a producer publishes version 1;
    3. mid-snapshot of version 2, after its delta and reverse delta were stored;
    4. with every blob of version 2 (its record too) stored, just before announcing;
    5. a producer publishes version 2 over the dead ones' leftovers."""
    url = f"{server.url}/pub?lease={LEASE:g}"
    ds = nearstate.open(url)

    # 1. killed mid-snapshot, no version yet
    p, t_kill = _kill_publisher(procs, url, "A", "finish", lambda p: _sent(p, "snapshots/", 8 * MB))
    _still_locked(ds, t_kill)
    assert [e["name"] for e in p.of("put")] == [snapshot_name(1)] and not p.of("stored")
    _published(ds, None, None)
    assert ds.blobs.list() == []
    assert _obj_bytes(ds) >= 4 * MB  # the killed upload's chunks are in, just not listed

    # 2. the next producer waits out the lease and publishes version 1
    _publish(procs, url, "B", t_kill)
    _published(ds, 1, "B")
    held = ds.consumer()
    held.refresh()
    assert held.version == 1

    # 3. killed mid-snapshot of version 2: delta and reverse delta stored, snapshot not
    p, t_kill = _kill_publisher(procs, url, "C", "finish", lambda p: _sent(p, "snapshots/", 3 * MB))
    _still_locked(ds, t_kill)
    assert {e["name"].split("/")[0] for e in p.of("stored")} == {"deltas", "reverse"}
    assert snapshot_name(2) not in ds.blobs.list()
    _published(ds, 1, "B")

    # 4. killed with everything of version 2 stored, its announcement not yet made
    p, t_kill = _kill_publisher(procs, url, "D", "pause", lambda p: bool(p.of("announcing")))
    _still_locked(ds, t_kill)
    stored = {e["name"].split("/")[0] for e in p.of("stored")}
    assert stored == {"deltas", "reverse", "snapshots", "versions"}
    _published(ds, 1, "B")
    held.refresh()
    assert held.version == 1 and {r["round"] for r in held.state["Blob"]} == {"B"}

    # 5. the next producer publishes version 2 (its own, over D's unannounced blobs)
    _publish(procs, url, "E", t_kill)
    _published(ds, 2, "E")
    assert {r["round"] for r in ds.load(1, verify=True)["Blob"]} == {"B"}
    # a consumer that held version 1 moves to 2 (by E's delta), with checksums verified
    held.refresh()
    assert held.version == 2 and {r["round"] for r in held.state["Blob"]} == {"E"}
