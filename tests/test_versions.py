"""Versions: what producers publish and what consumers hold.

Every behaviour test runs twice, over the in-memory ports (MemoryBlobStore and
MemoryAnnouncer) and over a LocalDataset in a temporary directory:

* cycles: the first makes version 1 with a snapshot; a cycle that changes nothing makes no
  version and announces nothing; full-state and incremental cycles report exactly the keys
  they add, modify and remove (the last operation on a key wins, deleting a missing key and
  upserting an identical record change nothing);
* consumers: follow forward, move back by reverse deltas, pin and unpin, compact onto a
  snapshot; a reader holding an old state keeps reading it; listeners hear exactly the
  changed keys; late consumers load snapshot + deltas and equal those that followed;
* snapshots every N versions, schema changes (snapshot-only versions), references that
  re-bind across versions, find() on layered states;
* failures: validators, populate errors and publish errors fail the cycle at the right
  stage, announce nothing and leave the producer able to run the next cycle;
* restore, the one-producer lock, retention, ``updates()`` from asyncio, lag and sizes;
* a stateful property: random sequences of full and incremental cycles, checked against a
  model dict after every cycle (follower, late consumer, and a trip back in time).
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import nearstate
from nearstate import (
    Changes,
    Consumer,
    CountChange,
    CycleError,
    DatasetError,
    Field,
    FieldType,
    LayeredState,
    LocalDataset,
    LockedError,
    Producer,
    ReadState,
    Ref,
    RequiredFields,
    Schema,
    TypeDef,
    record,
)
from nearstate.backends import MemoryAnnouncer, MemoryBlobStore
from nearstate.producer import cleanup
from nearstate.versions import delta_name, record_name, reverse_name, snapshot_name
from versioned import ITEM, Model, item

# --- the data ---------------------------------------------------------------------------------


def base_model(n: int = 20) -> Model:
    return {i: item(i, score=i / 4 if i % 3 else None, tags=[f"t{i % 4}", "all"]) for i in range(n)}


def populate(model: Mapping[int, Mapping[str, Any]], type_name: str = "Item"):
    def fill(ws: nearstate.WriteState) -> None:
        ws.add_many(type_name, [dict(r) for r in model.values()])

    return fill


def full(p: Producer, model: Mapping[int, Mapping[str, Any]], **kw: Any):
    kw.setdefault("schema", ITEM)
    return p.run_cycle(populate(model), **kw)


def records(state: Any, type_name: str = "Item") -> dict[Any, dict[str, Any]]:
    return {r.key: r.to_dict() for r in state[type_name]}


def assert_holds(state: Any, model: Mapping[int, Mapping[str, Any]], type_name="Item") -> None:
    """``state`` holds exactly ``model``: iteration, len, get, keys and membership."""
    ts = state[type_name]
    assert records(state, type_name) == dict(model)
    assert len(ts) == len(model)
    assert sorted(ts.keys()) == sorted(model)
    for k, rec in model.items():
        assert k in ts
        assert ts.get(k).to_dict() == rec
    missing = max(model, default=0) + 1000
    assert ts.get(missing) is None
    assert missing not in ts


def norm(changes: Mapping[str, Changes] | None) -> dict[str, tuple[list, list, list]] | None:
    if changes is None:
        return None
    return {
        n: (sorted(c.added), sorted(c.modified), sorted(c.removed)) for n, c in changes.items() if c
    }


def net_changes(old: Mapping[Any, Any], new: Mapping[Any, Any]) -> tuple[list, list, list]:
    added = sorted(k for k in new if k not in old)
    modified = sorted(k for k in new if k in old and new[k] != old[k])
    removed = sorted(k for k in old if k not in new)
    return added, modified, removed


# --- the two pairs of ports -------------------------------------------------------------------


class CountingAnnouncer:
    """Passes everything to an announcer and counts the announcements."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.announced: list[int] = []

    def announce(self, announcement: dict[str, Any]) -> None:
        self.inner.announce(announcement)
        self.announced.append(int(announcement["version"]))

    def latest(self) -> dict[str, Any] | None:
        return self.inner.latest()

    def lock(self, holder: str) -> Any:
        return self.inner.lock(holder)

    def wait(self, newer_than: int | None, timeout: float) -> dict[str, Any] | None:
        return self.inner.wait(newer_than, timeout)


class FailingBlobStore:
    """Passes everything to a blob store; ``put`` raises for names starting with ``fail_on``."""

    def __init__(self, inner: Any, fail_on: str | None = None):
        self.inner = inner
        self.fail_on = fail_on
        self.puts: list[str] = []

    def put(self, name: str, parts: Iterable[Any]) -> int:
        if self.fail_on is not None and name.startswith(self.fail_on):
            raise OSError(f"disk full while writing {name}")
        self.puts.append(name)
        return self.inner.put(name, parts)

    def get(self, name: str) -> Any:
        return self.inner.get(name)

    def delete(self, name: str) -> None:
        self.inner.delete(name)

    def list(self, prefix: str = "") -> list[str]:
        return self.inner.list(prefix)


@dataclass
class Ports:
    kind: str
    blobs: Any
    announcer: Any
    dataset: LocalDataset | None
    producers: list[Producer]

    def producer(self, *, blobs: Any = None, announcer: Any = None, **kw: Any) -> Producer:
        kw.setdefault("retain_snapshots", None)
        if self.dataset is not None and blobs is None and announcer is None:
            p = self.dataset.producer(**kw)
        else:
            p = Producer(blobs or self.blobs, announcer or self.announcer, **kw)
        self.producers.append(p)
        return p

    def consumer(self, **kw: Any) -> Consumer:
        if self.dataset is not None:
            return self.dataset.consumer(**kw)
        return Consumer(self.blobs, self.announcer, **kw)

    def announced(self) -> int | None:
        a = self.announcer.latest()
        return None if a is None else int(a["version"])

    def names(self) -> list[str]:
        return self.blobs.list()


@pytest.fixture(params=["memory", "local"])
def ports(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ports]:
    if request.param == "memory":
        pt = Ports("memory", MemoryBlobStore(), MemoryAnnouncer(), None, [])
    else:
        ds = LocalDataset(tmp_path / "ds")
        pt = Ports("local", ds.blobs, ds.announcer, ds, [])
    yield pt
    for p in pt.producers:
        p.close()


def names_for(v: int, *, snapshot: bool, delta: bool) -> set[str]:
    out = {record_name(v)}
    if snapshot:
        out.add(snapshot_name(v))
    if delta:
        out |= {delta_name(v), reverse_name(v)}
    return out


# --- cycles -----------------------------------------------------------------------------------


def test_first_cycle_makes_version_1_with_a_snapshot(ports: Ports) -> None:
    p = ports.producer()
    assert p.version is None and p.state is None
    r = full(p, base_model())
    assert (r.version, r.previous, r.changes, r.snapshot) == (1, None, None, True)
    assert r.changed == -1
    assert set(ports.names()) == {snapshot_name(1), record_name(1)}
    assert set(r.blob_bytes) == {snapshot_name(1)} and r.blob_bytes[snapshot_name(1)] > 0
    assert set(r.timings_ms) >= {"populate", "diff", "write", "integrity", "validate",
                                 "publish", "announce"}  # fmt: skip
    assert ports.announced() == 1 and p.version == 1
    rec = json.loads(bytes(ports.blobs.get(record_name(1))))
    assert rec["version"] == 1 and rec["from"] is None and rec["snapshot"] == snapshot_name(1)
    assert rec["delta"] is None and rec["reverse"] is None and rec["changes"] is None
    c = ports.consumer()
    assert c.version is None
    assert c.refresh() is True
    assert isinstance(c.state, ReadState) and c.version == 1
    assert_holds(c.state, base_model())
    assert c.refresh() is False


def test_first_cycle_needs_a_schema(ports: Ports) -> None:
    p = ports.producer()
    with pytest.raises(CycleError) as ei:
        p.run_cycle(populate(base_model()))
    assert ei.value.stage == "populate"
    assert ports.announced() is None and ports.names() == []
    assert full(p, base_model()).version == 1


def test_unchanged_cycles_make_no_version_and_announce_nothing(ports: Ports) -> None:
    ann = CountingAnnouncer(ports.announcer)
    p = ports.producer(announcer=ann)
    model = base_model()
    full(p, model)
    assert ann.announced == [1]
    before = ports.names()
    # the same records in another order, staged without passing the schema again
    r = p.run_cycle(lambda ws: ws.add_many("Item", list(reversed(model.values()))))
    assert r.version is None and r.previous == 1 and r.changed == 0
    assert not r.snapshot
    r = full(p, model)
    assert r.version is None
    # incremental: identical upserts and deletes of missing keys
    r = p.run_incremental(lambda inc: (inc.upsert("Item", model[3]), inc.delete("Item", 999)))
    assert r.version is None and r.changed == 0
    r = p.run_incremental(lambda inc: None)
    assert r.version is None
    assert ann.announced == [1]
    assert ports.names() == before
    assert ports.announced() == 1 and p.version == 1


