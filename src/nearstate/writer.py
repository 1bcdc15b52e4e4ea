"""The write API: upserts, deletes and atomic transactions with conditions, committed to
the Log; each commit returns a :class:`Token`, the position of its Log entry.

A token is returned only once the transaction is durable in the Log. Every consumer
following the Log then shows it (see :meth:`nearstate.Consumer.wait_for`), long before the
Producer folds the Log into the next version.

Records are checked against the dataset's schema before anything is written: a type the
schema does not have (when inference is off), a field of the wrong type or not in the type,
a missing key or a record over ``max_record_bytes`` raise an error naming it, and nothing
of the transaction is committed. The first write of a new type infers the type from that
record (key ``id``; every other field optional); declare a schema to choose otherwise.

Conditions (``expect_absent``, ``expect_token``) are checked with the Log held at its head,
against the dataset as it stands before the transaction; a failed one raises
:class:`~nearstate.errors.ConflictError` carrying the key's current token.
"""

from __future__ import annotations

import datetime as _dt
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from .errors import ConflictError, InputError, LogError, SchemaError
from .infer import infer_schema
from .ports import Append, Log, LogView
from .schema import FieldType, Schema, TypeDef, per_schema
from .write_state import WriteState

LOG_POSITION = "log_position"  #: the version tag naming the Log position a version includes
MAX_RECORD_BYTES = 1 << 20


class Token(int):
    """A position in the Log. Tokens of one dataset are ordered: a later commit has a
    larger token. Pass one to :meth:`Consumer.wait_for` to read your own write."""

    def __repr__(self) -> str:
        return f"Token({int(self)})"


def key_id(key: Any) -> str:
    """A key's canonical text, as the Log keeps it (composite keys as JSON arrays)."""
    return msgspec.json.encode(key).decode()


def version_position(state: Any) -> int:
    """The Log position a version includes (0 for a version made without the Log)."""
    if state is None:
        return 0
    return int(state.tags.get(LOG_POSITION, 0))


# -- the entry format ----------------------------------------------------------------------
# msgpack: [time_ns, [[type, key, record or None (a delete)], ...], schema_changed]


@dataclass(frozen=True, slots=True)
class Entry:
    """One committed transaction as read back from the Log."""

    position: int
    time_ns: int
    mutations: list[tuple[str, Any, dict[str, Any] | None]]
    schema_changed: bool

    @property
    def token(self) -> Token:
        return Token(self.position)


def encode_entry(mutations: list[tuple[str, Any, dict[str, Any] | msgspec.Raw | None]],
                 schema_changed: bool) -> bytes:  # fmt: skip
    """The entry's bytes (a record given as msgspec.Raw is spliced in as it is)."""
    return msgspec.msgpack.encode([time.time_ns(), mutations, schema_changed])


# an entry with its records left as msgpack (a reader decodes a record when it reads it)
_RAW_ENTRY = msgspec.msgpack.Decoder(tuple[int, list[tuple[str, Any, msgspec.Raw]], bool])
_NIL = msgspec.Raw(b"\xc0")  # a delete's record


def decode_entry(position: int, body: bytes, schema: Schema | None = None, *,
                 raw: bool = False) -> Entry:  # fmt: skip
    """Decode an entry; composite keys become tuples again, and (given the schema) keys of
    datetime fields datetimes again (msgpack keeps a naive datetime as ISO text).

    ``raw``: each record stays a :class:`msgspec.Raw` (its msgpack bytes, a view of
    ``body``), decoded only when read (a delete's is None as always): a reader shows a
    commit without building the Python objects of records it may never read. A record
    that is not valid msgpack is then found when it is decoded."""
    try:
        if raw:
            t, muts, changed = _RAW_ENTRY.decode(body)
        else:
            t, muts, changed = msgspec.msgpack.decode(body)
        out = []
        dt_keys = _datetime_keys(schema, ()) if schema is not None else {}
        for type_name, key, rec in muts:
            if isinstance(key, list):
                key = tuple(key)
            kinds = dt_keys.get(type_name)
            if kinds is not None:
                key = _datetime_key(kinds, key)
            if raw and rec == _NIL:
                rec = None
            out.append((type_name, key, rec))
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError, TypeError) as e:
        raise LogError(f"log entry {position} is malformed: {e}") from e
    return Entry(position, int(t), out, bool(changed))


