"""The editor's idle timeout: a session unused for longer than it is refused on the next
request (its row deleted), and the login page says why; activity keeps it alive."""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

from nearstate.content import accounts, sessions
from nearstate.content.db import open_store
from test_editor_web import PASSWORD, login, make_app, seed

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

IDLE_MESSAGE = "You were logged out because you had been inactive for too long."


def test_lookup_ends_an_idle_session_and_says_so(tmp_path: Path) -> None:
    store = open_store(tmp_path / "cms.db")
    uid = accounts.create_user(store, "ann", PASSWORD)
    token = sessions.start(store, uid, max_age=3600, now=1000.0)
    # activity inside the timeout moves "last seen" on (at a tenth of the timeout here)
    for t in (1050.0, 1100.0, 1150.0):
        s, why = sessions.lookup(store, token, idle=60, now=t)
        assert s is not None and why == ""
    assert sessions.of_user(store, uid, now=1150.0)[0]["last_seen_at"] == 1150.0
    # listed as live until idle for the timeout; then left out (it ends on its next request)
    assert len(sessions.of_user(store, uid, idle=60, now=1209.0)) == 1
    assert sessions.of_user(store, uid, idle=60, now=1210.0) == []
    assert sessions.summary(store, idle=60, now=1210.0) == {}
    assert sessions.summary(store, idle=60, now=1209.0)[uid]["count"] == 1
    s, why = sessions.lookup(store, token, idle=60, now=1150.0 + 60)
    assert s is None and why == "idle"
    assert sessions.of_user(store, uid, now=1150.0) == []  # the row is gone
    assert sessions.lookup(store, token, idle=60, now=1151.0) == (None, "none")
    # without an idle timeout only the expiry counts
    token = sessions.start(store, uid, max_age=3600, now=1000.0)
    assert sessions.load(store, token, now=4000.0) is not None
    assert sessions.lookup(store, token, now=4600.0) == (None, "expired")
    store.close()


def test_an_idle_session_is_refused_with_a_plain_message(tmp_path: Path) -> None:
    store = open_store(tmp_path / "cms.db")
    seed(store)
    app: Any = make_app(store, tmp_path, dataset=None, run_worker=False, session_idle_timeout=1)
    with TestClient(app) as client:
        login(client)
        # requests closer together than the timeout keep the session
        for _ in range(6):
            assert client.get("/", follow_redirects=False).status_code == 200
            time.sleep(0.4)
        time.sleep(1.2)
        r = client.get("/stories/new", follow_redirects=False)
        assert r.status_code == 303
        assert r.headers["location"] == "/login?next=%2Fstories%2Fnew"
        page = client.get(r.headers["location"])
        assert page.status_code == 200 and IDLE_MESSAGE in page.text
        assert IDLE_MESSAGE not in client.get("/login").text  # said once
        assert client.get("/api/stories").status_code == 401
        uid = int(store.read_one("SELECT id FROM users WHERE username = 'ann'")["id"])
        assert sessions.of_user(store, uid) == []
        login(client)  # logging in again works at once
        assert client.get("/", follow_redirects=False).status_code == 200
    store.close()
