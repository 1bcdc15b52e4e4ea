"""Blobs in a JetStream Object Store and announcements in a KV bucket.

Blobs use the Object Store's own layout (chunks on ``$O.BUCKET.C.<nuid>``, one rolled-up
meta message per name on ``$O.BUCKET.M.<base64 name>``), so ``nats object ls/get`` can
read them too. nats-py's own ``put`` waits for each chunk's ack in turn and its ``get``
joins chunks into a growing ``bytes`` (quadratic in the size), so both are done here:
``put`` keeps a window of chunk publishes in flight, ``get`` copies each chunk into one
buffer of the announced size and checks the SHA-256 digest. A put publishes the meta
message only after every chunk is acknowledged, so a reader sees the whole blob or the
previous one; a failed put purges its chunks.

The announcement is the KV key ``announced``; consumers watch it (an ordered push
consumer) and wake at once. The producer lock is the KV key ``lock``: created only if
absent, renewed by its holder every third of its ``lease`` seconds, and taken over only
once it has expired, so a killed producer blocks others for at most ``lease`` seconds.

Over ~600 lines, barely, on purpose: the blob store and the announcer share the
connection, the bucket set-up and the lease above; one module per NATS pair of ports.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from ..errors import BlobNotFound, DatasetError, LockedError
from ..ports import Buffer, check_name
from .blob_cache import BlobCache
from .nats_conn import (
    Names,
    NatsConnection,
    Unavailable,
    describe,
    ensure_kv,
    is_unavailable,
    nats_error,
)

CHUNK = 256 * 1024  # bytes per object chunk (within the server's 1 MB default max_payload)
WINDOW = 32  # chunk publishes in flight
ANNOUNCED_KEY = "announced"
LOCK_KEY = "lock"


class NatsBlobStore:
    """Blobs of one dataset in the Object Store bucket ``nearstate_NAME``."""

    def __init__(
        self, conn: NatsConnection, dataset: str, *, replicas: int = 1, get_timeout: float = 10.0,
        cache: BlobCache | None = None,
    ):  # fmt: skip
        """``cache``: where fetched blobs are kept once per host and mapped by every
        process (:mod:`nearstate.backends.blob_cache`); None reads each into this
        process's memory."""
        self.conn = conn
        self.names = Names(dataset)
        self.replicas = replicas
        self.get_timeout = get_timeout  # seconds without a chunk before a get gives up
        self.cache = cache
        self._ready = False

    def __repr__(self) -> str:
        return f"NatsBlobStore({self.conn.url!r}, {self.names.dataset!r})"

    def _where(self) -> str:
        return f"object store {self.names.bucket} at {self.conn.url}"

    def _run(self, coro: Any, timeout: float | None = None) -> Any:
        if not self._ready:
            try:
                self._setup()
            except BaseException:
                coro.close()
                raise
        try:
            return self.conn.run(coro, timeout)
        except Unavailable as e:
            raise DatasetError(f"{self._where()} is unavailable: {e}") from None
        except nats_error() as e:
            raise DatasetError(f"{self._where()}: {describe(e)}") from None

    def _setup(self) -> None:
        from nats.js import api

        async def setup() -> None:
            from nats.js.errors import NotFoundError

            try:
                await self.conn.js.stream_info(self.names.obj_stream)
            except NotFoundError:
                await self.conn.js.create_object_store(
                    self.names.bucket,
                    api.ObjectStoreConfig(
                        bucket=self.names.bucket,
                        storage=api.StorageType.FILE,
                        replicas=self.replicas,
                    ),
                )

        try:
            self.conn.run(setup())
        except Unavailable as e:
            raise DatasetError(f"{self._where()} is unavailable: {e}") from None
        except nats_error() as e:
            raise DatasetError(f"cannot create {self._where()}: {describe(e)}") from None
        self._ready = True

    def _meta_subject(self, name: str) -> str:
        b64 = base64.urlsafe_b64encode(name.encode()).decode()
        return f"$O.{self.names.bucket}.M.{b64}"

    async def _info(self, name: str) -> Any | None:
        from nats.js import api
        from nats.js.errors import NotFoundError

        try:
            msg = await self.conn.js.get_last_msg(self.names.obj_stream, self._meta_subject(name))
        except NotFoundError:
            return None
        info = api.ObjectInfo.from_response(json.loads(msg.data))
        return None if info.deleted else info

    # -- BlobStore -----------------------------------------------------------------------

    def put(self, name: str, parts: Iterable[Buffer]) -> int:
        from nats.js import api

        check_name(name)
        if not self._ready:
            self._setup()
        conn = self.conn
        nuid = uuid.uuid4().hex
        chunk_subject = f"$O.{self.names.bucket}.C.{nuid}"
        digest = hashlib.sha256()
        pending: deque[Any] = deque()
        total = chunks = 0
        buf = bytearray()

        def send(data: bytes) -> None:
            nonlocal chunks
            digest.update(data)
            if not conn.connected:
                raise DatasetError(f"{self._where()} is unavailable: not connected")
            pending.append(conn.submit(conn.js.publish(chunk_subject, data)))
            chunks += 1
            while len(pending) > WINDOW:
                pending.popleft().result(conn.request_timeout * 5)

        try:
            for part in parts:
                mv = memoryview(part).cast("B")
                total += len(mv)
                if not buf and len(mv) >= CHUNK:
                    full = len(mv) - len(mv) % CHUNK
                    for i in range(0, full, CHUNK):
                        send(bytes(mv[i : i + CHUNK]))
                    mv = mv[full:]
                buf += mv
                while len(buf) >= CHUNK:
                    send(bytes(buf[:CHUNK]))
                    del buf[:CHUNK]
            if buf:
                send(bytes(buf))
            while pending:
                pending.popleft().result(conn.request_timeout * 5)
            info = api.ObjectInfo(
                name=name,
                bucket=self.names.bucket,
                nuid=nuid,
                size=total,
                chunks=chunks,
                mtime=datetime.now(UTC).isoformat(),
                digest="SHA-256=" + base64.urlsafe_b64encode(digest.digest()).decode(),
                options=api.ObjectMetaOptions(max_chunk_size=CHUNK),
            )

            async def finish() -> None:
                old = await self._info(name)
                await conn.js.publish(
                    self._meta_subject(name),
                    json.dumps(info.as_dict()).encode(),
                    headers={"Nats-Rollup": "sub"},
                )
                if old is not None and old.nuid:
                    await conn.js.purge_stream(
                        self.names.obj_stream, subject=f"$O.{self.names.bucket}.C.{old.nuid}"
                    )

            self._run(finish())
            return total
        except BaseException as e:
            for f in pending:
                f.cancel()
            with contextlib.suppress(Exception):
                conn.run(conn.js.purge_stream(self.names.obj_stream, subject=chunk_subject))
            if is_unavailable(e):
                raise DatasetError(
                    f"{self._where()} is unavailable while storing {name!r}: {describe(e)}"
                ) from None
            raise

    def get(self, name: str) -> Buffer:
        check_name(name)
        info = self._run(self._info(name))
        if info is None:
            raise BlobNotFound(f"no blob {name!r} in {self._where()}", name=name)
        size = int(info.size or 0)
        if size == 0:
            return b""
        if self.cache is not None:
            cache = self.cache
            before = cache.fetches

            def into(f: Any) -> Any:
                return self._fetch(name, info, size, lambda off, data: f.write(data))

            want = (info.digest or "").split("=", 1)[-1]
            got = cache.open(name, info.nuid, size, want, into, self._where())
            if cache.fetches != before:  # a blob came: forget those the store no longer has
                with contextlib.suppress(Exception):
                    cache.tidy(self.list())
            return got
        out = bytearray(size)

        def put(off: int, data: bytes) -> None:
            out[off : off + len(data)] = data

        self._check_digest(name, info, self._fetch(name, info, size, put))
        return out

    def _fetch(self, name: str, info: Any, size: int, sink: Any) -> Any:
        """Stream the blob's chunks to ``sink(offset, data)``, in order; return the hashlib
        SHA-256 of what came (checking it is the caller's)."""
        state: dict[str, Any] = {"off": 0, "hash": hashlib.sha256(), "last": time.monotonic()}
        done = threading.Event()
        js = self.conn.js

        async def start() -> Any:
            async def on_chunk(msg: Any) -> None:
                off = state["off"]
                data = msg.data
                if off + len(data) > size:
                    state["error"] = "more bytes than its size"
                    done.set()
                    return
                sink(off, data)
                state["hash"].update(data)
                state["off"] = off + len(data)
                state["last"] = time.monotonic()
                if msg.metadata.num_pending == 0:
                    done.set()

            return await js.subscribe(
                f"$O.{self.names.bucket}.C.{info.nuid}",
                stream=self.names.obj_stream,
                cb=on_chunk,
                ordered_consumer=True,
                idle_heartbeat=1.0,
                pending_bytes_limit=256 * 1024 * 1024,
            )

        sub = self._run(start())
        try:
            checked = time.monotonic()
            while not done.wait(0.5):
                now = time.monotonic()
                if now - state["last"] > 1.0 and now - checked > 1.0:
                    # no chunk for a second: a delete (or a replacing put) that raced this
                    # read purges the chunks after the name, so look at the name again
                    checked = now
                    again = self._run(self._info(name))
                    if again is None or again.nuid != info.nuid:
                        raise BlobNotFound(
                            f"blob {name!r} in {self._where()} was "
                            f"{'deleted' if again is None else 'replaced'} while being read",
                            name=name,
                        )
                if now - state["last"] > self.get_timeout:
                    raise DatasetError(
                        f"reading blob {name!r} from {self._where()} stalled at "
                        f"{state['off']} of {size} bytes"
                    )
        finally:
            with contextlib.suppress(Exception):
                self.conn.call(sub.unsubscribe(), timeout=2)
        if "error" in state or state["off"] != size:
            raise DatasetError(
                f"blob {name!r} in {self._where()} is damaged: "
                f"{state.get('error') or 'fewer bytes than its size'}"
            )
        return state["hash"]

    def _check_digest(self, name: str, info: Any, digest: Any) -> None:
        want = (info.digest or "").split("=", 1)[-1]
        got = base64.urlsafe_b64encode(digest.digest()).decode()
        if want.rstrip("=") != got.rstrip("="):
            raise DatasetError(
                f"blob {name!r} in {self._where()} does not match its SHA-256 digest"
            )

    def delete(self, name: str) -> None:
        check_name(name)

        async def delete() -> None:
            info = await self._info(name)
            if info is None:
                return
            # the name goes first (readers then get BlobNotFound), then its chunks; no
            # tombstone is kept, so deleted blobs leave nothing behind
            await self.conn.js.purge_stream(self.names.obj_stream, subject=self._meta_subject(name))
            await self.conn.js.purge_stream(
                self.names.obj_stream, subject=f"$O.{self.names.bucket}.C.{info.nuid}"
            )

        self._run(delete())

    def list(self, prefix: str = "") -> list[str]:
        from nats.js import api

        js = self.conn.js
        meta = f"$O.{self.names.bucket}.M.>"

        async def names() -> list[str]:
            si = await js.stream_info(self.names.obj_stream, subjects_filter=meta)
            if not si.state.subjects:
                return []
            # the last meta message of every name, streamed by one consumer
            out: list[str] = []
            done = asyncio.Event()

            async def on_meta(msg: Any) -> None:
                info = api.ObjectInfo.from_response(json.loads(msg.data))
                if not info.deleted and info.name.startswith(prefix):
                    out.append(info.name)
                if msg.metadata.num_pending == 0:
                    done.set()

            sub = await js.subscribe(
                meta, stream=self.names.obj_stream, cb=on_meta, ordered_consumer=True,
                idle_heartbeat=1.0, deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT,
            )  # fmt: skip
            try:
                await asyncio.wait_for(done.wait(), 30)
            finally:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
            return sorted(out)

        return self._run(names(), timeout=60)