@per_schema
def _datetime_keys(schema: Schema, _: frozenset[str]) -> dict[str, tuple[str, ...]]:
    """Per type whose key has a datetime field, the kinds of its key fields (asked for
    every entry a reader decodes: worked out once per schema)."""
    out = {}
    for t in schema:
        if t.key is not None:
            kinds = tuple(t.field(k).type.kind for k in t.key)
            if "datetime" in kinds:
                out[t.name] = kinds
    return out


def _datetime_key(kinds: tuple[str, ...], key: Any) -> Any:
    parts = list(key) if len(kinds) > 1 else [key]
    parts = [
        _dt.datetime.fromisoformat(p) if k == "datetime" and isinstance(p, str) else p
        for k, p in zip(kinds, parts, strict=True)
    ]
    return tuple(parts) if len(kinds) > 1 else parts[0]


# -- transactions --------------------------------------------------------------------------


@dataclass
class _Op:
    type_name: str
    record: Mapping[str, Any] | None  # None: delete
    key: Any = None
    expect_absent: bool = False
    expect_token: int | None = None


class Transaction:
    """Mutations that commit together or not at all. Use as a context manager: it commits
    when the block ends without an exception (then :attr:`token` is set) and discards
    everything otherwise."""

    def __init__(self, writer: Writer):
        self._writer = writer
        self._ops: list[_Op] = []
        self.token: Token | None = None

    def upsert(
        self, type_name: str, record: Mapping[str, Any], *, expect_absent: bool = False,
        expect_token: int | None = None,
    ) -> None:  # fmt: skip
        """Insert or replace a record. ``expect_absent``: only if its key does not exist;
        ``expect_token``: only if the key's last change is the commit with that token."""
        self._check_open()
        _check_record(type_name, record)
        self._ops.append(_Op(type_name, record, None, expect_absent, expect_token))

    def delete(self, type_name: str, key: Any, *, expect_token: int | None = None) -> None:
        """Delete a record by key (deleting an absent key changes nothing)."""
        self._check_open()
        self._ops.append(_Op(type_name, None, key, False, expect_token))

    def __len__(self) -> int:
        return len(self._ops)

    def _check_open(self) -> None:
        if self.token is not None:
            raise InputError("this transaction is already committed")

    def commit(self) -> Token:
        """Commit now (durable when it returns); raises ConflictError or a schema error
        and commits nothing when a condition or a record is wrong."""
        self._check_open()
        self.token = self._writer._commit(self._ops)
        return self.token

    def __enter__(self) -> Transaction:
        return self

    def __exit__(self, et: type | None, *exc: object) -> None:
        if et is None and self.token is None:
            self.commit()


