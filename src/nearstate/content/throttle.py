"""Login throttling: failed logins counted per account and per client address.

Each login attempt first counts the rows of ``login_failures`` with the name typed and with
the client address in the last :data:`WINDOW` seconds. At a limit, the attempt is refused
at once — no password is checked, so a refused attempt costs no scrypt work, and it does
not count — and the answer says when to try again. Otherwise the attempt reserves a row
(the name, the address, the time) and the password is checked: a wrong one leaves the row
as a failure, a right one deletes every row of that name (the account's counter is
cleared; failures of other names from the same address still count against the address).

Counting by the name as typed, not by user id, is what keeps the throttle from telling
known accounts from unknown ones: "nobody" is locked after five failures like "ann" is.

Contracts:

- The rows live in the write store, so every editor process shares one count.
- Counting and reserving are one transaction, one at a time (SQLite's write lock; an
  advisory lock on PostgreSQL), so the limits hold under concurrency: of many attempts
  racing on one name, exactly :data:`ACCOUNT_LIMIT` get to check a password.
- A process that dies between reserving and checking leaves a failure behind (erring on
  the side of the throttle). Rows older than the window are deleted as new ones come.
- Known trade-off: anyone may lock an account (or an address shared by many, behind one
  NAT) for up to a window by failing on purpose. The lock ends on its own; an admin can
  clear it at once with :func:`clear`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from .db import WriteStore

ACCOUNT_LIMIT = 5
"""Failed logins of one username in :data:`WINDOW` after which its logins are refused."""
ADDRESS_LIMIT = 20
"""Failed logins from one client address in :data:`WINDOW`, whatever the names tried,
after which that address's logins are refused."""
WINDOW = 15 * 60.0
"""Seconds a failed login counts for."""
_LOCK = 0x6E73746C  # the advisory lock counting holds on PostgreSQL


@dataclass(frozen=True)
class Limits:
    """The throttle's limits (defaults: the module's constants)."""

    account: int = ACCOUNT_LIMIT
    address: int = ADDRESS_LIMIT
    window: float = WINDOW


@dataclass(frozen=True)
class Attempt:
    """One login attempt: ``retry_after`` is None when it may check the password, else the
    whole seconds until a new attempt can succeed (for a ``Retry-After`` header)."""

    id: int | None
    username: str
    address: str
    retry_after: int | None = None

    @property
    def refused(self) -> bool:
        return self.retry_after is not None


def normal_name(username: str) -> str:
    """The key a username is counted under (as ``accounts`` looks it up)."""
    return username.strip().lower()[:100]


def begin(
    store: WriteStore,
    username: str,
    address: str,
    *,
    limits: Limits = Limits(),
    now: float | None = None,
) -> Attempt:
    """Reserve an attempt for ``username`` from ``address``; refused (with
    ``retry_after``, nothing reserved) when either already has its limit of failures in
    the window."""
    now = time.time() if now is None else now
    name, address = normal_name(username), address[:100]
    since = now - limits.window
    with store.transaction() as tx:
        if store.dialect == "postgres":  # one count at a time, as SQLite's write lock does
            tx.execute("SELECT pg_advisory_xact_lock(?)", (_LOCK,))
        tx.execute("DELETE FROM login_failures WHERE at <= ?", (since,))
        waits = []
        for column, value, limit in (
            ("username", name, limits.account),
            ("address", address, limits.address),
        ):
            # the limit-th newest failure: while there is one, the key is locked, until it
            # leaves the window
            at = tx.value(
                f"SELECT at FROM login_failures WHERE {column} = ? AND at > ?"
                " ORDER BY at DESC LIMIT 1 OFFSET ?",
                (value, since, limit - 1),
            )
            if at is not None:
                waits.append(float(at) + limits.window - now)
        if waits:
            return Attempt(None, name, address, retry_after=max(1, math.ceil(max(waits))))
        row = tx.one(
            "INSERT INTO login_failures (username, address, at) VALUES (?, ?, ?) RETURNING id",
            (name, address, now),
        )
    assert row is not None
    return Attempt(int(row["id"]), name, address)


def succeeded(store: WriteStore, attempt: Attempt) -> None:
    """The password was right: clear the account's failures (its reservation included)."""
    with store.transaction() as tx:
        tx.execute("DELETE FROM login_failures WHERE username = ?", (attempt.username,))


def cancel(store: WriteStore, attempt: Attempt) -> None:
    """No password was checked after all: take the attempt's reservation back."""
    if attempt.id is not None:
        with store.transaction() as tx:
            tx.execute("DELETE FROM login_failures WHERE id = ?", (attempt.id,))


def clear(store: WriteStore, username: str) -> int:
    """Forget the failures of ``username`` (an admin lifting a lock); how many there were."""
    with store.transaction() as tx:
        rows = tx.all(
            "DELETE FROM login_failures WHERE username = ? RETURNING id", (normal_name(username),)
        )
    return len(rows)


def failures(
    store: WriteStore, username: str, *, limits: Limits = Limits(), now: float | None = None
) -> int:
    """How many failed logins of ``username`` count now."""
    now = time.time() if now is None else now
    return int(
        store.read_one(
            "SELECT COUNT(*) AS n FROM login_failures WHERE username = ? AND at > ?",
            (normal_name(username), now - limits.window),
        )["n"]  # type: ignore[index]
    )
