"""A dataset kept in a local directory: the embedded default.

Layout (see :mod:`nearstate.versions` for the blob names)::

    DIR/announced.json      the current version (replaced atomically)
    DIR/producer.lock       held by the one producer that may publish
    DIR/snapshots/ deltas/ reverse/ versions/
    DIR/log.sqlite          the Log of committed writes (see backends.local_log)

Every file is written to a temporary name, fsynced and renamed, and a version is
announced only after all its blobs are stored, so a reader never sees a version whose
blobs are incomplete, and a crash mid-publish leaves the previous version announced.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from .backends.local import LocalAnnouncer, LocalBlobStore
from .backends.local_log import LocalLog
from .compaction import Compactor, compact
from .consumer import Consumer
from .errors import DatasetError, InputError, NearstateError
from .layered import LayeredState
from .producer import CycleResult, Producer, cleanup
from .read_state import ReadState
from .schema import Schema
from .versions import Catalog, load_version, snapshot_name
from .write_state import WriteState
from .writer import Writer

ANNOUNCED = "announced.json"


def open_dataset(url: str | Path) -> LocalDataset:
    """Open a dataset by URL: ``file:///path`` (or a plain path) is a local directory,
    created if needed. (``nats://host:4222/name`` needs the NATS backend.)"""
    if isinstance(url, Path):
        path = url
    else:
        u = urlparse(url)
        if u.scheme in ("", "file") and (u.scheme or "://" not in url):
            if u.scheme == "file" and u.netloc not in ("", "localhost"):
                raise InputError(f"{url}: a file URL names a local path (file:///path), not "
                                 f"host {u.netloc!r}")  # fmt: skip
            path = Path(unquote(u.path) if u.scheme == "file" else url)
            if not str(path):
                raise InputError(f"{url!r}: no path")
        elif u.scheme == "nats":
            raise DatasetError(f"{url}: the NATS backend is not part of this version yet; "
                               "use a file:/// dataset")  # fmt: skip
        else:
            raise InputError(f"{url}: unknown dataset URL scheme {u.scheme!r} (use file:///path)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DatasetError(f"cannot create the dataset directory {path}: {e}") from e
    return LocalDataset(path)


class LocalDataset:
    """A dataset in a local directory (created on first publish)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.blobs = LocalBlobStore(self.path)
        self.announcer = LocalAnnouncer(self.path)
        self.log = LocalLog(self.path)

    def __repr__(self) -> str:
        return f"LocalDataset({str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.path.resolve().name

    def exists(self) -> bool:
        """Whether anything was published or written here."""
        return (self.path / ANNOUNCED).is_file() or self.log.path.is_file()

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
        """A consumer of this dataset and its Log: ``start()`` it to follow both in the
        background, or call ``refresh()``, ``wait_for(token)`` or ``sync()``."""
        options.setdefault("log", self.log)
        return Consumer(self.blobs, self.announcer, **options)

    def writer(self, *, schema: Schema | None = None, **options: Any) -> Writer:
        """A writer committing to this dataset's Log (``schema``: types to declare)."""
        versions = Consumer(self.blobs, self.announcer, verify=False)
        seen: list[Any] = [None]
        announced = self.path / ANNOUNCED

        def current() -> Any:
            # the announced version; a stat tells whether the announcement changed
            try:
                st = announced.stat()
                stamp: Any = (st.st_ino, st.st_mtime_ns, st.st_size)
            except OSError:
                stamp = None
            if stamp != seen[0]:
                with contextlib.suppress(NearstateError):  # then: the version held, or none
                    versions.refresh()
                    seen[0] = stamp
            return versions._state

        return Writer(self.log, schema=schema, versions=current, **options)

    def compact(self, **options: Any) -> CycleResult:
        """Fold the Log's committed writes into a new version now (takes the producer lock;
        ``options`` go to the Producer)."""
        with self.producer(**options) as p:
            return compact(p, self.log)

    def compactor(self, *, interval: float = 1.0, **options: Any) -> Compactor:
        """A background compactor (holds the producer lock until stopped and closed)."""
        return Compactor(self.producer(**options), self.log, interval=interval)

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
