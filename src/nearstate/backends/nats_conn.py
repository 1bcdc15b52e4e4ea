"""A NATS connection for synchronous code, and where a dataset lives in JetStream.

nats-py is asyncio; nearstate's ports are plain blocking calls made from any thread. A
:class:`NatsConnection` runs one event loop in a daemon thread and hands it coroutines
(:meth:`NatsConnection.run`); every handle of a process on the same server URL shares one
connection (:func:`connection`). A call made while the client is disconnected fails at
once instead of queueing behind the reconnect: that is how writes "fail fast" during an
outage while reads go on from memory.

A dataset ``NAME`` is three JetStream assets (see docs/operations.md)::

    stream   NEARSTATE_LOG_NAME   subject nearstate.NAME.log   the Log, one message per commit
    KV       nearstate_NAME       announced, lock, log.schema, k.<hash> (key positions)
    objects  nearstate_NAME       snapshot, delta and reverse-delta blobs
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import re
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from ..errors import InputError, ServerUnreachable

T = TypeVar("T")

NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
DEFAULT_URL = "nats://127.0.0.1:4222"


class Unavailable(Exception):
    """Internal: the server did not answer (not connected, timed out, no responders)."""


@dataclass(frozen=True)
class Names:
    """The JetStream names of one dataset."""

    dataset: str

    @property
    def log_stream(self) -> str:
        return f"NEARSTATE_LOG_{self.dataset}"

    @property
    def log_subject(self) -> str:
        return f"nearstate.{self.dataset}.log"

    @property
    def bucket(self) -> str:
        """The KV bucket and the object store bucket (they are separate streams)."""
        return f"nearstate_{self.dataset}"

    @property
    def kv_stream(self) -> str:
        return f"KV_{self.bucket}"

    @property
    def obj_stream(self) -> str:
        return f"OBJ_{self.bucket}"


def check_dataset_name(name: str) -> str:
    if not NAME_RE.match(name or ""):
        raise InputError(
            f"bad dataset name {name!r}: use 1-64 letters, digits, '_' or '-' "
            "(it becomes part of JetStream stream and bucket names)"
        )
    return name


class NatsConnection:
    """One nats-py client on its own event loop thread."""

    def __init__(self, url: str, *, connect_timeout: float = 2.0, request_timeout: float = 2.0):
        import nats  # the 'nats' extra

        self.url = url
        self.request_timeout = request_timeout
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, daemon=True, name=f"nearstate-nats {url}"
        )
        self._thread.start()
        self.disconnects = 0  # how often the client lost the server (for operators)
        self.last_error: Exception | None = None

        async def on_error(e: Exception) -> None:  # nats-py logs nothing by itself
            self.last_error = e

        async def on_disconnect() -> None:
            self.disconnects += 1

        async def connect() -> Any:
            return await nats.connect(
                servers=url.split(","),
                connect_timeout=connect_timeout,
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.2,
                # a server cut off by the network drops no connection: the client learns
                # it from unanswered pings, here within 4-6 s (the cluster elects another
                # stream leader in 4-9 s), then connects to another server of the URL
                ping_interval=2,
                max_outstanding_pings=2,
                error_cb=on_error,
                disconnected_cb=on_disconnect,
                name=f"nearstate pid {os.getpid()}",
            )

        # nats-py retries a first connection forever when reconnecting is allowed: see
        # first whether anything listens, so a wrong address fails at once and says why
        reachable = _reachable(url, connect_timeout)
        if reachable is not None:
            self._stop_loop()
            raise ServerUnreachable(f"cannot connect to NATS at {url}: {reachable}")
        try:
            self.nc = self.call(connect(), timeout=connect_timeout * 3 + 1)
        except Exception as e:
            self._stop_loop()
            why = _describe(self.last_error) if self.last_error is not None else _describe(e)
            raise ServerUnreachable(f"cannot connect to NATS at {url}: {why}") from None
        self.js = self.nc.jetstream(timeout=request_timeout)

    def __repr__(self) -> str:
        return f"NatsConnection({self.url!r})"

    @property
    def connected(self) -> bool:
        return bool(self.nc.is_connected)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and return its result (its exception is raised here)."""
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result(timeout)
        except TimeoutError:
            if fut.done() and not fut.cancelled():
                raise  # the call's own timeout (a request nobody answered), as it said
            fut.cancel()
            raise Unavailable(f"no answer within {timeout:g} s") from None

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Like :meth:`call`, but refuse at once while disconnected, and turn the client's
        'no answer' errors into :class:`Unavailable`."""
        if not self.connected:
            coro.close()
            raise Unavailable(f"not connected to NATS at {self.url} (reconnecting)")
        try:
            return self.call(coro, self.request_timeout * 3 if timeout is None else timeout)
        except Exception as e:
            if is_unavailable(e):
                raise Unavailable(_describe(e)) from e
            raise

    def submit(self, coro: Coroutine[Any, Any, T]) -> Any:
        """Start ``coro`` on the loop; returns a concurrent.futures.Future."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def close(self) -> None:
        if self.loop.is_closed() or not self._thread.is_alive():
            return

        async def shutdown() -> None:
            with contextlib.suppress(Exception):
                await self.nc.close()
            # nats-py leaves the heartbeat and flow-control tasks of push subscriptions
            # running after close: end them, so the loop stops with nothing pending
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            self.call(shutdown(), timeout=3)
        self._stop_loop()

    def _stop_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(2)
        if not self._thread.is_alive():
            self.loop.close()
        with _connections_lock:
            if _connections.get(self.url) is self:
                del _connections[self.url]


