"""The host search index (nearstate.content.search_map) and its file (nearstate.hostfile):
results equal the in-process index's on the same state, overlay records included; the
file is built once, atomically, refused when damaged and built again."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nearstate
from nearstate import hostfile
from nearstate.content.records import SCHEMA
from nearstate.content.search import SearchIndex
from nearstate.content.search_map import HostSearchIndex
from nearstate.layered import Changes
from test_search import (
    corpora,
    eventually,
    found,
    make_state,
    person,
    queries,
    story,
    title,
)


def hits(idx: Any, q: str, limit: int = 20, types: Any = None) -> list[tuple]:
    return [(h.type, h.key, h.label, h.slug, h.score)
            for h in idx.search(q, limit=limit, types=types)]  # fmt: skip


FILMS = {
    "Story": [
        story(1, "Inside The Godfather", dek="A look back", tags=("Interviews",),
              text="Coppola talks about the Godfather and Cléo"),
        story(2, "Summer reading", text="the godfather sits on every shelf"),
        story(3, "Paris", tags=("Godfather",)),
    ],
    "Title": [
        title(10, "The Godfather", 1972, genres=("Crime", "Drama"),
              directors=("Francis Ford Coppola",), cast=("Al Pacino",)),
        title(11, "3 Godfathers", 1948, genres=("Western",)),
        title(12, "Amélie", 2001, genres=("Comedy",)),
    ],
    "Person": [person(20, "Al Pacino"), person(21, "Agnès Varda")],
}  # fmt: skip
QUERIES = ["godfather", "godf", "g", "go", "the godfather", "amelie", "al pacino", "pa",
           "coppola godfather", "zzz", "3", "crime drama", "varda", "a"]  # fmt: skip


def test_same_results_as_the_in_process_index(tmp_path: Path) -> None:
    state = make_state(tmp_path, FILMS)
    ref, idx = SearchIndex.build(state), HostSearchIndex.build(state, tmp_path / "cache")
    assert idx.base_how == "built" and len(idx) == len(ref) == 8
    for q in QUERIES:
        for limit in (1, 3, 20):
            for types in (None, ["Title"], ["Story", "Person"]):
                assert hits(idx, q, limit, types) == hits(ref, q, limit, types), (q, limit)
    assert hits(idx, "the godfather")[0][:2] == ("Title", 10)  # the label boost


def test_overlay_records_are_found_and_replaced_ones_hidden(tmp_path: Path) -> None:
    a = make_state(tmp_path, FILMS)
    films_b = {**FILMS, "Story": [story(1, "Moonlight review"), FILMS["Story"][1],
                                  story(4, "Godfather sequel")],
               "Person": [FILMS["Person"][0]]}  # fmt: skip
    b = make_state(tmp_path, films_b, version=2)
    idx = HostSearchIndex.build(a, tmp_path / "cache")
    idx.update(b, {"Story": Changes(added=[4], modified=[1], removed=[3]),
                   "Person": Changes(removed=[21])})  # fmt: skip
    ref = SearchIndex.build(b)
    assert idx.overlay_documents == 2  # stories 1 and 4: the rest is the mapped base
    for q in [*QUERIES, "moonlight", "sequel", "inside"]:
        assert hits(idx, q) == hits(ref, q), q
    assert found(idx.search("moonlight")) == [("Story", 1)]
    assert found(idx.search("inside")) == []  # story 1's old title: hidden in the base
    assert len(idx) == len(ref)


def test_a_consumers_layered_state_is_searched_whole(tmp_path: Path) -> None:
    """A state loaded whole is a snapshot plus Log records: the base is the snapshot's
    file, the records laid over it are in the worker's overlay."""
    ds = nearstate.open(tmp_path / "ds")
    w = ds.writer(schema=SCHEMA)
    for r in FILMS["Title"]:
        w.upsert("Title", r)
    w.upsert("Story", FILMS["Story"][0])
    ds.compact()
    c = ds.consumer()
    c.start(wait=True)
    try:
        t = w.upsert("Story", story(5, "Godfather trivia"))
        w.upsert("Title", {**FILMS["Title"][2], "name": "Amélie Poulain"})
        t = w.delete("Story", 1)
        c.wait_for(t, 10)
        state = c.state
        assert state.base is not state  # a layered state: snapshot + Log
        idx = HostSearchIndex.build(state, tmp_path / "cache")
        ref = SearchIndex.build(state)
        assert idx.overlay_documents == 2
        for q in [*QUERIES, "trivia", "poulain", "inside"]:
            assert hits(idx, q) == hits(ref, q), q
        # a second worker maps the same file instead of building it
        other = HostSearchIndex.build(state, tmp_path / "cache")
        assert other.base_how == "mapped" and hits(other, "god") == hits(ref, "god")
    finally:
        c.stop()


