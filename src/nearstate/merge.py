"""Snapshots by merging columns: the next snapshot from the last one plus the changes.

A version reached by deltas is a snapshot with delta layers over it
(:class:`~nearstate.layered.LayeredState`). Writing it as a snapshot used to decode every
record into Python and encode them again: minutes at ten million records. Here each
column is merged as arrays instead:

1. per keyed type, the rows of the new snapshot are the live ordinals of the layered
   state in order — snapshot rows that survive, and the layer rows the overlay points
   at — and every removed ordinal closes up (``order``: where each new row comes from;
   ``renumber``: old ordinal → new);
2. per field, the snapshot's column and the layers' columns are read as *parts*: numpy
   arrays (integers, floats, pool ids and offsets, compressed frames) that still point
   into the mapped blobs, joined, and taken in ``order``;
3. references are renumbered with the target's ``renumber``; a layer's references (kept as
   the target's key) are looked up — only the layer's rows, so in proportion to the
   change; nested record types keep the rows something still points at;
4. the parts are written back with the same layouts the encoder uses. String pools keep
   their entries and their symbol table (new entries are encoded with it); pool entries
   nothing points at any more are dropped once they are a quarter of the pool; text
   frames are copied, only a layer's frames are recompressed with the field's dictionary.

A type that nothing changed (no row and no reference target moved) is copied section by
section. Nothing here builds a Python object per record, except for the few key kinds the
compiled hash does not cover (composite keys and keys that are not int or str).

Over ~600 lines on purpose: one algorithm, the column merge, with the column parts it
works on. Reading parts from a blob, taking and concatenating them and writing them back
mirror :mod:`nearstate.encoding`'s layouts one for one and serve nothing but the merge, so
they sit in the order the merge uses them (the ``# ---`` sections below). If the module
grows, the seam is between the parts (everything above "merging a layered state") and
the merge itself.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zstandard

from . import digest as _digest
from . import fsst as _fsst
from ._native import core as _core
from .encoding import (
    BLOCK,
    SPARSE_MIN_NULLS,
    SURR,
    TEXT_LEVEL,
    UTF8,
    Sections,
    narrow_uint,
    null_rank,
    put_floats,
    sections_size,
)
from .errors import FormatError, SchemaError
from .index import build_pk_tables, key_bytes
from .schema import FieldType, Schema, TypeDef

GC_FRACTION = 0.25  # drop unreferenced pool entries once they are this share of a pool
#: values worked at a time by the chunked helpers (a multiple of BLOCK): a column's
#: temporaries stay this size instead of the column's, in int64
STEP = 1 << 16


# --- byte helpers: compiled when the core is there, else Python ------------------------


def gather_slices(data: Any, offs: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The slices ``data[offs[i]:offs[i+1]]`` for ``i`` in ``idx``, joined: (bytes, offsets)."""
    idx = np.ascontiguousarray(idx, dtype=np.int64)
    offs = np.ascontiguousarray(offs, dtype=np.int64)
    if _core is not None and hasattr(_core, "gather_slices"):
        out, new_offs = _core.gather_slices(_buf(data), offs, idx)
        return np.frombuffer(out, dtype=np.uint8), np.frombuffer(new_offs, dtype=np.int64)
    mv = memoryview(_buf(data))
    lo, hi = offs[idx], offs[idx + 1]
    new_offs = np.zeros(len(idx) + 1, dtype=np.int64)
    np.cumsum(hi - lo, out=new_offs[1:])
    out = b"".join([mv[a:b] for a, b in zip(lo.tolist(), hi.tolist(), strict=True)])
    return np.frombuffer(out, dtype=np.uint8), new_offs


