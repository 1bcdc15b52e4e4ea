"""Several writer and reader processes (and a compactor) share one dataset — a local
directory, then a NATS JetStream dataset — for a few seconds; each records what it did
and saw, and the history is checked against the consistency nearstate promises (see
``tests/history.py``): read-your-writes, monotonic reads, strong reads, conditional
writes that never both commit, and no lost writes.

The checker is first shown to catch a history that breaks each property, so a passing
run means something."""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import history
import nearstate
from history import LONG, Child
from natsserver import drop, server_url, unique

RUN_SECONDS = 5.0
WRITERS = 3
GROUP_THREADS = 3  # writing threads in the group-commit process
READERS = 2
COUNTERS = ("c0", "c1", "c2")
KEYS_PER_WRITER = 20

# --- the checker catches each kind of violation ---------------------------------------------


def _init(key: str, token: int, n: int = 0) -> dict:
    return {"kind": "init", "key": key, "n": n, "token": token}


def _cas(proc: str, key: str, old: int, expect: int, token: int) -> dict:
    return {"kind": "cas", "proc": proc, "key": key, "old": old, "new": old + 1,
            "expect": expect, "token": token}  # fmt: skip


def _put(proc: str, key: str, n: int, token: int, t1: float) -> dict:
    return {"kind": "put", "proc": proc, "key": key, "n": n, "token": token,
            "t0": t1 - 0.001, "t1": t1}  # fmt: skip


def _read(proc: str, pos: int, vals: dict, kind: str = "read", **more: object) -> dict:
    return {"kind": kind, "proc": proc, "pos": pos, "vals": vals, **more}


GOOD = [
    _init("c0", 1),
    _put("w0", "w0-1", 1, 2, t1=10.0),
    _cas("w0", "c0", 0, 1, 3),
    _read("r0", 3, {"w0-1": 1, "c0": 1}),
    _cas("w1", "c0", 1, 3, 4),
    _put("w0", "w0-1", 2, 5, t1=11.0),
    {"kind": "ryw", "proc": "r0", "key": "r0", "n": 1, "token": 6, "t0": 11.5, "t1": 11.6,
     "pos": 6, "vals": {"r0": 1, "w0-1": 2, "c0": 2}},
    _read("r0", 6, {"w0-1": 2, "c0": 2, "r0": 1}, kind="strong", t0=12.0),
]  # fmt: skip
GOOD_FINAL = {"c0": 2, "w0-1": 2, "r0": 1}


def test_checker_accepts_a_good_history() -> None:
    """A history that keeps every promise gives no violation (the checks below are not
    merely always failing)."""
    assert history.check_all(GOOD, GOOD_FINAL) == []


def test_checker_catches_a_read_that_misses_its_own_write() -> None:
    """wait_for(token) returning a state without the process's own write is reported, and
    so is one whose position is short of the token."""
    stale = _read("r0", 6, {"r0": None}, kind="ryw", key="r0", n=1, token=6, t0=1.0, t1=1.1)
    older = _read("r0", 6, {"r0": 1}, kind="ryw", key="r0", n=2, token=7, t0=1.0, t1=1.1)
    bad = history.check_read_your_writes([stale, older])
    assert len(bad) == 3
    assert "wait_for returned r0=None" in bad[0]
    assert "wait_for returned r0=1" in bad[1]
    assert "wait_for(7) returned at position 6" in bad[2]


def test_checker_catches_reads_that_go_back() -> None:
    """A reader whose position decreases, or whose value of a key decreases or vanishes,
    is reported; other readers' values do not count against it."""
    evs = [
        _read("r0", 5, {"a": 3, "b": 1}),
        _read("r1", 2, {"a": 1}),  # another reader may be behind
        _read("r0", 4, {"a": 2, "b": None}),
    ]
    bad = history.check_monotonic_reads(evs)
    assert any("position 4 after 5" in b for b in bad)
    assert any("a=2 after a=3" in b for b in bad)
    assert any("b=None after b=1" in b for b in bad)
    assert len(bad) == 3


