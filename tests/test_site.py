"""The public site (nearstate.web.site) over HTTP, on data made the way the system makes it:
real films imported into a SQLite write store, stories written and published through the
CMS, a home layout, the ingestion pipeline writing render-ready records into a local
dataset, and the site app's own consumer following that dataset and its Log.

Read-only tests share one such world and one running site (module scope); every test that
writes builds a world of its own."""

from __future__ import annotations

import builtins
import contextlib
import html
import io
import itertools
import re
import socket
import sqlite3
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import nearstate
from nearstate.content import outbox, personalize
from nearstate.content.cms import CMS
from nearstate.content.db import WriteStore, open_store
from nearstate.content.films import import_films
from nearstate.content.ingest import Ingestor, IngestWorker
from nearstate.content.media import MediaConfig
from nearstate.content.records import SCHEMA
from nearstate.web.site import SiteConfig, create_site_app

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # "use httpx2": the httpx installed works
    from starlette.testclient import TestClient

SECRET = "test-secret"
FILMS = 300  # the first 300 films by id: 33 horror titles (two genre pages), 8 westerns
PUBLIC = "public, max-age=10, stale-while-revalidate=60"
PRIVATE = "private, no-cache"
XSS = "<script>alert(1)</script>"
ROW = re.compile(r'<section class="row" aria-label="([^"]*)">')
HOME_ROWS = ["Featured", "Interviews", "Comedies", "Horror", "Westerns"]
GENRE_ROWS = ["Comedies", "Horror", "Westerns"]


# -- the world: write store, films, stories, layout, ingestion, dataset --------------------------


@dataclass
class World:
    root: Path
    store: WriteStore
    cms: CMS
    ds: Any
    media: MediaConfig
    worker: IngestWorker
    author: int
    western: list[dict[str, Any]] = field(default_factory=list)  # titles, by id
    comedy: dict[str, Any] = field(default_factory=dict)
    stories: dict[str, Any] = field(default_factory=dict)  # name -> Saved

    def drain(self) -> None:
        self.worker.drain(timeout=60)
        assert outbox.pending_count(self.store) == 0
        assert outbox.dead_letters(self.store) == []

    def story(self, title: str, slug: str, *, tags: list[str], related: list[int],
              text: str, dek: str | None = None) -> dict[str, Any]:  # fmt: skip
        return {
            "title": title,
            "slug": slug,
            "dek": dek or f"The line under {slug}",
            "hero": f"ph-{related[0]}",  # the first related title's placeholder poster
            "tags": tags,
            "related": related,
            "authors": [self.author],
            "body": [
                {"kind": "paragraph", "text": text},
                {"kind": "heading", "text": "Second part", "level": 2},
                {"kind": "title", "title": related[0]},
                {"kind": "quote", "text": "A line worth repeating.", "cite": "The author"},
            ],
        }

    def publish_new(self, name: str, title: str, slug: str, **kw: Any) -> int:
        s = self.cms.create_story(self.story(title, slug, **kw), user="ann")
        self.cms.publish(s.id, user="ann")
        self.stories[name] = s
        return int(s.id)

    def site(self, **options: Any) -> Any:
        options.setdefault("store", self.store)
        options.setdefault("media", self.media)
        return create_site_app(SiteConfig(dataset=self.ds, secret_key=SECRET, **options))


def _genre_titles(store: WriteStore, genre: str, *, without: str = "") -> list[dict[str, Any]]:
    return store.read(
        "SELECT t.id, t.name, t.slug, t.year FROM titles t JOIN title_genres g"
        " ON g.title_id = t.id WHERE g.genre = ? AND t.id NOT IN"
        " (SELECT title_id FROM title_genres WHERE genre = ?) ORDER BY t.id",
        (genre, without),
    )


def build_world(root: Path, films: int = FILMS) -> World:
    """Films, an author, stories (published, a draft, an unpublished one, one with markup
    in its title), the home layout, all ingested into ``root / "dataset"``."""
    root.mkdir(parents=True, exist_ok=True)
    store = open_store(root / "cms.db")
    import_films(store, limit=films)
    ticks = itertools.count()
    cms = CMS(store, clock=lambda: 1_700_000_000.0 + 60 * next(ticks))  # strictly increasing
    ds = nearstate.open(root / "dataset")
    media = MediaConfig(root / "media")
    worker = IngestWorker(Ingestor(store, ds.writer(schema=SCHEMA), media))
    w = World(root, store, cms, ds, media, worker, cms.add_staff("Maren Okafor"))
    # westerns and a comedy that are no horror films (the horror row must be horror's own)
    w.western = _genre_titles(store, "Western", without="Horror")[:3]
    w.comedy = _genre_titles(store, "Comedy", without="Horror")[0]
    w0, w1 = w.western[0]["id"], w.western[1]["id"]
    w.publish_new("s1", "Zanzibar nights in the west", "zanzibar-nights",
                  tags=["Interviews", "Westerns"], related=[w0, w1],
                  text="Tumbleweed rolls across the quiet plain.")  # fmt: skip
    w.publish_new("s2", "Quixotic comedy confessions", "quixotic-confessions",
                  tags=["Interviews"], related=[w.comedy["id"]],
                  text="Laughter echoes in the cutting room.")  # fmt: skip
    w.publish_new("xss", f"Beware {XSS} of markup", "beware-markup", tags=["Security"],
                  related=[w1], text="Angle brackets are text.")  # fmt: skip
    draft = cms.create_story(
        w.story("Xylophone draft secret", "xylophone-draft", tags=["Interviews"],
                related=[w0], text="Nobody may read this yet."),
        user="ann",
    )  # fmt: skip
    w.stories["draft"] = draft
    gone = w.publish_new("gone", "Vanishing vortex story", "vanishing-vortex",
                         tags=["Interviews"], related=[w1], text="Here and then not.")  # fmt: skip
    cms.unpublish(gone, user="ann")
    ids = [w.stories[k].id for k in ("s2", "s1", "draft", "gone")]
    cms.save_layout(
        "home",
        name="Home",
        rows=[
            {"heading": "Featured", "kind": "stories", "ids": ids},
            {"heading": "Interviews", "kind": "tag", "tag": "interviews", "limit": 10},
            {"heading": "Comedies", "kind": "genre", "genre": "Comedy", "limit": 6},
            {"heading": "Horror", "kind": "genre", "genre": "Horror", "limit": 6},
            {"heading": "Westerns", "kind": "genre", "genre": "Western", "limit": 6},
        ],
        user="ann",
        base_revision=None,
    )
    w.drain()
    return w


