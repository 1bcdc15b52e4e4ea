"""The Log backends held to ``LogContract`` (nearstate.testing): the in-memory MemoryLog and
the SQLite LocalLog; plus what only LocalLog promises: handles on one directory (and other
processes) share the Log, and the file appears only with the first append."""

from __future__ import annotations

import select
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from nearstate.backends.local_log import FILE, LocalLog
from nearstate.backends.memory import MemoryLog
from nearstate.errors import LogError, LogUnavailable
from nearstate.ports import Append, Log, LogView
from nearstate.testing import LONG, PROMPT, SHORT, LogContract


class TestMemoryLog(LogContract):
    """One MemoryLog is every writer's handle."""

    @pytest.fixture
    def log(self) -> Log:
        return MemoryLog()


class TestLocalLog(LogContract):
    """Separate LocalLog objects on one directory, as separate writers would hold."""

    @pytest.fixture
    def log(self, tmp_path: Path) -> Log:
        return LocalLog(tmp_path / "ds")

    @pytest.fixture
    def second_log(self, tmp_path: Path) -> Log:
        return LocalLog(tmp_path / "ds")


# --- LocalLog only ---------------------------------------------------------------------------


def _put(log: Log, body: bytes, keys: list[tuple[str, str, bool]] | None = None) -> int:
    return log.append(lambda view: Append(body, list(keys or [])))


def test_local_handles_share_one_log(tmp_path: Path) -> None:
    """Two LocalLog handles on one directory see each other's entries, key positions and
    schema, and continue each other's positions."""
    a, b = LocalLog(tmp_path), LocalLog(tmp_path)
    assert _put(a, b"from a", [("T", "1", True)]) == 1
    assert b.head() == 1
    assert [(p, bytes(x)) for p, x in b.read(0)] == [(1, b"from a")]
    assert b.append(lambda v: Append(b"from b", [], {"types": []})) == 2
    assert a.head() == 2
    assert [(p, bytes(x)) for p, x in a.read(1)] == [(2, b"from b")]
    assert a.schema() == b.schema() is not None
    seen: list[tuple[int, bool] | None] = []

    def look(view: LogView) -> Append:
        seen.append(view.last("T", "1"))
        return Append(b"3", [])

    b.append(look)
    assert seen == [(1, True)]
    assert a.trim(2) == 2
    assert [(p, bytes(x)) for p, x in b.read(2)] == [(3, b"3")]


def test_local_file_appears_only_with_the_first_append(tmp_path: Path) -> None:
    """Reading a Log that was never written creates nothing: head 0, no entries, no schema,
    trim removes nothing, wait times out with 0, stats are zero; the first append creates
    the directory and the file."""
    root = tmp_path / "not-yet"
    log = LocalLog(root)
    assert log.head() == 0
    assert log.read(0) == []
    assert log.schema() is None
    assert log.trim(5) == 0
    t0 = time.monotonic()
    assert log.wait(0, SHORT) == 0
    assert time.monotonic() - t0 < SHORT + PROMPT
    assert log.stats() == {"head": 0, "floor": 0, "entries": 0, "bytes": 0}
    assert not root.exists()
    assert _put(log, b"first") == 1
    assert (root / FILE).is_file()
    stats = log.stats()
    assert (stats["head"], stats["entries"]) == (1, 1) and stats["bytes"] > 0


_CHILD_APPENDER = """
    import sys
    from nearstate.backends.local_log import LocalLog
    from nearstate.ports import Append

    log = LocalLog(sys.argv[1])
    print("ready", flush=True)
    sys.stdin.readline()  # wait for the parent's go
    print(log.append(lambda view: Append(b"from the child", [("T", "c", True)])), flush=True)
"""


