"""Read-after-write: consumers show committed writes over their version, before (and after)
the Producer folds them into the next one.

Every behaviour test runs three times: over a LocalDataset (SQLite Log) in a temporary
directory, over the in-memory ports (MemoryBlobStore, MemoryAnnouncer, MemoryLog), and over
a NATS JetStream dataset (tests/natsserver.py):

* a started consumer shows a write by itself; lookups, ``in``, ``len``, iteration,
  ``keys()``, ``find`` and ``index`` see upserts and deletes; references to records written
  through the Log resolve; deleting an absent key is harmless;
* compaction: a consumer moves to the new version and shows the same records; a late
  consumer loads the version and replays the rest of the Log; after the Log is trimmed a
  late consumer and one that was far behind still show everything;
* consistency: eventual reads never block (not even while a commit holds the Log),
  ``wait_for`` times out with ReadTimeout naming the token, ``read()`` modes, pin/unpin;
* listeners hear each Log entry's added, modified and removed keys; a type first written
  after the consumer started appears; hundreds of writes merged into few layers.

Timing: waits that should end are given LONG seconds and are expected to take
milliseconds; only one test measures a timeout, with a generous margin.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import nearstate
from natsserver import drop, server_url, unique
from nearstate import (
    Consumer,
    CycleResult,
    DatasetError,
    InputError,
    Producer,
    ReadTimeout,
    RefreshEvent,
    Schema,
    SchemaError,
    Writer,
    WriteState,
)
from nearstate.backends.memory import MemoryAnnouncer, MemoryBlobStore, MemoryLog
from nearstate.ports import Append, Log, LogView
from nearstate.writer import encode_entry, key_id
from versioned import Article, Person

LONG = 10.0  # a wait that should end: it is given this long (and takes milliseconds)
PROMPT = 2.0  # what "at once" means for a call that must not block


ARTICLES = Schema.from_dataclasses(Article, Person)


# --- the two backends --------------------------------------------------------------------------


class Env:
    """One dataset: its Log, writers, consumers (stopped at the end) and compaction."""

    kind: str
    log: Log

    def __init__(self) -> None:
        self.consumers: list[Consumer] = []

    def writer(self, **kw: Any) -> Writer:
        raise NotImplementedError

    def _consumer(self, **kw: Any) -> Consumer:
        raise NotImplementedError

    def consumer(self, **kw: Any) -> Consumer:
        c = self._consumer(**kw)
        self.consumers.append(c)
        return c

    def compact(self, **kw: Any) -> CycleResult:
        """Fold the Log into a new version (``kw``: Producer options)."""
        raise NotImplementedError

    def publish(self, ws: WriteState) -> int:
        """Publish ``ws`` as a full-state version (before anything is written to the Log)."""
        raise NotImplementedError

    def close(self) -> None:
        for c in self.consumers:
            c.stop()


class LocalEnv(Env):
    kind = "local"

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.ds = nearstate.open(path)
        self.log = self.ds.log

    def writer(self, **kw: Any) -> Writer:
        return self.ds.writer(**kw)

    def _consumer(self, **kw: Any) -> Consumer:
        return nearstate.open(self.ds.path).consumer(**kw)

    def compact(self, **kw: Any) -> CycleResult:
        return self.ds.compact(**kw)

    def publish(self, ws: WriteState) -> int:
        return self.ds.publish(ws)


class MemoryEnv(Env):
    kind = "memory"

    def __init__(self) -> None:
        super().__init__()
        self.blobs, self.announcer, self.log = MemoryBlobStore(), MemoryAnnouncer(), MemoryLog()
        self._versions = Consumer(self.blobs, self.announcer)

    def _current(self) -> Any:
        """The announced version (how a writer sees keys that never went through the Log)."""
        try:
            self._versions.refresh()
            return self._versions.state
        except DatasetError:
            return None

    def writer(self, **kw: Any) -> Writer:
        return Writer(self.log, versions=self._current, **kw)

    def _consumer(self, **kw: Any) -> Consumer:
        return Consumer(self.blobs, self.announcer, log=self.log, **kw)

    def compact(self, **kw: Any) -> CycleResult:
        with Producer(self.blobs, self.announcer, **kw) as p:
            return nearstate.compact(p, self.log)

    def publish(self, ws: WriteState) -> int:
        with Producer(self.blobs, self.announcer) as p:
            r = p.run_cycle(ws, snapshot=True)
            assert r.version is not None
            return r.version


class NatsEnv(LocalEnv):
    """A NATS JetStream dataset on the test server (tests/natsserver.py)."""

    kind = "nats"

    def __init__(self) -> None:
        Env.__init__(self)
        self.url = f"{server_url()}/{unique('raw')}"
        self.ds = nearstate.open(self.url)
        self.log = self.ds.log

    def _consumer(self, **kw: Any) -> Consumer:
        return nearstate.open(self.url).consumer(**kw)

    def close(self) -> None:
        super().close()
        drop(server_url(), self.ds.name)


@pytest.fixture(params=["local", "memory", "nats"])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Env]:
    e: Env
    if request.param == "nats":
        e = NatsEnv()
    else:
        e = LocalEnv(tmp_path / "ds") if request.param == "local" else MemoryEnv()
    yield e
    e.close()


# --- helpers -----------------------------------------------------------------------------------


def records(state: Any, type_name: str) -> dict[Any, dict[str, Any]]:
    """Every record of a type in a state, by key, as plain dicts."""
    if type_name not in state:
        return {}
    return {r.key: r.to_dict() for r in state[type_name]}


def eventually(check: Callable[[], bool], what: str, timeout: float = LONG) -> None:
    """Poll ``check`` until it holds (a consumer with nothing to show yet, or without the
    type yet, counts as not yet); fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except (DatasetError, SchemaError):
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what}")
        time.sleep(0.005)


