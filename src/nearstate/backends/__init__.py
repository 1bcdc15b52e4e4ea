"""Implementations of the ports in :mod:`nearstate.ports`: in memory (tests, one process)
and a local directory (the embedded default)."""

from .local import LocalAnnouncer, LocalBlobStore
from .local_log import LocalLog
from .memory import MemoryAnnouncer, MemoryBlobStore, MemoryLog

__all__ = [
    "LocalAnnouncer",
    "LocalBlobStore",
    "LocalLog",
    "MemoryAnnouncer",
    "MemoryBlobStore",
    "MemoryLog",
]
