"""Render-ready records built from the write store's content: a story revision resolved
(asset id → an image with its URL per size, title id → a title card, person id → a name;
its excerpt, reading time, card image, genres and search text), Title and Person records,
and a layout's rows with their items chosen. Everything is read inside the caller's read
transaction ``tx``, so one record is built from one consistent view; the ingestor
(:mod:`nearstate.content.ingest`) writes what these return."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .cms import CMS
from .db import Tx
from .media import SIZES, MediaConfig, asset_url
from .richtext import LEVELS, block_format
from .rules import Problem, excerpt, plain_text, reading_minutes, video_embed


def when(ts: float | None) -> dt.datetime | None:
    """A write-store time (seconds since the epoch) as the records keep it."""
    return None if ts is None else dt.datetime.fromtimestamp(float(ts), dt.UTC)


def _in(ids: Iterable[Any]) -> str:
    return ",".join("?" * len(list(ids)))


def story_record(
    tx: Tx, media: MediaConfig, sid: int, rev: int, story: Mapping[str, Any], saved_at: float,
    srow: Mapping[str, Any],
) -> dict[str, Any]:  # fmt: skip
    """Revision ``rev`` of story ``sid`` (content ``story``, saved at ``saved_at``; the
    story's row ``srow``) in render-ready form."""
    asset_ids = {b["asset"] for b in story["body"] if b["kind"] == "image"}
    if story.get("hero"):
        asset_ids.add(story["hero"])
    title_ids = set(story["related"]) | {b["title"] for b in story["body"] if b["kind"] == "title"}
    cards = title_cards(tx, media, title_ids)
    imgs = images(tx, media, asset_ids)
    people = people_cards(tx, story["authors"])
    body: list[dict[str, Any]] = []
    for b in story["body"]:
        k = b["kind"]
        if k == "image":
            body.append({"kind": k, "text": b.get("text", ""), "image": imgs[b["asset"]]})
        elif k == "title":
            body.append({"kind": k, "title": cards[b["title"]]})
        elif k == "video":
            body.append({"kind": k, "video": video_embed(b["url"]) or ""})
        elif k == "heading":
            body.append({"kind": k, "text": b["text"], "level": b["level"]})
        elif k == "quote":
            body.append({"kind": k, "text": b["text"], "cite": b.get("cite", "")})
        else:
            # a paragraph: its level says its text format (richtext.LEVELS)
            body.append({"kind": k, "text": b["text"], "level": LEVELS[block_format(b)]})
    related = [cards[t] for t in story["related"]]
    hero = imgs.get(story["hero"]) if story.get("hero") else None
    # the card image: the hero, else the first image of the body, else a related poster
    card = hero or next((b["image"] for b in body if b["kind"] == "image"), None)
    if card is None:
        card = next((c["poster"] for c in related if c["poster"] is not None), None)
    genres = Counter(
        g
        for c in [*related, *(b["title"] for b in body if b["kind"] == "title")]
        for g in c["genres"]
    )
    words = [
        story["title"],
        story["dek"],
        plain_text(story["body"]),
        " ".join(story["tags"]),
        " ".join(c["name"] for c in related),
        " ".join(p["name"] for p in people),
    ]
    return {
        "id": sid,
        "slug": story["slug"],
        "title": story["title"],
        "dek": story["dek"],
        "excerpt": excerpt(story["dek"], story["body"]),
        "reading_minutes": reading_minutes(story["body"]),
        "body": body,
        "hero": hero,
        "card": card,
        "tags": list(story["tags"]),
        "genres": [g for g, _ in genres.most_common()],
        "related": related,
        "authors": people,
        "revision": rev,
        "updated_at": when(saved_at),
        "published_at": when(srow["published_at"]),
        "search_text": "\n".join(w for w in words if w),
    }


def images(tx: Tx, media: MediaConfig, ids: set[str]) -> dict[str, dict[str, Any]]:
    """The images of assets ``ids`` by id (those that exist)."""
    if not ids:
        return {}
    rows = tx.all(f"SELECT * FROM assets WHERE id IN ({_in(ids)})", tuple(ids))
    return {r["id"]: image(media, r) for r in rows}


def image(media: MediaConfig, a: Mapping[str, Any]) -> dict[str, Any]:
    """An asset's row as an image record, with its URL per size."""
    urls = {size: asset_url(media, a, size) for size in SIZES}
    return {
        "asset": a["id"],
        "alt": a["alt"],
        "width": int(a["width"]),
        "height": int(a["height"]),
        "focal_x": float(a["focal_x"]),
        "focal_y": float(a["focal_y"]),
        **urls,
    }


def title_cards(tx: Tx, media: MediaConfig, ids: set[int]) -> dict[int, dict[str, Any]]:
    if not ids:
        return {}
    rows = tx.all(
        f"SELECT id, slug, name, year, genres, poster_asset FROM titles WHERE id IN ({_in(ids)})",
        tuple(ids),
    )
    posters = images(tx, media, {r["poster_asset"] for r in rows if r["poster_asset"]})
    return {
        r["id"]: {
            "id": r["id"],
            "slug": r["slug"],
            "name": r["name"],
            "year": r["year"],
            "genres": json.loads(r["genres"]),
            "poster": posters.get(r["poster_asset"]),
        }
        for r in rows
    }


def people_cards(tx: Tx, ids: Sequence[int]) -> list[dict[str, Any]]:
    if not ids:
        return []
    rows = tx.all(f"SELECT id, slug, name FROM people WHERE id IN ({_in(ids)})", tuple(ids))
    by = {r["id"]: {"id": r["id"], "slug": r["slug"], "name": r["name"]} for r in rows}
    return [by[i] for i in ids if i in by]


def title_records(
    tx: Tx, media: MediaConfig, ids: Sequence[int]
) -> tuple[list[dict[str, Any]], list[int]]:
    """Render-ready Title records for ``ids``, and the ids that no longer exist."""
    rows = tx.all(f"SELECT * FROM titles WHERE id IN ({_in(ids)})", tuple(ids))
    credits = tx.all(
        "SELECT tp.title_id, tp.role, tp.position, p.id, p.slug, p.name FROM title_people tp"
        f" JOIN people p ON p.id = tp.person_id WHERE tp.title_id IN ({_in(ids)})"
        " ORDER BY tp.title_id, tp.role, tp.position",
        tuple(ids),
    )
    by: dict[int, dict[str, list[dict[str, Any]]]] = {}
    for c in credits:
        card = {"id": c["id"], "slug": c["slug"], "name": c["name"]}
        by.setdefault(c["title_id"], {}).setdefault(c["role"], []).append(card)
    posters = images(tx, media, {r["poster_asset"] for r in rows if r["poster_asset"]})
    records = []
    for r in rows:
        cr = by.get(r["id"], {})
        records.append(
            {
                "id": r["id"],
                "slug": r["slug"],
                "name": r["name"],
                "year": r["year"],
                "runtime": r["runtime"],
                "genres": json.loads(r["genres"]),
                "directors": cr.get("director", []),
                "writers": cr.get("writer", []),
                "cast": cr.get("cast", []),
                "language": r["language"],
                "country": r["country"],
                "awards": r["awards"],
                "poster": posters.get(r["poster_asset"]),
            }
        )
    found = {r["id"] for r in rows}
    return records, [i for i in ids if i not in found]


def person_records(tx: Tx, ids: Sequence[int]) -> tuple[list[dict[str, Any]], list[int]]:
    """Render-ready Person records for ``ids`` (their titles newest first), and the ids
    that no longer exist."""
    rows = tx.all(f"SELECT id, slug, name FROM people WHERE id IN ({_in(ids)})", tuple(ids))
    credits = tx.all(
        "SELECT DISTINCT tp.person_id, t.id, t.year FROM title_people tp JOIN titles t"
        f" ON t.id = tp.title_id WHERE tp.person_id IN ({_in(ids)})"
        " ORDER BY tp.person_id, t.year DESC, t.id",
        tuple(ids),
    )
    titles: dict[int, list[int]] = {}
    for c in credits:
        lst = titles.setdefault(c["person_id"], [])
        if c["id"] not in lst:
            lst.append(c["id"])
    records = [dict(r, titles=titles.get(r["id"], [])) for r in rows]
    found = {r["id"] for r in rows}
    return records, [i for i in ids if i not in found]


def layout_rows(
    tx: Tx, cms: CMS, rows: list[dict[str, Any]], problems: list[Problem]
) -> list[dict[str, Any]]:
    """A layout's rows with their items chosen: listed ids that are live, or a rule's;
    what a row leaves out is added to ``problems``."""
    result = []
    for i, r in enumerate(rows):
        kind = r["kind"]
        if kind == "stories":
            live = cms.published_among(tx, r["ids"])
            ids = [x for x in r["ids"] if x in live]
            items, rule = "stories", ""
        elif kind == "titles":
            have = {
                x["id"]
                for x in tx.all(
                    f"SELECT id FROM titles WHERE id IN ({_in(r['ids'])})", tuple(r["ids"])
                )
            }
            ids = [x for x in r["ids"] if x in have]
            items, rule = "titles", ""
        elif kind == "tag":
            ids = cms.newest_tagged(tx, r["tag"], r["limit"])
            items, rule = "stories", f"newest stories tagged {r['tag']}"
        else:
            ids = [
                x["id"]
                for x in tx.all(
                    "SELECT t.id FROM title_genres g JOIN titles t ON t.id = g.title_id"
                    " WHERE g.genre = ? ORDER BY COALESCE(t.year, 0) DESC, t.id LIMIT ?",
                    (r["genre"], r["limit"]),
                )
            ]
            items, rule = "titles", f"titles of genre {r['genre']}, newest first"
        missing = len(r.get("ids") or []) - len(ids) if kind in ("stories", "titles") else 0
        if missing:
            problems.append(
                Problem(
                    f"rows[{i + 1}]",
                    f"{missing} of its {kind} are not live or do not exist;"
                    " the row leaves them out",
                )
            )
        result.append({"heading": r["heading"], "items": items, "ids": ids, "rule": rule})
    return result