def story(key: str, title: str = "t", kind: str = "news", words: int = 100) -> dict[str, Any]:
    return {"id": key, "title": title, "kind": kind, "words": words}


def seed(env: Env, n: int = 3) -> Writer:
    """Stories s1..sn written through the Log (kinds alternate news / blog)."""
    w = env.writer()
    for i in range(1, n + 1):
        w.upsert("Story", story(f"s{i}", f"title {i}", "news" if i % 2 else "blog", i))
    return w


# --- the overlay -------------------------------------------------------------------------------


def test_started_consumer_shows_writes_by_itself(env: Env) -> None:
    """A started consumer shows a write from a writer in this process within moments,
    without wait_for or refresh: the first write (nothing published yet) and later ones."""
    c = env.consumer()
    c.start(wait=False)
    w = env.writer()
    w.upsert("Story", story("s1", "first"))
    eventually(lambda: c.state["Story"].get("s1") is not None, "the first write shown")
    assert c.state["Story"].get("s1").title == "first"
    w.upsert("Story", story("s1", "edited"))
    w.upsert("Story", story("s2"))
    eventually(
        lambda: c.state["Story"].get("s1").title == "edited" and "s2" in c.state["Story"],
        "later writes shown",
    )
    assert c.position == env.log.head() == 3


def test_a_waiter_on_changes_is_woken_by_each_commit(env: Env) -> None:
    """``updates()`` on a started consumer, with a poll of 30 s, yields each commit's state
    as the consumer shows it: the announcement wakes the waiter (it skips the condition
    only when nobody waits), it does not wait out the poll."""
    import asyncio

    c = env.consumer()
    c.start(wait=False)
    w = env.writer()
    w.upsert("Story", story("s0", "first"))
    eventually(lambda: c.state["Story"].get("s0") is not None, "the first write shown")

    async def follow() -> list[float]:
        took = []
        agen = c.updates(poll=30)
        try:
            await agen.__anext__()  # the state now
            for i in range(1, 6):
                t = time.monotonic()
                threading.Timer(0.05, w.upsert, ("Story", story(f"s{i}"))).start()
                s = await agen.__anext__()
                while f"s{i}" not in s["Story"]:  # a version move may come first
                    s = await agen.__anext__()
                took.append(time.monotonic() - t)
        finally:
            await agen.aclose()
        return took

    took = asyncio.run(asyncio.wait_for(follow(), timeout=60))
    assert max(took) < 5, took


