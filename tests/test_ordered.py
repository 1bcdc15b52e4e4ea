"""Ordered indexes: ``between`` / ``above`` / ``below`` / ``prefix`` / ``one_of`` in
``find``, and ``TypeState.ordered(field)`` returning records in the field's order.

Properties (hypothesis), each against a brute-force scan of the records written:

* on a ReadState: ``find`` with one or two queries returns exactly the matching records;
  ``ordered(f)`` returns them once each, in the order of their first matching value,
  ``limit`` and ``reverse`` cut that order; ``count``, ``min`` and ``max`` agree;
* on a LayeredState (a snapshot plus random deltas, through a Producer and a Consumer):
  the same, and the same answers as a ReadState of the same records.

Then the edges one by one: nulls, NaN, -0.0, empty results and types, unicode (lone
surrogates and U+10FFFF), negative and 64-bit ints, ints beyond 64 bits, datetimes naive
and aware, bad input raising SchemaError naming the field, the index read from the stored
sections equal to the one read value by value, and a larger set where ``find`` plans
(intersection, then checking the few candidates one by one).
"""

from __future__ import annotations

import datetime as dt
import math
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nearstate
from nearstate import (
    Consumer,
    Field,
    FieldType,
    LayeredState,
    Producer,
    Schema,
    SchemaError,
    TypeDef,
    above,
    below,
    between,
    one_of,
    prefix,
)
from nearstate.backends import MemoryAnnouncer, MemoryBlobStore
from nearstate.ordered import OneOf, Prefix, Range, build_ordered

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

NAN = float("nan")
UTC = dt.UTC
TZ2 = dt.timezone(dt.timedelta(hours=2))

SCHEMA = Schema(
    [
        TypeDef(
            "Item",
            (
                Field("id", FieldType("int")),
                Field("n", FieldType("int", True)),
                Field("big", FieldType("int", True)),
                Field("f", FieldType("float", True)),
                Field("s", FieldType("str", True)),
                Field("d", FieldType("datetime", True)),
                Field("da", FieldType("datetime", True)),
                Field("b", FieldType("bool", True)),
                Field("tags", FieldType("list", item=FieldType("str"))),
                Field("nums", FieldType("set", item=FieldType("int"))),
            ),
            key=("id",),
        )
    ]
)

INTS = [-(2**63), -7, -1, 0, 1, 2, 5, 2**63 - 1]
BIGS = [-(2**70), -3, 0, 4, 2**64, 2**70]
FLOATS = [-math.inf, -2.25, -0.0, 0.0, 0.1, 1.5, 3.0, 1e300, math.inf, NAN]
STRS = ["", "a", "a\x00", "ab", "abc", "b", "B", "é", "éa", "日本", "日本語", "\U0001f600",
        "\U0001f600x", "\ud800", "\U0010ffff", "\U0010ffffa"]  # fmt: skip
DATES = [dt.datetime(1969, 12, 31, 23, 59, 59, 999999), dt.datetime(1970, 1, 1),
         dt.datetime(2000, 2, 29, 12), dt.datetime(2038, 1, 19, 3, 14, 8)]  # fmt: skip
AWARE = [dt.datetime(2020, 1, 1, tzinfo=UTC), dt.datetime(2020, 1, 1, 2, tzinfo=TZ2),
         dt.datetime(2020, 1, 1, 1, tzinfo=UTC), dt.datetime(1999, 5, 5, tzinfo=TZ2)]  # fmt: skip
TAGS = ["", "x", "xy", "y", "é"]
DOMAIN = {"n": INTS, "big": BIGS, "f": FLOATS, "s": STRS, "d": DATES, "da": AWARE,
          "b": [False, True], "tags": TAGS, "nums": [-3, -1, 0, 2, 3]}  # fmt: skip
STR_FIELDS = ("s", "tags")
FIELDS = tuple(DOMAIN)


FINITE = [x for x in FLOATS if not math.isinf(x)]