def test_full_cycle_reports_exact_changes(ports: Ports) -> None:
    p = ports.producer()
    old = base_model()
    full(p, old)
    c = ports.consumer()
    c.refresh()
    new = copy.deepcopy(old)
    del new[0], new[7]
    new[1]["name"] = "renamed"
    new[3]["score"] = 9.5  # None -> a value
    new[5]["score"] = None  # a value -> None
    new[6]["tags"] = list(reversed(new[6]["tags"]))  # the order of a list matters
    new[8]["tags"] = []
    new[100] = item(100, tags=["x"])
    new[101] = item(101, name="")
    r = full(p, new)
    assert r.version == 2 and r.previous == 1 and not r.snapshot
    assert norm(r.changes) == {"Item": ([100, 101], [1, 3, 5, 6, 8], [0, 7])}
    assert r.changed == 9
    assert norm(r.changes)["Item"] == net_changes(old, new)
    assert set(ports.names()) == names_for(1, snapshot=True, delta=False) | names_for(
        2, snapshot=False, delta=True
    )
    rec = json.loads(bytes(ports.blobs.get(record_name(2))))
    assert rec["from"] == 1 and rec["delta"] == delta_name(2) and rec["snapshot"] is None
    assert rec["changes"] == {"Item": {"added": 2, "modified": 5, "removed": 2}}
    assert c.refresh() is True
    assert isinstance(c.state, LayeredState) and c.version == 2
    assert_holds(c.state, new)


def test_incremental_cycles(ports: Ports) -> None:
    p = ports.producer()
    model = base_model()
    full(p, model)
    c = ports.consumer()
    c.refresh()

    def step(mutate: Callable[[nearstate.Incremental], Any], expect: tuple | None) -> None:
        r = p.run_incremental(mutate)
        if expect is None:
            assert r.version is None
        else:
            assert r.version == p.version == ports.announced()
            assert norm(r.changes) == {"Item": expect}
        c.refresh()
        assert_holds(c.state, model)

    # upsert a new key
    model[50] = item(50, tags=["new"])
    step(lambda inc: inc.upsert("Item", item(50, tags=["new"])), ([50], [], []))
    # modify
    model[2] = item(2, name="two", score=2.0)
    step(lambda inc: inc.upsert("Item", item(2, name="two", score=2.0)), ([], [2], []))
    # delete
    del model[4]
    step(lambda inc: inc.delete("Item", 4), ([], [], [4]))
    # deleting a missing key is ignored, alone or with other changes
    step(lambda inc: inc.delete("Item", 4), None)
    model[5] = item(5, name="five")
    step(lambda inc: (inc.delete("Item", 12345), inc.upsert("Item", item(5, name="five"))),
         ([], [5], []))  # fmt: skip
    # upserting a record identical to the current one is no change
    step(lambda inc: inc.upsert("Item", copy.deepcopy(model[6])), None)
    model[51] = item(51)
    step(lambda inc: (inc.upsert("Item", copy.deepcopy(model[6])), inc.upsert("Item", item(51))),
         ([51], [], []))  # fmt: skip

    # the last operation on a key wins
    def last_wins(inc: nearstate.Incremental) -> None:
        inc.upsert("Item", item(8, name="gone soon"))
        inc.delete("Item", 8)  # existing: upsert then delete -> removed
        inc.delete("Item", 9)
        inc.upsert("Item", item(9, name="nine"))  # delete then upsert -> modified
        inc.upsert("Item", item(60, name="first"))
        inc.upsert("Item", item(60, name="second"))  # new key upserted twice -> added, 2nd
        inc.upsert("Item", item(61))
        inc.delete("Item", 61)  # new key upserted then deleted -> nothing
        assert len(inc) == 4

    del model[8]
    model[9] = item(9, name="nine")
    model[60] = item(60, name="second")
    step(last_wins, ([60], [9], [8]))
    assert 61 not in c.state["Item"]


def test_incremental_needs_a_first_version(ports: Ports) -> None:
    p = ports.producer()
    with pytest.raises(CycleError) as ei:
        p.run_incremental(lambda inc: None)
    assert ei.value.stage == "populate"
    assert ports.announced() is None


# --- consumers --------------------------------------------------------------------------------


def make_history(p: Producer) -> dict[int, Model]:
    """Versions 1-4 (one snapshot, three deltas); returns the model of each version."""
    hist: dict[int, Model] = {}
    m = base_model()
    full(p, m)
    hist[1] = copy.deepcopy(m)
    m[100] = item(100, tags=["t1"])
    m[1]["name"] = "one"
    del m[2]
    full(p, m)
    hist[2] = copy.deepcopy(m)
    p.run_incremental(lambda inc: (inc.delete("Item", 100), inc.upsert("Item", item(2))))
    del m[100]
    m[2] = item(2)
    hist[3] = copy.deepcopy(m)
    p.run_incremental(lambda inc: inc.upsert("Item", item(3, tags=["t1", "x"])))
    m[3] = item(3, tags=["t1", "x"])
    hist[4] = copy.deepcopy(m)
    assert p.version == 4
    return hist


def test_consumer_follows_forward_and_moves_back_by_reverse_deltas(ports: Ports) -> None:
    p = ports.producer()
    c = ports.consumer()
    events: list[nearstate.RefreshEvent] = []
    c.add_listener(events.append)
    hist: dict[int, Model] = {}
    m = base_model()
    full(p, m)
    c.refresh()
    hist[1] = copy.deepcopy(m)
    for v in (2, 3, 4):
        m[v * 10] = item(v * 10)
        m[v]["name"] = f"v{v}"
        del m[v + 10]
        full(p, m)
        hist[v] = copy.deepcopy(m)
        assert c.refresh() is True and c.version == v
        assert_holds(c.state, m)
    assert [snapshot_name(1)] == ports.blobs.list("snapshots/")
    # back one version at a time, then in one jump, then forward again
    for v in (3, 2, 1):
        assert c.move_to(v) is True and c.version == v
        assert_holds(c.state, hist[v])
        assert events[-1].changes is not None  # by a reverse delta, not a snapshot
    assert c.move_to(4) and c.version == 4
    assert_holds(c.state, hist[4])
    assert c.move_to(1) and c.version == 1
    assert_holds(c.state, hist[1])
    assert c.move_to(1) is False
    # a consumer not following announcements: pinned at 1 until refreshed
    assert c.refresh() is True and c.version == 4
    for v in (2, 3, 4, 1, 3):
        c.move_to(v)
        assert_holds(c.state, hist[v])


def test_move_to_an_unknown_version_fails_and_keeps_the_state(ports: Ports) -> None:
    p = ports.producer()
    hist = make_history(p)
    c = ports.consumer()
    c.refresh()
    with pytest.raises(nearstate.NearstateError, match="version 9"):
        c.move_to(9)
    assert c.version == 4 and "9" in (c.last_error or "")
    assert_holds(c.state, hist[4])
    c.move_to(2)
    assert c.last_error is None


def test_pin_and_unpin(ports: Ports) -> None:
    p = ports.producer()
    hist = make_history(p)
    c = ports.consumer()
    c.refresh()
    c.pin(2)
    assert c.pinned == 2 and c.version == 2
    assert_holds(c.state, hist[2])
    m = copy.deepcopy(hist[4])
    m[200] = item(200)
    full(p, m)
    assert c.refresh() is False
    assert c.version == 2 and c.announced_version == 5 and c.lag == 3
    assert_holds(c.state, hist[2])
    c.unpin()
    assert c.pinned is None and c.version == 5 and c.lag == 0
    assert_holds(c.state, m)


@pytest.mark.parametrize("held", [1, 2], ids=["snapshot", "layered"])
def test_a_reader_keeps_the_version_it_took(ports: Ports, held: int) -> None:
    p = ports.producer()
    c = ports.consumer()
    m = base_model()
    full(p, m)
    c.refresh()
    old = copy.deepcopy(m)
    if held == 2:
        m[1]["tags"] = ["t1", "changed"]
        m[300] = item(300, tags=["all"])
        del m[4]
        full(p, m)
        c.refresh()
        old = copy.deepcopy(m)
    s = c.state
    assert s.version == held
    view = s["Item"].get(1)
    # the next versions change, add and remove records, including the ones read below
    m[1]["name"] = "moved on"
    m[1]["tags"] = ["other"]
    del m[5]
    m[301] = item(301, tags=["all"])
    full(p, m)
    p.run_incremental(lambda inc: (inc.delete("Item", 6), inc.upsert("Item", item(302))))
    c.refresh()
    assert c.version == held + 2
    assert s.version == held
    assert_holds(s, old)
    assert view.to_dict() == old[1] and view.name == old[1]["name"]
    assert sorted(r.key for r in s["Item"].find(tags="all")) == sorted(
        k for k, r in old.items() if "all" in r["tags"]
    )
    assert s["Item"].find_one(name="moved on") is None
    assert s["Item"].find_one(name=old[1]["name"]).key == 1
    assert [r.key for r in s["Item"].find(tags="other")] == []


