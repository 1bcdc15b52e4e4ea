"""Site search (nearstate.content.search): words, prefixes, AND, ranking, filters, bad
input, and the index kept up to date through a real consumer; a property test against a
brute-force scan of the documents."""

from __future__ import annotations

import datetime as dt
import itertools
import re
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nearstate
from nearstate.content import search
from nearstate.content.records import SCHEMA
from nearstate.content.search import Hit, SearchIndex
from nearstate.errors import InputError
from nearstate.layered import Changes

WHEN = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
LONG = 10.0


def card(pid: int, name: str) -> dict[str, Any]:
    return {"id": pid, "slug": f"p-{pid}", "name": name}


def story(sid: int, title: str, *, dek: str = "", tags: tuple[str, ...] = (),
          text: str = "") -> dict[str, Any]:  # fmt: skip
    return {
        "id": sid, "slug": f"s-{sid}", "title": title, "dek": dek, "excerpt": "",
        "reading_minutes": 1, "body": [], "hero": None, "card": None, "tags": list(tags),
        "genres": [], "related": [], "authors": [], "revision": 1, "updated_at": WHEN,
        "published_at": WHEN, "search_text": text,
    }  # fmt: skip


Names = tuple[str, ...]


def title(tid: int, name: str, year: int | None = None, *, genres: Names = (),
          directors: Names = (), cast: Names = ()) -> dict[str, Any]:  # fmt: skip
    ppl = itertools.count(tid * 100)
    return {
        "id": tid, "slug": f"t-{tid}", "name": name, "year": year, "runtime": None,
        "genres": list(genres), "directors": [card(next(ppl), n) for n in directors],
        "writers": [card(next(ppl), "Writer Nobody")], "cast": [card(next(ppl), n) for n in cast],
        "language": "", "country": "", "awards": "", "poster": None,
    }  # fmt: skip


def person(pid: int, name: str) -> dict[str, Any]:
    return {"id": pid, "slug": f"p-{pid}", "name": name, "titles": []}


_files = itertools.count()


def make_state(tmp: Path, records: dict[str, list[dict[str, Any]]], version: int = 1) -> Any:
    ws = nearstate.WriteState(SCHEMA)
    for type_name, recs in records.items():
        for r in recs:
            ws.add(type_name, r)
    path = tmp / f"s{next(_files)}.blob"
    ws.write_snapshot(path, version=version)
    return nearstate.load(path)


def found(hits: list[Hit]) -> list[tuple[str, int]]:
    return [(h.type, h.key) for h in hits]


def eventually(check: Callable[[], Any], what: str, timeout: float = LONG) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what}")
        time.sleep(0.005)


@pytest.fixture
def films(tmp_path: Path) -> SearchIndex:
    return SearchIndex.build(
        make_state(
            tmp_path,
            {
                "Story": [
                    story(
                        1,
                        "Inside The Godfather",
                        dek="A look back",
                        tags=("Interviews",),
                        text="Coppola talks about the Godfather and Cléo",
                    ),
                    story(2, "Summer reading", text="the godfather sits on every shelf"),
                    story(3, "Paris", tags=("Godfather",)),
                    story(4, "Sequels", dek="On the godfather part two"),
                ],
                "Title": [
                    title(
                        10,
                        "The Godfather",
                        1972,
                        genres=("Crime", "Drama"),
                        directors=("Francis Ford Coppola",),
                        cast=("Al Pacino",),
                    ),
                    title(11, "3 Godfathers", 1948, genres=("Western",)),
                    title(12, "Amélie", 2001, genres=("Comedy",)),
                    title(13, "Cléo from 5 to 7", 1962, directors=("Agnès Varda",)),
                    title(14, "Playtime"),
                ],
                "Person": [
                    person(20, "Agnès Varda"),
                    person(21, "Al Pacino"),
                    person(22, "ÅSA Ödegaard"),
                ],
            },
        )
    )


# --- words ---------------------------------------------------------------------------------


