"""Dataset writers for benchmarks and the ``nearstate bench data`` command.

Both writers produce JSON Lines: UTF-8, one JSON object per line, each line ending in ``\\n``.
Each writes to a temporary file in the destination's directory and renames it into place
with :func:`os.replace`, so a failure never leaves a partial file at ``out``.
"""

from __future__ import annotations

import os
import re
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import msgspec
import numpy as np

from nearstate.errors import DatasetError

Progress = Callable[[int], None]

_FILMS_SQL = """
SELECT o.ID, o.imdbID, o.Title, o.Year, o.Runtime, o.Released, o.Genre, o.Director, o.Writer,
       o."Cast", o.Language, o.Country, o.Oscars, t.Rating, t.Meter, t.Reviews, t.Fresh,
       t.Rotten, o.Metacritic, t.BoxOffice, t.Production
FROM omdb AS o LEFT JOIN tomatoes AS t ON t.ID = o.ID
ORDER BY o.ID
"""
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def films_path() -> Path:
    """Return the path of the SQLite movies database shipped in ``bokeh_sampledata``.

    Raises :class:`DatasetError` if the package is not installed or the file is missing.
    """
    try:
        from bokeh_sampledata.movies_data import movie_path
    except ImportError as e:
        raise DatasetError(
            "the film data needs the bokeh_sampledata package: pip install 'nearstate[bench]'"
        ) from e
    path = Path(movie_path)
    if not path.is_file():
        raise DatasetError(f"the film database is missing: {path}")
    return path


def _atomic_write(out: str | Path, fill: Callable[[BinaryIO], int]) -> int:
    """Run ``fill`` on a temp file beside ``out``, then rename it to ``out``; return its count."""
    out = Path(out)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb", buffering=1 << 20) as f:
            count = fill(f)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return count


def _text(v: str | None) -> str | None:
    return v if v else None


def _list(v: str | None) -> list[str]:
    return [s for s in v.split(", ") if s] if v else []


def _int(v: float | None) -> int | None:
    return None if v is None else round(v)


def write_films(out: str | Path, *, progress: Progress | None = None) -> int:
    """Write one catalogue record per film (17,472 of them) to ``out``; return the count.

    Records are in ``id`` order. Empty strings in scalar text become ``null`` and SQL NULL stays
    ``null``; comma-separated columns become lists, NULL or empty giving ``[]``. ``progress``,
    if given, is called with the number of records written every 1,000 records and at the end.
    """
    db = films_path()

    def fill(f: BinaryIO) -> int:
        enc = msgspec.json.Encoder()
        batch: list[dict[str, object]] = []
        n = 0
        con = sqlite3.connect(db.as_uri() + "?mode=ro", uri=True)
        try:
            for r in con.execute(_FILMS_SQL):
                batch.append(
                    {
                        "id": r[0],
                        "imdb_id": r[1],
                        "title": r[2],
                        "year": r[3],
                        "runtime": _int(r[4]),
                        "released": r[5] if r[5] and _DATE.fullmatch(r[5]) else None,
                        "genres": _list(r[6]),
                        "directors": _list(r[7]),
                        "writers": _list(r[8]),
                        "cast": _list(r[9]),
                        "languages": _list(r[10]),
                        "countries": _list(r[11]),
                        "oscars": r[12] or 0,
                        "scores": {
                            "tomato_rating": r[13],
                            "meter": r[14],
                            "reviews": r[15],
                            "fresh": r[16],
                            "rotten": r[17],
                            "metacritic": r[18],
                        },
                        "box_office": r[19],
                        "production": _text(r[20]),
                    }
                )
                if len(batch) == 1000:
                    f.write(enc.encode_lines(batch))
                    n += len(batch)
                    batch.clear()
                    if progress:
                        progress(n)
        except sqlite3.Error as e:
            raise DatasetError(f"cannot read the film database {db}: {e}") from e
        finally:
            con.close()
        f.write(enc.encode_lines(batch))
        n += len(batch)
        if progress and batch:
            progress(n)
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
_ONSETS = [*_w("b c d f g h j k l m n p r s t v w z br cr dr st tr sh ch th gr pl"), ""]
_VOWELS = _w("a e i o u ai ea ou io y")
_CODAS = [*_w("n r s l m t nd st rk x"), "", ""]
_KINDS = ("feature", "interview", "list", "news", "behind-the-scenes", "trailer")
_KIND_P = (0.25, 0.1, 0.15, 0.3, 0.1, 0.1)
_TITLES = (
    ("Inside the {adj} World of {show}", "Why {show} Is the Show Everyone Is Talking About"),
    ("{person} on {show}: {Phrase}", "{person} Talks {show} and {Phrase}"),
    ("{k} {Adj} Shows Like {show} to Watch Next", "The {k} Best {Noun} Moments in {show}"),
    ("{show} Season {k}: Release Date, Cast and Everything We Know", "{show} Is Coming Back"),
    ("How the {Noun} in {show} Came Together", "Behind the {Noun} of {show}"),
    ("Watch the {show} Trailer", "{show} Season {k}: First Look and Official Trailer"),
)
_SIZES = ((1920, 1080), (1280, 720), (2560, 1440), (3840, 2160), (1080, 1350), (1200, 1200))
_SLUG = re.compile(r"[^a-z0-9]+")


