"""Type filtering (Hollow's filter config): ``Consumer(types=...)``, ``dataset.load(types=...)``
and ``nearstate.load`` / ``from_bytes(types=...)`` open only the types named and the nested
types their record fields need.

* a filtered state reads the types it loads exactly as a state of every type does: loaded
  from snapshots (mapped, read into memory, from bytes), followed through deltas (a property
  over random cycles touching four types), moved back by reverse deltas and pins, switched to
  a snapshot by compaction, and with Log writes laid over it (a property over random writes
  and compactions); its version advances in step;
* refusals: a ref from a type loaded into a type left out (at declaration when the schema is
  known, at the first load otherwise), unknown names and an empty list; reading a type left
  out raises SchemaError saying it was filtered out;
* nothing of a type left out is opened: its snapshot and delta sections are not read (a
  damaged one does not stop a filtered consumer), its delta upserts and Log writes are not
  kept; memory (``nbytes``) follows the types loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nearstate
from nearstate import (
    ChecksumError,
    Consumer,
    LayeredState,
    LocalDataset,
    Producer,
    ReadState,
    RefreshEvent,
    Schema,
    SchemaError,
    Writer,
    WriteState,
)
from nearstate.backends.memory import MemoryAnnouncer, MemoryBlobStore, MemoryLog
from nearstate.blob import parse_blob
from nearstate.versions import delta_name, snapshot_name

# --- the data: four keyed types, three nested ones, refs between them ------------------------

SCHEMA = Schema.from_json(
    {
        "types": [
            {"name": "Person", "key": ["id"],
             "fields": [{"name": "id", "type": "int"}, {"name": "name", "type": "str"}]},
            {"name": "Place", "fields": [{"name": "city", "type": "str"}]},
            {"name": "Meta", "fields": [
                {"name": "words", "type": "int"}, {"name": "tags", "type": "list<str>"},
                {"name": "place", "type": "record<Place>?"}]},
            {"name": "Story", "key": ["id"], "fields": [
                {"name": "id", "type": "str"}, {"name": "title", "type": "str"},
                {"name": "author", "type": "ref<Person>"},
                {"name": "meta", "type": "record<Meta>"}]},
            {"name": "Note", "key": ["id"], "fields": [
                {"name": "id", "type": "int"}, {"name": "text", "type": "str"},
                {"name": "score", "type": "float?"}]},
            {"name": "TagInfo", "fields": [{"name": "notes", "type": "list<ref<Note>>"}]},
            {"name": "Tag", "key": ["id"], "fields": [
                {"name": "id", "type": "str"}, {"name": "info", "type": "record<TagInfo>"}]},
        ]
    }
)  # fmt: skip
KEYED = ("Person", "Story", "Note", "Tag")
#: the filters every test tries, and the keyed types each holds
FILTERS: dict[tuple[str, ...], set[str]] = {
    ("Story", "Person"): {"Story", "Person"},
    ("Note",): {"Note"},
    ("Tag", "Note"): {"Tag", "Note"},
    ("Person",): {"Person"},
}
PERMANENT_PEOPLE = range(4)  # stories refer to these; never deleted
PERMANENT_NOTES = range(3)  # tags refer to these; never deleted

Model = dict[str, dict[Any, dict[str, Any]]]


def person(i: int, name: str = "") -> dict[str, Any]:
    return {"id": i, "name": name or f"person {i}"}


def story(k: str, title: str = "t", author: int = 0, words: int = 1, tags=(), city=None):
    place = None if city is None else {"city": city}
    return {"id": k, "title": title, "author": author,
            "meta": {"words": words, "tags": list(tags), "place": place}}  # fmt: skip


def note(i: int, text: str = "", score: float | None = None) -> dict[str, Any]:
    return {"id": i, "text": text or f"note {i}", "score": score}


def tag(k: str, notes=()) -> dict[str, Any]:
    return {"id": k, "info": {"notes": list(notes)}}


def base_model() -> Model:
    return {
        "Person": {i: person(i) for i in PERMANENT_PEOPLE},
        "Story": {
            k: story(k, author=i % 4, words=i, tags=["a"], city="Oslo" if i % 2 else None)
            for i, k in enumerate("abc")
        },
        "Note": {i: note(i, score=i / 2 if i % 2 else None) for i in range(6)},
        "Tag": {"x": tag("x", [0, 1]), "y": tag("y", [2])},
    }


def populate(model: Model):
    def fill(ws: WriteState) -> None:
        for t, recs in model.items():
            ws.add_many(t, [dict(r) for r in recs.values()])

    return fill


def records(state: Any, type_name: str) -> dict[Any, dict[str, Any]]:
    return {r.key: r.to_dict() for r in state[type_name]}


def held(state: Any) -> set[str]:
    return {t.name for t in state.schema if t.key is not None}


def assert_same(filtered: Any, full: Any, types: tuple[str, ...]) -> None:
    """``filtered`` reads the types ``types`` holds exactly as ``full`` does, is at the
    same version, and refuses the others as filtered out."""
    assert filtered.version == full.version
    assert held(filtered) == FILTERS[types]
    for t in FILTERS[types]:
        a, b = filtered[t], full[t]
        assert records(filtered, t) == records(full, t), t
        assert len(a) == len(b)
        assert sorted(a.keys(), key=repr) == sorted(b.keys(), key=repr)
        for rec in b:
            assert a.get(rec.key).to_dict() == rec.to_dict()
            assert rec.key in a
    for t in set(KEYED) - FILTERS[types]:
        assert t not in filtered
        with pytest.raises(SchemaError, match=f"type '{t}' was filtered out"):
            filtered[t]


def produce(blobs: Any, announcer: Any, model: Model, **kw: Any) -> int:
    with Producer(blobs, announcer, retain_snapshots=None) as p:
        r = p.run_cycle(populate(model), schema=SCHEMA, **kw)
        assert r.version is not None
        return r.version


@pytest.fixture
def ds(tmp_path: Path) -> LocalDataset:
    return LocalDataset(tmp_path / "ds")


# --- loading -----------------------------------------------------------------------------------


@pytest.mark.parametrize("types", list(FILTERS))
def test_a_filtered_load_reads_its_types_as_a_full_load(ds: LocalDataset, types) -> None:
    """Dataset.load (mapped and read into memory), nearstate.load and from_bytes with
    types=[...] read each type held exactly as a load of every type does."""
    ds.publish(_ws(base_model()))
    full = ds.load()
    path = ds.snapshot_path(1)
    for state in (
        ds.load(types=types),
        ds.load(types=types, mmap=False),
        nearstate.load(path, types=types),
        nearstate.load(path, types=types, mmap=False),
        nearstate.from_bytes(path.read_bytes(), types=types),
    ):
        assert isinstance(state, ReadState)
        assert state.type_filter == types
        assert_same(state, full, types)
        assert state.stored_schema == full.stored_schema  # the blob's schema stays whole
        assert state.checksums() == full.checksums()  # held: verified; others: as claimed


def _ws(model: Model) -> WriteState:
    ws = WriteState(SCHEMA)
    populate(model)(ws)
    return ws


def test_nested_types_come_along(ds: LocalDataset) -> None:
    """The types a held type's record fields nest come along, at any depth (Story ->
    Meta -> Place); the types left out are listed and never wrapped."""
    ds.publish(_ws(base_model()))
    s = ds.load(types=["Story", "Person"])
    assert set(s.schema.types) == {"Person", "Place", "Meta", "Story"}
    assert set(s.types) == {"Person", "Place", "Meta", "Story"}
    assert s.left_out == {"Note", "Tag", "TagInfo"}
    assert s["Story"].get("b").meta.place.city == "Oslo"
    assert s["Story"].get("b").author.name == "person 1"
    assert set(ds.load(types=["Tag", "Note"]).types) == {"Note", "TagInfo", "Tag"}
    # one name alone is a list of one; repeated names count once
    assert ds.load(types="Note").type_filter == ("Note",)
    assert ds.load(types=["Note", "Note"]).type_filter == ("Note",)


def test_a_ref_into_a_type_left_out_is_refused(ds: LocalDataset) -> None:
    """A ref field of a type held (or of a nested type it brings along, inside a list)
    into a type left out is refused with SchemaError naming the type, field and target:
    at the load, and at a consumer's declaration when its schema is given."""
    ds.publish(_ws(base_model()))
    msg = "Story.author refers to Person, which types=['Story'] leaves out; add it"
    for load in (
        lambda: ds.load(types=["Story"]),
        lambda: nearstate.load(ds.snapshot_path(1), types=["Story"], mmap=False),
        lambda: nearstate.from_bytes(ds.snapshot_path(1).read_bytes(), types=["Story"]),
        lambda: Consumer(ds.blobs, ds.announcer, schema=SCHEMA, types=["Story"]),
        lambda: ds.consumer(schema=SCHEMA, types=["Story"]),
    ):
        with pytest.raises(SchemaError) as ei:
            load()
        assert str(ei.value) == msg
    with pytest.raises(SchemaError, match=r"^TagInfo\.notes refers to Note, which types="
                                          r"\['Tag'\] leaves out; add it$"):  # fmt: skip
        ds.load(types=["Tag"])
    # without a schema, the consumer refuses at its first load and holds nothing
    c = ds.consumer(types=["Story"])
    with pytest.raises(SchemaError, match=r"Story\.author refers to Person"):
        c.refresh()
    assert c.version is None
    assert c.last_error is not None and "Story.author refers to Person" in c.last_error
    with pytest.raises(SchemaError, match=r"Story\.author refers to Person"):
        _ = c.state  # its first read tries the load again, and says why it cannot


