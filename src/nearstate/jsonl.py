"""JSON Lines import and export.

:func:`import_jsonl` reads a file, infers (or checks) the schema, stages every record and
publishes one new version. Any malformed line — bad JSON, a missing or duplicate key, a
value contradicting the field's type, objects or arrays nested more than
:data:`~nearstate.schema.MAX_DEPTH` levels deep — raises :class:`InputError` naming the
line and the field, and nothing is published.
"""

from __future__ import annotations

import dataclasses
import gc
import itertools
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import msgspec
import numpy as np

from .dataset import LocalDataset
from .errors import InputError
from .infer import SchemaInferrer
from .layered import Changes
from .merge import DuplicateKeyError, join_parts, merged_snapshot
from .read_state import ReadState, Record
from .schema import MAX_DEPTH, Schema, TypeDef, too_deep
from .write_state import RowError, WriteState

#: progress(phase, done, total): phases "read" (bytes), "stage" (records), "write"
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class ImportResult:
    version: int
    records: int
    blob_bytes: int  #: bytes of the blobs written (snapshot, delta, reverse delta)
    seconds: float
    schema: Schema
    #: keys added, modified and removed per type (None: first version or new schema)
    changes: dict[str, Changes] | None = None
    changed: bool = True  #: False when the file matched the announced version exactly
    snapshot: bool = True  #: whether a snapshot was written (else only deltas)