def test_follow_a_consumer(tmp_path: Path) -> None:
    ds = nearstate.open(tmp_path / "ds")
    w = ds.writer(schema=SCHEMA)
    c = ds.consumer()
    c.start(wait=False)
    try:
        idx = HostSearchIndex(tmp_path / "cache").follow(c)
        t = w.upsert("Story", story(1, "Moonlight review"))
        eventually(lambda: (idx.position or 0) >= t, "the write indexed")
        assert found(idx.search("moonlight")) == [("Story", 1)]
        ds.compact()
        eventually(lambda: c.version == 1 and idx.overlay_documents == 0, "the new base")
        assert found(idx.search("moon")) == [("Story", 1)]
        w.upsert("Story", story(1, "Sunlight review"))
        eventually(lambda: found(idx.search("sunlight")) == [("Story", 1)], "the rename")
        assert idx.search("moonlight") == []
    finally:
        idx.unfollow()
        c.stop()


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(
    before=corpora(),
    after=corpora(),
    qs=st.lists(queries, min_size=1, max_size=4),
    limit=st.integers(1, 8),
    types=st.one_of(st.none(), st.lists(st.sampled_from(SearchIndex.TYPES), unique=True)),
)
def test_property_equal_to_the_in_process_index(
    tmp_path_factory: pytest.TempPathFactory, before: dict, after: dict, qs: list[str],
    limit: int, types: list[str] | None,
) -> None:  # fmt: skip
    """Base from one state, overlay bringing it to another: the same hits (order, labels,
    slugs, scores) as an in-process index built from the second state."""
    tmp = tmp_path_factory.mktemp("prop")
    a, b = make_state(tmp, before), make_state(tmp, after, 2)
    idx = HostSearchIndex.build(a, tmp / "cache")
    keys = {t: {r["id"] for r in before[t]} | {r["id"] for r in after[t]} for t in before}
    idx.update(b, {t: Changes(modified=sorted(k)) for t, k in keys.items()})
    ref = SearchIndex.build(b)
    assert len(idx) == len(ref)
    for q in qs:
        assert hits(idx, q, limit, types) == hits(ref, q, limit, types), q


# --- the file ----------------------------------------------------------------------------


def arrays() -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    return {"a": np.arange(1000, dtype=np.int64), "b": np.arange(7, dtype=np.uint8)}, {"n": 1}


def test_built_once_then_mapped(tmp_path: Path) -> None:
    calls = []

    def build():
        calls.append(1)
        return arrays()

    first = hostfile.open_or_build(tmp_path, "k1", build)
    second = hostfile.open_or_build(tmp_path, "k1", build)
    assert (first.how, second.how, len(calls)) == ("built", "mapped", 1)
    assert second["a"].tolist() == list(range(1000)) and second.meta == {"n": 1}
    assert not second["a"].flags.writeable


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage", "other-key"])
def test_a_damaged_file_is_refused_and_rebuilt(tmp_path: Path, damage: str) -> None:
    hostfile.open_or_build(tmp_path, "k1", arrays)
    path = tmp_path / "k1.arrays"
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[-3] ^= 0xFF
    elif damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "garbage":
        data = bytearray(b"x" * 40)
    else:  # a sound file filed under the wrong name
        hostfile.open_or_build(tmp_path, "k2", arrays)
        data = bytearray((tmp_path / "k2.arrays").read_bytes())
    path.write_bytes(bytes(data))
    got = hostfile.open_or_build(tmp_path, "k1", arrays)
    assert got.how == "rebuilt" and got["a"].tolist() == list(range(1000))