def test_listeners_get_exactly_the_changed_keys(ports: Ports) -> None:
    p = ports.producer(snapshot_every=3)
    c = ports.consumer()
    events: list[nearstate.RefreshEvent] = []
    c.add_listener(events.append)
    seen: list[int] = []

    def failing(ev: nearstate.RefreshEvent) -> None:
        seen.append(ev.version)
        raise RuntimeError("a listener that fails does not stop the others")

    c.add_listener(failing)
    m = base_model()
    full(p, m)
    c.refresh()
    assert [(e.previous, e.version, e.changes) for e in events] == [(None, 1, None)]
    results = []
    for i in range(5):
        old = copy.deepcopy(m)
        m[i]["name"] = f"changed {i}"
        m[1000 + i] = item(1000 + i)
        del m[19 - i]
        results.append(full(p, m))
        assert c.refresh()
        ev = events[-1]
        assert (ev.previous, ev.version) == (i + 1, i + 2)
        assert norm(ev.changes) == norm(results[-1].changes) == {"Item": net_changes(old, m)}
        assert ev.duration_ms >= 0
    assert seen == [1, 2, 3, 4, 5, 6]
    c.remove_listener(failing)
    r = p.run_incremental(lambda inc: inc.delete("Item", 0))
    c.refresh()
    assert norm(events[-1].changes) == norm(r.changes) == {"Item": ([], [], [0])}
    assert seen[-1] == 6
    # a refresh that changes nothing calls nobody
    n = len(events)
    assert c.refresh() is False and len(events) == n


def test_listeners_get_the_net_changes_of_a_multi_version_move(ports: Ports) -> None:
    p = ports.producer()
    c = ports.consumer()
    events: list[nearstate.RefreshEvent] = []
    m = base_model()
    full(p, m)
    c.refresh()
    c.add_listener(events.append)
    old = copy.deepcopy(m)
    p.run_incremental(lambda inc: (inc.upsert("Item", item(100)), inc.upsert("Item", item(1, "a"))))
    p.run_incremental(
        lambda inc: (
            inc.delete("Item", 100),
            inc.upsert("Item", item(1, "b")),
            inc.delete("Item", 2),
        )
    )
    p.run_incremental(lambda inc: inc.upsert("Item", copy.deepcopy(old[2])))
    m[1] = item(1, "b")
    c.refresh()
    assert c.version == 4
    assert_holds(c.state, m)
    ch = events[-1].changes["Item"]
    for lst in (ch.added, ch.modified, ch.removed):
        assert len(lst) == len(set(lst)), ch
    assert not set(ch.added) & set(ch.removed), ch
    assert (sorted(ch.added), sorted(ch.removed)) == ([], [])
    assert 1 in ch.modified and set(ch.modified) <= {1, 2}


def test_snapshot_every_and_late_consumers(ports: Ports) -> None:
    p = ports.producer(snapshot_every=3)
    follower = ports.consumer()
    m = base_model()
    hist: dict[int, Model] = {}
    expected: set[str] = set()
    for v in range(1, 9):
        if v > 1:
            m[v]["name"] = f"v{v}"
            m[100 + v] = item(100 + v)
            del m[10 + v]
        r = full(p, m, snapshot=(v == 8))
        hist[v] = copy.deepcopy(m)
        assert r.version == v
        snap = v in (1, 4, 7, 8)  # every third from the first, and when asked for
        assert r.snapshot is snap
        assert (r.changes is None) is (v == 1)
        expected |= names_for(v, snapshot=snap, delta=v > 1)
        assert set(ports.names()) == expected
        follower.refresh()
        assert_holds(follower.state, m)
        late = ports.consumer()
        late.refresh()
        assert late.version == v
        assert records(late.state) == records(follower.state)
        base = max(s for s in (1, 4, 7, 8) if s <= v)
        assert late.state.base.version == base
        if v == base:
            assert isinstance(late.state, ReadState)
        else:
            assert isinstance(late.state, LayeredState) and len(late.state.layers) == v - base
    # the follower never reloaded a snapshot: it stacks deltas on version 1
    assert follower.state.base.version == 1
    # a late consumer can move anywhere
    late = ports.consumer()
    late.refresh()
    for v in (2, 6, 1, 5, 8, 3):
        late.move_to(v)
        assert_holds(late.state, hist[v])
    # and so can one that loads an old version first
    old = ports.consumer()
    old.move_to(5)
    assert old.state.base.version == 4
    assert_holds(old.state, hist[5])
    # a new producer counts the versions since the last snapshot from the store
    p.close()
    p2 = ports.producer(snapshot_every=3)
    m[500] = item(500)
    assert full(p2, m).snapshot is False  # 9
    m[501] = item(501)
    assert full(p2, m).snapshot is False  # 10
    m[502] = item(502)
    assert full(p2, m).snapshot is True  # 11


def test_a_version_retired_while_a_consumer_loads_it(ports: Ports) -> None:
    """A producer that keeps one snapshot publishes version 3, and so removes version 2,
    while a new consumer is loading version 2: the consumer goes for version 3 rather than
    failing (CI caught a reader on NATS failing this way behind a busy compactor)."""
    p = ports.producer(snapshot_every=1, retain_snapshots=1)
    m = base_model()
    full(p, m)
    m[1]["name"] = "two"
    full(p, m)
    assert ports.announced() == 2

    class Retiring(FailingBlobStore):
        """Publishes version 3 the first time version 2's snapshot is asked for."""

        def get(self, name: str) -> Any:
            if name == snapshot_name(2) and ports.announced() == 2:
                m[1]["name"] = "three"
                full(p, m)
                assert snapshot_name(2) not in self.inner.list()
            return self.inner.get(name)

    c = Consumer(Retiring(ports.blobs), ports.announcer)
    assert c.refresh() is True
    assert c.version == 3
    assert_holds(c.state, m)
    assert c.last_error is None
    # a version that is gone with nothing newer announced still fails plainly
    lone = Consumer(ports.blobs, ports.announcer)
    ports.blobs.delete(snapshot_name(3))
    with pytest.raises(nearstate.NearstateError, match="version 3"):
        lone.refresh()


def test_compaction_switches_to_a_snapshot(ports: Ports) -> None:
    p = ports.producer(snapshot_every=2)
    compacting = ports.consumer(compact_min=1, compact_ratio=0.0)
    plain = ports.consumer()
    events: list[nearstate.RefreshEvent] = []
    compacting.add_listener(events.append)
    m = base_model()
    for v in range(1, 6):
        if v > 1:
            m[v]["name"] = f"v{v}"
        r = full(p, m)
        assert r.snapshot is (v % 2 == 1)
        compacting.refresh()
        plain.refresh()
        assert records(compacting.state) == records(plain.state) == m
        if v == 2:
            assert isinstance(compacting.state, LayeredState)
        if v in (3, 5):
            # the layered state was compacted onto the new snapshot
            assert isinstance(compacting.state, ReadState) and compacting.state.version == v
            assert events[-1].changes is None
    assert plain.state.base.version == 1 and len(plain.state.layers) == 4
    # default thresholds (50,000 records) do not compact a small dataset
    assert isinstance(plain.state, LayeredState)


def test_schema_change_makes_a_snapshot_only_version(ports: Ports) -> None:
    p = ports.producer()
    c = ports.consumer()
    events: list[nearstate.RefreshEvent] = []
    c.add_listener(events.append)
    old = base_model()
    full(p, old)
    old2 = copy.deepcopy(old)
    old2[1]["name"] = "one"
    full(p, old2)
    c.refresh()
    wider = Schema(
        [
            TypeDef(
                "Item",
                (*ITEM["Item"].fields, Field("extra", FieldType("str", nullable=True))),
                key=("id",),
            )
        ]
    )
    new = {k: {**r, "extra": f"e{k}" if k % 2 else None} for k, r in old2.items()}
    r = p.run_cycle(populate(new), schema=wider)
    assert r.version == 3 and r.changes is None and r.snapshot is True
    assert r.changed == -1
    assert snapshot_name(3) in ports.names()
    assert delta_name(3) not in ports.names() and reverse_name(3) not in ports.names()
    assert c.refresh() is True and c.version == 3
    assert events[-1].changes is None and events[-1].previous == 2
    assert_holds(c.state, new)
    assert c.state["Item"].get(1).extra == "e1"
    late = ports.consumer()
    late.refresh()
    assert_holds(late.state, new)
    # back across the schema change: no reverse delta, so the older snapshot and deltas
    c.move_to(2)
    assert_holds(c.state, old2)
    c.move_to(1)
    assert_holds(c.state, old)
    c.move_to(3)
    assert_holds(c.state, new)
    # the next cycles are deltas again, in the new schema
    new[1]["extra"] = "changed"
    r = p.run_incremental(lambda inc: inc.upsert("Item", new[1]))
    assert r.version == 4 and norm(r.changes) == {"Item": ([], [1], [])} and not r.snapshot
    c.refresh()
    assert_holds(c.state, new)
    assert c.state.base.version == 3
    del new[2]
    assert norm(full(p, new, schema=None).changes) == {"Item": ([], [], [2])}
    c.refresh()
    assert_holds(c.state, new)