def record(draw: Any, i: int, finite: bool = False) -> dict[str, Any]:
    def maybe(values: list[Any]) -> Any:
        return draw(st.none() | st.sampled_from(values))

    return {
        "id": i,
        "n": maybe(INTS),
        "big": maybe(BIGS),
        "f": maybe(FINITE if finite else FLOATS),
        "s": maybe(STRS),
        "d": maybe(DATES),
        "da": maybe(AWARE),
        "b": maybe([False, True]),
        "tags": draw(st.lists(st.sampled_from(TAGS), max_size=3)),
        "nums": set(draw(st.lists(st.sampled_from(DOMAIN["nums"]), max_size=3))),
    }


@st.composite
def models(draw: Any, max_size: int = 25, finite: bool = False) -> dict[int, dict[str, Any]]:
    n = draw(st.integers(0, max_size))
    return {i: record(draw, i, finite) for i in range(n)}


def bounds(field: str) -> st.SearchStrategy[Any]:
    """Bounds for ``field``: its own values and some of another numeric type."""
    extra: list[Any] = []
    if field in ("n", "big", "nums", "b"):
        extra = [0.5, -0.5, 2.0, -math.inf, math.inf, 1e19, 2**64 + 1]
    elif field == "f":
        extra = [1, -2, 2**53 + 1, 10**400, -(10**400)]
    own = [v for v in DOMAIN[field] if not (isinstance(v, float) and v != v)]
    return st.sampled_from(own + extra)


@st.composite
def queries(draw: Any, field: str) -> Any:
    kinds = ["between", "above", "below", "one_of"] + (
        ["prefix"] * 2 if field in STR_FIELDS else []
    )
    kind = draw(st.sampled_from(kinds))
    b = bounds(field)
    if kind == "between":
        lo, hi = draw(st.none() | b), draw(st.none() | b)
        return between(lo, hi, lo_inclusive=draw(st.booleans()), hi_inclusive=draw(st.booleans()))
    if kind == "above":
        return above(draw(b), inclusive=draw(st.booleans()))
    if kind == "below":
        return below(draw(b), inclusive=draw(st.booleans()))
    if kind == "prefix":
        return prefix(
            draw(st.sampled_from(["", "a", "ab", "日", "\U0010ffff", "é", "x", "\ud800"]))
        )
    return one_of(draw(st.lists(st.sampled_from(DOMAIN[field]) | b, max_size=4)))


# --- the brute force, written apart from the implementation --------------------------------


def isnan(x: Any) -> bool:
    return isinstance(x, float) and x != x


def holds(x: Any, q: Any) -> bool:
    if x is None:
        return False
    if isinstance(q, Range):
        if isnan(x):
            return False
        if q.lo is not None and (x < q.lo or (x == q.lo and not q.lo_inclusive)):
            return False
        return not (q.hi is not None and (x > q.hi or (x == q.hi and not q.hi_inclusive)))
    if isinstance(q, Prefix):
        return x[: len(q.prefix)] == q.prefix
    assert isinstance(q, OneOf)
    return any(x == v or (isnan(x) and isnan(v)) for v in q.values)


def elements(rec: dict[str, Any], field: str) -> list[Any]:
    v = rec[field]
    if field in ("tags", "nums"):
        return list(v)
    return [] if v is None else [v]


def sortkey(x: Any) -> tuple:
    return (1, 0) if isnan(x) else (0, x)


def first_match(rec: dict[str, Any], field: str, q: Any, reverse: bool = False) -> Any:
    """The value a record is placed by: its first matching element in the order asked."""
    found = [x for x in elements(rec, field) if q is None or holds(x, q)]
    if not found:
        return None
    return (max if reverse else min)(found, key=sortkey)


def expected(model: dict[int, dict[str, Any]], field: str, q: Any) -> set[int]:
    return {k for k, r in model.items() if first_match(r, field, q) is not None}


# --- building states ---------------------------------------------------------------------------


