"""Property-based round trips: generated schemas and records survive write -> load.

Two properties:

* store round trip: a random :class:`nearstate.Schema` (1-3 keyed types, 0-2 nested types,
  every field kind, nullable variants) and records conforming to it are written with
  :class:`nearstate.WriteState`, loaded back (mapped and read into memory) and compared
  record by record, together with ``len``, ordinals, ``get``, ``find``.
* JSON round trip: random JSON-like records written as JSON Lines, imported with
  :func:`nearstate.import_jsonl` and exported with :func:`nearstate.export_records` come
  back exactly.

The regression tests at the bottom pin bugs these properties found (each was first a strict
xfail, then fixed in src).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import itertools
import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nearstate
from nearstate import Field, FieldType, LocalDataset, Schema, TypeDef

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def fast_tmpdir() -> tempfile.TemporaryDirectory:
    """A temporary directory in memory when possible: blobs are fsynced on write."""
    shm = Path("/dev/shm")
    fast = shm.is_dir() and os.access(shm, os.W_OK)
    return tempfile.TemporaryDirectory(dir=shm if fast else None)


# --- strict comparison ------------------------------------------------------------------------


def same(a: Any, b: Any) -> bool:
    """Deep equality that is strict about types, float signs, NaN and datetime awareness."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, dt.datetime):
        return a == b and (a.tzinfo is None) == (b.tzinfo is None)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, set):
        # set elements here are ints, strs, bytes, bools or datetimes (never NaN)
        return a == b and _set_sig(a) == _set_sig(b)
    return a == b


def _set_sig(s: set) -> set:
    return {(type(x), x.tzinfo is None if isinstance(x, dt.datetime) else None) for x in s}


def test_same_is_strict() -> None:
    # the comparison helper is what the properties rely on; make sure it can fail
    assert not same(0.0, -0.0)
    assert same(float("nan"), float("nan"))
    assert not same(1, 1.0)
    assert not same(True, 1)
    assert not same(dt.datetime(2000, 1, 1), dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
    assert not same([1, 2], [1, 2, 3])
    assert not same({"a": 1}, {"a": 1, "b": 2})
    assert not same({1}, {True})
    assert same({"a": [1.5, None]}, {"a": [1.5, None]})


# --- generated schemas ------------------------------------------------------------------------


@dataclass(frozen=True)
class Gen:
    """A generated field type plus what FieldType cannot say: datetime awareness."""

    ft: FieldType
    aware: bool = False
    item: Gen | None = None
    key: Gen | None = None


INT_EDGES = [
    0,
    -1,
    2**63 - 1,
    -(2**63),
    2**63,
    -(2**63) - 1,
    2**64,
    2**64 - 1,
    10**30,
    -(10**30),
]
FLOAT_EDGES = [
    0.0,
    -0.0,
    math.inf,
    -math.inf,
    math.nan,
    5e-324,
    -5e-324,
    2.2250738585072014e-308,
    1.0e-310,
    1.7976931348623157e308,
    1.5,
    0.1,
]

ints = st.one_of(
    st.integers(-1000, 1000),
    st.integers(),
    st.integers(-(2**80), 2**80),
    st.sampled_from(INT_EDGES),
)
floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(FLOAT_EDGES))
# arbitrary unicode, lone surrogates included
unicode_text = st.text(st.characters(exclude_categories=()), max_size=20)
strs = st.one_of(unicode_text, st.sampled_from(["", "\ud800", "a\udfffb", "\x00", "é😀"]))
texts = st.one_of(
    unicode_text,
    st.text(st.characters(exclude_categories=()), min_size=1, max_size=30).map(lambda s: s * 40),
)
naive_dts = st.datetimes()
aware_dts = st.datetimes(timezones=st.just(dt.UTC))


def scalar_gen(kind: str, nullable: bool, aware: bool = False) -> Gen:
    return Gen(FieldType(kind, nullable), aware=aware)


@st.composite
def scalar_gens(draw, *, allow_text: bool = True, hashable_only: bool = False) -> Gen:
    kinds = ["int", "str", "bytes", "bool", "datetime"]
    if not hashable_only:
        kinds += ["float"] + (["text"] if allow_text else [])
    kind = draw(st.sampled_from(kinds))
    aware = kind == "datetime" and draw(st.booleans())
    nullable = not hashable_only and draw(st.booleans())
    return scalar_gen(kind, nullable, aware)


