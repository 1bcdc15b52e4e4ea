"""The Log of a local dataset: one SQLite database, ``DIR/log.sqlite``, in WAL mode.

Tables::

    log(pos INTEGER PRIMARY KEY AUTOINCREMENT, body BLOB)   one row per transaction
    keys(type, key, pos, present)                           each key's last change
    meta(name, value)                                       'schema', 'floor' (trimmed up to)

An append is one SQLite write transaction (``BEGIN IMMEDIATE``): the transaction's
conditions are checked against ``keys`` while the database is locked, the entry and its
key positions are written, and ``COMMIT`` returns only once the write-ahead log is
fsynced (``synchronous=FULL``), so an acknowledged write survives a killed process or a
power cut. SQLite's file locks make this safe for any number of processes on one host.
``AUTOINCREMENT`` means a position is never reused, even after trimming.

Threads of one process appending through one handle at once commit as a group: while one
thread's transaction is being written and fsynced, the others queue theirs; the next
thread to lead writes every queued one in a single SQLite transaction, each under its own
savepoint (one failing its condition or refused as bad rolls back alone), and one fsync
makes them all durable. Each is acknowledged, with its own position, only after that
``COMMIT``. A thread appending alone commits exactly as before. So commits/s from many
threads (an editor's workers, a web server's request threads) is not bounded by one
fsync each; :meth:`LocalLog.commit_stats` tells how many entries each fsync carried.

Waiting is woken, not polled (docs/decisions/0016-local-wakeups.md). A process whose
thread has to block in :meth:`LocalLog.wait` binds one Unix datagram socket,
``DIR/log.wake/<pid>-<random>.sock``, shared by all its threads and kept until
:meth:`LocalLog.close` or exit. After each ``COMMIT`` the appender lists that directory and
sends every socket in it one 8-byte datagram (the position, informational), non-blocking:
a full queue means a wake-up is already pending, and a socket whose process is gone
(``ECONNREFUSED``) is unlinked. One waiting thread per process ("the leader") blocks on the
socket; the others wait on a Condition the leader (and same-process appenders) notify.
Nothing depends on the datagram arriving: a woken waiter re-reads the head, and a waiter
re-reads it anyway every ``recheck_interval`` seconds (a commit whose writer died before
notifying, a datagram dropped).

Where a socket cannot be bound (no Unix socket support in that filesystem, no write
permission, ``notify=False``) waiters fall back to reading the head every
``poll_interval`` seconds, and say so once in the log. A socket path is at most ~104 bytes;
a dataset path too long for that puts its sockets under
``/tmp/nearstate-wake/<sha256 of the directory's real path, 24 hex>/`` instead (both
sides derive the same directory from the dataset's real path).

Over ~600 lines on purpose: the Log itself (:class:`LocalLog`) and its wake-ups (the
per-process waker and notifier above it), which exist only for this Log and share its
directory layout and lifetime rules (fork, exit, close).
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import hashlib
import json
import logging
import os
import secrets
import select
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..errors import LogError, LogTrimmed, LogUnavailable
from ..ports import Append, LogView

FILE = "log.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS log(pos INTEGER PRIMARY KEY AUTOINCREMENT, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS keys(
    type TEXT NOT NULL, key TEXT NOT NULL, pos INTEGER NOT NULL, present INTEGER NOT NULL,
    PRIMARY KEY (type, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta(name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

WAKE_DIR = "log.wake"
WAKE_SUFFIX = ".sock"
_SUN_PATH_MAX = 103  # bytes of a socket path: 107 on Linux, 103 on macOS (with the NUL)
_NAME_MAX = 24  # "<pid>-<8 hex>.sock": a pid of up to 10 digits
_SHORT_ROOT = "/tmp/nearstate-wake"
_CAN_WAKE = hasattr(socket, "AF_UNIX") and hasattr(select, "poll")

log = logging.getLogger(__name__)


def wake_dir(root: str | Path, name: str = WAKE_DIR) -> Path:
    """Where waiters on the dataset in ``root`` put their sockets: ``root/log.wake`` (or
    ``root/NAME``), or, when that path is too long for a socket address, a directory
    under /tmp named by a hash of its real path (every process derives the same one)."""
    d = os.path.join(os.path.realpath(root), name)
    if len(os.fsencode(d)) + 1 + _NAME_MAX <= _SUN_PATH_MAX:
        return Path(d)
    return Path(_SHORT_ROOT) / hashlib.sha256(os.fsencode(d)).hexdigest()[:24]


def _tidy(d: str) -> None:
    """Remove a directory under /tmp once its last socket is gone (never the dataset's)."""
    if os.path.dirname(d) == _SHORT_ROOT:
        with contextlib.suppress(OSError):
            os.rmdir(d)


def _make_dir(d: Path) -> None:
    if d.parent == Path(_SHORT_ROOT) and not d.parent.is_dir():
        with contextlib.suppress(FileExistsError):
            d.parent.mkdir(parents=True)
            os.chmod(d.parent, 0o1777)  # any user's datasets, like /tmp itself
    d.mkdir(exist_ok=True)


class _Waker:
    """This process's wake-ups for one dataset: the socket (``None`` when polling), the
    Condition its waiting threads sleep on, and ``seq``, bumped on every wake-up."""

    def __init__(self, key: str, directory: Path | None):
        self.key = key
        self.pid = os.getpid()
        self.cond = threading.Condition()
        self.seq = 0
        self.pos = 0  # the highest Log position a wake-up carried (0: none yet)
        # waits that ended on a wake-up, and those that found a commit only on a recheck
        # (a wake-up that never came: the figure that says the datagrams failed someone)
        self.woken_count = 0
        self.late_count = 0
        self.leader = False  # a thread is blocked on the socket
        self.users = 0  # LocalLog handles that waited through this and are not closed
        self.closed = False
        self.sock: socket.socket | None = None
        self.path: str | None = None
        self._poll: select.poll | None = None
        if directory is None:
            return
        name = f"{self.pid}-{secrets.token_hex(4)}{WAKE_SUFFIX}"
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try:
                for attempt in range(3):  # a /tmp directory may go as its last waiter leaves
                    _make_dir(directory)
                    try:
                        s.bind(str(directory / name))
                        break
                    except FileNotFoundError:
                        if attempt == 2:
                            raise
                s.setblocking(False)
            except BaseException:
                s.close()
                raise
        except (OSError, ValueError) as e:
            _say_polling(key, f"cannot bind a wake-up socket in {directory}: {e}")
            return
        self.sock, self.path = s, str(directory / name)
        self._poll = select.poll()
        self._poll.register(s.fileno(), select.POLLIN)

    def bump(self, pos: int = 0) -> None:
        with self.cond:
            self.seq += 1
            self.pos = max(self.pos, pos)
            self.cond.notify_all()

    def _drain(self) -> bool:
        """Take the queued datagrams (each a commit's position); whether there were any."""
        got = False
        assert self.sock is not None
        recv = self.sock.recv
        try:
            while True:
                msg = recv(64)
                got = True
                if len(msg) == 8:
                    p = int.from_bytes(msg, "little")
                    if p > self.pos:
                        self.pos = p
        except OSError:  # BlockingIOError: empty
            pass
        return got

    def woken(self, seen: int) -> tuple[int, int]:
        """The highest position a wake-up after ``seen`` carried, or 0: after :meth:`block`,
        a commit known to be there without reading the head; with the ``seq`` it was
        read at."""
        with self.cond:
            return (self.pos if self.seq != seen else 0), self.seq

    def prepare(self) -> int:
        """Call before reading the head: takes the datagrams already queued (for commits
        the head read will see) and returns the ``seq`` to hand to :meth:`block`."""
        with self.cond:
            if self.sock is not None and not self.leader and not self.closed and self._drain():
                self.seq += 1
                self.cond.notify_all()
            return self.seq

    def block(self, seen: int, left: float, recheck: float, poll: float) -> None:
        """Sleep until a wake-up after ``seen``, or for the interval that applies."""
        with self.cond:
            if self.seq != seen or self.closed:
                return
            if self.sock is None:
                self.cond.wait(min(left, poll))
                return
            if self.leader:
                self.cond.wait(min(left, recheck))
                return
            self.leader = True
            sock_poll = self._poll
        got = False
        try:
            assert sock_poll is not None
            if sock_poll.poll(max(1, int(min(left, recheck) * 1000 + 0.999))):
                with self.cond:
                    got = self._drain()
        except OSError:
            pass
        finally:
            with self.cond:
                self.leader = False
                if got:
                    self.seq += 1
                # the others wake to re-read the head, and one of them leads next
                self.cond.notify_all()
                if self.closed:
                    self._shut()

    def retire(self) -> None:
        """The last handle using this closed: unlink the socket (now, or when the thread
        blocked on it returns)."""
        with self.cond:
            self.closed = True
            if not self.leader:
                self._shut()
            self.cond.notify_all()

    def _shut(self) -> None:
        s, self.sock = self.sock, None
        if s is None:
            return
        if self.pid == os.getpid() and self.path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            _tidy(os.path.dirname(self.path))
        s.close()


RACY_NS = 50_000_000  # a wake directory's listing younger than this is listed again


class _Notifier:
    """This process's sender of wake-ups for one wake directory: one connected, non-blocking
    datagram socket per waiting process (so a process that never reads its socket fills
    only its own queue, not a send buffer the others share)."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.socks: dict[str, socket.socket] = {}
        self.names: list[str] = []
        self.stamp: int | None = None

    def notify(self, pos: int) -> None:
        try:
            # the directory's listing changes only when its mtime does (a socket bound or
            # unlinked): one stat a commit instead of listing it. A listing made within
            # RACY_NS of that mtime is not trusted (a file system's clock may be coarse: a
            # bind in the same tick would leave the mtime as it was), as git does.
            stamp = os.stat(self.dir).st_mtime_ns
            if stamp != self.stamp:
                self.names = [n for n in os.listdir(self.dir) if n.endswith(WAKE_SUFFIX)]
                self.stamp = stamp if time.time_ns() - stamp > RACY_NS else None
                if not self.names:
                    # a directory under /tmp whose last waiter was killed between
                    # unlinking its socket and removing it: nobody else would
                    _tidy(str(self.dir))
            names = self.names
        except OSError:  # nobody has waited yet, or the directory cannot hold sockets
            names, self.stamp = [], None
        msg = pos.to_bytes(8, "little")
        with self.lock:
            socks = self.socks
            if len(socks) > len(names) or any(n not in socks for n in names):
                for gone in socks.keys() - set(names):
                    socks.pop(gone).close()
            for name in names:
                s = socks.get(name)
                if s is None:
                    s = self._connect(name)
                    if s is None:
                        continue
                try:
                    s.send(msg)
                except (BlockingIOError, InterruptedError):
                    pass  # its queue is full: a wake-up is already pending there
                except OSError as e:
                    if e.errno == errno.ENOBUFS:
                        continue
                    socks.pop(name).close()
                    if e.errno == errno.ECONNREFUSED:  # its process is gone
                        self._unlink(name)

    def _connect(self, name: str) -> socket.socket | None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.setblocking(False)
        try:
            s.connect(str(self.dir / name))
        except OSError as e:
            s.close()
            if e.errno == errno.ECONNREFUSED:  # a socket file left by a process that died
                self._unlink(name)
            return None
        self.socks[name] = s
        return s

    def _unlink(self, name: str) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.dir / name)
        _tidy(str(self.dir))

    def close(self) -> None:
        with self.lock:
            for s in self.socks.values():
                s.close()
            self.socks.clear()


_lock = threading.Lock()
_wakers: dict[str, _Waker] = {}  # by the log file's real path, this process's only
_notifiers: dict[Path, _Notifier] = {}
_said_polling: set[str] = set()


def _say_polling(key: str, why: str) -> None:
    if key not in _said_polling:
        _said_polling.add(key)
        log.warning("%s: waiters poll the log every poll_interval instead (%s)", key, why)


def _waker(key: str, directory: Path | None) -> _Waker:
    with _lock:
        w = _wakers.get(key)
        if w is None or w.closed or w.pid != os.getpid():
            w = _wakers[key] = _Waker(key, directory)
        w.users += 1
        return w


def _release(w: _Waker) -> None:
    with _lock:
        w.users -= 1
        if w.users > 0 or w.pid != os.getpid():
            return
        if _wakers.get(w.key) is w:
            del _wakers[w.key]
    w.retire()


def _notify(key: str, directory: Path | None, pos: int) -> None:
    w = _wakers.get(key)
    if w is not None and w.pid == os.getpid():
        w.bump(pos)  # this process's waiters at once (and those that poll)
    if directory is None:
        return
    n = _notifiers.get(directory)
    if n is None or n.pid != os.getpid():
        with _lock:
            n = _notifiers.get(directory)
            if n is None or n.pid != os.getpid():
                n = _notifiers[directory] = _Notifier(directory)
    n.notify(pos)


def waiter(key: str, directory: Path | None) -> _Waker:
    """This process's wake-ups for ``key`` (sockets in ``directory``; None: polling), for
    a waiter other than the Log's (the announcement watch); :func:`release` it when done.
    Wait as :meth:`LocalLog.wait` does: ``seen = w.prepare()``, look, then
    ``w.block(seen, left, recheck, poll)``."""
    return _waker(key, directory)


def release(w: _Waker) -> None:
    """Let go of a :func:`waiter` (the last user unlinks its socket)."""
    _release(w)


def wake(key: str, directory: Path | None, pos: int) -> None:
    """Wake every waiter on ``key``: this process's at once, the others' by a datagram
    carrying ``pos`` to each socket in ``directory``."""
    _notify(key, directory, pos)


def _after_fork_in_child() -> None:
    """A child keeps none of its parent's sockets (it binds its own when it first waits),
    and none of the locks another thread of the parent might have held."""
    global _lock
    _lock = threading.Lock()
    for w in _wakers.values():
        if w.sock is not None:
            w.sock.close()  # the parent's socket stays bound: only this copy goes
    _wakers.clear()
    for n in _notifiers.values():
        for s in n.socks.values():
            s.close()
    _notifiers.clear()


@atexit.register
def _at_exit() -> None:
    for w in list(_wakers.values()):
        if w.pid == os.getpid() and w.path is not None:
            with contextlib.suppress(OSError):
                os.unlink(w.path)
            _tidy(os.path.dirname(w.path))


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class _View:
    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn

    def last(self, type_name: str, key_id: str) -> tuple[int, bool] | None:
        row = self._conn.execute(
            "SELECT pos, present FROM keys WHERE type = ? AND key = ?", (type_name, key_id)
        ).fetchone()
        return None if row is None else (row[0], bool(row[1]))

    def schema(self) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE name = 'schema'").fetchone()
        return None if row is None else row[0]


def _at_most(p: int, position: int) -> int:
    if not 0 < int(p) <= position:
        raise LogError(f"a key's last change at {p} is not among the positions up to {position}")
    return int(p)


def _write(conn: sqlite3.Connection, entry: Append) -> int:
    """Insert ``entry`` and its key positions (in the caller's transaction)."""
    pos = conn.execute("INSERT INTO log(body) VALUES (?)", (entry.body,)).lastrowid
    assert pos is not None
    if entry.keys:
        conn.executemany(
            "INSERT OR REPLACE INTO keys(type, key, pos, present) VALUES (?, ?, ?, ?)",
            [(t, k, pos, int(p)) for t, k, p in entry.keys],
        )
    if entry.schema is not None:
        conn.execute(
            "INSERT OR REPLACE INTO meta(name, value) VALUES ('schema', ?)",
            (json.dumps(entry.schema, sort_keys=True),),
        )
    return pos


_QUEUED, _LEADS, _BATCHED, _GONE = range(4)  # where a _Job stands


class _Job:
    """One transaction in a group commit: its ``prepare``; ``pos``, its position once
    written (in a transaction not yet committed); then its ``outcome`` (the position, or
    the exception to raise in its thread). ``wake`` is held until the thread waiting on it
    may go on: its transaction done, or the lead handed to it. ``state``: queued, handed
    the lead, in a group being written, or withdrawn (changed under the group's lock)."""

    __slots__ = ("body", "outcome", "pos", "prepare", "state", "wake")

    def __init__(self, prepare: Callable[[LogView], Append]):
        self.prepare = prepare
        self.pos: int | None = None
        self.body = b""
        self.outcome: int | BaseException | None = None
        self.state = _QUEUED
        self.wake: Any = None  # a held lock, once the job has to wait (queue)

    def queue(self, g: _Group) -> None:
        """Wait in ``g``'s queue (its lock is held)."""
        self.wake = threading.Lock()
        self.wake.acquire()
        g.queue.append(self)

    def result(self) -> int:
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        assert self.outcome is not None
        return self.outcome


class _Group:
    """A handle's appends waiting for the thread committing (the leader)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.queue: list[_Job] = []
        self.leading = False
        self.leader: int | None = None  # the leading thread's ident, while it writes
        self.pid = os.getpid()
        self.conn: sqlite3.Connection | None = None  # the leaders' (one at a time)

    def hand_on(self) -> _Job | None:
        """The lead passes to the first job queued, or lapses (the lock is held)."""
        nxt = self.queue.pop(0) if self.queue else None
        self.leading = nxt is not None
        if nxt is not None:
            nxt.state = _LEADS
        return nxt


class LocalLog:
    """The Log in ``DIR/log.sqlite`` (created by the first append).

    ``wait`` sleeps until an append (from any process) wakes it, re-reading the head at
    least every ``recheck_interval`` seconds; where no wake-up socket can be bound, or with
    ``notify=False`` (which also stops this handle's appends from sending wake-ups), it
    reads the head every ``poll_interval`` seconds instead."""

    def __init__(self, root: str | Path, *, poll_interval: float = 0.001,
                 recheck_interval: float = 0.05, notify: bool = True,
                 busy_timeout: float = 30.0):  # fmt: skip
        self.root = Path(root)
        self.path = self.root / FILE
        self.poll_interval = poll_interval
        self.recheck_interval = recheck_interval
        self.notify = notify and _CAN_WAKE
        self.busy_timeout = busy_timeout
        self._local = threading.local()
        self._key = os.path.realpath(self.path)
        self._wake_dir = wake_dir(self.root) if self.notify else None
        self._waker: _Waker | None = None
        # the entry this handle appended last, committed: a reader in this process asking
        # for just that one with fresh=False (a consumer catching up on a write made here,
        # the editor's preview) is answered without reading SQLite
        self._last: tuple[int, bytes] | None = None
        self._group = _Group()  # appends from threads of this process at once
        self._transactions = self._entries = self._largest = 0  # commit_stats()

    def __repr__(self) -> str:
        return f"LocalLog({str(self.path)!r})"

    # -- connections: one per thread (and per process after a fork) ---------------------

    def _conn(self, create: bool = False) -> sqlite3.Connection | None:
        c = getattr(self._local, "conn", None)
        if c is not None and self._local.pid == os.getpid():
            return c
        c = self._open(create)
        if c is not None:
            self._local.conn = c
            self._local.pid = os.getpid()
        return c

    def _open(self, create: bool) -> sqlite3.Connection | None:
        if not create and not self.path.exists():
            return None
        try:
            if create:
                self.root.mkdir(parents=True, exist_ok=True)
            c = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None,
                                check_same_thread=False)  # fmt: skip
            # switching a new file to WAL does not wait for a busy database: retry it
            deadline = time.monotonic() + self.busy_timeout
            while True:
                try:
                    c.execute("PRAGMA journal_mode=WAL")
                    c.execute("PRAGMA synchronous=FULL")
                    c.executescript(_SCHEMA)
                    break
                except sqlite3.OperationalError as e:
                    if "locked" not in str(e) or time.monotonic() > deadline:
                        raise
                    time.sleep(0.01)
        except sqlite3.Error as e:
            raise LogUnavailable(f"cannot open the log {self.path}: {e}") from e
        except OSError as e:
            raise LogUnavailable(f"cannot create the log {self.path}: {e}") from e
        return c

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end), and let go
        of this process's wake-up socket when no other handle on the dataset uses it."""
        c = getattr(self._local, "conn", None)
        if c is not None:
            self._local.conn = None
            c.close()
        g = self._group
        if g.pid == os.getpid():
            with g.lock:
                if not g.leading and g.conn is not None:
                    g.conn.close()
                    g.conn = None
        w, self._waker = self._waker, None
        if w is not None and w.pid == os.getpid():
            _release(w)

    def _waiter(self) -> _Waker:
        w = self._waker
        if w is None or w.closed or w.pid != os.getpid():  # first wait, closed, or forked
            w = self._waker = _waker(self._key, self._wake_dir)
        return w

    # -- the Log protocol ----------------------------------------------------------------

    def append(self, prepare: Callable[[LogView], Append]) -> int:
        # Group commit: threads of this process appending at once queue their transactions
        # while one thread (the leader) commits; when it is done it hands the lead to the
        # first of them, which writes all that queued in one SQLite transaction (one fsync),
        # each under its own savepoint. Each waiting thread is woken once, when its
        # transaction is done or when it is handed the lead. A thread appending alone
        # commits as it always did.
        g = self._group_of()
        me = threading.get_ident()
        if g.leader == me:
            raise LogError(f"{self.path}: an append inside another's prepare (a transaction "
                           "cannot append one of its own)")  # fmt: skip
        job = _Job(prepare)
        with g.lock:
            if g.leading:
                job.queue(g)
            else:
                g.leading, job.state = True, _LEADS
        if job.state == _QUEUED:
            self._await_turn(g, job)
            if job.state != _LEADS:
                return job.result()
        batch = [job]
        done = [False]  # set once the group's COMMIT returned
        try:
            g.leader = me
            with g.lock:
                batch += g.queue
                g.queue = []
                for j in batch:
                    j.state = _BATCHED
            self._commit_batch(g, batch, done)
        finally:
            g.leader = None
            self._finish(g, batch, done[0])
        return job.result()

    def _await_turn(self, g: _Group, job: _Job) -> None:
        """Wait until ``job`` is done or leads. Threads of this process wait for each
        other's commits up to ``busy_timeout``, as SQLite's lock makes other processes
        wait. Interrupted (or timed out) while queued, the job is withdrawn; handed the
        lead, it hands it on; already in a group being written, it may still commit."""
        try:
            if job.wake.acquire(timeout=self.busy_timeout):
                return
            with g.lock:
                if job.state == _QUEUED:
                    g.queue.remove(job)
                    job.state = _GONE
                    raise LogUnavailable(
                        f"cannot lock the log {self.path}: other threads of this process "
                        f"held it for {self.busy_timeout:g} s")  # fmt: skip
            job.wake.acquire()  # taken into a group or handed the lead meanwhile
        except BaseException:
            with g.lock:
                if job.state == _QUEUED:
                    g.queue.remove(job)
                    job.state = _GONE
                elif job.state == _LEADS:  # the lead, not taken up: to the next in line
                    job.state = _GONE
                    nxt = g.hand_on()
                    if nxt is not None:
                        nxt.wake.release()
            raise

    def _finish(self, g: _Group, batch: list[_Job], committed: bool) -> None:
        """After a group: each job's outcome, the lead to the next in line, then each
        waiting thread woken (and the Log's followers, if anything was written)."""
        written = []
        for j in batch:
            if j.outcome is not None:
                continue
            if committed and j.pos is not None:
                j.outcome = j.pos
                written.append(j)
            else:  # the group stopped before its COMMIT: an interrupt on the leader's thread
                j.outcome = LogUnavailable(
                    f"{self.path}: the transaction was not written (the group commit it "
                    "was in stopped before committing)")  # fmt: skip
        with g.lock:
            nxt = g.hand_on()
        if nxt is not None:
            nxt.wake.release()  # the next group starts before this one is told
        for j in batch[1:]:
            j.wake.release()
        if written:
            self._transactions += 1
            self._entries += len(written)
            self._largest = max(self._largest, len(written))
            last = written[-1]
            assert last.pos is not None
            self._last = (last.pos, last.body)
            _notify(self._key, self._wake_dir, last.pos)

    def _group_of(self) -> _Group:
        g = self._group
        if g.pid != os.getpid():  # forked: the parent's threads are not here
            with _lock:
                if self._group.pid != os.getpid():
                    self._group = _Group()
            g = self._group
        return g

    def _commit_batch(self, g: _Group, batch: list[_Job], done: list[bool]) -> None:
        """Write ``batch`` in one transaction, on the group's connection whichever thread
        leads (its page cache stays warm): each job's ``pos`` and ``body`` as written, or
        its refusal as its ``outcome``; ``done[0]`` once the COMMIT returned."""
        try:
            if g.conn is None:
                g.conn = self._open(create=True)
            conn = g.conn
            assert conn is not None
            conn.execute("BEGIN IMMEDIATE")
        except (LogUnavailable, sqlite3.Error) as e:
            for j in batch:  # each thread raises its own
                j.outcome = LogUnavailable(
                    f"cannot lock the log {self.path}: {e}" if isinstance(e, sqlite3.Error)
                    else str(e))  # fmt: skip
            return
        alone = len(batch) == 1
        committing = False
        try:
            for j in batch:
                if not alone:
                    conn.execute("SAVEPOINT job")
                err: Exception | None = None
                try:
                    entry = j.prepare(_View(conn))
                    pos = _write(conn, entry)
                except Exception as e:
                    # alone, or SQLite undid the whole transaction (a full disk, an I/O
                    # error): the group fails as one
                    if alone or not conn.in_transaction:
                        raise
                    err = e
                if err is not None:  # this transaction's own: rolled back alone
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    j.outcome = self._refusal(err)
                    continue
                if not alone:
                    conn.execute("RELEASE job")
                j.pos, j.body = pos, bytes(entry.body)
            committing = True
            conn.execute("COMMIT")
            done[0] = True
        except BaseException as e:
            if committing and not isinstance(e, sqlite3.Error) and not conn.in_transaction:
                done[0] = True  # interrupted once the COMMIT had returned: it stands
                raise
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            if not isinstance(e, Exception):  # the leader's own interrupt: _finish tells
                for j in batch:  # the others that nothing was written, refusals included
                    j.outcome = None
                raise
            for j in batch:  # nothing was written
                j.outcome = self._refusal(e) if alone else LogUnavailable(
                    f"cannot write the log {self.path}: {e}")  # fmt: skip

    def _refusal(self, e: Exception) -> BaseException:
        """What a thread raises for its own transaction's error: the error itself (a
        conflict, a bad record), or LogUnavailable for SQLite's."""
        if not isinstance(e, sqlite3.Error):
            return e
        out = LogUnavailable(f"cannot write the log {self.path}: {e}")
        out.__cause__ = e
        return out

    def last(self, type_name: str, key_id: str) -> tuple[int, bool] | None:
        conn = self._conn()
        if conn is None:
            return None
        try:
            return _View(conn).last(type_name, key_id)  # a read: WAL readers never wait
        except sqlite3.Error as e:
            raise LogUnavailable(f"cannot read the log {self.path}: {e}") from e

    def head(self) -> int:
        conn = self._conn()
        if conn is None:
            return 0
        try:
            row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'log'").fetchone()
        except sqlite3.Error as e:
            raise LogUnavailable(f"cannot read the log {self.path}: {e}") from e
        return 0 if row is None else int(row[0])

    def read(self, after: int, limit: int = 1000, *, fresh: bool = True) -> list[tuple[int, bytes]]:
        last = self._last
        if not fresh and last is not None and last[0] == after + 1 and limit > 0:
            # the entry this handle committed last, the one asked for next: a prefix of
            # what SQLite holds, which fresh=False allows (newer entries may be missed)
            return [last]
        conn = self._conn()
        if conn is None:
            return []
        try:
            rows = conn.execute(
                "SELECT pos, body FROM log WHERE pos > ? ORDER BY pos LIMIT ?", (after, limit)
            ).fetchall()
            if not rows or rows[0][0] != after + 1:
                floor = self._floor(conn)
                if after < floor:
                    raise LogTrimmed(
                        f"{self.path}: entries after {after} were trimmed (kept from "
                        f"{floor + 1}); load a newer version first"
                    )
        except sqlite3.Error as e:
            raise LogUnavailable(f"cannot read the log {self.path}: {e}") from e
        return rows

    def wait(self, after: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        if timeout <= 0:
            return self.head()
        rechecked, rechecked_seen = False, -1  # the last sleep ended with no wake-up
        while True:
            w = self._waiter()
            before = w.seq
            seen = w.prepare()  # before the head is read: a later commit changes seen
            if seen != before and w.pos > after:
                # wake-ups came since the last wait and name a commit after ``after``: no
                # need to read the head for it (what block's wake-ups do, below)
                w.woken_count += 1
                return self._returned(w, seen, w.pos)
            left = deadline - time.monotonic()
            if left <= 0 or not self._known(w, seen, after):
                h = self.head()
                left = deadline - time.monotonic()
                if h > after or left <= 0:
                    if h > after and rechecked and seen == rechecked_seen:
                        w.late_count += 1  # found on a recheck: its wake-up never came
                    return self._returned(w, seen, h)
            w.block(seen, left, self.recheck_interval, self.poll_interval)
            # a wake-up names its commit's position: no need to read the head for it (one
            # SQLite read a commit instead of three). Only a wake-up of this wait counts:
            # a Log made anew at the same path restarts its positions.
            p, at = w.woken(seen)
            if p > after:
                w.woken_count += 1
                return self._returned(w, at, p)
            rechecked = w.sock is not None and p == 0
            rechecked_seen = seen
            self._local.waited = None  # the head is read again before the next block

    def _returned(self, w: _Waker, seq: int, pos: int) -> int:
        """Remember, for this thread, that every wake-up this process took up to ``seq``
        named a position up to ``pos`` (what :meth:`_known` relies on); return ``pos``."""
        self._local.waited = (w, seq, pos)
        return pos

    def _known(self, w: _Waker, seen: int, after: int) -> bool:
        """Whether no commit after ``after`` can be there without a wake-up still to come,
        so a wait may block without reading the head: this thread's last wait ended at
        ``seen`` with a position up to ``after``, and no wake-up was taken since, by this
        thread or another. (A commit sends its wake-ups after it is durable: one after
        that position either was taken before, and then named a position up to it, or
        is still queued or on its way, and ends the block.) Not after a re-check found
        nothing, nor where waits poll. Saves each follower a SQLite read per commit.
        A commit that sends no wake-up (an appender with ``notify=False``, a datagram
        the kernel dropped) is found at the next re-check, ``recheck_interval`` at most,
        as it always was when it came during a block."""
        last = getattr(self._local, "waited", None)
        return (last is not None and w.sock is not None and last[0] is w
                and last[1] == seen and last[2] <= after)  # fmt: skip

    def wake_stats(self) -> dict[str, int]:
        """This process's waits on the dataset: ``woken`` (ended by a commit's wake-up) and
        ``late`` (a commit found only when the wait re-read the head: its wake-up was lost
        or never sent). Zeros before the first wait, or where waits poll."""
        w = self._waker
        if w is None:
            return {"woken": 0, "late": 0}
        return {"woken": w.woken_count, "late": w.late_count}

    def commit_stats(self) -> dict[str, int]:
        """This handle's appends so far: SQLite ``transactions`` committed (each one fsync),
        the ``entries`` they wrote, and the ``largest`` number one of them wrote (threads
        appending at once share a transaction)."""
        return {"transactions": self._transactions, "entries": self._entries,
                "largest": self._largest}  # fmt: skip

    def trim(self, upto: int) -> int:
        conn = self._conn()
        if conn is None:
            return 0
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                n = conn.execute("DELETE FROM log WHERE pos <= ?", (upto,)).rowcount
                if upto > self._floor(conn):
                    conn.execute(
                        "INSERT OR REPLACE INTO meta(name, value) VALUES ('floor', ?)",
                        (str(upto),),
                    )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            raise LogUnavailable(f"cannot trim the log {self.path}: {e}") from e
        return n

    def start_after(self, position: int, entries: Iterable[Append] = (),
                    keys: Iterable[tuple[str, str, int, bool]] = ()) -> int:  # fmt: skip
        """Make an empty Log's next position ``position + 1``, as if the entries up to it
        had been trimmed, with ``keys`` as the last changes those made (``(type, key id,
        position, exists afterwards)``, positions up to ``position``), and append
        ``entries`` from there, in one transaction (a restore or clone of a version that
        includes the former, with the Log past it). Returns the head. LogError if the Log
        holds or ever held an entry."""
        conn = self._conn(create=True)
        assert conn is not None
        pos = int(position)
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                if self.head() or self._floor(conn):
                    raise LogError(f"{self.path} is not empty: a restore needs a new Log")
                conn.execute("INSERT INTO sqlite_sequence(name, seq) VALUES ('log', ?)", (pos,))
                conn.execute("INSERT OR REPLACE INTO meta(name, value) VALUES ('floor', ?)",
                             (str(pos),))  # fmt: skip
                conn.executemany(
                    "INSERT OR REPLACE INTO keys(type, key, pos, present) VALUES (?, ?, ?, ?)",
                    ((t, k, _at_most(p, pos), int(e)) for t, k, p, e in keys),
                )
                for entry in entries:
                    pos = _write(conn, entry)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            raise LogUnavailable(f"cannot write the log {self.path}: {e}") from e
        if pos > position:
            _notify(self._key, self._wake_dir, pos)
        return pos

    def schema(self, *, fresh: bool = True) -> str | None:
        conn = self._conn()
        if conn is None:
            return None
        try:
            return _View(conn).schema()
        except sqlite3.Error as e:
            raise LogUnavailable(f"cannot read the log {self.path}: {e}") from e

    def key_positions(self) -> list[tuple[str, str, int, bool]]:
        """Every key's last change as the Log keeps it: ``(type, key id, position, exists
        afterwards)`` (for a backup)."""
        conn = self._conn()
        if conn is None:
            return []
        try:
            rows = conn.execute("SELECT type, key, pos, present FROM keys").fetchall()
        except sqlite3.Error as e:
            raise LogUnavailable(f"cannot read the log {self.path}: {e}") from e
        return [(t, k, int(p), bool(e)) for t, k, p, e in rows]

    def floor(self) -> int:
        """Entries up to this position were trimmed (0: none)."""
        conn = self._conn()
        if conn is None:
            return 0
        try:
            return self._floor(conn)
        except sqlite3.Error as e:
            raise LogUnavailable(f"cannot read the log {self.path}: {e}") from e

    @staticmethod
    def _floor(conn: sqlite3.Connection) -> int:
        row = conn.execute("SELECT value FROM meta WHERE name = 'floor'").fetchone()
        return 0 if row is None else int(row[0])

    def stats(self) -> dict[str, Any]:
        """Head, trim floor, entries kept and file size (for ``nearstate inspect``)."""
        conn = self._conn()
        if conn is None:
            return {"head": 0, "floor": 0, "entries": 0, "bytes": 0}
        try:
            n = conn.execute("SELECT count(*) FROM log").fetchone()[0]
            floor = self._floor(conn)
        except sqlite3.Error as e:
            raise LogUnavailable(f"cannot read the log {self.path}: {e}") from e
        size = sum(p.stat().st_size for p in self.root.glob(FILE + "*") if p.is_file())
        return {"head": self.head(), "floor": floor, "entries": n, "bytes": size}
