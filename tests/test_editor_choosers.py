"""The story form's choosers, block moves and side-by-side preview over HTTP.

- ``/choose/{titles,people,images}.json``: titles and people found in the editor's
  in-memory state (accents folded, so "cleo" finds "Cléo", which the write store's LIKE
  would not), by id too; images by file name and alt text, with thumbnails; an image
  uploaded from the chooser comes back as an item.
- Without JavaScript: a chooser's "Find" button redraws the form with a pick list, the
  block's up/down buttons redraw it in the new order, and neither saves anything; the
  redrawn form, submitted, saves what it shows.
- The preview beside the form: the edit page frames the preview of the save's revision,
  which answers that revision at once (it waits for its token), and only this site may
  frame it.
"""

from __future__ import annotations

import html
import io
import re
import time
import warnings
from pathlib import Path
from typing import Any

from PIL import Image

from nearstate.content import outbox
from nearstate.content.cms import CMS
from nearstate.content.db import WriteStore
from test_editor_web import (  # the editor's HTTP fixtures
    ASSET,
    app,
    create_story,
    login,
    sqlite_store,
    story_fields,
)

__all__ = ["app", "sqlite_store"]  # fixtures, used by name

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # "use httpx2": the httpx installed works
    from starlette.testclient import TestClient


def _ingest_films(store: WriteStore) -> None:
    """A title with an accented name and a person, sent through ingestion like an import."""
    with store.transaction() as tx:
        tx.execute(
            "INSERT INTO titles (id, name, slug, year, genres, updated_at)"
            " VALUES (594, 'Cléo de 5 à 7', 'cleo-de-5-a-7', 1962, '[\"Drama\", \"Music\"]', 0)"
        )
        tx.execute("INSERT INTO people (id, name, slug) VALUES (7, 'Agnès Varda', 'agnes-varda')")
        outbox.enqueue(tx, "titles", "seed", payload={"ids": [593, 594]})
        outbox.enqueue(tx, "people", "seed", payload={"ids": [1, 7]})


def _items(client: TestClient, kind: str, q: str, want: int = 1) -> list[dict[str, Any]]:
    """The chooser's items for ``q``, once at least ``want`` are found (ingestion runs in
    the app's worker; it takes a moment)."""
    deadline = time.monotonic() + 10
    while True:
        r = client.get(f"/choose/{kind}.json", params={"q": q})
        assert r.status_code == 200, r.text
        assert r.json()["kind"] == kind and r.json()["q"] == q
        items = r.json()["items"]
        if len(items) >= want or time.monotonic() > deadline:
            return items
        time.sleep(0.05)


def test_the_chooser_searches_the_in_memory_state(app: Any, sqlite_store: WriteStore) -> None:
    _ingest_films(sqlite_store)
    with TestClient(app) as client:
        r = client.get("/choose/titles.json?q=cleo")
        assert r.status_code == 401  # a login first
        login(client)
        # accents folded and words matched as prefixes: the state's index, not SQL LIKE
        items = _items(client, "titles", "cleo 5 a")
        assert [i["id"] for i in items] == ["594"]
        assert items[0]["label"] == "Cléo de 5 à 7 (1962)"
        assert items[0]["detail"] == "Drama, Music"
        assert sorted(i["id"] for i in _items(client, "titles", "cleo", want=2)) == ["593", "594"]
        assert _items(client, "titles", "594")[0]["id"] == "594"  # an id is looked up too
        assert _items(client, "titles", "", want=0) == []
        assert _items(client, "titles", "zzzz nothing", want=0) == []

        people = _items(client, "people", "agnes")
        assert [(p["id"], p["label"]) for p in people] == [("7", "Agnès Varda")]
        # nothing typed: the staff writers, the likely authors
        assert [p["label"] for p in _items(client, "people", "")] == ["Ann Writer"]

        r = client.get("/choose/planets.json?q=x")
        assert r.status_code == 404 and "titles, people, images" in r.json()["error"]


