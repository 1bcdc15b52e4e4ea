"""Schemas: dataclass declarations, the spec text form, JSON form, validation errors,
records that contradict the schema, and schema evolution on load."""

import datetime as dt
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nearstate
from nearstate import Field, FieldType, Schema, SchemaError, TypeDef
from nearstate.schema import parse_spec

# --- dataclass declarations -------------------------------------------------------------------


@nearstate.record(key="id")
@dataclass
class Person:
    id: int
    name: str


@dataclass
class Address:
    city: str
    zip: str | None = None


@nearstate.record(key="id")
@dataclass
class Movie:
    id: int
    title: str
    synopsis: nearstate.LongText
    director: nearstate.Ref["Person"]
    cast: list[nearstate.Ref["Person"]]
    genres: list[str]
    tags: set[str]
    scores: dict[str, float]
    address: Address
    released: dt.datetime | None
    frames: tuple[int, ...] = ()
    poster: bytes | None = None
    rating: Optional[float] = None  # noqa: UP045 - Optional[...] must work too
    lead: Person | None = None  # a keyed dataclass used inline is a reference
    flags: frozenset[str] = field(default_factory=frozenset)


@nearstate.record(key=("country", "number"), name="Plate")
@dataclass
class LicensePlate:
    country: str
    number: int
    owner: nearstate.Ref[Person] | None = None


MOVIE_SPECS = {
    "id": "int",
    "title": "str",
    "synopsis": "text",
    "director": "ref<Person>",
    "cast": "list<ref<Person>>",
    "genres": "list<str>",
    "tags": "set<str>",
    "scores": "dict<str,float>",
    "address": "record<Address>",
    "released": "datetime?",
    "frames": "list<int>",
    "poster": "bytes?",
    "rating": "float?",
    "lead": "ref<Person>?",
    "flags": "set<str>",
}


def specs(tdef: TypeDef) -> dict[str, str]:
    return {f.name: f.type.spec() for f in tdef.fields}


def test_dataclass_schema() -> None:
    schema = Schema.from_dataclasses(Movie)
    assert set(schema.types) == {"Movie", "Person", "Address"}
    assert specs(schema["Movie"]) == MOVIE_SPECS
    assert schema["Movie"].key == ("id",)
    assert schema["Person"].key == ("id",)
    assert schema["Address"].key is None
    assert specs(schema["Address"]) == {"city": "str", "zip": "str?"}
    assert {t.name for t in schema.keyed_types} == {"Movie", "Person"}
    assert schema["Movie"].field("rating").default is None
    assert schema["Movie"].field("rating").has_default
    assert not schema["Movie"].field("title").has_default
    assert schema["Movie"].field("flags").default == frozenset()


def test_composite_key_and_renamed_type() -> None:
    schema = Schema.from_dataclasses(LicensePlate, Person)
    assert "Plate" in schema and "LicensePlate" not in schema
    assert schema["Plate"].key == ("country", "number")
    assert specs(schema["Plate"]) == {"country": "str", "number": "int", "owner": "ref<Person>?"}


def test_string_ref_needs_its_target_declared() -> None:
    @nearstate.record(key="id")
    @dataclass
    class Review:
        id: int
        author: nearstate.Ref["Critic"]  # noqa: F821 - deliberately undeclared

    with pytest.raises(SchemaError, match="Critic") as info:
        Schema.from_dataclasses(Review)
    assert "Review.author" in str(info.value)