def fast_dir() -> tempfile.TemporaryDirectory:
    shm = Path("/dev/shm")
    return tempfile.TemporaryDirectory(
        dir=shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    )


def read_state(model: dict[int, dict[str, Any]], schema: Schema = SCHEMA) -> nearstate.ReadState:
    ws = nearstate.WriteState(schema)
    ws.add_many("Item", [dict(r) for r in model.values()])
    with fast_dir() as d:
        path = Path(d) / "s.blob"
        ws.write_snapshot(path, dataset="t", version=1)
        return nearstate.load(path, mmap=False)


def layered(model: dict[int, dict[str, Any]], steps: list[list[tuple[str, Any]]]):
    """A consumer's state after the model's snapshot and one delta per step; the model
    changed in place to what it holds."""
    p = Producer(MemoryBlobStore(), MemoryAnnouncer(), snapshot_every=100)
    try:
        p.run_cycle(lambda ws: ws.add_many("Item", [dict(r) for r in model.values()]),
                    schema=SCHEMA)  # fmt: skip
        c = Consumer(p.blobs, p.announcer)
        c.refresh()
        for ops in steps:

            def mutate(inc: nearstate.Incremental, ops: list = ops) -> None:
                for op, arg in ops:
                    if op == "upsert":
                        inc.upsert("Item", dict(arg))
                    else:
                        inc.delete("Item", arg)

            for op, arg in ops:
                if op == "upsert":
                    model[arg["id"]] = arg
                else:
                    model.pop(arg, None)
            p.run_incremental(mutate)
            c.refresh()
        return c.state
    finally:
        p.close()


# --- the checks --------------------------------------------------------------------------------


def check_find(ts: Any, model: dict[int, dict[str, Any]], field: str, q: Any) -> None:
    got = [r.key for r in ts.find(**{field: q})]
    assert len(got) == len(set(got)), "a record found twice"
    assert set(got) == expected(model, field, q), (field, q)


def check_ordered(ts: Any, model: dict[int, dict[str, Any]], field: str, q: Any) -> list:
    """The ordered answers hold; returns the forward order's placing values."""
    idx = ts.ordered(field)
    want = expected(model, field, q)
    out = []
    for reverse in (False, True):
        recs = ts._records(idx.ordinals(q, reverse=reverse)) if q is None else None
        if recs is None:
            if isinstance(q, Range):
                recs = idx.range(q.lo, q.hi, lo_inclusive=q.lo_inclusive,
                                 hi_inclusive=q.hi_inclusive, reverse=reverse)  # fmt: skip
            elif isinstance(q, Prefix):
                recs = idx.prefix(q.prefix, reverse=reverse)
            else:
                recs = idx.one_of(q.values, reverse=reverse)
        keys = [r.key for r in recs]
        assert len(keys) == len(set(keys)) and set(keys) == want, (field, q, reverse)
        placed = [sortkey(first_match(model[k], field, q, reverse)) for k in keys]
        assert placed == sorted(placed, reverse=reverse), (field, q, reverse)
        for limit in (0, 1, 3):
            cut = [r.key for r in ts._records(idx.ordinals(q, limit=limit, reverse=reverse))]
            assert [sortkey(first_match(model[k], field, q, reverse)) for k in cut] == placed[
                :limit
            ]
            assert set(cut) <= want
        out.append(placed)
    assert idx.count(q) == len(want)
    values = [x for r in model.values() for x in elements(r, field) if not isnan(x)]
    assert idx.min() == (min(values) if values else None)
    assert idx.max() == (max(values) if values else None)
    return out