def _png(color: str = "red") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), color).save(buf, "PNG")
    return buf.getvalue()


def test_images_are_found_and_uploaded_from_the_chooser(app: Any, sqlite_store: WriteStore) -> None:
    with TestClient(app) as client:
        csrf = login(client)
        items = _items(client, "images", "x.jpg")
        assert [i["id"] for i in items] == [ASSET]
        assert items[0]["thumb"].endswith(f"/{ASSET}/small.jpg")
        assert items[0]["detail"] == "1600×900"

        # the chooser uploads with Accept: application/json and gets the item back
        r = client.post(
            "/assets",
            data={"csrf": csrf, "alt": "A red square for the chooser"},
            files={"file": ("red-square.png", _png(), "image/png")},
            headers={"Accept": "application/json"},
        )
        assert r.status_code == 201, r.text
        up = r.json()
        assert up["label"] == "red-square.png" and up["id"].startswith("a-")
        assert up["thumb"].endswith(f"/{up['id']}/small.png")
        # found at once, by a word of its alt text, newest first with nothing typed
        assert [i["id"] for i in _items(client, "images", "square chooser")] == [up["id"]]
        assert _items(client, "images", "")[0]["id"] == up["id"]

        r = client.post(
            "/assets",
            data={"csrf": csrf},
            files={"file": ("notes.png", b"not an image", "image/png")},
            headers={"Accept": "application/json"},
        )
        assert r.status_code == 422 and r.json()["error"].startswith("Not uploaded:")


def _form_fields(page: str) -> dict[str, str]:
    """The story form's fields as a browser would send them (inputs, checked boxes, the
    selected options and textareas), without its buttons."""
    start = page.index('<form method="post"')
    form = page[start : page.index("</form>", start)]
    form = re.sub(r"<template.*?</template>", "", form, flags=re.S)
    out: dict[str, str] = {}
    for tag in re.findall(r"<input\b[^>]*>", form):
        name = re.search(r'name="([^"]+)"', tag)
        value = re.search(r'value="([^"]*)"', tag)
        kind = re.search(r'type="([^"]+)"', tag)
        if not name:
            continue
        if kind and kind.group(1) in ("checkbox", "radio") and " checked" not in tag:
            continue
        out[name.group(1)] = html.unescape(value.group(1)) if value else ""
    for name, body in re.findall(r'<textarea name="([^"]+)"[^>]*>(.*?)</textarea>', form, re.S):
        out[name] = html.unescape(body)
    for name, body in re.findall(r'<select name="([^"]+)"[^>]*>(.*?)</select>', form, re.S):
        sel = re.search(r'<option value="([^"]*)" selected', body)
        out[name] = html.unescape(sel.group(1)) if sel else ""
    return out


