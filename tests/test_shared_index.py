"""A snapshot's hash indexes built once per host and mapped (nearstate.shared_index): the
same find() answers as the in-memory index, on a snapshot and on a layered version."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import nearstate
from nearstate import shared_index
from nearstate.shared_index import MappedHashIndex, canonical, share_indexes

WHEN = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
ROWS = [
    {"id": i, "slug": f"s-{i}", "kind": ["news", "review", None][i % 3], "year": 1990 + i % 7,
     "score": [0.5, 1.0, 2.25][i % 3], "tags": [f"t{i % 4}", f"t{i % 5}"][: 1 + i % 2],
     "at": WHEN + dt.timedelta(days=i % 3)}
    for i in range(1, 120)
]  # fmt: skip
QUERIES: list[dict[str, Any]] = [
    {"slug": "s-7"}, {"slug": "nope"}, {"kind": "news"}, {"kind": None}, {"year": 1993},
    {"year": 1993.0}, {"score": 1}, {"score": 2.25}, {"tags": "t3"}, {"at": WHEN},
    {"at": WHEN.astimezone(dt.timezone(dt.timedelta(hours=2)))},
    {"kind": "review", "year": 1995}, {"tags": "t1", "kind": "news"},
]  # fmt: skip


@nearstate.record(key="id")
@dataclass
class Item:
    id: int
    slug: str
    kind: str | None
    year: int
    score: float
    tags: list[str]
    at: dt.datetime


SCHEMA = nearstate.Schema.from_dataclasses(Item)


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "indexes"
    share_indexes(root)
    try:
        yield root
    finally:
        share_indexes(None)


def dataset(tmp_path: Path) -> Any:
    ds = nearstate.open(tmp_path / "ds")
    w = ds.writer(schema=SCHEMA)
    for r in ROWS:
        w.upsert("Item", r)
    ds.compact()
    return ds, w


def keys(records: list[Any]) -> list[int]:
    return [r.key for r in records]


def test_same_answers_as_the_in_memory_index(tmp_path: Path, shared: Path) -> None:
    dataset(tmp_path)
    mapped = nearstate.load(next((tmp_path / "ds" / "snapshots").iterdir()))
    share_indexes(None)
    plain = nearstate.load(next((tmp_path / "ds" / "snapshots").iterdir()))
    want = [keys(plain["Item"].find(**q)) for q in QUERIES]
    share_indexes(shared)
    assert [keys(mapped["Item"].find(**q)) for q in QUERIES] == want
    assert any(want) and isinstance(mapped["Item"].index("slug"), MappedHashIndex)
    files = sorted(shared.glob("*.arrays"))
    assert len(files) == 8  # one per field set asked for
    stamps = [f.stat().st_mtime_ns for f in files]
    # another process's state (here: another load) maps the files, builds nothing
    again = nearstate.load(next((tmp_path / "ds" / "snapshots").iterdir()))
    assert [keys(again["Item"].find(**q)) for q in QUERIES] == want
    assert sorted(shared.glob("*.arrays")) == files
    assert [f.stat().st_mtime_ns for f in files] == stamps


def test_a_layered_version_reads_the_mapped_base(tmp_path: Path, shared: Path) -> None:
    ds, w = dataset(tmp_path)
    c = ds.consumer()
    c.start(wait=True)
    try:
        w.upsert("Item", {**ROWS[6], "slug": "renamed", "kind": "news"})
        t = w.delete("Item", 8)
        c.wait_for(t, 10)
        layered = c.state
        got = [keys(layered["Item"].find(**q)) for q in [*QUERIES, {"slug": "renamed"}]]
        share_indexes(None)
        plain = nearstate.load(next((tmp_path / "ds" / "snapshots").iterdir()))
        expect = []
        for q in [*QUERIES, {"slug": "renamed"}]:
            base = [k for k in keys(plain["Item"].find(**q)) if k not in (7, 8)]
            r7 = {**ROWS[6], "slug": "renamed", "kind": "news"}
            hit7 = all((v in r7[f]) if isinstance(r7[f], list) else r7[f] == v
                       for f, v in q.items())  # fmt: skip
            expect.append(sorted(base + [7] * hit7))
        assert got == expect
        assert isinstance(layered.base["Item"].index("slug"), MappedHashIndex)
    finally:
        c.stop()


def test_canonical_values_follow_dict_equality() -> None:
    assert canonical(1) == canonical(1.0) == canonical(True)
    assert canonical("1") != canonical(1) != canonical(1.5)
    other_tz = WHEN.astimezone(dt.timezone(dt.timedelta(hours=-5)))
    assert canonical(WHEN) == canonical(other_tz)
    assert canonical(WHEN.replace(tzinfo=None)) != canonical(WHEN)
    assert canonical(("a", 1)) != canonical(("a1",))
    assert canonical(dt.date(2024, 5, 1)) != canonical(dt.datetime(2024, 5, 1))


def test_sharing_off_builds_in_memory(tmp_path: Path) -> None:
    assert shared_index.shared_root() is None
    dataset(tmp_path)
    s = nearstate.load(next((tmp_path / "ds" / "snapshots").iterdir()))
    assert not isinstance(s["Item"].index("slug"), MappedHashIndex)
