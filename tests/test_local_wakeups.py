"""LocalLog wakes waiters in other processes without polling (issue 18): real processes,
real sockets. Every waiter here is given a recheck (and poll) interval of several seconds,
so a wake-up within a fraction of a second can only have come from the notification."""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import signal
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from nearstate.backends.local_log import WAKE_DIR, WAKE_SUFFIX, LocalLog, wake_dir
from nearstate.ports import Append

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="Unix sockets")

SLOW = 5.0  # recheck and poll intervals: a wake-up faster than this was notified
LONG = 30.0


def _put(log: LocalLog, body: bytes = b"x") -> int:
    return log.append(lambda view: Append(body, [("T", body.decode(), True)]))


def _sockets(root: Path) -> list[str]:
    d = wake_dir(root)
    if not d.is_dir():
        return []
    return sorted(n for n in os.listdir(d) if n.endswith(WAKE_SUFFIX))


def _until(cond, timeout: float = LONG) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


# A reader process: THREADS threads each wait for the next COUNT positions after AFTER and
# print "<thread> <pos> <monotonic_ns when woken>" for each; intervals of SLOW seconds.
_READER = """
    import sys, threading, time
    from nearstate.backends.local_log import LocalLog

    root, after, count, threads, slow = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), \
        int(sys.argv[4]), float(sys.argv[5])
    log = LocalLog(root, poll_interval=slow, recheck_interval=slow)
    out = threading.Lock()

    def follow(t):
        seen = after
        while seen < after + count:
            h = log.wait(seen, 60)
            now = time.monotonic_ns()
            for p in range(seen + 1, h + 1):
                with out:
                    print(t, p, now, flush=True)
            seen = h

    ts = [threading.Thread(target=follow, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    print("ready", flush=True)
    for t in ts:
        t.join()
"""


class Reader:
    """A reader process; its lines are read by a thread (a pipe's buffered lines are not
    what select() sees)."""

    def __init__(self, root: Path, after: int, count: int, threads: int = 1):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(_READER), str(root), str(after),
             str(count), str(threads), str(SLOW)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        assert self.line() == "ready"

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())
        self.lines.put("")

    def line(self, timeout: float = LONG) -> str:
        line = self.lines.get(timeout=timeout)
        assert line, f"the reader ended: {self.proc.stderr.read() if self.proc.stderr else ''}"
        return line

    def woken(self) -> tuple[int, int, int]:
        t, p, ns = self.line().split()
        return int(t), int(p), int(ns)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(LONG)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


def test_a_reader_in_another_process_is_woken_within_milliseconds(tmp_path: Path) -> None:
    """(1) write -> woken latency over 50 commits, for a reader that would otherwise look
    at the head every 5 s: p50 under 20 ms (polling would give ~2.5 s)."""
    log = LocalLog(tmp_path)
    _put(log)
    n = 50
    reader = Reader(tmp_path, 1, n)
    try:
        _until(lambda: len(_sockets(tmp_path)) == 1)  # its thread is blocked on its socket
        lat = []
        for i in range(n):
            time.sleep(0.005)  # let it block again
            t0 = time.monotonic_ns()
            pos = _put(log)
            _, p, woken = reader.woken()
            assert p == pos == i + 2
            lat.append((woken - t0) / 1e6)
        lat.sort()
        p50, p90 = statistics.median(lat), lat[int(0.9 * n)]
        assert p50 < 20, lat
        assert p90 < 200, lat
    finally:
        reader.close()


def test_a_dead_waiter_leaves_a_socket_the_next_append_removes(tmp_path: Path) -> None:
    """(2) A waiter killed without cleaning up leaves its socket file; the next append finds
    nobody behind it (ECONNREFUSED) and unlinks it. A live waiter's socket stays."""
    log = LocalLog(tmp_path)
    _put(log)
    dead, alive = Reader(tmp_path, 1, 1), Reader(tmp_path, 1, 2)
    try:
        _until(lambda: len(_sockets(tmp_path)) == 2)
        before = _sockets(tmp_path)
        os.kill(dead.proc.pid, signal.SIGKILL)
        dead.proc.wait(LONG)
        assert _sockets(tmp_path) == before  # no atexit ran: the file stays
        _put(log)
        left = _sockets(tmp_path)
        assert len(left) == 1 and left[0].startswith(f"{alive.proc.pid}-")
        assert alive.woken()[1] == 2
    finally:
        dead.close()
        alive.close()


