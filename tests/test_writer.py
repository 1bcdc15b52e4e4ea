"""The Writer: upserts, deletes and transactions committed to a dataset's Log.

* the example from the docs, tokens (ordered ints, one per commit);
* schemas: a type inferred from its first record (key ``id``, other fields optional), shared
  by every writer; declared schemas, ``infer=False``, a declaration that contradicts the
  dataset;
* bad input (unknown type, a field of the wrong type or not in the type, a missing key, an
  oversize or non-mapping record, an empty transaction) raises an error naming what is
  wrong and commits nothing: the Log's head does not move and no consumer sees it;
* transactions are atomic; ``expect_absent`` and ``expect_token`` conditions, checked
  against the dataset as it stands before the transaction (keys that came from an import
  or a published version exist too), and racing writers;
* composite keys, references (a reference to a missing record is refused), and every kind
  of field value arriving at a consumer exactly as written.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import nearstate
from nearstate import (
    ConflictError,
    Field,
    FieldType,
    InputError,
    LocalDataset,
    Schema,
    SchemaError,
    Token,
    TypeDef,
    WriteState,
    record,
)
from versioned import ITEM, Article, Person, item

LONG = 10.0  # seconds a consumer may take to show a write (it takes milliseconds)


@pytest.fixture
def ds(tmp_path: Path) -> LocalDataset:
    return nearstate.open(tmp_path / "ds")


def visible(ds: LocalDataset, type_name: str) -> dict[Any, dict[str, Any]]:
    """The records of ``type_name`` a fresh consumer shows once it has the Log's head."""
    c = ds.consumer()
    state = c.sync(LONG)
    if type_name not in state:
        return {}
    return {r.key: r.to_dict() for r in state[type_name]}


# --- declared types used below ---------------------------------------------------------------


@dataclass
class Hero:
    url: str
    width: int


@record(key=("site", "slug"))
@dataclass
class Page:
    site: str
    slug: str
    title: str


@record(key="id")
@dataclass
class Everything:
    id: str
    when: dt.datetime
    blob: bytes
    flag: bool
    ratio: float
    body: nearstate.LongText
    tags: list[str]
    labels: set[str]
    counts: dict[str, int]
    by_number: dict[int, str]
    hero: Hero | None
    heroes: list[Hero]
    maybe: int | None = None


@record(key="id")
@dataclass
class Event:
    id: int
    at: dt.datetime


ARTICLES = Schema.from_dataclasses(Article, Person)
PAGES = Schema.from_dataclasses(Page)
EVERYTHING = Schema.from_dataclasses(Everything)
EVENTS = Schema.from_dataclasses(Event)


# --- the example, tokens -------------------------------------------------------------------


README = Path(__file__).resolve().parent.parent / "README.md"


def _readme_write_example() -> str:
    """The Python block of the README's section on writes."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("### Writes, visible at once") :]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_readme_example_works_as_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's write example runs as printed (only its dataset directory moved into a
    temporary one): it prints the title it wrote, and its transaction is committed."""
    code = _readme_write_example()
    assert "file:///tmp/tudum" in code
    code = code.replace("file:///tmp/tudum", f"file://{tmp_path}/tudum")
    exec(compile(code, str(README), "exec"), {})
    assert capsys.readouterr().out == "Hello\n"
    ds = nearstate.open(tmp_path / "tudum")
    assert visible(ds, "Story") == {
        "s1": {"id": "s1", "title": "Hello"},
        "s2": {"id": "s2", "title": "Two"},
    }


def test_the_readme_example_runs_unchanged_on_nats(capsys: pytest.CaptureFixture[str]) -> None:
    """The same README example, with only the dataset URL changed to a NATS one: the same
    code runs on both backends."""
    from natsserver import drop, server_url, unique

    url, name = server_url(), unique("readme")
    code = _readme_write_example().replace("file:///tmp/tudum", f"{url}/{name}")
    try:
        exec(compile(code, str(README), "exec"), {})
        assert capsys.readouterr().out == "Hello\n"
        ds = nearstate.open(f"{url}/{name}")
        assert visible(ds, "Story") == {
            "s1": {"id": "s1", "title": "Hello"},
            "s2": {"id": "s2", "title": "Two"},
        }
    finally:
        drop(url, name)


def test_open_by_file_url_write_and_read_back(tmp_path: Path) -> None:
    """Open a dataset by file URL, upsert a record (its type inferred), and read it back
    from a consumer that waits for the write's token."""
    ds = nearstate.open(f"file://{tmp_path}/x")
    w = ds.writer()
    token = w.upsert("Story", {"id": "s1", "title": "Hello"})
    assert isinstance(token, nearstate.Token)
    c = ds.consumer()
    c.wait_for(token, timeout=5)
    assert c.state["Story"].get("s1").title == "Hello"
    assert (tmp_path / "x").is_dir()


