"""The one wait for a save to become visible (content/wait.py), on a real write store and
a local dataset: what it answers at each step, and that it gives up on time — never much
before the timeout, never much after — rather than raising."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import nearstate
from nearstate.content.cms import CMS, NotFound
from nearstate.content.db import WriteStore, open_store
from nearstate.content.ingest import IngestWorker, ingestor_for
from nearstate.content.media import MediaConfig
from nearstate.content.outbox import Event
from nearstate.content.wait import Ingested, wait_visible

SLACK = 1.0  # how much later than its timeout a wait may answer on a busy 2-core machine


def story(title: str = "Waiting", **over: Any) -> dict[str, Any]:
    data = {
        "title": title,
        "dek": "A line",
        "tags": [],
        "related": [],
        "authors": [],
        "body": [{"kind": "paragraph", "text": "Some words."}],
    }
    data.update(over)
    return data


@pytest.fixture
def store(tmp_path: Path) -> Iterator[WriteStore]:
    s = open_store(f"sqlite:///{tmp_path / 'cms.db'}")
    yield s
    s.close()


@pytest.fixture
def ds(tmp_path: Path) -> Any:
    return nearstate.open(tmp_path / "ds")


@pytest.fixture
def consumer(ds: Any) -> Iterator[Any]:
    c = ds.consumer()
    c.start(wait=False)
    yield c
    c.stop()


def _worker(store: WriteStore, ds: Any, tmp_path: Path, ingested: Ingested) -> IngestWorker:
    media = MediaConfig(root=tmp_path / "media")
    return IngestWorker(ingestor_for(store, ds, media), poll=0.05, on_event=ingested)


def test_a_save_never_ingested_is_pending_after_the_timeout(
    store: WriteStore, consumer: Any
) -> None:
    cms = CMS(store)
    s = cms.create_story(story(), user="ann")
    t0 = time.monotonic()
    got = wait_visible(cms, consumer, int(s.id), s.revision, 0.4, ingested=Ingested())
    took = time.monotonic() - t0
    assert got.step == "pending" and got.state is None and got.revision == 1
    assert 0.4 <= took < 0.4 + SLACK, took


def test_an_ingested_save_is_visible_at_once_and_woken_by_the_worker(
    store: WriteStore, ds: Any, consumer: Any, tmp_path: Path
) -> None:
    cms = CMS(store)
    ingested = Ingested()
    worker = _worker(store, ds, tmp_path, ingested).start()
    try:
        s = cms.create_story(story(), user="ann")
        s2 = cms.save_story(int(s.id), story("Waiting, again"), base_revision=1, user="ann")
        got = wait_visible(cms, consumer, int(s.id), None, 20, ingested=ingested)
    finally:
        worker.stop()
    assert got.step == "visible" and got.revision == s2.revision and got.token is not None
    assert got.state["DraftStory"].get(int(s.id)).title == "Waiting, again"
    assert got.seconds < 20
    assert ingested.count >= 1 and not ingested.failures


def test_a_consumer_that_never_reaches_the_save_is_behind_after_the_timeout(
    store: WriteStore, ds: Any, tmp_path: Path
) -> None:
    cms = CMS(store)
    s = cms.create_story(story(), user="ann")
    _worker(store, ds, tmp_path, Ingested()).drain(timeout=30)
    assert cms.ingest_status(int(s.id))["status"] == "ok"
    other = nearstate.open(tmp_path / "another").consumer()  # a dataset the save never reaches
    try:
        t0 = time.monotonic()
        got = wait_visible(cms, other, int(s.id), 1, 0.5)
        took = time.monotonic() - t0
    finally:
        other.stop()
    assert got.step == "behind" and got.state is None and got.token is not None
    assert 0.5 <= took < 0.5 + SLACK, took


def test_a_revision_that_will_never_be_visible_answers_at_once_with_why(
    store: WriteStore, ds: Any, consumer: Any, tmp_path: Path
) -> None:
    cms = CMS(store)
    s = cms.create_story(story(hero="a-0000000000000009"), user="ann")  # no such asset
    _worker(store, ds, tmp_path, Ingested()).drain(timeout=30)
    t0 = time.monotonic()
    got = wait_visible(cms, consumer, int(s.id), 1, 10)
    assert time.monotonic() - t0 < 2
    assert got.step == "invalid" and got.state is None
    assert any("a-0000000000000009" in e["message"] for e in got.errors)
    with pytest.raises(NotFound):
        wait_visible(cms, consumer, int(s.id), 7, 0.1)


def test_ingested_wakes_waiters_and_gives_up_on_time() -> None:
    ingested = Ingested()
    key = ("story", "1", 2)
    t0 = time.monotonic()
    assert ingested.finished_at(key, 0.3) is None
    assert 0.3 <= time.monotonic() - t0 < 0.3 + SLACK
    seen = ingested.wait_any(-1, 0)
    assert seen == 0

    def later() -> None:
        time.sleep(0.2)
        ingested(Event(1, "story", "1", 2, {}, 1, 0.0), None, None)

    threading.Thread(target=later).start()
    t0 = time.monotonic()
    at = ingested.finished_at(key, 10)
    assert at is not None and time.monotonic() - t0 < 5
    assert ingested.wait_any(seen, 0.01) == 1  # the count moved since ``seen``
    ingested(Event(2, "story", "3", 1, {}, 6, 0.0), None, RuntimeError("the disk is on fire"))
    assert ingested.count == 2 and ingested.failures == ["story 3: the disk is on fire"]
    assert ingested.finished_at(("story", "3", 1), 0) is None


def test_a_save_covered_by_a_later_one_counts_as_finished_with_it() -> None:
    from nearstate.content.ingest import Outcome

    ingested = Ingested()
    # event 1 (revision 2) read the story at revision 4: it covered revisions 3 and 4
    ingested(Event(1, "story", "7", 2, {}, 1, 0.0), Outcome(revision=4), None)
    at = ingested.at[("story", "7", 2)]
    assert ingested.finished_at(("story", "7", 3), 0) == at
    assert ingested.finished_at(("story", "7", 4), 0) == at
    assert ingested.finished_at(("story", "7", 5), 0.05) is None  # not yet saved
    assert ingested.finished_at(("story", "8", 3), 0) is None  # another story


def test_ingested_keeps_the_newest_finish_times_only() -> None:
    ingested = Ingested(keep=3)
    for i in range(5):
        ingested(Event(i, "story", str(i), 1, {}, 1, 0.0), None, None)
    assert ingested.count == 5
    assert sorted(k[1] for k in ingested.at) == ["2", "3", "4"]
    everything = Ingested(keep=None)
    for i in range(50):
        everything(Event(i, "story", str(i), 1, {}, 1, 0.0), None, None)
    assert len(everything.at) == 50