def test_checker_catches_two_conflicting_conditional_writes() -> None:
    """Two increments that both started from the same value (a lost update) break the
    chain and are reported; the final value then also falls short of the count."""
    evs = [_init("c0", 1), _cas("w0", "c0", 0, 1, 2), _cas("w1", "c0", 0, 1, 3)]
    bad = history.check_cas_chains(evs, {"c0": 1})
    assert any("both moved it from 0" in b for b in bad)
    assert any("committed 0->1 expecting token 1 at token 3" in b for b in bad)
    assert any("strong read shows 1 after 2 successful increments" in b for b in bad)


def test_checker_catches_a_cas_on_a_stale_token_and_a_wrong_final_count() -> None:
    """A success that expected a token other than the previous one's is reported even when
    the values chain, and so is a final value other than the count of increments."""
    evs = [_init("c0", 1), _cas("w0", "c0", 0, 1, 2), _cas("w1", "c0", 1, 1, 3)]
    bad = history.check_cas_chains(evs, {"c0": 2})
    assert len(bad) == 1 and "expecting token 1 at token 3" in bad[0]
    ok = [_init("c0", 1), _cas("w0", "c0", 0, 1, 2)]
    assert history.check_cas_chains(ok, {"c0": 1}) == []
    bad = history.check_cas_chains(ok, {"c0": 5})
    assert len(bad) == 1 and "shows 5 after 1 successful increments" in bad[0]


def test_checker_catches_a_lost_write() -> None:
    """An acknowledged write missing from the final state, or overwritten by an older one,
    is reported."""
    evs = [_put("w0", "a", 1, 2, 1.0), _put("w0", "a", 2, 3, 2.0), _put("w0", "b", 1, 4, 3.0)]
    bad = history.check_no_lost_writes(evs, {"a": 1})
    assert len(bad) == 2
    assert "a: last acknowledged 2" in bad[0] and "shows 1" in bad[0]
    assert "b: last acknowledged 1" in bad[1] and "shows None" in bad[1]


def test_checker_catches_a_token_given_twice() -> None:
    """Two acknowledged commits with one token are reported."""
    evs = [_put("w0", "a", 1, 7, 1.0), _cas("w1", "c0", 0, 1, 7)]
    bad = history.check_unique_tokens(evs)
    assert len(bad) == 1 and "token 7 acknowledged twice" in bad[0]


def test_checker_catches_a_stale_strong_read() -> None:
    """A sync() read missing a write acknowledged before the read began is reported; one
    acknowledged after it began may be missing."""
    evs = [
        _put("w0", "a", 1, 2, t1=1.0),
        _put("w0", "a", 2, 3, t1=5.0),
        _read("r0", 2, {"a": 1}, kind="strong", t0=4.0),  # fine: 2 came later
        _read("r0", 2, {"a": 1}, kind="strong", t0=6.0),  # stale
    ]
    bad = history.check_strong_reads(evs)
    assert len(bad) == 1 and "shows a=1, but a=2 was acknowledged" in bad[0]


def test_checker_catches_a_key_created_twice() -> None:
    """Two processes both creating one key with expect_absent, a refusal carrying a token
    other than the winner's, and a final value other than the winner's are reported; a
    key nobody created but someone was refused is reported too."""
    won = {"kind": "create", "proc": "p0", "key": "u1", "n": 0, "token": 5}
    evs = [
        won,
        {"kind": "create", "proc": "p1", "key": "u2", "n": 1, "token": 6},
        {"kind": "create", "proc": "p2", "key": "u2", "n": 2, "token": 7},
        {"kind": "refused", "proc": "p1", "key": "u1", "current": 4},
        {"kind": "refused", "proc": "p1", "key": "u3", "current": 9},
    ]
    bad = history.check_creations(evs, {"u1": 3})
    assert len(bad) == 4, bad
    assert "u1: p1 was refused with token 4, but p0 created it at token 5" in bad[0]
    assert "u1: created as 0 by p0 but the final read shows 3" in bad[1]
    assert "u2: created 2 times (by p1, p2)" in bad[2]
    assert "u3: created 0 times (by none)" in bad[3]
    assert history.check_creations([won], {"u1": 0}) == []


def test_load_skips_a_line_cut_short(tmp_path: Path) -> None:
    """A killed process may leave half a line at the end of its file; it is not an event."""
    p = tmp_path / "h.jsonl"
    p.write_text('{"kind": "read", "pos": 1, "vals": {}}\n{"kind": "re')
    assert history.load([p]) == [{"kind": "read", "pos": 1, "vals": {}}]


# --- the processes ----------------------------------------------------------------------------