def test_tokens_are_ordered_ints_one_per_commit(ds: LocalDataset) -> None:
    """Every commit (upsert, delete, transaction, from any writer of the dataset) returns a
    Token, an int larger than every earlier one and equal to the Log's head."""
    w1, w2 = ds.writer(), nearstate.open(ds.path).writer()
    tokens = [w1.upsert("Story", {"id": "a", "title": "A"}), w2.upsert("Story", {"id": "b"})]
    tokens.append(w1.delete("Story", "a"))
    with w2.transaction() as tx:
        tx.upsert("Story", {"id": "c"})
        tx.upsert("Story", {"id": "d"})
    assert tx.token is not None
    tokens.append(tx.token)
    tokens.append(w1.upsert("Story", {"id": "c", "title": "again"}))
    assert all(isinstance(t, Token) and isinstance(t, int) for t in tokens)
    assert tokens == sorted(set(tokens))
    assert tokens[-1] == ds.log.head() == len(tokens)
    assert repr(tokens[0]) == "Token(1)"


# --- inferred schemas --------------------------------------------------------------------------


def test_first_write_infers_the_type(ds: LocalDataset) -> None:
    """The first record of a new type defines it: key 'id', every other field optional (it
    may be null or left out later), each field's type taken from the record."""
    w = ds.writer()
    w.upsert("Story", {"id": "s1", "title": "Hello", "words": 300, "tags": ["a"]})
    assert w.schema is not None
    story = w.schema["Story"]
    assert story.key == ("id",)
    specs = {f.name: f.type.spec() for f in story.fields}
    assert specs == {"id": "str", "title": "str?", "words": "int?", "tags": "list<str>?"}
    w.upsert("Story", {"id": "s2"})
    w.upsert("Story", {"id": "s3", "title": None, "words": None})
    got = visible(ds, "Story")
    assert set(got) == {"s1", "s2", "s3"}
    assert got["s1"]["words"] == 300 and got["s1"]["tags"] == ["a"]
    assert got["s2"]["title"] is None


def test_inferred_type_refuses_records_that_do_not_fit(ds: LocalDataset) -> None:
    """After inference a record with a field of another type or a field the type lacks is
    refused (SchemaError naming the type and the field), by this writer and by any other
    writer of the dataset."""
    ds.writer().upsert("Story", {"id": "s1", "title": "Hello"})
    for w in (ds.writer(), nearstate.open(ds.path).writer()):
        with pytest.raises(SchemaError, match=r"(?s)Story.*'title'.*str"):
            w.upsert("Story", {"id": "s2", "title": 5})
        with pytest.raises(SchemaError, match=r"(?s)'subtitle'.*Story"):
            w.upsert("Story", {"id": "s2", "subtitle": "x"})
    assert ds.log.head() == 1


def test_inference_needs_an_id(ds: LocalDataset) -> None:
    """A first record without 'id' cannot define a type: SchemaError naming the type and
    'id'; nothing is written."""
    with pytest.raises(SchemaError, match=r"(?s)'Story'.*'id'"):
        ds.writer().upsert("Story", {"slug": "s1", "title": "Hello"})
    assert ds.log.head() == 0
    assert ds.writer().schema is None


def test_inference_refuses_values_json_does_not_have(ds: LocalDataset) -> None:
    """Inference reads JSON-like records: a first record holding a datetime is refused
    (SchemaError naming the type and the field) — declare such a type instead."""
    with pytest.raises(SchemaError, match=r"(?s)'Event'.*'at'"):
        ds.writer().upsert("Event", {"id": 1, "at": dt.datetime(2024, 1, 1)})
    assert ds.log.head() == 0


def test_a_second_type_is_inferred_next_to_the_first(ds: LocalDataset) -> None:
    """A new type written later is inferred and added; the first type stays as it was."""
    w = ds.writer()
    w.upsert("Story", {"id": "s1", "title": "Hello"})
    before = w.schema["Story"].to_json()
    w.upsert("Person", {"id": 7, "name": "Ann"})
    schema = nearstate.open(ds.path).writer().schema
    assert schema is not None
    assert set(schema.types) == {"Story", "Person"}
    assert schema["Story"].to_json() == before
    assert schema["Person"].key == ("id",)
    assert visible(ds, "Person") == {7: {"id": 7, "name": "Ann"}}


def test_a_writer_sees_a_type_another_writer_added_since_its_last_commit(ds: LocalDataset) -> None:
    """A writer checks its records against the schema its last commit saw, and again at the
    Log's head: a type another writer inferred meanwhile is the one its record must fit."""
    a, b = ds.writer(), ds.writer()
    a.upsert("Story", {"id": "s1", "title": "Hello"})
    b.upsert("Note", {"id": 1, "text": "by b"})  # Note: id int, text str
    with pytest.raises(SchemaError, match="Note"):
        a.upsert("Note", {"id": 2, "text": 3})  # fits no Note b's way, though a never saw one
    a.upsert("Note", {"id": 2, "text": "by a"})
    assert visible(ds, "Note") == {1: {"id": 1, "text": "by b"}, 2: {"id": 2, "text": "by a"}}


