"""Editor accounts: usernames, scrypt-hashed passwords, roles ``editor`` and ``admin``."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os
import re
import time
from typing import Any

from ..errors import InputError
from .db import IntegrityError, WriteStore

ROLES = ("editor", "admin")
_N, _R, _P = 2**14, 8, 1  # scrypt cost: about 50 ms per check on a laptop core
_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,39}$")
MIN_PASSWORD = 10


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
) -> int:
    """A new account; InputError naming the problem (a taken or malformed username, a short
    password, an unknown role)."""
    username = username.strip().lower()
    if not _USERNAME.match(username):
        raise InputError(
            f"username {username!r}: use 2 to 40 lower-case letters, digits, '.', '_' or '-'"
        )
    if len(password) < MIN_PASSWORD:
        raise InputError(f"the password must have at least {MIN_PASSWORD} characters")
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
    except IntegrityError:
        raise InputError(f"username {username!r} is already taken") from None
    assert row is not None
    return int(row["id"])


def set_password(store: WriteStore, username: str, password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise InputError(f"the password must have at least {MIN_PASSWORD} characters")
    with store.transaction() as tx:
        row = tx.one(
            "UPDATE users SET password_hash = ? WHERE username = ? RETURNING id",
            (hash_password(password), username),
        )
    if row is None:
        raise InputError(f"there is no user {username!r}")


def authenticate(store: WriteStore, username: str, password: str) -> dict[str, Any] | None:
    """The user (id, username, display_name, role) if the password is right, else None.
    Takes about as long for an unknown username as for a wrong password."""
    row = store.read_one(
        "SELECT id, username, display_name, role, password_hash FROM users WHERE username = ?",
        (username.strip().lower(),),
    )
    if row is None:
        verify_password(password, _dummy())
        return None
    if not verify_password(password, row.pop("password_hash")):
        return None
    return row


def users(store: WriteStore) -> list[dict[str, Any]]:
    return store.read(
        "SELECT id, username, display_name, role, created_at FROM users ORDER BY username"
    )


@functools.cache
def _dummy() -> str:
    return hash_password("a password nobody has")