@pytest.mark.parametrize("over", ["log only", "a version"])
def test_reads_see_upserts_and_deletes(env: Env, over: str) -> None:
    """Over the Log alone or over a version, every way of reading a type sees the writes
    committed since: get, in, len, iteration, keys(), find(field=value) and index(...)
    show added and modified records and no longer show deleted ones."""
    w = seed(env, 3)  # s1 news, s2 blog, s3 news
    if over == "a version":
        env.compact()
    w.upsert("Story", story("s4", "four", "blog", 4))  # added
    w.upsert("Story", story("s2", "two again", "news", 2))  # modified: blog -> news
    w.delete("Story", "s3")  # removed
    c = env.consumer()
    state = c.sync(LONG)
    if over == "a version":
        assert c.version == 1
    ts = state["Story"]
    assert ts.get("s4").title == "four"
    assert ts.get("s2").title == "two again"
    assert ts.get("s3") is None
    assert "s3" not in ts and "s4" in ts and "s1" in ts
    assert len(ts) == 3
    assert sorted(r.id for r in ts) == ["s1", "s2", "s4"]
    assert sorted(ts.keys()) == ["s1", "s2", "s4"]
    assert sorted(r.id for r in ts.find(kind="news")) == ["s1", "s2"]
    assert sorted(r.id for r in ts.find(kind="blog")) == ["s4"]
    assert ts.find(kind="poetry") == []
    assert [r.id for r in ts.find(kind="news", words=2)] == ["s2"]
    idx = ts.index("kind")
    assert sorted(ts[int(o)].id for o in idx.ordinals("blog")) == ["s4"]
    assert sorted(ts[int(o)].id for o in idx.ordinals("news")) == ["s1", "s2"]
    assert records(state, "Story")["s1"] == story("s1", "title 1", "news", 1)


def test_references_to_records_written_through_the_log_resolve(env: Env) -> None:
    """A reference from a record written through the Log resolves to the record it names,
    whether that came from the version or from the Log, and shows the target's latest
    write; it still resolves after compaction."""
    ws = WriteState(ARTICLES)
    ws.add("Person", Person(1, "Ann"))
    env.publish(ws)
    w = env.writer()
    w.upsert("Person", {"id": 2, "name": "Bo"})
    w.upsert("Article", {"id": "a1", "title": "T", "author": 2, "editors": [1, 2]})
    c = env.consumer()
    a = c.sync(LONG)["Article"].get("a1")
    assert a.author.name == "Bo"
    assert [p.name for p in a.editors] == ["Ann", "Bo"]
    w.upsert("Person", {"id": 2, "name": "Bo, renamed"})
    assert c.sync(LONG)["Article"].get("a1").author.name == "Bo, renamed"
    env.compact()
    c.refresh()
    assert c.version == 2
    a = c.state["Article"].get("a1")
    assert a.author.name == "Bo, renamed"
    assert [p.name for p in a.editors] == ["Ann", "Bo, renamed"]


def test_deleting_an_absent_key_is_harmless(env: Env) -> None:
    """Deleting a key that never existed (or was deleted already) commits, changes no
    record, and the consumer goes on showing later writes."""
    w = seed(env, 2)
    c = env.consumer()
    before = records(c.sync(LONG), "Story")
    t = w.delete("Story", "nobody")
    assert records(c.wait_for(t, LONG), "Story") == before
    w.delete("Story", "s1")
    t = w.delete("Story", "s1")
    w.upsert("Story", story("s3"))
    state = c.sync(LONG)
    assert c.position > t
    assert sorted(records(state, "Story")) == ["s2", "s3"]


