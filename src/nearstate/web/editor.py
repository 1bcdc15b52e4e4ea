"""The editor app: server-rendered pages (and a small JSON API) over the CMS.

``create_editor_app(EditorConfig(...))`` returns a Starlette app. Everything works without
JavaScript: forms post, the server answers with a redirect (303) or the form again with
the problems shown. With a dataset and ``run_worker``, the app's lifespan runs an
ingestion worker thread (outbox events → render-ready records) and a consumer for the
preview, which waits for exactly the saved revision (read-your-writes).

Contracts:

- Pages need a login (else a redirect to ``/login?next=...``, only to paths of this site);
  the JSON API answers 401. ``/admin/...`` needs the ``admin`` role (403 otherwise).
- The login is a session in the write store, read with the user's row on every request
  (``auth``, ``content.sessions``): a removed user, a new role, a changed password or a
  "log out everywhere" holds on the next request, in every editor process.
- Logins (the form, ``POST /api/login``) are throttled per account and per client address
  (``content.throttle``): over the limit, 429 with ``Retry-After`` and a plain message,
  without checking the password. Unknown and known accounts cost the same scrypt work.
- What editors do (saves, publishes, restores, uploads, layout saves, user changes,
  logins, logouts and failed logins) is written to the audit log (``content.audit``).
- Every POST form carries the session's CSRF token (hidden field ``csrf``), every API
  change the header ``X-CSRF-Token``; without it: 403, nothing done.
- A body over ``max_body_bytes`` (``max_upload_bytes`` for image uploads) is refused with
  413 before it is parsed.
- Bad input is a 4xx with a message in plain words: 400 (malformed), 404, 409 (somebody
  else saved first: nothing is overwritten), 413, 422 (the content has problems, each
  shown where it is). An unexpected failure is logged and answered with a plain 500 page.
- Pages: ``/`` (stories), ``/stories/new``, ``/stories/{id}`` (edit; POST saves, publishes,
  schedules, unpublishes or previews), ``/stories/{id}/revisions[/{rev}[/restore]]``,
  ``/stories/{id}/preview?revision=N``, ``/stories/{id}/status.json``, ``/lookup/titles``,
  ``/lookup/people``, ``/assets[/{id}]``, ``/layouts[/new|/{id}]``,
  ``/admin/dead-letters[/{event}/retry]``, ``/login``, ``/logout``; ``/account[/...]``,
  ``/admin/users[/{id}[/...]]`` and ``/admin/audit`` (``editor_accounts``);
  ``/media/...`` and ``/static/...``. API: ``POST /api/login``, ``POST /api/logout``,
  ``GET|POST /api/stories``, ``GET|PUT /api/stories/{id}``,
  ``POST /api/stories/{id}/publish``, ``GET /api/stories/{id}/status``.
- Every response carries ``X-Content-Type-Options``, ``Referrer-Policy``,
  ``X-Frame-Options`` and a Content-Security-Policy (scripts only from this site or with
  the page's nonce; video frames only from youtube-nocookie.com and vimeo on the preview).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import logging
import math
import re
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, MutableHeaders, UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..content import accounts, audit, outbox, throttle
from ..content.cms import CMS, STATUSES, EditConflict, InvalidContent, NotFound
from ..content.db import StoreError, WriteStore
from ..content.media import (
    MAX_UPLOAD_BYTES,
    AssetNotFound,
    MediaConfig,
    asset_url,
    get_asset,
    store_upload,
    update_asset,
)
from ..content.pages import story_model
from ..content.rules import BLOCK_KINDS, MAX_BLOCKS, Problem, check_story
from ..errors import InputError, NearstateError, ReadTimeout
from . import auth
from .auth import User
from .media import media_routes
from .site import card_html

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
MAX_ID = 2**63 - 1
MAX_REVISION = 2**31 - 1
PAGE = 50
ACTIONS = ("save", "publish", "schedule", "unpublish", "preview")
ROW_KINDS = ("stories", "titles", "tag", "genre")
BLOCK_FIELDS = ("kind", "text", "level", "cite", "asset", "title", "url")
ROW_FIELDS = ("heading", "kind", "value", "limit")
EMBEDS = ("https://www.youtube-nocookie.com/embed/", "https://player.vimeo.com/video/")
FRAME_SOURCES = "https://www.youtube-nocookie.com https://player.vimeo.com"
MAX_FORM_FIELDS = 6000  # 300 blocks of 9 fields, and room to spare


@dataclass(frozen=True)
class EditorConfig:
    """What the editor app works on.

    ``dataset``: a nearstate dataset for the preview (and the in-process worker with
    ``run_worker``); without one the preview says it is not available. ``secret_key``
    derives the CSRF tokens from the session cookies' tokens. ``session_max_age``: how
    long a login lasts, in seconds (12 hours), however active. ``login_limits``: failed
    logins allowed per account and per client address before logins are refused with 429
    (5 and 20 in 15 minutes; see ``content.throttle``). ``max_body_bytes``: the largest
    request body accepted; ``max_upload_bytes``: the same for image uploads
    (``POST /assets``)."""

    store: WriteStore
    media: MediaConfig
    secret_key: str
    dataset: Any | None = None
    run_worker: bool = True
    https_only: bool = False
    session_max_age: int = 12 * 3600
    preview_timeout: float = 5.0
    max_body_bytes: int = 2 * 1024 * 1024
    site_url: str | None = None
    max_upload_bytes: int = MAX_UPLOAD_BYTES + 1024 * 1024
    login_limits: throttle.Limits = field(default_factory=throttle.Limits)


class BadRequest(Exception):
    """A request the app refuses, with the status, the message to show and the problems
    (``rules.Problem``) to list."""

    def __init__(self, message: str, status: int = 400, problems: Iterable[Problem] = ()):
        super().__init__(message)
        self.status = status
        self.problems = list(problems)


class BodyTooLarge(Exception):
    def __init__(self, limit: int):
        super().__init__(f"The request body is larger than {limit:,} bytes, the most accepted.")
        self.limit = limit


# -- small helpers ----------------------------------------------------------------------------

_BAD_CHARS = re.compile("[\x00\ud800-\udfff]")


def _clean(s: str) -> str:
    """Text as the store can keep it: no NUL characters nor lone surrogates; newlines
    as ``\\n``."""
    return _BAD_CHARS.sub(lambda m: "" if m.group() == "\x00" else "\ufffd", s).replace(
        "\r\n", "\n"
    )


def _clean_json(v: Any) -> Any:
    if isinstance(v, str):
        return _clean(v)
    if isinstance(v, list):
        return [_clean_json(x) for x in v]
    if isinstance(v, dict):
        return {_clean(str(k)): _clean_json(x) for k, x in v.items()}
    return v


def _show(v: Any, limit: int = 60) -> str:
    """A user's value, quoted and cut short, for a message."""
    text = repr(v)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def _int(
    value: Any, what: str, *, lo: int = 0, hi: int = MAX_ID, default: int | None = None
) -> int:
    """``value`` (a query or form string) as a whole number in ``[lo, hi]``; BadRequest
    naming ``what`` otherwise (``default`` when it is missing or empty)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        if default is not None:
            return default
        raise BadRequest(f"{what} is missing.")
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise BadRequest(f"{what} must be a whole number, not {_show(value)}.")
    text = str(value).strip()
    if not re.fullmatch(r"[+-]?\d{1,20}", text):
        raise BadRequest(f"{what} must be a whole number, not {_show(value)}.")
    n = int(text)
    if not lo <= n <= hi:
        raise BadRequest(f"{what} must be between {lo} and {hi}, not {n}.")
    return n


def _path_id(value: str, what: str) -> int:
    """A numeric id from the URL: NotFound (404) when it is not one."""
    if not re.fullmatch(r"\d{1,19}", value) or int(value) > MAX_ID:
        raise NotFound(f"there is no {what} {_show(value)}")
    return int(value)


def _when(ts: Any) -> str:
    if ts is None or ts == "":
        return "—"
    try:
        return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(float(ts)))
    except (TypeError, ValueError, OverflowError, OSError):
        return "—"


def _when_exact(ts: Any) -> str:
    """``_when`` to the second (the audit log)."""
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(ts)))
    except (TypeError, ValueError, OverflowError, OSError):
        return "—"


def _dtlocal(ts: Any) -> str:
    """An epoch time as a ``datetime-local`` input value, in UTC."""
    if ts is None:
        return ""
    try:
        return time.strftime("%Y-%m-%dT%H:%M", time.gmtime(float(ts)))
    except (TypeError, ValueError, OverflowError, OSError):
        return ""


def _utc(raw: str, where: str) -> tuple[float | None, list[Problem]]:
    """A ``datetime-local`` value (read as UTC) as epoch seconds; empty: None."""
    raw = raw.strip()
    if not raw:
        return None, []
    try:
        when = dt.datetime.fromisoformat(raw)
    except ValueError:
        return None, [Problem(where, f"{_show(raw)} is not a date and time (YYYY-MM-DD HH:MM)")]
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    try:
        return when.timestamp(), []
    except (OverflowError, OSError, ValueError):
        return None, [Problem(where, f"{_show(raw)} is out of range")]


def _field(form: FormData | None, name: str) -> str:
    """A text field of a form ('' when missing, or when it is a file)."""
    if form is None:
        return ""
    v = form.get(name)
    return _clean(v) if isinstance(v, str) else ""


def _split_ids(text: str) -> list[str]:
    return [x for x in re.split(r"[\s,;]+", text) if x]


def _position(raw: str, default: float, where: str, problems: list[Problem]) -> float:
    if not raw.strip():
        return default
    try:
        pos = float(raw)
    except ValueError:
        pos = math.nan
    if not math.isfinite(pos):
        problems.append(Problem(where, f"the position {_show(raw)} is not a number"))
        return default
    return pos


def _finite(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise ValueError(f"the number {text} is too large")
    return v


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _problem_dicts(problems: Iterable[Any]) -> list[dict[str, str]]:
    out = []
    for p in problems:
        if isinstance(p, Problem):
            out.append(p.to_dict())
        elif isinstance(p, Mapping):
            out.append({"where": str(p.get("where", "")), "message": str(p.get("message", ""))})
    return out


# -- story and layout forms ---------------------------------------------------------------------


def story_form(data: Mapping[str, Any]) -> dict[str, Any]:
    """A stored story as the edit form's values (all text)."""
    blocks = []
    for b in data.get("body") or []:
        blocks.append(
            {
                "kind": str(b.get("kind") or ""),
                "text": str(b.get("text") or ""),
                "level": str(b.get("level") or 2),
                "cite": str(b.get("cite") or ""),
                "asset": str(b.get("asset") or ""),
                "title": "" if b.get("title") is None else str(b.get("title")),
                "url": str(b.get("url") or ""),
            }
        )
    return {
        "title": str(data.get("title") or ""),
        "slug": str(data.get("slug") or ""),
        "dek": str(data.get("dek") or ""),
        "hero": str(data.get("hero") or ""),
        "tags": ", ".join(map(str, data.get("tags") or [])),
        "related": ", ".join(map(str, data.get("related") or [])),
        "authors": ", ".join(map(str, data.get("authors") or [])),
        "blocks": blocks,
    }


