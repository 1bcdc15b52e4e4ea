"""The writer and its Log under faults, with real processes: a writer killed (SIGKILL)
mid-run keeps every write it acknowledged and nothing half-made; a writer killed while it
holds the Log's lock does not block the next one; a damaged log file gives a clear
nearstate error naming it; a compaction killed mid-way leaves a complete version and
loses nothing."""

from __future__ import annotations

import random
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import nearstate
from history import LONG, Child, spawn
from nearstate.backends.local_log import LocalLog
from nearstate.writer import LOG_POSITION, decode_entry

# --- children ---------------------------------------------------------------------------------


# --- reading the log and a state back ---------------------------------------------------------


def all_entries(log: LocalLog) -> list[Any]:
    """Every entry kept in the Log, decoded, oldest first."""
    out: list[Any] = []
    after = 0
    while True:
        rows = log.read(after, 5000)
        if not rows:
            return out
        out.extend(decode_entry(p, b) for p, b in rows)
        after = rows[-1][0]


def items(state: Any) -> dict[Any, int]:
    """Key -> ``n`` of every Item record in a state (a key met twice is a failure)."""
    out: dict[Any, int] = {}
    for r in state["Item"]:
        assert r.key not in out, f"key {r.key!r} appears twice in the state"
        out[r.key] = r["n"]
    return out


def integrity(path: Path) -> str:
    """SQLite's own check of the log file ('ok' when sound)."""
    with sqlite3.connect(path) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]


# --- a writer killed mid-run ------------------------------------------------------------------

_CRASHING_WRITER = """
import sys
import nearstate
path, mode = sys.argv[1:3]
w = nearstate.open(path).writer()
for i in range(10_000):
    if mode == "single":
        tok = w.upsert("Item", {"id": f"k{i}", "n": i})
    else:
        with w.transaction() as tx:
            for j in range(5):
                tx.upsert("Item", {"id": f"t{i}-{j}", "n": i})
        tok = tx.token
    print(int(tok), i, flush=True)  # only once the commit returned: acknowledged
print("finished", flush=True)
"""


def _acks_until_killed(children: list[Child], path: Path, mode: str, n: int) -> dict[int, int]:
    """Run the crashing writer, SIGKILL it after ``n`` acknowledgements; sequence -> token
    of every write it acknowledged (read before and after the kill)."""
    p = spawn(children, _CRASHING_WRITER, str(path), mode)
    lines = [p.read_line() for _ in range(n)]
    p.kill()
    lines += p.rest()
    assert "finished" not in lines, "the writer finished before it was killed"
    acked = {}
    for ln in lines:
        tok, i = map(int, ln.split())
        acked[i] = tok
    assert list(acked) == list(range(len(acked))), "acknowledgements out of order"
    return acked


def test_killed_writer_keeps_every_acknowledged_single_upsert(
    tmp_path: Path, children: list[Child]
) -> None:
    """A process committing single-record upserts is SIGKILLed after a few thousand
    acknowledgements. Every acknowledged write is in the Log exactly once, at its token,
    and a fresh consumer shows it with its value; at most the one commit in flight when
    the kill came is there unacknowledged; the file passes SQLite's integrity check, and
    new writes get positions past every old one."""
    path = tmp_path / "ds"
    acked = _acks_until_killed(children, path, "single", random.randint(3000, 5000))
    ds = nearstate.open(path)
    assert integrity(ds.log.path) == "ok"

    entries = all_entries(ds.log)
    positions = [e.position for e in entries]
    assert positions == sorted(set(positions))
    per_key = Counter(k for e in entries for (_, k, _) in e.mutations)
    assert all(c == 1 for c in per_key.values()), per_key.most_common(3)
    logged = {k: (e.position, rec) for e in entries for (_, k, rec) in e.mutations}
    for i, tok in acked.items():
        assert logged.get(f"k{i}") == (tok, {"id": f"k{i}", "n": i}), i
    extra = set(logged) - {f"k{i}" for i in acked}
    assert extra <= {f"k{len(acked)}"}, sorted(extra)[:5]  # only the one in flight

    c = ds.consumer()
    c.refresh()
    assert c.position == ds.log.head() == positions[-1]
    shown = items(c.state)
    assert set(shown) == set(logged)
    assert all(shown[f"k{i}"] == i for i in acked)

    w = ds.writer()
    assert w.token_of("Item", "k0") == acked[0]
    head = ds.log.head()
    t1 = w.upsert("Item", {"id": "after", "n": -1})
    t2 = w.upsert("Item", {"id": f"k{len(acked) - 1}", "n": -2})
    assert head < t1 < t2
    assert [e.position for e in all_entries(ds.log)] == [*positions, t1, t2]
    s = c.wait_for(t2, timeout=LONG)
    assert s["Item"].get("after")["n"] == -1
    assert s["Item"].get(f"k{len(acked) - 1}")["n"] == -2