# --- compaction and trimming ---------------------------------------------------------------------


def test_compaction_moves_a_started_consumer_to_the_new_version(env: Env) -> None:
    """After compaction a started consumer moves to the new version by itself and shows
    exactly the records it showed from the Log; writes after it show over the version."""
    w = seed(env, 3)
    w.delete("Story", "s2")
    c = env.consumer()
    c.start(wait=False)
    shown = records(c.wait_for(env.log.head(), LONG), "Story")
    assert c.version is None
    r = env.compact()
    assert r.version == 1
    eventually(lambda: c.state.version == 1, "the consumer moved to version 1")
    assert c.version == 1
    assert records(c.state, "Story") == shown
    assert c.position == env.log.head()
    w.upsert("Story", story("s5"))
    eventually(lambda: "s5" in c.state["Story"], "a write after compaction shown")
    assert c.version == 1
    r = env.compact()
    assert r.version == 2
    eventually(lambda: c.version == 2, "the consumer moved to version 2")
    assert sorted(records(c.state, "Story")) == ["s1", "s3", "s5"]


def test_late_consumer_loads_the_version_and_replays_the_rest(env: Env) -> None:
    """A consumer created after compaction and more writes (a new record, an edit and a
    delete of compacted ones) shows the version with the rest of the Log over it."""
    w = seed(env, 3)
    env.compact()
    w.upsert("Story", story("s4", "four"))
    w.upsert("Story", story("s1", "one, edited"))
    w.delete("Story", "s2")
    c = env.consumer()
    state = c.sync(LONG)
    assert c.version == 1
    assert c.position == env.log.head() == 6
    got = records(state, "Story")
    assert sorted(got) == ["s1", "s3", "s4"]
    assert got["s1"]["title"] == "one, edited"
    assert got["s4"] == story("s4", "four")


def test_late_consumer_after_the_log_was_trimmed(env: Env) -> None:
    """With one snapshot kept, compaction trims the Log up to the version it made; a
    consumer created later loads that version and shows everything, plus later writes."""
    w = seed(env, 3)
    env.compact(retain_snapshots=1, snapshot_every=1)
    w.upsert("Story", story("s4"))
    w.delete("Story", "s1")
    env.compact(retain_snapshots=1, snapshot_every=1)
    with pytest.raises(nearstate.LogTrimmed):
        env.log.read(0)
    w.upsert("Story", story("s5"))
    c = env.consumer()
    state = c.sync(LONG)
    assert c.version == 2
    assert sorted(records(state, "Story")) == ["s2", "s3", "s4", "s5"]


def test_consumer_far_behind_recovers_after_trimming(env: Env) -> None:
    """A consumer that showed part of the Log over an old version, while the Log was
    trimmed past it and its version's blobs removed, catches up on its next refresh (the
    trimmed Log is handled inside): it moves to the newest version and shows every write,
    then goes on showing new ones."""
    w = seed(env, 2)
    env.compact(retain_snapshots=1, snapshot_every=1)
    c = env.consumer()
    t = w.upsert("Story", story("s3"))
    c.wait_for(t, LONG)
    assert (c.version, c.position) == (1, 3)
    for i in range(4, 8):
        w.upsert("Story", story(f"s{i}"))
    w.delete("Story", "s1")
    env.compact(retain_snapshots=1, snapshot_every=1)
    w.upsert("Story", story("s3", "edited"))
    env.compact(retain_snapshots=1, snapshot_every=1)
    with pytest.raises(nearstate.LogTrimmed):
        env.log.read(c.position)
    assert c.refresh() is True
    assert c.version == 3
    assert c.position == env.log.head()
    got = records(c.state, "Story")
    assert sorted(got) == ["s2", "s3", "s4", "s5", "s6", "s7"]
    assert got["s3"]["title"] == "edited"
    last = w.upsert("Story", story("s8"))
    assert "s8" in c.wait_for(last, LONG)["Story"]


