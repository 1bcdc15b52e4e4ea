"""The ingestion pipeline end to end, on a real write store (SQLite and PostgreSQL) and a
real local nearstate dataset: outbox events in, render-ready records out."""

from __future__ import annotations

import datetime as dt
import sqlite3
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import nearstate
from nearstate.backends.local_log import LocalLog
from nearstate.consumer import Consumer
from nearstate.content import outbox
from nearstate.content.cms import CMS
from nearstate.content.db import StoreError, WriteStore
from nearstate.content.ingest import Ingestor, IngestWorker
from nearstate.content.media import MediaConfig, asset_url
from nearstate.content.records import SCHEMA
from nearstate.errors import ConflictError
from nearstate.writer import Writer

HERO = "a-0000000000000001"  # JPEG
BODY_IMG = "a-0000000000000002"  # PNG
POSTER = "a-0000000000000003"  # WebP, the poster of title 593
PH = "ph-600"  # a generated placeholder poster, title 600's
BASE = "https://cdn.example.com/m/"  # a trailing slash: URLs must not get "//"
T0 = 1_700_000_000.0


class Clock:
    def __init__(self, t: float = T0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def seed(store: WriteStore) -> None:
    """Assets, four titles with genres and credits, three people."""
    with store.transaction() as tx:
        for aid, ct, w, h, alt, fx, fy, kind in (
            (HERO, "image/jpeg", 1600, 900, "The hero", 0.25, 0.75, "image"),
            (BODY_IMG, "image/png", 800, 600, "A still", 0.5, 0.5, "image"),
            (POSTER, "image/webp", 600, 900, "Cleo's poster", 0.5, 0.5, "image"),
            (PH, "image/svg+xml", 600, 900, "", 0.5, 0.5, "placeholder"),
        ):
            tx.execute(
                "INSERT INTO assets (id, kind, filename, content_type, width, height, alt,"
                " focal_x, focal_y, created_at) VALUES (?, ?, 'f', ?, ?, ?, ?, ?, ?, 0)",
                (aid, kind, ct, w, h, alt, fx, fy),
            )
        for tid, name, year, genres, poster in (
            (593, "Cleo from 5 to 7", 1962, ["Drama"], POSTER),
            (600, "Playtime", 1967, ["Comedy"], PH),
            (601, "Mixed Feelings", 1970, ["Drama", "Comedy", "Crime"], None),
            (602, "No Poster", None, [], None),
        ):
            tx.execute(
                "INSERT INTO titles (id, name, slug, year, runtime, genres, language, country,"
                " awards, poster_asset, updated_at) VALUES (?, ?, ?, ?, 90, ?, 'French',"
                " 'France', 'Some', ?, 0)",
                (tid, name, f"t-{tid}", year, _json(genres), poster),
            )
            for g in genres:
                tx.execute("INSERT INTO title_genres (genre, title_id) VALUES (?, ?)", (g, tid))
        for pid, name, staff in ((1, "Ann Writer", 1), (2, "Bo Critic", 1), (3, "Agnès V", 0)):
            tx.execute(
                "INSERT INTO people (id, name, slug, staff) VALUES (?, ?, ?, ?)",
                (pid, name, f"p-{pid}", staff),
            )
        for title, role, pos, person in (
            (593, "director", 0, 3),
            (593, "writer", 0, 3),
            (593, "cast", 1, 2),
            (593, "cast", 0, 1),
            (601, "director", 0, 3),
        ):
            tx.execute(
                "INSERT INTO title_people (title_id, role, position, person_id)"
                " VALUES (?, ?, ?, ?)",
                (title, role, pos, person),
            )


def _json(v: Any) -> str:
    import json

    return json.dumps(v)


@dataclass
class Env:
    store: WriteStore
    ds: Any
    writer: Writer
    media: MediaConfig
    ingestor: Ingestor
    worker: IngestWorker
    consumer: Consumer
    cms: CMS
    clock: Clock
    path: Path

    def drain(self) -> int:
        return self.worker.drain(timeout=30)

    def draft(self, sid: int) -> dict[str, Any] | None:
        return self._get("DraftStory", sid)

    def live(self, sid: int) -> dict[str, Any] | None:
        return self._get("Story", sid)

    def _get(self, type_name: str, key: Any) -> dict[str, Any] | None:
        if self.ds.log.head() == 0:
            return None  # nothing written yet (a strong read would wait for a first write)
        state = self.consumer.sync()
        try:
            t = state[type_name]
        except KeyError:
            return None
        r = t.get(key)
        return None if r is None else r.to_dict()

    def status(self, sid: int, rev: int | None = None) -> dict[str, Any]:
        return self.cms.ingest_status(sid, rev)


@pytest.fixture
def env(write_store: WriteStore, tmp_path: Path) -> Env:
    seed(write_store)
    ds = nearstate.open(tmp_path / "ds")
    w = ds.writer(schema=SCHEMA)
    media = MediaConfig(root=tmp_path / "media", base_url=BASE)
    ing = Ingestor(write_store, w, media)
    clock = Clock()
    return Env(
        write_store,
        ds,
        w,
        media,
        ing,
        IngestWorker(ing, max_attempts=3),
        ds.consumer(),
        CMS(write_store, clock=clock),
        clock,
        tmp_path / "ds",
    )


def image(aid: str, ext: str, w: int, h: int, alt: str, fx: float = 0.5, fy: float = 0.5):
    return {
        "asset": aid,
        "alt": alt,
        "width": w,
        "height": h,
        "focal_x": fx,
        "focal_y": fy,
        "small": f"https://cdn.example.com/m/{aid}/small.{ext}",
        "medium": f"https://cdn.example.com/m/{aid}/medium.{ext}",
        "large": f"https://cdn.example.com/m/{aid}/large.{ext}",
    }


HERO_IMG = image(HERO, "jpg", 1600, 900, "The hero", 0.25, 0.75)
BODY_IMAGE = image(BODY_IMG, "png", 800, 600, "A still")
POSTER_IMG = image(POSTER, "webp", 600, 900, "Cleo's poster")
PH_IMG = image(PH, "svg", 600, 900, "")
CARD_593 = {
    "id": 593,
    "slug": "t-593",
    "name": "Cleo from 5 to 7",
    "year": 1962,
    "genres": ["Drama"],
    "poster": POSTER_IMG,
}
CARD_600 = {
    "id": 600,
    "slug": "t-600",
    "name": "Playtime",
    "year": 1967,
    "genres": ["Comedy"],
    "poster": PH_IMG,
}
CARD_601 = {
    "id": 601,
    "slug": "t-601",
    "name": "Mixed Feelings",
    "year": 1970,
    "genres": ["Drama", "Comedy", "Crime"],
    "poster": None,
}
BLANK = {"text": "", "level": 0, "cite": "", "image": None, "title": None, "video": ""}


def full(title: str = "A Story", **over: Any) -> dict[str, Any]:
    data = {
        "title": title,
        "dek": "The line under the title",
        "hero": HERO,
        "tags": ["Behind the Scenes", "Interviews"],
        "related": [600, 593],
        "authors": [2, 1],
        "body": [
            {"kind": "paragraph", "text": "Opening words of the story."},
            {"kind": "heading", "text": "Part two", "level": 3},
            {"kind": "image", "asset": BODY_IMG, "text": "A caption"},
            {"kind": "title", "title": 601},
            {"kind": "quote", "text": "A line.", "cite": "Someone"},
            {"kind": "title", "title": 593},
            {"kind": "video", "url": "https://www.youtube.com/watch?v=dQw4w9WgXcQ"},
        ],
    }
    data.update(over)
    return data


def when(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.UTC)


# -- a story, resolved field by field ------------------------------------------------------


def test_asset_url_is_what_records_carry(env: Env) -> None:
    row = {"id": HERO, "kind": "image", "content_type": "image/jpeg"}
    assert asset_url(env.media, row, "small") == HERO_IMG["small"]


def test_story_is_resolved_into_a_render_ready_draft(env: Env) -> None:
    s = env.cms.create_story(full(), user="ann")
    assert env.drain() == 1
    st = env.status(s.id)
    assert (st["revision"], st["status"], st["errors"]) == (1, "ok", [])
    assert isinstance(st["token"], int) and st["token"] > 0
    env.consumer.wait_for(st["token"])
    d = env.draft(s.id)
    assert d is not None
    created = env.cms.revision(s.id, 1)["created_at"]
    assert d == {
        "id": s.id,
        "slug": "a-story",
        "title": "A Story",
        "dek": "The line under the title",
        "excerpt": "The line under the title",
        "reading_minutes": 1,
        "body": [
            {**BLANK, "kind": "paragraph", "text": "Opening words of the story."},
            {**BLANK, "kind": "heading", "text": "Part two", "level": 3},
            {**BLANK, "kind": "image", "text": "A caption", "image": BODY_IMAGE},
            {**BLANK, "kind": "title", "title": CARD_601},
            {**BLANK, "kind": "quote", "text": "A line.", "cite": "Someone"},
            {**BLANK, "kind": "title", "title": CARD_593},
            {
                **BLANK,
                "kind": "video",
                "video": "https://www.youtube-nocookie.com/embed/dQw4w9WgXcQ",
            },
        ],
        "hero": HERO_IMG,
        "card": HERO_IMG,
        "tags": ["behind-the-scenes", "interviews"],
        # Drama: 593 (related), 601, 593 (body) = 3; Comedy: 600, 601 = 2; Crime 1
        "genres": ["Drama", "Comedy", "Crime"],
        "related": [CARD_600, CARD_593],
        "authors": [
            {"id": 2, "slug": "p-2", "name": "Bo Critic"},
            {"id": 1, "slug": "p-1", "name": "Ann Writer"},
        ],
        "revision": 1,
        "updated_at": when(created),
        "published_at": None,
        "search_text": "\n".join(
            [
                "A Story",
                "The line under the title",
                "Opening words of the story.\nPart two\nA line.",
                "behind-the-scenes interviews",
                "Playtime Cleo from 5 to 7",
                "Bo Critic Ann Writer",
            ]
        ),
        "status": "draft",
        "publish_at": None,
        "unpublish_at": None,
    }
    assert env.live(s.id) is None  # a draft never appears in Story


def test_excerpt_and_reading_time_without_a_dek(env: Env) -> None:
    words = " ".join(f"w{i}" for i in range(500))
    s = env.cms.create_story(
        {
            "title": "Long",
            "body": [{"kind": "heading", "text": "Skip me"}, {"kind": "paragraph", "text": words}],
        },
        user="ann",
    )
    env.drain()
    d = env.draft(s.id)
    assert d is not None
    assert d["reading_minutes"] == 3  # 502 words at 230 a minute
    assert d["excerpt"].endswith("…") and len(d["excerpt"]) <= 220
    assert words.startswith(d["excerpt"][:-1])
    assert d["hero"] is None and d["card"] is None and d["genres"] == []


@pytest.mark.parametrize(
    ("over", "card"),
    [
        ({}, HERO_IMG),
        ({"hero": None}, BODY_IMAGE),  # the first image of the body
        ({"hero": None, "body": [{"kind": "paragraph", "text": "p"}]}, PH_IMG),  # 600 first
        ({"hero": None, "body": [], "related": [601, 602, 593]}, POSTER_IMG),  # skip no-poster
        ({"hero": None, "body": [], "related": [601, 602]}, None),
    ],
)
def test_card_image_fallback_order(env: Env, over: dict[str, Any], card: Any) -> None:
    s = env.cms.create_story(full(**over), user="ann")
    env.drain()
    d = env.draft(s.id)
    assert d is not None and d["card"] == card


# -- drafts and published stories ----------------------------------------------------------


def test_draft_and_published_are_kept_apart(env: Env) -> None:
    s = env.cms.create_story(full("First"), user="ann")
    env.drain()
    assert env.live(s.id) is None and env.draft(s.id)["title"] == "First"

    env.clock.t += 10
    env.cms.publish(s.id, user="ann", base_revision=1)
    env.drain()
    live = env.live(s.id)
    assert live is not None and (live["revision"], live["title"]) == (1, "First")
    assert live["published_at"] == when(T0 + 10)
    d = env.draft(s.id)
    assert d["status"] == "published" and d["published_at"] == when(T0 + 10)
    # the live record is the draft's fields without the draft-only ones
    assert {k: v for k, v in d.items() if k not in ("status", "publish_at", "unpublish_at")} == live

    env.clock.t += 10
    env.cms.save_story(s.id, full("Second"), base_revision=1, user="ann")
    env.drain()
    assert (env.draft(s.id)["revision"], env.draft(s.id)["title"]) == (2, "Second")
    assert (env.live(s.id)["revision"], env.live(s.id)["title"]) == (1, "First")

    env.cms.publish(s.id, user="ann", base_revision=2)
    env.drain()
    assert (env.live(s.id)["revision"], env.live(s.id)["title"]) == (2, "Second")
    assert env.live(s.id)["published_at"] == when(T0 + 10)  # first publication

    env.cms.unpublish(s.id, user="ann")
    env.drain()
    assert env.live(s.id) is None
    d = env.draft(s.id)
    assert d is not None and d["status"] == "unpublished" and d["revision"] == 2


def test_scheduled_publish_through_the_worker(env: Env) -> None:
    s = env.cms.create_story(full(), user="ann")
    env.cms.schedule(s.id, user="ann", publish_at=T0 + 60, unpublish_at=T0 + 120)
    env.drain()
    d = env.draft(s.id)
    assert d["status"] == "scheduled" and d["publish_at"] == when(T0 + 60)
    assert d["unpublish_at"] == when(T0 + 120)
    assert env.live(s.id) is None
    env.cms.run_schedules(T0 + 60)
    env.drain()
    assert env.live(s.id)["revision"] == 1
    env.cms.run_schedules(T0 + 120)
    env.drain()
    assert env.live(s.id) is None and env.draft(s.id)["status"] == "unpublished"


def test_a_cancelled_publish_keeps_its_problems_after_ingestion(env: Env) -> None:
    s = env.cms.create_story(full(), user="ann")
    env.cms.schedule(s.id, user="ann", publish_at=T0 + 60)
    env.cms.save_story(s.id, full(dek=""), base_revision=1, user="ann")
    assert env.cms.run_schedules(T0 + 60) == [(s.id, "publish cancelled")]
    errors = env.status(s.id)["errors"]
    assert [e["where"] for e in errors] == ["scheduled publish"]
    assert "dek" in errors[0]["message"] and errors[0]["message"].startswith("cancelled")
    env.drain()
    assert env.live(s.id) is None
    assert env.status(s.id)["errors"] == errors  # ingesting the draft keeps why
    assert env.status(s.id)["status"] == "invalid"


# -- invalid references, tokens, superseded revisions --------------------------------------


def test_invalid_references_write_nothing(env: Env) -> None:
    bad = env.cms.create_story(
        full("Bad", related=[999], authors=[1, 77], hero="a-00000000000000ff"), user="ann"
    )
    env.drain()
    st = env.status(bad.id)
    assert st["status"] == "invalid" and st["token"] is None
    assert [(e["where"], e["message"]) for e in st["errors"]] == [
        ("hero", "asset a-00000000000000ff does not exist"),
        ("related", "title 999 does not exist"),
        ("authors", "person 77 does not exist"),
    ]
    assert env.draft(bad.id) is None and env.live(bad.id) is None

    # a valid story, published; then an invalid revision: the records keep the valid one
    s = env.cms.create_story(full("Good"), user="ann")
    env.cms.publish(s.id, user="ann")
    env.drain()
    env.cms.save_story(
        s.id, full("Broken", body=[{"kind": "title", "title": 998}]), base_revision=1, user="a"
    )
    env.drain()
    st = env.status(s.id)
    assert st["status"] == "invalid"
    assert st["errors"] == [{"where": "body[1].title", "message": "title 998 does not exist"}]
    assert env.draft(s.id)["title"] == "Good" and env.draft(s.id)["revision"] == 1
    assert env.live(s.id)["title"] == "Good"
    # fixing the reference makes it through
    with env.store.transaction() as tx:
        tx.execute(
            "INSERT INTO titles (id, name, slug, genres, updated_at)"
            " VALUES (998, 'Late', 't-998', '[\"Horror\"]', 0)"
        )
    env.cms.asset_changed(HERO)  # any re-announcement of the story will do
    env.drain()
    assert env.status(s.id)["status"] == "ok"
    d = env.draft(s.id)
    assert (d["title"], d["revision"], d["body"][0]["title"]["name"]) == ("Broken", 2, "Late")


def test_tokens_are_recorded_and_older_pending_revisions_superseded(env: Env) -> None:
    s = env.cms.create_story(full("v1"), user="ann")
    env.cms.save_story(s.id, full("v2"), base_revision=1, user="ann")
    env.cms.save_story(s.id, full("v3"), base_revision=2, user="ann")
    # one event: the newest revision is read from the store, whatever the event says
    ev = outbox.claim(env.store, "test")
    assert ev is not None and ev.revision == 1
    out = env.ingestor.process(ev)
    assert out.token is not None and out.records == 1
    revs = {r["revision"]: r for r in env.cms.revisions(s.id)}
    assert revs[3]["ingest_status"] == "ok" and revs[3]["token"] == int(out.token)
    assert [revs[n]["ingest_status"] for n in (1, 2)] == ["superseded", "superseded"]
    assert revs[1]["token"] == revs[2]["token"] == int(out.token)
    state = env.consumer.wait_for(out.token)
    assert state["DraftStory"].get(s.id).revision == 3
    assert state["DraftStory"].get(s.id).title == "v3"
    # a token waits for exactly its revision: the next save's token shows the next one
    env.drain()
    env.cms.save_story(s.id, full("v4"), base_revision=3, user="ann")
    env.drain()
    st = env.status(s.id)
    assert st["status"] == "ok" and st["token"] > int(out.token)
    assert env.consumer.wait_for(st["token"])["DraftStory"].get(s.id).title == "v4"
    assert env.status(s.id, 3)["status"] == "ok"  # an ingested revision is not superseded


def test_processing_an_event_twice_leaves_the_same_records(env: Env) -> None:
    s = env.cms.create_story(full(), user="ann")
    env.cms.publish(s.id, user="ann")
    events = [outbox.Event.from_row(r) for r in env.store.read("SELECT * FROM outbox")]
    for ev in events:
        env.ingestor.process(ev)
    first = (env.draft(s.id), env.live(s.id))
    for ev in events:  # again, as after a crash before the events were marked done
        env.ingestor.process(ev)
    assert (env.draft(s.id), env.live(s.id)) == first
    assert first[1] is not None
    assert env.store.read("SELECT status FROM outbox WHERE status <> 'done'") == []


# -- layouts -------------------------------------------------------------------------------


def test_layout_rows(env: Env) -> None:
    ids = []
    for i, tags in enumerate((["bts"], ["bts"], ["other"], ["bts"], ["bts"])):
        env.clock.t = T0 + i
        ids.append(env.cms.create_story(full(f"S{i}", tags=tags), user="ann").id)
    for i in (0, 1, 2, 3):  # 4 stays a draft
        env.clock.t = T0 + 100 + i
        env.cms.publish(ids[i], user="ann")
    rows = [
        {"heading": "Picks", "kind": "stories", "ids": [ids[4], ids[1], 9999, ids[0]]},
        {"heading": "Films", "kind": "titles", "ids": [601, 999, 593]},
        {"heading": "Tagged", "kind": "tag", "tag": "BTS", "limit": 2},
        {"heading": "Dramas", "kind": "genre", "genre": "Drama", "limit": 5},
        {"heading": "One comedy", "kind": "genre", "genre": "Comedy", "limit": 1},
    ]
    env.cms.save_layout("home", name="Home", rows=rows, user="ann", base_revision=None)
    env.drain()
    lay = env._get("Layout", "home")
    assert lay == {
        "id": "home",
        "name": "Home",
        "revision": 1,
        "rows": [
            {"heading": "Picks", "items": "stories", "ids": [ids[1], ids[0]], "rule": ""},
            {"heading": "Films", "items": "titles", "ids": [601, 593], "rule": ""},
            {
                "heading": "Tagged",
                "items": "stories",
                "ids": [ids[3], ids[1]],
                "rule": "newest stories tagged bts",
            },
            {
                "heading": "Dramas",
                "items": "titles",
                "ids": [601, 593],
                "rule": "titles of genre Drama, newest first",
            },
            {
                "heading": "One comedy",
                "items": "titles",
                "ids": [601],
                "rule": "titles of genre Comedy, newest first",
            },
        ],
    }
    row = env.cms.layout("home")
    assert row["ingest_status"] == "ok" and isinstance(row["token"], int)
    assert [(p["where"], p["message"]) for p in row["ingest_errors"]] == [
        ("rows[1]", "2 of its stories are not live or do not exist; the row leaves them out"),
        ("rows[2]", "1 of its titles are not live or do not exist; the row leaves them out"),
    ]
    # unpublishing a story re-resolves every layout (the "layouts" event)
    env.cms.unpublish(ids[3], user="ann")
    env.drain()
    rows_now = env._get("Layout", "home")["rows"]
    assert rows_now[2]["ids"] == [ids[1], ids[0]]
    # a layout save makes a new revision of the record
    env.cms.save_layout("home", name="Home v2", rows=rows[:1], user="ann", base_revision=1)
    env.drain()
    lay = env._get("Layout", "home")
    assert (lay["name"], lay["revision"], len(lay["rows"])) == ("Home v2", 2, 1)


# -- titles and people ---------------------------------------------------------------------


def test_titles_and_people_events(env: Env) -> None:
    with env.store.transaction() as tx:
        outbox.enqueue(tx, "titles", "batch", payload={"ids": [593, 602, 4242]})
        outbox.enqueue(tx, "people", "batch", payload={"ids": [1, 3, 4242]})
        outbox.enqueue(tx, "titles", "601")  # the id in the subject
    assert env.drain() == 3
    t = env._get("Title", 593)
    p1, p2, p3 = (
        {"id": i, "slug": f"p-{i}", "name": n}
        for i, n in ((1, "Ann Writer"), (2, "Bo Critic"), (3, "Agnès V"))
    )
    assert t == {
        "id": 593,
        "slug": "t-593",
        "name": "Cleo from 5 to 7",
        "year": 1962,
        "runtime": 90,
        "genres": ["Drama"],
        "directors": [p3],
        "writers": [p3],
        "cast": [p1, p2],  # by position
        "language": "French",
        "country": "France",
        "awards": "Some",
        "poster": POSTER_IMG,
    }
    t602 = env._get("Title", 602)
    assert (t602["year"], t602["poster"], t602["directors"], t602["genres"]) == (None, None, [], [])
    assert env._get("Title", 601)["directors"] == [p3]
    assert env._get("Title", 4242) is None
    assert env._get("Person", 3) == {
        "id": 3,
        "slug": "p-3",
        "name": "Agnès V",
        "titles": [601, 593],
    }
    assert env._get("Person", 1)["titles"] == [593]
    assert env._get("Person", 2) is None  # not in the event
    assert env._get("Person", 4242) is None

    # a title that is gone from the store is deleted from the dataset
    with env.store.transaction() as tx:
        tx.execute("DELETE FROM title_genres WHERE title_id = 602")
        tx.execute("DELETE FROM titles WHERE id = 602")
        outbox.enqueue(tx, "titles", "602")
    env.drain()
    assert env._get("Title", 602) is None
    # a staff author added in the CMS becomes a Person
    pid = env.cms.add_staff("Cy New")
    env.drain()
    assert env._get("Person", pid) == {"id": pid, "slug": "cy-new", "name": "Cy New", "titles": []}


# -- failures ------------------------------------------------------------------------------


def test_unknown_kind_and_bad_payload_are_dead_letters_at_once(env: Env) -> None:
    with env.store.transaction() as tx:
        bogus = outbox.enqueue(tx, "bogus", "x")
        bad = outbox.enqueue(tx, "titles", "batch", payload={"ids": "1,2"})
        bad_story = outbox.enqueue(tx, "story", "not-a-number")
    assert env.drain() == 3
    dead = {d["id"]: d for d in outbox.dead_letters(env.store)}
    assert sorted(dead) == [bogus, bad, bad_story]
    assert all(d["attempts"] == 1 for d in dead.values())
    assert "unknown kind 'bogus'" in dead[bogus]["last_error"]
    assert "PermanentFailure" in dead[bad]["last_error"]
    assert env.worker.failed == 3 and env.worker.processed == 0
    assert outbox.pending_count(env.store) == 0


def test_a_transient_failure_backs_off_then_dead_letters(env: Env) -> None:
    """The dataset's log is locked by somebody else (a real SQLite lock on log.sqlite):
    each attempt fails, backs off, and after max_attempts the event is dead; retried once
    the log is free, it goes through."""
    s = env.cms.create_story(full("v1"), user="ann")
    env.drain()  # the log exists now
    writer = Writer(LocalLog(env.path, busy_timeout=0.1), schema=SCHEMA)
    worker = IngestWorker(Ingestor(env.store, writer, env.media), max_attempts=3, name="w")
    holder = sqlite3.connect(env.path / "log.sqlite", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        saved = env.cms.save_story(s.id, full("v2"), base_revision=1, user="ann")
        attempts = []
        for n in (1, 2, 3):
            t = time.time()
            assert worker.run_once()
            r = env.store.read_one("SELECT * FROM outbox WHERE id = ?", (saved.event,))
            attempts.append((r["status"], r["attempts"]))
            assert "LogUnavailable" in r["last_error"]
            if n < 3:
                assert r["available_at"] - t >= outbox.backoff(n) - 0.05  # it backs off
                assert not worker.run_once()  # nothing available before the backoff ends
                time.sleep(max(0.0, r["available_at"] - time.time()) + 0.02)
        assert attempts == [("pending", 1), ("pending", 2), ("dead", 3)]
        st = env.status(s.id)  # the editor sees that it failed, and why
        assert st["status"] == "failed" and st["token"] is None
        assert [e["where"] for e in st["errors"]] == ["ingestion"]
        assert "failed after 3 attempts: LogUnavailable" in st["errors"][0]["message"]
        assert env.status(s.id, 1)["status"] == "ok"  # the older revision is untouched
        assert [d["id"] for d in outbox.dead_letters(env.store)] == [saved.event]
        assert worker.failed == 3 and "LogUnavailable" in (worker.last_error or "")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert env.draft(s.id)["title"] == "v1"
    assert outbox.retry(env.store, saved.event)
    assert worker.run_once()
    assert worker.last_error is None
    assert env.status(s.id)["status"] == "ok" and env.status(s.id)["errors"] == []
    assert env.draft(s.id)["title"] == "v2"
    assert outbox.dead_letters(env.store) == []


def test_a_transient_failure_that_clears_is_retried(env: Env) -> None:
    s = env.cms.create_story(full("v1"), user="ann")
    env.drain()
    writer = Writer(LocalLog(env.path, busy_timeout=0.1), schema=SCHEMA)
    worker = IngestWorker(Ingestor(env.store, writer, env.media), max_attempts=3)
    holder = sqlite3.connect(env.path / "log.sqlite", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    saved = env.cms.save_story(s.id, full("v2"), base_revision=1, user="ann")
    assert worker.run_once() and worker.failed == 1
    holder.execute("ROLLBACK")
    holder.close()
    time.sleep(outbox.backoff(1) + 0.05)
    assert worker.run_once() and worker.processed == 1
    r = env.store.read_one("SELECT * FROM outbox WHERE id = ?", (saved.event,))
    assert (r["status"], r["attempts"]) == ("done", 2)
    assert env.draft(s.id)["title"] == "v2"


# -- workers racing ------------------------------------------------------------------------


def test_two_workers_racing_on_one_story_end_with_the_newest(env: Env) -> None:
    """Two Ingestors with writers of their own process every event of one story (not
    claimed: both see each one, as after lease expiries) while an editor keeps saving.
    Whatever the interleaving, the records end at the newest revision."""
    s = env.cms.create_story(full("r1"), user="ann")
    saves = 40
    ingestors = [Ingestor(env.store, env.ds.writer(schema=SCHEMA), env.media) for _ in "ab"]
    done = threading.Event()
    errors: list[BaseException] = []

    def editor() -> None:
        try:
            for n in range(2, saves + 2):
                env.cms.save_story(s.id, full(f"r{n}"), base_revision=n - 1, user="ed")
        except BaseException as e:
            errors.append(e)
        finally:
            done.set()

    def racer(ing: Ingestor) -> None:
        try:
            seen = 0
            while True:
                finished = done.is_set()
                rows = env.store.read("SELECT * FROM outbox WHERE id > ? ORDER BY id", (seen,))
                for r in rows:
                    for attempt in range(5):
                        try:
                            ing.process(outbox.Event.from_row(r))
                            break
                        except (StoreError, ConflictError) as e:  # as the worker does:
                            transient = isinstance(e, ConflictError) or e.transient  # retry
                            if not transient or attempt == 4:
                                raise
                            time.sleep(0.01)
                    seen = r["id"]
                if finished and not rows:
                    return
        except BaseException as e:
            errors.append(e)

    ts = [threading.Thread(target=editor)] + [
        threading.Thread(target=racer, args=(ing,)) for ing in ingestors
    ]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often: more interleavings
    try:
        for t in ts:
            t.start()
        for t in ts:
            t.join(120)
    finally:
        sys.setswitchinterval(interval)
    assert not errors, errors
    newest = saves + 1
    st = env.status(s.id)
    assert (st["revision"], st["status"]) == (newest, "ok")
    d = env.draft(s.id)
    assert (d["revision"], d["title"]) == (newest, f"r{newest}")
    assert env.consumer.wait_for(st["token"])["DraftStory"].get(s.id).revision == newest
    assert {r["ingest_status"] for r in env.cms.revisions(s.id)} <= {"ok", "superseded"}