class Writer:
    """Commits upserts, deletes and transactions to a dataset's Log.

    ``schema``: types to declare (merged with those the dataset has; a conflicting
    definition is a SchemaError). ``infer``: infer a type the schema lacks from its first
    record. ``versions``: returns the dataset's current version (used to see keys that were
    never written through the Log: imported ones). Thread-safe; safe with other writers in
    other processes.
    """

    def __init__(
        self,
        log: Log,
        *,
        schema: Schema | None = None,
        infer: bool = True,
        versions: Callable[[], Any] | None = None,
        max_record_bytes: int = MAX_RECORD_BYTES,
    ):
        self.log = log
        self.declared = schema
        self.infer = infer
        self.versions = versions
        self.max_record_bytes = max_record_bytes
        self._parsed: dict[tuple[str | None, int], tuple[Any, Schema | None]] = {}
        self._seen_json: str | None = None  # the Log's schema as this writer's last commit saw it
        self._json: dict[int, tuple[Schema, str]] = {}
        self._refful: dict[int, tuple[Schema, bool]] = {}

    def __repr__(self) -> str:
        return f"Writer({self.log!r})"

    # -- one-mutation commits ------------------------------------------------------------

    def upsert(
        self, type_name: str, record: Mapping[str, Any], *, expect_absent: bool = False,
        expect_token: int | None = None,
    ) -> Token:  # fmt: skip
        """Insert or replace one record; returns its token once durable."""
        _check_record(type_name, record)
        return self._commit([_Op(type_name, record, None, expect_absent, expect_token)])

    def delete(self, type_name: str, key: Any, *, expect_token: int | None = None) -> Token:
        """Delete one record by key; returns the token once durable."""
        return self._commit([_Op(type_name, None, key, False, expect_token)])

    def transaction(self) -> Transaction:
        """A transaction: ``with writer.transaction() as tx: tx.upsert(...)``."""
        return Transaction(self)

    def token_of(self, type_name: str, key: Any) -> Token | None:
        """The token of the key's last change through the Log (Token(0): the key exists but
        was never changed through the Log; None: the key does not exist). A read: it never
        holds the Log for a write (``Log.last``)."""
        schema = self._schema_from(self.log.schema())
        tdef = _typedef(schema, type_name)
        k = _normal_key(schema, tdef, key)
        pos, exists = self._current(self.log, type_name, k)
        return Token(pos) if exists else None

    @property
    def schema(self) -> Schema | None:
        """The dataset's schema as the Log has it now (with what this writer declared)."""
        return self._schema_from(self.log.schema())

    # -- committing ----------------------------------------------------------------------

    def _commit(self, ops: list[_Op]) -> Token:
        if not ops:
            raise InputError("an empty transaction has nothing to commit")
        # check the records against the schema as it is now, outside the Log's lock;
        # inside, the work is redone only if another writer changed the schema meanwhile
        # a guess, checked by prepare at the head: the schema the last commit saw (no read)
        pre_json = self._seen_json if self._seen_json is not None else self.log.schema(
            fresh=False)  # fmt: skip
        pre = self._normalise(ops, self._schema_from(pre_json))

        def prepare(view: LogView) -> Append:
            sj = view.schema()
            muts, keys, schema, packed = (
                pre if sj == pre_json else self._normalise(ops, self._schema_from(sj))
            )
            self._check_conditions(view, ops, keys, schema, muts)
            new_json = self._json_of(schema)
            changed = new_json != sj
            self._seen_json = new_json
            # each record as encoded once for its size check, spliced in as it is
            body = encode_entry(
                [(t, k, p) for (t, k, _), p in zip(muts, packed, strict=True)], changed
            )
            return Append(
                body,
                [(t, key_id(k), rec is not None) for (t, k, rec) in muts],
                msgspec.json.decode(new_json) if changed else None,
            )

        return Token(self.log.append(prepare))

    def _schema_from(self, sj: str | None) -> Schema | None:
        """The schema to write with: the Log's, where the current version defines a type
        differently (an import changed it) the version's, plus what was declared."""
        state = self.versions() if self.versions is not None else None
        vschema = state.stored_schema if state is not None else None
        ck = (sj, id(vschema))
        hit = self._parsed.get(ck)
        if hit is not None and hit[0] is vschema:
            return hit[1]
        schema = Schema.from_json(msgspec.json.decode(sj)) if sj is not None else None
        if vschema is not None:
            schema = vschema if schema is None else vschema.extended(schema)
        if self.declared is not None:
            schema = self.declared if schema is None else _merge(schema, self.declared)
        if len(self._parsed) > 8:
            self._parsed.clear()
        self._parsed[ck] = (vschema, schema)
        return schema

    def _normalise(self, ops: list[_Op], schema: Schema | None):
        """Each op as ``(type, key, plain record | None)``, each op's key, and the schema
        used (with any types inferred from these records)."""
        muts: list[tuple[str, Any, dict[str, Any] | None]] = []
        packed: list[msgspec.Raw | None] = []  # each record's msgpack (None: a delete)
        keys: list[tuple[str, Any]] = []
        ws: WriteState | None = None
        for op in ops:
            name = op.type_name
            if not isinstance(name, str) or not name:
                raise InputError(f"a type name must be a non-empty string, not {name!r}")
            tdef = schema.types.get(name) if schema is not None else None
            if tdef is None:
                if op.record is None or not self.infer:
                    known = ", ".join(sorted(schema.types)) if schema is not None else "none"
                    raise SchemaError(f"unknown type {name!r} (the dataset has: {known})")
                schema = _with_inferred(schema, name, op.record)
                tdef = schema[name]
            if tdef.key is None:
                raise SchemaError(f"type {name!r} has no key; it is only used nested")
            if op.record is None:
                key = _normal_key(schema, tdef, op.key)
                muts.append((name, key, None))
                packed.append(None)
            else:
                if not isinstance(op.record, Mapping):
                    raise InputError(
                        f"{name}: a record must be a mapping, not {type(op.record).__name__}"
                    )
                # one WriteState for the whole transaction (building one per record cost
                # most of a bulk commit); a fresh one for a key staged twice
                if ws is None or ws.schema is not schema:
                    ws = WriteState(schema)
                try:
                    ordinal = ws.add(name, op.record)
                except SchemaError as e:
                    fresh = WriteState(schema)
                    try:
                        ordinal = fresh.add(name, op.record)
                    except SchemaError:
                        raise SchemaError(f"{e} (type {name!r} has {_fields(tdef)})") from None
                    ws = fresh  # the record was fine: its key was staged already
                rec = ws.staged_record(name, ordinal)
                key = next(reversed(ws.staged_keys(name)))
                try:
                    body = msgspec.msgpack.encode(rec)
                except OverflowError:
                    raise InputError(
                        f"{name} {key!r}: an int beyond 64 bits cannot go through the Log "
                        "(store it as a string, or publish it with a Producer cycle)"
                    ) from None
                if len(body) > self.max_record_bytes:
                    raise InputError(
                        f"{name} {key!r}: the record is {len(body)} bytes, over the limit of "
                        f"{self.max_record_bytes} bytes (max_record_bytes)"
                    )
                muts.append((name, key, rec))
                packed.append(msgspec.Raw(body))
            keys.append((name, key))
        assert schema is not None
        return muts, keys, schema, packed

    def _json_of(self, schema: Schema) -> str:
        j = self._json.get(id(schema))
        if j is None or j[0] is not schema:
            if len(self._json) > 8:
                self._json.clear()
            j = self._json[id(schema)] = (schema, json.dumps(schema.to_json(), sort_keys=True))
        return j[1]

    def _current(self, view: LogView | Log, type_name: str, key: Any) -> tuple[int, bool]:
        """(token of the key's last change, whether it exists) before this transaction (or
        now, asked of the Log itself)."""
        state = self.versions() if self.versions is not None else None
        vpos = version_position(state)
        row = view.last(type_name, key_id(key))
        if row is not None and row[0] > vpos:
            return row
        exists = state is not None and type_name in state and key in state[type_name]
        return (row[0] if row is not None else 0), exists

    def _check_conditions(self, view: LogView, ops: list[_Op], keys, schema: Schema,
                          muts) -> None:  # fmt: skip
        for op, (name, key) in zip(ops, keys, strict=True):
            if not op.expect_absent and op.expect_token is None:
                continue
            pos, exists = self._current(view, name, key)
            if op.expect_absent and exists:
                raise ConflictError(
                    f"{name} {key!r} already exists (last changed at token {pos}); "
                    "expected it absent",
                    type_name=name, key=key, current=Token(pos), expected="absent",
                )  # fmt: skip
            if op.expect_token is not None and pos != int(op.expect_token):
                raise ConflictError(
                    f"{name} {key!r} was last changed at token {pos}, not "
                    f"{int(op.expect_token)}; someone else changed it",
                    type_name=name, key=key, current=Token(pos) if exists else None,
                    expected=op.expect_token,
                )  # fmt: skip
        self._check_refs(view, schema, muts)

    def _check_refs(self, view: LogView, schema: Schema, muts) -> None:
        c = self._refful.get(id(schema))
        if c is None or c[0] is not schema:
            has = any(f.type.kind == "ref" or "ref<" in f.type.spec() for t in schema
                      for f in t.fields)  # fmt: skip
            c = self._refful[id(schema)] = (schema, has)
        if not c[1]:
            return  # no type holds a reference: nothing to look up
        written = {(t, k): rec is not None for t, k, rec in muts}
        for t, k, rec in muts:
            if rec is None:
                continue
            for target, ref in _refs(schema, schema[t], rec):
                here = written.get((target, ref))
                if here is None:
                    here = self._current(view, target, ref)[1]
                if not here:
                    raise SchemaError(f"{t} {k!r} refers to {target} {ref!r}, which does not "
                                      "exist")  # fmt: skip