def test_a_damaged_search_file_is_rebuilt_and_answers(tmp_path: Path) -> None:
    state = make_state(tmp_path, FILMS)
    HostSearchIndex.build(state, tmp_path / "cache")
    (f,) = (tmp_path / "cache").glob("*.arrays")
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x55
    f.write_bytes(bytes(data))
    idx = HostSearchIndex.build(state, tmp_path / "cache")
    assert idx.base_how == "rebuilt"
    assert hits(idx, "godfather") == hits(SearchIndex.build(state), "godfather")


def _build_slowly(root: str, started: Any) -> None:
    def build():
        started.set()
        time.sleep(60)
        return arrays()

    hostfile.open_or_build(Path(root), "k1", build)


def test_a_builder_killed_midway_leaves_no_file_used(tmp_path: Path) -> None:
    """A process killed while building (holding the lock, its temporary file begun)
    leaves nothing under the final name; the next process builds it whole."""
    ctx = multiprocessing.get_context("spawn")
    started = ctx.Event()
    p = ctx.Process(target=_build_slowly, args=(str(tmp_path), started))
    p.start()
    assert started.wait(60)
    (tmp_path / f"k1.arrays.{p.pid}.tmp").write_bytes(b"half a file")  # as if mid-write
    os.kill(p.pid, signal.SIGKILL)
    p.join(10)
    assert not (tmp_path / "k1.arrays").exists()
    got = hostfile.open_or_build(tmp_path, "k1", arrays)  # the lock went with the process
    assert got.how == "built" and got["b"].tolist() == list(range(7))
    assert list(tmp_path.glob("*.tmp")) == []


def test_concurrent_openers_build_once(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(3) as pool:
        hows = pool.starmap(_open, [(str(tmp_path),)] * 3)
    assert sorted(hows) == ["built", "mapped", "mapped"]


def _open(root: str) -> str:
    def build():
        time.sleep(0.5)
        return arrays()

    return hostfile.open_or_build(Path(root), "k1", build).how


def test_a_file_with_a_damaged_header_is_rebuilt(tmp_path: Path) -> None:
    (tmp_path / "k1.arrays").write_bytes(b"NSHOST01" + b"\xff" * 30)
    assert hostfile.open_or_build(tmp_path, "k1", arrays).how == "rebuilt"


def test_older_snapshots_files_retire(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    old = HostSearchIndex.build(make_state(tmp_path, FILMS, version=1), cache)
    assert len(list(cache.glob("*.arrays"))) == 1
    films_b = {**FILMS, "Person": [person(22, "Jane Campion")]}
    new = HostSearchIndex.build(make_state(tmp_path, films_b, version=2), cache)
    (f,) = cache.glob("*.arrays")
    assert "-v2-" in f.name and new.base_how == "built"
    # the old index still reads its (unlinked) mapping; the new one has the new records
    assert found(old.search("pacino")) == [("Person", 20), ("Title", 10)]
    assert found(new.search("campion")) == [("Person", 22)]


def test_an_overlay_grown_large_moves_to_the_newer_snapshot(tmp_path: Path) -> None:
    many = {"Person": [person(i, f"Person number {i}") for i in range(1, 1200)]}
    a = make_state(tmp_path, {"Person": many["Person"][:100]}, version=1)
    b = make_state(tmp_path, many, version=2)
    idx = HostSearchIndex.build(a, tmp_path / "cache")
    # 1,100 changed documents (more than a tenth of the base) and a newer snapshot under
    # the state: the base moves to that snapshot's file and the overlay empties
    idx.update(b, {"Person": Changes(added=list(range(100, 1200)))})
    assert idx.overlay_documents == 0
    assert "-v2-" in str(idx.stats()["base_file"])
    assert found(idx.search("1199")) == [("Person", 1199)]
    assert hits(idx, "person number 7") == hits(SearchIndex.build(b), "person number 7")
    # a small overlay over an older snapshot stays as it is
    small = HostSearchIndex.build(a, tmp_path / "cache2")
    small.update(b, {"Person": Changes(added=[100, 101])})
    assert small.overlay_documents == 2 and "-v1-" in str(small.stats()["base_file"])