def test_accents_and_case_are_ignored(films: SearchIndex) -> None:
    for q in ("amelie", "AMÉLIE", "Amélie", "ame\u0301lie"):
        assert found(films.search(q)) == [("Title", 12)], q
    assert found(films.search("cleo 5")) == [("Title", 13)]
    assert found(films.search("agnes")) == [("Person", 20), ("Title", 13)]
    assert found(films.search("asa odegaard")) == [("Person", 22)]
    assert found(films.search("cléo", types=["Story"])) == [("Story", 1)]  # in search text


def test_hits_carry_type_key_label_slug_and_score(films: SearchIndex) -> None:
    (hit,) = films.search("amelie")
    assert hit == Hit("Title", 12, "Amélie (2001)", "t-12", 3.0 + 1.0)  # name + whole label
    assert films.search("playtime")[0].label == "Playtime"  # no year, no " (year)"
    assert films.search("pacino", types=["Person"])[0] == Hit("Person", 21, "Al Pacino",
                                                              "p-21", 3.0)  # fmt: skip


def test_prefixes_and_exact_beats_prefix(films: SearchIndex) -> None:
    assert ("Title", 10) in found(films.search("godf"))
    assert ("Title", 11) in found(films.search("godf"))  # "godfathers"
    hits = films.search("godfather", types=["Title"])
    assert found(hits) == [("Title", 10), ("Title", 11)]
    assert [h.score for h in hits] == [3.0, 1.5]  # exact vs prefix of "godfathers"
    assert films.search("godfathers", types=["Title"])[0].score == 3.0
    assert films.search("godfathersx") == []  # longer than any word: no match


def test_every_query_word_must_match(films: SearchIndex) -> None:
    assert found(films.search("godfather pacino")) == [("Title", 10)]
    assert found(films.search("godfather coppola")) == [("Story", 1), ("Title", 10)]
    assert films.search("godfather amelie") == []
    assert films.search("godfather zzz") == []


def test_ranking_by_field_weights(films: SearchIndex) -> None:
    hits = films.search("godfather", types=["Story"])
    # title 3 > tag 2 > dek 1.5 > search text 1
    assert found(hits) == [("Story", 1), ("Story", 3), ("Story", 4), ("Story", 2)]
    assert [h.score for h in hits] == [3.0, 2.0, 1.5, 1.0]
    # a name (3) beats a credit (1); the whole label earns the boost
    assert found(films.search("pacino")) == [("Person", 21), ("Title", 10)]
    assert films.search("the godfather", types=["Title"])[0].score == 3.0 + 3.0 + 1.0


def test_ties_break_by_type_then_label_then_key(tmp_path: Path) -> None:
    idx = SearchIndex.build(
        make_state(
            tmp_path,
            {
                "Story": [story(2, "zeta word"), story(1, "Zeta word")],
                "Title": [title(5, "alpha word"), title(4, "Beta word")],
                "Person": [person(9, "word a"), person(8, "Word a")],
            },
        )
    )
    hits = idx.search("word")
    assert {h.score for h in hits} == {3.0}
    assert found(hits) == [
        ("Story", 1), ("Story", 2), ("Title", 5), ("Title", 4), ("Person", 8), ("Person", 9),
    ]  # fmt: skip
    assert found(idx.search("word", limit=3)) == found(hits)[:3]


def test_types_filter(films: SearchIndex) -> None:
    assert {h.type for h in films.search("godf", types=["Title", "Person"])} == {"Title"}
    assert found(films.search("agnes", types="Person")) == [("Person", 20)]  # one name
    assert films.search("agnes", types=[]) == []
    with pytest.raises(InputError, match="'Movie'"):
        films.search("agnes", types=["Title", "Movie"])
    with pytest.raises(InputError, match="'DraftStory'"):
        films.search("", types=["DraftStory"])  # checked even for an empty query


@pytest.mark.parametrize(
    "query", ["", "   ", "!!!", "—–-…", "\u0301\u0301", "_", "\x00\n\t", "🎬🎬"]
)
def test_queries_without_words_find_nothing(films: SearchIndex, query: str) -> None:
    assert films.search(query) == []