# --- declared schemas --------------------------------------------------------------------------


DECLARED = Schema(
    [
        TypeDef(
            "Story",
            (
                Field("slug", FieldType("str")),
                Field("title", FieldType("str")),
                Field("words", FieldType("int", nullable=True)),
            ),
            key=("slug",),
        )
    ]
)


def test_declared_schema_is_used(ds: LocalDataset) -> None:
    """With a declared type the record is checked against it: its own key field (not
    'id'), a required field must be there, a nullable one may be left out."""
    w = ds.writer(schema=DECLARED)
    with pytest.raises(SchemaError, match=r"(?s)Story.*'title'"):
        w.upsert("Story", {"slug": "a"})
    t = w.upsert("Story", {"slug": "a", "title": "T"})
    assert t == 1
    assert visible(ds, "Story") == {"a": {"slug": "a", "title": "T", "words": None}}
    other = ds.writer()  # a writer that declares nothing uses the dataset's declared type
    with pytest.raises(SchemaError, match=r"(?s)'title'.*str"):
        other.upsert("Story", {"slug": "b", "title": 3})


def test_infer_false_refuses_unknown_types(ds: LocalDataset) -> None:
    """With infer=False a type that is neither declared nor in the dataset is refused
    (SchemaError naming it and the types there are); nothing is written."""
    with pytest.raises(SchemaError, match="'Story'"):
        ds.writer(infer=False).upsert("Story", {"id": "s1"})
    w = ds.writer(schema=DECLARED, infer=False)
    w.upsert("Story", {"slug": "a", "title": "T"})
    with pytest.raises(SchemaError, match=r"(?s)'Person'.*Story"):
        w.upsert("Person", {"id": 1, "name": "Ann"})
    assert ds.log.head() == 1


def test_declaration_contradicting_the_dataset_is_refused(ds: LocalDataset) -> None:
    """A writer declaring a type differently from the dataset's is refused at its first
    commit (SchemaError naming the type); nothing is written."""
    ds.writer().upsert("Story", {"id": "s1", "title": "Hello"})
    other = Schema([TypeDef("Story", (Field("id", FieldType("int")),), key=("id",))])
    with pytest.raises(SchemaError, match="'Story'"):
        ds.writer(schema=other).upsert("Story", {"id": 2})
    assert ds.log.head() == 1


def test_declared_type_next_to_an_inferred_one(ds: LocalDataset) -> None:
    """A writer may declare a type the dataset lacks; the dataset then has both."""
    ds.writer().upsert("Story", {"id": "s1", "title": "Hello"})
    w = ds.writer(schema=PAGES)
    w.upsert("Page", {"site": "a", "slug": "b", "title": "T"})
    w.upsert("Story", {"id": "s2"})
    assert set(ds.writer().schema.types) == {"Story", "Page"}
    assert set(visible(ds, "Story")) == {"s1", "s2"}


def test_declared_schema_with_references_and_nested_records(ds: LocalDataset) -> None:
    """A declared schema whose types refer to each other (references, nested records) keeps
    working after its first commit stored it in the Log: later commits by this writer and
    by a new writer declaring the same schema succeed."""
    w = ds.writer(schema=ARTICLES)
    w.upsert("Person", {"id": 1, "name": "Ann"})
    w.upsert("Article", {"id": "a1", "title": "T", "author": 1, "editors": []})
    ds.writer(schema=ARTICLES).upsert("Person", {"id": 2, "name": "Bo"})
    e = ds.writer(schema=EVERYTHING)
    e.upsert("Everything", _everything("e1"))
    e.upsert("Everything", _everything("e2"))
    assert ds.log.head() == 5


def test_one_transaction_of_many_records_with_a_key_twice(ds: LocalDataset) -> None:
    """A transaction stages all its records together (one WriteState, for speed); a key
    upserted twice in it still commits, the last one winning, and each record keeps its
    own nested values."""
    w = ds.writer(schema=EVERYTHING)
    with w.transaction() as tx:
        for i in range(50):
            tx.upsert("Everything", _everything(f"e{i}"))
        tx.upsert("Everything", dict(_everything("e7"), body="again"))
    c = ds.consumer()
    c.wait_for(tx.token)
    assert len(c.state["Everything"]) == 50
    assert c.state["Everything"].get("e7").body == "again"
    assert c.state["Everything"].get("e8").to_dict() == _expected_everything("e8")


# --- bad input commits nothing ---------------------------------------------------------------


def _big(n: int) -> str:
    return "x" * n