def test_dataclass_records_round_trip(tmp_path: Path) -> None:
    schema = Schema.from_dataclasses(Movie, LicensePlate)
    ws = nearstate.WriteState(schema)
    ann, bo = Person(1, "Ann"), Person(2, "Bo")
    ws.add("Person", ann)
    ws.add("Person", bo)
    released = dt.datetime(1995, 12, 15, 20, 30)
    movie = Movie(
        id=10,
        title="Heat",
        synopsis="A long synopsis. " * 30,
        director=1,
        cast=[ann, 2],  # a ref may be given as the target record or its key
        genres=["crime", "drama"],
        tags={"la", "heist"},
        scores={"imdb": 8.3, "rt": 0.5},
        address=Address("Los Angeles"),
        released=released,
        frames=(1, 2, 3),
        poster=b"\x89PNG",
        lead=bo,
        flags=frozenset({"x"}),
    )
    ws.add("Movie", movie)
    ws.add("Plate", LicensePlate("NL", 42, owner=1))
    ws.write_snapshot(tmp_path / "s.blob")
    state = nearstate.load(tmp_path / "s.blob")
    m = state["Movie"].get(10)
    assert m.to_dict() == {
        "id": 10,
        "title": "Heat",
        "synopsis": "A long synopsis. " * 30,
        "director": 1,
        "cast": [1, 2],
        "genres": ["crime", "drama"],
        "tags": {"la", "heist"},
        "scores": {"imdb": 8.3, "rt": 0.5},
        "address": {"city": "Los Angeles", "zip": None},
        "released": released,
        "frames": [1, 2, 3],
        "poster": b"\x89PNG",
        "rating": None,
        "lead": 2,
        "flags": {"x"},
    }
    assert m.director.name == "Ann"
    assert [p.name for p in m.cast] == ["Ann", "Bo"]
    assert m.address.city == "Los Angeles"
    plate = state["Plate"].get(("NL", 42))
    assert plate is not None and plate.owner.name == "Ann"
    assert plate.key == ("NL", 42)


# --- spec text --------------------------------------------------------------------------------

SCALARS = ["int", "float", "bool", "str", "bytes", "datetime", "text"]
targets = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}(\.[a-z_][a-z0-9_]{0,4}){0,2}", fullmatch=True)


def field_types() -> st.SearchStrategy[FieldType]:
    scalar = st.builds(FieldType, st.sampled_from(SCALARS), st.booleans())
    named = st.builds(
        lambda kind, n, t: FieldType(kind, n, target=t),
        st.sampled_from(["record", "ref"]),
        st.booleans(),
        targets,
    )

    def extend(inner: st.SearchStrategy[FieldType]) -> st.SearchStrategy[FieldType]:
        coll = st.builds(
            lambda kind, n, item: FieldType(kind, n, item=item),
            st.sampled_from(["list", "set"]),
            st.booleans(),
            inner,
        )
        dicts = st.builds(
            lambda n, k, item: FieldType("dict", n, item=item, key=k),
            st.booleans(),
            st.builds(FieldType, st.sampled_from(["int", "str", "bytes", "bool", "datetime"])),
            inner,
        )
        return st.one_of(coll, dicts)

    return st.recursive(st.one_of(scalar, named), extend, max_leaves=6)


@given(ft=field_types())
@settings(max_examples=300, deadline=None)
def test_spec_round_trip(ft: FieldType) -> None:
    text = ft.spec()
    assert parse_spec(text) == ft
    assert str(ft) == text
    # spaces are allowed anywhere
    assert parse_spec(" ".join(text)) == ft


@pytest.mark.parametrize(
    ("spec", "ft"),
    [
        ("int", FieldType("int")),
        ("str?", FieldType("str", True)),
        ("list<str?>?", FieldType("list", True, item=FieldType("str", True))),
        ("set<bytes>", FieldType("set", item=FieldType("bytes"))),
        (
            "dict<str,list<int>>",
            FieldType("dict", item=FieldType("list", item=FieldType("int")), key=FieldType("str")),
        ),
        ("ref<Person>", FieldType("ref", target="Person")),
        ("record<T.info>?", FieldType("record", True, target="T.info")),
    ],
)
def test_spec_examples(spec: str, ft: FieldType) -> None:
    assert parse_spec(spec) == ft
    assert ft.spec() == spec


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "?",
        "integer",
        "int??",
        "int?x",
        "list",
        "list<>",
        "list<int",
        "list<int>>",
        "dict<str>",
        "dict<str,>",
        "dict<str,int",
        "record<",
        "ref<Person",
        "ref",
        "<int>",
        "dict<str",  # was an IndexError
        "list<int]",  # was accepted as list<int>
        "dict<str,int]",  # was accepted as dict<str,int>
        "ref<>",
        "record<>?",
    ],
)
def test_bad_specs_are_schema_errors(bad: str) -> None:
    with pytest.raises(SchemaError):
        parse_spec(bad)


# --- JSON form --------------------------------------------------------------------------------


