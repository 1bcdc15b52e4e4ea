"""The old path's page construction service: each page's fragments fetched from the page
data service over HTTP, then rendered with the site's own templates.

A page is one multi-get of its fragments (the most the old path could ask in one round
trip): the home page ``home`` and ``nav``; a story ``story:<slug>``, ``more:<slug>`` and
``nav``; the editor's preview of a story ``draft:<id>`` and ``nav``. The pages are the
site's (anonymous visitor, no page cache): the same HTML, byte for byte, as a nearstate
site shows for the same state.
"""

from __future__ import annotations

import contextlib
from typing import Any

import msgspec

from ...errors import NearstateError

NAV = 12  # genres in the masthead, as the site shows
_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode


class PageConstruction:
    """Builds pages from fragments fetched at ``data_url`` (an ``httpx.AsyncClient`` of
    its own, kept alive); renders them with a :class:`~nearstate.web.site.Site`'s
    templates."""

    def __init__(self, data_url: str, *, connections: int = 64):
        import httpx

        from ...web.site import Site, SiteConfig

        self.client = httpx.AsyncClient(
            base_url=data_url,
            timeout=10,
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        )
        self.site = Site(SiteConfig(dataset=None, secret_key="unused: no cookies here",
                                    search=False, page_cache=0))  # fmt: skip

    async def fetch(self, *keys: str) -> dict[str, Any]:
        r = await self.client.get("/fragments", params=[("k", k) for k in keys])
        if r.status_code != 200:
            raise NearstateError(f"the page data service answered {r.status_code}: {r.text}")
        return _decode(r.content)

    async def home(self) -> dict[str, Any] | None:
        got = await self.fetch("home", "nav")
        if got["home"] is None:
            return None
        return {"page": got["home"], "nav": (got["nav"] or [])[:NAV]}

    async def story(self, slug: str) -> dict[str, Any] | None:
        got = await self.fetch(f"story:{slug}", f"more:{slug}", "nav")
        page = got[f"story:{slug}"]
        if page is None:
            return None
        page["more"] = got[f"more:{slug}"] or []
        return {"page": page, "nav": (got["nav"] or [])[:NAV]}

    async def preview(self, story_id: int) -> dict[str, Any] | None:
        got = await self.fetch(f"draft:{story_id}", "nav")
        if got[f"draft:{story_id}"] is None:
            return None
        return {"page": got[f"draft:{story_id}"], "nav": (got["nav"] or [])[:NAV]}

    def render(self, template: str, request: Any, ctx: dict[str, Any]) -> bytes:
        return self.site.render(template, request, **ctx)

    async def close(self) -> None:
        await self.client.aclose()


def create_construction_app(data_url: str) -> Any:
    """The page construction service's ASGI app: ``/``, ``/stories/{slug}``,
    ``/api/home``, ``/api/stories/{slug}`` and ``/preview/{id}`` (the editor's preview of a story's
    newest saved revision)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, Response
    from starlette.routing import Route

    pc: dict[str, PageConstruction] = {}

    def html(body: bytes | None) -> Response:
        if body is None:
            return HTMLResponse("<h1>Not found</h1>", 404)
        return Response(body, media_type="text/html", headers={"Cache-Control": "no-cache"})

    async def home(request: Request) -> Response:
        got = await pc["c"].home()
        return html(None if got is None else pc["c"].render("site/home.html", request, got))

    async def story(request: Request) -> Response:
        got = await pc["c"].story(request.path_params["slug"])
        return html(None if got is None else pc["c"].render("site/story.html", request, got))

    async def api_home(request: Request) -> Response:
        got = await pc["c"].home()
        if got is None:
            return JSONResponse({"error": "no home page"}, 404)
        return Response(_encode(got["page"]), media_type="application/json")

    async def api_story(request: Request) -> Response:
        got = await pc["c"].story(request.path_params["slug"])
        if got is None:
            return JSONResponse({"error": "no such story"}, 404)
        return Response(_encode(got["page"]), media_type="application/json")

    async def preview(request: Request) -> Response:
        got = await pc["c"].preview(request.path_params["id"])
        return html(None if got is None else pc["c"].render("site/story.html", request, got))

    async def healthz(request: Request) -> Response:
        try:
            await pc["c"].fetch("nav")
        except Exception as e:  # the page data service is not answering yet
            return JSONResponse({"ok": False, "why": str(e)}, 503)
        return JSONResponse({"ok": True})

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> Any:
        pc["c"] = PageConstruction(data_url)
        try:
            yield
        finally:
            await pc["c"].close()

    return Starlette(
        routes=[
            Route("/", home),
            Route("/stories/{slug}", story),
            Route("/api/home", api_home),
            Route("/api/stories/{slug}", api_story),
            Route("/preview/{id:int}", preview),
            Route("/healthz", healthz),
        ],
        lifespan=lifespan,
    )
