"""The platform's verbs: ``nearstate cms ...`` and ``nearstate bench cms ...``, found by the
store's CLI through entry points, run end to end on a scratch data directory."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

import nearstate
from nearstate.cli import main
from nearstate.content.accounts import authenticate
from nearstate.content.db import open_store


def run(*args: str) -> str:
    res = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


def test_the_platform_verbs_are_offered_by_the_store_cli() -> None:
    assert "cms" in run("--help")
    assert "cms" in run("bench", "--help")
    out = run("cms", "--help")
    for verb in ("init", "add-user", "import-films", "ingest", "serve", "status", "retry"):
        assert verb in out


def test_init_users_import_ingest_and_status(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    out = run("cms", "init", "--data", data, "--admin", "ada", "--password", "a long password")
    assert "schema version" in out and "Created admin 'ada'" in out
    store = open_store(f"sqlite:///{tmp_path / 'data' / 'cms.db'}")
    assert authenticate(store, "ada", "a long password")["role"] == "admin"

    res = CliRunner().invoke(main, ["cms", "add-user", "ada", "--data", data, "--password",
                                    "another long one"])  # fmt: skip
    assert res.exit_code == 1 and "already taken" in res.output

    out = run("cms", "import-films", "--data", data, "--limit", "120", "--quiet")
    assert "Imported 120 films" in out and "Everything ingested" in out
    c = nearstate.open(tmp_path / "data" / "dataset").consumer()
    c.sync(30)
    assert len(c.state["Title"]) == 120
    assert len(c.state["Person"]) > 100

    out = run("cms", "status", "--data", data)
    assert "events pending" in out and "titles" in out
    # nothing left: a worker run once has nothing to do
    assert "Processed 0 event(s)" in run("cms", "ingest", "--data", data, "--once")
    store.close()


def test_retry_says_what_it_did(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    run("cms", "init", "--data", data)
    store = open_store(f"sqlite:///{tmp_path / 'data' / 'cms.db'}")
    with store.transaction() as tx:
        tx.execute(
            "INSERT INTO outbox (kind, subject, created_at, available_at, status)"
            " VALUES ('bogus', 'x', 0, 0, 'dead')"
        )
    out = run("cms", "retry", "1", "2", "--data", data)
    assert "event 1: queued again" in out and "event 2: is not a dead event" in out
    out = run("cms", "ingest", "--data", data, "--once")
    assert "Processed 1 event(s)" in out  # and it failed again, for good: unknown kind
    assert store.read_one("SELECT status FROM outbox WHERE id = 1")["status"] == "dead"
    store.close()


def test_bench_cms_import_and_save_run() -> None:
    r = json.loads(run("bench", "cms", "import", "--limit", "150", "--workers", "1", "--json"))
    assert r["films"] == 150 and r["title_records"] == 150 and r["dead_events"] == 0
    r = json.loads(run("bench", "cms", "save", "--saves", "15", "--stories", "3",
                       "--interval-ms", "5", "--json"))  # fmt: skip
    assert r["not_ingested"] == 0 and r["records_committed_ms"]["n"] == 15


def test_bench_cms_editors_runs_against_the_real_app() -> None:
    r = json.loads(run("bench", "cms", "editors", "--editors", "4", "--seconds", "3",
                       "--stories", "2", "--json"))  # fmt: skip
    assert r["saves"] > 0 and r["status_5xx"] == 0 and r["errors"] == 0
    assert r["lost_updates"] == 0 and r["drafts_not_at_newest_revision"] == 0