def test_schema_json_round_trip() -> None:
    schema = Schema.from_dataclasses(Movie, LicensePlate)
    text = json.dumps(schema.to_json())
    back = Schema.from_json(json.loads(text))
    assert back == schema
    assert list(back.types) == list(schema.types)
    for t in schema:
        assert back[t.name].key == t.key
        assert [(f.name, f.type) for f in back[t.name].fields] == [
            (f.name, f.type) for f in t.fields
        ]
    # JSON-safe defaults survive
    assert back["Movie"].field("rating").default is None
    assert back["Movie"].field("rating").has_default


def test_json_defaults_and_omit_null_survive() -> None:
    schema = Schema(
        [
            TypeDef(
                "T",
                (
                    Field("id", FieldType("str")),
                    Field("n", FieldType("int"), default=5),
                    Field("s", FieldType("str"), default="x"),
                    Field("o", FieldType("float", True), omit_null=True),
                ),
                key=("id",),
            )
        ]
    )
    back = Schema.from_json(json.loads(json.dumps(schema.to_json())))
    assert back == schema
    assert back["T"].field("n").default == 5
    assert back["T"].field("s").default == "x"
    assert back["T"].field("o").omit_null
    assert not back["T"].field("o").has_default
    # schemas differing only in a default are different
    fields = list(schema["T"].fields)
    fields[1] = Field("n", FieldType("int"), default=6)
    assert Schema([TypeDef("T", tuple(fields), key=("id",))]) != schema


@pytest.mark.parametrize(
    "obj",
    [
        {},
        {"types": [{"name": "T"}]},
        {"types": [{"name": "T", "fields": [{"name": "a"}]}]},
        {"types": [{"name": "T", "fields": [{"name": "a", "type": "nope"}]}]},
        {"types": [{"fields": []}]},
        {"types": None},
    ],
)
def test_malformed_schema_json(obj: dict) -> None:
    with pytest.raises(SchemaError):
        Schema.from_json(obj)


# --- invalid schemas --------------------------------------------------------------------------


def _t(name: str, *fields: tuple[str, FieldType], key: tuple[str, ...] | None = ("id",)):
    return TypeDef(name, tuple(Field(n, ft) for n, ft in fields), key)


ID = ("id", FieldType("int"))


def test_unknown_ref_target() -> None:
    with pytest.raises(SchemaError, match="Ghost") as info:
        Schema([_t("A", ID, ("p", FieldType("ref", target="Ghost")))])
    assert "A.p" in str(info.value)
    with pytest.raises(SchemaError, match="Ghost"):
        Schema([_t("A", ID, ("p", FieldType("list", item=FieldType("record", target="Ghost"))))])


def test_ref_to_unkeyed_type() -> None:
    with pytest.raises(SchemaError, match="no key"):
        Schema(
            [
                _t("N", ("x", FieldType("int")), key=None),
                _t("A", ID, ("n", FieldType("ref", target="N"))),
            ]
        )


@pytest.mark.parametrize(
    "key_type",
    [
        FieldType("int", True),
        FieldType("str", True),
        FieldType("float"),
        FieldType("text"),
        FieldType("list", item=FieldType("int")),
    ],
)
def test_bad_key_field(key_type: FieldType) -> None:
    with pytest.raises(SchemaError, match="'id'") as info:
        Schema([_t("A", ("id", key_type))])
    assert "'A'" in str(info.value)


def test_key_naming_no_field_or_nothing() -> None:
    with pytest.raises(SchemaError, match="nope"):
        Schema([_t("A", ID, key=("nope",))])
    with pytest.raises(SchemaError, match="key"):
        Schema([_t("A", ID, key=())])


def test_duplicate_type_and_field() -> None:
    with pytest.raises(SchemaError, match="twice"):
        Schema([_t("A", ID), _t("A", ID)])
    with pytest.raises(SchemaError, match="twice"):
        Schema([_t("A", ID, ID)])


def test_dict_key_must_be_a_scalar() -> None:
    """Was accepted by Schema (only dataclasses checked), then a TypeError on add."""
    bad = FieldType("dict", item=FieldType("int"), key=FieldType("list", item=FieldType("int")))
    with pytest.raises(SchemaError):
        Schema([_t("A", ID, ("d", bad))])


@pytest.mark.parametrize(
    "hint",
    [
        int | str,
        typing.Union[int, str],  # noqa: UP007
        int | str | None,
        tuple[int, str],
        list,
        dict,
        set,
        complex,
        Any,
        dict[list[int], int],
        list[int | bytes],
    ],
    ids=repr,
)
def test_unsupported_type_hints(hint: Any) -> None:
    @nearstate.record(key="id")
    @dataclass
    class Bad:
        id: int
        value: hint  # type: ignore[valid-type]

    with pytest.raises(SchemaError, match=r"Bad\.value"):
        Schema.from_dataclasses(Bad)