def read_jsonl(path: str | Path, progress: Progress | None = None) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, value)`` for each non-blank line; bad JSON raises InputError.

    Reads in chunks of whole lines and decodes each chunk in one call; a chunk that fails
    (or holds blank lines) is decoded line by line to name the exact line.
    """
    dec = msgspec.json.Decoder()
    total = os.path.getsize(path)
    done = 0
    line_no = 1
    tail = b""
    with open(path, "rb") as f:
        while True:
            block = f.read(CHUNK)
            if not block:
                break
            block = tail + block
            cut = block.rfind(b"\n") + 1
            if cut == 0:
                tail = block
                continue
            chunk, tail = block[:cut], block[cut:]
            yield from _decode_chunk(dec, chunk, line_no)
            line_no += chunk.count(b"\n")
            done += len(chunk)
            if progress is not None:
                progress("read", done, total)
    if tail:
        yield from _decode_chunk(dec, tail, line_no)
    if progress is not None:
        progress("read", total, total)


CHUNK = 16 << 20


def _decode_chunk(dec: msgspec.json.Decoder, chunk: bytes, first_line: int):
    lines = chunk.splitlines()
    try:
        values = dec.decode_lines(chunk)
    except (msgspec.DecodeError, RecursionError):
        values = None
    if values is not None and len(values) == len(lines):
        yield from zip(range(first_line, first_line + len(lines)), values, strict=True)
        return
    for n, line in enumerate(lines, first_line):
        if not line.strip():
            continue
        try:
            yield n, dec.decode(line)
        except msgspec.DecodeError as e:
            raise InputError(f"bad JSON: {e}", line=n) from None
        except RecursionError:
            # nested too deeply even to decode (around a thousand levels)
            field, levels = _too_deep_at(line)
            raise InputError(too_deep(levels), line=n, field=field) from None


def _too_deep_at(line: bytes) -> tuple[str | None, int]:
    """Where JSON text first nests more than MAX_DEPTH levels: the path of that object or
    array, named as inference names fields (``a.b``, ``a[]``), and its level. Scans the
    bytes without recursion; ``(None, MAX_DEPTH + 1)`` if it cannot tell."""
    paths: list[str] = []  # per open object or array, its path
    objects: list[bool] = []  # per open object or array, whether it is an object
    key = ""  # the last key read in the innermost object
    want_key = False
    i, n = 0, len(line)
    while i < n:
        c = line[i]
        if c == 0x22:  # a string: skip it, keeping it if it is a key
            j = i + 1
            while True:
                j = line.find(b'"', j)
                if j < 0:
                    return None, MAX_DEPTH + 1
                k = j
                while line[k - 1] == 0x5C:  # backslash
                    k -= 1
                if (j - k) % 2 == 0:
                    break
                j += 1
            if want_key:
                try:
                    key = msgspec.json.decode(line[i : j + 1])
                except msgspec.DecodeError:
                    key = line[i + 1 : j].decode("utf-8", "replace")
                want_key = False
            i = j + 1
            continue
        if c == 0x7B or c == 0x5B:  # { or [
            if not paths:
                path = ""
            elif objects[-1]:
                path = f"{paths[-1]}.{key}" if paths[-1] else key
            else:
                path = paths[-1] + "[]"
            paths.append(path)
            objects.append(c == 0x7B)
            if len(paths) - 1 > MAX_DEPTH:
                return path, len(paths) - 1
            want_key = c == 0x7B
        elif c == 0x7D or c == 0x5D:  # } or ]
            if paths:
                paths.pop()
                objects.pop()
            want_key = False
        elif c == 0x2C:  # ,
            want_key = bool(objects) and objects[-1]
        i += 1
    return None, MAX_DEPTH + 1


def import_jsonl(
    path: str | Path,
    *,
    type_name: str,
    key: str | tuple[str, ...],
    into: str | Path,
    progress: Progress | None = None,
    tags: dict[str, str] | None = None,
) -> ImportResult:
    """Import a JSON Lines file as type ``type_name`` into the dataset directory ``into``.

    Other types already in the dataset are carried over unchanged; this type is replaced.
    """
    # millions of freshly decoded dicts would make the cyclic GC rescan them again and
    # again (import time grows faster than the file); none of them form cycles
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _import(path, type_name, key, into, progress, tags)
    finally:
        if was_enabled:
            gc.enable()


def _import(
    path: str | Path,
    type_name: str,
    key: str | tuple[str, ...],
    into: str | Path,
    progress: Progress | None,
    tags: dict[str, str] | None,
) -> ImportResult:
    t0 = time.perf_counter()
    keys = (key,) if isinstance(key, str) else tuple(key)
    ds = LocalDataset(into)
    if ds.log.head():
        # fold committed writes into a version first, so the types this file does not
        # replace keep them (writes committed from here on are laid over the import)
        ds.compact()
    prev = ds.load() if ds.latest_version() is not None else None
    if prev is not None and _referred_to(prev.stored_schema, type_name):
        # other types refer to this one: their references are re-bound record by record
        return _import_whole(path, type_name, keys, ds, prev, progress, tags, t0)
    try:
        return _import_streamed(path, type_name, keys, ds, prev, progress, tags, t0, None)
    except _Resample:
        # a record past the sample needs a wider schema: infer from every record (this
        # names the line of a genuine contradiction), then read the file again
        inf = SchemaInferrer(type_name, keys)
        for n, rec in read_jsonl(path, None):
            inf.observe(rec, line=n)
        return _import_streamed(path, type_name, keys, ds, prev, progress, tags, t0,
                                inf.schema())  # fmt: skip


#: records staged and encoded at a time by a streamed import; the parts are joined by
#: columns at the end (nearstate.merge), so memory follows the encoded records
PART_RECORDS = 200_000
_BATCH = 50_000


def _import_streamed(
    path: str | Path,
    type_name: str,
    keys: tuple[str, ...],
    ds: LocalDataset,
    prev: ReadState | None,
    progress: Progress | None,
    tags: dict[str, str] | None,
    t0: float,
    schema: Schema | None,
) -> ImportResult:
    """Stage a part of the file at a time and encode it with the tables and dictionaries
    the first part chose; join the parts by columns; publish the result as a snapshot."""
    records = read_jsonl(path, progress)
    sampled = schema is None
    if schema is None:
        head = list(itertools.islice(records, INFER_SAMPLE))
        inf = SchemaInferrer(type_name, keys)
        for n, rec in head:
            inf.observe(rec, line=n)
        if not head:
            raise InputError(f"{path} holds no records")
        schema = inf.schema()
        records = itertools.chain(head, records)
    if prev is not None:
        schema = _carry_schema(prev.stored_schema, type_name).merged(schema)
    own = Schema([t for t in schema if _own(t.name, type_name)])
    learned: dict[str, Any] = {}
    parts: list[tuple[dict[str, Any], Any]] = []
    part_lines: list[np.ndarray] = []
    part_left_out: list[dict[str, set[str]]] = []
    absent: dict[str, set[str]] = {}  # per type: fields some record left out
    nulls: dict[str, set[str]] = {}  # per type: fields some record set to null
    ws = WriteState(own)
    lines: list[int] = []  # of the part being staged
    batch: list[Any] = []
    count = 0

    def stage() -> None:
        lo = len(lines) - len(batch)
        try:
            ws.add_many(type_name, batch)
        except RowError as e:
            n = lines[lo + e.index]
            if "duplicate key" in str(e):
                rec = batch[e.index]
                k = tuple(rec[x] for x in keys)
                earlier = [j for j, r in enumerate(batch[: e.index])
                           if tuple(r[x] for x in keys) == k]  # fmt: skip
                if earlier:  # the batch was not staged: its first copy is in it
                    first = lines[lo + earlier[0]]
                else:
                    first = lines[ws.staged_keys(type_name)[k[0] if len(k) == 1 else k]]
                raise InputError(
                    f"duplicate key {k[0] if len(k) == 1 else k!r} (first on line {first})",
                    line=n, field=",".join(keys),
                ) from None  # fmt: skip
            if sampled and count - len(batch) + e.index >= INFER_SAMPLE:
                raise _Resample from None
            raise InputError(str(e), line=n) from None
        batch.clear()

    def finish_part() -> None:
        nonlocal ws, lines
        parts.append(ws.build(learned=learned))
        part_lines.append(np.array(lines, dtype=np.int64))
        for t in own:
            a, nl = ws.presence(t.name)
            absent.setdefault(t.name, set()).update(a)
            nulls.setdefault(t.name, set()).update(nl)
        part_left_out.append({t.name: (lambda p: p[0] - p[1])(ws.presence(t.name))
                              for t in own})  # fmt: skip
        ws = WriteState(own)
        lines = []

    for n, rec in records:
        batch.append(rec)
        lines.append(n)
        count += 1
        if len(batch) >= _BATCH:
            stage()
            if len(lines) >= PART_RECORDS:
                finish_part()
    if batch:
        stage()
    if lines:
        finish_part()
    if not count:
        raise InputError(f"{path} holds no records")
    if progress is not None:
        progress("write", 0, 1)
    final = _with_presence(schema, absent, nulls)
    try:
        types_meta, sections = join_parts(Schema([t for t in final if _own(t.name, type_name)]),
                                          parts, part_left_out)  # fmt: skip
    except DuplicateKeyError as e:
        all_lines = np.concatenate(part_lines)
        first, again = (int(all_lines[r]) for r in e.rows)
        raise InputError(f"duplicate key (first on line {first})", line=again,
                         field=",".join(keys)) from None  # fmt: skip
    parts.clear()  # the joined sections hold what is still needed
    if prev is not None:
        _carry_types(prev, type_name, types_meta, sections)
    with ds.producer(snapshot_every=10, retain_snapshots=None) as p:
        r = p.run_built(final, types_meta, sections, tags=tags)
        v = r.version if r.version is not None else p.version
    if progress is not None:
        progress("write", 1, 1)
    assert v is not None
    return ImportResult(
        v, count, sum(r.blob_bytes.values()), time.perf_counter() - t0, final,
        changes=r.changes, changed=r.version is not None, snapshot=r.snapshot,
    )  # fmt: skip


def _own(name: str, type_name: str) -> bool:
    """Whether ``name`` is the imported type or a nested type inferred under it."""
    return name == type_name or name.startswith(type_name + ".")


def _referred_to(schema: Schema, type_name: str) -> bool:
    def refers(ft: Any) -> bool:
        if ft is None:
            return False
        if ft.kind == "ref" and ft.target == type_name:
            return True
        return refers(ft.item) or refers(ft.key)

    return any(refers(f.type) for t in schema if not _own(t.name, type_name) for f in t.fields)


def _with_presence(
    schema: Schema, absent: dict[str, set[str]], nulls: dict[str, set[str]]
) -> Schema:
    """The schema as written (see :meth:`WriteState.final_schema`), over every part."""
    tdefs = []
    for t in schema:
        if t.name in absent:
            a, nl = absent[t.name], nulls.get(t.name, set())
            fields = tuple(
                dataclasses.replace(f, omit_null=f.name in a and f.name not in nl)
                if f.type.nullable and not f.has_default else f
                for f in t.fields
            )  # fmt: skip
            t = TypeDef(t.name, fields, t.key)
        tdefs.append(t)
    return Schema(tdefs)


def _carry_types(prev: ReadState, type_name: str, types_meta: dict[str, Any],
                 sections: dict[str, Any]) -> None:  # fmt: skip
    """Add the last version's other types, as they are stored, to a streamed import."""
    others = [t.name for t in prev.stored_schema if not _own(t.name, type_name)]
    if not others:
        return
    if isinstance(prev, ReadState):
        ptypes, parrays = prev.blob.header["types"], prev.blob.arrays
    else:  # a snapshot with deltas over it: their columns merged first
        h, parrays = merged_snapshot(prev, dataset=prev.dataset, version=prev.version,
                                     tags=prev.tags, created=0.0)  # fmt: skip
        ptypes = h["types"]
    for name in others:
        if name in ptypes:
            types_meta[name] = ptypes[name]
            sections.update((k, v) for k, v in parrays.items() if k.startswith(name + "/"))