_BLOCK_KEY = re.compile(r"^block-(\d{1,5})-kind$")
_ROW_KEY = re.compile(r"^row-(\d{1,4})-kind$")


def _block_data(b: Mapping[str, str]) -> dict[str, Any]:
    kind = b["kind"]
    if kind not in BLOCK_KINDS:
        return dict(b)  # the CMS names the unknown kind
    out: dict[str, Any] = {"kind": kind}
    if kind in ("paragraph", "heading", "quote", "image"):
        out["text"] = b["text"]
    if kind == "heading":
        out["level"] = b["level"] or 2
    elif kind == "quote":
        out["cite"] = b["cite"]
    elif kind == "image":
        out["asset"] = b["asset"]
    elif kind == "title":
        out["title"] = b["title"]
    elif kind == "video":
        out["url"] = b["url"]
    return out


def parse_story_form(form: FormData) -> tuple[dict[str, Any], dict[str, Any], list[Problem]]:
    """The edit form as (the values to show again, the story for the CMS, problems of the
    form itself). Blocks marked "remove" are dropped, empty new blocks ignored, and the
    rest ordered by their position number (ties keep the form's order)."""
    values: dict[str, Any] = {
        k: _field(form, k) for k in ("title", "slug", "dek", "hero", "tags", "related", "authors")
    }
    problems: list[Problem] = []
    indices = sorted({int(m.group(1)) for k in form if (m := _BLOCK_KEY.match(k))})
    if len(indices) > MAX_BLOCKS + 2:
        problems.append(
            Problem("body", f"has {len(indices)} blocks; at most {MAX_BLOCKS} are allowed")
        )
        indices = indices[: MAX_BLOCKS + 2]
    entries: list[tuple[float, int, dict[str, str]]] = []
    for n, i in enumerate(indices):
        b = {f: _field(form, f"block-{i}-{f}") for f in BLOCK_FIELDS}
        if _field(form, f"block-{i}-remove"):
            continue
        content = any(b[f].strip() for f in ("text", "cite", "asset", "title", "url"))
        if _field(form, f"block-{i}-new") and not content:
            continue
        pos = _position(_field(form, f"block-{i}-pos"), n + 1, f"block {n + 1} position", problems)
        entries.append((pos, n, b))
    entries.sort(key=lambda e: (e[0], e[1]))
    blocks = [b for _, _, b in entries]
    values["blocks"] = blocks
    hero = values["hero"].strip()
    data: dict[str, Any] = {
        "title": values["title"],
        "slug": values["slug"],
        "dek": values["dek"],
        "hero": hero or None,
        "tags": values["tags"].split(","),
        "related": _split_ids(values["related"]),
        "authors": _split_ids(values["authors"]),
        "body": [_block_data(b) for b in blocks],
    }
    return values, data, problems


