"""Implementations of the ports in :mod:`nearstate.ports`: in memory (tests, one process)
and a local directory (the embedded default)."""

from .local import LocalAnnouncer, LocalBlobStore
from .memory import MemoryAnnouncer, MemoryBlobStore

__all__ = ["LocalAnnouncer", "LocalBlobStore", "MemoryAnnouncer", "MemoryBlobStore"]
