"""Datasets: a local directory (the embedded default) or NATS JetStream, opened by URL.

Layout (see :mod:`nearstate.versions` for the blob names)::

    DIR/announced.json      the current version (replaced atomically)
    DIR/producer.lock       held by the one producer that may publish
    DIR/snapshots/ deltas/ reverse/ versions/
    DIR/log.sqlite          the Log of committed writes (see backends.local_log)

Every file is written to a temporary name, fsynced and renamed, and a version is
announced only after all its blobs are stored, so a reader never sees a version whose
blobs are incomplete, and a crash mid-publish leaves the previous version announced.

A NATS dataset keeps the same blobs in a JetStream Object Store, the announcement in a KV
bucket and the Log in a stream (see :mod:`nearstate.backends.nats_conn` and
docs/operations.md); the same code runs on either.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

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


def open_dataset(url: str | Path | None = None) -> LocalDataset | NatsDataset:
    """Open a dataset by URL: ``file:///path`` (or a plain path) is a local directory,
    created if needed; ``nats://host:4222/name`` is dataset ``name`` in NATS JetStream
    (``nats://h1:4222,h2:4222/name`` lists several servers of a cluster; ``?replicas=3``
    sets the replication of the streams it creates, ``?lease=10`` the producer lease in
    seconds). Without a URL, the ``NEARSTATE_DATASET`` environment variable names one."""
    if url is None:
        url = os.environ.get("NEARSTATE_DATASET", "")
        if not url:
            raise InputError("no dataset URL given and NEARSTATE_DATASET is not set "
                             "(use file:///path or nats://host:4222/name)")  # fmt: skip
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
        elif u.scheme in ("nats", "tls"):
            return NatsDataset.from_url(url)
        else:
            raise InputError(f"{url}: unknown dataset URL scheme {u.scheme!r} (use "
                             "file:///path or nats://host:4222/name)")  # fmt: skip
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DatasetError(f"cannot create the dataset directory {path}: {e}") from e
    return LocalDataset(path)


class Dataset:
    """What every dataset offers, whichever backend keeps it: ``blobs``, ``announcer`` and
    ``log`` are its ports; the rest builds producers, consumers and writers on them."""

    blobs: Any
    announcer: Any
    log: Any

    @property
    def name(self) -> str:
        raise NotImplementedError

    def _where(self) -> str:
        raise NotImplementedError

    def _announcement_stamp(self) -> Any:
        """Something that changes whenever the announcement may have (cheap to get)."""
        raise NotImplementedError

    def exists(self) -> bool:
        """Whether anything was published or written here."""
        raise NotImplementedError

    def announced(self) -> dict[str, Any] | None:
        """The current announcement, or None if nothing was ever published."""
        return self.announcer.latest()

    def latest_version(self) -> int | None:
        a = self.announced()
        return None if a is None else int(a["version"])

    def versions(self) -> list[int]:
        """Versions whose records are kept (oldest first)."""
        return sorted(Catalog(self.blobs).records)

    def load(
        self, version: int | None = None, *, mmap: bool = True, verify: bool = True,
        schema: Schema | None = None, types: Iterable[str] | None = None,
    ) -> ReadState | LayeredState:  # fmt: skip
        """Load the announced version (or ``version``): its snapshot, or the nearest
        snapshot before it plus deltas.

        ``types``: only these types (and the nested types their record fields need) are
        opened; the others are never read, and reading one raises SchemaError saying it
        was filtered out. A ref from a type loaded into one left out is refused with
        SchemaError naming both (see :func:`nearstate.read_state.select_types`)."""
        if version is None:
            version = self.latest_version()
            if version is None:
                raise DatasetError(
                    f"{self._where()} holds no dataset yet (nothing announced); "
                    "create one with 'nearstate import'"
                )
        return load_version(self.blobs, version, verify=verify, schema=schema, types=types)

    def producer(self, **options: Any) -> Producer:
        """The producer of this dataset (takes the publishing lock; close it when done)."""
        options.setdefault("dataset", self.name)
        return Producer(self.blobs, self.announcer, **options)

    def consumer(self, **options: Any) -> Consumer:
        """A consumer of this dataset and its Log: ``start()`` it to follow both in the
        background, or call ``refresh()``, ``wait_for(token)`` or ``sync()``.
        ``types=[...]`` holds only those types (see :class:`~nearstate.Consumer`)."""
        options.setdefault("log", self.log)
        return Consumer(self.blobs, self.announcer, **options)

    #: whether a writer moves to a newly announced version in the background (where
    #: fetching it is a network round trip or more) rather than inside the next commit
    _versions_in_background = False

    def writer(self, *, schema: Schema | None = None, **options: Any) -> Writer:
        """A writer committing to this dataset's Log (``schema``: types to declare)."""
        versions = Consumer(self.blobs, self.announcer, verify=False)
        seen: list[Any] = [None]
        moving = threading.Lock()

        def move(stamp: Any) -> None:
            try:
                with contextlib.suppress(NearstateError):  # then: the version held, or none
                    versions.refresh()
                    seen[0] = stamp
            finally:
                moving.release()

        def current() -> Any:
            # the announced version, refreshed only when the announcement may have changed.
            # Conditions stay right while a newer version is being fetched: a key changed
            # since the held version is answered by the Log's key positions
            stamp = self._announcement_stamp()
            if stamp != seen[0] and moving.acquire(blocking=False):
                if self._versions_in_background and versions._state is not None:
                    threading.Thread(target=move, args=(stamp,), daemon=True,
                                     name="nearstate-writer-version").start()  # fmt: skip
                else:
                    move(stamp)
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


