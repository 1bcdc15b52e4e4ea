"""The layout editor over HTTP: its rows' stories and titles are picked with the story
form's choosers, rows move with ↑/↓ buttons without JavaScript, and the saved data keeps
its format (``{"heading", "kind", "ids"}``) for ingestion and the site.

- ``/choose/stories.json``: stories found by words of their title (any status), by id,
  the newest when nothing is typed.
- Without JavaScript: a row's "Find" redraws the form with a pick list (ticking one and
  saving stores it), its ↑/↓ redraw the form in the new order, and neither saves; the
  redrawn form, sent back as a browser would, saves what it shows.
- The editor's and the site's OpenAPI documents describe a rich-text paragraph's
  ``format`` and ``html``.
"""

from __future__ import annotations

import re
import warnings
from html.parser import HTMLParser
from typing import Any

from nearstate.content.cms import CMS
from nearstate.content.db import WriteStore
from nearstate.web.openapi import editor_document, site_document
from test_editor_web import ASSET, app, create_story, login, sqlite_store  # the editor's fixtures

__all__ = ["app", "sqlite_store"]  # fixtures, used by name

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # "use httpx2": the httpx installed works
    from starlette.testclient import TestClient


class _Form(HTMLParser):
    """The fields a browser would send for the page's form (buttons left out; nothing
    inside a <template>)."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: list[tuple[str, str]] = []
        self._select: str | None = None
        self._in_template = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "template":
            self._in_template += 1
        if self._in_template or not a.get("name"):
            if tag == "option" and self._select and "selected" in a:
                self.fields.append((self._select, a.get("value", "")))
            return
        if tag == "input":
            kind = a.get("type", "text")
            if kind in ("checkbox", "radio") and "checked" not in a:
                return
            self.fields.append((a["name"], a.get("value", "")))
        elif tag == "select":
            self._select = a["name"]

    def handle_endtag(self, tag: str) -> None:
        if tag == "template":
            self._in_template -= 1
        elif tag == "select":
            self._select = None


def form_of(page: str) -> list[tuple[str, str]]:
    """The layout form's fields, as a browser would send them."""
    start = page.index('class="stack layout"')
    p = _Form()
    p.feed(page[page.rindex("<form", 0, start) : page.index("</form>", start)])
    return p.fields


def multi(fields: list[tuple[str, str]]) -> dict[str, list[str]]:
    """Fields as the test client sends them, a name sent once per value."""
    out: dict[str, list[str]] = {}
    for k, v in fields:
        out.setdefault(k, []).append(v)
    return out


def headings(page: str) -> list[str]:
    return re.findall(r'name="row-\d+-heading" value="([^"]*)"', page)


def _new_layout(client: TestClient, csrf: str, rows: list[dict[str, Any]]) -> None:
    fields: list[tuple[str, str]] = [("csrf", csrf), ("id", "home"), ("name", "Home")]
    for i, r in enumerate(rows):
        fields += [(f"row-{i}-new", "1"), (f"row-{i}-pos", str(i + 1))]
        fields += [(f"row-{i}-heading", r["heading"]), (f"row-{i}-kind", r["kind"])]
        fields += [(f"row-{i}-{r['kind']}", str(x)) for x in r.get("ids", [])]
        fields += [(f"row-{i}-value", r.get("value", ""))]
    r = client.post("/layouts/new", data=multi(fields), follow_redirects=False)
    assert r.status_code == 303, r.text


