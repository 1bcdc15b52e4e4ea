"""Schema inference from JSON records (the rules in nearstate.infer's docstring)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import nearstate
from nearstate import FieldType, InputError, SchemaInferrer, infer_schema
from nearstate.infer import LONG_TEXT_MEAN


def spec_of(records: list[dict], name: str = "T", key: Any = "id") -> dict[str, dict[str, str]]:
    """type name -> field name -> spec of the inferred schema."""
    schema = infer_schema(records, name, key)
    return {t.name: {f.name: f.type.spec() for f in t.fields} for t in schema}


def field_spec(records: list[dict], field: str) -> str:
    return spec_of(records)["T"][field]


def test_scalars() -> None:
    recs = [
        {"id": 1, "i": 3, "f": 1.5, "b": True, "s": "x"},
        {"id": 2, "i": -(2**80), "f": -0.0, "b": False, "s": ""},
    ]
    assert spec_of(recs) == {"T": {"id": "int", "i": "int", "f": "float", "b": "bool", "s": "str"}}


def test_string_key() -> None:
    assert spec_of([{"id": "a"}, {"id": "b"}]) == {"T": {"id": "str"}}
    assert infer_schema([{"id": "a"}], "T", "id")["T"].key == ("id",)


@pytest.mark.parametrize(
    "values",
    [[1, 2.5], [2.5, 1], [1, 2, 3.0], [0.0, -3, 10**20]],
)
def test_ints_and_floats_widen_to_float(values: list) -> None:
    recs = [{"id": i, "v": v} for i, v in enumerate(values)]
    assert field_spec(recs, "v") == "float"


def test_bool_and_number_do_not_mix() -> None:
    with pytest.raises(InputError) as info:
        infer_schema([{"id": 1, "v": True}, {"id": 2, "v": 1}], "T", "id")
    assert info.value.line == 2 and info.value.field == "v"
    with pytest.raises(InputError) as info:
        infer_schema([{"id": 1, "v": 0}, {"id": 2, "v": False}], "T", "id")
    assert info.value.line == 2 and info.value.field == "v"


def test_str_or_text_by_mean_length() -> None:
    n = LONG_TEXT_MEAN
    assert n == 256
    assert field_spec([{"id": 1, "s": "x" * n}], "s") == "text"
    assert field_spec([{"id": 1, "s": "x" * (n - 1)}], "s") == "str"
    # the mean decides: one long and one short string
    assert field_spec([{"id": 1, "s": "x" * (2 * n)}, {"id": 2, "s": ""}], "s") == "text"
    assert field_spec([{"id": 1, "s": "x" * (2 * n - 2)}, {"id": 2, "s": "y"}], "s") == "str"
    # nulls do not count towards the mean
    assert field_spec([{"id": 1, "s": "x" * n}, {"id": 2, "s": None}], "s") == "text?"
    # inside lists and nested objects too
    specs = spec_of([{"id": 1, "l": ["x" * n], "o": {"t": "y" * n}}])
    assert specs["T"]["l"] == "list<text>"
    assert specs["T.o"] == {"t": "text"}


def test_nested_objects_are_types_named_by_path() -> None:
    specs = spec_of(
        [{"id": 1, "a": {"b": {"c": 1}, "d": "x"}}, {"id": 2, "a": {"b": {"c": 2}, "d": "y"}}]
    )
    assert specs == {
        "T": {"id": "int", "a": "record<T.a>"},
        "T.a": {"b": "record<T.a.b>", "d": "str"},
        "T.a.b": {"c": "int"},
    }
    schema = infer_schema([{"id": 1, "a": {"b": {"c": 1}}}], "Film", "id")
    assert schema["Film.a"].key is None
    assert schema["Film.a.b"].key is None
    assert schema["Film"].key == ("id",)


def test_list_of_objects() -> None:
    recs = [
        {"id": 1, "cast": [{"name": "a", "age": 3}, {"name": "b"}]},
        {"id": 2, "cast": []},
        {"id": 3, "cast": [{"name": "c", "age": None, "role": "lead"}]},
    ]
    specs = spec_of(recs)
    assert specs["T"]["cast"] == "list<record<T.cast>>"
    assert specs["T.cast"] == {"name": "str", "age": "int?", "role": "str?"}


def test_lists() -> None:
    recs = [
        {"id": 1, "e": [], "l": [], "n": [1, None], "ll": [[1], []]},
        {"id": 2, "e": [], "l": ["x"], "n": [], "ll": [[2, 3.5]]},
    ]
    specs = spec_of(recs)["T"]
    assert specs["e"] == "list<str>"  # only ever empty
    assert specs["l"] == "list<str>"
    assert specs["n"] == "list<int?>"
    assert specs["ll"] == "list<list<float>>"
    assert field_spec([{"id": 1, "l": []}, {"id": 2, "l": [1]}], "l") == "list<int>"


def test_optional_absent_and_null_fields() -> None:
    recs = [
        {"id": 1, "absent": 1, "null": 1, "both": 1, "always": 1},
        {"id": 2, "null": None, "always": 2},
        {"id": 3, "absent": 3, "null": 3, "both": None, "always": 3},
    ]
    schema = infer_schema(recs, "T", "id")
    t = schema["T"]
    assert t.field("always").type == FieldType("int")
    assert t.field("absent").type == FieldType("int", True)
    assert t.field("null").type == FieldType("int", True)
    assert t.field("both").type == FieldType("int", True)
    # an export leaves a field out only if it was absent and never null
    assert t.field("absent").omit_null
    assert not t.field("null").omit_null
    assert not t.field("both").omit_null
    assert not t.field("always").omit_null


def test_absent_nested_object_and_fields_inside() -> None:
    recs = [{"id": 1, "o": {"a": 1}}, {"id": 2}, {"id": 3, "o": {"a": 2, "b": "x"}}]
    schema = infer_schema(recs, "T", "id")
    assert schema["T"].field("o").type == FieldType("record", True, target="T.o")
    assert schema["T"].field("o").omit_null
    assert schema["T.o"].field("a").type == FieldType("int")
    assert schema["T.o"].field("b").type == FieldType("str", True)
    assert schema["T.o"].field("b").omit_null


def test_only_null_field_is_nullable_str() -> None:
    assert field_spec([{"id": 1, "z": None}, {"id": 2, "z": None}], "z") == "str?"
    assert field_spec([{"id": 1, "z": None}, {"id": 2}], "z") == "str?"


def test_field_order_is_first_seen() -> None:
    schema = infer_schema([{"id": 1, "b": 1}, {"a": 2, "id": 2, "b": 3}], "T", "id")
    assert schema["T"].field_names == ("id", "b", "a")


def test_composite_key() -> None:
    inf = SchemaInferrer("T", ("a", "b"))
    inf.observe({"a": "x", "b": 1, "v": 1.5}, line=1)
    inf.observe({"a": "x", "b": 2, "v": 2}, line=2)
    schema = inf.schema()
    assert schema["T"].key == ("a", "b")
    assert {f.name: f.type.spec() for f in schema["T"].fields} == {
        "a": "str",
        "b": "int",
        "v": "float",
    }


# --- contradictions ---------------------------------------------------------------------------


def contradiction(records: list[Any], key: Any = "id") -> InputError:
    with pytest.raises(InputError) as info:
        infer_schema(records, "T", key)
    return info.value


@pytest.mark.parametrize(
    ("records", "line", "field"),
    [
        ([{"id": 1, "a": "x"}, {"id": 2, "a": 3}], 2, "a"),
        ([{"id": 1, "a": 3}, {"id": 2, "a": None}, {"id": 3, "a": "x"}], 3, "a"),
        ([{"id": 1, "a": {"b": 1}}, {"id": 2, "a": [1]}], 2, "a"),
        ([{"id": 1, "a": [1]}, {"id": 2, "a": {"b": 1}}], 2, "a"),
        ([{"id": 1, "a": {"b": {}}}, {"id": 2}, {"id": 3, "a": {"b": []}}], 3, "a.b"),
        ([{"id": 1, "a": {"b": 1}}, {"id": 2, "a": {"b": "s"}}], 2, "a.b"),
        ([{"id": 1, "l": [1, 2]}, {"id": 2, "l": [3, "x"]}], 2, "l[]"),
        ([{"id": 1, "l": [{"x": 1}]}, {"id": 2, "l": [{"x": [1]}]}], 2, "l[].x"),
        ([{"id": 1, "a": True}, {"id": 2, "a": "true"}], 2, "a"),
        ([{"id": 1, "a": "x"}, {"id": 2, "a": ["x"]}], 2, "a"),
    ],
)
def test_contradictions_name_line_and_field(records: list, line: int, field: str) -> None:
    e = contradiction(records)
    assert (e.line, e.field) == (line, field)
    assert f"line {line}" in str(e) and repr(field) in str(e)


@pytest.mark.parametrize(
    ("record", "why"),
    [
        ({"name": "x"}, "missing"),
        ({"id": None, "name": "x"}, "missing"),
        ({"id": 1.5}, "float"),
        ({"id": True}, "bool"),
        ({"id": [1]}, "list"),
        ({"id": {"a": 1}}, "dict"),
    ],
)
def test_bad_keys(record: dict, why: str) -> None:
    e = contradiction([{"id": 1}, {"id": 2}, record])
    assert e.line == 3
    assert e.field == "id"
    assert why in str(e)


def test_bad_composite_key_names_the_missing_part() -> None:
    e = contradiction([{"a": 1, "b": 2}, {"a": 1}], key=("a", "b"))
    assert (e.line, e.field) == (2, "b")


@pytest.mark.parametrize("top", [[1, 2], "x", 3, None, True])
def test_top_level_must_be_an_object(top: Any) -> None:
    e = contradiction([{"id": 1}, top])
    assert e.line == 2
    assert e.field is None
    assert "object" in str(e)


def test_observe_without_line() -> None:
    inf = SchemaInferrer("T", "id")
    inf.observe({"id": 1, "a": 1})
    with pytest.raises(InputError) as info:
        inf.observe({"id": 2, "a": "x"})
    assert info.value.line is None and info.value.field == "a"
    assert str(info.value).startswith("field 'a'")


# --- through import_jsonl: line numbers are the file's ----------------------------------------


def test_import_reports_file_lines(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text('{"id": 1, "a": "x"}\n\n   \n{"id": 2, "a": 5}\n')
    with pytest.raises(InputError) as info:
        nearstate.import_jsonl(src, type_name="T", key="id", into=tmp_path / "ds")
    assert (info.value.line, info.value.field) == (4, "a")
    assert not nearstate.LocalDataset(tmp_path / "ds").exists()  # nothing published


def test_import_bad_json_and_bad_key(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text('{"id": 1}\n{"id": 2,\n')
    with pytest.raises(InputError) as info:
        nearstate.import_jsonl(src, type_name="T", key="id", into=tmp_path / "ds")
    assert info.value.line == 2
    src.write_text('{"id": 1}\n{"id": 1.5}\n')
    with pytest.raises(InputError) as info:
        nearstate.import_jsonl(src, type_name="T", key="id", into=tmp_path / "ds")
    assert (info.value.line, info.value.field) == (2, "id")
    src.write_text('{"id": 1}\n{"id": 2}\n{"id": 1}\n')
    with pytest.raises(InputError, match="first on line 1") as info:
        nearstate.import_jsonl(src, type_name="T", key="id", into=tmp_path / "ds")
    assert (info.value.line, info.value.field) == (3, "id")


def test_import_uses_the_inferred_schema(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    long = "word " * 60
    recs = [
        {"id": "a", "n": 1, "x": 1.5, "t": long, "o": {"k": True}, "l": []},
        {"id": "b", "n": 2, "x": 2, "t": long, "l": [1]},
    ]
    src.write_text("".join(json.dumps(r) + "\n" for r in recs))
    res = nearstate.import_jsonl(src, type_name="T", key="id", into=tmp_path / "ds")
    assert res.records == 2 and res.version == 1
    state = nearstate.LocalDataset(tmp_path / "ds").load()
    t = state.stored_schema["T"]
    assert {f.name: f.type.spec() for f in t.fields} == {
        "id": "str",
        "n": "int",
        "x": "float",
        "t": "text",
        "o": "record<T.o>?",
        "l": "list<int>",
    }
    assert state["T"].get("b").x == 2.0
    assert state["T"].get("a").o.k is True
