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


def test_the_instruction_count_child_lays_every_commit_one_at_a_time(tmp_path: Path) -> None:
    """What callgrind runs (``--consume``): the reader shows the Log's last commit, and a
    Log whose last commit is not the story's last revision is refused, not counted."""
    reader_cpu._make_log(tmp_path / "ds", 7, 5)
    reader_cpu.main(["--consume", str(tmp_path / "ds")])
    import nearstate

    nearstate.open(f"file://{tmp_path / 'ds'}").writer().upsert("Person", {"id": 99, "slug": "p",
                                                                          "name": "P"})  # fmt: skip
    try:
        reader_cpu.main(["--consume", str(tmp_path / "ds")])
    except RuntimeError as e:
        assert "did not show the last commit" in str(e)
    else:
        raise AssertionError("a Log ending in another commit was counted")