def test_unknown_and_empty_type_lists_are_refused(ds: LocalDataset) -> None:
    ds.publish(_ws(base_model()))
    for bad, match in ((["Nope"], r"types=\['Nope'\] names 'Nope', which the dataset's "
                                  r"schema does not have \(types: Person, Place"),
                       (["Note", "Notes"], "names 'Notes'"),
                       ([], r"types=\[\] loads no type"),
                       ([1], "takes type names")):  # fmt: skip
        with pytest.raises(SchemaError, match=match):
            ds.load(types=bad)
        with pytest.raises(SchemaError, match=match):
            nearstate.from_bytes(ds.snapshot_path(1).read_bytes(), types=bad)
        with pytest.raises(SchemaError, match=match):
            Consumer(ds.blobs, ds.announcer, schema=SCHEMA, types=bad)
    c = ds.consumer(types=["Nope"])
    with pytest.raises(SchemaError, match="names 'Nope'"):
        c.refresh()


def test_reading_a_type_left_out_says_it_was_filtered_out(ds: LocalDataset) -> None:
    """Not a KeyError, not "no type": a SchemaError naming the type, the filter, and what
    to do. ``in`` and ``get`` answer as for a type the state does not have."""
    ds.publish(_ws(base_model()))
    with ds.producer() as p:
        p.run_incremental(lambda inc: inc.upsert("Person", person(1, "one")))
    c = ds.consumer(types=["Note"])
    c.refresh()
    for state in (c.state, ds.load(types=["Note"], version=1)):
        with pytest.raises(SchemaError) as ei:
            state["Person"]
        assert not isinstance(ei.value, KeyError)
        assert str(ei.value) == (
            "type 'Person' was filtered out: this state loads types=['Note'] only (and the "
            "types they nest); add 'Person' to types=... to read it"
        )
        assert "Person" not in state and state.get("Person") is None
        with pytest.raises(SchemaError, match="no type 'Film' in this state"):
            state["Film"]
    assert isinstance(c.state, LayeredState) and c.state.left_out == {
        "Person", "Place", "Meta", "Story", "TagInfo", "Tag"}  # fmt: skip


