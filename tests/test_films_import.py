"""The real films (bokeh_sampledata) imported into the write store, on SQLite and PostgreSQL:
titles, people deduped by name with stable ids, credits, genres, placeholder posters,
outbox events, idempotent re-import."""

from __future__ import annotations

import io
import json
import re
import sqlite3
import time
from collections import Counter

import pytest
from PIL import Image

from nearstate.bench.datasets import films_path
from nearstate.content.db import open_store
from nearstate.content.films import SLUG_MAX, FilmImport, import_films, slugify
from nearstate.content.media import MediaConfig, open_asset, placeholder_svg, store_upload
from nearstate.errors import InputError


def source(sql: str, params: tuple = ()) -> list[tuple]:
    """Rows straight from the bokeh database, parsed here independently of the importer."""
    con = sqlite3.connect(films_path().as_uri() + "?mode=ro", uri=True)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def names(text: str | None) -> list[str]:
    """The people a credit list names: "Davis, Jr." is one person, "(screenplay)" a note,
    and a name credited twice in one list counts once."""
    out: list[str] = []
    for n in (text or "").split(", "):
        n = re.sub(r"\s*\([^)]*\)$", "", n).strip()
        if n in ("Jr.", "Sr.", "Jr", "Sr", "II", "III", "IV") and out:
            out[-1] += ", " + n
        elif n and n not in out:
            out.append(n)
    return out


def test_credit_names_are_people() -> None:
    from nearstate.content.films import _names

    assert _names(["Sammy Davis", "Jr.", "Ann Roth (screenplay)", "Ann Roth (story)"]) == [
        "Sammy Davis, Jr.",
        "Ann Roth",
    ]
    assert _names(["Jr."]) == ["Jr."]  # nothing to join it to


def first_films(n: int) -> list[tuple]:
    return source(
        'SELECT ID, Title, Director, Writer, "Cast", Genre FROM omdb ORDER BY ID LIMIT ?', (n,)
    )


def count(store, table: str) -> int:
    return int(store.read_one(f"SELECT COUNT(*) AS n FROM {table}")["n"])


def counts(store) -> dict[str, int]:
    return {
        t: count(store, t)
        for t in ("titles", "people", "title_people", "title_genres", "assets", "outbox")
    }


def events(store, kind: str) -> list[list[int]]:
    rows = store.read("SELECT subject, payload FROM outbox WHERE kind = ? ORDER BY id", (kind,))
    # a subject per batch (import-<first title id>), so workers take batches in parallel
    ids = [json.loads(r["payload"])["ids"] for r in rows]
    if kind == "titles":
        assert [r["subject"] for r in rows] == [f"import-{b[0]}" for b in ids]
    assert all(r["subject"].startswith("import-") for r in rows)
    return [json.loads(r["payload"])["ids"] for r in rows]


def credits(store, title_id: int, role: str) -> list[str]:
    rows = store.read(
        "SELECT p.name FROM title_people tp JOIN people p ON p.id = tp.person_id"
        " WHERE tp.title_id = ? AND tp.role = ? ORDER BY tp.position",
        (title_id, role),
    )
    return [r["name"] for r in rows]


# --- slugify --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "slug"),
    [
        ("Agnès Varda", "agnes-varda"),
        ("  Tchéky   KARYO ", "tcheky-karyo"),
        ("Łódź & Straße: Ørsted, Æther", "lodz-strasse-orsted-aether"),
        ("E.T. the Extra-Terrestrial", "e-t-the-extra-terrestrial"),
        ("8½", "8-1-2"),
        ("Don't_Look__Up!!", "don-t-look-up"),
        ("東京物語", ""),  # no Latin form: the caller falls back to an id
        ("!!! ???", ""),
        ("", ""),
    ],
)
def test_slugify(text, slug):
    assert slugify(text) == slug


def test_slugify_cuts_long_text_at_a_word_boundary():
    s = slugify("word " * 40)
    assert len(s) <= SLUG_MAX and s.endswith("word") and not s.endswith("-")
    assert slugify("x" * 200) == "x" * SLUG_MAX