@SETTINGS
@given(data=st.data(), model=models())
def test_queries_equal_a_scan_on_a_read_state(data: Any, model: dict) -> None:
    ts = read_state(model)["Item"]
    for _ in range(6):
        field = data.draw(st.sampled_from(FIELDS))
        q = data.draw(queries(field))
        check_find(ts, model, field, q)
        check_ordered(ts, model, field, q)
    check_ordered(ts, model, data.draw(st.sampled_from(FIELDS)), None)
    # two conditions (and one with equality) intersect
    f1, f2 = data.draw(st.sampled_from(FIELDS)), data.draw(st.sampled_from(FIELDS))
    q1, q2 = data.draw(queries(f1)), data.draw(queries(f2))
    if f1 != f2:
        got = {r.key for r in ts.find(**{f1: q1, f2: q2})}
        assert got == expected(model, f1, q1) & expected(model, f2, q2)
        v = data.draw(st.sampled_from(DOMAIN[f2]))
        eq = {k for k, r in model.items() if any(x == v or (isnan(x) and isnan(v))
                                                 for x in elements(r, f2))}  # fmt: skip
        assert {r.key for r in ts.find(**{f1: q1, f2: v})} == expected(model, f1, q1) & eq


@st.composite
def steps(draw: Any, model: dict[int, dict[str, Any]]) -> list[list[tuple[str, Any]]]:
    out = []
    keys = set(model)
    for _ in range(draw(st.integers(1, 3))):
        ops: list[tuple[str, Any]] = []
        for _ in range(draw(st.integers(1, 6))):
            if keys and draw(st.booleans()):
                k = draw(st.sampled_from(sorted(keys)))
                if draw(st.booleans()):
                    ops.append(("delete", k))
                    keys.discard(k)
                    continue
            else:
                k = draw(st.integers(0, 40))
            ops.append(("upsert", record(draw, k)))
            keys.add(k)
        out.append(ops)
    return out


@settings(SETTINGS, max_examples=25)  # each example runs producer cycles
@given(data=st.data(), model=models(max_size=20))
def test_a_layered_state_answers_as_a_read_state_of_its_records(data: Any, model: dict) -> None:
    model = {k: v for k, v in model.items()}
    state = layered(model, data.draw(steps(model)))
    fresh = read_state(model)["Item"]
    ts = state["Item"]
    for _ in range(6):
        field = data.draw(st.sampled_from(FIELDS))
        q = data.draw(queries(field))
        check_find(ts, model, field, q)
        assert check_ordered(ts, model, field, q) == check_ordered(fresh, model, field, q)
    f1, f2 = data.draw(st.sampled_from(FIELDS)), data.draw(st.sampled_from(FIELDS))
    q1, q2 = data.draw(queries(f1)), data.draw(queries(f2))
    if f1 != f2:
        got = {r.key for r in ts.find(**{f1: q1, f2: q2})}
        assert got == expected(model, f1, q1) & expected(model, f2, q2)
    field = data.draw(st.sampled_from(FIELDS))
    assert check_ordered(ts, model, field, None) == check_ordered(fresh, model, field, None)


# --- edges -----------------------------------------------------------------------------------


def some_model(n: int = 300) -> dict[int, dict[str, Any]]:
    out = {}
    for i in range(n):
        out[i] = {
            "id": i, "n": None if i % 11 == 0 else (i * 7919) % 97 - 40, "big": i * 2**66 - 2**70,
            "f": NAN if i % 13 == 0 else (None if i % 17 == 0 else (i % 23) / 4 - 2.0),
            "s": None if i % 19 == 0 else STRS[i % len(STRS)] + str(i % 5),
            "d": DATES[i % 4] + dt.timedelta(days=i), "da": AWARE[i % 4] - dt.timedelta(hours=i),
            "b": [None, False, True][i % 3], "tags": [TAGS[i % 5], TAGS[(i * 3) % 5]],
            "nums": {i % 4, -(i % 3)},
        }  # fmt: skip
    return out


def test_the_stored_layout_and_the_values_read_one_by_one_give_the_same_index() -> None:
    model = some_model()
    ts = read_state(model)["Item"]
    for field in FIELDS:
        from_sections = ts.ordered(field)
        one_by_one = build_ordered(f"Item.{field}", ts.column(field), len(ts), ts._records)
        assert from_sections.ordinals().tolist() == one_by_one.ordinals().tolist(), field
        assert from_sections.min() == one_by_one.min() and from_sections.max() == one_by_one.max()
        check_ordered(ts, model, field, None)


