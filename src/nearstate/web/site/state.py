"""The site's state in one process: its configuration, the page cache, and :class:`Site`
(the consumer of the dataset, the page models, search, personalisation's signer, the
metrics) that every request reads.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jinja2
import xxhash
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import GaugeMetricFamily
from starlette.requests import Request
from starlette.responses import Response

from ...content.pages import CARD_CACHE, Pages
from ...content.search import SearchIndex
from ...content.search_map import HostSearchIndex
from ...layered import Changes, State
from .html import card_html

log = logging.getLogger(__name__)

HERE = Path(__file__).parent.parent
PUBLIC = "public, max-age=10, stale-while-revalidate=60"
PRIVATE = "private, no-cache"
PROFILE_MAX_AGE = 180 * 24 * 3600
MAX_QUERY = 200
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
REFRESH_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
PAGE_CACHE = 2048  # bodies
PAGE_CACHE_BYTES = 16 * 2**20  # ~3,000 pages of the films (2.5-5 KB; the largest is 60 KB)


@dataclass(frozen=True)
class SiteConfig:
    """What a site process serves.

    ``dataset``: the nearstate dataset (``nearstate.open(...)``). ``secret_key`` signs
    the visitors' profile cookies. ``store`` and ``media``: when given, the site also
    serves ``/media/...`` (the CDN's origin in a small deployment). ``consumer``: a
    started consumer to read instead of making one (tests, embedding). ``max_staleness``:
    seconds without the Log's confirmation before ``/healthz`` says the copy is stale.
    ``search_cache``: the host's cache directory; when given, the search index of the
    snapshot is built once per host there and mapped by every process
    (:class:`~nearstate.content.search_map.HostSearchIndex`), else each process builds its
    own in memory.

    What each process keeps of its own for reuse (docs/operations.md, "What a worker
    holds of its own"): ``page_cache`` bodies of pages that do not depend on the visitor,
    at most ``page_cache_bytes`` bytes of them (0 for either: none); ``card_cache`` cards
    of each type (story, title) for the page models (0: each card made anew)."""

    dataset: Any
    secret_key: str
    store: Any | None = None
    media: Any | None = None
    consumer: Any | None = None
    search: bool = True
    max_staleness: float = 30.0
    editor_url: str | None = None
    https_only: bool = False
    page_cache: int = PAGE_CACHE
    search_cache: Path | None = None
    page_cache_bytes: int = PAGE_CACHE_BYTES
    card_cache: int = CARD_CACHE


class Entry:
    """A page's body, its ETag, and what a visit to it teaches a visitor's profile."""

    __slots__ = ("body", "etag", "genres", "story")

    def __init__(self, body: bytes, *, genres: tuple[str, ...] = (), story: int | None = None):
        self.body = body
        self.etag = f'"{xxhash.xxh64_hexdigest(body)}"'
        self.genres = genres
        self.story = story


class PageCache:
    """Bodies of the pages that do not depend on the visitor, for the state held now.

    A state is immutable, so a body built from it is right for as long as that state is
    the one shown; the first request that sees a newer state empties the cache. Nothing is
    ever served from an older state than the request's, so the cache changes no page, only
    how often the same one is rendered. At most ``size`` bodies and ``max_bytes`` bytes of
    them (then it starts over; a body larger than ``max_bytes`` is not kept). The byte
    bound matters: the key holds the query string, so ``/?a=1``, ``/?a=2``, ... are as
    many copies of a 60 KB home page (2048 of them: 120 MB per worker).

    The state and its bodies are one tuple, read and replaced whole, so a reader never
    pairs one state with another's bodies. ``bytes`` counts the bodies held (an estimate
    under concurrent puts; back to 0 whenever the cache starts over)."""

    def __init__(self, size: int = PAGE_CACHE, max_bytes: int = PAGE_CACHE_BYTES):
        self.size = size
        self.max_bytes = max_bytes
        self._held: tuple[Any, dict[Any, Entry]] = (None, {})
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._held[1])

    def get(self, state: State, key: Any) -> Entry | None:
        held, entries = self._held
        entry = entries.get(key) if held is state else None
        if entry is None:
            self.misses += 1
        else:
            self.hits += 1
        return entry

    def put(self, state: State, key: Any, entry: Entry) -> None:
        n = len(entry.body)
        if self.size <= 0 or self.max_bytes <= 0 or n > self.max_bytes:
            return
        held, entries = self._held
        if held is not state or len(entries) >= self.size or self.bytes + n > self.max_bytes:
            entries = {}  # a new dict: a reader of the old one finishes undisturbed
            self._held = (state, entries)
            self.bytes = 0
        entries[key] = entry
        self.bytes += n


def json_body(data: Any) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


class NotReady(Exception):
    """No state is held yet (the site is starting)."""


class Site:
    """What the routes share: the consumer, the page builder, the search index, the
    templates and the metrics."""

    def __init__(self, config: SiteConfig):
        self.config = config
        self.pages = Pages(config.card_cache)
        self.cache = PageCache(config.page_cache, config.page_cache_bytes)
        self.search: SearchIndex | HostSearchIndex | None = None
        if config.search:
            cache = config.search_cache
            self.search = SearchIndex() if cache is None else HostSearchIndex(cache)
        self.search_ready = threading.Event()
        # the Log position the search index reflects at least (0: none yet): it follows
        # the state on a thread of its own, a moment behind (/healthz says how far)
        self.search_position = 0
        self.consumer: Any | None = config.consumer
        self._own_consumer = config.consumer is None
        self._users = 0
        self._lock = threading.Lock()
        self.env = templates(http_url(config.editor_url))
        self.registry = CollectorRegistry(auto_describe=True)
        self.latency = Histogram(
            "nearstate_site_request_seconds",
            "Time to answer a request, by route.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.refresh_seconds = Histogram(
            "nearstate_refresh_seconds",
            "Time a refresh of the state took (a new version or Log entries laid over it).",
            buckets=REFRESH_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_StateCollector(self))
        media = config.media
        base = urlsplit(media.base_url) if media is not None else None
        img = "'self' data:"
        if base is not None and base.scheme in ("http", "https") and base.netloc:
            img += f" {base.scheme}://{base.netloc}"
        self.csp = (
            f"default-src 'self'; img-src {img}; style-src 'self'; "
            "style-src-attr 'unsafe-inline'; script-src 'none'; "
            "frame-src https://www.youtube-nocookie.com https://player.vimeo.com; "
            "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
        )

    # lifecycle

    def start(self) -> None:
        with self._lock:
            self._users += 1
            if self._users > 1:
                return
        if self.consumer is None:
            self.consumer = self.config.dataset.consumer()
        self.consumer.add_listener(self._refreshed)
        if self._own_consumer:
            self.consumer.start(wait=False, freeze_gc=False)
        if self.search is not None:
            threading.Thread(target=self._follow_search, name="site-search", daemon=True).start()

    def wait_ready(self, timeout: float) -> bool:
        """Start (see :meth:`start`) and wait until a state is held and, with search, the
        index is built: what a worker joining a pool waits for before it takes requests.
        False if not within ``timeout`` seconds."""
        self.start()
        deadline = time.monotonic() + timeout
        c = self.consumer
        assert c is not None
        if not c.wait_for_version(None, max(0.0, deadline - time.monotonic())):
            return False
        if self.search is not None:
            return self.search_ready.wait(max(0.0, deadline - time.monotonic()))
        return True

    def stop(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users > 0:
                return
        c = self.consumer
        if c is not None:
            with contextlib.suppress(ValueError):
                c.remove_listener(self._refreshed)
            if self._own_consumer:
                c.stop()
                self.consumer = None

    def _follow_search(self) -> None:
        """Build the search index once a state is held, then apply each refresh's changes
        — on this thread, never the consumer's: a listener only queues them, so indexing
        never delays the Log being shown."""
        c = self.consumer
        assert c is not None and self.search is not None
        while not c.wait_for_version(None, 1.0):
            if self.consumer is None:
                return
        pending: queue.SimpleQueue[Any] = queue.SimpleQueue()
        c.add_listener(lambda ev: pending.put((ev.changes, ev.position)))
        shown = c.position  # read before the state: the state holds at least this much
        try:
            self.search.update(c.state, None)
        except Exception:
            log.exception("building the search index failed")
            return
        self.search_position = shown
        self.search_ready.set()
        gc.collect()
        gc.freeze()  # the state and the index are long-lived: full collections skip them
        while self.consumer is not None:
            try:
                batch = [pending.get(timeout=1.0)]
            except queue.Empty:
                continue
            while not pending.empty():
                batch.append(pending.get_nowait())
            changes = _merged([ch for ch, _ in batch])
            try:
                self.search.update(c.state, changes)
            except Exception:
                log.exception("updating the search index failed")
                continue
            self.search_position = max([self.search_position,
                                        *(p for _, p in batch if p is not None)])  # fmt: skip
            if changes is None:
                # rebuilt in full (a version was loaded whole, as the first one often is
                # after the index was built over the Log alone): freeze the new index too,
                # or every full collection scans its ~250k objects (~200 ms measured, on
                # every request thread: the publish -> live tail of bench site)
                gc.collect()
                gc.freeze()

    def _refreshed(self, ev: Any) -> None:
        self.refresh_seconds.observe(ev.duration_ms / 1000)

    def state(self) -> Any:
        c = self.consumer
        s = None if c is None else c._state
        if s is None:
            raise NotReady
        return s

    # responses

    def render(self, template: str, request: Request, status: int = 200, **ctx: Any) -> bytes:
        ctx.setdefault("q", "")
        ctx["path"] = request.url.path
        return self.env.get_template(template).render(**ctx).encode()

    def respond(
        self,
        request: Request,
        body: bytes,
        *,
        media_type: str,
        status: int = 200,
        cache: str = PUBLIC,
        vary_cookie: bool = False,
    ) -> Response:
        headers = {"Cache-Control": cache}
        if vary_cookie:
            headers["Vary"] = "Cookie"
        if status == 200:
            etag = f'"{xxhash.xxh64_hexdigest(body)}"'
            headers["ETag"] = etag
            inm = request.headers.get("if-none-match")
            if inm and etag in (t.strip() for t in inm.split(",")):
                return Response(status_code=304, headers=headers)
        return Response(body, status_code=status, media_type=media_type, headers=headers)

    def page(
        self, request: Request, name: str, build: Callable[[Site, Any, Request], Entry | None]
    ) -> Entry | None:
        """The page ``request`` asks for, built from the state held now, or the body built
        from that same state before (see :class:`PageCache`)."""
        state = self.state()
        key = (name, request.url.path, request.url.query)
        entry = self.cache.get(state, key)
        if entry is None:
            entry = build(self, state, request)
            if entry is not None:
                self.cache.put(state, key, entry)
        return entry

    def send(self, request: Request, entry: Entry, *, media_type: str, cache: str = PUBLIC,
             vary_cookie: bool = False) -> Response:  # fmt: skip
        headers = {"Cache-Control": cache, "ETag": entry.etag}
        if vary_cookie:
            headers["Vary"] = "Cookie"
        inm = request.headers.get("if-none-match")
        if inm and entry.etag in (t.strip() for t in inm.split(",")):
            return Response(status_code=304, headers=headers)
        return Response(entry.body, media_type=media_type, headers=headers)

    def json(self, request: Request, data: Any, status: int = 200, cache: str = PUBLIC) -> Response:
        body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
        return self.respond(request, body, media_type="application/json", status=status,
                            cache=cache)  # fmt: skip


@functools.lru_cache(maxsize=8)
def templates(editor_url: str) -> jinja2.Environment:
    """The site's templates, compiled, for one editor URL: made once per process and
    shared by its sites (a pool's parent makes it before forking, so its workers share
    the compiled code, about 6 MB, instead of compiling a copy each). Rendering from it
    is thread-safe; nothing is compiled after it is made."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )
    env.globals["editor_url"] = editor_url
    env.globals["card_html"] = card_html
    for name in env.list_templates(filter_func=lambda n: n.startswith("site/")):
        env.get_template(name)  # compiled now: no request reads a template file
    return env


def _merged(batch: list[Any]) -> dict[str, Any] | None:
    """Refreshes' changes as one (None, a whole new state, if any of them was)."""
    if any(ch is None for ch in batch):
        return None
    out: dict[str, Changes] = {}
    for ch in batch:
        for t, c in ch.items():
            m = out.setdefault(t, Changes())
            m.added.extend(c.added)
            m.modified.extend(c.modified)
            m.removed.extend(c.removed)
    return out


def http_url(url: str | None) -> str:
    return url if url and urlsplit(url).scheme in ("http", "https") else ""


class _StateCollector:
    """Reads the consumer at scrape time: version, position, lag, staleness, bytes."""

    def __init__(self, site: Site):
        self.site = site

    def describe(self) -> list:
        return []

    def collect(self):  # prometheus_client's collector protocol
        c = self.site.consumer
        held = c is not None and c._state is not None

        def gauge(name: str, doc: str, value: float | None):
            g = GaugeMetricFamily(name, doc)
            g.add_metric([], math.nan if value is None else float(value))
            return g

        yield gauge("nearstate_state_held", "1 once a state is held.", 1 if held else 0)
        if c is None:
            return
        yield gauge("nearstate_state_version", "The dataset version held.", c.version)
        yield gauge("nearstate_log_position", "The Log position shown.", c.position)
        yield gauge("nearstate_version_lag", "Announced version minus the version held.", c.lag)
        lag: float | None
        try:
            lag = c.log_lag()
        except Exception:
            lag = None
        yield gauge("nearstate_log_lag", "Committed transactions not yet shown.", lag)
        yield gauge(
            "nearstate_staleness_seconds",
            "Seconds since the Log last confirmed this copy shows every write.",
            c.staleness(),
        )
        sizes = GaugeMetricFamily(
            "nearstate_state_bytes", "Bytes of the state held, per type.", labels=["type"]
        )
        for t, n in sorted(c.bytes_per_type().items()):
            sizes.add_metric([t], float(n))
        yield sizes
        s = self.site.search
        if s is not None:
            yield gauge("nearstate_search_documents", "Documents in the search index.", len(s))