COMMON = """
import json, os, random, sys, time
import nearstate
path, out_path, stop, me = sys.argv[1:5]
ds = nearstate.open(path)
out = open(out_path, "w")

def rec(proc=None, **e):
    e["proc"] = proc or me
    out.write(json.dumps(e) + "\\n")
    out.flush()

def stopped():
    return os.path.exists(stop)

def values(s, keys):
    items = s["Item"]
    seen = {}
    for k in keys:
        r = items.get(k)
        seen[k] = None if r is None else r["n"]
    return seen
"""

WRITE_LOOP = """
def write(me, w, c):
    rng = random.Random(me)
    i = 0
    while not stopped():
        i += 1
        key = f"{me}-{i % KEYS}"
        t0 = time.monotonic()
        tok = w.upsert("Item", {"id": key, "n": i})
        rec(kind="put", key=key, n=i, token=int(tok), t0=t0, t1=time.monotonic(), proc=me)
        if i % 2:
            continue
        ck = rng.choice(COUNTERS)
        for _ in range(50):
            expect = w.token_of("Item", ck)
            old = c.wait_for(expect, timeout=30)["Item"].get(ck)["n"]
            try:
                tok = w.upsert("Item", {"id": ck, "n": old + 1}, expect_token=expect)
            except nearstate.ConflictError as e:
                assert e.current is not None and e.current != expect, (e.current, expect)
                rec(kind="conflict", key=ck, expect=int(expect), current=int(e.current),
                    proc=me)
                continue
            rec(kind="cas", key=ck, old=old, new=old + 1, expect=int(expect), token=int(tok),
                proc=me)
            break
    return i
"""

# a writer process; "g0" writes from GROUP_THREADS threads sharing its writer and
# consumer (on the local backend their commits are written in groups: one SQLite
# transaction, one fsync, for those queued), each thread under a name of its own
WRITER = (
    WRITE_LOOP
    + """
import threading
w = ds.writer()
c = ds.consumer().start(timeout=30)
names = [f"{me}t{t}" for t in range(GROUP_THREADS)] if me.startswith("g") else [me]
print("ready", flush=True)
done = []
threads = [threading.Thread(target=lambda n=n: done.append(write(n, w, c))) for n in names]
for t in threads:
    t.start()
for t in threads:
    t.join()
c.stop()
assert len(done) == len(names), "a writing thread failed"
stats = getattr(ds.log, "commit_stats", lambda: {"entries": 0, "transactions": 0})()
print("done", sum(done), stats["entries"], stats["transactions"], flush=True)
"""
)

READER = """
c = ds.consumer().start(timeout=30)
lazy = ds.consumer()
lazy_at = 0.0
w = ds.writer()
print("ready", flush=True)
i = 0
while not stopped():
    i += 1
    s = c.state
    rec(kind="read", pos=c.position, vals=values(s, KEYS_ALL))
    if i % 5 == 0:
        t0 = time.monotonic()
        tok = w.upsert("Item", {"id": me, "n": i})
        t1 = time.monotonic()
        s = c.wait_for(tok, timeout=30)
        rec(kind="ryw", key=me, n=i, token=int(tok), t0=t0, t1=t1, pos=c.position,
            vals=values(s, KEYS_ALL))
    if i % 7 == 0:
        t0 = time.monotonic()
        s = c.sync(timeout=30)
        rec(kind="strong", t0=t0, pos=c.position, vals=values(s, KEYS_ALL))
    if time.monotonic() > lazy_at:  # a consumer not started lags far behind between reads
        lazy_at = time.monotonic() + 1.0
        t0 = time.monotonic()
        s = lazy.sync(timeout=30)
        me, lazy_me = f"{me}-lazy", me
        rec(kind="strong", t0=t0, pos=lazy.position, vals=values(s, KEYS_ALL))
        me = lazy_me
    time.sleep(0.003)
c.stop()
print("done", i, flush=True)
"""

HOLDER = """
c = ds.consumer().start(timeout=30)
print("ready", flush=True)
held = []  # (take number, state): each read again, unchanged, for about 1.5 s
take = 0
while not stopped():
    take += 1
    held.append((take, c.state))
    del held[:-8]
    for t, s in held:  # commits and compactions go on meanwhile
        rec(kind="held", take=t, n=len(s["Item"]), vals=values(s, KEYS_ALL))
    time.sleep(0.2)
c.stop()
print("done", take, flush=True)
"""