def test_writes_to_other_types_survive_an_import(tmp_path: Path) -> None:
    """Writes committed through the Log to one type are still shown after a JSON Lines
    import replaces another type (the import's version must not claim to include writes
    it does not hold)."""
    ds = nearstate.open(tmp_path / "ds")
    src = tmp_path / "items.jsonl"
    src.write_text("".join(json.dumps({"id": i, "name": f"n{i}"}) + "\n" for i in range(3)))
    nearstate.import_jsonl(src, type_name="Item", key="id", into=ds.path)
    t = ds.writer().upsert("Story", story("s1", "written"))
    assert records(ds.consumer().wait_for(t, LONG), "Story") == {"s1": story("s1", "written")}
    src.write_text("".join(json.dumps({"id": i, "name": f"n{i}"}) + "\n" for i in range(4)))
    nearstate.import_jsonl(src, type_name="Item", key="id", into=ds.path)
    c = ds.consumer()
    state = c.wait_for(t, LONG)
    assert c.version == 3  # the Log folded into version 2 first, then the import
    assert "Story" in ds.load().base.stored_schema  # the import kept the written type
    assert sorted(records(state, "Item")) == [0, 1, 2, 3]
    assert records(state, "Story") == {"s1": story("s1", "written")}


# --- consistency ----------------------------------------------------------------------------


def test_a_consumer_just_made_answers_its_first_read(env: Env) -> None:
    """``ds.consumer().state[...]`` works at once: the first read loads the announced
    version and the Log past it (as refresh() would); with nothing announced or written
    it says so."""
    empty = env.consumer()
    with pytest.raises(DatasetError, match="nothing to show yet"):
        empty.state  # noqa: B018
    seed(env, 2)
    env.compact()
    w = env.writer()
    w.upsert("Story", story("s9", "after the version"))
    c = env.consumer()
    assert c.state["Story"].get("s9").title == "after the version"
    assert "s1" in c.state["Story"] and c.version == 1
    assert empty.state["Story"].get("s9") is not None  # it loads on a later read too


def test_eventual_reads_never_block(env: Env) -> None:
    """While a commit holds the Log (its prepare is still running), a started consumer's
    state and read('eventual') return at once with what was shown before; the commit is
    shown once it completes."""
    seed(env, 1)
    c = env.consumer()
    c.start(wait=False)
    eventually(lambda: "s1" in c.state["Story"], "the seed shown")
    inside, release = threading.Event(), threading.Event()
    # a real entry (an upsert of s2, as a Writer encodes it), committed through a prepare
    # that holds the Log until released
    entry = Append(encode_entry([("Story", "s2", story("s2"))], False),
                   [("Story", key_id("s2"), True)])  # fmt: skip

    def slow_prepare(view: LogView) -> Append:
        inside.set()
        assert release.wait(LONG)
        return entry

    committer = threading.Thread(target=env.log.append, args=(slow_prepare,), daemon=True)
    committer.start()
    try:
        assert inside.wait(LONG)
        for _ in range(20):
            t0 = time.monotonic()
            s = c.state
            e = c.read("eventual")
            assert time.monotonic() - t0 < PROMPT
            assert "s1" in s["Story"] and "s2" not in e["Story"]
            time.sleep(0.01)
    finally:
        release.set()
        committer.join(LONG)
    assert not committer.is_alive()
    eventually(lambda: "s2" in c.state["Story"], "the held commit shown once done")
    assert c.position == env.log.head()