# -- waiting for a running site -----------------------------------------------------------------


def until(check: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s (last: {got!r})")
        time.sleep(0.02)


def wait_ready(client: TestClient, ds: Any, timeout: float = 10.0) -> dict[str, Any]:
    """/healthz is 200 and the site shows every write the Log holds."""
    head = ds.log.head()

    def ready() -> dict[str, Any] | None:
        r = client.get("/healthz")
        body = r.json()
        return body if r.status_code == 200 and body["position"] >= head else None

    return until(ready, timeout, "the site holding the whole Log")


def wait_search(client: TestClient, ds: Any = None, timeout: float = 10.0) -> None:
    """The search index is built and (given ``ds``) reflects every write the Log holds:
    it follows the state on a thread of its own, a moment behind."""
    head = ds.log.head() if ds is not None else 0
    until(lambda: client.get("/api/search", params={"q": "x"}).json()["ready"]
          and client.get("/healthz").json()["search_position"] >= head, timeout,
          "the search index")  # fmt: skip


def headings(page: str) -> list[str]:
    return [html.unescape(h) for h in ROW.findall(page)]


def profile_of(response: Any) -> personalize.Profile | None:
    """The profile a response sets in its cookie (None: it sets none)."""
    for h in response.headers.get_list("set-cookie"):
        if h.startswith(f"{personalize.COOKIE}="):
            value = h.split(";", 1)[0].split("=", 1)[1].strip('"')
            return personalize.decode(value, SECRET)
    return None


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = build_world(tmp_path_factory.mktemp("site"))
    yield w
    w.store.close()


@pytest.fixture(scope="module")
def app(world: World) -> Iterator[Any]:
    """The site, started (its lifespan runs for the whole module), holding the world."""
    app = world.site()
    with TestClient(app) as c:
        wait_ready(c, world.ds)
        wait_search(c, world.ds)
        yield app


@pytest.fixture
def client(app: Any) -> TestClient:
    """A fresh visitor (an empty cookie jar) of the running site."""
    return TestClient(app)


# -- pages: HTML and JSON -----------------------------------------------------------------------


def test_home_json_has_the_layout_rows_in_order_and_the_hero(client: TestClient,
                                                             world: World) -> None:  # fmt: skip
    r = client.get("/api/home")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    page = r.json()
    assert page["kind"] == "home" and page["for_you"] is None
    assert [row["heading"] for row in page["rows"]] == HOME_ROWS
    s1, s2 = world.stories["s1"].id, world.stories["s2"].id
    rows = {row["heading"]: row for row in page["rows"]}
    # the draft and the unpublished story are left out of the editor's list
    # the hero (the first card of the first row) is not repeated in its row
    assert [c["id"] for c in rows["Featured"]["cards"]] == [s1]
    assert page["hero"]["id"] == s2 and page["hero"]["url"] == "/stories/quixotic-confessions"
    assert page["hero"]["image"]["large"] == f"/media/ph-{world.comedy['id']}/large.svg"
    assert [c["id"] for c in rows["Interviews"]["cards"]] == [s2, s1]  # newest first
    newest = world.store.read(
        "SELECT t.id FROM titles t JOIN title_genres g ON g.title_id = t.id"
        " WHERE g.genre = 'Horror' ORDER BY COALESCE(t.year, 0) DESC, t.id LIMIT 6"
    )
    assert [c["id"] for c in rows["Horror"]["cards"]] == [x["id"] for x in newest]
    assert all("Horror" in c["genres"] and c["type"] == "title" for c in rows["Horror"]["cards"])


def test_home_html_shows_the_hero_and_rows_in_layout_order(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert headings(r.text) == HOME_ROWS
    hero = re.search(r'<a class="hero-story" href="([^"]+)">.*?<h1>([^<]*)</h1>', r.text, re.S)
    assert hero is not None
    assert hero.groups() == ("/stories/quixotic-confessions", "Quixotic comedy confessions")
    assert "Xylophone" not in r.text and "Vanishing" not in r.text


def test_story_page(client: TestClient, world: World) -> None:
    w0, w1 = world.western[0], world.western[1]
    page = client.get("/api/stories/zanzibar-nights").json()
    assert page["kind"] == "story" and page["id"] == world.stories["s1"].id
    assert page["title"] == "Zanzibar nights in the west"
    assert page["body"][0] == {
        "kind": "paragraph",
        "text": "Tumbleweed rolls across the quiet plain.",
    }
    card = page["body"][2]["title"]
    assert (card["id"], card["name"], card["url"]) == (
        w0["id"],
        w0["name"],
        f"/titles/{w0['slug']}",
    )
    assert [t["id"] for t in page["related"]] == [w0["id"], w1["id"]]
    assert page["authors"] == [{"id": world.author, "name": "Maren Okafor",
                                "url": "/people/maren-okafor"}]  # fmt: skip
    assert [t["url"] for t in page["tags"]] == ["/tags/interviews", "/tags/westerns"]
    assert "Western" in [g["name"] for g in page["genres"]]
    assert page["published_at"] is not None
    # HTML: the same story, its title card, related titles and author as links
    r = client.get("/stories/zanzibar-nights")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    t = r.text
    assert "<h1>Zanzibar nights in the west</h1>" in t
    assert "<p>Tumbleweed rolls across the quiet plain.</p>" in t
    assert "<blockquote><p>A line worth repeating.</p>" in t
    assert f'href="/titles/{w0["slug"]}"' in t and f'href="/titles/{w1["slug"]}"' in t
    assert html.escape(w0["name"]) in t
    assert '<a href="/people/maren-okafor">Maren Okafor</a>' in t
    assert 'href="/tags/interviews"' in t


def test_title_page(client: TestClient, world: World) -> None:
    w0 = world.western[0]
    credits = world.store.read(
        "SELECT tp.role, p.name, p.slug FROM title_people tp JOIN people p"
        " ON p.id = tp.person_id WHERE tp.title_id = ? ORDER BY tp.role, tp.position",
        (w0["id"],),
    )
    directors = [c for c in credits if c["role"] == "director"]
    cast = [c for c in credits if c["role"] == "cast"]
    assert directors and cast
    page = client.get(f"/api/titles/{w0['slug']}").json()
    assert (page["kind"], page["id"], page["name"], page["year"]) == (
        "title", w0["id"], w0["name"], w0["year"])  # fmt: skip
    assert [p["name"] for p in page["directors"]] == [d["name"] for d in directors]
    assert [p["url"] for p in page["cast"]] == [f"/people/{c['slug']}" for c in cast]
    assert "Western" in [g["name"] for g in page["genres"]]
    assert [s["id"] for s in page["stories"]] == [world.stories["s1"].id]  # not the draft
    assert page["more_like_this"] and w0["id"] not in [t["id"] for t in page["more_like_this"]]
    r = client.get(f"/titles/{w0['slug']}")
    assert r.status_code == 200
    for p in directors + cast[:12]:
        assert f'<a href="/people/{p["slug"]}">{html.escape(p["name"])}</a>' in r.text
    assert 'href="/stories/zanzibar-nights"' in r.text


def test_person_page(client: TestClient, world: World) -> None:
    w0 = world.western[0]
    d = world.store.read_one(
        "SELECT p.id, p.name, p.slug FROM title_people tp JOIN people p ON p.id = tp.person_id"
        " WHERE tp.title_id = ? AND tp.role = 'director'",
        (w0["id"],),
    )
    assert d is not None
    films = world.store.read(
        "SELECT DISTINCT t.id FROM title_people tp JOIN titles t ON t.id = tp.title_id"
        " WHERE tp.person_id = ?",
        (d["id"],),
    )
    page = client.get(f"/api/people/{d['slug']}").json()
    assert (page["kind"], page["name"]) == ("person", d["name"])
    assert sorted(t["id"] for t in page["titles"]) == sorted(f["id"] for f in films)
    assert w0["id"] in [t["id"] for t in page["titles"]]
    assert world.stories["s1"].id in [s["id"] for s in page["stories"]]  # about their film
    assert f'href="/titles/{w0["slug"]}"' in client.get(f"/people/{d['slug']}").text
    # the author's page lists what they wrote, published only
    author = client.get("/api/people/maren-okafor").json()
    wrote = {s["id"] for s in author["stories"]}
    assert {world.stories[k].id for k in ("s1", "s2", "xss")} <= wrote
    assert world.stories["draft"].id not in wrote and world.stories["gone"].id not in wrote


def test_genre_pages_newest_first_and_paged(client: TestClient, world: World) -> None:
    horror = world.store.read(
        "SELECT t.id, t.name, t.year FROM titles t JOIN title_genres g ON g.title_id = t.id"
        " WHERE g.genre = 'Horror'"
    )
    want = [t["id"] for t in sorted(horror, key=lambda t: (-(t["year"] or 0), t["name"], t["id"]))]
    p1 = client.get("/api/genres/horror").json()
    p2 = client.get("/api/genres/horror?page=2").json()
    assert (p1["kind"], p1["name"], p1["count"], p1["page"], p1["pages"]) == (
        "genre", "Horror", len(horror), 1, 2)  # fmt: skip
    assert p2["page"] == 2
    got = [t["id"] for t in p1["titles"] + p2["titles"]]
    assert len(p1["titles"]) == 24 and got == want
    years = [t["year"] or 0 for t in p1["titles"] + p2["titles"]]
    assert years == sorted(years, reverse=True)
    r = client.get("/genres/horror?page=2")
    assert r.status_code == 200 and "Page 2 of 2" in r.text
    assert 'rel="prev" href="/genres/horror?page=1"' in r.text
    # the stories of a genre: those whose titles have it
    westerns = client.get("/api/genres/western").json()
    assert world.stories["s1"].id in [s["id"] for s in westerns["stories"]]


@pytest.mark.parametrize("bad", ["abc", "-1", "1.5", "9999999", "%00"])
def test_genre_bad_page_number_is_400_with_a_message(client: TestClient, bad: str) -> None:
    r = client.get(f"/genres/horror?page={bad}")
    assert r.status_code == 400 and r.headers["content-type"].startswith("text/html")
    assert "page must be a whole number" in r.text
    r = client.get(f"/api/genres/horror?page={bad}")
    assert r.status_code == 400 and r.headers["content-type"] == "application/json"
    assert "page must be a whole number" in r.json()["error"]


@pytest.mark.parametrize("page", ["3", "0", "100"])
def test_genre_page_past_the_end_is_404(client: TestClient, page: str) -> None:
    assert client.get(f"/genres/horror?page={page}").status_code == 404
    r = client.get(f"/api/genres/horror?page={page}")
    assert r.status_code == 404 and "error" in r.json()


def test_tag_page_newest_first_published_only(client: TestClient, world: World) -> None:
    page = client.get("/api/tags/interviews").json()
    assert (page["kind"], page["name"], page["count"]) == ("tag", "Interviews", 2)
    assert [s["id"] for s in page["stories"]] == [world.stories["s2"].id, world.stories["s1"].id]
    r = client.get("/tags/interviews")
    assert r.status_code == 200
    t = r.text
    assert t.index("Quixotic comedy confessions") < t.index("Zanzibar nights in the west")
    assert "Xylophone" not in t and "Vanishing" not in t


# -- what does not exist ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "what"),
    [
        ("/stories/no-such-story", "story"),
        ("/titles/no-such-title", "title"),
        ("/people/no-such-person", "person"),
        ("/genres/no-such-genre", "genre"),
        ("/tags/no-such-tag", "tag"),
        ("/no/such/path", "page"),
    ],
)
def test_unknown_is_404_in_html_and_json(client: TestClient, path: str, what: str) -> None:
    r = client.get(path)
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("text/html")
    assert f"There is no {what} here." in r.text and "<h1>Not found</h1>" in r.text
    r = client.get("/api" + path)
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"error": f"There is no {what} here."}