def test_local_wait_sees_an_append_from_another_process(tmp_path: Path) -> None:
    """A waiter in this process returns promptly when another process appends (it cannot
    be woken in-process, so this exercises the polling path)."""
    log = LocalLog(tmp_path)
    _put(log, b"from the parent")
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_CHILD_APPENDER), str(tmp_path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert child.stdin is not None and child.stdout is not None
        ready, _, _ = select.select([child.stdout], [], [], LONG)
        assert ready and child.stdout.readline().strip() == "ready"
        child.stdin.write("go\n")
        child.stdin.flush()
        t0 = time.monotonic()
        head = log.wait(1, LONG)
        elapsed = time.monotonic() - t0
        out, err = child.communicate(timeout=LONG)
        assert child.returncode == 0, err
        assert out.strip() == "2"
        assert head == 2
        assert elapsed < PROMPT
        assert [(p, bytes(b)) for p, b in log.read(1)] == [(2, b"from the child")]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(LONG)


def test_local_first_appends_from_many_handles_at_once(tmp_path: Path) -> None:
    """Several writers appending at the same moment to a Log that does not exist yet (each
    thread with its own handle, as separate processes would) all succeed: creating the
    file and switching it to WAL mode waits for the others instead of failing with
    'database is locked'. Repeated on fresh directories, since the race is short."""
    n, trials = 12, 30
    failures: list[str] = []
    for trial in range(trials):
        root = tmp_path / f"trial-{trial}"
        start = threading.Barrier(n)
        errors: list[BaseException] = []

        def writer(root: Path = root, start: threading.Barrier = start,
                   errors: list[BaseException] = errors) -> None:  # fmt: skip
            log = LocalLog(root)
            start.wait()
            try:
                _put(log, b"x")
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=writer) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(LONG)
            assert not t.is_alive()
        if errors:
            failures.append(f"trial {trial}: {errors[0]!r}")
            break
        else:
            assert LocalLog(root).head() == n
    assert failures == []


# --- group commit: threads appending through one handle at once --------------------------


def _queued(log: LocalLog, n: int) -> None:
    """Wait until ``n`` appends wait behind the one being committed."""
    deadline = time.monotonic() + LONG
    while log._group is None or len(log._group.queue) < n:
        assert time.monotonic() < deadline, "the appends did not queue"
        time.sleep(0.001)


Held = tuple[threading.Thread, threading.Event, list[int]]


def _hold_the_lead(log: LocalLog, body: bytes = b"leader", key: str = "lead",
                   type_name: str = "T") -> Held:  # fmt: skip
    """A thread whose append is being committed until the returned event is set."""
    inside, go, out = threading.Event(), threading.Event(), []

    def prepare(view: LogView) -> Append:
        inside.set()
        assert go.wait(LONG)
        return Append(body, [(type_name, key, True)])

    t = threading.Thread(target=lambda: out.append(log.append(prepare)))
    t.start()
    assert inside.wait(LONG)
    return t, go, out


def test_threads_appending_at_once_share_one_transaction(tmp_path: Path) -> None:
    """Appends queued while another commits are written together in one transaction: each
    gets its own position, one refused by its prepare (or by SQLite) raises its own error
    in its own thread and leaves nothing behind, and the rest are committed."""
    log = LocalLog(tmp_path)
    assert _put(log, b"first", [("T", "first", True)]) == 1
    lead, go, lead_out = _hold_the_lead(log)
    outcomes: dict[str, object] = {}

    def append(name: str, prepare: Any) -> None:
        try:
            outcomes[name] = log.append(prepare)
        except Exception as e:
            outcomes[name] = e

    def refuse(view: LogView) -> Append:
        raise ValueError("c's condition failed")

    jobs = {
        "b": lambda v: Append(b"b", [("T", "b", True)]),
        "c": refuse,
        "d": lambda v: Append(object(), [("T", "d", True)]),  # type: ignore[arg-type]
        "e": lambda v: Append(b"e", [("T", "e", True)], {"types": ["e"]}),
    }
    threads = []
    for name, prepare in jobs.items():  # queued one after another, in this order
        threads.append(threading.Thread(target=append, args=(name, prepare)))
        threads[-1].start()
        _queued(log, len(threads))
    go.set()
    for t in [lead, *threads]:
        t.join(LONG)
    assert lead_out == [2]
    assert outcomes["b"] == 3 and outcomes["e"] == 4, outcomes
    assert isinstance(outcomes["c"], ValueError) and "c's condition" in str(outcomes["c"])
    assert isinstance(outcomes["d"], LogUnavailable), outcomes["d"]
    assert [(p, bytes(b)) for p, b in log.read(0)] == [
        (1, b"first"), (2, b"leader"), (3, b"b"), (4, b"e")]  # fmt: skip
    assert [k for t, k, _, _ in log.key_positions()] == ["b", "e", "first", "lead"]
    assert log.schema() is not None and "e" in log.schema()
    # one transaction for the first append, one for the leader's, one for the other four
    assert log.commit_stats() == {"transactions": 3, "entries": 4, "largest": 2}
    assert LocalLog(tmp_path).head() == 4  # durable: another handle reads them


