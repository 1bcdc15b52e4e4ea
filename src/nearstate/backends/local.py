"""Ports over a local directory, the embedded default.

Layout::

    DIR/announced.json        the current announcement
    DIR/producer.lock         flock()ed by the producer that may publish
    DIR/snapshots/…  DIR/deltas/…  DIR/reverse/…  DIR/versions/…   blobs, by name
    DIR/log.sqlite            the Log of committed writes (see :mod:`.local_log`)

Every file is written to a temporary name, fsynced and renamed into place, and the
directory is fsynced, so a reader (or a crash) sees a whole file or the previous one.
"""

from __future__ import annotations

import fcntl
import json
import mmap
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..blob import atomic_write
from ..errors import BlobNotFound, DatasetError, LockedError
from ..ports import RESERVED, Buffer, check_name
from .local_log import release, waiter, wake, wake_dir

ANNOUNCED = "announced.json"
ANNOUNCE_WAKE = "announce.wake"  # the wake-up sockets of announcement watchers
LOCK = "producer.lock"


class LocalBlobStore:
    """Blobs as files under a directory; ``get`` maps the file read-only (zero copy)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"LocalBlobStore({str(self.root)!r})"

    def path(self, name: str) -> Path:
        check_name(name)
        return self.root / name

    def put(self, name: str, parts: Iterable[Buffer]) -> int:
        return atomic_write(self.path(name), parts)

    def get(self, name: str) -> Buffer:
        p = self.path(name)
        try:
            with open(p, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size == 0:
                    return b""
                return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (FileNotFoundError, IsADirectoryError):
            raise BlobNotFound(f"no blob {name!r} in {self.root}", name=name) from None
        except OSError as e:
            raise DatasetError(f"cannot read blob {name!r} in {self.root}: {e}") from e

    def delete(self, name: str) -> None:
        p = self.path(name)
        if not p.is_dir():  # a folder of other blobs is not a blob: nothing to delete
            p.unlink(missing_ok=True)

    def list(self, prefix: str = "") -> list[str]:
        if not self.root.is_dir():
            return []
        out = []
        for dirpath, dirs, files in os.walk(self.root):
            rel = Path(dirpath).relative_to(self.root)
            if rel == Path("."):  # waiters' wake-up sockets (log.wake, announce.wake): no blobs
                dirs[:] = [d for d in dirs if not d.endswith(".wake")]
            for f in files:
                if f.startswith(".") or (rel == Path(".") and f in RESERVED):
                    continue
                name = f if rel == Path(".") else f"{rel.as_posix()}/{f}"
                if name.startswith(prefix):
                    out.append(name)
        return sorted(out)


class _FileLease:
    def __init__(self, fd: int):
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


class LocalAnnouncer:
    """``DIR/announced.json`` replaced atomically; watchers poll its modification stamp.

    The producer lock is an ``flock`` on ``DIR/producer.lock``: the kernel drops it when the
    holder dies, so a killed producer never leaves the dataset locked.
    """

    def __init__(self, root: str | Path, *, poll_interval: float = 0.02,
                 recheck_interval: float = 0.5, notify: bool = True):  # fmt: skip
        """A watcher is woken by a datagram when a process announces (the Log's wake-ups,
        :mod:`nearstate.backends.local_log`, in ``DIR/announce.wake``), and looks at the
        announcement again every ``recheck_interval`` seconds in case one was lost;
        where no socket can be bound (or ``notify=False``) it looks every
        ``poll_interval`` seconds instead."""
        self.root = Path(root)
        self.poll_interval = poll_interval
        self.recheck_interval = recheck_interval
        self.notify = notify
        self._key = os.path.join(os.path.realpath(self.root), ANNOUNCED) + "#announce"
        self._wake_dir = wake_dir(self.root, ANNOUNCE_WAKE) if notify else None
        self._waiter: Any = None

    def __repr__(self) -> str:
        return f"LocalAnnouncer({str(self.root)!r})"

    def announce(self, announcement: dict[str, Any]) -> None:
        if "version" not in announcement:
            raise ValueError("an announcement needs a version")
        atomic_write(self.root / ANNOUNCED, [json.dumps(announcement).encode()])
        wake(self._key, self._wake_dir, int(announcement["version"]))

    def lock(self, holder: str) -> _FileLease:
        self.root.mkdir(parents=True, exist_ok=True)
        p = self.root / LOCK
        fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise LockedError(
                f"{self.root}: another producer ({other}) publishes this dataset; "
                "only one may at a time"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder.encode(), 0)
        return _FileLease(fd)

    def latest(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.root / ANNOUNCED).read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise DatasetError(f"{self.root}: cannot read {ANNOUNCED}: {e}") from e

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.root / ANNOUNCED)
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_ino)

    def wait(self, newer_than: int | None, timeout: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        stamp = None
        cur = None
        w = self._waiter
        if w is None or w.closed or w.pid != os.getpid():
            w = self._waiter = waiter(self._key, self._wake_dir)
        while True:
            seen = w.prepare()  # before looking: an announce after it changes seen
            s = self._stamp()
            if s is not None and s != stamp:
                stamp = s
                cur = self.latest()
                if cur is not None and cur.get("version") != newer_than:
                    return cur
            left = deadline - time.monotonic()
            if left <= 0:
                return cur
            w.block(seen, left, self.recheck_interval, self.poll_interval)

    def close(self) -> None:
        """Let go of this process's wake-up socket for announcements (if no other handle
        uses it)."""
        w, self._waiter = self._waiter, None
        if w is not None and w.pid == os.getpid():
            release(w)
