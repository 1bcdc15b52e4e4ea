"""Editors' login sessions, kept in the write store.

A session is a row of ``sessions``; the browser holds only its token, an opaque random
string (:func:`start` returns it). The row keeps the SHA-256 of the token, never the token,
so a copy of the database logs nobody in. Each request reads the row joined with its user
(:func:`load`), so what an admin changes holds on the user's next request: a removed user
has no row left (``ON DELETE CASCADE``, and the join finds no user), a demoted user is read
with the new role, a changed password ends the user's other sessions (see ``accounts``).

Contracts:

- :func:`load` never writes more than once a minute per session (the "last seen" time;
  with an idle timeout shorter than ten minutes, once per tenth of it), and returns None
  for an unknown, ended, expired or idle token: the caller treats the browser as not
  logged in. :func:`lookup` says which.
- An idle timeout (``idle`` seconds without a request) ends the session on the first
  request after it, deleting its row. As "last seen" is written at those intervals, a
  session may end up to a tenth of the timeout (at most a minute) before ``idle`` seconds
  after its very last request; never after.
- Every function taking ``where`` runs in that transaction when given one (``Tx``), else in
  a transaction of its own; ending sessions is idempotent.
- Times are seconds since the epoch; ``now`` is the clock unless a test gives one.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from .db import Tx, WriteStore, within

TOKEN_BYTES = 32  # 256 random bits: guessing one is hopeless, so a plain hash is enough
TOUCH_EVERY = 60.0  # seconds between two writes of a session's "last seen" time
MAX_USER_AGENT = 300
MAX_FLASH = 5


@dataclass
class Session:
    """One logged-in browser, as read with its user on this request."""

    id: int
    token_hash: str
    user_id: int
    username: str
    display_name: str
    role: str
    created_at: float
    last_seen_at: float
    expires_at: float
    flash: list[str] = field(default_factory=list)


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> str:
    """What the store keeps of a token: its SHA-256, in hex."""
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def start(
    where: WriteStore | Tx,
    user_id: int,
    *,
    max_age: float,
    address: str = "",
    user_agent: str = "",
    now: float | None = None,
) -> str:
    """A new session for ``user_id`` lasting ``max_age`` seconds; returns its token (the
    only time it exists outside the browser). Expired sessions of anyone are dropped on
    the way."""
    now = time.time() if now is None else now
    token = new_token()
    with within(where) as tx:
        tx.execute("DELETE FROM sessions WHERE expires_at < ?", (now,))
        tx.execute(
            "INSERT INTO sessions (token_hash, user_id, created_at, last_seen_at, expires_at,"
            " address, user_agent) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                token_hash(token),
                int(user_id),
                now,
                now,
                now + max_age,
                address[:100],
                user_agent[:MAX_USER_AGENT],
            ),
        )
    return token


def load(
    store: WriteStore, token: str, *, idle: float | None = None, now: float | None = None
) -> Session | None:
    """The live session of ``token`` with its user as the users table has them now, or
    None (no such session, ended, expired, idle for ``idle`` seconds, or its user is
    gone)."""
    return lookup(store, token, idle=idle, now=now)[0]


def lookup(
    store: WriteStore, token: str, *, idle: float | None = None, now: float | None = None
) -> tuple[Session | None, str]:
    """:func:`load` and why there is no session: ``("", session)`` when there is one, else
    ``"none"`` (no such session or user), ``"expired"`` or ``"idle"`` (no request for
    ``idle`` seconds: the session is ended now)."""
    if not token or len(token) > 200:
        return None, "none"
    now = time.time() if now is None else now
    every = TOUCH_EVERY if not idle else min(TOUCH_EVERY, idle / 10)
    key = token_hash(token)
    row = store.read_one(
        "SELECT s.id, s.user_id, s.created_at, s.last_seen_at, s.expires_at, s.flash,"
        " u.username, u.display_name, u.role"
        " FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.token_hash = ?",
        (key,),
    )
    if row is None:
        return None, "none"
    if float(row["expires_at"]) <= now:
        return None, "expired"
    if idle and float(row["last_seen_at"]) + idle <= now:
        with store.transaction() as tx:
            tx.execute("DELETE FROM sessions WHERE id = ?", (row["id"],))
        return None, "idle"
    if float(row["last_seen_at"]) < now - every:
        with store.transaction() as tx:
            tx.execute(
                "UPDATE sessions SET last_seen_at = ? WHERE id = ? AND last_seen_at < ?",
                (now, row["id"], now - every),
            )
    session = Session(
        id=int(row["id"]),
        token_hash=key,
        user_id=int(row["user_id"]),
        username=str(row["username"]),
        display_name=str(row["display_name"] or row["username"]),
        role=str(row["role"]),
        created_at=float(row["created_at"]),
        last_seen_at=max(float(row["last_seen_at"]), now),
        expires_at=float(row["expires_at"]),
        flash=_flash(row["flash"]),
    )
    return session, ""


def _flash(raw: Any) -> list[str]:
    try:
        got = json.loads(raw or "[]")
    except ValueError:
        return []
    return [str(m) for m in got][-MAX_FLASH:] if isinstance(got, list) else []


def set_flash(where: WriteStore | Tx, session_id: int, messages: list[str]) -> None:
    """The messages to show on the session's next page (the newest few)."""
    with within(where) as tx:
        tx.execute(
            "UPDATE sessions SET flash = ? WHERE id = ?",
            (json.dumps([str(m) for m in messages][-MAX_FLASH:]), session_id),
        )