COMPACTOR = """
print("ready", flush=True)
n = 0
while not stopped():
    # every version a snapshot, only the newest kept: old versions go, the Log is trimmed
    r = ds.compact(snapshot_every=1, retain_snapshots=1)
    if r.version is not None:
        n += 1
    time.sleep(0.3)
print("done", n, flush=True)
"""


def _start(children: list[Child], role: str, *args: str) -> Child:
    """A process running ``role`` after the common prelude (args: dataset, history file,
    stop file, name)."""
    consts = (
        f"KEYS = {KEYS_PER_WRITER}\nCOUNTERS = {list(COUNTERS)!r}\nKEYS_ALL = {_all_keys()!r}\n"
        f"GROUP_THREADS = {GROUP_THREADS}\n"
    )
    p = Child(textwrap.dedent(COMMON) + consts + textwrap.dedent(role), *args)
    children.append(p)
    return p


def _all_keys() -> list[str]:
    """The counters, every writer's keys and every reader's own key."""
    writers = [f"w{i}-{k}" for i in range(WRITERS) for k in range(KEYS_PER_WRITER)]
    writers += [f"g0t{t}-{k}" for t in range(GROUP_THREADS) for k in range(KEYS_PER_WRITER)]
    return [*COUNTERS, *writers, *(f"r{i}" for i in range(READERS))]