# --- references -------------------------------------------------------------------------------


@record(key="id")
@dataclass
class Person:
    id: int
    name: str


@record(key="id")
@dataclass
class Movie:
    id: int
    title: str
    director: Ref[Person]


MOVIES = Schema.from_dataclasses(Movie, Person)
PEOPLE = {i: {"id": i, "name": f"person {i}"} for i in range(4)}
FILMS = {i: {"id": i, "title": f"film {i}", "director": i % 4} for i in range(8)}


def movie_cycle(p: Producer, people: Model, films: Model):
    def fill(ws: nearstate.WriteState) -> None:
        ws.add_many("Person", list(people.values()))
        ws.add_many("Movie", list(films.values()))

    return p.run_cycle(fill, schema=MOVIES)


def test_references_rebind_to_the_new_target(ports: Ports) -> None:
    p = ports.producer()
    movie_cycle(p, PEOPLE, FILMS)
    c = ports.consumer()
    c.refresh()
    s1 = c.state
    assert s1["Movie"].get(1).director.name == "person 1"
    r = p.run_incremental(lambda inc: inc.upsert("Person", {"id": 1, "name": "renamed"}))
    assert norm(r.changes) == {"Person": ([], [1], [])}  # no Movie changed
    c.refresh()
    s2 = c.state
    for k in (1, 5):  # unchanged referrers read the target as it is now
        d = s2["Movie"].get(k).director
        assert d.key == 1 and d.name == "renamed"
        assert s2["Movie"].get(k).to_dict()["director"] == 1
    assert s1["Movie"].get(1).director.name == "person 1"  # the old version is untouched
    # a referrer changed in a delta, pointing at a target added in the same delta
    r = p.run_incremental(
        lambda inc: (
            inc.upsert("Person", {"id": 9, "name": "newcomer"}),
            inc.upsert("Movie", {"id": 2, "title": "film 2", "director": 9}),
        )
    )
    assert norm(r.changes) == {"Person": ([9], [], []), "Movie": ([], [2], [])}
    c.refresh()
    assert c.state["Movie"].get(2).director.name == "newcomer"
    # a full cycle changing the target only
    people = {**PEOPLE, 1: {"id": 1, "name": "renamed"}, 9: {"id": 9, "name": "newcomer"},
              3: {"id": 3, "name": "three"}}  # fmt: skip
    films = {**FILMS, 2: {"id": 2, "title": "film 2", "director": 9}}
    r = movie_cycle(p, people, films)
    assert norm(r.changes) == {"Person": ([], [3], [])}
    c.refresh()
    assert c.state["Movie"].get(3).director.name == "three"
    assert c.state["Movie"].get(7).director.name == "three"
    late = ports.consumer()
    late.refresh()
    assert records(late.state, "Movie") == records(c.state, "Movie") == films
    assert records(late.state, "Person") == people
    # and back: the reverse deltas re-bind too
    c.move_to(1)
    assert c.state["Movie"].get(5).director.name == "person 1"
    assert c.state["Movie"].get(2).director.name == "person 2"


def test_a_reference_to_a_missing_key_fails_at_diff(ports: Ports) -> None:
    p = ports.producer()
    movie_cycle(p, PEOPLE, FILMS)
    with pytest.raises(CycleError) as ei:
        p.run_incremental(lambda inc: inc.upsert("Movie", {"id": 20, "title": "x", "director": 42}))
    assert ei.value.stage == "diff"
    assert "42" in str(ei.value) and "Person" in str(ei.value)
    # a target deleted in the same cycle is missing too
    with pytest.raises(CycleError) as ei:
        p.run_incremental(
            lambda inc: (
                inc.delete("Person", 3),
                inc.upsert("Movie", {"id": 3, "title": "x", "director": 3}),
            )
        )
    assert ei.value.stage == "diff" and "Person 3" in str(ei.value)
    assert ports.announced() == 1 and p.version == 1
    r = p.run_incremental(lambda inc: inc.upsert("Movie", {"id": 20, "title": "x", "director": 0}))
    assert r.version == 2


@pytest.mark.parametrize("how", ["incremental", "full"])
def test_removing_a_referenced_target_is_refused(ports: Ports, how: str) -> None:
    p = ports.producer()
    movie_cycle(p, PEOPLE, FILMS)
    with pytest.raises(CycleError):
        if how == "incremental":
            p.run_incremental(lambda inc: inc.delete("Person", 2))
        else:
            movie_cycle(p, {k: v for k, v in PEOPLE.items() if k != 2}, FILMS)
    assert ports.announced() == 1


@record(key="id")
@dataclass
class Doc:
    id: int
    title: str = "untitled"
    score: float | None = None
    tags: list[str] = field(default_factory=list)


DOCS = Schema.from_dataclasses(Doc)


def test_scalar_defaults_apply_in_incremental_cycles(ports: Ports) -> None:
    p = ports.producer()
    p.run_cycle(lambda ws: ws.add_many("Doc", [{"id": 1, "tags": ["a"]}]), schema=DOCS)
    r = p.run_incremental(lambda inc: inc.upsert("Doc", {"id": 2, "tags": []}))
    assert r.version == 2
    c = ports.consumer()
    c.refresh()
    assert c.state["Doc"].get(2).to_dict() == {"id": 2, "title": "untitled", "score": None,
                                               "tags": []}  # fmt: skip


def test_collection_defaults_apply_in_incremental_cycles(ports: Ports) -> None:
    p = ports.producer()
    r = p.run_cycle(lambda ws: ws.add_many("Doc", [{"id": 1}]), schema=DOCS)
    assert r.version == 1  # the dataclass schema fills in tags=[]
    r = p.run_incremental(lambda inc: inc.upsert("Doc", {"id": 2}))
    assert r.version == 2
    c = ports.consumer()
    c.refresh()
    assert c.state["Doc"].get(2).to_dict()["tags"] == []


# --- find on layered states -------------------------------------------------------------------


def test_find_on_layered_states(ports: Ports) -> None:
    p = ports.producer()
    m = base_model()
    full(p, m)
    c = ports.consumer()
    c.refresh()
    s1 = c.state
    assert len(s1["Item"].find(tags="all")) == 20  # build the snapshot's indexes first

    def check(state: Any, model: Model) -> None:
        ts = state["Item"]
        tags = {t for r in model.values() for t in r["tags"]} | {"t0", "t1", "t2", "t3", "zz"}
        for t in sorted(tags):
            want = sorted(k for k, r in model.items() if t in r["tags"])
            assert sorted(r.key for r in ts.find(tags=t)) == want, t
            assert sorted(ts.index("tags").ordinals(t).tolist()) == sorted(
                r.ordinal for r in ts.find(tags=t)
            )
        names = {r["name"] for r in model.values()} | {"item 4", "nobody"}
        for n in sorted(names):
            want = sorted(k for k, r in model.items() if r["name"] == n)
            assert sorted(r.key for r in ts.find(name=n)) == want, n
            one = ts.find_one(name=n)
            assert (one is None) == (not want)
            if one is not None:
                assert one.key in want and one.to_dict() == model[one.key]
        for t in ("t1", "all", "new"):
            for n in ("item 1", "renamed", "item 9"):
                want = sorted(k for k, r in model.items() if r["name"] == n and t in r["tags"])
                assert sorted(r.key for r in ts.find(name=n, tags=t)) == want
        for score in (None, 0.25, 9.0):
            want = sorted(k for k, r in model.items() if r["score"] == score)
            assert sorted(r.key for r in ts.find(score=score)) == want

    check(s1, m)

    def mutate(inc: nearstate.Incremental) -> None:
        inc.upsert("Item", item(1, name="renamed", score=9.0, tags=["new"]))  # leaves t1, all
        inc.upsert("Item", item(9, tags=["t1", "t1", "new"]))  # gains t1 (twice), loses all
        inc.upsert("Item", item(200, name="item 1", tags=["t1", "all"]))  # added
        inc.upsert("Item", item(201, name="renamed", score=0.25, tags=[]))
        inc.delete("Item", 5)  # t1, all
        inc.delete("Item", 4)  # "item 4" gone

    p.run_incremental(mutate)
    m[1] = item(1, name="renamed", score=9.0, tags=["new"])
    m[9] = item(9, tags=["t1", "t1", "new"])
    m[200] = item(200, name="item 1", tags=["t1", "all"])
    m[201] = item(201, name="renamed", score=0.25, tags=[])
    del m[5], m[4]
    c.refresh()
    assert isinstance(c.state, LayeredState)
    check(c.state, m)
    # a second delta over the first: modify an overlay record, remove an added one
    p.run_incremental(
        lambda inc: (inc.upsert("Item", item(200, tags=["zz"])), inc.delete("Item", 201))
    )
    m[200] = item(200, tags=["zz"])
    del m[201]
    c.refresh()
    check(c.state, m)
    # re-adding a removed key
    p.run_incremental(lambda inc: inc.upsert("Item", item(5, name="back", tags=["all"])))
    m[5] = item(5, name="back", tags=["all"])
    c.refresh()
    check(c.state, m)
    check(s1, base_model())


