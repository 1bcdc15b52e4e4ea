"""Page construction: the site's pages built from one state, in memory, with no I/O.

Every page is first a *page model*: a plain dict of JSON types (the JSON form of the page,
and what the HTML templates render). :class:`Pages` builds them from one immutable state
(``consumer.state``, or the state a read-your-writes wait returned), so a page reads one
version from start to end.

Contracts:

- No call here reads a database, a file or the network: everything comes from the state,
  whose records the ingestion pipeline made render-ready (URLs resolved, cards filled).
- A builder returns None when what the URL names does not exist (the caller answers 404);
  a row or a list leaves out ids the state no longer has (eventual consistency: a layout
  may name a story unpublished a moment ago).
- What pages share and would otherwise cost a scan (stories newest first, by tag, by title
  and by author; titles of a genre, newest first; the genres) is derived once per state of
  the types it comes from and reused while those types are unchanged: a state laid over by
  a new Log entry keeps the very TypeState objects of the types the entry did not touch,
  so a story saved does not make the site sort 17k titles again.
- Thread-safe: many request threads may build pages at once; derived indexes are built at
  most a few times concurrently and never half-seen.
- Small: what a :class:`Pages` keeps of its own (the memory of each worker of a pool) is
  bounded. Cards are kept for at most ``cards`` records of each type (``CARD_CACHE``);
  the derived indexes hold ids, not records (docs/operations.md, "What a worker holds of
  its own").
"""

from __future__ import annotations

import datetime as dt
import functools
import threading
from array import array
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError
from ..layered import State
from .personalize import Candidate, Profile, RowInfo, for_you, row_order
from .richtext import LEVELS, MARKDOWN, to_html
from .rules import slugify

STORY_CARDS = 12  # stories on a tag page, a title's page, "more stories"
TITLE_CARDS = 24  # titles per genre page
MORE_STORIES = 4
FOR_YOU = 12
HOME_LAYOUT = "home"
LATEST = 12  # the fallback home page (no "home" layout): newest stories
CARD_CACHE = 1024  # cards kept per type: a home page's hundred and then some (~1.4 KB each)


# -- URLs -----------------------------------------------------------------------------------


def story_url(slug: str) -> str:
    return f"/stories/{slug}"


def title_url(slug: str) -> str:
    return f"/titles/{slug}"


def person_url(slug: str) -> str:
    return f"/people/{slug}"


@functools.lru_cache(maxsize=4096)  # genres are few; slugify is the costliest step of a card
def genre_url(name: str) -> str:
    return f"/genres/{slugify(name) or 'unknown'}"


def tag_url(slug: str) -> str:
    return f"/tags/{slug}"


@functools.lru_cache(maxsize=4096)
def tag_name(slug: str) -> str:
    """A tag slug shown in words: ``behind-the-scenes`` → ``Behind the scenes``."""
    words = slug.replace("-", " ").strip()
    return words[:1].upper() + words[1:]


def _iso(v: Any) -> str | None:
    if isinstance(v, dt.datetime):
        return (v if v.tzinfo else v.replace(tzinfo=dt.UTC)).isoformat()
    return None


def _image(img: Any) -> dict[str, Any] | None:
    if img is None:
        return None
    return {
        "alt": img.alt,
        "width": img.width,
        "height": img.height,
        "focal": [img.focal_x, img.focal_y],
        "position": f"{round(img.focal_x * 100)}% {round(img.focal_y * 100)}%",  # CSS
        "small": img.small,
        "medium": img.medium,
        "large": img.large,
    }


def _title_card(t: Any) -> dict[str, Any]:
    """A card of a title from a ``Title`` record or a ``TitleCard`` (same fields)."""
    return {
        "type": "title",
        "id": t.id,
        "name": t.name,
        "year": t.year,
        "url": title_url(t.slug),
        "genres": list(t.genres),
        "image": _image(t.poster),
    }


def _person_link(p: Any) -> dict[str, Any]:
    return {"id": p.id, "name": p.name, "url": person_url(p.slug)}


def _story_card(s: Any) -> dict[str, Any]:
    return {
        "type": "story",
        "id": s.id,
        "title": s.title,
        "url": story_url(s.slug),
        "excerpt": s.excerpt,
        "image": _image(s.card),
        "tags": [{"name": tag_name(t), "url": tag_url(t)} for t in s.tags],
        "genres": list(s.genres),
        "published_at": _iso(s.published_at),
        "reading_minutes": s.reading_minutes,
    }


