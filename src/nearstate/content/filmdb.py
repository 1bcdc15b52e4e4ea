"""The film catalogue's source: the SQLite movies database of ``bokeh_sampledata`` (its
``omdb`` and ``tomatoes`` tables), and one row of it shaped as a catalogue record.

Used by the CMS's film import (:mod:`nearstate.content.films`) and by the benchmarks' film
data set (:func:`nearstate.bench.datasets.write_films`).
"""

from __future__ import annotations

import re
from pathlib import Path

import msgspec

from ..errors import DatasetError

FILMS_SQL = """
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


class Scores(msgspec.Struct):
    tomato_rating: float | None
    meter: int | None
    reviews: int | None
    fresh: int | None
    rotten: int | None
    metacritic: int | None


class Film(msgspec.Struct):
    id: int
    imdb_id: str | None
    title: str | None
    year: int | None
    runtime: int | None
    released: str | None
    genres: list[str]
    directors: list[str]
    writers: list[str]
    cast: list[str]
    languages: list[str]
    countries: list[str]
    oscars: int
    scores: Scores
    box_office: float | None
    production: str | None


def _text(v: str | None) -> str | None:
    return v if v else None


def _list(v: str | None) -> list[str]:
    return [s for s in v.split(", ") if s] if v else []


def film_of(r: tuple) -> Film:
    """Shape one row of ``FILMS_SQL`` as a catalogue record."""
    released = r[5] if r[5] and _DATE.fullmatch(r[5]) else None
    return Film(
        *(r[0], _text(r[1]), _text(r[2]), r[3], None if r[4] is None else round(r[4]), released),
        *map(_list, r[6:12]),
        *(r[12] or 0, Scores(*r[13:19]), r[19], _text(r[20])),
    )


__all__ = ["FILMS_SQL", "Film", "Scores", "film_of", "films_path"]