def end(where: WriteStore | Tx, token: str) -> bool:
    """End the session of ``token``; whether there was one."""
    with within(where) as tx:
        row = tx.one("DELETE FROM sessions WHERE token_hash = ? RETURNING id", (token_hash(token),))
    return row is not None


def end_one(where: WriteStore | Tx, user_id: int, session_id: int) -> bool:
    """End session ``session_id`` if it is one of ``user_id``'s; whether it was."""
    with within(where) as tx:
        row = tx.one(
            "DELETE FROM sessions WHERE id = ? AND user_id = ? RETURNING id",
            (session_id, user_id),
        )
    return row is not None


def end_all(where: WriteStore | Tx, user_id: int, *, keep: int | None = None) -> int:
    """End every session of ``user_id`` (but session ``keep``, when given); returns how
    many ended."""
    with within(where) as tx:
        if keep is None:
            rows = tx.all("DELETE FROM sessions WHERE user_id = ? RETURNING id", (user_id,))
        else:
            rows = tx.all(
                "DELETE FROM sessions WHERE user_id = ? AND id <> ? RETURNING id",
                (user_id, keep),
            )
    return len(rows)


def of_user(
    store: WriteStore, user_id: int, *, idle: float = 0, now: float | None = None
) -> list[dict[str, Any]]:
    """The user's live sessions, the most recently seen first (id, created_at,
    last_seen_at, expires_at, address, user_agent); with ``idle``, not those idle that
    long (they end on their next request)."""
    now = time.time() if now is None else now
    return store.read(
        "SELECT id, created_at, last_seen_at, expires_at, address, user_agent FROM sessions"
        " WHERE user_id = ? AND expires_at > ? AND last_seen_at > ?"
        " ORDER BY last_seen_at DESC, id DESC",
        (user_id, now, now - idle if idle else -1.0),
    )


def summary(
    store: WriteStore, *, idle: float = 0, now: float | None = None
) -> dict[int, dict[str, Any]]:
    """Per user id with live sessions (not idle for ``idle`` seconds, when given): how
    many (``count``) and when one was last seen (``last_seen_at``)."""
    now = time.time() if now is None else now
    rows = store.read(
        "SELECT user_id, COUNT(*) AS n, MAX(last_seen_at) AS seen FROM sessions"
        " WHERE expires_at > ? AND last_seen_at > ? GROUP BY user_id",
        (now, now - idle if idle else -1.0),
    )
    return {
        int(r["user_id"]): {"count": int(r["n"]), "last_seen_at": float(r["seen"])} for r in rows
    }
