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

Waiting is polling: readers look at the head every ``poll_interval`` seconds (a query of a
few microseconds); writers in the same process wake waiters at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import LogTrimmed, LogUnavailable
from ..ports import Append, LogView

FILE = "log.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS log(pos INTEGER PRIMARY KEY AUTOINCREMENT, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS keys(
    type TEXT NOT NULL, key TEXT NOT NULL, pos INTEGER NOT NULL, present INTEGER NOT NULL,
    PRIMARY KEY (type, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta(name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

# writers wake waiters of the same process at once (others poll)
_wakeups: dict[str, threading.Condition] = {}
_wakeups_lock = threading.Lock()


def _wakeup(path: str) -> threading.Condition:
    with _wakeups_lock:
        c = _wakeups.get(path)
        if c is None:
            c = _wakeups[path] = threading.Condition()
        return c


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


class LocalLog:
    """The Log in ``DIR/log.sqlite`` (created by the first append)."""

    def __init__(self, root: str | Path, *, poll_interval: float = 0.001,
                 busy_timeout: float = 30.0):  # fmt: skip
        self.root = Path(root)
        self.path = self.root / FILE
        self.poll_interval = poll_interval
        self.busy_timeout = busy_timeout
        self._local = threading.local()
        self._wake = _wakeup(str(self.path.absolute()))

    def __repr__(self) -> str:
        return f"LocalLog({str(self.path)!r})"

    # -- connections: one per thread (and per process after a fork) ---------------------

    def _conn(self, create: bool = False) -> sqlite3.Connection | None:
        c = getattr(self._local, "conn", None)
        if c is not None and self._local.pid == os.getpid():
            return c
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
        self._local.conn = c
        self._local.pid = os.getpid()
        return c

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        c = getattr(self._local, "conn", None)
        if c is not None:
            self._local.conn = None
            c.close()

    # -- the Log protocol ----------------------------------------------------------------

    def append(self, prepare: Callable[[LogView], Append]) -> int:
        conn = self._conn(create=True)
        assert conn is not None
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            raise LogUnavailable(f"cannot lock the log {self.path}: {e}") from e
        try:
            entry = prepare(_View(conn))
            pos = conn.execute("INSERT INTO log(body) VALUES (?)", (entry.body,)).lastrowid
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
            conn.execute("COMMIT")
        except BaseException as e:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            if isinstance(e, sqlite3.Error):
                raise LogUnavailable(f"cannot write the log {self.path}: {e}") from e
            raise
        with self._wake:
            self._wake.notify_all()
        assert pos is not None
        return pos

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
        while True:
            h = self.head()
            left = deadline - time.monotonic()
            if h > after or left <= 0:
                return h
            with self._wake:
                self._wake.wait(min(left, self.poll_interval))

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

    def schema(self, *, fresh: bool = True) -> str | None:
        conn = self._conn()
        if conn is None:
            return None
        try:
            return _View(conn).schema()
        except sqlite3.Error as e:
            raise LogUnavailable(f"cannot read the log {self.path}: {e}") from e

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