@st.composite
def field_gens(draw, keyed: list[str], nested: list[str]) -> Gen:
    choices = ["scalar"] * 6 + ["list", "set", "dict"]
    if keyed:
        choices += ["ref", "list_ref"]
    if nested:
        choices += ["record", "list_record"]
    what = draw(st.sampled_from(choices))
    nullable = draw(st.booleans())
    if what == "scalar":
        return draw(scalar_gens())
    if what == "list":
        item = draw(scalar_gens())
        return Gen(FieldType("list", nullable, item=item.ft), item=item)
    if what == "set":
        item = draw(scalar_gens(hashable_only=True))
        return Gen(FieldType("set", nullable, item=item.ft), item=item)
    if what == "dict":
        item = draw(scalar_gens(allow_text=False))
        k = scalar_gen("str", False)
        return Gen(FieldType("dict", nullable, item=item.ft, key=k.ft), item=item, key=k)
    if what == "ref":
        return Gen(FieldType("ref", nullable, target=draw(st.sampled_from(keyed))))
    if what == "list_ref":
        item = Gen(FieldType("ref", draw(st.booleans()), target=draw(st.sampled_from(keyed))))
        return Gen(FieldType("list", nullable, item=item.ft), item=item)
    if what == "record":
        return Gen(FieldType("record", nullable, target=draw(st.sampled_from(nested))))
    item = Gen(FieldType("record", False, target=draw(st.sampled_from(nested))))
    return Gen(FieldType("list", nullable, item=item.ft), item=item)


@dataclass
class GenSchema:
    schema: Schema
    gens: dict[str, dict[str, Gen]]  # type -> field -> Gen
    keyed: list[str]
    nested: list[str]
    key_fields: dict[str, tuple[str, ...]]  # keyed type -> its primary key fields


@st.composite
def schemas(draw) -> GenSchema:
    n_keyed = draw(st.integers(1, 3))
    n_nested = draw(st.integers(0, 2))
    keyed = [f"K{i}" for i in range(n_keyed)]
    nested = [f"N{i}" for i in range(n_nested)]
    gens: dict[str, dict[str, Gen]] = {}
    key_fields: dict[str, tuple[str, ...]] = {}
    tdefs = []
    # nested types only refer to later nested types, so nesting always ends
    for i in reversed(range(n_nested)):
        name = nested[i]
        n_fields = draw(st.integers(1, 3))
        fg = {f"n{j}": draw(field_gens(keyed, nested[i + 1 :])) for j in range(n_fields)}
        gens[name] = fg
        tdefs.append(TypeDef(name, tuple(Field(f, g.ft) for f, g in fg.items())))
    for name in keyed:
        # a single "id" key mostly; sometimes a composite ("id", "k2") key
        key_fields[name] = ("id", "k2") if draw(st.integers(0, 3)) == 0 else ("id",)
        fg = {}
        for k in key_fields[name]:
            kind = draw(st.sampled_from(["int", "int", "str", "bytes", "datetime", "bool"]))
            fg[k] = scalar_gen(kind, False, kind == "datetime" and draw(st.booleans()))
        for j in range(draw(st.integers(0, 6))):
            fg[f"f{j}"] = draw(field_gens(keyed, nested))
        gens[name] = fg
        fields = tuple(Field(f, g.ft) for f, g in fg.items())
        tdefs.append(TypeDef(name, fields, key=key_fields[name]))
    draw(st.randoms()).shuffle(tdefs)  # declaration order must not matter
    return GenSchema(Schema(tdefs), gens, keyed, nested, key_fields)


def scalar_values(g: Gen) -> st.SearchStrategy:
    kind = g.ft.kind
    return {
        "int": ints,
        "float": floats,
        "bool": st.booleans(),
        "str": strs,
        "text": texts,
        "bytes": st.binary(max_size=20),
        "datetime": aware_dts if g.aware else naive_dts,
    }[kind]


def values_for(g: Gen, gs: GenSchema, keys: dict[str, list], depth: int = 0) -> st.SearchStrategy:
    """Values for a field: what is given to WriteState.add, which is also what comes back."""
    ft = g.ft
    kind = ft.kind
    if kind in ("list", "set", "dict"):
        assert g.item is not None
        item = values_for(g.item, gs, keys, depth)
        if kind == "list":
            base = st.lists(item, max_size=4)
        elif kind == "set":
            base = st.sets(item, max_size=4)
        else:
            base = st.dictionaries(strs, item, max_size=3)
    elif kind == "ref":
        assert ft.target is not None
        base = st.sampled_from(keys[ft.target])
    elif kind == "record":
        assert ft.target is not None
        base = nested_records(ft.target, gs, keys)
    else:
        base = scalar_values(g)
    return st.one_of(st.none(), base) if ft.nullable else base


@st.composite
def nested_records(draw, type_name: str, gs: GenSchema, keys: dict[str, list]) -> dict:
    return {f: draw(values_for(g, gs, keys)) for f, g in gs.gens[type_name].items()}


@dataclass
class Case:
    gs: GenSchema
    records: dict[str, list[dict]]  # keyed type -> records given to add (in order)
    omitted: dict[str, list[set[str]]]  # nullable fields left out of each record


