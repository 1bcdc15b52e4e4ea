"""Contract test suites for the ports in :mod:`nearstate.ports`, shipped with the package
so that a backend of your own runs the same tests as nearstate's: subclass a contract in
a test module and supply its fixtures; pytest collects the subclass (``Test…``), never
these classes themselves. Needs pytest (a test dependency: ``pip install pytest``).

``BlobStoreContract`` needs ``blobs`` (a fresh, empty BlobStore).
``AnnouncerContract`` needs ``announcer`` (a fresh Announcer of one dataset), ``watcher``
(an AnnouncementWatcher of that dataset) and ``second_announcer`` (another handle on that
dataset, as a second producer would hold; it may be ``announcer`` itself when the backend
only has one handle per dataset).
``LogContract`` needs ``log`` (a fresh, empty Log) and ``second_log`` (another handle on
that Log, as another writer would hold; it may be ``log`` itself).

For example, for a Log of your own::

    import pytest
    from nearstate.testing import LogContract

    class TestMyLog(LogContract):
        @pytest.fixture
        def log(self, tmp_path):
            return MyLog(tmp_path)

Over 600 lines: one class per port, each a backend author's whole checklist; split,
they would scatter what is read together.
"""

from __future__ import annotations

import array
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from nearstate.errors import BlobNotFound, LockedError, LogTrimmed
from nearstate.ports import AnnouncementWatcher, Announcer, Append, BlobStore, Lease, Log, LogView

# A wait that should end at once is given LONG seconds and must end within PROMPT; a wait
# that should time out is given SHORT seconds and must end within SHORT + PROMPT.
LONG = 10.0
PROMPT = 2.0
SHORT = 0.2
# How long waiters are given to block before a test announces what they wait for.
SETTLE = 0.1

# Blob names that would lead out of a store's namespace.
ESCAPING_NAMES = ["../escape", "snapshots/../../escape", "..", "/abs/path"]


