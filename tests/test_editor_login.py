"""The editor's login over HTTP, on SQLite and PostgreSQL: server-side sessions (a removed
or demoted user loses access on the next request; log out everywhere), login throttling
(429 with Retry-After, per account and per client address, cleared by a success; the same
scrypt work for unknown and known accounts), the audit log page, and password change and
reset. The store-level half is in test_login_store.py."""

from __future__ import annotations

import hashlib
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nearstate.content import accounts, audit, sessions, throttle
from nearstate.content.db import WriteStore
from test_editor_web import PASSWORD, csrf_of, make_app, publishable, seed

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # "use httpx2": the httpx installed works
    from starlette.testclient import TestClient

COOKIE = "nearstate_editor"
NEW_PASSWORD = "another long password"


@pytest.fixture
def store(write_store: WriteStore) -> WriteStore:
    """SQLite and PostgreSQL, with ann (editor), root (admin) and bea (admin)."""
    seed(write_store)
    accounts.create_user(write_store, "bea", PASSWORD, role="admin", display_name="Bea Admin")
    return write_store


@pytest.fixture
def app(store: WriteStore, tmp_path: Path) -> Any:
    return make_app(store, tmp_path, dataset=None)


@pytest.fixture
def clients(app: Any) -> Iterator[list[TestClient]]:
    """Browsers: ``browser()`` makes one, each from its own address."""
    made: list[TestClient] = []
    yield made
    for c in made:
        c.__exit__(None, None, None)


def browser(app: Any, made: list[TestClient], address: str = "10.0.0.1") -> TestClient:
    c = TestClient(app, client=(address, 50000), follow_redirects=False)
    c.__enter__()
    made.append(c)
    return c


def login_form(client: TestClient, username: str, password: str = PASSWORD) -> Any:
    page = client.get("/login")
    return client.post(
        "/login", data={"csrf": csrf_of(page.text), "username": username, "password": password}
    )


def log_in(client: TestClient, username: str, password: str = PASSWORD) -> str:
    """Log in; returns the CSRF token of the new session."""
    r = login_form(client, username, password)
    assert r.status_code == 303, r.text
    return csrf_of(client.get("/").text)


def logged_in(client: TestClient) -> bool:
    r = client.get("/")
    assert r.status_code in (200, 303)
    return r.status_code == 200


def uid(store: WriteStore, name: str) -> int:
    row = store.read_one("SELECT id FROM users WHERE username = ?", (name,))
    assert row is not None
    return int(row["id"])


# -- sessions ---------------------------------------------------------------------------------


def test_the_cookie_holds_only_an_opaque_token(app: Any, store: WriteStore, clients: Any) -> None:
    c = browser(app, clients)
    log_in(c, "ann")
    token = c.cookies[COOKIE]
    assert re.fullmatch(r"[A-Za-z0-9_-]{40,}", token)
    assert set(c.cookies.keys()) == {COOKIE}
    row = store.read_one("SELECT token_hash, address, user_agent FROM sessions")
    assert row is not None
    assert row["token_hash"] == hashlib.sha256(token.encode()).hexdigest()
    assert row["address"] == "10.0.0.1" and row["user_agent"] == "testclient"
    setcookie = login_form(browser(app, clients), "ann").headers["set-cookie"].lower()
    assert "httponly" in setcookie and "samesite=lax" in setcookie and "max-age=43200" in setcookie