def item_type(*fields: Field) -> TypeDef:
    return TypeDef("Item", (Field("id", FieldType("int")), *fields), key=("id",))


def item_schema(*fields: Field) -> Schema:
    return Schema([item_type(*fields)])


def test_nulls_nan_and_signed_zero() -> None:
    model = {i: {"id": i, "f": f} for i, f in enumerate([NAN, None, -0.0, 0.0, math.inf, NAN])}
    schema = item_schema(Field("f", FieldType("float", True)))
    ts = read_state(model, schema)["Item"]
    keys = lambda recs: [r.key for r in recs]  # noqa: E731
    idx = ts.ordered("f")
    assert keys(idx.range()) == [2, 3, 4]  # NaN and null in no range
    assert keys(idx.range(0.0, 0.0)) == [2, 3]  # -0.0 == 0.0
    assert keys(ts._records(idx.ordinals())) == [2, 3, 4, 0, 5]  # NaN last
    assert sorted(keys(ts.find(f=one_of([NAN])))) == [0, 5] == sorted(keys(ts.find(f=NAN)))
    assert keys(idx.range(1e308)) == [4]
    assert idx.min() == 0.0 and idx.max() == math.inf
    assert idx.count() == 5 and idx.count(between()) == 3
    assert keys(ts.find(f=below(-1))) == [] and keys(idx.range(5, 1)) == []


def test_an_empty_type_and_empty_results() -> None:
    ts = read_state({})["Item"]
    for field in FIELDS:
        idx = ts.ordered(field)
        assert idx.ordinals().tolist() == [] and idx.min() is None and idx.max() is None
        assert idx.count() == 0 and ts.find(**{field: between(None, None)}) == []
    assert ts.find(s=prefix("a")) == [] and ts.find(n=one_of([])) == []


def test_big_and_negative_ints_and_exact_bounds() -> None:
    model = some_model(60)
    ts = read_state(model)["Item"]
    # a float bound on int values, an int bound on float values: compared exactly
    for field, q in [("n", between(-0.5, 3.5)), ("n", above(2**64)), ("big", below(-(2**69))),
                     ("big", between(-1.5, 2**68 + 0.0)), ("f", between(2**53 + 1, None)),
                     ("f", below(-(10**400))), ("nums", between(-0.5, 0.5))]:  # fmt: skip
        check_find(ts, model, field, q)
        check_ordered(ts, model, field, q)


def test_datetimes_naive_and_aware() -> None:
    model = some_model(80)
    ts = read_state(model)["Item"]
    instant = dt.datetime(2019, 12, 31, 20, tzinfo=UTC)
    same = instant.astimezone(TZ2)
    a = {r.key for r in ts.find(da=above(instant))}
    assert a == {r.key for r in ts.find(da=above(same))} == expected(model, "da", above(instant))
    check_ordered(ts, model, "d", between(dt.datetime(1970, 1, 1), dt.datetime(2000, 3, 1)))
    with pytest.raises(SchemaError, match=r"Item\.da holds timezone-aware datetimes"):
        ts.find(da=above(dt.datetime(2020, 1, 1)))
    with pytest.raises(SchemaError, match=r"Item\.d holds naive datetimes"):
        ts.ordered("d").range(instant)


def test_unicode_prefixes() -> None:
    model = {i: {"id": i, "s": s} for i, s in enumerate([*STRS, "\U0010ffff\U0010ffff", "日本"])}
    schema = item_schema(Field("s", FieldType("str", True)))
    ts = read_state(model, schema)["Item"]
    for p in ["", "a", "日本", "\U0010ffff", "\ud800", "\U0001f600", "zz"]:
        got = [r.s for r in ts.ordered("s").prefix(p)]
        assert got == sorted(s for s in model_values(model) if s.startswith(p)), p
    want = sorted(s for s in model_values(model) if "b" <= s < "é")
    assert [r.s for r in ts.ordered("s").range("b", "é", hi_inclusive=False)] == want


