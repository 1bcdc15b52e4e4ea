"""An ingestion worker dying: in a child process, on SQLite and PostgreSQL.

A worker that exits right after its dataset commit (before the event is marked done)
leaves the event pending under its lease; once the lease runs out another worker replays
it, and the outcome is as if nothing had happened. A worker killed with SIGKILL at any
moment of a stream of events loses nothing either."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

import nearstate
from history import Child, spawn
from nearstate.content import outbox
from nearstate.content.cms import CMS
from nearstate.content.db import WriteStore
from nearstate.content.ingest import Ingestor, IngestWorker
from nearstate.content.media import MediaConfig
from nearstate.content.records import SCHEMA

ASSET = "a-0123456789abcdef"
BASE = "https://cdn.example.com/m"

WORKER = """
import sys, time
from pathlib import Path
import nearstate
from nearstate.content.db import open_store
from nearstate.content.ingest import Ingestor, IngestWorker
from nearstate.content.media import MediaConfig
from nearstate.content.records import SCHEMA

url, ds_path, name, lease, mode = sys.argv[1:6]
store = open_store(url)
ds = nearstate.open(Path(ds_path))
media = MediaConfig(root=Path(ds_path).parent / "media", base_url=%r)
ing = Ingestor(store, ds.writer(schema=SCHEMA), media)

def on_event(ev, out, err):
    print("done" if err is None else "failed", ev.id, flush=True)

worker = IngestWorker(ing, name=name, lease=float(lease), on_event=on_event)
print("ready", flush=True)
while True:
    if not worker.run_once():
        if mode == "drain":
            break
        time.sleep(0.002)
