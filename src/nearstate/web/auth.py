"""Sessions, CSRF tokens and roles for the editor app.

The session is Starlette's signed cookie (``SessionMiddleware``, itsdangerous). It holds
only who is logged in — user id, username, display name, role — when they logged in, and
the CSRF token every POST form (hidden field ``csrf``) and every JSON API change (header
``X-CSRF-Token``) must carry. Logging in clears the session and makes a new token, so a
token seen before the login is worth nothing after it.
"""

from __future__ import annotations

import hmac
import re
import secrets
import time
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

ROLES = ("editor", "admin")
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
_CONTROL = re.compile(r"[\x00-\x1f\x7f\\]")


@dataclass(frozen=True)
class User:
    """The logged-in editor, as the session remembers them."""

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


def new_token() -> str:
    return secrets.token_urlsafe(32)


def csrf_token(session: MutableMapping[str, Any]) -> str:
    """The session's CSRF token, made on first use (also for visitors not logged in, so
    the login form carries one)."""
    token = session.get("csrf")
    if not isinstance(token, str) or len(token) < 32:
        token = new_token()
        session["csrf"] = token
    return token


def csrf_ok(session: Mapping[str, Any], sent: Any) -> bool:
    """Whether ``sent`` is the session's CSRF token (compared in constant time)."""
    want = session.get("csrf")
    if not isinstance(want, str) or not want or not isinstance(sent, str) or not sent:
        return False
    return hmac.compare_digest(want.encode(), sent.encode())


def log_in(session: MutableMapping[str, Any], user: Mapping[str, Any]) -> str:
    """Remember ``user`` (a row from ``accounts.authenticate``) in a fresh session; returns
    the new CSRF token."""
    session.clear()
    session.update(
        {
            "uid": int(user["id"]),
            "username": str(user["username"]),
            "name": str(user.get("display_name") or user["username"]),
            "role": str(user["role"]),
            "at": time.time(),
        }
    )
    return csrf_token(session)


def log_out(session: MutableMapping[str, Any]) -> None:
    session.clear()


def current_user(session: MutableMapping[str, Any], max_age: float) -> User | None:
    """The logged-in user, or None (also when the login is older than ``max_age``
    seconds, whatever the cookie's own age: the login time is signed with it)."""
    uid = session.get("uid")
    if not isinstance(uid, int) or isinstance(uid, bool):
        return None
    at = session.get("at")
    if not isinstance(at, int | float) or time.time() - at > max_age or at > time.time() + 60:
        session.clear()
        return None
    role = session.get("role")
    if role not in ROLES:
        session.clear()
        return None
    username = str(session.get("username") or "")
    return User(uid, username, str(session.get("name") or username), str(role))


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