def test_draft_and_unpublished_stories_are_not_on_the_site(client: TestClient) -> None:
    for slug in ("xylophone-draft", "vanishing-vortex"):
        assert client.get(f"/stories/{slug}").status_code == 404
        assert client.get(f"/api/stories/{slug}").status_code == 404
    for q in ("xylophone", "vortex", "nobody may read"):
        assert client.get("/api/search", params={"q": q}).json()["hits"] == []
    home = client.get("/api/home").text + client.get("/").text
    assert "Xylophone" not in home and "Vanishing" not in home


# -- cache headers and ETags --------------------------------------------------------------------

PRIVATE_PAGES = ["/", "/stories/zanzibar-nights", "/titles/{w0}", "/genres/horror"]
PUBLIC_PAGES = ["/tags/interviews", "/people/maren-okafor"]
JSON_PAGES = ["/api/home", "/api/stories/zanzibar-nights", "/api/titles/{w0}",
              "/api/genres/horror", "/api/tags/interviews", "/api/people/maren-okafor",
              "/api/search?q=zanzibar"]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "cache", "vary"),
    [(p, PRIVATE, True) for p in PRIVATE_PAGES]
    + [(p, PUBLIC, False) for p in PUBLIC_PAGES + JSON_PAGES],
)
def test_cache_headers_etag_and_304(client: TestClient, world: World, path: str, cache: str,
                                    vary: bool) -> None:  # fmt: skip
    path = path.format(w0=world.western[0]["slug"])
    r = client.get(path, headers={"DNT": "1"})  # learning nothing: the same page each time
    assert r.status_code == 200
    assert r.headers["cache-control"] == cache
    assert ("cookie" in r.headers.get("vary", "").lower()) is vary
    etag = r.headers["etag"]
    assert re.fullmatch(r'"[0-9a-f]+"', etag)
    again = client.get(path, headers={"DNT": "1", "If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == etag
    other = client.get(path, headers={"DNT": "1", "If-None-Match": '"0000", ' + etag})
    assert other.status_code == 304
    stale = client.get(path, headers={"DNT": "1", "If-None-Match": '"not-it"'})
    assert stale.status_code == 200 and stale.content == r.content


def test_different_pages_have_different_etags(client: TestClient) -> None:
    tags = {client.get(p).headers["etag"] for p in
            ("/api/stories/zanzibar-nights", "/api/stories/quixotic-confessions",
             "/api/genres/horror", "/api/genres/horror?page=2")}  # fmt: skip
    assert len(tags) == 4


# -- security headers and escaping ---------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/stories/beware-markup", "/tags/security",
                                  "/search?q=beware", "/profile", "/stories/no-such",
                                  "/genres/horror?page=x"])  # fmt: skip