def test_pick_lists_without_javascript(app: Any, sqlite_store: WriteStore) -> None:
    _ingest_films(sqlite_store)
    with TestClient(app) as client:
        csrf = login(client)
        assert len(_items(client, "titles", "cleo", want=2)) == 2  # ingested
        sid = create_story(client, csrf)
        page = client.get(f"/stories/{sid}").text
        fields = _form_fields(page)
        assert fields["hero"] == ""  # "No image" is the checked choice

        # "Find" beside the hero image: the form comes back with a pick list, unsaved
        fields.update({"op": "find:hero", "find-hero": "x.jpg", "title": "Kept title"})
        r = client.post(f"/stories/{sid}", data=fields)
        assert r.status_code == 200, r.text
        assert "1 found for &#39;x.jpg&#39;: pick one below, then save." in r.text
        picks = r.text[r.text.index('<div class="picks"') :]
        assert f'<input type="radio" name="hero" value="{ASSET}">' in picks
        assert 'value="Kept title"' in r.text
        assert CMS(sqlite_store).story(sid)["revision"] == 1

        # pick it (a browser ticks the radio) and save: the hero is that image
        fields = _form_fields(r.text)
        fields.update({"hero": ASSET, "action": "save"})
        r = client.post(f"/stories/{sid}", data=fields, follow_redirects=False)
        assert r.status_code == 303, r.text
        row = CMS(sqlite_store).story(sid)
        assert row["data"]["hero"] == ASSET and row["data"]["title"] == "Kept title"

        # the related titles and a block's title card: several can be ticked
        page = client.get(f"/stories/{sid}").text
        assert f'name="hero" value="{ASSET}" checked' in page
        fields = _form_fields(page)
        fields.update({"op": "find:related", "find-related": "cleo"})
        r = client.post(f"/stories/{sid}", data=fields)
        assert '<input type="checkbox" name="related" value="593">' in r.text
        fields = _form_fields(r.text)
        fields.update({"op": "find:block-0-title", "find-block-0-title": "593"})
        r = client.post(f"/stories/{sid}", data=fields)
        assert '<input type="radio" name="block-0-title" value="593">' in r.text
        r = client.post(f"/stories/{sid}", data={**fields, "op": "find:nothing"})
        assert r.status_code == 404 and "no chooser" in r.text
        for odd in ("find:block-²-asset", "find:block-99999999-asset", "find:block-0-kind"):
            r = client.post(f"/stories/{sid}", data={**fields, "op": odd})
            assert r.status_code in (400, 404), (odd, r.status_code)
        r = client.get("/choose/titles.json", params={"q": "²"})
        assert r.status_code == 200 and r.json()["items"] == []

        # a new, empty block's image: the block stays while its chooser is filled in
        fields = _form_fields(page)
        assert fields["block-1-new"] == "1" and fields["block-1-text"] == ""
        fields.update({"block-1-kind": "image", "op": "find:block-1-asset",
                       "find-block-1-asset": "x.jpg"})  # fmt: skip
        r = client.post(f"/stories/{sid}", data=fields)
        assert f'<input type="radio" name="block-1-asset" value="{ASSET}">' in r.text
        fields = _form_fields(r.text)
        assert fields["block-1-kind"] == "image" and "block-1-new" not in fields
        fields.update({"block-1-asset": ASSET, "block-1-text": "A caption", "action": "save"})
        r = client.post(f"/stories/{sid}", data=fields, follow_redirects=False)
        assert r.status_code == 303, r.text
        body = CMS(sqlite_store).story(sid)["data"]["body"]
        assert body[1] == {"kind": "image", "asset": ASSET, "text": "A caption"}

        # a form sending one id per ticked box saves them all, in order
        data: dict[str, Any] = story_fields("Two related", [], csrf=csrf, base=3)
        data["related"] = ["594", "593"]
        r = client.post(f"/stories/{sid}", data=data, follow_redirects=False)
        assert r.status_code == 303, r.text
        assert CMS(sqlite_store).story(sid)["data"]["related"] == [594, 593]


def test_move_buttons_without_javascript(app: Any, sqlite_store: WriteStore) -> None:
    with TestClient(app) as client:
        csrf = login(client)
        blocks = [{"kind": "paragraph", "text": t} for t in ("one", "two", "three")]
        r = client.post(
            "/stories/new", data=story_fields("Moves", blocks, csrf=csrf), follow_redirects=False
        )
        sid = int(r.headers["location"].split("/")[2].split("?")[0])
        page = client.get(f"/stories/{sid}").text
        assert '<input type="hidden" name="block-0-pos" value="1" data-pos>' in page
        assert 'name="op" value="up:0"' in page and 'name="op" value="down:2"' in page

        def order(text: str) -> list[str]:
            found = re.findall(r'<textarea name="block-\d+-text"[^>]*>([^<]*)</textarea>', text)
            return [t for t in found if t]

        # "one" down, then "three" up: redrawn in the new order, nothing saved
        r = client.post(f"/stories/{sid}", data={**_form_fields(page), "op": "down:0"})
        assert r.status_code == 200 and order(r.text) == ["two", "one", "three"]
        assert "Moved. Not saved yet" in r.text
        r = client.post(f"/stories/{sid}", data={**_form_fields(r.text), "op": "up:2"})
        assert order(r.text) == ["two", "three", "one"]
        r = client.post(f"/stories/{sid}", data={**_form_fields(r.text), "op": "up:0"})
        assert order(r.text) == ["two", "three", "one"]  # the first cannot go higher
        assert CMS(sqlite_store).story(sid)["revision"] == 1

        # saving the redrawn form saves the order it shows
        r = client.post(
            f"/stories/{sid}", data={**_form_fields(r.text), "action": "save"},
            follow_redirects=False,
        )  # fmt: skip
        assert r.status_code == 303, r.text
        body = CMS(sqlite_store).story(sid)["data"]["body"]
        assert [b["text"] for b in body] == ["two", "three", "one"]
        r = client.post(f"/stories/{sid}", data={**_form_fields(page), "op": "sideways:1"})
        assert r.status_code == 400 and "Unknown button" in r.text

        # a new story's form moves its blocks too, and nothing is created
        fields = story_fields("Not yet", blocks, csrf=csrf, op="down:0")
        r = client.post("/stories/new", data=fields)
        assert r.status_code == 200 and order(r.text) == ["two", "one", "three"]
        assert 'action="/stories/new"' in r.text
        assert len(CMS(sqlite_store).list_stories()) == 1