def test_killed_writer_commits_each_transaction_whole_or_not_at_all(
    tmp_path: Path, children: list[Child]
) -> None:
    """A process committing transactions of five upserts is SIGKILLed mid-run. Each
    transaction is one Log entry holding all five keys; every acknowledged one is shown
    whole by a fresh consumer, and no transaction is shown in part."""
    path = tmp_path / "ds"
    acked = _acks_until_killed(children, path, "tx", random.randint(2000, 4000))
    ds = nearstate.open(path)
    assert integrity(ds.log.path) == "ok"

    committed = {}
    for e in all_entries(ds.log):
        seqs = {rec["n"] for (_, _, rec) in e.mutations}
        assert len(seqs) == 1, f"entry {e.position} mixes transactions {seqs}"
        (i,) = seqs
        assert sorted(k for (_, k, _) in e.mutations) == [f"t{i}-{j}" for j in range(5)]
        assert i not in committed, f"transaction {i} committed twice"
        committed[i] = e.position
    assert all(committed.get(i) == tok for i, tok in acked.items())
    assert set(committed) - set(acked) <= {len(acked)}

    c = ds.consumer()
    c.refresh()
    by_tx: dict[int, set[str]] = {}
    for key, n in items(c.state).items():
        by_tx.setdefault(n, set()).add(key)
    assert set(by_tx) == set(committed)
    for i, keys in by_tx.items():
        assert keys == {f"t{i}-{j}" for j in range(5)}, f"transaction {i} shown in part"

    tok = ds.writer().upsert("Item", {"id": "after", "n": -1})
    assert tok > max(committed.values())
    assert c.wait_for(tok, timeout=LONG)["Item"].get("after")["n"] == -1


_CRASHING_THREADS = """
import sys, threading
import nearstate
path, threads = sys.argv[1], int(sys.argv[2])
ds = nearstate.open(path)
w = ds.writer()  # shared: commits queued at once are written in one transaction
out = threading.Lock()  # one whole line at a time

def say(*words):
    with out:
        print(*words, flush=True)

def run(t):
    for i in range(100_000):
        tok = w.upsert("Item", {"id": f"t{t}-{i}", "n": i})
        say(int(tok), t, i)  # only once the commit returned: acknowledged
        if t == 0 and i % 100 == 99:
            st = ds.log.commit_stats()
            say("stats", st["entries"], st["transactions"])

for t in range(threads):
    threading.Thread(target=run, args=(t,)).start()
"""


def test_killed_writer_keeps_what_its_threads_had_acknowledged(
    tmp_path: Path, children: list[Child]
) -> None:
    """A process whose six threads commit through one writer (their commits written in
    groups, one fsync for those queued together) is SIGKILLed mid-group. Every write any
    thread had acknowledged is in the Log at its token with its value; beyond them at most
    the one write each thread had in flight; each thread's tokens grow; the file passes
    SQLite's integrity check, and the writes did share transactions."""
    path, threads = tmp_path / "ds", 6
    p = spawn(children, _CRASHING_THREADS, str(path), str(threads))
    lines = [p.read_line() for _ in range(random.randint(3000, 5000))]
    p.kill()
    lines += p.rest()
    acked: dict[tuple[int, int], int] = {}
    stats = []
    for ln in lines:
        parts = ln.split()
        if parts[0] == "stats":
            stats.append((int(parts[1]), int(parts[2])))
            continue
        tok, t, i = map(int, parts)
        acked[t, i] = tok
    for t in range(threads):
        mine = [acked[k] for k in sorted(k for k in acked if k[0] == t)]
        assert [k[1] for k in sorted(k for k in acked if k[0] == t)] == list(range(len(mine)))
        assert mine == sorted(mine), f"thread {t}'s tokens went back"
    assert stats and stats[-1][1] < stats[-1][0], f"no commits shared a transaction: {stats}"

    ds = nearstate.open(path)
    assert integrity(ds.log.path) == "ok"
    entries = all_entries(ds.log)
    logged = {k: (e.position, rec) for e in entries for (_, k, rec) in e.mutations}
    assert len(logged) == sum(len(e.mutations) for e in entries)  # each key once
    for (t, i), tok in acked.items():
        assert logged.get(f"t{t}-{i}") == (tok, {"id": f"t{t}-{i}", "n": i}), (t, i)
    next_of = {t: sum(1 for k in acked if k[0] == t) for t in range(threads)}
    extra = set(logged) - {f"t{t}-{i}" for t, i in acked}
    assert extra <= {f"t{t}-{n}" for t, n in next_of.items()}, sorted(extra)[:5]
    c = ds.consumer()
    c.refresh()
    assert set(items(c.state)) == set(logged)


