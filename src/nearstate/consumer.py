"""The consumer: holds the current version of a dataset in memory and follows
announcements.

``consumer.state`` is one immutable version; a refresh builds the next one aside and swaps
a single reference, so a request that took ``state`` reads one version to its end however
many refreshes happen meanwhile. Moving between versions applies deltas forward, reverse
deltas backward, and falls back to the nearest snapshot when a chain is broken. When a
refresh fails (a missing or corrupt blob, a delta that does not apply, an announced
version that does not exist) the consumer stays on its last good version, keeps the error
in :attr:`Consumer.last_error`, and tries again later.

With a Log, the consumer also shows every committed transaction past its version: it
tails the Log and lays the entries over the version (see :mod:`nearstate.overlay`), so a
write is visible within milliseconds of its commit, whatever the Producer is doing. Reads
choose their consistency: :attr:`Consumer.state` (eventual: never blocks),
:meth:`Consumer.wait_for` a token (read-your-writes), :meth:`Consumer.sync` (strong: the
Log's head), or :meth:`Consumer.read` with the choice as an argument. Each returns one
immutable state, so a whole page can be built from it.

Over ~600 lines on purpose: :class:`Consumer` is one state machine under one lock — the
current version, the chain of deltas it moves along, the Log's tail laid over it, the
compaction trigger and the announcement watch read and write the same fields — so its
methods stay in one class and one module.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import queue
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from .errors import DatasetError, InputError, LogTrimmed, NearstateError, ReadTimeout
from .layered import Changes, LayeredState, State, gather
from .overlay import LogTail, Net, empty_state, lay_over, with_types
from .ports import AnnouncementWatcher, BlobStore, Log
from .read_state import ReadState, select_types, type_names
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
from .writer import decode_entry, version_position

log = logging.getLogger("nearstate.consumer")

Consistency = Literal["eventual", "read-your-writes", "strong"]
CONSISTENCIES = ("eventual", "read-your-writes", "strong")


@dataclass(frozen=True, slots=True)
class RefreshEvent:
    """What one refresh did. ``changes`` holds the keys changed per type, or None when the
    consumer loaded a snapshot (then any record may have changed)."""

    previous: int | None
    version: int
    changes: dict[str, Changes] | None
    duration_ms: float
    position: int | None = None  #: the Log position shown afterwards (with a Log)


Listener = Callable[[RefreshEvent], Any]


class Consumer:
    """Holds the latest announced version of a dataset (or a pinned one).

    ``compact_ratio``: once the records read from delta layers exceed this fraction of the
    snapshot under them (and at least ``compact_min`` records), the consumer loads the
    newest snapshot instead of applying more deltas.

    ``log``: the dataset's Log; committed transactions past the version are shown too.
    ``log_batch``: entries read at a time; ``max_log_layers``: layers of Log entries laid
    over the version before they are merged into one (or as many as the keys the Log
    changed since the version, if more).

    ``types`` (Hollow's filter config): hold only these types, plus the nested types their
    ``record`` fields need. The other types are never opened, so memory follows the types
    held; reading one raises :class:`~nearstate.errors.SchemaError` saying it was filtered
    out. A ``ref`` field of a type held into a type left out is refused with SchemaError
    naming the type, field and target: here when ``schema`` is given, else at the first
    load (the consumer then holds no version and :attr:`last_error` says why). Every name
    must be a type of the version loaded (with nothing announced yet, of the Log).
    Deltas are applied to the types held only: the other types' upserts and removed keys
    are never opened, and their checksums are carried from the deltas' claims rather than
    verified (see :func:`nearstate.layered.apply_delta`); the version advances in step
    with a consumer of every type. Log entries' writes to types left out are dropped as
    they are read, never kept in the overlay.
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
        log: Log | None = None,
        log_batch: int = 10_000,
        max_log_layers: int = 32,
        types: Iterable[str] | None = None,
    ):
        self.blobs = blobs
        self.watcher = watcher
        self.schema = schema
        #: the types held (``types=...``), or None for every type
        self.types: tuple[str, ...] | None = None if types is None else type_names(types)
        if schema is not None and self.types is not None:
            select_types(schema, self.types)  # refuse unknown names and dangling refs now
        self.verify = verify
        self.retry_interval = retry_interval
        self.compact_ratio = compact_ratio
        self.compact_min = compact_min
        self._state: State | None = None
        self._pinned: int | None = None
        self._listeners: list[Listener] = []
        # lock order: _moving, then _lock. _moving: one version move at a time (the heavy
        # part runs under it alone); _lock: swapping what is shown (short)
        self._moving = threading.RLock()
        self._lock = threading.RLock()
        self._changed = threading.Condition()
        # threads waiting on _changed, counted under it before they check what they wait
        # for: an announcement that finds none skips the condition (most commits)
        self._waiting = 0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.last_refresh: float | None = None  #: time.time() of the last successful refresh
        self.last_error: str | None = None  #: why the last refresh failed (None: it did not)
        self._confirmed: float | None = None  # monotonic time the Log last said "caught up"
        self.announced_version: int | None = None
        # with a Log: the version as published, and the entries laid over it
        self.log = log
        self.log_batch = log_batch
        self.max_log_layers = max_log_layers
        self._vstate: State | None = None
        self._vempty = False  # _vstate is a stand-in: nothing announced yet
        self._reader = schema  # the schema versions are read with (plus the Log's types)
        self._tail = LogTail(0)
        self._applied = 0
        # (state, position) as one value, set once the state shows the position (under
        # _lock): what wait_for returns, read in one step (see _shown)
        self._pair: tuple[State | None, int] = (None, 0)
        self._layers = 0
        self._log_sj: str | None = None
        self._log_schema: Schema | None = None
        self._log_thread: threading.Thread | None = None
        # listeners run on a thread of their own, in order (see _announce)
        self._events: queue.SimpleQueue[RefreshEvent] = queue.SimpleQueue()
        self._delivery = threading.Condition()
        self._posted = self._delivered = 0
        self._dispatcher: threading.Thread | None = None

    # -- what it holds ------------------------------------------------------------------

    @property
    def state(self) -> State:
        """The current version. Hold on to it to read one consistent version.

        A consumer that holds nothing yet loads the announced version, and the Log's
        entries past it, on this first read (as :meth:`refresh` would): a consumer just
        made answers at once. Raises DatasetError if there is nothing to show (no version
        announced, nothing written), and what the backend raised if it cannot be read."""
        s = self._state
        if s is None:
            self._refresh_version()
            if self.log is not None:
                self._pull()
            s = self._state
            if s is None:
                raise DatasetError(
                    "the consumer has nothing to show yet: no version is announced and "
                    "nothing was written to the Log"
                )
        return s

    @property
    def version(self) -> int | None:
        s = self._vstate
        return None if s is None or self._vempty else s.version

    @property
    def position(self) -> int:
        """The Log position shown: every transaction committed up to it is visible."""
        return self._applied

    @property
    def lag(self) -> int:
        """Announced version minus the version held (0 when up to date or pinned)."""
        v = self.version
        if self.announced_version is None or v is None:
            return 0 if self.announced_version is None else self.announced_version
        return max(0, self.announced_version - v)

    def staleness(self) -> float | None:
        """Seconds since the Log last confirmed that this consumer shows every committed
        write: near 0 while a started consumer follows it, growing while the Log cannot be
        reached (reads go on from memory meanwhile; :attr:`last_error` says why). None if
        it never has (not started, or no Log)."""
        c = self._confirmed
        return None if c is None else max(0.0, time.monotonic() - c)

    def log_lag(self) -> int:
        """Committed transactions not yet shown (asks the Log for its head)."""
        return 0 if self.log is None else max(0, self.log.head() - self._applied)

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
        """Move to the announced version (unless pinned) and, with a Log, show every entry
        committed since. Returns whether what is shown changed; on failure stays where it
        is, sets :attr:`last_error` and raises."""
        changed = self._refresh_version()
        if self.log is not None:
            changed = self._pull() or changed
        self.drain()
        return changed

    def _refresh_version(self) -> bool:
        try:
            ann = self.watcher.latest()
        except NearstateError as e:
            self.last_error = f"{_ANN_FAILED}: {describe(e)}"
            raise
        if self.last_error is not None and self.last_error.startswith(_ANN_FAILED):
            self.last_error = None  # the announcement can be read again
        if ann is None:
            return False
        try:
            self.announced_version = announced_version(ann)
        except NearstateError as e:
            self.last_error = f"{_ANN_FAILED}: {describe(e)}"
            raise
        if self._pinned is not None:
            return False
        for _ in range(_MOVE_ATTEMPTS - 1):
            target = self.announced_version
            try:
                return self._move_to(target)
            except NearstateError:
                # a producer that compacts often may have removed the version this consumer
                # was loading, because newer ones exist: go for the newest one instead
                try:
                    ann = self.watcher.latest()
                    newer = None if ann is None else announced_version(ann)
                except NearstateError:
                    newer = None
                if newer is None or newer == target:
                    raise
                self.announced_version = newer
        return self._move_to(self.announced_version)

    def move_to(self, target: int) -> bool:
        """Hold version ``target``: deltas forward, reverse deltas back, or a snapshot.
        Returns once the listeners have heard of it."""
        moved = self._move_to(target)
        self.drain()
        return moved

    def _move_to(self, target: int) -> bool:
        with self._moving:
            cur = None if self._vempty else self._vstate
            if cur is not None and cur.version == target:
                return False
            t0 = time.perf_counter()
            try:
                new, changes = self._reach(cur, target)  # readers and the Log go on meanwhile
                with self._lock:
                    self._vstate, self._vempty = new, False
                    if self.log is None:
                        self._state = new
                        self._pair = (new, self._applied)
                    else:
                        self._follow_version(new)
            except NearstateError as e:
                self.last_error = f"cannot move to version {target}: {describe(e)}"
                log.warning("%s", self.last_error)
                raise
            except OSError as e:
                self.last_error = f"cannot move to version {target}: {e}"
                raise DatasetError(self.last_error) from e
            self.last_error = None
            self.last_refresh = time.time()
            ev = RefreshEvent(
                None if cur is None else cur.version,
                new.version,
                changes,
                (time.perf_counter() - t0) * 1000,
                self._applied if self.log is not None else None,
            )
        self._announce(ev)
        return True

    def _announce(self, ev: RefreshEvent | None) -> None:
        """Wake the readers waiting for a change, and queue ``ev`` for the listeners. They
        run on a thread of their own, one event at a time in order: never under this
        consumer's lock, on the thread that follows the Log or on a request's thread
        inside :meth:`wait_for`, so a slow listener (an index, a page cache) delays
        neither what is shown nor the readers waiting for it."""
        # read after the change was made: a waiter counted later sees the change (the GIL
        # orders the two; a free-threaded build takes the condition every time)
        if self._waiting or _NO_GIL:
            with self._changed:
                self._changed.notify_all()
        if ev is None or not self._listeners:  # None: there were none when it was made
            return
        with self._delivery:
            self._posted += 1
            if self._dispatcher is None:
                self._dispatcher = threading.Thread(
                    target=self._dispatch, name="nearstate-listeners", daemon=True
                )
                self._dispatcher.start()
        self._events.put(ev)

    def _dispatch(self) -> None:
        while True:
            try:
                ev = self._events.get(timeout=_DISPATCH_IDLE)
            except queue.Empty:
                with self._delivery:
                    if self._posted == self._delivered:  # idle: end (the next event starts one)
                        self._dispatcher = None
                        return
                continue
            for fn in list(self._listeners):
                try:
                    fn(ev)
                except Exception:
                    log.exception("refresh listener %r failed", fn)
            with self._delivery:
                self._delivered += 1
                self._delivery.notify_all()

    def drain(self, timeout: float = 30.0) -> bool:
        """Block until the listeners have heard every change shown so far (False after
        ``timeout``). :meth:`refresh` and :meth:`move_to` do this before they return;
        :meth:`wait_for` and :meth:`sync` do not — call it where something derived from
        the listeners (a search index, a cache) must have caught up too."""
        with self._delivery:
            if threading.current_thread() is self._dispatcher:
                return True  # from a listener: the events before this one are heard
            target = self._posted
            return self._delivery.wait_for(lambda: self._delivered >= target, timeout)

    def _reach(self, cur: State | None, target: int) -> tuple[State, dict[str, Changes] | None]:
        if cur is None:
            return load_version(self.blobs, target, verify=self.verify, schema=self._reader,
                                types=self.types), None  # fmt: skip
        cat = Catalog(self.blobs)
        if self._should_compact(cur, target, cat):
            return open_snapshot(self.blobs, target, verify=self.verify, schema=self._reader,
                                 types=self.types), None  # fmt: skip
        fwd = target > cur.version
        steps = range(cur.version + 1, target + 1) if fwd else range(target + 1, cur.version + 1)
        have = cat.deltas if fwd else cat.reverses
        if any(v not in have for v in steps) and cat.route(target) is not None:
            # no chain of deltas (a snapshot-only version, or retention removed them)
            return load_version(self.blobs, target, verify=self.verify, schema=self._reader,
                                catalog=cat, types=self.types), None  # fmt: skip
        merged: dict[str, Changes] = {}

        try:
            new = walk(self.blobs, cur, target, verify=self.verify, on_step=gather(merged),
                       schema=self._reader)  # fmt: skip
            return new, (merged if abs(target - cur.version) <= 1 else
                         net_changes(cur, new, merged))  # fmt: skip
        except NearstateError as e:
            # a broken chain: fall back to the nearest snapshot and deltas from it
            log.warning("delta chain to version %s broken (%s); loading a snapshot", target,
                        describe(e))  # fmt: skip
            try:
                state = load_version(self.blobs, target, verify=self.verify,
                                     schema=self._reader, catalog=cat,
                                     types=self.types)  # fmt: skip
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
        """Move to ``version`` and stay there until :meth:`unpin` (showing the version
        alone: no Log entries over it)."""
        before = self._pinned
        self._pinned = version
        try:
            self.move_to(version)
        except BaseException:
            self._pinned = before
            raise
        with self._lock:
            self._show()

    def unpin(self) -> None:
        """Follow announcements (and the Log) again; moves to the announced version now."""
        with self._lock:
            self._pinned = None
            self._show()
        self.refresh()

    @property
    def pinned(self) -> int | None:
        return self._pinned

    # -- following announcements --------------------------------------------------------

    def start(self, *, wait: bool = True, timeout: float = 30.0,
              freeze_gc: bool = False) -> Consumer:  # fmt: skip
        """Load the announced version and follow announcements in a background thread.
        With ``wait``, returns once a version is held (DatasetError after ``timeout``).

        ``freeze_gc``: once the first state is held, move every object the process has so
        far out of the garbage collector's reach (:func:`gc.freeze`), as long-running
        services do after start-up. Python's full collections otherwise scan them all
        and pause every thread, the refresh threads included, for tens of milliseconds
        (measured: 38 ms for a bench consumer); afterwards only newer objects are
        scanned. Objects frozen stay until the process ends unless freed by their last
        reference, so use it in a service process, not in one that starts many
        consumers."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="nearstate-consumer",
                                            daemon=True)  # fmt: skip
            self._thread.start()
            if self.log is not None:
                self._log_thread = threading.Thread(
                    target=self._run_log, name="nearstate-log-tail", daemon=True
                )
                self._log_thread.start()
        if wait and not self.wait_for_version(None, timeout):
            raise DatasetError(
                f"no version loaded within {timeout:g} s"
                + (f": {self.last_error}" if self.last_error else " (nothing announced?)")
            )
        if freeze_gc:
            gc.collect()
            gc.freeze()
        return self

    def stop(self) -> None:
        """Stop following (the state held stays readable)."""
        self._stop.set()
        for t in (self._thread, self._log_thread):
            if t is not None:
                t.join(timeout=5)
        self._thread = self._log_thread = None

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._refresh_version()
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
                self.last_error = f"{_ANN_FAILED}: {e}"
                self._stop.wait(self.retry_interval)

    def wait_for_version(self, version: int | None, timeout: float) -> bool:
        """Block until the held version is at least ``version`` (None: until there is a
        state to read, which with a Log may be the Log's entries alone)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            self._waiting += 1
            try:
                while True:
                    v = self.version
                    if version is None and self._state is not None:
                        return True
                    if v is not None and version is not None and v >= version:
                        return True
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    self._changed.wait(min(left, 0.1))
            finally:
                self._waiting -= 1

    async def updates(self, *, poll: float = 0.5) -> AsyncIterator[State]:
        """Follow announcements (and the Log) from asyncio: yields the state now and after
        each change. Blocking work (waiting, loading) runs in a worker thread."""
        last: State | None = None
        while True:
            if self._thread is None:
                try:
                    await asyncio.to_thread(self.refresh)
                except NearstateError:
                    await asyncio.sleep(self.retry_interval)
                    continue
            s = self._state
            if s is not None and s is not last:
                last = s
                yield s
                continue
            if self._thread is not None:
                await asyncio.to_thread(self._wait_change, last, poll)
            elif self.log is not None:
                await asyncio.to_thread(self.log.wait, self._applied, poll)
            else:
                await asyncio.to_thread(self.watcher.wait, self.version, poll)

    def _wait_change(self, since: State | None, timeout: float) -> None:
        with self._changed:
            self._waiting += 1  # before the check: see _announce
            try:
                self._changed.wait_for(lambda: self._state is not since, timeout)
            finally:
                self._waiting -= 1

    # -- the Log: committed writes shown before the next version ------------------------

    def wait_for(self, token: int, timeout: float = 5.0) -> State:
        """Read-your-writes: block until the transaction with ``token`` (and every one
        before it) is shown, then return the state to read. Raises
        :class:`~nearstate.errors.ReadTimeout` after ``timeout`` seconds, never stale data."""
        if self.log is None:
            raise DatasetError("read-your-writes needs the dataset's Log (this consumer has "
                               "none)")  # fmt: skip
        try:
            want = int(token)
        except (TypeError, ValueError):
            raise InputError(f"a token is a Log position (an integer), not {token!r}") from None
        s, at = self._shown()
        if s is not None and at >= want:
            return s
        deadline = time.monotonic() + timeout
        while True:
            self._pull()
            s, at = self._shown()
            if s is not None and at >= want:
                return s
            left = deadline - time.monotonic()
            if left <= 0:
                why = f"; last error: {self.last_error}" if self.last_error else ""
                raise ReadTimeout(
                    f"token {want} is not visible after {timeout:g} s: this consumer shows "
                    f"the Log up to {self._applied}{why}"
                )
            self.log.wait(self._applied, min(left, 0.05))

    def _shown(self) -> tuple[State | None, int]:
        """The state shown and a position it shows, read in one step without waiting for
        ``_lock``: ``_state`` and ``_applied`` read one after the other could pair an older
        state with a newer position, set in between by the Log's thread (a strong read
        missing a write it promised, issue 21)."""
        return self._pair

    def sync(self, timeout: float = 5.0) -> State:
        """Strong: ask the Log for its head and block until it is shown (see
        :meth:`wait_for`); every transaction committed before the call is visible."""
        if self.log is None:
            raise DatasetError("strong reads need the dataset's Log (this consumer has none)")
        return self.wait_for(self.log.head(), timeout)

    def read(
        self, consistency: Consistency = "eventual", *, token: int | None = None,
        timeout: float = 5.0,
    ) -> State:  # fmt: skip
        """The state to read with the chosen consistency (one immutable state: build a
        whole page from it). ``eventual`` never blocks; ``read-your-writes`` waits for
        ``token``; ``strong`` waits for the Log's head."""
        if consistency == "eventual":
            return self.state
        if consistency == "read-your-writes":
            if token is None:
                raise InputError("read-your-writes needs the token of the write to see")
            return self.wait_for(token, timeout)
        if consistency == "strong":
            return self.sync(timeout)
        raise InputError(
            f"unknown consistency {consistency!r}: use one of {', '.join(CONSISTENCIES)}"
        )

    def _pull(self) -> bool:
        """Hold a state, then show every Log entry committed so far (no lock held on
        entry). Returns whether anything new is shown."""
        self._ensure_state()
        try:
            with self._lock:
                return self._catch_up()
        except LogTrimmed:
            # a newer version includes what was trimmed: move to it, then read on
            self._refresh_version()
            with self._lock:
                return self._catch_up()

    def _ensure_state(self) -> None:
        """Hold something to show: the announced version, else (with a Log) no records."""
        if self._state is not None:
            return
        try:
            self._refresh_version()
        except NearstateError:
            if self.log is None:
                raise
        if self.log is None:
            return
        with self._lock:
            if self._state is not None or self._vstate is not None:
                return
            self._log_types()
            if self._log_schema is None:
                return  # nothing announced, nothing written: nothing to show yet
            self._reader = with_types(self.schema, self._log_schema)
            self._vstate = self._empty(self._reader or self._log_schema, "default")
            self._vempty = True
            self._tail = LogTail(0)
            self._applied = 0
            self._show()

    def _follow_version(self, new: State) -> None:
        """A new version is held: drop the Log entries it includes, show the rest over it."""
        p = version_position(new)
        if p < self._tail.after:  # moved back before the tail: replay from the version
            self._tail = LogTail(p)
            self._applied = p
        else:
            self._tail = self._tail.since(p)
            self._applied = max(self._applied, p)
        self._log_types()
        self._show()

    def _show(self) -> None:
        """``_state`` = the version with the whole tail laid over it."""
        v = self._vstate
        if self.log is None or self._pinned is not None or v is None:
            self._state = v
            self._layers = 0
            self._pair = (v, self._applied)
            return
        net = self._tail.net()
        self._state = lay_over(v, net, name=f"log after {self._tail.after}")[0] if net else v
        self._pair = (self._state, self._applied)
        self._layers = 1 if net else 0

    def _log_types(self) -> None:
        """Re-read the Log's schema if it changed; read the version with any new types."""
        assert self.log is not None
        sj = self.log.schema(fresh=False)  # an entry said it changed: this handle has it
        if sj != self._log_sj:
            ls = Schema.from_json(msgspec.json.decode(sj)) if sj is not None else None
            self._log_sj, self._log_schema = sj, ls
        ls = self._log_schema
        v = self._vstate
        if ls is None or v is None or all(self._known(v, t.name) for t in ls):
            return
        self._reader = with_types(self._reader or v.schema, ls)
        if self._vempty:
            self._vstate = self._empty(self._reader or Schema([]), v.dataset)
        else:
            self._vstate = load_version(self.blobs, v.version, verify=self.verify,
                                        schema=self._reader, types=self.types)  # fmt: skip
        self._show()

    def _known(self, v: State, type_name: str) -> bool:
        """Whether the version ``v`` reads ``type_name`` (or leaves it out on purpose)."""
        if type_name in v.schema.types:
            return True
        return self.types is not None and type_name not in self.types

    def _empty(self, schema: Schema, dataset: str) -> ReadState:
        """No records of ``schema``'s types (of those held, with ``types``)."""
        state = empty_state(schema, dataset)
        return state if self.types is None else ReadState(state.blob, types=self.types)

    def _held(self, entries: list[Any]) -> list[Any]:
        """``entries`` without their writes to types this consumer leaves out (an entry
        left with none still advances the position)."""
        v = self._vstate
        if self.types is None or v is None:
            return entries
        held = v.schema.types
        return [
            e if all(m[0] in held for m in e.mutations)
            else dataclasses.replace(e, mutations=[m for m in e.mutations if m[0] in held])
            for e in entries
        ]  # fmt: skip

    def _catch_up(self) -> bool:
        """Show every entry committed so far (the lock is held). Returns whether any was."""
        if self.log is None or self._pinned is not None or self._vstate is None:
            return False
        shown = False
        while True:
            rows = self.log.read(self._applied, self.log_batch, fresh=False)  # LogTrimmed: _pull
            if not rows:
                return shown
            t0 = time.perf_counter()
            # records stay msgpack until read: laying a commit over needs its keys only
            ls = self._log_schema
            entries = [decode_entry(p, b, ls, raw=True) for p, b in rows]
            if (entries[0].schema_changed if len(entries) == 1
                    else any(e.schema_changed for e in entries)):  # fmt: skip
                self._log_types()  # then decode again: keys of new types may need it
                entries = [decode_entry(p, b, self._log_schema, raw=True) for p, b in rows]
            entries = self._held(entries)
            prev = self._state
            assert prev is not None
            net = self._tail.add(entries)
            if self._layers >= max(self.max_log_layers, len(self._tail)):
                # merge the layers into one: re-laying the whole tail costs what the tail
                # holds, so it waits for as many commits (amortised: a record a commit),
                # and the copies older layers keep of changed records stay fewer than it
                changes = _changes(prev, net)
                self._show()
            else:
                new, changes = lay_over(prev, net, name=f"log {entries[0].position}-"
                                                        f"{entries[-1].position}")  # fmt: skip
                if new is not prev:
                    self._layers += 1
                self._state = new
            self._applied = entries[-1].position
            self._pair = (self._state, self._applied)
            self.last_refresh = time.time()
            shown = True
            ev = None
            if self._listeners:  # an event only for someone to hear it
                v = self._vstate.version if self._vstate is not None else 0
                ev = RefreshEvent(v, v, changes, (time.perf_counter() - t0) * 1000,
                                  self._applied)  # fmt: skip
            self._announce(ev)
            if len(rows) < self.log_batch:
                return shown

    def _run_log(self) -> None:
        assert self.log is not None
        while not self._stop.is_set():
            try:
                self._pull()
                self._confirmed = time.monotonic()
                if self.last_error and self.last_error.startswith(_LOG_FAILED):
                    log.warning("following the log again after: %s", self.last_error)
                    self.last_error = None
                if self.log.wait(self._applied, 0.5) <= self._applied:
                    self._confirmed = time.monotonic()  # nothing new: still caught up
            except NearstateError as e:
                self.last_error = f"{_LOG_FAILED}: {describe(e)}"
                log.warning("%s", self.last_error)
                self._stop.wait(self.retry_interval)
            except Exception:
                log.exception("following the log crashed")
                self._stop.wait(self.retry_interval)


_LOG_FAILED = "following the log failed"
# a free-threaded Python: an unlocked read of the waiters' count may not see a waiter
_NO_GIL = not getattr(sys, "_is_gil_enabled", lambda: True)()
_DISPATCH_IDLE = 5.0  # seconds the listeners' thread waits for an event before it ends
_MOVE_ATTEMPTS = 4  # tries to reach the announced version while it keeps moving on
_ANN_FAILED = "cannot read the announcement"


def _changes(state: State, net: Net) -> dict[str, Changes]:
    """What ``net`` changes relative to ``state``, per type."""
    out: dict[str, Changes] = {}
    for t, m in net.items():
        ts = state.get(t)
        c = Changes()
        for k, rec in m.items():
            there = ts is not None and k in ts
            if rec is None:
                if there:
                    c.removed.append(k)
            elif there:
                c.modified.append(k)
            else:
                c.added.append(k)
        if c:
            out[t] = c
    return out