@st.composite
def cases(draw) -> Case:
    gs = draw(schemas())
    ref_targets = {
        g.ft.target if g.ft.kind == "ref" else g.item.ft.target
        for fg in gs.gens.values()
        for g in fg.values()
        if g.ft.kind == "ref" or (g.item is not None and g.item.ft.kind == "ref")
    }
    keys: dict[str, list] = {}
    for name in gs.keyed:
        parts = [scalar_values(gs.gens[name][k]) for k in gs.key_fields[name]]
        key_strategy = parts[0] if len(parts) == 1 else st.tuples(*parts)
        min_size = 1 if name in ref_targets else 0
        keys[name] = draw(st.lists(key_strategy, min_size=min_size, max_size=8, unique=True))
    records: dict[str, list[dict]] = {}
    omitted: dict[str, list[set[str]]] = {}
    for name in gs.keyed:
        records[name], omitted[name] = [], []
        key_fields = gs.key_fields[name]
        for k in keys[name]:
            rec = dict(zip(key_fields, k if len(key_fields) > 1 else (k,), strict=True))
            left_out = set()
            for f, g in gs.gens[name].items():
                if f in key_fields:
                    continue
                if g.ft.nullable and draw(st.integers(0, 4)) == 0:
                    left_out.add(f)  # absent nullable field: reads None
                    continue
                rec[f] = draw(values_for(g, gs, keys))
            records[name].append(rec)
            omitted[name].append(left_out)
    return Case(gs, records, omitted)


def expected_record(rec: dict, left_out: set[str], fields: dict[str, Gen]) -> dict:
    out = {}
    for f in fields:
        # nested records are given in full, refs as keys, sets as sets: what comes back
        out[f] = None if f in left_out else rec[f]
    return out


def _find_candidates(g: Gen) -> bool:
    k = g.ft.kind
    if k in ("list", "set"):
        assert g.item is not None
        return g.item.ft.kind not in ("record", "list", "set", "dict")
    return k not in ("record", "dict")


def _matches(stored: Any, value: Any, g: Gen) -> bool:
    if g.ft.kind in ("list", "set"):
        return stored is not None and any(_eq(x, value) for x in stored)
    return _eq(stored, value)


def _eq(a: Any, b: Any) -> bool:
    # "equals" is == (0.0 finds -0.0), except that find(x=nan) finds the NaNs
    if type(a) is float and type(b) is float and math.isnan(a) and math.isnan(b):
        return True
    return a == b


@given(case=cases(), data=st.data())
@SETTINGS
def test_generated_schema_round_trip(case: Case, data: st.DataObject) -> None:
    gs = case.gs
    ws = nearstate.WriteState(gs.schema)
    for name in gs.keyed:
        for i, rec in enumerate(case.records[name]):
            assert ws.add(name, rec) == i
    with fast_tmpdir() as d:
        path = Path(d) / "snap.blob"
        size = ws.write_snapshot(path)
        assert size == path.stat().st_size
        for mmap in (True, False):
            state = nearstate.load(path, mmap=mmap)
            assert _types_of(state.stored_schema) == _types_of(gs.schema)
            check_state(state, case, data)
        check_state(nearstate.from_bytes(path.read_bytes()), case, data)
        # add_many (the bulk path imports use) stages the same records to the same state
        bulk = nearstate.WriteState(gs.schema)
        for name in reversed(gs.keyed):
            bulk.add_many(name, case.records[name])
        bulk_path = Path(d) / "bulk.blob"
        bulk.write_snapshot(bulk_path)
        bulk_state = nearstate.load(bulk_path)
        assert _types_of(bulk_state.stored_schema) == _types_of(gs.schema)
        for name in gs.schema.types:
            assert len(bulk_state[name]) == len(state[name]), name
        check_state(bulk_state, case, data)


def _types_of(schema: Schema) -> list:
    """A schema's types, fields and keys (the writer may add ``omit_null`` hints)."""
    return [(t.name, [(f.name, f.type) for f in t.fields], t.key) for t in schema]