# --- nothing of a type left out is read ----------------------------------------------------


def damage(path: Path, section: str) -> None:
    """Flip a byte in the middle of ``section`` of the blob at ``path``."""
    data = bytearray(path.read_bytes())
    blob = parse_blob(bytes(data), verify=False)
    start = len(data) - int(blob.header["data_length"])
    s = next(s for s in blob.header["sections"] if s["name"] == section)
    assert s["length"] > 0
    data[start + s["offset"] + s["length"] // 2] ^= 0xFF
    path.chmod(0o644)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("mmap", [True, False])
def test_a_damaged_section_of_a_type_left_out_is_never_read(ds: LocalDataset, mmap) -> None:
    """A snapshot whose Note sections are damaged: a load of every type is refused naming
    the section; a load of Story and Person reads (and checks) its own sections only; a
    load of Note is refused."""
    ds.publish(_ws(base_model()))
    damage(ds.snapshot_path(1), "Note/text.pool")
    with pytest.raises(ChecksumError, match=r"Note/text\.pool"):
        ds.load(mmap=mmap)
    s = ds.load(types=["Story", "Person"], mmap=mmap)
    assert len(s["Story"]) == 3 and "Note/text.pool" not in s.blob.arrays
    with pytest.raises(ChecksumError, match=r"Note/text\.pool"):
        ds.load(types=["Note"], mmap=mmap)
    damage(ds.snapshot_path(1), "Story/title.pool")
    with pytest.raises(ChecksumError, match=r"Story/title\.pool"):
        ds.load(types=["Story", "Person"], mmap=mmap)
    assert len(ds.load(types=["Person"], mmap=mmap)["Person"]) == 4


def test_a_filtered_consumer_skips_the_deltas_of_types_left_out(ds: LocalDataset) -> None:
    """A delta whose Note upserts are damaged stops a consumer of every type and of Note,
    not one of Story and Person: it never opens them. The delta's upserts of types left out
    are not in the layer it keeps, and their checksums are carried from the delta's claims."""
    model = base_model()
    ds.publish(_ws(model))
    full, notes, stories = (ds.consumer(), ds.consumer(types=["Note"]),
                            ds.consumer(types=["Story", "Person"]))  # fmt: skip
    for c in (full, notes, stories):
        c.refresh()
    with ds.producer() as p:
        p.run_incremental(lambda inc: (inc.upsert("Note", note(40, "new")),
                                       inc.upsert("Story", story("z", author=2))))  # fmt: skip
    damage(ds.blobs.path(delta_name(2)), "Note/text.pool")
    with pytest.raises(ChecksumError, match=r"Note/text\.pool"):
        full.refresh()
    with pytest.raises(ChecksumError, match=r"Note/text\.pool"):
        notes.refresh()
    assert full.version == notes.version == 1
    assert stories.refresh() is True and stories.version == 2
    state = stories.state
    assert isinstance(state, LayeredState)
    assert set(state.layers[-1].state.types) <= {"Person", "Place", "Meta", "Story"}
    assert state["Story"].get("z").author.id == 2
    claims = state.layers[-1].checksums
    assert state.checksums()["Note"] == claims["Note"] != ds.load(version=1).checksums()["Note"]


# --- following versions: a property over random cycles ------------------------------------------

_names = st.sampled_from(["", "Ada", "Bo", "Cy"])
_person_op = st.builds(lambda i, n: ("Person", i, person(i, n)), st.sampled_from(PERMANENT_PEOPLE),
                       _names)  # fmt: skip
_story_op = st.one_of(
    st.builds(lambda k, a, w, tg, c: ("Story", k, story(k, f"title {w}", a, w, tg, c)),
              st.sampled_from("abcde"), st.sampled_from(PERMANENT_PEOPLE), st.integers(0, 300),
              st.lists(st.sampled_from(["a", "b", "c"]), max_size=3),
              st.sampled_from([None, "Oslo", "Lima"])),
    st.builds(lambda k: ("Story", k, None), st.sampled_from("abcde")),
)  # fmt: skip
_note_op = st.one_of(
    st.builds(lambda i, t, s: ("Note", i, note(i, t, s)), st.integers(0, 9),
              _names, st.sampled_from([None, 0.5, 2.0])),
    st.builds(lambda i: ("Note", i, None), st.integers(3, 9)),
)  # fmt: skip
_tag_op = st.one_of(
    st.builds(lambda k, ns: ("Tag", k, tag(k, ns)), st.sampled_from("xyz"),
              st.lists(st.sampled_from(PERMANENT_NOTES), max_size=3)),
    st.builds(lambda k: ("Tag", k, None), st.sampled_from("xyz")),
)  # fmt: skip
_ops = st.lists(st.one_of(_person_op, _story_op, _note_op, _tag_op), min_size=1, max_size=8)
_cycle = st.tuples(st.sampled_from(["full", "incremental"]), st.booleans(), _ops)


def apply(model: Model, ops: list[tuple[str, Any, Any]]) -> None:
    for t, k, rec in ops:
        if rec is None:
            model[t].pop(k, None)
        else:
            model[t][k] = rec


class Followers:
    """A consumer of every type and one per filter, over the same ports."""

    def __init__(self, blobs: Any, announcer: Any, log: Any = None, **kw: Any):
        self.full = Consumer(blobs, announcer, log=log, **kw)
        self.filtered = {t: Consumer(blobs, announcer, log=log, types=t, **kw) for t in FILTERS}
        self.heard: dict[Any, list[RefreshEvent]] = {t: [] for t in [None, *FILTERS]}
        self.full.add_listener(self.heard[None].append)
        for t, c in self.filtered.items():
            c.add_listener(self.heard[t].append)

    def all(self) -> list[Consumer]:
        return [self.full, *self.filtered.values()]

    def check(self) -> None:
        for t, c in self.filtered.items():
            assert c.version == self.full.version
            assert_same(c.state, self.full.state, t)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cycles=st.lists(_cycle, min_size=1, max_size=7), back=st.integers(0, 100))