BAD_OPS: list[tuple[str, Any, type[Exception], list[str]]] = [
    ("unknown type", ("upsert", "Nope", {"id": 1}), SchemaError, ["'Nope'"]),
    ("delete of an unknown type", ("delete", "Nope", 1), SchemaError, ["'Nope'"]),
    ("wrong field type", ("upsert", "Story", {"id": "s2", "title": 5}), SchemaError,
     ["Story", "'title'"]),
    ("unknown field", ("upsert", "Story", {"id": "s2", "bogus": 1}), SchemaError,
     ["Story", "'bogus'"]),
    ("missing key", ("upsert", "Story", {"title": "no key"}), SchemaError, ["Story", "'id'"]),
    ("key of the wrong type", ("upsert", "Story", {"id": 7}), SchemaError, ["Story", "'id'"]),
    ("delete by a key of the wrong type", ("delete", "Story", 7), SchemaError, ["Story"]),
    ("oversize record", ("upsert", "Story", {"id": "s2", "title": _big(5000)}), InputError,
     ["Story", "max_record_bytes"]),
    ("a list as record", ("upsert", "Story", ["id", "s2"]), InputError, ["Story", "mapping"]),
    ("a string as record", ("upsert", "Story", "s2"), InputError, ["Story", "mapping"]),
    ("empty type name", ("upsert", "", {"id": "s2"}), InputError, ["type name"]),
]  # fmt: skip


@pytest.fixture
def story_ds(ds: LocalDataset) -> LocalDataset:
    """A dataset holding Story s1 (type inferred: id str, title str?), written at token 1."""
    ds.writer().upsert("Story", {"id": "s1", "title": "Hello"})
    return ds


def _apply(target: Any, op: tuple[str, str, Any]) -> Any:
    kind, type_name, arg = op
    return getattr(target, kind)(type_name, arg)


@pytest.mark.parametrize(("op", "error", "names"), [b[1:] for b in BAD_OPS],
                         ids=[b[0] for b in BAD_OPS])  # fmt: skip
def test_bad_input_is_refused_and_commits_nothing(
    story_ds: LocalDataset, op: tuple[str, str, Any], error: type[Exception], names: list[str]
) -> None:
    """A bad mutation raises an error naming the type and field at fault, alone or in a
    transaction after a good mutation; the Log's head does not move and a consumer shows
    none of it (not even the good mutation)."""
    w = story_ds.writer(infer=False, max_record_bytes=1000)
    with pytest.raises(error) as e:
        _apply(w, op)
    for name in names:
        assert name in str(e.value)
    with pytest.raises(error), w.transaction() as tx:
        tx.upsert("Story", {"id": "good", "title": "would be fine alone"})
        _apply(tx, op)
    assert tx.token is None
    assert story_ds.log.head() == 1
    assert visible(story_ds, "Story") == {"s1": {"id": "s1", "title": "Hello"}}


def test_upsert_of_none_is_refused_as_not_a_record(story_ds: LocalDataset) -> None:
    """upsert(type, None) is a record that is not a mapping: InputError saying so (it is
    not taken for a delete), and nothing is written."""
    w = story_ds.writer()
    with pytest.raises(InputError, match="mapping"):
        w.upsert("Story", None)  # type: ignore[arg-type]
    assert story_ds.log.head() == 1


def test_record_size_limit(ds: LocalDataset) -> None:
    """max_record_bytes refuses a record over the limit (InputError giving its size and the
    limit) and accepts one under it."""
    w = ds.writer(max_record_bytes=200)
    w.upsert("Story", {"id": "small", "title": _big(100)})
    with pytest.raises(InputError, match=r"(?s)Story 'big'.*over the limit of 200 bytes"):
        w.upsert("Story", {"id": "big", "title": _big(300)})
    assert set(visible(ds, "Story")) == {"small"}


def test_empty_transaction_is_refused(story_ds: LocalDataset) -> None:
    """A transaction with no mutation raises InputError when it commits (at the end of its
    block or by commit()); nothing is written."""
    w = story_ds.writer()
    with pytest.raises(InputError, match="empty"), w.transaction():
        pass
    with pytest.raises(InputError, match="empty"):
        w.transaction().commit()
    assert story_ds.log.head() == 1


def test_transaction_block_that_raises_commits_nothing(story_ds: LocalDataset) -> None:
    """An exception inside the transaction's block propagates and discards its mutations."""
    w = story_ds.writer()
    with pytest.raises(RuntimeError, match="changed my mind"), w.transaction() as tx:
        tx.upsert("Story", {"id": "s2"})
        tx.delete("Story", "s1")
        raise RuntimeError("changed my mind")
    assert tx.token is None
    assert story_ds.log.head() == 1
    assert set(visible(story_ds, "Story")) == {"s1"}


def test_committed_transaction_takes_no_more_mutations(story_ds: LocalDataset) -> None:
    """After its commit a transaction refuses further mutations and a second commit
    (InputError); its token stays that of the one commit."""
    w = story_ds.writer()
    with w.transaction() as tx:
        tx.upsert("Story", {"id": "s2"})
    assert tx.token == 2
    with pytest.raises(InputError, match="committed"):
        tx.upsert("Story", {"id": "s3"})
    with pytest.raises(InputError, match="committed"):
        tx.commit()
    assert tx.token == 2 and story_ds.log.head() == 2


