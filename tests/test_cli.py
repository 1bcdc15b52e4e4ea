"""The CLI end to end: import, inspect, export, get, lookup, and bad input refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import nearstate
from nearstate.cli import main

RECORDS = [
    {"id": 1, "title": "Cléo from 5 to 7", "year": 1962, "tags": ["drama"], "score": 7.9},
    {"id": 2, "title": "Playtime", "year": 1967, "tags": [], "score": None, "big": 2**70},
    {"id": 3, "title": "Stalker 🚀", "year": 1979, "tags": ["sf", "drama"], "cast": {"lead": "A"}},
]


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _run(*args: str, input: str | None = None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input)


@pytest.fixture
def films(tmp_path: Path) -> tuple[Path, Path]:
    src = _write(tmp_path / "films.jsonl", [json.dumps(r, ensure_ascii=False) for r in RECORDS])
    ds = tmp_path / "ds"
    res = _run("import", src, "--type", "Film", "--key", "id", "--into", ds, "--quiet")
    assert res.exit_code == 0, res.output
    assert "Imported 3 Film records" in res.output
    return src, ds


def test_export_gives_back_the_imported_records(films, tmp_path: Path) -> None:
    _, ds = films
    out = tmp_path / "out.jsonl"
    res = _run("export", ds, "--type", "Film", "-o", out)
    assert res.exit_code == 0, res.output
    back = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert back == RECORDS


def test_export_to_stdout(films) -> None:
    _, ds = films
    res = _run("export", ds, "--type", "Film")
    assert res.exit_code == 0
    assert [json.loads(line) for line in res.output.splitlines()] == RECORDS


def test_get_prints_one_record(films) -> None:
    _, ds = films
    res = _run("get", ds, "Film", "3")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output) == RECORDS[2]


def test_get_unknown_key_and_bad_key(films) -> None:
    _, ds = films
    res = _run("get", ds, "Film", "99")
    assert res.exit_code == 1
    assert "no Film with key '99'" in res.output
    res = _run("get", ds, "Film", "abc")
    assert res.exit_code == 1
    assert "integer" in res.output


def test_inspect_reports_counts_and_bytes(films) -> None:
    _, ds = films
    res = _run("inspect", ds, "--json")
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert info["version"] == 1
    film = info["types"]["Film"]
    assert film["records"] == 3
    assert film["key"] == ["id"]
    assert film["fields"]["title"]["type"] == "str"
    assert film["fields"]["title"]["bytes"] > 0
    assert sum(f["bytes"] for f in film["fields"].values()) <= film["bytes"]
    human = _run("inspect", ds)
    assert "Film" in human.output and "bytes/record" in human.output


def test_lookup_serves_keys_from_stdin(films) -> None:
    _, ds = films
    res = _run("lookup", ds, "Film", "--field", "title", input="1\n42\n3\n")
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in res.output.splitlines() if x.startswith(("{", "null"))]
    assert lines == [{"title": RECORDS[0]["title"]}, None, {"title": RECORDS[2]["title"]}]


def test_reimport_makes_a_new_version_and_keeps_other_types(films, tmp_path: Path) -> None:
    _, ds = films
    people = _write(tmp_path / "people.jsonl", ['{"pid": "p1", "name": "Agnès"}'])
    res = _run("import", people, "--type", "Person", "--key", "pid", "--into", ds, "--quiet")
    assert res.exit_code == 0, res.output
    state = nearstate.LocalDataset(ds).load()
    assert state.version == 2
    assert len(state["Film"]) == 3 and state["Person"].get("p1").name == "Agnès"


@pytest.mark.parametrize(
    ("lines", "line", "needle"),
    [
        (['{"id": 1, "t": "a"}', '{"id": 2, "t": "b"', '{"id": 3, "t": "c"}'], 2, "bad JSON"),
        (['{"id": 1, "t": "a"}', '{"t": "b"}'], 2, "field 'id'"),
        (
            ['{"id": 1, "t": "a"}', '{"id": 2, "t": "b"}', '{"id": 1, "t": "c"}'],
            3,
            "duplicate key 1",
        ),
        (['{"id": 1, "year": 1999}', '{"id": 2, "year": "1999"}'], 2, "field 'year'"),
        (['{"id": 1, "t": "a"}', "[1, 2]"], 2, "JSON object"),
    ],
    ids=["bad-json", "missing-key", "duplicate-key", "contradictory-type", "not-an-object"],
)
def test_bad_input_names_the_line_and_publishes_nothing(
    tmp_path: Path, lines: list[str], line: int, needle: str
) -> None:
    src = _write(tmp_path / "bad.jsonl", lines)
    ds = tmp_path / "ds"
    res = _run("import", src, "--type", "T", "--key", "id", "--into", ds, "--quiet")
    assert res.exit_code == 1
    assert f"line {line}" in res.output, res.output
    assert needle in res.output, res.output
    assert not nearstate.LocalDataset(ds).exists()
    assert not (ds / "snapshots").exists() or not any((ds / "snapshots").iterdir())


def test_bad_input_leaves_the_previous_version_announced(films, tmp_path: Path) -> None:
    _, ds = films
    bad = _write(tmp_path / "bad.jsonl", ['{"id": 1}', '{"id": 1}'])
    res = _run("import", bad, "--type", "Film", "--key", "id", "--into", ds, "--quiet")
    assert res.exit_code == 1
    state = nearstate.LocalDataset(ds).load()
    assert state.version == 1 and len(state["Film"]) == 3


def test_missing_dataset_is_a_plain_error(tmp_path: Path) -> None:
    res = _run("inspect", tmp_path / "nothing")
    assert res.exit_code == 1
    assert "holds no dataset" in res.output


def test_the_progress_bar_runs_no_thread() -> None:
    """An import forks its worker processes only from a process running one thread: the
    CLI's progress bar draws on each report instead of from rich's refresh thread."""
    import threading

    from nearstate.cli.common import progress

    before = threading.active_count()
    with progress(True) as report:
        assert report is not None
        report("read", 1, 2)
        assert threading.active_count() == before