def test_bad_input_is_never_an_error_nor_slow(films: SearchIndex) -> None:
    t0 = time.perf_counter()
    assert films.search("x" * 1_000_000) == []
    assert films.search("godfather " * 100_000) != []  # the first 8 words are used
    assert films.search(" ,.;" * 250_000 + "godfather") == []  # past the characters read
    assert films.search("é" * 500_000 + " a") == []
    assert films.search("godf", limit=0) == [] and films.search("godf", limit=-3) == []
    assert films.search(None) == [] and films.search(b"godfather") == []  # type: ignore[arg-type]
    assert found(films.search("godfather", limit=1)) == [("Story", 1)]
    assert time.perf_counter() - t0 < 2.0
    # nine words: the ninth is not used
    assert films.search("godfather " * 8 + "nothingmatchesthis") != []


def test_long_words_are_cut_to_forty_characters(tmp_path: Path) -> None:
    long = "supercalifragilisticexpialidocious" * 2  # 68 letters
    idx = SearchIndex.build(make_state(tmp_path, {"Person": [person(1, f"Ann {long}")]}))
    assert found(idx.search(long)) == [("Person", 1)]
    assert idx.search(long)[0].score == 3.0  # exact: both cut to the same 40
    assert found(idx.search(long[:40] + "zzz")) == [("Person", 1)]
    assert idx.search(long[:39])[0].score == 1.5


def test_len_words_and_stats(films: SearchIndex) -> None:
    assert len(films) == 4 + 5 + 3
    assert films.words > 20
    s = films.stats()
    assert s["documents"] == 12 and s["words"] == films.words and s["version"] == 1
    assert len(SearchIndex()) == 0 and SearchIndex().search("a") == []


# --- updates ---------------------------------------------------------------------------------


def test_update_rereads_changed_keys(tmp_path: Path) -> None:
    a = make_state(tmp_path, {"Story": [story(1, "Old words"), story(2, "Kept")],
                              "Person": [person(7, "Gone Person")]})  # fmt: skip
    idx = SearchIndex.build(a)
    b = make_state(tmp_path, {"Story": [story(1, "New words"), story(2, "Kept"),
                                        story(3, "Added")]}, version=2)  # fmt: skip
    idx.update(b, {"Story": Changes(added=[3], modified=[1]), "Person": Changes(removed=[7]),
                   "Layout": Changes(added=["home"])})  # fmt: skip
    assert idx.search("old") == [] and idx.search("gone") == []
    assert found(idx.search("new")) == [("Story", 1)]
    assert found(idx.search("added")) == [("Story", 3)]
    assert found(idx.search("words")) == [("Story", 1)]
    assert len(idx) == 3 and idx.version == 2
    # a key listed but unchanged, or absent everywhere, is harmless; so is doing it twice
    idx.update(b, {"Story": Changes(modified=[2, 99]), "Title": Changes(removed=[5])})
    idx.update(b, {"Story": Changes(added=[3], modified=[1])})
    assert len(idx) == 3 and found(idx.search("kept")) == [("Story", 2)]
    assert idx.words == SearchIndex.build(b).words  # "old", "gone", "person" left


def test_update_with_no_changes_rebuilds(tmp_path: Path) -> None:
    idx = SearchIndex.build(make_state(tmp_path, {"Story": [story(1, "Alpha")]}))
    b = make_state(tmp_path, {"Title": [title(2, "Beta")]}, version=2)  # Story type empty
    idx.update(b, None)
    assert idx.search("alpha") == [] and found(idx.search("beta")) == [("Title", 2)]
    assert len(idx) == 1