# --- transactions and conditions ----------------------------------------------------------------


def test_transaction_commits_every_mutation_under_one_token(story_ds: LocalDataset) -> None:
    """A transaction's upserts and deletes are one Log entry: one token, the last change
    of each key it touched, all visible together."""
    w = story_ds.writer()
    with w.transaction() as tx:
        tx.upsert("Story", {"id": "s2", "title": "two"})
        tx.upsert("Story", {"id": "s3", "title": "three"})
        tx.delete("Story", "s1")
        assert len(tx) == 3
    assert tx.token == 2 == story_ds.log.head()
    assert visible(story_ds, "Story") == {
        "s2": {"id": "s2", "title": "two"},
        "s3": {"id": "s3", "title": "three"},
    }
    # the transaction's token is the last change of each key it touched
    with w.transaction() as tx2:
        tx2.upsert("Story", {"id": "s2", "title": "2"}, expect_token=tx.token)
        tx2.upsert("Story", {"id": "s3", "title": "3"}, expect_token=tx.token)
        tx2.upsert("Story", {"id": "s1", "title": "1"}, expect_absent=True)
    assert tx2.token == 3


def test_failing_condition_on_the_third_mutation_commits_none(story_ds: LocalDataset) -> None:
    """When the third mutation's condition fails, the first two are not committed either:
    ConflictError naming the third's type and key, the head unchanged, nothing visible."""
    w = story_ds.writer()
    with pytest.raises(ConflictError) as e, w.transaction() as tx:
        tx.upsert("Story", {"id": "s2"})
        tx.delete("Story", "s1")
        tx.upsert("Story", {"id": "s1", "title": "again"}, expect_absent=True)
    assert (e.value.type_name, e.value.key, e.value.current) == ("Story", "s1", 1)
    assert tx.token is None
    assert story_ds.log.head() == 1
    assert visible(story_ds, "Story") == {"s1": {"id": "s1", "title": "Hello"}}


def test_conditions_see_the_dataset_before_the_transaction(story_ds: LocalDataset) -> None:
    """A condition is checked against the dataset before the transaction, not against the
    transaction's own earlier mutations; the last mutation of a key wins."""
    w = story_ds.writer()
    with w.transaction() as tx:
        tx.upsert("Story", {"id": "new", "title": "first"})
        tx.upsert("Story", {"id": "new", "title": "second"}, expect_absent=True)
        tx.delete("Story", "s1")
        tx.upsert("Story", {"id": "s1", "title": "replaced"}, expect_token=1)
    got = visible(story_ds, "Story")
    assert got["new"]["title"] == "second"
    assert got["s1"]["title"] == "replaced"


def test_expect_absent(story_ds: LocalDataset) -> None:
    """expect_absent commits only when the key does not exist: a new key, or one deleted
    since; otherwise ConflictError with the key's current token and expected 'absent'."""
    w = story_ds.writer()
    assert w.upsert("Story", {"id": "s2"}, expect_absent=True) == 2
    with pytest.raises(ConflictError) as e:
        w.upsert("Story", {"id": "s2", "title": "again"}, expect_absent=True)
    assert e.value.type_name == "Story" and e.value.key == "s2"
    assert e.value.current == 2 and isinstance(e.value.current, Token)
    assert e.value.expected == "absent"
    assert "s2" in str(e.value)
    w.delete("Story", "s2")
    assert w.upsert("Story", {"id": "s2", "title": "back"}, expect_absent=True) == 4
    assert visible(story_ds, "Story")["s2"]["title"] == "back"


def test_expect_token(story_ds: LocalDataset) -> None:
    """expect_token commits only when the key's last change is that token (a
    compare-and-set); a stale token raises ConflictError carrying the current one (None
    for an absent key), and the record keeps the other writer's value."""
    mine, theirs = story_ds.writer(), nearstate.open(story_ds.path).writer()
    seen = mine.token_of("Story", "s1")
    assert seen == 1
    t2 = theirs.upsert("Story", {"id": "s1", "title": "theirs"}, expect_token=seen)
    with pytest.raises(ConflictError) as e:
        mine.upsert("Story", {"id": "s1", "title": "mine"}, expect_token=seen)
    assert (e.value.current, e.value.expected) == (t2, seen)
    assert "someone else" in str(e.value)
    with pytest.raises(ConflictError):
        mine.delete("Story", "s1", expect_token=seen)
    t3 = mine.upsert("Story", {"id": "s1", "title": "mine"}, expect_token=e.value.current)
    assert t3 > t2
    t4 = mine.delete("Story", "s1", expect_token=t3)
    assert mine.token_of("Story", "s1") is None
    assert t4 == story_ds.log.head()
    assert visible(story_ds, "Story") == {}
    with pytest.raises(ConflictError) as e:
        mine.upsert("Story", {"id": "never"}, expect_token=t3)
    assert e.value.current is None  # an absent key has no current token