def _import_whole(
    path: str | Path,
    type_name: str,
    keys: tuple[str, ...],
    ds: LocalDataset,
    prev: ReadState | None,
    progress: Progress | None,
    tags: dict[str, str] | None,
    t0: float,
) -> ImportResult:
    """Every record in memory at once, staged with the last version's other types (when
    those refer to the imported type, so their references are re-bound by key)."""
    lines: list[int] = []
    records: list[Any] = []
    inf = SchemaInferrer(type_name, keys)
    for n, rec in read_jsonl(path, progress):
        if len(records) < INFER_SAMPLE:
            inf.observe(rec, line=n)
        lines.append(n)
        records.append(rec)
    if not records:
        raise InputError(f"{path} holds no records")
    sampled = len(records) > INFER_SAMPLE
    try:
        ws = _stage(inf.schema(), prev, type_name, keys, lines, records, progress, sampled)
    except _Resample:
        inf = SchemaInferrer(type_name, keys)
        for n, rec in zip(lines, records, strict=True):
            inf.observe(rec, line=n)
        ws = _stage(inf.schema(), prev, type_name, keys, lines, records, progress, False)
    if progress is not None:
        progress("stage", len(records), len(records))
        progress("write", 0, 1)
    pub = ds.publish_cycle(ws, tags=tags)
    if progress is not None:
        progress("write", 1, 1)
    r = pub.result
    return ImportResult(
        pub.version, len(records), sum(r.blob_bytes.values()), time.perf_counter() - t0,
        ws.final_schema(), changes=r.changes, changed=r.version is not None,
        snapshot=r.snapshot,
    )  # fmt: skip


