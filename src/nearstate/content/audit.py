"""The audit log: who did what in the editor, and when, newest first for admins.

One row of ``audit_log`` per action: the time, the actor (username and id as they were;
the row stays when the user is removed), the action (one of :data:`ACTIONS`), its subject
(``story 12``, ``user ann``, an asset id...), a detail in plain words and the client
address.

Contracts:

- Changes to users and sessions write their entry in the same transaction as the change
  (pass the ``Tx``). Content actions (save, publish, upload...) write theirs right after
  the CMS has committed: a process dying in between can lose an entry, but there is never
  an entry for something that did not happen.
- Entries are only ever added; nothing here updates or deletes them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from .db import Tx, WriteStore, within

ACTIONS: dict[str, str] = {
    "login": "logged in",
    "login.failed": "failed to log in",
    "logout": "logged out",
    "logout.everywhere": "logged out everywhere",
    "session.end": "ended a session",
    "password.change": "changed their password",
    "story.create": "created a story",
    "story.save": "saved a story",
    "story.publish": "published a story",
    "story.schedule": "scheduled a story",
    "story.unpublish": "unpublished a story",
    "story.restore": "restored a revision",
    "asset.upload": "uploaded an image",
    "asset.edit": "edited an image",
    "layout.save": "saved a layout",
    "event.retry": "retried a dead event",
    "user.create": "created a user",
    "user.role": "changed a user's role",
    "user.remove": "removed a user",
    "user.password": "reset a user's password",
    "user.sessions": "ended a user's sessions",
    "user.unlock": "lifted a user's login lock",
}
"""Every action recorded, with how the log page words it."""


@dataclass(frozen=True)
class Actor:
    """Who acts: a user (``name``, ``id``), or someone not logged in (``id`` None: the
    name they typed at the login form, or ``cli``), from ``address``."""

    name: str
    id: int | None = None
    address: str = ""


def record(
    where: WriteStore | Tx,
    actor: Actor,
    action: str,
    subject: str = "",
    detail: str = "",
    *,
    now: float | None = None,
) -> None:
    """Add an entry (in ``where``'s transaction when it is one)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    with within(where) as tx:
        tx.execute(
            "INSERT INTO audit_log (at, actor, actor_id, action, subject, detail, address)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                time.time() if now is None else now,
                actor.name[:100],
                actor.id,
                action,
                subject[:200],
                detail[:500],
                actor.address[:100],
            ),
        )


def entries(
    store: WriteStore,
    *,
    limit: int = 50,
    offset: int = 0,
    actor: str | None = None,
    action: str | None = None,
) -> list[dict[str, Any]]:
    """Entries newest first (``id, at, actor, actor_id, action, subject, detail,
    address``), optionally of one actor and/or one action."""
    where, params = [], []
    if actor:
        where.append("actor = ?")
        params.append(actor)
    if action:
        where.append("action = ?")
        params.append(action)
    sql = "SELECT id, at, actor, actor_id, action, subject, detail, address FROM audit_log"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY id DESC LIMIT ? OFFSET ?"
    return store.read(sql, (*params, int(limit), int(offset)))