def test_many_waiters_in_several_processes_all_wake(tmp_path: Path) -> None:
    """(3) Three processes of four waiting threads each: every thread sees every one of
    five commits, each well before any of them would have re-read the head by itself."""
    log = LocalLog(tmp_path)
    _put(log)
    commits, procs, threads = 5, 3, 4
    readers = [Reader(tmp_path, 1, commits, threads) for _ in range(procs)]
    try:
        _until(lambda: len(_sockets(tmp_path)) == procs)
        worst = 0.0
        for i in range(commits):
            time.sleep(0.05)  # all threads blocked again
            t0 = time.monotonic_ns()
            pos = _put(log)
            for r in readers:
                seen = set()
                while len(seen) < threads:
                    t, p, woken = r.woken()
                    assert p == pos == i + 2
                    seen.add(t)
                    worst = max(worst, (woken - t0) / 1e9)
        assert worst < 1.0  # against SLOW = 5 s
    finally:
        for r in readers:
            r.close()


_APPENDER = """
    import sys, time
    from nearstate.backends.local_log import LocalLog
    from nearstate.ports import Append

    time.sleep(float(sys.argv[2]))
    print(LocalLog(sys.argv[1]).append(lambda view: Append(b"child", [])), flush=True)
"""


def _append_from_child(root: Path, delay: float) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_APPENDER), str(root), str(delay)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _wait_for_child_append(log: LocalLog, root: Path, after: int) -> float:
    child = _append_from_child(root, 0.3)
    try:
        t0 = time.monotonic()
        assert log.wait(after, LONG) == after + 1
        elapsed = time.monotonic() - t0
        _, err = child.communicate(timeout=LONG)
        assert child.returncode == 0, err
        return elapsed
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(LONG)


def test_without_sockets_waiters_poll_and_still_see_every_commit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """(4) Where no socket can be bound (here ``log.wake`` is a plain file, so nothing can be
    made in it) a waiter reads the head every poll_interval, says so once in the log, and an
    append from another process still reaches it; ``notify=False`` polls the same way."""
    log = LocalLog(tmp_path, poll_interval=0.02, recheck_interval=SLOW)
    _put(log)
    (tmp_path / WAKE_DIR).write_text("not a directory")
    with caplog.at_level(logging.WARNING, logger="nearstate.backends.local_log"):
        assert _wait_for_child_append(log, tmp_path, 1) < 0.3 + 2.0
        assert log.wait(2, 0.05) == 2  # times out, polling
        log.close()
        assert _wait_for_child_append(log, tmp_path, 2) < 0.3 + 2.0
    said = [r for r in caplog.records if "poll" in r.getMessage()]
    assert len(said) == 1 and "wake-up socket" in said[0].getMessage()
    assert (tmp_path / WAKE_DIR).read_text() == "not a directory"

    other = tmp_path / "other"
    quiet = LocalLog(other, poll_interval=0.02, recheck_interval=SLOW, notify=False)
    _put(quiet)
    assert _wait_for_child_append(quiet, other, 1) < 0.3 + 2.0
    assert not (other / WAKE_DIR).exists()


def _fork_child(log: LocalLog, after: int, q) -> None:
    t0 = time.monotonic()
    h = log.wait(after, LONG)
    q.put((h, time.monotonic() - t0, log._waker.path if log._waker else None))


def test_after_a_fork_the_child_waits_on_its_own_socket(tmp_path: Path) -> None:
    """(5) A handle that has waited (so its process has a socket) is used by a forked child:
    the child binds a socket of its own, is woken through it, and the parent's socket and
    wake-ups are untouched."""
    log = LocalLog(tmp_path, poll_interval=SLOW, recheck_interval=SLOW)
    _put(log)
    assert log.wait(1, 0.01) == 1  # binds this process's socket
    mine = _sockets(tmp_path)
    assert len(mine) == 1 and mine[0].startswith(f"{os.getpid()}-")
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    child = ctx.Process(target=_fork_child, args=(log, 1, q))
    child.start()
    try:
        _until(lambda: len(_sockets(tmp_path)) == 2)
        theirs = [n for n in _sockets(tmp_path) if n not in mine]
        assert theirs[0].startswith(f"{child.pid}-")
        _put(log)
        h, elapsed, path = q.get(timeout=LONG)
        assert h == 2 and elapsed < SLOW
        assert path is not None and Path(path).name == theirs[0]
        child.join(LONG)
        assert child.exitcode == 0
    finally:
        if child.is_alive():
            child.kill()
            child.join(LONG)
    _put(log)  # the child left its socket (it ended without atexit): this removes it
    assert _sockets(tmp_path) == mine
    assert _wait_for_child_append(log, tmp_path, 3) < 0.3 + 1.0