#: records the schema is first inferred from; the rest are checked against it while staged
INFER_SAMPLE = 20_000


class _Resample(Exception):
    pass


def _stage(
    schema: Schema,
    prev: ReadState | None,
    type_name: str,
    keys: tuple[str, ...],
    lines: list[int],
    records: list[Any],
    progress: Progress | None,
    sampled: bool,
) -> WriteState:
    if prev is not None:
        schema = _carry_schema(prev.stored_schema, type_name).merged(schema)
    ws = WriteState(schema)
    if prev is not None:
        _carry_records(prev, ws, type_name)
    batch = 50_000
    for lo in range(0, len(records), batch):
        chunk = records[lo : lo + batch]
        try:
            ws.add_many(type_name, chunk)
        except RowError as e:
            i = lo + e.index
            n = lines[i]
            msg = str(e)
            if "duplicate key" in msg:
                rec = records[i]
                k = tuple(rec[x] for x in keys)
                first = next(
                    ln for ln, r in zip(lines, records, strict=True)
                    if tuple(r[x] for x in keys) == k
                )  # fmt: skip
                raise InputError(
                    f"duplicate key {k[0] if len(k) == 1 else k!r} (first on line {first})",
                    line=n, field=",".join(keys),
                ) from None  # fmt: skip
            if sampled and i >= INFER_SAMPLE:
                raise _Resample from None
            raise InputError(msg, line=n) from None
        if progress is not None:
            progress("stage", lo + len(chunk), len(records))
    return ws


def _carry_schema(prev: Schema, type_name: str) -> Schema:
    """``prev`` without ``type_name`` and the nested types inferred under it."""
    keep = [t for t in prev if t.name != type_name and not t.name.startswith(type_name + ".")]
    return Schema(keep)


def _carry_records(prev: ReadState, ws: WriteState, replaced: str) -> None:
    for name, ts in prev.types.items():
        if ts.typedef.key is None or name == replaced or name not in ws.schema:
            continue
        for r in ts:
            ws.add(name, r.to_dict())


def export_records(state: ReadState, type_name: str) -> Iterator[dict[str, Any]]:
    """The records of a type as JSON-ready dicts (fields that were absent stay absent)."""
    ts = state[type_name]
    for r in ts:
        yield record_to_json(r)


def record_to_json(r: Record) -> dict[str, Any]:
    """One record as a JSON-ready dict: fields left out of the imported record stay out."""
    tdef: TypeDef = r._ts.typedef
    cols = r._ts._columns
    out: dict[str, Any] = {}
    for f in tdef.fields:
        col = cols[f.name]
        v = col.get(r._ord)
        if v is None and (f.omit_null or (col.left_out is not None and col.left_out(r._ord))):
            continue
        out[f.name] = _export_value(v)
    return out


def _export_value(v: Any) -> Any:
    if isinstance(v, Record):
        return v.key if v._ts.typedef.key is not None else record_to_json(v)
    if isinstance(v, list):
        return [_export_value(x) for x in v]
    if isinstance(v, set):
        return [_export_value(x) for x in v]
    if isinstance(v, dict):
        return {k: _export_value(x) for k, x in v.items()}
    return v


def export_jsonl(state: ReadState, type_name: str, out: IO[bytes]) -> int:
    """Write a type's records as JSON Lines to a binary stream; returns the count."""
    enc = msgspec.json.Encoder()
    n = 0
    buf = bytearray()
    for rec in export_records(state, type_name):
        enc.encode_into(rec, buf, -1)
        buf += b"\n"
        n += 1
        if len(buf) > 1 << 20:
            out.write(buf)
            buf.clear()
    out.write(buf)
    return n