def fsst_decode_slices(data: Any, offs: np.ndarray, table: list[bytes]
                       ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Every slice of FSST codes decoded with ``table``: (plain bytes, offsets)."""
    offs = np.ascontiguousarray(offs, dtype=np.int64)
    if _core is not None and hasattr(_core, "fsst_decode_slices"):
        fsym, flen = _fsst.pack(table)
        out, new_offs = _core.fsst_decode_slices(_buf(data), offs, fsym, flen)
        return np.frombuffer(out, dtype=np.uint8), np.frombuffer(new_offs, dtype=np.int64)
    dec = _fsst.decoder(table, "<merge>")
    mv = memoryview(_buf(data))
    o = offs.tolist()
    entries = [dec(bytes(mv[o[i] : o[i + 1]])) for i in range(len(o) - 1)]
    return _joined(entries)


def _joined(entries: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    offs = np.zeros(len(entries) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, entries), np.int64, len(entries)), out=offs[1:])
    return np.frombuffer(b"".join(entries), dtype=np.uint8), offs


def _buf(data: Any) -> Any:
    """A contiguous uint8 buffer of ``data``."""
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).view(np.uint8).reshape(-1)
    return data


def dedupe_slices(data: Any, offs: np.ndarray) -> np.ndarray:
    """Per slice, the index of the first slice with the same bytes (itself if first)."""
    offs = np.ascontiguousarray(offs, dtype=np.int64)
    if _core is not None and hasattr(_core, "dedupe_slices"):
        return np.frombuffer(_core.dedupe_slices(_buf(data), offs), dtype=np.int64)
    mv = memoryview(_buf(data))
    o = offs.tolist()
    seen: dict[bytes, int] = {}
    return np.fromiter(
        (seen.setdefault(bytes(mv[o[i] : o[i + 1]]), i) for i in range(len(o) - 1)),
        np.int64,
        len(o) - 1,
    )


def crc32_slices(data: Any, offs: np.ndarray) -> np.ndarray:
    """CRC-32 of each slice ``data[offs[i]:offs[i+1]]`` (as :func:`zlib.crc32`)."""
    offs = np.ascontiguousarray(offs, dtype=np.int64)
    if _core is not None and hasattr(_core, "crc32_slices"):
        return np.frombuffer(_core.crc32_slices(_buf(data), offs), dtype=np.uint32)
    mv = memoryview(_buf(data))
    o = offs.tolist()
    return np.fromiter(
        (zlib.crc32(mv[o[i] : o[i + 1]]) for i in range(len(o) - 1)), np.uint32, len(o) - 1
    )


def crc32_ints(a: np.ndarray) -> np.ndarray:
    """CRC-32 of each integer's decimal form (how an int key is hashed)."""
    a = np.ascontiguousarray(a, dtype=np.int64)
    if _core is not None and hasattr(_core, "crc32_ints"):
        return np.frombuffer(_core.crc32_ints(a), dtype=np.uint32)
    return np.fromiter((zlib.crc32(b"%d" % v) for v in a.tolist()), np.uint32, len(a))


def _span_offsets(offs: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """The offsets of the spans ``offs[i]:offs[i+1]`` for ``i`` in ``idx``, laid one after
    another (from 0), STEP at a time."""
    out = np.zeros(len(idx) + 1, dtype=np.int64)
    at = 0
    for i in range(0, len(idx), STEP):
        c = idx[i : i + STEP]
        lens = offs[1:][c] - offs[c]
        np.cumsum(lens, out=out[i + 1 : i + 1 + len(c)])
        out[i + 1 : i + 1 + len(c)] += at
        at = int(out[i + len(c)])
    return out


def _spans(offs: np.ndarray, idx: np.ndarray, new_offs: np.ndarray, dtype: Any) -> np.ndarray:
    """``concat(arange(offs[i], offs[i+1]) for i in idx)`` as ``dtype``, vectorised STEP
    spans at a time. ``new_offs``: :func:`_span_offsets` of the same."""
    out = np.empty(int(new_offs[-1]), dtype=dtype)
    for i in range(0, len(idx), STEP):
        a, b = int(new_offs[i]), int(new_offs[min(i + STEP, len(idx))])
        if a == b:
            continue
        c = idx[i : i + STEP]
        s = offs[c]
        n = offs[1:][c] - s
        ends = np.cumsum(n)
        out[a:b] = np.arange(b - a, dtype=np.int64) + np.repeat(s - (ends - n), n)
    return out


def _idx_dtype(n: int) -> np.dtype:
    """A signed dtype for indexes below ``n`` (int32 where it holds them: half the bytes)."""
    return np.dtype(np.int32) if n < 2**31 else np.dtype(np.int64)


def _is_arange(idx: np.ndarray) -> bool:
    """Whether ``idx`` is ``0, 1, ..., len(idx) - 1`` (STEP values at a time)."""
    for i in range(0, len(idx), STEP):
        c = idx[i : i + STEP]
        if not np.array_equal(c, np.arange(i, i + len(c))):
            return False
    return True


def _is_self(first: np.ndarray) -> np.ndarray:
    """Per ``i``, whether ``first[i] == i`` (STEP values at a time)."""
    out = np.empty(len(first), dtype=bool)
    for i in range(0, len(first), STEP):
        c = first[i : i + STEP]
        np.equal(c, np.arange(i, i + len(c)), out=out[i : i + STEP])
    return out


def _nonzero(mask: np.ndarray, dtype: Any) -> np.ndarray:
    """``np.flatnonzero(mask)`` as ``dtype`` (STEP values at a time)."""
    out = np.empty(int(np.count_nonzero(mask)), dtype=dtype)
    at = 0
    for i in range(0, len(mask), STEP):
        nz = np.flatnonzero(mask[i : i + STEP])
        out[at : at + len(nz)] = nz + i
        at += len(nz)
    return out


def _span_bytes(offs: np.ndarray, idx: np.ndarray | None) -> int:
    """Bytes of the slices ``idx`` (every slice if None) of ``offs``."""
    if idx is None:
        return int(offs[-1]) - int(offs[0]) if len(offs) else 0
    total = 0
    ends = offs[1:]
    for i in range(0, len(idx), STEP):
        c = idx[i : i + STEP]
        total += int(ends[c].sum()) - int(offs[c].sum())
    return total


def _cat(arrays: list[np.ndarray], shifts: list[int], dtype: Any) -> np.ndarray:
    """``concatenate([a + shift ...])`` as ``dtype``, written into one array (no copy of
    each part first)."""
    out = np.empty(sum(len(a) for a in arrays), dtype=dtype)
    at = 0
    for a, sh in zip(arrays, shifts, strict=True):
        part = out[at : at + len(a)]
        part[...] = a
        if sh:
            part += sh
        at += len(a)
    return out


def _put_uints(values: np.ndarray, out: Sections, section: str, lo: int = 0) -> None:
    """:func:`nearstate.encoding.put_uints` of ``values - lo`` (as uint64, wrapping): the
    same sections byte for byte, worked STEP values at a time (its temporaries are each
    the whole column in uint64)."""
    n = len(values)
    sub = np.uint64(lo & 0xFFFFFFFFFFFFFFFF)

    def chunk(i: int) -> np.ndarray:
        u = values[i : i + STEP].astype(np.uint64)
        if lo:
            u -= sub
        return u

    top = 0
    for i in range(0, n, STEP):
        top = max(top, int(chunk(i).max()))
    plain = narrow_uint(top)
    if n >= 2 * BLOCK:
        bases = np.empty(-(-n // BLOCK), dtype=np.uint64)
        rel_top = 0
        for i in range(0, n, STEP):
            u = chunk(i)
            if len(u) % BLOCK:  # the last chunk: its block padded with the last value
                u = np.concatenate([u, np.full(-len(u) % BLOCK, u[-1], dtype=np.uint64)])
            r = u.reshape(-1, BLOCK)
            lo_b = r.min(axis=1)
            bases[i // BLOCK : i // BLOCK + len(lo_b)] = lo_b
            rel_top = max(rel_top, int((r.max(axis=1) - lo_b).max()))
        rw, bw = narrow_uint(rel_top), narrow_uint(int(bases.max()))
        if n * rw.itemsize + len(bases) * bw.itemsize < n * plain.itemsize:
            rel = np.empty(n, dtype=rw)
            for i in range(0, n, STEP):
                u = chunk(i)
                b = bases[i // BLOCK : i // BLOCK + -(-len(u) // BLOCK)]
                rel[i : i + len(u)] = u - np.repeat(b, BLOCK)[: len(u)]
            out[section] = rel
            out[section + ".blk"] = bases.astype(bw)
            return
    res = np.empty(n, dtype=plain)
    for i in range(0, n, STEP):
        res[i : i + STEP] = chunk(i)
    out[section] = res


# --- parts: one column's values as arrays ----------------------------------------------


@dataclass
class Ints:
    a: np.ndarray  # int64
    tz: bool | None = None  # datetimes: aware or naive


@dataclass
class Floats:
    a: np.ndarray  # float64


@dataclass
class Bools:
    a: np.ndarray  # uint8


@dataclass
class Pool:
    """Entries (``data[offs[i]:offs[i+1]]``, FSST codes when ``table`` is set) and per
    row an entry id (``ids``; None: row ``i`` is entry ``i``)."""

    data: np.ndarray  # uint8
    offs: np.ndarray  # int64, entries + 1
    ids: np.ndarray | None
    table: list[bytes] | None = None
    bigint: bool = False

    def rows(self) -> int:
        return len(self.offs) - 1 if self.ids is None else len(self.ids)


@dataclass
class Text:
    data: np.ndarray  # uint8: zstd frames
    offs: np.ndarray  # int64
    zdict: bytes | None


@dataclass
class Coll:
    offs: np.ndarray  # int64, rows + 1
    item: Node
    key: Node | None = None


@dataclass
class Node:
    """One column: values for every row (placeholders where null), the null bitmap and
    which nulls were left out."""

    vals: Any
    n: int
    nulls: np.ndarray | None = None  # bool per row
    absent: np.ndarray | None = None  # bool per row


# --- reading parts from a blob's sections ------------------------------------------------


def _uints(arrays: dict[str, np.ndarray], name: str, dtype: Any = np.int64) -> np.ndarray:
    try:
        v = arrays[name]
    except KeyError:
        raise FormatError(f"blob lacks section {name!r}") from None
    a = v.astype(dtype)
    blk = arrays.get(name + ".blk")
    if blk is not None:
        _add_blocks(a, blk)
    return a


def _add_blocks(a: np.ndarray, blk: np.ndarray) -> None:
    """``a += repeat(blk, BLOCK)`` in place (no repeated array)."""
    full = len(a) // BLOCK
    b = blk.astype(a.dtype)
    a[: full * BLOCK].reshape(-1, BLOCK)[...] += b[:full, None]
    if len(a) > full * BLOCK:
        a[full * BLOCK :] += b[full]


def _bits(arrays: dict[str, np.ndarray], name: str, n: int) -> np.ndarray:
    return np.unpackbits(arrays[name], bitorder="little", count=n).astype(bool)


def read_node(ft: FieldType, meta: dict[str, Any], arrays: dict[str, np.ndarray], name: str,
              n: int) -> Node:  # fmt: skip
    """The column ``name`` (``n`` rows) of a blob as a Node."""
    nulls = _bits(arrays, name + ".nulls", n) if meta.get("nulls") else None
    absent = _bits(arrays, name + ".absent", n) if meta.get("absent") else None
    sparse = bool(meta.get("sparse"))
    m = n - int(nulls.sum()) if sparse and nulls is not None else n
    vals = _read_vals(ft, meta, arrays, name, m)
    node = Node(vals, m, None, None)
    if sparse and nulls is not None:
        present = np.flatnonzero(~nulls)
        idx = np.full(n, m, dtype=np.int64)
        idx[present] = np.arange(m, dtype=np.int64)
        node = _take_node(concat(ft, [node, zero_node(ft, node)]), idx)
    node.nulls, node.absent = nulls, absent
    return node


def _read_vals(ft: FieldType, meta: dict[str, Any], arrays: dict[str, np.ndarray], name: str,
               m: int) -> Any:  # fmt: skip
    kind = ft.kind
    if kind in ("int", "datetime", "record", "ref") or (kind == "float" and "scale" in meta):
        if meta.get("bigint"):
            pool = _read_pool(meta, arrays, name)
            pool.bigint = True
            return pool
        if m == 0:
            a = np.zeros(0, dtype=np.int64)
        else:
            u = arrays[name].astype(np.uint64)
            blk = arrays.get(name + ".blk")
            if blk is not None:
                _add_blocks(u, blk)
            u += np.uint64(int(meta.get("base", 0)) & 0xFFFFFFFFFFFFFFFF)
            a = u.view(np.int64)
        if kind == "float":
            f = a.astype(np.float64)
            f /= float(meta["scale"])
            return Floats(f)
        return Ints(a, bool(meta.get("tz")) if kind == "datetime" else None)
    if kind == "float":
        return Floats(arrays[name].astype(np.float64))
    if kind == "bool":
        return Bools(arrays[name].astype(np.uint8))
    if kind in ("str", "bytes"):
        return _read_pool(meta, arrays, name)
    if kind == "text":
        zd = arrays.get(name + ".zdict") if meta.get("dict") else None
        return Text(arrays[name + ".z"], arrays[name + ".zoffs"].astype(np.int64),
                    None if zd is None else zd.tobytes())  # fmt: skip
    if kind in ("list", "set", "dict"):
        offs = _uints(arrays, name + ".offs")
        k = int(offs[-1]) if len(offs) else 0
        if kind == "dict":
            assert ft.key is not None and ft.item is not None
            return Coll(offs, read_node(ft.item, meta["item"], arrays, name + "{v}", k),
                        read_node(ft.key, meta["key"], arrays, name + "{k}", k))  # fmt: skip
        assert ft.item is not None
        return Coll(offs, read_node(ft.item, meta["item"], arrays, name + "[]", k))
    raise FormatError(f"column {name!r} has unknown kind {kind!r}")


def _read_pool(meta: dict[str, Any], arrays: dict[str, np.ndarray], name: str) -> Pool:
    table = None
    if meta.get("fsst"):
        table = _fsst.unpack(arrays[name + ".fsym"], arrays[name + ".flen"], name)
    offs = _uints(arrays, name + ".poffs")
    ids = None
    if meta.get("pool") == "ids":  # ids below the entry count: int32 where that holds them
        ids = _uints(arrays, name + ".ids", _idx_dtype(len(offs)))
    return Pool(arrays[name + ".pool"], offs, ids, table)


# --- take and concat ---------------------------------------------------------------------


def zero_node(ft: FieldType, like: Node) -> Node:
    """One placeholder row of the same layout as ``like`` (stands where a value is null)."""
    v = like.vals
    if isinstance(v, Ints):
        z: Any = Ints(np.zeros(1, dtype=np.int64), v.tz)
    elif isinstance(v, Floats):
        z = Floats(np.zeros(1))
    elif isinstance(v, Bools):
        z = Bools(np.zeros(1, dtype=np.uint8))
    elif isinstance(v, Pool):
        zero = b"0" if v.bigint else b""
        codes = _fsst.encode(v.table, [zero])[0] if v.table is not None and zero else zero
        zid = None if v.ids is None else np.zeros(1, dtype=np.int64)
        zoffs = np.array([0, len(codes)], dtype=np.int64)
        z = Pool(np.frombuffer(codes, dtype=np.uint8), zoffs, zid, v.table, v.bigint)
    elif isinstance(v, Text):
        z = Text(np.zeros(0, dtype=np.uint8), np.zeros(2, dtype=np.int64), v.zdict)
    elif isinstance(v, Coll):
        z = Coll(np.zeros(2, dtype=np.int64), _empty_like(v.item),
                 None if v.key is None else _empty_like(v.key))  # fmt: skip
    else:  # pragma: no cover
        raise AssertionError(type(v))
    return Node(z, 1, None if like.nulls is None else np.ones(1, dtype=bool),
                None if like.absent is None else np.zeros(1, dtype=bool))  # fmt: skip


def _empty_like(node: Node) -> Node:
    return _take_node(node, np.zeros(0, dtype=np.int64))


def _take_node(node: Node, idx: np.ndarray) -> Node:
    """The rows ``idx`` of ``node``, in that order."""
    if len(idx) == node.n and (node.n == 0 or (idx[0] == 0 and _is_arange(idx))):
        return node
    return Node(
        _take_vals(node.vals, idx),
        len(idx),
        None if node.nulls is None else node.nulls[idx],
        None if node.absent is None else node.absent[idx],
    )


def _take_vals(v: Any, idx: np.ndarray) -> Any:
    if isinstance(v, Ints):
        return Ints(v.a[idx], v.tz)
    if isinstance(v, Floats):
        return Floats(v.a[idx])
    if isinstance(v, Bools):
        return Bools(v.a[idx])
    if isinstance(v, Pool):
        if v.ids is not None:
            return Pool(v.data, v.offs, v.ids[idx], v.table, v.bigint)
        data, offs = gather_slices(v.data, v.offs, idx)
        return Pool(data, offs, None, v.table, v.bigint)
    if isinstance(v, Text):
        data, offs = gather_slices(v.data, v.offs, idx)
        return Text(data, offs, v.zdict)
    if isinstance(v, Coll):
        offs = _span_offsets(v.offs, idx)
        inner = _spans(v.offs, idx, offs, _idx_dtype(len(v.offs)))
        return Coll(offs, _take_node(v.item, inner),
                    None if v.key is None else _take_node(v.key, inner))  # fmt: skip
    raise AssertionError(type(v))  # pragma: no cover


def concat(ft: FieldType, nodes: list[Node]) -> Node:
    """The rows of every node, one after the other (the first node's layout wins)."""
    nodes = [n for n in nodes if n.n] or nodes[:1]
    if len(nodes) == 1:
        return nodes[0]
    n = sum(x.n for x in nodes)
    nulls = absent = None
    if any(x.nulls is not None for x in nodes):
        nulls = np.concatenate([x.nulls if x.nulls is not None else np.zeros(x.n, bool)
                                for x in nodes])  # fmt: skip
    if any(x.absent is not None for x in nodes):
        absent = np.concatenate([x.absent if x.absent is not None else np.zeros(x.n, bool)
                                 for x in nodes])  # fmt: skip
    return Node(_concat_vals(ft, [x.vals for x in nodes]), n, nulls, absent)


def _concat_vals(ft: FieldType, vs: list[Any]) -> Any:
    first = vs[0]
    if any(isinstance(v, Pool) and v.bigint for v in vs) and not all(
        isinstance(v, Pool) and v.bigint for v in vs
    ):
        vs = [_as_bigint_pool(v) for v in vs]
        first = vs[0]
    if isinstance(first, Ints):
        tzs = {v.tz for v in vs}
        if len(tzs) > 1:
            raise SchemaError(
                f"field of kind {ft.kind}: mixes naive and timezone-aware datetimes; "
                "a column holds one or the other"
            )
        return Ints(np.concatenate([v.a for v in vs]), first.tz)
    if isinstance(first, Floats):
        return Floats(np.concatenate([v.a for v in vs]))
    if isinstance(first, Bools):
        return Bools(np.concatenate([v.a for v in vs]))
    if isinstance(first, Pool):
        return _concat_pools(vs)
    if isinstance(first, Text):
        return _concat_text(vs)
    if isinstance(first, Coll):
        offs, shifts = [first.offs], [0]
        at = int(first.offs[-1])
        for v in vs[1:]:
            offs.append(v.offs[1:])
            shifts.append(at)
            at += int(v.offs[-1])
        assert ft.item is not None
        item = concat(ft.item, [v.item for v in vs])
        key = None
        if first.key is not None:
            assert ft.key is not None
            key = concat(ft.key, [v.key for v in vs if v.key is not None])
        return Coll(_cat(offs, shifts, np.int64), item, key)
    raise AssertionError(type(first))  # pragma: no cover


def _as_bigint_pool(v: Any) -> Pool:
    if isinstance(v, Pool):
        return v
    entries = [b"%d" % x for x in v.a.tolist()]
    lens = np.fromiter(map(len, entries), np.int64, len(entries))
    offs = np.zeros(len(entries) + 1, dtype=np.int64)
    np.cumsum(lens, out=offs[1:])
    return Pool(np.frombuffer(b"".join(entries), np.uint8), offs, None, None, True)


def _entries(p: Pool) -> list[bytes]:
    """A pool's entries as plain bytes (used on the small side of a join only)."""
    mv = memoryview(p.data)
    o = p.offs.tolist()
    raw = [bytes(mv[o[i] : o[i + 1]]) for i in range(len(o) - 1)]
    if p.table is None:
        return raw
    dec = _fsst.decoder(p.table, "<merge>")
    return [dec(r) for r in raw]


def _recode(p: Pool, table: list[bytes] | None) -> Pool:
    """``p`` with its entries in the form of ``table`` (FSST codes, or plain if None)."""
    if p.table == table:
        return p
    if table is None:
        assert p.table is not None
        d, o = fsst_decode_slices(p.data, p.offs, p.table)
        return Pool(d, o, p.ids, None, p.bigint)
    entries = _entries(p)
    if True:
        data, ends = _fsst.encode(table, entries)
        offs = np.zeros(len(entries) + 1, dtype=np.int64)
        offs[1:] = ends
    return Pool(np.frombuffer(data, dtype=np.uint8), offs, p.ids, table, p.bigint)


def _concat_pools(vs: list[Pool]) -> Pool:
    # the largest pool keeps its form; the others are recoded to it (they are the change)
    big = max(vs, key=lambda v: len(v.data))
    table = big.table
    vs = [_recode(v, table) for v in vs]
    with_ids = any(v.ids is not None for v in vs)
    datas, offs, ids, at_bs, at_es = [], [], [], [], []
    at_b = at_e = 0
    for v in vs:
        datas.append(v.data)
        offs.append(v.offs if not offs else v.offs[1:])
        ne = len(v.offs) - 1
        if with_ids:
            ids.append(v.ids if v.ids is not None else np.arange(ne, dtype=np.int64))
        at_bs.append(at_b)
        at_es.append(at_e)
        at_b += int(v.offs[-1])
        at_e += ne
    data = np.concatenate(datas) if len(datas) > 1 else datas[0]
    joined_ids = _cat(ids, at_es, _idx_dtype(at_e + 1)) if with_ids else None
    return Pool(data, _cat(offs, at_bs, np.int64), joined_ids, table, vs[0].bigint)


def _concat_text(vs: list[Text]) -> Text:
    big = max(vs, key=lambda v: len(v.data))
    zdict = big.zdict
    out = []
    for v in vs:
        if v.zdict != zdict:
            v = _recompress(v, zdict)
        out.append(v)
    datas, offs, shifts = [], [], []
    at = 0
    for v in out:
        datas.append(v.data)
        offs.append(v.offs if not offs else v.offs[1:])
        shifts.append(at)
        at += int(v.offs[-1])
    return Text(np.concatenate(datas), _cat(offs, shifts, np.int64), zdict)


def _recompress(v: Text, zdict: bytes | None) -> Text:
    dd = None if v.zdict is None else zstandard.ZstdCompressionDict(v.zdict)
    cd = None if zdict is None else zstandard.ZstdCompressionDict(zdict)
    d = zstandard.ZstdDecompressor(dict_data=dd)
    c = zstandard.ZstdCompressor(level=TEXT_LEVEL, dict_data=cd, write_checksum=False,
                                 write_dict_id=False)  # fmt: skip
    mv = memoryview(v.data)
    o = v.offs.tolist()
    frames = [
        c.compress(d.decompress(mv[o[i] : o[i + 1]])) if o[i + 1] > o[i] else b""
        for i in range(len(o) - 1)
    ]
    offs = np.zeros(len(frames) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, frames), np.int64, len(frames)), out=offs[1:])
    return Text(np.frombuffer(b"".join(frames), dtype=np.uint8), offs, zdict)


# --- writing parts back ------------------------------------------------------------------


def write_node(ft: FieldType, node: Node, out: Sections, name: str) -> dict[str, Any]:
    """Store ``node`` under ``name`` in ``out`` with the encoder's layouts; the meta."""
    meta: dict[str, Any] = {}
    n = node.n
    nulls = node.nulls if node.nulls is not None and node.nulls.any() else None
    absent = node.absent if node.absent is not None and node.absent.any() else None
    if absent is not None and nulls is not None:
        # both null and left out occur (every left-out value is a null)
        if not np.array_equal(absent, nulls):
            out[name + ".absent"] = np.packbits(absent, bitorder="little")
            meta["absent"] = True
    elif absent is not None:
        nulls = absent
    if nulls is None:
        meta.update(_write_vals(ft, node.vals, out, name))
        return meta
    out[name + ".nulls"] = np.packbits(nulls, bitorder="little")
    meta["nulls"] = True
    n_null = int(nulls.sum())
    present = np.flatnonzero(~nulls)
    if n_null * SPARSE_MIN_NULLS >= n:
        rank = null_rank(nulls)
        sparse_vals = _take_vals(node.vals, present)
        if ft.kind == "text":
            sm = _write_vals(ft, sparse_vals, out, name)
            out[name + ".nrank"] = rank
            return {**meta, **sm, "sparse": True}
        dense: Sections = {}
        sparse: Sections = {}
        dm = _write_vals(ft, _zeroed(ft, node, nulls), dense, name)
        sm = _write_vals(ft, sparse_vals, sparse, name)
        if sections_size(sparse) + rank.nbytes < sections_size(dense):
            out.update(sparse)
            out[name + ".nrank"] = rank
            return {**meta, **sm, "sparse": True}
        out.update(dense)
        return {**meta, **dm}
    meta.update(_write_vals(ft, _zeroed(ft, node, nulls), out, name))
    return meta


def _zeroed(ft: FieldType, node: Node, nulls: np.ndarray) -> Any:
    """Values with a zero placeholder at every null (as the dense layout stores them)."""
    v = node.vals
    if isinstance(v, (Ints, Floats, Bools)):
        a = v.a.copy()
        a[nulls] = 0
        return type(v)(a, v.tz) if isinstance(v, Ints) else type(v)(a)
    idx = np.arange(node.n, dtype=np.int64)
    idx[nulls] = node.n
    z = zero_node(ft, node)
    return _take_vals(_concat_vals(ft, [v, z.vals]), idx)


def _write_ints(a: np.ndarray, out: Sections, name: str) -> dict[str, Any]:
    if not len(a):
        out[name] = np.zeros(0, dtype=np.uint8)
        return {"base": 0}
    lo = int(a.min())
    _put_uints(a, out, name, lo)
    return {"base": lo}


def _write_vals(ft: FieldType, v: Any, out: Sections, name: str) -> dict[str, Any]:
    if isinstance(v, Ints):
        meta = _write_ints(v.a, out, name)
        if ft.kind == "datetime":
            meta["tz"] = bool(v.tz)
        return meta
    if isinstance(v, Floats):
        return _write_floats(v.a, out, name)
    if isinstance(v, Bools):
        out[name] = v.a.astype(np.uint8)
        return {}
    if isinstance(v, Pool):
        meta = _write_pool(v, out, name)
        if v.bigint:
            meta["bigint"] = True
        return meta
    if isinstance(v, Text):
        meta: dict[str, Any] = {"level": TEXT_LEVEL}
        if v.zdict is not None:
            out[name + ".zdict"] = np.frombuffer(v.zdict, dtype=np.uint8)
            meta["dict"] = True
        out[name + ".zoffs"] = v.offs.astype(narrow_uint(int(v.offs[-1]) if len(v.offs) else 0))
        out[name + ".z"] = v.data
        return meta
    if isinstance(v, Coll):
        _put_uints(v.offs, out, name + ".offs")
        assert ft.item is not None
        if ft.kind == "dict":
            assert ft.key is not None and v.key is not None
            return {"key": write_node(ft.key, v.key, out, name + "{k}"),
                    "item": write_node(ft.item, v.item, out, name + "{v}")}  # fmt: skip
        return {"item": write_node(ft.item, v.item, out, name + "[]")}
    raise AssertionError(type(v))  # pragma: no cover


def _write_floats(a: np.ndarray, out: Sections, name: str) -> dict[str, Any]:
    """Floats as the encoder lays them out, integers stored STEP at a time."""
    return put_floats(a, out, name, _write_ints, STEP)


def _write_pool(p: Pool, out: Sections, name: str) -> dict[str, Any]:
    """A pool, de-duplicated across everything joined into it and chosen by size as the
    encoder chooses: ids into unique entries where that is smaller, else an entry per row.
    Entries nothing points at are dropped. (FSST codes de-duplicate as their values do:
    one table encodes equal values to equal codes.)"""
    data, offs, ids = p.data, p.offs, p.ids
    n_e = len(offs) - 1
    it = _idx_dtype(n_e + 1)
    first = dedupe_slices(data, offs).astype(it)  # per entry, its value's first entry
    is_first = _is_self(first)
    n_uniq = int(np.count_nonzero(is_first))
    # per row, its value's number (in order of first entries); None: row i is value i
    row_uid: np.ndarray | None = ids
    if n_uniq < n_e:
        uid = np.cumsum(is_first, dtype=it)
        uid -= 1
        entry_uid = uid[first]
        del uid
        row_uid = entry_uid if ids is None else entry_uid[ids]
        del entry_uid
    del first
    rows = n_e if row_uid is None else len(row_uid)
    keep_mask = is_first  # the entries kept: one for each value some row holds
    if row_uid is not None:
        used = np.zeros(n_uniq, dtype=bool)
        used[row_uid] = True
        if not used.all():
            keep_mask = is_first.copy()
            keep_mask[is_first] = used
            renum = np.cumsum(used, dtype=it)
            renum -= 1
            row_uid = renum[row_uid]
            del renum
        del used
    n_u = int(np.count_nonzero(keep_mask))
    keep = None if n_u == n_e else _nonzero(keep_mask, it)  # None: every entry
    del is_first, keep_mask
    # per row, the entry holding its value (None: row i is entry i, or holds its bytes)
    rows_entry = None
    if ids is not None:
        assert row_uid is not None
        rows_entry = row_uid if keep is None else keep[row_uid]
    ubytes = _span_bytes(offs, keep)
    abytes = _span_bytes(offs, rows_entry) if rows else 0
    size_ids = (ubytes + (n_u + 1) * narrow_uint(ubytes).itemsize
                + rows * narrow_uint(max(n_u - 1, 0)).itemsize)  # fmt: skip
    size_all = abytes + (rows + 1) * narrow_uint(abytes).itemsize
    meta: dict[str, Any] = {"pool": "identity"}
    if n_u < rows and size_ids < size_all:
        assert row_uid is not None
        del rows_entry
        data, offs = gather_slices(data, offs, keep if keep is not None else np.arange(n_e))
        _put_uints(row_uid, out, name + ".ids")
        meta["pool"] = "ids"
    elif rows_entry is not None and not (len(rows_entry) == n_e and _is_arange(rows_entry)):
        del row_uid, keep
        data, offs = gather_slices(data, offs, rows_entry)
    elif ids is None and row_uid is not None:
        # row i is entry i, some equal to earlier ones: taking each row's first entry of
        # its value gives the bytes of the entries as they lie (no copy)
        lo, hi = int(offs[0]), int(offs[-1])
        data = data[lo:hi]
        if lo:
            offs = offs - lo
    out[name + ".pool"] = np.ascontiguousarray(data, dtype=np.uint8)
    _put_uints(offs, out, name + ".poffs")
    if p.table is not None:
        out[name + ".fsym"], out[name + ".flen"] = _fsst.pack(p.table)
        meta["fsst"] = True
    return meta


# --- merging a layered state into a snapshot ----------------------------------------------


@dataclass
class _Source:
    types: dict[str, Any]  # the blob header's types meta
    arrays: dict[str, np.ndarray]
    schema: Schema  # as stored in that blob (a layer keeps references as keys)
    is_layer: bool
    #: per type, the fields whose every null this source left out (a part of an import
    #: stores no bitmap for that: its own schema says so)
    left_out: dict[str, set[str]] = field(default_factory=dict)


@dataclass
class _Plan:
    order: np.ndarray  # new row -> combined row (the sources' rows numbered one after another)
    #: old number -> new ordinal (-1: gone). The old number is what references to the type
    #: hold: a layered ordinal for a keyed type, a combined row for a nested one
    renumber: np.ndarray
    identity: bool  # the snapshot's own rows, unchanged and in place


class _Merge:
    """Joins sources (a snapshot and its delta layers, or the parts of a streamed import)
    type by type: a plan per type says which rows the result keeps, in which order."""

    def __init__(self, schema: Schema, sources: list[_Source], state: Any = None):
        self.state = state
        self.schema = schema
        self.sources = sources
        self.counts = {
            t.name: [int((s.types.get(t.name) or {}).get("count", 0)) for s in self.sources]
            for t in self.schema
        }
        self.starts = {n: _starts(c) for n, c in self.counts.items()}
        self.plans: dict[str, _Plan] = {}
        #: a keyed type's joined key column, read once for the duplicate check, the key
        #: hashes and the column itself (dropped once the type is written)
        self._keys: dict[str, Node] = {}

    @classmethod
    def of_state(cls, state: Any) -> _Merge:
        base = getattr(state, "base", state)
        schema: Schema = base.stored_schema
        sources = [_Source(base.blob.header["types"], base.blob.arrays, schema, False)]
        for layer in getattr(state, "layers", ()):
            sources.append(_Source(layer.blob.header["types"], layer.blob.arrays,
                                   layer.state.stored_schema, True))  # fmt: skip
        m = cls(schema, sources, state)
        m.base = base
        return m

    def plan(self, *, every_row: bool = False) -> None:
        """``every_row``: keep every row of every source, in order (joining parts)."""
        overlays = getattr(self.state, "_overlays", {})
        for t in self.schema:
            if t.key is None:
                continue
            if every_row:
                order = np.arange(self.starts[t.name][-1], dtype=np.int64)
                self.plans[t.name] = _Plan(order, order, False)
            else:
                self.plans[t.name] = self._keyed_plan(t.name, overlays.get(t.name))
        for t in _nested_order(self.schema):  # nested types: the rows still pointed at
            c = self.counts[t.name]
            used = np.zeros(self.starts[t.name][-1], dtype=bool)
            for parent, f in _record_fields(self.schema, t.name):
                if self.plans[parent.name].identity and not any(c[1:]):
                    used[: c[0]] = True  # an unchanged parent points where it pointed
                    continue
                _mark(f.type, self.field(parent, f, renumber_nested=False), t.name, used)
            order = np.flatnonzero(used)
            renumber = np.full(len(used), -1, dtype=_idx_dtype(len(used)))
            renumber[order] = np.arange(len(order), dtype=renumber.dtype)
            ident = len(order) == c[0] and (not len(order) or int(order[-1]) == len(order) - 1)
            self.plans[t.name] = _Plan(order, renumber, ident)

    def _keyed_plan(self, name: str, ov: Any) -> _Plan:
        starts = self.starts[name]
        nb = self.counts[name][0]
        if ov is None or not len(ov):
            order = np.arange(nb, dtype=np.int64)
            return _Plan(order, order, True)
        # layered ordinal -> combined row: a snapshot row is itself; a layer row follows
        src = np.full(ov.next_ord, -1, dtype=np.int64)
        src[:nb] = np.arange(nb, dtype=np.int64)
        if ov.removed:
            src[np.fromiter(ov.removed, np.int64, len(ov.removed))] = -1
        if ov.entries:
            ords = np.fromiter(ov.entries.keys(), np.int64, len(ov.entries))
            rows = np.fromiter((starts[li + 1] + lo for li, lo in ov.entries.values()),
                               np.int64, len(ov.entries))  # fmt: skip
            src[ords] = rows
        live = src >= 0
        order = src[live]
        del src
        renumber = np.full(ov.next_ord, -1, dtype=_idx_dtype(ov.next_ord))
        renumber[live] = np.arange(len(order), dtype=renumber.dtype)
        return _Plan(order, renumber, False)

    def moved(self, t: TypeDef) -> bool:
        """Whether ``t`` must be rewritten: its rows or a target's ordinals changed."""
        if not self.plans[t.name].identity:
            return True
        return any(not self.plans[x].identity for x in _targets(t))

    def field(self, t: TypeDef, f: Any, *, renumber_nested: bool = True) -> Node:
        """Field ``f`` of ``t`` for the new snapshot's rows: the sources joined and taken
        in the plan's order, references renumbered, nested ordinals renumbered too (or,
        with ``renumber_nested=False``, left in their combined numbering, for marking)."""
        if t.key is not None and t.key == (f.name,) and renumber_nested:
            node = self._keys.get(t.name)
            if node is None:
                node = self._keys[t.name] = self._field(t, f, True)
            return node
        return self._field(t, f, renumber_nested)

    def forget(self, t: TypeDef) -> None:
        """Drop what was kept of ``t`` once it is written."""
        self._keys.pop(t.name, None)

    def _field(self, t: TypeDef, f: Any, renumber_nested: bool) -> Node:
        nodes = []
        for si, s in enumerate(self.sources):
            n = self.counts[t.name][si]
            tmeta = s.types.get(t.name)
            if tmeta is None or n == 0:
                continue
            stored = next(x for x in s.schema[t.name].fields if x.name == f.name)
            name = f"{t.name}/{f.name}"
            node = read_node(stored.type, tmeta["columns"][f.name], s.arrays, name, n)
            all_left_out = f.name in s.left_out.get(t.name, ())
            if node.nulls is not None and node.absent is None and all_left_out:
                node.absent = node.nulls.copy()
            nodes.append(self._fix(f.type, stored.type, node, si))
        if not nodes:
            return _empty(f.type)
        joined = concat(f.type, nodes)
        nodes.clear()  # the sources' parts go before the take makes its copy
        node = _take_node(joined, self.plans[t.name].order)
        del joined
        if renumber_nested:
            node = self._renumber_nested(f.type, node)
        return node

    def _fix(self, ft: FieldType, stored: FieldType, node: Node, si: int) -> Node:
        """One source's column with references as new ordinals and nested ordinals in
        their type's combined numbering."""
        v = node.vals
        if ft.kind == "ref":
            assert ft.target is not None
            tplan = self.plans[ft.target]
            if not self.sources[si].is_layer:  # a snapshot ordinal is a layered ordinal
                new = _mapped(tplan.renumber, v.a, node.nulls)
            else:
                new = self._resolve_keys(ft.target, stored, node, tplan)
            if len(new) and int(new.min()) < 0:
                raise FormatError(f"a reference to {ft.target} points at a record that is gone")
            return Node(Ints(new.astype(np.int64, copy=False)), node.n, node.nulls, node.absent)
        if ft.kind == "record":
            assert ft.target is not None
            off = self.starts[ft.target][si]
            return Node(Ints(v.a + off), node.n, node.nulls, node.absent)
        if isinstance(v, Coll) and (_has(ft, "ref") or _has(ft, "record")):
            assert ft.item is not None and stored.item is not None
            item = self._fix(ft.item, stored.item, v.item, si)
            key = None
            if v.key is not None:
                assert ft.key is not None and stored.key is not None
                key = self._fix(ft.key, stored.key, v.key, si)
            return Node(Coll(v.offs, item, key), node.n, node.nulls, node.absent)
        return node

    def _resolve_keys(self, target: str, stored: FieldType, node: Node, tplan: _Plan
                      ) -> np.ndarray:  # fmt: skip
        """A layer's references (its target's keys): new ordinals. Python per reference,
        but only a layer's rows: in proportion to the change."""
        ordinal_of = self.state[target].ordinal_of
        keys = _py_values(stored, node)
        nulls = node.nulls
        out = np.zeros(len(keys), dtype=np.int64)
        for i, k in enumerate(keys):
            if nulls is not None and nulls[i]:
                continue
            o = ordinal_of(k)
            out[i] = tplan.renumber[o] if 0 <= o < len(tplan.renumber) else -1
        return out

    def _renumber_nested(self, ft: FieldType, node: Node) -> Node:
        v = node.vals
        if ft.kind == "record":
            assert ft.target is not None
            a = _mapped(self.plans[ft.target].renumber, v.a, node.nulls)
            return Node(Ints(a), node.n, node.nulls, node.absent)
        if isinstance(v, Coll) and _has(ft, "record"):
            assert ft.item is not None
            item = self._renumber_nested(ft.item, v.item)
            key = None
            if v.key is not None:
                assert ft.key is not None
                key = self._renumber_nested(ft.key, v.key)
            return Node(Coll(v.offs, item, key), node.n, node.nulls, node.absent)
        return node

    def key_hashes(self, t: TypeDef) -> np.ndarray:
        """CRC-32 of every new row's key bytes (as :func:`nearstate.index.key_bytes`)."""
        assert t.key is not None
        if len(t.key) == 1:
            f = next(x for x in t.fields if x.name == t.key[0])
            if f.type.kind in ("int", "str"):
                v = self.field(t, f).vals
                if isinstance(v, Ints):
                    return crc32_ints(v.a)
                if isinstance(v, Pool) and not v.bigint:
                    data, offs = v.data, v.offs
                    if v.table is not None:
                        data, offs = fsst_decode_slices(data, offs, v.table)
                    h = crc32_slices(data, offs)
                    return h if v.ids is None else h[v.ids]
        # other keys (composite, bool, bytes, datetime, beyond 64 bits): each in Python
        keys = self.py_keys(t)
        return np.fromiter((zlib.crc32(key_bytes(k)) for k in keys), np.uint32, len(keys))

    def py_keys(self, t: TypeDef) -> list[Any]:
        """Every new row's key as a Python value (one object per row: the rare key kinds)."""
        assert t.key is not None
        cols = []
        for kf in t.key:
            f = next(x for x in t.fields if x.name == kf)
            cols.append(_py_values(f.type, self.field(t, f)))
        return cols[0] if len(cols) == 1 else list(zip(*cols, strict=True))

    def duplicate_key(self, t: TypeDef) -> tuple[int, int] | None:
        """Rows ``(first, again)`` holding the same key, or None (joined parts only)."""
        assert t.key is not None
        v = None
        if len(t.key) == 1:
            f = next(x for x in t.fields if x.name == t.key[0])
            v = self.field(t, f).vals
        if isinstance(v, Ints):
            order = np.argsort(v.a, kind="stable")
            same = np.flatnonzero(v.a[order][1:] == v.a[order][:-1])
            if not len(same):
                return None
            i = int(same[0])
            return int(order[i]), int(order[i + 1])
        if isinstance(v, Pool) and not v.bigint:
            first = dedupe_slices(v.data, v.offs)
            n_e = len(first)
            if v.ids is None:
                again = np.flatnonzero(first != np.arange(n_e))
                return None if not len(again) else (int(first[again[0]]), int(again[0]))
            uid = first[v.ids]
            order = np.argsort(uid, kind="stable")
            same = np.flatnonzero(uid[order][1:] == uid[order][:-1])
            if not len(same):
                return None
            i = int(same[0])
            return int(order[i]), int(order[i + 1])
        seen: dict[Any, int] = {}
        for i, k in enumerate(self.py_keys(t)):
            j = seen.setdefault(k, i)
            if j != i:
                return j, i
        return None


def merged_snapshot(
    state: Any,
    *,
    dataset: str,
    version: int,
    tags: dict[str, str],
    created: float,
    spill: Spill | None = None,
) -> tuple[dict[str, Any], Sections]:
    """``(header, sections)`` of a snapshot holding the records of ``state`` (a
    LayeredState; a plain ReadState is copied), made by merging columns. ``spill``: move
    each finished section of at least ``spill.min_bytes`` out of the heap into a file
    (see :class:`Spill`; keep it open until the sections are written)."""
    m = _Merge.of_state(state)
    m.plan()
    types_meta, sections = _write(m, m.base.blob.header["types"], m.base.blob.arrays, spill)
    header = {
        "kind": "snapshot", "dataset": dataset, "version": version, "created": created,
        "tags": dict(tags), "schema": m.schema.to_json(), "types": types_meta,
    }  # fmt: skip
    return header, sections


class DuplicateKeyError(SchemaError):
    """Two joined parts hold the same key: ``rows`` are its first and second rows."""

    def __init__(self, type_name: str, rows: tuple[int, int]):
        self.type_name = type_name
        self.rows = rows
        super().__init__(f"{type_name}: duplicate key (rows {rows[0]} and {rows[1]})")


def join_parts(
    schema: Schema,
    parts: list[tuple[dict[str, Any], Sections]],
    left_out: list[dict[str, set[str]]] | None = None,
) -> tuple[dict[str, Any], Sections]:
    """The types meta and sections of every part's records, one part after another (as
    :meth:`WriteState.build` gives them: a streamed import builds a part at a time with
    the same ``learned`` tables). ``left_out``: per part, per type, the fields whose nulls
    were all left out of their records. Raises :class:`DuplicateKeyError` when two parts
    hold one key."""
    sources = [
        _Source(tm, _arrays(secs), schema, False, (left_out or [{}] * len(parts))[i])
        for i, (tm, secs) in enumerate(parts)
    ]
    m = _Merge(schema, sources)
    m.plan(every_row=True)
    for t in schema:
        if t.key is not None and len(parts) > 1:
            dup = m.duplicate_key(t)
            if dup is not None:
                raise DuplicateKeyError(t.name, dup)
    return _write(m, {}, {})


def _arrays(sections: Sections) -> dict[str, np.ndarray]:
    return {k: v if isinstance(v, np.ndarray) else np.frombuffer(v, np.uint8)
            for k, v in sections.items()}  # fmt: skip


class Spill:
    """A temporary file that finished sections move to, mapped back read-only: a merge
    then holds in its heap the column being joined, not the whole new snapshot (the
    mapped pages are the page cache's, which the kernel can write back and drop).
    ``min_bytes``: smaller sections stay in the heap."""

    def __init__(self, directory: str | None = None, min_bytes: int = 1 << 16):
        import tempfile

        self.file = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115 (closed by close())
        self.min_bytes = min_bytes
        self.at = 0

    def move(self, sections: Sections, names: list[str]) -> None:
        for name in names:
            a = sections[name]
            if not isinstance(a, np.ndarray) or a.nbytes < self.min_bytes:
                continue
            a = np.ascontiguousarray(a)
            self.at += -self.at % 4096
            self.file.seek(self.at)
            self.file.write(memoryview(a).cast("B"))
            self.file.flush()
            sections[name] = np.memmap(self.file, dtype=a.dtype, mode="r", offset=self.at,
                                       shape=a.shape)  # fmt: skip
            self.at += a.nbytes

    def close(self) -> None:
        self.file.close()  # the mapped sections stay readable until they are let go

    def __enter__(self) -> Spill:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _write(m: _Merge, base_types: dict[str, Any], base_arrays: dict[str, Any],
           spill: Spill | None = None) -> tuple[dict[str, Any], Sections]:  # fmt: skip
    sections: Sections = {}
    types_meta: dict[str, Any] = {}
    for t in m.schema:
        plan = m.plans[t.name]
        if not m.moved(t) and t.name in base_types:
            types_meta[t.name] = base_types[t.name]  # nothing moved: copy the sections
            pre = t.name + "/"
            sections.update((k, v) for k, v in base_arrays.items() if k.startswith(pre))
            continue
        n = len(plan.order)
        cols = {}
        hashes = None
        for f in t.fields:
            before = set(sections)
            cols[f.name] = write_node(f.type, m.field(t, f), sections, f"{t.name}/{f.name}")
            if spill is not None:
                spill.move(sections, [k for k in sections if k not in before])
            if t.key == (f.name,):  # the key's hashes (4 bytes a row) instead of its column
                hashes = m.key_hashes(t)
                m.forget(t)
        meta: dict[str, Any] = {"count": n, "columns": cols}
        if t.key is not None:
            parts = [np.asarray(s.arrays.get(f"{t.name}/#digest", np.zeros(0, np.uint64)),
                                dtype=np.uint64)
                     for s, c in zip(m.sources, m.counts[t.name], strict=True) if c]  # fmt: skip
            joined = (
                parts[0] if len(parts) == 1 else np.concatenate(parts or [np.zeros(0, np.uint64)])
            )
            digs = joined[plan.order]
            del joined, parts
            sections[f"{t.name}/#digest"] = digs
            meta["checksum"] = _digest.fmt(_digest.checksum_of(digs))
            del digs
            if spill is not None:
                spill.move(sections, [f"{t.name}/#digest"])
            if hashes is None:
                hashes = m.key_hashes(t)
            m.forget(t)
            sections[f"{t.name}/#pk"], sections[f"{t.name}/#pktag"] = pk_tables(hashes)
            del hashes
            if spill is not None:
                spill.move(sections, [f"{t.name}/#pk", f"{t.name}/#pktag"])
        types_meta[t.name] = meta
    return types_meta, sections


def _starts(counts: list[int]) -> list[int]:
    out = [0]
    for c in counts:
        out.append(out[-1] + c)
    return out


def _nested_order(schema: Schema) -> list[TypeDef]:
    """Key-less (nested) types, each after every type that holds it."""
    nested = [t for t in schema if t.key is None]
    done: set[str] = {t.name for t in schema if t.key is not None}
    out: list[TypeDef] = []
    while len(out) < len(nested):
        progressed = False
        for t in nested:
            if t.name not in done and all(
                p.name in done for p, _ in _record_fields(schema, t.name)
            ):
                out.append(t)
                done.add(t.name)
                progressed = True
        if not progressed:  # pragma: no cover - the schema refuses self-containing types
            raise SchemaError("nested record types contain each other")
    return out


def _record_fields(schema: Schema, target: str) -> list[tuple[TypeDef, Any]]:
    return [(t, f) for t in schema for f in t.fields if _holds(f.type, target)]


def _holds(ft: FieldType | None, target: str) -> bool:
    if ft is None:
        return False
    if ft.kind == "record" and ft.target == target:
        return True
    return _holds(ft.item, target) or _holds(ft.key, target)


def _targets(t: TypeDef) -> set[str]:
    out: set[str] = set()

    def walk(ft: FieldType | None) -> None:
        if ft is None:
            return
        if ft.kind in ("ref", "record") and ft.target:
            out.add(ft.target)
        walk(ft.item)
        walk(ft.key)

    for f in t.fields:
        walk(f.type)
    return out


def _has(ft: FieldType | None, kind: str) -> bool:
    if ft is None:
        return False
    return ft.kind == kind or _has(ft.item, kind) or _has(ft.key, kind)


def _mapped(remap: np.ndarray, a: np.ndarray, nulls: np.ndarray | None) -> np.ndarray:
    """``remap[a]`` as int64, with 0 where a value is null (its placeholder points
    nowhere)."""
    if nulls is None:
        return remap[a].astype(np.int64, copy=False)
    out = np.zeros(len(a), dtype=np.int64)
    out[~nulls] = remap[a[~nulls]]
    return out


def _mark(ft: FieldType, node: Node, target: str, used: np.ndarray) -> None:
    v = node.vals
    if ft.kind == "record" and ft.target == target:
        used[v.a if node.nulls is None else v.a[~node.nulls]] = True
    elif isinstance(v, Coll):
        assert ft.item is not None
        _mark(ft.item, v.item, target, used)
        if v.key is not None:
            assert ft.key is not None
            _mark(ft.key, v.key, target, used)


def _py_values(ft: FieldType, node: Node) -> list[Any]:
    """A small column's values as Python objects (a layer's reference keys)."""
    import datetime as _dt

    from .encoding import EPOCH, EPOCH_UTC

    v = node.vals
    if isinstance(v, Ints):
        if ft.kind == "datetime":
            epoch = EPOCH_UTC if v.tz else EPOCH
            return [epoch + _dt.timedelta(microseconds=x) for x in v.a.tolist()]
        return v.a.tolist()
    if isinstance(v, Bools):
        return [bool(x) for x in v.a.tolist()]
    if isinstance(v, Floats):
        return v.a.tolist()
    if isinstance(v, Pool):
        entries = _entries(v)
        vals = entries if v.ids is None else [entries[i] for i in v.ids.tolist()]
        if v.bigint:
            return [int(x) for x in vals]
        if ft.kind == "str":
            return [str(x, UTF8, SURR) for x in vals]
        return vals
    raise FormatError(f"a reference kept as a {ft.kind} key cannot be resolved")


def pk_tables(hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The primary-key slot table and tags for keys with these CRC-32 hashes, in ordinal
    order (the layout of :func:`nearstate.index.build_pk_tables`)."""
    return build_pk_tables(None, len(hashes), hashes=hashes)


def _empty(ft: FieldType) -> Node:
    """A column of no rows."""
    kind = ft.kind
    if kind in ("int", "datetime", "record", "ref"):
        v: Any = Ints(np.zeros(0, np.int64), False if kind == "datetime" else None)
    elif kind == "float":
        v = Floats(np.zeros(0))
    elif kind == "bool":
        v = Bools(np.zeros(0, np.uint8))
    elif kind in ("str", "bytes"):
        v = Pool(np.zeros(0, np.uint8), np.zeros(1, np.int64), None)
    elif kind == "text":
        v = Text(np.zeros(0, np.uint8), np.zeros(1, np.int64), None)
    else:
        assert ft.item is not None
        v = Coll(np.zeros(1, np.int64), _empty(ft.item), None if ft.key is None else _empty(ft.key))
    return Node(v, 0)
