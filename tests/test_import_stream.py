"""A streamed import (nearstate.jsonl): the file is staged a part at a time and the parts
are joined by columns. The result equals importing every record at once; bad input still
names its line and publishes nothing."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nearstate
from nearstate import jsonl
from nearstate.errors import InputError


@pytest.fixture
def small_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jsonl, "PART_RECORDS", 7)
    monkeypatch.setattr(jsonl, "PART_BYTES", 700)
    monkeypatch.setattr(jsonl, "FIRST_PART_BYTES", 300)
    monkeypatch.setattr(jsonl, "_BATCH", 3)
    monkeypatch.setattr(jsonl, "INFER_SAMPLE", 10)


def write(path: Path, recs: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def whole(path: Path, into: Path, **kw: Any) -> nearstate.ReadState:
    """The reference: every record staged at once (the pre-streaming path)."""
    ds = nearstate.LocalDataset(into)
    jsonl._import_whole(path, kw.get("type_name", "T"), ("id",), ds, None, None, None, 0.0)
    return ds.load()


def records(state: Any, t: str = "T") -> dict[Any, dict[str, Any]]:
    return {r.key: r.to_dict() for r in state[t]}


def rec(i: int, rnd: random.Random) -> dict[str, Any]:
    r: dict[str, Any] = {
        "id": i,
        "title": " ".join(rnd.choice(["red", "blue", "green", "sky"]) for _ in range(4)),
        "n": rnd.randrange(-5, 10**6),
        "tags": [rnd.choice("abc") for _ in range(rnd.randrange(3))],
        "dims": {"w": rnd.randrange(3), "h": 1.5, **([{}, {"d": 2}, {"d": None}][i % 3])}
        if i % 4
        else None,
        "note": None if i % 2 else f"note {i}",
    }
    if i % 5 == 0:
        del r["note"]  # left out: the schema records it when no part sets it to null
    return r


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(n=st.integers(1, 40), seed=st.integers(0, 1000))
def test_streamed_import_equals_importing_everything_at_once(tmp_path_factory, n, seed):
    mp = pytest.MonkeyPatch()
    mp.setattr(jsonl, "PART_RECORDS", 7)
    mp.setattr(jsonl, "PART_BYTES", 900)
    mp.setattr(jsonl, "_BATCH", 3)
    try:
        rnd = random.Random(seed)
        ids = rnd.sample(range(1000), n)
        tmp = tmp_path_factory.mktemp("s")
        src = write(tmp / "in.jsonl", [rec(i, rnd) for i in ids])
        res = nearstate.import_jsonl(src, type_name="T", key="id", into=tmp / "a")
        got = nearstate.LocalDataset(tmp / "a").load()
        want = whole(src, tmp / "b")
        assert res.records == n
        assert records(got) == records(want)
        assert got.checksums() == want.checksums()
        assert got.stored_schema.to_json() == want.stored_schema.to_json()
        for k, r in records(want).items():
            assert got["T"].get(k).to_dict() == r
        # the exported file reproduces the records exactly (absent stays absent)
        for a, b in zip(nearstate.export_records(got, "T"), nearstate.export_records(want, "T"),
                        strict=True):  # fmt: skip
            assert a == b
    finally:
        mp.undo()


def test_parts_share_symbol_tables_and_text_dictionaries(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(jsonl, "PART_RECORDS", 1000)
    monkeypatch.setattr(jsonl, "_BATCH", 500)
    rnd = random.Random(3)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "theta", "kappa", "omega"]
    recs = [
        {"id": i, "title": " ".join(rnd.choice(words) for _ in range(5)) + f" {i}",
         "kind": rnd.choice(words), "body": " ".join(rnd.choice(words) for _ in range(300))}
        for i in range(3500)
    ]  # fmt: skip
    src = write(tmp_path / "in.jsonl", recs)
    nearstate.import_jsonl(src, type_name="T", key="id", into=tmp_path / "a")
    got = nearstate.LocalDataset(tmp_path / "a").load()
    cols = got.blob.header["types"]["T"]["columns"]
    assert cols["title"].get("fsst") and cols["kind"]["pool"] == "ids"
    assert cols["body"].get("dict") or cols["body"]["level"]
    # the dictionary pool is one across the four parts: one entry per word
    assert len(got.blob.arrays["T/kind.poffs"]) == len(words) + 1
    assert records(got) == {r["id"]: r for r in recs}
    want = whole(src, tmp_path / "b")
    assert got.checksums() == want.checksums()
    assert got.nbytes < 1.15 * want.nbytes


@pytest.mark.usefixtures("small_parts")
def test_duplicate_key_in_another_part_names_both_lines(tmp_path) -> None:
    rnd = random.Random(1)
    recs = [rec(i, rnd) for i in range(30)]
    recs.append(rec(4, rnd))  # line 31 repeats line 5's key, four parts later
    src = write(tmp_path / "in.jsonl", recs)
    with pytest.raises(InputError) as e:
        nearstate.import_jsonl(src, type_name="T", key="id", into=tmp_path / "a")
    assert e.value.line == 31 and "first on line 5" in str(e.value)
    assert nearstate.LocalDataset(tmp_path / "a").latest_version() is None


@pytest.mark.usefixtures("small_parts")
def test_str_keys_and_duplicates_across_parts(tmp_path) -> None:
    recs = [{"id": f"k{i}", "v": i} for i in range(20)] + [{"id": "k3", "v": 0}]
    src = write(tmp_path / "in.jsonl", recs)
    with pytest.raises(InputError) as e:
        nearstate.import_jsonl(src, type_name="T", key="id", into=tmp_path / "a")
    assert e.value.line == 21 and "first on line 4" in str(e.value)
    write(src, recs[:-1])
    nearstate.import_jsonl(src, type_name="T", key="id", into=tmp_path / "a")
    got = nearstate.LocalDataset(tmp_path / "a").load()
    assert got["T"].get("k17").v == 17 and len(got["T"]) == 20


@pytest.mark.usefixtures("small_parts")
def test_a_wider_record_past_the_sample_reads_the_file_again(tmp_path) -> None:
    recs = [{"id": i, "x": i} for i in range(25)]
    recs[22]["x"] = 2.5  # past the sample of 10: the schema widens to float
    recs[23]["extra"] = "late"
    src = write(tmp_path / "in.jsonl", recs)
    nearstate.import_jsonl(src, type_name="T", key="id", into=tmp_path / "a")
    got = nearstate.LocalDataset(tmp_path / "a").load()
    assert got["T"].get(22).x == 2.5 and got["T"].get(23).extra == "late"
    assert got["T"].get(3).x == 3
    bad = [{"id": i, "x": i} for i in range(25)]
    bad[20]["x"] = "text"  # contradicts the ints before it: named, nothing published
    write(src, bad)
    with pytest.raises(InputError) as e:
        nearstate.import_jsonl(src, type_name="T", key="id", into=tmp_path / "b")
    assert e.value.line == 21


@pytest.mark.usefixtures("small_parts")
def test_reimport_keeps_other_types_and_publishes_nothing_when_unchanged(tmp_path) -> None:
    ds_dir = tmp_path / "ds"
    other = write(tmp_path / "o.jsonl", [{"id": i, "name": f"o{i}"} for i in range(12)])
    nearstate.import_jsonl(other, type_name="Other", key="id", into=ds_dir)
    rnd = random.Random(2)
    src = write(tmp_path / "in.jsonl", [rec(i, rnd) for i in range(20)])
    r1 = nearstate.import_jsonl(src, type_name="T", key="id", into=ds_dir)
    r2 = nearstate.import_jsonl(src, type_name="T", key="id", into=ds_dir)
    assert r1.changed and not r2.changed and r2.version == r1.version
    got = nearstate.LocalDataset(ds_dir).load()
    assert got["Other"].get(7).name == "o7" and len(got["T"]) == 20


@pytest.mark.usefixtures("small_parts")
@pytest.mark.parametrize("workers", [1, 2])
def test_worker_processes_stage_ranges_as_this_one_does(tmp_path, workers) -> None:
    rnd = random.Random(9)
    recs = [rec(i, rnd) for i in range(60)]
    src = write(tmp_path / "in.jsonl", recs)
    assert len(jsonl._ranges(src, jsonl.PART_BYTES)) > 4
    nearstate.import_jsonl(src, type_name="T", key="id", into=tmp_path / "a", workers=workers)
    got = nearstate.LocalDataset(tmp_path / "a").load()
    want = whole(src, tmp_path / "b")
    assert records(got) == records(want) and got.checksums() == want.checksums()
    # errors from a worker's range name their line as this process would
    bad = [*recs[:40], {"id": 3, "title": "again"}, *recs[40:]]
    write(src, bad)
    with pytest.raises(InputError) as e:
        nearstate.import_jsonl(src, type_name="T", key="id", into=tmp_path / "c",
                               workers=workers)  # fmt: skip
    assert e.value.line == 41 and "first on line 4" in str(e.value)
    bad = [*recs[:45], {"id": 999, "n": "not a number"}, *recs[45:]]
    write(src, bad)
    with pytest.raises(InputError) as e:
        nearstate.import_jsonl(src, type_name="T", key="id", into=tmp_path / "c",
                               workers=workers)  # fmt: skip
    assert e.value.line == 46 and "'n'" in str(e.value)
    # a worker numbers its range from 1 (the lines before it are not counted first):
    # a duplicate inside one range, and bad JSON, still name the file's lines
    again = {**recs[49], "title": "again"}
    for bad, line, says in (
        ([*recs[:50], again, *recs[50:]], 51, "first on line 50"),
        ([*recs[:52], "{not json", *recs[52:]], 53, "bad JSON"),
    ):
        src.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in bad))
        spans = jsonl._ranges(src, jsonl.PART_BYTES, jsonl.FIRST_PART_BYTES)
        data = src.read_bytes()
        at = [
            i
            for i, (a, b) in enumerate(spans)
            if data[:a].count(b"\n") < line <= data[:b].count(b"\n")
        ]
        assert at and at[0] >= 1 and data[spans[at[0]][0] : spans[at[0]][1]].count(b"\n") >= 2
        with pytest.raises(InputError) as e:
            nearstate.import_jsonl(src, type_name="T", key="id", into=tmp_path / "c",
                                   workers=workers)  # fmt: skip
        assert e.value.line == line and says in str(e.value)


def test_ranges_end_on_lines(tmp_path) -> None:
    src = write(tmp_path / "in.jsonl", [{"id": i, "pad": "x" * (i % 13)} for i in range(200)])
    data = src.read_bytes()
    rs = jsonl._ranges(src, 97, 40)
    assert rs[0][0] == 0 and rs[-1][1] == len(data)
    assert 40 <= rs[0][1] < 97 <= rs[1][1] - rs[1][0]
    for (_, b), nxt in zip(rs, [*rs[1:], None], strict=True):
        assert data[b - 1 : b] == b"\n"
        if nxt is not None:
            assert nxt[0] == b