def test_wait_for_a_token_that_never_comes_times_out(env: Env) -> None:
    """wait_for a token past the head raises ReadTimeout (also a TimeoutError) after about
    its timeout, naming the token and what is shown; nothing stale is returned. The same
    for read('read-your-writes')."""
    seed(env, 1)
    c = env.consumer()
    c.sync(LONG)
    t0 = time.monotonic()
    with pytest.raises(ReadTimeout) as e:
        c.wait_for(99, timeout=0.5)
    elapsed = time.monotonic() - t0
    assert isinstance(e.value, TimeoutError)
    assert 0.45 <= elapsed < 0.5 + PROMPT
    assert "token 99" in str(e.value)
    with pytest.raises(ReadTimeout, match="token 42"):
        c.read("read-your-writes", token=42, timeout=0.2)
    with pytest.raises(InputError):
        c.wait_for("soon", timeout=0.1)  # type: ignore[arg-type]


def test_read_modes(env: Env) -> None:
    """read('eventual') is the state shown now; read('read-your-writes', token=T) shows T;
    read('strong') shows every commit made before the call, by any writer; a
    read-your-writes without a token or an unknown mode is an InputError."""
    w = seed(env, 1)
    c = env.consumer()
    c.sync(LONG)
    assert c.read("eventual") is c.state
    assert c.read() is c.state
    t = w.upsert("Story", story("s2"))
    assert "s2" in c.read("read-your-writes", token=t, timeout=LONG)["Story"]
    env.writer().upsert("Story", story("s3"))  # another writer: no token in hand
    strong = c.read("strong", timeout=LONG)
    assert "s3" in strong["Story"]
    assert c.position == env.log.head()
    with pytest.raises(InputError, match="token"):
        c.read("read-your-writes")
    with pytest.raises(InputError, match=r"(?s)'sometimes'.*eventual.*strong"):
        c.read("sometimes")  # type: ignore[arg-type]


def test_consumer_without_a_log_refuses_read_your_writes(env: Env) -> None:
    """A consumer built without the Log cannot promise read-your-writes or strong reads:
    DatasetError, at once."""
    seed(env, 1)
    env.compact()
    if isinstance(env, LocalEnv):
        c = Consumer(env.ds.blobs, env.ds.announcer)
    else:
        assert isinstance(env, MemoryEnv)
        c = Consumer(env.blobs, env.announcer)
    c.refresh()
    with pytest.raises(DatasetError, match="Log"):
        c.wait_for(1, timeout=LONG)
    with pytest.raises(DatasetError, match="Log"):
        c.sync(LONG)


def test_pin_shows_the_version_alone_and_unpin_shows_the_log_again(env: Env) -> None:
    """pin(v) shows version v without the Log's entries (also ones committed while
    pinned); unpin() shows the announced version with every entry over it."""
    w = seed(env, 2)
    env.compact()
    w.upsert("Story", story("s3"))
    w.delete("Story", "s1")
    c = env.consumer()
    assert sorted(records(c.sync(LONG), "Story")) == ["s2", "s3"]
    c.pin(1)
    assert c.pinned == 1
    assert sorted(records(c.state, "Story")) == ["s1", "s2"]
    w.upsert("Story", story("s4"))
    c.refresh()
    assert sorted(records(c.state, "Story")) == ["s1", "s2"]
    c.unpin()
    assert c.pinned is None
    assert sorted(records(c.state, "Story")) == ["s2", "s3", "s4"]
    assert c.position == env.log.head()


# --- listeners, new types, many writes -------------------------------------------------------