def check_state(state: nearstate.ReadState, case: Case, data: st.DataObject) -> None:
    gs = case.gs
    for name in gs.keyed:
        ts = state[name]
        fields = gs.gens[name]
        recs = case.records[name]
        expected = [
            expected_record(r, lo, fields) for r, lo in zip(recs, case.omitted[name], strict=True)
        ]
        assert len(ts) == len(recs)
        # iteration is in ordinal order, and ts[ordinal] is the same record
        for i, (r, exp) in enumerate(zip(ts, expected, strict=True)):
            assert r.ordinal == i
            got = r.to_dict()
            assert same(got, exp), (name, i, got, exp)
            assert same(ts[i].to_dict(), exp)
        key_fields = gs.key_fields[name]
        keys = [tuple(r[k] for k in key_fields) if len(key_fields) > 1 else r["id"] for r in recs]
        for i, key in enumerate(keys):
            found = ts.get(key)
            assert found is not None, (name, key)
            assert found.ordinal == i
            assert same(found.key, key)
            assert same(found.to_dict(), expected[i])
            assert key in ts
            assert ts.ordinal_of(key) == i
        with pytest.raises(IndexError):
            ts[len(recs)]
        missing = _missing_key([fields[k] for k in key_fields], set(keys))
        if missing is not None:
            assert ts.get(missing) is None
            assert missing not in ts
            assert ts.ordinal_of(missing) == -1
        # find(field=value) is exactly a brute-force scan
        candidates = [f for f, g in fields.items() if _find_candidates(g)]
        for f in candidates:
            g = fields[f]
            pool = []
            for exp in expected:
                v = exp[f]
                if g.ft.kind in ("list", "set"):
                    pool.extend(v or [])
                else:
                    pool.append(v)
            if pool and data.draw(st.booleans(), label=f"use existing {name}.{f}"):
                value = data.draw(st.sampled_from(pool), label=f"{name}.{f} value")
            else:
                base = g.item if g.ft.kind in ("list", "set") else g
                assert base is not None
                if base.ft.kind == "ref":
                    continue
                value = data.draw(scalar_values(base), label=f"{name}.{f} random value")
            want = [i for i, exp in enumerate(expected) if _matches(exp[f], value, g)]
            # in ordinal order, each record once (even if its list holds the value twice)
            got = [r.ordinal for r in ts.find(**{f: value})]
            assert got == want, (name, f, value)
            one = ts.find_one(**{f: value})
            assert (one is None) == (not want)
            if one is not None:
                assert one.ordinal in want
        for f, g in fields.items():
            if g.ft.kind == "dict":
                with pytest.raises(nearstate.SchemaError):
                    ts.find(**{f: {}})


@given(case=cases(), data=st.data())
@SETTINGS
def test_a_log_layer_reads_as_its_encoded_reference(case: Case, data: st.DataObject) -> None:
    """The consumer lays Log entries over a version without encoding them
    (overlay.PlainLayer): every record, field, key, find(), changed key and checksum reads
    as it does from the same changes encoded as a delta and read back, over two layers
    (records added, replaced and removed)."""
    from hypothesis import assume

    from nearstate.delta import layer_schema
    from nearstate.layered import _ref_targets
    from nearstate.overlay import lay_over

    gs = case.gs
    try:
        layer_schema(gs.schema)
    except nearstate.SchemaError:
        assume(False)  # a reference to a composite key: no delta can hold it
    targets = {
        t for fg in gs.gens.values() for g in fg.values() for t in _ref_targets(g.ft)
    }  # fmt: skip
    ws = nearstate.WriteState(gs.schema)
    for name in gs.keyed:
        recs = case.records[name]
        # the version holds every record a reference may point at (a snapshot resolves
        # them), and some of the others: the rest arrive through the Log
        cut = len(recs) if name in targets else data.draw(st.integers(0, len(recs)))
        if cut:
            ws.add_many(name, recs[:cut])
    with fast_tmpdir() as d:
        path = Path(d) / "base.blob"
        ws.write_snapshot(path)
        base = nearstate.load(path, mmap=False)

    def key_of(name: str, rec: dict) -> Any:
        kf = gs.key_fields[name]
        return tuple(rec[k] for k in kf) if len(kf) > 1 else rec[kf[0]]

    # records as a reader gets them from the Log (msgpack: lists for sets and tuples, naive
    # datetimes as ISO text), which the layer's fast stager takes; or still as msgpack
    # bytes (msgspec.Raw, as a consumer decodes entries), staged when first read; or as
    # given, which sends most of them through WriteState's checked path
    form = data.draw(st.sampled_from(["given", "decoded", "raw"]), label="record form")
    as_logged = form != "given"

    def logged(rec: dict) -> Any:
        try:
            packed = msgspec.msgpack.encode(rec)
        except (msgspec.EncodeError, OverflowError, TypeError, UnicodeError):
            return rec
        return msgspec.Raw(packed) if form == "raw" else msgspec.msgpack.decode(packed)

    nets = []
    for step in range(2):
        net: dict[str, dict[Any, Any]] = {}
        for name in gs.keyed:
            m: dict[Any, Any] = {}
            for rec in case.records[name]:
                what = data.draw(st.sampled_from(["keep", "upsert", "delete"]),
                                 label=f"{name} {step}")  # fmt: skip
                if what == "upsert":
                    m[key_of(name, rec)] = logged(rec) if as_logged else rec
                elif what == "delete":
                    m[key_of(name, rec)] = None
            if m:
                net[name] = m
        nets.append(net)

    plain, enc = base, base
    for i, net in enumerate(nets):
        plain, pch = lay_over(plain, net, name=f"log {i}")
        enc, ech = lay_over(enc, net, name=f"log {i}", encoded=True)
        assert {t: (c.added, c.modified, c.removed) for t, c in pch.items()} == {
            t: (c.added, c.modified, c.removed) for t, c in ech.items()
        }
        assert plain.checksums() == enc.checksums()
        for name in gs.keyed:
            pt, et = plain[name], enc[name]
            assert len(pt) == len(et) and list(pt.keys()) == list(et.keys())
            for rp, re_ in zip(pt, et, strict=True):
                assert rp.ordinal == re_.ordinal and same(rp.key, re_.key)
                assert same(rp.to_dict(), re_.to_dict()), (name, rp.key)
                for f in gs.gens[name]:
                    a, b = rp[f], re_[f]
                    if isinstance(b, nearstate.Record):
                        assert isinstance(a, nearstate.Record) and same(a.to_dict(), b.to_dict())
                    elif not isinstance(b, (list, set, dict)) or not _holds_records(b):
                        assert same(a, b), (name, f)
            for f, g in gs.gens[name].items():
                if not _find_candidates(g) or g.ft.kind in ("list", "set"):
                    continue
                for r in et:
                    v = r.to_dict()[f]
                    if v is None or (isinstance(v, float) and math.isnan(v)):
                        continue
                    assert [x.ordinal for x in pt.find(**{f: v})] == [
                        x.ordinal for x in et.find(**{f: v})
                    ]
                    break


