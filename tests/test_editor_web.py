"""The editor app over HTTP: logins, CSRF, roles, the story forms, conflicts, ingestion
status, preview, uploads, layouts, dead letters and the JSON API.

Each test runs the real app (its lifespan starts the in-process ingestion worker and the
preview's consumer) on a real write store and a real local dataset. The save, conflict,
ingestion and preview flow runs on SQLite and on PostgreSQL (``write_store``)."""

from __future__ import annotations

import io
import json
import os
import re
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import nearstate
from nearstate.content import accounts, outbox
from nearstate.content.cms import CMS
from nearstate.content.db import WriteStore, open_store
from nearstate.content.media import MediaConfig, update_asset
from nearstate.web.editor import EditorConfig, create_editor_app

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # "use httpx2": the httpx installed works
    from starlette.testclient import TestClient

PASSWORD = "a long enough password"
ASSET = "a-0123456789abcdef"
XSS = "<script>alert(1)</script>"
XSS_ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


# -- fixtures and helpers ---------------------------------------------------------------------


def seed(store: WriteStore) -> None:
    """Two users, a title, an author and an image row."""
    accounts.create_user(store, "ann", PASSWORD, display_name="Ann Editor")
    accounts.create_user(store, "root", PASSWORD, role="admin")
    with store.transaction() as tx:
        tx.execute(
            "INSERT INTO titles (id, name, slug, year, genres, updated_at)"
            " VALUES (593, 'Cleo from 5 to 7', 'cleo-593', 1962, '[\"Drama\"]', 0)"
        )
        tx.execute("INSERT INTO people (id, name, slug, staff) VALUES (1, 'Ann Writer', 'ann', 1)")
        tx.execute(
            "INSERT INTO assets (id, kind, filename, content_type, width, height, created_at)"
            f" VALUES ('{ASSET}', 'image', 'x.jpg', 'image/jpeg', 1600, 900, 0)"
        )


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[WriteStore]:
    store = open_store(tmp_path / "cms.db")
    seed(store)
    yield store
    store.close()


@pytest.fixture
def any_store(write_store: WriteStore) -> WriteStore:
    """SQLite and PostgreSQL, seeded."""
    seed(write_store)
    return write_store


def make_app(store: WriteStore, tmp_path: Path, **options: Any) -> Any:
    options.setdefault("dataset", nearstate.open(tmp_path / "ds"))
    config = EditorConfig(
        store=store,
        media=MediaConfig(root=tmp_path / "media"),
        secret_key="test-secret-key-0123456789",
        **options,
    )
    return create_editor_app(config)


