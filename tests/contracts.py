"""Contract test suites for the ports in :mod:`nearstate.ports`, written once for every
backend. A backend's tests subclass a contract and supply its fixtures; pytest collects
the subclass (``Test…``), never these classes themselves.

``BlobStoreContract`` needs ``blobs`` (a fresh, empty BlobStore).
``AnnouncerContract`` needs ``announcer`` (a fresh Announcer of one dataset), ``watcher``
(an AnnouncementWatcher of that dataset) and ``second_announcer`` (another handle on that
dataset, as a second producer would hold; it may be ``announcer`` itself when the backend
only has one handle per dataset).
"""

from __future__ import annotations

import array
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from nearstate.errors import BlobNotFound, LockedError
from nearstate.ports import AnnouncementWatcher, Announcer, BlobStore, Lease

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