def test_a_grouped_append_sees_the_ones_before_it(tmp_path: Path) -> None:
    """Conditions inside a group are checked against the transactions queued before
    them: of five writers creating one key at once, exactly one wins, and the others'
    conflicts name its token."""
    import nearstate
    from nearstate.errors import ConflictError
    from nearstate.writer import encode_entry, key_id

    ds = nearstate.open(tmp_path / "ds")
    w = ds.writer()
    w.upsert("Item", {"id": "seed", "n": 0})
    log = ds.log
    assert isinstance(log, LocalLog)
    entry = encode_entry([("Item", "lead", {"id": "lead", "n": -1})], False)
    lead, go, _ = _hold_the_lead(log, entry, key_id("lead"), "Item")
    outcomes: list[object] = []

    def create(n: int) -> None:
        try:
            outcomes.append(w.upsert("Item", {"id": "x", "n": n}, expect_absent=True))
        except ConflictError as e:
            outcomes.append(e)

    threads = [threading.Thread(target=create, args=(n,)) for n in range(5)]
    for i, t in enumerate(threads):
        t.start()
        _queued(log, i + 1)
    go.set()
    for t in [lead, *threads]:
        t.join(LONG)
    won = [o for o in outcomes if not isinstance(o, ConflictError)]
    lost = [o for o in outcomes if isinstance(o, ConflictError)]
    assert len(won) == 1 and len(lost) == 4, outcomes
    assert all(e.current == won[0] for e in lost), (won, lost)
    assert ds.consumer().sync()["Item"].get("x")["n"] == 0  # the first queued won
    # the seed, the leader, then the five creators in one transaction (one of them written)
    assert log.commit_stats() == {"transactions": 3, "entries": 3, "largest": 1}