# --- a writer killed while it holds the Log's lock --------------------------------------------

_LOCK_HOLDER = """
import sys, time
import nearstate
from nearstate.ports import Append
from nearstate.writer import encode_entry, key_id

class Stall(list):
    # the Log iterates the keys after inserting the entry's row: stall there, mid-append
    def __iter__(self):
        print("inserted", flush=True)
        time.sleep(600)
        return super().__iter__()

def prepare(view):
    print("locked", flush=True)
    body = encode_entry([("Item", "ghost", {"id": "ghost", "n": 666})], False)
    return Append(body, Stall([("Item", key_id("ghost"), True)]))

nearstate.open(sys.argv[1]).log.append(prepare)
print("committed", flush=True)
"""


def test_writer_killed_holding_the_log_lock_leaves_no_half_entry(
    tmp_path: Path, children: list[Child]
) -> None:
    """A process that has locked the Log and inserted half of an entry is SIGKILLed. While
    it held the lock another writer could not commit (it times out with LogUnavailable)
    but readers could read; once it is dead the next writer commits at once, and the half
    entry is nowhere: not in the Log, not in a consumer, not in the key's token."""
    path = tmp_path / "ds"
    ds = nearstate.open(path)
    w = ds.writer()
    before = [w.upsert("Item", {"id": f"k{i}", "n": i}) for i in range(5)]
    c = ds.consumer()
    c.refresh()

    p = spawn(children, _LOCK_HOLDER, str(path))
    assert p.read_line() == "locked"
    assert p.read_line() == "inserted"
    impatient = nearstate.Writer(LocalLog(path, busy_timeout=0.5))
    with pytest.raises(nearstate.LogUnavailable, match="cannot lock"):
        impatient.upsert("Item", {"id": "blocked", "n": 1})
    assert ds.log.head() == before[-1]  # reading is not blocked
    assert items(c.sync(timeout=LONG)) == {f"k{i}": i for i in range(5)}

    p.kill()
    t0 = time.monotonic()
    tok = w.upsert("Item", {"id": "next", "n": 7})
    assert time.monotonic() - t0 < LONG / 2  # not left waiting for a dead lock holder
    assert tok > before[-1]
    entries = all_entries(ds.log)
    assert [e.position for e in entries] == [*before, tok]
    assert all(k != "ghost" for e in entries for (_, k, _) in e.mutations)
    assert w.token_of("Item", "ghost") is None
    shown = items(c.wait_for(tok, timeout=LONG))
    assert shown == {**{f"k{i}": i for i in range(5)}, "next": 7}
    fresh = nearstate.open(path).consumer()
    fresh.refresh()
    assert "ghost" not in items(fresh.state)
    assert integrity(ds.log.path) == "ok"


# --- a damaged log file -----------------------------------------------------------------------


def _garbage_header(p: Path) -> None:
    with open(p, "r+b") as f:
        f.write(b"this is no database" * 6)


def _garbage_pages(p: Path) -> None:
    size = p.stat().st_size
    with open(p, "r+b") as f:
        f.seek(4096)  # keep the first page (the header): the damage shows when reading
        f.write(random.Random(7).randbytes(size - 4096))


def _unreadable(p: Path) -> None:
    """Not a readable database file: a directory in its place (unreadable even to root,
    whom file permissions do not stop)."""
    for extra in p.parent.glob(p.name + "-*"):
        extra.unlink()
    p.unlink()
    p.mkdir()


def _damaged(tmp_path: Path, damage: Callable[[Path], None]) -> Path:
    """A dataset with a version and a Log of a few hundred entries, then damaged."""
    path = tmp_path / "ds"
    ds = nearstate.open(path)
    w = ds.writer()
    for i in range(300):
        w.upsert("Item", {"id": f"k{i}", "n": i, "pad": "x" * 200})
    ds.compact()
    for i in range(5):
        w.upsert("Item", {"id": f"k{i}", "n": -i})
    ds.log.close()
    del ds, w
    log_file = path / "log.sqlite"
    assert not (path / "log.sqlite-wal").exists() or (path / "log.sqlite-wal").stat().st_size == 0
    damage(log_file)
    return path


