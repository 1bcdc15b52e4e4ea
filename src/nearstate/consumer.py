"""The consumer: holds the current version of a dataset in memory and follows
announcements.

``consumer.state`` is one immutable version; a refresh builds the next one aside and swaps
a single reference, so a request that took ``state`` reads one version to its end however
many refreshes happen meanwhile. Moving between versions applies deltas forward, reverse
deltas backward, and falls back to the nearest snapshot when a chain is broken. When a
refresh fails (a missing or corrupt blob, a delta that does not apply, an announced
version that does not exist) the consumer stays on its last good version, keeps the error
in :attr:`Consumer.last_error`, and tries again later.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from .errors import DatasetError, NearstateError
from .layered import Changes, LayeredState, gather
from .ports import AnnouncementWatcher, BlobStore
from .read_state import ReadState
from .schema import Schema
from .versions import (
    Catalog,
    announced_version,
    describe,
    load_version,
    net_changes,
    open_snapshot,
    walk,
)

log = logging.getLogger("nearstate.consumer")

State = ReadState | LayeredState


@dataclass(frozen=True)
class RefreshEvent:
    """What one refresh did. ``changes`` holds the keys changed per type, or None when the
    consumer loaded a snapshot (then any record may have changed)."""

    previous: int | None
    version: int
    changes: dict[str, Changes] | None
    duration_ms: float


Listener = Callable[[RefreshEvent], Any]


class Consumer:
    """Holds the latest announced version of a dataset (or a pinned one).

    ``compact_ratio``: once the records read from delta layers exceed this fraction of the
    snapshot under them (and at least ``compact_min`` records), the consumer loads the
    newest snapshot instead of applying more deltas.
    """

    def __init__(
        self,
        blobs: BlobStore,
        watcher: AnnouncementWatcher,
        *,
        schema: Schema | None = None,
        verify: bool = True,
        retry_interval: float = 1.0,
        compact_ratio: float = 0.1,
        compact_min: int = 50_000,
    ):
        self.blobs = blobs
        self.watcher = watcher
        self.schema = schema
        self.verify = verify
        self.retry_interval = retry_interval
        self.compact_ratio = compact_ratio
        self.compact_min = compact_min
        self._state: State | None = None
        self._pinned: int | None = None
        self._listeners: list[Listener] = []
        self._lock = threading.RLock()  # one refresh at a time
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.last_refresh: float | None = None  #: time.time() of the last successful refresh
        self.last_error: str | None = None  #: why the last refresh failed (None: it did not)
        self.announced_version: int | None = None

    # -- what it holds ------------------------------------------------------------------

    @property
    def state(self) -> State:
        """The current version. Hold on to it to read one consistent version."""
        s = self._state
        if s is None:
            raise DatasetError("the consumer holds no version yet (nothing announced?)")
        return s

    @property
    def version(self) -> int | None:
        s = self._state
        return None if s is None else s.version

    @property
    def lag(self) -> int:
        """Announced version minus the version held (0 when up to date or pinned)."""
        if self.announced_version is None or self._state is None:
            return 0 if self.announced_version is None else self.announced_version
        return max(0, self.announced_version - self._state.version)

    def bytes_per_type(self) -> dict[str, int]:
        s = self._state
        return {} if s is None else s.type_nbytes()

    def add_listener(self, fn: Listener) -> None:
        """Call ``fn(event)`` after each refresh (from the refreshing thread)."""
        self._listeners.append(fn)

    def remove_listener(self, fn: Listener) -> None:
        self._listeners.remove(fn)

    # -- moving between versions --------------------------------------------------------

    def refresh(self) -> bool:
        """Move to the announced version (unless pinned). Returns whether the version
        changed; on failure stays where it is, sets :attr:`last_error` and raises."""
        try:
            ann = self.watcher.latest()
            if ann is None:
                return False
            self.announced_version = announced_version(ann)
        except NearstateError as e:
            self.last_error = f"cannot read the announcement: {describe(e)}"
            raise
        if self._pinned is not None:
            return False
        return self.move_to(self.announced_version)

    def move_to(self, target: int) -> bool:
        """Hold version ``target``: deltas forward, reverse deltas back, or a snapshot."""
        with self._lock:
            cur = self._state
            if cur is not None and cur.version == target:
                return False
            t0 = time.perf_counter()
            try:
                new, changes = self._reach(cur, target)
            except NearstateError as e:
                self.last_error = f"cannot move to version {target}: {describe(e)}"
                log.warning("%s", self.last_error)
                raise
            except OSError as e:
                self.last_error = f"cannot move to version {target}: {e}"
                raise DatasetError(self.last_error) from e
            self._state = new
            self.last_error = None
            self.last_refresh = time.time()
            ev = RefreshEvent(
                None if cur is None else cur.version,
                new.version,
                changes,
                (time.perf_counter() - t0) * 1000,
            )
        with self._changed:
            self._changed.notify_all()
        for fn in list(self._listeners):
            try:
                fn(ev)
            except Exception:
                log.exception("refresh listener %r failed", fn)
        return True

    def _reach(self, cur: State | None, target: int) -> tuple[State, dict[str, Changes] | None]:
        if cur is None:
            return load_version(self.blobs, target, verify=self.verify, schema=self.schema), None
        cat = Catalog(self.blobs)
        if self._should_compact(cur, target, cat):
            return open_snapshot(self.blobs, target, verify=self.verify, schema=self.schema), None
        merged: dict[str, Changes] = {}

        try:
            new = walk(self.blobs, cur, target, verify=self.verify, on_step=gather(merged),
                       schema=self.schema)  # fmt: skip
            return new, (merged if abs(target - cur.version) <= 1 else
                         net_changes(cur, new, merged))  # fmt: skip
        except NearstateError as e:
            # a broken chain: fall back to the nearest snapshot and deltas from it
            log.warning("delta chain to version %s broken (%s); loading a snapshot", target,
                        describe(e))  # fmt: skip
            try:
                state = load_version(
                    self.blobs, target, verify=self.verify, schema=self.schema, catalog=cat
                )
            except NearstateError as e2:
                e.add_note(f"falling back to a snapshot failed too: {describe(e2)}")
                raise e from e2
            return state, None

    def _should_compact(self, cur: State, target: int, cat: Catalog) -> bool:
        if target not in cat.snapshots or target < cur.version:
            return False
        if not isinstance(cur, LayeredState):
            return False
        base = sum(len(cur.base[n]) for n in cur.base if cur.base[n].typedef.key)
        return cur.overlay_size >= max(self.compact_min, self.compact_ratio * base)

    def pin(self, version: int) -> None:
        """Move to ``version`` and stay there until :meth:`unpin`."""
        self.move_to(version)
        self._pinned = version

    def unpin(self) -> None:
        """Follow announcements again (moves to the announced version now)."""
        self._pinned = None
        self.refresh()

    @property
    def pinned(self) -> int | None:
        return self._pinned

    # -- following announcements --------------------------------------------------------

    def start(self, *, wait: bool = True, timeout: float = 30.0) -> Consumer:
        """Load the announced version and follow announcements in a background thread.
        With ``wait``, returns once a version is held (DatasetError after ``timeout``)."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="nearstate-consumer",
                                            daemon=True)  # fmt: skip
            self._thread.start()
        if wait and not self.wait_for_version(None, timeout):
            raise DatasetError(
                f"no version loaded within {timeout:g} s"
                + (f": {self.last_error}" if self.last_error else " (nothing announced?)")
            )
        return self

    def stop(self) -> None:
        self._stop.set()
        t, self._thread = self._thread, None
        if t is not None:
            t.join(timeout=5)

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except NearstateError:
                self._stop.wait(self.retry_interval)
                continue
            except Exception:
                log.exception("consumer refresh crashed")
                self._stop.wait(self.retry_interval)
                continue
            try:
                self.watcher.wait(self.version, timeout=0.5)
            except NearstateError as e:
                self.last_error = f"watching announcements failed: {e}"
                self._stop.wait(self.retry_interval)

    def wait_for_version(self, version: int | None, timeout: float) -> bool:
        """Block until the held version is at least ``version`` (any version: None)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                v = self.version
                if v is not None and (version is None or v >= version):
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 0.1))

    async def updates(self, *, poll: float = 0.5) -> AsyncIterator[State]:
        """Follow announcements from asyncio: yields the state now and after each change.
        Blocking work (waiting, loading) runs in a worker thread."""
        last = None
        while True:
            if self._thread is None:
                try:
                    await asyncio.to_thread(self.refresh)
                except NearstateError:
                    await asyncio.sleep(self.retry_interval)
                    continue
            s = self._state
            if s is not None and s.version != last:
                last = s.version
                yield s
                continue
            if self._thread is None:
                await asyncio.to_thread(self.watcher.wait, last, poll)
            else:
                await asyncio.to_thread(self.wait_for_version, (last or 0) + 1, poll)
