"""The old path's page data service: the read store behind a near-cache, over HTTP.

``GET /fragments?k=KEY&k=KEY…`` answers a JSON object of each key's fragment (``null``
for a key the store does not hold), from a :class:`NearCache` in front of the PostgreSQL
table the data service writes.

The near-cache is the one the old read path had: an entry, once loaded, is served from
memory and reloaded from the store ``refresh`` seconds after it was last loaded (per key,
on a timer, by a background thread); a key asked for the first time is read through. A
change in the store therefore shows after up to ``refresh`` seconds, and a key that did
not exist is remembered as missing just as long. A reload that fails (the store down)
keeps the values held and tries those keys again within a second.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import msgspec

Loader = Callable[[list[str]], dict[str, bytes]]
_key = msgspec.json.Encoder().encode


class NearCache:
    """Fragments by key, each reloaded ``refresh`` seconds after its last load (see the
    module docstring). ``load`` reads keys from the store and returns those it holds.
    Thread-safe; a hit never blocks on the store."""

    def __init__(
        self, load: Loader, refresh: float, *, clock: Callable[[], float] = time.monotonic
    ):
        if refresh <= 0:
            raise ValueError(f"the near-cache refresh must be positive, not {refresh}")
        self._load, self.refresh, self._clock = load, refresh, clock
        self._values: dict[str, bytes | None] = {}
        self._due: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.loads = 0  # keys read from the store (misses and refreshes)
        self.refreshes = 0

    def __len__(self) -> int:
        return len(self._values)

    def get_many(self, keys: Iterable[str]) -> dict[str, bytes | None]:
        """The fragments of ``keys``: cached ones as held, the others read through."""
        out: dict[str, bytes | None] = {}
        missing = []
        values = self._values
        for k in dict.fromkeys(keys):  # a key asked twice is loaded once
            if k in values:
                out[k] = values[k]
            else:
                missing.append(k)
        if missing:
            got = self._load(missing)
            self.loads += len(missing)
            due = self._clock() + self.refresh
            with self._lock:
                for k in missing:
                    out[k] = v = got.get(k)
                    if k not in self._values:
                        self._values[k] = v
                        self._due[k] = due
                        heapq.heappush(self._heap, (due, k))
            self._wake.set()
        return out

    def held(self, keys: list[str]) -> dict[str, bytes | None] | None:
        """The fragments of ``keys`` if every one is held, else None; never loads."""
        values = self._values
        if all(k in values for k in keys):  # entries are replaced, never removed
            return {k: values[k] for k in keys}
        return None

    def refresh_due(self) -> int:
        """Reload every entry whose time has come; returns how many (the thread's step)."""
        now = self._clock()
        with self._lock:
            keys = []
            while self._heap and self._heap[0][0] <= now:
                due, k = heapq.heappop(self._heap)
                if self._due.get(k) == due:
                    keys.append(k)
        if not keys:
            return 0
        try:
            got = self._load(keys)
        except BaseException:  # the store is down: the keys keep their values and their turn
            due = self._clock() + min(self.refresh, 1.0)
            with self._lock:
                for k in keys:
                    self._due[k] = due
                    heapq.heappush(self._heap, (due, k))
            raise
        self.loads += len(keys)
        self.refreshes += len(keys)
        due = self._clock() + self.refresh
        with self._lock:
            for k in keys:
                self._values[k] = got.get(k)
                self._due[k] = due
                heapq.heappush(self._heap, (due, k))
        return len(keys)

    def next_due(self) -> float | None:
        with self._lock:
            return self._heap[0][0] if self._heap else None

    def start(self) -> NearCache:
        self._thread = threading.Thread(target=self._run, name="near-cache", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh_due()
            except Exception:  # the store is down: keep serving what is held, try again
                time.sleep(0.5)
            nxt = self.next_due()
            wait = 1.0 if nxt is None else max(0.0, min(1.0, nxt - self._clock()))
            self._wake.wait(wait)
            self._wake.clear()


class StoreReader:
    """Reads fragments from the table, one connection per thread (psycopg)."""

    def __init__(self, pg_url: str, table: str):
        self.pg_url, self.table = pg_url, table
        self._local = threading.local()

    def __call__(self, keys: list[str]) -> dict[str, bytes]:
        import psycopg

        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = self._local.conn = psycopg.connect(self.pg_url, autocommit=True)
        rows = conn.execute(
            f"SELECT key, value FROM {self.table} WHERE key = ANY(%s)", (keys,)
        ).fetchall()
        return {k: bytes(v) for k, v in rows}


def body_of(got: dict[str, bytes | None]) -> bytes:
    """A JSON object of the fragments (their JSON as stored, not decoded again)."""
    parts = [_key(k) + b":" + (v if v is not None else b"null") for k, v in got.items()]
    return b"{" + b",".join(parts) + b"}"


def create_page_data_app(cache: NearCache) -> Any:
    """The page data service's ASGI app over ``cache`` (started and stopped with it)."""
    import contextlib

    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def fragments(request: Request) -> Response:
        keys = request.query_params.getlist("k")
        if not keys or len(keys) > 1000:
            return JSONResponse({"error": "ask for 1 to 1000 keys: ?k=KEY&k=KEY"}, 400)
        got = cache.held(keys)  # the near-cache's whole point: no I/O, no thread
        if got is None:
            got = await run_in_threadpool(cache.get_many, keys)
        return Response(body_of(got), media_type="application/json")

    async def stats(request: Request) -> Response:
        return JSONResponse({"entries": len(cache), "loads": cache.loads,
                             "refreshes": cache.refreshes, "refresh_s": cache.refresh})  # fmt: skip

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> Any:
        cache.start()
        try:
            yield
        finally:
            cache.stop()

    return Starlette(routes=[Route("/fragments", fragments), Route("/stats", stats)],
                     lifespan=lifespan)  # fmt: skip
