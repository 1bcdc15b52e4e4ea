"""Import the real film catalogue (``bokeh_sampledata``'s ``omdb`` table) into the write store.

:func:`import_films` upserts ``titles``, ``people`` (one per distinct name), their credits
(``title_people``) and genres (``title_genres``), gives every title without a poster a
generated placeholder (the source's poster URLs point at a third-party site we may not
copy), and enqueues outbox events so the ingestion pipeline rebuilds the records.

Contracts:

- Idempotent: running it again changes nothing that is already as the source says. Title
  ids are the source's ``ID``; a person is identified by their exact name and keeps their
  id; people first seen get ``max(id) + 1, + 2, ...`` in order of first appearance (films
  in id order; directors, then writers, then cast). Editors' changes to a person (slug,
  bio) and a title's ``poster_asset`` are never overwritten.
- Work is done in transactions of ``batch`` titles; each commits the batch's rows together
  with its outbox events, so a failure leaves whole batches and the pipeline sees exactly
  what was committed. Running the import again finishes an interrupted one.
- Every run enqueues (:func:`~nearstate.content.outbox.enqueue`, which also notifies
  ``nearstate_outbox``), per batch, one ``titles`` event (subject ``import``) naming all
  the batch's title ids, so each title id is in exactly one event per run; and, when any,
  one ``people`` event naming the people created in the batch, whose credits it changed,
  or credited on a title whose row it changed (people's records list their titles).
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import DatasetError, InputError
from . import outbox
from .db import Tx, WriteStore
from .filmdb import FILMS_SQL, film_of, films_path
from .media import ensure_placeholders, placeholder_id
from .rules import slugify

# FILMS_SQL's columns (which film_of parses by position), then the awards text.
_IMPORT_SQL = FILMS_SQL.replace("\nFROM omdb", ", o.Awards\nFROM omdb", 1)
assert _IMPORT_SQL != FILMS_SQL, "FILMS_SQL changed shape: update films._IMPORT_SQL"
_AWARDS = 21
_ROLES = ("director", "writer", "cast")
_CHUNK = 500  # ids per IN (...) list: far below SQLite's and PostgreSQL's parameter limits

SLUG_MAX = 80  # the slug length rules.slugify keeps by default


_SUFFIXES = frozenset({"Jr.", "Jr", "Sr.", "Sr", "II", "III", "IV"})
_NOTE = re.compile(r"\s*\([^)]*\)\s*$")  # "Jane Doe (screenplay)": a credit note


def _names(names: list[str]) -> list[str]:
    """Credited names as people: "Sammy Davis", "Jr." (split on ", " by the source) joined
    back, notes such as "(screenplay)" dropped, each person once, in order."""
    out: list[str] = []
    for n in names:
        n = _NOTE.sub("", n).strip()
        if not n:
            continue
        if n in _SUFFIXES and out:
            out[-1] = f"{out[-1]}, {n}"
        elif n not in out:
            out.append(n)
    return out


@dataclass
class FilmImport:
    """What :func:`import_films` did: ``titles`` imported (new or not), ``people`` and
    ``placeholders`` newly created, wall-clock ``seconds`` and transactions (``batches``)."""

    titles: int
    people: int
    placeholders: int
    seconds: float
    batches: int


_TITLE_COLS = (
    "id", "imdb_id", "name", "slug", "year", "runtime", "released", "genres", "language",
    "country", "awards", "oscars",
)  # fmt: skip
_TITLE_TYPES = (
    "bigint", "text", "text", "text", "int", "int", "text", "text", "text", "text", "text",
    "int", "text", "float8",
)  # fmt: skip
_UPSERT_TITLE = (
    "ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _TITLE_COLS[1:])
    + ", poster_asset = COALESCE(titles.poster_asset, excluded.poster_asset),"
    " updated_at = excluded.updated_at"
)
_SELECT_TITLE = ", ".join((*_TITLE_COLS, "poster_asset"))
_SELECT_CREDITS = (
    "SELECT title_id, role, position, person_id FROM title_people WHERE title_id IN ({ids})"
)
_SELECT_GENRES = "SELECT title_id, genre FROM title_genres WHERE title_id IN ({ids})"


def _read_films(limit: int | None) -> list[tuple[Any, str]]:
    """The source films in id order (at most ``limit``), each as ``(Film, awards)``."""
    db = films_path()
    sql = _IMPORT_SQL if limit is None else f"{_IMPORT_SQL.rstrip()} LIMIT {int(limit)}"
    try:
        con = sqlite3.connect(db.as_uri() + "?mode=ro", uri=True)
        try:
            rows = con.execute(sql).fetchall()
        finally:
            con.close()
    except sqlite3.Error as e:
        raise DatasetError(f"cannot read the film database {db}: {e}") from e
    return [(film_of(r), r[_AWARDS] or "") for r in rows]


def _insert(
    tx: Tx,
    table: str,
    columns: Sequence[str],
    types: Sequence[str],
    rows: Sequence[Sequence[Any]],
    tail: str = "",
) -> None:
    """Insert ``rows`` into ``table``'s ``columns`` (``tail``: an ``ON CONFLICT`` clause).

    SQLite: ``executemany``. PostgreSQL: one ``INSERT ... SELECT FROM unnest(arrays)`` per
    call (``types`` are the columns' PostgreSQL types), twice as fast as ``executemany``
    (or multi-row ``VALUES``) there; each row still goes through every constraint."""
    if not rows:
        return
    names = ", ".join(columns)
    if tx.store.dialect == "postgres":
        arrays = ", ".join(f"?::{t}[]" for t in types)
        tx.execute(
            f"INSERT INTO {table} ({names}) SELECT * FROM unnest({arrays}) {tail}",
            [list(col) for col in zip(*rows, strict=True)],
        )
    else:
        marks = ", ".join("?" * len(columns))
        tx.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks}) {tail}", rows)


def _delete_titles(tx: Tx, table: str, ids: Sequence[int]) -> None:
    """Delete ``table``'s rows of the titles ``ids``."""
    for lo in range(0, len(ids), _CHUNK):
        chunk = ids[lo : lo + _CHUNK]
        tx.execute(f"DELETE FROM {table} WHERE title_id IN ({', '.join('?' * len(chunk))})", chunk)


def _in_chunks(tx: Tx, sql: str, ids: Sequence[Any]) -> list[dict[str, Any]]:
    """``sql`` (with one ``{ids}`` for an IN list) run over ``ids`` in chunks; all rows."""
    out: list[dict[str, Any]] = []
    for lo in range(0, len(ids), _CHUNK):
        chunk = ids[lo : lo + _CHUNK]
        out.extend(tx.all(sql.replace("{ids}", ", ".join("?" * len(chunk))), chunk))
    return out


class _People:
    """Name → id for every person, loaded once and topped up in each batch."""

    def __init__(self, store: WriteStore):
        self.ids: dict[str, int] = {}
        self.max_id = 0
        self.refresh_rows(store.read("SELECT id, name FROM people"))

    def refresh_rows(self, rows: list[dict[str, Any]]) -> None:
        for r in rows:
            self.ids[r["name"]] = r["id"]
            self.max_id = max(self.max_id, r["id"])

    def refresh(self, tx: Tx) -> None:
        """Take in people other writers added since (under the batch's lock)."""
        if tx.store.dialect == "postgres":  # SQLite's BEGIN IMMEDIATE already excludes writers
            tx.execute("LOCK TABLE people IN SHARE ROW EXCLUSIVE MODE")
        self.refresh_rows(tx.all("SELECT id, name FROM people WHERE id > ?", (self.max_id,)))
        self.max_id = max(self.max_id, tx.value("SELECT MAX(id) AS m FROM people") or 0)


def _import_batch(tx: Tx, films: list[tuple[Any, str]], people: _People) -> tuple[int, int]:
    """Write one batch of films and its outbox events; returns (people, placeholders) new."""
    now = time.time()
    ids = [f.id for f, _ in films]
    people.refresh(tx)
    old_titles = {
        r["id"]: r
        for r in _in_chunks(tx, f"SELECT {_SELECT_TITLE} FROM titles WHERE id IN ({{ids}})", ids)
    }
    old_credits: dict[int, list[tuple[str, int, int]]] = {}
    for r in _in_chunks(tx, _SELECT_CREDITS, ids):
        old_credits.setdefault(r["title_id"], []).append((r["role"], r["position"], r["person_id"]))
    old_genres: dict[int, set[str]] = {}
    for r in _in_chunks(tx, _SELECT_GENRES, ids):
        old_genres.setdefault(r["title_id"], set()).add(r["genre"])

    new_people: list[tuple[int, str, str]] = []
    touched: set[int] = set()
    title_rows: list[tuple[Any, ...]] = []
    credit_titles: list[int] = []
    credit_rows: list[tuple[int, str, int, int]] = []
    genre_titles: list[int] = []
    genre_rows: list[tuple[str, int]] = []
    need_poster: list[tuple[int, str, int | None]] = []
    for f, awards in films:
        credits: list[tuple[str, int, int]] = []
        for role, names in zip(_ROLES, (f.directors, f.writers, f.cast), strict=True):
            for pos, name in enumerate(_names(names)):
                pid = people.ids.get(name)
                if pid is None:
                    people.max_id += 1
                    pid = people.ids[name] = people.max_id
                    new_people.append((pid, name, slugify(name) or f"person-{pid}"))
                credits.append((role, pos, pid))
        old = sorted(old_credits.get(f.id, ()))
        if sorted(credits) != old:
            touched.update(p for _, _, p in old)  # everyone credited before or now
            touched.update(p for _, _, p in credits)
            if old:
                credit_titles.append(f.id)
            credit_rows.extend((f.id, role, pos, pid) for role, pos, pid in credits)
        genres = list(dict.fromkeys(f.genres))
        if set(genres) != old_genres.get(f.id, set()):
            if f.id in old_genres:
                genre_titles.append(f.id)
            genre_rows.extend((g, f.id) for g in genres)

        name = f.title or f"Untitled {f.id}"
        base = slugify(name)
        values = (
            f.id, f.imdb_id, name, f"{base}-{f.id}" if base else str(f.id), f.year, f.runtime,
            f.released, json.dumps(genres), ", ".join(f.languages), ", ".join(f.countries),
            awards, f.oscars,
        )  # fmt: skip
        prev = old_titles.get(f.id)
        posterless = prev is None or prev["poster_asset"] is None
        if posterless:
            need_poster.append((f.id, name, f.year))
        if posterless or tuple(prev[c] for c in _TITLE_COLS) != values:
            title_rows.append((*values, placeholder_id(f.id), now))
            if prev is not None:  # people's records list their titles by year
                touched.update(p for _, _, p in credits)

    placeholders = ensure_placeholders(tx, need_poster)
    _insert(tx, "people", ("id", "name", "slug"), ("bigint", "text", "text"), new_people)
    _insert(tx, "titles", (*_TITLE_COLS, "poster_asset", "updated_at"), _TITLE_TYPES, title_rows,
            _UPSERT_TITLE)  # fmt: skip
    _delete_titles(tx, "title_people", credit_titles)
    _insert(tx, "title_people", ("title_id", "role", "position", "person_id"),
            ("bigint", "text", "int", "bigint"), credit_rows)  # fmt: skip
    _delete_titles(tx, "title_genres", genre_titles)
    _insert(tx, "title_genres", ("genre", "title_id"), ("text", "bigint"), genre_rows)

    outbox.enqueue(tx, "titles", f"import-{ids[0]}", payload={"ids": ids}, now=now)
    touched.update(p for p, _, _ in new_people)
    if touched:
        outbox.enqueue(tx, "people", f"import-{ids[0]}", payload={"ids": sorted(touched)}, now=now)
    return len(new_people), placeholders


def import_films(
    store: WriteStore,
    *,
    progress: Callable[[int, int], None] | None = None,
    limit: int | None = None,
    batch: int = 2000,
) -> FilmImport:
    """Import the films of ``bokeh_sampledata`` (the first ``limit`` by id, or all 17,472)
    into ``store``; see the module's contracts. ``progress(done, total)`` is called after
    each committed batch.

    Raises :class:`~nearstate.errors.InputError` for ``batch < 1`` or ``limit < 0``,
    :class:`~nearstate.errors.DatasetError` if the source is missing, and
    :class:`~nearstate.content.db.StoreError` if the store fails (the batches committed
    before stay committed; run the import again to finish)."""
    if batch < 1:
        raise InputError(f"must be >= 1, got {batch}", field="batch")
    if limit is not None and limit < 0:
        raise InputError(f"must be >= 0, got {limit}", field="limit")
    start = time.perf_counter()
    films = _read_films(limit)
    people = _People(store)
    total, made_people, made_placeholders, batches = len(films), 0, 0, 0
    for lo in range(0, total, batch):
        chunk = films[lo : lo + batch]
        with store.transaction() as tx:
            p, ph = _import_batch(tx, chunk, people)
        made_people += p
        made_placeholders += ph
        batches += 1
        if progress:
            progress(lo + len(chunk), total)
    return FilmImport(
        titles=total,
        people=made_people,
        placeholders=made_placeholders,
        seconds=time.perf_counter() - start,
        batches=batches,
    )


__all__ = ["SLUG_MAX", "FilmImport", "import_films", "slugify"]