def test_a_removed_user_is_refused_at_once(app: Any, store: WriteStore, clients: Any) -> None:
    ann = browser(app, clients)
    csrf = log_in(ann, "ann")
    api = browser(app, clients)
    r = api.post("/api/login", json={"username": "ann", "password": PASSWORD})
    assert r.status_code == 200
    api_csrf = r.json()["csrf"]
    assert api.get("/api/stories").status_code == 200
    admin = browser(app, clients, "10.0.0.2")
    admin_csrf = log_in(admin, "root")

    r = admin.post(
        f"/admin/users/{uid(store, 'ann')}/remove", data={"csrf": admin_csrf, "confirm": "nope"}
    )
    assert r.status_code == 422 and "type ann to confirm" in r.text
    assert logged_in(ann)
    r = admin.post(
        f"/admin/users/{uid(store, 'ann')}/remove", data={"csrf": admin_csrf, "confirm": "ann"}
    )
    assert r.status_code == 303

    r = ann.get("/stories/new")
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    r = ann.post("/stories/new", data={"csrf": csrf, "title": "After removal"})
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    r = api.post("/api/stories", json={"title": "x"}, headers={"X-CSRF-Token": api_csrf})
    assert r.status_code == 401
    assert store.read("SELECT title FROM stories") == []
    assert store.read("SELECT id FROM sessions WHERE user_id = ?", (uid(store, "root"),))
    assert len(store.read("SELECT id FROM sessions")) == 1  # root's only
    entry = audit.entries(store, action="user.remove")[0]
    assert (entry["actor"], entry["subject"]) == ("root", "user ann")


def test_a_demoted_admin_loses_admin_pages_at_once(
    app: Any, store: WriteStore, clients: Any
) -> None:
    bea = browser(app, clients)
    log_in(bea, "bea")
    assert bea.get("/admin/users").status_code == 200
    assert "Audit log" in bea.get("/").text
    root = browser(app, clients, "10.0.0.2")
    csrf = log_in(root, "root")
    r = root.post(f"/admin/users/{uid(store, 'bea')}/role", data={"csrf": csrf, "role": "editor"})
    assert r.status_code == 303
    for path in ("/admin/users", "/admin/audit", "/admin/dead-letters"):
        r = bea.get(path)
        assert r.status_code == 403 and "admins only" in r.text
    home = bea.get("/")
    assert home.status_code == 200 and "Audit log" not in home.text and "(editor)" in home.text
    # and promoted again: at once too
    root.post(f"/admin/users/{uid(store, 'bea')}/role", data={"csrf": csrf, "role": "admin"})
    assert bea.get("/admin/users").status_code == 200
    # the last admin cannot be demoted: root demotes bea, then tries root
    root.post(f"/admin/users/{uid(store, 'bea')}/role", data={"csrf": csrf, "role": "editor"})
    r = root.post(f"/admin/users/{uid(store, 'root')}/role", data={"csrf": csrf, "role": "editor"})
    assert r.status_code == 422 and "only admin" in r.text


def test_log_out_everywhere(app: Any, store: WriteStore, clients: Any) -> None:
    a, b, c = (browser(app, clients, f"10.0.1.{i}") for i in range(3))
    csrf_a = log_in(a, "ann")
    log_in(b, "ann")
    csrf_c = log_in(c, "ann")
    page = a.get("/account")
    assert page.status_code == 200 and page.text.count("10.0.1.") == 3
    assert "this browser" in page.text

    # end one other session from the account page
    b_id = next(
        s["id"] for s in sessions.of_user(store, uid(store, "ann")) if s["address"] == "10.0.1.1"
    )
    r = a.post(f"/account/sessions/{b_id}/end", data={"csrf": csrf_a})
    assert r.status_code == 303 and r.headers["location"] == "/account"
    assert not logged_in(b) and logged_in(a) and logged_in(c)

    r = c.post("/account/logout-everywhere", data={"csrf": csrf_c})
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert not logged_in(a) and not logged_in(c)
    assert "You are logged out everywhere." in c.get("/login").text
    assert store.read("SELECT id FROM sessions") == []

    # an admin logs a user out everywhere
    log_in(a, "ann")
    log_in(b, "ann")
    root = browser(app, clients, "10.0.0.2")
    csrf = log_in(root, "root")
    page = root.get(f"/admin/users/{uid(store, 'ann')}")
    assert page.status_code == 200 and "10.0.1.0" in page.text and "10.0.1.1" in page.text
    r = root.post(f"/admin/users/{uid(store, 'ann')}/logout-everywhere", data={"csrf": csrf})
    assert r.status_code == 303
    assert not logged_in(a) and not logged_in(b) and logged_in(root)
    actions = [e["action"] for e in audit.entries(store)]
    assert actions[:2] == ["user.sessions", "login"]
    assert "logout.everywhere" in actions and "session.end" in actions