def _holds_records(v: Any) -> bool:
    items = v.values() if isinstance(v, dict) else v
    return any(isinstance(x, nearstate.Record) for x in items)


def _key_candidates(g: Gen) -> list[Any]:
    kind = g.ft.kind
    if kind == "int":
        return [0, 1, -1, 2**70, 7]
    if kind == "str":
        return ["", "missing", "\ud800?"]
    if kind == "bytes":
        return [b"", b"\xffmissing"]
    if kind == "bool":
        return [True, False]
    tz = dt.UTC if g.aware else None
    return [dt.datetime(1, 1, 1, tzinfo=tz), dt.datetime(4321, 5, 6, 7, 8, 9, tzinfo=tz)]


def _missing_key(parts: list[Gen], present: set) -> Any:
    """A key (a tuple for composite keys) that no record has, if one is easily found."""
    if len(parts) == 1:
        cands = _key_candidates(parts[0])
    else:
        cands = list(itertools.product(*(_key_candidates(g) for g in parts)))
    return next((c for c in cands if c not in present), None)


def test_empty_keyed_type_and_all_null_columns(tmp_path: Path) -> None:
    schema = Schema(
        [
            TypeDef("E", (Field("id", FieldType("int")),), key=("id",)),
            TypeDef(
                "T",
                (
                    Field("id", FieldType("str")),
                    Field("n", FieldType("int", True)),
                    Field("l", FieldType("list", True, item=FieldType("str"))),
                    Field("r", FieldType("ref", True, target="E")),
                ),
                key=("id",),
            ),
        ]
    )
    ws = nearstate.WriteState(schema)
    ws.add("T", {"id": "a"})
    ws.add("T", {"id": "b", "n": None, "l": None, "r": None})
    ws.write_snapshot(tmp_path / "s.blob")
    for mmap in (True, False):
        state = nearstate.load(tmp_path / "s.blob", mmap=mmap)
        assert len(state["E"]) == 0
        assert list(state["E"]) == []
        assert state["E"].get(1) is None
        assert [r.to_dict() for r in state["T"]] == [
            {"id": "a", "n": None, "l": None, "r": None},
            {"id": "b", "n": None, "l": None, "r": None},
        ]


# --- JSON round trip --------------------------------------------------------------------------


json_strs = st.one_of(
    st.text(max_size=12),  # default alphabet: no surrogates (not valid in UTF-8 JSON)
    st.text(min_size=1, max_size=12).map(lambda s: s * 60),  # long: may make the field text
)
json_ints = st.one_of(st.integers(-(10**6), 10**6), st.integers(-(2**90), 2**90))
json_floats = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([-0.0, 0.0, 1.0, 5e-324, 1e300, 0.1]),
)
FIELD_NAMES = ["a", "b", "name", "x_1", "ünï", "key", "ordinal", "to_dict", "id2", "Z"]


@dataclass(frozen=True)
class JShape:
    kind: str  # int float bool str object list null
    mode: str = "required"  # required | nullable (null, never absent) | optional (absent)
    fields: tuple[tuple[str, JShape], ...] = ()
    item: JShape | None = None
    item_nullable: bool = False


@st.composite
def jshapes(draw, depth: int = 0) -> JShape:
    kinds = ["int", "float", "bool", "str", "str", "null"]
    if depth < 2:
        kinds += ["object", "list", "list"]
    kind = draw(st.sampled_from(kinds))
    mode = draw(st.sampled_from(["required", "required", "nullable", "optional"]))
    if kind == "null":
        # a field both null and absent exports null where it was absent (documented in
        # schema.Field): only fields never both are expected to round-trip exactly
        mode = "required"
    if kind == "object":
        names = draw(st.lists(st.sampled_from(FIELD_NAMES), max_size=3, unique=True))
        return JShape(kind, mode, tuple((n, draw(jshapes(depth + 1))) for n in names))
    if kind == "list":
        item = draw(jshapes(depth + 1).filter(lambda s: s.kind != "null"))
        item = dataclasses.replace(item, mode="required")
        return JShape(kind, mode, item=item, item_nullable=draw(st.booleans()))
    return JShape(kind, mode)