def test_html_security_headers(client: TestClient, path: str) -> None:
    r = client.get(path)
    csp = r.headers["content-security-policy"]
    assert "script-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert r.headers["x-content-type-options"] == "nosniff"


def test_html_security_headers_on_an_unknown_path(client: TestClient) -> None:
    r = client.get("/no/such/page")
    assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")
    assert "script-src 'none'" in r.headers.get("content-security-policy", "")
    assert r.headers.get("x-content-type-options") == "nosniff"


def test_user_content_is_escaped(client: TestClient) -> None:
    escaped = html.escape(XSS, quote=False)
    for path in ("/stories/beware-markup", "/tags/security", "/people/maren-okafor"):
        r = client.get(path)
        assert r.status_code == 200
        assert XSS not in r.text and escaped in r.text, path
    r = client.get("/search", params={"q": XSS})
    assert r.status_code == 200 and XSS not in r.text
    assert client.get("/api/stories/beware-markup").json()["title"] == f"Beware {XSS} of markup"


# -- personalisation ----------------------------------------------------------------------------


def test_story_title_and_genre_visits_set_the_profile_cookie(client: TestClient,
                                                             world: World) -> None:  # fmt: skip
    r = client.get("/stories/zanzibar-nights")
    p = profile_of(r)
    assert p is not None and p.seen == (world.stories["s1"].id,) and p.visits == 1
    assert "Western" in p.affinities
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "max-age=" in cookie
    p = profile_of(client.get(f"/titles/{world.western[0]['slug']}"))
    assert p is not None and p.visits == 2 and "Western" in p.affinities
    p = profile_of(client.get("/genres/horror"))
    assert p is not None and p.visits == 3 and "Horror" in p.affinities
    # pages that do not learn set nothing; JSON never learns
    for path in ("/tags/interviews", "/people/maren-okafor", "/api/stories/zanzibar-nights",
                 "/api/genres/horror", "/"):  # fmt: skip
        assert profile_of(client.get(path)) is None, path