class BlobStoreContract:
    """What every :class:`~nearstate.ports.BlobStore` does."""

    @pytest.fixture
    def blobs(self) -> BlobStore:
        raise NotImplementedError("a BlobStoreContract subclass supplies the `blobs` fixture")

    def test_is_a_blob_store(self, blobs: BlobStore) -> None:
        """The backend satisfies the Protocol (every method is present)."""
        assert isinstance(blobs, BlobStore)

    def test_put_joins_parts_of_every_buffer_kind(self, blobs: BlobStore) -> None:
        """put stores the concatenation of bytes, bytearray and memoryview parts (a
        multi-byte memoryview counts in bytes) and returns the total size in bytes."""
        words = array.array("I", [1, 2, 3])
        parts = [b"ab", bytearray(b"cd"), memoryview(b"xefx")[1:3], memoryview(words), b""]
        expected = b"abcdef" + words.tobytes()
        assert blobs.put("snapshots/0001.blob", parts) == len(expected) == 18
        assert bytes(blobs.get("snapshots/0001.blob")) == expected

    def test_put_takes_an_iterator_of_parts(self, blobs: BlobStore) -> None:
        """parts may be a one-shot generator, not only a list."""

        def parts() -> Iterator[bytes]:
            for i in range(5):
                yield bytes([i]) * 3

        assert blobs.put("deltas/0001-0002.blob", parts()) == 15
        assert bytes(blobs.get("deltas/0001-0002.blob")) == b"".join(
            bytes([i]) * 3 for i in range(5)
        )

    def test_large_blob_round_trips(self, blobs: BlobStore) -> None:
        """A 5 MB blob put in 1 MB parts comes back byte for byte."""
        data = bytes(range(256)) * (5 * 1024 * 1024 // 256) + b"tail"
        chunks = [memoryview(data)[i : i + (1 << 20)] for i in range(0, len(data), 1 << 20)]
        assert blobs.put("snapshots/big.blob", chunks) == len(data)
        got = blobs.get("snapshots/big.blob")
        assert len(got) == len(data)
        assert bytes(got) == data

    def test_empty_blob(self, blobs: BlobStore) -> None:
        """A blob of zero bytes (from no parts or empty parts) exists, is listed and reads
        back empty."""
        assert blobs.put("empty", []) == 0
        assert blobs.put("also-empty", [b"", bytearray()]) == 0
        assert bytes(blobs.get("empty")) == b""
        assert len(blobs.get("also-empty")) == 0
        assert blobs.list() == ["also-empty", "empty"]

    def test_put_replaces(self, blobs: BlobStore) -> None:
        """A second put under a name replaces the first, also by a shorter blob."""
        blobs.put("versions/7", [b"first version, rather long"])
        assert blobs.put("versions/7", [b"second"]) == 6
        assert bytes(blobs.get("versions/7")) == b"second"
        assert blobs.list() == ["versions/7"]

    def test_failed_put_leaves_previous_blob(self, blobs: BlobStore) -> None:
        """When the parts fail midway, put raises and the previous blob is intact, with no
        partial blob anywhere."""
        blobs.put("snapshots/0001.blob", [b"previous"])

        def parts() -> Iterator[bytes]:
            yield b"new beginning"
            raise RuntimeError("the producer failed while writing")

        with pytest.raises(RuntimeError, match="producer failed"):
            blobs.put("snapshots/0001.blob", parts())
        with pytest.raises(RuntimeError, match="producer failed"):
            blobs.put("snapshots/0002.blob", parts())
        assert bytes(blobs.get("snapshots/0001.blob")) == b"previous"
        assert blobs.list() == ["snapshots/0001.blob"]

    def test_missing_blob_raises_blob_not_found(self, blobs: BlobStore) -> None:
        """get of an absent name raises BlobNotFound carrying that name, also in a store
        that holds other blobs."""
        with pytest.raises(BlobNotFound) as e:
            blobs.get("snapshots/0009.blob")
        assert e.value.name == "snapshots/0009.blob"
        blobs.put("snapshots/0001.blob", [b"x"])
        with pytest.raises(BlobNotFound) as e:
            blobs.get("snapshots/0002.blob")
        assert e.value.name == "snapshots/0002.blob"

    def test_delete_removes(self, blobs: BlobStore) -> None:
        """delete removes the blob (get raises, list omits it) and leaves the others."""
        blobs.put("a", [b"1"])
        blobs.put("b", [b"2"])
        blobs.delete("a")
        with pytest.raises(BlobNotFound):
            blobs.get("a")
        assert blobs.list() == ["b"]
        assert bytes(blobs.get("b")) == b"2"

    def test_delete_missing_is_not_an_error(self, blobs: BlobStore) -> None:
        """Deleting an absent blob (never stored, or deleted twice) does nothing."""
        blobs.delete("never/stored")
        blobs.put("once", [b"x"])
        blobs.delete("once")
        blobs.delete("once")
        assert blobs.list() == []

    def test_list_is_sorted_and_filtered_by_prefix(self, blobs: BlobStore) -> None:
        """list returns every name (nested ones as 'dir/file') sorted; a prefix is a plain
        string prefix, not only a directory."""
        names = [
            "snapshots/0002.blob",
            "deltas/0001-0002.blob",
            "snapshots/0001.blob",
            "snapshots-old",
            "reverse/0002-0001.blob",
            "versions/0001",
            "top",
        ]
        for n in names:
            blobs.put(n, [n.encode()])
        assert blobs.list() == sorted(names)
        assert blobs.list("") == sorted(names)
        assert blobs.list("snapshots/") == ["snapshots/0001.blob", "snapshots/0002.blob"]
        assert blobs.list("snapshots") == [
            "snapshots-old",
            "snapshots/0001.blob",
            "snapshots/0002.blob",
        ]
        assert blobs.list("snapshots/0002") == ["snapshots/0002.blob"]
        assert blobs.list("nothing/") == []
        for n in names:
            assert bytes(blobs.get(n)) == n.encode()

    def test_directory_of_names_is_not_a_blob(self, blobs: BlobStore) -> None:
        """A name that is only the leading part of other names ('snapshots' when
        'snapshots/0001.blob' exists) is no blob: get raises BlobNotFound, delete does
        nothing."""
        blobs.put("snapshots/0001.blob", [b"s"])
        with pytest.raises(BlobNotFound) as e:
            blobs.get("snapshots")
        assert e.value.name == "snapshots"
        blobs.delete("snapshots")
        assert blobs.list() == ["snapshots/0001.blob"]
        assert bytes(blobs.get("snapshots/0001.blob")) == b"s"

    def test_list_of_empty_store(self, blobs: BlobStore) -> None:
        """A fresh store lists nothing."""
        assert blobs.list() == []
        assert blobs.list("snapshots/") == []

    def test_held_bytes_survive_delete(self, blobs: BlobStore) -> None:
        """Bytes a reader got stay readable and unchanged after the blob is deleted."""
        data = b"held by a consumer " * 1000
        blobs.put("snapshots/0001.blob", [data])
        held = blobs.get("snapshots/0001.blob")
        blobs.delete("snapshots/0001.blob")
        assert len(held) == len(data)
        assert bytes(held) == data

    def test_held_bytes_survive_replace(self, blobs: BlobStore) -> None:
        """Bytes a reader got stay unchanged after the name is given a new blob, of the same
        size or another."""
        old = b"o" * 10_000
        blobs.put("snapshots/0001.blob", [old])
        held = blobs.get("snapshots/0001.blob")
        blobs.put("snapshots/0001.blob", [b"n" * 10_000])
        assert bytes(held) == old
        blobs.put("snapshots/0001.blob", [b"short"])
        assert bytes(held) == old
        assert bytes(blobs.get("snapshots/0001.blob")) == b"short"

    @pytest.mark.parametrize("name", ESCAPING_NAMES)
    def test_refuses_names_that_escape(self, blobs: BlobStore, name: str) -> None:
        """A name with a '..' part or a leading '/' is refused with ValueError and stores
        nothing; reading such a name never succeeds."""
        with pytest.raises(ValueError):
            blobs.put(name, [b"x"])
        assert blobs.list() == []
        with pytest.raises((ValueError, BlobNotFound)):
            blobs.get(name)


class AnnouncerContract:
    """What every :class:`~nearstate.ports.Announcer` and its
    :class:`~nearstate.ports.AnnouncementWatcher` do."""

    @pytest.fixture
    def announcer(self) -> Announcer:
        raise NotImplementedError("an AnnouncerContract subclass supplies `announcer`")

    @pytest.fixture
    def watcher(self, announcer: Announcer) -> AnnouncementWatcher:
        raise NotImplementedError("an AnnouncerContract subclass supplies `watcher`")

    @pytest.fixture
    def second_announcer(self, announcer: Announcer) -> Announcer:
        raise NotImplementedError("an AnnouncerContract subclass supplies `second_announcer`")

    # --- announce / latest -------------------------------------------------------------------

    def test_are_ports(
        self, announcer: Announcer, watcher: AnnouncementWatcher, second_announcer: Announcer
    ) -> None:
        """The backend satisfies the Protocols, and lock returns a Lease."""
        assert isinstance(announcer, Announcer)
        assert isinstance(second_announcer, Announcer)
        assert isinstance(watcher, AnnouncementWatcher)
        lease = announcer.lock("producer-1")
        try:
            assert isinstance(lease, Lease)
        finally:
            lease.release()

    def test_latest_is_none_before_any_announcement(
        self, announcer: Announcer, watcher: AnnouncementWatcher
    ) -> None:
        """Nothing announced: latest() is None for the announcer and the watcher."""
        assert announcer.latest() is None
        assert watcher.latest() is None

    def test_announce_then_latest(self, announcer: Announcer, watcher: AnnouncementWatcher) -> None:
        """latest() returns a dict equal to what was announced (nested JSON values too)."""
        a = {
            "version": 1,
            "snapshot": "snapshots/00000000000000000001.blob",
            "meta": {"records": 3, "tags": ["a", "b"], "ratio": 0.5, "none": None, "ok": True},
        }
        announcer.announce(a)
        assert announcer.latest() == a
        assert watcher.latest() == a

    def test_later_announce_replaces(
        self, announcer: Announcer, watcher: AnnouncementWatcher
    ) -> None:
        """Each announce makes its announcement the current one; fields of the previous one
        do not linger."""
        announcer.announce({"version": 1, "snapshot": "snapshots/1"})
        announcer.announce({"version": 2, "delta": "deltas/1-2"})
        assert watcher.latest() == {"version": 2, "delta": "deltas/1-2"}
        announcer.announce({"version": 3})
        assert watcher.latest() == {"version": 3}
        assert announcer.latest() == {"version": 3}

    def test_announce_without_version_raises(
        self, announcer: Announcer, watcher: AnnouncementWatcher
    ) -> None:
        """An announcement without 'version' raises ValueError and changes nothing."""
        with pytest.raises(ValueError):
            announcer.announce({"snapshot": "snapshots/1"})
        assert watcher.latest() is None
        announcer.announce({"version": 1})
        with pytest.raises(ValueError):
            announcer.announce({"snapshot": "snapshots/2"})
        assert watcher.latest() == {"version": 1}

    def test_latest_returns_a_copy(
        self, announcer: Announcer, watcher: AnnouncementWatcher
    ) -> None:
        """Mutating the dict latest() returned (or a nested value) does not change the
        announcement."""
        announcer.announce({"version": 1, "meta": {"n": 1}})
        got = watcher.latest()
        assert got is not None
        got["version"] = 99
        got["meta"]["n"] = 99
        got["extra"] = True
        assert watcher.latest() == {"version": 1, "meta": {"n": 1}}
        assert announcer.latest() == {"version": 1, "meta": {"n": 1}}

    def test_announce_keeps_a_copy(
        self, announcer: Announcer, watcher: AnnouncementWatcher
    ) -> None:
        """Mutating the dict after announcing it does not change the announcement."""
        a: dict[str, Any] = {"version": 1, "meta": {"n": 1}}
        announcer.announce(a)
        a["version"] = 2
        a["meta"]["n"] = 2
        assert watcher.latest() == {"version": 1, "meta": {"n": 1}}

    # --- wait --------------------------------------------------------------------------------

    def test_wait_wakes_on_announcement_from_another_thread(
        self, announcer: Announcer, watcher: AnnouncementWatcher
    ) -> None:
        """Threads blocked waiting for a version newer than the current one all return
        promptly (well under the timeout) with the new announcement when another thread
        announces it, and not before."""
        announcer.announce({"version": 1})
        n = 3
        ready = threading.Barrier(n + 1)
        woke: list[tuple[dict[str, Any] | None, float]] = []
        lock = threading.Lock()

        def consumer() -> None:
            ready.wait()
            r = watcher.wait(newer_than=1, timeout=LONG)
            with lock:
                woke.append((r, time.monotonic()))

        threads = [threading.Thread(target=consumer, daemon=True) for _ in range(n)]
        for t in threads:
            t.start()
        ready.wait()
        # Nothing signals that a waiter is blocked inside wait(), so give them a moment to
        # get there; the assertions hold however long this takes, it only makes sure the
        # blocking path (not the "already newer" one) is what gets exercised.
        time.sleep(SETTLE)
        with lock:
            assert woke == [], "wait returned before anything new was announced"
        announced_at = time.monotonic()
        announcer.announce({"version": 2, "snapshot": "snapshots/2"})
        for t in threads:
            t.join(LONG + PROMPT)
            assert not t.is_alive()
        assert len(woke) == n
        for r, at in woke:
            assert r == {"version": 2, "snapshot": "snapshots/2"}
            assert at - announced_at < PROMPT

    def test_wait_times_out_with_current_announcement(
        self, announcer: Announcer, watcher: AnnouncementWatcher
    ) -> None:
        """With nothing new, wait returns the current announcement after about `timeout`
        seconds: not before, and not much after."""
        announcer.announce({"version": 5, "snapshot": "snapshots/5"})
        t0 = time.monotonic()
        r = watcher.wait(newer_than=5, timeout=SHORT)
        elapsed = time.monotonic() - t0
        assert r == {"version": 5, "snapshot": "snapshots/5"}
        assert SHORT * 0.9 <= elapsed < SHORT + PROMPT

    def test_wait_times_out_with_none_when_nothing_announced(
        self, watcher: AnnouncementWatcher
    ) -> None:
        """With nothing ever announced, wait(None) returns None after about `timeout`."""
        t0 = time.monotonic()
        r = watcher.wait(newer_than=None, timeout=SHORT)
        elapsed = time.monotonic() - t0
        assert r is None
        assert SHORT * 0.9 <= elapsed < SHORT + PROMPT

    def test_wait_for_none_returns_at_once_when_announced(
        self, announcer: Announcer, watcher: AnnouncementWatcher
    ) -> None:
        """wait(newer_than=None) returns the current announcement at once when there is
        one."""
        announcer.announce({"version": 1})
        t0 = time.monotonic()
        r = watcher.wait(newer_than=None, timeout=LONG)
        assert time.monotonic() - t0 < PROMPT
        assert r == {"version": 1}

    def test_wait_returns_at_once_when_already_newer(
        self, announcer: Announcer, watcher: AnnouncementWatcher
    ) -> None:
        """A waiter that is behind (newer_than is an older version) gets the current
        announcement at once."""
        announcer.announce({"version": 1})
        announcer.announce({"version": 2})
        t0 = time.monotonic()
        r = watcher.wait(newer_than=1, timeout=LONG)
        assert time.monotonic() - t0 < PROMPT
        assert r == {"version": 2}

    def test_wait_returns_a_copy(self, announcer: Announcer, watcher: AnnouncementWatcher) -> None:
        """Mutating the dict wait() returned does not change the announcement."""
        announcer.announce({"version": 1, "meta": {"n": 1}})
        got = watcher.wait(newer_than=None, timeout=LONG)
        assert got is not None
        got["version"] = 99
        got["meta"]["n"] = 99
        assert watcher.latest() == {"version": 1, "meta": {"n": 1}}
        assert watcher.wait(newer_than=None, timeout=LONG) == {"version": 1, "meta": {"n": 1}}

    # --- lock --------------------------------------------------------------------------------

    def test_lock_is_exclusive_and_names_the_holder(
        self, announcer: Announcer, second_announcer: Announcer
    ) -> None:
        """While one holds the lock, another handle's lock raises LockedError (at once)
        naming the holder; a second lock through the same handle is refused too."""
        lease = announcer.lock("producer-alpha")
        try:
            t0 = time.monotonic()
            with pytest.raises(LockedError, match="producer-alpha"):
                second_announcer.lock("producer-beta")
            assert time.monotonic() - t0 < PROMPT
            with pytest.raises(LockedError, match="producer-alpha"):
                announcer.lock("producer-gamma")
        finally:
            lease.release()

    def test_release_lets_another_lock(
        self, announcer: Announcer, second_announcer: Announcer
    ) -> None:
        """After release() another handle can take the lock, and then holds it exclusively."""
        announcer.lock("producer-alpha").release()
        lease = second_announcer.lock("producer-beta")
        try:
            with pytest.raises(LockedError, match="producer-beta"):
                announcer.lock("producer-alpha")
        finally:
            lease.release()
        announcer.lock("producer-alpha").release()

    def test_release_is_idempotent(self, announcer: Announcer, second_announcer: Announcer) -> None:
        """Releasing twice is not an error, and a stale second release does not free a lock
        somebody else took in between."""
        first = announcer.lock("producer-alpha")
        first.release()
        first.release()
        second = second_announcer.lock("producer-beta")
        try:
            first.release()
            with pytest.raises(LockedError, match="producer-beta"):
                announcer.lock("producer-gamma")
        finally:
            second.release()
            second.release()
        announcer.lock("producer-gamma").release()


# --- the Log -------------------------------------------------------------------------------


class _Refused(Exception):
    """Raised by a test's ``prepare`` to refuse an append."""


def _entry(body: bytes, keys: list[tuple[str, str, bool]] | None = None,
           schema: dict[str, Any] | None = None) -> Callable[[LogView], Append]:  # fmt: skip
    """A ``prepare`` that appends ``body`` with ``keys`` and ``schema`` unconditionally."""
    return lambda view: Append(body, list(keys or []), schema)


def _read_all(log: Log, after: int = 0, limit: int = 7) -> list[tuple[int, bytes]]:
    """Every entry after ``after``, read ``limit`` at a time, bodies as bytes."""
    out: list[tuple[int, bytes]] = []
    while True:
        rows = log.read(after, limit)
        if not rows:
            return out
        assert len(rows) <= limit
        out.extend((int(p), bytes(b)) for p, b in rows)
        after = rows[-1][0]


class LogContract:
    """What every :class:`~nearstate.ports.Log` does: ordered, durable entries whose
    positions start at 1 and only grow, an append whose ``prepare`` sees the head and may
    refuse, key positions and the schema kept beside the entries, waiting, and trimming."""

    @pytest.fixture
    def log(self) -> Log:
        raise NotImplementedError("a LogContract subclass supplies the `log` fixture")

    @pytest.fixture
    def second_log(self, log: Log) -> Log:
        return log

    # --- append / head / read ----------------------------------------------------------------

    def test_is_a_log(self, log: Log, second_log: Log) -> None:
        """The backend satisfies the Protocol, and prepare is given a LogView."""
        assert isinstance(log, Log)
        assert isinstance(second_log, Log)
        views: list[object] = []

        def prepare(view: LogView) -> Append:
            views.append(view)
            return Append(b"x", [])

        log.append(prepare)
        assert len(views) >= 1
        assert all(isinstance(v, LogView) for v in views)

    def test_empty_log(self, log: Log) -> None:
        """A fresh Log has head 0, no entries after any position and no schema."""
        assert log.head() == 0
        assert log.read(0) == []
        assert log.read(0, 5) == []
        assert log.read(10) == []
        assert log.schema() is None

    def test_append_returns_positions_from_1(self, log: Log, second_log: Log) -> None:
        """Positions start at 1 and grow by one per append, whichever handle appends; the
        head is the last position."""
        assert log.append(_entry(b"a")) == 1
        assert log.head() == 1
        assert second_log.append(_entry(b"b")) == 2
        assert log.append(_entry(b"c")) == 3
        assert log.head() == second_log.head() == 3

    def test_read_returns_entries_in_order_and_honours_limit(
        self, log: Log, second_log: Log
    ) -> None:
        """read(after, limit) returns (position, body) oldest first, only those after
        ``after`` and at most ``limit`` of them; bodies come back byte for byte (binary and
        empty ones too)."""
        bodies = [b"first", b"\x00\xff\x00binary", b"", b"x" * 100_000, b"last"]
        for b in bodies:
            log.append(_entry(b))
        want = list(enumerate(bodies, start=1))
        for reader in (log, second_log):
            got = reader.read(0)
            assert [(p, bytes(b)) for p, b in got] == want
            assert all(type(p) is int for p, _ in got)
            assert [(p, bytes(b)) for p, b in reader.read(0, 2)] == want[:2]
            assert [(p, bytes(b)) for p, b in reader.read(2, 2)] == want[2:4]
            assert [(p, bytes(b)) for p, b in reader.read(4, 100)] == want[4:]
            assert reader.read(5) == []
            assert reader.read(99) == []
            assert _read_all(reader, 0, limit=1) == want

    def test_failed_prepare_appends_nothing(self, log: Log) -> None:
        """When prepare raises, the exception reaches the caller unchanged and nothing is
        written: not the entry, its keys or its schema; the next append takes the next
        position as if the failed one had never been tried."""
        log.append(_entry(b"kept", [("T", "1", True)], {"types": ["v1"]}))
        schema_before = log.schema()
        error = _Refused("no")

        def refuse(view: LogView) -> Append:
            raise error

        with pytest.raises(_Refused) as e:
            log.append(refuse)
        assert e.value is error

        def refuse_late(view: LogView) -> Append:
            view.last("T", "2")
            view.schema()
            raise _Refused("after looking")

        with pytest.raises(_Refused, match="after looking"):
            log.append(refuse_late)
        assert log.head() == 1
        assert [(p, bytes(b)) for p, b in log.read(0)] == [(1, b"kept")]
        assert log.schema() == schema_before
        assert log.append(_entry(b"next")) == 2
        assert [(p, bytes(b)) for p, b in log.read(1)] == [(2, b"next")]

    def test_view_last_gives_each_keys_last_change(self, log: Log, second_log: Log) -> None:
        """view.last(type, key id) is (position, exists) of the key's last change through
        the Log, None for a key never changed (the type is part of the key); it reflects
        appends made through another handle."""
        log.append(_entry(b"1", [("Story", '"a"', True), ("Story", '"b"', True)]))
        second_log.append(_entry(b"2", [("Story", '"a"', False), ("Person", '"b"', True)]))
        log.append(_entry(b"3", []))
        seen: dict[str, Any] = {}

        def look(view: LogView) -> Append:
            seen["a"] = view.last("Story", '"a"')
            seen["b"] = view.last("Story", '"b"')
            seen["pb"] = view.last("Person", '"b"')
            seen["c"] = view.last("Story", '"c"')
            seen["pa"] = view.last("Person", '"a"')
            raise _Refused("only looking")

        for handle in (log, second_log):
            seen.clear()
            with pytest.raises(_Refused):
                handle.append(look)
            assert seen["a"] is not None and tuple(seen["a"]) == (2, False)
            assert seen["b"] is not None and tuple(seen["b"]) == (1, True)
            assert seen["pb"] is not None and tuple(seen["pb"]) == (2, True)
            assert seen["c"] is None
            assert seen["pa"] is None
        second_log.append(_entry(b"4", [("Story", '"a"', True)]))
        with pytest.raises(_Refused):
            log.append(look)
        assert tuple(seen["a"]) == (4, True)

    def test_last_reads_a_keys_last_change_without_holding_the_log(
        self, log: Log, second_log: Log
    ) -> None:
        """log.last(type, key id) answers as view.last does, as of the head (appends made
        through another handle included), and while another thread holds the Log in a
        prepare it answers at once with what was committed before."""
        assert log.last("Story", '"a"') is None
        log.append(_entry(b"1", [("Story", '"a"', True), ("Story", '"b"', True)]))
        second_log.append(_entry(b"2", [("Story", '"a"', False)]))
        for handle in (log, second_log):
            a, b = handle.last("Story", '"a"'), handle.last("Story", '"b"')
            assert a is not None and tuple(a) == (2, False)
            assert b is not None and tuple(b) == (1, True)
            assert handle.last("Person", '"a"') is None
        inside, release = threading.Event(), threading.Event()

        def slow(view: LogView) -> Append:
            inside.set()
            assert release.wait(10)
            return Append(b"3", [("Story", '"b"', False)])

        t = threading.Thread(target=second_log.append, args=(slow,), daemon=True)
        t.start()
        try:
            assert inside.wait(10)
            t0 = time.monotonic()
            b = log.last("Story", '"b"')
            assert time.monotonic() - t0 < 2.0  # not queued behind the commit
            assert b is not None and tuple(b) == (1, True)
        finally:
            release.set()
            t.join(10)
        b = log.last("Story", '"b"')
        assert b is not None and tuple(b) == (3, False)

    def test_schema_is_kept_only_when_given(self, log: Log, second_log: Log) -> None:
        """An append with a schema makes it the Log's schema (JSON text equal to it, seen by
        view.schema() too and by another handle); an append without one leaves it as it
        was; a later schema replaces it."""
        first = {"types": [{"name": "Story", "fields": [{"name": "id", "type": "str"}]}]}
        second = {"types": [*first["types"], {"name": "Person", "fields": []}]}
        log.append(_entry(b"1", [], first))
        text = log.schema()
        assert isinstance(text, str)
        assert json.loads(text) == first
        assert second_log.schema() is not None and json.loads(second_log.schema()) == first
        seen: list[str | None] = []

        def look(view: LogView) -> Append:
            seen.append(view.schema())
            return Append(b"2", [])

        log.append(look)
        assert seen[-1] is not None and json.loads(seen[-1]) == first
        assert log.schema() == text
        second_log.append(_entry(b"3", [], second))
        assert json.loads(log.schema() or "null") == second
        log.append(look)
        assert json.loads(seen[-1] or "null") == second

    # --- wait ------------------------------------------------------------------------------

    def test_wait_wakes_when_another_thread_appends(self, log: Log, second_log: Log) -> None:
        """Threads waiting for an entry past the head all return promptly (well under the
        timeout) with the new head when another thread appends, and not before."""
        log.append(_entry(b"1"))
        n = 3
        ready = threading.Barrier(n + 1)
        woke: list[tuple[int, float]] = []
        lock = threading.Lock()

        def waiter() -> None:
            ready.wait()
            h = log.wait(1, LONG)
            with lock:
                woke.append((h, time.monotonic()))

        threads = [threading.Thread(target=waiter, daemon=True) for _ in range(n)]
        for t in threads:
            t.start()
        ready.wait()
        time.sleep(SETTLE)  # let the waiters block (the assertions hold however long)
        with lock:
            assert woke == [], "wait returned before anything was appended"
        appended_at = time.monotonic()
        second_log.append(_entry(b"2"))
        for t in threads:
            t.join(LONG + PROMPT)
            assert not t.is_alive()
        assert len(woke) == n, woke
        for h, at in woke:
            assert h == 2, woke
            assert at - appended_at < PROMPT, at - appended_at

    def test_wait_times_out_with_the_head(self, log: Log) -> None:
        """With nothing new, wait returns the head after about ``timeout`` seconds: not
        before, and not much after (an empty Log too)."""
        for expected in (0, 1):
            t0 = time.monotonic()
            h = log.wait(expected, SHORT)
            elapsed = time.monotonic() - t0
            assert h == expected, h
            assert SHORT * 0.9 <= elapsed < SHORT + PROMPT, elapsed
            log.append(_entry(b"x"))

    def test_wait_returns_at_once_when_already_past(self, log: Log) -> None:
        """A waiter that is behind the head gets the head at once."""
        log.append(_entry(b"1"))
        log.append(_entry(b"2"))
        t0 = time.monotonic()
        assert log.wait(0, LONG) == 2
        assert log.wait(1, LONG) == 2
        assert time.monotonic() - t0 < PROMPT

    # --- trim ------------------------------------------------------------------------------

    def test_trim_forgets_entries_up_to_a_position(self, log: Log, second_log: Log) -> None:
        """trim(upto) removes the entries up to ``upto`` and returns how many; reading from
        before that point raises LogTrimmed (for every handle), reading from it or later
        works; the head is unchanged; trimming again removes nothing."""
        for i in range(1, 6):
            log.append(_entry(f"e{i}".encode()))
        assert log.trim(2) == 2
        assert log.head() == 5
        for reader in (log, second_log):
            assert [(p, bytes(b)) for p, b in reader.read(2)] == [
                (3, b"e3"), (4, b"e4"), (5, b"e5"),
            ]  # fmt: skip
            assert [p for p, _ in reader.read(3, 1)] == [4]
            for after in (0, 1):
                with pytest.raises(LogTrimmed):
                    reader.read(after)
        assert log.trim(2) == 0
        assert log.trim(1) == 0
        with pytest.raises(LogTrimmed):
            log.read(1)  # a lower trim does not bring entries back
        assert second_log.trim(4) == 2
        assert [p for p, _ in log.read(4)] == [5]
        with pytest.raises(LogTrimmed):
            log.read(3)

    def test_trim_keeps_key_positions_and_schema(self, log: Log) -> None:
        """Trimming entries keeps each key's last position (conditions still work) and the
        schema."""
        schema = {"types": []}
        log.append(_entry(b"1", [("T", "k", True)], schema))
        log.append(_entry(b"2", [("T", "j", False)]))
        log.trim(2)
        seen: dict[str, Any] = {}

        def look(view: LogView) -> Append:
            seen["k"] = view.last("T", "k")
            seen["j"] = view.last("T", "j")
            return Append(b"3", [])

        log.append(look)
        assert tuple(seen["k"]) == (1, True)
        assert tuple(seen["j"]) == (2, False)
        assert json.loads(log.schema() or "null") == schema

    def test_positions_are_never_reused_after_trim(self, log: Log) -> None:
        """After every entry is trimmed the head stays, and the next append takes the next
        position (never one handed out before)."""
        for b in (b"1", b"2", b"3"):
            log.append(_entry(b))
        assert log.trim(3) == 3
        assert log.head() == 3
        assert log.read(3) == []
        with pytest.raises(LogTrimmed):
            log.read(2)
        assert log.append(_entry(b"4")) == 4
        assert [(p, bytes(b)) for p, b in log.read(3)] == [(4, b"4")]

    # --- several writers at once ----------------------------------------------------------

    def test_concurrent_appends_get_distinct_positions(self, log: Log, second_log: Log) -> None:
        """Appends from several threads (through both handles) each get their own position;
        together they are exactly 1..N, and each position reads back the body appended
        there."""
        log.append(_entry(b"0-first"))  # the Log exists (its creation is another test's)
        n_threads, per_thread = 6, 25
        start = threading.Barrier(n_threads)
        got: dict[int, bytes] = {}
        errors: list[BaseException] = []
        lock = threading.Lock()

        def writer(i: int) -> None:
            handle = log if i % 2 else second_log
            try:
                start.wait()
                for j in range(per_thread):
                    body = f"{i}-{j}".encode()
                    pos = handle.append(_entry(body))
                    with lock:
                        assert pos not in got, f"position {pos} handed out twice"
                        got[pos] = body
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(LONG * 3)
            assert not t.is_alive()
        assert errors == [], errors
        total = n_threads * per_thread + 1
        assert sorted(got) == list(range(2, total + 1))
        assert log.head() == total
        assert _read_all(log, 1) == sorted(got.items())

    def test_racing_expect_absent_appends_let_exactly_one_win(
        self, log: Log, second_log: Log
    ) -> None:
        """N threads race to create one key with a prepare that refuses when view.last shows
        it exists: prepare runs with the Log held at its head, so exactly one appends and
        every other one is refused."""
        log.append(_entry(b"another key", [("Story", '"other"', True)]))
        n = 8
        start = threading.Barrier(n)
        won: list[int] = []
        refused: list[str] = []
        errors: list[BaseException] = []
        lock = threading.Lock()

        def racer(i: int) -> None:
            def prepare(view: LogView) -> Append:
                row = view.last("Story", '"k"')
                if row is not None and row[1]:
                    raise _Refused(f"racer {i}: exists at {row[0]}")
                time.sleep(0.01)  # widen the window a check outside the lock would lose
                return Append(f"racer {i}".encode(), [("Story", '"k"', True)])

            try:
                start.wait()
                pos = (log if i % 2 else second_log).append(prepare)
                with lock:
                    won.append(pos)
            except _Refused as e:
                with lock:
                    refused.append(str(e))
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=racer, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(LONG)
            assert not t.is_alive()
        assert errors == [], errors
        assert won == [2], won
        assert len(refused) == n - 1, refused
        assert log.head() == 2
        assert [p for p, _ in log.read(0)] == [1, 2]