def jvalues(s: JShape) -> st.SearchStrategy:
    if s.kind == "int":
        return json_ints
    if s.kind == "float":
        return json_floats
    if s.kind == "bool":
        return st.booleans()
    if s.kind == "str":
        return json_strs
    if s.kind == "null":
        return st.none()
    if s.kind == "list":
        assert s.item is not None
        item = jvalues(s.item)
        if s.item_nullable:
            item = st.one_of(st.none(), item)
        return st.lists(item, max_size=3)
    return jobjects(s.fields)


@st.composite
def jobjects(draw, fields: tuple[tuple[str, JShape], ...]) -> dict:
    out = {}
    for name, s in fields:
        if s.mode == "optional" and draw(st.booleans()):
            continue
        if s.mode == "nullable" and draw(st.booleans()):
            out[name] = None
            continue
        out[name] = draw(jvalues(s))
    return out


@st.composite
def json_cases(draw) -> list[dict]:
    names = draw(st.lists(st.sampled_from(FIELD_NAMES), max_size=5, unique=True))
    fields = tuple((n, draw(jshapes())) for n in names)
    key_kind = draw(st.sampled_from(["int", "str"]))
    key_s = st.integers(-(2**70), 2**70) if key_kind == "int" else st.text(max_size=8)
    keys = draw(st.lists(key_s, min_size=1, max_size=12, unique=True))
    recs = []
    for k in keys:
        body = draw(jobjects(fields))
        recs.append({"id": k, **body})
    return recs


def _import(recs: list[dict], d: Path) -> nearstate.ReadState:
    d.mkdir(parents=True, exist_ok=True)
    src = d / "in.jsonl"
    with open(src, "w", encoding="utf-8") as f:
        for r in recs:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    res = nearstate.import_jsonl(src, type_name="T", key="id", into=d / "ds")
    assert res.records == len(recs)
    return LocalDataset(d / "ds").load()


@given(recs=json_cases())
@settings(SETTINGS, max_examples=100)
def test_json_round_trip(recs: list[dict]) -> None:
    with fast_tmpdir() as d:
        state = _import(recs, Path(d))
        out = list(nearstate.export_records(state, "T"))
        buf = io.BytesIO()
        assert nearstate.export_jsonl(state, "T", buf) == len(recs)
    assert len(out) == len(recs)
    for got, want in zip(out, recs, strict=True):
        assert same(got, want), (got, want)
    # and as JSON Lines text: one line per record, parsing back to the input
    # (split on b"\n" only: str.splitlines would also split inside strings at U+0085...)
    raw = buf.getvalue()
    assert raw.endswith(b"\n")
    lines = raw[:-1].split(b"\n")
    assert len(lines) == len(recs)
    for line, want in zip(lines, recs, strict=True):
        assert same(json.loads(line), want), (line, want)


def test_json_int_and_float_widen_to_float(tmp_path: Path) -> None:
    recs = [{"id": 1, "v": 1}, {"id": 2, "v": 2.5}, {"id": 3, "v": -7}, {"id": 4, "v": None}]
    state = _import(recs, tmp_path)
    assert state.stored_schema["T"].field("v").type == FieldType("float", True)
    out = list(nearstate.export_records(state, "T"))
    assert [r["v"] for r in out] == [1.0, 2.5, -7.0, None]
    assert [type(r["v"]) for r in out] == [float, float, float, type(None)]
    # in a list too
    recs = [{"id": 1, "xs": [1, 2]}, {"id": 2, "xs": [0.5]}]
    state = _import(recs, tmp_path / "lists")
    out = list(nearstate.export_records(state, "T"))
    assert out == [{"id": 1, "xs": [1.0, 2.0]}, {"id": 2, "xs": [0.5]}]
    assert all(type(x) is float for r in out for x in r["xs"])


# --- regressions: bugs found by these tests, fixed in src --------------------------------------


def test_nullable_aware_datetime_with_null(tmp_path: Path) -> None:
    """Was a TypeError: the null placeholder was the naive EPOCH in an aware column."""
    schema = Schema(
        [
            TypeDef(
                "T",
                (Field("id", FieldType("int")), Field("d", FieldType("datetime", True))),
                key=("id",),
            )
        ]
    )
    ws = nearstate.WriteState(schema)
    when = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    ws.add("T", {"id": 1, "d": when})
    ws.add("T", {"id": 2, "d": None})
    ws.write_snapshot(tmp_path / "s.blob")
    state = nearstate.load(tmp_path / "s.blob")
    assert [r.d for r in state["T"]] == [when, None]