def test_the_stories_chooser(app: Any, sqlite_store: WriteStore) -> None:
    with TestClient(app) as client:
        assert client.get("/choose/stories.json?q=lens").status_code == 401
        csrf = login(client)
        lens = create_story(client, csrf, "Behind the lens")
        create_story(client, csrf, "Casting call")
        flares = create_story(client, csrf, "Lens flares, explained", hero=ASSET)
        r = client.get("/choose/stories.json", params={"q": "LENS"})
        assert r.status_code == 200 and r.json()["kind"] == "stories"
        items = r.json()["items"]
        # words of the title, any case, newest change first; a draft is found too
        assert [(i["id"], i["label"]) for i in items] == [
            (str(flares), "Lens flares, explained"),
            (str(lens), "Behind the lens"),
        ]
        assert items[0]["detail"] == "draft · /lens-flares-explained"
        # its hero image is its thumbnail; a story without one has none
        assert items[0]["thumb"].endswith(f"/{ASSET}/small.jpg") and items[1]["thumb"] == ""
        by_id = client.get("/choose/stories.json", params={"q": str(lens)}).json()["items"]
        assert by_id[0]["id"] == str(lens)
        newest = client.get("/choose/stories.json", params={"q": ""}).json()["items"]
        assert [i["label"] for i in newest][:3] == [
            "Lens flares, explained",
            "Casting call",
            "Behind the lens",
        ]
        assert client.get("/choose/stories.json?q=nothing+like+it").json()["items"] == []
        r = client.get("/choose/planets.json?q=x")
        assert r.status_code == 404 and "stories" in r.json()["error"]


def test_rows_pick_stories_and_titles_in_order(app: Any, sqlite_store: WriteStore) -> None:
    cms = CMS(sqlite_store)
    with TestClient(app) as client:
        csrf = login(client)
        a = create_story(client, csrf, "Alpha story")
        b = create_story(client, csrf, "Beta story")
        _new_layout(client, csrf, [
            {"heading": "Picked", "kind": "stories", "ids": [b, a]},
            {"heading": "Films", "kind": "titles", "ids": [593]},
        ])  # fmt: skip
        # the data format ingestion and the site read is unchanged: ids as numbers, in order
        assert cms.layout("home")["data"]["rows"] == [
            {"heading": "Picked", "kind": "stories", "ids": [b, a]},
            {"heading": "Films", "kind": "titles", "ids": [593]},
        ]
        page = client.get("/layouts/home").text
        # the chosen stories and titles are shown by name, ticked, in the saved order
        chosen = re.findall(r'name="row-0-stories" value="(\d+)" checked', page)
        assert chosen == [str(b), str(a)]
        assert page.index("Beta story") < page.index("Alpha story")
        assert 'name="row-1-titles" value="593" checked' in page
        assert 'data-kind="stories" data-name="row-0-stories"' in page  # the chooser
        assert 'role="combobox"' in page and "/static/editor.js" in page
        # positions are hidden fields the order on screen sets, not numbers to type
        assert re.search(r'type="hidden" name="row-0-pos" value="1"', page)
        assert "Position <input" not in page
        # sent back as it is, the form saves the same rows
        r = client.post("/layouts/home", data=multi(form_of(page)), follow_redirects=False)
        assert r.status_code == 303
        lay = cms.layout("home")
        assert lay["revision"] == 2
        assert lay["data"]["rows"][0]["ids"] == [b, a]
        # ids typed by hand (the old form) still work
        typed = [*form_of(page), ("row-2-new", "1"), ("row-2-heading", "Typed")]
        typed += [("row-2-kind", "stories"), ("row-2-value", f"{a}")]
        typed = [(k, "2" if k == "base_revision" else v) for k, v in typed]
        assert (
            client.post("/layouts/home", data=multi(typed), follow_redirects=False).status_code
            == 303
        )
        assert cms.layout("home")["data"]["rows"][2] == {
            "heading": "Typed", "kind": "stories", "ids": [a]
        }  # fmt: skip