def test_token_of(story_ds: LocalDataset) -> None:
    """token_of gives the token of a key's last change, None for an absent key (never
    written, or deleted), and refuses an unknown type (SchemaError)."""
    w = story_ds.writer()
    assert w.token_of("Story", "s1") == Token(1)
    assert w.token_of("Story", "nobody") is None
    t = w.upsert("Story", {"id": "s1", "title": "two"})
    assert w.token_of("Story", "s1") == t
    w.delete("Story", "s1")
    assert w.token_of("Story", "s1") is None
    with pytest.raises(SchemaError, match="'Nope'"):
        w.token_of("Nope", 1)


def test_racing_writers_expect_absent_one_wins(story_ds: LocalDataset) -> None:
    """Writers in several threads (each with its own dataset handle) racing to create one
    key with expect_absent: exactly one commits; every other one gets ConflictError whose
    current token is the winner's."""
    n = 6
    start = threading.Barrier(n)
    won: list[Token] = []
    lost: list[ConflictError] = []
    errors: list[BaseException] = []

    def racer(i: int) -> None:
        w = nearstate.open(story_ds.path).writer()
        try:
            start.wait()
            won.append(w.upsert("Story", {"id": "race", "title": f"by {i}"}, expect_absent=True))
        except ConflictError as e:
            lost.append(e)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(LONG)
        assert not t.is_alive()
    assert errors == []
    assert len(won) == 1 and len(lost) == n - 1
    assert all(e.current == won[0] for e in lost)
    assert story_ds.log.head() == 2


# --- keys that came from versions -------------------------------------------------------------


def test_imported_keys_exist_for_conditions(ds: LocalDataset, tmp_path: Path) -> None:
    """Keys of an import (never written through the Log) exist: expect_absent on one
    conflicts with current token 0, token_of gives Token(0), expect_token=0 replaces it;
    keys the import lacks are absent."""
    src = tmp_path / "items.jsonl"
    src.write_text("".join(json.dumps({"id": i, "name": f"n{i}"}) + "\n" for i in range(3)))
    nearstate.import_jsonl(src, type_name="Item", key="id", into=ds.path)
    w = ds.writer()
    with pytest.raises(ConflictError) as e:
        w.upsert("Item", {"id": 1, "name": "dup"}, expect_absent=True)
    assert e.value.current == 0
    assert w.token_of("Item", 1) == Token(0)
    assert w.token_of("Item", 9) is None
    t = w.upsert("Item", {"id": 1, "name": "replaced"}, expect_token=0)
    assert w.token_of("Item", 1) == t
    assert w.upsert("Item", {"id": 9, "name": "new"}, expect_absent=True) > t
    with pytest.raises(SchemaError, match="'name'"):
        w.upsert("Item", {"id": 10, "name": 10})  # the import's inferred type holds
    got = visible(ds, "Item")
    assert set(got) == {0, 1, 2, 9} and got[1]["name"] == "replaced"


def test_writer_follows_a_schema_change_made_by_an_import(ds: LocalDataset, tmp_path: Path) -> None:
    """When an import gives a type a new field after the Log has stored the dataset's
    schema, writers (existing and new) accept records with that field, as the version
    now has it."""
    src = tmp_path / "items.jsonl"
    src.write_text("".join(json.dumps({"id": i, "name": f"n{i}"}) + "\n" for i in range(3)))
    nearstate.import_jsonl(src, type_name="Item", key="id", into=ds.path)
    w = ds.writer()
    w.upsert("Item", {"id": 5, "name": "through the log"})  # the Log now keeps a schema
    src.write_text(
        "".join(json.dumps({"id": i, "name": f"n{i}", "score": 0.5}) + "\n" for i in range(3))
    )
    nearstate.import_jsonl(src, type_name="Item", key="id", into=ds.path)
    assert "score" in ds.load()["Item"].fields
    for writer in (w, ds.writer()):
        writer.upsert("Item", {"id": 7, "name": "new field", "score": 2.5})
    assert visible(ds, "Item")[7]["score"] == 2.5


def test_published_keys_exist_for_conditions(ds: LocalDataset) -> None:
    """Keys of a version published from a WriteState exist for conditions, and the writer
    checks records against that version's declared schema."""
    ws = WriteState(ITEM)
    for i in (1, 2):
        ws.add("Item", item(i))
    ds.publish(ws)
    w = ds.writer(infer=False)
    with pytest.raises(ConflictError):
        w.upsert("Item", item(2, "dup"), expect_absent=True)
    assert w.token_of("Item", 2) == Token(0)
    with pytest.raises(SchemaError, match="'name'"):
        w.upsert("Item", {"id": 3, "score": 1.0, "tags": []})  # name is required
    w.delete("Item", 2, expect_token=0)
    w.upsert("Item", item(2, "back"), expect_absent=True)
    assert visible(ds, "Item")[2]["name"] == "back"


