"""The report of ``nearstate bench compare``: verdicts computed from the figures, the
reasons given where a target is missed, and the files written (JSON, Markdown, PNGs).

The figures here are made up; the benchmark itself runs end to end in test_oldpath.py."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("matplotlib")

from nearstate.bench.compare import ratios
from nearstate.bench.compare_report import markdown, summary, verdicts, write_report


def _pair(ns: float, old: float) -> dict:
    return {"nearstate": {"p50": ns, "p99": ns * 2}, "baseline": {"p50": old, "p99": old * 2}}


def _freshness(samples: list[float], **extra: object) -> dict:
    return {"trials": len(samples), "samples_ms": samples, "ms": {"p50": 1.0}, **extra}


def result(*, page=(0.1, 2.0), html=(1.0, 3.0), preview=(25.0, 5000.0),
           memory=(12e6, 14e6)) -> dict:  # fmt: skip
    stored = {"p50": 80.0}
    return {
        "films": 17472, "stories": 12, "cpus": 2, "refresh_s": 10.0, "fragments": 83441,
        "same_html": {"/": True, "/stories/x": True},
        "page_ms": _pair(*page), "story_page_ms": _pair(0.2, 1.9),
        "page_html_ms": _pair(*html), "story_html_ms": _pair(0.5, 2.5),
        "preview_visible_ms": _pair(*preview), "live_visible_ms": _pair(50.0, 5100.0),
        "freshness_detail": {
            "nearstate_preview": _freshness([20.0, 25.0, 30.0], shown=3),
            "nearstate_live": _freshness([40.0, 50.0], visible_on_all=2),
            "baseline_preview": _freshness([900.0, 5000.0, 9000.0], visible=3, in_store_ms=stored,
                                           poll_ms=50, concurrent_stories=8),
            "baseline_live": _freshness([1000.0, 5100.0], visible=2, in_store_ms=stored,
                                        poll_ms=50, concurrent_stories=8),
        },
        "memory_bytes": {"nearstate": memory[0], "hydrated_parquet": memory[1],
                         "python_objects": 898e6},
        "memory_detail": {"nearstate_blob": memory[0] * 0.9, "nearstate_python": memory[0] * 0.1,
                          "nearstate_types": {"Title": 17472, "Person": 63823},
                          "fragments": 83441, "fragments_by_kind": {"title": 17472},
                          "fragments_json": 183e6, "postgres_table": 95e6},
        "requests_per_s": {"nearstate": {"home": 700, "story": 1400},
                           "baseline": {"home": 190, "story": 380}},
        "wrk": {"threads": 1, "connections": 16, "seconds": 10},
    }  # fmt: skip


def test_ratios_and_verdicts_follow_the_figures():
    r = result(page=(0.1, 2.5), preview=(25.0, 5000.0), memory=(3e6, 14e6))
    assert ratios(r) == {"page_speedup": 25.0, "preview_ratio": 0.005, "memory_ratio": 0.214}
    assert verdicts(r) == {"page_speedup": True, "preview_ratio": True, "memory_ratio": True}
    r = result(page=(1.0, 2.5), preview=(80.0, 5000.0), memory=(12e6, 14e6))
    assert verdicts(r) == {"page_speedup": False, "preview_ratio": False, "memory_ratio": False}


def test_a_met_target_gives_no_excuse_and_a_missed_one_says_why():
    good = markdown(result(page=(0.1, 2.5), preview=(25.0, 5000.0), memory=(3e6, 14e6)),
                    "compare", "nearstate bench compare")  # fmt: skip
    assert good.count("**met**") == 3 and "NOT met" not in good
    assert "**Why" not in good
    bad = markdown(result(page=(1.0, 2.5), preview=(80.0, 5000.0), memory=(12e6, 14e6)),
                   "compare", "nearstate bench compare")  # fmt: skip
    assert bad.count("**NOT met**") == 3
    assert "**Why page construction misses 20×.**" in bad
    assert "**Why preview freshness misses.**" in bad
    assert "**Why memory misses.**" in bad
    assert "half the 10 s refresh" in bad  # the reason is the near-cache's timer, from the run


def test_summary_names_each_target_with_its_verdict():
    lines = summary(result())
    text = "\n".join(lines)
    assert "20×: met" in text  # 2.0 / 0.1
    assert "≤ 0.01: met" in text  # 25 / 5000
    assert "≤ 0.25: NOT met" in text  # 12 / 14
    assert "same HTML from both paths: / yes, /stories/x yes" in text


def test_different_html_is_reported_not_hidden():
    r = result()
    r["same_html"]["/"] = False
    assert "`/` DIFFERENT" in markdown(r, "compare", "c")
    assert "/ NO" in "\n".join(summary(r))


def test_write_report_writes_json_markdown_and_pictures(tmp_path):
    paths = write_report(result(), tmp_path / "out", name="run1", command="nearstate bench compare")
    names = sorted(p.name for p in paths)
    assert names == ["run1-freshness.png", "run1-memory.png", "run1-pages.png",
                     "run1-throughput.png", "run1.json", "run1.md"]  # fmt: skip
    for p in paths:
        if p.suffix == ".png":
            assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000
    saved = json.loads((tmp_path / "out" / "run1.json").read_text())
    assert saved["page_ms"]["baseline"]["p50"] == 2.0
    assert saved["command"] == "nearstate bench compare" and saved["date"]
    md = (tmp_path / "out" / "run1.md").read_text()
    for png in ("run1-pages.png", "run1-freshness.png", "run1-memory.png", "run1-throughput.png"):
        assert f"]({png})" in md
    assert "nearstate bench compare" in md


def test_a_run_where_no_trial_showed_its_change_meets_no_target():
    r = result(preview=(0.0, 5000.0))  # percentiles([]) gives 0: nothing was ever shown
    r["freshness_detail"]["nearstate_preview"]["shown"] = 0
    assert ratios(r)["preview_ratio"] is None
    assert verdicts(r)["preview_ratio"] is False
    assert "| no figure | **NOT met** |" in markdown(r, "compare", "c")
    r = result()
    r["freshness_detail"]["baseline_preview"]["visible"] = 2  # one of three never showed
    assert verdicts(r)["preview_ratio"] is False