def test_reloading_a_story_teaches_nothing_new(client: TestClient, world: World) -> None:
    first = profile_of(client.get("/stories/zanzibar-nights"))
    assert first is not None
    before = client.cookies[personalize.COOKIE]
    again = client.get("/stories/zanzibar-nights")
    assert again.status_code == 200 and profile_of(again) is None
    assert client.cookies[personalize.COOKIE] == before
    # another story in between, then the first again: that is a new visit
    assert profile_of(client.get("/stories/quixotic-confessions")) is not None
    back = profile_of(client.get("/stories/zanzibar-nights"))
    assert back is not None and back.visits == 3
    assert back.seen == (world.stories["s1"].id, world.stories["s2"].id)


@pytest.mark.parametrize("header", ["DNT", "Sec-GPC"])
def test_do_not_track_sets_no_cookie(client: TestClient, world: World, header: str) -> None:
    for path in ("/stories/zanzibar-nights", f"/titles/{world.western[0]['slug']}",
                 "/genres/horror"):  # fmt: skip
        r = client.get(path, headers={header: "1"})
        assert r.status_code == 200 and "set-cookie" not in r.headers, path
    r = client.get("/profile", headers={header: "1"})
    assert "asks not to be tracked" in r.text


def horror_fan(client: TestClient, world: World) -> personalize.Profile:
    """Visit several horror pages; the profile learned."""
    horror = world.store.read(
        "SELECT t.slug FROM titles t JOIN title_genres g ON g.title_id = t.id"
        " WHERE g.genre = 'Horror' ORDER BY t.id LIMIT 2"
    )
    for path in ["/genres/horror", "/genres/horror?page=2", "/genres/horror",
                 *(f"/titles/{t['slug']}" for t in horror)]:  # fmt: skip
        assert client.get(path).status_code == 200
    prof = personalize.decode(client.cookies[personalize.COOKIE], SECRET)
    assert prof.top(1)[0][0] == "Horror"
    return prof


def test_home_follows_the_visitors_genres(app: Any, client: TestClient, world: World) -> None:
    anonymous = TestClient(app).get("/")
    assert headings(anonymous.text) == HOME_ROWS and "For you" not in anonymous.text
    horror_fan(client, world)
    r = client.get("/")
    assert r.status_code == 200
    rows = headings(r.text)
    assert rows[0] == "For you"  # the "For you" row comes first
    assert rows[1] == "Featured"  # the hero's row keeps its slot
    assert [h for h in rows if h in GENRE_ROWS] == ["Horror", "Comedies", "Westerns"]
    assert [h for h in headings(anonymous.text) if h in GENRE_ROWS] == GENRE_ROWS
    assert r.headers["etag"] != anonymous.headers["etag"]
    assert r.headers["cache-control"] == PRIVATE and r.headers["vary"] == "Cookie"
    # the JSON home is everybody's
    assert client.get("/api/home").content == TestClient(app).get("/api/home").content