def test_property_filtered_consumers_follow_random_cycles(cycles, back) -> None:
    """Random full and incremental cycles (snapshots every third version, or when asked)
    touching four types: after each, every filtered consumer is at the full consumer's
    version and reads its types as it does; then late filtered consumers (a snapshot plus
    deltas), a trip back by reverse deltas (pin) and forward again (unpin)."""
    blobs, announcer = MemoryBlobStore(), MemoryAnnouncer()
    model = base_model()
    produce(blobs, announcer, model)
    f = Followers(blobs, announcer)
    for c in f.all():
        c.refresh()
    f.check()
    with Producer(blobs, announcer, snapshot_every=3, retain_snapshots=None) as p:
        for kind, snap, ops in cycles:
            apply(model, ops)
            if kind == "full":
                r = p.run_cycle(populate(model), snapshot=snap)
            else:
                r = p.run_incremental(
                    lambda inc, ops=ops: [
                        inc.upsert(t, x) if x is not None else inc.delete(t, k) for t, k, x in ops
                    ],
                    snapshot=snap,
                )
            for c in f.all():
                c.refresh()
            f.check()
            if r.version is None:
                continue  # the cycle changed nothing: no version, nothing heard
            for t in FILTERS:  # each heard the changes of its own types, and no others
                full_ev, ev = f.heard[None][-1], f.heard[t][-1]
                assert ev.version == full_ev.version == r.version
                assert ev.changes is not None and full_ev.changes is not None
                assert {n: c for n, c in ev.changes.items() if c} == {
                    n: c for n, c in full_ev.changes.items() if c and n in FILTERS[t]
                }
    last = f.full.version
    assert last is not None
    for t in FILTERS:  # late consumers: the nearest snapshot plus deltas
        late = Consumer(blobs, announcer, types=t)
        late.refresh()
        assert_same(late.state, f.full.state, t)
    target = 1 + back % last
    for c in f.all():
        c.pin(target)
    f.check()
    assert f.full.version == target
    for c in f.all():
        c.unpin()
    f.check()
    assert f.full.version == last


