"""The explorer (nearstate.web.explorer) over HTTP, on datasets made the ways a user makes
them: through the store's writer and compactions (references, a composite key, nested
records, versions, a Log tail not yet compacted), by ``import_jsonl`` of a JSON Lines file
twice, and by the content pipeline (films, a story published and edited, ingested).

Every expectation is computed from the dataset itself (``ds.load(...)``), not typed in;
the read-only tests crawl every page the explorer links to and check that no file of the
dataset changed, and that every other method than GET is refused."""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import json
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

import nearstate
from nearstate import Ref, Schema, record
from nearstate.web.explorer import ExplorerConfig, create_explorer_app

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # "use httpx2": the httpx installed works
    from starlette.testclient import TestClient

MOVIES = 120
PEOPLE = 6
LINK = re.compile(r'href="([^"]+)"')
XSS = "<script>alert(1)</script>"


@dataclass
class Info:
    language: str
    runtime: int


@record(key="id")
@dataclass
class Person:
    id: int
    name: str


@record(key="id")
@dataclass
class Movie:
    id: int
    title: str
    year: int
    rating: float
    released: dt.datetime
    tags: list[str]
    director: Ref[Person]
    cast: list[Ref[Person]]
    info: Info
    notes: dict[str, int] = field(default_factory=dict)


@record(key=("movie", "person"))
@dataclass
class Credit:
    movie: int
    person: int
    role: str


SCHEMA = Schema.from_dataclasses(Movie, Person, Credit)


def movie(i: int, **over: Any) -> dict[str, Any]:
    m = {
        "id": i, "title": f"Film {i:03d}", "year": 1990 + i % 25,
        "rating": round(5 + (i % 9) / 2, 1),
        "released": dt.datetime(1990 + i % 25, 1 + i % 12, 1),
        "tags": ["drama" if i % 2 else "comedy", f"t{i % 5}"],
        "director": i % PEOPLE, "cast": [(i + 1) % PEOPLE, (i + 2) % PEOPLE],
        "info": {"language": "en" if i % 3 else "fr", "runtime": 80 + i},
        "notes": {"reels": i % 4},
    }  # fmt: skip
    m.update(over)
    return m


def build_local(root: Path) -> nearstate.Dataset:
    """Version 1: MOVIES movies, PEOPLE people, credits. Version 2: Person 1 renamed, Movie
    3 retitled and given another director, Movie 5 deleted, Movie 500 added. Then one more
    commit to the Log (Movie 7 retitled) that no version includes."""
    ds = nearstate.open(root)
    w = ds.writer(schema=SCHEMA)
    t = w.transaction()
    for i in range(PEOPLE):
        t.upsert("Person", {"id": i, "name": f"Person {i}"})
    for i in range(MOVIES):
        t.upsert("Movie", movie(i))
        t.upsert("Credit", {"movie": i, "person": i % PEOPLE, "role": "director"})
    t.commit()
    ds.compact()
    t = w.transaction()
    t.upsert("Person", {"id": 1, "name": "Renamed One"})
    t.upsert("Movie", movie(3, title="Film three, retitled", director=2))
    t.delete("Movie", 5)
    t.upsert("Movie", movie(500, title="A film added later"))
    t.commit()
    ds.compact()
    w.upsert("Movie", movie(7, title="Retitled in the Log only"))
    ds.log.close()
    return ds


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> nearstate.Dataset:
    return build_local(tmp_path_factory.mktemp("explorer") / "ds")


def client_for(ds: Any) -> TestClient:
    return TestClient(create_explorer_app(ExplorerConfig(dataset=nearstate.open(ds.url))))


@pytest.fixture(scope="module")
def client(local: Any) -> Iterator[TestClient]:
    with client_for(local) as c:
        yield c


def text(r: Any) -> str:
    """A page's text without tags, entities decoded, whitespace collapsed."""
    body = re.sub(r"<[^>]+>", " ", r.text)
    return " ".join(html.unescape(body).split())