def _check_record(type_name: str, record: Any) -> None:
    if not isinstance(record, Mapping):
        raise InputError(f"{type_name}: a record must be a mapping, not {type(record).__name__}")


def _typedef(schema: Schema | None, name: str) -> TypeDef:
    if schema is None or name not in schema:
        known = ", ".join(sorted(schema.types)) if schema is not None else "none"
        raise SchemaError(f"unknown type {name!r} (the dataset has: {known})")
    return schema[name]


def _normal_key(schema: Schema, tdef: TypeDef, key: Any) -> Any:
    assert tdef.key is not None
    if len(tdef.key) == 1:
        parts = [key]
    elif isinstance(key, (tuple, list)) and len(key) == len(tdef.key):
        parts = list(key)
    else:
        raise InputError(f"{tdef.name}: a key has {len(tdef.key)} parts {list(tdef.key)}, "
                         f"got {key!r}")  # fmt: skip
    ws = WriteState(schema)
    out = [
        ws._convert(tdef.field(f).type, v, f"{tdef.name} key {f!r}")
        for f, v in zip(tdef.key, parts, strict=True)
    ]
    return out[0] if len(out) == 1 else tuple(out)


def _with_inferred(schema: Schema | None, name: str, record: Mapping[str, Any]) -> Schema:
    if not isinstance(record, Mapping):
        raise InputError(f"{name}: a record must be a mapping, not {type(record).__name__}")
    if "id" not in record:
        raise SchemaError(
            f"cannot infer type {name!r}: its first record has no 'id' field to use as the "
            "key; declare the type (writer(schema=...))"
        )
    try:
        inferred = infer_schema([record], name, "id")
    except InputError as e:
        raise SchemaError(f"cannot infer type {name!r} from its first record: {e}") from None
    # one record says little: every field but the key may be left out or null later
    tdefs = []
    for t in inferred:
        keyset = set(t.key or ())
        fields = tuple(
            f if f.name in keyset or f.type.nullable
            else type(f)(f.name, f.type.with_nullable(), f.default, f.omit_null)
            for f in t.fields
        )  # fmt: skip
        tdefs.append(TypeDef(t.name, fields, t.key))
    inferred = Schema(tdefs)
    return inferred if schema is None else _merge(schema, inferred)


