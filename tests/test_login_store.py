"""The login's write-store half on SQLite and PostgreSQL: sessions, failed-login counts,
the audit log and account changes (``content.sessions``, ``throttle``, ``audit``,
``accounts``). The editor app's use of them is tested in test_editor_login.py."""

from __future__ import annotations

import hashlib
import threading
from typing import Any

import pytest

from nearstate.content import accounts, audit, sessions, throttle
from nearstate.content.db import WriteStore
from nearstate.errors import InputError

PASSWORD = "a long enough password"
DAY = 24 * 3600.0


@pytest.fixture
def store(write_store: WriteStore) -> WriteStore:
    accounts.create_user(write_store, "ann", PASSWORD, display_name="Ann Editor")
    accounts.create_user(write_store, "root", PASSWORD, role="admin")
    return write_store


def uid(store: WriteStore, name: str) -> int:
    row = store.read_one("SELECT id FROM users WHERE username = ?", (name,))
    assert row is not None
    return int(row["id"])


# -- sessions ---------------------------------------------------------------------------------


def test_a_session_is_a_hash_in_the_store_and_reads_its_user_live(store: WriteStore) -> None:
    ann = uid(store, "ann")
    token = sessions.start(store, ann, max_age=3600, address="10.0.0.1", user_agent="UA/1")
    rows = store.read("SELECT * FROM sessions")
    assert len(rows) == 1
    assert rows[0]["token_hash"] == hashlib.sha256(token.encode()).hexdigest()
    assert token not in str(rows)  # only the hash is kept
    assert rows[0]["address"] == "10.0.0.1" and rows[0]["user_agent"] == "UA/1"
    s = sessions.load(store, token)
    assert s is not None and (s.username, s.role, s.user_id) == ("ann", "editor", ann)
    assert sessions.load(store, token + "x") is None
    assert sessions.load(store, "") is None

    with store.transaction() as tx:  # the role is read from the user's row on every load
        tx.execute("UPDATE users SET role = 'admin' WHERE id = ?", (ann,))
    assert sessions.load(store, token).role == "admin"  # type: ignore[union-attr]

    accounts.remove_user(store, ann)
    assert sessions.load(store, token) is None
    assert store.read("SELECT * FROM sessions") == []


def test_sessions_expire_and_touch_at_most_once_a_minute(store: WriteStore) -> None:
    ann = uid(store, "ann")
    t0 = 1_000_000.0
    token = sessions.start(store, ann, max_age=3600, now=t0)
    assert sessions.load(store, token, now=t0 + 30).last_seen_at == t0 + 30  # type: ignore[union-attr]
    seen = store.read_one("SELECT last_seen_at FROM sessions")["last_seen_at"]  # type: ignore[index]
    assert seen == t0  # not written within the minute
    sessions.load(store, token, now=t0 + 120)
    seen = store.read_one("SELECT last_seen_at FROM sessions")["last_seen_at"]  # type: ignore[index]
    assert seen == t0 + 120
    assert sessions.load(store, token, now=t0 + 3600) is None  # expired
    other = sessions.start(store, ann, max_age=3600, now=t0 + 4000)  # purges the expired
    assert [r["token_hash"] for r in store.read("SELECT token_hash FROM sessions")] == [
        sessions.token_hash(other)
    ]


def test_end_one_all_and_keep(store: WriteStore) -> None:
    ann, root = uid(store, "ann"), uid(store, "root")
    a1, a2, a3 = (sessions.start(store, ann, max_age=DAY) for _ in range(3))
    r1 = sessions.start(store, root, max_age=DAY)
    keep = sessions.load(store, a1)
    assert keep is not None
    assert sessions.summary(store)[ann]["count"] == 3
    assert len(sessions.of_user(store, ann)) == 3
    assert sessions.end_all(store, ann, keep=keep.id) == 2
    assert sessions.load(store, a1) is not None
    assert sessions.load(store, a2) is None and sessions.load(store, a3) is None
    assert not sessions.end_one(store, root, keep.id)  # not root's session
    assert sessions.end_one(store, ann, keep.id)
    assert sessions.end(store, r1) and not sessions.end(store, r1)
    assert store.read("SELECT * FROM sessions") == []


def test_flash_messages_are_kept_on_the_session(store: WriteStore) -> None:
    token = sessions.start(store, uid(store, "ann"), max_age=DAY)
    s = sessions.load(store, token)
    assert s is not None and s.flash == []
    sessions.set_flash(store, s.id, [f"m{i}" for i in range(8)])
    assert sessions.load(store, token).flash == ["m3", "m4", "m5", "m6", "m7"]  # type: ignore[union-attr]