def test_compaction_switches_a_filtered_consumer_to_a_filtered_snapshot() -> None:
    """A filtered consumer whose delta overlay grew past its bound loads the target's
    snapshot, of its types only."""
    blobs, announcer = MemoryBlobStore(), MemoryAnnouncer()
    model = base_model()
    produce(blobs, announcer, model)
    f = Followers(blobs, announcer, compact_ratio=0.0, compact_min=1)
    snapped: list[ReadState] = []
    with Producer(blobs, announcer, snapshot_every=2, retain_snapshots=None) as p:
        for i in range(5):
            p.run_incremental(
                lambda inc, i=i: (
                    inc.upsert("Note", note(i, f"v{i}")),
                    inc.upsert("Person", person(1, f"v{i}")),
                )
            )
            for c in f.all():
                c.refresh()
            f.check()
            snapped += [
                c.state
                for c in f.filtered.values()
                if isinstance(c.state, ReadState) and c.state.version > 1
            ]
    assert f.full.version == 6
    assert snapped and all(s.type_filter is not None and s.left_out for s in snapped)
    assert {s.version for s in snapped} <= {
        v for v in range(2, 7) if snapshot_name(v) in blobs.list()
    }


def test_a_cycle_touching_only_types_left_out_still_advances_the_version() -> None:
    blobs, announcer = MemoryBlobStore(), MemoryAnnouncer()
    produce(blobs, announcer, base_model())
    c = Consumer(blobs, announcer, types=["Note"])
    heard: list[RefreshEvent] = []
    c.add_listener(heard.append)
    c.refresh()
    with Producer(blobs, announcer) as p:
        p.run_incremental(lambda inc: inc.upsert("Person", person(2, "renamed")))
    assert c.refresh() is True and c.version == 2
    assert heard[-1].changes == {}
    full = Consumer(blobs, announcer)
    full.refresh()
    assert c.state.checksums() == full.state.checksums()  # Person's: the delta's claim