def test_logging_out_ends_the_session_row(app: Any, store: WriteStore, clients: Any) -> None:
    a = browser(app, clients)
    csrf = log_in(a, "ann")
    token = a.cookies[COOKIE]
    r = a.post("/logout", data={"csrf": csrf})
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert "You are logged out." in a.get("/login").text
    assert "You are logged out." not in a.get("/login").text  # shown once
    assert store.read("SELECT id FROM sessions") == []
    # the old token, sent again (a copied cookie), is refused
    thief = browser(app, clients, "10.6.6.6")
    thief.cookies.set(COOKIE, token)
    assert not logged_in(thief)


# -- throttling -------------------------------------------------------------------------------


def test_throttling_per_account(app: Any, store: WriteStore, clients: Any) -> None:
    a = browser(app, clients, "10.0.2.1")
    for _ in range(throttle.ACCOUNT_LIMIT):
        assert login_form(a, "ann", "wrong password!").status_code == 401
    # from another address too, and even with the right password
    b = browser(app, clients, "10.0.2.2")
    r = login_form(b, "ann")
    assert r.status_code == 429
    wait = int(r.headers["retry-after"])
    assert 0 < wait <= throttle.WINDOW
    msg = re.search(r'<p class="error" role="alert">([^<]*)</p>', r.text)
    assert (
        msg
        and "Too many failed logins" in msg.group(1)
        and "try again in 15 minutes" in msg.group(1)
    )
    r = b.post("/api/login", json={"username": "ANN", "password": PASSWORD})
    assert r.status_code == 429 and int(r.headers["retry-after"]) == wait
    assert "Too many failed logins" in r.json()["error"]
    # another account from the same addresses is not locked
    assert login_form(a, "bea").status_code == 303
    # an unknown name is locked like a known one: no telling them apart
    for _ in range(throttle.ACCOUNT_LIMIT):
        assert login_form(b, "nobody", "wrong password!").status_code == 401
    assert login_form(b, "nobody", "wrong password!").status_code == 429
    failed = audit.entries(store, action="login.failed")
    assert len(failed) == 2 * throttle.ACCOUNT_LIMIT  # refusals check nothing, log nothing
    assert failed[0]["subject"] == "user nobody" and failed[0]["actor_id"] is None

    # an admin lifts the lock
    root = browser(app, clients, "10.0.0.2")
    csrf = log_in(root, "root")
    page = root.get(f"/admin/users/{uid(store, 'ann')}")
    assert "logging in is paused" in page.text
    root.post(f"/admin/users/{uid(store, 'ann')}/unlock", data={"csrf": csrf})
    assert login_form(b, "ann").status_code == 303


def test_a_success_clears_the_accounts_count(app: Any, store: WriteStore, clients: Any) -> None:
    a = browser(app, clients, "10.0.3.1")
    for _ in range(throttle.ACCOUNT_LIMIT - 1):
        assert login_form(a, "ann", "wrong password!").status_code == 401
    assert login_form(a, "ann").status_code == 303
    b = browser(app, clients, "10.0.3.2")
    for _ in range(throttle.ACCOUNT_LIMIT):  # five more failures are allowed again
        assert login_form(b, "ann", "wrong password!").status_code == 401
    assert login_form(b, "ann").status_code == 429


def test_throttling_per_address(app: Any, store: WriteStore, clients: Any) -> None:
    a = browser(app, clients, "10.0.4.1")
    for i in range(throttle.ADDRESS_LIMIT):  # a password sprayed over many names
        assert login_form(a, f"user{i}", "wrong password!").status_code == 401
    r = login_form(a, "ann")
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
    r = a.post("/api/login", json={"username": "bea", "password": PASSWORD})
    assert r.status_code == 429 and "retry-after" in r.headers
    assert login_form(browser(app, clients, "10.0.4.2"), "ann").status_code == 303
    # a success from the address clears its account, not the address
    assert login_form(a, "ann").status_code == 429