# -- accounts ---------------------------------------------------------------------------------


def test_password_changes_end_sessions(store: WriteStore) -> None:
    ann = uid(store, "ann")
    here, there = (sessions.start(store, ann, max_age=DAY) for _ in range(2))
    me = sessions.load(store, here)
    assert me is not None
    actor = audit.Actor("ann", ann, "10.0.0.1")
    assert not accounts.change_password(
        store, ann, "not my password", "a new password!", actor=actor
    )
    assert sessions.load(store, there) is not None  # nothing changed
    with pytest.raises(InputError, match="at least 10"):
        accounts.change_password(store, ann, PASSWORD, "short", actor=actor)
    assert accounts.change_password(
        store, ann, PASSWORD, "a new password!", keep_session=me.id, actor=actor
    )
    assert sessions.load(store, here) is not None and sessions.load(store, there) is None
    assert accounts.authenticate(store, "ann", PASSWORD) is None
    assert accounts.authenticate(store, "ann", "a new password!") is not None

    root = audit.Actor("root", uid(store, "root"))
    assert accounts.reset_password(store, ann, "the admin's choice", actor=root) == 1
    assert sessions.load(store, here) is None
    assert accounts.authenticate(store, "ann", "the admin's choice") is not None

    again = sessions.start(store, ann, max_age=DAY)
    accounts.set_password(store, "ann", "from the command line")
    assert sessions.load(store, again) is None
    got = [(e["action"], e["actor"], e["subject"]) for e in audit.entries(store)]
    assert got == [("user.password", "root", "user ann"), ("password.change", "ann", "user ann")]


def test_there_is_always_an_admin(store: WriteStore) -> None:
    root, ann = uid(store, "root"), uid(store, "ann")
    with pytest.raises(InputError, match="only admin"):
        accounts.set_role(store, root, "editor")
    with pytest.raises(InputError, match="only admin"):
        accounts.remove_user(store, root)
    with pytest.raises(InputError, match="not one of"):
        accounts.set_role(store, ann, "owner")
    assert accounts.set_role(store, ann, "admin")
    assert not accounts.set_role(store, ann, "admin")
    assert accounts.set_role(store, root, "editor")
    assert accounts.remove_user(store, root) == "root"
    assert [u["username"] for u in accounts.users(store)] == ["ann"]
    with pytest.raises(InputError, match="no user"):
        accounts.remove_user(store, root)