def model_values(model: dict) -> list[str]:
    return [r["s"] for r in model.values()]


def test_bad_input_names_the_field() -> None:
    ts = read_state(some_model(20))["Item"]
    cases = [
        (lambda: ts.find(n=prefix("1")), r"Item\.n: prefix\(\) needs a str field"),
        (lambda: ts.find(n=between("a", None)), r"Item\.n: the lower bound 'a' \(str\)"),
        (lambda: ts.find(s=above(3)), r"Item\.s: the lower bound 3 \(int\)"),
        (lambda: ts.ordered("f").range(0, NAN), r"Item\.f: a NaN upper bound"),
        (lambda: ts.find(n=one_of([1, "x"])), r"Item\.n: the value 'x'"),
        (lambda: ts.find(n=one_of([None])), r"Item\.n: one_of\(\) cannot hold None"),
        (lambda: ts.find(d=between(dt.date(2000, 1, 1))), r"Item\.d: the lower bound"),
        (lambda: ts.ordered("nope"), r"no field 'nope'"),
        (lambda: ts.find(nope=above(1)), r"no field 'nope'"),
        (lambda: one_of("abc"), r"one_of takes a collection"),
        (lambda: one_of([[1]]), r"one_of takes hashable values"),
        (lambda: ts.find(n=Range2()), r"not a query"),
    ]
    for fn, msg in cases:
        with pytest.raises(SchemaError, match=msg):
            fn()
    with pytest.raises(ValueError, match="limit"):
        ts.ordered("n").range(limit=-1)


class Range2(nearstate.Query):
    __slots__ = ()


def test_kinds_without_an_order_are_refused() -> None:
    ref = FieldType("ref", target="P")
    item = item_type(
        Field("who", ref),
        Field("m", FieldType("dict", item=FieldType("int"), key=FieldType("str"))),
        Field("t", FieldType("text")),
        Field("raw", FieldType("bytes")),
        Field("pl", FieldType("list", item=ref)),
    )
    schema = Schema([TypeDef("P", (Field("id", FieldType("int")),), key=("id",)), item])
    ws = nearstate.WriteState(schema)
    ws.add_many("P", [{"id": 1}, {"id": 2}])
    ws.add_many("Item", [{"id": i, "who": 1 + i % 2, "m": {}, "t": "x", "raw": b"r",
                          "pl": [1 + i % 2]} for i in range(6)])  # fmt: skip
    with fast_dir() as d:
        ws.write_snapshot(Path(d) / "s.blob", dataset="t", version=1)
        ts = nearstate.load(Path(d) / "s.blob", mmap=False)["Item"]
    for field, what in [("who", "ref"), ("m", "dict"), ("t", "text"), ("raw", "bytes"),
                        ("pl", "list of ref")]:  # fmt: skip
        with pytest.raises(SchemaError, match=rf"Item\.{field}: {what} fields have no ordered"):
            ts.ordered(field)
        with pytest.raises(SchemaError, match=rf"Item\.{field}: {what} fields"):
            ts.find(**{field: above(1)})
    # IN over references goes through the hash index, with records or keys
    p1 = ts.find(who=1)[0].who
    assert sorted(r.key for r in ts.find(who=one_of([p1]))) == [0, 2, 4]
    assert sorted(r.key for r in ts.find(pl=one_of([2]), id=below(4))) == [1, 3]


def test_find_plans_intersections_and_checks_few_candidates() -> None:
    model = some_model(3000)
    ts = read_state(model)["Item"]
    conds = [
        {"n": between(-40, 50), "s": prefix("a")},  # large and large: intersect
        {"n": one_of([7]), "f": between(-2, 3)},  # few candidates, then checked one by one
        {"n": one_of([7]), "tags": "x", "b": True},  # with equality
        {"d": above(dt.datetime(1975, 1, 1)), "nums": one_of([-2]), "da": below(AWARE[0])},
    ]
    for where in conds:
        want = set(model)
        for f, q in where.items():
            if isinstance(q, nearstate.Query):
                want &= expected(model, f, q)
            else:
                want &= {k for k, r in model.items() if q in elements(r, f)}
        got = [r.key for r in ts.find(**where)]
        assert got == sorted(want), where  # in ordinal order, which is key order here