# --- import ---------------------------------------------------------------------------------


def test_a_limited_import_writes_titles_people_credits_genres_and_posters(write_store):
    calls: list[tuple[int, int]] = []
    got = import_films(
        write_store, limit=300, batch=120, progress=lambda d, t: calls.append((d, t))
    )
    assert isinstance(got, FilmImport)
    films = first_films(300)
    people = list(dict.fromkeys(n for f in films for col in f[2:5] for n in names(col)))
    assert (got.titles, got.people, got.placeholders, got.batches) == (300, len(people), 300, 3)
    assert got.seconds > 0
    assert calls == [(120, 300), (240, 300), (300, 300)]
    c = counts(write_store)
    assert c["titles"] == 300 and c["people"] == len(people) and c["assets"] == 300
    assert c["title_people"] == sum(len(names(col)) for f in films for col in f[2:5])
    assert c["title_genres"] == sum(len(set(names(f[5]))) for f in films)
    # ids: 1, 2, ... in order of first appearance (directors, writers, cast; films by id)
    by_id = {r["id"]: r["name"] for r in write_store.read("SELECT id, name FROM people")}
    assert [by_id[i] for i in range(1, len(people) + 1)] == people
    rows = write_store.read("SELECT id, poster_asset FROM titles")
    assert {r["poster_asset"] for r in rows} == {f"ph-{r['id']}" for r in rows}
    kinds = write_store.read("SELECT DISTINCT kind, content_type FROM assets")
    assert kinds == [{"kind": "placeholder", "content_type": "image/svg+xml"}]


def test_a_known_film_is_imported_as_the_source_says(write_store, tmp_path):
    import_films(write_store, limit=5)
    t = write_store.read_one("SELECT * FROM titles WHERE id = 593")
    assert t is not None
    assert (t["imdb_id"], t["name"], t["slug"], t["year"]) == (
        "tt1741542",
        "A Gang Story",
        "a-gang-story-593",
        2011,
    )
    assert (t["runtime"], t["released"], t["language"], t["country"]) == (
        103,
        "2011-11-10",
        "French",
        "Belgium, France",
    )
    assert json.loads(t["genres"]) == ["Drama", "Crime"]
    assert (t["awards"], t["oscars"], t["poster_asset"]) == ("", 0, "ph-593")
    genres = write_store.read("SELECT genre FROM title_genres WHERE title_id = 593 ORDER BY genre")
    assert [g["genre"] for g in genres] == ["Crime", "Drama"]
    assert credits(write_store, 593, "director") == ["Olivier Marchal"]
    assert credits(write_store, 593, "writer") == ["Edgar Marie", "Olivier Marchal"]
    cast = credits(write_store, 593, "cast")
    assert len(cast) == 19
    assert cast[:2] == ["Christophe Kourotchkine", "Daniel Duval"]
    assert cast[-1] == "Étienne Chicot"
    # one person directs and writes it: the same id in both roles
    pids = write_store.read(
        "SELECT DISTINCT tp.person_id FROM title_people tp JOIN people p ON p.id = tp.person_id"
        " WHERE p.name = 'Olivier Marchal'"
    )
    assert len(pids) == 1
    who = write_store.read_one("SELECT slug FROM people WHERE name = ?", ("Étienne Chicot",))
    assert who == {"slug": "etienne-chicot"}
    # the generated poster of the title draws its name and year
    body, ctype = open_asset(write_store, MediaConfig(tmp_path), "ph-593", "medium")
    assert ctype == "image/svg+xml" and body == placeholder_svg("A Gang Story", 2011, 593)