def _merge(schema: Schema, other: Schema) -> Schema:
    """``schema`` plus the types of ``other`` it lacks; a type both define must agree."""
    for t in other:
        mine = schema.types.get(t.name)
        if mine is not None and _shape(mine) != _shape(t):
            raise SchemaError(
                f"type {t.name!r} is declared differently from the dataset's: "
                f"{_fields(t)} vs {_fields(mine)}"
            )
    return schema.extended(other)


def _shape(t: TypeDef) -> dict[str, Any]:
    j = t.to_json()
    j["fields"] = [{k: v for k, v in f.items() if k != "omit_null"} for f in j["fields"]]
    return j


def _fields(t: TypeDef) -> str:
    return "{" + ", ".join(f"{f.name}: {f.type.spec()}" for f in t.fields) + "}"


def _refs(schema: Schema, tdef: TypeDef, rec: Mapping[str, Any]):
    """(target type, key) of every reference in a plain record, nested ones included."""
    for f in tdef.fields:
        v = rec.get(f.name)
        if v is not None:
            yield from _refs_in(schema, f.type, v)


def _refs_in(schema: Schema, ft: FieldType, v: Any):
    if v is None:
        return
    k = ft.kind
    if k == "ref":
        assert ft.target is not None
        yield ft.target, tuple(v) if isinstance(v, list) else v
    elif k in ("list", "set"):
        assert ft.item is not None
        for x in v:
            yield from _refs_in(schema, ft.item, x)
    elif k == "dict":
        assert ft.item is not None
        for x in v.values():
            yield from _refs_in(schema, ft.item, x)
    elif k == "record":
        assert ft.target is not None
        yield from _refs(schema, schema[ft.target], v)
