"""JSON Lines import and export.

:func:`import_jsonl` reads a file, infers (or checks) the schema, stages every record and
publishes one new version. Any malformed line — bad JSON, a missing or duplicate key, a
value contradicting the field's type, objects or arrays nested more than
:data:`~nearstate.schema.MAX_DEPTH` levels deep — raises :class:`InputError` naming the
line and the field, and nothing is published.

Over ~600 lines on purpose: import has two paths, whole (a small file, or a type that
must be re-inferred) and streamed (staged in parts across processes), which share the
staging, schema checks and publishing helpers here; export is the inverse of the same
value mapping.
"""

from __future__ import annotations

import dataclasses
import gc
import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import msgspec
import numpy as np

from .blob import encode_blob, parse_blob
from .dataset import LocalDataset
from .delta import shape
from .errors import InputError
from .infer import SchemaInferrer
from .layered import Changes
from .merge import DuplicateKeyError, join_parts, merged_snapshot
from .read_state import ReadState, Record
from .schema import MAX_DEPTH, Schema, TypeDef, too_deep
from .write_state import RowError, WriteState

#: progress(phase, done, total): phases "read" (bytes read, checked, staged and encoded),
#: "write" (the parts joined, the blob written); "stage" (records) only where every record
#: is staged at once (an import other types refer to)
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
    # lines end in "\n" (a lone "\r" is not a line break in JSON Lines); a last line may
    # lack it. decode_lines skips blank lines: then the counts differ, and the chunk is
    # decoded line by line to number each record
    n_lines = chunk.count(b"\n") + (1 if chunk and not chunk.endswith(b"\n") else 0)
    try:
        values = dec.decode_lines(chunk)
    except (msgspec.DecodeError, RecursionError):
        values = None
    if values is not None and len(values) == n_lines:
        yield from zip(range(first_line, first_line + n_lines), values, strict=True)
        return
    for n, line in enumerate(chunk.split(b"\n"), first_line):
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
    workers: int | None = None,
) -> ImportResult:
    """Import a JSON Lines file as type ``type_name`` into the dataset directory ``into``.

    Other types already in the dataset are carried over unchanged; this type is replaced.
    ``workers``: processes staging the file's ranges (default: one per core, up to four,
    for a file of more than two ranges of :data:`PART_BYTES`, when this process runs one
    thread — workers are forked; 1 stages everything in this process).
    """
    # millions of freshly decoded dicts would make the cyclic GC rescan them again and
    # again (import time grows faster than the file); none of them form cycles
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _import(path, type_name, key, into, progress, tags, workers)
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
    workers: int | None = None,
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
        return _import_streamed(path, type_name, keys, ds, prev, progress, tags, t0, None,
                                workers)  # fmt: skip
    except _Resample:
        # a record past the sample needs a wider schema: infer from every record (this
        # names the line of a genuine contradiction), then read the file again
        inf = SchemaInferrer(type_name, keys)
        for n, rec in read_jsonl(path, None):
            inf.observe(rec, line=n)
        return _import_streamed(path, type_name, keys, ds, prev, progress, tags, t0,
                                inf.schema(), workers)  # fmt: skip


#: records staged and encoded at a time by a streamed import; the parts are joined by
#: columns at the end (nearstate.merge), so memory follows the encoded records
PART_RECORDS = 200_000
#: bytes of the file a worker process stages at a time (a range starts and ends on a line)
PART_BYTES = 48 << 20
#: bytes of the first range, staged alone (its part chooses the symbol tables and text
#: dictionaries the others use) while the worker processes wait: enough to train them
FIRST_PART_BYTES = 12 << 20
_BATCH = 50_000


@dataclass
class _Part:
    built: tuple[dict[str, Any], Any]  # types meta, sections
    lines: np.ndarray  # the line of each record
    presence: dict[str, tuple[set[str], set[str]]]  # per type: (left out, set to null)


class _Failed(Exception):
    """What a range could not stage, carried back from a worker (InputError's fields do
    not survive pickling): ``("input", message, line, field)`` or ``("resample",)``."""


def _stage_range(
    path: str,
    start: int,
    end: int,
    first_line: int | None,
    schema_json: dict[str, Any],
    type_name: str,
    keys: tuple[str, ...],
    learned: dict[str, Any],
    sample_last: int | None,
    part_records: int,
) -> tuple[list[_Part], dict[str, Any], int] | tuple[str, Any, Any, Any]:
    """Stage the lines in ``[start, end)`` of the file into parts (in a worker process, or
    in this one). Returns the parts, the ``learned`` tables and the lines the range holds,
    or a failure tuple. ``first_line`` None: the range's line numbers are not known yet
    (a worker is not made to wait for the lines before it to be counted); its lines are
    numbered from 1 for the caller to shift, every record counts as past the inference
    sample, and the caller stages a range that fails again, numbered, to name the line."""
    own = Schema.from_json(schema_json)
    if first_line is None:
        first_line = 1
        sample_last = None if sample_last is None else 0
    try:
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read(end - start)
        lines = data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
        records = _decode_chunk(msgspec.json.Decoder(), data, first_line)
        del data
        parts = stage_parts(records, own, type_name, keys, learned, sample_last, part_records)
        return parts, learned, lines
    except InputError as e:
        return ("input", e.detail, e.line, e.field)
    except _Resample:
        return ("resample", None, None, None)


