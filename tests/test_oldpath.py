"""The old CQRS read path (nearstate.bench.oldpath), the baseline of ``nearstate bench compare``:
its near-cache, its fragments and what a change resends, the four processes end to end on
the real NATS JetStream and PostgreSQL of this machine (same HTML as the site, an editor's
change arriving, a killed data service resuming, nothing left behind), and the command.

Content is made the way the benchmark makes it: the first films of the real catalogue in a
SQLite CMS, the sample stories and home layout, ingested into a local dataset."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

import nearstate
from natsserver import server_url
from nearstate import Changes
from nearstate.bench.compare import OldPath
from nearstate.bench.oldpath import NearCache, Published, catalogue_scope, changed, story_scope
from nearstate.bench.oldpath import log as oldlog
from nearstate.bench.oldpath.fragments import _CATALOGUE_PREFIXES, _STORY_PREFIXES
from nearstate.bench.oldpath.pagedata import body_of
from nearstate.bench.site import PASSWORD, _ingest, _publish_fixtures
from nearstate.content import outbox
from nearstate.content.accounts import create_user
from nearstate.content.cms import CMS
from nearstate.content.db import WriteStore, open_store
from nearstate.content.ingest import Ingestor, IngestWorker
from nearstate.content.media import MediaConfig
from nearstate.content.pages import Pages, story_model
from nearstate.content.records import SCHEMA
from nearstate.web.site import SiteConfig, create_site_app
from pgserver import pg_url

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # "use httpx2": the httpx installed works
    from starlette.testclient import TestClient

    # The end-to-end tests start processes and wait on timers (about a minute in all):
    # ``-m "not slow"`` leaves them out.
    slow = pytest.mark.slow

FILMS = 60
NEARSTATE = str(Path(sys.executable).with_name("nearstate"))
SECRET = "a secret for the old path tests"
REFRESH = 0.5  # the old path's near-cache refresh in the end-to-end tests (seconds)


def until(check: Callable[[], Any], timeout: float, what: str, every: float = 0.05) -> Any:
    """``check()``'s first truthy answer, polled until ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s (last: {got!r})")
        time.sleep(every)


# -- the near-cache ---------------------------------------------------------------------------


class Clock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


class DictStore:
    """The near-cache's loader over a dict (what the table holds), recording each call."""

    def __init__(self, **values: bytes):
        self.values = dict(values)
        self.calls: list[list[str]] = []
        self.down = False

    def __call__(self, keys: list[str]) -> dict[str, bytes]:
        if self.down:
            raise ConnectionError("the store is down")
        self.calls.append(list(keys))
        return {k: self.values[k] for k in keys if k in self.values}


def test_a_hit_is_served_from_memory_without_the_store() -> None:
    store, clock = DictStore(a=b'"A"'), Clock()
    cache = NearCache(store, 10, clock=clock)
    assert cache.get_many(["a"]) == {"a": b'"A"'}
    assert store.calls == [["a"]]
    clock.t += 9.9  # still before the key's refresh
    for _ in range(3):
        assert cache.get_many(["a"]) == {"a": b'"A"'}
    assert store.calls == [["a"]], "a hit went to the store"
    assert cache.loads == 1 and len(cache) == 1 and cache.refreshes == 0


def test_a_miss_reads_through_only_the_keys_not_held() -> None:
    store = DictStore(a=b"1", b=b"2", c=b"3")
    cache = NearCache(store, 10, clock=Clock())
    cache.get_many(["a"])
    assert cache.get_many(["a", "b", "c"]) == {"a": b"1", "b": b"2", "c": b"3"}
    assert store.calls == [["a"], ["b", "c"]]
    assert cache.loads == 3 and len(cache) == 3


