import json
import sys

import pytest

from nearstate.bench.store import format_store_bench, run_store_bench
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
    assert result["import_s"] > 0
    phases = result["import_phases_s"]
    assert set(phases) == {"read", "stage", "write"}
    assert sum(phases.values()) == pytest.approx(result["import_s"])
    assert result["ratios"]["memory_vs_dict"] < 1
    json.dumps(result)  # plain JSON-able values
    text = format_store_bench(result)
    for name in ("nearstate", "dict", "sqlite", "parquet_zstd", "memory vs dict"):
        assert name in text


def test_store_bench_shape(jsonl, tmp_path):
    phases = []
    pytest.importorskip("pyarrow")
    result = run_store_bench(
        jsonl, "id", workdir=tmp_path / "work", lookups=1000, progress=phases.append
    )
    _check(result, parquet=True)
    assert "importing into nearstate" in phases
    assert "timing lookups" in phases
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
    result = run_store_bench(p, "id", field="label", lookups=200)
    assert result["field"] == "label"
    assert result["lookup_ns_p50"]["dict"] > 0