def stage_parts(
    records: Any, own: Schema, type_name: str, keys: tuple[str, ...], learned: dict[str, Any],
    sample_last: int | None, part_records: int,
) -> list[_Part]:  # fmt: skip
    """Stage ``(line, record)`` pairs into parts of ``part_records``, each encoded with
    ``learned`` (filled in by the first part that meets a column)."""
    parts: list[_Part] = []
    ws = WriteState(own)
    lines: list[int] = []  # of the part being staged
    batch: list[Any] = []

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
            if sample_last is not None and n > sample_last:
                raise _Resample from None
            raise InputError(str(e), line=n) from None
        batch.clear()

    def finish_part() -> None:
        nonlocal ws, lines
        presence = {t.name: ws.presence(t.name) for t in own}
        parts.append(_Part(ws.build(learned=learned), np.array(lines, np.int64), presence))
        ws = WriteState(own)
        lines = []

    for n, rec in records:
        batch.append(rec)
        lines.append(n)
        if len(batch) >= _BATCH:
            stage()
            if len(lines) >= part_records:
                finish_part()
    if batch:
        stage()
    if lines:
        finish_part()
    return parts


def join_staged(
    schema: Schema, type_name: str, parts: list[_Part]
) -> tuple[Schema, dict[str, Any], Any]:
    """The schema as written (left out or null combined over every part, see
    :meth:`WriteState.final_schema`), the types meta and the sections of the parts joined
    by columns (:func:`nearstate.merge.join_parts`). Empties ``parts`` as it goes.
    Raises :class:`~nearstate.merge.DuplicateKeyError` when two parts hold one key."""
    absent: dict[str, set[str]] = {}  # per type: fields some record left out
    nulls: dict[str, set[str]] = {}  # per type: fields some record set to null
    for p in parts:
        for t, (a, nl) in p.presence.items():
            absent.setdefault(t, set()).update(a)
            nulls.setdefault(t, set()).update(nl)
    final = _with_presence(schema, absent, nulls)
    left_out = [{t: a - nl for t, (a, nl) in p.presence.items()} for p in parts]
    built = [p.built for p in parts]
    parts.clear()
    own = Schema([t for t in final if _own(t.name, type_name)])
    types_meta, sections = join_parts(own, built, left_out)
    return final, types_meta, sections


