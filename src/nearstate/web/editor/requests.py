"""The editor's small request framework: :class:`Ctx` (the request, the user, the form)
and :func:`endpoint`, which wraps a page or an API handler with the login, role and CSRF
checks, reads the body within its limit, runs the handler in a thread and turns errors
into plain 4xx and 500 answers.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response

from ...content import audit
from ...content.cms import CMS, EditConflict, InvalidContent, NotFound
from ...content.db import StoreError
from ...content.media import (
    AssetNotFound,
)
from ...errors import InputError, ReadTimeout
from .. import auth
from ..auth import User
from .forms import (
    MAX_FORM_FIELDS,
    BadRequest,
    clean,
    clean_json,
    finite,
    form_field,
    problem_dicts,
    reject_constant,
)
from .state import Editor

log = logging.getLogger(__name__)


class BodyTooLarge(Exception):
    def __init__(self, limit: int):
        super().__init__(f"The request body is larger than {limit:,} bytes, the most accepted.")
        self.limit = limit


@dataclass
class Ctx:
    """One request, as a handler sees it."""

    ed: Editor
    request: Request
    web: auth.WebSession
    form: FormData | None = None
    data: Any = None
    api: bool = False

    @property
    def cms(self) -> CMS:
        return self.ed.cms

    @property
    def user(self) -> User | None:
        return self.web.user

    @property
    def username(self) -> str:
        return self.user.username if self.user else ""

    @property
    def address(self) -> str:
        return auth.client_address(self.request.scope)

    @property
    def actor(self) -> audit.Actor:
        u = self.user
        return audit.Actor(u.username if u else "", u.id if u else None, self.address)

    def audit(self, action: str, subject: str = "", detail: str = "") -> None:
        """Record what the user just did. Called after the change committed: a failure
        here is logged, and the request still succeeds."""
        try:
            audit.record(self.ed.store, self.actor, action, subject, detail)
        except Exception:
            log.exception("editor: the audit entry %s %s was not written", action, subject)

    def query(self, name: str) -> str:
        v = self.request.query_params.get(name)
        return clean(v) if v is not None else ""

    def flash(self, message: str) -> None:
        self.web.flash(message)

    def render(self, template: str, code: int = 200, /, **context: Any) -> Response:
        base = {
            "user": self.user,
            "csrf": self.web.csrf(),
            "nonce": getattr(self.request.state, "csp_nonce", ""),
            "flashes": self.web.take_flashes(),
            "path": self.request.url.path,
        }
        return self.ed.templates.TemplateResponse(
            self.request, f"editor/{template}", {**base, **context}, status_code=code
        )

    def redirect(self, url: str) -> Response:
        return RedirectResponse(url, status_code=303)

    def json(self, data: Any, status: int = 200) -> Response:
        return JSONResponse(data, status_code=status)

    def error(self, status: int, message: str, problems: Iterable[Any] = ()) -> Response:
        return error_response(self.request, status, message, problems, api=self.api)


def wants_json(request: Request) -> bool:
    path = request.url.path
    return path.startswith("/api/") or path == "/api" or path.endswith(".json")


def error_response(
    request: Request, status: int, message: str, problems: Iterable[Any] = (), *, api: bool
) -> Response:
    plist = problem_dicts(problems)
    if api:
        return JSONResponse({"error": message, "problems": plist}, status_code=status)
    ed: Editor | None = getattr(request.app.state, "editor", None)
    if ed is None:  # pragma: no cover - only outside the app
        return PlainTextResponse(message, status_code=status)
    web: auth.WebSession | None = getattr(request.state, "web", None)
    user = web.user if web is not None else None
    csrf = web.csrf() if web is not None and user is not None else ""
    return ed.templates.TemplateResponse(
        request,
        "editor/error.html",
        {
            "user": user,
            "csrf": csrf,
            "nonce": getattr(request.state, "csp_nonce", ""),
            "flashes": [],
            "path": request.url.path,
            "status": status,
            "message": message,
            "problems": plist,
        },
        status_code=status,
    )


Handler = Callable[..., Response]


def endpoint(
    *,
    api: bool = False,
    admin: bool = False,
    public: bool = False,
    csrf: bool = True,
) -> Callable[[Handler], Callable[[Request], Awaitable[Response]]]:
    """Wrap a blocking handler ``fn(ctx, **path_params) -> Response``: log-in and role
    checks, the body read (a form, or JSON with ``api``) and its CSRF token checked, then
    ``fn`` run in a worker thread with the errors it raises turned into answers.

    ``csrf=False`` (only for ``POST /api/login``, which has no session yet) requires the
    body to be sent as ``application/json`` instead: a page on another site can post a
    form or plain text, but not that without the browser asking this site first."""

    def wrap(fn: Handler) -> Callable[[Request], Awaitable[Response]]:
        @functools.wraps(fn)
        async def run(request: Request) -> Response:
            ed: Editor = request.app.state.editor
            try:
                web = await run_in_threadpool(ed.web_session, request)
            except StoreError as e:
                log.warning("editor: the session could not be read: %s", e)
                return error_response(
                    request, 503, "The database is busy right now; try again in a moment.", api=api
                )
            response = await checked(request, ed, web)
            web.apply(response)
            return response

        async def checked(request: Request, ed: Editor, web: auth.WebSession) -> Response:
            user = web.user
            if not public:
                if user is None:
                    if api:
                        return error_response(
                            request, 401, "You are not logged in: POST /api/login first.", api=True
                        )
                    here = request.url.path
                    if request.url.query:
                        here += "?" + request.url.query
                    target = here if request.method == "GET" else "/"
                    return RedirectResponse(
                        "/login?" + urlencode({"next": auth.safe_next(target)}), status_code=303
                    )
                if admin and not user.is_admin:
                    return error_response(request, 403, "This page is for admins only.", api=api)
            ctx = Ctx(ed, request, web, api=api)
            try:
                if request.method not in ("GET", "HEAD"):
                    if not csrf and not _json_type(request):
                        return ctx.error(415, "Send JSON, with Content-Type: application/json.")
                    if api:
                        ctx.data = await _read_json(request)
                        sent = request.headers.get(auth.CSRF_HEADER)
                    else:
                        ctx.form = await request.form(
                            max_files=1, max_fields=MAX_FORM_FIELDS, max_part_size=1024 * 1024
                        )
                        sent = form_field(ctx.form, auth.CSRF_FIELD)
                    if csrf and not web.csrf_ok(sent):
                        why = (
                            "the X-CSRF-Token header is missing or wrong (it is the 'csrf' "
                            "that POST /api/login returned)"
                            if api
                            else "the form's security token is missing or out of date; go "
                            "back, reload the page and try again"
                        )
                        return ctx.error(403, f"Refused: {why}.")
                return await run_in_threadpool(_guarded, fn, ctx, request.path_params)
            except BodyTooLarge as e:
                return ctx.error(413, str(e))
            except BadRequest as e:
                return ctx.error(e.status, str(e), e.problems)
            except HTTPException as e:
                return ctx.error(e.status_code, str(e.detail))
            finally:
                if ctx.form is not None:
                    with contextlib.suppress(Exception):
                        await ctx.form.close()

        return run

    return wrap


def _guarded(fn: Handler, ctx: Ctx, params: Mapping[str, Any]) -> Response:
    try:
        return fn(ctx, **params)
    except BadRequest as e:
        return ctx.error(e.status, str(e), e.problems)
    except (NotFound, AssetNotFound) as e:
        return ctx.error(404, _sentence(e))
    except InvalidContent as e:
        return ctx.error(422, _sentence(e), e.problems)
    except EditConflict as e:
        return ctx.error(409, str(e))
    except InputError as e:
        return ctx.error(400, _sentence(e))
    except ReadTimeout:
        return ctx.error(503, "The preview is not ready yet; try again in a moment.")
    except StoreError as e:
        if e.transient:
            log.warning("the write store is busy: %s", e)
            return ctx.error(503, "The database is busy right now; try again in a moment.")
        return _internal(ctx, e)
    except Exception as e:
        return _internal(ctx, e)


def _internal(ctx: Ctx, e: BaseException) -> Response:
    ref = secrets.token_hex(4)
    log.error(
        "editor: %s %s failed (ref %s)", ctx.request.method, ctx.request.url.path, ref, exc_info=e
    )
    return ctx.error(
        500, f"Something went wrong on our side. It was logged (reference {ref}); try again."
    )


def _sentence(e: BaseException) -> str:
    text = str(e).strip()
    if not text:
        return "Refused."
    return text[0].upper() + text[1:]


def _json_type(request: Request) -> bool:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return ctype == "application/json"


async def _read_json(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        return None
    try:
        data = json.loads(raw, parse_float=finite, parse_constant=reject_constant)
        return clean_json(data)
    except RecursionError:
        raise BadRequest("The request body's JSON is nested too deeply.") from None
    except ValueError as e:
        raise BadRequest(f"The request body is not valid JSON: {_cut(str(e))}") from None


def _cut(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