class _Hero(msgspec.Struct):
    asset_id: str
    width: int
    height: int
    alt: str
    focal_x: float
    focal_y: float


class _Story(msgspec.Struct):
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


def _words(rng: np.random.Generator, count: int) -> list[str]:
    """Generate ``count`` distinct pronounceable pseudo-words, none of them a real word above."""
    sylls = [o + v + c for o in _ONSETS for v in _VOWELS for c in _CODAS]
    out = dict.fromkeys(_COMMON + _FILM)
    real = len(out)
    while len(out) < real + count:
        lens = rng.choice([1, 2, 3], size=count, p=[0.25, 0.5, 0.25]).tolist()
        ids = rng.integers(0, len(sylls), size=(count, 3)).tolist()
        for k, row in zip(lens, ids, strict=True):
            if len(out) < real + count:
                out.setdefault("".join(sylls[i] for i in row[:k]))
    return list(out)[real:]


class _Pools:
    """Everything stories are assembled from, drawn once per seed (about 0.3 s)."""

    def __init__(self, rng: np.random.Generator) -> None:
        vocab = _COMMON + _FILM + _words(rng, 4000)
        self.content = content = vocab[len(_COMMON) :]
        lens = rng.integers(2, 7, size=60_000).tolist()
        ids = _zipf(rng, len(vocab), (60_000, 6), 1.0).tolist()
        ph = (" ".join(vocab[i] for i in row[:k]) for k, row in zip(lens, ids, strict=True))
        self.phrases = [p for p in ph if len(p) <= 60]
        self.caps = [p[0].upper() + p[1:] for p in self.phrases]

        def names(k: int, words: int) -> list[str]:
            ids = rng.integers(0, len(content), size=(k, 3)).tolist()
            wn = rng.integers(1, words + 1, size=k).tolist()
            return [
                " ".join(content[i].capitalize() for i in r[:w])
                for w, r in zip(wn, ids, strict=True)
            ]

        self.shows = names(3000, 3)
        self.people = [f"{a} {b}" for a, b in zip(names(2000, 1), names(2000, 1), strict=True)]
        self.authors = self.people[:300]
        pairs = rng.integers(0, len(content), size=(600, 2)).tolist()
        pairs = [f"{content[a]}-{content[b]}" for a, b in pairs]
        self.tags = list(dict.fromkeys(_FILM + pairs))[:500]


_END = ("?", "!", *["."] * 18)