class LocalDataset(Dataset):
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

    @property
    def url(self) -> str:
        return self.path.resolve().as_uri()

    def _where(self) -> str:
        return str(self.path)

    def _announcement_stamp(self) -> Any:
        # asked by a Writer on every commit: one stat, no Path made each time
        where = self.__dict__.get("_announced_at")
        if where is None:
            where = self.__dict__["_announced_at"] = str(self.path / ANNOUNCED)
        try:
            st = os.stat(where)
            return (st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError:
            return None

    def exists(self) -> bool:
        return (self.path / ANNOUNCED).is_file() or self.log.path.is_file()

    def snapshot_path(self, version: int) -> Path:
        return self.blobs.path(snapshot_name(version))

    def load(
        self, version: int | None = None, *, mmap: bool = True, verify: bool = True,
        schema: Schema | None = None, types: Iterable[str] | None = None,
    ) -> ReadState | LayeredState:  # fmt: skip
        """Load the announced version (or ``version``): its snapshot, or the nearest
        snapshot before it plus deltas. (``mmap=False`` reads snapshots into memory: with
        ``types``, only the sections of the types loaded.)"""
        if not mmap:
            from .read_state import load as _load

            if version is None:
                version = self.latest_version()
            if version is not None:
                p = self.snapshot_path(version)
                if p.is_file():
                    return _load(p, mmap=False, verify=verify, schema=schema, types=types)
        return super().load(version, verify=verify, schema=schema, types=types)


class NatsDataset(Dataset):
    """A dataset kept in NATS JetStream (see :mod:`nearstate.backends.nats_conn`): many
    writers, one producer and any number of consumers on any hosts share it."""

    def __init__(self, servers: str, name: str, *, replicas: int = 1, lease: float = 10.0,
                 cache: str | Path | None = "default"):  # fmt: skip
        """``cache``: the host's directory for fetched blobs, which every process maps
        (``"default"``: under ``$NEARSTATE_CACHE_DIR`` or ``~/.cache/nearstate``, one
        folder per server list and dataset; None: each process reads blobs into its own
        memory). See :mod:`nearstate.backends.blob_cache`."""
        from .backends.blob_cache import BlobCache, default_root
        from .backends.nats_conn import check_dataset_name, connection
        from .backends.nats_log import NatsLog
        from .backends.nats_store import NatsAnnouncer, NatsBlobStore

        self.servers = servers
        self._name = check_dataset_name(name)
        self.replicas = replicas
        conn = connection(servers)
        blob_cache = None
        if cache == "default":
            key = hashlib.sha256(f"{servers}/{name}".encode()).hexdigest()[:16]
            blob_cache = BlobCache(default_root() / f"{name}-{key}")
        elif cache is not None:
            blob_cache = BlobCache(Path(cache))
        self.blobs = NatsBlobStore(conn, name, replicas=replicas, cache=blob_cache)
        self.announcer = NatsAnnouncer(conn, name, replicas=replicas, lease=lease)
        self.log = NatsLog(conn, name, replicas=replicas)
        self._seen = -1

    @classmethod
    def from_url(cls, url: str) -> NatsDataset:
        u = urlparse(url)
        name = unquote(u.path).strip("/")
        if not name:
            raise InputError(f"{url}: name the dataset after the server "
                             "(nats://host:4222/name)")  # fmt: skip
        q = parse_qs(u.query)
        try:
            replicas = int(q.pop("replicas", ["1"])[-1])
            lease = float(q.pop("lease", ["10"])[-1])
        except ValueError as e:
            raise InputError(f"{url}: {e}") from None
        cache_opt = q.pop("cache", ["default"])[-1]
        cache: str | None = None if cache_opt in ("off", "none", "") else cache_opt
        if q:
            raise InputError(f"{url}: unknown option(s) {', '.join(sorted(q))} "
                             "(known: replicas, lease, cache)")  # fmt: skip
        if not 1 <= replicas <= 5:
            raise InputError(f"{url}: replicas must be 1 to 5, not {replicas}")
        if not (0 < lease < float("inf")):
            raise InputError(f"{url}: lease must be a number of seconds above 0, not {lease}")
        auth, _, hosts = u.netloc.rpartition("@")
        scheme = u.scheme
        servers = ",".join(f"{scheme}://{auth + '@' if auth else ''}{h}"
                           for h in (hosts or "127.0.0.1:4222").split(","))  # fmt: skip
        return cls(servers, name, replicas=replicas, lease=lease, cache=cache)

    def __repr__(self) -> str:
        return f"NatsDataset({self.url!r})"

    @property
    def name(self) -> str:
        return self._name

    @property
    def url(self) -> str:
        first = self.servers.split(",")[0]
        return f"{first}/{self._name}"

    def _where(self) -> str:
        return self.url

    _versions_in_background = True

    def _announcement_stamp(self) -> Any:
        # while the server cannot be reached, the writer keeps the version it holds (its
        # commits fail on their own)
        with contextlib.suppress(DatasetError):
            self._seen = self.announcer.seen()
        return self._seen

    def exists(self) -> bool:
        return self.announced() is not None or self.log.head() > 0

    def delete(self) -> None:
        """Delete the dataset from the server: its Log stream, KV bucket and object store,
        with everything they hold. Handles still open on it fail afterwards."""
        from .backends.nats_conn import Unavailable

        self.log.close()
        self.announcer.close()
        conn, n = self.log.conn, self.log.names

        async def delete() -> None:
            from nats.js.errors import NotFoundError

            for stream in (n.log_stream, n.kv_stream, n.obj_stream):
                with contextlib.suppress(NotFoundError):
                    await conn.js.delete_stream(stream)

        try:
            conn.run(delete(), timeout=30)
        except Unavailable as e:
            raise DatasetError(f"cannot delete {self.url}: {e}") from None


class _Published:
    def __init__(self, version: int, result: CycleResult):
        self.version = version
        self.result = result
