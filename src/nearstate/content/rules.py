"""Editorial rules: the shape of a story, its templates, its validation.

Pure functions, no database: the CMS checks a story's shape when it is saved
(:func:`check_story`), the ingestion pipeline applies the templates
(:func:`normalise_slug`, :func:`excerpt`, :func:`reading_minutes`, :func:`video_embed`)
and validates references and publish rules (:func:`check_references`,
:func:`check_publishable`) against what the write store holds.

Every problem is a :class:`Problem` — where it is and what is wrong, in plain words — so
the editor can show it next to the field.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec

from .richtext import FORMATS, MARKDOWN, block_words

BLOCK_KINDS = ("paragraph", "heading", "image", "quote", "title", "video")
MAX_TITLE = 200
MAX_DEK = 400
MAX_SLUG = 80
MAX_TAGS = 20
MAX_TAG = 40
MAX_BLOCKS = 300
MAX_BLOCK_TEXT = 20_000
MAX_BODY_BYTES = 256 * 1024
MAX_RELATED = 30
MAX_AUTHORS = 10
EXCERPT_CHARS = 220
WORDS_PER_MINUTE = 230
MAX_ID = 2**63 - 1  # ids are positive 64-bit integers (SQLite INTEGER, PostgreSQL BIGINT)

_SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_TAG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_ASSET = re.compile(r"^(a-[0-9a-f]{16}|ph-\d+)$")


@dataclass(frozen=True)
class Problem:
    """One validation failure: ``where`` (a field, or ``body[3].title``) and ``message``."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"

    def to_dict(self) -> dict[str, str]:
        return {"where": self.where, "message": self.message}


# -- templates -----------------------------------------------------------------------------


# letters NFKD does not decompose into a base letter and an accent
_FOLD = str.maketrans(
    {
        "ß": "ss", "æ": "ae", "Æ": "AE", "œ": "oe", "Œ": "OE", "ø": "o", "Ø": "O",
        "ł": "l", "Ł": "L", "đ": "d", "Đ": "D", "ð": "d", "Ð": "D", "þ": "th", "Þ": "TH",
        "ı": "i", "ħ": "h", "Ħ": "H",
    }
)  # fmt: skip
_FRACTIONS = re.compile("[\u00bc-\u00be\u2150-\u215f\u2189]")  # ½ → " 1⁄2 ", not "12"


def slugify(text: str, *, limit: int = MAX_SLUG) -> str:
    """``text`` as a URL slug: accents folded (``"Agnès Varda"`` → ``"agnes-varda"``,
    ``"Straße"`` → ``"strasse"``), lower case, runs of ASCII letters and digits joined by
    ``-``, at most ``limit`` characters, cut at a word boundary when there is one. Letters
    with no Latin form are dropped, so ``"東京物語"`` gives ``""`` (callers fall back to an
    id). The one slug function of the platform: stories, tags, people and titles."""
    folded = unicodedata.normalize("NFKD", _FRACTIONS.sub(r" \g<0> ", text.translate(_FOLD)))
    plain = "".join(c for c in folded if not unicodedata.combining(c))
    plain = re.sub(r"[^\x00-\x7f]", " ", plain).lower()  # what has no Latin form splits words
    slug = "-".join(re.findall(r"[a-z0-9]+", plain))
    if len(slug) > limit:
        cut = slug[: limit + 1]
        slug = cut[: cut.rfind("-")] if "-" in cut else slug[:limit]
    return slug


def normalise_slug(slug: str | None, title: str) -> str:
    """The slug an editor typed, normalised; from the title when empty."""
    return slugify(slug or "") or slugify(title) or "story"


def plain_text(blocks: Iterable[Mapping[str, Any]]) -> str:
    """The words of a body: paragraphs (a rich one without its marks), headings and
    quotes, in order."""
    return "\n".join(
        block_words(b)
        for b in blocks
        if b.get("kind") in ("paragraph", "heading", "quote") and b.get("text")
    )


def excerpt(dek: str, blocks: Iterable[Mapping[str, Any]], limit: int = EXCERPT_CHARS) -> str:
    """The card text: the dek, else the first paragraph, cut at a word within ``limit``."""
    text = dek.strip()
    if not text:
        text = next(
            (block_words(b).strip() for b in blocks if b.get("kind") == "paragraph"
             and str(b.get("text") or "").strip()),
            "",
        )  # fmt: skip
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    if " " in cut:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip(" ,;:.") + "…"