@pytest.fixture(params=["local", "nats"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Where the shared dataset lives: a directory, or a NATS dataset (writers on several
    hosts would share it the same way)."""
    if request.param == "local":
        yield str(tmp_path / "ds")
        return
    url, name = server_url(), unique("cc")
    yield f"{url}/{name}"
    drop(url, name)


def test_concurrent_writers_readers_and_compactor_keep_every_promise(
    tmp_path: Path, target: str, children: list[Child]
) -> None:
    """Three writers (blind upserts of their own keys and conditional increments of shared
    counters), a fourth process doing the same from three threads through one writer (on
    the local backend their commits share transactions), two readers (eventual reads,
    read-your-writes and strong reads) and a compactor folding the Log every 0.3 s run
    together for a few seconds, with a holder that keeps eight states at a time for about
    1.5 s each and reads them again and again. Their recorded history shows
    read-your-writes, monotonic reads, strong reads, single-chain counters and no lost
    write; every held state reads as it did when taken, across the commits and compactions
    meanwhile; and the run did real work (commits, conflicts, compactions)."""
    path = target
    ds = nearstate.open(path)
    w = ds.writer()
    init = [
        {"kind": "init", "key": k, "n": 0, "token": int(w.upsert("Item", {"id": k, "n": 0}))}
        for k in COUNTERS
    ]
    assert ds.compact().version == 1
    stop = tmp_path / "stop"
    roles = [(WRITER, f"w{i}") for i in range(WRITERS)]
    roles.append((WRITER, "g0"))
    roles += [(READER, f"r{i}") for i in range(READERS)]
    roles.append((HOLDER, "h0"))
    roles.append((COMPACTOR, "compactor"))
    outs = []
    for role, me in roles:
        outs.append(tmp_path / f"{me}.jsonl")
        _start(children, role, str(path), str(outs[-1]), str(stop), me)
    for p in children:
        p.expect("ready")
    time.sleep(RUN_SECONDS)
    stop.touch()
    done = {}
    for (_, me), p in zip(roles, children, strict=True):
        line = p.expect("done").split()
        done[me] = int(line[1])
        if me == "g0":
            group_stats = int(line[2]), int(line[3])
        p.wait()

    events = init + history.load(outs)
    c = ds.consumer()
    s = c.sync(timeout=LONG)
    keys = _all_keys()
    final = {k: (None if s["Item"].get(k) is None else s["Item"].get(k)["n"]) for k in keys}
    violations = history.check_all(events, final)
    assert violations == [], "\n".join(violations[:30])
    # a state held across commits and compactions reads as it did when it was taken
    held: dict[int, list[dict]] = {}
    for e in events:
        if e["kind"] == "held":
            held.setdefault(e["take"], []).append(e)
    assert sum(len(v) >= 5 for v in held.values()) >= 5, "states were held long enough"
    for take, reads in held.items():
        first = reads[0]
        for r in reads[1:]:
            assert (r["n"], r["vals"]) == (first["n"], first["vals"]), (take, r, first)
    assert len({json.dumps(v[0]["vals"], sort_keys=True) for v in held.values()}) > 1

    # the run exercised what it claims to check
    kinds = {k: sum(e["kind"] == k for e in events) for k in
             ("put", "cas", "conflict", "read", "ryw", "strong")}  # fmt: skip
    assert kinds["put"] >= 30 and kinds["cas"] >= 10 and kinds["ryw"] >= 4, kinds
    assert kinds["read"] >= 20 and kinds["strong"] >= 2, kinds
    assert done["compactor"] >= 2, done
    if target == str(tmp_path / "ds"):  # local: the group's threads shared transactions
        entries, transactions = group_stats
        assert entries >= 30 and transactions < entries, group_stats
    assert ds.log.floor() > 0  # old versions were removed and the Log trimmed meanwhile
    assert sum(final[k] for k in COUNTERS) == kinds["cas"]

    # a compaction now, and a fresh consumer of the version alone, keep every value
    ds.compact()
    fresh = nearstate.open(path).consumer()
    fresh.refresh()
    assert fresh.version is not None and fresh.version >= 3
    s2 = fresh.state
    assert {k: (None if s2["Item"].get(k) is None else s2["Item"].get(k)["n"])
            for k in keys} == final  # fmt: skip


CREATOR = """
w = ds.writer()
print("ready", flush=True)
while not stopped():
    time.sleep(0.01)  # wait for the start: every creator begins at once
n = int(me[1:])
first = list(range(KEYS // 4))
random.Random(me).shuffle(first)  # a quarter in an order of its own, the rest in one shared order
keys = first + list(range(KEYS // 4, KEYS))
for k in keys:
    key = f"u{k}"
    try:
        tok = w.upsert("Item", {"id": key, "n": n}, expect_absent=True)
    except nearstate.ConflictError as e:
        rec(kind="refused", key=key, current=None if e.current is None else int(e.current))
        continue
    rec(kind="create", key=key, n=n, token=int(tok))
print("done", 0, flush=True)
"""


def test_racing_creators_create_each_key_once(
    tmp_path: Path, target: str, children: list[Child]
) -> None:
    """Four processes race to create the same 600 keys with expect_absent. Each key is
    created by exactly one of them, every refusal carries the winner's token, and a strong
    read shows each key with the winner's value."""
    path = tmp_path / "ds"
    ds = nearstate.open(path)
    ds.writer().upsert("Item", {"id": "seed", "n": -1})
    go = tmp_path / "go"
    outs = []
    for i in range(4):
        outs.append(tmp_path / f"p{i}.jsonl")
        p = Child(textwrap.dedent(COMMON) + "KEYS = 600\n" + textwrap.dedent(CREATOR),
                  str(path), str(outs[-1]), str(go), f"p{i}")  # fmt: skip
        children.append(p)
    for p in children:
        p.expect("ready")
    go.touch()
    for p in children:
        p.expect("done")
        p.wait()
    events = history.load(outs)
    s = ds.consumer().sync(timeout=LONG)
    final = {f"u{k}": s["Item"].get(f"u{k}")["n"] for k in range(600)}
    assert history.check_creations(events, final) == []
    assert sum(e["kind"] == "create" for e in events) == 600
    assert sum(e["kind"] == "refused" for e in events) == 1800


def test_conflict_on_an_absent_key_carries_no_token(tmp_path: Path) -> None:
    """A failed condition on a key that does not exist (never written, or deleted) raises
    ConflictError whose ``current`` is None, as ``token_of`` says for an absent key (the
    ConflictError documentation: "current ... (None when the key is absent)")."""
    w = nearstate.open(tmp_path / "ds").writer()
    t1 = w.upsert("Item", {"id": "a", "n": 1})
    with pytest.raises(nearstate.ConflictError) as never:
        w.upsert("Item", {"id": "b", "n": 1}, expect_token=t1)
    w.delete("Item", "a")
    assert w.token_of("Item", "a") is None
    with pytest.raises(nearstate.ConflictError) as deleted:
        w.upsert("Item", {"id": "a", "n": 2}, expect_token=t1)
    assert (never.value.current, deleted.value.current) == (None, None)
