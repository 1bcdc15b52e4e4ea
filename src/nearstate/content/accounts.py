"""Editor accounts: usernames, scrypt-hashed passwords, roles ``editor`` and ``admin``.

Contracts:

- A changed password, whether set by the user (:func:`change_password`), reset by an
  admin (:func:`reset_password`) or from the command line (:func:`set_password`), ends the
  user's sessions in the same transaction (the user's own current session may be kept).
  A removed user's sessions go with the row; a new role holds on the next request, since
  sessions read the role from the users table every time (see ``sessions``).
- There is always an admin left: demoting or removing the last one is refused.
- :func:`authenticate` does the same scrypt work whether the username exists or not.
- Given an ``actor``, a change writes its audit entry in the same transaction.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import time
from typing import Any

from ..errors import InputError
from . import audit, sessions
from .db import IntegrityError, Tx, WriteStore

ROLES = ("editor", "admin")
_N, _R, _P = 2**14, 8, 1  # scrypt cost: about 50 ms per check on a laptop core
_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,39}$")
MIN_PASSWORD = 10
MAX_PASSWORD = 1000


# a stored hash of nobody's password with the same cost as real ones: an unknown username
# is checked against it, so it takes the scrypt work a known one takes
_DUMMY = f"scrypt${_N}${_R}${_P}${base64.b64encode(b'nearstate-dummy!').decode()}$" + (
    base64.b64encode(bytes(32)).decode()
)


def hash_password(password: str) -> str:
    """``scrypt$N$r$p$salt$hash`` (base64), for :func:`verify_password`."""
    salt = os.urandom(16)
    h = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${_N}${_R}${_P}${b64(salt).decode()}${b64(h).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches a :func:`hash_password` string (constant time)."""
    try:
        algo, n, r, p, salt, want = stored.split("$")
        if algo != "scrypt":
            return False
        got = hashlib.scrypt(
            password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=32
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, base64.b64decode(want))


def create_user(
    store: WriteStore,
    username: str,
    password: str,
    *,
    role: str = "editor",
    display_name: str | None = None,
    actor: audit.Actor | None = None,
) -> int:
    """A new account; InputError naming the problem (a taken or malformed username, a short
    password, an unknown role)."""
    username = username.strip().lower()
    if not _USERNAME.match(username):
        raise InputError(
            f"username {username!r}: use 2 to 40 lower-case letters, digits, '.', '_' or '-'"
        )
    check_password(password)
    if role not in ROLES:
        raise InputError(f"role {role!r} is not one of {', '.join(ROLES)}")
    name = (display_name or username).strip()[:80] or username
    try:
        with store.transaction() as tx:
            row = tx.one(
                "INSERT INTO users (username, display_name, password_hash, role, created_at)"
                " VALUES (?, ?, ?, ?, ?) RETURNING id",
                (username, name, hash_password(password), role, time.time()),
            )
            if actor is not None:
                audit.record(tx, actor, "user.create", f"user {username}", f"role {role}")
    except IntegrityError:
        raise InputError(f"username {username!r} is already taken") from None
    assert row is not None
    return int(row["id"])


