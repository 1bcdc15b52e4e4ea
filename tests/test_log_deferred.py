"""Log records laid over before they are staged (overlay.LogStage.defer).

A consumer decodes a Log entry's keys only and keeps each record as its msgpack bytes
(msgspec.Raw) until a reader first reads the layer: a process that never reads a changed
record never builds its Python objects. These tests hold the deferred layer to what the
eager one gives, and check where a record the fast stager cannot take, or a bad one, is
found (on the read, naming it), and that the state still shows the commit's keys."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

import nearstate
from nearstate import Field, FieldType, Schema, TypeDef
from nearstate.content.records import SCHEMA as CONTENT
from nearstate.overlay import lay_over
from nearstate.writer import decode_entry, encode_entry


def _raw(rec: dict[str, Any]) -> msgspec.Raw:
    return msgspec.Raw(msgspec.msgpack.encode(rec))


def _image(i: int) -> dict[str, Any]:
    return {"asset": f"a{i}", "alt": f"Still {i}", "width": 1200, "height": 675,
            "focal_x": 0.5, "focal_y": 0.4, "small": f"/s/{i}", "medium": f"/m/{i}",
            "large": f"/l/{i}"}  # fmt: skip


def _story(i: int, rev: int) -> dict[str, Any]:
    at = dt.datetime(2026, 12, 7, 9, 0, tzinfo=dt.UTC)
    card = {"id": 5, "slug": "t-5", "name": "Title 5", "year": 1999, "genres": ["Drama"],
            "poster": _image(5)}  # fmt: skip
    return {"id": i, "slug": f"story-{i}", "title": f"Story {i} rev {rev}", "dek": "d",
            "excerpt": "e", "reading_minutes": 3,
            "body": [{"kind": "paragraph", "text": f"p{k}"} for k in range(3)]
            + [{"kind": "image", "image": _image(i)}, {"kind": "title", "title": card}],
            "hero": _image(1), "card": _image(2), "tags": ["making-of", f"t{rev}"],
            "genres": ["Drama"], "related": [card], "authors": [{"id": 1, "slug": "p-1",
            "name": "Person 1"}], "revision": rev, "updated_at": at, "published_at": at,
            "search_text": "words"}  # fmt: skip


def _empty(schema: Schema) -> Any:
    from nearstate.overlay import empty_state

    return empty_state(schema, "t")


def _at_once(n: int, read: Callable[[], Any]) -> list[Any]:
    """``read()`` on ``n`` threads started together: what each returned or raised."""
    start = threading.Barrier(n)
    out: list[Any] = []

    def run() -> None:
        start.wait()
        try:
            out.append(read())
        except BaseException as e:  # returned to the caller
            out.append(e)

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def _dicts(state: Any, type_name: str) -> list[Any]:
    return [(r.key, repr(r.to_dict())) for r in state[type_name]]


def test_deferred_records_read_as_staged_ones_over_several_commits() -> None:
    """Stories with nested blocks, images and cards, laid over as raw msgpack commit by
    commit (added, replaced, removed), read exactly as the same dicts laid over eagerly;
    the changed keys are the same."""
    raw_state = dict_state = _empty(CONTENT)
    commits = [
        {1: _story(1, 0), 2: _story(2, 0)},
        {2: _story(2, 1), 3: _story(3, 0)},
        {1: None, 3: _story(3, 1)},
        {1: _story(1, 2)},
    ]
    for i, net in enumerate(commits):
        raw_net = {"Story": {k: None if r is None else _raw(r) for k, r in net.items()}}
        dec_net = {"Story": {k: None if r is None else msgspec.msgpack.decode(
            msgspec.msgpack.encode(r)) for k, r in net.items()}}  # fmt: skip
        raw_state, rch = lay_over(raw_state, raw_net, name=f"raw {i}")
        dict_state, dch = lay_over(dict_state, dec_net, name=f"dict {i}")
        assert {t: (c.added, c.modified, c.removed) for t, c in rch.items()} == {
            t: (c.added, c.modified, c.removed) for t, c in dch.items()}  # fmt: skip
        assert _dicts(raw_state, "Story") == _dicts(dict_state, "Story")
        assert raw_state.checksums() == dict_state.checksums()
    s = raw_state["Story"].get(1)
    assert s.title == "Story 1 rev 2" and s.body[3].image.alt == "Still 1"
    assert s.related[0].poster.large == "/l/5"


def test_a_deferred_layer_is_not_decoded_until_read() -> None:
    """Bytes that are not msgpack are laid over without complaint (only the keys are
    needed): the key shows at once; reading the record says what is wrong."""
    schema = Schema([TypeDef("P", (Field("id", FieldType("int")),
                                   Field("v", FieldType("int"))), key=("id",))])  # fmt: skip
    state, ch = lay_over(_empty(schema), {"P": {7: msgspec.Raw(b"\xc1")}}, name="log 1")
    assert ch["P"].added == [7] and 7 in state["P"] and len(state["P"]) == 1
    with pytest.raises(nearstate.SchemaError, match="not valid msgpack"):
        _ = state["P"].get(7).v


def test_a_deferred_record_needing_the_checked_path_reads_right() -> None:
    """A record the fast stager does not take as it is (an int for a float field, a
    field left out that has a default) is staged by WriteState when read, with every
    other record of its layer; a record the schema refuses is refused on the read, named."""
    schema = Schema([TypeDef("P", (
        Field("id", FieldType("int")),
        Field("x", FieldType("float")),
        Field("tags", FieldType("list", item=FieldType("str")), default=[]),
    ), key=("id",))])  # fmt: skip
    net = {"P": {1: _raw({"id": 1, "x": 1.5, "tags": ["a"]}), 2: _raw({"id": 2, "x": 3})}}
    state, _ = lay_over(_empty(schema), net, name="log 1")
    assert state["P"].get(2).x == 3.0 and isinstance(state["P"].get(2).x, float)
    assert state["P"].get(1).tags == ["a"] and state["P"].get(2).tags == []
    bad, _ = lay_over(_empty(schema), {"P": {3: _raw({"id": 3, "x": "three"})}}, name="log 2")
    assert 3 in bad["P"]
    with pytest.raises(nearstate.SchemaError, match="x"):
        _ = bad["P"].get(3).x


def test_mixed_datetimes_in_a_deferred_layer_are_refused_on_read() -> None:
    schema = Schema([TypeDef("E", (Field("id", FieldType("int")),
                                   Field("at", FieldType("datetime"))), key=("id",))])  # fmt: skip
    aware = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
    net = {"E": {1: _raw({"id": 1, "at": aware}),
                 2: _raw({"id": 2, "at": dt.datetime(2024, 1, 1)})}}  # fmt: skip
    state, _ = lay_over(_empty(schema), net, name="log")
    with pytest.raises(nearstate.SchemaError, match="mixes naive and timezone-aware"):
        _ = state["E"].get(1).at


def test_keys_that_are_not_ints_or_strings_are_staged_at_once() -> None:
    """A datetime key's staged form is the one looked up: such a layer is staged when laid
    over (bad bytes are refused there), as before."""
    schema = Schema([TypeDef("E", (Field("at", FieldType("datetime")),
                                   Field("v", FieldType("int"))), key=("at",))])  # fmt: skip
    at = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
    state, ch = lay_over(_empty(schema), {"E": {at: _raw({"at": at, "v": 1})}}, name="log")
    assert ch["E"].added == [at] and state["E"].get(at).v == 1
    with pytest.raises(nearstate.SchemaError, match="not valid msgpack"):
        lay_over(_empty(schema), {"E": {at: msgspec.Raw(b"\xc1")}}, name="log")


def test_readers_on_many_threads_stage_a_deferred_layer_once() -> None:
    state, _ = lay_over(_empty(CONTENT), {"Story": {i: _raw(_story(i, 0)) for i in range(50)}},
                        name="log")  # fmt: skip
    seen = _at_once(8, lambda: [(r.id, r.title, r.body[3].image.alt) for r in state["Story"]])
    want = [(i, f"Story {i} rev 0", f"Still {i}") for i in range(50)]
    assert len(seen) == 8 and all(s == want for s in seen), seen


def test_decode_entry_keeps_records_raw_and_deletes_none() -> None:
    body = encode_entry([("Story", 1, {"id": 1}), ("Story", [2, "x"], None)], False)
    e = decode_entry(9, body, raw=True)
    (t1, k1, r1), (t2, k2, r2) = e.mutations
    assert (t1, k1, t2, k2, r2) == ("Story", 1, "Story", (2, "x"), None)
    assert type(r1) is msgspec.Raw and msgspec.msgpack.decode(r1) == {"id": 1}
    assert decode_entry(9, body).mutations[0][2] == {"id": 1}
    with pytest.raises(nearstate.LogError, match="log entry 9 is malformed"):
        decode_entry(9, msgspec.msgpack.encode([1, [["Story", 1]], False]), raw=True)


def test_a_consumer_shows_deferred_commits_end_to_end(tmp_path: Path) -> None:
    """Through the Writer and a Consumer on a local dataset: every commit is visible with
    the values written, on a consumer that reads each one and on one that reads only the
    last (its earlier layers never staged)."""
    ds = nearstate.open(f"file://{tmp_path / 'ds'}")
    w = ds.writer(schema=CONTENT)
    w.upsert("Story", _story(1, 0))
    ds.compact()
    eager, lazy = ds.consumer(), ds.consumer()
    eager.refresh()
    lazy.refresh()
    for rev in range(1, 30):
        tok = w.upsert("Story", _story(1 + rev % 3, rev))
        got = eager.wait_for(tok)["Story"].get(1 + rev % 3)
        assert got.revision == rev and got.tags == ["making-of", f"t{rev}"]
    tok = w.delete("Story", 2)
    last = lazy.wait_for(tok)
    assert 2 not in last["Story"] and 2 not in eager.wait_for(tok)["Story"]
    assert [(s.id, s.revision) for s in last["Story"]] == [(1, 27), (3, 29)]
    assert _dicts(last, "Story") == _dicts(eager.state, "Story")


def test_a_large_layer_is_staged_when_laid_over() -> None:
    """More records than DEFER_MAX in one layer (a tail re-laid over a new version, a
    consumer catching up) are staged by the thread laying them over, not by the first
    reader: a bad one is refused there, and a good layer reads without staging."""
    from nearstate.overlay import DEFER_MAX

    schema = Schema([TypeDef("P", (Field("id", FieldType("int")),
                                   Field("v", FieldType("int"))), key=("id",))])  # fmt: skip
    n = DEFER_MAX + 1
    good = {"P": {i: _raw({"id": i, "v": -i}) for i in range(n)}}
    state, _ = lay_over(_empty(schema), good, name="log")
    assert [r.v for r in state["P"]] == [-i for i in range(n)]
    bad = {"P": {**{i: _raw({"id": i, "v": i}) for i in range(n - 1)}, n: msgspec.Raw(b"\xc1")}}
    with pytest.raises(nearstate.SchemaError, match="not valid msgpack"):
        lay_over(_empty(schema), bad, name="log")
    small = {"P": {i: _raw({"id": i, "v": i}) for i in range(n - 2)} | {n: msgspec.Raw(b"\xc1")}}
    state, _ = lay_over(_empty(schema), small, name="log")  # deferred: refused on the read
    with pytest.raises(nearstate.SchemaError, match="not valid msgpack"):
        _ = state["P"].get(0).v


def _probe_schema() -> Schema:
    return Schema([TypeDef("P", (Field("id", FieldType("int")), Field("v", FieldType("int")),
                                 Field("at", FieldType("datetime", nullable=True))),
                           key=("id",))])  # fmt: skip


def test_commits_since_a_version_share_one_log_layer() -> None:
    """Commit after commit is appended to the one Log layer the state ends with (no layer,
    type or column made per commit), and every state made on the way still reads what it
    read when it was made, with the checksums of the same commits laid over eagerly."""
    states, eager = [], _empty(CONTENT)
    state = _empty(CONTENT)
    for rev in range(12):
        net = {"Story": {1 + rev % 3: _story(1 + rev % 3, rev)}}
        if rev == 7:
            net["Story"][3] = None  # and a delete in the same commit
        state, _ = lay_over(state, {t: {k: None if r is None else _raw(r) for k, r in m.items()}
                                    for t, m in net.items()}, name=f"log {rev}")  # fmt: skip
        eager, _ = lay_over(eager, {t: {k: None if r is None else msgspec.msgpack.decode(
            msgspec.msgpack.encode(r)) for k, r in m.items()} for t, m in net.items()},
            name=f"eager {rev}")  # fmt: skip
        states.append((state, _dicts(eager, "Story"), eager.checksums()))
    layer = state.layers[-1]
    assert len(state.layers) == 1 and all(s.layers == (layer,) for s, _, _ in states)
    assert len(layer.state["Story"]) == 12  # a row per commit: earlier ones stay as they were
    for s, want, sums in reversed(states):  # read newest first: older rows stage later
        assert _dicts(s, "Story") == want
        assert s.checksums() == sums
    assert [(r.id, r.revision) for r in state["Story"]] == [(1, 9), (2, 10), (3, 11)]


def test_a_state_branched_twice_reads_each_branch() -> None:
    """Two commits laid over the same state (both appended to its layer) give two states,
    each with its own record, and leave the first as it was."""
    base, _ = lay_over(_empty(_probe_schema()), {"P": {1: _raw({"id": 1, "v": 1})}}, name="a")
    left, _ = lay_over(base, {"P": {1: _raw({"id": 1, "v": 2})}}, name="b")
    right, _ = lay_over(base, {"P": {1: _raw({"id": 1, "v": 3}), 2: _raw({"id": 2, "v": 4})}},
                        name="c")  # fmt: skip
    assert left.layers == right.layers == base.layers
    assert [r.v for r in base["P"]] == [1]
    assert [r.v for r in left["P"]] == [2]
    assert [r.v for r in right["P"]] == [3, 4]


def test_branches_that_add_and_remove_keys_keep_to_their_own(tmp_path: Path) -> None:
    """A commit that only replaces records shares its state's added and removed keys; one
    that adds or removes a key takes its own copy first. States branched from one state,
    each adding, removing and putting back keys of a snapshot and new ones, read exactly
    what a dict given the same commits holds, and so does every state on the way."""
    import random

    ws = nearstate.WriteState(_probe_schema())
    for i in range(1, 41):
        ws.add("P", {"id": i, "v": i})
    ws.write_snapshot(tmp_path / "s.blob", version=1)
    snap = nearstate.load(tmp_path / "s.blob")
    rng = random.Random(7)
    seen: list[tuple[Any, dict[int, int]]] = []
    heads = [(snap, {i: i for i in range(1, 41)})]
    for step in range(300):
        state, want = heads[rng.randrange(len(heads))]  # branch from any head so far
        want = dict(want)
        net: dict[int, Any] = {}
        for _ in range(rng.choice([1, 1, 1, 2, 4])):
            k = rng.randrange(1, 61)  # keys of the snapshot and new ones
            if rng.random() < 0.3:
                net[k] = None
                want.pop(k, None)
            else:
                net[k] = _raw({"id": k, "v": 1000 * step + k})
                want[k] = 1000 * step + k
        state, _ = lay_over(state, {"P": net}, name=f"log {step}")
        heads.append((state, want))
        seen.append((state, want))
    for state, want in seen:
        assert {r.id: r.v for r in state["P"]} == want
        assert len(state["P"]) == len(want)
        assert all(state["P"].get(k) is None for k in range(1, 61) if k not in want)


def test_a_bad_commit_in_a_shared_layer_is_refused_alone() -> None:
    """A commit whose record cannot be staged is refused when that record is read, naming
    it; the commits before and after it in the same layer read on. Naive and aware
    datetimes in different commits are fine; in one commit they are refused."""
    s = _empty(_probe_schema())
    naive, aware = dt.datetime(2024, 1, 1), dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
    s, _ = lay_over(s, {"P": {1: _raw({"id": 1, "v": 1, "at": naive})}}, name="log 1")
    first = s
    s, _ = lay_over(s, {"P": {2: msgspec.Raw(b"\xc1")}}, name="log 2")
    s, _ = lay_over(s, {"P": {3: _raw({"id": 3, "v": 3, "at": aware})}}, name="log 3")
    s, _ = lay_over(s, {"P": {4: _raw({"id": 4, "v": "four"})}}, name="log 4")
    s, _ = lay_over(s, {"P": {5: _raw({"id": 5, "v": 5, "at": naive}),
                              6: _raw({"id": 6, "v": 6, "at": aware})}}, name="log 5")  # fmt: skip
    assert len(s.layers) == 1 and all(k in s["P"] for k in range(1, 7)) and len(s["P"]) == 6
    assert s["P"].get(1).at == naive and s["P"].get(3).at == aware and s["P"].get(3).v == 3
    with pytest.raises(nearstate.SchemaError, match=r"^log 2: a record in the Log is not valid"):
        _ = s["P"].get(2).v
    with pytest.raises(nearstate.SchemaError, match=r"^log 4: .*'v'"):
        _ = s["P"].get(4).v
    with pytest.raises(nearstate.SchemaError, match=r"log 5: P\.at mixes naive and timezone"):
        _ = s["P"].get(6).v
    with pytest.raises(nearstate.SchemaError, match="not valid msgpack"):  # again: still named
        _ = s["P"].get(2).id
    assert s["P"].get(1).v == 1
    # the state made before the bad commits works its checksums out without them
    eager, _ = lay_over(_empty(_probe_schema()), {"P": {1: {"id": 1, "v": 1, "at": naive}}},
                        name="eager")  # fmt: skip
    assert first.checksums() == eager.checksums()
    with pytest.raises(nearstate.SchemaError, match="log 2"):
        s.checksums()


def test_readers_hold_states_while_commits_are_appended() -> None:
    """Reader threads each take a state and read it whole, again and again, while another
    thread appends commit after commit to the layer their states end with: every read of
    a state gives what that state showed when it was made."""
    state = _empty(_probe_schema())
    made: list[tuple[Any, dict[int, int]]] = []
    lock = threading.Lock()
    stop = threading.Event()
    errors: list[BaseException] = []

    def write() -> None:
        nonlocal state
        want: dict[int, int] = {}
        for i in range(400):
            k, v = i % 37, i
            state, _ = lay_over(state, {"P": {k: _raw({"id": k, "v": v})}}, name=f"log {i}")
            want[k] = v
            with lock:
                made.append((state, dict(want)))
        stop.set()

    def read() -> None:
        try:
            while not stop.is_set() or made:
                with lock:
                    if not made:
                        continue
                    s, want = made[len(made) // 2] if stop.is_set() else made[-1]
                    if stop.is_set():
                        made.pop(len(made) // 2)
                assert {r.id: r.v for r in s["P"]} == want
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=read) for _ in range(4)]
    for t in threads:
        t.start()
    write()
    for t in threads:
        t.join(60)
    assert not errors, errors[0]
    assert len(state.layers) == 1


def test_readers_making_a_nested_type_at_once_share_its_rows() -> None:
    """Threads reading the nested records of a fresh layer at the same moment (the layer
    makes a nested type's reader on first use, on whichever thread asks) all read them;
    none is left with rows nobody stages into (an IndexError on every later read)."""
    import sys

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can
    try:
        for trial in range(150):
            s, _ = lay_over(_empty(CONTENT), {"Story": {1: _raw(_story(1, trial))}},
                            name=f"log {trial}")  # fmt: skip
            assert s["Story"].get(1).revision == trial  # the story staged; its blocks not
            out = _at_once(3, lambda s=s: repr(s["Story"].get(1).to_dict()))
            assert len(out) == 3 and len(set(map(str, out))) == 1, out
            assert isinstance(out[0], str), out[0]
    finally:
        sys.setswitchinterval(interval)