def rows(r: Any, table: str) -> list[str]:
    m = re.search(rf'<table[^>]*id="{table}".*?</table>', r.text, re.S)
    assert m, f"no table {table}"
    return re.findall(r"<tr[^>]*>(.*?)</tr>", m.group(0), re.S)[1:]


def record_keys(r: Any) -> list[str]:
    return [
        html.unescape(k) for k in re.findall(r'<a class="key" href="[^"]*">([^<]*)</a>', r.text)
    ]


def ok(c: TestClient, url: str) -> Any:
    r = c.get(url)
    assert r.status_code == 200, (url, r.status_code, text(r)[:300])
    return r


# -- types, fields, records -----------------------------------------------------------------------


def test_types_with_record_counts_and_bytes(client: TestClient, local: Any) -> None:
    state = local.load()
    page = ok(client, "/")
    shown = {re.sub(r"<[^>]+>", "", r.split("</td>")[0]).strip(): r for r in rows(page, "types")}
    assert set(shown) == set(state)
    for name in state:
        ts = state[name]
        cells = [re.sub(r"<[^>]+>", "", c).strip() for c in shown[name].split("</td>")]
        # the current state holds the Log's tail too: Movie 7 replaced, none added or removed
        assert cells[2] == f"{len(ts):,}" and cells[5] == str(len(ts.typedef.fields))
    assert 'holds <a href="/log">1 committed transaction</a> that no version' in page.text
    v1 = local.load(1)
    page = ok(client, "/?v=1")
    assert f"{len(v1['Movie']):,}" in text(page) and "version 1" in text(page)


def test_bytes_per_field(client: TestClient, local: Any) -> None:
    ts = local.load(2)["Movie"]
    page = ok(client, "/types/Movie?v=2")
    got, layouts = {}, {}
    for r in rows(page, "fields"):
        cells = [re.sub(r"<[^>]+>", " ", c).split() for c in r.split("</td>")]
        got[cells[0][0]] = int(cells[2][0].replace(",", ""))
        layouts[cells[0][0]] = html.unescape(" ".join(cells[4]))
    assert got == ts.field_nbytes()
    assert all(n > 0 for n in got.values())
    # how each column is stored, as nearstate inspect says it
    from nearstate.encoding import describe_layout

    blob = local.load(2).base.blob
    meta = blob.header["types"]["Movie"]["columns"]
    for name, said in layouts.items():
        want = describe_layout(meta.get(name, {}), blob.section_sizes, f"Movie/{name}")
        assert said == " ".join((want or "plain").split()), name