def _block(b: Any) -> dict[str, Any]:
    kind = b.kind
    out: dict[str, Any] = {"kind": kind}
    if kind in ("paragraph", "heading", "quote", "image"):
        out["text"] = b.text
    if kind == "paragraph" and b.level == LEVELS[MARKDOWN]:
        # rich text: the source as typed, and its HTML through the allowlist (cached per
        # distinct paragraph, so a page view pays a dict look-up)
        out["format"] = MARKDOWN
        out["html"] = to_html(b.text)
    if kind == "heading":
        out["level"] = b.level if b.level in (2, 3, 4) else 2
    elif kind == "quote":
        out["cite"] = b.cite
    elif kind == "image":
        out["image"] = _image(b.image)
    elif kind == "title":
        out["title"] = None if b.title is None else _title_card(b.title)
    elif kind == "video":
        out["video"] = b.video
    return out


def story_model(s: Any, *, kind: str = "story") -> dict[str, Any]:
    """The whole of one story (a ``Story`` or ``DraftStory`` record) as a page model."""
    return {
        "kind": kind,
        "id": s.id,
        "slug": s.slug,
        "url": story_url(s.slug),
        "title": s.title,
        "dek": s.dek,
        "excerpt": s.excerpt,
        "reading_minutes": s.reading_minutes,
        "revision": s.revision,
        "published_at": _iso(s.published_at),
        "updated_at": _iso(s.updated_at),
        "hero": _image(s.hero),
        "body": [_block(b) for b in s.body],
        "tags": [{"name": tag_name(t), "url": tag_url(t)} for t in s.tags],
        "genres": [{"name": g, "url": genre_url(g)} for g in s.genres],
        "related": [_title_card(t) for t in s.related],
        "authors": [_person_link(a) for a in s.authors],
    }


# -- what pages share, derived once per state of its types ------------------------------------


@dataclass
class _StoryIndex:
    newest: list[int] = field(default_factory=list)  # published stories, newest first
    rank: dict[int, int] = field(default_factory=dict)  # story id -> position in newest
    genres: dict[int, tuple[str, ...]] = field(default_factory=dict)
    by_tag: dict[str, list[int]] = field(default_factory=dict)
    by_title: dict[int, list[int]] = field(default_factory=dict)
    by_author: dict[int, list[int]] = field(default_factory=dict)


def _story_index(ts: Any) -> _StoryIndex:
    rows = []
    for s in ts:
        when = s.published_at or s.updated_at
        rows.append((when.timestamp() if isinstance(when, dt.datetime) else 0.0, s))
    rows.sort(key=lambda r: (-r[0], -r[1].id))
    out = _StoryIndex()
    for i, (_, s) in enumerate(rows):
        sid = s.id
        out.newest.append(sid)
        out.rank[sid] = i
        out.genres[sid] = tuple(s.genres)
        for t in s.tags:
            out.by_tag.setdefault(t, []).append(sid)
        titles = {t.id for t in s.related}
        titles.update(b.title.id for b in s.body if b.kind == "title" and b.title is not None)
        for t in titles:
            out.by_title.setdefault(t, []).append(sid)
        for a in s.authors:
            out.by_author.setdefault(a.id, []).append(sid)
    return out


@dataclass
class _TitleIndex:
    genres: dict[str, str] = field(default_factory=dict)  # genre slug -> name
    counts: dict[str, int] = field(default_factory=dict)  # genre name -> titles
    nav: list[dict[str, Any]] = field(default_factory=list)  # Pages.genres
    # genre name -> title ids newest first, made on a genre's first visit: 8-byte ids in
    # an array, not a list of int objects (48 bytes an id: 1.7 MB per worker once every
    # genre of the films was visited, 0.3 MB so)
    _sorted: dict[str, array[int]] = field(default_factory=dict)


def _title_index(ts: Any) -> _TitleIndex:
    out = _TitleIndex()
    for t in ts:
        for g in t.genres:
            out.counts[g] = out.counts.get(g, 0) + 1
    out.genres = {slugify(g) or "unknown": g for g in sorted(out.counts)}
    out.nav = [
        {"name": g, "url": genre_url(g), "count": n}
        for g, n in sorted(out.counts.items(), key=lambda x: (-x[1], x[0]))
    ]
    return out