def test_not_a_dataclass() -> None:
    class Plain:
        id: int

    with pytest.raises(SchemaError, match="not a dataclass"):
        Schema.from_dataclasses(Plain)


# --- records that contradict the schema -------------------------------------------------------


def people_schema() -> Schema:
    return Schema(
        [
            _t("Person", ID, ("name", FieldType("str")), ("age", FieldType("int", True))),
            _t("Pet", ID, ("owner", FieldType("ref", target="Person"))),
        ]
    )


@pytest.mark.parametrize(
    ("record", "field_name", "got"),
    [
        ({"id": 7, "name": 3}, "name", "int"),
        ({"id": 7, "name": b"x"}, "name", "bytes"),
        ({"id": 7, "name": "x", "age": "41"}, "age", "str"),
        ({"id": 7, "name": "x", "age": True}, "age", "bool"),
        ({"id": 7, "name": "x", "age": 4.0}, "age", "float"),
        ({"id": 7, "name": None}, "name", None),
    ],
)
def test_wrong_typed_value(record: dict, field_name: str, got: str | None) -> None:
    ws = nearstate.WriteState(people_schema())
    with pytest.raises(SchemaError) as info:
        ws.add("Person", record)
    msg = str(info.value)
    assert "Person" in msg and "7" in msg and repr(field_name) in msg, msg
    if got is not None:
        assert got in msg
    else:
        assert "null" in msg
    assert ws.count("Person") == 0  # nothing was staged


def test_wrong_typed_key() -> None:
    ws = nearstate.WriteState(people_schema())
    with pytest.raises(SchemaError, match="'id'"):
        ws.add("Person", {"id": "7", "name": "x"})


def test_missing_required_field() -> None:
    ws = nearstate.WriteState(people_schema())
    with pytest.raises(SchemaError, match="'name' is missing") as info:
        ws.add("Person", {"id": 7})
    assert "Person 7" in str(info.value)
    # a nullable field may be left out
    ws.add("Person", {"id": 8, "name": "x"})
    with pytest.raises(SchemaError, match="'id'"):
        ws.add("Person", {"name": "no key"})


def test_unknown_extra_field() -> None:
    ws = nearstate.WriteState(people_schema())
    with pytest.raises(SchemaError, match="'nickname'") as info:
        ws.add("Person", {"id": 7, "name": "x", "age": 3, "nickname": "y"})
    assert "Person" in str(info.value)


def test_unknown_field_beside_an_absent_optional_field() -> None:
    """Was silently dropped: add() only looked for extras if len(record) > len(fields)."""
    ws = nearstate.WriteState(people_schema())
    with pytest.raises(SchemaError, match="'agee'"):
        ws.add("Person", {"id": 7, "name": "x", "agee": 41})


def test_duplicate_key() -> None:
    ws = nearstate.WriteState(people_schema())
    ws.add("Person", {"id": 7, "name": "x"})
    with pytest.raises(SchemaError, match="duplicate key 7"):
        ws.add("Person", {"id": 7, "name": "y"})
    assert ws.count("Person") == 1


def test_ref_to_missing_target_key(tmp_path: Path) -> None:
    ws = nearstate.WriteState(people_schema())
    ws.add("Person", {"id": 1, "name": "x"})
    ws.add("Pet", {"id": 1, "owner": 1})
    ws.add("Pet", {"id": 2, "owner": 99})
    with pytest.raises(SchemaError, match="99") as info:
        ws.write_snapshot(tmp_path / "s.blob")
    msg = str(info.value)
    assert "Pet" in msg and "'owner'" in msg and "Person" in msg
    assert not (tmp_path / "s.blob").exists()


