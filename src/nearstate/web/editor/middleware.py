"""What wraps every response of the editor: security headers (CSP with a nonce, frame
sources for the preview's embeds), the body size limit, and plain error pages.
"""

from __future__ import annotations

import contextlib
import re
import secrets

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ...content.db import StoreError
from .requests import BodyTooLarge, error_response, wants_json
from .state import Editor

FRAME_SOURCES = "https://www.youtube-nocookie.com https://player.vimeo.com"
_STORY_FORM = re.compile(r"^/stories/(new|\d+)$")


class SecurityHeaders:
    """Adds the security headers (and a CSP nonce for the page's scripts) to every
    response."""

    def __init__(self, app: ASGIApp, *, img_src: str) -> None:
        self.app = app
        self.img_src = img_src

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        nonce = secrets.token_urlsafe(16)
        scope.setdefault("state", {})["csp_nonce"] = nonce
        path = str(scope.get("path", ""))
        preview = path.endswith("/preview")
        # a story's form shows its preview in a frame: only this site's preview page may
        # be framed, and only by this site
        frames = "'none'"
        if preview:
            frames = FRAME_SOURCES
        elif _STORY_FORM.match(path):
            frames = "'self'"
        ancestors = "'self'" if preview else "'none'"
        csp = (
            f"default-src 'self'; script-src 'self' 'nonce-{nonce}'; style-src 'self'; "
            f"img-src {self.img_src}; frame-src {frames}; frame-ancestors {ancestors}; "
            "form-action 'self'; base-uri 'none'; object-src 'none'"
        )
        dynamic = not path.startswith(("/static/", "/media/"))

        async def send_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["X-Content-Type-Options"] = "nosniff"
                headers["Referrer-Policy"] = "same-origin"
                headers["X-Frame-Options"] = "SAMEORIGIN" if preview else "DENY"
                headers["Content-Security-Policy"] = csp
                if dynamic and "cache-control" not in headers:
                    headers["Cache-Control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_headers)


class LimitBody:
    """Refuses request bodies over the limit with 413: at once when Content-Length says
    so, else as soon as more has arrived (before any of it is parsed)."""

    def __init__(self, app: ASGIApp, *, limit: int, upload_limit: int) -> None:
        self.app = app
        self.limit = limit
        self.upload_limit = upload_limit

    def _limit(self, scope: Scope) -> int:
        if scope.get("method") == "POST" and scope.get("path") == "/assets":
            return max(self.limit, self.upload_limit)
        return self.limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope)
        api = str(scope.get("path", "")).startswith("/api")
        for key, value in scope.get("headers") or []:
            if key == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = -1
                if length < 0:
                    await _plain(scope, receive, send, 400, "Bad Content-Length.", api)
                    return
                if length > limit:
                    msg = f"The request body is {length:,} bytes; at most {limit:,} are accepted."
                    await _plain(scope, receive, send, 413, msg, api)
                    return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, counted, send)


async def _plain(
    scope: Scope, receive: Receive, send: Send, status: int, message: str, api: bool
) -> None:
    resp: Response
    if api:
        resp = JSONResponse({"error": message, "problems": []}, status_code=status)
    else:
        resp = PlainTextResponse(message + "\n", status_code=status)
    resp.headers["Connection"] = "close"
    await resp(scope, receive, send)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    await _with_session(request)
    message = {
        404: f"There is no page {request.url.path}.",
        405: f"{request.method} is not allowed on {request.url.path}.",
    }.get(exc.status_code, str(exc.detail))
    return error_response(request, exc.status_code, message, api=wants_json(request))


async def _with_session(request: Request) -> None:
    """Read the login for an error page outside the handlers (a 404 shows the menu)."""
    ed: Editor | None = getattr(request.app.state, "editor", None)
    if ed is not None and getattr(request.state, "web", None) is None:
        with contextlib.suppress(StoreError):
            await run_in_threadpool(ed.web_session, request)


async def too_large(request: Request, exc: Exception) -> Response:
    await _with_session(request)
    return error_response(request, 413, str(exc), api=wants_json(request))