def test_mixed_naive_and_aware_datetimes_is_a_schema_error(tmp_path: Path) -> None:
    """Was a raw TypeError from build(); now a SchemaError naming the field."""
    schema = Schema(
        [
            TypeDef(
                "T",
                (Field("id", FieldType("int")), Field("d", FieldType("datetime"))),
                key=("id",),
            )
        ]
    )
    recs = [
        {"id": 1, "d": dt.datetime(2020, 1, 1, tzinfo=dt.UTC)},
        {"id": 2, "d": dt.datetime(2020, 1, 1)},
    ]
    ws = nearstate.WriteState(schema)
    with pytest.raises(nearstate.SchemaError, match="'d'") as info:
        for r in recs:
            ws.add("T", r)
        ws.write_snapshot(tmp_path / "s.blob")
    assert "T" in str(info.value)
    bulk = nearstate.WriteState(schema)
    with pytest.raises(nearstate.SchemaError, match="'d'"):
        bulk.add_many("T", recs)
        bulk.write_snapshot(tmp_path / "s.blob")


def test_datetime_key_in_another_timezone_is_found_by_its_read_back_key(tmp_path: Path) -> None:
    """Was a miss: the pk hash covered isoformat() with the offset, keys read back in UTC."""
    schema = Schema([TypeDef("T", (Field("d", FieldType("datetime")),), key=("d",))])
    ws = nearstate.WriteState(schema)
    plus5 = dt.timezone(dt.timedelta(hours=5))
    ws.add("T", {"d": dt.datetime(2020, 1, 1, tzinfo=plus5)})
    ws.write_snapshot(tmp_path / "s.blob")
    ts = nearstate.load(tmp_path / "s.blob")["T"]
    r = ts[0]
    assert r.key == dt.datetime(2020, 1, 1, tzinfo=plus5)  # the same instant
    assert ts.get(r.key) == r
    assert ts.get(dt.datetime(2020, 1, 1, tzinfo=plus5)) == r
    assert ts.get(dt.datetime(2019, 12, 31, 19, tzinfo=dt.UTC)) == r
    assert ts.get(dt.datetime(2019, 12, 31, 19)) is None  # naive is another key


def test_import_list_of_only_nulls(tmp_path: Path) -> None:
    """Was an InputError: a list of only nulls was inferred as list<str>, not list<str?>."""
    recs = [{"id": 1, "a": [None]}, {"id": 2, "a": []}]
    state = _import(recs, tmp_path)
    assert list(nearstate.export_records(state, "T")) == recs


def test_find_on_list_with_repeated_value_returns_record_once(tmp_path: Path) -> None:
    """Was a duplicate: find() returned a record once per occurrence in its list."""
    schema = Schema(
        [
            TypeDef(
                "T",
                (
                    Field("id", FieldType("int")),
                    Field("tags", FieldType("list", item=FieldType("str"))),
                ),
                key=("id",),
            )
        ]
    )
    ws = nearstate.WriteState(schema)
    ws.add("T", {"id": 1, "tags": ["a", "a", "b"]})
    ws.add("T", {"id": 2, "tags": ["b"]})
    ws.write_snapshot(tmp_path / "s.blob")
    ts = nearstate.load(tmp_path / "s.blob")["T"]
    assert [r.key for r in ts.find(tags="b")] == [1, 2]
    assert [r.key for r in ts.find(tags="a")] == [1]


def test_large_floats_encode_without_numpy_warnings(tmp_path: Path) -> None:
    """Was numpy's RuntimeWarning (overflow in cast) from the float32 check."""
    import warnings

    schema = Schema(
        [
            TypeDef(
                "T",
                (Field("id", FieldType("int")), Field("x", FieldType("float"))),
                key=("id",),
            )
        ]
    )
    ws = nearstate.WriteState(schema)
    ws.add("T", {"id": 1, "x": 1e300})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ws.write_snapshot(tmp_path / "s.blob")
    assert nearstate.load(tmp_path / "s.blob")["T"].get(1).x == 1e300


ABSENT_RECORDS = [
    {"id": "a", "opt": 1, "nul": None, "nested": {"x": 1}},
    {"id": "b", "nul": 2},
    {"id": "c", "opt": 3, "nul": 4, "nested": {"x": 1, "y": "s"}},
]


def test_add_keeps_absent_fields_absent() -> None:
    schema = nearstate.infer_schema(ABSENT_RECORDS, "T", "id")
    ws = nearstate.WriteState(schema)
    for r in ABSENT_RECORDS:
        ws.add("T", r)
    final = ws.final_schema()
    assert final["T"].field("opt").omit_null
    assert not final["T"].field("nul").omit_null
    assert final["T"].field("nested").omit_null
    assert final["T.nested"].field("y").omit_null
    state = nearstate.from_bytes(_snapshot_bytes(ws))
    assert list(nearstate.export_records(state, "T")) == ABSENT_RECORDS


def test_import_keeps_absent_fields_absent(tmp_path: Path) -> None:
    """Was nulls on export: add_many counted absent fields as nulls (omit_null never set)."""
    schema = nearstate.infer_schema(ABSENT_RECORDS, "T", "id")
    ws = nearstate.WriteState(schema)
    ws.add_many("T", ABSENT_RECORDS)
    assert ws.final_schema()["T"].field("opt").omit_null
    state = _import(ABSENT_RECORDS, tmp_path)
    assert list(nearstate.export_records(state, "T")) == ABSENT_RECORDS