class _Lease:
    """The producer lock held through a KV key; renewed in the background. ``lost`` once
    somebody else took it over, or once no renewal succeeded for most of the lease (then
    another producer may take it at any moment)."""

    def __init__(self, owner: NatsAnnouncer, holder: str, lease_id: str, revision: int,
                 since: float):  # fmt: skip
        self._owner = owner
        self.id = lease_id
        self.holder = holder
        self.revision = revision
        self._renewed = since  # monotonic time the last successful write was sent
        self._taken = False
        self._released = False
        self._task = owner.conn.submit(self._renew())

    @property
    def lost(self) -> bool:
        expired = time.monotonic() - self._renewed > self._owner.lease * 0.8
        return self._taken or (expired and not self._released)

    async def _renew(self) -> None:
        import asyncio

        kv = self._owner._kv
        while True:
            await asyncio.sleep(self._owner.lease / 3)
            sent = time.monotonic()
            try:
                self.revision = await kv.update(
                    LOCK_KEY, self._owner._lock_value(self.holder, self.id), last=self.revision
                )
                self._renewed = sent
            except Exception as e:
                if is_unavailable(e):
                    continue
                # the revision moved: a renewal sent during an outage may have been stored
                # after its reply timed out; the lock is still ours if it names this lease
                try:
                    cur = await kv.get(LOCK_KEY)
                    ours = json.loads(cur.value).get("lease") == self.id
                except Exception as e2:
                    if is_unavailable(e2):
                        continue
                    ours = False
                if not ours:  # somebody took it over: we no longer hold it
                    self._taken = True
                    return
                self.revision = cur.revision

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        self._task.cancel()
        if self._taken:
            return
        with contextlib.suppress(Exception):  # a stale release must not free another's lock
            self._owner.conn.run(self._owner._kv.delete(LOCK_KEY, last=self.revision))