def test_two_admins_demoting_each_other_at_once_leave_one(store: WriteStore) -> None:
    accounts.create_user(store, "bea", PASSWORD, role="admin")
    ids = [uid(store, "root"), uid(store, "bea")]
    barrier = threading.Barrier(2)
    results: list[Any] = []

    def demote(user_id: int) -> None:
        barrier.wait()
        try:
            results.append(accounts.set_role(store, user_id, "editor"))
        except InputError as e:
            results.append(e)

    threads = [threading.Thread(target=demote, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(map(type, results), key=str) == sorted([bool, InputError], key=str)
    assert len(store.read("SELECT id FROM users WHERE role = 'admin'")) == 1


def test_an_unknown_account_costs_the_same_scrypt_work(
    store: WriteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[int, int, int]] = []
    real = hashlib.scrypt

    def counting(password: bytes, **kw: Any) -> bytes:
        calls.append((kw["n"], kw["r"], kw["p"]))
        return real(password, **kw)

    monkeypatch.setattr(accounts.hashlib, "scrypt", counting)
    assert accounts.authenticate(store, "nobody", PASSWORD) is None
    unknown = list(calls)
    calls.clear()
    assert accounts.authenticate(store, "ann", "wrong password") is None
    known = list(calls)
    assert unknown == known == [(2**14, 8, 1)]


# -- throttle ---------------------------------------------------------------------------------


def test_the_throttle_counts_per_account_and_clears_on_success(store: WriteStore) -> None:
    t = 1_000_000.0
    limits = throttle.Limits()
    for i in range(throttle.ACCOUNT_LIMIT):
        a = throttle.begin(store, "Ann", "10.0.0.1", now=t + i)
        assert not a.refused and a.username == "ann"
    refused = throttle.begin(store, "ann ", "10.0.0.2", now=t + 10)
    assert refused.refused and refused.id is None
    assert refused.retry_after == int(limits.window) - 10  # when the first failure expires
    assert throttle.failures(store, "ann", now=t + 10) == throttle.ACCOUNT_LIMIT  # not counted
    later = throttle.begin(store, "ann", "10.0.0.2", now=t + limits.window + 0.5)
    assert not later.refused  # the first failure left the window
    throttle.succeeded(store, later)
    assert throttle.failures(store, "ann", now=t + limits.window + 1) == 0
    # an unknown name is locked the same way as a known one
    for i in range(throttle.ACCOUNT_LIMIT):
        assert not throttle.begin(store, "nobody", f"10.1.0.{i}", now=t + i).refused
    assert throttle.begin(store, "nobody", "10.2.0.0", now=t + 9).refused


def test_the_throttle_counts_per_address(store: WriteStore) -> None:
    t = 2_000_000.0
    for i in range(throttle.ADDRESS_LIMIT):
        assert not throttle.begin(store, f"user{i}", "10.9.9.9", now=t + i).refused
    a = throttle.begin(store, "someone-new", "10.9.9.9", now=t + 30)
    assert a.refused and a.retry_after == int(throttle.WINDOW) - 30
    assert not throttle.begin(store, "someone-new", "10.9.9.10", now=t + 30).refused
    assert throttle.clear(store, "user0") == 1


def test_racing_attempts_check_at_most_the_limit(store: WriteStore) -> None:
    n = 12
    barrier = threading.Barrier(n)
    allowed: list[bool] = []

    def attempt(i: int) -> None:
        barrier.wait()
        allowed.append(not throttle.begin(store, "ann", f"10.3.0.{i}").refused)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(allowed) == n and sum(allowed) == throttle.ACCOUNT_LIMIT  # no more, no fewer


# -- audit ------------------------------------------------------------------------------------


def test_audit_entries_newest_first_and_filtered(store: WriteStore) -> None:
    ann = audit.Actor("ann", uid(store, "ann"), "10.0.0.1")
    for i in range(5):
        audit.record(store, ann, "story.save", f"story {i}", f"revision {i + 1}", now=float(i))
    audit.record(store, audit.Actor("nobody"), "login.failed", "nobody", now=9.0)
    got = audit.entries(store, limit=3)
    assert [e["subject"] for e in got] == ["nobody", "story 4", "story 3"]
    assert [e["subject"] for e in audit.entries(store, limit=3, offset=3)] == [
        "story 2",
        "story 1",
        "story 0",
    ]
    assert len(audit.entries(store, actor="ann")) == 5
    assert [e["actor"] for e in audit.entries(store, action="login.failed")] == ["nobody"]
    assert got[1]["address"] == "10.0.0.1" and got[1]["actor_id"] == ann.id
    with pytest.raises(ValueError, match="unknown audit action"):
        audit.record(store, ann, "story.delete")


# -- the command line -------------------------------------------------------------------------


def test_cli_set_password_logs_out_lifts_the_lock_and_is_audited(tmp_path: Any) -> None:
    from click.testing import CliRunner

    from nearstate.cli import main
    from nearstate.content.db import open_store

    data = str(tmp_path / "data")

    def run(*args: str) -> Any:
        return CliRunner().invoke(main, ["cms", *args, "--data", data], catch_exceptions=False)

    assert run("add-user", "ada", "--role", "admin", "--password", PASSWORD).exit_code == 0
    store = open_store(f"sqlite:///{tmp_path / 'data' / 'cms.db'}")
    token = sessions.start(store, uid(store, "ada"), max_age=DAY)
    for i in range(throttle.ACCOUNT_LIMIT):
        throttle.begin(store, "ada", f"10.0.0.{i}")
    assert throttle.begin(store, "ada", "10.0.1.1").refused
    res = run("set-password", "ada", "--password", "a fresh password")
    assert res.exit_code == 0 and "1 session(s) logged out" in res.output
    assert sessions.load(store, token) is None
    assert not throttle.begin(store, "ada", "10.0.1.1").refused
    assert accounts.authenticate(store, "ada", "a fresh password") is not None
    got = [(e["actor"], e["action"]) for e in audit.entries(store)]
    assert got == [("(command line)", "user.password"), ("(command line)", "user.create")]
    res = run("set-password", "nobody", "--password", "a fresh password")
    assert res.exit_code == 1 and "no user 'nobody'" in res.output
    store.close()
