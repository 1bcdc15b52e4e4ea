"""Record nesting has a limit, MAX_DEPTH: deeper JSON is refused by inference and import
with an InputError naming the line and the field (never a RecursionError, nothing
published); deeper schemas, declared or given as JSON, with a SchemaError naming the type
and field; exactly MAX_DEPTH levels work end to end."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import nearstate
import nearstate.jsonl
from nearstate import InputError, Schema, SchemaError, TypeDef, infer_schema
from nearstate.cli import main
from nearstate.jsonl import export_records
from nearstate.schema import MAX_DEPTH

TOO_DEEP = f"nested {MAX_DEPTH + 1} levels deep; nearstate allows at most {MAX_DEPTH}"


def nest(kind: str, levels: int, leaf: Any = 1) -> Any:
    """``leaf`` inside ``levels`` objects (``{"a": ...}``) or lists (``[...]``)."""
    v = leaf
    for _ in range(levels):
        v = {"a": v} if kind == "object" else [v]
    return v


def path_at(kind: str, levels: int) -> str:
    """The field path inference names for the object or list at ``levels`` below the record
    of ``{"id": ..., "a": nest(kind, ...)}``."""
    return ".".join(["a"] * levels) if kind == "object" else "a" + "[]" * (levels - 1)


def deepest(value: Any, kind: str, levels: int) -> Any:
    for _ in range(levels):
        value = value.a if kind == "object" else value[0]
    return value


def nest_text(kind: str, levels: int) -> str:
    """The JSON text of ``nest(kind, levels)``, written without recursion."""
    if kind == "object":
        return '{"a": ' * levels + "1" + "}" * levels
    return "[" * levels + "1" + "]" * levels


def write_lines(path: Path, records: list[Any]) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def deep_file(tmp_path: Path, kind: str, levels: int) -> Path:
    """Two shallow records, then (line 3) one nested ``levels`` deep."""
    return write_lines(
        tmp_path / "in.jsonl",
        ['{"id": 1, "a": null}', '{"id": 2}', f'{{"id": 3, "a": {nest_text(kind, levels)}}}'],
    )


def nothing_published(ds: Path) -> bool:
    return not nearstate.LocalDataset(ds).exists() and (
        not (ds / "snapshots").exists() or not any((ds / "snapshots").iterdir())
    )


def run_cli(*args: Any):
    return CliRunner().invoke(main, [str(a) for a in args])


KINDS = ["object", "list"]


# --- too deep: refused with the line and the field ---------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("levels", [MAX_DEPTH + 1, 500])
def test_import_refuses_too_deep_records(tmp_path: Path, kind: str, levels: int) -> None:
    ds = tmp_path / "ds"
    with pytest.raises(InputError) as info:
        nearstate.import_jsonl(deep_file(tmp_path, kind, levels), type_name="T", key="id", into=ds)
    e = info.value
    assert (e.line, e.field) == (3, path_at(kind, MAX_DEPTH + 1))
    assert str(e) == f"line 3, field {e.field!r}: {TOO_DEEP}"
    assert not isinstance(e.__context__, RecursionError)
    assert nothing_published(ds)


@pytest.mark.parametrize("kind", KINDS)
def test_import_refuses_records_too_deep_to_decode(tmp_path: Path, kind: str) -> None:
    # thousands of levels: past what the JSON decoder itself can recurse into
    ds = tmp_path / "ds"
    with pytest.raises(InputError) as info:
        nearstate.import_jsonl(deep_file(tmp_path, kind, 5000), type_name="T", key="id", into=ds)
    assert (info.value.line, info.value.field) == (3, path_at(kind, MAX_DEPTH + 1))
    assert TOO_DEEP in str(info.value)
    assert nothing_published(ds)


def test_mixed_objects_and_lists_and_keys_needing_escapes(tmp_path: Path) -> None:
    key = json.dumps('k"\\ ,{[')  # a key whose text holds quotes and brackets
    for levels in (500, 5000):  # decoded, then too deep to decode: the same path
        text = "".join("[" if i % 2 == 0 else "{" + key + ": " for i in range(levels))
        text += "1" + "".join("]" if i % 2 == 0 else "}" for i in reversed(range(levels)))
        src = write_lines(tmp_path / f"{levels}.jsonl", [f'{{"id": 1, "a": {text}}}'])
        with pytest.raises(InputError) as info:
            nearstate.import_jsonl(src, type_name="T", key="id", into=tmp_path / "ds")
        assert info.value.line == 1
        field = info.value.field
        # levels: a (1, a list), a[] (2, an object), a[].k (3, a list), ... 65, a list
        k = json.loads(key)
        assert field == "a[]" + f".{k}[]" * (MAX_DEPTH // 2 - 1) + f".{k}"
        assert nothing_published(tmp_path / "ds")


@pytest.mark.parametrize("kind", KINDS)
def test_cli_import_names_line_and_field_and_publishes_nothing(tmp_path: Path, kind: str) -> None:
    ds = tmp_path / "ds"
    res = run_cli(
        "import", deep_file(tmp_path, kind, 500), "--type", "T", "--key", "id", "--into", ds,
        "--quiet",
    )  # fmt: skip
    out = " ".join(res.output.split())  # the error may be wrapped to the terminal's width
    assert res.exit_code == 1, res.output
    assert "line 3" in out and TOO_DEEP in out, res.output
    assert path_at(kind, MAX_DEPTH + 1) in out.replace(" ", "")
    assert "RecursionError" not in out and "Traceback" not in out
    assert nothing_published(ds)


def test_too_deep_import_leaves_the_previous_version(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    good = write_lines(tmp_path / "good.jsonl", [{"id": 1, "a": nest("object", 2)}])
    nearstate.import_jsonl(good, type_name="T", key="id", into=ds)
    with pytest.raises(InputError, match="65 levels"):
        nearstate.import_jsonl(deep_file(tmp_path, "object", 500), type_name="T", key="id", into=ds)
    state = nearstate.LocalDataset(ds).load()
    assert state.version == 1 and state["T"].get(1).to_dict() == {"id": 1, "a": nest("object", 2)}


def test_too_deep_record_past_the_inference_sample(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the schema is inferred from the first records only (a: list<str>, its lists were
    # empty); a deeper record after them contradicts it, and inference over every record
    # names its line and the field where it passes the limit
    monkeypatch.setattr(nearstate.jsonl, "INFER_SAMPLE", 2)
    ds = tmp_path / "ds"
    recs: list[Any] = [{"id": i, "a": []} for i in range(1, 5)]
    recs.append(f'{{"id": 5, "a": {nest_text("list", 900)}}}')
    with pytest.raises(InputError) as info:
        nearstate.import_jsonl(
            write_lines(tmp_path / "in.jsonl", recs), type_name="T", key="id", into=ds
        )
    assert (info.value.line, info.value.field) == (5, path_at("list", MAX_DEPTH + 1))
    assert nothing_published(ds)


@pytest.mark.parametrize("kind", KINDS)
def test_infer_schema_refuses_too_deep_values(kind: str) -> None:
    with pytest.raises(InputError) as info:
        infer_schema([{"id": 1}, {"id": 2, "a": nest(kind, 10_000)}], "T", "id")
    assert (info.value.line, info.value.field) == (2, path_at(kind, MAX_DEPTH + 1))


# --- exactly MAX_DEPTH: works end to end -------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_max_depth_imports_loads_and_reads_back(tmp_path: Path, kind: str) -> None:
    recs = [
        {"id": 1, "a": nest(kind, MAX_DEPTH, "bottom")},
        {"id": 2, "a": nest(kind, MAX_DEPTH, "other")},
        {"id": 3, "a": nest(kind, 3, "shallow") if kind == "list" else None},
    ]
    if kind == "list":
        recs[2]["a"] = nest("list", MAX_DEPTH - 1, [])
    ds = tmp_path / "ds"
    res = nearstate.import_jsonl(
        write_lines(tmp_path / "in.jsonl", recs), type_name="T", key="id", into=ds
    )
    assert res.records == 3
    state = nearstate.LocalDataset(ds).load()
    t = state["T"]
    assert deepest(t.get(1).a, kind, MAX_DEPTH) == "bottom"
    assert deepest(t.get(2).a, kind, MAX_DEPTH) == "other"
    for rec in recs:
        assert t.get(rec["id"]).to_dict() == rec
    assert list(export_records(state, "T")) == recs
    assert t.get(1) == t.get(1) and hash(t.get(1)) == hash(t.get(1))
    # a second import of the same file is a full-state cycle that changes nothing
    again = nearstate.import_jsonl(tmp_path / "in.jsonl", type_name="T", key="id", into=ds)
    assert not again.changed


@pytest.mark.parametrize("kind", KINDS)
def test_max_depth_through_the_cli(tmp_path: Path, kind: str) -> None:
    rec = {"id": 1, "a": nest(kind, MAX_DEPTH)}
    src = write_lines(tmp_path / "in.jsonl", [rec])
    ds = tmp_path / "ds"
    res = run_cli("import", src, "--type", "T", "--key", "id", "--into", ds, "--quiet")
    assert res.exit_code == 0, res.output
    res = run_cli("get", ds, "T", "1")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output) == rec
    res = run_cli("export", ds, "--type", "T")
    assert res.exit_code == 0, res.output
    assert [json.loads(line) for line in res.output.splitlines()] == [rec]


# --- declared schemas ----------------------------------------------------------------------------


def list_hint(levels: int) -> Any:
    hint: Any = int
    for _ in range(levels):
        hint = list[hint]
    return hint


def record_chain(levels: int) -> type:
    """A keyed ``Deep`` whose field ``a`` holds ``levels`` nested dataclasses, one in the
    next (``Deep.a.a...``), the innermost holding an int."""
    inner: Any = int
    for i in range(levels, 0, -1):
        inner = dataclasses.make_dataclass(f"N{i}", [("a", inner)])
    root = dataclasses.make_dataclass("Deep", [("id", int), ("a", inner)])
    return nearstate.record(key="id")(root)


def chain_value(levels: int, leaf: int) -> Any:
    return nest("object", levels, leaf)


@pytest.mark.parametrize("levels", [MAX_DEPTH + 1, 500])
def test_dataclass_list_too_deep(levels: int) -> None:
    cls = nearstate.record(key="id")(
        dataclasses.make_dataclass("Deep", [("id", int), ("a", list_hint(levels))])
    )
    with pytest.raises(SchemaError) as info:
        Schema.from_dataclasses(cls)
    # typing itself cannot evaluate hundreds of levels: then the field is named alone
    assert str(info.value) in (
        f"Deep.a{'[]' * MAX_DEPTH}: {TOO_DEEP}",
        f"Deep.a: nested {levels} levels deep; nearstate allows at most {MAX_DEPTH}",
    )


@pytest.mark.parametrize("levels", [MAX_DEPTH + 1, 500])
def test_dataclass_records_too_deep(levels: int) -> None:
    with pytest.raises(SchemaError) as info:
        Schema.from_dataclasses(record_chain(levels))
    assert str(info.value) == f"Deep{'.a' * (MAX_DEPTH + 1)}: {TOO_DEEP}"


@dataclasses.dataclass
class Node:
    label: str
    children: list[Node]


@nearstate.record(key="id")
@dataclasses.dataclass
class Tree:
    id: int
    root: Node


def test_dataclass_record_inside_itself() -> None:
    with pytest.raises(SchemaError, match=r"Tree\.root\.children\[\]: record<Node> nests"):
        Schema.from_dataclasses(Tree)


def test_dataclass_at_max_depth_round_trips(tmp_path: Path) -> None:
    deep = record_chain(MAX_DEPTH)
    lists = nearstate.record(key="id")(
        dataclasses.make_dataclass("Lists", [("id", int), ("a", list_hint(MAX_DEPTH))])
    )
    schema = Schema.from_dataclasses(deep, lists)
    ws = nearstate.WriteState(schema)
    ws.add("Deep", {"id": 1, "a": chain_value(MAX_DEPTH, 7)})
    ws.add("Lists", {"id": 1, "a": nest("list", MAX_DEPTH, 9)})
    ws.write_snapshot(tmp_path / "s.blob")
    state = nearstate.load(tmp_path / "s.blob")
    assert deepest(state["Deep"].get(1).a, "object", MAX_DEPTH) == 7
    assert state["Deep"].get(1).to_dict() == {"id": 1, "a": chain_value(MAX_DEPTH, 7)}
    assert deepest(state["Lists"].get(1).a, "list", MAX_DEPTH) == 9


def test_staging_a_too_deep_value_against_a_shallow_schema() -> None:
    schema = Schema.from_dataclasses(
        nearstate.record(key="id")(
            dataclasses.make_dataclass("T", [("id", int), ("a", list_hint(2))])
        )
    )
    ws = nearstate.WriteState(schema)
    with pytest.raises(SchemaError, match="expected int, got list"):
        ws.add("T", {"id": 1, "a": nest("list", 5000)})
    with pytest.raises(SchemaError, match="expected int, got list"):
        ws.add_many("T", [{"id": 2, "a": nest("list", 5000)}])


# --- schemas given as JSON -----------------------------------------------------------------------


def spec(levels: int) -> str:
    return "list<" * levels + "int" + ">" * levels


@pytest.mark.parametrize("levels", [MAX_DEPTH + 1, 500, 5000])
def test_json_spec_too_deep(levels: int) -> None:
    obj = {"types": [{"name": "T", "key": ["id"], "fields": [
        {"name": "id", "type": "int"}, {"name": "a", "type": spec(levels)},
    ]}]}  # fmt: skip
    with pytest.raises(SchemaError) as info:
        Schema.from_json(obj)
    msg = str(info.value)
    assert msg.startswith("T.a: type spec 'list<list<") and msg.endswith(TOO_DEEP), msg


@pytest.mark.parametrize("levels", [MAX_DEPTH + 1, 500])
def test_json_record_chain_too_deep(levels: int) -> None:
    types = [{"name": "T", "key": ["id"], "fields": [
        {"name": "id", "type": "int"}, {"name": "a", "type": "record<N1>"},
    ]}]  # fmt: skip
    for i in range(1, levels + 1):
        ft = f"record<N{i + 1}>" if i < levels else "int"
        types.append({"name": f"N{i}", "fields": [{"name": "a", "type": ft}]})
    for order in (types, types[::-1]):
        with pytest.raises(SchemaError) as info:
            Schema.from_json({"types": order})
        assert str(info.value) == f"T{'.a' * (MAX_DEPTH + 1)}: {TOO_DEEP}"


def test_json_record_inside_itself() -> None:
    obj = {"types": [
        {"name": "T", "key": ["id"], "fields": [
            {"name": "id", "type": "int"}, {"name": "n", "type": "record<N>?"},
        ]},
        {"name": "N", "fields": [{"name": "next", "type": "dict<str,record<N>>"}]},
    ]}  # fmt: skip
    with pytest.raises(SchemaError, match=r"T\.n\.next\{\}: record<N> nests a N inside itself"):
        Schema.from_json(obj)


def test_json_schema_at_max_depth_is_accepted() -> None:
    td = TypeDef.from_json({"name": "T", "key": ["id"], "fields": [
        {"name": "id", "type": "int"}, {"name": "a", "type": spec(MAX_DEPTH)},
        {"name": "d", "type": "dict<str," + spec(MAX_DEPTH - 1) + ">?"},
    ]})  # fmt: skip
    schema = Schema([td])
    assert Schema.from_json(schema.to_json()) == schema