def test_home_rows_render_their_kind(client: TestClient, world: World) -> None:
    horror_fan(client, world)
    t = client.get("/").text
    rows = re.findall(
        r'<section class="row" aria-label="([^"]*)">\s*<h2>[^<]*</h2>\s*'
        r'(?:<p class="rule">([^<]*)</p>\s*)?<div class="cards ?([^"]*)">',
        t,
    )
    got = {heading: (rule, cls) for heading, rule, cls in rows}
    assert set(got) == {"For you", *HOME_ROWS}
    # the "For you" row says why; title rows are poster rows; story rows are not
    assert got["For you"][0].startswith("picked for your interest in Horror")
    assert [h for h, (_, cls) in got.items() if cls == "posters"] == [
        "Horror",
        "Comedies",
        "Westerns",
    ]


def test_profile_page_shows_and_forgets(app: Any, client: TestClient, world: World) -> None:
    empty = client.get("/profile")
    assert empty.status_code == 200 and "Nothing yet." in empty.text
    assert empty.headers["cache-control"] == "private, no-store"
    prof = horror_fan(client, world)
    r = client.get("/profile")
    assert '<span class="label">Horror</span>' in r.text
    assert f"{prof.visits} visits" in r.text
    gone = client.post("/profile/forget", follow_redirects=False)
    assert gone.status_code == 303 and gone.headers["location"] == "/profile?forgotten=1"
    cookie = gone.headers["set-cookie"]
    assert cookie.startswith(f"{personalize.COOKIE}=") and "Max-Age=0" in cookie
    assert personalize.COOKIE not in client.cookies
    assert "Nothing yet." in client.get("/profile").text
    anon = TestClient(app).get("/")
    assert client.get("/").headers["etag"] == anon.headers["etag"]


@pytest.mark.parametrize(
    "cookie",
    [
        "garbage",
        "x" * 5000,
        personalize.encode(personalize.learn(personalize.Profile.EMPTY, ["Horror"]), "other"),
        personalize.encode(personalize.learn(personalize.Profile.EMPTY, ["Horror"]), SECRET)[:-2]
        + "AA",
    ],
    ids=["garbage", "oversized", "other-secret", "bad-signature"],
)
def test_forged_cookie_is_ignored(app: Any, cookie: str) -> None:
    anon = TestClient(app).get("/")
    forged = TestClient(app, cookies={personalize.COOKIE: cookie})
    r = forged.get("/")
    assert r.status_code == 200 and r.content == anon.content
    assert "For you" not in r.text
    assert "Nothing yet." in forged.get("/profile").text


# -- search -------------------------------------------------------------------------------------


def hits(client: TestClient, q: str, **params: Any) -> list[dict[str, Any]]:
    r = client.get("/api/search", params={"q": q, **params})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["ready"] is True and body["kind"] == "search"
    return body["hits"]


def test_search_finds_stories_titles_and_people(client: TestClient, world: World) -> None:
    s1 = world.stories["s1"].id
    for q in ("zanzibar", "Zanzibar nights", "zanzib", "ZANZ nig"):
        found = [(h["type"], h["id"]) for h in hits(client, q)]
        assert ("story", s1) in found, q
    story = next(h for h in hits(client, "zanzibar") if h["type"] == "story")
    assert story["url"] == "/stories/zanzibar-nights"
    assert story["excerpt"] == "The line under zanzibar-nights"
    w0 = world.western[0]
    prefix = " ".join(word[:4] for word in re.findall(r"\w+", w0["name"]))
    titles = hits(client, prefix)
    assert any(h["type"] == "title" and h["id"] == w0["id"] and h["url"] == f"/titles/{w0['slug']}"
               for h in titles), (prefix, titles)  # fmt: skip
    people = hits(client, "maren okafor")
    assert people[0]["type"] == "person" and people[0]["url"] == "/people/maren-okafor"
    assert hits(client, "okaf")[0]["label"] == "Maren Okafor"


def test_search_type_filter(client: TestClient, world: World) -> None:
    w0 = world.western[0]
    everything = hits(client, w0["name"])
    only = hits(client, w0["name"], type="Title")
    assert only and {h["type"] for h in only} == {"title"}
    assert w0["id"] in [h["id"] for h in only]
    assert [h for h in everything if h["type"] == "title"][: len(only)] == only[: len(only)]
    assert {h["type"] for h in hits(client, "zanzibar", type="Person")} <= {"person"}
    both = hits(client, "tumbleweed", type=["Story", "Title"])
    assert [h["id"] for h in both] == [world.stories["s1"].id]
    for q in ("x", ""):  # refused alike with or without a query
        r = client.get("/api/search", params={"q": q, "type": "Nope"})
        assert r.status_code == 400 and "Nope" in r.json()["error"], q


@pytest.mark.parametrize("q", ["", "   ", "!!!", "&&"])
def test_empty_query_finds_nothing(client: TestClient, q: str) -> None:
    assert hits(client, q) == []
    assert client.get("/search", params={"q": q}).status_code == 200


def test_huge_query_is_no_error(client: TestClient) -> None:
    q = "zanzibar " + "x" * 10_240
    r = client.get("/api/search", params={"q": q})
    assert r.status_code == 200 and len(r.json()["q"]) <= 200
    assert client.get("/search", params={"q": q}).status_code == 200


