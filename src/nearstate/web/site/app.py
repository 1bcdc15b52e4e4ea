"""The site's routes — pages, their JSON under ``/api``, search, the profile, health and
metrics — and :func:`create_site_app`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from prometheus_client import generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from ...content import personalize
from ...content.pages import genres_of
from ...content.search import allowed_types
from ...errors import InputError
from ...layered import State
from ..openapi import site_openapi
from .state import (
    HERE,
    MAX_QUERY,
    PRIVATE,
    PROFILE_MAX_AGE,
    Entry,
    NotReady,
    Site,
    SiteConfig,
    json_body,
)

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
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 6:  # "²" is a digit int() refuses
        raise InputError(f"page must be a whole number from 1, not {raw[:20]!r}")
    return int(raw)


# pages (HTML and JSON)


def _kind_route(kind: str, what: str, template: str, learn: bool):
    def build(site: Site, state: State, request: Request) -> dict | None:
        slug = request.path_params["slug"]
        if kind == "genre":
            return site.pages.genre(state, slug, page=_page_number(request))
        return getattr(site.pages, kind)(state, slug)

    def html_entry(site: Site, state: State, request: Request) -> Entry | None:
        page = build(site, state, request)
        if page is None:
            return None
        body = site.render(template, request, page=page, nav=site.pages.genres(state)[:12])
        story = page["id"] if kind == "story" else None
        return Entry(body, genres=tuple(genres_of(page)), story=story)

    def api_entry(site: Site, state: State, request: Request) -> Entry | None:
        page = build(site, state, request)
        return None if page is None else Entry(json_body(page))

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

    def build(site: Site, state: State, request: Request) -> Entry:
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
                      lambda site, state, _: Entry(json_body(site.pages.home(state))))  # fmt: skip
    return site.send(request, entry, media_type="application/json")


def _search(site: Site, request: Request) -> dict[str, Any]:
    q = request.query_params.get("q", "")[:MAX_QUERY]
    types = request.query_params.getlist("type") or None
    allowed_types(types)  # an unknown type is refused with or without a query
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
        "search_position": None if site.search is None else site.search_position,
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
    routes.append(Route("/api/openapi.json", site_openapi, methods=["GET"], name="api_openapi"))
    routes.append(Mount("/static", StaticFiles(directory=HERE / "static"), name="static"))
    if site.config.store is not None and site.config.media is not None:
        from ..media import media_routes

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