# --- failed cycles ----------------------------------------------------------------------------


def assert_failed_cleanly(ports: Ports, p: Producer, before: list[str], version: int) -> None:
    assert ports.announced() == version
    assert p.version == version
    assert ports.names() == before


def test_count_change_refuses_a_big_drop(ports: Ports) -> None:
    p = ports.producer(validators=[CountChange(max_fraction=0.5, min_records=10)])
    m = base_model(20)
    full(p, m)
    before = ports.names()
    small = {k: v for k, v in m.items() if k < 5}
    with pytest.raises(CycleError) as ei:
        full(p, small)
    assert ei.value.stage == "validate"
    assert "Item" in str(ei.value) and "20" in str(ei.value) and "5" in str(ei.value)
    assert_failed_cleanly(ports, p, before, 1)
    # incremental deletes count too
    with pytest.raises(CycleError) as ei:
        p.run_incremental(lambda inc: [inc.delete("Item", k) for k in range(11)])
    assert ei.value.stage == "validate"
    assert_failed_cleanly(ports, p, before, 1)
    # a smaller change passes, and so does a big one below min_records
    smaller = {k: v for k, v in m.items() if k < 12}
    assert full(p, smaller).version == 2
    c = ports.consumer()
    c.refresh()
    assert_holds(c.state, smaller)


def test_required_fields(ports: Ports) -> None:
    p = ports.producer(validators=[RequiredFields({"Item": ["name", "tags"]})])
    m = base_model(5)
    full(p, m)
    before = ports.names()
    bad = copy.deepcopy(m)
    bad[3]["name"] = ""
    with pytest.raises(CycleError) as ei:
        full(p, bad)
    assert ei.value.stage == "validate"
    assert "'name'" in str(ei.value) and "3" in str(ei.value)
    assert_failed_cleanly(ports, p, before, 1)
    with pytest.raises(CycleError) as ei:
        p.run_incremental(lambda inc: inc.upsert("Item", item(7, tags=[])))
    assert ei.value.stage == "validate" and "'tags'" in str(ei.value)
    assert_failed_cleanly(ports, p, before, 1)
    r = p.run_incremental(lambda inc: inc.upsert("Item", item(7, tags=["ok"])))
    assert r.version == 2


def test_user_validators(ports: Ports) -> None:
    calls: list[nearstate.producer.CycleContext] = []

    def no_item_13(ctx: nearstate.producer.CycleContext) -> str | None:
        calls.append(ctx)
        for rec in ctx.records("Item"):
            if rec["id"] == 13:
                return "item 13 is unlucky"
        return None

    def at_most(ctx: nearstate.producer.CycleContext) -> list[str]:
        return [f"{n}: {c} records" for n, c in ctx.counts.items() if c > 30]

    def crashes(ctx: nearstate.producer.CycleContext) -> None:
        if ctx.counts.get("Item") == 29:
            raise ZeroDivisionError("validator bug")

    p = ports.producer(validators=[no_item_13, at_most, crashes])
    m = base_model(20)
    m.pop(13)
    full(p, m)
    assert calls[-1].previous is None and calls[-1].changes is None
    assert calls[-1].counts == {"Item": 19}
    before = ports.names()
    with pytest.raises(CycleError) as ei:
        p.run_incremental(lambda inc: inc.upsert("Item", item(13)))
    assert ei.value.stage == "validate" and "item 13 is unlucky" in str(ei.value)
    assert_failed_cleanly(ports, p, before, 1)
    big = {**m, **{k: item(k) for k in range(100, 112)}}
    with pytest.raises(CycleError) as ei:
        full(p, big)
    assert ei.value.stage == "validate" and "Item: 31 records" in str(ei.value)
    assert_failed_cleanly(ports, p, before, 1)
    both = {**big, 13: item(13)}
    with pytest.raises(CycleError) as ei:
        full(p, both)
    assert "item 13 is unlucky" in str(ei.value) and "32 records" in str(ei.value)
    with pytest.raises(CycleError) as ei:
        full(p, {**m, **{k: item(k) for k in range(100, 110)}})
    assert ei.value.stage == "validate" and "ZeroDivisionError" in str(ei.value)
    assert isinstance(ei.value.__cause__, ZeroDivisionError)
    assert_failed_cleanly(ports, p, before, 1)
    ok = {**m, 100: item(100)}
    r = full(p, ok)
    assert r.version == 2
    ctx = calls[-1]
    assert ctx.previous is not None and ctx.previous.version == 1
    assert norm(ctx.changes) == {"Item": ([100], [], [])}
    c = ports.consumer()
    c.refresh()
    assert_holds(c.state, ok)


def test_a_failure_in_populate(ports: Ports) -> None:
    p = ports.producer()
    full(p, base_model())
    before = ports.names()

    def broken(ws: nearstate.WriteState) -> None:
        ws.add("Item", item(1))
        raise KeyError("upstream went away")

    with pytest.raises(CycleError) as ei:
        p.run_cycle(broken)
    assert ei.value.stage == "populate" and "upstream went away" in str(ei.value)
    assert isinstance(ei.value.__cause__, KeyError)
    with pytest.raises(CycleError) as ei:
        p.run_cycle(lambda ws: ws.add("Item", {"id": 1, "name": 5, "score": None, "tags": []}))
    assert ei.value.stage == "populate"
    for mutate in (
        lambda inc: inc.upsert("Nope", item(1)),
        lambda inc: inc.upsert("Item", {"name": "no key"}),
        lambda inc: 1 / 0,
    ):
        with pytest.raises(CycleError) as ei:
            p.run_incremental(mutate)
        assert ei.value.stage == "populate"
    # a bad record is only found when staged: the diff stage
    with pytest.raises(CycleError) as ei:
        p.run_incremental(lambda inc: inc.upsert("Item", {**item(1), "name": None}))
    assert ei.value.stage == "diff"
    assert_failed_cleanly(ports, p, before, 1)
    r = p.run_incremental(lambda inc: inc.upsert("Item", item(1, name="fine")))
    assert r.version == 2


@pytest.mark.parametrize("fail_on", ["deltas/", "reverse/", "versions/"])
def test_a_failure_at_publish(ports: Ports, fail_on: str) -> None:
    store = FailingBlobStore(ports.blobs)
    ann = CountingAnnouncer(ports.announcer)
    p = ports.producer(blobs=store, announcer=ann)
    m = base_model()
    full(p, m)
    c = ports.consumer()
    c.refresh()
    store.fail_on = fail_on
    bad = copy.deepcopy(m)
    bad[1]["name"] = "never announced"
    with pytest.raises(CycleError) as ei:
        full(p, bad)
    assert ei.value.stage == "publish"
    assert "disk full" in str(ei.value) and fail_on in str(ei.value)
    assert ann.announced == [1] and ports.announced() == 1
    assert p.version == 1 and records(p.state) == m
    assert c.refresh() is False and c.version == 1
    # the next cycle succeeds, with the same version number, over any leftover blob
    store.fail_on = None
    good = copy.deepcopy(m)
    good[2]["name"] = "announced"
    r = full(p, good)
    assert r.version == 2 and norm(r.changes) == {"Item": ([], [2], [])}
    assert ann.announced == [1, 2]
    assert c.refresh() is True
    assert_holds(c.state, good)
    late = ports.consumer()
    late.refresh()
    assert_holds(late.state, good)
    c.move_to(1)
    assert_holds(c.state, m)


def test_a_failure_at_announce(ports: Ports) -> None:
    class Refusing(CountingAnnouncer):
        fail = False

        def announce(self, announcement: dict[str, Any]) -> None:
            if self.fail:
                raise ConnectionError("announcer unreachable")
            super().announce(announcement)

    ann = Refusing(ports.announcer)
    p = ports.producer(announcer=ann)
    m = base_model()
    full(p, m)
    ann.fail = True
    m2 = {**m, 100: item(100)}
    with pytest.raises(CycleError) as ei:
        full(p, m2)
    assert ei.value.stage == "announce" and p.version == 1 and ports.announced() == 1
    ann.fail = False
    assert full(p, m2).version == 2
    c = ports.consumer()
    c.refresh()
    assert_holds(c.state, m2)