DAMAGES = [
    pytest.param(_garbage_header, id="garbage-header"),
    pytest.param(_garbage_pages, id="garbage-pages"),
    pytest.param(_unreadable, id="unreadable"),
]


def _two_in_one(w: nearstate.Writer) -> object:
    with w.transaction() as tx:
        tx.upsert("Item", {"id": "a", "n": 1})
        tx.upsert("Item", {"id": "b", "n": 2}, expect_absent=True)
    return tx.token


@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_log_gives_a_log_error_naming_the_file(
    tmp_path: Path, damage: Callable[[Path], None]
) -> None:
    """With the log file damaged or unreadable, writing, asking a key's token, refreshing,
    waiting for a token, a strong read and compacting each raise a nearstate LogError
    that names the file, not a raw sqlite3 exception; and the announced version is
    still readable on its own."""
    path = _damaged(tmp_path, damage)
    log_file = str(path / "log.sqlite")
    ds = nearstate.open(path)
    announced = ds.latest_version()
    calls: dict[str, Callable[[], object]] = {
        "upsert": lambda: ds.writer().upsert("Item", {"id": "new", "n": 1}),
        "transaction": lambda: _two_in_one(ds.writer()),
        "token_of": lambda: ds.writer().token_of("Item", "k1"),
        "head": lambda: ds.log.head(),
        "refresh": lambda: ds.consumer().refresh(),
        "wait_for": lambda: ds.consumer().wait_for(1, timeout=2),
        "sync": lambda: ds.consumer().sync(timeout=2),
        "compact": lambda: ds.compact(),
    }
    for name, call in calls.items():
        try:
            call()
        except nearstate.LogError as e:
            assert log_file in str(e), f"{name}: {e}"
            continue
        except Exception as e:
            pytest.fail(f"{name} raised {type(e).__module__}.{type(e).__name__}: {e}")
        pytest.fail(f"{name} returned despite the damaged log")
    assert ds.latest_version() == announced
    assert len(ds.load()["Item"]) == 300


@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_log_stats_and_floor_raise_a_log_error(
    tmp_path: Path, damage: Callable[[Path], None]
) -> None:
    """The Log's own look at itself (``floor``, ``stats``, as ``nearstate inspect`` shows
    it) raises a LogError naming the file for a damaged log too, like every other call."""
    path = _damaged(tmp_path, damage)
    log = LocalLog(path)
    for name, call in {"floor": log.floor, "stats": log.stats}.items():
        try:
            call()
        except nearstate.LogError as e:
            assert str(path / "log.sqlite") in str(e), f"{name}: {e}"
            continue
        except Exception as e:
            pytest.fail(f"{name} raised {type(e).__module__}.{type(e).__name__}: {e}")
        pytest.fail(f"{name} returned despite the damaged log")


def test_malformed_entry_stops_refresh_and_compaction_with_a_log_error(tmp_path: Path) -> None:
    """An entry whose bytes are not an entry (written over behind nearstate's back) makes
    a refresh and a compaction raise LogError naming its position; nothing is announced
    past it and the consumer keeps showing what it showed."""
    path = tmp_path / "ds"
    ds = nearstate.open(path)
    w = ds.writer()
    toks = [w.upsert("Item", {"id": f"k{i}", "n": i}) for i in range(10)]
    assert ds.compact().version == 1
    c = ds.consumer()
    c.refresh()
    more = [w.upsert("Item", {"id": f"k{i}", "n": 100 + i}) for i in range(3)]
    with sqlite3.connect(ds.log.path) as conn:
        conn.execute("UPDATE log SET body = ? WHERE pos = ?", (b"\xc1 not msgpack", more[1]))
    with pytest.raises(nearstate.LogError, match=f"entry {int(more[1])}"):
        c.refresh()
    assert toks[-1] <= c.position < more[1]  # stopped before the bad entry
    want = {f"k{i}": i for i in range(10)}
    if c.position == more[0]:  # the good entry before it may be shown
        want["k0"] = 100
    assert items(c.state) == want
    with pytest.raises(nearstate.LogError, match=f"entry {int(more[1])}"):
        ds.compact()
    assert ds.latest_version() == 1


# --- a compaction killed mid-way --------------------------------------------------------------

_STEADY_WRITER = """
import os, sys
import nearstate
path, stop = sys.argv[1:3]
w = nearstate.open(path).writer()
print("ready", flush=True)
i = 0
while not os.path.exists(stop):
    i += 1
    tok = w.upsert("Item", {"id": f"k{i % 300}", "n": i})
    print(int(tok), i, flush=True)
print("finished", flush=True)
"""