def test_unknown_and_known_accounts_do_the_same_scrypt_work(
    app: Any, store: WriteStore, clients: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[int, int, int]] = []
    real = hashlib.scrypt

    def counting(password: bytes, **kw: Any) -> bytes:
        calls.append((kw["n"], kw["r"], kw["p"]))
        return real(password, **kw)

    monkeypatch.setattr(accounts.hashlib, "scrypt", counting)
    a = browser(app, clients)
    per_attempt = {}
    for name, password in (("nobody", PASSWORD), ("ann", "wrong password!"), ("ann", PASSWORD)):
        calls.clear()
        login_form(a, name, password)
        per_attempt[(name, password)] = list(calls)
    assert all(v == [(2**14, 8, 1)] for v in per_attempt.values()), per_attempt
    # a refused attempt does no scrypt work at all (known or unknown)
    a = browser(app, clients, "10.0.0.9")
    for name in ("ann", "nobody"):
        for _ in range(throttle.ACCOUNT_LIMIT):
            login_form(a, name, "wrong password!")
        calls.clear()
        assert login_form(a, name, "wrong password!").status_code == 429
        assert calls == []


# -- the audit log ----------------------------------------------------------------------------


def test_audit_entries_for_save_publish_and_login(
    app: Any, store: WriteStore, clients: Any
) -> None:
    ann = browser(app, clients, "10.0.5.1")
    assert login_form(ann, "ann", "wrong password!").status_code == 401
    r = ann.post("/api/login", json={"username": "ann", "password": PASSWORD})
    csrf = r.json()["csrf"]
    h = {"X-CSRF-Token": csrf}
    sid = ann.post("/api/stories", json=publishable("Audited"), headers=h).json()["id"]
    r = ann.put(
        f"/api/stories/{sid}",
        json={"base_revision": 1, "story": publishable("Audited again")},
        headers=h,
    )
    assert r.status_code == 200
    assert ann.post(f"/api/stories/{sid}/publish", json={}, headers=h).status_code == 200
    assert ann.post("/api/logout", headers=h).status_code == 200

    got = [(e["actor"], e["action"], e["subject"], e["detail"]) for e in audit.entries(store)]
    assert got == [
        ("ann", "logout", "user ann", ""),
        ("ann", "story.publish", f"story {sid}", "revision 2"),
        ("ann", "story.save", f"story {sid}", "revision 2"),
        ("ann", "story.create", f"story {sid}", "revision 1"),
        ("ann", "login", "user ann", ""),
        ("ann", "login.failed", "user ann", ""),
    ]
    assert {e["address"] for e in audit.entries(store)} == {"10.0.5.1"}

    # the form path writes them too
    csrf = log_in(ann, "ann")
    form = {"csrf": csrf, "title": "By form", "action": "save", "block-0-kind": "paragraph"}
    form["block-0-text"] = "Words."
    r = ann.post("/stories/new", data=form)
    assert r.status_code == 303
    assert audit.entries(store, limit=1)[0]["action"] == "story.create"

    # editors cannot read it; admins read it newest first, 50 a page, filtered
    assert ann.get("/admin/audit").status_code == 403
    for i in range(60):
        audit.record(store, audit.Actor("bea", uid(store, "bea")), "asset.edit", f"asset a-{i}")
    root = browser(app, clients, "10.0.0.2")
    log_in(root, "root")
    page = root.get("/admin/audit")
    assert page.status_code == 200
    assert page.text.index("asset a-59") < page.text.index("asset a-58")  # newest first
    assert "asset a-9<" not in page.text and 'href="/admin/audit?page=2"' in page.text
    page2 = root.get("/admin/audit?page=2")
    assert "asset a-9<" in page2.text and "created a story" in page2.text
    only = root.get("/admin/audit?user=ann&action=story.publish")
    assert only.text.count(">published a story<") == 2  # the entry and the filter's option
    assert "saved a story</span>" not in only.text