def test_a_long_dataset_path_puts_its_sockets_under_tmp(tmp_path: Path) -> None:
    """A dataset whose path is too long for a socket address keeps its sockets in a
    hashed directory under /tmp, which writer and readers derive alike."""
    root = tmp_path / ("d" * 60) / ("e" * 60)
    assert not str(wake_dir(root)).startswith(str(root))
    log = LocalLog(root, poll_interval=SLOW, recheck_interval=SLOW)
    _put(log)
    reader = Reader(root, 1, 1)
    try:
        _until(lambda: len(_sockets(root)) == 1)
        t0 = time.monotonic_ns()
        _put(log)
        assert (reader.woken()[2] - t0) / 1e9 < 1.0
    finally:
        reader.close()

    # the reader ended (by atexit, or killed by close() if it was still on its way out):
    # the next commits leave nothing behind, not even the dir (a loaded host may take a
    # few commits to see the dead socket go)
    def gone() -> bool:
        _put(log)
        return not wake_dir(root).exists()

    _until(gone, timeout=10)


def test_close_unlinks_the_socket_and_a_later_wait_binds_again(tmp_path: Path) -> None:
    """A process's socket is shared by its handles on the dataset and goes with the last of
    them to close; a later wait binds a new one and is woken through it."""
    log = LocalLog(tmp_path, poll_interval=SLOW, recheck_interval=SLOW)
    _put(log)
    other = LocalLog(tmp_path)
    assert log.wait(1, 0.01) == 1 and other.wait(1, 0.01) == 1
    assert len(_sockets(tmp_path)) == 1  # one per process, shared by its handles
    log.close()
    assert len(_sockets(tmp_path)) == 1  # the other handle still uses it
    other.close()
    assert _sockets(tmp_path) == []
    done: list[tuple[int, float]] = []

    def wait() -> None:
        t0 = time.monotonic()
        done.append((log.wait(1, LONG), time.monotonic() - t0))

    t = threading.Thread(target=wait)
    t.start()
    _until(lambda: len(_sockets(tmp_path)) == 1)  # bound again, by the waiting thread
    child = _append_from_child(tmp_path, 0.0)
    assert child.communicate(timeout=LONG)[0].strip() == "2"
    t.join(LONG)
    assert done[0][0] == 2 and done[0][1] < SLOW


def test_wake_stats_tell_waits_woken_from_commits_found_late(tmp_path: Path) -> None:
    """``LocalLog.wake_stats()``: a wait ended by a commit's wake-up counts as ``woken``; a
    commit whose wake-up never came (an appender with ``notify=False``, in another
    process) is found on a recheck and counts as ``late``."""
    root = tmp_path / "ds"
    first = LocalLog(root)
    _put(first, b"a")  # the Log exists
    reader = LocalLog(root, poll_interval=SLOW, recheck_interval=0.05)
    assert reader.wake_stats() == {"woken": 0, "late": 0}

    def put_elsewhere(body: str, notify: bool) -> None:
        code = ("import sys; from nearstate.backends.local_log import LocalLog; "
                "from nearstate.ports import Append; "
                "log = LocalLog(sys.argv[1], notify=sys.argv[3] == '1'); b = sys.argv[2]; "
                "log.append(lambda v: Append(b.encode(), [('T', b, True)]))")  # fmt: skip
        time.sleep(0.2)  # the reader is waiting by then
        subprocess.run([sys.executable, "-c", code, str(root), body, "1" if notify else "0"],
                       check=True, timeout=LONG)  # fmt: skip

    for body, notify, want in (("b", True, {"woken": 1, "late": 0}),
                               ("c", False, {"woken": 1, "late": 1})):  # fmt: skip
        after = reader.head()
        t = threading.Thread(target=put_elsewhere, args=(body, notify))
        t.start()
        assert reader.wait(after, LONG) == after + 1
        t.join(LONG)
        assert reader.wake_stats() == want, body
    reader.close()
    first.close()