def test_people_appearing_in_several_films_are_one_person(write_store):
    import_films(write_store, limit=2000, batch=700)
    by_name = Counter(
        n for f in first_films(2000) for n in {n for col in f[2:5] for n in names(col)}
    )
    name, films = next((n, k) for n, k in by_name.most_common() if n != "Jr.")
    assert films >= 5
    rows = write_store.read(
        "SELECT p.id, COUNT(DISTINCT tp.title_id) AS films FROM people p"
        " JOIN title_people tp ON tp.person_id = p.id WHERE p.name = ? GROUP BY p.id",
        (name,),
    )
    assert rows == [{"id": rows[0]["id"], "films": films}]
    dupes = write_store.read("SELECT name FROM people GROUP BY name HAVING COUNT(*) > 1")
    assert dupes == []


def test_existing_people_keep_their_ids_and_new_ones_follow_the_maximum(write_store):
    first = first_films(1)[0]
    director = names(first[2])[0]
    with write_store.transaction() as tx:
        tx.execute(
            "INSERT INTO people (id, name, slug, staff, bio) VALUES (?, ?, 'ondi', 1, 'x')",
            (500, director),
        )
        tx.execute("INSERT INTO people (id, name, slug) VALUES (7, 'Staff Writer', 'staff')")
    got = import_films(write_store, limit=3)
    row = write_store.read_one(
        "SELECT id, slug, staff, bio FROM people WHERE name = ?", (director,)
    )
    assert row == {"id": 500, "slug": "ondi", "staff": 1, "bio": "x"}  # editors' edits kept
    new = write_store.read("SELECT id FROM people WHERE id NOT IN (7, 500) ORDER BY id")
    assert [r["id"] for r in new] == list(range(501, 501 + got.people))


def test_reimport_is_idempotent_and_keeps_editors_posters(write_store, tmp_path):
    import_films(write_store, limit=250, batch=100)
    before = counts(write_store)
    ids = [r["id"] for r in write_store.read("SELECT id FROM titles ORDER BY id")]
    people = write_store.read("SELECT id, name, slug FROM people ORDER BY id")
    # an editor gives one title a real poster
    buf = io.BytesIO()
    Image.new("RGB", (60, 90), (1, 2, 3)).save(buf, "PNG")
    poster = store_upload(
        write_store, MediaConfig(tmp_path / "m"), buf.getvalue(), filename="p.png"
    )
    with write_store.transaction() as tx:
        tx.execute("UPDATE titles SET poster_asset = ? WHERE id = ?", (poster["id"], ids[3]))
    got = import_films(write_store, limit=250, batch=100)
    assert (got.titles, got.people, got.placeholders, got.batches) == (250, 0, 0, 3)
    after = counts(write_store)
    assert after == {**before, "assets": before["assets"] + 1, "outbox": after["outbox"]}
    assert write_store.read("SELECT id, name, slug FROM people ORDER BY id") == people
    assert write_store.read_one("SELECT poster_asset FROM titles WHERE id = ?", (ids[3],)) == {
        "poster_asset": poster["id"]
    }
    # the second run announces every title again, and no people: none changed
    title_events = events(write_store, "titles")
    assert len(title_events) == 6
    assert sorted(i for ev in title_events[3:] for i in ev) == ids
    assert len(events(write_store, "people")) == 3  # only the first run's


def test_reimport_repairs_changed_credits_and_announces_those_people(write_store):
    import_films(write_store, limit=20)
    cast = credits(write_store, 593, "cast")
    with write_store.transaction() as tx:
        tx.execute("DELETE FROM title_people WHERE title_id = 593 AND role = 'cast'")
        tx.execute("DELETE FROM title_genres WHERE title_id = 593")
        tx.execute("UPDATE titles SET name = 'Wrong', poster_asset = NULL WHERE id = 593")
        tx.execute("DELETE FROM outbox")
    import_films(write_store, limit=20)
    assert credits(write_store, 593, "cast") == cast
    t = write_store.read_one("SELECT name, poster_asset FROM titles WHERE id = 593")
    assert t == {"name": "A Gang Story", "poster_asset": "ph-593"}
    assert count(write_store, "title_genres") > 0
    got = write_store.read("SELECT genre FROM title_genres WHERE title_id = 593")
    assert sorted(g["genre"] for g in got) == ["Crime", "Drama"]
    [announced] = events(write_store, "people")
    cast_ids = {
        r["id"]
        for r in write_store.read(
            "SELECT p.id FROM people p JOIN title_people tp ON tp.person_id = p.id"
            " WHERE tp.title_id = 593"
        )
    }
    assert set(announced) == cast_ids