# -- passwords --------------------------------------------------------------------------------


def test_password_change_ends_the_other_sessions(app: Any, store: WriteStore, clients: Any) -> None:
    a, b = browser(app, clients, "10.0.6.1"), browser(app, clients, "10.0.6.2")
    csrf = log_in(a, "ann")
    log_in(b, "ann")
    form = {"csrf": csrf, "current": "not my password", "new": NEW_PASSWORD}
    r = a.post("/account/password", data={**form, "confirm": NEW_PASSWORD})
    assert r.status_code == 422 and "current password is wrong" in r.text
    r = a.post("/account/password", data={**form, "confirm": "something else"})
    assert r.status_code == 422 and "differ" in r.text
    r = a.post(
        "/account/password",
        data={"csrf": csrf, "current": PASSWORD, "new": "short", "confirm": "short"},
    )
    assert r.status_code == 422 and "at least 10 characters" in r.text
    assert logged_in(b)
    r = a.post(
        "/account/password",
        data={"csrf": csrf, "current": PASSWORD, "new": NEW_PASSWORD, "confirm": NEW_PASSWORD},
    )
    assert r.status_code == 303 and r.headers["location"] == "/account"
    assert "Your password is changed" in a.get("/account").text
    assert logged_in(a) and not logged_in(b)
    c = browser(app, clients, "10.0.6.3")
    assert login_form(c, "ann", PASSWORD).status_code == 401
    assert login_form(c, "ann", NEW_PASSWORD).status_code == 303
    assert audit.entries(store, action="password.change")[0]["actor"] == "ann"


def test_wrong_current_passwords_are_throttled(app: Any, store: WriteStore, clients: Any) -> None:
    a = browser(app, clients, "10.0.7.1")
    csrf = log_in(a, "ann")
    form = {"csrf": csrf, "current": "guess", "new": NEW_PASSWORD, "confirm": NEW_PASSWORD}
    for _ in range(throttle.ACCOUNT_LIMIT):
        assert a.post("/account/password", data=form).status_code == 422
    r = a.post("/account/password", data={**form, "current": PASSWORD})
    assert r.status_code == 429 and "retry-after" in r.headers
    assert accounts.authenticate(store, "ann", PASSWORD) is not None  # unchanged


def test_an_admin_resets_a_password_and_ends_the_sessions(
    app: Any, store: WriteStore, clients: Any
) -> None:
    ann = browser(app, clients, "10.0.8.1")
    log_in(ann, "ann")
    root = browser(app, clients, "10.0.0.2")
    csrf = log_in(root, "root")
    url = f"/admin/users/{uid(store, 'ann')}/password"
    r = root.post(url, data={"csrf": csrf, "new": NEW_PASSWORD, "confirm": "different"})
    assert r.status_code == 422 and "differ" in r.text and logged_in(ann)
    r = root.post(url, data={"csrf": csrf, "new": NEW_PASSWORD, "confirm": NEW_PASSWORD})
    assert r.status_code == 303
    assert "password is reset; 1 session logged out" in root.get(r.headers["location"]).text
    assert not logged_in(ann)
    assert login_form(ann, "ann", PASSWORD).status_code == 401
    assert login_form(ann, "ann", NEW_PASSWORD).status_code == 303
    # an admin's own password is changed on the account page, with the current one
    r = root.post(
        f"/admin/users/{uid(store, 'root')}/password",
        data={"csrf": csrf, "new": NEW_PASSWORD, "confirm": NEW_PASSWORD},
    )
    assert r.status_code == 422 and "your account page" in r.text
    # editors cannot reset anyone's
    ann_csrf = csrf_of(ann.get("/").text)
    r = ann.post(
        f"/admin/users/{uid(store, 'root')}/password",
        data={"csrf": ann_csrf, "new": NEW_PASSWORD, "confirm": NEW_PASSWORD},
    )
    assert r.status_code == 403
    entry = audit.entries(store, action="user.password")[0]
    assert (entry["actor"], entry["subject"]) == ("root", "user ann")