# --- the Log -----------------------------------------------------------------------------------


class LogPorts:
    def __init__(self) -> None:
        self.blobs, self.announcer, self.log = MemoryBlobStore(), MemoryAnnouncer(), MemoryLog()
        self._versions = Consumer(self.blobs, self.announcer)

    def _current(self) -> Any:
        try:
            self._versions.refresh()
            return self._versions.state
        except nearstate.DatasetError:
            return None

    def writer(self) -> Writer:
        return Writer(self.log, schema=SCHEMA, versions=self._current)

    def compact(self) -> None:
        with Producer(self.blobs, self.announcer, retain_snapshots=None) as p:
            nearstate.compact(p, self.log)


def write(w: Writer, ops: list[tuple[str, Any, Any]]) -> None:
    with w.transaction() as tx:
        for t, k, rec in ops:
            if rec is None:
                tx.delete(t, k)
            else:
                tx.upsert(t, rec)


def assert_overlay_holds_only(c: Consumer, types: set[str]) -> None:
    """The Log layers laid over the version hold records of the types held only."""
    s = c.state
    if isinstance(s, LayeredState):
        for layer in s.layers:
            assert {n for n, ts in layer.state.types.items() if len(ts)} <= types | {
                "Place", "Meta", "TagInfo"}  # fmt: skip


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(st.tuples(st.sampled_from(["write", "write", "compact"]), _ops),
                      min_size=1, max_size=6),
       published=st.booleans())  # fmt: skip
def test_property_filtered_consumers_show_log_writes(steps, published) -> None:
    """Random transactions through the Log (over a published version, or over nothing yet)
    and compactions: after each, every filtered consumer shows its types' writes as the
    full consumer does, at the same position, and keeps no write of a type it leaves out."""
    env = LogPorts()
    model = base_model()
    w = env.writer()
    if published:
        produce(env.blobs, env.announcer, model)
    else:
        write(w, [(t, k, r) for t, recs in model.items() for k, r in recs.items()])
    f = Followers(env.blobs, env.announcer, env.log)
    for what, ops in steps:
        if what == "compact":
            env.compact()
        else:
            apply(model, ops)
            write(w, ops)
        states = {}
        for t, c in [(None, f.full), *f.filtered.items()]:
            c.refresh()  # the announced version, then the Log's entries past it
            states[t] = c.sync(10.0)
        for t, c in f.filtered.items():
            assert c.position == f.full.position == env.log.head()
            assert_same(states[t], states[None], t)
            assert_overlay_holds_only(c, FILTERS[t])
        assert {t: records(states[None], t) for t in KEYED} == model
    late = {t: Consumer(env.blobs, env.announcer, log=env.log, types=t) for t in FILTERS}
    for t, c in late.items():
        assert_same(c.sync(10.0), f.full.state, t)