def _stories(n: int, seed: int, batch: int) -> Iterator[list[_Story]]:
    """Yield the ``n`` stories for ``seed`` in batches of ``batch``; fully deterministic."""
    rng = np.random.default_rng(seed)
    pl = _Pools(rng)
    phrases, caps, content, people, shows, tags = (
        pl.phrases,
        pl.caps,
        pl.content,
        pl.people,
        pl.shows,
        pl.tags,
    )
    n_ph, n_stream = len(phrases), batch * 64
    start = np.datetime64("2021-12-01T00:00:00", "s").astype(np.int64)
    span = np.datetime64("2025-06-30T00:00:00", "s").astype(np.int64) - start
    slugs: dict[str, int] = {}
    ph: list[int] = []
    aux: list[int] = []
    pos = 0
    for lo in range(0, n, batch):
        b = min(batch, n - lo)
        kinds = rng.choice(6, size=b, p=_KIND_P).tolist()
        ntags = rng.choice(5, size=b, p=[0.2, 0.3, 0.25, 0.15, 0.1]).tolist()
        tag_ids = _zipf(rng, len(tags), (b, 5), 1.1).tolist()
        nrel = rng.choice(5, size=b, p=[0.15, 0.4, 0.25, 0.12, 0.08]).tolist()
        rel = (_zipf(rng, 20_000, (b, 4), 0.9) + 1).tolist()
        who = _zipf(rng, len(pl.authors), b, 0.8).tolist()
        t = start + ((lo + np.arange(b) + rng.random(b)) / n * span).astype(np.int64)
        when = np.datetime_as_string(t.astype("datetime64[s]"), unit="s").tolist()
        target = rng.integers(400, 1250, size=b).tolist()
        hero_on = (rng.random(b) >= 0.05).tolist()
        size = rng.integers(0, len(_SIZES), size=b).tolist()
        fx, fy = np.round(rng.beta(4, 4, size=(2, b)), 2).tolist()
        asset = rng.integers(0, 2**63, size=b).tolist()
        score = np.round(rng.beta(2, 5, size=b), 4).tolist()
        score_on = (rng.random(b) >= 0.1).tolist()
        featured = (rng.random(b) < 0.08).tolist()
        show = _zipf(rng, len(shows), b, 0.9).tolist()
        small = rng.integers(0, 1 << 30, size=(b, 6)).tolist()
        out: list[_Story] = []
        for j in range(b):
            body = ""
            while len(body) < target[j]:
                if pos + 8 > len(ph):  # phrase ids and a 0..59 side value for each
                    ph = rng.integers(0, n_ph, size=n_stream).tolist()
                    aux = rng.integers(0, 60, size=n_stream).tolist()
                    pos = 0
                a = aux[pos]
                s = caps[ph[pos]]
                for i in ph[pos + 1 : pos + 2 + a % 3]:
                    s += " " + phrases[i]
                s += _END[a // 3]
                body = body + ("\n\n" if aux[pos + 1] < 12 else " ") + s if body else s
                pos += 2 + a % 3
            r = small[j]
            dek = f"{caps[ph[pos]]} {phrases[ph[pos + 1]]}."
            sh = shows[show[j]]
            title = _TITLES[kinds[j]][r[1] % 2].format(
                show=sh,
                person=people[r[2] % len(people)],
                k=3 + r[3] % 10,
                adj=content[r[4] % 200],
                Adj=content[r[4] % 200].capitalize(),
                Noun=content[r[5] % 200].capitalize(),
                Phrase=caps[ph[pos + 2]],
            )
            slug = _SLUG.sub("-", title.lower()).strip("-")
            seen = slugs.get(slug, 0)
            slugs[slug] = seen + 1
            w, h = _SIZES[size[j]]
            alt = f"{caps[ph[pos + 3]]} in {sh}"
            pos += 4
            out.append(
                _Story(
                    id=f"s{lo + j + 1:07d}",
                    slug=f"{slug}-{seen + 1}" if seen else slug,
                    title=title,
                    dek=dek,
                    body=body,
                    kind=_KINDS[kinds[j]],
                    tags=list(dict.fromkeys(tags[i] for i in tag_ids[j][: ntags[j] + 1])),
                    title_ids=rel[j][: nrel[j]],
                    author=pl.authors[who[j]],
                    published_at=when[j] + "Z",
                    reading_minutes=1 + len(body) // 300,
                    hero=_Hero(f"img-{asset[j]:016x}", w, h, alt, fx[j], fy[j])
                    if hero_on[j]
                    else None,
                    score=score[j] if score_on[j] else None,
                    featured=featured[j],
                )
            )
        yield out


def write_tudum(out: str | Path, n: int, *, seed: int = 0, progress: Progress | None = None) -> int:
    """Write ``n`` generated Tudum-like editorial stories to ``out``; return ``n``.

    The same ``(n, seed)`` always gives a byte-identical file. Ids are ``s0000001`` upward in
    publication order; slugs are unique (a repeated title's slug gets ``-2``, ``-3``...).
    Bodies are 400-1,500 characters of prose-like text. ``progress``, if given, is called
    with the number of records written after every 10,000 records and at the end.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")

    def fill(f: BinaryIO) -> int:
        enc = msgspec.json.Encoder()
        done = 0
        for stories in _stories(n, seed, 10_000):
            f.write(enc.encode_lines(stories))
            done += len(stories)
            if progress:
                progress(done)
        return done

    return _atomic_write(out, fill)