def test_follow_a_consumer_through_writes_and_a_new_version(tmp_path: Path) -> None:
    ds = nearstate.open(tmp_path / "ds")
    w = ds.writer(schema=SCHEMA)
    c = ds.consumer()
    c.start(wait=False)
    try:
        idx = SearchIndex().follow(c)  # nothing held yet: an empty index
        assert len(idx) == 0

        def shows(query: str, expected: list[tuple[str, int]]) -> Callable[[], bool]:
            return lambda: found(idx.search(query)) == expected

        w.upsert("Story", story(1, "Moonlight review", tags=("Reviews",)))
        w.upsert("Title", title(2, "Moonlight", 2016, cast=("Mahershala Ali",)))
        t = w.upsert("Person", person(3, "Mahershala Ali"))
        eventually(lambda: (idx.position or 0) >= t, "the writes indexed")
        assert found(idx.search("moonlight")) == [("Title", 2), ("Story", 1)]
        assert found(idx.search("mahershala")) == [("Person", 3), ("Title", 2)]

        # renamed: found by the new word, no longer by the old one
        w.upsert("Story", story(1, "Sunlight review", tags=("Reviews",)))
        eventually(shows("sunlight", [("Story", 1)]), "the rename indexed")
        assert found(idx.search("moonlight")) == [("Title", 2)]
        # deleted
        w.delete("Person", 3)
        eventually(shows("mahershala", [("Title", 2)]), "the delete indexed")
        assert len(idx) == 2

        # a version loaded in full (changes=None) is indexed in full, writes go on after it
        events: list[Any] = []
        c.add_listener(events.append)
        ds.compact()
        eventually(lambda: c.version == 1 and events, "the version loaded")
        assert any(e.changes is None for e in events)
        eventually(shows("sunlight", [("Story", 1)]), "still indexed")
        w.upsert("Person", person(4, "Barry Jenkins"))
        eventually(shows("jenkins", [("Person", 4)]), "a write after the version")
        assert len(idx) == 3

        # a second index following a consumer that holds a state builds from it at once
        other = SearchIndex().follow(c)
        assert found(other.search("jenkins")) == [("Person", 4)] and len(other) == 3
        other.unfollow()
        w.delete("Person", 4)
        eventually(shows("jenkins", []), "the first index follows on")
        assert found(other.search("jenkins")) == [("Person", 4)]  # stopped following
    finally:
        c.stop()


def test_a_search_never_sees_half_an_update(tmp_path: Path) -> None:
    """While updates flip stories between two titles, every hit's label holds the words
    the hit was found by (a search sees a document whole, one version of it)."""
    names = ("red apple", "blue berry")
    states = [
        make_state(tmp_path, {"Story": [story(i, names[(i + k) % 2]) for i in range(50)]}, k)
        for k in (1, 2)
    ]  # fmt: skip
    idx = SearchIndex.build(states[0])
    changes = {"Story": Changes(modified=list(range(50)))}
    stop = threading.Event()
    bad: list[str] = []

    def searcher() -> None:
        while not stop.is_set():
            for q in ("red", "blue", "apple"):
                hits = idx.search(q, limit=100)
                bad.extend(h.label for h in hits if q not in h.label)
                if len(hits) != 25:
                    bad.append(f"{q}: {len(hits)} hits")

    threads = [threading.Thread(target=searcher) for _ in range(2)]
    for th in threads:
        th.start()
    for k in range(60):
        idx.update(states[k % 2], changes)
    stop.set()
    for th in threads:
        th.join()
    assert bad == []


# --- property: the same results as a scan of every document ----------------------------------


def fold(text: str) -> list[str]:
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).casefold()
    return [w[:40] for w in re.findall(r"[^\W_]+", text)]


def brute(records: dict[str, list[dict[str, Any]]], query: str, limit: int,
          types: list[str] | None) -> list[tuple[str, int, str, str, float]]:  # fmt: skip
    qwords = fold(query)[:8]
    terms = list(dict.fromkeys(qwords))
    out = []
    for ti, type_name in enumerate(SearchIndex.TYPES):
        if types is not None and type_name not in types:
            continue
        for r in records.get(type_name, []):
            if type_name == "Story":
                label = base = r["title"]
                fields = [(3.0, r["title"]), (2.0, " ".join(r["tags"])), (1.5, r["dek"]),
                          (1.0, r["search_text"])]  # fmt: skip
            elif type_name == "Title":
                base = r["name"]
                label = f"{base} ({r['year']})" if r["year"] else base
                names = " ".join(p["name"] for p in r["directors"] + r["cast"])
                fields = [(3.0, base), (1.0, " ".join(r["genres"])), (1.0, names)]
            else:
                label = base = r["name"]
                fields = [(3.0, base)]
            doc = [(w, wt) for wt, text in fields for w in fold(text)]
            score = 0.0
            for q in terms:
                best = max([wt if w == q else wt * 0.5 for w, wt in doc if w.startswith(q)],
                           default=0.0)  # fmt: skip
                if not best:
                    break
                score += best
            else:
                if terms:
                    score += 1.0 if qwords == fold(base) else 0.0
                    out.append((-score, ti, label.casefold(), label, r["id"], r["slug"]))
    out.sort()
    return [(SearchIndex.TYPES[t], k, lab, slug, -s) for s, t, _, lab, k, slug in out[:limit]]