def test_listeners_hear_each_log_entry(env: Env) -> None:
    """For each Log entry shown, listeners get a RefreshEvent with the version unchanged,
    the position shown, and per type the keys added, modified and removed (a delete of an
    absent key changes nothing)."""
    w = seed(env, 2)
    env.compact()
    c = env.consumer()
    c.sync(LONG)
    events: list[RefreshEvent] = []
    c.add_listener(events.append)

    def shown(token: int) -> RefreshEvent:
        events.clear()
        c.wait_for(token, LONG)
        assert c.drain(LONG)  # listeners run on a thread of their own
        assert len(events) == 1
        ev = events[0]
        assert (ev.previous, ev.version, ev.position) == (1, 1, token)
        assert ev.duration_ms >= 0
        return ev

    def keys(ev: RefreshEvent) -> dict[str, tuple[list[Any], list[Any], list[Any]]]:
        assert ev.changes is not None
        return {t: (sorted(ch.added), sorted(ch.modified), sorted(ch.removed))
                for t, ch in ev.changes.items()}  # fmt: skip

    assert keys(shown(w.upsert("Story", story("s3")))) == {"Story": (["s3"], [], [])}
    assert keys(shown(w.upsert("Story", story("s1", "edited")))) == {"Story": ([], ["s1"], [])}
    assert keys(shown(w.delete("Story", "s2"))) == {"Story": ([], [], ["s2"])}
    assert keys(shown(w.delete("Story", "s2"))) == {}
    with w.transaction() as tx:
        tx.upsert("Story", story("s4"))
        tx.upsert("Story", story("s3", "edited"))
        tx.delete("Story", "s1")
        tx.upsert("Person", {"id": 1, "name": "Ann"})
    assert tx.token is not None
    assert keys(shown(tx.token)) == {
        "Story": (["s4"], ["s3"], ["s1"]),
        "Person": ([1], [], []),
    }


def test_listeners_run_off_the_readers_path(env: Env) -> None:
    """A slow listener delays neither wait_for nor the entries shown after it: listeners
    run on a thread of their own (never the caller's, nor under the consumer's lock), one
    event at a time, in order, and drain() waits for them."""
    w = seed(env, 1)
    env.compact()
    c = env.consumer()
    c.sync(LONG)
    heard: list[tuple[int | None, str]] = []
    gate = threading.Event()

    def slow(ev: RefreshEvent) -> None:
        gate.wait(LONG)
        heard.append((ev.position, threading.current_thread().name))

    c.add_listener(slow)
    tokens = [w.upsert("Story", story(f"n{i}")) for i in range(3)]
    t0 = time.monotonic()
    for t in tokens:
        c.wait_for(t, LONG)  # while the listener is blocked
        with c._lock:  # and the consumer's lock is free
            pass
    assert time.monotonic() - t0 < LONG / 2 and heard == []
    assert "n2" in c.state["Story"]
    gate.set()
    assert c.drain(LONG)
    positions = [p for p, _ in heard]
    assert positions == sorted(positions) and positions[-1] == tokens[-1]
    assert {name for _, name in heard} == {"nearstate-listeners"}


def test_a_type_first_written_after_the_consumer_started_appears(env: Env) -> None:
    """A started consumer shows a type that did not exist when it started: over the Log
    alone, and over a published version that lacks the type (whose records stay)."""
    ws = WriteState(ARTICLES)
    ws.add("Person", Person(1, "Ann"))
    env.publish(ws)
    c = env.consumer()
    c.start(timeout=LONG)
    assert c.version == 1
    w = env.writer()
    w.upsert("Story", story("s1"))
    eventually(lambda: "s1" in c.state["Story"], "the new type Story shown")
    w.upsert("Tag", {"id": "t1", "label": "news"})
    eventually(lambda: "t1" in c.state["Tag"], "the new type Tag shown")
    state = c.state
    assert records(state, "Person") == {1: {"id": 1, "name": "Ann"}}
    assert state["Tag"].get("t1").label == "news"
    assert "s1" in state["Story"]
    env.compact()
    eventually(lambda: c.version == 2, "the version holding the new types")
    assert sorted(records(c.state, "Tag")) == ["t1"]
    assert sorted(records(c.state, "Story")) == ["s1"]


