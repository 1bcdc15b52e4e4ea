"""The ports' backends held to the contracts in ``tests/contracts.py`` (memory and local
directory), plus what only the local directory promises: crash-safe writes and a producer
lock that dies with its process."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from nearstate.backends.local import LOCK, LocalAnnouncer, LocalBlobStore
from nearstate.backends.memory import MemoryAnnouncer, MemoryBlobStore
from nearstate.errors import LockedError
from nearstate.ports import AnnouncementWatcher, Announcer, BlobStore
from nearstate.testing import LONG, AnnouncerContract, BlobStoreContract

# --- the contracts, per backend -------------------------------------------------------------


class TestMemoryBlobStore(BlobStoreContract):
    @pytest.fixture
    def blobs(self) -> BlobStore:
        return MemoryBlobStore()


class TestLocalBlobStore(BlobStoreContract):
    @pytest.fixture
    def blobs(self, tmp_path: Path) -> BlobStore:
        return LocalBlobStore(tmp_path / "store")


class TestMemoryAnnouncer(AnnouncerContract):
    """One MemoryAnnouncer is the announcer, the watcher and every producer's handle."""

    @pytest.fixture
    def announcer(self) -> Announcer:
        return MemoryAnnouncer()

    @pytest.fixture
    def watcher(self, announcer: Announcer) -> AnnouncementWatcher:
        assert isinstance(announcer, MemoryAnnouncer)
        return announcer

    @pytest.fixture
    def second_announcer(self, announcer: Announcer) -> Announcer:
        return announcer


class TestLocalAnnouncer(AnnouncerContract):
    """Separate LocalAnnouncer objects on one directory, as separate processes would have."""

    @pytest.fixture
    def announcer(self, tmp_path: Path) -> Announcer:
        return LocalAnnouncer(tmp_path / "dataset")

    @pytest.fixture
    def watcher(self, tmp_path: Path) -> AnnouncementWatcher:
        return LocalAnnouncer(tmp_path / "dataset")

    @pytest.fixture
    def second_announcer(self, tmp_path: Path) -> Announcer:
        return LocalAnnouncer(tmp_path / "dataset")


# --- local directory only -------------------------------------------------------------------


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[str]]]:
    """Subprocesses a test starts; any still running at the end are killed."""
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(LONG)
        for f in (p.stdin, p.stdout, p.stderr):
            if f is not None:
                f.close()


def spawn(children: list[subprocess.Popen[str]], code: str, *args: str) -> subprocess.Popen[str]:
    """Run ``code`` in a fresh Python (this interpreter) with ``args``; its stdin stays open
    so it can block reading it."""
    p = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    children.append(p)
    return p


def read_line(p: subprocess.Popen[str], timeout: float = LONG) -> str:
    """The next line the child prints, waiting at most ``timeout`` seconds for it."""
    assert p.stdout is not None
    ready, _, _ = select.select([p.stdout], [], [], timeout)
    assert ready, f"child printed nothing within {timeout}s"
    line = p.stdout.readline()
    if not line:
        p.wait(LONG)
        assert p.stderr is not None
        pytest.fail(f"child exited ({p.returncode}) early: {p.stderr.read()}")
    return line.strip()


def kill(p: subprocess.Popen[str]) -> None:
    """SIGKILL the child and reap it (its files are closed once wait returns)."""
    os.kill(p.pid, signal.SIGKILL)
    assert p.wait(LONG) == -signal.SIGKILL


def test_local_crashed_writer_temp_file_is_ignored(tmp_path: Path) -> None:
    """A temporary file left by a crashed writer ('.name.tmp-PID') is not listed and does
    not hide or change the previous blob; later puts of that name still work."""
    store = LocalBlobStore(tmp_path)
    store.put("snapshots/0001.blob", [b"previous"])
    store.put("top", [b"top"])
    (tmp_path / "snapshots" / ".0001.blob.tmp-123").write_bytes(b"half a new blo")
    (tmp_path / ".top.tmp-123").write_bytes(b"half")
    (tmp_path / "snapshots" / ".0002.blob.tmp-123").write_bytes(b"never finished")
    assert store.list() == ["snapshots/0001.blob", "top"]
    assert store.list("snapshots/") == ["snapshots/0001.blob"]
    assert bytes(store.get("snapshots/0001.blob")) == b"previous"
    assert bytes(store.get("top")) == b"top"
    store.put("snapshots/0001.blob", [b"next"])
    assert bytes(store.get("snapshots/0001.blob")) == b"next"
    assert store.list() == ["snapshots/0001.blob", "top"]


