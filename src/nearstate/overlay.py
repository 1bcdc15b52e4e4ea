"""Committed Log entries shown over a version, before the Producer folds them into one.

A consumer keeps a :class:`LogTail`: every key changed by an entry past its version's Log
position, with the last record written (or None for a delete) and the position of that
change. To show a batch of new entries it encodes their net changes as a small delta layer
(the same format as a Producer's delta, references kept as keys) and applies it over the
state it shows, so lookups, iteration, references and indexes see the writes exactly as
they will read once a version includes them. When a version that includes some entries
arrives, the tail drops them and the remaining ones are laid over the new version.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .blob import encode_blob, parse_blob
from .delta import DeltaLayer, encode_delta
from .layered import Changes, LayeredState, apply_delta
from .read_state import ReadState
from .schema import Schema
from .write_state import WriteState
from .writer import Entry

State = ReadState | LayeredState
Net = dict[str, dict[Any, dict[str, Any] | None]]  # type -> key -> record (None: deleted)


class LogTail:
    """The keys changed by Log entries after position ``after`` (the version's)."""

    def __init__(self, after: int):
        self.after = after
        self.position = after  # the last entry added
        self._changes: dict[str, dict[Any, tuple[int, dict[str, Any] | None]]] = {}

    def __len__(self) -> int:
        return sum(len(m) for m in self._changes.values())

    def add(self, entries: Iterable[Entry]) -> Net:
        """Add entries (in Log order); return their net changes."""
        net: Net = {}
        for e in entries:
            if e.position <= self.position:
                continue
            for type_name, key, rec in e.mutations:
                self._changes.setdefault(type_name, {})[key] = (e.position, rec)
                net.setdefault(type_name, {})[key] = rec
            self.position = e.position
        return net

    def since(self, after: int) -> LogTail:
        """The entries after ``after`` only (those up to it are in a version now)."""
        out = LogTail(max(after, self.after))
        out.position = max(self.position, out.after)
        for t, m in self._changes.items():
            kept = {k: v for k, v in m.items() if v[0] > out.after}
            if kept:
                out._changes[t] = kept
        return out

    def net(self) -> Net:
        return {t: {k: rec for k, (_, rec) in m.items()} for t, m in self._changes.items()}


def lay_over(state: State, net: Net, *, name: str) -> tuple[State, dict[str, Changes]]:
    """``state`` with ``net`` applied as one layer (same version number), and the keys that
    changed. Deleting a key the state does not have changes nothing."""
    # the layer holds only the types changed (and the nested and referenced types their
    # fields need): a layer of the whole schema cost 20 ms a commit on a schema of ten
    # types with nested records, most of it encoding and opening empty columns
    schema = _needed(state.schema, [t for t in net if t in state])
    ws = WriteState(schema)
    removed: dict[str, list[Any]] = {}
    for type_name, changes in net.items():
        if type_name not in state:
            continue  # the caller reloads with the Log's types first; never silently here
        ts = state[type_name]
        gone = [k for k, rec in changes.items() if rec is None and k in ts]
        if gone:
            removed[type_name] = gone
        ups = [rec for rec in changes.values() if rec is not None]
        if ups:
            ws.add_many(type_name, ups)
    if not removed and not len(ws):
        return state, {}
    pieces = encode_delta(
        kind="delta", dataset=state.dataset, schema=schema, from_version=state.version,
        version=state.version, upserts=ws, removed=removed, from_checksums={}, checksums={},
    )  # fmt: skip
    layer = DeltaLayer(parse_blob(b"".join(pieces), verify=False, source=name), name)
    return apply_delta(state, layer, trusted=True)


def _needed(schema: Schema, names: Iterable[str]) -> Schema:
    """``schema`` cut to ``names`` and every type their fields nest or refer to."""
    want: list[str] = []
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in want or name not in schema.types:
            continue
        want.append(name)
        for f in schema[name].fields:
            todo.extend(_targets(f.type))
    if len(want) == len(schema.types):
        return schema
    return Schema([t for t in schema if t.name in want])


def _targets(ft: Any) -> list[str]:
    out = [ft.target] if ft.kind in ("record", "ref") and ft.target else []
    for sub in (ft.item, ft.key):
        if sub is not None:
            out.extend(_targets(sub))
    return out


def empty_state(schema: Schema, dataset: str) -> ReadState:
    """Version 0: no records, the given types (what a consumer shows before any version)."""
    types_meta, sections = WriteState(schema).build()
    header = {"kind": "snapshot", "dataset": dataset, "version": 0, "created": 0.0,
              "tags": {}, "schema": schema.to_json(), "types": types_meta}  # fmt: skip
    return ReadState(parse_blob(b"".join(encode_blob(header, sections)), source="<empty>"))


def with_types(schema: Schema | None, log_schema: Schema | None) -> Schema | None:
    """``schema`` plus the types only the Log has."""
    return log_schema if schema is None else schema.extended(log_schema)