class _Derived:
    """A value computed from one TypeState, recomputed when the state holds another.

    The TypeState (kept: identity is the key) and its value are one tuple, read and
    replaced whole: a reader never pairs one state's TypeState with another's value."""

    def __init__(self, build: Callable[[Any], Any]):
        self._build = build
        self._held: tuple[Any, Any] = (None, None)

    def get(self, ts: Any) -> Any:
        held = self._held
        if held[0] is ts and ts is not None:
            return held[1]
        value = self._build(ts) if ts is not None else self._build(())
        self._held = (ts, value)
        return value


class _Cards:
    """Cards made from one TypeState, shared (read only) by every page built from it: at
    most ``size`` of them, then it starts over with an empty dict (a reader of the full
    one finishes undisturbed); ``size`` 0 keeps none. No lock: the TypeState and its dict
    are one tuple, read and replaced whole, and a dict only ever holds cards of the
    TypeState it was made for, so a race costs a card made twice, never a wrong one."""

    __slots__ = ("_held", "size")

    def __init__(self, size: int):
        self.size = size
        self._held: tuple[Any, dict[int, dict[str, Any]]] = (None, {})

    def of(self, ts: Any) -> dict[int, dict[str, Any]]:
        held = self._held
        if held[0] is ts:
            return held[1]
        made: dict[int, dict[str, Any]] = {}
        self._held = (ts, made)
        return made

    def start_over(self, ts: Any) -> dict[int, dict[str, Any]]:
        """An empty dict in place of a full one of ``ts`` (private if ``ts`` is no longer
        the TypeState held)."""
        made: dict[int, dict[str, Any]] = {}
        if self._held[0] is ts:
            self._held = (ts, made)
        return made

    def __len__(self) -> int:
        return len(self._held[1])


# -- the pages ----------------------------------------------------------------------------------


