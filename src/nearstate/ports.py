"""The ports through which versions and writes travel: where blobs are kept
(:class:`BlobStore`), how the current version is announced and who may produce it
(:class:`Announcer`, :class:`Lease`, :class:`AnnouncementWatcher`), and the Log of
committed writes (:class:`Log`; an append's ``prepare`` is handed a :class:`LogView` to
check its conditions against and returns an :class:`Append`). Each is a small Protocol;
backends implement them — in memory, in a local directory (files and a SQLite Log) and
on NATS JetStream (:mod:`nearstate.backends`) — and one contract test suite per port
(:mod:`nearstate.testing`, shipped with the package) holds every backend, yours too, to
the same behaviour.

Blob names are relative paths such as ``snapshots/00000000000000000007.blob``; a backend
may map them to files, keys or objects as it likes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

Buffer = bytes | bytearray | memoryview

RESERVED = frozenset({
    "announced.json", "producer.lock",
    "log.sqlite", "log.sqlite-wal", "log.sqlite-shm", "log.sqlite-journal",
})  # fmt: skip


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


# -- the Log ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Append:
    """What a transaction adds to the Log: its encoded ``body``; the keys it changes as
    ``(type, key id, exists afterwards)``; and the dataset's schema (JSON) when the
    transaction changed it, else None."""

    body: bytes
    keys: list[tuple[str, str, bool]]
    schema: dict[str, Any] | None = None


@runtime_checkable
class LogView(Protocol):
    """The Log as it stands at its head, seen while a transaction is being appended."""

    def last(self, type_name: str, key_id: str) -> tuple[int, bool] | None:
        """``(position of the key's last change, whether the key exists after it)``, or
        None if the key was never changed through the Log."""
        ...

    def schema(self) -> str | None:
        """The dataset's schema as the Log keeps it (JSON text), or None."""
        ...


@runtime_checkable
class Log(Protocol):
    """The ordered, durable record of committed transactions; a position is a Token.

    Positions start at 1 and only grow. Safe for several writers at once: ``append`` runs
    ``prepare`` with the Log held at its head, so conditions checked there cannot be
    invalidated before the entry is written.
    """

    def append(self, prepare: Callable[[LogView], Append]) -> int:
        """Call ``prepare(view)`` at the head (it may raise: then nothing is written),
        append what it returns, and return the entry's position once it is durable.
        ``prepare`` may be called more than once (on a retry); it must not have effects,
        nor append itself. It may run on another thread of the process (a backend that
        commits appends from several threads together runs theirs on the one committing):
        it must not rely on thread-locals or on locks its caller holds."""
        ...

    def head(self) -> int:
        """The position of the last committed entry (0 when there is none)."""
        ...

    def last(self, type_name: str, key_id: str) -> tuple[int, bool] | None:
        """The key's last change as of the head, as :meth:`LogView.last` gives it, read
        without holding the Log for a write (a token is asked for far more often than a
        transaction is committed, and must not queue behind commits)."""
        ...

    def read(self, after: int, limit: int = 1000, *, fresh: bool = True) -> list[tuple[int, bytes]]:
        """Up to ``limit`` entries after position ``after``, oldest first: every entry
        committed before the call (up to ``limit``). Raises
        :class:`~nearstate.errors.LogTrimmed` if entries after ``after`` were trimmed.

        ``fresh=False`` lets a networked backend answer from entries it has already
        received, without asking the server for its head (a follower that has just been
        woken by :meth:`wait` uses it); it may then miss the newest entries. Local
        backends always answer fresh."""
        ...

    def wait(self, after: int, timeout: float) -> int:
        """Block until the head is past ``after`` or ``timeout`` seconds pass; return the
        head."""
        ...

    def trim(self, upto: int) -> int:
        """Forget entries at positions up to ``upto`` (they are in a retained version);
        return how many were removed. Key positions (for conditions) are kept."""
        ...

    def schema(self, *, fresh: bool = True) -> str | None:
        """The dataset's schema as the Log keeps it (JSON text), or None. ``fresh=False``:
        as far as this handle has seen (see :meth:`read`)."""
        ...
