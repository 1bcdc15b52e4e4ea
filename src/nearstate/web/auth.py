"""Sessions, CSRF tokens and roles for the editor app.

The browser's cookie (:data:`SESSION_COOKIE`) holds one opaque random token and nothing
else. A logged-in token names a row of the write store's ``sessions`` table (see
``content.sessions``: only its hash is stored), read with its user on every request, so a
removed user, a new role or a changed password holds on the next request. A visitor not
logged in gets a token too, which names no row: it is what the login form's CSRF token is
bound to, and logging in replaces it with a new one (a token planted in the browser before
the login is worth nothing after it).

The CSRF token every POST form (hidden field ``csrf``) and every JSON API change (header
``X-CSRF-Token``) must carry is derived from the cookie's token and the app's secret key
(HMAC-SHA256), so it is stored nowhere and changes with every login. Messages for the next
page ("Saved.") are kept on the session's row; the one a visitor not logged in can be
shown ("You are logged out.") is a fixed notice named by a second, short-lived cookie.

There is no signed-cookie middleware any more: nothing the server must trust is in a
cookie but the token, which is trusted only as far as the store knows it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..content import sessions
from ..content.db import WriteStore

ROLES = ("editor", "admin")
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
SESSION_COOKIE = "nearstate_editor"
NOTICE_COOKIE = "nearstate_editor_notice"
NOTICES = {
    "out": "You are logged out.",
    "everywhere": "You are logged out everywhere.",
    "idle": "You were logged out because you had been inactive for too long. Log in again"
    " to go on.",
}
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{32,100}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\\]")


@dataclass(frozen=True)
class User:
    """The logged-in editor, as the users table has them on this request."""

    id: int
    username: str
    display_name: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "username": self.username,
            "display_name": self.display_name,
            "role": self.role,
        }


def csrf_for(secret: str, token: str) -> str:
    """The CSRF token of a browser whose cookie holds ``token``."""
    mac = hmac.new(secret.encode(), b"nearstate-csrf\x00" + token.encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).decode().rstrip("=")


def csrf_matches(secret: str, token: str | None, sent: Any) -> bool:
    """Whether ``sent`` is the CSRF token of ``token`` (compared in constant time)."""
    if not token or not isinstance(sent, str) or not sent:
        return False
    return hmac.compare_digest(csrf_for(secret, token).encode(), sent.encode())


@dataclass(frozen=True)
class CookieOptions:
    """``max_age``: how long a login lasts, however active; ``idle``: how long it lasts
    without a request (0: no idle timeout)."""

    secure: bool = False
    max_age: int = 12 * 3600
    idle: int = 0


@dataclass
class WebSession:
    """One request's login, read from the cookies when the request starts
    (:func:`load_session`) and written back to its response (:meth:`apply`).

    Contracts: every method that touches the store blocks (call them off the event loop);
    :meth:`apply` only sets headers."""

    store: WriteStore
    secret: str
    cookie: CookieOptions
    token: str | None = None
    session: sessions.Session | None = None
    notice: str | None = None
    _set_token: bool = False
    _clear_notice: bool = False
    _new_notice: str | None = None
    _pending: list[str] | None = None

    @property
    def user(self) -> User | None:
        s = self.session
        if s is None or s.role not in ROLES:
            return None
        return User(s.user_id, s.username, s.display_name, s.role)

    def csrf(self) -> str:
        """This browser's CSRF token (a visitor's first page gives it its token)."""
        if self.token is None:
            self.token = sessions.new_token()
            self._set_token = True
        return csrf_for(self.secret, self.token)

    def csrf_ok(self, sent: Any) -> bool:
        return csrf_matches(self.secret, self.token, sent)

    def flash(self, message: str) -> None:
        """Show ``message`` on the next page (kept on the session's row; dropped for a
        visitor not logged in)."""
        if self.session is None:
            return
        if self._pending is None:
            self._pending = list(self.session.flash)
        self._pending.append(message)
        sessions.set_flash(self.store, self.session.id, self._pending)

    def take_flashes(self) -> list[str]:
        """The messages to show on this page, now forgotten."""
        out: list[str] = []
        if self.notice in NOTICES:
            out.append(NOTICES[self.notice])
            if self._new_notice == self.notice:
                self._new_notice = None  # shown on this very page: not again on the next
            self._clear_notice = True
            self.notice = None
        s = self.session
        if s is not None:
            msgs = s.flash if self._pending is None else self._pending
            if msgs:
                out += msgs
                s.flash, self._pending = [], None
                sessions.set_flash(self.store, s.id, [])
        return out

    def log_in(self, user_id: int, *, address: str, user_agent: str) -> str:
        """Start a session for ``user_id`` under a new token (ending the one this browser
        had); returns the new CSRF token."""
        if self.token is not None and self.session is not None:
            sessions.end(self.store, self.token)
        self.token = sessions.start(
            self.store,
            user_id,
            max_age=self.cookie.max_age,
            address=address,
            user_agent=user_agent,
        )
        self._set_token = True
        self.session = sessions.load(self.store, self.token)
        return self.csrf()

    def log_out(self, notice: str = "out") -> None:
        """End this browser's session; the next page shows ``notice`` (a key of
        :data:`NOTICES`)."""
        if self.token is not None and self.session is not None:
            sessions.end(self.store, self.token)
        self.ended(notice)

    def ended(self, notice: str = "out") -> None:
        """This browser's session has been ended (by us or with all the user's others)."""
        self.session = None
        self.token = sessions.new_token()  # a fresh visitor's token
        self._set_token = True
        self._new_notice = notice

    def apply(self, response: Any) -> None:
        """Write the cookies this request changed onto ``response``."""
        if self._set_token and self.token is not None:
            response.set_cookie(
                SESSION_COOKIE,
                self.token,
                # a login lasts as long as its row; a visitor's token, the browser's session
                max_age=self.cookie.max_age if self.session is not None else None,
                path="/",
                secure=self.cookie.secure,
                httponly=True,
                samesite="lax",
            )
        if self._new_notice is not None:
            response.set_cookie(
                NOTICE_COOKIE,
                self._new_notice,
                max_age=60,
                path="/",
                secure=self.cookie.secure,
                httponly=True,
                samesite="lax",
            )
        elif self._clear_notice:
            response.delete_cookie(
                NOTICE_COOKIE, path="/", secure=self.cookie.secure, httponly=True, samesite="lax"
            )


def load_session(
    store: WriteStore, secret: str, cookie: CookieOptions, cookies: Mapping[str, str]
) -> WebSession:
    """The login of a request with ``cookies`` (blocks: one read, and a write at most once
    a minute per session)."""
    token = cookies.get(SESSION_COOKIE)
    if token is not None and not _TOKEN.match(token):
        token = None
    session, why = sessions.lookup(store, token, idle=cookie.idle) if token else (None, "")
    notice = cookies.get(NOTICE_COOKIE)
    web = WebSession(
        store,
        secret,
        cookie,
        token=token,
        session=session,
        notice=notice if notice in NOTICES else None,
        _clear_notice=notice is not None and notice not in NOTICES,
    )
    if why == "idle":
        web.ended("idle")  # this page, if it is one, or the login page it leads to says why
        web.notice = "idle"
    return web


def client_address(scope: Mapping[str, Any]) -> str:
    """The client's address as the server saw it (behind a proxy, as uvicorn's
    ``--forwarded-allow-ips`` lets it read ``X-Forwarded-For``)."""
    client = scope.get("client")
    return str(client[0]) if client else ""


def safe_next(value: Any, default: str = "/") -> str:
    """``value`` if it is a path on this site (``/stories/3?x=1``), else ``default``: never
    another site (``//evil.example``, ``https://...``, ``/\\evil``), nor anything with
    control characters or backslashes (browsers drop tabs and newlines, and read ``\\`` as
    ``/``)."""
    if not isinstance(value, str) or not value.startswith("/") or len(value) > 2000:
        return default
    if value.startswith("//") or _CONTROL.search(value):
        return default
    try:
        parts = urlsplit(value)
    except ValueError:
        return default
    if parts.scheme or parts.netloc:
        return default
    return value
