"""The sample stories on real films (nearstate.demo.samples), on SQLite and PostgreSQL:
made through the CMS, ingested into render-ready records, published but for the drafts,
with hero images, a home layout, and made only once."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

import nearstate
from nearstate.content import outbox
from nearstate.content.cms import CMS
from nearstate.content.db import WriteStore
from nearstate.content.films import import_films
from nearstate.content.ingest import Ingestor, IngestWorker
from nearstate.content.media import SIZES, MediaConfig
from nearstate.content.records import SCHEMA
from nearstate.demo.samples import (
    DRAFTS,
    STAFF,
    STORIES,
    SampleResult,
    artwork,
    create_samples,
    pick_films,
)
from nearstate.errors import InputError

FILMS = 400  # the first 400 films by id: every genre the picker tries first is among them
TAGS = {"behind-the-scenes", "lists", "anniversaries", "staff-picks"}


class Platform:
    """A write store with films, a dataset and an ingestion worker."""

    def __init__(self, store: WriteStore, root: Path):
        self.store = store
        self.cms = CMS(store)
        self.media = MediaConfig(root=root / "media", base_url="/media")
        self.ds = nearstate.open(root / "ds")
        self.worker = IngestWorker(Ingestor(store, self.ds.writer(schema=SCHEMA), self.media))
        self.consumer = self.ds.consumer()

    def samples(self, **kw: Any) -> SampleResult:
        return create_samples(self.cms, self.store, self.media, **kw)

    def ingest(self) -> Any:
        """Process every pending event; the state showing all of them."""
        self.worker.drain(timeout=60)
        assert outbox.pending_count(self.store) == 0
        assert outbox.dead_letters(self.store) == []
        return self.consumer.sync()


@pytest.fixture
def platform(write_store: WriteStore, tmp_path: Path) -> Platform:
    import_films(write_store, limit=FILMS)
    p = Platform(write_store, tmp_path)
    p.ingest()
    return p


def count(store: WriteStore, table: str) -> int:
    return int(store.read_one(f"SELECT COUNT(*) AS n FROM {table}")["n"])


def test_samples_are_stories_in_the_dataset(platform: Platform) -> None:
    progress: list[tuple[int, int]] = []
    r = platform.samples(progress=lambda d, t: progress.append((d, t)))
    assert r.created == STORIES and len(r.stories) == STORIES == len(set(r.stories))
    assert progress[-1] == (STORIES, STORIES)
    assert r.published == r.stories[: STORIES - DRAFTS] and r.drafts == r.stories[-DRAFTS:]
    assert r.layout == "home" and r.seconds > 0
    state = platform.ingest()

    staff = {
        p["id"]: p["name"]
        for p in platform.store.read("SELECT id, name FROM people WHERE staff = 1")
    }
    assert sorted(staff.values()) == sorted(STAFF) and set(r.authors) == set(staff)
    films = {t["id"]: t for t in platform.store.read("SELECT id, name, year FROM titles")}
    tag_count: dict[str, int] = {}
    for sid in r.stories:
        st = platform.cms.ingest_status(sid)
        assert (st["status"], st["errors"]) == ("ok", []), (sid, st)
        draft = state["DraftStory"].get(sid)
        assert draft is not None
        live = state["Story"].get(sid)
        if sid in r.drafts:
            assert live is None  # the live site cannot see a draft
            assert draft.to_dict()["status"] == "draft"
            continue
        assert live is not None
        s = live.to_dict()
        assert 4 <= len(s["body"]) <= 8
        kinds = [b["kind"] for b in s["body"]]
        assert {"paragraph", "quote", "title"} <= set(kinds)
        film = s["related"][0]  # the story's film, then others of its genre
        assert 2 <= len(s["related"]) <= 3 and film["id"] in films
        assert film["name"] in s["title"]
        assert any(b["title"] and b["title"]["id"] == film["id"] for b in s["body"])
        text = " ".join(b["text"] for b in s["body"])
        assert str(film["year"]) in s["title"] + s["dek"] + text  # written from the facts
        assert s["dek"] and s["excerpt"] and s["published_at"] is not None
        assert len(s["tags"]) == 2 and set(s["tags"]) <= TAGS
        for t in s["tags"]:
            tag_count[t] = tag_count.get(t, 0) + 1
        assert [a["name"] for a in s["authors"]] in [[n] for n in STAFF]
        assert s["genres"]  # personalisation has something to go on
        quote = next(b for b in s["body"] if b["kind"] == "quote")
        assert quote["cite"] in STAFF  # our own writers' words, never a real person's
        hero = s["hero"]
        assert hero is not None and (hero["width"], hero["height"]) == (1600, 900)
        assert hero["alt"] and film["name"] in hero["alt"]
        assert all(hero[size].startswith(f"/media/{hero['asset']}/") for size in SIZES)
    assert all(n >= 3 for n in tag_count.values()) and set(tag_count) == TAGS

    genres = {f.genre for f in pick_films(platform.store)}
    assert len(genres) == STORIES  # one story per genre: Drama, Comedy, Action, ...
    assert {"Drama", "Comedy", "Action", "Animation", "Horror", "Sci-Fi"} <= genres


def test_some_stories_have_an_image_in_their_body(platform: Platform) -> None:
    r = platform.samples()
    state = platform.ingest()
    images = [
        b
        for sid in r.published
        for b in state["Story"].get(sid).to_dict()["body"]
        if b["kind"] == "image"
    ]
    assert images and all(b["image"] and b["image"]["alt"] and b["text"] for b in images)


def test_hero_images_are_assets_with_three_variants(platform: Platform) -> None:
    r = platform.samples()
    heroes = []
    for sid in r.stories:
        hero = platform.cms.story(sid)["data"]["hero"]
        row = platform.store.read_one("SELECT * FROM assets WHERE id = ?", (hero,))
        assert row is not None and row["kind"] == "image" and row["content_type"] == "image/jpeg"
        assert (row["width"], row["height"]) == (1600, 900) and row["alt"]
        folder = Path(platform.media.root) / hero
        for size, width in SIZES.items():
            with Image.open(folder / f"{size}.jpg") as im:
                assert im.width == min(width, 1600)
        heroes.append(hero)
    assert len(set(heroes)) == STORIES  # one picture per film


def test_the_home_layout_has_featured_tag_genre_and_latest_rows(platform: Platform) -> None:
    r = platform.samples()
    state = platform.ingest()
    home = state["Layout"].get("home")
    assert home is not None
    rows = home.to_dict()["rows"]
    assert platform.cms.layout("home")["ingest_status"] == "ok"
    assert rows[0]["heading"] == "Featured" and rows[0]["items"] == "stories"
    assert 1 <= len(rows[0]["ids"]) <= 3 and set(rows[0]["ids"]) <= set(r.published)
    tag_rows = [x for x in rows if x["rule"].startswith("newest stories tagged")]
    assert tag_rows[0]["heading"] == "Behind the scenes" and len(tag_rows) >= 2
    assert all(len(x["ids"]) >= 3 and set(x["ids"]) <= set(r.published) for x in tag_rows)
    genre_rows = [x for x in rows if x["rule"].startswith("titles of genre")]
    assert 4 <= len(genre_rows) <= 6
    assert all(x["items"] == "titles" and 12 <= len(x["ids"]) <= 16 for x in genre_rows)
    assert rows[-1]["heading"] == "Latest stories"
    assert rows[-1]["ids"] == list(reversed(r.published))  # newest first
    assert not set(r.drafts) & {i for x in rows if x["items"] == "stories" for i in x["ids"]}


def test_a_second_run_creates_nothing(platform: Platform) -> None:
    first = platform.samples()
    platform.ingest()
    before = {t: count(platform.store, t) for t in ("stories", "story_revisions", "assets",
                                                    "people", "layouts", "outbox")}  # fmt: skip
    again = platform.samples()
    assert again.created == 0
    assert (again.stories, again.published, again.drafts, again.layout) == (
        first.stories,
        first.published,
        first.drafts,
        first.layout,
    )
    after = {t: count(platform.store, t) for t in before}
    assert after == before  # not a row, not an outbox event


def test_an_editors_changes_are_left_alone(platform: Platform) -> None:
    first = platform.samples()
    draft = first.drafts[0]
    platform.cms.publish(draft, user="ed")  # an editor publishes one of the drafts
    cur = platform.cms.layout("home")
    platform.cms.save_layout("home", name="Mine", rows=cur["data"]["rows"][:1], user="ed",
                             base_revision=cur["revision"])  # fmt: skip
    again = platform.samples()
    assert again.created == 0 and draft in again.published and draft not in again.drafts
    assert platform.cms.layout("home")["name"] == "Mine"


def test_an_interrupted_run_is_finished(platform: Platform, monkeypatch) -> None:
    real = CMS.publish
    calls = {"n": 0}

    def flaky(self: CMS, story_id: int, **kw: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt  # the run stops after creating the 4th story
        return real(self, story_id, **kw)

    monkeypatch.setattr(CMS, "publish", flaky)
    with pytest.raises(KeyboardInterrupt):
        platform.samples()
    monkeypatch.setattr(CMS, "publish", real)
    assert count(platform.store, "stories") == 4
    r = platform.samples()
    assert r.created == STORIES - 4 and len(r.published) == STORIES - DRAFTS
    assert {platform.cms.story(s)["status"] for s in r.published} == {"published"}
    state = platform.ingest()
    assert all(state["Story"].get(s) is not None for s in r.published)


def test_a_small_catalogue_gives_fewer_stories(write_store: WriteStore, tmp_path: Path) -> None:
    import_films(write_store, limit=5)
    p = Platform(write_store, tmp_path)
    r = p.samples()
    assert len(r.stories) == 5 and len(r.drafts) == DRAFTS and len(r.published) == 3
    state = p.ingest()
    assert all(p.cms.ingest_status(s)["status"] == "ok" for s in r.stories)
    rows = state["Layout"].get("home").to_dict()["rows"]
    assert rows[0]["ids"] == list(r.published)
    assert all(x["ids"] for x in rows if x["items"] == "titles")  # only genres it has


def test_no_films_is_a_clear_error(write_store: WriteStore, tmp_path: Path) -> None:
    p = Platform(write_store, tmp_path)
    with pytest.raises(InputError, match="import them first"):
        p.samples()
    assert count(write_store, "stories") == 0


def test_artwork_is_deterministic_and_per_film() -> None:
    a = artwork("hero:1", (1600, 900), "A Film (1999)")
    assert a == artwork("hero:1", (1600, 900), "A Film (1999)")
    assert a != artwork("hero:2", (1600, 900), "A Film (1999)")
    with Image.open(io.BytesIO(a)) as im:
        assert (im.format, im.size) == ("JPEG", (1600, 900))
    with Image.open(io.BytesIO(artwork("still:1", (1200, 800)))) as im:
        assert im.size == (1200, 800)