# --- restore, lock, retention -----------------------------------------------------------------


def test_a_new_producer_continues_from_the_announced_version(ports: Ports) -> None:
    p = ports.producer()
    hist = make_history(p)
    p.close()
    p2 = ports.producer()
    assert p2.version == 4
    assert records(p2.state) == hist[4]
    m = copy.deepcopy(hist[4])
    m[1]["name"] = "restored"
    r = full(p2, m, schema=None)  # the schema comes from the stored version
    assert (r.version, r.previous) == (5, 4)
    assert norm(r.changes) == {"Item": ([], [1], [])}
    r = p2.run_incremental(lambda inc: inc.delete("Item", 3))
    assert r.version == 6 and norm(r.changes) == {"Item": ([], [], [3])}
    del m[3]
    p2.close()
    p3 = ports.producer()
    assert p3.version == 6
    assert full(p3, m).version is None
    c = ports.consumer()
    c.refresh()
    assert_holds(c.state, m)


def test_only_one_producer_at_a_time(ports: Ports) -> None:
    p = ports.producer()
    full(p, base_model())
    with pytest.raises(LockedError) as ei:
        ports.producer()
    assert "another producer" in str(ei.value)
    assert isinstance(ei.value, DatasetError)
    p.close()
    p.close()  # idempotent
    with ports.producer() as p2:
        assert p2.version == 1
        with pytest.raises(LockedError):
            ports.producer()
    p3 = ports.producer()
    assert p3.version == 1


def test_cleanup_keeps_the_newest_snapshots(ports: Ports) -> None:
    p = ports.producer(snapshot_every=2)
    m = base_model()
    hist = {}
    for v in range(1, 8):
        if v > 1:
            m[v]["name"] = f"v{v}"
        full(p, m)
        hist[v] = copy.deepcopy(m)
    follower = ports.consumer()
    follower.refresh()
    everything = set(ports.names())
    assert ports.blobs.list("snapshots/") == [snapshot_name(v) for v in (1, 3, 5, 7)]
    gone = cleanup(ports.blobs, keep_snapshots=2)
    kept = set(ports.names())
    assert set(gone) == everything - kept
    assert kept == (
        {snapshot_name(5), snapshot_name(7)}
        | {delta_name(6), delta_name(7), reverse_name(6), reverse_name(7)}
        | {record_name(v) for v in (5, 6, 7)}
    )
    assert cleanup(ports.blobs, keep_snapshots=2) == []
    with pytest.raises(ValueError):
        cleanup(ports.blobs, keep_snapshots=0)
    for v in (7, 6, 5):
        c = ports.consumer()
        c.move_to(v)
        assert_holds(c.state, hist[v])
    c = ports.consumer()
    with pytest.raises(DatasetError):
        c.move_to(4)
    assert c.version is None
    follower.move_to(5)
    assert_holds(follower.state, hist[5])
    if ports.dataset is not None:
        assert ports.dataset.versions() == [5, 6, 7]
        assert records(ports.dataset.load()) == hist[7]
    # the producer keeps going after a cleanup, and retains on its own when asked to
    p.close()
    p2 = ports.producer(snapshot_every=2, retain_snapshots=1)
    m[1]["name"] = "v8"
    assert full(p2, m).snapshot is False
    m[1]["name"] = "v9"
    assert full(p2, m).snapshot is True
    assert ports.blobs.list("snapshots/") == [snapshot_name(9)]
    assert ports.names() == [snapshot_name(9), record_name(9)]
    c = ports.consumer()
    c.refresh()
    assert_holds(c.state, m)


# --- following announcements ------------------------------------------------------------------


def test_updates_from_asyncio(ports: Ports) -> None:
    p = ports.producer()
    m = base_model()
    full(p, m)
    c = ports.consumer(retry_interval=0.05)
    m2 = {**m, 100: item(100)}
    errors: list[BaseException] = []

    def publish() -> None:
        try:
            full(p, m2)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    async def follow() -> list[int]:
        seen: list[int] = []
        threads = []
        agen = c.updates(poll=0.05)
        try:
            async for s in agen:
                seen.append(s.version)
                if s.version == 1:
                    assert_holds(s, m)
                    t = threading.Thread(target=publish)
                    t.start()
                    threads.append(t)
                else:
                    assert_holds(s, m2)
                    break
        finally:
            await agen.aclose()
            for t in threads:
                t.join(10)
        return seen

    seen = asyncio.run(asyncio.wait_for(follow(), timeout=20))
    assert not errors
    assert seen == [1, 2]
    assert c.version == 2


def test_updates_from_asyncio_with_a_background_thread(ports: Ports) -> None:
    p = ports.producer()
    m = base_model()
    full(p, m)
    c = ports.consumer(retry_interval=0.05)
    c.start(timeout=10)
    try:

        async def follow() -> list[int]:
            seen: list[int] = []
            agen = c.updates(poll=0.05)
            try:
                async for s in agen:
                    seen.append(s.version)
                    if s.version == 3:
                        break
                    await asyncio.to_thread(
                        p.run_incremental, lambda inc, v=s.version: inc.upsert("Item", item(v))
                    )
            finally:
                await agen.aclose()
            return seen

        assert asyncio.run(asyncio.wait_for(follow(), timeout=20)) == [1, 2, 3]
    finally:
        c.stop()


def test_background_consumer_follows_the_producer(ports: Ports) -> None:
    p = ports.producer()
    m = base_model()
    c = ports.consumer(retry_interval=0.05)
    with pytest.raises(DatasetError, match="no version loaded"):
        c.start(timeout=0.2)  # nothing announced yet
    full(p, m)
    assert c.wait_for_version(1, 10)
    try:
        for v in range(2, 5):
            p.run_incremental(lambda inc, v=v: inc.upsert("Item", item(v, name=f"v{v}")))
            m[v] = item(v, name=f"v{v}")
            assert c.wait_for_version(v, 10)
            assert c.version == v
            assert_holds(c.state, m)
        assert c.wait_for_version(9, 0.05) is False
    finally:
        c.stop()
    full(p, {**m, 99: item(99)})
    assert c.version == 4  # stopped: no longer follows


def test_lag_last_refresh_and_sizes(ports: Ports) -> None:
    p = ports.producer()
    c = ports.consumer()
    assert c.lag == 0 and c.last_refresh is None and c.last_error is None
    assert c.bytes_per_type() == {}
    with pytest.raises(DatasetError):
        _ = c.state
    assert c.refresh() is False  # nothing announced
    m = base_model(200)
    full(p, m)
    t0 = time.time()
    c.refresh()
    assert c.lag == 0
    assert c.last_refresh is not None and t0 - 1 <= c.last_refresh <= time.time() + 1
    sizes = c.bytes_per_type()
    assert set(sizes) == {"Item"} and sizes["Item"] > 0
    assert sizes["Item"] <= c.state.nbytes
    c.pin(1)
    for v in (2, 3):
        m[v]["name"] = "x" * 200
        full(p, m)
    c.refresh()
    assert c.lag == 2 and c.version == 1
    first = c.last_refresh
    c.unpin()
    assert c.lag == 0 and c.version == 3
    assert c.last_refresh >= first
    layered = c.bytes_per_type()
    assert layered["Item"] > sizes["Item"]  # the snapshot plus the delta layers
    assert isinstance(c.state, LayeredState)
    assert c.state.nbytes == c.state.base.nbytes + sum(x.nbytes for x in c.state.layers)


# --- a stateful property ----------------------------------------------------------------------

keys_st = st.integers(0, 12)
record_st = st.fixed_dictionaries(
    {
        "name": st.text(max_size=6),
        "score": st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False).map(lambda x: x + 0.0)),
        "tags": st.lists(st.sampled_from(["a", "b", "c", "dé", ""]), max_size=3),
    }
)
op_st = st.one_of(
    st.tuples(st.just("upsert"), keys_st, record_st),
    st.tuples(st.just("delete"), keys_st, st.none()),
)