def test_threads_committing_in_a_loop_share_fsyncs(tmp_path: Path) -> None:
    """Eight threads committing 50 records each through one writer: every token is
    distinct and every record is there, in fewer transactions than commits."""
    import nearstate

    ds = nearstate.open(tmp_path / "ds")
    w = ds.writer()
    tokens: list[list[int]] = [[] for _ in range(8)]

    def run(t: int) -> None:
        for i in range(50):
            tokens[t].append(int(w.upsert("Item", {"id": f"{t}-{i}", "n": i})))

    threads = [threading.Thread(target=run, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(LONG)
    flat = [x for ts in tokens for x in ts]
    assert sorted(flat) == list(range(1, 401))
    assert all(ts == sorted(ts) for ts in tokens)  # each thread's tokens grow
    s = ds.consumer().sync()
    assert all(s["Item"].get(f"{t}-{i}")["n"] == i for t in range(8) for i in range(50))
    stats = ds.log.commit_stats()
    assert stats["entries"] == 400 and stats["transactions"] < 400, stats


class _HeldCommit:
    """A connection whose COMMIT waits until ``release`` is set (``committing`` says it
    has been reached)."""

    def __init__(self, conn: Any):
        self.conn = conn
        self.committing, self.release = threading.Event(), threading.Event()

    def execute(self, sql: str, *args: Any) -> Any:
        if sql == "COMMIT":
            self.committing.set()
            assert self.release.wait(LONG)
        return self.conn.execute(sql, *args)

    def executemany(self, sql: str, *args: Any) -> Any:
        return self.conn.executemany(sql, *args)

    @property
    def in_transaction(self) -> bool:
        return self.conn.in_transaction


def test_a_grouped_append_returns_only_once_its_group_committed(tmp_path: Path) -> None:
    """No thread of a group hears its position before the group's COMMIT returns; a
    transaction refused after it wrote its row leaves nothing, and the next one in the
    group takes the next position."""
    log = LocalLog(tmp_path)
    assert _put(log, b"first", [("T", "first", True)]) == 1
    lead, go, lead_out = _hold_the_lead(log)
    returned: dict[str, object] = {}

    def append(name: str, keys: list[Any]) -> None:
        try:
            returned[name] = log.append(lambda v: Append(name.encode(), keys))
        except LogUnavailable as e:
            returned[name] = e

    jobs = {"a": [("T", "a", True)], "bad": [("T", "x", True), (None, "y", True)],
            "c": [("T", "c", True)]}  # fmt: skip
    threads = []
    for name, keys in jobs.items():
        threads.append(threading.Thread(target=append, args=(name, keys)))
        threads[-1].start()
        _queued(log, len(threads))
    # the next group's connection (the held leader has its own in hand)
    held = log._group.conn = _HeldCommit(log._group.conn)
    go.set()
    lead.join(LONG)
    assert lead_out == [2]
    assert held.committing.wait(LONG)  # the group of three has reached its COMMIT
    time.sleep(0.2)
    assert returned == {}, "a position was given before the COMMIT returned"
    held.release.set()
    for t in threads:
        t.join(LONG)
    assert returned["a"] == 3 and returned["c"] == 4, returned
    assert "NOT NULL" in str(returned["bad"])
    assert [(p, bytes(b)) for p, b in log.read(0)] == [
        (1, b"first"), (2, b"leader"), (3, b"a"), (4, b"c")]  # fmt: skip
    assert sorted(k for _, k, _, _ in log.key_positions()) == ["a", "c", "first", "lead"]


def test_a_thread_interrupted_while_queued_is_withdrawn(tmp_path: Path) -> None:
    """A thread interrupted (a signal's exception) while its append waits for the group
    ahead is withdrawn: nothing of it is written, the group ahead commits, and the next
    append on the handle neither waits nor hangs."""
    import signal

    class Interrupted(Exception):
        pass

    def interrupt(signum: int, frame: Any) -> None:
        raise Interrupted

    log = LocalLog(tmp_path)
    assert _put(log, b"first") == 1
    lead, go, lead_out = _hold_the_lead(log)
    old = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        with pytest.raises(Interrupted):
            _put(log, b"never")  # queued behind the held leader, on the main thread
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    go.set()
    lead.join(LONG)
    assert lead_out == [2]
    assert _put(log, b"after") == 3
    assert [bytes(b) for _, b in log.read(0)] == [b"first", b"leader", b"after"]


def test_threads_of_a_process_wait_for_a_stuck_commit_no_longer_than_busy_timeout(
    tmp_path: Path,
) -> None:
    """A commit stuck in its prepare holds the other threads of its process no longer than
    ``busy_timeout`` (as SQLite's lock holds other processes): they get LogUnavailable
    saying so, and nothing of theirs is written."""
    log = LocalLog(tmp_path, busy_timeout=0.5)
    assert _put(log, b"first") == 1
    lead, go, _ = _hold_the_lead(log)
    t0 = time.monotonic()
    with pytest.raises(LogUnavailable, match="other threads of this process held it"):
        _put(log, b"waits")
    assert 0.4 < time.monotonic() - t0 < 5
    go.set()
    lead.join(LONG)
    assert [bytes(b) for _, b in log.read(0)] == [b"first", b"leader"]


def test_an_append_inside_a_prepare_is_refused(tmp_path: Path) -> None:
    """A prepare that appends (a transaction inside a transaction) gets a LogError, not a
    thread waiting for itself."""
    log = LocalLog(tmp_path)

    def nested(view: LogView) -> Append:
        _put(log, b"inner")
        return Append(b"outer", [])

    with pytest.raises(LogError, match="inside another's prepare"):
        log.append(nested)
    assert log.head() == 0
    assert _put(log, b"after") == 1


def test_a_full_disk_fails_the_whole_group_and_names_it(tmp_path: Path) -> None:
    """A group whose transaction SQLite has to undo (the disk full) fails as one: every
    thread gets LogUnavailable naming the cause, nothing of the group is written, and the
    handle writes again once there is room."""
    log = LocalLog(tmp_path)
    assert _put(log, b"first") == 1
    lead, go, lead_out = _hold_the_lead(log)
    errors: dict[str, object] = {}

    def append(name: str, body: bytes) -> None:
        try:
            errors[name] = log.append(lambda v: Append(body, [("T", name, True)]))
        except LogUnavailable as e:
            errors[name] = e

    bodies = {"small": b"s", "huge": b"x" * 2_000_000, "after": b"a"}
    threads = []
    for name, body in bodies.items():
        threads.append(threading.Thread(target=append, args=(name, body)))
        threads[-1].start()
        _queued(log, len(threads))
    conn = log._group.conn
    assert conn is not None
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages + 20}")  # room for a little, not 2 MB
    go.set()
    for t in [lead, *threads]:
        t.join(LONG)
    assert lead_out == [2]
    for name in bodies:
        assert isinstance(errors[name], LogUnavailable), errors
        assert "full" in str(errors[name]), errors[name]
    assert [bytes(b) for _, b in log.read(0)] == [b"first", b"leader"]
    conn.execute("PRAGMA max_page_count = 1073741823")
    assert _put(log, b"room again") == 3