def test_an_announcement_wakes_a_watcher_in_another_process(tmp_path: Path) -> None:
    """LocalAnnouncer.wait is woken by a datagram when another process announces, not by
    its poll or recheck (both set to SLOW seconds here); the watchers' sockets are not
    listed as blobs."""
    from nearstate.backends.local import LocalAnnouncer, LocalBlobStore

    root = tmp_path / "ds"
    root.mkdir()
    LocalAnnouncer(root).announce({"version": 1})
    code = textwrap.dedent("""
        import sys, time
        from nearstate.backends.local import LocalAnnouncer
        a = LocalAnnouncer(sys.argv[1], poll_interval=float(sys.argv[2]),
                           recheck_interval=float(sys.argv[2]))
        a.wait(None, 0.01)  # binds its socket
        print("ready", flush=True)
        got = a.wait(1, 30)
        print(got["version"], time.monotonic_ns(), flush=True)
    """)
    p = subprocess.Popen([sys.executable, "-c", code, str(root), str(SLOW)],
                         stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        time.sleep(0.2)  # the watcher is blocked by then
        sent = time.monotonic_ns()
        LocalAnnouncer(root).announce({"version": 2})
        version, woke = p.stdout.readline().split()
        assert version == "2"
        assert (int(woke) - sent) / 1e9 < SLOW / 5  # a wake-up, not a recheck
        assert not [n for n in LocalBlobStore(root).list() if n.endswith(WAKE_SUFFIX)]
    finally:
        p.kill()
        p.wait()


def test_a_follower_blocks_without_reading_the_head_yet_misses_no_commit(tmp_path: Path) -> None:
    """A thread whose last wait ended at the position it waits after, with no wake-up taken
    since, blocks without reading the head (one SQLite read a commit fewer for a consumer
    following the Log). A wake-up another thread of the process took in between makes it
    read the head: the commit is found at once, not on a re-check (5 s here)."""
    root = tmp_path / "ds"
    _put(LocalLog(root, notify=False), b"a")
    log = LocalLog(root, recheck_interval=5.0)
    heads: list[str] = []
    taken, result = threading.Event(), []

    def follow() -> None:  # as a consumer's Log thread: wait, read, wait again
        c = log._conn()
        assert c is not None
        c.set_trace_callback(lambda sql: heads.append(sql) if "sqlite_sequence" in sql else None)
        after = 1
        for _ in range(2):
            p = _append_from_child(root, 0.3)
            after = log.wait(after, LONG)
            p.communicate(timeout=LONG)
        heads.clear()
        p = _append_from_child(root, 0.3)
        result.append(log.wait(after, LONG) == after + 1)  # woken, no head read first
        result.append(heads == [])
        p.communicate(timeout=LONG)
        # another thread takes the next commit's wake-up; this wait must read the head
        other = threading.Thread(target=lambda: result.append(log.wait(after + 1, LONG)))
        p = _append_from_child(root, 0.2)
        other.start()
        other.join(LONG)
        p.communicate(timeout=LONG)
        taken.set()
        t0 = time.monotonic()
        result.append(log.wait(after + 1, LONG) == after + 2)
        result.append(time.monotonic() - t0 < 1.0)

    t = threading.Thread(target=follow)
    t.start()
    t.join(4 * LONG)
    assert taken.is_set()
    assert result[:2] == [True, True], heads
    assert result[3:] == [True, True]
    log.close()


def test_an_empty_wake_directory_under_tmp_goes_with_the_next_commit(tmp_path: Path) -> None:
    """A process killed between unlinking its socket and removing its directory under /tmp
    leaves the directory empty; the next commit that finds it so removes it."""
    root = tmp_path / ("d" * 60) / ("e" * 60)
    log = LocalLog(root)
    _put(log)
    d = wake_dir(root)
    assert d.parent == Path("/tmp/nearstate-wake")
    d.mkdir(parents=True, exist_ok=True)  # what the killed process left
    _put(log)
    assert not d.exists()


def test_a_handle_answers_its_own_last_entry_without_sqlite(tmp_path: Path) -> None:
    """``read(after, fresh=False)`` for exactly the entry this handle committed last is
    answered from memory (no SQL runs); any other read goes to SQLite and gets every entry
    there, another handle's included, and a fresh read always does."""
    log, other = LocalLog(tmp_path), LocalLog(tmp_path)
    _put(log, b"a")
    sql: list[str] = []
    conn = log._conn()
    assert conn is not None
    conn.set_trace_callback(sql.append)
    p = _put(log, b"b")
    sql.clear()
    assert log.read(p - 1, fresh=False) == [(p, b"b")] and sql == []  # from memory
    assert log.read(p - 1, limit=0, fresh=False) == []
    sql.clear()
    assert log.read(p - 1) == [(p, b"b")] and sql  # fresh: SQLite
    sql.clear()
    assert log.read(p - 2, fresh=False) == [(p - 1, b"a"), (p, b"b")] and sql
    q = _put(other, b"c")  # another handle (another process, as far as this one knows)
    sql.clear()
    assert log.read(p, fresh=False) == [(q, b"c")] and sql
    sql.clear()
    assert log.read(p - 1, fresh=False) == [(p, b"b")] and sql == []