def layout_form(data: Mapping[str, Any]) -> list[dict[str, str]]:
    rows = []
    for r in data.get("rows") or []:
        kind = str(r.get("kind") or "")
        if kind in ("stories", "titles"):
            value = ", ".join(map(str, r.get("ids") or []))
            limit = ""
        else:
            value = str(r.get(kind) or "")
            limit = str(r.get("limit") or "")
        rows.append(
            {"heading": str(r.get("heading") or ""), "kind": kind, "value": value, "limit": limit}
        )
    return rows


def parse_layout_form(
    form: FormData,
) -> tuple[list[dict[str, str]], list[dict[str, Any]], list[Problem]]:
    """The layout form's rows as (values to show again, rows for the CMS, problems)."""
    problems: list[Problem] = []
    indices = sorted({int(m.group(1)) for k in form if (m := _ROW_KEY.match(k))})[:200]
    entries: list[tuple[float, int, dict[str, str]]] = []
    for n, i in enumerate(indices):
        r = {f: _field(form, f"row-{i}-{f}") for f in ROW_FIELDS}
        if _field(form, f"row-{i}-remove"):
            continue
        if _field(form, f"row-{i}-new") and not (r["heading"].strip() or r["value"].strip()):
            continue
        pos = _position(_field(form, f"row-{i}-pos"), n + 1, f"row {n + 1} position", problems)
        entries.append((pos, n, r))
    entries.sort(key=lambda e: (e[0], e[1]))
    values = [r for _, _, r in entries]
    rows: list[dict[str, Any]] = []
    for r in values:
        row: dict[str, Any] = {"heading": r["heading"], "kind": r["kind"]}
        if r["kind"] in ("stories", "titles"):
            row["ids"] = _split_ids(r["value"])
        elif r["kind"] in ("tag", "genre"):
            row[r["kind"]] = r["value"]
            row["limit"] = r["limit"].strip() or None
        rows.append(row)
    return values, rows, problems


def _where_problems(
    problems: Iterable[Problem], prefix: str
) -> tuple[dict[int, list[Problem]], list[Problem]]:
    """Problems of numbered items (``body[3]...``) by number, and the others."""
    by: dict[int, list[Problem]] = {}
    rest: list[Problem] = []
    pat = re.compile(rf"^{re.escape(prefix)}\[(\d+)\]")
    for p in problems:
        m = pat.match(p.where)
        if m:
            by.setdefault(int(m.group(1)), []).append(p)
        else:
            rest.append(p)
    return by, rest


# -- the app's state ----------------------------------------------------------------------------