def test_records_are_paged_and_each_shown_once(client: TestClient, local: Any) -> None:
    n = len(local.load(2)["Movie"])
    seen: list[str] = []
    page = 1
    while True:
        r = client.get(f"/types/Movie?v=2&page={page}")
        if r.status_code == 404:
            assert "past the end" in text(r)
            break
        assert r.status_code == 200
        keys = record_keys(r)
        assert len(keys) == min(50, n - len(seen))
        seen += keys
        page += 1
    assert page - 1 == -(-n // 50)
    expected = [str(m.key) for m in local.load(2)["Movie"]]
    assert seen == expected  # in ordinal order, each once


def test_record_renders_every_field_and_links_references(client: TestClient, local: Any) -> None:
    rec = local.load(2)["Movie"].get(3)
    r = ok(client, "/types/Movie/record?key=3&v=2")
    body = text(r)
    for f in SCHEMA["Movie"].fields:
        assert f.name in body
    assert rec.title in body and rec.info.language in body and str(rec.info.runtime) in body
    assert f"reels {rec['notes']['reels']}" in body
    assert rec.released.isoformat() in body
    # the director and the cast link to their Person records, at the same version
    assert f'href="/types/Person/record?key={rec.director.key}&amp;v=2"' in r.text
    for p in rec.cast:
        assert f'href="/types/Person/record?key={p.key}&amp;v=2"' in r.text
    person = ok(client, f"/types/Person/record?key={rec.director.key}&v=2")
    assert rec.director.name in text(person)
    # and back: the fields that can refer to this Person find the records that do
    k = rec.director.key
    incoming = re.findall(r'<a class="incoming" href="([^"]+)">([^<]+)</a>', person.text)
    assert [n for _, n in incoming] == ["Movie.director", "Movie.cast"]
    back = record_keys(ok(client, html.unescape(incoming[0][0])))
    assert back == [str(m.key) for m in local.load(2)["Movie"].find(director=k)] and "3" in back


def test_records_in_key_order(client: TestClient, local: Any) -> None:
    r = ok(client, "/types/Movie")
    m = re.search(r'\(<a href="([^"]+)">in key order</a>\)', r.text)
    assert m
    keys = record_keys(ok(client, html.unescape(m.group(1))))
    assert keys == [str(k) for k in sorted(local.load(2)["Movie"].keys())][:50]


def test_composite_keys(client: TestClient, local: Any) -> None:
    rec = local.load(2)["Credit"].get((4, 4))
    r = ok(client, "/types/Credit/record?key=4&key=4")
    assert rec.role in text(r)
    listing = ok(client, "/types/Credit")
    assert 'href="/types/Credit/record?key=0&amp;key=0"' in listing.text
    r = client.get("/types/Credit/record?key=4")
    assert r.status_code == 400 and "give 2 values" in text(r)


def test_the_current_state_includes_the_log_tail(client: TestClient, local: Any) -> None:
    assert "Retitled in the Log only" in text(ok(client, "/types/Movie/record?key=7"))
    old = text(ok(client, "/types/Movie/record?key=7&v=2"))
    assert "Retitled in the Log only" not in old and "Film 007" in old
    assert "Film 003" in text(ok(client, "/types/Movie/record?key=3&v=1"))


# -- indexes: value, range, prefix ------------------------------------------------------------


def test_find_by_value_through_an_index(client: TestClient, local: Any) -> None:
    ts = local.load(2)["Movie"]
    want = sorted(str(r.key) for r in ts.find(director=2))
    r = ok(client, "/types/Movie?v=2&field=director&op=eq&value=2")
    assert sorted(record_keys(r)) == want and len(want) > 10
    assert f"{len(want)} records where director = 2" in text(r)
    want = sorted(str(r.key) for r in ts.find(tags="t3"))  # a list field: contains
    assert sorted(record_keys(ok(client, "/types/Movie?v=2&field=tags&value=t3"))) == want


def test_range_and_prefix_in_the_fields_order(client: TestClient, local: Any) -> None:
    ts = local.load(2)["Movie"]
    want = [str(m.key) for m in ts.ordered("year").range(2000, 2003)]
    got = record_keys(ok(client, "/types/Movie?v=2&field=year&op=range&lo=2000&hi=2003"))
    assert got == want[:50] and len(want) > 10
    desc = record_keys(
        ok(client, "/types/Movie?v=2&field=year&op=range&lo=2000&hi=2003&order=desc")
    )
    assert desc == [str(m.key) for m in ts.ordered("year").range(2000, 2003, reverse=True)][:50]
    open_lo = record_keys(ok(client, "/types/Movie?v=2&field=rating&op=range&hi=5.5"))
    assert open_lo == [str(m.key) for m in ts.ordered("rating").range(None, 5.5)][:50]
    want = [str(m.key) for m in ts.ordered("title").prefix("Film 01")]
    assert record_keys(ok(client, "/types/Movie?v=2&field=title&op=prefix&value=Film+01")) == want
    when = record_keys(ok(client, "/types/Movie?v=2&field=released&op=range&lo=2010-01-01"))
    assert when == [str(m.key) for m in ts.ordered("released").range(dt.datetime(2010, 1, 1))][:50]


def test_indexes_answer_on_the_current_state_too(client: TestClient, local: Any) -> None:
    """The current state is a version with the Log's tail laid over it: its indexes see
    the tail's records (Movie 7 retitled in the Log only)."""
    found = record_keys(ok(client, "/types/Movie?field=title&op=prefix&value=Retitled"))
    assert found == ["7"]
    assert record_keys(ok(client, "/types/Movie?v=2&field=title&op=prefix&value=Retitled")) == []
    assert "7" in record_keys(ok(client, "/types/Movie?field=title&value=Retitled+in+the+Log+only"))


# -- versions, diff, history, the Log -----------------------------------------------------------


def test_versions_list(client: TestClient, local: Any) -> None:
    r = ok(client, "/versions")
    body = text(r)
    assert [re.sub(r"<[^>]+>", " ", x).split()[0] for x in rows(r, "versions")] == ["2", "1"]
    assert "announced" in body and 'href="/diff?from=1&amp;to=2"' in r.text


def test_diff_field_by_field(client: TestClient, local: Any) -> None:
    r = ok(client, "/diff?from=1&to=2")
    movies = re.search(r'<section class="difftype" id="diff-Movie">(.*?)</section>', r.text, re.S)
    assert movies
    sec = movies.group(1)
    assert "1 added, 1 changed, 1 removed" in text(type("R", (), {"text": sec}))
    assert 'href="/types/Movie/record?key=500&amp;v=2"' in sec  # added, at the new version
    assert 'href="/types/Movie/record?key=5&amp;v=1"' in sec  # removed, at the old one
    changed = re.findall(r"<tr><th><code>(\w+)</code></th><td class=\"before\">(.*?)</td>"
                         r"<td class=\"after\">(.*?)</td></tr>", sec, re.S)  # fmt: skip
    fields = {f: (text(type("R", (), {"text": a})), text(type("R", (), {"text": b})))
              for f, a, b in changed}  # fmt: skip
    assert set(fields) == {"title", "director"}
    assert fields["title"] == ("Film 003", "Film three, retitled")
    assert fields["director"][1].startswith("Person 2")
    assert "Renamed One" in text(r) and "Person 1" in text(r)
    back = ok(client, "/diff?from=2&to=1")  # either order
    assert "1 added, 1 changed, 1 removed" in text(back)
    same = ok(client, "/diff?from=2&to=2")
    assert "hold the same records" in text(same)


def test_history_across_versions(client: TestClient, local: Any) -> None:
    r = ok(client, "/types/Movie/history?key=3")
    items = re.findall(r'<li class="change (\w+)">(.*?)</li>\n', r.text, re.S)
    assert [c for c, _ in items] == ["added", "modified"]
    assert "version 1" in items[0][1] and "version 2" in items[1][1]
    assert "Film 003" in items[1][1] and "Film three, retitled" in items[1][1]
    gone = ok(client, "/types/Movie/history?key=5")
    assert [c for c in re.findall(r'<li class="change (\w+)">', gone.text)] == ["added", "removed"]


def test_log_tail_and_readers(client: TestClient, local: Any) -> None:
    ann = local.announced()
    included = int(ann["tags"]["log_position"])
    head = local.log.head()
    assert head == included + 1
    r = ok(client, "/log")
    body = text(r)
    assert f"up to token {included}; the head is {head}" in body
    assert "1 committed transaction not yet compacted" in body
    tail = rows(r, "tail")
    assert len(tail) == 1 and str(head) in tail[0]
    assert 'href="/types/Movie/record?key=7"' in tail[0]
    readers = rows(r, "readers")
    assert "this explorer" in readers[0] and f">{head}<" in readers[0]
    assert "does not know its readers" in body


def test_a_large_transaction_is_shown_in_part(tmp_path: Path) -> None:
    ds = build_local(tmp_path / "ds")
    t = ds.writer(schema=SCHEMA).transaction()
    for i in range(30):
        t.upsert("Person", {"id": 100 + i, "name": f"Extra {i}"})
    t.commit()
    with client_for(ds) as c:
        r = ok(c, "/log")
    newest = rows(r, "tail")[0]
    assert newest.count('class="tag upsert"') == 20
    assert "… and 10 more writes" in newest
    assert "2 committed transactions not yet compacted" in text(r)


def test_the_cli_verb_refuses_what_is_no_dataset(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from nearstate.cli import main

    r = CliRunner().invoke(main, ["explore", str(tmp_path / "nothing")])
    assert r.exit_code == 1
    assert "holds no dataset" in r.output
    assert not (tmp_path / "nothing").exists()  # looking did not create it
    r = CliRunner().invoke(main, ["explore", "--help"])
    assert r.exit_code == 0 and "Read-only" in r.output


# -- bad input ----------------------------------------------------------------------------------


BAD_INPUT = [
    ("/types/Nope", 404, "There is no type 'Nope'"),
    ("/types/Nope/record?key=1", 404, "There is no type 'Nope'"),
    ("/types/Movie/record?key=abc", 400, "Movie.id holds int values; 'abc' is not one"),
    ("/types/Movie/record", 400, "Name the record"),
    ("/types/Movie/record?key=99999", 404, "There is no Movie 99999"),
    ("/types/Movie/record?key=1&key=2", 400, "give 1 value, not 2"),
    ("/types/Movie?v=77", 404, "There is no version 77"),
    ("/types/Movie?v=x", 400, "'x' is not a version number"),
    ("/?v=-1", 404, "There is no version -1"),
    ("/diff?from=1&to=77", 404, "There is no version 77"),
    ("/diff?from=1", 400, "Name two versions"),
    ("/diff?from=one&to=2", 400, "'one' is not a version number"),
    ("/types/Movie/history?key=x", 400, "holds int values"),
    ("/types/Movie?page=0", 400, "numbered from 1"),
    ("/types/Movie?page=two", 400, "whole number"),
    ("/types/Movie?page=9", 404, "past the end"),
    ("/types/Movie?field=nope&value=1", 400, "Movie has no field 'nope'"),
    ("/types/Movie?field=info&value=1", 400, "has no index to search by value"),
    ("/types/Movie?field=year&op=range&lo=abc", 400, "Movie.year holds int values"),
    ("/types/Movie?field=director&op=range&lo=1", 400, "has no ordered index"),
    ("/types/Movie?field=year&op=prefix&value=19", 400, "prefix() needs a str field"),
    ("/types/Movie?field=year&op=sideways&value=1", 400, "Unknown search 'sideways'"),
    ("/types/Movie?field=rating&op=range&lo=nan", 400, "not a finite number"),
    ("/types/Movie?field=released&op=range&lo=yesterday", 400, "holds datetime values"),
    ("/types/Movie?field=title&op=range&lo=a&order=up", 400, "Order 'up'"),
    ("/no/such/page", 404, "There is no page /no/such/page"),
]


@pytest.mark.parametrize(("url", "status", "words"), BAD_INPUT)
def test_bad_input_says_what_was_wrong(
    client: TestClient, url: str, status: int, words: str
) -> None:
    r = client.get(url)
    assert r.status_code == status, (url, text(r)[:300])
    assert words in text(r), text(r)
    assert "text/html" in r.headers["content-type"]


# -- read-only --------------------------------------------------------------------------------


def crawl(c: TestClient, start: list[str], limit: int = 300) -> dict[str, int]:
    """GET every explorer page reachable from ``start`` by links (up to ``limit``)."""
    seen: dict[str, int] = {}
    todo = list(start)
    while todo and len(seen) < limit:
        url = todo.pop(0)
        if url in seen:
            continue
        r = c.get(url)
        seen[url] = r.status_code
        if "text/html" not in r.headers.get("content-type", ""):
            continue
        for href in LINK.findall(r.text):
            href = html.unescape(href)
            u = urlsplit(href)
            if u.scheme or u.netloc or not href.startswith("/"):
                continue
            if href not in seen:
                todo.append(href)
    return seen


def files_of(root: Path) -> dict[str, str]:
    """Every file of a dataset directory and its SHA-256, but SQLite's shared-memory index
    (``-shm``, which any reader maps and which holds no data) and the wake-up sockets."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.name.endswith("-shm") and ".wake" not in p.parts[-2]:
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def log_contents(ds: Any) -> list[tuple[int, bytes]]:
    return [(p, bytes(b)) for p, b in ds.log.read(ds.log.floor(), 10_000)]


def test_a_crawl_of_every_page_changes_nothing(tmp_path: Path) -> None:
    ds = build_local(tmp_path / "ds")
    before, log_before = files_of(tmp_path / "ds"), log_contents(ds)
    ds.log.close()
    searches = ["/types/Movie?field=director&value=2", "/types/Movie?field=year&op=range&lo=2000",
                "/types/Movie?field=title&op=prefix&value=Film+0&v=1&order=desc"]  # fmt: skip
    with client_for(ds) as c:
        seen = crawl(c, ["/", "/versions", "/log", "/diff?from=1&to=2", "/?v=1",
                         "/types/Movie/history?key=3", "/types/Movie/record?key=7",
                         *searches])  # fmt: skip
        for url in BAD_INPUT:  # and the pages that refuse what they are asked
            assert c.get(url[0]).status_code == url[1]
        for method in ("POST", "PUT", "DELETE"):
            assert c.request(method, "/types/Movie", content=b"x").status_code == 405
    assert len(seen) > 150 and all(u in seen for u in searches)
    # every page answers; the one 404 is the "see the current state" link of Movie 5 at
    # version 1, which version 2 deleted
    assert {u: s for u, s in seen.items() if s != 200} == {"/types/Movie/record?key=5": 404}
    assert any("/history" in u for u in seen) and any("v=1" in u for u in seen)
    after = files_of(tmp_path / "ds")
    # SQLite makes an empty write-ahead file beside the Log while a reader's connection is
    # open (the explorer's threads keep theirs): no byte of it is data
    if "log.sqlite-wal" not in before and (tmp_path / "ds" / "log.sqlite-wal").exists():
        assert (tmp_path / "ds" / "log.sqlite-wal").stat().st_size == 0
        del after["log.sqlite-wal"]
    assert after == before
    assert log_contents(ds) == log_before


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_every_method_but_get_is_refused(client: TestClient, method: str) -> None:
    urls = ["/", "/types/Movie", "/types/Movie/record?key=1", "/types/Movie/history?key=1",
            "/versions", "/diff?from=1&to=2", "/log", "/static/explorer.css", "/nope"]  # fmt: skip
    for url in urls:
        r = client.request(method, url, content=b"x=1")
        assert r.status_code == 405, (method, url)
        assert r.headers["allow"] == "GET, HEAD"
        assert "only reads" in r.text


def test_every_route_is_a_get(client: TestClient) -> None:
    from starlette.routing import Mount, Route

    routes = client.app.app.routes  # type: ignore[attr-defined]  # inside the read-only guard
    assert len(routes) == 8
    for route in routes:
        if isinstance(route, Route):
            assert route.methods == {"GET", "HEAD"}, route.path
        else:
            assert isinstance(route, Mount) and route.path == "/static"


def test_pages_run_no_scripts(client: TestClient) -> None:
    r = ok(client, "/")
    assert "script-src 'none'" in r.headers["content-security-policy"]
    assert "<script" not in r.text


# -- other datasets -------------------------------------------------------------------------------


def test_a_plain_imported_jsonl_dataset(tmp_path: Path) -> None:
    src = tmp_path / "books.jsonl"
    books = [{"isbn": f"978-{i:04d}", "title": f"Book {i}", "pages": 100 + i,
              "authors": [f"a{i % 3}"], "shelf": {"room": "A", "row": i % 4}}
             for i in range(30)]  # fmt: skip
    src.write_text("".join(json.dumps(b) + "\n" for b in books))
    into = tmp_path / "ds"
    nearstate.import_jsonl(src, type_name="Book", key="isbn", into=into)
    books[4]["title"] = "Book four, second edition"
    books[6]["title"] = XSS
    del books[9]
    src.write_text("".join(json.dumps(b) + "\n" for b in books))
    nearstate.import_jsonl(src, type_name="Book", key="isbn", into=into)
    ds = nearstate.open(into)
    state = ds.load()
    with client_for(ds) as c:
        assert "Book" in text(ok(c, "/"))
        page = ok(c, "/types/Book")
        assert len(record_keys(page)) == len(state["Book"]) == 29
        rec = text(ok(c, "/types/Book/record?key=978-0004"))
        assert "Book four, second edition" in rec and "room" in rec
        found = record_keys(ok(c, "/types/Book?field=authors&value=a1"))
        assert found == [str(r.key) for r in state["Book"].find(authors="a1")]
        d = text(ok(c, "/diff?from=1&to=2"))
        assert "0 added, 2 changed, 1 removed" in d and "Book four, second edition" in d
        h = ok(c, "/types/Book/history?key=978-0004")
        assert re.findall(r'<li class="change (\w+)">', h.text) == ["added", "modified"]
        assert "every committed transaction is in a version" in text(ok(c, "/log"))
        for url in (
            "/types/Book",
            "/types/Book/record?key=978-0006",
            "/diff?from=1&to=2",
            "/types/Book/history?key=978-0006",
            f"/types/Book?field=title&value={XSS}",
        ):
            r = ok(c, url)  # markup in the data is text on every page
            assert XSS not in r.text and html.escape(XSS, quote=False) in r.text, url


def build_content(root: Path) -> tuple[Any, int, list[int]]:
    """The demo's kind of dataset, made by the content pipeline: 40 films, a story
    published, edited and published again, each ingested and compacted (two versions).
    Returns the dataset, the story's id and its related titles' ids."""
    from nearstate.content.cms import CMS
    from nearstate.content.db import open_store
    from nearstate.content.films import import_films
    from nearstate.content.ingest import IngestWorker, ingestor_for
    from nearstate.content.media import MediaConfig

    store = open_store(root / "cms.db")
    try:
        import_films(store, limit=40)
        ids = [r["id"] for r in store.read("SELECT id FROM titles ORDER BY id LIMIT 2", ())]
        cms = CMS(store)
        author = cms.add_staff("Maren Okafor")
        ds = nearstate.open(root / "dataset")
        worker = IngestWorker(ingestor_for(store, ds, MediaConfig(root / "media")))
        data = {"title": "First light", "slug": "first-light", "dek": "A line", "tags": ["Notes"],
                "related": ids, "authors": [author], "hero": f"ph-{ids[0]}",
                "body": [{"kind": "paragraph", "text": "Some words."}]}  # fmt: skip
        s = cms.create_story(data, user="ann")
        cms.publish(s.id, user="ann")
        worker.drain(timeout=60)
        ds.compact()
        cms.save_story(s.id, {**data, "title": "First light, revised"}, user="ann",
                       base_revision=s.revision)  # fmt: skip
        cms.publish(s.id, user="ann")
        worker.drain(timeout=60)
        ds.compact()
        ds.log.close()
    finally:
        store.close()
    return ds, int(s.id), ids


def test_the_content_dataset(tmp_path: Path) -> None:
    """The demo's kind of dataset: denormalised cards (a Story's related TitleCard) link to
    the records they copy (the Title), and an edit shows in the diff and the history."""
    ds, story, ids = build_content(tmp_path)
    state = ds.load()
    with client_for(ds) as c:
        over = text(ok(c, "/"))
        for name in ("Story", "Title", "Person"):
            assert name in over
        r = ok(c, f"/types/Story/record?key={story}")
        assert "First light, revised" in text(r)
        link = f'href="/types/Title/record?key={ids[0]}"'
        assert link in r.text  # the related TitleCard links to the Title
        title = ok(c, f"/types/Title/record?key={ids[0]}")
        assert state["Title"].get(ids[0]).name in text(title)
        versions = ds.versions()
        d = ok(c, f"/diff?from={versions[-2]}&to={versions[-1]}")
        assert "First light, revised" in text(d) and "diff-Story" in d.text
        h = ok(c, f"/types/Story/history?key={story}")
        assert "modified" in re.findall(r'<li class="change (\w+)">', h.text)
        seen = crawl(c, ["/"], limit=150)
        assert all(v == 200 for v in seen.values()), {u: v for u, v in seen.items() if v != 200}


# -- in the editor app -------------------------------------------------------------------------


def test_in_the_editor_for_admins_only(tmp_path: Path) -> None:
    """The editor app over the content pipeline's dataset mounts the explorer at
    /explore/: admins see it (links under the mount), editors are refused, visitors are
    sent to log in."""
    from nearstate.content import accounts
    from nearstate.content.db import open_store
    from nearstate.content.media import MediaConfig
    from nearstate.web.editor import EditorConfig, create_editor_app

    ds, story, ids = build_content(tmp_path)
    versions = ds.versions()
    password = "a long enough password"
    store = open_store(tmp_path / "cms.db")
    accounts.create_user(store, "ann", password)
    accounts.create_user(store, "root", password, role="admin")
    app = create_editor_app(EditorConfig(
        store=store, media=MediaConfig(root=tmp_path / "media"), secret_key="test-secret-key-0123",
        dataset=nearstate.open(ds.url), run_worker=False,
    ))  # fmt: skip

    def log_in(c: TestClient, user: str) -> None:
        page = c.get("/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf
        r = c.post("/login", data={"csrf": csrf.group(1), "username": user,
                                   "password": password}, follow_redirects=False)  # fmt: skip
        assert r.status_code == 303, r.text

    try:
        with TestClient(app) as anon:
            r = anon.get("/explore/types/Story?v=1", follow_redirects=False)
            assert r.status_code == 303
            assert r.headers["location"] == "/login?next=%2Fexplore%2Ftypes%2FStory%3Fv%3D1"
        with TestClient(app) as editor:
            log_in(editor, "ann")
            r = editor.get("/explore/")
            assert r.status_code == 403 and "for admins only" in text(r)
            assert 'href="/explore/"' not in editor.get("/").text
        with TestClient(app) as admin:
            log_in(admin, "root")
            assert 'href="/explore/"' in admin.get("/").text  # the admins' menu links to it
            r = ok(admin, "/explore/")
            assert 'href="/explore/types/Story"' in r.text and 'href="/"' in r.text
            rec = ok(admin, f"/explore/types/Story/record?key={story}&v={versions[-1]}")
            assert (
                f'href="/explore/types/Title/record?key={ids[0]}&amp;v={versions[-1]}"' in rec.text
            )
            assert 'href="/explore/static/explorer.css"' in rec.text
            assert ok(admin, "/explore/static/explorer.css").text.startswith("/*")
            assert f'href="/explore/types/Story/record?key={story}"' in rec.text  # current
            r = admin.get("/explore/types/Nope")
            assert r.status_code == 404 and "There is no type 'Nope'" in text(r)
            r = admin.post("/explore/types/Story", data={"x": "1"})
            assert r.status_code == 405
            seen = crawl(admin, ["/explore/", "/explore/versions", "/explore/log",
                                 f"/explore/diff?from={versions[-2]}&to={versions[-1]}"],
                         limit=80)  # fmt: skip
            inside = {u: s for u, s in seen.items() if u.startswith("/explore/")}
            assert len(inside) > 40 and all(s == 200 for s in inside.values())
    finally:
        store.close()


# -- on NATS: the server knows its readers ----------------------------------------------------


def test_a_nats_dataset_and_its_readers() -> None:
    from natsserver import drop, server_url, unique

    url, name = server_url(), unique("explore")
    ds = nearstate.open(f"{url}/{name}")
    reader = None
    try:
        w = ds.writer(schema=SCHEMA)
        for i in range(PEOPLE):
            w.upsert("Person", {"id": i, "name": f"Person {i}"})
        w.upsert("Movie", movie(1))
        ds.compact()
        token = w.upsert("Movie", movie(2))
        reader = nearstate.open(f"{url}/{name}").consumer()
        reader.start()
        reader.wait_for(token, 10)
        head = ds.log.head()
        with client_for(ds) as c:
            assert "Movie" in text(ok(c, "/types/Movie/record?key=2"))
            r = ok(c, "/log")
            assert "1 committed transaction not yet compacted" in text(r)
            server = rows(r, "readers")[1:]
            assert server, "the server's readers are listed"
            # the started consumer's handle has been sent every entry: nothing pending
            assert any(f'<td class="n">{head}</td><td class="n">0</td>' in row for row in server)
            assert "readers the NATS server holds on the Log's stream" in text(r)
    finally:
        if reader is not None:
            reader.stop()
        drop(url, name)
