"""The CMS on a real write store (SQLite and PostgreSQL): stories with revisions, edit
conflicts, the publish lifecycle and the outbox events each change writes with it,
schedules, search, layouts, accounts and migrations."""

from __future__ import annotations

import json
import threading
from collections import Counter
from typing import Any

import pytest

from nearstate.content import accounts
from nearstate.content.cms import CMS, EditConflict, InvalidContent, NotFound
from nearstate.content.db import WriteStore, open_store
from nearstate.content.migrations import MIGRATIONS
from nearstate.errors import InputError

ASSET = "a-0123456789abcdef"
T0 = 1_700_000_000.0


class Clock:
    """A clock the test moves (the CMS takes its clock as a parameter)."""

    def __init__(self, t: float = T0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def seed(store: WriteStore) -> None:
    """A title (593, with a poster), a second title (600), a staff author (1), an image."""
    with store.transaction() as tx:
        tx.execute(
            "INSERT INTO assets (id, kind, filename, content_type, width, height, created_at)"
            " VALUES (?, 'image', 'x.jpg', 'image/jpeg', 1600, 900, 0)",
            (ASSET,),
        )
        tx.execute(
            "INSERT INTO titles (id, name, slug, year, genres, updated_at)"
            " VALUES (593, 'Cleo from 5 to 7', 'cleo-593', 1962, '[\"Drama\"]', 0)"
        )
        tx.execute(
            "INSERT INTO titles (id, name, slug, year, genres, updated_at)"
            " VALUES (600, 'Playtime', 'playtime-600', 1967, '[\"Comedy\"]', 0)"
        )
        tx.execute("INSERT INTO people (id, name, slug, staff) VALUES (1, 'Ann Writer', 'ann', 1)")


def full(title: str = "A Story", **over: Any) -> dict[str, Any]:
    """A story that can be published once ``seed`` ran."""
    data = {
        "title": title,
        "dek": "The line under the title",
        "hero": ASSET,
        "tags": ["Behind the Scenes"],
        "related": [593],
        "authors": [1],
        "body": [
            {"kind": "paragraph", "text": "Some words."},
            {"kind": "title", "title": 593},
        ],
    }
    data.update(over)
    return data


def events(store: WriteStore, subject: object | None = None) -> list[tuple[str, str, Any]]:
    rows = store.read("SELECT kind, subject, revision FROM outbox ORDER BY id")
    out = [(r["kind"], r["subject"], r["revision"]) for r in rows]
    return out if subject is None else [e for e in out if e[1] == str(subject)]


def count(store: WriteStore, table: str) -> int:
    return int(store.read_one(f"SELECT COUNT(*) AS n FROM {table}")["n"])


@pytest.fixture
def cms(write_store: WriteStore) -> CMS:
    seed(write_store)
    return CMS(write_store, clock=Clock())


# -- create, save, revisions, restore ------------------------------------------------------------


def test_create_save_revisions_restore(cms: CMS, write_store: WriteStore) -> None:
    clock: Clock = cms.clock  # type: ignore[assignment]
    s = cms.create_story({"title": "  First Title ", "dek": "one"}, user="ann")
    assert (s.revision, s.event) == (1, 1)
    st = cms.story(s.id)
    assert st["status"] == "draft" and st["revision"] == 1 and st["slug"] == "first-title"
    assert st["data"]["title"] == "First Title" and st["updated_by"] == "ann"
    assert st["published_revision"] is None and st["ingest_status"] == "pending"

    clock.t += 10
    s2 = cms.save_story(
        s.id, {"title": "Second", "dek": "two"}, base_revision=1, user="bob", note="tightened"
    )
    assert s2.revision == 2
    clock.t += 10
    s3 = cms.save_story(s.id, {"title": "Third", "slug": "my-slug"}, base_revision=2, user="cy")
    assert s3.revision == 3
    st = cms.story(s.id)
    assert (st["revision"], st["title"], st["slug"], st["updated_by"]) == (
        3,
        "Third",
        "my-slug",
        "cy",
    )
    assert st["updated_at"] == T0 + 20 and st["created_at"] == T0

    revs = cms.revisions(s.id)
    assert [r["revision"] for r in revs] == [3, 2, 1]
    assert [r["author"] for r in revs] == ["cy", "bob", "ann"]
    assert [r["note"] for r in revs] == ["", "tightened", "created"]
    assert cms.revision(s.id, 2)["data"]["dek"] == "two"
    assert cms.revision(s.id, 1)["data"]["title"] == "First Title"

    clock.t += 10
    r = cms.restore(s.id, 1, base_revision=3, user="dee")
    assert r.revision == 4
    st = cms.story(s.id)
    assert st["data"] == cms.revision(s.id, 1)["data"]
    assert (st["title"], st["slug"]) == ("First Title", "first-title")
    assert cms.revisions(s.id)[0]["note"] == "restored revision 1"
    # every change wrote one story event naming its revision
    assert events(write_store, s.id) == [("story", str(s.id), n) for n in (1, 2, 3, 4)]

    with pytest.raises(NotFound):
        cms.story(999)
    with pytest.raises(NotFound):
        cms.revisions(999)
    with pytest.raises(NotFound):
        cms.revision(s.id, 9)
    with pytest.raises(NotFound):
        cms.save_story(999, {"title": "x"}, base_revision=1, user="ann")
    with pytest.raises(NotFound):
        cms.restore(s.id, 9, base_revision=4, user="ann")


def test_invalid_content_is_refused_and_nothing_is_written(
    cms: CMS, write_store: WriteStore
) -> None:
    with pytest.raises(InvalidContent) as e:
        cms.create_story({"title": "", "body": [{"kind": "gallery"}]}, user="ann")
    assert [p.where for p in e.value.problems] == ["title", "body[1]"]
    assert count(write_store, "stories") == 0 and events(write_store) == []
    s = cms.create_story({"title": "Fine"}, user="ann")
    with pytest.raises(InvalidContent):
        cms.save_story(s.id, {"title": "x", "hero": "nope"}, base_revision=1, user="ann")
    assert cms.story(s.id)["revision"] == 1 and len(events(write_store)) == 1


def test_refs_of_the_newest_revision_are_recorded(cms: CMS, write_store: WriteStore) -> None:
    s = cms.create_story(full(), user="ann")
    refs = write_store.read(
        "SELECT kind, ref FROM story_refs WHERE story_id = ? ORDER BY kind, ref", (s.id,)
    )
    assert [(r["kind"], r["ref"]) for r in refs] == [
        ("asset", ASSET),
        ("person", "1"),
        ("title", "593"),
    ]
    cms.save_story(s.id, {"title": "T", "related": [600]}, base_revision=1, user="ann")
    refs = write_store.read("SELECT kind, ref FROM story_refs WHERE story_id = ?", (s.id,))
    assert [(r["kind"], r["ref"]) for r in refs] == [("title", "600")]
    # an asset change re-announces the stories showing it
    s2 = cms.create_story(full("Other"), user="ann")
    before = len(events(write_store))
    assert cms.asset_changed(ASSET) == 1
    assert events(write_store)[before:] == [("story", str(s2.id), None)]


# -- conflicts -----------------------------------------------------------------------------


def test_stale_base_revision_is_a_conflict_and_writes_nothing(
    cms: CMS, write_store: WriteStore
) -> None:
    clock: Clock = cms.clock  # type: ignore[assignment]
    s = cms.create_story({"title": "Shared"}, user="ann")
    clock.t += 5
    cms.save_story(s.id, {"title": "Bob's"}, base_revision=1, user="bob")
    n_events, n_revs = len(events(write_store)), count(write_store, "story_revisions")
    with pytest.raises(EditConflict) as e:
        cms.save_story(s.id, {"title": "Ann's"}, base_revision=1, user="ann")
    assert (e.value.base, e.value.current, e.value.by, e.value.at) == (1, 2, "bob", T0 + 5)
    assert "bob" in str(e.value) and "revision 2" in str(e.value)
    with pytest.raises(EditConflict):
        cms.restore(s.id, 1, base_revision=1, user="ann")
    with pytest.raises(EditConflict):
        cms.publish(s.id, user="ann", base_revision=1)
    with pytest.raises(EditConflict):
        cms.schedule(s.id, user="ann", publish_at=T0 + 100, base_revision=1)
    st = cms.story(s.id)
    assert (st["revision"], st["title"], st["status"]) == (2, "Bob's", "draft")
    assert count(write_store, "story_revisions") == n_revs
    assert len(events(write_store)) == n_events
    # a base from the future is a conflict too
    with pytest.raises(EditConflict):
        cms.save_story(s.id, {"title": "x"}, base_revision=7, user="ann")


def test_concurrent_saves_exactly_one_wins_per_revision(cms: CMS, write_store: WriteStore) -> None:
    s = cms.create_story({"title": "Contended"}, user="w0")
    threads_n, wins_each = 6, 4
    won: list[tuple[int, str]] = []
    conflicts = Counter[str]()
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(threads_n)

    def editor(i: int) -> None:
        me = f"w{i + 1}"
        try:
            start.wait()
            mine = 0
            while mine < wins_each:
                base = cms.story(s.id)["revision"]
                title = f"{me} edit {mine} on {base}"
                try:
                    saved = cms.save_story(s.id, {"title": title}, base_revision=base, user=me)
                except EditConflict:
                    with lock:
                        conflicts[me] += 1
                    continue
                assert saved.revision == base + 1
                with lock:
                    won.append((saved.revision, title))
                mine += 1
        except BaseException as e:
            errors.append(e)

    ts = [threading.Thread(target=editor, args=(i,)) for i in range(threads_n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    assert not errors, errors
    total = threads_n * wins_each
    assert len(won) == total
    # one winner per revision, and the revisions are consecutive
    assert sorted(r for r, _ in won) == list(range(2, total + 2))
    revs = cms.revisions(s.id)
    assert [r["revision"] for r in revs] == list(range(total + 1, 0, -1))
    # no lost update: each win is exactly the revision it produced
    for rev, title in won:
        assert cms.revision(s.id, rev)["data"]["title"] == title
        assert title.endswith(f"on {rev - 1}")
    assert cms.story(s.id)["revision"] == total + 1
    # one event per revision
    assert sorted(r for _, _, r in events(write_store, s.id)) == list(range(1, total + 2))


def test_slug_collision_names_the_slug_and_writes_nothing(
    cms: CMS, write_store: WriteStore
) -> None:
    a = cms.create_story({"title": "Same Name"}, user="ann")
    b = cms.create_story({"title": "Other", "slug": "other"}, user="ann")
    n_events, n_revs = len(events(write_store)), count(write_store, "story_revisions")
    with pytest.raises(InvalidContent) as e:
        cms.create_story({"title": "Same name!"}, user="bob")
    assert [(p.where, p.message) for p in e.value.problems] == [
        ("slug", "'same-name' is already used by another story")
    ]
    with pytest.raises(InvalidContent) as e:
        cms.save_story(b.id, {"title": "Other", "slug": "Same Name"}, base_revision=1, user="b")
    assert [p.where for p in e.value.problems] == ["slug"]
    assert count(write_store, "stories") == 2
    assert count(write_store, "story_revisions") == n_revs
    assert len(events(write_store)) == n_events
    assert cms.story(b.id)["slug"] == "other" and cms.story(b.id)["revision"] == 1
    # a story keeps its own slug on a save
    assert cms.save_story(a.id, {"title": "Same  NAME"}, base_revision=1, user="a").revision == 2
    # restoring a revision whose slug another story took since is refused too
    cms.save_story(a.id, {"title": "Renamed"}, base_revision=2, user="a")
    cms.save_story(b.id, {"title": "Other", "slug": "same-name"}, base_revision=1, user="b")
    with pytest.raises(InvalidContent) as e:
        cms.restore(a.id, 1, base_revision=3, user="a")
    assert [p.where for p in e.value.problems] == ["slug"]
    assert cms.story(a.id)["revision"] == 3


# -- the lifecycle -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"hero": None}, ["hero"]),
        ({"dek": ""}, ["dek"]),
        ({"authors": []}, ["authors"]),
        ({"body": [{"kind": "heading", "text": "H"}]}, ["body"]),
        (
            {"body": [{"kind": "paragraph", "text": "p"}, {"kind": "title", "title": 999}]},
            ["body[2].title"],
        ),
        ({"related": [598]}, ["related"]),
        ({"authors": [42]}, ["authors"]),
        ({"hero": "a-ffffffffffffffff"}, ["hero"]),
        ({"hero": None, "dek": "", "authors": [], "body": []}, ["dek", "hero", "authors", "body"]),
    ],
)
def test_publish_refused_with_problems_changes_nothing(
    cms: CMS, write_store: WriteStore, change: dict[str, Any], where: list[str]
) -> None:
    s = cms.create_story(full(**change), user="ann")
    n_events = len(events(write_store))
    with pytest.raises(InvalidContent) as e:
        cms.publish(s.id, user="ann", base_revision=1)
    assert sorted(p.where for p in e.value.problems) == sorted(where)
    with pytest.raises(InvalidContent):
        cms.schedule(s.id, user="ann", publish_at=T0 + 60)
    st = cms.story(s.id)
    assert (st["status"], st["published_revision"], st["published_at"]) == ("draft", None, None)
    assert st["publish_at"] is None
    assert len(events(write_store)) == n_events
    assert count(write_store, "story_tags") == 0


def test_publish_unpublish_and_their_events(cms: CMS, write_store: WriteStore) -> None:
    clock: Clock = cms.clock  # type: ignore[assignment]
    s = cms.create_story(full(), user="ann")
    clock.t += 1
    p = cms.publish(s.id, user="ed", base_revision=1)
    assert p.revision == 1
    st = cms.story(s.id)
    assert (st["status"], st["published_revision"], st["published_at"]) == ("published", 1, T0 + 1)
    assert st["updated_by"] == "ed"
    tags = write_store.read("SELECT tag FROM story_tags WHERE story_id = ?", (s.id,))
    assert [t["tag"] for t in tags] == ["behind-the-scenes"]
    assert events(write_store) == [
        ("story", str(s.id), 1),
        ("story", str(s.id), 1),
        ("layouts", "all", None),
    ]

    # a later save is a draft: the published revision stays
    clock.t += 1
    cms.save_story(s.id, full("Edited", tags=["New Tag"]), base_revision=1, user="ed")
    st = cms.story(s.id)
    assert (st["status"], st["revision"], st["published_revision"]) == ("published", 2, 1)
    tags = write_store.read("SELECT tag FROM story_tags WHERE story_id = ?", (s.id,))
    assert [t["tag"] for t in tags] == ["behind-the-scenes"]  # tags of the published one

    # publishing again publishes the newest; published_at stays the first publication
    clock.t += 1
    cms.publish(s.id, user="ed")
    st = cms.story(s.id)
    assert (st["published_revision"], st["published_at"]) == (2, T0 + 1)
    tags = write_store.read("SELECT tag FROM story_tags WHERE story_id = ?", (s.id,))
    assert [t["tag"] for t in tags] == ["new-tag"]

    clock.t += 1
    before = len(events(write_store))
    cms.unpublish(s.id, user="ed")
    st = cms.story(s.id)
    assert (st["status"], st["published_revision"]) == ("unpublished", None)
    assert count(write_store, "story_tags") == 0
    assert events(write_store)[before:] == [("story", str(s.id), 2), ("layouts", "all", None)]
    assert cms.revisions(s.id)[0]["revision"] == 2  # revisions stay
    # per story: 2 saves + 2 publishes + 1 unpublish, each exactly one story event
    assert len(events(write_store, s.id)) == 5
    assert Counter(k for k, _, _ in events(write_store)) == {"story": 5, "layouts": 3}


def test_schedule_transitions_and_events(cms: CMS, write_store: WriteStore) -> None:
    clock: Clock = cms.clock  # type: ignore[assignment]
    s = cms.create_story(full(), user="ann")
    # refused schedules write nothing
    for pub, unpub in ((T0 - 1, None), (T0, None), (None, None), (T0 + 100, T0 + 50)):
        with pytest.raises(InvalidContent) as e:
            cms.schedule(s.id, user="ann", publish_at=pub, unpublish_at=unpub)
        assert "the schedule was not saved" in str(e.value)
    with pytest.raises(InvalidContent) as e:  # a draft cannot be unpublished on a schedule
        cms.schedule(s.id, user="ann", publish_at=None, unpublish_at=T0 + 100)
    assert [p.where for p in e.value.problems] == ["unpublish_at"]
    assert len(events(write_store)) == 1 and cms.story(s.id)["status"] == "draft"

    sch = cms.schedule(s.id, user="ed", publish_at=T0 + 100, unpublish_at=T0 + 200, base_revision=1)
    assert sch.revision == 1
    st = cms.story(s.id)
    assert (st["status"], st["publish_at"], st["unpublish_at"]) == ("scheduled", T0 + 100, T0 + 200)
    assert st["published_revision"] is None
    assert events(write_store, s.id) == [("story", str(s.id), 1)] * 2
    assert count(write_store, "story_tags") == 0

    assert cms.run_schedules(T0 + 99) == []
    # a save while scheduled: the newest revision is what gets published
    cms.save_story(s.id, full("Newer"), base_revision=1, user="ed")
    n = len(events(write_store))
    assert cms.run_schedules(T0 + 100) == [(s.id, "published")]
    st = cms.story(s.id)
    assert (st["status"], st["published_revision"], st["publish_at"]) == ("published", 2, None)
    assert st["published_at"] == T0 + 100 and st["unpublish_at"] == T0 + 200
    assert events(write_store)[n:] == [("story", str(s.id), 2), ("layouts", "all", None)]
    assert [t["tag"] for t in write_store.read("SELECT tag FROM story_tags")] == [
        "behind-the-scenes"
    ]
    assert cms.run_schedules(T0 + 150) == []  # nothing due: nothing written
    assert len(events(write_store)) == n + 2

    assert cms.run_schedules(T0 + 200) == [(s.id, "unpublished")]
    st = cms.story(s.id)
    assert (st["status"], st["published_revision"], st["unpublish_at"]) == (
        "unpublished",
        None,
        None,
    )
    assert count(write_store, "story_tags") == 0
    assert len(events(write_store)) == n + 4
    assert cms.run_schedules(T0 + 300) == []

    # a published story can be unpublished on a schedule and stays published until then
    clock.t = T0 + 400
    cms.publish(s.id, user="ed")
    cms.schedule(s.id, user="ed", publish_at=None, unpublish_at=T0 + 500)
    assert cms.story(s.id)["status"] == "published"
    assert cms.run_schedules(T0 + 500) == [(s.id, "unpublished")]


def test_run_schedules_cancels_a_publish_that_became_invalid(
    cms: CMS, write_store: WriteStore
) -> None:
    s = cms.create_story(full(), user="ann")
    cms.schedule(s.id, user="ed", publish_at=T0 + 100)
    # after scheduling, the newest revision loses its dek and refers to a missing title
    cms.save_story(
        s.id,
        full(dek="", body=[{"kind": "paragraph", "text": "p"}, {"kind": "title", "title": 77}]),
        base_revision=1,
        user="ed",
    )
    n = len(events(write_store))
    assert cms.run_schedules(T0 + 100) == [(s.id, "publish cancelled")]
    st = cms.story(s.id)
    assert (st["status"], st["publish_at"], st["published_revision"]) == ("draft", None, None)
    status = cms.ingest_status(s.id)
    assert status["revision"] == 2 and status["status"] == "invalid"
    assert {e["where"] for e in status["errors"]} == {"scheduled publish"}
    messages = " ".join(e["message"] for e in status["errors"])
    assert "cancelled: body[2].title" in messages and "cancelled: dek" in messages
    assert cms.ingest_status(s.id, 1)["status"] == "pending"  # the older one untouched
    assert count(write_store, "story_tags") == 0
    assert events(write_store)[n:] == [("story", str(s.id), 2), ("layouts", "all", None)]
    assert cms.run_schedules(T0 + 1000) == []  # cancelled for good


# -- lists and lookups ---------------------------------------------------------------------


def test_list_stories_search_and_status(cms: CMS) -> None:
    clock: Clock = cms.clock  # type: ignore[assignment]
    ids = {}
    for title in (
        "Stranger Things returns",
        "The Crown: final season",
        "Crème brûlée",
        "Things we lost",
    ):
        clock.t += 1
        ids[title] = cms.create_story(full(title), user="ann").id
    clock.t += 1
    cms.publish(ids["The Crown: final season"], user="ann")

    def titles(q: str = "", **kw: Any) -> list[str]:
        return [r["title"] for r in cms.list_stories(q, **kw)]

    # newest change first
    assert titles() == [
        "The Crown: final season",
        "Things we lost",
        "Crème brûlée",
        "Stranger Things returns",
    ]
    assert titles("things") == ["Things we lost", "Stranger Things returns"]
    assert titles("THINGS stranger") == ["Stranger Things returns"]
    assert titles("creme") == ["Crème brûlée"]  # matched through the slug
    assert titles("nothing-like-it") == []
    assert titles(status="published") == ["The Crown: final season"]
    assert titles("things", status="published") == []
    assert titles(status="draft", limit=2) == ["Things we lost", "Crème brûlée"]
    assert titles(status="draft", limit=2, offset=2) == ["Stranger Things returns"]
    row = cms.list_stories("crown")[0]
    assert row["status"] == "published" and row["ingest_status"] == "pending"
    assert row["published_revision"] == 1
    with pytest.raises(InputError):
        cms.list_stories(status="live")


def test_find_titles_people_and_staff(cms: CMS, write_store: WriteStore) -> None:
    assert [t["id"] for t in cms.find_titles("cleo")] == [593]
    assert [t["id"] for t in cms.find_titles("593")] == [593]
    assert [t["id"] for t in cms.find_titles("")] == []
    assert [t["id"] for t in cms.find_titles("play TIME")] == [600]
    pid = cms.add_staff("  Bea   Critic ")
    assert pid == 2
    assert cms.add_staff("Bea Critic") == pid
    assert [p["name"] for p in cms.find_people("")] == ["Ann Writer", "Bea Critic"]
    assert [p["id"] for p in cms.find_people("critic")] == [pid]
    assert events(write_store)[-1] == ("people", "staff", None)
    with pytest.raises(InvalidContent):
        cms.add_staff("   ")


# -- layouts -------------------------------------------------------------------------------


def test_layouts_create_save_conflict_validate(cms: CMS, write_store: WriteStore) -> None:
    clock: Clock = cms.clock  # type: ignore[assignment]
    rows = [{"heading": "Latest", "kind": "tag", "tag": "Behind the Scenes", "limit": 5}]
    s = cms.save_layout("home", name="Home", rows=rows, user="ann", base_revision=None)
    assert (s.id, s.revision) == ("home", 1)
    lay = cms.layout("home")
    assert lay["data"] == {
        "rows": [{"heading": "Latest", "kind": "tag", "tag": "behind-the-scenes", "limit": 5}]
    }
    assert (lay["name"], lay["revision"], lay["ingest_status"]) == ("Home", 1, "pending")
    assert events(write_store) == [("layout", "home", 1)]

    with pytest.raises(InvalidContent) as e:
        cms.save_layout("home", name="Again", rows=rows, user="bob", base_revision=None)
    assert [p.where for p in e.value.problems] == ["id"]

    clock.t += 3
    s2 = cms.save_layout(
        "home",
        name="Home page",
        rows=[{"heading": "Picks", "kind": "stories", "ids": [1, 2]}],
        user="bob",
        base_revision=1,
    )
    assert s2.revision == 2
    with pytest.raises(EditConflict) as e:
        cms.save_layout("home", name="Mine", rows=rows, user="ann", base_revision=1)
    assert (e.value.current, e.value.by, e.value.at) == (2, "bob", T0 + 3)
    lay = cms.layout("home")
    assert (lay["name"], lay["revision"]) == ("Home page", 2)
    with pytest.raises(NotFound):
        cms.save_layout("nope", name="x", rows=rows, user="ann", base_revision=1)
    with pytest.raises(NotFound):
        cms.layout("nope")

    n = len(events(write_store))
    with pytest.raises(InvalidContent) as e:
        cms.save_layout("Home Page", name="", rows=[{"kind": "x"}], user="ann", base_revision=None)
    assert [p.where for p in e.value.problems] == ["id", "name", "rows[1].heading", "rows[1].kind"]
    assert len(events(write_store)) == n
    assert [r["id"] for r in cms.layouts()] == ["home"]
    assert events(write_store) == [("layout", "home", 1), ("layout", "home", 2)]


# -- accounts ------------------------------------------------------------------------------


def test_password_hashing() -> None:
    h = accounts.hash_password("correct horse battery")
    assert h.startswith("scrypt$") and "correct" not in h
    assert accounts.verify_password("correct horse battery", h)
    assert not accounts.verify_password("correct horse batterY", h)
    assert accounts.hash_password("correct horse battery") != h  # salted
    for broken in ("", "plain", "md5$1$2$3$4$5", h.replace("scrypt", "bcrypt"), h[:-8]):
        assert not accounts.verify_password("correct horse battery", broken)


def test_accounts(write_store: WriteStore) -> None:
    uid = accounts.create_user(
        write_store, " Ann ", "a long password", role="admin", display_name="Ann A."
    )
    user = accounts.authenticate(write_store, "ANN", "a long password")
    assert user == {"id": uid, "username": "ann", "display_name": "Ann A.", "role": "admin"}
    assert accounts.authenticate(write_store, "ann", "a wrong password") is None
    assert accounts.authenticate(write_store, "nobody", "a long password") is None
    with pytest.raises(InputError, match="already taken"):
        accounts.create_user(write_store, "ANN", "another long password")
    with pytest.raises(InputError, match="at least 10"):
        accounts.create_user(write_store, "bob", "short")
    with pytest.raises(InputError, match="role 'owner'"):
        accounts.create_user(write_store, "bob", "a long password", role="owner")
    for bad in ("b", "bob smith", "-bob", "x" * 41, "bøb"):
        with pytest.raises(InputError, match="username"):
            accounts.create_user(write_store, bad, "a long password")
    assert [u["username"] for u in accounts.users(write_store)] == ["ann"]
    accounts.set_password(write_store, "ann", "a new long password")
    assert accounts.authenticate(write_store, "ann", "a long password") is None
    assert accounts.authenticate(write_store, "ann", "a new long password") is not None
    with pytest.raises(InputError):
        accounts.set_password(write_store, "nobody", "a new long password")
    with pytest.raises(InputError):
        accounts.set_password(write_store, "ann", "short")


# -- migrations ----------------------------------------------------------------------------


def test_migrations_are_idempotent(store_url: str) -> None:
    store = open_store(store_url, migrate=False)
    try:
        assert store.schema_version() == 0
        assert store.migrate() == [n for n, _, _ in MIGRATIONS]
        assert store.schema_version() == MIGRATIONS[-1][0]
        assert store.migrate() == []
        assert store.schema_version() == MIGRATIONS[-1][0]
        applied = store.read("SELECT version, name FROM schema_migrations ORDER BY version")
        assert [(r["version"], r["name"]) for r in applied] == [(n, m) for n, m, _ in MIGRATIONS]
        # a new migration is applied once, after the others
        extra = [*MIGRATIONS, (99, "extra", "CREATE TABLE extra (x INTEGER)")]
        assert store.migrate(extra) == [99]
        assert store.migrate(extra) == []
        assert store.schema_version() == 99
        # a failing migration is not recorded, and leaves nothing behind
        broken = [*extra, (100, "broken", "CREATE TABLE half (x INTEGER);\nNOT SQL AT ALL")]
        with pytest.raises(Exception, match="NOT SQL"):
            store.migrate(broken)
        assert store.schema_version() == 99
        with store.transaction() as tx:
            tx.execute("CREATE TABLE half (y INTEGER)")  # the first statement was rolled back
    finally:
        store.close()
    again = open_store(store_url)  # opening migrates: nothing to do
    try:
        assert again.migrate() == [] and again.schema_version() == 99
    finally:
        again.close()


def test_concurrent_migrations_apply_once(store_url: str, request: pytest.FixtureRequest) -> None:
    """``migrate`` says it is safe to run from several processes at once."""
    stores = [open_store(store_url, migrate=False) for _ in range(4)]
    for s in stores:  # connected one by one: what runs at once is migrate alone
        s.read("SELECT 1")
    results: list[list[int]] = []
    errors: list[BaseException] = []
    go = threading.Barrier(len(stores))

    def run(s: WriteStore) -> None:
        try:
            go.wait()
            results.append(s.migrate())
        except BaseException as e:
            errors.append(e)

    ts = [threading.Thread(target=run, args=(s,)) for s in stores]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    try:
        assert not errors, errors
        # each migration applied exactly once, by whichever store got to it first
        applied = sorted(n for r in results for n in r)
        assert applied == [n for n, _, _ in MIGRATIONS] and len(results) == len(stores)
        assert stores[0].schema_version() == MIGRATIONS[-1][0]
    finally:
        for s in stores:
            s.close()


def test_json_columns_round_trip_unicode(cms: CMS, write_store: WriteStore) -> None:
    s = cms.create_story({"title": "Zoë’s “quotes” 日本", "dek": "100% _done_"}, user="ann")
    raw = write_store.read_one("SELECT data FROM story_revisions WHERE story_id = ?", (s.id,))
    assert json.loads(raw["data"])["title"] == "Zoë’s “quotes” 日本"
    assert [r["id"] for r in cms.list_stories("zoë")] == [s.id]