def _ranges(
    path: str | Path, part_bytes: int, first_bytes: int | None = None
) -> list[tuple[int, int]]:
    """``(start, end)`` of consecutive byte ranges of about ``part_bytes`` (the first of
    about ``first_bytes``), each ending just after a newline (or at the end of the file).
    Reads only around each cut."""
    out = []
    start = 0
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        while start < size:
            step = part_bytes if out or first_bytes is None else first_bytes
            end = min(size, start + step)
            f.seek(end)
            while end < size:
                block = f.read(1 << 16)
                if not block:
                    end = size
                    break
                i = block.find(b"\n")
                if i >= 0:
                    end += i + 1
                    break
                end += len(block)
            out.append((start, end))
            start = end
    return out


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
    workers: int | None = None,
) -> ImportResult:
    """Stage the file a range at a time — the first here, the rest in worker processes
    when it is large — each part encoded with the tables and dictionaries the first
    part chose; join the parts by columns; publish the result as a snapshot."""
    sample_last = None
    if schema is None:
        inf = SchemaInferrer(type_name, keys)
        head = list(itertools.islice(read_jsonl(path, None), INFER_SAMPLE))
        for n, rec in head:
            inf.observe(rec, line=n)
        if not head:
            raise InputError(f"{path} holds no records")
        schema = inf.schema()
        sample_last = head[-1][0]
        del head
    if prev is not None:
        schema = _carry_schema(prev.stored_schema, type_name).merged(schema)
    own = Schema([t for t in schema if _own(t.name, type_name)])
    ranges = _ranges(path, PART_BYTES, FIRST_PART_BYTES)
    total = ranges[-1][1] if ranges else 0
    if workers is None:
        # forked workers, so only from a process with one thread (forking a threaded
        # process can inherit a lock some other thread held) — the CLI, a script
        one_thread = threading.active_count() == 1
        workers = min(os.cpu_count() or 1, 4) if len(ranges) > 2 and one_thread else 1
    args = (str(path), own.to_json(), type_name, keys)
    learned: dict[str, Any] = {}
    parts: list[_Part] = []
    done = 0

    line = 1  # the first line of the next range to take

    def take(result: Any, rng: tuple[int, int], numbered: bool) -> None:
        nonlocal done, learned, line
        if isinstance(result, tuple) and len(result) == 4 and isinstance(result[0], str):
            if result[0] == "resample":
                raise _Resample
            if not numbered:  # stage it again here, numbered, to name the line
                result = _stage_range(args[0], *rng, line, *args[1:], learned, sample_last,
                                      PART_RECORDS)  # fmt: skip
                return take(result, rng, True)
            raise InputError(result[1], line=result[2], field=result[3])
        got, learned_now, lines = result
        if not learned:
            learned = learned_now
        if not numbered:
            for p in got:
                p.lines += line - 1
        parts.extend(got)
        line += lines
        done += rng[1] - rng[0]
        if progress is not None:
            progress("read", done, total)

    def here(rng: tuple[int, int]) -> None:
        take(_stage_range(args[0], *rng, line, *args[1:], learned, sample_last,
                          PART_RECORDS), rng, True)  # fmt: skip

    rest = ranges
    if ranges:  # the first range here: it chooses the tables every other part uses
        here(ranges[0])
        rest = ranges[1:]
    if workers > 1 and len(rest) > 1:
        import concurrent.futures as cf
        import multiprocessing as mp

        # fork, not spawn: a spawned worker re-runs the caller's main module (a script
        # without a __main__ guard would import again, a notebook cannot be re-run)
        with cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
            futs = [pool.submit(_stage_range, args[0], a, b, None, *args[1:], learned,
                                sample_last, PART_RECORDS) for a, b in rest]  # fmt: skip
            try:
                for fut, rng in zip(futs, rest, strict=True):
                    take(fut.result(), rng, False)
            except BaseException:
                for fut in futs:
                    fut.cancel()
                raise
    else:
        for rng in rest:
            here(rng)
    count = sum(len(p.lines) for p in parts)
    if not count:
        raise InputError(f"{path} holds no records")
    if progress is not None:
        progress("write", 0, 1)
    part_lines = [p.lines for p in parts]
    try:
        final, types_meta, sections = join_staged(schema, type_name, parts)
    except DuplicateKeyError as e:
        all_lines = np.concatenate(part_lines)
        first_line, again = (int(all_lines[r]) for r in e.rows)
        raise InputError(f"duplicate key (first on line {first_line})", line=again,
                         field=",".join(keys)) from None  # fmt: skip
    with ds.producer(snapshot_every=10, retain_snapshots=None) as p:
        if prev is not None and _same_shape(prev.stored_schema, final, type_name):
            # the type was there, shaped the same: publish what changed as a delta
            r = _publish_changes(p, prev, final, type_name, types_meta, sections, tags)
        else:
            if prev is not None:
                _carry_types(prev, type_name, types_meta, sections)
            r = p.run_built(final, types_meta, sections, tags=tags)
        v = r.version if r.version is not None else p.version
    if progress is not None:
        progress("write", 1, 1)
    assert v is not None
    return ImportResult(
        v, count, sum(r.blob_bytes.values()), time.perf_counter() - t0, final,
        changes=r.changes, changed=r.version is not None, snapshot=r.snapshot,
    )  # fmt: skip


def _same_shape(prev: Schema, new: Schema, type_name: str) -> bool:
    """Whether the imported type (and its nested types) has the shape it had."""

    def own(sch: Schema) -> list[Any]:
        return shape(Schema(sorted((t for t in sch if _own(t.name, type_name)),
                                   key=lambda t: t.name)))  # fmt: skip

    return type_name in prev and own(prev) == own(new)


def _publish_changes(
    p: Any, prev: ReadState, final: Schema, type_name: str, types_meta: dict[str, Any],
    sections: dict[str, Any], tags: dict[str, str] | None,
) -> Any:  # fmt: skip
    """An incremental cycle of the records that differ from the last version's (by key and
    digest), and the removal of the keys the file no longer has."""
    own = Schema([t for t in final if _own(t.name, type_name)])
    header = {"kind": "snapshot", "dataset": "import", "version": 0, "tags": {},
              "schema": own.to_json(), "types": types_meta}  # fmt: skip
    new = ReadState(parse_blob(b"".join(encode_blob(header, sections)), source="the import"))
    ts_new, ts_old = new[type_name], prev[type_name]
    digests = ts_new.all_digests()
    ordinal_of, old_digest = ts_old.ordinal_of, ts_old.digest
    changed = []
    for i, k in enumerate(ts_new.keys()):
        o = ordinal_of(k)
        if o < 0 or old_digest(o) != int(digests[i]):
            changed.append(i)
    removed = [k for k in ts_old.keys() if k not in ts_new]  # noqa: SIM118 (records)

    def mutate(inc: Any) -> None:
        for i in changed:
            inc.upsert(type_name, ts_new[i].to_dict())
        for k in removed:
            inc.delete(type_name, k)

    return p.run_incremental(mutate, tags=tags)


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
