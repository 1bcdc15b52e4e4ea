"""The explorer's pages inside the editor app, at ``/explore/``, for admins only: the same
app as ``nearstate explore`` over the editor's dataset, behind the editor's login."""

from __future__ import annotations

import logging
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ...content.db import StoreError
from .. import auth
from ..explorer import ExplorerConfig, create_explorer_app
from .requests import error_response
from .state import Editor

log = logging.getLogger(__name__)

PATH = "/explore"


class AdminOnly:
    """Lets a request through to ``app`` only from a logged-in admin: others are sent to
    the login page (no login) or refused with 403 (not an admin)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        ed: Editor = request.app.state.editor
        refused: Response | None
        try:
            web = await run_in_threadpool(ed.web_session, request)
        except StoreError as e:
            log.warning("editor: the session could not be read: %s", e)
            refused = error_response(
                request, 503, "The database is busy right now; try again in a moment.", api=False
            )
        else:
            if web.user is None:
                here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                target = auth.safe_next(here if request.method == "GET" else "/")
                refused = RedirectResponse("/login?" + urlencode({"next": target}), 303)
            elif not web.user.is_admin:
                refused = error_response(
                    request, 403, "The explorer is for admins only.", api=False
                )
            else:
                refused = None
        if refused is not None:
            await refused(scope, receive, send)
            return
        await self.app(scope, receive, send)


def explorer_app(dataset: object) -> ASGIApp:
    """The explorer over the editor's dataset, behind :class:`AdminOnly`."""
    return AdminOnly(create_explorer_app(ExplorerConfig(dataset=dataset, home="/")))
