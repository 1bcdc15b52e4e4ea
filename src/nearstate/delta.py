"""Deltas: the records one version adds, changes and removes relative to another.

A delta blob has the same format as a snapshot (see :mod:`nearstate.blob`) with
``kind`` ``"delta"`` (from a version to the next) or ``"reverse"`` (back again). It holds,
per keyed type, the records that are new or changed — encoded as a small snapshot of
their own, nested records included, references stored as the target's *key* — and the
keys of the records removed. Its header names the version it applies to
(``from_version``), the version it produces (``version``) and the checksums of both, so
a consumer can refuse a delta that does not start where it stands and check that it
arrived where the producer did.

Deltas are keyed, not ordinal-based: a consumer's ordinals are its own business, which
lets it follow deltas from any snapshot without ever matching the producer's layout.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from . import digest as _digest
from .blob import Blob, encode_blob, parse_blob
from .encoding import Column, ColumnContext, encode_column, open_column
from .errors import DeltaError, FormatError
from .read_state import ReadState
from .schema import Field, Schema, TypeDef, refs_to_keys, schema_from_json
from .write_state import WriteState


def layer_schema(schema: Schema) -> Schema:
    """``schema`` with every reference stored as its target's key (as deltas keep them)."""
    tdefs = []
    for t in schema:
        fields = tuple(
            Field(f.name, refs_to_keys(f.type, schema), f.default, f.omit_null) for f in t.fields
        )
        tdefs.append(TypeDef(t.name, fields, t.key))
    return Schema(tdefs)


def shape(schema: Schema) -> list[Any]:
    """The schema's types and fields, without presentation flags: two versions whose
    shapes are equal can be bridged by a delta."""
    out = []
    for t in schema.to_json()["types"]:
        t = dict(t)
        t["fields"] = [{k: v for k, v in f.items() if k != "omit_null"} for f in t["fields"]]
        out.append(t)
    return out


def encode_delta(
    *,
    kind: str,
    dataset: str,
    schema: Schema,
    from_version: int,
    version: int,
    upserts: WriteState,
    removed: Mapping[str, list[Any]],
    from_checksums: Mapping[str, _digest.Checksum],
    checksums: Mapping[str, _digest.Checksum],
    tags: Mapping[str, str] | None = None,
) -> list[bytes | memoryview]:
    """The pieces of a delta blob (write them to a BlobStore)."""
    types_meta, sections = upserts.build(refs_as_keys=True)
    removed_meta: dict[str, Any] = {}
    for name, keys in removed.items():
        if not keys:
            continue
        tdef = schema[name]
        assert tdef.key is not None
        cols = {}
        for i, kf in enumerate(tdef.key):
            ft = next(f.type for f in tdef.fields if f.name == kf)
            vals = [k if len(tdef.key) == 1 else k[i] for k in keys]
            cols[kf] = encode_column(ft, vals, sections, f"{name}/#removed/{kf}")
        removed_meta[name] = {"count": len(keys), "columns": cols}
    header = {
        "kind": kind,
        "dataset": dataset,
        "version": version,
        "from_version": from_version,
        "created": time.time(),
        "tags": dict(tags or {}),
        "schema": layer_schema(schema).to_json(),
        "state_schema": schema.to_json(),
        "types": types_meta,
        "removed": removed_meta,
        "checksums": {n: _digest.fmt(c) for n, c in checksums.items()},
        "from_checksums": {n: _digest.fmt(c) for n, c in from_checksums.items()},
    }
    return encode_blob(header, sections)


class DeltaLayer:
    """A delta (or reverse delta) blob opened for applying: the upserted records of each
    type as a small read state, and the removed keys."""

    def __init__(self, blob: Blob, name: str = "<delta>", schema: Schema | None = None):
        """``schema``: the reader's own schema, when it differs from the writer's (the
        records are then read with the same evolution rules as a snapshot)."""
        h = blob.header
        self.name = name
        self.blob = blob
        if h.get("kind") not in ("delta", "reverse"):
            raise FormatError(f"{name}: not a delta blob (kind {h.get('kind')!r})")
        try:
            self.kind: str = h["kind"]
            self.version = int(h["version"])
            self.from_version = int(h["from_version"])
            self.schema = schema_from_json(h["state_schema"])
            self.checksums = {n: _digest.parse(c) for n, c in h["checksums"].items()}
            self.from_checksums = {n: _digest.parse(c) for n, c in h["from_checksums"].items()}
            removed_meta = h["removed"]
        except (KeyError, TypeError, ValueError) as e:
            raise FormatError(f"{name}: malformed delta header ({e})") from None
        self.tags: dict[str, str] = dict(h.get("tags", {}))
        self.state = ReadState(blob, schema=None if schema is None else layer_schema(schema),
                               views=False)  # fmt: skip
        self.removed: dict[str, list[Any]] = {}
        ctx = ColumnContext(blob.arrays, lambda t: lambda o: o)
        for tname, meta in removed_meta.items():
            tdef = self.schema[tname]
            assert tdef.key is not None
            cols: list[Column] = []
            for kf in tdef.key:
                ft = next(f.type for f in tdef.fields if f.name == kf)
                cols.append(open_column(ft, meta["columns"][kf], ctx, f"{tname}/#removed/{kf}"))
            n = int(meta["count"])
            if len(cols) == 1:
                g = cols[0].get
                self.removed[tname] = [g(i) for i in range(n)]
            else:
                self.removed[tname] = [tuple(c.get(i) for c in cols) for i in range(n)]

    @property
    def nbytes(self) -> int:
        return self.blob.nbytes

    def upserted(self, type_name: str) -> int:
        return len(self.state[type_name]) if type_name in self.state else 0

    def check_digests(self) -> None:
        """Recompute the digest of every upserted record from its decoded values and compare
        it with the stored one (proves the blob holds what the producer staged)."""
        for tname, ts in self.state.types.items():
            if ts.typedef.key is None or not len(ts):
                continue
            stored = ts._digests
            for o in range(len(ts)):
                rec = ts[o]
                d = _digest.digest_values(
                    self.schema[tname], rec.to_dict(), self.schema, _digest.nested_dict
                )
                if stored is None or int(stored[o]) != d:
                    raise DeltaError(
                        f"{self.name}: {tname} {rec.key!r} does not decode to what was staged"
                    )


def open_delta(buf: Any, name: str, *, verify: bool = True) -> DeltaLayer:
    return DeltaLayer(parse_blob(buf, verify=verify, source=name), name)