def test_conditions_hold_across_compaction(ds: LocalDataset) -> None:
    """Once the Log is folded into a version, keys keep their tokens and existence: an
    expect_token of the last write still commits, expect_absent on a compacted key
    conflicts, and a key deleted before compaction is absent."""
    w = ds.writer()
    t1 = w.upsert("Story", {"id": "kept", "title": "one"})
    w.upsert("Story", {"id": "gone"})
    w.delete("Story", "gone")
    ds.compact()
    ds.compact()  # nothing new: no version, nothing changes
    assert w.token_of("Story", "kept") == t1
    assert w.token_of("Story", "gone") is None
    with pytest.raises(ConflictError):
        w.upsert("Story", {"id": "kept"}, expect_absent=True)
    w.upsert("Story", {"id": "gone", "title": "back"}, expect_absent=True)
    t2 = w.upsert("Story", {"id": "kept", "title": "two"}, expect_token=t1)
    ds.compact()
    assert w.token_of("Story", "kept") == t2
    assert visible(ds, "Story")["kept"]["title"] == "two"


# --- keys, references and values ---------------------------------------------------------------


def test_composite_keys(ds: LocalDataset) -> None:
    """A type keyed by two fields takes its key as a tuple (or list) everywhere: lookups,
    token_of, conditions, deletes; a key with the wrong number of parts is refused
    (InputError naming the parts)."""
    w = ds.writer(schema=PAGES)
    t = w.upsert("Page", {"site": "a", "slug": "home", "title": "Home"}, expect_absent=True)
    w.upsert("Page", {"site": "b", "slug": "home", "title": "Other home"})
    assert w.token_of("Page", ("a", "home")) == t == w.token_of("Page", ["a", "home"])
    with pytest.raises(ConflictError) as e:
        w.upsert("Page", {"site": "a", "slug": "home", "title": "x"}, expect_absent=True)
    assert e.value.key == ("a", "home")
    with pytest.raises(InputError, match=r"(?s)Page.*site.*slug"):
        w.delete("Page", "home")
    c = ds.consumer()
    state = c.sync(LONG)
    assert state["Page"].get(("a", "home")).title == "Home"
    assert state["Page"].get(("b", "home")).title == "Other home"
    w.delete("Page", ["a", "home"], expect_token=t)
    state = c.sync(LONG)
    assert ("a", "home") not in state["Page"]
    assert [r.key for r in state["Page"]] == [("b", "home")]


def test_references_to_missing_records_are_refused(ds: LocalDataset) -> None:
    """A record whose reference (alone or in a list) names a key that does not exist, or
    that this same transaction deletes, is refused (SchemaError naming the target and
    key); a target written in the same transaction, or earlier, is fine."""
    w = ds.writer(schema=ARTICLES)
    w.upsert("Person", {"id": 1, "name": "Ann"})
    with pytest.raises(SchemaError, match=r"(?s)Person 9.*does not exist"):
        w.upsert("Article", {"id": "a", "title": "T", "author": 9, "editors": []})
    with pytest.raises(SchemaError, match=r"(?s)Person 8.*does not exist"):
        w.upsert("Article", {"id": "a", "title": "T", "author": 1, "editors": [1, 8]})
    with pytest.raises(SchemaError, match="Person 1"), w.transaction() as tx:
        tx.delete("Person", 1)
        tx.upsert("Article", {"id": "a", "title": "T", "author": 1, "editors": []})
    assert ds.log.head() == 1
    with w.transaction() as tx:
        tx.upsert("Person", {"id": 2, "name": "Bo"})
        tx.upsert("Article", {"id": "a", "title": "T", "author": 2, "editors": [1, 2]})
    w.upsert("Person", {"id": 3, "name": "Cy"})
    w.delete("Person", 3)
    with pytest.raises(SchemaError, match="Person 3"):
        w.upsert("Article", {"id": "b", "title": "T", "author": 3, "editors": []})
    article = ds.consumer().sync(LONG)["Article"].get("a")
    assert article.author.name == "Bo"
    assert [p.name for p in article.editors] == ["Ann", "Bo"]


def _everything(key: str) -> dict[str, Any]:
    return {
        "id": key,
        "when": dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2))),
        "blob": b"\x00\xff\x00 bytes",
        "flag": True,
        "ratio": 0.1 + 0.2,
        "body": "A long text. " * 50,
        "tags": ["b", "a", "b"],
        "labels": {"x", "y"},
        "counts": {"a": 1, "b": -2},
        "by_number": {1: "one", 20: "twenty"},
        "hero": {"url": "https://x/y.jpg", "width": 640},
        "heroes": [{"url": "u1", "width": 1}, {"url": "u2", "width": 2}],
        "maybe": None,
    }