def test_every_title_and_person_is_announced_in_the_batch_that_wrote_it(write_store):
    got = import_films(write_store, limit=500, batch=150)
    title_events = events(write_store, "titles")
    assert [len(e) for e in title_events] == [150, 150, 150, 50]
    flat = [i for e in title_events for i in e]
    assert len(flat) == len(set(flat)) == 500
    assert sorted(flat) == [r["id"] for r in write_store.read("SELECT id FROM titles ORDER BY id")]
    people_events = events(write_store, "people")
    assert len(people_events) == got.batches
    announced = {i for e in people_events for i in e}
    assert announced == {r["id"] for r in write_store.read("SELECT id FROM people")}
    rows = write_store.read("SELECT status, revision, created_at, available_at FROM outbox")
    assert all(r["status"] == "pending" and r["revision"] is None for r in rows)
    assert all(r["created_at"] == r["available_at"] > time.time() - 600 for r in rows)


def test_limit_zero_and_bad_arguments(write_store):
    got = import_films(write_store, limit=0)
    assert (got.titles, got.people, got.placeholders, got.batches) == (0, 0, 0, 0)
    assert counts(write_store)["outbox"] == 0
    with pytest.raises(InputError, match="'batch': must be >= 1"):
        import_films(write_store, batch=0)
    with pytest.raises(InputError, match="'limit'"):
        import_films(write_store, limit=-1)


def test_a_failing_batch_keeps_the_batches_before_it(write_store, monkeypatch):
    from nearstate.content import films

    real, calls = films._import_batch, []

    def flaky(tx, chunk, people):
        calls.append(len(chunk))
        out = real(tx, chunk, people)
        if len(calls) == 2:  # after writing the batch, before its commit
            raise RuntimeError("crash in batch 2")
        return out

    monkeypatch.setattr(films, "_import_batch", flaky)
    with pytest.raises(RuntimeError, match="batch 2"):
        import_films(write_store, limit=90, batch=40)
    assert count(write_store, "titles") == 40
    assert [len(e) for e in events(write_store, "titles")] == [40]
    monkeypatch.setattr(films, "_import_batch", real)
    got = import_films(write_store, limit=90, batch=40)
    assert got.titles == 90 and count(write_store, "titles") == 90
    ids = [r["id"] for r in write_store.read("SELECT id FROM people ORDER BY id")]
    assert ids == list(range(1, len(ids) + 1))  # no gaps from the failed batch


def test_the_whole_catalogue_imports_on_sqlite(tmp_path):
    # how fast is `nearstate bench cms`'s business (docs/benchmarks.md, issue 6), not a
    # wall-clock bound here: a loaded CI host took 19.6 s where an idle one takes 5
    store = open_store(f"sqlite:///{tmp_path / 'cms.db'}")
    try:
        total = source("SELECT COUNT(*) FROM omdb")[0][0]
        got = import_films(store)
        assert got.titles == total == count(store, "titles") == 17_472
        assert got.placeholders == count(store, "assets") == total
        assert got.people == count(store, "people")
        all_names = {
            n
            for r in source('SELECT Director, Writer, "Cast" FROM omdb')
            for col in r
            for n in names(col)
        }
        assert got.people == len(all_names)
        cleo = source("SELECT ID, Awards, Oscars FROM omdb WHERE Title = 'Cleopatra'")[0]
        row = store.read_one("SELECT awards, oscars FROM titles WHERE id = ?", (cleo[0],))
        assert row == {"awards": cleo[1], "oscars": cleo[2]}
        flat = [i for e in events(store, "titles") for i in e]
        assert len(flat) == len(set(flat)) == total
        again = import_films(store)
        assert (again.people, again.placeholders) == (0, 0)
        assert count(store, "people") == got.people and count(store, "titles") == total
    finally:
        store.close()