def test_add_to_unknown_or_nested_type_and_non_records() -> None:
    schema = Schema(
        [
            _t("N", ("x", FieldType("int")), key=None),
            _t("A", ID, ("n", FieldType("record", target="N"))),
        ]
    )
    ws = nearstate.WriteState(schema)
    with pytest.raises(SchemaError, match="Nope"):
        ws.add("Nope", {"id": 1})
    with pytest.raises(SchemaError, match="no key"):
        ws.add("N", {"x": 1})
    with pytest.raises(SchemaError, match="mapping"):
        ws.add("A", 5)
    with pytest.raises(SchemaError, match="'n'"):
        ws.add("A", {"id": 1, "n": 5})
    with pytest.raises(SchemaError, match="'x'"):
        ws.add("A", {"id": 1, "n": {"x": "one"}})


# --- schema evolution -------------------------------------------------------------------------

SCHEMA_A = Schema(
    [
        _t(
            "T",
            ID,
            ("name", FieldType("str")),
            ("n", FieldType("int")),
            ("m", FieldType("int", True)),
            ("opt", FieldType("str", True)),
            ("gone", FieldType("str")),
            ("tags", FieldType("list", item=FieldType("str"))),
            ("blurb", FieldType("str")),
        )
    ]
)
RECORDS_A = [
    {
        "id": 1,
        "name": "a",
        "n": 1,
        "m": None,
        "opt": "x",
        "gone": "g1",
        "tags": ["p", "q", "p"],
        "blurb": "b",
    },
    {"id": 2, "name": "b", "n": -5, "m": 7, "opt": None, "gone": "g2", "tags": [], "blurb": "c"},
]


@pytest.fixture()
def blob_a(tmp_path: Path) -> Path:
    ws = nearstate.WriteState(SCHEMA_A)
    for r in RECORDS_A:
        ws.add("T", r)
    path = tmp_path / "a.blob"
    ws.write_snapshot(path)
    return path


def evolve(*changes: tuple[str, Field | None], key: tuple[str, ...] = ("id",)) -> Schema:
    """SCHEMA_A with fields replaced (name -> Field), removed (None) or added."""
    fields = {f.name: f for f in SCHEMA_A["T"].fields}
    for name, f in changes:
        if f is None:
            del fields[name]
        else:
            fields[name] = f
    return Schema([TypeDef("T", tuple(fields.values()), key)])


@pytest.mark.parametrize("mmap", [True, False])
def test_added_field_with_default(blob_a: Path, mmap: bool) -> None:
    b = evolve(("extra", Field("extra", FieldType("int"), default=42)))
    ts = nearstate.load(blob_a, schema=b, mmap=mmap)["T"]
    assert [r.extra for r in ts] == [42, 42]
    assert ts.get(2).to_dict()["extra"] == 42
    assert ts.get(2).name == "b"


def test_added_optional_field(blob_a: Path) -> None:
    b = evolve(("extra", Field("extra", FieldType("float", True))))
    ts = nearstate.load(blob_a, schema=b)["T"]
    assert [r.extra for r in ts] == [None, None]
    assert ts.find(extra=None) == list(ts)


def test_added_field_without_default_is_refused(blob_a: Path) -> None:
    b = evolve(("extra", Field("extra", FieldType("int"))))
    with pytest.raises(SchemaError, match="extra"):
        nearstate.load(blob_a, schema=b)


def test_removed_field(blob_a: Path) -> None:
    b = evolve(("gone", None))
    r = nearstate.load(blob_a, schema=b)["T"].get(1)
    assert "gone" not in r.to_dict()
    with pytest.raises(AttributeError, match="gone"):
        _ = r.gone
    with pytest.raises(KeyError):
        r["gone"]
    assert r.to_dict() == {k: v for k, v in RECORDS_A[0].items() if k != "gone"}


def test_widen_int_to_float(blob_a: Path) -> None:
    b = evolve(("n", Field("n", FieldType("float"))), ("m", Field("m", FieldType("float", True))))
    ts = nearstate.load(blob_a, schema=b)["T"]
    assert [r.n for r in ts] == [1.0, -5.0]
    assert all(type(r.n) is float for r in ts)
    assert [r.m for r in ts] == [None, 7.0]
    assert type(ts.get(2).m) is float


def test_compatible_kind_changes(blob_a: Path) -> None:
    b = evolve(
        ("tags", Field("tags", FieldType("set", item=FieldType("str")))),
        ("blurb", Field("blurb", FieldType("text"))),
        ("name", Field("name", FieldType("str", True))),  # non-null -> nullable
    )
    ts = nearstate.load(blob_a, schema=b)["T"]
    assert ts.get(1).tags == {"p", "q"}
    assert ts.get(2).tags == set()
    assert ts.get(1).blurb == "b"
    assert ts.get(1).name == "a"