def test_the_preview_beside_the_form_shows_the_save(
    app: Any, sqlite_store: WriteStore, tmp_path: Path
) -> None:
    with TestClient(app) as client:
        csrf = login(client)
        sid = create_story(client, csrf)
        page = client.get(f"/stories/{sid}")
        fields = _form_fields(page.text)
        fields.update({"title": "Seen beside the form", "action": "save"})
        r = client.post(f"/stories/{sid}", data=fields, follow_redirects=False)
        assert r.headers["location"] == f"/stories/{sid}?saved=2"

        page = client.get(r.headers["location"])
        src = f"/stories/{sid}/preview?revision=2&amp;pane=1"
        assert f'<iframe id="preview-frame" name="preview" src="{src}"' in page.text
        assert "frame-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["x-frame-options"] == "DENY"  # the form itself is never framed

        # the frame's page, asked at once: revision 2 exactly (it waited for its token)
        pane = client.get(html.unescape(src))
        assert pane.status_code == 200, pane.text
        assert 'data-state="ok"' in pane.text and 'data-revision="2"' in pane.text
        assert '<article class="story" data-revision="2">' in pane.text
        assert "<h1>Seen beside the form</h1>" in pane.text
        assert "nearstate <span>editor</span>" not in pane.text  # the page alone
        assert pane.headers["x-frame-options"] == "SAMEORIGIN"
        assert "frame-ancestors 'self'" in pane.headers["content-security-policy"]

        # a new story has no preview yet; the pane says so
        page = client.get("/stories/new")
        assert "Save the story to see it here" in page.text and "<iframe" not in page.text


def test_the_chooser_can_map_the_sites_search_file(
    sqlite_store: WriteStore, tmp_path: Path
) -> None:
    """With ``search_cache`` the choosers search the host's shared index file (the part of
    the snapshot) and the Log's newer records, with the same results."""
    import nearstate
    from nearstate.content.ingest import IngestWorker, ingestor_for
    from nearstate.content.media import MediaConfig
    from test_editor_web import make_app

    _ingest_films(sqlite_store)
    ds = nearstate.open(tmp_path / "ds")
    IngestWorker(ingestor_for(sqlite_store, ds, MediaConfig(root=tmp_path / "media"))).drain(
        timeout=30
    )
    ds.compact()  # a snapshot holding the films: the part the file is made of
    app = make_app(sqlite_store, tmp_path, dataset=ds, search_cache=tmp_path / "search")
    with TestClient(app) as client:
        login(client)
        items = _items(client, "titles", "cleo 5 a")
        assert [i["id"] for i in items] == ["594"]
        assert [p["label"] for p in _items(client, "people", "agnes")] == ["Agnès Varda"]
        assert any((tmp_path / "search").iterdir())  # the file the sites would map too