print("drained", flush=True)
""" % (BASE,)  # noqa: UP031 (the child's code is a template)


def seed(store: WriteStore) -> None:
    with store.transaction() as tx:
        tx.execute(
            "INSERT INTO assets (id, kind, filename, content_type, width, height, created_at)"
            " VALUES (?, 'image', 'x.jpg', 'image/jpeg', 1600, 900, 0)",
            (ASSET,),
        )
        tx.execute(
            "INSERT INTO titles (id, name, slug, year, genres, updated_at)"
            " VALUES (593, 'Cleo', 'cleo-593', 1962, '[\"Drama\"]', 0)"
        )
        tx.execute("INSERT INTO people (id, name, slug, staff) VALUES (1, 'Ann Writer', 'ann', 1)")


def story(title: str) -> dict[str, Any]:
    return {
        "title": title,
        "dek": f"dek of {title}",
        "hero": ASSET,
        "related": [593],
        "authors": [1],
        "body": [{"kind": "paragraph", "text": f"Words of {title}."}],
    }


def event_row(store: WriteStore, event_id: int) -> dict[str, Any]:
    r = store.read_one("SELECT * FROM outbox WHERE id = ?", (event_id,))
    assert r is not None
    return r


def worker_child(
    children: list[Child], url: str, ds: Path, name: str, lease: float, mode: str
) -> Child:
    child = spawn(children, WORKER, url, str(ds), name, str(lease), mode)
    child.expect("ready")
    return child


def local_worker(store: WriteStore, ds_path: Path, lease: float = 1.0) -> IngestWorker:
    ds = nearstate.open(ds_path)
    media = MediaConfig(root=ds_path.parent / "media", base_url=BASE)
    return IngestWorker(Ingestor(store, ds.writer(schema=SCHEMA), media), name="w2", lease=lease)


def test_crash_after_the_dataset_commit_is_replayed(
    write_store: WriteStore,
    store_url: str,
    tmp_path: Path,
    children: list[Child],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seed(write_store)
    cms = CMS(write_store)
    s = cms.create_story(story("Before the crash"), user="ann")
    ds_path = tmp_path / "ds"

    monkeypatch.setenv("NEARSTATE_INGEST_CRASH_AT", "after-store-commit")
    child = worker_child(children, store_url, ds_path, "crashy", 2.0, "drain")
    code = child.proc.wait(60)
    assert code == 75, f"the worker exited with {code}: {child.stderr()}"
    assert child.rest() == []  # it died before finishing any event
    monkeypatch.delenv("NEARSTATE_INGEST_CRASH_AT")

    # the event is still pending, claimed by the dead worker under its lease
    r = event_row(write_store, s.event)
    assert (r["status"], r["attempts"], r["claimed_by"]) == ("pending", 1, "crashy")
    assert r["claimed_until"] is not None and r["done_at"] is None
    st = cms.ingest_status(s.id)
    assert (st["status"], st["token"]) == ("pending", None)
    # its dataset commit did happen: the record is there, the bookkeeping is not
    ds = nearstate.open(ds_path)
    consumer = ds.consumer()
    crashed = consumer.sync()["DraftStory"].get(s.id)
    assert crashed is not None and crashed.title == "Before the crash"

    # while the lease holds, nobody else takes the event
    worker = local_worker(write_store, ds_path, lease=1)
    if time.time() < r["claimed_until"] - 0.2:
        assert not worker.run_once()
    time.sleep(max(0.0, r["claimed_until"] - time.time()) + 0.05)
    # then it is replayed
    assert worker.run_once() and worker.processed == 1
    r = event_row(write_store, s.event)
    assert (r["status"], r["attempts"], r["claimed_by"]) == ("done", 2, "w2")
    st = cms.ingest_status(s.id)
    assert st["status"] == "ok" and st["errors"] == [] and st["token"] is not None
    state = consumer.wait_for(st["token"])
    replayed = state["DraftStory"].get(s.id)
    assert replayed.revision == 1 and replayed.title == "Before the crash"
    assert replayed.to_dict() | {"updated_at": None} == crashed.to_dict() | {"updated_at": None}
    assert replayed.hero.large == f"{BASE}/{ASSET}/large.jpg"
    assert replayed.authors[0].name == "Ann Writer" and replayed.related[0].name == "Cleo"
    assert state["Story"].get(s.id) is None
    assert outbox.pending_count(write_store) == 0 and outbox.dead_letters(write_store) == []

    # the same crash while publishing: the live record comes out right after the replay
    monkeypatch.setenv("NEARSTATE_INGEST_CRASH_AT", "after-store-commit")
    p = cms.publish(s.id, user="ann")
    child = worker_child(children, store_url, ds_path, "crashy2", 1.0, "drain")
    assert child.proc.wait(60) == 75
    monkeypatch.delenv("NEARSTATE_INGEST_CRASH_AT")
    assert event_row(write_store, p.event)["status"] == "pending"
    time.sleep(1.1)
    deadline = time.monotonic() + 30
    while outbox.pending_count(write_store) and time.monotonic() < deadline:
        worker.drain()
        time.sleep(0.05)
    assert outbox.pending_count(write_store) == 0
    assert event_row(write_store, p.event)["status"] == "done"
    state = consumer.wait_for(cms.ingest_status(s.id)["token"])
    assert state["Story"].get(s.id).revision == 1
    assert state["DraftStory"].get(s.id).status == "published"


def test_sigkill_mid_stream_loses_nothing(
    write_store: WriteStore, store_url: str, tmp_path: Path, children: list[Child]
) -> None:
    """200 saves stream in while worker processes are killed with SIGKILL, one after the
    other, wherever they are (claiming, writing the dataset, marking an event done)."""
    seed(write_store)
    cms = CMS(write_store)
    ds_path = tmp_path / "ds"
    n_stories, rounds = 40, 5  # 200 saves
    ids = [cms.create_story(story(f"s{i} r1"), user="ann").id for i in range(n_stories)]

    done_by_children: set[int] = set()
    for rnd in range(2, rounds + 1):
        child = worker_child(children, store_url, ds_path, f"doomed{rnd}", 1.0, "forever")
        for i, sid in enumerate(ids):
            cms.save_story(sid, story(f"s{i} r{rnd}"), base_revision=rnd - 1, user="ed")
        # it is busy with the stream: kill it, whatever it is doing
        lines = [child.expect("done") for _ in range(5)]
        child.kill()
        lines += child.rest()
        done_by_children |= {int(x.split()[1]) for x in lines if x.startswith("done")}
    total = n_stories * rounds
    assert 0 < len(done_by_children) < total  # the children did some of the work, not all

    # a new worker, once the dead ones' leases have run out, finishes everything
    worker = local_worker(write_store, ds_path, lease=1)
    deadline = time.monotonic() + 60
    while outbox.pending_count(write_store) and time.monotonic() < deadline:
        worker.drain()
        time.sleep(0.05)
    rows = write_store.read("SELECT status, COUNT(*) AS n FROM outbox GROUP BY status")
    assert {r["status"]: r["n"] for r in rows} == {"done": total}
    assert worker.failed == 0, worker.last_error

    consumer = nearstate.open(ds_path).consumer()
    state = consumer.sync()
    drafts = state["DraftStory"]
    for i, sid in enumerate(ids):
        st = cms.ingest_status(sid)
        assert (st["revision"], st["status"]) == (rounds, "ok"), (sid, st)
        d = drafts.get(sid)
        assert d is not None and (d.revision, d.title) == (rounds, f"s{i} r{rounds}")
        assert d.excerpt == f"dek of s{i} r{rounds}"
        assert consumer.wait_for(st["token"])["DraftStory"].get(sid).revision == rounds
        # every older revision was ingested or superseded: none is left pending
        assert {r["ingest_status"] for r in cms.revisions(sid)} <= {"ok", "superseded"}