def test_a_changed_value_shows_only_from_its_keys_refresh_on() -> None:
    store, clock = DictStore(a=b"old-a", b=b"old-b"), Clock(1000.0)
    cache = NearCache(store, 10, clock=clock)
    cache.get_many(["a"])  # due at 1010
    clock.t = 1005.0
    cache.get_many(["b"])  # due at 1015: each key has its own timer
    assert cache.next_due() == 1010.0
    store.values.update(a=b"new-a", b=b"new-b")
    clock.t = 1009.99
    assert cache.refresh_due() == 0
    assert cache.get_many(["a", "b"]) == {"a": b"old-a", "b": b"old-b"}  # stale, as designed
    store.calls.clear()
    clock.t = 1010.0  # a's due time exactly
    assert cache.refresh_due() == 1
    assert store.calls == [["a"]]  # b is not due yet
    assert cache.get_many(["a", "b"]) == {"a": b"new-a", "b": b"old-b"}
    assert cache.next_due() == 1015.0
    clock.t = 1016.0  # past b's due time
    assert cache.refresh_due() == 1
    assert cache.get_many(["a", "b"]) == {"a": b"new-a", "b": b"new-b"}
    assert cache.refreshes == 2 and cache.loads == 4
    assert cache.next_due() == 1020.0  # a reloaded at 1010: next at 1020
    clock.t = 1020.0
    assert cache.refresh_due() == 1 and store.calls[-1] == ["a"]  # and so on, every 10 s


def test_a_key_the_store_lacks_is_remembered_as_missing_until_its_refresh() -> None:
    store, clock = DictStore(), Clock(0.0)
    cache = NearCache(store, 5, clock=clock)
    assert cache.get_many(["x"]) == {"x": None}
    store.values["x"] = b'{"now": "here"}'
    clock.t = 4.9
    assert cache.get_many(["x"]) == {"x": None}
    assert store.calls == [["x"]], "a remembered miss went to the store"
    clock.t = 5.0
    assert cache.refresh_due() == 1
    assert cache.get_many(["x"]) == {"x": b'{"now": "here"}'}
    del store.values["x"]  # deleted in the store (a tombstone): missing again at its refresh
    clock.t = 10.0
    assert cache.refresh_due() == 1
    assert cache.get_many(["x"]) == {"x": None}


