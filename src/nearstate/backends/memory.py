"""Ports kept in the memory of one process: for tests and for in-process pipelines."""

from __future__ import annotations

import bisect
import copy
import json
import threading
from collections.abc import Callable, Iterable
from typing import Any

from ..errors import BlobNotFound, LockedError, LogError, LogTrimmed
from ..ports import Append, Buffer, LogView, check_name


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


class _MemoryView:
    def __init__(self, log: MemoryLog):
        self._log = log

    def last(self, type_name: str, key_id: str) -> tuple[int, bool] | None:
        return self._log._keys.get((type_name, key_id))

    def schema(self) -> str | None:
        return self._log._schema


class MemoryLog:
    """The Log as a list in memory: transactions of one process, lost when it ends."""

    def __init__(self) -> None:
        self._entries: list[tuple[int, bytes]] = []
        self._keys: dict[tuple[str, str], tuple[int, bool]] = {}
        self._schema: str | None = None
        self._head = 0
        self._floor = 0
        self._cond = threading.Condition()

    def append(self, prepare: Callable[[LogView], Append]) -> int:
        with self._cond:
            entry = prepare(_MemoryView(self))
            self._head += 1
            pos = self._head
            self._entries.append((pos, bytes(entry.body)))
            for t, k, present in entry.keys:
                self._keys[(t, k)] = (pos, present)
            if entry.schema is not None:
                self._schema = json.dumps(entry.schema, sort_keys=True)
            self._cond.notify_all()
            return pos

    def head(self) -> int:
        return self._head

    def last(self, type_name: str, key_id: str) -> tuple[int, bool] | None:
        # no lock: an append holds it through prepare, and one dict read is atomic
        return self._keys.get((type_name, key_id))

    def read(self, after: int, limit: int = 1000, *, fresh: bool = True) -> list[tuple[int, bytes]]:
        with self._cond:
            if after < self._floor:
                raise LogTrimmed(
                    f"memory log: entries after {after} were trimmed (kept from "
                    f"{self._floor + 1}); load a newer version first"
                )
            i = bisect.bisect_right(self._entries, after, key=lambda e: e[0])
            return self._entries[i : i + limit]

    def wait(self, after: int, timeout: float) -> int:
        with self._cond:
            self._cond.wait_for(lambda: self._head > after, timeout)
            return self._head

    def trim(self, upto: int) -> int:
        with self._cond:
            i = bisect.bisect_right(self._entries, upto, key=lambda e: e[0])
            del self._entries[:i]
            self._floor = max(self._floor, upto)
            return i

    def start_after(self, position: int, entries: Iterable[Append] = (),
                    keys: Iterable[tuple[str, str, int, bool]] = ()) -> int:  # fmt: skip
        """Make an empty Log's next position ``position + 1``, with ``keys`` as the last
        changes up to it, and append ``entries`` from there (see
        :meth:`nearstate.backends.local_log.LocalLog.start_after`)."""
        with self._cond:
            if self._head or self._floor:
                raise LogError("memory log is not empty: a restore needs a new Log")
            for t, k, p, e in keys:
                if not 0 < p <= position:
                    raise LogError(f"a key's last change at {p} is not among the positions "
                                   f"up to {position}")  # fmt: skip
                self._keys[(t, k)] = (int(p), bool(e))
            self._head = self._floor = int(position)
            for entry in entries:
                self.append(lambda _view, e=entry: e)
            return self._head

    def key_positions(self) -> list[tuple[str, str, int, bool]]:
        """Every key's last change: ``(type, key id, position, exists afterwards)``."""
        with self._cond:
            return [(t, k, p, e) for (t, k), (p, e) in self._keys.items()]

    def schema(self, *, fresh: bool = True) -> str | None:
        return self._schema
