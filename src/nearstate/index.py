"""Indexes: the primary-key hash table stored in every snapshot, hash indexes built on
demand over any field or tuple of fields, and the sorted entries of the ordered indexes
(:mod:`nearstate.ordered` answers range, prefix and IN queries over them).

The primary-key table is open addressing with linear probing over slots holding
``ordinal + 1`` (0 = empty) in the narrowest unsigned width, at most three quarters full;
the slot of a hash is ``hash % size``. The hash is CRC-32 of the key's canonical
bytes (:func:`key_bytes`): stable across processes and machines, so the table is written
once by the producer and used in place, without rebuilding, by every reader.

Over ~600 lines, barely, on purpose: the primary-key table, the hash indexes and the
ordered indexes' sorted entries are all built from a column's stored sections by the
same scans and sorted-array helpers.
"""

from __future__ import annotations

import datetime as _dt
import sys
import threading
import zlib
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar

import numpy as np

from ._native import core as _core
from .encoding import BLOCK, EPOCH, EPOCH_UTC, ColumnContext, narrow_uint, open_column
from .errors import FormatError, SchemaError
from .schema import FieldType

if TYPE_CHECKING:
    from .encoding import Column

_I = TypeVar("_I")


def key_bytes(key: Any) -> bytes:
    """Canonical bytes of a primary key value (a tuple for composite keys)."""
    if type(key) is tuple:
        return b"\x1e".join(_one(k) for k in key)
    return _one(key)


def _one(k: Any) -> bytes:
    if isinstance(k, str):
        return k.encode("utf-8", "surrogatepass")
    if isinstance(k, bool):
        return b"\x01T" if k else b"\x01F"
    if isinstance(k, int):
        return b"%d" % k
    if isinstance(k, (bytes, bytearray, memoryview)):
        return bytes(k)
    if isinstance(k, _dt.datetime):
        if k.tzinfo is not None:  # the same instant, whatever the zone it is given in
            k = k.astimezone(_dt.UTC)
        return k.isoformat().encode()
    raise SchemaError(f"{type(k).__name__} values cannot be keys")


def table_size(n: int) -> int:
    """Slots for ``n`` keys: load factor at most 0.75."""
    return n * 4 // 3 + 8


