import json
import os
import subprocess
import sys

import pytest

from nearstate import _native
from nearstate.bench.store import TARGETS, format_store_bench, run_store_bench
from nearstate.errors import DatasetError, InputError

N = 200


@pytest.fixture
def jsonl(tmp_path):
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
    p = tmp_path / "records.jsonl"
    with open(p, "w", encoding="utf-8") as f:
        for i in range(N):
            rec = {
                "id": 1000 + 7 * i,
                "year": 1950 + i % 70,
                "title": f"{words[i % 8].title()} {words[(i * 3) % 8]} number {i}",
                "rating": round((i % 97) / 9.7, 2),
                "studio": {"name": words[i % 5], "country": ["US", "FR", "JP"][i % 3]},
                "tags": words[i % 4 : i % 4 + i % 3],
                "note": None if i % 4 else f"note {i}",
            }
            f.write(json.dumps(rec) + "\n")
    return p


def _check(result, *, parquet):
    assert result["records"] == N
    assert set(result["memory_bytes"]) == {"nearstate", "dict", "sqlite", "parquet_zstd"}
    for section in ("lookup_ns_p50", "lookup_ns_p99"):
        assert set(result[section]) == {"nearstate", "dict", "sqlite"}
        assert all(v > 0 for v in result[section].values())
    assert set(result["load_ms"]) == {
        "nearstate_mmap",
        "nearstate_mmap_noverify",
        "nearstate_read",
    }
    assert all(v > 0 for v in result["load_ms"].values())
    mem = result["memory_bytes"]
    for name in ("nearstate", "dict", "sqlite"):
        assert mem[name] > 0
    if parquet:
        assert mem["parquet_zstd"] > 0
        assert result["ratios"]["memory_vs_parquet"] > 0
    else:
        assert mem["parquet_zstd"] is None
        assert result["ratios"]["memory_vs_parquet"] is None
    assert mem["dict"] > mem["nearstate"]
    for name, p50 in result["lookup_ns_p50"].items():
        assert p50 <= result["lookup_ns_p99"][name]
    assert result["field"] == "title"
    assert result["core"] == _native.NAME
    assert result["five_fields"] == ["year", "title", "rating", "studio", "tags"]
    assert result["find_field"] == "year"  # 70 distinct values; title has 200 > N / 2
    assert result["find_error"] is None
    for section in ("five_fields_ns_p50", "five_fields_ns_p99", "find_ns_p50", "find_ns_p99"):
        assert set(result[section]) == {"nearstate", "dict"}
        assert all(v > 0 for v in result[section].values())
    for section in ("five_fields", "find"):
        for name, p50 in result[f"{section}_ns_p50"].items():
            assert p50 <= result[f"{section}_ns_p99"][name]
    assert set(result["find_index_bytes"]) == {"nearstate", "dict"}
    assert all(v > 0 for v in result["find_index_bytes"].values())
    assert result["find_values"] == 70
    assert result["find_matches_mean"] > 1
    assert result["find_calls"] >= result["lookups"] // 100
    ratios = result["ratios"]
    assert set(ratios) == set(TARGETS)
    for name in (
        "lookup_p50_vs_dict",
        "lookup_p99_vs_dict",
        "five_fields_p50_vs_dict",
        "find_p50_vs_dict",
    ):
        assert ratios[name] > 0
    assert result["import_s"] > 0
    phases = result["import_phases_s"]
    assert set(phases) == {"read", "write"}
    assert sum(phases.values()) == pytest.approx(result["import_s"])
    assert result["ratios"]["memory_vs_dict"] < 1
    json.dumps(result)  # plain JSON-able values
    text = format_store_bench(result)
    for name in ("nearstate", "dict", "sqlite", "parquet_zstd", "memory vs dict"):
        assert name in text
    assert f"{_native.NAME} core" in text.splitlines()[0]
    for label in ("lookup p99 vs dict", "5 fields p50 vs dict", "find p50 vs dict"):
        line = next(x for x in text.splitlines() if x.startswith(label))
        assert line.endswith((" met", " NOT met"))


def test_store_bench_shape(jsonl, tmp_path):
    phases = []
    pytest.importorskip("pyarrow")
    result = run_store_bench(
        jsonl, "id", workdir=tmp_path / "work", lookups=1000, progress=phases.append
    )
    _check(result, parquet=True)
    assert "importing into nearstate" in phases
    assert "timing lookups, five fields and finds" in phases
    assert "building the find indexes on 'year'" in phases
    assert (tmp_path / "work" / "ds" / "announced.json").is_file()