class Pages:
    """Builds the site's page models from a state (see the module's contracts)."""

    def __init__(self, cards: int = CARD_CACHE) -> None:
        """``cards``: how many cards of each type (story, title) are kept for reuse, at
        most; 0 makes each card anew (see :meth:`story_cards`)."""
        if isinstance(cards, bool) or not isinstance(cards, int) or cards < 0:
            raise InputError(f"cards must be a whole number from 0 (none kept), not {cards!r}")
        self.cards = cards
        self._stories = _Derived(_story_index)
        self._titles = _Derived(_title_index)
        self._genre_lock = threading.Lock()
        self._story_cards = _Cards(cards)
        self._title_cards = _Cards(cards)

    def cards_held(self) -> dict[str, int]:
        """How many cards are kept now, by type (each at most ``cards``)."""
        return {"Story": len(self._story_cards), "Title": len(self._title_cards)}

    # derived indexes

    def stories(self, state: State) -> _StoryIndex:
        return self._stories.get(state.get("Story"))

    def titles(self, state: State) -> _TitleIndex:
        return self._titles.get(state.get("Title"))

    def genre_titles(self, state: State, genre: str) -> Sequence[int]:
        """Ids of the titles of ``genre``, newest first (then by name)."""
        ts = state.get("Title")
        idx = self.titles(state)
        got = idx._sorted.get(genre)
        if got is None:
            recs = ts.find(genres=genre) if ts is not None else []
            recs = sorted(recs, key=lambda t: (-(t.year or 0), t.name, t.id))
            got = array("q", [t.id for t in recs])
            with self._genre_lock:
                idx._sorted[genre] = got
        return got

    # cards

    def _cards(self, state: State, type_name: str, ids: Iterable[int], limit: int) -> list[dict]:
        """Cards of the records ``ids`` names that exist (at most ``limit``). A card is a
        function of its record alone, so it is made once per TypeState and shared (read
        only) by every page built from it: a home page is then mostly lookups. At most
        ``cards`` of each type are kept (see :class:`_Cards`): a crawl of every page does
        not make a worker hold a card of every record."""
        ts = state.get(type_name)
        if ts is None:
            return []
        story = type_name == "Story"
        cache = self._story_cards if story else self._title_cards
        made, size = cache.of(ts), cache.size
        card = _story_card if story else _title_card
        out = []
        for i in ids:
            c = made.get(i)
            if c is None:
                rec = ts.get(i)
                if rec is None:
                    continue
                c = card(rec)
                if size:
                    if len(made) >= size:
                        made = cache.start_over(ts)
                    made[i] = c
            out.append(c)
            if len(out) >= limit:
                break
        return out

    def story_cards(self, state: State, ids: Iterable[int], limit: int = STORY_CARDS) -> list:
        return self._cards(state, "Story", ids, limit)

    def title_cards(self, state: State, ids: Iterable[int], limit: int = TITLE_CARDS) -> list:
        return self._cards(state, "Title", ids, limit)

    # pages

    def home(self, state: State, profile: Profile | None = None) -> dict[str, Any]:
        """The home page: the ``home`` layout's rows (newest stories without one), the
        first row's first story as the hero; with a profile, rows ordered by the
        visitor's affinities and a "For you" row."""
        layout = state.get("Layout")
        rec = layout.get(HOME_LAYOUT) if layout is not None else None
        idx = self.stories(state)
        rows: list[dict[str, Any]] = []
        if rec is None:
            cards = self.story_cards(state, idx.newest, LATEST)
            if cards:
                rows.append(
                    {"heading": "Latest stories", "items": "stories", "rule": "newest stories",
                     "cards": cards}
                )  # fmt: skip
        else:
            for r in rec.rows:
                cards = (self.story_cards if r.items == "stories" else self.title_cards)(
                    state, r.ids, max(len(r.ids), 1)
                )
                if cards:
                    rows.append(
                        {"heading": r.heading, "items": r.items, "rule": r.rule, "cards": cards}
                    )
        first = rows[0] if rows else None
        hero = (
            first["cards"][0] if first and first["items"] == "stories" and first["cards"] else None
        )
        hero_row = False  # whether rows[0] is the rest of the hero's row (it stays first)
        if hero is not None and first is not None:  # the hero is not shown twice
            first["cards"] = first["cards"][1:]
            hero_row = bool(first["cards"])
            if not hero_row:
                rows.pop(0)
        page: dict[str, Any] = {"kind": "home", "hero": hero, "rows": rows, "for_you": None}
        if profile is not None and profile.affinities:
            infos = [_row_info(i, r, pinned=i == 0 and hero_row) for i, r in enumerate(rows)]
            order = row_order(infos, profile)
            page["rows"] = [rows[i] for i in order]
            page["for_you"] = self._for_you(state, profile, rows, idx)
        return page

    def _for_you(
        self, state: State, profile: Profile, rows: Sequence[Mapping[str, Any]], idx: _StoryIndex
    ) -> dict[str, Any] | None:
        cands = [Candidate("story", sid, idx.genres.get(sid, ()), r) for r, sid in
                 enumerate(idx.newest)]  # fmt: skip
        n = 0
        for row in rows:
            if row["items"] != "titles":
                continue
            for c in row["cards"]:
                cands.append(Candidate("title", c["id"], tuple(c["genres"]), n))
                n += 1
        picked = for_you(profile, cands, limit=FOR_YOU)
        if not picked:
            return None
        story_ids = [p.id for p in picked if p.kind == "story"]
        title_ids = [p.id for p in picked if p.kind == "title"]
        stories = {c["id"]: c for c in self.story_cards(state, story_ids, FOR_YOU)}
        titles = {c["id"]: c for c in self.title_cards(state, title_ids, FOR_YOU)}
        cards = [(stories if p.kind == "story" else titles).get(p.id) for p in picked]
        top = ", ".join(g for g, _ in profile.top(3))
        return {
            "heading": "For you",
            "items": "mixed",
            "rule": f"picked for your interest in {top}",
            "cards": [c for c in cards if c is not None],
        }

    def story(self, state: State, slug: str) -> dict[str, Any] | None:
        ts = state.get("Story")
        s = ts.find_one(slug=slug) if ts is not None else None
        if s is None:
            return None
        page = story_model(s)
        idx = self.stories(state)
        more: list[int] = []
        for t in s.tags:
            more.extend(i for i in idx.by_tag.get(t, ()) if i != s.id and i not in more)
        page["more"] = self.story_cards(state, more, MORE_STORIES)
        return page

    def title(self, state: State, slug: str) -> dict[str, Any] | None:
        ts = state.get("Title")
        t = ts.find_one(slug=slug) if ts is not None else None
        if t is None:
            return None
        idx = self.stories(state)
        like: list[int] = []
        if t.genres:
            like = [i for i in self.genre_titles(state, t.genres[0])[:9] if i != t.id][:8]
        return {
            "kind": "title",
            "id": t.id,
            "slug": t.slug,
            "url": title_url(t.slug),
            "name": t.name,
            "year": t.year,
            "runtime": t.runtime,
            "genres": [{"name": g, "url": genre_url(g)} for g in t.genres],
            "directors": [_person_link(p) for p in t.directors],
            "writers": [_person_link(p) for p in t.writers],
            "cast": [_person_link(p) for p in t.cast],
            "language": t.language,
            "country": t.country,
            "awards": t.awards,
            "poster": _image(t.poster),
            "stories": self.story_cards(state, idx.by_title.get(t.id, ())),
            "more_like_this": self.title_cards(state, like),
        }

    def person(self, state: State, slug: str) -> dict[str, Any] | None:
        ts = state.get("Person")
        found = ts.find(slug=slug) if ts is not None else []
        if not found:
            return None
        p = min(found, key=lambda r: r.id)  # two people may share a slug: the first one
        titles = self.title_cards(state, p.titles, 200)
        titles.sort(key=lambda c: (-(c["year"] or 0), c["name"]))
        idx = self.stories(state)
        about: list[int] = list(idx.by_author.get(p.id, ()))
        for t in p.titles:
            about.extend(i for i in idx.by_title.get(t, ()) if i not in about)
        return {
            "kind": "person",
            "id": p.id,
            "slug": p.slug,
            "url": person_url(p.slug),
            "name": p.name,
            "titles": titles,
            "stories": self.story_cards(state, about),
        }

    def genre(self, state: State, slug: str, *, page: int = 1) -> dict[str, Any] | None:
        name = self.titles(state).genres.get(slug)
        if name is None:
            return None
        ids = self.genre_titles(state, name)
        pages = max(1, -(-len(ids) // TITLE_CARDS))
        if not 1 <= page <= pages:
            return None
        start = (page - 1) * TITLE_CARDS
        idx = self.stories(state)
        stories = [i for i in idx.newest if name in idx.genres.get(i, ())]
        return {
            "kind": "genre",
            "name": name,
            "url": genre_url(name),
            "count": len(ids),
            "page": page,
            "pages": pages,
            "titles": self.title_cards(state, ids[start : start + TITLE_CARDS]),
            "stories": self.story_cards(state, stories),
        }

    def tag(self, state: State, slug: str) -> dict[str, Any] | None:
        ids = self.stories(state).by_tag.get(slug)
        if not ids:
            return None
        return {
            "kind": "tag",
            "name": tag_name(slug),
            "url": tag_url(slug),
            "count": len(ids),
            "stories": self.story_cards(state, ids, 100),
        }

    def genres(self, state: State) -> list[dict[str, Any]]:
        """Every genre with its number of titles, most titles first (for navigation)."""
        return self.titles(state).nav


def _row_info(i: int, row: Mapping[str, Any], *, pinned: bool) -> RowInfo:
    genres: dict[str, int] = {}
    for c in row["cards"]:
        for g in c["genres"]:
            genres[g] = genres.get(g, 0) + 1
    return RowInfo(index=i, genres=genres, items=len(row["cards"]), pinned=pinned)


def genres_of(page: Mapping[str, Any]) -> list[str]:
    """The genres a visit to ``page`` teaches a visitor's profile (story, title, genre)."""
    kind = page.get("kind")
    if kind == "story":
        return [g["name"] for g in page["genres"]]
    if kind == "title":
        return [g["name"] for g in page["genres"]]
    if kind == "genre":
        return [page["name"]]
    return []


__all__ = [
    "CARD_CACHE",
    "HOME_LAYOUT",
    "Pages",
    "genre_url",
    "genres_of",
    "person_url",
    "story_model",
    "story_url",
    "tag_name",
    "tag_url",
    "title_url",
]
