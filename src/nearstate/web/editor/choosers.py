"""Choosers: picking a story's hero image, related titles, authors and its blocks' images
and title cards by searching, never by typing an id.

Contracts:

- ``GET /choose/{titles|people|images|stories}.json?q=`` answers ``{"kind", "q", "items"}``, each
  item ``{"id", "label", "detail", "thumb"}`` (``thumb`` an image URL or ""), best first,
  at most :data:`LIMIT`. Titles and people are searched in the editor's in-memory state
  (the site's search index over the ``Title`` and ``Person`` records, built on the first
  search and kept up to date from the preview's consumer); a query that is a whole number
  is also looked up as an id. An empty query lists the staff writers for people, the
  newest uploads for images, and nothing for titles. Images are not records of the state:
  they are searched in the write store by file name, alt text or id. Stories (a layout's
  rows pick them) are searched in the write store by words of their title or slug, any
  status, newest change first; an empty query lists the newest. Without a dataset the
  editor searches titles and people in the write store too.
- The same searches fill the story form's pick lists when it is sent without JavaScript
  (the "Find" buttons): :func:`pick_list`.
- :func:`describe_story` gives the items the form shows for what a story already refers
  to (a thumbnail and a name for each id; an id that does not exist is shown as such).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Mapping
from typing import Any

from starlette.responses import Response

from ...content.cms import NotFound
from ...errors import NearstateError
from .forms import MAX_ID, form_field
from .requests import Ctx, endpoint
from .state import Editor

KINDS = ("titles", "people", "images", "stories")
LIMIT = 12
# the story form's fields a chooser fills: (kind, several allowed)
FIELDS = {"hero": ("images", False), "related": ("titles", True), "authors": ("people", True)}
BLOCK_FIELDS = {"asset": ("images", False), "title": ("titles", False)}


def _state(ed: Editor) -> Any:
    with contextlib.suppress(NearstateError, AttributeError):
        return ed.consumer.state if ed.consumer is not None else None
    return None


def _title_item(rec: Any) -> dict[str, Any]:
    poster = rec.poster
    year = rec.year
    genres = ", ".join(list(rec.genres)[:3])
    return {
        "id": str(rec.id),
        "label": f"{rec.name} ({year})" if year else str(rec.name),
        "detail": genres,
        "thumb": str(poster.small) if poster is not None else "",
    }


def _person_item(rec: Any) -> dict[str, Any]:
    n = len(rec.titles)
    return {
        "id": str(rec.id),
        "label": str(rec.name),
        "detail": f"{n} film{'s' if n != 1 else ''}" if n else "",
        "thumb": "",
    }


def image_item(ed: Editor, row: Mapping[str, Any]) -> dict[str, Any]:
    detail = f"{row['width']}×{row['height']}"
    if row.get("alt"):
        detail += f" · {row['alt']}"
    return {
        "id": str(row["id"]),
        "label": str(row["filename"]),
        "detail": detail,
        "thumb": ed.thumb(row, "small"),
    }


def _as_id(q: str) -> int | None:
    q = q.strip()
    return int(q) if q.isascii() and q.isdigit() and len(q) <= 19 and int(q) <= MAX_ID else None


def search(ed: Editor, kind: str, q: str, limit: int = LIMIT) -> list[dict[str, Any]]:
    """The chooser's items for ``q`` (see the module's contracts)."""
    q = q[:200]
    if kind == "images":
        return _images(ed, q, limit)
    if kind == "stories":
        return _stories(ed, q, limit)
    idx, state = ed.search_index(), _state(ed)
    if idx is None or state is None:
        return _from_store(ed, kind, q, limit)
    typ = "Title" if kind == "titles" else "Person"
    make = _title_item if kind == "titles" else _person_item
    if not q.strip():
        return [] if kind == "titles" else _from_store(ed, kind, q, limit)
    out: list[dict[str, Any]] = []
    types = state.get(typ)
    if types is None:
        return out
    key = _as_id(q)
    if key is not None and (rec := types.get(key)) is not None:
        out.append(make(rec))
    for hit in idx.search(q, limit=limit, types=(typ,)):
        rec = types.get(hit.key)
        if rec is not None and hit.key != key:
            out.append(make(rec))
    return out[:limit]


def _from_store(ed: Editor, kind: str, q: str, limit: int) -> list[dict[str, Any]]:
    if kind == "titles":
        if not q.strip():
            return []
        rows = ed.cms.find_titles(q, limit=limit)
        return describe(ed, "titles", [str(r["id"]) for r in rows])
    rows = ed.cms.find_people(q, limit=limit)
    return [{"id": str(r["id"]), "label": r["name"], "detail": "", "thumb": ""} for r in rows]


def _images(ed: Editor, q: str, limit: int) -> list[dict[str, Any]]:
    words = q.lower().split()[:6]
    if not words:
        rows = ed.cms.assets(limit=limit)
    else:
        one = "(LOWER(filename) LIKE ? OR LOWER(alt) LIKE ? OR id = ?)"
        where = " AND ".join([one] * len(words))
        args: list[Any] = []
        for w in words:
            args += [f"%{w}%", f"%{w}%", w]
        rows = ed.store.read(
            f"SELECT * FROM assets WHERE kind = 'image' AND {where}"
            " ORDER BY created_at DESC LIMIT ?",
            (*args, limit),
        )
    return [image_item(ed, r) for r in rows]


def _story_items(ed: Editor, rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Stories (rows with id, title, slug, status) as items, each with its newest
    revision's hero image as the thumbnail."""
    rows = list(rows)
    heroes = ed.cms.story_heroes([int(r["id"]) for r in rows])
    assets: dict[str, Mapping[str, Any]] = {}
    if heroes:
        want = sorted(set(heroes.values()))
        marks = ", ".join("?" * len(want))
        for a in ed.store.read(f"SELECT * FROM assets WHERE id IN ({marks})", want):
            assets[str(a["id"])] = a
    out = []
    for row in rows:
        asset = assets.get(heroes.get(int(row["id"]), ""))
        out.append({
            "id": str(row["id"]),
            "label": str(row["title"]),
            "detail": f"{row['status']} · /{row['slug']}",
            "thumb": ed.thumb(asset, "small") if asset is not None else "",
        })  # fmt: skip
    return out