WORDS = ["ab", "abc", "Abd", "b", "ba", "bé", "BE", "cé", "ce", "Éa", "ea", "z9", "9", "99"]
text = st.lists(st.sampled_from(WORDS), max_size=4).map(" ".join)


@st.composite
def corpora(draw: st.DrawFn) -> dict[str, list[dict[str, Any]]]:
    ids = st.integers(1, 12)
    stories = {
        i: story(i, draw(text), dek=draw(text), tags=tuple(draw(st.lists(text, max_size=2))),
                 text=draw(text))
        for i in draw(st.sets(ids, max_size=6))
    }  # fmt: skip
    titles = {
        i: title(i, draw(text), draw(st.sampled_from([None, 1999])),
                 genres=tuple(draw(st.lists(text, max_size=2))),
                 directors=tuple(draw(st.lists(text, max_size=1))),
                 cast=tuple(draw(st.lists(text, max_size=2))))
        for i in draw(st.sets(ids, max_size=6))
    }  # fmt: skip
    people = {i: person(i, draw(text)) for i in draw(st.sets(ids, max_size=6))}
    return {"Story": list(stories.values()), "Title": list(titles.values()),
            "Person": list(people.values())}  # fmt: skip


queries = st.lists(
    st.one_of(st.sampled_from(WORDS), st.sampled_from(WORDS).map(lambda w: w[:1])),
    min_size=1, max_size=3,
).flatmap(lambda ws: st.sampled_from([" ", "-", ", "]).map(lambda sep: sep.join(ws)))  # fmt: skip


@pytest.fixture(scope="module")
def blobs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield tmp_path_factory.mktemp("search-property")


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    before=corpora(),
    after=corpora(),
    qs=st.lists(queries, min_size=1, max_size=4),
    limit=st.integers(1, 8),
    types=st.one_of(st.none(), st.lists(st.sampled_from(SearchIndex.TYPES), unique=True)),
    few=st.sampled_from([0, 1000]),
)
def test_results_equal_a_scan_of_the_documents(
    blobs: Path, before: dict, after: dict, qs: list[str], limit: int, types: list[str] | None,
    few: int,
) -> None:  # fmt: skip
    """Built from a state, or updated into it from another, the index answers as a scan of
    every document does (and holds exactly the words a fresh build holds). ``few``: the
    candidates below which the other query words are looked up in the documents' own words
    (0: always by intersecting sets), so both ways are checked."""
    search._FEW, saved = few, search._FEW
    try:
        check_against_scan(blobs, before, after, qs, limit, types)
    finally:
        search._FEW = saved


def check_against_scan(
    blobs: Path, before: dict, after: dict, qs: list[str], limit: int, types: list[str] | None
) -> None:
    a, b = make_state(blobs, before), make_state(blobs, after, 2)
    built = SearchIndex.build(b)
    moved = SearchIndex.build(a)
    keys = {t: {r["id"] for r in before[t]} | {r["id"] for r in after[t]} for t in before}
    moved.update(b, {t: Changes(modified=sorted(k)) for t, k in keys.items()})
    assert len(moved) == len(built) == sum(map(len, after.values()))
    assert moved.words == built.words
    for q in qs:
        want = brute(after, q, limit, types)
        for idx in (built, moved):
            got = [(h.type, h.key, h.label, h.slug, h.score)
                   for h in idx.search(q, limit=limit, types=types)]  # fmt: skip
            assert got == want, q