def test_log_writes_to_types_left_out_are_dropped() -> None:
    """Nothing announced yet: a filtered consumer shows the Log's writes to its types over
    no version, and none of the others; then over the version compaction makes."""
    env = LogPorts()
    w = env.writer()
    write(w, [("Person", 1, person(1)), ("Note", 1, note(1, "one")),
              ("Story", "a", story("a", author=1))])  # fmt: skip
    c = Consumer(env.blobs, env.announcer, log=env.log, types=["Note"])
    s = c.sync(10.0)
    assert records(s, "Note") == {1: note(1, "one")}
    with pytest.raises(SchemaError, match="'Person' was filtered out"):
        s["Person"]
    assert_overlay_holds_only(c, {"Note"})
    env.compact()
    write(w, [("Person", 2, person(2)), ("Note", 2, note(2))])
    c.refresh()
    s = c.sync(10.0)
    assert c.version == 1 and sorted(s["Note"].keys()) == [1, 2]
    assert_overlay_holds_only(c, {"Note"})


# --- memory follows the types loaded --------------------------------------------------------


def big_model(n: int = 3000) -> Model:
    return {
        "Person": {i: person(i, f"person number {i} " * 2) for i in range(n)},
        "Story": {
            f"s{i}": story(f"s{i}", f"a title {i} " * 3, i % n, i, ["x", str(i % 7)])
            for i in range(n)
        },
        "Note": {i: note(i, f"some longer note text, number {i} " * 4, i / 3) for i in range(n)},
        "Tag": {f"t{i}": tag(f"t{i}", [i % n, (i * 7) % n]) for i in range(n // 10)},
    }


def test_memory_follows_the_types_loaded(ds: LocalDataset) -> None:
    """nbytes of a filtered state counts its types' sections (and the header) only, mapped
    or read into memory; from_bytes copies the sections kept out of the caller's buffer."""
    ds.publish(_ws(big_model()))
    full = ds.load()
    per_type = full.type_nbytes()
    header = full.nbytes - sum(per_type.values())
    for types in FILTERS:
        for mmap in (True, False):
            s = ds.load(types=types, mmap=mmap)
            kept = {n for n in s.types}
            assert s.nbytes < full.nbytes
            assert s.nbytes - header <= sum(per_type[n] for n in kept) + 64 * 64
            assert s.type_nbytes() == {n: per_type[n] for n in kept}
    notes = ds.load(types=["Note"])
    assert notes.nbytes < 0.6 * full.nbytes
    buf = ds.snapshot_path(1).read_bytes()
    s = nearstate.from_bytes(buf, types=["Person"])
    whole = np.frombuffer(buf, np.uint8)
    assert not any(np.shares_memory(a, whole) for a in s.blob.arrays.values())
    assert records(s, "Person") == records(full, "Person")
    c = ds.consumer(types=["Person"])
    c.refresh()
    assert set(c.bytes_per_type()) == {"Person"}


# --- the NATS dataset shares the code -------------------------------------------------------


def test_nats_dataset_load_and_consumer_take_types() -> None:
    from natsserver import drop, server_url, unique

    url = f"{server_url()}/{unique('filter')}"
    d = nearstate.open(url)
    try:
        d.publish(_ws(base_model()))
        full = d.load()
        assert_same(d.load(types=["Tag", "Note"]), full, ("Tag", "Note"))
        c = d.consumer(types=["Note"])
        w = d.writer()
        w.upsert("Person", person(9))
        w.upsert("Note", note(9, "nine"))
        s = c.sync(10.0)
        assert s["Note"].get(9).text == "nine" and "Person" not in s
        c.stop()
    finally:
        drop(server_url(), d.name)
