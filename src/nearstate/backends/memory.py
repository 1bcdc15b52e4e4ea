"""Ports kept in the memory of one process: for tests and for in-process pipelines."""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterable
from typing import Any

from ..errors import BlobNotFound, LockedError
from ..ports import Buffer, check_name


class MemoryBlobStore:
    """Blobs in a dict; ``put`` swaps in a complete bytes object, so it is atomic."""

    def __init__(self) -> None:
        self._blobs: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def put(self, name: str, parts: Iterable[Buffer]) -> int:
        check_name(name)
        data = b"".join(parts)
        with self._lock:
            self._blobs[name] = data
        return len(data)

    def get(self, name: str) -> bytes:
        check_name(name)
        try:
            return self._blobs[name]
        except KeyError:
            raise BlobNotFound(f"no blob {name!r} in memory store", name=name) from None

    def delete(self, name: str) -> None:
        check_name(name)
        with self._lock:
            self._blobs.pop(name, None)

    def list(self, prefix: str = "") -> list[str]:
        with self._lock:
            return sorted(n for n in self._blobs if n.startswith(prefix))


class _MemoryLease:
    def __init__(self, owner: MemoryAnnouncer):
        self._owner = owner
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            with self._owner._cond:
                self._owner._holder = None


class MemoryAnnouncer:
    """Announcer and watcher in one object, shared by a producer and its consumers."""

    def __init__(self) -> None:
        self._current: dict[str, Any] | None = None
        self._cond = threading.Condition()
        self._holder: str | None = None

    def announce(self, announcement: dict[str, Any]) -> None:
        if "version" not in announcement:
            raise ValueError("an announcement needs a version")
        with self._cond:
            self._current = copy.deepcopy(announcement)
            self._cond.notify_all()

    def lock(self, holder: str) -> _MemoryLease:
        with self._cond:
            if self._holder is not None:
                raise LockedError(f"another producer ({self._holder}) publishes this dataset")
            self._holder = holder
        return _MemoryLease(self)

    def latest(self) -> dict[str, Any] | None:
        with self._cond:
            return copy.deepcopy(self._current)

    def wait(self, newer_than: int | None, timeout: float) -> dict[str, Any] | None:
        def changed() -> bool:
            cur = self._current
            return cur is not None and cur["version"] != newer_than

        with self._cond:
            self._cond.wait_for(changed, timeout)
            return copy.deepcopy(self._current)