@pytest.mark.parametrize("refresh", [0, -1, -0.5])
def test_the_refresh_must_be_positive(refresh: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        NearCache(DictStore(), refresh)


def test_the_background_thread_refreshes_keys_on_time() -> None:
    store = DictStore(k=b"1")
    cache = NearCache(store, 0.05).start()
    try:
        assert cache.get_many(["k"]) == {"k": b"1"}
        store.values["k"] = b"2"
        until(lambda: cache.get_many(["k"]) == {"k": b"2"}, 5, "the refreshed value")
        until(lambda: cache.refreshes >= 3, 5, "a key refreshed again and again")
    finally:
        cache.stop()
    assert cache._thread is not None and not cache._thread.is_alive()


def test_a_key_whose_refresh_failed_is_refreshed_once_the_store_is_back() -> None:
    store, clock = DictStore(a=b"1"), Clock(0.0)
    cache = NearCache(store, 10, clock=clock)
    cache.get_many(["a"])
    store.values["a"] = b"2"
    store.down = True
    clock.t = 10.0
    with pytest.raises(ConnectionError):
        cache.refresh_due()  # what NearCache._run catches, to "try again"
    store.down = False
    clock.t = 100.0
    cache.refresh_due()
    assert cache.get_many(["a"]) == {"a": b"2"}


def test_body_of_is_a_json_object_with_null_for_missing_keys() -> None:
    got = {
        "home": b'{"kind":"home","rows":[]}',
        "story:gone": None,
        'odd "key" \u00e9': b"[1,2]",
        "nav": b"[]",
    }
    body = body_of(got)
    assert json.loads(body) == {
        "home": {"kind": "home", "rows": []},
        "story:gone": None,
        'odd "key" \u00e9': [1, 2],
        "nav": [],
    }
    assert list(json.loads(body)) == list(got)  # in the order asked
    assert json.loads(body_of({})) == {}


# -- a world: films, sample stories, layout, ingested into a dataset ----------------------------


@dataclass
class World:
    root: Path
    store: WriteStore
    media: MediaConfig
    published: list[int]
    cms: CMS = field(init=False)
    _worker: IngestWorker | None = None

    def __post_init__(self) -> None:
        self.cms = CMS(self.store)

    @property
    def dataset(self) -> Path:
        return self.root / "dataset"

    def slug(self, sid: int) -> str:
        return self.store.read_one("SELECT slug FROM stories WHERE id = ?", (sid,))["slug"]

    def ingest(self) -> None:
        """The CMS's ingestion worker, as the editor app runs it: every pending event."""
        if self._worker is None:
            ds = nearstate.open(self.dataset)
            self._worker = IngestWorker(Ingestor(self.store, ds.writer(schema=SCHEMA), self.media))
        self._worker.drain(timeout=60)
        assert outbox.pending_count(self.store) == 0
        assert outbox.dead_letters(self.store) == []

    def edit(
        self, sid: int, *, title: str | None = None, lead: str | None = None, publish: bool = True
    ) -> None:
        """Save a new revision of a story (its slug kept), publish it, and ingest."""
        cur = self.cms.story(sid)
        data = cur["data"]
        if title is not None:
            data["title"] = title
        if lead is not None:
            data["body"][0]["text"] = lead
        self.cms.save_story(sid, data, base_revision=cur["revision"], user="bench")
        if publish:
            self.cms.publish(sid, user="bench")
        self.ingest()


def build_world(root: Path, films: int = FILMS) -> World:
    """What ``bench compare`` builds: films, sample stories (published and drafts), the home
    layout, a user, all ingested into ``root / "dataset"``."""
    root.mkdir(parents=True, exist_ok=True)
    store = open_store(f"sqlite:///{root / 'cms.db'}")
    media = MediaConfig(root=root / "media")
    published = _publish_fixtures(store, media, films)
    create_user(store, "bench", PASSWORD)
    _ingest(store, root)
    return World(root, store, media, published)


def load_state(dataset: Path) -> Any:
    c = nearstate.open(dataset).consumer()
    c.start()
    try:
        return c.state
    finally:
        c.stop()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One world the fragment tests only read."""
    w = build_world(tmp_path_factory.mktemp("fragments"))
    yield w
    w.store.close()


@pytest.fixture(scope="module")
def state(world: World) -> Any:
    return load_state(world.dataset)


# -- fragments ---------------------------------------------------------------------------------


def test_the_story_scope_holds_home_every_published_story_and_every_draft(
    world: World, state: Any
) -> None:
    pages = Pages()
    frags = dict(story_scope(state, Pages()))
    assert all(k.startswith(_STORY_PREFIXES) for k in frags), sorted(frags)
    home = frags["home"]
    assert home == pages.home(state)
    assert home["hero"] is not None and home["rows"]
    live = {
        r["slug"] for r in world.store.read("SELECT slug FROM stories WHERE status = 'published'")
    }
    assert len(live) == len(world.published) > 10
    assert {k.removeprefix("story:") for k in frags if k.startswith("story:")} == live
    assert {k.removeprefix("more:") for k in frags if k.startswith("more:")} <= live
    for s in state.get("Story"):
        page = pages.story(state, s.slug)
        assert page is not None and frags[f"story:{s.slug}"]["title"] == s.title
        assert frags[f"more:{s.slug}"] == page.pop("more")  # the row is a fragment of its own
        assert frags[f"story:{s.slug}"] == page
    every = {r["id"] for r in world.store.read("SELECT id FROM stories")}
    drafts = state.get("DraftStory")
    assert {d.id for d in drafts} == every and len(every) > len(live)  # there are drafts
    assert {int(k.removeprefix("draft:")) for k in frags if k.startswith("draft:")} == every
    for d in drafts:
        assert frags[f"draft:{d.id}"] == story_model(d, kind="preview")
        assert frags[f"draft:{d.id}"]["title"] == world.cms.story(d.id)["data"]["title"]
    # the hydrated cards: a story's related titles in full, not references
    any_story = next(iter(state.get("Story")))
    related = frags[f"story:{any_story.slug}"]["related"]
    assert related and all(c["name"] and c["url"].startswith("/titles/") for c in related)


def test_the_catalogue_scope_holds_the_navigation_and_every_title(world: World, state: Any) -> None:
    pages = Pages()
    frags = dict(catalogue_scope(state, Pages()))
    assert all(k.startswith(_CATALOGUE_PREFIXES) for k in frags), sorted(frags)
    assert frags["nav"] == pages.genres(state) and frags["nav"]
    slugs = {r["slug"] for r in world.store.read("SELECT slug FROM titles")}
    assert len(slugs) == FILMS
    assert {k.removeprefix("title:") for k in frags if k.startswith("title:")} == slugs
    for t in state.get("Title"):
        frag = frags[f"title:{t.slug}"]
        page = pages.title(state, t.slug)
        assert page is not None and "stories" not in frag  # the stories are the story scope's
        page.pop("stories")
        assert frag == page and frag["name"] == t.name
    assert any(k.startswith("person:") for k in frags)
    assert any(k.startswith("genre:") and k.endswith(":1") for k in frags)
    assert not set(frags) & set(dict(story_scope(state, pages)))


def test_published_diff_sends_everything_once_then_only_what_differs(state: Any) -> None:
    items = list(story_scope(state, Pages()))
    pub = Published()
    first = pub.diff(iter(items), _STORY_PREFIXES)
    assert [k for k, _ in first] == [k for k, _ in items]
    for (_, body), (_, value) in zip(first, items, strict=True):
        assert body is not None and json.loads(body) == json.loads(json.dumps(value))
    assert len(pub) == len(items)
    assert pub.diff(iter(items), _STORY_PREFIXES) == []  # the same state: nothing to send
    again = list(story_scope(state, Pages()))  # rebuilt, equal: still nothing
    assert pub.diff(iter(again), _STORY_PREFIXES) == []

    key = next(k for k, _ in items if k.startswith("story:"))
    gone = [(k, v) for k, v in items if k != key]
    assert pub.diff(iter(gone), _STORY_PREFIXES) == [(key, None)]  # a tombstone
    assert len(pub) == len(items) - 1
    assert pub.diff(iter(gone), _STORY_PREFIXES) == []  # sent once
    back = pub.diff(iter(items), _STORY_PREFIXES)
    assert [k for k, _ in back] == [key] and back[0][1] is not None

    changed_value = dict(items[0][1], marker="changed")
    out = pub.diff(iter([(items[0][0], changed_value), *items[1:]]), _STORY_PREFIXES)
    assert [k for k, _ in out] == [items[0][0]]
    assert json.loads(out[0][1])["marker"] == "changed"


def test_a_diff_tombstones_only_keys_of_its_own_prefixes(state: Any) -> None:
    pages, pub = Pages(), Published()
    sent = changed(state, pages, pub, None)
    catalogue = {k for k, _ in catalogue_scope(state, pages)}
    stories = {k for k, _ in story_scope(state, pages)}
    assert {k for k, _ in sent} == catalogue | stories
    assert all(body is not None for _, body in sent)
    out = pub.diff(iter([]), ("story:",))  # no story now: only story pages go
    assert all(body is None for _, body in out)
    assert {k for k, _ in out} == {k for k in stories if k.startswith("story:")}
    assert len(pub) == len(catalogue) + len(stories) - len(out)


def test_changed_rebuilds_only_the_scopes_a_change_touches(state: Any) -> None:
    pages = Pages()
    catalogue = {k for k, _ in catalogue_scope(state, pages)}
    stories = {k for k, _ in story_scope(state, pages)}
    story_id = next(iter(state.get("Story"))).id
    title_id = next(iter(state.get("Title"))).id

    pub = Published()  # nothing sent yet: whatever a scope rebuilds is sent
    out = changed(state, pages, pub, {"Story": Changes(modified=[story_id])})
    assert {k for k, _ in out} == stories, "a story change resent catalogue fragments"
    assert changed(state, pages, pub, {"Story": Changes(), "Title": Changes()}) == []

    pub = Published()
    out = changed(state, pages, pub, {"Layout": Changes(modified=["home"])})
    assert {k for k, _ in out} == stories

    pub = Published()  # a title's card is shown on story fragments too: both scopes
    out = changed(state, pages, pub, {"Title": Changes(modified=[title_id])})
    assert {k for k, _ in out} == stories | catalogue

    pub = Published()
    assert changed(state, pages, pub, {"Image": Changes(modified=["x"])}) == []
    out = changed(state, pages, pub, None)  # a snapshot loaded: everything
    assert {k for k, _ in out} == stories | catalogue
    assert changed(state, pages, pub, None) == []


def test_a_saved_story_resends_the_few_fragments_it_changed(tmp_path: Path) -> None:
    """A real save through the CMS and the ingestion, its changes as the dataset's consumer
    reports them (what the ingest process does)."""
    w = build_world(tmp_path)
    try:
        sid, other = w.published[0], w.published[1]
        slug = w.slug(sid)
        c = nearstate.open(w.dataset).consumer()
        c.start()
        events: list[Any] = []
        c.add_listener(lambda ev: events.append(ev.changes))
        try:
            pages, pub = Pages(), Published()
            everything = changed(c.state, pages, pub, None)
            w.edit(sid, title="A title no one used before")
            state = c.sync()
            until(lambda: events, 10, "the consumer's refresh event")
            merged: dict[str, Any] = {}
            for ch in events:
                assert ch is not None
                merged.update({t: x for t, x in ch.items() if x})
            assert "Story" in merged and not merged.keys() & {"Title", "Person"}
            out = dict(changed(state, pages, pub, merged))
        finally:
            c.stop()
        assert f"story:{slug}" in out and 0 < len(out) < len(everything) / 10
        assert json.loads(out[f"story:{slug}"])["title"] == "A title no one used before"
        assert json.loads(out[f"draft:{sid}"])["title"] == "A title no one used before"
        assert f"story:{w.slug(other)}" not in out and f"draft:{other}" not in out
        assert not [k for k in out if k.startswith(_CATALOGUE_PREFIXES)]
        assert all(v is not None for v in out.values())
    finally:
        w.store.close()


# -- the four processes, end to end ----------------------------------------------------------


@dataclass
class Running:
    world: World
    old: OldPath
    nats: str
    pg: str


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """The old path's processes on a world of their own (the tests change it)."""
    nats, pg = server_url(), pg_url()
    w = build_world(tmp_path_factory.mktemp("oldpath"))
    try:
        with OldPath(w.root, nats, pg, REFRESH) as old:
            total = old.wait_loaded(None, timeout=120)
            assert total > FILMS
            yield Running(w, old, nats, pg)
    finally:
        w.store.close()


def old_get(r: Running, path: str) -> httpx.Response:
    return httpx.get(r.old.pages_url + path, timeout=10)


def api_title(r: Running, slug: str) -> str | None:
    got = old_get(r, f"/api/stories/{slug}")
    return got.json()["title"] if got.status_code == 200 else None


def table_value(r: Running, key: str) -> Any:
    import psycopg

    with psycopg.connect(r.pg, autocommit=True) as conn:
        row = conn.execute(f"SELECT value FROM {r.old.table} WHERE key = %s", (key,)).fetchone()
    return None if row is None else json.loads(bytes(row[0]))


def stream_last_seq(nats_url: str, run: str) -> int:
    import nats

    async def go() -> int:
        nc = await nats.connect(nats_url, connect_timeout=3)
        try:
            info = await nc.jetstream().stream_info(oldlog.names(run)["stream"])
            return int(info.state.last_seq)
        finally:
            await nc.close()

    return asyncio.run(go())


def keys_published_after(nats_url: str, run: str, seq: int) -> set[str]:
    """The ``Key`` headers of the messages of the run's stream after ``seq``."""
    import nats

    async def go() -> set[str]:
        nc = await nats.connect(nats_url, connect_timeout=3)
        try:
            js, stream = nc.jetstream(), oldlog.names(run)["stream"]
            last = (await js.stream_info(stream)).state.last_seq
            keys = set()
            for n in range(seq + 1, last + 1):
                msg = await js.get_msg(stream, n)
                keys.add((msg.headers or {}).get("Key"))
            return keys
        finally:
            await nc.close()

    return asyncio.run(go())


def durable_pending(nats_url: str, run: str) -> tuple[int, int]:
    """The data service's durable consumer: (messages not delivered, not acknowledged)."""
    import nats

    async def go() -> tuple[int, int]:
        nc = await nats.connect(nats_url, connect_timeout=3)
        try:
            n = oldlog.names(run)
            info = await nc.jetstream().consumer_info(n["stream"], n["durable"])
            return int(info.num_pending), int(info.num_ack_pending)
        finally:
            await nc.close()

    return asyncio.run(go())


def updated_at(r: Running, key: str) -> float:
    import psycopg

    with psycopg.connect(r.pg, autocommit=True) as conn:
        q = f"SELECT updated_at FROM {r.old.table} WHERE key = %s"
        return float(conn.execute(q, (key,)).fetchone()[0])


def stream_exists(nats_url: str, run: str) -> bool:
    import nats
    from nats.js.errors import NotFoundError

    async def go() -> bool:
        nc = await nats.connect(nats_url, connect_timeout=3)
        try:
            await nc.jetstream().stream_info(oldlog.names(run)["stream"])
            return True
        except NotFoundError:
            return False
        finally:
            await nc.close()

    return asyncio.run(go())


def table_exists(pg: str, table: str) -> bool:
    import psycopg

    with psycopg.connect(pg, autocommit=True) as conn:
        return conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()[0] is not None


@slow
def test_the_old_path_answers_the_same_html_as_the_site(running: Running) -> None:
    w = running.world
    ds = nearstate.open(w.dataset)
    paths = ["/", *(f"/stories/{w.slug(s)}" for s in w.published[-3:])]
    app = create_site_app(SiteConfig(dataset=ds, secret_key=SECRET, search=False, page_cache=0))
    with TestClient(app) as site:
        head = ds.log.head()
        until(
            lambda: (r := site.get("/healthz")).status_code == 200 and r.json()["position"] >= head,
            20,
            "the site holding the whole Log",
        )

        def ours(path: str) -> httpx.Response:
            site.cookies.clear()  # an anonymous visitor each time: no profile learned
            return site.get(path)

        for path in paths:
            mine = ours(path)
            assert mine.status_code == 200 and mine.headers["content-type"].startswith("text/html")
            # equal once the old path holds what the site holds (earlier tests may have
            # changed a story within the last refresh)
            until(
                lambda path=path, mine=mine: old_get(running, path).content == mine.content,
                10 * REFRESH + 5,
                f"the same HTML at {path}",
            )
            assert b"<html" in mine.content.lower() and len(mine.content) > 2000
        assert ours("/stories/no-such-story").status_code == 404
        assert old_get(running, "/stories/no-such-story").status_code == 404
        assert old_get(running, "/api/stories/no-such-story").status_code == 404


@slow
def test_an_editors_change_reaches_the_old_path_within_a_few_refreshes(running: Running) -> None:
    w = running.world
    sid = w.published[1]
    slug = w.slug(sid)
    before = api_title(running, slug)  # in use: the key is in the near-cache
    assert before == w.cms.story(sid)["title"]

    # a save, not published: the editor's preview shows it, the live page does not
    w.edit(sid, lead="Preview-only words for the old path", publish=False)
    until(
        lambda: (
            b"Preview-only words for the old path" in old_get(running, f"/preview/{sid}").content
        ),
        10 * REFRESH + 5,
        "the save in the old path's preview",
    )
    assert b"Preview-only words" not in old_get(running, f"/stories/{slug}").content

    w.edit(sid, title="Retitled for the old path")
    until(
        lambda: table_value(running, f"story:{slug}")["title"] == "Retitled for the old path",
        20,
        "the change in the PostgreSQL table",
    )
    until(
        lambda: api_title(running, slug) == "Retitled for the old path",
        4 * REFRESH + 5,
        "the new title from the old path's page construction",
    )
    assert b"Retitled for the old path" in old_get(running, f"/stories/{slug}").content
    stats = httpx.get(f"{running.old.data_url}/stats", timeout=5).json()
    assert stats["refresh_s"] == REFRESH
    assert stats["refreshes"] > 0 and stats["entries"] > 0 and stats["loads"] > stats["entries"]


@slow
def test_a_killed_data_service_resumes_from_its_durable_consumer(running: Running) -> None:
    w, old = running.world, running.old
    a, b = w.published[2], w.published[3]
    slugs = {a: w.slug(a), b: w.slug(b)}
    before = {sid: api_title(running, s) for sid, s in slugs.items()}  # in the near-cache
    assert all(before.values())
    dead = old.procs["data"]
    dead.send_signal(signal.SIGKILL)
    assert dead.wait(10) == -signal.SIGKILL

    seq = stream_last_seq(running.nats, old.run)
    w.edit(a, title="Changed while the data service was down")
    w.edit(b, title="Changed again while it was down")
    # the ingest process publishes the fragments to the stream; nobody writes them out
    want = {f"story:{s}" for s in slugs.values()}
    until(
        lambda: want <= keys_published_after(running.nats, old.run, seq),
        20,
        "both changes published to the stream",
    )
    assert durable_pending(running.nats, old.run)[0] > 0  # held for the durable consumer
    time.sleep(3 * REFRESH)  # past every key's refresh: still nothing new to read
    for sid, s in slugs.items():
        assert table_value(running, f"story:{s}")["title"] == before[sid]
        assert api_title(running, s) == before[sid]

    nav_written = updated_at(running, "nav")  # not in these changes: never rewritten
    n, p, r = running.nats, running.pg, old.run
    old.start("data", "data", "--nats", n, "--pg", p, "--run", r)  # as OldPath starts it
    assert old.procs["data"] is not dead
    for sid, title in (
        (a, "Changed while the data service was down"),
        (b, "Changed again while it was down"),
    ):
        until(
            lambda sid=sid, title=title: api_title(running, slugs[sid]) == title,
            4 * REFRESH + 20,
            f"story {sid}'s change after the restart",
        )
    until(lambda: durable_pending(running.nats, old.run) == (0, 0), 20, "every message acked")
    # it resumed where the killed one stopped acknowledging: no replay from the start
    assert updated_at(running, "nav") == nav_written
    old.check_alive()


@slow
def test_leaving_the_old_path_removes_its_stream_table_and_processes(
    running: Running, tmp_path: Path
) -> None:
    """A run of its own on the same dataset, left by an exception."""
    (tmp_path / "dataset").symlink_to(running.world.dataset, target_is_directory=True)
    with (
        pytest.raises(RuntimeError, match="leaving"),
        OldPath(tmp_path, running.nats, running.pg, REFRESH) as old,
    ):
        old.wait_loaded(None, timeout=120)
        assert old.run != running.old.run
        assert stream_exists(running.nats, old.run) and table_exists(running.pg, old.table)
        assert httpx.get(f"{old.pages_url}/healthz", timeout=5).status_code == 200
        raise RuntimeError("leaving")
    assert all(p.poll() is not None for p in old.procs.values())
    assert set(old.procs) == {"data", "pagedata", "pages", "ingest"}
    assert not stream_exists(running.nats, old.run)
    assert not table_exists(running.pg, old.table)
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{old.pages_url}/healthz", timeout=2)
    # the module's run goes on untouched
    assert stream_exists(running.nats, running.old.run)
    assert table_exists(running.pg, running.old.table)


# -- the command ------------------------------------------------------------------------------


@slow
def test_bench_compare_runs_and_writes_its_report(tmp_path: Path) -> None:
    server_url(), pg_url()  # both servers (skip without them, fail under CI)
    report = tmp_path / "report"
    argv = [
        NEARSTATE,
        "bench",
        "compare",
        "--films",
        "40",
        "--iterations",
        "10",
        "--trials",
        "3",
        "--old-trials",
        "2",
        "--refresh",
        "0.5",
        "--seconds",
        "1",
        "--connections",
        "4",
        "--report",
        str(report),
        "--json",
    ]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(p.stdout)

    def positive(x: Any) -> bool:
        return isinstance(x, int | float) and not isinstance(x, bool) and x > 0

    assert positive(r["page_ms"]["nearstate"]["p50"]), r["page_ms"]
    assert positive(r["page_ms"]["baseline"]["p99"]), r["page_ms"]
    for sys_ in ("nearstate", "baseline"):
        for q in ("p50", "p99"):
            assert positive(r["preview_visible_ms"][sys_][q]), r["preview_visible_ms"]
    for k in ("nearstate", "hydrated_parquet", "python_objects"):
        assert positive(r["memory_bytes"][k]), r["memory_bytes"]
    assert r["same_html"] and all(v is True for v in r["same_html"].values()), r["same_html"]
    assert "/" in r["same_html"] and r["films"] == 40 and r["refresh_s"] == 0.5
    assert r["freshness_detail"]["baseline_preview"]["missed"] == 0
    assert r["near_cache"]["refreshes"] > 0

    assert json.loads((report / "compare.json").read_text())["same_html"] == r["same_html"]
    md = (report / "compare.md").read_text()
    for plot in ("pages", "freshness", "memory", "throughput"):
        png = report / f"compare-{plot}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
        assert f"](compare-{plot}.png)" in md
    rows = [line for line in md.splitlines() if line.startswith("| ") and "**" in line]
    assert len(rows) == 3, rows  # the three targets, each with its verdict
    for line, what in zip(
        rows, ("home page construction", "save → preview", "state ≤"), strict=True
    ):
        assert what in line and line.rstrip().endswith(("**met** |", "**NOT met** |")), line


def test_bench_compare_refuses_a_refresh_that_is_not_positive(tmp_path: Path) -> None:
    p = subprocess.run(
        [NEARSTATE, "bench", "compare", "--refresh", "0", "--report", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode != 0
    assert "--refresh" in p.stderr + p.stdout
    assert not (tmp_path / "r").exists()


def test_bench_compare_refuses_a_refresh_that_is_not_positive_in_the_library() -> None:
    from nearstate.bench.compare import bench_compare
    from nearstate.errors import NearstateError

    with pytest.raises(NearstateError, match="--refresh"):
        bench_compare(refresh=0)


def test_bench_compare_without_nats_stops_at_once_and_says_where(tmp_path: Path) -> None:
    t0 = time.monotonic()
    out = subprocess.run(
        [NEARSTATE, "bench", "compare", "--films", "5", "--nats", "nats://127.0.0.1:1",
         "--report", str(tmp_path / "r")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode != 0
    assert "NATS" in out.stderr and "127.0.0.1:1" in out.stderr
    assert "Traceback" not in out.stderr
    assert time.monotonic() - t0 < 60  # nats-py's minutes of retries are not waited for
    assert not (tmp_path / "r").exists()