class VersionsMachine(RuleBasedStateMachine):
    """Random full and incremental cycles against a model dict; after every cycle the
    follower, a late consumer and a trip back in time must all agree with the model."""

    kind = "memory"

    def __init__(self) -> None:
        super().__init__()
        self.tmp: str | None = None
        if self.kind == "memory":
            self.blobs: Any = MemoryBlobStore()
            self.announcer: Any = MemoryAnnouncer()
        else:
            shm = Path("/dev/shm")
            fast = shm.is_dir() and os.access(shm, os.W_OK)
            self.tmp = tempfile.mkdtemp(dir=shm if fast else None)
            ds = LocalDataset(self.tmp)
            self.blobs, self.announcer = ds.blobs, ds.announcer
        self.producer: Producer | None = None
        self.model: Model = {}
        self.history: dict[int, Model] = {}
        self.follower = Consumer(self.blobs, self.announcer)
        self.traveller = Consumer(self.blobs, self.announcer)

    @initialize(
        snapshot_every=st.integers(1, 4),
        first=st.dictionaries(keys_st, record_st, min_size=1, max_size=8),
    )
    def first_version(self, snapshot_every: int, first: dict[int, dict]) -> None:
        self.producer = Producer(
            self.blobs, self.announcer, snapshot_every=snapshot_every, retain_snapshots=None
        )
        self.model = {k: {"id": k, **r} for k, r in first.items()}
        r = full(self.producer, self.model)
        assert r.version == 1
        self.history[1] = copy.deepcopy(self.model)
        self.check()

    @rule(
        new=st.dictionaries(keys_st, record_st, max_size=10),
        keep=st.sets(keys_st),
        snapshot=st.booleans(),
    )
    def full_cycle(self, new: dict[int, dict], keep: set[int], snapshot: bool) -> None:
        assert self.producer is not None
        nxt = {k: v for k, v in self.model.items() if k in keep}
        nxt.update({k: {"id": k, **r} for k, r in new.items()})
        r = full(self.producer, nxt, snapshot=snapshot)
        self.after(r, nxt)

    @rule(ops=st.lists(op_st, max_size=6))
    def incremental_cycle(self, ops: list[tuple[str, int, dict | None]]) -> None:
        assert self.producer is not None
        nxt = copy.deepcopy(self.model)

        def mutate(inc: nearstate.Incremental) -> None:
            for kind, k, rec in ops:
                if kind == "upsert":
                    inc.upsert("Item", {"id": k, **rec})
                else:
                    inc.delete("Item", k)

        for kind, k, rec in ops:
            if kind == "upsert":
                nxt[k] = {"id": k, **rec}
            else:
                nxt.pop(k, None)
        r = self.producer.run_incremental(mutate)
        self.after(r, nxt)

    def after(self, r: nearstate.CycleResult, nxt: Model) -> None:
        old = self.model
        if nxt == old:
            assert r.version is None
            return
        assert r.version == max(self.history) + 1
        if r.changes is not None:
            assert norm(r.changes) == ({"Item": net_changes(old, nxt)} if nxt != old else {})
        self.model = nxt
        self.history[r.version] = copy.deepcopy(nxt)
        self.check()

    @rule(data=st.data())
    def travel(self, data: st.DataObject) -> None:
        if not self.history:
            return
        v = data.draw(st.sampled_from(sorted(self.history)))
        self.traveller.move_to(v)
        assert self.traveller.version == v
        assert records(self.traveller.state) == self.history[v]

    def check(self) -> None:
        latest = max(self.history)
        self.follower.refresh()
        assert self.follower.version == latest
        assert_holds(self.follower.state, self.model)
        late = Consumer(self.blobs, self.announcer)
        late.refresh()
        assert late.version == latest
        assert records(late.state) == self.model
        # the traveller goes back to a random earlier version (reverse deltas, or a
        # snapshot), then forward again with the announcements
        back = latest - 1 - (len(self.model) * 7 + latest) % max(1, latest - 1)
        if back >= 1:
            self.traveller.move_to(back)
            assert records(self.traveller.state) == self.history[back]
        self.traveller.refresh()
        assert records(self.traveller.state) == self.model

    @invariant()
    def producer_state_matches(self) -> None:
        if self.producer is not None and self.history:
            assert self.producer.version == max(self.history)
            assert records(self.producer.state) == self.model

    def teardown(self) -> None:
        if self.producer is not None:
            self.producer.close()
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)


