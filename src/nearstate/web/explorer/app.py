"""The explorer app assembled: its routes, the read-only guard and
:func:`create_explorer_app`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .data import Explorer
from .views import (
    WEB,
    Page,
    diff_page,
    error,
    history_page,
    log_page,
    overview,
    record_page,
    templates,
    type_page,
    versions_page,
)

READ = ("GET", "HEAD")


@dataclass(frozen=True)
class ExplorerConfig:
    """``dataset``: the dataset to show (``nearstate.open(url)``). ``home``: a URL the
    pages link back to (the editor, when mounted there), or None. ``refresh_every``:
    seconds between two looks at the announcement and the Log."""

    dataset: Any
    home: str | None = None
    refresh_every: float = 1.0


CSP = (
    "default-src 'self'; script-src 'none'; style-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'"
)


class ReadOnly:
    """Refuses every method but GET and HEAD with 405, before anything else sees the
    request: the explorer has nothing that writes, and says so. Adds the security headers
    (no scripts at all) to what it lets through."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in READ:
            resp = PlainTextResponse(
                f"The explorer only reads: {scope['method']} is not allowed (use GET).\n",
                status_code=405,
                headers={"Allow": ", ".join(READ)},
            )
            await resp(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def headed(message: Message) -> None:
            if message["type"] == "http.response.start":
                h = MutableHeaders(scope=message)
                h.setdefault("Content-Security-Policy", CSP)
                h.setdefault("X-Content-Type-Options", "nosniff")
                h.setdefault("Referrer-Policy", "same-origin")
                h.setdefault("Cache-Control", "no-store")
            await send(message)

        await self.app(scope, receive, headed)


async def _not_found(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    app = request.app
    p = Page(app.state.explorer, request, app.state.templates, app.state.home)
    if exc.status_code == 404:
        return error(p, 404, f"There is no page {request.url.path}.")
    return error(p, exc.status_code, str(exc.detail))


def create_explorer_app(config: ExplorerConfig) -> ASGIApp:
    """The explorer over ``config.dataset``: every route a GET; see the package's doc."""
    get = ["GET"]
    routes = [
        Route("/", overview, methods=get),
        Route("/types/{type_name}", type_page, methods=get),
        Route("/types/{type_name}/record", record_page, methods=get),
        Route("/types/{type_name}/history", history_page, methods=get),
        Route("/versions", versions_page, methods=get),
        Route("/diff", diff_page, methods=get),
        Route("/log", log_page, methods=get),
        Mount("/static", app=StaticFiles(directory=WEB / "static"), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: _not_found})
    app.state.explorer = Explorer(config.dataset, refresh_every=config.refresh_every)
    app.state.templates = templates()
    app.state.home = config.home
    guarded = ReadOnly(app)
    guarded.state = app.state  # type: ignore[attr-defined]
    return guarded