def test_store_bench_without_pyarrow(jsonl, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    result = run_store_bench(jsonl, "id", lookups=500)
    _check(result, parquet=False)
    assert "pyarrow" in result["parquet_error"]
    assert "n/a" in format_store_bench(result)


def test_store_bench_explicit_field_and_str_keys(tmp_path):
    p = tmp_path / "s.jsonl"
    with open(p, "w", encoding="utf-8") as f:
        for i in range(N):
            f.write(json.dumps({"id": f"s{i:05d}", "n": i, "kind": "ab"[i % 2]}) + "\n")
    result = run_store_bench(p, "id", field="kind", type_name="Story", lookups=300)
    assert result["field"] == "kind"
    assert result["records"] == N
    assert "TEXT PRIMARY KEY" in result["sqlite_table"]


def test_store_bench_refuses_used_workdir(jsonl, tmp_path):
    run_store_bench(jsonl, "id", workdir=tmp_path / "w", lookups=100)
    with pytest.raises(DatasetError, match="not empty"):
        run_store_bench(jsonl, "id", workdir=tmp_path / "w", lookups=100)


def test_store_bench_bad_arguments(jsonl):
    with pytest.raises(InputError, match="no top-level field 'nope'"):
        run_store_bench(jsonl, "id", field="nope", lookups=100)
    with pytest.raises(InputError, match="lookups"):
        run_store_bench(jsonl, "id", lookups=10)


def test_store_bench_field_shadowed_by_view_api_and_sometimes_absent(tmp_path):
    p = tmp_path / "k.jsonl"
    with open(p, "w", encoding="utf-8") as f:
        for i in range(N):
            rec = {"id": i, "n": i * 2, "key": f"k{i}"}
            if i % 3 == 0:
                rec["label"] = f"label {i}"
            f.write(json.dumps(rec) + "\n")
    result = run_store_bench(p, "id", lookups=200)
    assert result["field"] == "key"  # "label" is absent from some records
    # no field to find by: n and key are unique, label is absent from some records
    assert result["find_field"] is None and "distinct values" in result["find_error"]
    assert result["find_ns_p50"] is None and result["ratios"]["find_p50_vs_dict"] is None
    assert result["five_fields"] == ["n", "key"]
    assert result["five_fields_ns_p50"]["nearstate"] > 0
    text = format_store_bench(result)
    assert "find: not measured" in text
    assert "find p50 vs dict" in text and "n/a" in text
    result = run_store_bench(p, "id", field="label", lookups=200)
    assert result["field"] == "label"
    assert result["lookup_ns_p50"]["dict"] > 0


def _handmade(path, *, half: bool):
    """300 records; which field is chosen for five fields and for find is known."""
    with open(path, "w", encoding="utf-8") as f:
        for i in range(300):
            rec = {
                "id": i,
                "name": f"name {i}",  # 300 distinct: more than half
                "tags": ["a", "b"][: i % 3],  # a list: no find
            }
            if i % 2:
                rec["opt"] = "sometimes"  # not in every record: neither
            rec["kind"] = "xyz"[i % 3]  # 3 distinct
            rec["year"] = 2000 + i % 30  # 30 distinct
            rec["score"] = None if i % 7 == 0 else i % 50  # nulls: no find
            rec["flag"] = i % 2 == 0  # 2 distinct
            rec["grade"] = f"g{i % 30}"  # 30 distinct, after year: loses the tie
            rec["ratio"] = (i % 40) / 4  # floats: no find
            rec["over"] = f"o{i % 151}"  # 151 distinct: more than half
            if half:
                rec["half"] = f"h{i % 150}"  # 150 distinct: exactly half, the most
            rec["meta"] = {"n": i}
            f.write(json.dumps(rec) + "\n")
    return path


@pytest.mark.parametrize(("half", "want"), [(True, "half"), (False, "year")])
def test_store_bench_chooses_fields(tmp_path, half, want):
    p = _handmade(tmp_path / "h.jsonl", half=half)
    result = run_store_bench(p, "id", lookups=200)
    assert result["records"] == 300
    assert result["field"] == "name"
    assert result["five_fields"] == ["name", "tags", "kind", "year", "score"]
    assert result["find_field"] == want
    assert result["find_values"] == (150 if half else 30)
    assert result["find_matches_mean"] == pytest.approx(2 if half else 10)
    assert result["find_batch"] == (50 if half else 10)
    assert result["find_calls"] == result["find_batch"] * 2  # as many batches as lookups
    assert all(v > 0 for v in result["find_ns_p50"].values())


def test_store_bench_explicit_find_field(tmp_path):
    p = _handmade(tmp_path / "h.jsonl", half=False)
    result = run_store_bench(p, "id", find_field="kind", lookups=200)
    assert result["find_field"] == "kind"
    assert result["find_values"] == 3
    assert result["find_matches_mean"] == pytest.approx(100)
    assert result["find_batch"] == 1
    assert all(v > 0 for v in result["find_ns_p50"].values())
    assert result["ratios"]["find_p50_vs_dict"] > 0
    # a field with nulls is allowed when asked for
    result = run_store_bench(p, "id", find_field="score", lookups=200)
    assert result["find_field"] == "score" and result["find_values"] == 51


def test_store_bench_bad_find_field(tmp_path):
    p = _handmade(tmp_path / "h.jsonl", half=False)
    with pytest.raises(InputError, match="no top-level field 'nope' to find by"):
        run_store_bench(p, "id", find_field="nope", lookups=100)
    with pytest.raises(InputError, match="cannot find by 'tags'"):
        run_store_bench(p, "id", find_field="tags", lookups=100)
    from click.testing import CliRunner

    from nearstate.cli import main

    args = ["bench", "store", str(p), "--key", "id", "--find-field", "nope", "--json"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code != 0
    assert "no top-level field 'nope' to find by" in " ".join(res.output.split())


def test_store_bench_under_the_pure_core(tmp_path):
    p = _handmade(tmp_path / "h.jsonl", half=False)
    args = ["bench", "store", str(p), "--key", "id", "--lookups", "200", "--json"]
    env = {**os.environ, "NEARSTATE_PURE": "1"}
    res = subprocess.run(
        [sys.executable, "-m", "nearstate", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    result = json.loads(res.stdout)
    assert result["core"] == "pure"
    assert result["find_field"] == "year"
    for section in ("lookup_ns_p50", "five_fields_ns_p50", "find_ns_p50"):
        assert all(v > 0 for v in result[section].values())
