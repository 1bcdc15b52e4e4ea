"""The public site: pages built in memory from each process's own copy of the dataset.

``create_site_app(SiteConfig(dataset=...))`` returns a Starlette app. Its lifespan starts a
consumer of the dataset (the whole render-ready state in this process's memory, following
new versions and the Log) and a search index that follows it. Run as many site processes
as you like: each holds the full state and shows every write within milliseconds
(eventual consistency).

Contracts:

- A page is built from one immutable state with no database or network call: the handlers
  are ``async`` and never block (there is nothing to wait for).
- Pages: ``/`` (home), ``/stories/{slug}``, ``/titles/{slug}``, ``/people/{slug}``,
  ``/genres/{slug}[?page=N]``, ``/tags/{slug}``, ``/search?q=...``, ``/profile``. The
  same under ``/api`` answers the page model as JSON (``/api/home`` for the home page).
  What does not exist is a 404 page (or JSON ``{"error": ...}``); before the first state
  is held every page is a 503 saying the site is starting.
- Cache headers: JSON and the pages that do not learn are ``public, max-age=10,
  stale-while-revalidate=60``; HTML pages that read or teach the visitor's profile (home,
  story, title, genre) are ``private, no-cache`` with ``Vary: Cookie``. Every 200 carries
  an ETag (a hash of the body) and answers ``If-None-Match`` with 304.
- Personalisation: a visit to a story, title or genre page learns the page's genres into
  the visitor's profile, a signed cookie (``ns_profile``); nothing is stored on the
  server. ``DNT: 1`` or ``Sec-GPC: 1`` turns learning off; ``/profile`` shows what was
  learned and forgets it on request.
- ``/healthz``: 200 and JSON once a state is held and the Log was confirmed within
  ``max_staleness`` seconds, else 503 with the reason. ``/metrics``: Prometheus text.
- No page runs a script; the Content-Security-Policy says so.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import math
import queue
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jinja2
import xxhash
from markupsafe import Markup, escape
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from ..content import personalize
from ..content.pages import Pages, genres_of
from ..content.search import SearchIndex
from ..errors import InputError
from ..layered import Changes

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
PUBLIC = "public, max-age=10, stale-while-revalidate=60"
PRIVATE = "private, no-cache"
PROFILE_MAX_AGE = 180 * 24 * 3600
MAX_QUERY = 200
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
REFRESH_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


@dataclass(frozen=True)
class SiteConfig:
    """What a site process serves.

    ``dataset``: the nearstate dataset (``nearstate.open(...)``). ``secret_key`` signs
    the visitors' profile cookies. ``store`` and ``media``: when given, the site also
    serves ``/media/...`` (the CDN's origin in a small deployment). ``consumer``: a
    started consumer to read instead of making one (tests, embedding). ``max_staleness``:
    seconds without the Log's confirmation before ``/healthz`` says the copy is stale."""

    dataset: Any
    secret_key: str
    store: Any | None = None
    media: Any | None = None
    consumer: Any | None = None
    search: bool = True
    max_staleness: float = 30.0
    editor_url: str | None = None
    https_only: bool = False
    page_cache: int = 2048


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
    how often the same one is rendered. At most ``size`` bodies (then it starts over)."""

    def __init__(self, size: int = 2048):
        self.size = size
        self._state: Any = None
        self._entries: dict[Any, Entry] = {}
        self.hits = 0
        self.misses = 0

    def get(self, state: Any, key: Any) -> Entry | None:
        if self._state is not state:
            self.misses += 1
            return None
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
        else:
            self.hits += 1
        return entry

    def put(self, state: Any, key: Any, entry: Entry) -> None:
        if self.size <= 0:
            return
        if self._state is not state or len(self._entries) >= self.size:
            self._entries = {}  # a new dict: a reader of the old one finishes undisturbed
            self._state = state
        self._entries[key] = entry


def _json_body(data: Any) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


class NotReady(Exception):
    """No state is held yet (the site is starting)."""


class Site:
    """What the routes share: the consumer, the page builder, the search index, the
    templates and the metrics."""

    def __init__(self, config: SiteConfig):
        self.config = config
        self.pages = Pages()
        self.cache = PageCache(config.page_cache)
        self.search: SearchIndex | None = SearchIndex() if config.search else None
        self.search_ready = threading.Event()
        self.consumer: Any | None = config.consumer
        self._own_consumer = config.consumer is None
        self._users = 0
        self._lock = threading.Lock()
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,
        )
        env.globals["editor_url"] = _http_url(config.editor_url)
        env.globals["card_html"] = card_html
        for name in env.list_templates(filter_func=lambda n: n.startswith("site/")):
            env.get_template(name)  # compiled now: no request reads a template file
        self.env = env
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
        c.add_listener(lambda ev: pending.put(ev.changes))
        try:
            self.search.update(c.state, None)
        except Exception:
            log.exception("building the search index failed")
            return
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
            changes = _merged(batch)
            try:
                self.search.update(c.state, changes)
            except Exception:
                log.exception("updating the search index failed")
                continue
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


def _img(img: Mapping[str, Any] | None, size: str) -> str:
    if not img:
        return ""
    return (
        f'<img src="{escape(img[size])}" alt="{escape(img["alt"])}" width="{int(img["width"])}"'
        f' height="{int(img["height"])}" loading="lazy"'
        f' style="object-position: {escape(img["position"])}">'
    )


def card_html(c: Mapping[str, Any]) -> Markup:
    """One card of a row (a story's or a title's), as HTML. Written out here rather than
    as a template macro: a home page has a hundred cards, and a macro call cost 20 µs of
    the 2 ms the whole page may take. Every value is escaped."""
    if c["type"] == "story":
        kicker = f'<span class="kicker">{escape(c["tags"][0]["name"])}</span>' if c["tags"] else ""
        return Markup(
            f'<a class="card story-card" href="{escape(c["url"])}"><div class="frame">'
            f'{_img(c["image"], "small")}</div><div class="meta">{kicker}'
            f'<strong>{escape(c["title"])}</strong><span class="excerpt">'
            f"{escape(c['excerpt'])}</span></div></a>"
        )
    year = f' <span class="year">{int(c["year"])}</span>' if c["year"] else ""
    return Markup(
        f'<a class="card title-card" href="{escape(c["url"])}"><div class="frame poster">'
        f'{_img(c["image"], "small")}</div><div class="meta"><strong>{escape(c["name"])}'
        f"</strong>{year}</div></a>"
    )


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


def _http_url(url: str | None) -> str:
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


# -- routes -------------------------------------------------------------------------------------

Handler = Callable[[Site, Request], Awaitable[Response]]


def _route(site: Site, name: str, fn: Handler) -> Callable[[Request], Awaitable[Response]]:
    """The endpoint for ``fn``: times it, answers 503 while starting and adds headers."""
    observe = site.latency.labels(name).observe
    api = name.startswith("api_")

    async def run(request: Request) -> Response:
        t0 = time.perf_counter()
        try:
            response = await fn(site, request)
        except NotReady:
            msg = "The site is starting: its copy of the content is still loading."
            if api:
                response = site.json(request, {"error": msg}, 503, cache="no-store")
            else:
                body = site.render("site/error.html", request, message=msg, title="Starting")
                response = site.respond(request, body, media_type="text/html", status=503,
                                        cache="no-store")  # fmt: skip
            response.headers["Retry-After"] = "1"
        except InputError as e:
            if api:
                response = site.json(request, {"error": str(e)}, 400, cache="no-store")
            else:
                body = site.render("site/error.html", request, message=str(e), title="Bad request")
                response = site.respond(request, body, media_type="text/html", status=400,
                                        cache="no-store")  # fmt: skip
        dur = time.perf_counter() - t0
        observe(dur)
        response.headers["Server-Timing"] = f"page;dur={dur * 1000:.2f}"
        return _secured(site, response, api)

    return run


def _secured(site: Site, response: Response, api: bool) -> Response:
    h = response.headers
    h["X-Content-Type-Options"] = "nosniff"
    if not api:
        h["Content-Security-Policy"] = site.csp
        h["Referrer-Policy"] = "strict-origin-when-cross-origin"
    return response


def _not_found(site: Site, request: Request, what: str, api: bool) -> Response:
    msg = f"There is no {what} here."
    if api:
        return site.json(request, {"error": msg}, 404)
    body = site.render("site/error.html", request, message=msg, title="Not found", status=404)
    return site.respond(request, body, media_type="text/html", status=404)


def _profile(site: Site, request: Request) -> personalize.Profile:
    return personalize.decode(request.cookies.get(personalize.COOKIE), site.config.secret_key)


def _learns(request: Request) -> bool:
    h = request.headers
    return h.get("dnt") != "1" and h.get("sec-gpc") != "1"


def _learned(
    site: Site, request: Request, genres: Sequence[str], story: int | None
) -> tuple[personalize.Profile, personalize.Profile]:
    """The visitor's profile before and after a visit to a page of ``genres``."""
    prof = _profile(site, request)
    reload = story is not None and prof.seen[:1] == (story,)  # a reload teaches nothing new
    if reload or not _learns(request) or not (genres or story is not None):
        return prof, prof
    return prof, personalize.learn(prof, genres, story=story)


def _set_profile(site: Site, response: Response, profile: personalize.Profile) -> None:
    response.set_cookie(
        personalize.COOKIE,
        personalize.encode(profile, site.config.secret_key),
        max_age=PROFILE_MAX_AGE,
        httponly=True,
        samesite="lax",
        secure=site.config.https_only,
    )


def _page_number(request: Request) -> int:
    raw = request.query_params.get("page", "1")
    if not raw.isdigit() or len(raw) > 6:
        raise InputError(f"page must be a whole number from 1, not {raw[:20]!r}")
    return int(raw)


# pages (HTML and JSON)


def _kind_route(kind: str, what: str, template: str, learn: bool):
    def build(site: Site, state: Any, request: Request) -> dict | None:
        slug = request.path_params["slug"]
        if kind == "genre":
            return site.pages.genre(state, slug, page=_page_number(request))
        return getattr(site.pages, kind)(state, slug)

    def html_entry(site: Site, state: Any, request: Request) -> Entry | None:
        page = build(site, state, request)
        if page is None:
            return None
        body = site.render(template, request, page=page, nav=site.pages.genres(state)[:12])
        story = page["id"] if kind == "story" else None
        return Entry(body, genres=tuple(genres_of(page)), story=story)

    def api_entry(site: Site, state: Any, request: Request) -> Entry | None:
        page = build(site, state, request)
        return None if page is None else Entry(_json_body(page))

    async def html(site: Site, request: Request) -> Response:
        entry = site.page(request, kind, html_entry)
        if entry is None:
            return _not_found(site, request, what, api=False)
        if not learn:
            return site.send(request, entry, media_type="text/html")
        before, after = _learned(site, request, entry.genres, entry.story)
        response = site.send(request, entry, media_type="text/html", cache=PRIVATE,
                             vary_cookie=True)  # fmt: skip
        if after != before:
            _set_profile(site, response, after)
        return response

    async def api(site: Site, request: Request) -> Response:
        entry = site.page(request, f"api_{kind}", api_entry)
        if entry is None:
            return _not_found(site, request, what, api=True)
        return site.send(request, entry, media_type="application/json")

    return html, api


async def home(site: Site, request: Request) -> Response:
    prof = _profile(site, request)

    def build(site: Site, state: Any, request: Request) -> Entry:
        page = site.pages.home(state, prof)
        nav = site.pages.genres(state)[:12]
        return Entry(site.render("site/home.html", request, page=page, nav=nav))

    if prof.affinities:  # personalised: built for this visitor alone
        entry = build(site, site.state(), request)
    else:
        entry = site.page(request, "home", build)
    return site.send(request, entry, media_type="text/html", cache=PRIVATE, vary_cookie=True)


async def api_home(site: Site, request: Request) -> Response:
    entry = site.page(request, "api_home",
                      lambda site, state, _: Entry(_json_body(site.pages.home(state))))  # fmt: skip
    return site.send(request, entry, media_type="application/json")


def _search(site: Site, request: Request) -> dict[str, Any]:
    q = request.query_params.get("q", "")[:MAX_QUERY]
    types = request.query_params.getlist("type") or None
    state = site.state()
    out: dict[str, Any] = {"kind": "search", "q": q, "ready": site.search_ready.is_set(),
                           "hits": []}  # fmt: skip
    if site.search is None or not q.strip():
        return out
    urls = {"Story": "/stories/", "Title": "/titles/", "Person": "/people/"}
    for h in site.search.search(q, limit=30, types=types):
        hit = {"type": h.type.lower(), "id": h.key, "label": h.label, "url": urls[h.type] + h.slug}
        if h.type == "Story":
            rec = state["Story"].get(h.key) if "Story" in state else None
            if rec is None:
                continue  # unpublished a moment ago
            hit["excerpt"] = rec.excerpt
        out["hits"].append(hit)
    return out


async def search_page(site: Site, request: Request) -> Response:
    page = _search(site, request)
    body = site.render("site/search.html", request, page=page, q=page["q"],
                       nav=site.pages.genres(site.state())[:12])  # fmt: skip
    return site.respond(request, body, media_type="text/html")


async def api_search(site: Site, request: Request) -> Response:
    return site.json(request, _search(site, request))


async def profile_page(site: Site, request: Request) -> Response:
    prof = _profile(site, request)
    body = site.render("site/profile.html", request, profile=prof,
                       bars=personalize.explain(prof), learns=_learns(request),
                       nav=site.pages.genres(site.state())[:12])  # fmt: skip
    return site.respond(request, body, media_type="text/html", cache="private, no-store",
                        vary_cookie=True)  # fmt: skip


async def profile_forget(site: Site, request: Request) -> Response:
    response = RedirectResponse("/profile?forgotten=1", status_code=303)
    response.delete_cookie(personalize.COOKIE, httponly=True, samesite="lax")
    return response


async def healthz(site: Site, request: Request) -> Response:
    c = site.consumer
    held = c is not None and c._state is not None
    stale = None if c is None else c.staleness()
    body: dict[str, Any] = {
        "version": None if c is None else c.version,
        "position": None if c is None else c.position,
        "staleness_s": None if stale is None else round(stale, 3),
        "search_documents": None if site.search is None else len(site.search),
        "last_error": None if c is None else c.last_error,
    }
    if not held:
        body["status"], code = "starting: no state held yet", 503
    elif stale is None and c is not None and c.log is not None:
        body["status"], code = "starting: the Log has not confirmed this copy yet", 503
    elif stale is not None and stale > site.config.max_staleness:
        body["status"], code = f"stale: the Log has not confirmed this copy for {stale:.0f} s", 503
    else:
        body["status"], code = "ok", 200
    return JSONResponse(body, status_code=code, headers={"Cache-Control": "no-store"})


async def metrics(site: Site, request: Request) -> Response:
    return PlainTextResponse(
        generate_latest(site.registry),
        media_type="text/plain; version=0.0.4",
        headers={"Cache-Control": "no-store"},
    )


def _routes(site: Site) -> list[BaseRoute]:
    def r(path: str, name: str, fn: Handler, methods: tuple[str, ...] = ("GET", "HEAD")) -> Route:
        return Route(path, _route(site, name, fn), methods=list(methods), name=name)

    routes = [
        r("/", "home", home),
        r("/api/home", "api_home", api_home),
        r("/search", "search", search_page),
        r("/api/search", "api_search", api_search),
        r("/profile", "profile", profile_page),
        r("/profile/forget", "profile_forget", profile_forget, ("POST",)),
        r("/healthz", "healthz", healthz),
        r("/metrics", "metrics", metrics),
    ]
    kinds = (
        ("story", "stories", "story", "site/story.html", True),
        ("title", "titles", "title", "site/title.html", True),
        ("person", "people", "person", "site/person.html", False),
        ("genre", "genres", "genre", "site/genre.html", True),
        ("tag", "tags", "tag", "site/tag.html", False),
    )
    for kind, plural, what, template, learn in kinds:
        html, api = _kind_route(kind, what, template, learn)
        routes.append(r(f"/{plural}/{{slug}}", kind, html))
        routes.append(r(f"/api/{plural}/{{slug}}", f"api_{kind}", api))
    routes.append(Mount("/static", StaticFiles(directory=HERE / "static"), name="static"))
    if site.config.store is not None and site.config.media is not None:
        from .media import media_routes

        routes.extend(media_routes(site.config.store, site.config.media))
    return routes


def create_site_app(config: SiteConfig) -> Starlette:
    """The site as an ASGI app (see the module's contracts)."""
    site = Site(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        site.start()
        try:
            yield
        finally:
            site.stop()

    async def not_found(request: Request, exc: Exception) -> Response:
        api = request.url.path.startswith("/api/")
        with contextlib.suppress(NotReady):
            return _secured(site, _not_found(site, request, "page", api), api)
        return _secured(site, PlainTextResponse("Not found.", status_code=404), api)

    app = Starlette(routes=_routes(site), lifespan=lifespan,
                    exception_handlers={404: not_found})  # fmt: skip
    app.state.site = site
    return app


__all__ = ["NotReady", "Site", "SiteConfig", "create_site_app"]