@pytest.fixture
def app(sqlite_store: WriteStore, tmp_path: Path) -> Any:
    return make_app(sqlite_store, tmp_path)


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf-token" content="([^"]+)"', html) or re.search(
        r'name="csrf" value="([^"]+)"', html
    )
    assert m, "no CSRF token on the page"
    return m.group(1)


def login(client: TestClient, username: str = "ann", password: str = PASSWORD) -> str:
    """Log in through the form; returns the session's CSRF token."""
    page = client.get("/login")
    r = client.post(
        "/login",
        data={"csrf": csrf_of(page.text), "username": username, "password": password},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    return csrf_of(client.get("/").text)


def story_fields(
    title: str,
    blocks: list[dict[str, str]],
    *,
    csrf: str,
    base: int | None = None,
    action: str = "save",
    **more: str,
) -> dict[str, str]:
    data = {"csrf": csrf, "title": title, "action": action, **more}
    if base is not None:
        data["base_revision"] = str(base)
    for i, b in enumerate(blocks):
        data[f"block-{i}-pos"] = str(i + 1)
        for k, v in b.items():
            data[f"block-{i}-{k}"] = v
    return data


def create_story(client: TestClient, csrf: str, title: str = "First", **more: str) -> int:
    r = client.post(
        "/stories/new",
        data=story_fields(
            title, [{"kind": "paragraph", "text": "Opening words."}], csrf=csrf, **more
        ),
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    m = re.fullmatch(r"/stories/(\d+)\?saved=1", r.headers["location"])
    assert m, r.headers["location"]
    return int(m.group(1))


def wait_status(client: TestClient, sid: int, rev: int, timeout: float = 15) -> dict[str, Any]:
    """The ingestion status of a revision once it is no longer pending."""
    deadline = time.monotonic() + timeout
    while True:
        r = client.get(f"/stories/{sid}/status.json?revision={rev}")
        assert r.status_code == 200, r.text
        st = r.json()
        if st["status"] != "pending" or time.monotonic() > deadline:
            return st
        time.sleep(0.05)


def publishable(title: str = "Ready") -> dict[str, Any]:
    return {
        "title": title,
        "dek": "A dek.",
        "hero": ASSET,
        "authors": [1],
        "body": [{"kind": "paragraph", "text": "Words."}],
    }


# -- login, logout, redirects -----------------------------------------------------------------


def test_login_logout_and_the_redirect_to_login(app: Any) -> None:
    with TestClient(app) as client:
        r = client.get("/stories/new?x=1", follow_redirects=False)
        assert r.status_code == 303
        assert r.headers["location"] == "/login?next=%2Fstories%2Fnew%3Fx%3D1"
        r = client.get("/api/stories")
        assert r.status_code == 401 and "log" in r.json()["error"].lower()

        page = client.get("/login?next=/stories/new")
        token = csrf_of(page.text)
        assert 'name="next" value="/stories/new"' in page.text
        wrong = client.post(
            "/login", data={"csrf": token, "username": "ann", "password": "not it at all"}
        )
        unknown = client.post(
            "/login", data={"csrf": token, "username": "nobody", "password": PASSWORD}
        )
        assert wrong.status_code == unknown.status_code == 401
        msg = re.compile(r'<p class="error" role="alert">([^<]*)</p>')
        assert msg.search(wrong.text).group(1) == msg.search(unknown.text).group(1)  # type: ignore[union-attr]
        assert "Wrong username or password." in wrong.text
        assert client.get("/", follow_redirects=False).status_code == 303  # still logged out

        r = client.post(
            "/login",
            data={"csrf": token, "username": "ann", "password": PASSWORD, "next": "/stories/new"},
            follow_redirects=False,
        )
        assert r.status_code == 303 and r.headers["location"] == "/stories/new"
        home = client.get("/")
        assert home.status_code == 200 and "Ann Editor" in home.text
        new_token = csrf_of(home.text)
        assert new_token != token  # a new token after logging in

        r = client.post("/logout", data={}, follow_redirects=False)
        assert r.status_code == 403  # logging out needs the token too
        assert client.get("/", follow_redirects=False).status_code == 200
        r = client.post("/logout", data={"csrf": new_token}, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/login"
        assert client.get("/", follow_redirects=False).status_code == 303


@pytest.mark.parametrize(
    "target",
    ["//evil.example/x", "https://evil.example/", "/\\evil.example", "/\t/evil.example", "x"],
)
def test_login_never_redirects_to_another_site(app: Any, target: str) -> None:
    with TestClient(app) as client:
        page = client.get("/login", params={"next": target})
        assert 'name="next" value="/"' in page.text
        r = client.post(
            "/login",
            data={
                "csrf": csrf_of(page.text),
                "username": "ann",
                "password": PASSWORD,
                "next": target,
            },
            follow_redirects=False,
        )
        assert r.status_code == 303 and r.headers["location"] == "/"


# -- CSRF and roles ---------------------------------------------------------------------------


def test_csrf_is_required_on_forms_and_api(app: Any, sqlite_store: WriteStore) -> None:
    with TestClient(app) as client:
        pre_login = csrf_of(client.get("/login").text)
        csrf = login(client)
        form = story_fields("Sneaky", [{"kind": "paragraph", "text": "x"}], csrf="")
        del form["csrf"]
        assert client.post("/stories/new", data=form).status_code == 403
        r = client.post("/stories/new", data={**form, "csrf": "wrong" * 10})
        assert r.status_code == 403 and "security token" in r.text
        r = client.post("/stories/new", data={**form, "csrf": pre_login})
        assert r.status_code == 403  # the token from before the login is void
        assert CMS(sqlite_store).list_stories() == []

        r = client.post("/api/stories", json={"title": "Sneaky"})
        assert r.status_code == 403 and "X-CSRF-Token" in r.json()["error"]
        r = client.post("/api/stories", json={"title": "Sneaky"}, headers={"X-CSRF-Token": "x"})
        assert r.status_code == 403
        assert CMS(sqlite_store).list_stories() == []
        r = client.post("/api/stories", json={"title": "Fine"}, headers={"X-CSRF-Token": csrf})
        assert r.status_code == 201


def test_admin_pages_are_for_admins(app: Any) -> None:
    with TestClient(app) as client:
        csrf = login(client, "ann")
        assert "Dead letters" not in client.get("/").text
        for path in ("/admin/dead-letters", "/admin/users"):
            r = client.get(path)
            assert r.status_code == 403 and "admins only" in r.text
        r = client.post(
            "/admin/users",
            data={"csrf": csrf, "username": "mallory", "password": PASSWORD, "role": "admin"},
        )
        assert r.status_code == 403
        assert client.post("/admin/dead-letters/1/retry", data={"csrf": csrf}).status_code == 403
    with TestClient(app) as admin:
        csrf = login(admin, "root")
        assert admin.get("/admin/dead-letters").status_code == 200
        r = admin.post(
            "/admin/users",
            data={
                "csrf": csrf,
                "username": "bob",
                "display_name": "Bob",
                "password": PASSWORD,
                "role": "editor",
            },
        )
        assert r.status_code == 200 and "User bob created." in r.text
        r = admin.post(
            "/admin/users",
            data={"csrf": csrf, "username": "bob", "password": PASSWORD, "role": "editor"},
        )
        assert r.status_code == 422 and "already taken" in r.text
        r = admin.post(
            "/admin/users",
            data={"csrf": csrf, "username": "carl", "password": "short", "role": "editor"},
        )
        assert r.status_code == 422 and "at least 10 characters" in r.text
        assert 'value="carl"' in r.text  # the input is kept


# -- the story flow on both write stores ------------------------------------------------------


def test_save_publish_preview_and_conflict(any_store: WriteStore, tmp_path: Path) -> None:
    app = make_app(any_store, tmp_path)
    cms = CMS(any_store)
    with TestClient(app) as ann, TestClient(app) as root:
        csrf = login(ann, "ann")
        sid = create_story(ann, csrf, "Cleo at five")
        page = ann.get(f"/stories/{sid}?saved=1")
        assert "Saved as revision 1." in page.text

        # revision 2: a title card and a real paragraph, then the preview right away
        blocks = [
            {"kind": "paragraph", "text": "Second revision words."},
            {"kind": "title", "title": "593"},
        ]
        fields = story_fields(
            "Cleo at five", blocks, csrf=csrf, base=1, dek="A dek.", hero=ASSET, authors="1"
        )
        r = ann.post(f"/stories/{sid}", data=fields, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == f"/stories/{sid}?saved=2"
        preview = ann.get(f"/stories/{sid}/preview?revision=2")
        assert preview.status_code == 200, preview.text
        assert 'data-revision="2"' in preview.text
        assert "Second revision words." in preview.text and "Opening words." not in preview.text
        assert "Cleo from 5 to 7" in preview.text  # the title card, resolved
        assert f"/media/{ASSET}/large.jpg" in preview.text  # the hero's URL
        assert "youtube-nocookie.com" in preview.headers["content-security-policy"]
        assert wait_status(ann, sid, 2)["status"] == "ok"
        page = ann.get(f"/stories/{sid}?saved=2")
        assert "Saved as revision 2." in page.text
        assert re.search(r"Revision 2: <span class=\"badge badge-ok\">ok</span>", page.text)

        # two editors open revision 2; ann saves first, root's save is refused
        csrf_root = login(root, "root")
        assert 'name="base_revision" value="2"' in root.get(f"/stories/{sid}").text
        mine = story_fields("Ann's version", blocks, csrf=csrf, base=2)
        theirs = story_fields("Root's version", blocks, csrf=csrf_root, base=2)
        assert ann.post(f"/stories/{sid}", data=mine, follow_redirects=False).status_code == 303
        r = root.post(f"/stories/{sid}", data=theirs)
        assert r.status_code == 409
        assert "was changed by ann" in r.text and "your change was not saved" in r.text
        assert f'href="/stories/{sid}/revisions/3"' in r.text
        assert "Root&#39;s version" in r.text  # root's input is kept
        assert 'name="base_revision" value="2"' in r.text  # resubmitting conflicts again
        cur = cms.story(sid)
        assert cur["revision"] == 3 and cur["data"]["title"] == "Ann's version"
        assert cur["updated_by"] == "ann"

        # publish through the form (no change: no new revision)
        fields = story_fields(
            "Ann's version",
            blocks,
            csrf=csrf,
            base=3,
            action="publish",
            dek="A dek.",
            hero=ASSET,
            authors="1",
        )
        r = ann.post(f"/stories/{sid}", data=fields, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == f"/stories/{sid}?saved=4"
        cur = cms.story(sid)
        assert cur["status"] == "published" and cur["published_revision"] == 4
        page = ann.get(r.headers["location"])
        assert "Published revision 4." in page.text

        # an unknown title id: saved, but its ingestion is invalid, with the problem
        bad = [{"kind": "paragraph", "text": "x"}, {"kind": "title", "title": "99999"}]
        r = ann.post(
            f"/stories/{sid}",
            data=story_fields("Bad ref", bad, csrf=csrf, base=4),
            follow_redirects=False,
        )
        assert r.status_code == 303
        assert wait_status(ann, sid, 5)["status"] == "invalid"
        page = ann.get(f"/stories/{sid}?saved=5")
        assert "badge-invalid" in page.text
        assert "<code>body[2].title</code>: title 99999 does not exist" in page.text
        preview = ann.get(f"/stories/{sid}/preview?revision=5")
        assert preview.status_code == 200 and "title 99999 does not exist" in preview.text
        assert "data-revision" not in preview.text  # never an older revision instead


# -- forms: blocks, validation, revisions, schedule ------------------------------------------


def test_blocks_are_added_reordered_and_removed(app: Any, sqlite_store: WriteStore) -> None:
    with TestClient(app) as client:
        csrf = login(client)
        blocks = [
            {"kind": "paragraph", "text": "one"},
            {"kind": "paragraph", "text": "two"},
            {"kind": "quote", "text": "three", "cite": "Agnès"},
        ]
        r = client.post(
            "/stories/new", data=story_fields("Blocks", blocks, csrf=csrf), follow_redirects=False
        )
        sid = int(r.headers["location"].split("/")[2].split("?")[0])
        assert [b["text"] for b in CMS(sqlite_store).story(sid)["data"]["body"]] == [
            "one",
            "two",
            "three",
        ]
        page = client.get(f"/stories/{sid}").text
        assert 'name="block-3-new" value="1"' in page and 'name="block-4-new"' in page

        fields = story_fields("Blocks", blocks, csrf=csrf, base=1)
        fields["block-2-pos"] = "0.5"  # the quote moves first
        fields["block-1-remove"] = "1"  # "two" goes
        fields.update(
            {
                "block-3-new": "1",
                "block-3-pos": "4",
                "block-3-kind": "heading",
                "block-3-text": "A heading",
                "block-3-level": "3",
                "block-4-new": "1",
                "block-4-pos": "5",
                "block-4-kind": "paragraph",
                "block-4-text": "",
            }  # an empty new block is ignored
        )
        r = client.post(f"/stories/{sid}", data=fields, follow_redirects=False)
        assert r.status_code == 303, r.text
        body = CMS(sqlite_store).story(sid)["data"]["body"]
        assert body == [
            {"kind": "quote", "text": "three", "cite": "Agnès"},
            {"kind": "paragraph", "text": "one"},
            {"kind": "heading", "text": "A heading", "level": 3},
        ]
        page = client.get(f"/stories/{sid}").text
        assert page.index("Agnès") < page.index(">one</textarea>") < page.index("A heading")


def test_validation_errors_keep_the_input(app: Any, sqlite_store: WriteStore) -> None:
    with TestClient(app) as client:
        csrf = login(client)
        sid = create_story(client, csrf)
        blocks = [
            {"kind": "paragraph", "text": "Kept paragraph text"},
            {"kind": "heading", "text": "Kept heading", "level": "9"},
            {"kind": "video", "url": "https://example.com/not-a-video"},
        ]
        fields = story_fields("", blocks, csrf=csrf, base=1, related="593, abc", dek="Kept dek")
        r = client.post(f"/stories/{sid}", data=fields)
        assert r.status_code == 422
        assert "<code>title</code>: is required" in r.text
        assert "<code>body[2].level</code>: a heading level is 2, 3 or 4" in r.text
        assert "is not a YouTube or Vimeo link" in r.text
        assert "&#39;abc&#39; is not a number" in r.text
        for kept in ("Kept paragraph text", "Kept heading", 'value="9"', "Kept dek"):
            assert kept in r.text
        # the related titles' chooser keeps both, the unknown one named as such
        assert re.search(r'name="related" value="593" checked>.*Cleo from 5 to 7', r.text, re.S)
        assert 'name="related" value="abc" checked' in r.text and "title abc (not found)" in r.text
        assert 'name="base_revision" value="1"' in r.text
        assert CMS(sqlite_store).story(sid)["revision"] == 1  # nothing saved

        # a new story with problems: 422 on /stories/new, nothing created
        r = client.post("/stories/new", data=story_fields("", [], csrf=csrf))
        assert r.status_code == 422 and "is required" in r.text
        assert len(CMS(sqlite_store).list_stories()) == 1

        # malformed form values are 4xx with plain messages, never 500
        base = story_fields("T", [{"kind": "paragraph", "text": "x"}], csrf=csrf, base=1)
        cases = [
            ({**base, "base_revision": "one"}, 400, "base revision must be a whole number"),
            ({**base, "base_revision": "99999999999999999999999"}, 400, "whole number"),
            ({**base, "action": "explode"}, 400, "Unknown action"),
            ({**base, "block-0-kind": "marquee"}, 422, "kind &#39;marquee&#39; is not one of"),
            ({**base, "block-0-pos": "first"}, 422, "is not a number"),
            ({**base, "block-0-kind": "title", "block-0-title": "x1"}, 422, "is not a title id"),
            ({**base, "related": "99999999999999999999999"}, 422, "is not an id"),
            ({**base, "title": "x" * 300}, 422, "at most 200 are allowed"),
        ]
        for data, status, words in cases:
            r = client.post(f"/stories/{sid}", data=data)
            assert r.status_code == status, (data, r.text)
            assert words in r.text
            assert "Traceback" not in r.text
        r = client.post(
            f"/stories/{sid}", data={**base, "title": "NUL\x00 title"}, follow_redirects=False
        )
        assert r.status_code == 303 and CMS(sqlite_store).story(sid)["title"] == "NUL title"
        for path in (
            "/stories/abc",
            "/stories/99999999999999999999999",
            f"/stories/{sid}/revisions/x",
            f"/stories/{sid}/preview?revision=abc",
            f"/stories/{sid}?saved=two",
            "/?page=zero",
            "/?status=lost",
            f"/stories/{sid}/preview?revision=99",
            "/stories/4242",
            "/assets/not-an-asset",
            "/layouts/nope",
        ):
            r = client.get(path)
            assert 400 <= r.status_code < 500, (path, r.status_code)
            assert "Traceback" not in r.text
        r = client.get("/lookup/titles?q=99999999999999999999999")  # too large to be an id
        assert r.status_code == 200 and "Nothing matches" in r.text


def test_revisions_and_restore(app: Any, sqlite_store: WriteStore) -> None:
    with TestClient(app) as client:
        csrf = login(client)
        sid = create_story(client, csrf, "Version one")
        for n, title in ((1, "Version two"), (2, "Version three")):
            fields = story_fields(title, [{"kind": "paragraph", "text": title}], csrf=csrf, base=n)
            assert (
                client.post(f"/stories/{sid}", data=fields, follow_redirects=False).status_code
                == 303
            )
        page = client.get(f"/stories/{sid}/revisions").text
        for n in (1, 2, 3):
            assert f'href="/stories/{sid}/revisions/{n}"' in page
        assert "created" in page and page.count("<td>ann</td>") == 3
        old = client.get(f"/stories/{sid}/revisions/1")
        assert "Version one" in old.text and "Restore this revision" in old.text
        assert 'name="base_revision" value="3"' in old.text

        r = client.post(
            f"/stories/{sid}/revisions/1/restore", data={"csrf": csrf, "base_revision": "2"}
        )
        assert r.status_code == 409 and "after you opened revision 2" in r.text
        r = client.post(
            f"/stories/{sid}/revisions/1/restore",
            data={"csrf": csrf, "base_revision": "3"},
            follow_redirects=False,
        )
        assert r.status_code == 303 and r.headers["location"] == f"/stories/{sid}?saved=4"
        cur = CMS(sqlite_store).story(sid)
        assert cur["revision"] == 4 and cur["data"]["title"] == "Version one"
        assert "restored revision 1" in client.get(f"/stories/{sid}/revisions").text
        assert (
            client.post(
                f"/stories/{sid}/revisions/9/restore", data={"csrf": csrf, "base_revision": "4"}
            ).status_code
            == 404
        )


def test_schedule_refuses_past_times(app: Any, sqlite_store: WriteStore) -> None:
    cms = CMS(sqlite_store)
    with TestClient(app) as client:
        csrf = login(client)
        sid = cms.create_story(publishable(), user="ann").id
        page = client.get(f"/stories/{sid}").text
        assert "times are UTC" in page and 'type="datetime-local" name="publish_at"' in page
        blocks = [{"kind": "paragraph", "text": "Words."}]
        common = {"dek": "A dek.", "hero": ASSET, "authors": "1"}

        def schedule(publish_at: str, unpublish_at: str = "") -> Any:
            fields = story_fields(
                "Ready",
                blocks,
                csrf=csrf,
                base=1,
                action="schedule",
                publish_at=publish_at,
                unpublish_at=unpublish_at,
                **common,
            )
            return client.post(f"/stories/{sid}", data=fields, follow_redirects=False)

        r = schedule("2001-01-01T10:00")
        assert r.status_code == 422 and "the publish time must be in the future" in r.text
        assert 'value="2001-01-01T10:00"' in r.text
        r = schedule("next tuesday")
        assert r.status_code == 422 and "is not a date and time" in r.text
        assert cms.story(sid)["status"] == "draft" and cms.story(sid)["revision"] == 1

        r = schedule("2099-06-01T12:30", "2099-06-01T12:00")
        assert r.status_code == 422 and "must come after the publish time" in r.text
        r = schedule("2099-06-01T12:30")
        assert r.status_code == 303, r.text
        cur = cms.story(sid)
        assert cur["status"] == "scheduled" and cur["revision"] == 1  # nothing changed: no save
        assert time.gmtime(cur["publish_at"])[:5] == (2099, 6, 1, 12, 30)  # read as UTC
        page = client.get(r.headers["location"]).text
        assert "Scheduled to be published at 2099-06-01 12:30 UTC." in page
        assert 'value="2099-06-01T12:30"' in page


# -- dead letters -------------------------------------------------------------------------------


def test_dead_letters_and_retry(sqlite_store: WriteStore, tmp_path: Path) -> None:
    app = make_app(sqlite_store, tmp_path)
    with TestClient(app) as client:
        login(client, "root")
        with sqlite_store.transaction() as tx:
            eid = outbox.enqueue(tx, "bogus", "x1")
        deadline = time.monotonic() + 10
        while not outbox.dead_letters(sqlite_store) and time.monotonic() < deadline:
            time.sleep(0.05)  # the in-process worker gives up on an unknown kind at once
        page = client.get("/admin/dead-letters")
        assert page.status_code == 200
        assert "bogus x1" in page.text and "unknown kind &#39;bogus&#39;" in page.text
        assert f'action="/admin/dead-letters/{eid}/retry"' in page.text

    # without a worker: a story's event that died shows as "failed"; a retry queues it again
    app = make_app(sqlite_store, tmp_path, run_worker=False)
    sid = CMS(sqlite_store).create_story({"title": "Doomed"}, user="ann").id
    ev = outbox.claim(sqlite_store, "test")
    assert ev is not None and ev.kind == "story"
    outbox.fail(sqlite_store, ev, "RuntimeError: the disk is on fire", retry=False)
    with TestClient(app) as client:
        csrf = login(client, "root")
        page = client.get(f"/stories/{sid}").text
        assert "badge-failed" in page and "the disk is on fire" in page
        assert "badge-failed" in client.get("/").text
        assert "badge-failed" in client.get(f"/stories/{sid}/revisions").text
        assert client.get(f"/stories/{sid}/status.json").json()["status"] == "failed"
        r = client.post(f"/admin/dead-letters/{ev.id}/retry", data={"csrf": csrf})
        assert r.status_code == 200 and f"Event {ev.id} is queued again." in r.text
        row = sqlite_store.read_one("SELECT status, attempts FROM outbox WHERE id = ?", (ev.id,))
        assert row == {"status": "pending", "attempts": 0}
        assert "the disk is on fire" not in r.text and "bogus x1" in r.text
        assert client.get(f"/stories/{sid}/status.json").json()["status"] == "pending"
        r = client.post(f"/admin/dead-letters/{ev.id}/retry", data={"csrf": csrf})
        assert "is not in the dead-letter list" in r.text
        r = client.post("/admin/dead-letters/x/retry", data={"csrf": csrf})
        assert r.status_code == 404


# -- uploads -------------------------------------------------------------------------------------


def png(color: str = "red", size: tuple[int, int] = (640, 400)) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "PNG")
    return out.getvalue()


def test_uploads_and_asset_edits(app: Any, sqlite_store: WriteStore) -> None:
    with TestClient(app) as client:
        csrf = login(client)
        r = client.post(
            "/assets",
            data={"csrf": csrf, "alt": "A red field", "focal_x": "0.25", "focal_y": "0.75"},
            files={"file": ("red.png", png(), "image/png")},
            follow_redirects=False,
        )
        assert r.status_code == 303, r.text
        aid = r.headers["location"].rsplit("/", 1)[1]
        assert re.fullmatch(r"a-[0-9a-f]{16}", aid)
        page = client.get(f"/assets/{aid}")
        assert "red.png" in page.text and "640×400" in page.text
        assert f'src="/media/{aid}/medium.png"' in page.text
        img = client.get(f"/media/{aid}/small.png")
        assert img.status_code == 200 and img.headers["content-type"] == "image/png"
        assert f'src="/media/{aid}/small.png"' in client.get("/assets").text

        r = client.post(
            "/assets",
            data={"csrf": csrf, "alt": "kept alt"},
            files={"file": ("notes.txt", b"just some text, not an image", "text/plain")},
        )
        assert r.status_code == 422 and "Not uploaded" in r.text and "not an image" in r.text
        assert 'value="kept alt"' in r.text
        r = client.post("/assets", data={"csrf": csrf})
        assert r.status_code == 422 and "Choose an image file" in r.text

        # a story shows the image; changing its alt text re-ingests the story
        cms = CMS(sqlite_store)
        sid = cms.create_story({**publishable(), "hero": aid}, user="ann").id
        r = client.post(
            f"/assets/{aid}",
            data={"csrf": csrf, "alt": "A field, red", "focal_x": "2", "focal_y": "0"},
        )
        assert r.status_code == 422 and "outside [0, 1]" in r.text
        r = client.post(
            f"/assets/{aid}",
            data={"csrf": csrf, "alt": "A field, red", "focal_x": "0.5", "focal_y": "0.1"},
        )
        assert r.status_code == 200 and "1 stories or titles showing this image" in r.text
        row = sqlite_store.read_one("SELECT alt, focal_y FROM assets WHERE id = ?", (aid,))
        assert row == {"alt": "A field, red", "focal_y": 0.1}
        assert f'href="/stories/{sid}"' in client.get(f"/assets/{aid}").text


def test_upload_limit_is_separate(sqlite_store: WriteStore, tmp_path: Path) -> None:
    app = make_app(sqlite_store, tmp_path, max_body_bytes=4096, max_upload_bytes=200_000)
    noise = os.urandom(120 * 120 * 3)

    def noisy_png(side: int) -> bytes:
        from PIL import Image

        out = io.BytesIO()
        Image.frombytes("RGB", (side, side), noise[: side * side * 3]).save(out, "PNG")
        return out.getvalue()

    with TestClient(app) as client:
        csrf = login(client)
        r = client.post("/stories/new", data={"csrf": csrf, "title": "x" * 5000})
        assert r.status_code == 413  # a form over max_body_bytes
        small = noisy_png(60)
        assert 4096 < len(small) < 200_000
        r = client.post(
            "/assets",
            data={"csrf": csrf},
            files={"file": ("n.png", small, "image/png")},
            follow_redirects=False,
        )
        assert r.status_code == 303  # an upload may be larger than max_body_bytes
        big = noisy_png(120) * 5
        r = client.post("/assets", data={"csrf": csrf}, files={"file": ("b.png", big, "image/png")})
        assert r.status_code == 413


# -- layouts -------------------------------------------------------------------------------------


def test_layouts(app: Any, sqlite_store: WriteStore) -> None:
    cms = CMS(sqlite_store)
    with TestClient(app) as client:
        csrf = login(client)
        fields = {
            "csrf": csrf,
            "id": "home",
            "name": "Home",
            "row-0-new": "1",
            "row-0-pos": "1",
            "row-0-heading": "Latest",
            "row-0-kind": "tag",
            "row-0-value": "Behind the Scenes",
            "row-0-limit": "5",
            "row-1-new": "1",
            "row-1-pos": "2",
            "row-1-heading": "",
            "row-1-kind": "stories",
            "row-1-value": "",
        }
        r = client.post("/layouts/new", data=fields, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/layouts/home"
        assert cms.layout("home")["data"]["rows"] == [
            {"heading": "Latest", "kind": "tag", "tag": "behind-the-scenes", "limit": 5}
        ]
        assert client.post("/layouts/new", data=fields).status_code == 422  # the id is taken
        page = client.get("/layouts/home").text
        assert 'name="row-0-value" value="behind-the-scenes"' in page
        edit = {
            "csrf": csrf,
            "name": "Home page",
            "base_revision": "1",
            "row-0-pos": "2",
            "row-0-heading": "Latest",
            "row-0-kind": "tag",
            "row-0-value": "behind-the-scenes",
            "row-0-limit": "5",
            "row-1-new": "1",
            "row-1-pos": "1",
            "row-1-heading": "Films",
            "row-1-kind": "titles",
            "row-1-value": "593",
        }
        r = client.post("/layouts/home", data=edit, follow_redirects=False)
        assert r.status_code == 303
        lay = cms.layout("home")
        assert lay["name"] == "Home page" and [x["heading"] for x in lay["data"]["rows"]] == [
            "Films",
            "Latest",
        ]
        r = client.post("/layouts/home", data=edit)
        assert r.status_code == 409 and "after you opened revision 1" in r.text
        bad = {**edit, "base_revision": "2", "row-0-kind": "weather", "row-0-remove": ""}
        r = client.post("/layouts/home", data=bad)
        assert r.status_code == 422 and "&#39;weather&#39; is not one of" in r.text
        assert 'value="weather" selected' in r.text
        removed = {**edit, "base_revision": "2", "row-0-remove": "1"}
        assert client.post("/layouts/home", data=removed, follow_redirects=False).status_code == 303
        assert [x["heading"] for x in cms.layout("home")["data"]["rows"]] == ["Films"]
        assert "Home page" in client.get("/layouts").text


# -- the JSON API -----------------------------------------------------------------------------


def test_json_api(app: Any, sqlite_store: WriteStore) -> None:
    with TestClient(app) as client:
        r = client.post("/api/login", json={"username": "ann", "password": "nope nope nope"})
        assert r.status_code == 401 and r.json()["error"] == "Wrong username or password."
        r = client.post(
            "/api/login",
            content=b'{"username": "ann"',
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
        r = client.post("/api/login", data={"username": "ann", "password": PASSWORD})
        assert r.status_code == 415  # a form post cannot log anybody in
        r = client.post("/api/login", json={"username": "ann", "password": PASSWORD})
        assert r.status_code == 200
        body = r.json()
        assert body["user"] == {
            "id": 1,
            "username": "ann",
            "display_name": "Ann Editor",
            "role": "editor",
        }
        h = {"X-CSRF-Token": body["csrf"]}

        r = client.post("/api/stories", content=b"{not json", headers=h)
        assert r.status_code == 400 and r.json()["problems"] == []
        r = client.post("/api/stories", json={"dek": "no title", "body": "x"}, headers=h)
        assert r.status_code == 422
        where = {p["where"] for p in r.json()["problems"]}
        assert {"title", "body"} <= where
        r = client.post("/api/stories", json=[1, 2], headers=h)
        assert r.status_code == 422
        r = client.post("/api/stories", content=b'{"title": "x", "dek": 1e999}', headers=h)
        assert r.status_code == 400

        story = {"title": "Refs", "body": [{"kind": "title", "title": 99999}], "authors": [77]}
        r = client.post("/api/stories", json=story, headers=h)
        assert r.status_code == 201, r.text
        saved = r.json()
        assert set(saved) == {"id", "revision", "event"} and saved["revision"] == 1
        sid = saved["id"]
        deadline = time.monotonic() + 15
        while True:
            st = client.get(f"/api/stories/{sid}/status?revision=1").json()
            if st["status"] != "pending" or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert st["status"] == "invalid"
        assert {"where": "body[1].title", "message": "title 99999 does not exist"} in st["errors"]
        assert {"where": "authors", "message": "person 77 does not exist"} in st["errors"]

        got = client.get(f"/api/stories/{sid}").json()
        assert got["revision"] == 1 and got["story"]["title"] == "Refs"
        change = {"story": {**got["story"], "title": "Refs 2"}}
        r = client.put(f"/api/stories/{sid}", json=change, headers=h)
        assert r.status_code == 422 and r.json()["problems"][0]["where"] == "base_revision"
        r = client.put(f"/api/stories/{sid}", json={**change, "base_revision": "1"}, headers=h)
        assert r.status_code == 422
        r = client.put(f"/api/stories/{sid}", json={**change, "base_revision": 1}, headers=h)
        assert r.status_code == 200 and r.json()["revision"] == 2
        r = client.put(f"/api/stories/{sid}", json={**change, "base_revision": 1}, headers=h)
        assert r.status_code == 409 and "was changed by ann" in r.json()["error"]
        r = client.post(f"/api/stories/{sid}/publish", json={"base_revision": 2}, headers=h)
        assert r.status_code == 422
        assert "dek" in {p["where"] for p in r.json()["problems"]}
        assert client.get("/api/stories/4242").status_code == 404
        assert client.get("/api/stories/4242").json()["error"].startswith("There is no story")
        assert client.get("/api/nothing").status_code == 404
        assert client.get("/api/stories", params={"q": "refs"}).json()["stories"][0]["id"] == sid

        # over max_body_bytes: 413 before parsing, for the API and for forms
        huge = b'{"title": "' + b"x" * (2 * 1024 * 1024) + b'"}'
        r = client.post("/api/stories", content=huge, headers=h)
        assert r.status_code == 413 and "at most" in r.json()["error"]

        def chunks() -> Iterator[bytes]:
            for _ in range(40):
                yield b"x" * 65536

        r = client.post("/api/stories", content=chunks(), headers=h)  # no Content-Length
        assert r.status_code == 413
        r = client.post(
            f"/stories/{sid}", data={"csrf": body["csrf"], "title": "x" * (2 * 1024 * 1024 + 1)}
        )
        assert r.status_code == 413 and "at most" in r.text
        assert CMS(sqlite_store).story(sid)["revision"] == 2

        r = client.post("/api/logout", headers=h)
        assert r.status_code == 200
        assert client.get("/api/stories").status_code == 401


# -- escaping, headers, internal errors ------------------------------------------------------


def test_text_is_escaped_on_every_page(app: Any, sqlite_store: WriteStore) -> None:
    cms = CMS(sqlite_store)
    story = {
        "title": XSS,
        "dek": XSS,
        "tags": ["x"],
        "body": [
            {"kind": "paragraph", "text": XSS},
            {"kind": "heading", "text": XSS, "level": 2},
            {"kind": "quote", "text": XSS, "cite": XSS},
            {"kind": "image", "asset": ASSET, "text": XSS},
        ],
    }
    sid = cms.create_story(story, user="ann").id
    cms.save_layout(
        "home",
        name=XSS,
        rows=[{"heading": XSS, "kind": "titles", "ids": [593]}],
        user="ann",
        base_revision=None,
    )
    update_asset(sqlite_store, ASSET, alt=XSS)
    accounts.create_user(sqlite_store, "eve", PASSWORD, display_name=XSS)
    with sqlite_store.transaction() as tx:
        outbox.enqueue(tx, XSS, "1")  # an unknown kind: dead at once, its error names it
    with TestClient(app) as client:
        login(client, "root")
        assert wait_status(client, sid, 1)["status"] == "ok"
        deadline = time.monotonic() + 10
        while not outbox.dead_letters(sqlite_store) and time.monotonic() < deadline:
            time.sleep(0.05)
        pages = [
            "/",
            f"/stories/{sid}",
            f"/stories/{sid}/revisions",
            f"/stories/{sid}/revisions/1",
            f"/stories/{sid}/preview?revision=1",
            "/layouts",
            "/layouts/home",
            "/assets",
            f"/assets/{ASSET}",
            "/admin/users",
            "/admin/dead-letters",
        ]
        for path in pages:
            r = client.get(path)
            assert r.status_code == 200, (path, r.text)
            assert XSS not in r.text, path
            assert XSS_ESCAPED in r.text, path
        preview = client.get(f"/stories/{sid}/preview?revision=1").text
        assert preview.count(XSS_ESCAPED) >= 6  # title, dek, paragraph, heading, quote, caption


def test_security_headers(app: Any) -> None:
    with TestClient(app) as client:
        cookie = client.get("/login").headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=lax" in cookie and "secure" not in cookie
        for path in ("/login", "/nowhere", "/static/editor.css", "/api/stories"):
            r = client.get(path)
            assert r.headers["x-content-type-options"] == "nosniff", path
            assert r.headers["referrer-policy"] == "same-origin"
            assert r.headers["x-frame-options"] == "DENY"
            csp = r.headers["content-security-policy"]
            assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
            assert "frame-src 'none'" in csp
        assert client.get("/static/editor.css").headers["content-type"].startswith("text/css")


def test_internal_errors_are_plain_500s(
    app: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*a: Any, **k: Any) -> Any:
        raise RuntimeError("secret internals")

    with TestClient(app) as client:
        login(client)
        monkeypatch.setattr(CMS, "list_stories", broken)
        r = client.get("/")
        assert r.status_code == 500
        assert "Something went wrong on our side" in r.text
        assert "secret internals" not in r.text and "Traceback" not in r.text
        assert "secret internals" in caplog.text  # logged, with the reference
        r = client.get("/api/stories")
        assert r.status_code == 500 and "secret internals" not in r.text
        assert json.loads(r.text)["error"].startswith("Something went wrong")


def test_preview_without_a_dataset(sqlite_store: WriteStore, tmp_path: Path) -> None:
    app = make_app(sqlite_store, tmp_path, dataset=None)
    sid = CMS(sqlite_store).create_story({"title": "No dataset"}, user="ann").id
    with TestClient(app) as client:
        login(client)
        r = client.get(f"/stories/{sid}/preview")
        assert r.status_code == 503 and "Preview is not available" in r.text
        r = client.get("/lookup/titles?q=cleo")
        assert "Cleo from 5 to 7" in r.text and "<code>593</code>" in r.text
        r = client.get("/lookup/people?q=ann&format=json")
        assert r.json() == {"people": [{"id": 1, "name": "Ann Writer"}]}
