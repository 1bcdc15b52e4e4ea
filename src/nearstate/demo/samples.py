"""Sample editorial content on real films: staff authors, stories, hero images and a home
layout, so a fresh platform has something to show (``nearstate demo`` makes them).

:func:`create_samples` picks well-known films from the imported catalogue (import them
first: :func:`nearstate.content.films.import_films`) and writes a story about each through
the CMS, like an editor would.

Over ~600 lines because most of it is the prose the sample stories are written from (the
sentence builders of ``_Facts`` and one writer per kind of story); picking the films and
saving through the CMS is the smaller part.

Contracts:

- Deterministic: the same catalogue gives the same films, stories (but for the "N years on"
  of an anniversary title, counted from the CMS clock's year; slugs never change), images
  (the same bytes, so the same asset ids) and layout. Films are picked genre by genre
  (Drama, Comedy, Action, Animation, Horror, Sci-Fi, Documentary, Romance, ...), in each the
  film with the most Oscars (then Oscar nominations, then the lowest id) not picked yet; a
  genre the catalogue lacks is skipped, and when the genres run out the best remaining films
  fill the set. A catalogue with fewer films gives fewer stories; an empty one is an
  :class:`~nearstate.errors.InputError`.
- Idempotent: stories are found by slug; a story that exists is left alone (an editor may
  have changed it), except that one the set meant to publish which is still at its first,
  never-published revision is published (finishing an interrupted run). Staff authors are
  found by name and the ``home`` layout by id, and left alone when they exist. A second
  call on the same catalogue creates nothing and returns what exists. (A different
  catalogue may pick different films, whose stories are then new.)
- Stories are created, and all but the last :data:`DRAFTS` published, in a fixed order,
  so the newest published story is predictable; the last ones stay drafts, for an editor to
  publish.
- Every word is generated here from the catalogue's facts (year, runtime, genres, credits,
  language, country, awards); nothing is attributed to a real person: pull quotes are the
  made-up author's own opinion, and there are no interviews (the tags are Behind the Scenes,
  Lists, Anniversaries and Staff Picks, each on several stories). Images are abstract
  compositions drawn with Pillow, coloured from the film's id.
- Fast: the whole set takes a second or two (the images are most of it).
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..content import richtext
from ..content.cms import CMS, NotFound
from ..content.db import WriteStore
from ..content.media import MediaConfig, store_upload
from ..content.rules import slugify
from ..errors import InputError

STAFF = ("Maren Okafor", "Tobias Lindqvist", "Priya Castellanos", "Jonah Whitfield")
"""The made-up staff writers (no such names are in the film catalogue)."""

GENRES = (
    "Drama", "Comedy", "Action", "Animation", "Horror", "Sci-Fi", "Documentary", "Romance",
    "Crime", "Western", "Musical", "Thriller", "Fantasy", "Adventure", "War", "Family",
    "Biography", "Mystery", "History", "Sport", "Music",
)  # fmt: skip
"""The order genres are given a story in (each genre its most decorated film)."""

STORIES = 14
DRAFTS = 2
MAX_BLOCKS = 8  # body blocks of a sample story (4 to 8)
LAYOUT = "home"
HERO_SIZE = (1600, 900)
STILL_SIZE = (1200, 800)

TAG_BEHIND = "Behind the Scenes"
TAG_LISTS = "Lists"
TAG_ANNIVERSARIES = "Anniversaries"
TAG_PICKS = "Staff Picks"

# genre rows of the home layout: (genre, heading), the first few the catalogue has
_GENRE_ROWS = (
    ("Drama", "Dramas"),
    ("Comedy", "Comedies"),
    ("Animation", "Animation"),
    ("Sci-Fi", "Science fiction"),
    ("Action", "Action"),
    ("Horror", "Horror"),
    ("Documentary", "Documentaries"),
    ("Romance", "Romance"),
)
_MAX_GENRE_ROWS = 6
_ROW_LIMIT = 14


@dataclass(frozen=True)
class SampleResult:
    """What :func:`create_samples` made or found: the sample ``stories`` in their order
    (``published`` ones, then ``drafts``), the ``authors`` (staff person ids), the
    ``layout`` id, how many stories this call ``created`` (0 when all existed) and the
    wall-clock ``seconds`` it took."""

    stories: tuple[int, ...]
    published: tuple[int, ...]
    drafts: tuple[int, ...]
    authors: tuple[int, ...]
    layout: str
    created: int
    seconds: float


# -- the films --------------------------------------------------------------------------------


@dataclass
class _Person:
    id: int
    name: str


@dataclass
class PickedFilm:
    """A film of the catalogue as the samples use it: its facts, its credits in the
    catalogue's order (a cast is A to Z), the ``genre`` it was picked for and ``related``
    films of that genre."""

    id: int
    name: str
    year: int | None
    runtime: int | None
    genres: list[str]
    language: str
    country: str
    awards: str
    oscars: int
    nominations: int
    directors: list[_Person] = field(default_factory=list)
    writers: list[_Person] = field(default_factory=list)
    cast: list[_Person] = field(default_factory=list)
    genre: str = ""  # the genre this film was picked for
    related: list[int] = field(default_factory=list)  # others of that genre, best first

    @property
    def label(self) -> str:
        return self.name if self.year is None else f"{self.name} ({self.year})"


_NOMINATED = re.compile(r"Nominated for (\d+) Oscar")


def _films(store: WriteStore) -> dict[int, PickedFilm]:
    films: dict[int, PickedFilm] = {}
    for r in store.read(
        "SELECT id, name, year, runtime, genres, language, country, awards, oscars FROM titles"
    ):
        m = _NOMINATED.search(r["awards"] or "")
        films[r["id"]] = PickedFilm(
            id=r["id"],
            name=r["name"],
            year=r["year"],
            runtime=r["runtime"],
            genres=list(json.loads(r["genres"] or "[]")),
            language=r["language"] or "",
            country=r["country"] or "",
            awards=r["awards"] or "",
            oscars=r["oscars"] or 0,
            nominations=int(m.group(1)) if m else 0,
        )
    return films


def _credits(store: WriteStore, films: Mapping[int, PickedFilm], ids: Sequence[int]) -> None:
    """Fill in the directors, writers and cast of the films ``ids``."""
    if not ids:
        return
    marks = ",".join("?" * len(ids))
    for r in store.read(
        "SELECT tp.title_id, tp.role, p.id, p.name FROM title_people tp"
        f" JOIN people p ON p.id = tp.person_id WHERE tp.title_id IN ({marks})"
        " ORDER BY tp.title_id, tp.role, tp.position",
        tuple(ids),
    ):
        f = films[r["title_id"]]
        {"director": f.directors, "writer": f.writers, "cast": f.cast}[r["role"]].append(
            _Person(r["id"], r["name"])
        )


def _rank(f: PickedFilm, credited: set[int]) -> tuple[int, int, int, int]:
    """Sort key: films with credits and a year first, then the most Oscars, the most
    nominations, the lowest id."""
    complete = f.id in credited and f.year is not None
    return (0 if complete else 1, -f.oscars, -f.nominations, f.id)


def pick_films(store: WriteStore, count: int = STORIES) -> list[PickedFilm]:
    """The films the sample stories are about, in story order (see the module's
    contracts), with their credits; InputError if the catalogue has no film."""
    return _pick(store, _films(store), count)


def _pick(store: WriteStore, films: dict[int, PickedFilm], count: int) -> list[PickedFilm]:
    if not films:
        raise InputError(
            "the write store has no films to write about; import them first"
            " ('nearstate cms import-films')"
        )
    by_genre: dict[str, list[int]] = {}
    for r in store.read("SELECT genre, title_id FROM title_genres"):
        if r["title_id"] in films:
            by_genre.setdefault(r["genre"], []).append(r["title_id"])
    credited = {
        r["title_id"]
        for r in store.read(
            "SELECT DISTINCT title_id FROM title_people WHERE role IN ('director', 'cast')"
        )
    }
    ranked = sorted(films.values(), key=lambda f: _rank(f, credited))
    order = {f.id: i for i, f in enumerate(ranked)}
    picked: list[PickedFilm] = []
    taken: set[int] = set()
    for genre in GENRES:
        if len(picked) >= count:
            break
        candidates = sorted(by_genre.get(genre, ()), key=order.__getitem__)
        best = next((t for t in candidates if t not in taken), None)
        if best is not None:
            films[best].genre = genre
            picked.append(films[best])
            taken.add(best)
    for f in ranked:  # fewer genres than stories: the best films left
        if len(picked) >= count:
            break
        if f.id not in taken:
            f.genre = f.genres[0] if f.genres else ""
            picked.append(f)
            taken.add(f.id)
    _credits(store, films, [f.id for f in picked])
    for f in picked:
        same = sorted(by_genre.get(f.genre, ()), key=order.__getitem__)
        f.related = [t for t in same if t != f.id][:2]
    return picked


# -- words ------------------------------------------------------------------------------------


def _and(items: Sequence[str]) -> str:
    items = [i for i in items if i]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _names(people: Sequence[_Person], n: int = 3) -> str:
    return _and([p.name for p in people[:n]])


def _genre_word(g: str) -> str:
    return {"Sci-Fi": "science fiction"}.get(g, g.lower())


def _an(word: str) -> str:
    return ("an " if word[:1].lower() in "aeiou" else "a ") + word


def _runtime(minutes: int | None) -> str:
    if not minutes:
        return ""
    h, m = divmod(int(minutes), 60)
    if not h:
        return f"{m} minutes"
    return f"{h} hour{'s' if h > 1 else ''}" + (f" {m} minutes" if m else "")


_THE = ("United ", "Soviet ", "Czech ", "Dominican ", "People's ", "Republic ")


def _country(name: str) -> str:
    """``"United States"`` → ``"the United States"``; other names as they are."""
    plural = name in ("Netherlands", "Philippines", "Bahamas")
    return f"the {name}" if name.startswith(_THE) or plural else name


def _oscars(n: int) -> str:
    return f"{n} Oscar{'s' if n != 1 else ''}"


class _Facts:
    """What the catalogue says about one film and its people, as sentences."""

    def __init__(self, store: WriteStore, f: PickedFilm, films: Mapping[int, PickedFilm]):
        self.f = f
        self.films = films
        self._store = store

    def other_films(self, person: _Person) -> list[PickedFilm]:
        rows = self._store.read(
            "SELECT DISTINCT t.id FROM title_people tp JOIN titles t ON t.id = tp.title_id"
            " WHERE tp.person_id = ? AND t.id <> ? ORDER BY t.id",
            (person.id, self.f.id),
        )
        others = [self.films[r["id"]] for r in rows if r["id"] in self.films]
        return sorted(others, key=lambda o: (-o.oscars, -o.nominations, o.id))

    def same_year(self) -> list[PickedFilm]:
        if self.f.year is None:
            return []
        rows = self._store.read(
            "SELECT id FROM titles WHERE year = ? AND id <> ? ORDER BY oscars DESC, id LIMIT 3",
            (self.f.year, self.f.id),
        )
        return [self.films[r["id"]] for r in rows if r["id"] in self.films]

    def count_same_year(self) -> int:
        if self.f.year is None:
            return 0
        return int(
            self._store.read_one(
                "SELECT COUNT(*) AS n FROM titles WHERE year = ? AND id <> ?",
                (self.f.year, self.f.id),
            )["n"]
        )

    def roles(self, people: Sequence[_Person]) -> dict[int, int]:
        """Person id → how many titles of the catalogue credit them in the cast."""
        if not people:
            return {}
        ids = tuple({p.id for p in people})
        rows = self._store.read(
            "SELECT person_id, COUNT(DISTINCT title_id) AS n FROM title_people"
            f" WHERE role = 'cast' AND person_id IN ({','.join('?' * len(ids))})"
            " GROUP BY person_id",
            ids,
        )
        return {r["person_id"]: int(r["n"]) for r in rows}

    # sentences

    def intro(self) -> str:
        f = self.f
        s = f"{f.name} came out in {f.year}" if f.year else f"{f.name} is in our catalogue"
        if f.directors:
            s += f", directed by {_names(f.directors, 2)}"
        s += "."
        if f.runtime:
            s += f" It runs {_runtime(f.runtime)}."
        if f.genres:
            s += f" The catalogue files it under {_and([_genre_word(g) for g in f.genres])}."
        return s

    def writers(self) -> str:
        f = self.f
        if not f.writers:
            return ""
        directors = {p.name for p in f.directors}
        if {p.name for p in f.writers} <= directors:
            return f"{_names(f.writers)} wrote the screenplay too."
        if len(f.writers) > 3:
            names = ", ".join(p.name for p in f.writers[:3])
            return f"The screenplay is credited to {names} and {len(f.writers) - 3} more."
        return f"The screenplay is credited to {_names(f.writers)}."

    def director(self) -> str:
        f = self.f
        if not f.directors:
            return ""
        d = f.directors[0]
        others = self.other_films(d)
        if not others:
            return f"{d.name} has no other film in our catalogue; this one stands alone."
        best = others[0]
        won = f", with {_oscars(best.oscars)}" if best.oscars else ""
        if len(others) == 1:
            return f"{d.name} has one other film in our catalogue: {best.label}{won}."
        lead = "the most decorated of them" if best.oscars else "among them"
        return f"{d.name} has {len(others)} other films in our catalogue, {lead} {best.label}{won}."

    def cast(self) -> str:
        f = self.f
        if not f.cast:
            return ""
        n = len(f.cast)
        roles = self.roles(f.cast)
        # the source lists a cast A to Z; name first the actors with the most roles
        known = sorted(f.cast, key=lambda p: -roles.get(p.id, 1))
        if n == 1:
            return f"Its one credited actor is {known[0].name}."
        top = known[0]
        others = roles.get(top.id, 1) - 1
        if others < 1:
            return f"The catalogue credits {n} actors, among them {_names(known, 3)}."
        best = self.other_films(top)
        films = f"{others} other film{'s' if others > 1 else ''} we list"
        if best:
            films += f", among them {best[0].label}"
        more = [p.name for p in known[1:3]]
        rest = f" {_and(more)} {'is' if len(more) == 1 else 'are'} in it too."
        return (
            f"The catalogue credits {n} actors. Of them, {top.name} has the most other roles:"
            f" {films}.{rest}"
        )

    def place(self) -> str:
        f = self.f
        bits = []
        if f.country:
            bits.append(f"made in {_and([_country(c) for c in f.country.split(', ')[:3]])}")
        if f.language:
            langs = f.language.split(", ")
            more = " among other languages" if len(langs) > 3 else ""
            bits.append(f"in {_and(langs[:3])}{more}")
        if not bits:
            return ""
        return f"It was {' and '.join(bits)}."

    def awards(self) -> str:
        f = self.f
        if f.oscars:
            s = f"{f.name} won {_oscars(f.oscars)}."
            if f.nominations:
                s += f" The catalogue's awards line reads: “{f.awards.strip()}”"
            return s
        if f.nominations:
            return (
                f"It was nominated for {_oscars(f.nominations)} and won none; the films that"
                " lose on the night are often the ones people still talk about."
            )
        return "It won no Oscars, and never needed them to find its audience."

    def year_context(self) -> str:
        f = self.f
        peers = self.same_year()
        if not peers:
            return ""
        n = self.count_same_year()
        return (
            f"It shared {f.year} with {n} other film{'s' if n > 1 else ''} in our catalogue,"
            f" among them {_and([p.name for p in peers[:2]])}."
        )

    def related(self, *, rich: bool = False) -> str:
        """Films to watch next; ``rich``: as rich text, their names in italics."""
        rel = [self.films[t] for t in self.f.related if t in self.films]
        if not rel or not self.f.genre:
            return ""
        names = [f"*{richtext.escape(r.label)}*" if rich else r.label for r in rel]
        return f"If it is your kind of {_genre_word(self.f.genre)}, try {_and(names)} next."


# -- stories ----------------------------------------------------------------------------------


def _p(text: str) -> dict[str, Any] | None:
    return {"kind": "paragraph", "text": text} if text.strip() else None


def _rich(source: str) -> dict[str, Any] | None:
    """A rich-text paragraph (``content.richtext``): data in it goes through
    ``richtext.escape``."""
    return {"kind": "paragraph", "text": source, "format": "markdown"} if source.strip() else None


def _h(text: str) -> dict[str, Any]:
    return {"kind": "heading", "text": text, "level": 2}


# the staff writers' own lines, for pull quotes (opinions of made-up people, never facts)
_OPINIONS = (
    "{name} is the kind of film you finish and want to start again.",
    "Watch {name} for the craft, and stay for the people who made it.",
    "Every time I go back to {name} I find something I had missed.",
    "{name} rewards a second look more than most films do.",
    "There are bigger films than {name}, but few as sure of what they are.",
)


def _quote(f: PickedFilm, author: str) -> dict[str, Any]:
    """A pull quote: the story's author's own line about the film."""
    return {"kind": "quote", "text": _OPINIONS[f.id % len(_OPINIONS)].format(name=f.name),
            "cite": author}  # fmt: skip


def _card(f: PickedFilm) -> dict[str, Any]:
    return {"kind": "title", "title": f.id}


def _story_behind(x: _Facts, author: str, now_year: int) -> dict[str, Any]:
    f = x.f
    return {
        "slug": f"behind-the-scenes-of-{_slug(f)}",
        "title": f"Behind the scenes of {f.label}",
        "dek": f"Who made {f.name}: the director, the writers, the cast and where it was shot.",
        "tags": [TAG_BEHIND, TAG_PICKS],
        "body": [
            _p(x.intro()),
            _h("The people behind it"),
            _p(" ".join(filter(None, (x.director(), x.writers())))),
            _p(x.cast()),
            _quote(f, author),
            _card(f),
            _p(" ".join(filter(None, (x.place(), x.awards())))),
        ],
    }


def _story_five(x: _Facts, author: str, now_year: int) -> dict[str, Any]:
    f = x.f
    facts = [
        s
        for s in (x.place(), x.director(), x.cast(), x.awards(), x.year_context(), x.writers())
        if s
    ][:5]
    words = ("One", "Two", "Three", "Four", "Five")
    count = words[len(facts) - 1] if facts else "A few"
    return {
        "slug": f"things-you-didnt-know-about-{_slug(f)}",
        "title": f"{count} things you didn't know about {f.name}",
        "dek": f"{f.label}, in {count.lower()} facts from our catalogue.",
        "tags": [TAG_LISTS, TAG_BEHIND],
        "body": [
            _p(x.intro()),
            *[_p(f"{words[i]}: {s}") for i, s in enumerate(facts)],
            _quote(f, author),
            _card(f),
        ],
    }


def _story_anniversary(x: _Facts, author: str, now_year: int) -> dict[str, Any]:
    f = x.f
    years = now_year - f.year if f.year else 0
    who = f"{f.directors[0].name}'s {f.name}" if f.directors else f.name
    title = f"{who}, {years} years on" if years > 1 else f"{f.name}, then and now"
    return {
        "slug": f"{_slug(f)}-anniversary",
        "title": title,
        "dek": (
            f"{f.name} came out in {f.year}. We look at what it was then, and why it lasts."
            if f.year
            else f"We look at what {f.name} was then, and why it lasts."
        ),
        "tags": [TAG_ANNIVERSARIES, TAG_PICKS],
        "body": [
            _p(x.intro()),
            _h("Then"),
            _p(" ".join(filter(None, (x.year_context(), x.place())))),
            _h("Now"),
            _p(" ".join(filter(None, (x.awards(), x.related())))),
            _quote(f, author),
            _card(f),
        ],
    }


def _story_numbers(x: _Facts, author: str, now_year: int) -> dict[str, Any]:
    f = x.f
    nums = []
    if f.year:
        nums.append(f"{f.year}: the year it came out.")
    if f.runtime:
        nums.append(f"{f.runtime}: its running time in minutes, {_runtime(f.runtime)}.")
    nums.append(f"{f.oscars}: the Oscars it won.")
    if f.cast:
        nums.append(f"{len(f.cast)}: the actors the catalogue credits, led by {f.cast[0].name}.")
    if len(f.genres) > 1:
        nums.append(f"{len(f.genres)}: the genres it is filed under.")
    return {
        "slug": f"{_slug(f)}-by-the-numbers",
        "title": f"{f.name} by the numbers",
        "dek": f"{f.label} in figures: the year, the minutes, the Oscars and the cast.",
        "tags": [TAG_LISTS, TAG_BEHIND],
        "body": [
            _p(x.intro()),
            _h("The figures"),
            _rich("\n".join(f"- {richtext.escape(n)}" for n in nums)),
            _p(x.director()),
            _quote(f, author),
            _card(f),
            _rich(x.related(rich=True)),
        ],
    }


def _story_why(x: _Facts, author: str, now_year: int) -> dict[str, Any]:
    f = x.f
    return {
        "slug": f"why-{_slug(f)}-still-holds-up",
        "title": f"Why {f.name} still holds up",
        "dek": f"Our case for {f.label}, from the people who made it to the prizes it took.",
        "tags": [TAG_PICKS, TAG_ANNIVERSARIES],
        "body": [
            _p(x.intro()),
            _h("The case for it"),
            _p(" ".join(filter(None, (x.director(), x.cast())))),
            _quote(f, author),
            _p(x.awards()),
            _card(f),
            _rich(x.related(rich=True)),
        ],
    }


_TEMPLATES: tuple[Callable[[_Facts, str, int], dict[str, Any]], ...] = (
    _story_behind,
    _story_five,
    _story_anniversary,
    _story_numbers,
    _story_why,
)


def _slug(f: PickedFilm) -> str:
    return slugify(f"{f.name} {f.year or ''}", limit=50) or f"film-{f.id}"


# -- images -----------------------------------------------------------------------------------


def _colour(rng: random.Random, light: tuple[float, float]) -> tuple[int, int, int]:
    import colorsys

    r, g, b = colorsys.hls_to_rgb(rng.random(), rng.uniform(*light), rng.uniform(0.45, 0.85))
    return round(r * 255), round(g * 255), round(b * 255)


def artwork(seed: str, size: tuple[int, int] = HERO_SIZE, label: str = "") -> bytes:
    """An abstract composition as JPEG bytes: a two-colour diagonal gradient with
    translucent discs and bands, coloured from ``seed`` (the same seed and label give the
    same bytes), with ``label`` written in the lower left when given."""
    from PIL import Image, ImageDraw, ImageFont, ImageOps

    rng = random.Random(hashlib.sha256(seed.encode()).digest())
    w, h = size
    dark, light = _colour(rng, (0.12, 0.25)), _colour(rng, (0.45, 0.65))
    vertical = Image.linear_gradient("L").resize((w, h))
    across = Image.linear_gradient("L").transpose(Image.Transpose.ROTATE_90).resize((w, h))
    grey = Image.blend(vertical, across, rng.uniform(0.3, 0.7))
    base = ImageOps.colorize(grey, dark, light).convert("RGBA")
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    accent = _colour(rng, (0.55, 0.8))
    for _ in range(rng.randint(4, 7)):
        r = rng.randint(h // 8, h // 2)
        cx, cy = rng.randint(0, w), rng.randint(0, h)
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(*accent, rng.randint(25, 70)))
    for _ in range(rng.randint(2, 3)):
        y, t, slope = rng.randint(0, h), rng.randint(h // 30, h // 8), rng.uniform(-0.4, 0.4)
        draw.polygon(
            [(0, y), (w, y + slope * w), (w, y + slope * w + t), (0, y + t)],
            fill=(255, 255, 255, rng.randint(12, 30)),
        )
    img = Image.alpha_composite(base, layer)
    if label:
        text = ImageDraw.Draw(img)
        try:
            font: Any = ImageFont.load_default(size=max(24, h // 14))
        except (TypeError, OSError):  # a Pillow without FreeType: the small bitmap font
            font = ImageFont.load_default()
        x, y = w // 20, h - h // 20 - max(24, h // 14)
        text.text((x + 3, y + 3), label, font=font, fill=(0, 0, 0, 140))
        text.text((x, y), label, font=font, fill=(255, 255, 255, 235))
    out = io.BytesIO()
    img.convert("RGB").save(out, "JPEG", quality=88)
    return out.getvalue()


# -- the set ----------------------------------------------------------------------------------


def _staff(cms: CMS, store: WriteStore) -> list[int]:
    ids = []
    for name in STAFF:
        row = store.read_one("SELECT id, staff FROM people WHERE name = ?", (name,))
        ids.append(int(row["id"]) if row is not None and row["staff"] else cms.add_staff(name))
    return ids


def create_samples(
    cms: CMS,
    store: WriteStore,
    media: MediaConfig,
    *,
    user: str = "demo",
    progress: Callable[[int, int], None] | None = None,
) -> SampleResult:
    """Create the sample set (see the module's contracts) as ``user``, once; return what
    exists. ``progress(done, total)`` is called after each story. Raises
    :class:`~nearstate.errors.InputError` when the write store has no films."""
    start = time.perf_counter()
    now_year = time.gmtime(cms.clock()).tm_year
    catalogue = _films(store)
    films = _pick(store, catalogue, STORIES)
    authors = _staff(cms, store)
    names = dict(zip(authors, STAFF, strict=True))
    n_live = len(films) - DRAFTS if len(films) > DRAFTS else len(films)
    ids: list[int] = []
    published: list[int] = []
    drafts: list[int] = []
    created = 0
    slugs: set[str] = set()
    for i, f in enumerate(films):
        author = authors[i % len(authors)]
        story = _TEMPLATES[i % len(_TEMPLATES)](
            _Facts(store, f, catalogue), names[author], now_year
        )
        if story["slug"] in slugs:
            story["slug"] += f"-{f.id}"
        slugs.add(story["slug"])
        live = i < n_live
        row = cms.story_by_slug(story["slug"])
        if row is None:
            sid = _create(cms, store, media, f, story, author, i, user)
            created += 1
            status = "draft"
        else:
            sid, status = int(row["id"]), row["status"]
        if live and status == "draft" and (row is None or _untouched(row, user)):
            cms.publish(sid, user=user)
            status = "published"
        ids.append(sid)
        (published if status == "published" else drafts if status == "draft" else []).append(sid)
        if progress:
            progress(i + 1, len(films))
    layout = _layout(cms, store, published, user)
    return SampleResult(
        stories=tuple(ids),
        published=tuple(published),
        drafts=tuple(drafts),
        authors=tuple(authors),
        layout=layout,
        created=created,
        seconds=time.perf_counter() - start,
    )


def _untouched(row: Mapping[str, Any], user: str) -> bool:
    """A story this set created and never published, at its first revision."""
    return row["revision"] == 1 and row["published_revision"] is None and row["updated_by"] == user


def _create(
    cms: CMS,
    store: WriteStore,
    media: MediaConfig,
    f: PickedFilm,
    story: dict[str, Any],
    author: int,
    index: int,
    user: str,
) -> int:
    hero = store_upload(
        store,
        media,
        artwork(f"hero:{f.id}", HERO_SIZE, f.label),
        filename=f"{story['slug']}-hero.jpg",
        alt=f"Abstract artwork in colours picked for {f.label}, with its name",
        user=user,
    )
    body = [b for b in story["body"] if b is not None]
    if index % 3 == 0 and len(body) < MAX_BLOCKS:  # every third story: a picture in its body
        still = store_upload(
            store,
            media,
            artwork(f"still:{f.id}", STILL_SIZE),
            filename=f"{story['slug']}-still.jpg",
            alt=f"Abstract shapes in colours picked for {f.name}",
            user=user,
        )
        body.insert(
            min(3, len(body)),
            {"kind": "image", "asset": still["id"], "text": f"Colours for {f.name}."},
        )
    related = [f.id, *f.related]
    data = {
        "title": story["title"][:200],
        "slug": story["slug"],
        "dek": story["dek"][:400],
        "body": body,
        "hero": hero["id"],
        "tags": story["tags"],
        "related": related,
        "authors": [author],
    }
    return int(cms.create_story(data, user=user).id)


def _layout(cms: CMS, store: WriteStore, published: Sequence[int], user: str) -> str:
    try:
        cms.layout(LAYOUT)
        return LAYOUT  # an editor's layout is theirs: left alone
    except NotFound:
        pass
    have = {r["genre"] for r in store.read("SELECT DISTINCT genre FROM title_genres")}
    rows: list[dict[str, Any]] = []
    if published:
        rows.append({"heading": "Featured", "kind": "stories", "ids": list(published[:3])})
    rows.append({"heading": "Behind the scenes", "kind": "tag", "tag": slugify(TAG_BEHIND),
                 "limit": 8})  # fmt: skip
    rows.append({"heading": "Lists", "kind": "tag", "tag": slugify(TAG_LISTS), "limit": 8})
    genre_rows = [(g, h) for g, h in _GENRE_ROWS if g in have][:_MAX_GENRE_ROWS]
    for genre, heading in genre_rows:
        rows.append({"heading": heading, "kind": "genre", "genre": genre, "limit": _ROW_LIMIT})
    if published:
        newest = list(reversed(published))[:12]
        rows.append({"heading": "Latest stories", "kind": "stories", "ids": newest})
    cms.save_layout(LAYOUT, name="Home", rows=rows, user=user, base_revision=None)
    return LAYOUT


__all__ = ["DRAFTS", "GENRES", "STAFF", "STORIES", "PickedFilm", "SampleResult", "artwork",
           "create_samples", "pick_films"]  # fmt: skip