def _snapshot_bytes(ws: nearstate.WriteState) -> bytes:
    with fast_tmpdir() as d:
        path = Path(d) / "s.blob"
        ws.write_snapshot(path)
        return path.read_bytes()


# --- floats that look decimal (stored as scaled integers) -------------------------------------

decimal_floats = st.builds(
    lambda i, k: i / 10**k, st.integers(-(10**12), 10**12), st.integers(0, 6)
)


def _float_schema(nullable: bool = False) -> Schema:
    return Schema(
        [
            TypeDef(
                "T",
                (Field("id", FieldType("int")), Field("x", FieldType("float", nullable))),
                key=("id",),
            )
        ]
    )


def _float_round_trip(values: list[float | None], nullable: bool = False) -> list:
    ws = nearstate.WriteState(_float_schema(nullable))
    for i, v in enumerate(values):
        ws.add("T", {"id": i, "x": v})
    state = nearstate.from_bytes(_snapshot_bytes(ws))
    return [r.x for r in state["T"]]


@given(
    values=st.lists(
        st.one_of(decimal_floats, decimal_floats, st.sampled_from([0.1, 0.2, 0.3, 1e-4, 2.5]))
        | floats,
        min_size=1,
        max_size=30,
    ),
    nullable=st.booleans(),
)
@settings(SETTINGS, max_examples=150)
def test_decimal_like_floats_round_trip_bit_for_bit(values: list[float], nullable: bool) -> None:
    if nullable:
        values = [None if i % 3 == 1 else v for i, v in enumerate(values)]
    got = _float_round_trip(values, nullable)
    assert all(same(g, w) for g, w in zip(got, values, strict=True)), (got, values)


@pytest.mark.parametrize(
    "values",
    [
        [9.99, 10.5, 0.01, 1049.99],
        [0.1 + 0.2, 0.3],  # 0.30000000000000004 is not a short decimal
        [2.0**50 - 0.25, 1.5],
        [-(2.0**49) + 0.5, 0.0001],
        [1e-5, 3.0],
        [123456.7891, -0.5],
        [0.0, -0.0, 1.0],
        [5e-324, 1.0],
        [float(2**53), 1.0],
    ],
)
def test_float_columns_round_trip_exactly(values: list[float]) -> None:
    got = _float_round_trip(values)
    assert all(same(g, w) for g, w in zip(got, values, strict=True)), (got, values)


def test_prices_are_stored_narrow() -> None:
    ws = nearstate.WriteState(_float_schema())
    prices = [9.99, 10.49, 10.0, 12.25] * 50
    for i, p in enumerate(prices):
        ws.add("T", {"id": i, "x": p})
    state = nearstate.from_bytes(_snapshot_bytes(ws))
    assert [r.x for r in state["T"]] == prices
    assert state.blob.arrays["T/x"].dtype.itemsize <= 2  # 999..1225 cents, not 8-byte floats


def test_a_log_layer_gives_datetimes_as_a_version_does() -> None:
    """Aware datetimes read in UTC (as an encoded column gives them), naive ones as they
    are; a column mixing both is refused as the encoder refuses it."""
    from nearstate.overlay import lay_over

    fields = (
        Field("id", FieldType("int")),
        Field("at", FieldType("datetime", nullable=True)),
        Field("ats", FieldType("list", item=FieldType("datetime"))),
    )
    schema = Schema([TypeDef("E", fields, key=("id",))])
    base = nearstate.WriteState(schema)
    base.add("E", {"id": 0, "at": None, "ats": []})
    with fast_tmpdir() as d:
        base.write_snapshot(Path(d) / "b.blob")
        state = nearstate.load(Path(d) / "b.blob", mmap=False)
    plus2 = dt.timezone(dt.timedelta(hours=2))
    at = dt.datetime(2024, 5, 1, 12, 30, tzinfo=plus2)
    net = {"E": {1: {"id": 1, "at": at, "ats": [at]}, 2: {"id": 2, "ats": []}}}
    plain, _ = lay_over(state, net, name="log")
    enc, _ = lay_over(state, net, name="log", encoded=True)
    for k in (1, 2):
        assert repr(plain["E"].get(k).to_dict()) == repr(enc["E"].get(k).to_dict())
    got = plain["E"].get(1).at
    assert got == at and got.tzinfo == dt.UTC and plain["E"].get(1).ats[0].tzinfo == dt.UTC
    naive = dt.datetime(2024, 1, 1)
    mixed = {"E": {3: {"id": 3, "at": at, "ats": []}, 4: {"id": 4, "at": naive, "ats": []}}}
    for encoded in (False, True):
        with pytest.raises(nearstate.SchemaError, match="mixes naive and timezone-aware"):
            lay_over(state, mixed, name="log", encoded=encoded)