def _stories(ed: Editor, q: str, limit: int) -> list[dict[str, Any]]:
    key = _as_id(q)
    rows: list[Mapping[str, Any]] = []
    if key is not None:  # the story with that id first; the number may be words of a title
        rows += ed.cms.stories_by_id([key])
    for row in ed.cms.list_stories(q, limit=limit):
        if key is None or int(row["id"]) != key:
            rows.append(row)
    return _story_items(ed, rows[:limit])


def describe(ed: Editor, kind: str, ids: Iterable[str]) -> list[dict[str, Any]]:
    """An item for each id, in order (from the write store, so a reference saved a moment
    ago is named too); an id that does not exist is labelled so."""
    want = [i for i in dict.fromkeys(str(x).strip() for x in ids) if i]
    if not want:
        return []
    found: dict[str, dict[str, Any]] = {}
    if kind == "images":
        marks = ", ".join("?" * len(want))
        for r in ed.store.read(f"SELECT * FROM assets WHERE id IN ({marks})", want):
            found[str(r["id"])] = image_item(ed, r)
    elif kind == "stories":
        nums = [int(i) for i in want if _as_id(i) is not None]
        for it in _story_items(ed, ed.cms.stories_by_id(nums)):
            found[it["id"]] = it
    else:
        nums = [int(i) for i in want if _as_id(i) is not None]
        marks = ", ".join("?" * len(nums))
        if nums and kind == "titles":
            rows = ed.store.read(
                "SELECT t.id, t.name, t.year, a.id AS asset, a.kind, a.content_type"
                " FROM titles t LEFT JOIN assets a ON a.id = t.poster_asset"
                f" WHERE t.id IN ({marks})",
                nums,
            )
            for r in rows:
                poster = {"id": r["asset"], "kind": r["kind"], "content_type": r["content_type"]}
                thumb = ed.thumb(poster) if r["asset"] else ""
                label = f"{r['name']} ({r['year']})" if r["year"] else r["name"]
                found[str(r["id"])] = {"id": str(r["id"]), "label": label, "detail": "",
                                       "thumb": thumb}  # fmt: skip
        elif nums:
            for r in ed.store.read(f"SELECT id, name FROM people WHERE id IN ({marks})", nums):
                found[str(r["id"])] = {"id": str(r["id"]), "label": r["name"], "detail": "",
                                       "thumb": ""}  # fmt: skip
    what = {"images": "image", "titles": "title", "people": "person", "stories": "story"}[kind]
    return [
        found.get(i) or {"id": i, "label": f"{what} {i} (not found)", "detail": "", "thumb": ""}
        for i in want
    ]


def describe_story(ed: Editor, values: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The form's chosen items by field name: ``hero``, ``related``, ``authors``, and
    ``block-N-asset`` / ``block-N-title`` for block N (0-based, as the form numbers them)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for name, (kind, _) in FIELDS.items():
        out[name] = describe(ed, kind, str(values.get(name) or "").replace(";", ",").split(","))
    for n, b in enumerate(values.get("blocks") or []):
        for f, (kind, _) in BLOCK_FIELDS.items():
            if str(b.get(f) or "").strip():
                out[f"block-{n}-{f}"] = describe(ed, kind, [str(b[f])])
    return out


def field_kind(name: str) -> tuple[str, bool] | None:
    """(kind, several allowed) of a chooser's field name; None for any other name."""
    if name in FIELDS:
        return FIELDS[name]
    bf = block_field(name)
    return BLOCK_FIELDS[bf[1]] if bf is not None else None


def block_field(name: str) -> tuple[int, str] | None:
    """(block number, field) of a block's chooser field name (``block-3-asset``)."""
    m = re.fullmatch(r"block-([0-9]{1,5})-(asset|title)", name)
    return (int(m.group(1)), m.group(2)) if m else None


def pick_list(ed: Editor, form: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The pick list the form shows after its "Find" button for field ``name``: the
    query typed into ``find-NAME`` and the items found (NotFound for a field that has no
    chooser)."""
    fk = field_kind(name)
    if fk is None:
        raise NotFound(f"there is no chooser {name!r}")
    q = form_field(form, f"find-{name}")
    return {"field": name, "kind": fk[0], "q": q, "items": search(ed, fk[0], q)}


@endpoint(api=True)
def choose_json(ctx: Ctx, kind: str) -> Response:
    if kind not in KINDS:
        raise NotFound(f"there is no chooser for {kind!r}: use {', '.join(KINDS)}")
    q = ctx.query("q")
    return ctx.json({"kind": kind, "q": q, "items": search(ctx.ed, kind, q)})