def is_unavailable(e: BaseException) -> bool:
    """Whether ``e`` means the server did not answer (rather than answered with an error)."""
    import nats.errors
    import nats.js.errors

    if isinstance(e, nats.js.errors.APIError) and getattr(e, "err_code", None):
        # JetStream answered: a refusal (a full stream, say), not an outage; except where
        # it says the cluster cannot serve the request now (no quorum, no leader yet)
        return e.err_code in _CLUSTER_UNAVAILABLE

    return isinstance(
        e,
        Unavailable
        | TimeoutError
        | asyncio.TimeoutError
        | ConnectionError
        | nats.errors.TimeoutError
        | nats.errors.NoRespondersError
        | nats.errors.ConnectionClosedError
        | nats.errors.ConnectionDrainingError
        | nats.errors.ConnectionReconnectingError
        | nats.errors.StaleConnectionError
        | nats.errors.OutboundBufferLimitError
        | nats.errors.UnexpectedEOF
        | nats.js.errors.NoStreamResponseError
        | nats.js.errors.ServiceUnavailableError,
    )


# JSClusterNotAvailErr (temporarily unavailable), JSClusterNotLeaderErr, JSStreamOfflineErr
_CLUSTER_UNAVAILABLE = frozenset({10008, 10009, 10118})


def _reachable(url: str, timeout: float) -> str | None:
    """None if a TCP connection to one of the servers in ``url`` opens, else why not."""
    import socket
    from urllib.parse import urlparse

    why = "no server in the URL"
    for server in url.split(","):
        u = urlparse(server if "://" in server else f"nats://{server}")
        try:
            with socket.create_connection((u.hostname or "127.0.0.1", u.port or 4222), timeout):
                return None
        except OSError as e:
            why = f"{u.hostname}:{u.port or 4222}: {e.strerror or e}"
    return why


def nats_error() -> type[Exception]:
    """The base class of nats-py's errors (for ``except``)."""
    import nats.errors

    return nats.errors.Error


def _describe(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.removeprefix("nats: ")


def describe(e: BaseException) -> str:
    return _describe(e)


_connections: dict[str, NatsConnection] = {}
_connections_lock = threading.RLock()  # a failed connect removes itself while held


def connection(url: str) -> NatsConnection:
    """The process's shared connection to ``url`` (made on first use)."""
    with _connections_lock:
        c = _connections.get(url)
        if c is not None and c.pid == os.getpid() and c._thread.is_alive() and not c.nc.is_closed:
            return c
        c = _connections[url] = NatsConnection(url)
        return c


@atexit.register
def _close_all() -> None:
    for c in list(_connections.values()):
        if c.pid == os.getpid():
            c.close()
    _connections.clear()


async def ensure_stream(js: Any, name: str, subjects: list[str], replicas: int) -> None:
    """Create the stream unless it exists (an existing one is used as it is)."""
    from nats.js import api
    from nats.js.errors import NotFoundError

    try:
        await js.stream_info(name)
        return
    except NotFoundError:
        pass
    await js.add_stream(
        api.StreamConfig(
            name=name,
            subjects=subjects,
            storage=api.StorageType.FILE,
            num_replicas=replicas,
            retention=api.RetentionPolicy.LIMITS,
            discard=api.DiscardPolicy.OLD,
            duplicate_window=120.0,
        )
    )


async def ensure_kv(js: Any, names: Names, replicas: int) -> Any:
    """The dataset's KV bucket, created unless it exists."""
    from nats.js.errors import BucketNotFoundError, NotFoundError

    try:
        return await js.key_value(names.bucket)
    except (BucketNotFoundError, NotFoundError):
        return await js.create_key_value(bucket=names.bucket, history=1, replicas=replicas)