def check_password(password: str) -> None:
    """InputError when ``password`` is too short or too long to be set."""
    if len(password) < MIN_PASSWORD:
        raise InputError(f"the password must have at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise InputError(f"the password must have at most {MAX_PASSWORD} characters")


def set_password(store: WriteStore, username: str, password: str) -> None:
    """Set ``username``'s password (the command line, the demo) and end their sessions."""
    check_password(password)
    with store.transaction() as tx:
        row = tx.one(
            "UPDATE users SET password_hash = ? WHERE username = ? RETURNING id",
            (hash_password(password), username),
        )
        if row is not None:
            sessions.end_all(tx, int(row["id"]))
    if row is None:
        raise InputError(f"there is no user {username!r}")


def change_password(
    store: WriteStore,
    user_id: int,
    current: str,
    new: str,
    *,
    keep_session: int | None = None,
    actor: audit.Actor | None = None,
) -> bool:
    """The user's own change: False (nothing changed) when ``current`` is not their
    password; else the new one is set and their sessions other than ``keep_session`` end.
    InputError for a new password too short or too long."""
    check_password(new)
    row = store.read_one("SELECT password_hash FROM users WHERE id = ?", (user_id,))
    if row is None:
        raise InputError(f"there is no user {user_id}")
    if not verify_password(current, row["password_hash"]):
        return False
    new_hash = hash_password(new)
    with store.transaction() as tx:
        # compare-and-set: a reset by an admin meanwhile is not overwritten
        done = tx.one(
            "UPDATE users SET password_hash = ? WHERE id = ? AND password_hash = ? RETURNING id",
            (new_hash, user_id, row["password_hash"]),
        )
        if done is None:
            return False
        ended = sessions.end_all(tx, user_id, keep=keep_session)
        if actor is not None:
            audit.record(
                tx,
                actor,
                "password.change",
                f"user {actor.name}",
                f"{ended} other session(s) ended",
            )
    return True


def reset_password(
    store: WriteStore, user_id: int, new: str, *, actor: audit.Actor | None = None
) -> int:
    """An admin sets ``user_id``'s password; all their sessions end. Returns how many."""
    check_password(new)
    with store.transaction() as tx:
        row = tx.one(
            "UPDATE users SET password_hash = ? WHERE id = ? RETURNING username",
            (hash_password(new), user_id),
        )
        if row is None:
            raise InputError(f"there is no user {user_id}")
        ended = sessions.end_all(tx, user_id)
        if actor is not None:
            audit.record(
                tx, actor, "user.password", f"user {row['username']}", f"{ended} session(s) ended"
            )
    return ended


def _lock_admins(tx: Tx) -> int:
    """How many admins there are, their rows locked until the transaction ends (so two
    admins demoting each other at once cannot leave none)."""
    return len(tx.all("SELECT id FROM users WHERE role = 'admin' {for_update}"))


def set_role(
    store: WriteStore, user_id: int, role: str, *, actor: audit.Actor | None = None
) -> bool:
    """Give ``user_id`` the role ``role``; whether it changed. InputError for an unknown
    role or user, or when it would leave no admin."""
    if role not in ROLES:
        raise InputError(f"role {role!r} is not one of {', '.join(ROLES)}")
    with store.transaction() as tx:
        admins = _lock_admins(tx)
        row = tx.one("SELECT username, role FROM users WHERE id = ?", (user_id,))
        if row is None:
            raise InputError(f"there is no user {user_id}")
        if row["role"] == role:
            return False
        if row["role"] == "admin" and admins <= 1:
            raise InputError(f"{row['username']} is the only admin: make another admin first")
        tx.execute("UPDATE users SET role = ? WHERE id = ?", (role, user_id))
        if actor is not None:
            audit.record(
                tx, actor, "user.role", f"user {row['username']}", f"{row['role']} -> {role}"
            )
    return True


def remove_user(store: WriteStore, user_id: int, *, actor: audit.Actor | None = None) -> str:
    """Remove the account and end its sessions; returns the username. InputError for an
    unknown user or the last admin. What they wrote stays, under their name."""
    with store.transaction() as tx:
        admins = _lock_admins(tx)
        row = tx.one("SELECT username, role FROM users WHERE id = ?", (user_id,))
        if row is None:
            raise InputError(f"there is no user {user_id}")
        if row["role"] == "admin" and admins <= 1:
            raise InputError(f"{row['username']} is the only admin: make another admin first")
        ended = sessions.end_all(tx, user_id)
        tx.execute("DELETE FROM users WHERE id = ?", (user_id,))
        if actor is not None:
            audit.record(
                tx, actor, "user.remove", f"user {row['username']}", f"{ended} session(s) ended"
            )
    return str(row["username"])


def get_user(store: WriteStore, user_id: int) -> dict[str, Any] | None:
    """``id, username, display_name, role, created_at`` of ``user_id``, or None."""
    return store.read_one(
        "SELECT id, username, display_name, role, created_at FROM users WHERE id = ?",
        (user_id,),
    )


def authenticate(store: WriteStore, username: str, password: str) -> dict[str, Any] | None:
    """The user (id, username, display_name, role) if the password is right, else None.
    Takes about as long for an unknown username as for a wrong password."""
    row = store.read_one(
        "SELECT id, username, display_name, role, password_hash FROM users WHERE username = ?",
        (username.strip().lower(),),
    )
    if row is None:
        verify_password(password, _DUMMY)
        return None
    if not verify_password(password, row.pop("password_hash")):
        return None
    return row


def users(store: WriteStore) -> list[dict[str, Any]]:
    return store.read(
        "SELECT id, username, display_name, role, created_at FROM users ORDER BY username"
    )