def test_a_layered_index_shares_the_snapshot_index_and_reads_only_the_overlay() -> None:
    model = some_model(200)
    state = layered(model, [[("upsert", {**model[5], "n": 1000}), ("delete", 6)],
                            [("upsert", {**some_model(1)[0], "id": 500, "n": -1000})]])  # fmt: skip
    assert isinstance(state, LayeredState)
    ts = state["Item"]
    idx = ts.ordered("n")
    assert idx._b is state.base["Item"].ordered("n")
    assert [r.key for r in idx.range(limit=1)] == [500] and [r.key for r in idx.range(
        limit=1, reverse=True)] == [5]  # fmt: skip
    assert idx.min() == -1000 and idx.max() == 1000
    assert 6 not in {r.key for r in ts.find(n=between(None, None))}
    assert ts.ordered("n") is idx  # kept per version
    for field in FIELDS:
        check_ordered(ts, model, field, None)


def test_writes_through_the_log_are_in_the_answers_at_once() -> None:
    from nearstate import Writer
    from nearstate.backends.memory import MemoryLog

    # (the Writer's msgpack refuses ints beyond 64 bits with a bare OverflowError)
    model = {k: {**r, "big": k} for k, r in some_model(100).items()}
    blobs, announcer, log = MemoryBlobStore(), MemoryAnnouncer(), MemoryLog()
    p = Producer(blobs, announcer)
    try:
        p.run_cycle(lambda ws: ws.add_many("Item", list(model.values())), schema=SCHEMA)
        c = Consumer(blobs, announcer, log=log)
        c.refresh()
        before = c.state["Item"].ordered("s")
        w = Writer(log, versions=lambda: c.state)
        w.delete("Item", 3)
        token = w.upsert("Item", {**model[4], "s": "\U0010ffff" * 3, "n": -999})
        state = c.wait_for(token)
        del model[3]
        model[4] = {**model[4], "s": "\U0010ffff" * 3, "n": -999}
        ts = state["Item"]
        assert [r.key for r in ts.ordered("s").range(limit=1, reverse=True)] == [4]
        assert [r.key for r in ts.find(n=below(-500))] == [4]
        assert ts.ordered("s")._b is before  # the snapshot's index, not rebuilt
        for field in FIELDS:
            check_ordered(ts, model, field, None)
            check_find(ts, model, field, between())
    finally:
        p.close()


def test_many_threads_build_one_index() -> None:
    ts = read_state(some_model(500))["Item"]
    got: list[Any] = []
    barrier = threading.Barrier(8)

    def work() -> None:
        barrier.wait()
        got.append(ts.ordered("s"))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 8 and all(g is got[0] for g in got)


def test_results_are_records_and_arrays() -> None:
    ts = read_state(some_model(50))["Item"]
    idx = ts.ordered("n")
    ords = idx.ordinals(between(0, 10))
    assert ords.dtype == np.uint32
    recs = idx.range(0, 10)
    assert [r.ordinal for r in recs] == ords.tolist() and all(0 <= r.n <= 10 for r in recs)
    assert "Item.n" in repr(idx) and idx.nbytes > 0


def test_a_float_changed_between_infinity_and_null_is_a_change() -> None:
    rec = {"id": 0, "f": -math.inf}
    p = Producer(MemoryBlobStore(), MemoryAnnouncer())
    try:
        p.run_cycle(
            lambda ws: ws.add("Item", dict(rec)),
            schema=item_schema(Field("f", FieldType("float", True))),
        )
        assert p.run_incremental(lambda inc: inc.upsert("Item", {**rec, "f": None})).version == 2
    finally:
        p.close()