def build_pk_tables(
    keys: Iterable[bytes] | None, n: int, *, hashes: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The slot table for ``n`` keys (canonical bytes, in ordinal order) and its *tags*:
    per slot the top byte of the CRC of the key it holds. A probe compares the tag before
    the key, so of the ~2.5 slots a hit visits at load 3/4 it decodes and compares about
    one stored key (section ``#pktag``; a table without it is probed without tags).
    ``hashes``: the keys' CRC-32s, already computed (``keys`` is then not read)."""
    if hashes is None:
        assert keys is not None
        hashes = np.fromiter((zlib.crc32(k) for k in keys), dtype=np.uint32, count=n)
    size = table_size(n)
    if _core is not None and hasattr(_core, "pk_slots"):
        table = np.frombuffer(
            _core.pk_slots(np.ascontiguousarray(hashes, dtype=np.uint32), size), np.uint64
        )
        return _tagged(table, hashes, n)
    table = np.zeros(size, dtype=np.uint64)
    pos = hashes.astype(np.int64) % size
    pending = np.arange(n, dtype=np.int64)
    won = np.zeros(n, dtype=np.bool_)
    while len(pending):
        slots = pos[pending]
        free = table[slots] == 0
        cand, cslots = pending[free], slots[free]
        uniq, first = np.unique(cslots, return_index=True)
        winners = cand[first]
        table[uniq] = (winners + 1).astype(np.uint64)
        won[winners] = True
        pending = pending[~won[pending]]
        pos[pending] = (pos[pending] + 1) % size
    return _tagged(table, hashes, n)


def _tagged(table: np.ndarray, hashes: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The table in the narrowest width and its tags (see :func:`build_pk_tables`)."""
    from .encoding import narrow_uint

    tags = np.zeros(len(table), dtype=np.uint8)
    full = table != 0
    tags[full] = (hashes[(table[full] - 1).astype(np.int64)] >> 24).astype(np.uint8)
    return table.astype(narrow_uint(n)), tags


def make_pk_lookup(
    table: np.ndarray,
    key_at: Callable[[int], Any],
    *,
    key_column: Column | None = None,
    tags: np.ndarray | None = None,
) -> Callable[[Any], int]:
    """A function ``key -> ordinal`` (or -1) over a stored table.

    ``key_at(ordinal)`` reads the key of a record so probes can confirm a match.
    ``key_column`` is the key's column when the key is one field: an int or str key then
    gets a specialised probe — the compiled one (``nearstate._core.PkIndex``, skipping
    slots whose ``tags`` byte differs from the key's) when the column is compiled, else
    Python's, which for str keys compares the stored UTF-8 bytes (``key_column.raw``)
    without decoding.
    """
    kind = key_column.ftype.kind if key_column is not None else None
    native = _core is not None and key_column is not None and type(key_column.get) is _core.Col
    if native and kind in ("int", "str"):
        try:
            return _core.PkIndex(table, key_column.get, tags)
        except ValueError:
            pass  # a key column the compiled probe does not handle (nulls): Python's
    slots = memoryview(table)
    size = len(table)
    crc = zlib.crc32

    if kind == "int":

        def lookup_int(key: Any) -> int:
            if type(key) is not int:
                if not isinstance(key, int) or isinstance(key, bool):
                    return -1
                key = int(key)  # an IntEnum member, say
            h = crc(b"%d" % key) % size
            s = slots[h]
            for _ in range(size):  # a damaged table with no empty slot ends too
                if not s:
                    return -1
                if key_at(s - 1) == key:
                    return s - 1
                h = h + 1 if h + 1 < size else 0
                s = slots[h]
            return -1

        return lookup_int

    raw_at = key_column.raw if key_column is not None and kind == "str" else None
    if kind == "str" and raw_at is not None:

        def lookup_str(key: Any) -> int:
            if type(key) is not str:
                if not isinstance(key, str):
                    return -1
                key = str(key)
            kb = key.encode("utf-8", "surrogatepass")
            h = crc(kb) % size
            s = slots[h]
            for _ in range(size):  # a damaged table with no empty slot ends too
                if not s:
                    return -1
                if raw_at(s - 1) == kb:
                    return s - 1
                h = h + 1 if h + 1 < size else 0
                s = slots[h]
            return -1

        return lookup_str

    def lookup(key: Any) -> int:
        try:
            h = crc(key_bytes(key)) % size
        except SchemaError:
            return -1
        s = slots[h]
        for _ in range(size):  # a damaged table with no empty slot ends too
            if not s:
                return -1
            if key_at(s - 1) == key:
                return s - 1
            h = h + 1 if h + 1 < size else 0
            s = slots[h]
        return -1

    return lookup


class HashIndex:
    """Records grouped by the value of a field or a tuple of fields.

    A list or set field is indexed by each of its elements, so ``find(tags="drama")`` finds
    the records whose ``tags`` contain ``"drama"``.
    """

    __slots__ = ("_groups", "fields")

    def __init__(self, fields: Sequence[str], values: Iterable[tuple[int, Any]]):
        self.fields = tuple(fields)
        groups: dict[Any, list[int]] = {}
        for ordinal, v in values:
            groups.setdefault(v, []).append(ordinal)
        self._groups = {k: np.array(v, dtype=np.uint32) for k, v in groups.items()}

    def ordinals(self, value: Any) -> np.ndarray:
        g = self._groups.get(value)
        return g if g is not None else np.zeros(0, dtype=np.uint32)

    def updated(
        self, gone: Iterable[tuple[int, Any]], come: Iterable[tuple[int, Any]]
    ) -> HashIndex:
        """A new index without the ``(ordinal, value)`` pairs ``gone`` and with ``come``
        (this one is shared by an older version: never changed). Costs the groups touched."""
        out = HashIndex.__new__(HashIndex)
        out.fields = self.fields
        groups = dict(self._groups)
        drop: dict[Any, list[int]] = {}
        for o, v in gone:
            drop.setdefault(v, []).append(o)
        add: dict[Any, list[int]] = {}
        for o, v in come:
            add.setdefault(v, []).append(o)
        for v in drop.keys() | add.keys():
            g = groups.get(v, np.zeros(0, dtype=np.uint32))
            if v in drop:
                g = g[~np.isin(g, np.array(drop[v], dtype=np.uint32))]
            if v in add:
                g = np.union1d(g, np.array(add[v], dtype=np.uint32)).astype(np.uint32)
            if len(g):
                groups[v] = g
            else:
                groups.pop(v, None)
        out._groups = groups
        return out

    def __len__(self) -> int:
        return len(self._groups)

    def values(self):
        return self._groups.keys()


class LazyIndexes(Generic[_I]):
    """Per type: indexes (hash or ordered) built on first use, once, safely under many
    threads."""

    def __init__(self, build: Callable[[tuple[str, ...]], _I]):
        self._build = build
        self._built: dict[tuple[str, ...], _I] = {}
        self._lock = threading.Lock()

    def get(self, fields: tuple[str, ...]) -> _I:
        idx = self._built.get(fields)
        if idx is None:
            with self._lock:
                idx = self._built.get(fields)
                if idx is None:
                    idx = self._built[fields] = self._build(fields)
        return idx


# --- ordered indexes: the sorted entries (the queries are in nearstate.ordered) ------------

ORDERED_KINDS = frozenset({"int", "float", "bool", "str", "datetime"})
_US = _dt.timedelta(microseconds=1)


class SortedKeys(NamedTuple):
    """One field's index entries sorted by (key, ordinal) and how to read the keys."""

    domain: str  # "int" (int, bool, datetime µs), "float" or "rank" (str, big ints)
    keys: np.ndarray
    ords: np.ndarray  # uint32
    nv: int  # entries that are ordered (the rest are NaN, last)
    kbase: int = 0
    kmax: int = -1
    word: Callable[[int], Any] = lambda r: None
    nw: int = 0
    tz: bool | None = None
    words: list[Any] | None = None  # the distinct values in order, when held as a list
    wbytes: int = 0  # bytes held to read the distinct values


class _Scan(NamedTuple):
    ords: np.ndarray  # int64, non-decreasing
    vals: np.ndarray | list  # int64, float64, pool entry ids (str), or Python values
    tz: bool | None = None
    entries: tuple[Callable[[int], str], int] | None = None  # str: decode entry i, count
    distinct: bool = False  # str: no pool entry repeats


def check_orderable(where: str, ft: FieldType) -> FieldType:
    """The type an ordered index orders (the element type of a list or set); SchemaError
    naming the field when it has none."""
    et = ft.item if ft.kind in ("list", "set") and ft.item is not None else ft
    if et.kind not in ORDERED_KINDS:
        what = f"{ft.kind} of {et.kind}" if et is not ft else et.kind
        raise SchemaError(
            f"{where}: {what} fields have no ordered index (ordered kinds: int, float, bool, "
            "str, datetime, and lists or sets of them)"
        )
    return et


def ordered_keys(
    where: str,
    column: Column,
    count: int,
    sections: tuple[dict[str, Any], ColumnContext, str] | None = None,
) -> SortedKeys:
    """The entries of an ordered index on ``column`` over ordinals ``0..count-1``, sorted.

    ``sections`` (the column's meta, the blob's arrays and its section name) lets them be
    read straight from the stored layout with numpy; without it, or where the layout is
    one numpy does not read (big ints), each value is read with ``column.get``.
    """
    ft = column.ftype
    et = check_orderable(where, ft)
    scan = None
    if sections is not None:
        meta, ctx, name = sections
        try:
            scan = _scan(ft, meta, ctx, name, count)
        except (IndexError, KeyError, TypeError, ValueError) as e:
            raise FormatError(f"column {name!r} is malformed: {e!r}") from e
    if scan is None:
        scan = _scan_values(ft, column.get, count)
    return _sorted(et.kind, scan, count, ft.kind in ("list", "set"))


def _uints(ctx: ColumnContext, name: str, n: int) -> np.ndarray:
    """The first ``n`` values of an integer section (plain or blocked) as uint64."""
    v = ctx.array(name).reshape(-1)
    if len(v) < n:
        raise FormatError(f"section {name!r}: {len(v)} values, {n} expected")
    a = v[:n].astype(np.uint64)
    blk = ctx.blocks(name)
    if blk is not None:
        b = blk.reshape(-1)
        if len(b) * BLOCK < n:
            raise FormatError(f"section {name!r}: {len(b)} block bases for {n} values")
        b = b[: -(-n // BLOCK)].astype(np.uint64)
        full = n // BLOCK * BLOCK
        a[:full].reshape(-1, BLOCK)[...] += b[: full // BLOCK, None]
        if full < n:
            a[full:] += b[full // BLOCK]
    return a


def _ints(meta: dict[str, Any], ctx: ColumnContext, name: str, n: int) -> np.ndarray:
    a = _uints(ctx, name, n)
    a += np.uint64(int(meta.get("base", 0)) & 0xFFFF_FFFF_FFFF_FFFF)  # wraps as stored
    return a.view(np.int64)


def _scan(ft: FieldType, meta: dict[str, Any], ctx: ColumnContext, name: str, count: int):
    """Every non-null value of a stored column with its ordinal (None: a layout this does
    not read; the caller reads values one by one instead)."""
    present = None
    sparse = bool(meta.get("sparse"))
    nvals = count
    if meta.get("nulls"):
        bits = np.unpackbits(
            ctx.array(name + ".nulls").reshape(-1).view(np.uint8), count=count, bitorder="little"
        )
        present = np.flatnonzero(bits == 0)
        if sparse:
            nvals = len(present)
    kind = ft.kind
    if kind in ("list", "set"):
        assert ft.item is not None
        offs = _uints(ctx, name + ".offs", nvals + 1).astype(np.int64)
        lengths = np.diff(offs)
        if len(lengths) and lengths.min() < 0:
            raise FormatError(f"column {name!r}: offsets go backwards")
        inner = _scan(ft.item, meta["item"], ctx, name + "[]", int(offs[-1]))
        if inner is None:
            return None
        owners = present if sparse and present is not None else np.arange(nvals)
        return inner._replace(ords=np.repeat(owners, lengths)[inner.ords])
    tz = None
    entries = None
    if kind in ("int", "datetime"):
        if meta.get("bigint"):
            return None
        vals = _ints(meta, ctx, name, nvals)
        if kind == "datetime":
            tz = bool(meta.get("tz"))
    elif kind == "bool":
        vals = (_uints(ctx, name, nvals) != 0).astype(np.int64)
    elif kind == "float":
        if "scale" in meta:  # as the encoder checked: ints / scale is the value, bit for bit
            vals = _ints(meta, ctx, name, nvals).astype(np.float64) / float(meta["scale"])
        else:
            raw = ctx.array(name).reshape(-1)
            if len(raw) < nvals:
                raise FormatError(f"section {name!r}: {len(raw)} values, {nvals} expected")
            vals = raw[:nvals].astype(np.float64)
    elif kind == "str":
        if meta.get("pool") == "ids":
            vals = _uints(ctx, name + ".ids", nvals).astype(np.int64)
        else:
            vals = np.arange(nvals, dtype=np.int64)
        n_entries = len(ctx.array(name + ".poffs").reshape(-1)) - 1
        if len(vals) and (vals.max() >= n_entries):
            raise FormatError(f"column {name!r}: a pool id beyond its {n_entries} entries")
        entry_meta = {"pool": "identity", "fsst": bool(meta.get("fsst"))}
        entries = (open_column(FieldType("str"), entry_meta, ctx, name).get, n_entries)
    else:
        return None
    if present is None:
        ords = np.arange(count, dtype=np.int64)
    else:
        ords = present
        if not sparse:
            vals = vals[present]
    return _Scan(ords, vals, tz, entries, meta.get("pool") == "ids")


def _scan_values(ft: FieldType, get: Callable[[int], Any], count: int) -> _Scan:
    """Every non-null value with its ordinal, read one record at a time."""
    ords: list[int] = []
    vals: list[Any] = []
    if ft.kind in ("list", "set"):
        for o in range(count):
            for x in dict.fromkeys(get(o) or ()):
                if x is not None:
                    ords.append(o)
                    vals.append(x)
    else:
        for o in range(count):
            v = get(o)
            if v is not None:
                ords.append(o)
                vals.append(v)
    return _Scan(np.array(ords, dtype=np.int64), vals)


def _sorted(kind: str, scan: _Scan, count: int, multi: bool) -> SortedKeys:
    ords, vals = scan.ords, scan.vals
    if scan.entries is not None:  # str from a pool: rank the distinct entries
        eget, n_entries = scan.entries
        rank, first = _rank_strings([eget(i) for i in range(n_entries)], scan.distinct)
        went = memoryview(first.astype(np.uint32 if n_entries < 2**32 else np.uint64))
        keys, ords_s, kmax = _sort_ints(rank[vals], ords, count, multi)
        return SortedKeys("rank", keys, ords_s, len(ords_s), 0, kmax, lambda r: eget(went[r]),
                          len(first), wbytes=went.nbytes)  # fmt: skip
    if isinstance(vals, list):
        vals, tz, words = _python_values(kind, vals)
        if words is not None:  # str or ints beyond 64 bits: ranks among distinct values
            keys, ords_s, kmax = _sort_ints(vals, ords, count, multi)
            return SortedKeys("rank", keys, ords_s, len(ords_s), 0, kmax, words.__getitem__,
                              len(words), words=words, wbytes=sys.getsizeof(words))  # fmt: skip
    else:
        tz = scan.tz if len(ords) else None  # no values: either kind of datetime compares
    if kind == "float":
        order = np.argsort(vals, kind="stable")  # NaN last
        fkeys = vals[order]
        ords_s = ords[order]
        if multi and len(fkeys):
            keep = np.ones(len(fkeys), dtype=bool)
            keep[1:] = (fkeys[1:] != fkeys[:-1]) | (ords_s[1:] != ords_s[:-1])
            fkeys, ords_s = fkeys[keep], ords_s[keep]
        nv = len(fkeys) - int(np.isnan(fkeys).sum())
        return SortedKeys("float", fkeys, ords_s.astype(np.uint32), nv)
    if not len(vals):
        return SortedKeys("int", np.zeros(0, np.uint8), np.zeros(0, np.uint32), 0, tz=tz)
    kbase = int(vals.min())
    rel = vals.view(np.uint64) - np.uint64(kbase & 0xFFFF_FFFF_FFFF_FFFF)
    keys, ords_s, kmax = _sort_ints(rel, ords, count, multi)
    return SortedKeys("int", keys, ords_s, len(ords_s), kbase, kmax, tz=tz)


def _python_values(kind: str, vals: list[Any]):
    """Values read one by one as numpy keys (and the datetimes' awareness), or ranks and
    the sorted distinct values where numpy cannot hold them (str, ints beyond 64 bits)."""
    tz = None
    if kind == "float":
        return np.array(vals, dtype=np.float64), tz, None
    if kind == "datetime":
        tz = bool(vals) and vals[0].tzinfo is not None
        return np.array([micros(v) for v in vals], dtype=np.int64), tz, None
    if kind in ("int", "bool"):
        try:
            return np.array([int(v) for v in vals], dtype=np.int64), tz, None
        except OverflowError:
            pass
    words = sorted(set(vals))
    rank = {w: r for r, w in enumerate(words)}
    return np.array([rank[v] for v in vals], dtype=np.int64), tz, words


def _rank_strings(strs: list[str], distinct: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per string its rank among the distinct strings (code point order), and per rank
    the index of one string of that rank. ``distinct``: no string repeats (a dictionary
    pool), so a rank is a position in the sorted order."""
    n = len(strs)
    if not n:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    try:
        a = np.array(strs, dtype=np.dtypes.StringDType())  # sorts in C, by UTF-8 bytes
        order = np.argsort(a, kind="stable")
    except (UnicodeEncodeError, AttributeError, TypeError):  # lone surrogates; old numpy
        a = None
        order = np.array(sorted(range(n), key=strs.__getitem__), dtype=np.int64)
    rank = np.empty(n, dtype=np.int64)
    if distinct:
        rank[order] = np.arange(n)
        return rank, order
    new = np.ones(n, dtype=bool)
    if a is not None:
        s = a[order]
        new[1:] = s[1:] != s[:-1]
    else:
        ss = [strs[i] for i in order.tolist()]
        new[1:] = np.fromiter(map(str.__ne__, ss[1:], ss[:-1]), dtype=bool, count=n - 1)
    rank[order] = np.cumsum(new) - 1
    return rank, order[new]


def _sort_ints(rel: np.ndarray, ords: np.ndarray, count: int, multi: bool):
    """Sort entries by (key, ordinal): keys as the narrowest unsigned ints, ordinals as
    uint32, and the largest key. ``rel`` holds non-negative keys; ``ords`` is sorted."""
    n = len(rel)
    if not n:
        return np.zeros(0, np.uint8), np.zeros(0, np.uint32), -1
    rel = rel.astype(np.uint64, copy=False)
    kmax = int(rel.max())
    shift = max(1, (count - 1).bit_length())
    if kmax.bit_length() + shift <= 64:  # one sort of (key << shift | ordinal): no argsort
        comb = rel << np.uint64(shift)
        comb |= ords.astype(np.uint64)
        comb.sort()
        ords_s = comb & np.uint64((1 << shift) - 1)
        comb >>= np.uint64(shift)
        keys = comb
    else:
        order = np.argsort(rel, kind="stable")
        keys, ords_s = rel[order], ords[order]
    if multi:  # a list holding a value twice: one entry
        keep = np.ones(n, dtype=bool)
        keep[1:] = (keys[1:] != keys[:-1]) | (ords_s[1:] != ords_s[:-1])
        keys, ords_s = keys[keep], ords_s[keep]
    return keys.astype(narrow_uint(kmax)), ords_s.astype(np.uint32), kmax


def micros(v: _dt.datetime) -> int:
    return (v - (EPOCH_UTC if v.tzinfo is not None else EPOCH)) // _US


# --- sorted arrays ----------------------------------------------------------------------------


def _clipped(spans, limit: int | None, reverse: bool):
    """The spans ``(i, j)`` in the order asked for (``reverse``: last first), cut so that
    together they hold at most ``limit`` entries (a reversed span keeps its end)."""
    need = limit
    for i, j in reversed(spans) if reverse else spans:
        if need is not None:
            if need <= 0:
                return
            if reverse:
                i = max(i, j - need)
            else:
                j = min(j, i + need)
            need -= j - i
        yield i, j


def slices(a: np.ndarray, spans, limit: int | None, reverse: bool) -> np.ndarray:
    """``a[i:j]`` of each span in order (``reverse``: last first, each reversed), the
    first ``limit`` of them."""
    parts = [a[i:j][::-1] if reverse else a[i:j] for i, j in _clipped(spans, limit, reverse)]
    if not parts:
        return np.zeros(0, dtype=a.dtype)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def first_unique(a: np.ndarray) -> np.ndarray:
    """``a`` without repeats, each kept where it first appears."""
    if len(a) < 2:
        return a
    _, first = np.unique(a, return_index=True)
    if len(first) == len(a):
        return a
    return a[np.sort(first)]


def in_sorted(a: np.ndarray, sorted_b: np.ndarray) -> np.ndarray:
    """Per element of ``a``, whether it is in the sorted array ``sorted_b``."""
    if not len(sorted_b) or not len(a):
        return np.zeros(len(a), dtype=bool)
    pos = np.searchsorted(sorted_b, a)
    return sorted_b[np.minimum(pos, len(sorted_b) - 1)] == a


def slice_positions(spans, limit: int | None, reverse: bool) -> np.ndarray:
    """The positions of the first ``limit`` entries of ``spans`` in the order asked for."""
    parts = []
    for i, j in _clipped(spans, limit, reverse):
        r = np.arange(i, j, dtype=np.int64)
        parts.append(r[::-1] if reverse else r)
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)