def test_find_without_javascript_lists_picks(app: Any, sqlite_store: WriteStore) -> None:
    cms = CMS(sqlite_store)
    with TestClient(app) as client:
        csrf = login(client)
        lens = create_story(client, csrf, "Behind the lens")
        create_story(client, csrf, "Casting call")
        _new_layout(client, csrf, [{"heading": "Latest", "kind": "tag", "value": "news"}])
        page = client.get("/layouts/home").text
        # the first new row (row 1): type a query in its stories chooser, press Find
        fields = [*form_of(page), ("find-row-1-stories", "lens"), ("op", "find:row-1-stories")]
        r = client.post("/layouts/home", data=multi(fields))
        assert r.status_code == 200, r.text
        assert "1 found for &#39;lens&#39;: tick the ones to add, then save." in r.text
        picks = r.text[r.text.index('class="picks"') :]
        assert re.search(rf'<input type="checkbox" name="row-1-stories" value="{lens}">', picks)
        assert "Behind the lens" in picks and "Casting call" not in picks
        assert cms.layout("home")["revision"] == 1  # Find saves nothing
        # tick it, name the row, save: the row holds the story
        sent = [(k, v) for k, v in form_of(r.text) if k != "row-1-heading"]
        sent += [("row-1-stories", str(lens)), ("row-1-heading", "Lens")]
        r = client.post("/layouts/home", data=multi(sent), follow_redirects=False)
        assert r.status_code == 303, r.text
        assert cms.layout("home")["data"]["rows"][1] == {
            "heading": "Lens", "kind": "stories", "ids": [lens]
        }  # fmt: skip
        # a Find with nothing found says so; one for a removed row is refused plainly
        page = client.get("/layouts/home").text
        none = [*form_of(page), ("find-row-0-titles", "zzzz"), ("op", "find:row-0-titles")]
        r = client.post("/layouts/home", data=multi(none))
        assert r.status_code == 200 and "Nothing found for" in r.text
        gone = [*none, ("row-0-remove", "1")]
        r = client.post("/layouts/home", data=multi(gone))
        assert r.status_code == 400 and "Row 1 is marked" in r.text
        r = client.post("/layouts/home", data=multi([*form_of(page), ("op", "sideways:1")]))
        assert r.status_code == 400 and "Unknown button" in r.text
        assert cms.layout("home")["revision"] == 2


def test_move_buttons_without_javascript(app: Any, sqlite_store: WriteStore) -> None:
    cms = CMS(sqlite_store)
    with TestClient(app) as client:
        csrf = login(client)
        _new_layout(client, csrf, [
            {"heading": "A", "kind": "tag", "value": "a"},
            {"heading": "B", "kind": "titles", "ids": [593]},
            {"heading": "C", "kind": "genre", "value": "Drama"},
        ])  # fmt: skip
        page = client.get("/layouts/home").text
        assert headings(page)[:3] == ["A", "B", "C"]
        assert 'name="op" value="down:0"' in page and 'name="op" value="up:2"' in page
        r = client.post("/layouts/home", data=multi([*form_of(page), ("op", "down:0")]))
        assert r.status_code == 200 and "Moved. Not saved yet" in r.text
        assert headings(r.text)[:3] == ["B", "A", "C"]
        # the titles row's pick moved with it (now row 0)
        assert 'name="row-0-titles" value="593" checked' in r.text
        r = client.post("/layouts/home", data=multi([*form_of(r.text), ("op", "up:2")]))
        assert headings(r.text)[:3] == ["B", "C", "A"]
        # the top row's ↑ changes nothing
        r = client.post("/layouts/home", data=multi([*form_of(r.text), ("op", "up:0")]))
        assert headings(r.text)[:3] == ["B", "C", "A"]
        assert cms.layout("home")["revision"] == 1  # moving saves nothing
        r = client.post("/layouts/home", data=multi(form_of(r.text)), follow_redirects=False)
        assert r.status_code == 303
        rows = cms.layout("home")["data"]["rows"]
        assert [x["heading"] for x in rows] == ["B", "C", "A"]
        assert rows[0] == {"heading": "B", "kind": "titles", "ids": [593]}
        assert rows[1] == {"heading": "C", "kind": "genre", "genre": "Drama", "limit": 12}


def test_the_openapi_documents_describe_rich_text() -> None:
    block = site_document()["components"]["schemas"]["Block"]
    assert block["required"] == ["kind"]
    assert block["properties"]["format"]["enum"] == ["markdown"]
    assert block["properties"]["html"]["type"] == "string"
    ed = editor_document()["components"]["schemas"]
    assert ed["StoryContent"]["properties"]["body"]["items"] == {
        "$ref": "#/components/schemas/Block"
    }
    assert ed["Block"]["properties"]["format"]["enum"] == ["plain", "markdown"]
    assert ed["Block"]["properties"]["html"]["readOnly"] is True