def _expected_everything(key: str) -> dict[str, Any]:
    out = _everything(key)
    out["when"] = out["when"].astimezone(dt.UTC)  # the same instant, read back in UTC
    return out


def test_every_kind_of_value_reaches_consumers_exactly(ds: LocalDataset) -> None:
    """Datetimes (with a time zone), bytes, bools, floats, long text, lists (order and
    repeats kept), sets, dicts with str and int keys, nested records (alone and in lists)
    and nulls come out of a consumer as written: from the Log, and after compaction."""
    w = ds.writer(schema=EVERYTHING)
    t = w.upsert("Everything", _everything("e1"))
    c = ds.consumer()
    got = c.wait_for(t, LONG)["Everything"].get("e1").to_dict()
    assert got == _expected_everything("e1")
    assert got["when"] == _everything("e1")["when"]
    ds.compact()
    c.refresh()
    assert c.version == 1
    assert c.state["Everything"].get("e1").to_dict() == _expected_everything("e1")


def test_naive_datetimes_reach_consumers_exactly(ds: LocalDataset) -> None:
    """A datetime without a time zone comes out of a consumer as the same naive datetime,
    from the Log and after compaction (as it does from a published version)."""
    w = ds.writer(schema=EVENTS)
    at = dt.datetime(2024, 1, 2, 3, 4, 5, 6)
    t = w.upsert("Event", {"id": 1, "at": at})
    c = ds.consumer()
    assert c.wait_for(t, LONG)["Event"].get(1).at == at
    ds.compact()
    c.refresh()
    assert c.version == 1
    assert c.state["Event"].get(1).at == at


def test_an_int_beyond_64_bits_is_refused_with_a_clear_error(tmp_path) -> None:
    ds = nearstate.LocalDataset(tmp_path)
    schema = nearstate.infer_schema([{"id": 1, "n": 2**70}], type_name="T", key="id")
    w = ds.writer(schema=schema)
    with pytest.raises(nearstate.InputError, match="beyond 64 bits"):
        w.upsert("T", {"id": 1, "n": 2**70})
    w.upsert("T", {"id": 1, "n": 5})  # the Writer goes on
    assert ds.log.head() == 1


def test_staged_digests_equal_each_records_own_digest() -> None:
    """WriteState.digests rewrites whole columns (floats checked at once, each nested record
    once): the result must equal digesting every record on its own, for the values whose
    canonical form differs from the value (-0.0, NaN, infinities) and for left-out fields."""
    from nearstate.digest import digest_values, nested_dict
    from nearstate.write_state import WriteState

    specials = [0.5, -0.0, 0.0, float("nan"), float("inf"), float("-inf"), 1e300, 3]
    recs: list[dict[str, Any]] = []
    for i in range(40):
        r: dict[str, Any] = {"id": i, "f": specials[i % len(specials)] if i % 5 else None}
        if i % 3:
            r["pt"] = {"x": specials[(i * 7) % len(specials)], "tag": f"t{i % 4}"}
        if i % 4 == 0:
            r["pt"] = None
        recs.append(r)
    schema = nearstate.infer_schema(recs, type_name="P", key="id")
    assert schema["P"].field("f").type.spec() == "float?"
    ws = WriteState(schema)
    ws.add_many("P", recs)
    got = ws.digests("P")
    tdef = schema["P"]
    want = [digest_values(tdef, r, schema, nested_dict) for r in recs]
    assert [int(d) for d in got] == want
    # and a float column holding only plain values takes the fast path with the same result
    plain = [{"id": i, "f": i / 4, "pt": {"x": 1.0, "tag": "a"}} for i in range(10)]
    ws = WriteState(schema)
    ws.add_many("P", plain)
    assert [int(d) for d in ws.digests("P")] == [
        digest_values(tdef, r, schema, nested_dict) for r in plain
    ]


def test_nested_records_are_shared_only_when_equal_to_the_bit() -> None:
    """Nested records are de-duplicated by value: 0.0 and -0.0 stay apart, NaNs meet."""
    from nearstate.write_state import WriteState

    recs = [
        {"id": 1, "pt": {"x": 0.0}},
        {"id": 2, "pt": {"x": -0.0}},
        {"id": 3, "pt": {"x": float("nan")}},
        {"id": 4, "pt": {"x": float("nan")}},
        {"id": 5, "pt": {"x": 2.5}},
        {"id": 6, "pt": {"x": 2.5}},
    ]
    schema = nearstate.infer_schema(recs, type_name="P", key="id")
    ws = WriteState(schema)
    ws.add_many("P", recs)
    assert ws.count("P.pt") == 4
    plain = [{"id": i, "pt": {"x": 1.5 + i % 3}} for i in range(9)]
    ws = WriteState(schema)
    ws.add_many("P", plain)
    assert ws.count("P.pt") == 3
