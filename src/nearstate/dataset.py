"""A dataset kept in a local directory: the embedded default.

Layout (see :mod:`nearstate.versions` for the blob names)::

    DIR/announced.json      the current version (replaced atomically)
    DIR/producer.lock       held by the one producer that may publish
    DIR/snapshots/ deltas/ reverse/ versions/

Every file is written to a temporary name, fsynced and renamed, and a version is
announced only after all its blobs are stored, so a reader never sees a version whose
blobs are incomplete, and a crash mid-publish leaves the previous version announced.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .backends.local import LocalAnnouncer, LocalBlobStore
from .consumer import Consumer
from .errors import DatasetError
from .layered import LayeredState
from .producer import CycleResult, Producer, cleanup
from .read_state import ReadState
from .schema import Schema
from .versions import Catalog, load_version, snapshot_name
from .write_state import WriteState

ANNOUNCED = "announced.json"


class LocalDataset:
    """A dataset in a local directory (created on first publish)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.blobs = LocalBlobStore(self.path)
        self.announcer = LocalAnnouncer(self.path)

    def __repr__(self) -> str:
        return f"LocalDataset({str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.path.resolve().name

    def exists(self) -> bool:
        return (self.path / ANNOUNCED).is_file()

    def announced(self) -> dict[str, Any] | None:
        """The current announcement, or None if nothing was ever published."""
        return self.announcer.latest()

    def latest_version(self) -> int | None:
        a = self.announced()
        return None if a is None else int(a["version"])

    def versions(self) -> list[int]:
        """Versions whose records are kept (oldest first)."""
        return sorted(Catalog(self.blobs).records)

    def snapshot_path(self, version: int) -> Path:
        return self.blobs.path(snapshot_name(version))

    def load(
        self, version: int | None = None, *, mmap: bool = True, verify: bool = True,
        schema: Schema | None = None,
    ) -> ReadState | LayeredState:  # fmt: skip
        """Load the announced version (or ``version``): its snapshot, or the nearest
        snapshot before it plus deltas. (``mmap=False`` reads snapshots into memory.)"""
        if version is None:
            version = self.latest_version()
            if version is None:
                raise DatasetError(
                    f"{self.path} holds no dataset yet (no {ANNOUNCED}); "
                    "create one with 'nearstate import'"
                )
        if not mmap:
            from .read_state import load as _load

            p = self.snapshot_path(version)
            if p.is_file():
                return _load(p, mmap=False, verify=verify, schema=schema)
        return load_version(self.blobs, version, verify=verify, schema=schema)

    def producer(self, **options: Any) -> Producer:
        """The producer of this dataset (takes the publishing lock; close it when done)."""
        options.setdefault("dataset", self.name)
        return Producer(self.blobs, self.announcer, **options)

    def consumer(self, **options: Any) -> Consumer:
        """A consumer of this dataset (call ``refresh()`` or ``start()``)."""
        return Consumer(self.blobs, self.announcer, **options)

    def publish(
        self,
        ws: WriteState,
        *,
        tags: Mapping[str, str] | None = None,
        snapshot: bool = True,
        snapshot_every: int = 10,
    ) -> int:
        """Run a full-state cycle with ``ws``; return the version now announced (the same
        as before when nothing changed)."""
        return self.publish_cycle(ws, tags=tags, snapshot=snapshot,
                                  snapshot_every=snapshot_every).version  # fmt: skip

    def publish_cycle(
        self,
        ws: WriteState,
        *,
        tags: Mapping[str, str] | None = None,
        snapshot: bool = False,
        snapshot_every: int = 10,
    ) -> _Published:
        with self.producer(snapshot_every=snapshot_every, retain_snapshots=None) as p:
            r = p.run_cycle(ws, snapshot=snapshot, tags=tags)
            v = r.version if r.version is not None else p.version
            assert v is not None
            return _Published(v, r)

    def cleanup(self, keep_snapshots: int) -> list[str]:
        """Keep the newest snapshots and the deltas from the oldest kept one on."""
        return cleanup(self.blobs, keep_snapshots=keep_snapshots)


class _Published:
    def __init__(self, version: int, result: CycleResult):
        self.version = version
        self.result = result