def test_local_refuses_names_outside_root(tmp_path: Path) -> None:
    """get and delete of a name that leads out of the store's directory raise ValueError and
    leave the file there alone."""
    outside = tmp_path / "outside"
    outside.write_bytes(b"not a blob")
    store = LocalBlobStore(tmp_path / "store")
    store.put("inside", [b"x"])
    for name in ("../outside", str(outside), "a/../../outside"):
        with pytest.raises(ValueError):
            store.get(name)
        with pytest.raises(ValueError):
            store.delete(name)
        with pytest.raises(ValueError):
            store.put(name, [b"overwritten"])
    assert outside.read_bytes() == b"not a blob"


def test_local_blob_store_does_not_list_announcer_files(tmp_path: Path) -> None:
    """A blob store and an announcer may share a directory: the announcement and the lock
    file are not blobs."""
    store = LocalBlobStore(tmp_path)
    ann = LocalAnnouncer(tmp_path)
    store.put("snapshots/0001.blob", [b"s"])
    ann.announce({"version": 1, "snapshot": "snapshots/0001.blob"})
    lease = ann.lock("producer")
    try:
        assert store.list() == ["snapshots/0001.blob"]
    finally:
        lease.release()


_SLOW_WRITER = """
    import sys
    from nearstate.backends.local import LocalBlobStore

    def parts():
        for i in range(64):
            yield bytes([i % 256]) * (1 << 20)
            if i == 3:
                print("writing", flush=True)
                sys.stdin.read()  # blocks until the parent kills us

    LocalBlobStore(sys.argv[1]).put("snapshots/0001.blob", parts())
"""


def test_local_put_is_atomic_when_writer_is_killed(
    tmp_path: Path, children: list[subprocess.Popen[str]]
) -> None:
    """A process SIGKILLed in the middle of put leaves the previous blob of that name whole
    (and only an unlisted temporary file behind)."""
    store = LocalBlobStore(tmp_path)
    previous = b"previous snapshot " * 1000
    store.put("snapshots/0001.blob", [previous])
    p = spawn(children, _SLOW_WRITER, str(tmp_path))
    assert read_line(p) == "writing"
    (tmp,) = (tmp_path / "snapshots").glob(".0001.blob.tmp-*")
    assert tmp.stat().st_size >= 4 << 20  # the child really was mid-write
    kill(p)
    assert bytes(store.get("snapshots/0001.blob")) == previous
    assert store.list() == ["snapshots/0001.blob"]
    assert tmp.exists()


_LOCK_HOLDER = """
    import sys
    from nearstate.backends.local import LocalAnnouncer

    lease = LocalAnnouncer(sys.argv[1]).lock("child")
    print("locked", flush=True)
    sys.stdin.read()  # holds the lock until the parent kills us
"""


def test_local_lock_dies_with_its_process(
    tmp_path: Path, children: list[subprocess.Popen[str]]
) -> None:
    """The producer lock held by another process refuses this one (naming 'child'), and is
    free again once that process is SIGKILLed, without any release."""
    p = spawn(children, _LOCK_HOLDER, str(tmp_path))
    assert read_line(p) == "locked"
    assert (tmp_path / LOCK).read_text() == "child"
    with pytest.raises(LockedError, match="child"):
        LocalAnnouncer(tmp_path).lock("parent")
    kill(p)
    lease = LocalAnnouncer(tmp_path).lock("parent")
    try:
        assert (tmp_path / LOCK).read_text() == "parent"
        with pytest.raises(LockedError, match="parent"):
            LocalAnnouncer(tmp_path).lock("other")
    finally:
        lease.release()