class Editor:
    """What the routes share: the config, the CMS, the templates, the preview's consumer
    and (with ``run_worker``) the ingestion worker."""

    def __init__(self, config: EditorConfig):
        self.config = config
        self.store = config.store
        self.cms = CMS(config.store)
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        env.filters["when"] = _when
        env.filters["when_exact"] = _when_exact
        env.filters["dtlocal"] = _dtlocal
        env.globals["thumb"] = self.thumb
        env.globals["card_html"] = card_html  # the preview renders the site's story
        env.globals["embed_ok"] = lambda url: isinstance(url, str) and url.startswith(EMBEDS)
        site = config.site_url or ""
        env.globals["site_url"] = site if urlsplit(site).scheme in ("http", "https") else ""
        self.templates = Jinja2Templates(env=env)
        self.consumer: Any | None = None
        self.worker: Any | None = None
        self._lock = threading.Lock()
        # events processed by the in-process worker: a preview waiting for a save wakes
        # at once instead of polling the write store
        self._ingested = threading.Condition()
        self._events = 0
        self._users = 0
        self.cookie = auth.CookieOptions(
            secure=config.https_only, max_age=int(config.session_max_age)
        )
        base = urlsplit(config.media.base_url)
        self.img_src = "'self' data:"
        if base.scheme in ("http", "https") and base.netloc:
            self.img_src += f" {base.scheme}://{base.netloc}"

    def web_session(self, request: Request) -> auth.WebSession:
        """The request's login (blocks on the write store), kept on ``request.state``."""
        web = auth.load_session(self.store, self.config.secret_key, self.cookie, request.cookies)
        request.state.web = web
        return web

    def thumb(self, asset: Mapping[str, Any], size: str = "small") -> str:
        try:
            return asset_url(self.config.media, asset, size)
        except (InputError, KeyError):
            return ""

    def start(self) -> None:
        """Start the worker and the consumer (once, however many lifespans run: a second
        test client on the same app shares them)."""
        with self._lock:
            self._users += 1
            if self._users == 1:
                self._start()

    def stop(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0:
                self._stop()

    def _start(self) -> None:
        ds = self.config.dataset
        if ds is None:
            return
        if self.config.run_worker:
            from ..content.ingest import Ingestor, IngestWorker
            from ..content.records import SCHEMA

            writer = ds.writer(schema=SCHEMA)
            ingestor = Ingestor(self.store, writer, self.config.media)
            self.worker = IngestWorker(ingestor, on_event=self._event_done).start()
        self.consumer = ds.consumer()
        self.consumer.start(wait=False)

    def _event_done(self, *_: Any) -> None:
        with self._ingested:
            self._events += 1
            self._ingested.notify_all()

    def wait_ingested(self, seen: int, timeout: float) -> int:
        """Block until the in-process worker has processed an event since ``seen`` (a
        value this returned before, or 0) or ``timeout`` passes; returns the new count.
        A worker in another process is not seen: the timeout is then a poll interval."""
        with self._ingested:
            self._ingested.wait_for(lambda: self._events != seen, timeout)
            return self._events

    def _stop(self) -> None:
        if self.worker is not None:
            self.worker.stop()
            self.worker = None
        if self.consumer is not None:
            self.consumer.stop()
            self.consumer = None


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
        return _clean(v) if v is not None else ""

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
        return _error_response(self.request, status, message, problems, api=self.api)


def _wants_json(request: Request) -> bool:
    path = request.url.path
    return path.startswith("/api/") or path == "/api" or path.endswith(".json")


def _error_response(
    request: Request, status: int, message: str, problems: Iterable[Any] = (), *, api: bool
) -> Response:
    plist = _problem_dicts(problems)
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
                return _error_response(
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
                        return _error_response(
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
                    return _error_response(request, 403, "This page is for admins only.", api=api)
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
                        sent = _field(ctx.form, auth.CSRF_FIELD)
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
        data = json.loads(raw, parse_float=_finite, parse_constant=_reject_constant)
        return _clean_json(data)
    except RecursionError:
        raise BadRequest("The request body's JSON is nested too deeply.") from None
    except ValueError as e:
        raise BadRequest(f"The request body is not valid JSON: {_cut(str(e))}") from None


def _cut(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- login ------------------------------------------------------------------------------------

LOGIN_FAILED = "Wrong username or password."


def _too_many(seconds: int) -> str:
    minutes = max(1, math.ceil(seconds / 60))
    return (
        "Too many failed logins for this account or from your network. For safety, logging"
        f" in is paused: try again in {minutes} minute{'s' if minutes != 1 else ''}."
    )


def _authenticate(ctx: Ctx, username: str, password: str) -> dict[str, Any] | int | None:
    """The user if the password is right, None if not, or the seconds to wait when the
    account or the client's address has too many recent failures (no password is checked
    then). Every outcome is in the audit log but the refusals (their failures are)."""
    attempt = throttle.begin(ctx.ed.store, username, ctx.address, limits=ctx.ed.config.login_limits)
    if attempt.refused:
        assert attempt.retry_after is not None
        log.warning(
            "editor: login of %r from %s refused for %d s (too many failures)",
            attempt.username,
            attempt.address,
            attempt.retry_after,
        )
        return attempt.retry_after
    user = accounts.authenticate(ctx.ed.store, username, password)
    if user is None:
        audit.record(
            ctx.ed.store,
            audit.Actor(attempt.username, None, ctx.address),
            "login.failed",
            f"user {attempt.username}",
        )
        return None
    throttle.succeeded(ctx.ed.store, attempt)
    ctx.web.log_in(
        int(user["id"]),
        address=ctx.address,
        user_agent=ctx.request.headers.get("user-agent", ""),
    )
    ctx.audit("login", f"user {user['username']}")
    return user


@endpoint(public=True)
def login_page(ctx: Ctx) -> Response:
    nxt = auth.safe_next(ctx.query("next"))
    if ctx.user is not None:
        return ctx.redirect(nxt)
    return ctx.render("login.html", next=nxt, username="", error=None)


@endpoint(public=True)
def login_post(ctx: Ctx) -> Response:
    username = _field(ctx.form, "username").strip()[:100]
    password = _field(ctx.form, "password")[:1000]
    nxt = auth.safe_next(_field(ctx.form, "next"))
    if not username or not password:
        return ctx.render("login.html", 401, next=nxt, username=username, error=LOGIN_FAILED)
    got = _authenticate(ctx, username, password)
    if isinstance(got, int):
        resp = ctx.render("login.html", 429, next=nxt, username=username, error=_too_many(got))
        resp.headers["Retry-After"] = str(got)
        return resp
    if got is None:
        return ctx.render("login.html", 401, next=nxt, username=username, error=LOGIN_FAILED)
    return ctx.redirect(nxt)


@endpoint()
def logout_post(ctx: Ctx) -> Response:
    ctx.audit("logout", f"user {ctx.username}")
    ctx.web.log_out()
    return ctx.redirect("/login")


# -- stories ----------------------------------------------------------------------------------


@endpoint()
def story_list(ctx: Ctx) -> Response:
    q = ctx.query("q")[:200]
    status = ctx.query("status")
    if status and status not in STATUSES:
        raise BadRequest(f"Unknown status {_show(status)}: use one of {', '.join(STATUSES)}.")
    page = _int(ctx.query("page"), "page", lo=1, hi=100_000, default=1)
    rows = ctx.cms.list_stories(q, status=status or None, limit=PAGE + 1, offset=(page - 1) * PAGE)
    more = len(rows) > PAGE
    _mark_failed(ctx.ed, rows)

    def link(p: int) -> str:
        args = {k: v for k, v in (("q", q), ("status", status), ("page", str(p))) if v}
        return "/?" + urlencode(args)

    return ctx.render(
        "stories.html",
        stories=rows[:PAGE],
        q=q,
        status=status,
        statuses=STATUSES,
        page=page,
        prev_link=link(page - 1) if page > 1 else None,
        next_link=link(page + 1) if more else None,
    )


def _render_story(
    ctx: Ctx,
    status: int,
    *,
    sid: int | None,
    values: Mapping[str, Any],
    base: int | None,
    problems: Iterable[Problem] = (),
    conflict: EditConflict | None = None,
    message: str | None = None,
    saved: int | None = None,
    sched: Mapping[str, str] | None = None,
) -> Response:
    row = ctx.cms.story(sid) if sid is not None else None
    problems = list(problems)
    block_problems, other = _where_problems(problems, "body")
    rev_status = None
    if row is not None:
        want = saved or row["revision"]
        try:
            rev_status = ingest_status(ctx.ed, row["id"], want)
        except NotFound:
            rev_status = ingest_status(ctx.ed, row["id"])
    if sched is None:
        sched = {
            "publish_at": _dtlocal(row["publish_at"]) if row else "",
            "unpublish_at": _dtlocal(row["unpublish_at"]) if row else "",
        }
    return ctx.render(
        "story_edit.html",
        status,
        sid=sid,
        row=row,
        form=values,
        base=base,
        problems=problems,
        other_problems=other,
        block_problems=block_problems,
        conflict=conflict,
        message=message,
        saved=saved,
        rev_status=rev_status,
        sched=sched,
        block_kinds=BLOCK_KINDS,
        poll=status == 200,
    )


@endpoint()
def story_new(ctx: Ctx) -> Response:
    return _render_story(ctx, 200, sid=None, values=story_form({}), base=None)


@endpoint()
def story_page(ctx: Ctx, story_id: str) -> Response:
    sid = _path_id(story_id, "story")
    row = ctx.cms.story(sid)
    saved = None
    if ctx.query("saved"):
        saved = _int(ctx.query("saved"), "saved", lo=1, hi=MAX_REVISION)
        ctx.cms.ingest_status(sid, saved)  # NotFound for a revision it does not have
    return _render_story(
        ctx, 200, sid=sid, values=story_form(row["data"]), base=row["revision"], saved=saved
    )


@endpoint()
def story_create(ctx: Ctx) -> Response:
    return _story_post(ctx, None)


@endpoint()
def story_save(ctx: Ctx, story_id: str) -> Response:
    return _story_post(ctx, _path_id(story_id, "story"))


def _story_post(ctx: Ctx, sid: int | None) -> Response:
    form = ctx.form
    assert form is not None
    action = _field(form, "action") or "save"
    if action not in ACTIONS:
        raise BadRequest(f"Unknown action {_show(action)}: use one of {', '.join(ACTIONS)}.")
    values, data, problems = parse_story_form(form)
    row = None
    base = None
    if sid is not None:
        row = ctx.cms.story(sid)
        base = _int(
            _field(form, "base_revision"), "the form's base revision", lo=1, hi=MAX_REVISION
        )
    sched = {"publish_at": _field(form, "publish_at"), "unpublish_at": _field(form, "unpublish_at")}
    publish_at = unpublish_at = None
    if action == "schedule":
        publish_at, p1 = _utc(sched["publish_at"], "publish_at")
        unpublish_at, p2 = _utc(sched["unpublish_at"], "unpublish_at")
        problems += p1 + p2
    again = functools.partial(_render_story, ctx, sid=sid, values=values, sched=sched)
    if problems:
        return again(422, base=base, problems=problems, message="Not saved: fix these first.")
    user = ctx.username
    saved_rev: int | None = None
    try:
        if sid is None:
            s = ctx.cms.create_story(data, user=user)
            sid, rev = int(s.id), s.revision
            saved_rev = rev
            ctx.audit("story.create", f"story {sid}", f"revision {rev}")
            again = functools.partial(_render_story, ctx, sid=sid, values=values, sched=sched)
        else:
            assert row is not None and base is not None
            unchanged = check_story(data)[0] == row["data"] and base == row["revision"]
            if action != "save" and unchanged:
                rev = base
            else:
                s = ctx.cms.save_story(sid, data, base_revision=base, user=user)
                rev = saved_rev = s.revision
                ctx.audit("story.save", f"story {sid}", f"revision {rev}")
    except InvalidContent as e:
        return again(422, base=base, problems=e.problems, message="Not saved: fix these first.")
    except EditConflict as e:
        return again(409, base=base, conflict=e)
    done = ""
    try:
        if action == "publish":
            ctx.cms.publish(sid, user=user, base_revision=rev)
            done = f"Published revision {rev}."
            ctx.audit("story.publish", f"story {sid}", f"revision {rev}")
        elif action == "schedule":
            ctx.cms.schedule(
                sid,
                user=user,
                publish_at=publish_at,
                unpublish_at=unpublish_at,
                base_revision=rev,
            )
            parts = []
            if publish_at is not None:
                parts.append(f"to be published at {_when(publish_at)}")
            if unpublish_at is not None:
                parts.append(f"to be unpublished at {_when(unpublish_at)}")
            done = "Scheduled " + " and ".join(parts) + "."
            ctx.audit("story.schedule", f"story {sid}", f"revision {rev}, " + ", ".join(parts))
        elif action == "unpublish":
            ctx.cms.unpublish(sid, user=user)
            done = "Unpublished: it is off the live site."
            ctx.audit("story.unpublish", f"story {sid}")
    except InvalidContent as e:
        what = {"publish": "published", "schedule": "scheduled"}.get(action, "changed")
        msg = f"Not {what}: fix these first."
        if saved_rev:
            msg = f"Saved as revision {saved_rev}, but not {what}: fix these first."
        return again(422, base=rev, problems=e.problems, message=msg, saved=saved_rev)
    except EditConflict as e:
        return again(409, base=rev, conflict=e, saved=saved_rev)
    if action == "preview":
        return ctx.redirect(f"/stories/{sid}/preview?revision={rev}")
    if done:
        ctx.flash(done)
    return ctx.redirect(f"/stories/{sid}" + (f"?saved={saved_rev}" if saved_rev else ""))


def ingest_status(ed: Editor, sid: int, rev: int | None = None) -> dict[str, Any]:
    """``cms.ingest_status``, except that a revision whose event went to the dead-letter
    list (so it would stay "pending" for ever) is ``failed``, with the event's error."""
    st = ed.cms.ingest_status(sid, rev)
    if st["status"] == "pending":
        dead = ed.store.read_one(
            "SELECT id, last_error FROM outbox WHERE kind = 'story' AND subject = ?"
            " AND revision = ? AND status = 'dead' ORDER BY id DESC LIMIT 1",
            (str(sid), st["revision"]),
        )
        if dead is not None:
            error = dead["last_error"] or "the ingestion pipeline gave up"
            st = {
                **st,
                "status": "failed",
                "errors": [{"where": f"event {dead['id']}", "message": error}],
            }
    return st


def _dead_revisions(ed: Editor, story_ids: Iterable[int]) -> set[tuple[int, int]]:
    """``(story, revision)`` pairs whose ingestion event is in the dead-letter list."""
    ids = sorted({str(i) for i in story_ids})
    if not ids:
        return set()
    rows = ed.store.read(
        "SELECT subject, revision FROM outbox WHERE kind = 'story' AND status = 'dead'"
        f" AND revision IS NOT NULL AND subject IN ({', '.join('?' * len(ids))})",
        ids,
    )
    return {(int(r["subject"]), int(r["revision"])) for r in rows}


def _mark_failed(ed: Editor, rows: list[dict[str, Any]], sid: int | None = None) -> None:
    """Show rows still "pending" whose event is dead as "failed" (rows of stories, or the
    revisions of story ``sid``)."""
    pending = [r for r in rows if r.get("ingest_status") == "pending"]
    if not pending:
        return
    dead = _dead_revisions(ed, [sid] if sid is not None else [r["id"] for r in pending])
    for r in pending:
        if (sid if sid is not None else r["id"], r["revision"]) in dead:
            r["ingest_status"] = "failed"


def _status(ctx: Ctx, story_id: str) -> Response:
    sid = _path_id(story_id, "story")
    rev = None
    if ctx.query("revision"):
        rev = _int(ctx.query("revision"), "revision", lo=1, hi=MAX_REVISION)
    return ctx.json(ingest_status(ctx.ed, sid, rev))


story_status_json = endpoint(api=True)(_status)


@endpoint()
def story_revisions(ctx: Ctx, story_id: str) -> Response:
    sid = _path_id(story_id, "story")
    row = ctx.cms.story(sid)
    revisions = ctx.cms.revisions(sid)
    _mark_failed(ctx.ed, revisions, sid)
    return ctx.render("revisions.html", row=row, revisions=revisions)


def _render_revision(
    ctx: Ctx, status: int, sid: int, rev: int, *, conflict: EditConflict | None = None
) -> Response:
    row = ctx.cms.story(sid)
    r = ctx.cms.revision(sid, rev)
    return ctx.render("revision.html", status, row=row, rev=r, data=r["data"], conflict=conflict)


@endpoint()
def story_revision(ctx: Ctx, story_id: str, rev: str) -> Response:
    sid = _path_id(story_id, "story")
    n = _path_id(rev, "revision")
    return _render_revision(ctx, 200, sid, n)


@endpoint()
def story_restore(ctx: Ctx, story_id: str, rev: str) -> Response:
    sid = _path_id(story_id, "story")
    n = _path_id(rev, "revision")
    base = _int(
        _field(ctx.form, "base_revision"), "the form's base revision", lo=1, hi=MAX_REVISION
    )
    ctx.cms.revision(sid, n)  # 404 before anything else
    try:
        saved = ctx.cms.restore(sid, n, base_revision=base, user=ctx.username)
    except EditConflict as e:
        return _render_revision(ctx, 409, sid, n, conflict=e)
    ctx.audit("story.restore", f"story {sid}", f"revision {n} as revision {saved.revision}")
    ctx.flash(f"Revision {n} restored as revision {saved.revision}.")
    return ctx.redirect(f"/stories/{sid}?saved={saved.revision}")


# -- preview ----------------------------------------------------------------------------------


@endpoint()
def story_preview(ctx: Ctx, story_id: str) -> Response:
    sid = _path_id(story_id, "story")
    row = ctx.cms.story(sid)
    rev = _int(ctx.query("revision"), "revision", lo=1, hi=MAX_REVISION, default=row["revision"])
    if rev > row["revision"]:
        raise NotFound(f"story {sid} has no revision {rev}")
    page = functools.partial(ctx.render, "preview.html", row=row, revision=rev)
    consumer = ctx.ed.consumer
    if consumer is None:
        return page(
            503,
            state="unavailable",
            message="Preview is not available: this editor has no dataset to read drafts from.",
        )
    timeout = max(0.1, float(ctx.ed.config.preview_timeout))
    deadline = time.monotonic() + timeout
    seen = ctx.ed.wait_ingested(-1, 0)
    st = ingest_status(ctx.ed, sid, rev)
    while st["status"] == "pending" and time.monotonic() < deadline:
        seen = ctx.ed.wait_ingested(seen, min(0.05, max(0.0, deadline - time.monotonic())))
        st = ingest_status(ctx.ed, sid, rev)
    if st["status"] == "pending":
        return page(
            503,
            state="pending",
            message=f"Revision {rev} is not ready yet: it is still being prepared. "
            "Reload this page in a moment.",
        )
    if st["status"] == "invalid":
        return page(
            200,
            state="invalid",
            problems=st["errors"],
            message=f"Revision {rev} cannot be previewed until these problems are fixed.",
        )
    if st["status"] == "superseded":
        return page(
            200,
            state="newer",
            newest=row["revision"],
            message=f"Revision {rev} was replaced by a newer revision before it was prepared, "
            "so there is no preview of it.",
        )
    if st["status"] != "ok":
        return page(
            503,
            state="failed",
            problems=st["errors"],
            message=f"Revision {rev} could not be prepared ({st['status']}).",
        )
    try:
        if st["token"] is not None:
            state = consumer.wait_for(int(st["token"]), max(0.1, deadline - time.monotonic()))
        else:
            state = consumer.sync(max(0.1, deadline - time.monotonic()))
    except (ReadTimeout, NearstateError):
        return page(
            503,
            state="pending",
            message=f"Revision {rev} is not ready yet: the preview copy has not caught up. "
            "Reload this page in a moment.",
        )
    rec = None
    with contextlib.suppress(KeyError, NearstateError):
        rec = state["DraftStory"].get(sid)
    if rec is None or int(rec.revision) < rev:
        have = "" if rec is None else f" (it holds revision {rec.revision})"
        return page(
            503,
            state="pending",
            message=f"Revision {rev} is not ready yet: the preview copy is older{have}. "
            "Reload this page in a moment.",
        )
    if int(rec.revision) > rev:
        return page(
            200,
            state="newer",
            newest=int(rec.revision),
            message=f"Revision {rev} has been replaced by revision {rec.revision}; "
            "only the newest revision can be previewed.",
        )
    return page(200, state="ok", draft=story_model(rec, kind="preview"), message=None)


# -- lookups ----------------------------------------------------------------------------------


def _lookup(ctx: Ctx, kind: str) -> Response:
    q = ctx.query("q")[:200]
    words = q.split()
    if len(words) == 1 and words[0].isdigit() and (len(words[0]) > 19 or int(words[0]) > MAX_ID):
        rows: list[dict[str, Any]] = []
    elif kind == "titles":
        rows = ctx.cms.find_titles(q)
    else:
        rows = ctx.cms.find_people(q)
    accept = ctx.request.headers.get("accept", "")
    if ctx.query("format") == "json" or (
        "application/json" in accept and "text/html" not in accept
    ):
        return ctx.json({kind: rows})
    return ctx.render("lookup.html", kind=kind, q=q, rows=rows)


@endpoint()
def lookup_titles(ctx: Ctx) -> Response:
    return _lookup(ctx, "titles")


@endpoint()
def lookup_people(ctx: Ctx) -> Response:
    return _lookup(ctx, "people")


# -- assets -----------------------------------------------------------------------------------


def _render_assets(
    ctx: Ctx,
    status: int,
    *,
    error: str | None = None,
    alt: str = "",
    fx: str = "0.5",
    fy: str = "0.5",
) -> Response:
    page = _int(ctx.query("page"), "page", lo=1, hi=100_000, default=1)
    rows = ctx.cms.assets(limit=PAGE + 1, offset=(page - 1) * PAGE)
    return ctx.render(
        "assets.html",
        status,
        assets=rows[:PAGE],
        page=page,
        prev_link=f"/assets?page={page - 1}" if page > 1 else None,
        next_link=f"/assets?page={page + 1}" if len(rows) > PAGE else None,
        error=error,
        alt=alt,
        fx=fx,
        fy=fy,
    )


@endpoint()
def assets_page(ctx: Ctx) -> Response:
    return _render_assets(ctx, 200)


@endpoint()
def asset_upload(ctx: Ctx) -> Response:
    form = ctx.form
    assert form is not None
    alt, fx, fy = _field(form, "alt"), _field(form, "focal_x"), _field(form, "focal_y")
    again = functools.partial(_render_assets, ctx, 422, alt=alt, fx=fx, fy=fy)
    upload = form.get("file")
    if not isinstance(upload, UploadFile) or not upload.filename:
        return again(error="Choose an image file to upload.")
    data = upload.file.read()
    try:
        row = store_upload(
            ctx.ed.store,
            ctx.ed.config.media,
            data,
            filename=_clean(upload.filename or ""),
            alt=alt,
            focal=(fx or "0.5", fy or "0.5"),
            user=ctx.username,
        )
    except InputError as e:
        return again(error=f"Not uploaded: {e}")
    ctx.audit("asset.upload", f"asset {row['id']}", str(row["filename"]))
    ctx.flash(f"Uploaded {row['filename']} as {row['id']}.")
    return ctx.redirect(f"/assets/{row['id']}")


def _render_asset(
    ctx: Ctx,
    status: int,
    asset_id: str,
    *,
    error: str | None = None,
    values: Mapping[str, str] | None = None,
) -> Response:
    row = get_asset(ctx.ed.store, asset_id)
    used = ctx.ed.store.read(
        "SELECT s.id, s.title FROM story_refs r JOIN stories s ON s.id = r.story_id"
        " WHERE r.kind = 'asset' AND r.ref = ? ORDER BY s.id LIMIT 100",
        (row["id"],),
    )
    if values is None:
        values = {"alt": row["alt"], "focal_x": str(row["focal_x"]), "focal_y": str(row["focal_y"])}
    return ctx.render("asset.html", status, asset=row, used=used, error=error, values=values)


@endpoint()
def asset_page(ctx: Ctx, asset_id: str) -> Response:
    return _render_asset(ctx, 200, asset_id)


@endpoint()
def asset_save(ctx: Ctx, asset_id: str) -> Response:
    values = {k: _field(ctx.form, k) for k in ("alt", "focal_x", "focal_y")}
    row = get_asset(ctx.ed.store, asset_id)  # 404 first
    fx = values["focal_x"].strip() or str(row["focal_x"])  # empty: as it was
    fy = values["focal_y"].strip() or str(row["focal_y"])
    try:
        update_asset(ctx.ed.store, asset_id, alt=values["alt"], focal=(fx, fy))
    except AssetNotFound:
        raise
    except InputError as e:
        return _render_asset(ctx, 422, asset_id, error=f"Not saved: {e}", values=values)
    ctx.audit("asset.edit", f"asset {asset_id}")
    n = ctx.cms.asset_changed(asset_id)
    ctx.flash(
        "Saved." + (f" {n} stories or titles showing this image will be updated." if n else "")
    )
    return ctx.redirect(f"/assets/{asset_id}")


# -- layouts ----------------------------------------------------------------------------------


@endpoint()
def layouts_page(ctx: Ctx) -> Response:
    return ctx.render("layouts.html", layouts=ctx.cms.layouts())


def _render_layout(
    ctx: Ctx,
    status: int,
    *,
    layout_id: str | None,
    name: str,
    rows: list[dict[str, str]],
    base: int | None,
    problems: Iterable[Problem] = (),
    conflict: EditConflict | None = None,
    new_id: str = "",
) -> Response:
    current = ctx.cms.layout(layout_id) if layout_id is not None else None
    problems = list(problems)
    row_problems, other = _where_problems(problems, "rows")
    return ctx.render(
        "layout_edit.html",
        status,
        layout_id=layout_id,
        layout=current,
        name=name,
        rows=rows,
        base=base,
        problems=problems,
        other_problems=other,
        row_problems=row_problems,
        conflict=conflict,
        new_id=new_id,
        row_kinds=ROW_KINDS,
    )


@endpoint()
def layout_new(ctx: Ctx) -> Response:
    return _render_layout(ctx, 200, layout_id=None, name="", rows=[], base=None)


@endpoint()
def layout_page(ctx: Ctx, layout_id: str) -> Response:
    lay = ctx.cms.layout(layout_id)
    return _render_layout(
        ctx,
        200,
        layout_id=lay["id"],
        name=lay["name"],
        rows=layout_form(lay["data"]),
        base=int(lay["revision"]),
    )


@endpoint()
def layout_create(ctx: Ctx) -> Response:
    return _layout_post(ctx, None)


@endpoint()
def layout_save(ctx: Ctx, layout_id: str) -> Response:
    ctx.cms.layout(layout_id)  # 404 first
    return _layout_post(ctx, layout_id)


def _layout_post(ctx: Ctx, layout_id: str | None) -> Response:
    form = ctx.form
    assert form is not None
    name = _field(form, "name")
    values, rows, problems = parse_layout_form(form)
    new_id = _field(form, "id").strip()
    base = None
    if layout_id is not None:
        base = _int(
            _field(form, "base_revision"), "the form's base revision", lo=1, hi=MAX_REVISION
        )
    elif new_id == "new":
        problems.append(Problem("id", "'new' is taken by the editor's own page; choose another"))
    again = functools.partial(
        _render_layout, ctx, layout_id=layout_id, name=name, rows=values, base=base, new_id=new_id
    )
    if problems:
        return again(422, problems=problems)
    try:
        saved = ctx.cms.save_layout(
            layout_id if layout_id is not None else new_id,
            name=name,
            rows=rows,
            user=ctx.username,
            base_revision=base,
        )
    except InvalidContent as e:
        return again(422, problems=e.problems)
    except EditConflict as e:
        return again(409, conflict=e)
    ctx.audit("layout.save", f"layout {saved.id}", f"revision {saved.revision}")
    ctx.flash(f"Layout saved as revision {saved.revision}.")
    return ctx.redirect(f"/layouts/{quote(str(saved.id))}")


# -- admin ------------------------------------------------------------------------------------


@endpoint(admin=True)
def dead_letters_page(ctx: Ctx) -> Response:
    return ctx.render(
        "dead_letters.html",
        events=outbox.dead_letters(ctx.ed.store),
        pending=outbox.pending_count(ctx.ed.store),
    )


@endpoint(admin=True)
def dead_letter_retry(ctx: Ctx, event_id: str) -> Response:
    eid = _path_id(event_id, "event")
    if outbox.retry(ctx.ed.store, eid):
        ctx.audit("event.retry", f"event {eid}")
        ctx.flash(f"Event {eid} is queued again.")
    else:
        ctx.flash(f"Event {eid} is not in the dead-letter list (already retried?).")
    return ctx.redirect("/admin/dead-letters")


# -- the JSON API -----------------------------------------------------------------------------


def _saved_json(s: Any) -> dict[str, Any]:
    return {"id": s.id, "revision": s.revision, "event": s.event}


def _story_json(row: Mapping[str, Any]) -> dict[str, Any]:
    keys = (
        "id",
        "slug",
        "title",
        "status",
        "revision",
        "published_revision",
        "publish_at",
        "unpublish_at",
        "published_at",
        "created_at",
        "updated_at",
        "updated_by",
    )
    out = {k: row.get(k) for k in keys}
    out["story"] = row["data"]
    out["ingest"] = {
        "status": row["ingest_status"],
        "errors": row["ingest_errors"],
        "token": row["token"],
    }
    return out


def _story_json_of(ed: Editor, sid: int) -> dict[str, Any]:
    out = _story_json(ed.cms.story(sid))
    if out["ingest"]["status"] == "pending":
        st = ingest_status(ed, sid, out["revision"])
        out["ingest"] = {"status": st["status"], "errors": st["errors"], "token": st["token"]}
    return out


def _object(data: Any, what: str) -> dict[str, Any]:
    if data is None:
        raise BadRequest(
            f"Send the {what} as a JSON object.",
            422,
            [Problem(what, "is required: send it as a JSON object")],
        )
    if not isinstance(data, dict):
        raise BadRequest(
            f"The {what} must be a JSON object.", 422, [Problem(what, "must be a JSON object")]
        )
    return data


def _base(data: Mapping[str, Any], *, required: bool) -> int | None:
    v = data.get("base_revision")
    if v is None and not required:
        return None
    if v is None:
        p = Problem("base_revision", "is required: the revision your change is based on")
        raise BadRequest("Say which revision your change is based on.", 422, [p])
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_REVISION:
        p = Problem("base_revision", f"{_show(v)} is not a revision number")
        raise BadRequest("The base revision is not a revision number.", 422, [p])
    return v


@endpoint(api=True, public=True, csrf=False)
def api_login(ctx: Ctx) -> Response:
    data = _object(ctx.data, "login")
    username, password = data.get("username"), data.get("password")
    problems = [
        Problem(k, "is required (text)")
        for k, v in (("username", username), ("password", password))
        if not isinstance(v, str) or not v
    ]
    if problems:
        return ctx.error(422, "Give a username and a password.", problems)
    got = _authenticate(ctx, str(username).strip()[:100], str(password)[:1000])
    if isinstance(got, int):
        resp = ctx.error(429, _too_many(got))
        resp.headers["Retry-After"] = str(got)
        return resp
    if got is None:
        return ctx.error(401, LOGIN_FAILED)
    me = ctx.user
    assert me is not None
    return ctx.json({"csrf": ctx.web.csrf(), "user": me.to_dict()})


@endpoint(api=True)
def api_logout(ctx: Ctx) -> Response:
    ctx.audit("logout", f"user {ctx.username}")
    ctx.web.log_out()
    return ctx.json({"ok": True})


@endpoint(api=True)
def api_stories(ctx: Ctx) -> Response:
    status = ctx.query("status")
    if status and status not in STATUSES:
        raise BadRequest(f"Unknown status {_show(status)}: use one of {', '.join(STATUSES)}.")
    limit = _int(ctx.query("limit"), "limit", lo=1, hi=500, default=PAGE)
    offset = _int(ctx.query("offset"), "offset", lo=0, hi=10**9, default=0)
    rows = ctx.cms.list_stories(
        ctx.query("q")[:200], status=status or None, limit=limit, offset=offset
    )
    return ctx.json({"stories": rows})


@endpoint(api=True)
def api_create(ctx: Ctx) -> Response:
    story = _object(ctx.data, "story")
    s = ctx.cms.create_story(story, user=ctx.username)
    ctx.audit("story.create", f"story {s.id}", f"revision {s.revision}")
    return ctx.json(_saved_json(s), 201)


@endpoint(api=True)
def api_story(ctx: Ctx, story_id: str) -> Response:
    return ctx.json(_story_json_of(ctx.ed, _path_id(story_id, "story")))


@endpoint(api=True)
def api_put(ctx: Ctx, story_id: str) -> Response:
    sid = _path_id(story_id, "story")
    data = _object(ctx.data, "the change")
    base = _base(data, required=True)
    assert base is not None
    story = data.get("story")
    if not isinstance(story, dict):
        p = Problem("story", "is required: the story as an object")
        raise BadRequest("Send the story as an object under 'story'.", 422, [p])
    s = ctx.cms.save_story(sid, story, base_revision=base, user=ctx.username)
    ctx.audit("story.save", f"story {sid}", f"revision {s.revision}")
    return ctx.json(_saved_json(s))


@endpoint(api=True)
def api_publish(ctx: Ctx, story_id: str) -> Response:
    sid = _path_id(story_id, "story")
    data = ctx.data if ctx.data is not None else {}
    if not isinstance(data, dict):
        raise BadRequest(
            "The request must be a JSON object.", 422, [Problem("request", "must be an object")]
        )
    s = ctx.cms.publish(sid, user=ctx.username, base_revision=_base(data, required=False))
    ctx.audit("story.publish", f"story {sid}", f"revision {s.revision}")
    return ctx.json(_saved_json(s))


api_status = endpoint(api=True)(_status)


# -- middleware -------------------------------------------------------------------------------


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
        frames = FRAME_SOURCES if path.endswith("/preview") else "'none'"
        csp = (
            f"default-src 'self'; script-src 'self' 'nonce-{nonce}'; style-src 'self'; "
            f"img-src {self.img_src}; frame-src {frames}; frame-ancestors 'none'; "
            "form-action 'self'; base-uri 'none'; object-src 'none'"
        )
        dynamic = not path.startswith(("/static/", "/media/"))

        async def send_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["X-Content-Type-Options"] = "nosniff"
                headers["Referrer-Policy"] = "same-origin"
                headers["X-Frame-Options"] = "DENY"
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


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    await _with_session(request)
    message = {
        404: f"There is no page {request.url.path}.",
        405: f"{request.method} is not allowed on {request.url.path}.",
    }.get(exc.status_code, str(exc.detail))
    return _error_response(request, exc.status_code, message, api=_wants_json(request))


async def _with_session(request: Request) -> None:
    """Read the login for an error page outside the handlers (a 404 shows the menu)."""
    ed: Editor | None = getattr(request.app.state, "editor", None)
    if ed is not None and getattr(request.state, "web", None) is None:
        with contextlib.suppress(StoreError):
            await run_in_threadpool(ed.web_session, request)


async def _too_large(request: Request, exc: Exception) -> Response:
    await _with_session(request)
    return _error_response(request, 413, str(exc), api=_wants_json(request))


# -- the app ----------------------------------------------------------------------------------


def _routes(config: EditorConfig) -> list[BaseRoute]:
    from .editor_accounts import account_routes  # it builds on this module's endpoint()

    get, post, put = ["GET"], ["POST"], ["PUT"]
    return [
        Route("/login", login_page, methods=get),
        Route("/login", login_post, methods=post),
        Route("/logout", logout_post, methods=post),
        Route("/", story_list, methods=get),
        Route("/stories/new", story_new, methods=get),
        Route("/stories/new", story_create, methods=post),
        Route("/stories/{story_id}", story_page, methods=get),
        Route("/stories/{story_id}", story_save, methods=post),
        Route("/stories/{story_id}/status.json", story_status_json, methods=get),
        Route("/stories/{story_id}/revisions", story_revisions, methods=get),
        Route("/stories/{story_id}/revisions/{rev}", story_revision, methods=get),
        Route("/stories/{story_id}/revisions/{rev}/restore", story_restore, methods=post),
        Route("/stories/{story_id}/preview", story_preview, methods=get),
        Route("/lookup/titles", lookup_titles, methods=get),
        Route("/lookup/people", lookup_people, methods=get),
        Route("/assets", assets_page, methods=get),
        Route("/assets", asset_upload, methods=post),
        Route("/assets/{asset_id}", asset_page, methods=get),
        Route("/assets/{asset_id}", asset_save, methods=post),
        Route("/layouts", layouts_page, methods=get),
        Route("/layouts/new", layout_new, methods=get),
        Route("/layouts/new", layout_create, methods=post),
        Route("/layouts/{layout_id}", layout_page, methods=get),
        Route("/layouts/{layout_id}", layout_save, methods=post),
        Route("/admin/dead-letters", dead_letters_page, methods=get),
        Route("/admin/dead-letters/{event_id}/retry", dead_letter_retry, methods=post),
        *account_routes(),
        Route("/api/login", api_login, methods=post),
        Route("/api/logout", api_logout, methods=post),
        Route("/api/stories", api_stories, methods=get),
        Route("/api/stories", api_create, methods=post),
        Route("/api/stories/{story_id}", api_story, methods=get),
        Route("/api/stories/{story_id}", api_put, methods=put),
        Route("/api/stories/{story_id}/publish", api_publish, methods=post),
        Route("/api/stories/{story_id}/status", api_status, methods=get),
        *media_routes(config.store, config.media),
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
    ]


def create_editor_app(config: EditorConfig) -> Starlette:
    """The editor app over ``config.store`` (see the module's contracts)."""
    if not isinstance(config.secret_key, str) or len(config.secret_key) < 8:
        raise InputError("the editor's secret_key must have at least 8 characters")
    editor = Editor(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        await run_in_threadpool(editor.start)
        try:
            yield
        finally:
            await run_in_threadpool(editor.stop)

    middleware = [
        Middleware(SecurityHeaders, img_src=editor.img_src),
        Middleware(LimitBody, limit=config.max_body_bytes, upload_limit=config.max_upload_bytes),
    ]
    app = Starlette(
        routes=_routes(config),
        middleware=middleware,
        exception_handlers={HTTPException: _http_error, BodyTooLarge: _too_large},
        lifespan=lifespan,
    )
    app.state.editor = editor
    return app


__all__ = ["EditorConfig", "create_editor_app"]