class NatsAnnouncer:
    """Announcer and AnnouncementWatcher of one dataset (KV bucket ``nearstate_NAME``)."""

    def __init__(
        self, conn: NatsConnection, dataset: str, *, replicas: int = 1, lease: float = 10.0
    ):
        self.conn = conn
        self.names = Names(dataset)
        self.replicas = replicas
        self.lease = lease
        self._kv: Any = None
        self._changed = threading.Condition()
        self._watched: dict[str, Any] | None = None  # the announcement the watch saw last
        self._watch_seen = 0  # how many updates the watch delivered
        self._sub: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"NatsAnnouncer({self.conn.url!r}, {self.names.dataset!r})"

    def _where(self) -> str:
        return f"KV bucket {self.names.bucket} at {self.conn.url}"

    def _run(self, coro: Any) -> Any:
        if self._kv is None:
            with self._lock:
                if self._kv is None:
                    try:
                        self._kv = self.conn.run(ensure_kv(self.conn.js, self.names, self.replicas))
                    except Unavailable as e:
                        coro.close()
                        raise DatasetError(f"{self._where()} is unavailable: {e}") from None
                    except nats_error() as e:
                        coro.close()
                        raise DatasetError(
                            f"cannot create {self._where()}: {describe(e)}"
                        ) from None
        try:
            return self.conn.run(coro)
        except Unavailable as e:
            raise DatasetError(f"{self._where()} is unavailable: {e}") from None
        except nats_error() as e:
            raise DatasetError(f"{self._where()}: {describe(e)}") from None

    # -- Announcer -----------------------------------------------------------------------

    def announce(self, announcement: dict[str, Any]) -> None:
        if "version" not in announcement:
            raise ValueError("an announcement needs a version")
        data = json.dumps(announcement).encode()
        self._run(self._put(data))

    async def _put(self, data: bytes) -> None:
        await self._kv.put(ANNOUNCED_KEY, data)

    def latest(self) -> dict[str, Any] | None:
        return self._run(self._latest())

    async def _latest(self) -> dict[str, Any] | None:
        from nats.js.errors import NotFoundError

        try:
            e = await self._kv.get(ANNOUNCED_KEY)
        except NotFoundError:  # never announced, or deleted
            return None
        return json.loads(e.value) if e.value else None

    def _lock_value(self, holder: str, lease_id: str) -> bytes:
        return json.dumps(
            {
                "holder": holder,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "expires": time.time() + self.lease,
                "lease": lease_id,
            }
        ).encode()

    def lock(self, holder: str) -> _Lease:
        from nats.js.errors import KeyWrongLastSequenceError, NotFoundError

        lease_id = uuid.uuid4().hex

        async def take() -> int:
            try:
                return await self._kv.create(LOCK_KEY, self._lock_value(holder, lease_id))
            except KeyWrongLastSequenceError:
                pass
            try:
                e = await self._kv.get(LOCK_KEY)
            except NotFoundError:  # released meanwhile
                e = None
            other = json.loads(e.value) if e is not None else {}
            if e is not None and other.get("expires", 0) > time.time():
                raise LockedError(
                    f"{self.names.dataset} at {self.conn.url}: another producer "
                    f"({other.get('holder')} on {other.get('host')}, pid {other.get('pid')}) "
                    "publishes this dataset; only one may at a time"
                )
            try:  # free, or its lease expired: take it unless another is quicker
                if e is None:
                    return await self._kv.create(LOCK_KEY, self._lock_value(holder, lease_id))
                return await self._kv.update(
                    LOCK_KEY, self._lock_value(holder, lease_id), last=e.revision
                )
            except KeyWrongLastSequenceError:
                raise LockedError(
                    f"{self.names.dataset} at {self.conn.url}: another producer took the "
                    "lock just now"
                ) from None

        since = time.monotonic()
        rev = self._run(take())
        return _Lease(self, holder, lease_id, rev, since)

    # -- AnnouncementWatcher ---------------------------------------------------------------

    def _watch(self) -> None:
        """Start following the announcement (an ordered push consumer on its subject)."""
        from nats.js import api

        with self._lock:
            if self._sub is not None:
                return

            async def on_update(msg: Any) -> None:
                op = (msg.headers or {}).get("KV-Operation")
                value = None if op in ("DEL", "PURGE") or not msg.data else json.loads(msg.data)
                with self._changed:
                    self._watched = value
                    self._watch_seen += 1
                    self._changed.notify_all()

            async def start() -> Any:
                return await self.conn.js.subscribe(
                    f"$KV.{self.names.bucket}.{ANNOUNCED_KEY}",
                    stream=self.names.kv_stream,
                    cb=on_update,
                    ordered_consumer=True,
                    idle_heartbeat=1.0,
                    deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT,
                )

            try:
                if self._kv is None:
                    self._kv = self.conn.run(ensure_kv(self.conn.js, self.names, self.replicas))
                self._sub = self.conn.run(start())
            except Unavailable as e:
                raise DatasetError(f"{self._where()} is unavailable: {e}") from None
            except nats_error() as e:
                raise DatasetError(f"cannot watch {self._where()}: {describe(e)}") from None

    def seen(self) -> int:
        """How many announcements this handle's watch has received: a number that changes
        whenever the announcement may have (no request to the server once watching)."""
        self._watch()
        return self._watch_seen

    def wait(self, newer_than: int | None, timeout: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        self._watch()
        cur = self.latest()
        if cur is not None and cur.get("version") != newer_than:
            return cur
        with self._changed:
            seen = self._watch_seen
            while True:
                w = self._watched
                if self._watch_seen != seen and w is not None and w.get("version") != newer_than:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
        try:
            return self.latest()
        except DatasetError:
            w = self._watched
            return None if w is None else json.loads(json.dumps(w))

    def close(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                self.conn.call(self._sub.unsubscribe(), timeout=2)
            self._sub = None