def test_search_page_html(client: TestClient) -> None:
    r = client.get("/search", params={"q": "zanzibar"})
    assert r.status_code == 200
    assert '<a href="/stories/zanzibar-nights">Zanzibar nights in the west</a>' in r.text


# -- health and metrics -------------------------------------------------------------------------


def test_healthz_when_ready(client: TestClient, world: World) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    body = r.json()
    assert body["status"] == "ok" and body["position"] == world.ds.log.head()
    assert "version" in body and body["last_error"] is None
    assert body["search_documents"] > FILMS  # titles, people and stories


def metric(text: str, pattern: str) -> float:
    m = re.search(pattern + r" ([0-9.e+-]+|NaN)$", text, re.M)
    assert m, f"no {pattern} in the metrics"
    return float(m.group(1))


def test_metrics(client: TestClient, world: World) -> None:
    before = client.get("/metrics").text
    n = metric(before, r'nearstate_site_request_seconds_count\{route="story"\}') if (
        'count{route="story"}' in before) else 0.0  # fmt: skip
    assert client.get("/stories/zanzibar-nights").status_code == 200
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    t = r.text
    assert "nearstate_state_version " in t
    assert metric(t, "nearstate_log_position") == world.ds.log.head()
    assert metric(t, r'nearstate_state_bytes\{type="Story"\}') > 0
    assert metric(t, r'nearstate_state_bytes\{type="Title"\}') > 0
    assert re.search(r'nearstate_site_request_seconds_bucket\{[^}]*route="story"[^}]*\} 1', t)
    assert metric(t, r'nearstate_site_request_seconds_count\{route="story"\}') == n + 1
    assert metric(t, "nearstate_search_documents") > FILMS
    assert metric(t, "nearstate_state_held") == 1


# -- a site that holds nothing yet --------------------------------------------------------------


def test_starting_site_answers_503(tmp_path: Path) -> None:
    ds = nearstate.open(tmp_path / "empty")  # nothing written, nothing announced
    app = create_site_app(SiteConfig(dataset=ds, secret_key=SECRET))
    with TestClient(app) as c:
        time.sleep(0.2)
        r = c.get("/healthz")
        assert r.status_code == 503 and r.json()["status"].startswith("starting")
        for path in ("/", "/stories/x", "/genres/horror", "/profile", "/search?q=x"):
            r = c.get(path)
            assert r.status_code == 503 and r.headers["retry-after"] == "1", path
            assert r.headers["content-type"].startswith("text/html")
            assert "The site is starting" in r.text
        r = c.get("/api/home")
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert "starting" in r.json()["error"]
        assert c.get("/api/search?q=x").status_code == 503
        assert metric(c.get("/metrics").text, "nearstate_state_held") == 0


# -- no I/O per request -------------------------------------------------------------------------


BACKGROUND = ("nearstate-", "site-search")  # the consumer's and the search index's threads


