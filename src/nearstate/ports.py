"""The ports through which versions travel: where blobs are kept, and how the current
version is announced. Each is a small Protocol; backends implement them
(:mod:`nearstate.backends.memory`, :mod:`nearstate.backends.local`, later NATS), and one
contract test suite (``tests/contracts.py``) holds every backend to the same behaviour.

Blob names are relative paths such as ``snapshots/00000000000000000007.blob``; a backend
may map them to files, keys or objects as it likes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol, runtime_checkable

Buffer = bytes | bytearray | memoryview

RESERVED = frozenset({"announced.json", "producer.lock"})


def check_name(name: str) -> None:
    """Refuse a blob name that could leave the store, hide from ``list`` or collide with a
    backend's own files: ValueError naming it."""
    parts = name.split("/")
    if (
        not name
        or any(p in ("", ".", "..") or p.startswith(".") for p in parts)
        or parts[-1] in RESERVED
    ):
        raise ValueError(
            f"bad blob name {name!r}: use relative parts separated by '/', none empty or "
            f"starting with '.', not {' or '.join(sorted(RESERVED))}"
        )


@runtime_checkable
class BlobStore(Protocol):
    """Keeps blobs by name. ``put`` is atomic: a reader sees the whole blob or none of it."""

    def put(self, name: str, parts: Iterable[Buffer]) -> int:
        """Store the concatenation of ``parts`` under ``name`` (replacing any); return its
        size. Durable when it returns."""
        ...

    def get(self, name: str) -> Buffer:
        """The blob's bytes (possibly a read-only memory map). Raises
        :class:`~nearstate.errors.BlobNotFound` when there is no such blob."""
        ...

    def delete(self, name: str) -> None:
        """Remove a blob; removing one that is absent is not an error. Readers that already
        hold its bytes keep them."""
        ...

    def list(self, prefix: str = "") -> list[str]:
        """Names starting with ``prefix``, sorted."""
        ...


@runtime_checkable
class Announcer(Protocol):
    """Says which version of a dataset is current. Used by the one producer."""

    def announce(self, announcement: dict[str, Any]) -> None:
        """Make ``announcement`` (a JSON object holding at least ``version``) the current
        one, atomically. Only called after every blob it names is stored."""
        ...

    def latest(self) -> dict[str, Any] | None:
        """The current announcement, or None (a producer restores from it)."""
        ...

    def lock(self, holder: str) -> Lease:
        """Take the right to publish this dataset; raise
        :class:`~nearstate.errors.LockedError` naming the holder when another has it."""
        ...


@runtime_checkable
class Lease(Protocol):
    def release(self) -> None:
        """Give up the right to publish (idempotent)."""
        ...


@runtime_checkable
class AnnouncementWatcher(Protocol):
    """Tells consumers which version is current. Never blocks except in ``wait``."""

    def latest(self) -> dict[str, Any] | None:
        """The current announcement, or None if nothing was ever announced."""
        ...

    def wait(self, newer_than: int | None, timeout: float) -> dict[str, Any] | None:
        """Block until an announcement with a version other than ``newer_than`` is current
        (or ``timeout`` seconds pass); return the current announcement (None if none)."""
        ...
