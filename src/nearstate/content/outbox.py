"""The outbox: events written in the same transaction as the change they announce.

A save in the CMS calls :func:`enqueue` inside its own transaction, so the event exists
exactly when the change does. Ingestion workers :func:`claim` events, each under a lease
(``claimed_until``): a worker that dies mid-event leaves the lease to expire and the event
is claimed again — at least once. Processing must therefore be idempotent.

Life of an event: ``pending`` → ``done``; or, when processing fails, back to ``pending``
with a backoff (``available_at``) and ``attempts`` counted, until ``max_attempts`` is
reached: then ``dead`` (the dead-letter list), until an admin retries it.

Wake-ups: :func:`enqueue` notifies channel ``nearstate_outbox`` (PostgreSQL NOTIFY; in
process on SQLite); workers also poll, so a missed wake-up only delays an event.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .db import Tx, WriteStore

CHANNEL = "nearstate_outbox"
_CLAIM_LOCK = 0x6E6F7574  # the PostgreSQL advisory lock claims take ("nout")


@dataclass(frozen=True)
class Event:
    id: int
    kind: str
    subject: str
    revision: int | None
    payload: dict[str, Any]
    attempts: int
    created_at: float

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Event:
        return cls(
            int(row["id"]),
            row["kind"],
            row["subject"],
            None if row["revision"] is None else int(row["revision"]),
            json.loads(row["payload"] or "{}"),
            int(row["attempts"]),
            float(row["created_at"]),
        )


def enqueue(
    tx: Tx,
    kind: str,
    subject: str | int,
    *,
    revision: int | None = None,
    payload: Mapping[str, Any] | None = None,
    now: float | None = None,
) -> int:
    """Add an event inside ``tx``; it becomes visible to workers when ``tx`` commits."""
    now = time.time() if now is None else now
    row = tx.one(
        "INSERT INTO outbox (kind, subject, revision, payload, created_at, available_at)"
        " VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
        (kind, str(subject), revision, json.dumps(dict(payload or {})), now, now),
    )
    tx.notify(CHANNEL)
    assert row is not None
    return int(row["id"])


def claim(
    store: WriteStore, worker: str, *, lease: float = 30.0, now: float | None = None
) -> Event | None:
    """The oldest available event, claimed by ``worker`` for ``lease`` seconds; None when
    there is none. Events of a subject another worker holds are left alone, so one subject's
    events are processed one at a time."""
    now = time.time() if now is None else now
    with store.transaction() as tx:
        if store.dialect == "postgres":
            # one claim at a time: under READ COMMITTED a concurrent claim's uncommitted
            # hold is invisible to the NOT EXISTS below, so two workers could each take an
            # event of the same subject (SQLite's BEGIN IMMEDIATE serialises claims already)
            tx.execute("SELECT pg_advisory_xact_lock(?)", (_CLAIM_LOCK,))
        row = tx.one(
            "SELECT o.id FROM outbox o WHERE o.status = 'pending' AND o.available_at <= ?"
            " AND (o.claimed_until IS NULL OR o.claimed_until < ?)"
            " AND NOT EXISTS (SELECT 1 FROM outbox h WHERE h.kind = o.kind"
            "  AND h.subject = o.subject AND h.status = 'pending' AND h.claimed_until >= ?"
            "  AND h.id <> o.id)"
            " ORDER BY o.id LIMIT 1 {skip_locked}",
            (now, now, now),
        )
        if row is None:
            return None
        got = tx.one(
            "UPDATE outbox SET claimed_by = ?, claimed_until = ?, attempts = attempts + 1"
            " WHERE id = ? RETURNING *",
            (worker, now + lease, row["id"]),
        )
    assert got is not None
    return Event.from_row(got)


def extend(store: WriteStore, event: Event, worker: str, lease: float) -> bool:
    """Keep holding ``event`` for ``lease`` more seconds; False if it is no longer ours."""
    with store.transaction() as tx:
        row = tx.one(
            "UPDATE outbox SET claimed_until = ? WHERE id = ? AND claimed_by = ?"
            " AND status = 'pending' RETURNING id",
            (time.time() + lease, event.id, worker),
        )
    return row is not None


def complete(tx: Tx, event: Event, *, now: float | None = None) -> None:
    """Mark ``event`` done inside ``tx`` (with the rest of its effects on the write store)."""
    tx.execute(
        "UPDATE outbox SET status = 'done', done_at = ?, claimed_until = NULL, last_error = NULL"
        " WHERE id = ?",
        (time.time() if now is None else now, event.id),
    )


def complete_covered(tx: Tx, ids: list[int], by: Event, *, now: float | None = None) -> int:
    """Mark pending events ``ids`` done inside ``tx`` because processing ``by`` covered
    them (it read their changes); events another worker holds under a valid lease are
    left to it. Returns how many were marked."""
    if not ids:
        return 0
    now = time.time() if now is None else now
    n = 0
    for lo in range(0, len(ids), 500):
        chunk = ids[lo : lo + 500]
        marks = ",".join("?" * len(chunk))
        rows = tx.all(
            "UPDATE outbox SET status = 'done', done_at = ?, claimed_until = NULL,"
            f" last_error = ? WHERE id IN ({marks}) AND status = 'pending'"
            " AND (claimed_until IS NULL OR claimed_until < ?) RETURNING id",
            (now, f"covered by event {by.id}", *chunk, now),
        )
        n += len(rows)
    return n


def backoff(attempts: int, *, base: float = 0.5, cap: float = 60.0) -> float:
    """Seconds to wait before attempt ``attempts + 1``: doubling from ``base``, at most ``cap``."""
    return min(cap, base * 2 ** max(0, attempts - 1))


def fail(
    store: WriteStore,
    event: Event,
    error: str,
    *,
    max_attempts: int = 6,
    retry: bool = True,
    now: float | None = None,
) -> str:
    """Record a failed attempt: back to pending after a backoff, or ``dead`` once it has
    failed ``max_attempts`` times or cannot succeed (``retry=False``). Returns the status."""
    now = time.time() if now is None else now
    dead = not retry or event.attempts >= max_attempts
    status = "dead" if dead else "pending"
    with store.transaction() as tx:
        tx.execute(
            "UPDATE outbox SET status = ?, last_error = ?, claimed_until = NULL,"
            " available_at = ? WHERE id = ?",
            (status, error[:2000], now + (0 if dead else backoff(event.attempts)), event.id),
        )
    return status


def dead_letters(store: WriteStore, *, limit: int = 200) -> list[dict[str, Any]]:
    """Events that kept failing, newest first."""
    return store.read(
        "SELECT id, kind, subject, revision, attempts, last_error, created_at, available_at"
        " FROM outbox WHERE status = 'dead' ORDER BY id DESC LIMIT ?",
        (limit,),
    )


def retry(store: WriteStore, event_id: int) -> bool:
    """Put a dead event back in the queue with its attempts reset; False if it is not dead."""
    with store.transaction() as tx:
        row = tx.one(
            "UPDATE outbox SET status = 'pending', attempts = 0, available_at = ?,"
            " claimed_until = NULL WHERE id = ? AND status = 'dead' RETURNING id",
            (time.time(), event_id),
        )
        if row is not None:
            tx.notify(CHANNEL)
    return row is not None


def pending_count(store: WriteStore) -> int:
    row = store.read_one("SELECT COUNT(*) AS n FROM outbox WHERE status = 'pending'")
    return int(row["n"]) if row else 0


def pending_of(tx: Tx, kind: str, subject: str, *, but: int) -> list[int]:
    """Inside ``tx``: the ids of the pending events of ``kind`` about ``subject`` other than
    event ``but`` (the ones processing ``but`` can cover, see :func:`complete_covered`)."""
    rows = tx.all(
        "SELECT id FROM outbox WHERE kind = ? AND subject = ? AND status = 'pending' AND id <> ?",
        (kind, subject, but),
    )
    return [int(r["id"]) for r in rows]


def dead_event(store: WriteStore, kind: str, subject: str, revision: int) -> dict[str, Any] | None:
    """The newest dead event of ``kind`` about ``subject`` at ``revision`` (its ``id`` and
    ``last_error``), or None."""
    return store.read_one(
        "SELECT id, last_error FROM outbox WHERE kind = ? AND subject = ? AND revision = ?"
        " AND status = 'dead' ORDER BY id DESC LIMIT 1",
        (kind, subject, revision),
    )


def dead_revisions(store: WriteStore, kind: str, subjects: list[str]) -> set[tuple[str, int]]:
    """``(subject, revision)`` pairs of ``kind`` among ``subjects`` whose event is dead."""
    ids = sorted(set(subjects))
    if not ids:
        return set()
    rows = store.read(
        "SELECT subject, revision FROM outbox WHERE kind = ? AND status = 'dead'"
        f" AND revision IS NOT NULL AND subject IN ({', '.join('?' * len(ids))})",
        (kind, *ids),
    )
    return {(r["subject"], int(r["revision"])) for r in rows}


def counts(store: WriteStore) -> dict[str, int]:
    """How many events are in each status (pending, done, dead)."""
    rows = store.read("SELECT status, COUNT(*) AS n FROM outbox GROUP BY status")
    return {"pending": 0, "done": 0, "dead": 0, **{r["status"]: int(r["n"]) for r in rows}}
