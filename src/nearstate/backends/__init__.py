"""Implementations of the ports in :mod:`nearstate.ports`, one module per place:

- ``memory``: in the memory of one process (tests, in-process pipelines);
- ``local`` and ``local_log``: a local directory, the embedded default — blobs and the
  announcement as files, the Log in SQLite (``DIR/log.sqlite``);
- ``nats_store`` and ``nats_log``: NATS JetStream — blobs in an Object Store, the
  announcement and the producer's lock in a KV bucket, the Log as a stream — over the
  shared connection of ``nats_conn``; ``blob_cache`` keeps fetched blobs once per host.

Open a dataset by URL (:func:`nearstate.open`: a directory or ``nats://...``) rather than
wiring these by hand. The in-memory and local classes are exported here; the NATS ones
are imported from their modules (they load nats-py). Every backend passes the contract
suites in :mod:`nearstate.testing`.
"""

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