def test_pages_do_no_io(world: World) -> None:
    app = world.site(page_cache=0)
    slug = world.western[0]["slug"]
    paths = ["/", "/stories/zanzibar-nights", f"/titles/{slug}", "/people/maren-okafor",
             "/genres/horror", "/genres/horror?page=2", "/tags/interviews", "/search?q=zanz",
             "/profile", "/no/such/page"]  # fmt: skip
    paths += ["/api/home" if p == "/" else "/api" + p for p in paths if p != "/profile"]
    with TestClient(app) as c:
        wait_ready(c, world.ds)
        wait_search(c)
        for p in paths:  # once, so the templates are compiled
            c.get(p)
        fan = TestClient(app, cookies={personalize.COOKIE: personalize.encode(
            personalize.learn(personalize.Profile.EMPTY, ["Horror"]), SECRET)})  # fmt: skip
        assert "For you" in fan.get("/").text  # personalised: built per request, no cache
        calls: list[str] = []

        def refuse(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
            def call(*args: Any, **kwargs: Any) -> Any:
                thread = threading.current_thread().name
                if thread.startswith(BACKGROUND):  # following the dataset is no request
                    return real(*args, **kwargs)
                calls.append(f"{name} in {thread}: {args[:2]!r}")
                raise OSError(f"{name} during a request")

            return call

        with pytest.MonkeyPatch.context() as mp:
            for owner, name in ((socket.socket, "connect"), (sqlite3, "connect"),
                                (builtins, "open"), (io, "open")):  # fmt: skip
                mp.setattr(owner, name, refuse(name, getattr(owner, name)))
            got = {p: c.get(p, headers={"DNT": "1"}).status_code for p in paths}
            got["/ (with a profile)"] = fan.get("/").status_code
        assert calls == []
        want = {p: 404 if "no/such" in p else 200 for p in got}
        assert got == want


# -- writes while the site runs (each test its own world) ---------------------------------------


def test_a_published_story_appears_without_a_restart(tmp_path: Path) -> None:
    w = build_world(tmp_path, films=120)
    try:
        with TestClient(w.site()) as c:
            wait_ready(c, w.ds)
            wait_search(c)
            home = c.get("/")  # the home page is in the page cache now
            api_home = c.get("/api/home")
            assert c.get("/api/stories/yonder-premiere").status_code == 404
            sid = w.publish_new("new", "Yonder premiere report", "yonder-premiere",
                                tags=["Interviews"], related=[w.western[-1]["id"]],
                                text="Fresh from the festival.")  # fmt: skip
            w.drain()
            t0 = time.monotonic()
            until(lambda: c.get("/api/stories/yonder-premiere").status_code == 200, 3.0,
                  "the new story on the site")  # fmt: skip
            assert time.monotonic() - t0 < 3.0
            # the state changed: no page of the old state is served any more
            now = c.get("/")
            assert "Yonder premiere report" in now.text
            assert now.headers["etag"] != home.headers["etag"]
            assert "Yonder premiere report" not in home.text
            page = c.get("/api/home").json()
            interviews = next(r for r in page["rows"] if r["heading"] == "Interviews")
            assert interviews["cards"][0]["id"] == sid  # the tag row, newest first
            assert c.get("/api/home").headers["etag"] != api_home.headers["etag"]
            r = c.get("/stories/yonder-premiere")
            assert r.status_code == 200 and "Fresh from the festival." in r.text
            assert c.get("/api/tags/interviews").json()["stories"][0]["id"] == sid
            until(lambda: [h["id"] for h in hits(c, "yonder")] == [sid], 3.0, "search")
            # an If-None-Match of the old home page is not answered 304 any more
            assert c.get("/", headers={"If-None-Match": home.headers["etag"]}).status_code == 200
    finally:
        w.store.close()


def test_an_unpublished_story_disappears(tmp_path: Path) -> None:
    w = build_world(tmp_path, films=120)
    try:
        with TestClient(w.site()) as c:
            wait_ready(c, w.ds)
            wait_search(c)
            sid = w.stories["s1"].id
            assert c.get("/stories/zanzibar-nights").status_code == 200
            assert "Zanzibar nights" in c.get("/").text
            w.cms.unpublish(sid, user="ann")
            w.drain()
            until(lambda: c.get("/api/stories/zanzibar-nights").status_code == 404, 3.0,
                  "the story gone")  # fmt: skip
            assert c.get("/stories/zanzibar-nights").status_code == 404
            assert "Zanzibar nights" not in c.get("/").text
            assert "Zanzibar nights" not in c.get("/api/home").text
            assert sid not in [s["id"] for s in c.get("/api/tags/interviews").json()["stories"]]
            until(lambda: hits(c, "zanzibar") == [], 3.0, "the story out of search")
    finally:
        w.store.close()


def test_two_sites_on_one_dataset_both_show_a_new_story(tmp_path: Path) -> None:
    w = build_world(tmp_path, films=120)
    try:
        with TestClient(w.site()) as a, TestClient(w.site(page_cache=0)) as b:
            for c in (a, b):
                wait_ready(c, w.ds)
                assert c.get("/api/stories/twin-report").status_code == 404
            w.publish_new("twin", "Twin report", "twin-report", tags=["Interviews"],
                          related=[w.western[0]["id"]], text="Seen twice.")  # fmt: skip
            w.drain()
            for c in (a, b):
                until(lambda c=c: c.get("/api/stories/twin-report").status_code == 200, 3.0,
                      "the story on both sites")  # fmt: skip
                assert "Twin report" in c.get("/").text
    finally:
        w.store.close()


# -- found while writing these tests ------------------------------------------------------------


def test_home_without_stories_or_layout_is_a_page(tmp_path: Path) -> None:
    store = open_store(tmp_path / "cms.db")
    try:
        import_films(store, limit=20)  # titles only: nothing published, no layout
        ds = nearstate.open(tmp_path / "dataset")
        IngestWorker(Ingestor(store, ds.writer(schema=SCHEMA), MediaConfig(tmp_path / "m"))).drain(
            timeout=60
        )
        with TestClient(create_site_app(SiteConfig(dataset=ds, secret_key=SECRET))) as c:
            wait_ready(c, ds)
            assert c.get("/api/genres/drama").status_code == 200  # the titles are there
            r = c.get("/")
            assert r.status_code == 200 and "Nothing is published yet" in r.text
            assert c.get("/api/home").status_code == 200
    finally:
        store.close()


def test_healthz_is_not_ok_before_the_log_was_read(world: World) -> None:
    gate = threading.Event()
    ds = nearstate.open(world.root / "dataset")  # a handle of its own: its own Log object
    log = ds.log
    real = log.read

    def slow_read(*args: Any, **kwargs: Any) -> Any:
        gate.wait(5)
        return real(*args, **kwargs)

    app = create_site_app(SiteConfig(dataset=ds, secret_key=SECRET))
    log.read = slow_read  # the site's consumer cannot read the Log until the gate opens
    try:
        with TestClient(app) as c:
            deadline = time.monotonic() + 0.5
            seen = []
            while time.monotonic() < deadline:
                r = c.get("/healthz")
                seen.append((r.status_code, r.json()["position"]))
                time.sleep(0.02)
            gate.set()
            # nothing of the Log is shown: the site must not call itself ready
            assert all(code == 503 for code, _ in seen), seen[:3]
            wait_ready(c, ds)
    finally:
        gate.set()
        with contextlib.suppress(AttributeError):
            del log.read