STATEFUL = settings(
    max_examples=25,
    stateful_step_count=8,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class LocalVersionsMachine(VersionsMachine):
    kind = "local"


TestVersionsMemory = VersionsMachine.TestCase
TestVersionsMemory.settings = STATEFUL
TestVersionsLocal = LocalVersionsMachine.TestCase
TestVersionsLocal.settings = STATEFUL


def test_a_consumer_with_its_own_schema_reads_deltas_with_it(tmp_path: Path) -> None:
    """A reader whose schema widened a field and added one reads snapshot and delta records
    alike through it."""
    recs = [{"id": i, "title": f"t{i}", "n": i} for i in range(50)]
    ds = LocalDataset(tmp_path / "ds")
    sch = nearstate.infer_schema(recs, type_name="F", key="id")
    with ds.producer() as p:
        p.run_cycle(lambda ws: ws.add_many("F", recs), schema=sch)
        p.run_incremental(lambda inc: inc.upsert("F", {"id": 3, "title": "three", "n": 3}))
    widened = [Field("n", FieldType("float")) if f.name == "n" else f for f in sch["F"].fields]
    fields = (*widened, Field("extra", FieldType("str"), default="x"))
    c = ds.consumer(schema=Schema([TypeDef("F", fields, ("id",))]))
    c.refresh()
    assert isinstance(c.state, nearstate.LayeredState)
    assert c.state["F"].get(3).to_dict() == {"id": 3, "title": "three", "n": 3.0, "extra": "x"}
    assert c.state["F"].get(4).to_dict() == {"id": 4, "title": "t4", "n": 4.0, "extra": "x"}


def test_a_layer_rebuilds_only_the_types_it_changes_or_that_refer_to_them() -> None:
    """A layer that changes one type takes the other types' reading states over as they
    are (what readers derived from them stays valid), except a type whose references
    lead to a changed type: that one re-binds them, so its records see the change."""
    from nearstate.overlay import lay_over
    from versioned import Article, Person

    schema = nearstate.Schema.from_dataclasses(Article, Person)
    ws = nearstate.WriteState(schema)
    ws.add("Person", Person(1, "Ann"))
    ws.add("Person", Person(2, "Bo"))
    ws.add("Article", Article("a", "first", 1, [2]))
    base = nearstate.from_bytes(_snapshot_bytes(ws))
    art = {"id": "a", "title": "edited", "author": 1, "editors": [2]}
    s1, _ = lay_over(base, {"Article": {"a": art}}, name="l1")
    s2, _ = lay_over(s1, {"Article": {"b": {**art, "id": "b", "title": "second"}}}, name="l2")
    assert s2["Article"] is not s1["Article"]  # changed: rebuilt
    # Person did not change and refers to nothing: taken over (or never layered at all)
    assert s2["Person"] is s1["Person"]
    s3, _ = lay_over(s2, {"Person": {1: {"id": 1, "name": "Ann B."}}}, name="l3")
    assert s3["Person"] is not s2["Person"]
    # Article did not change, but refers to Person: rebuilt, and reads the new name
    assert s3["Article"] is not s2["Article"]
    assert s3["Article"].get("a").author.name == "Ann B."
    assert s2["Article"].get("a").author.name == "Ann"  # the older version is unchanged
    s4, _ = lay_over(s3, {"Article": {"b": None}}, name="l4")
    assert s4["Person"] is s3["Person"] and "b" not in s4["Article"]
    assert [a.title for a in s4["Article"]] == ["edited"]


def test_log_layers_work_out_their_checksums_only_when_asked() -> None:
    """A layer of Log entries computes no digests on the commit path; asked afterwards, a
    state's checksums are those of encoding every record afresh, a filtered state's left
    out types keep the claims they carried, and the layer's digests were made on the ask."""
    from nearstate.overlay import lay_over
    from versioned import Article, Person

    schema = nearstate.Schema.from_dataclasses(Article, Person)
    ws = nearstate.WriteState(schema)
    for i in range(1, 6):
        ws.add("Person", Person(i, f"P{i}"))
    ws.add("Article", Article("a", "first", 1, [2]))
    blob = _snapshot_bytes(ws)
    art = {"id": "a", "title": "edited", "author": 3, "editors": [2, 4]}
    steps = [
        {"Article": {"a": art, "b": {**art, "id": "b"}}},
        {"Person": {2: {"id": 2, "name": "Bo"}, 5: None, 9: {"id": 9, "name": "Nine"}}},
        {"Article": {"b": None}, "Person": {9: {"id": 9, "name": "Nine again"}}},
        {"Person": {2: {"id": 2, "name": "P2"}}},  # back to the snapshot's record
    ]
    state = nearstate.from_bytes(blob)
    people = []  # Person's checksum after each step
    for i, net in enumerate(steps):
        state, _ = lay_over(state, net, name=f"log {i}")
        layer_types = state.layers[-1].state.types.values()
        assert all(t._digests is None for t in layer_types)  # nothing digested yet
        again = nearstate.WriteState(schema)
        for name in ("Person", "Article"):
            again.add_many(name, [r.to_dict() for r in state[name]])
        assert state.checksums() == again.checksums(), i
        people.append(state.checksums()["Person"])
    # a filtered state: the left-out type's checksum is the claim, carried through layers
    only = nearstate.from_bytes(blob, types=["Person"])
    claim = only.checksums()["Article"]
    s = only
    for i, net in enumerate(steps):
        s, _ = lay_over(s, {t: m for t, m in net.items() if t == "Person"}, name=f"f{i}")
        assert s.checksums() == {"Article": claim, "Person": people[i]}


def test_staging_without_dedupe_keeps_copies_and_the_same_digests() -> None:
    """``WriteState(dedupe=False)`` (a reader's Log layer) stages a nested record per use
    instead of once per distinct value; what the records read and digest to is the same."""
    fields = (Field("x", FieldType("int")), Field("y", FieldType("float")))
    inner = TypeDef("In", fields)
    item = FieldType("list", item=FieldType("record", target="In"))
    outer = TypeDef("Out", (Field("id", FieldType("int")), Field("items", item)), key=("id",))
    schema = Schema([outer, inner])
    recs = [{"id": i, "items": [{"x": 1, "y": 0.0}, {"x": 1, "y": -0.0}, {"x": i, "y": 2.5}]}
            for i in range(3)]  # fmt: skip
    once, copies = nearstate.WriteState(schema), nearstate.WriteState(schema, dedupe=False)
    once.add_many("Out", recs)
    copies.add_many("Out", recs)
    copies.add("Out", {"id": 9, "items": [{"x": 1, "y": 0.0}]})
    once.add("Out", {"id": 9, "items": [{"x": 1, "y": 0.0}]})
    assert once.count("In") == 5 and copies.count("In") == 10
    assert list(once.digests("Out")) == list(copies.digests("Out"))
    a, b = (
        nearstate.from_bytes(_snapshot_bytes(once)),
        nearstate.from_bytes(_snapshot_bytes(copies)),
    )
    assert [r.to_dict() for r in a["Out"]] == [r.to_dict() for r in b["Out"]]


def test_a_log_stage_takes_logged_records_as_they_are_and_hands_over_the_rest() -> None:
    """The Log layer's stager (overlay.LogStage) stages records as the Log gives them
    (msgpack) into the same columns and digests as WriteState, without its checks; a
    record it does not expect (a wrong type, an unknown field, a missing required one)
    stages nothing and is left to WriteState, which names what is wrong."""
    import datetime as dt

    import msgspec

    from nearstate.content.records import SCHEMA
    from nearstate.overlay import LogStage

    img = {"asset": "a1", "alt": "x", "width": 8, "height": 6, "focal_x": 0.5, "focal_y": 1,
           "small": "s", "medium": "m", "large": "l"}  # fmt: skip
    card = {"id": 5, "slug": "t-5", "name": "T", "year": None, "genres": ["Drama"], "poster": img}
    at = dt.datetime(2026, 12, 7, 9, 30, tzinfo=dt.UTC)
    story = {"id": 1, "slug": "s", "title": "S", "dek": "d", "excerpt": "e",
             "reading_minutes": 3, "body": [{"kind": "paragraph", "text": "p"},
                                            {"kind": "image", "image": img},
                                            {"kind": "title", "title": card}],
             "hero": img, "card": None, "tags": ["a", "a", "b"], "genres": [],
             "related": [card, card], "authors": [{"id": 2, "slug": "p", "name": "P"}],
             "revision": 4, "updated_at": at, "search_text": "words"}  # fmt: skip
    recs = msgspec.msgpack.decode(msgspec.msgpack.encode([story, {**story, "id": 2}]))
    stage = LogStage(SCHEMA)
    assert stage.add_many("Story", recs)
    assert stage.count("Block") == stage.count("Image") == 0  # nested: staged when read
    ws = nearstate.WriteState(SCHEMA, dedupe=False)
    ws.add_many("Story", recs)

    def resolved(st: Any, ft: Any, v: Any) -> Any:  # a staged value, nested rows resolved
        if v is None or ft.kind not in ("record", "list", "set"):
            return v
        if ft.kind != "record":
            return [resolved(st, ft.item, x) for x in v]
        if isinstance(v, dict):  # a LogStage keeps a nested record as it came until read
            v = st.nested(ft.target, v, "test")
        tdef = SCHEMA[ft.target]
        cols = st._staged(ft.target).columns
        return {f.name: resolved(st, f.type, c[v]) for f, c in zip(tdef.fields, cols, strict=True)}

    story_t = nearstate.FieldType("record", target="Story")
    for o in range(2):  # nested ordinals differ (row by row against column by column)
        assert resolved(stage, story_t, o) == resolved(ws, story_t, o)
    assert stage.count("Image") == ws.count("Image") == 10  # read now; not de-duplicated
    assert list(stage.digests("Story")) == list(ws.digests("Story"))
    before = [list(c) for c in stage._staged("Image").columns]
    n_blocks = stage.count("Block")
    for bad in ({**story, "id": 3, "revision": "four"}, {**story, "id": 3, "extra": 1},
                {k: v for k, v in story.items() if k != "slug"},
                {**story, "id": 3, "hero": "an image"}):  # fmt: skip
        assert not stage.add_many("Story", [bad])
        assert stage.count("Story") == 2 and stage._staged("Image").columns == before
        with pytest.raises(nearstate.SchemaError):
            nearstate.WriteState(SCHEMA).add_many("Story", [bad])
    # a nested record stays the dict it came as until it is read; one the type does not
    # allow is refused then, naming the field
    assert stage.count("Block") == n_blocks
    odd = msgspec.msgpack.decode(msgspec.msgpack.encode({**story, "id": 4, "body": [{"kind": 7}]}))
    assert stage.add_many("Story", [odd])
    from nearstate.overlay import lay_over

    base = nearstate.from_bytes(_snapshot_bytes(nearstate.WriteState(SCHEMA)))
    shown, _ = lay_over(base, {"Story": {1: recs[0], 4: odd}}, name="log 9")
    assert shown["Story"].get(1).body[1].image.alt == "x"
    assert [b.kind for b in shown["Story"].get(1).body] == ["paragraph", "image", "title"]
    with pytest.raises(nearstate.SchemaError, match=r"Story\.body.*nested Block"):
        shown["Story"].get(4).body  # noqa: B018


def test_a_reference_to_a_datetime_key_from_the_log_resolves(tmp_path: Any) -> None:
    """The Log keeps a naive datetime as ISO text, a reference to a datetime-keyed type
    included: a reader's layer and the Producer's fold read it as the datetime it was."""
    import datetime as dt

    day = TypeDef("Day", (Field("at", FieldType("datetime")), Field("note", FieldType("str"))),
                  key=("at",))  # fmt: skip
    ref = FieldType("ref", target="Day")
    event = TypeDef("Event", (Field("id", FieldType("int")), Field("day", ref)), key=("id",))
    schema = Schema([day, event])
    ds = nearstate.open(f"file://{tmp_path / 'ds'}")
    w = ds.writer(schema=schema)
    at = dt.datetime(2026, 12, 7, 9, 0)
    w.upsert("Day", {"at": at, "note": "Monday"})
    tok = w.upsert("Event", {"id": 1, "day": at})
    c = ds.consumer()
    state = c.wait_for(tok)
    assert state["Event"].get(1).day.note == "Monday"  # through the Log layer
    ds.compact()
    c.refresh()
    assert c.state["Event"].get(1).day.note == "Monday"  # through the folded version


def test_find_on_a_reference_sees_its_target_arrive_in_a_later_layer() -> None:
    """An index over a reference is not handed to the next version when that version
    changes the referenced type: a record the layer did not touch reads its reference as a
    key once the target exists (None while it dangled), and find() must say so."""
    from nearstate.overlay import lay_over
    from versioned import Article, Person

    schema = nearstate.Schema.from_dataclasses(Article, Person)
    ws = nearstate.WriteState(schema)
    ws.add("Person", Person(1, "Ann"))
    ws.add("Article", Article("a", "first", 1, []))
    base = nearstate.from_bytes(_snapshot_bytes(ws))
    art = {"id": "b", "title": "second", "author": 9, "editors": []}
    for encoded in (False, True):
        s1, _ = lay_over(base, {"Article": {"b": art}}, name="l1", encoded=encoded)
        assert [r.id for r in s1["Article"].find(author=1)] == ["a"]  # builds the index
        assert s1["Article"].find(author=9) == []  # Person 9 is not there yet
        s2, _ = lay_over(s1, {"Person": {9: {"id": 9, "name": "Nine"}}}, name="l2",
                         encoded=encoded)  # fmt: skip
        assert [r.id for r in s2["Article"].find(author=9)] == ["b"], encoded


def _snapshot_bytes(ws: Any) -> bytes:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "s.blob"
        ws.write_snapshot(p)
        return p.read_bytes()