_COMPACTOR = """
import sys
import nearstate
ds = nearstate.open(sys.argv[1])
while True:
    r = ds.compact(snapshot_every=1, retain_snapshots=1)  # removes old versions, trims the Log
    print("compacted", r.version, flush=True)
"""


def test_compaction_killed_midway_leaves_a_complete_version_and_loses_nothing(
    tmp_path: Path, children: list[Child]
) -> None:
    """A process compacting in a loop is SIGKILLed at random moments, five times, while
    another process keeps writing. Afterwards the announced version loads with its
    checksums verified and holds exactly the writes up to its Log position; a fresh
    consumer shows every acknowledged write once, with its last value; and a new
    compaction succeeds and folds in the rest."""
    path = tmp_path / "ds"
    ds = nearstate.open(path)
    w = ds.writer()
    w.upsert("Item", {"id": "k0", "n": 0})
    assert ds.compact().version == 1
    stop = tmp_path / "stop"
    writer = spawn(children, _STEADY_WRITER, str(path), str(stop))
    assert writer.read_line() == "ready"
    rng = random.Random()
    compactions = 0
    for _ in range(5):
        p = spawn(children, _COMPACTOR, str(path))
        assert p.read_line().startswith("compacted")
        time.sleep(rng.uniform(0, 0.15))
        p.kill()
        compactions += 1 + sum(ln.startswith("compacted") for ln in p.rest())
    stop.touch()
    acked: list[tuple[int, int]] = []  # (token, n) of each write, in order
    while (ln := writer.read_line()) != "finished":
        tok, n = map(int, ln.split())
        acked.append((tok, n))
    writer.wait()
    assert len(acked) > 100 and compactions >= 5

    ds = nearstate.open(path)
    version = ds.latest_version()
    assert version is not None and version > 1
    v = ds.load(verify=True)
    vpos = int(v.tags[LOG_POSITION])
    assert 0 < vpos <= ds.log.head()
    upto = {"k0": 0}  # each key's last value at or before the version's Log position
    last = {"k0": 0}  # each key's last acknowledged value
    for tok, n in acked:
        last[f"k{n % 300}"] = n
        if tok <= vpos:
            upto[f"k{n % 300}"] = n
    assert items(v) == upto

    c = ds.consumer()
    s = c.sync(timeout=LONG)
    assert c.version == version
    assert items(s) == last

    last["k1"] = -1
    tok = ds.writer().upsert("Item", {"id": "k1", "n": -1})
    assert items(c.wait_for(tok, timeout=LONG)) == last
    r = ds.compact()
    assert r.version == version + 1
    assert items(ds.load(verify=True)) == last
    assert int(ds.load().tags[LOG_POSITION]) == ds.log.head()
    fresh = nearstate.open(path).consumer()
    assert items(fresh.sync(timeout=LONG)) == last


def test_blobs_of_a_version_never_announced_do_not_shadow_the_next_one(tmp_path: Path) -> None:
    """A producer stores every blob of version 2, a snapshot among them, and dies before
    announcing it. The next producer reuses the number 2 and publishes only a delta:
    readers must get its records, not the dead producer's stale snapshot (which, found
    first, would win the route), and a cleanup must not take the announced version's
    snapshot for an older one."""
    ds = nearstate.open(tmp_path / "ds")
    w = ds.writer()
    w.upsert("Item", {"id": "a", "n": 1})
    assert ds.compact().version == 1
    w.upsert("Item", {"id": "a", "n": 2})

    class Dies(Exception):
        pass

    with ds.producer(snapshot_every=1) as p:

        def die(_: Any) -> None:
            raise Dies("killed before announcing")

        p.announcer = type("A", (), {"announce": staticmethod(die)})()
        with pytest.raises(nearstate.CycleError, match="killed before announcing"):
            nearstate.compact(p, ds.log)
    assert ds.latest_version() == 1
    assert any(n.startswith("snapshots/") and n.endswith("2.blob") for n in ds.blobs.list())

    w.upsert("Item", {"id": "a", "n": 3})
    r = ds.compact(retain_snapshots=1)  # a delta for version 2, then a cleanup
    assert r.version == 2 and not r.snapshot
    assert items(ds.load(verify=True)) == {"a": 3}
    c = ds.consumer()
    assert items(c.sync(timeout=LONG)) == {"a": 3}
    assert items(nearstate.open(tmp_path / "ds").load(1)) == {"a": 1}  # still routable