@pytest.mark.parametrize(
    ("change", "name"),
    [
        (("name", Field("name", FieldType("int"))), "name"),
        (("opt", Field("opt", FieldType("str"))), "opt"),
        (("m", Field("m", FieldType("int"))), "m"),
        (("n", Field("n", FieldType("str"))), "n"),
        (("tags", Field("tags", FieldType("list", item=FieldType("int")))), "tags"),
        (("tags", Field("tags", FieldType("str"))), "tags"),
    ],
)
def test_incompatible_changes(blob_a: Path, change: tuple[str, Field], name: str) -> None:
    with pytest.raises(SchemaError) as info:
        nearstate.load(blob_a, schema=evolve(change))
    assert f"T.{name}" in str(info.value)


def test_key_change_is_refused(blob_a: Path) -> None:
    with pytest.raises(SchemaError, match="key") as info:
        nearstate.load(blob_a, schema=evolve(key=("name",)))
    assert "name" in str(info.value) and "'T'" in str(info.value)


def test_reader_type_missing_from_blob_is_empty(blob_a: Path) -> None:
    b = Schema([*SCHEMA_A, _t("New", ID, ("v", FieldType("str")))])
    state = nearstate.load(blob_a, schema=b)
    assert len(state["New"]) == 0
    assert state["New"].get(1) is None
    assert len(state["T"]) == 2


def test_dataclass_reader_schema_with_defaults(blob_a: Path) -> None:
    @nearstate.record(key="id")
    @dataclass
    class T:
        id: int
        name: str
        n: float
        added: str = "none yet"
        note: str | None = None

    ts = nearstate.load(blob_a, schema=Schema.from_dataclasses(T))["T"]
    assert ts.get(2).to_dict() == {
        "id": 2,
        "name": "b",
        "n": -5.0,
        "added": "none yet",
        "note": None,
    }


def test_nested_type_evolution(tmp_path: Path) -> None:
    n_a = TypeDef("N", (Field("x", FieldType("int")), Field("z", FieldType("str"))))
    t = _t(
        "T",
        ID,
        ("o", FieldType("record", target="N")),
        ("os", FieldType("list", item=FieldType("record", target="N"))),
    )
    ws = nearstate.WriteState(Schema([n_a, t]))
    ws.add("T", {"id": 1, "o": {"x": 1, "z": "a"}, "os": [{"x": 2, "z": "b"}, {"x": 1, "z": "a"}]})
    ds = nearstate.LocalDataset(tmp_path / "ds")
    ds.publish(ws)
    # the nested type widens a field, drops one and adds one with a default
    n_b = TypeDef("N", (Field("x", FieldType("float")), Field("y", FieldType("int"), default=9)))
    r = ds.load(schema=Schema([n_b, t]))["T"].get(1)
    assert r.to_dict() == {
        "id": 1,
        "o": {"x": 1.0, "y": 9},
        "os": [{"x": 2.0, "y": 9}, {"x": 1.0, "y": 9}],
    }
    assert type(r.o.x) is float
    # pointing a record field at another type is refused, naming the field
    m = TypeDef("M", (Field("x", FieldType("int")),))
    t_c = _t(
        "T",
        ID,
        ("o", FieldType("record", target="M")),
        ("os", FieldType("list", item=FieldType("record", target="N"))),
    )
    with pytest.raises(SchemaError, match=r"T\.o"):
        ds.load(schema=Schema([m, n_a, t_c]))


def test_per_schema_keeps_a_result_per_schema_object_and_names() -> None:
    from nearstate.schema import per_schema

    calls: list[tuple[int, frozenset[str]]] = []

    @per_schema
    def names_of(schema: Schema, names: frozenset[str]) -> tuple[str, ...]:
        calls.append((id(schema), names))
        return tuple(sorted(n for n in names if n in schema.types))

    a = Schema([TypeDef("x", (Field("id", FieldType("int")),),
                                  key=("id",))])  # fmt: skip
    b = Schema(list(a))  # equal, but another object: computed again
    assert names_of(a, ["x", "y"]) == names_of(a, ("y", "x")) == ("x",) and len(calls) == 1
    names_of(b, ["x", "y"])
    names_of(a, ["x"])
    assert len(calls) == 3