def test_a_type_first_written_after_a_log_only_consumer_started(env: Env) -> None:
    """With nothing published, a started consumer that shows one type from the Log also
    shows a second type written later."""
    c = env.consumer()
    c.start(wait=False)
    w = env.writer()
    w.upsert("Story", story("s1"))
    eventually(lambda: "s1" in c.state["Story"], "the first type shown")
    w.upsert("Person", {"id": 1, "name": "Ann"})
    eventually(lambda: 1 in c.state["Person"], "the second type shown")
    assert c.state["Person"].get(1).name == "Ann"
    assert "s1" in c.state["Story"]


def test_a_long_log_tail_is_not_laid_again_every_few_commits(env: Env, monkeypatch) -> None:
    """Merging the Log layers into one re-lays the whole tail: a consumer waits as many
    commits as the tail holds keys before doing so, so each commit costs about a record,
    not the tail, while no version comes to shorten it."""
    import nearstate.consumer as consumer_mod

    staged: list[int] = []
    real = consumer_mod.lay_over

    def counting(state: Any, net: Any, **kw: Any) -> Any:
        staged.append(sum(len(m) for m in net.values()))
        return real(state, net, **kw)

    monkeypatch.setattr(consumer_mod, "lay_over", counting)
    c = env.consumer(max_log_layers=4)
    w = env.writer()
    w.upsert("Story", story("s0"))
    c.sync(LONG)
    staged.clear()
    n = 200
    for i in range(1, n + 1):
        c.wait_for(w.upsert("Story", story(f"s{i}")), LONG)
    assert len(c.state["Story"]) == n + 1
    # a record a commit, the merges included (it was about n * n / 8 with a fixed cap)
    assert sum(staged) <= 4 * n, sum(staged)


def test_hundreds_of_writes_are_all_shown(env: Env) -> None:
    """300 single commits (new records, edits, deletes) read in small batches by a started
    consumer that merges its Log layers often: after sync() it shows exactly the expected
    records, as does a fresh consumer, and both agree after compaction."""
    c = env.consumer(max_log_layers=4, log_batch=16)
    w = env.writer()
    w.upsert("Story", story("s0"))
    c.start(timeout=LONG)
    model: dict[str, dict[str, Any]] = {"s0": story("s0")}
    for i in range(1, 300):
        key = f"s{i % 120}"
        if i % 7 == 0:
            w.delete("Story", key)
            model.pop(key, None)
        else:
            rec = story(key, f"write {i}", "news" if i % 3 else "blog", i)
            w.upsert("Story", rec)
            model[key] = rec
    assert env.log.head() == 300
    assert records(c.sync(LONG), "Story") == model
    fresh = env.consumer(log_batch=50)
    assert records(fresh.sync(LONG), "Story") == model
    assert sorted(r.id for r in c.state["Story"].find(kind="blog")) == sorted(
        k for k, r in model.items() if r["kind"] == "blog"
    )
    env.compact()
    eventually(lambda: c.version == 1, "the consumer moved to the compacted version")
    assert records(c.state, "Story") == model
    fresh.refresh()
    assert records(fresh.state, "Story") == model


def test_the_log_tail_counts_the_keys_it_holds() -> None:
    """The tail a consumer keeps of the Log since its version counts its keys as entries
    come (asked on every commit) and as a newer version trims it: always the keys held,
    each key once however often it was written or deleted."""
    import random

    from nearstate.overlay import LogTail
    from nearstate.writer import Entry

    rng = random.Random(3)
    tail, pos = LogTail(0), 0
    for _ in range(60):
        batch = []
        for _ in range(rng.randint(1, 3)):
            pos += 1
            muts = [(rng.choice("AB"), rng.randrange(12), None if rng.random() < 0.2 else {})
                    for _ in range(rng.randint(1, 4))]  # fmt: skip
            batch.append(Entry(pos, 0, muts, False))
        tail.add(batch + batch[:1])  # an entry seen again changes nothing
        held = {(t, k) for t, m in tail.net().items() for k in m}
        assert len(tail) == len(held)
        if rng.random() < 0.2:
            tail = tail.since(pos - rng.randrange(6))
            assert len(tail) == sum(len(m) for m in tail.net().values())