def reading_minutes(blocks: Iterable[Mapping[str, Any]]) -> int:
    """Minutes to read the body at 230 words a minute; at least 1."""
    words = len(plain_text(blocks).split())
    return max(1, math.ceil(words / WORDS_PER_MINUTE))


def video_embed(url: str) -> str | None:
    """The embed URL for a YouTube or Vimeo link, or None when it is neither."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    if parts.scheme not in ("https", "http"):
        return None
    host = (parts.hostname or "").lower().removeprefix("www.").removeprefix("m.")
    vid: str | None = None
    if host in ("youtube.com", "youtube-nocookie.com"):
        if parts.path == "/watch":
            vid = (parse_qs(parts.query).get("v") or [None])[0]
        elif parts.path.startswith(("/embed/", "/shorts/")):
            vid = parts.path.split("/")[2]
        if vid and re.fullmatch(r"[A-Za-z0-9_-]{6,20}", vid):
            return f"https://www.youtube-nocookie.com/embed/{vid}"
    elif host == "youtu.be":
        vid = parts.path.strip("/")
        if re.fullmatch(r"[A-Za-z0-9_-]{6,20}", vid):
            return f"https://www.youtube-nocookie.com/embed/{vid}"
    elif host in ("vimeo.com", "player.vimeo.com"):
        vid = parts.path.rstrip("/").rsplit("/", 1)[-1]
        if vid.isdigit():
            return f"https://player.vimeo.com/video/{vid}"
    return None


# -- shape: what the CMS refuses at the door ------------------------------------------------


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def clean_text(text: str) -> str:
    """``text`` without what no database can store: NUL characters are dropped and lone
    surrogates (possible in JSON) become U+FFFD."""
    if not _UNSTORABLE.search(text):
        return text
    return _UNSTORABLE.sub(lambda m: "" if m.group() == "\x00" else "\ufffd", text)


def _text(data: Mapping[str, Any], name: str, problems: list[Problem], *, required: bool,
          limit: int) -> str:  # fmt: skip
    v = data.get(name, "")
    if v is None:
        v = ""
    if not isinstance(v, str):
        problems.append(Problem(name, f"must be text, not {type(v).__name__}"))
        return ""
    v = clean_text(v).strip()
    if required and not v:
        problems.append(Problem(name, "is required"))
    if len(v) > limit:
        problems.append(Problem(name, f"is {len(v)} characters; at most {limit} are allowed"))
    return v


def _int_list(data: Mapping[str, Any], name: str, limit: int, problems: list[Problem]) -> list[int]:
    v = data.get(name) or []
    if not isinstance(v, list):
        problems.append(Problem(name, "must be a list of ids"))
        return []
    out: list[int] = []
    for i, x in enumerate(v):
        if isinstance(x, bool) or not isinstance(x, int | str):
            problems.append(Problem(f"{name}[{i}]", f"{x!r} is not an id"))
            continue
        try:
            n = int(x)
        except ValueError:
            problems.append(Problem(f"{name}[{i}]", f"{x!r} is not a number"))
            continue
        if not 0 < n <= MAX_ID:
            problems.append(Problem(f"{name}[{i}]", f"{x!r} is not an id"))
            continue
        if n not in out:
            out.append(n)
    if len(out) > limit:
        problems.append(Problem(name, f"has {len(out)} entries; at most {limit} are allowed"))
    return out


def check_story(data: Any) -> tuple[dict[str, Any], list[Problem]]:
    """A story's fields checked for shape and normalised (text trimmed, the slug and tags
    normalised, ids as ints, each block reduced to the fields of its kind). Returns the
    normalised story and its problems; a story with problems must not be saved."""
    problems: list[Problem] = []
    if not isinstance(data, Mapping):
        return {}, [Problem("story", "must be an object with title, slug, dek and body")]
    known = {"title", "slug", "dek", "body", "hero", "tags", "related", "authors"}
    for k in data:
        if k not in known:
            problems.append(
                Problem(str(k), f"is not a story field (they are {', '.join(sorted(known))})")
            )
    title = _text(data, "title", problems, required=True, limit=MAX_TITLE)
    dek = _text(data, "dek", problems, required=False, limit=MAX_DEK)
    raw_slug = _text(data, "slug", problems, required=False, limit=MAX_SLUG * 2)
    slug = normalise_slug(raw_slug, title)
    hero = data.get("hero") or None
    if hero is not None and (not isinstance(hero, str) or not _ASSET.match(hero)):
        problems.append(Problem("hero", f"{hero!r} is not an asset id"))
        hero = None
    tags_in = data.get("tags") or []
    if isinstance(tags_in, str):
        tags_in = [t for t in tags_in.split(",")]
    tags: list[str] = []
    if not isinstance(tags_in, list):
        problems.append(Problem("tags", "must be a list of words"))
    else:
        for t in tags_in:
            tag = slugify(str(t), limit=MAX_TAG)
            if tag and tag not in tags:
                tags.append(tag)
        if len(tags) > MAX_TAGS:
            problems.append(
                Problem("tags", f"has {len(tags)} tags; at most {MAX_TAGS} are allowed")
            )
    related = _int_list(data, "related", MAX_RELATED, problems)
    authors = _int_list(data, "authors", MAX_AUTHORS, problems)
    body = _check_body(data.get("body"), problems)
    story = {"title": title, "slug": slug, "dek": dek, "body": body, "hero": hero,
             "tags": tags, "related": related, "authors": authors}  # fmt: skip
    size = len(msgspec.json.encode(body))
    if size > MAX_BODY_BYTES:
        problems.append(
            Problem(
                "body", f"is {size // 1024} KB; at most {MAX_BODY_BYTES // 1024} KB are allowed"
            )
        )
    return story, problems


def _check_body(body: Any, problems: list[Problem]) -> list[dict[str, Any]]:
    if body is None:
        return []
    if not isinstance(body, list):
        problems.append(Problem("body", "must be a list of blocks"))
        return []
    if len(body) > MAX_BLOCKS:
        problems.append(
            Problem("body", f"has {len(body)} blocks; at most {MAX_BLOCKS} are allowed")
        )
    out: list[dict[str, Any]] = []
    for i, b in enumerate(body[:MAX_BLOCKS]):
        where = f"body[{i + 1}]"
        if not isinstance(b, Mapping):
            problems.append(Problem(where, "must be an object with a kind"))
            continue
        kind = b.get("kind")
        if kind not in BLOCK_KINDS:
            problems.append(Problem(where, f"kind {kind!r} is not one of {', '.join(BLOCK_KINDS)}"))
            continue
        text = b.get("text") or ""
        if not isinstance(text, str):
            problems.append(Problem(f"{where}.text", "must be text"))
            text = ""
        text = clean_text(text).strip()
        if len(text) > MAX_BLOCK_TEXT:
            problems.append(
                Problem(
                    f"{where}.text",
                    f"is {len(text)} characters; at most {MAX_BLOCK_TEXT} are allowed",
                )
            )
        blk: dict[str, Any] = {"kind": kind}
        if kind in ("paragraph", "quote", "heading"):
            if not text:
                problems.append(Problem(f"{where}.text", f"a {kind} needs text"))
            blk["text"] = text
        if kind == "paragraph" and b.get("format") not in (None, "", "plain"):
            if b.get("format") == MARKDOWN:
                blk["format"] = MARKDOWN  # a plain paragraph is stored without the key
            else:
                problems.append(
                    Problem(
                        f"{where}.format",
                        f"{b.get('format')!r} is not a text format (one of {', '.join(FORMATS)})",
                    )
                )
        if kind == "heading":
            level = b.get("level") or 2
            try:
                level = int(level)
            except (TypeError, ValueError, OverflowError):
                level = 0
            if level not in (2, 3, 4):
                problems.append(Problem(f"{where}.level", "a heading level is 2, 3 or 4"))
            blk["level"] = level
        elif kind == "quote":
            blk["cite"] = clean_text(str(b.get("cite") or "")).strip()[:200]
        elif kind == "image":
            asset = b.get("asset")
            if not isinstance(asset, str) or not _ASSET.match(asset):
                problems.append(Problem(f"{where}.asset", f"{asset!r} is not an asset id"))
            blk["asset"] = asset
            blk["text"] = text  # the caption
        elif kind == "title":
            tid = b.get("title")
            try:
                if isinstance(tid, bool) or not isinstance(tid, int | str):
                    raise TypeError(tid)
                blk["title"] = int(tid)
                if not 0 < blk["title"] <= MAX_ID:
                    raise ValueError(tid)
            except (TypeError, ValueError):
                problems.append(Problem(f"{where}.title", f"{tid!r} is not a title id"))
                blk["title"] = None
        elif kind == "video":
            url = clean_text(str(b.get("url") or "")).strip()
            if video_embed(url) is None:
                problems.append(Problem(f"{where}.url", f"{url!r} is not a YouTube or Vimeo link"))
            blk["url"] = url
        out.append(blk)
    return out


# -- references and publish rules: checked by ingestion -------------------------------------


@dataclass(frozen=True)
class Known:
    """What exists in the write store, for :func:`check_references`: callables taking a
    set of ids and returning the subset that exists."""

    assets: Callable[[set[str]], set[str]]
    titles: Callable[[set[int]], set[int]]
    people: Callable[[set[int]], set[int]]
    slug_taken: Callable[[str], bool]


def references(story: Mapping[str, Any]) -> tuple[set[str], set[int], set[int]]:
    """The asset ids, title ids and person ids a story refers to."""
    assets = {story["hero"]} if story.get("hero") else set()
    titles = set(story.get("related") or [])
    for b in story.get("body") or []:
        if b["kind"] == "image" and b.get("asset"):
            assets.add(b["asset"])
        elif b["kind"] == "title" and b.get("title") is not None:
            titles.add(b["title"])
    return assets, titles, set(story.get("authors") or [])


def check_references(story: Mapping[str, Any], known: Known) -> list[Problem]:
    """Every asset, title and person the story refers to exists; its slug is its own."""
    problems: list[Problem] = []
    assets, titles, people = references(story)
    missing_a = assets - known.assets(assets)
    missing_t = titles - known.titles(titles)
    missing_p = people - known.people(people)
    if story.get("hero") in missing_a:
        problems.append(Problem("hero", f"asset {story['hero']} does not exist"))
    for i, b in enumerate(story.get("body") or []):
        where = f"body[{i + 1}]"
        if b["kind"] == "image" and b.get("asset") in missing_a:
            problems.append(Problem(f"{where}.asset", f"asset {b['asset']} does not exist"))
        if b["kind"] == "title" and b.get("title") in missing_t:
            problems.append(Problem(f"{where}.title", f"title {b['title']} does not exist"))
    for t in story.get("related") or []:
        if t in missing_t:
            problems.append(Problem("related", f"title {t} does not exist"))
    for p in story.get("authors") or []:
        if p in missing_p:
            problems.append(Problem("authors", f"person {p} does not exist"))
    if known.slug_taken(story["slug"]):
        problems.append(Problem("slug", f"{story['slug']!r} is already used by another story"))
    return problems


def check_publishable(story: Mapping[str, Any]) -> list[Problem]:
    """What a story needs before it can go live: a dek, a hero image, an author and at
    least one paragraph."""
    problems: list[Problem] = []
    if not story.get("dek"):
        problems.append(Problem("dek", "a published story needs a dek (the line under its title)"))
    if not story.get("hero"):
        problems.append(Problem("hero", "a published story needs a hero image"))
    if not story.get("authors"):
        problems.append(Problem("authors", "a published story needs at least one author"))
    if not any(b["kind"] == "paragraph" for b in story.get("body") or []):
        problems.append(Problem("body", "a published story needs at least one paragraph"))
    return problems


def check_schedule(
    publish_at: float | None, unpublish_at: float | None, now: float
) -> list[Problem]:
    """A schedule publishes in the future and, if it unpublishes, does so after publishing."""
    problems: list[Problem] = []
    if publish_at is not None and publish_at <= now:
        problems.append(Problem("publish_at", "the publish time must be in the future"))
    if unpublish_at is not None:
        if unpublish_at <= now:
            problems.append(Problem("unpublish_at", "the unpublish time must be in the future"))
        elif publish_at is not None and unpublish_at <= publish_at:
            problems.append(
                Problem("unpublish_at", "the unpublish time must come after the publish time")
            )
    return problems
