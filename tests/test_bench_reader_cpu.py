"""``python -m nearstate.bench.reader_cpu``: a reader's CPU per commit on the content schema."""

from __future__ import annotations

from pathlib import Path

from nearstate.bench import reader_cpu


def test_the_reader_cpu_benchmark_measures_each_commit(tmp_path: Path) -> None:
    res = reader_cpu.run(commits=20, titles=30, workdir=tmp_path, overlay=500)
    r = res["reader_cpu_ms"]
    assert 0 < r["p50"] <= r["p90"] and r["mean"] > 0
    assert res["config"] == {"commits": 20, "titles": 30, "schema": "content", "overlay": 500}
    assert 0 < res["overlay_ms"]["p50"] <= res["overlay_ms"]["p90"]
    text = reader_cpu.describe(res)
    assert "content schema" in text and f"{r['p50']:.3f} ms" in text
    assert ("meets" in text) == (r["p50"] <= reader_cpu.TARGET_MS)


def test_the_reader_cpu_benchmark_runs_from_the_command_line(capsys) -> None:
    reader_cpu.main(["--commits", "3", "--titles", "5", "--overlay", "50", "--json"])
    out = capsys.readouterr().out
    assert '"reader_cpu_ms"' in out and '"commits": 3' in out
