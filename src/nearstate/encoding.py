"""How one field's values are laid out as columns, and how they are read back.

Writing: :func:`encode_column` turns a list of normalised values into named sections
(numpy arrays or bytes) plus a small JSON-able ``meta`` dict that the blob header keeps.
Reading: :func:`open_column` wraps those sections (zero-copy views) in a :class:`Column`
whose ``get(ordinal)`` decodes one value.

Layouts, by kind:

* int, datetime — frame of reference: ``value - base`` in the narrowest unsigned width;
  ints beyond 64 bits fall back to a string pool of their decimal form.
* float — decimal scaling when every value is a decimal of at most nine places (7.2 is
  stored as the integer 72 with scale 10, 38.704022 as 38704022 with scale 10**6, in the
  narrowest width, and read back bit for bit) and that is smaller than the floats; else
  float32 when every value survives the round trip; else float64.
* bool — one byte each.
* str, bytes — a per-field de-duplicated pool (bytes + offsets) and, unless every value is
  distinct, a narrow array of pool ids per record.
* text (long text) — each value compressed alone with a zstd dictionary trained on the
  field, so one record decompresses without its neighbours.
* list, set, dict — offsets into flattened element column(s).
* record, ref — the ordinal of the nested or referenced record.
* nullable — a packed null bitmap beside the values.

Over ~600 lines on purpose: each layout's writer and its reader stand in this one module
(writing above, reading below), so a change to a layout is made, and reviewed, in one
place; :mod:`nearstate.merge` reuses the writers' helpers.
"""

from __future__ import annotations

import datetime as _dt
import math
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import zstandard

from . import fsst as _fsst
from ._native import core as _core
from .errors import FormatError, SchemaError
from .schema import FieldType

Sections = dict[str, Any]  # name -> numpy array or bytes


class Absent:
    """A null that was *left out* of its record rather than given as null (kept apart so a
    JSON export reproduces the record exactly)."""

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = Absent()
Getter = Callable[[int], Any]

UTF8 = "utf-8"
SURR = "surrogatepass"  # lone surrogates survive a round trip
EPOCH = _dt.datetime(1970, 1, 1)
EPOCH_UTC = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
_US = _dt.timedelta(microseconds=1)

TEXT_LEVEL = 3  # as small as level 9 on prose with a dictionary, 3x faster
TEXT_DICT_SIZE = 64 * 1024
TEXT_TRAIN_SAMPLES = 5_000


def narrow_uint(max_value: int) -> np.dtype:
    """The narrowest unsigned dtype that holds ``0..max_value``."""
    for dt in (np.uint8, np.uint16, np.uint32, np.uint64):
        if max_value <= np.iinfo(dt).max:
            return np.dtype(dt).newbyteorder("<")
    raise OverflowError(max_value)


BLOCK_SHIFT = 4  # blocked frame of reference: blocks of 16 values
BLOCK = 1 << BLOCK_SHIFT


def _offsets(lengths: list[int] | np.ndarray) -> np.ndarray:
    lens = np.asarray(lengths, dtype=np.int64)
    offs = np.zeros(len(lens) + 1, dtype=np.int64)
    np.cumsum(lens, out=offs[1:])
    return offs.astype(narrow_uint(int(offs[-1]) if len(offs) else 0))


def put_uints(values: np.ndarray, out: Sections, section: str) -> None:
    """Store non-negative integers under ``section``, in whichever layout is smaller:

    * plain: every value in the narrowest unsigned width that holds the largest;
    * blocked frame of reference: per block of 16 values a base (the block's smallest
      value, ``section.blk``) and per value its difference from that base, each array in
      its own narrowest width. Offsets, sorted keys and clustered values shrink to a byte
      or two per value, and reading one value is still two array reads.
    """
    a = np.asarray(values).astype(np.uint64, copy=False)
    n = len(a)
    top = int(a.max()) if n else 0
    plain = narrow_uint(top)
    if n >= 2 * BLOCK:
        padded = np.concatenate([a, np.full(-n % BLOCK, a[-1], dtype=np.uint64)])
        bases = padded.reshape(-1, BLOCK).min(axis=1)
        rel = a - np.repeat(bases, BLOCK)[:n]
        rw, bw = narrow_uint(int(rel.max())), narrow_uint(int(bases.max()))
        if n * rw.itemsize + len(bases) * bw.itemsize < n * plain.itemsize:
            out[section] = rel.astype(rw)
            out[section + ".blk"] = bases.astype(bw)
            return
    out[section] = a.astype(plain)


def put_offsets(lengths: list[int] | np.ndarray, out: Sections, section: str) -> None:
    """Store the running offsets of ``lengths`` (``len + 1`` values) with :func:`put_uints`."""
    put_uints(_offsets(lengths), out, section)


# --- writing --------------------------------------------------------------------------------


def zero_value(ft: FieldType) -> Any:
    """A placeholder stored where a value is null (never read back)."""
    return {
        "int": 0, "float": 0.0, "bool": False, "str": "", "text": "", "bytes": b"",
        "datetime": EPOCH, "list": [], "set": [], "dict": {}, "record": 0, "ref": 0,
    }[ft.kind]  # fmt: skip


def encode_column(
    ft: FieldType,
    values: list[Any],
    out: Sections,
    name: str,
    *,
    train: bool = True,
    learned: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Encode ``values`` (already normalised for ``ft``) into ``out``; return the meta.

    ``train=False`` compresses text without training a dictionary and keeps string pools
    without a symbol table (training costs tens of milliseconds, which would dominate a
    small delta). ``learned``: what earlier parts of
    the same column chose, by section name — the symbol table of a pool, the dictionary
    of a text field (or None: plain) — reused so that parts encoded one after another
    join without re-encoding; filled in where a column is met first.
    """
    meta: dict[str, Any] = {}
    kinds = set(map(type, values)) if ft.nullable else ()
    if Absent in kinds and type(None) in kinds:
        # both null and left out occur: remember which nulls were left out
        absent = np.fromiter((v is ABSENT for v in values), dtype=np.bool_, count=len(values))
        out[name + ".absent"] = np.packbits(absent, bitorder="little")
        meta["absent"] = True
    if Absent in kinds:
        values = [None if v is ABSENT else v for v in values]
    if ft.nullable and (type(None) in kinds or Absent in kinds):
        nulls = np.fromiter((v is None for v in values), dtype=np.bool_, count=len(values))
        out[name + ".nulls"] = np.packbits(nulls, bitorder="little")
        meta["nulls"] = True
        n_null = int(nulls.sum())
        present = [v for v in values if v is not None]
        if n_null * SPARSE_MIN_NULLS >= len(values):
            # many nulls: measure storing only the values that are there (a rank per 64
            # records maps an ordinal to its value) against placeholders in every null
            rank = null_rank(nulls)
            if ft.kind == "text":  # a null's placeholder costs a zstd frame: always sparse
                sparse_meta = _encode_values(ft, present, out, name, train, learned)
                out[name + ".nrank"] = rank
                return {**meta, **sparse_meta, "sparse": True}
            dense: Sections = {}
            sparse: Sections = {}
            dense_meta = _encode_values(ft, _placeholders(ft, values), dense, name, train,
                                        learned)  # fmt: skip
            sparse_meta = _encode_values(ft, present, sparse, name, train, learned)
            if sections_size(sparse) + rank.nbytes < sections_size(dense):
                out.update(sparse)
                out[name + ".nrank"] = rank
                return {**meta, **sparse_meta, "sparse": True}
            out.update(dense)
            return {**meta, **dense_meta}
        values = _placeholders(ft, values)
    meta.update(_encode_values(ft, values, out, name, train, learned))
    return meta


SPARSE_MIN_NULLS = 20  # consider the sparse layout when at least 1 in 20 values is null


def _placeholders(ft: FieldType, values: list[Any]) -> list[Any]:
    z = zero_value(ft)
    if ft.kind == "datetime" and any(v is not None and v.tzinfo for v in values):
        z = EPOCH_UTC
    return [z if v is None else v for v in values]


def null_rank(nulls: np.ndarray) -> np.ndarray:
    """Nulls before each block of 64 records (the sparse layout's rank directory)."""
    padded = np.zeros(-(-len(nulls) // 64) * 64, dtype=np.int64)
    padded[: len(nulls)] = nulls
    per = padded.reshape(-1, 64).sum(axis=1)
    before = np.concatenate([[0], np.cumsum(per)[:-1]]) if len(per) else per
    return before.astype(narrow_uint(int(per.sum()) if len(per) else 0))


def sections_size(sections: Sections) -> int:
    """The bytes of encoded sections (arrays and bytes)."""
    return sum(v.nbytes if isinstance(v, np.ndarray) else len(v) for v in sections.values())


def _encode_values(
    ft: FieldType,
    values: list[Any],
    out: Sections,
    name: str,
    train: bool,
    learned: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Encode non-null values of one kind; return the meta."""
    meta: dict[str, Any] = {}
    kind = ft.kind
    if kind in ("int", "record", "ref"):
        meta.update(_encode_int(values, out, name))
    elif kind == "datetime":
        meta.update(_encode_datetime(values, out, name))
    elif kind == "float":
        meta.update(put_floats(np.array(values, dtype=np.float64), out, name,
                               lambda s, o, n: _encode_int(s.tolist(), o, n)))  # fmt: skip
    elif kind == "bool":
        out[name] = np.array(values, dtype=np.uint8)
    elif kind == "str":
        meta.update(_encode_pool(values, out, name, learned, train, strs=True))
    elif kind == "bytes":
        meta.update(_encode_pool(values, out, name, learned, train))
    elif kind == "text":
        meta.update(_encode_text(values, out, name, train, learned))
    elif kind in ("list", "set"):
        assert ft.item is not None
        put_offsets([len(v) for v in values], out, name + ".offs")
        flat = [x for v in values for x in v]
        meta["item"] = encode_column(ft.item, flat, out, name + "[]", train=train,
                                     learned=learned)  # fmt: skip
    elif kind == "dict":
        assert ft.item is not None and ft.key is not None
        put_offsets([len(v) for v in values], out, name + ".offs")
        meta["key"] = encode_column(
            ft.key, [k for v in values for k in v], out, name + "{k}", train=train,
            learned=learned,
        )  # fmt: skip
        meta["item"] = encode_column(
            ft.item, [x for v in values for x in v.values()], out, name + "{v}", train=train,
            learned=learned,
        )  # fmt: skip
    else:  # pragma: no cover - the schema validates kinds
        raise AssertionError(kind)
    return meta


def fits_float32(a: np.ndarray) -> bool:
    with np.errstate(over="ignore"):
        back = a.astype(np.float32).astype(np.float64)
    return bool(np.array_equal(back.view(np.int64), a.view(np.int64)))


DECIMAL_DIGITS = 9  # decimal scaling tries 10**0 .. 10**9 (coordinates carry 5-7 digits)
DECIMAL_LIMIT = 2.0**52  # |value| * scale below this: the scaled integer is exact in a double
SCALE_STEP = 1 << 16  # values checked at a time (temporaries stay this size)


def decimal_scale(a: np.ndarray, step: int = SCALE_STEP) -> int | None:
    """The smallest ``10**d`` (``d <= DECIMAL_DIGITS``) with ``round(a * 10**d) / 10**d``
    bit-identical to every value of ``a``, or None (a NaN, an infinity, a -0.0, or no such
    scale). The integers it yields stay below 2**52, so a double holds them exactly and
    ``int / scale`` in either core rounds to the stored value. Checked ``step`` values at a
    time, starting from a few values so that floats that are not decimals fail fast."""
    n = len(a)
    if not n:
        return None
    top = 0.0
    for i in range(0, n, step):
        c = a[i : i + step]
        if not np.all(np.isfinite(c)) or np.any(np.signbit(c) & (c == 0)):
            return None
        top = max(top, float(np.max(np.abs(c))))
    probe = a[:64]
    for digits in range(DECIMAL_DIGITS + 1):
        scale = 10**digits
        if top * scale >= DECIMAL_LIMIT:
            return None
        if not _scales(probe, scale):
            continue
        if all(_scales(a[i : i + step], scale) for i in range(0, n, step)):
            return scale
    return None


def _scales(c: np.ndarray, scale: int) -> bool:
    return bool(np.array_equal((np.round(c * scale) / scale).view(np.int64), c.view(np.int64)))


def put_floats(a: np.ndarray, out: Sections, name: str,
               put_ints: Callable[[np.ndarray, Sections, str], dict[str, Any]],
               step: int = SCALE_STEP) -> dict[str, Any]:  # fmt: skip
    """Store floats under ``name``; return the meta. Decimal scaling where every value
    fits (:func:`decimal_scale`) and the integers, stored by ``put_ints(ints, sections,
    name)``, come out smaller than the floats; else float32 where every value survives the
    round trip; else float64. The encoder and the merge both lay floats out here (each
    with its own way of storing integers), so their bytes are the same."""
    width = 4 if fits_float32(a) else 8
    scale = decimal_scale(a, step)
    if scale is not None:
        s = np.empty(len(a), dtype=np.int64)
        for i in range(0, len(a), step):
            s[i : i + step] = np.round(a[i : i + step] * scale)
        tried: Sections = {}
        meta = put_ints(s, tried, name)
        if sections_size(tried) < width * len(a):
            out.update(tried)
            return {**meta, "scale": scale}
    out[name] = a.astype("<f4" if width == 4 else "<f8")
    return {}


def _encode_int(values: list[int], out: Sections, name: str) -> dict[str, Any]:
    if not values:
        out[name] = np.zeros(0, dtype=np.uint8)
        return {"base": 0}
    lo, hi = min(values), max(values)
    if lo < -(2**63) or hi >= 2**63:
        # beyond 64 bits: keep exact decimal text in a pool
        meta = _encode_pool([str(v).encode() for v in values], out, name)
        meta["bigint"] = True
        return meta
    a = np.array(values, dtype=np.int64)
    # subtract in Python ints' range safely: shift via uint64 wrap-around arithmetic
    shifted = a.view(np.uint64) - np.uint64(lo & 0xFFFFFFFFFFFFFFFF)
    put_uints(shifted, out, name)
    return {"base": lo}


def _encode_datetime(values: list[_dt.datetime], out: Sections, name: str) -> dict[str, Any]:
    aware = any(v.tzinfo is not None for v in values)
    if aware and not all(v.tzinfo is not None for v in values):
        tname, _, fname = name.partition("/")
        raise SchemaError(
            f"{tname}: field {fname!r} mixes naive and timezone-aware datetimes; "
            "a column holds one or the other"
        )
    if aware:
        micros = [(v - EPOCH_UTC) // _US for v in values]
    else:
        micros = [(v - EPOCH) // _US for v in values]
    meta = _encode_int(micros, out, name)
    meta["tz"] = aware
    return meta


FSST_MIN_BYTES = 4096  # smaller pools: a symbol table (up to 2 kB) does not pay
FSST_MAX_RATIO = 0.9  # use the table only where it saves at least a tenth (decode costs)


def _pool_ids(values: list[Any], strs: bool) -> tuple[Any, list[bytes], int]:
    """``(ids, uniques, total bytes)``: each value's bytes (UTF-8 for ``strs``)
    de-duplicated in first-seen order, ``ids[i]`` the position of value i's in uniques."""
    if strs and _core is not None:
        got = _core.str_pool(values)
        if got is not None:
            ids, uniques, total = got
            return np.frombuffer(ids, dtype=np.uint32), uniques, total
    if strs:
        values = [v.encode(UTF8, SURR) for v in values]
    index: dict[bytes, int] = {}
    ids = [index.setdefault(v, len(index)) for v in values]
    return ids, list(index), sum(map(len, values))


def _encode_pool(
    values: list[Any],
    out: Sections,
    name: str,
    learned: dict[str, Any] | None = None,
    train: bool = True,
    strs: bool = False,
) -> dict[str, Any]:
    """A pool of the values (bytes, or str for ``strs``: stored as UTF-8), chosen by
    measured size: de-duplicated with a narrow id per record where that is smaller (a
    dictionary), and each entry compressed with a trained symbol table
    (:mod:`nearstate.fsst`) where that is smaller by a tenth or more (or as ``learned``
    says an earlier part of the column chose)."""
    ids, uniques, abytes = _pool_ids(values, strs)
    meta: dict[str, Any] = {"pool": "identity"}
    if len(uniques) < len(values):
        ubytes = sum(map(len, uniques))
        size_ids = (
            ubytes
            + (len(uniques) + 1) * narrow_uint(ubytes).itemsize
            + len(values) * narrow_uint(len(uniques) - 1).itemsize
        )
        size_all = abytes + (len(values) + 1) * narrow_uint(abytes).itemsize
        if size_ids < size_all:
            put_uints(np.asarray(ids, dtype=np.uint64), out, name + ".ids")
            meta["pool"] = "ids"
        else:
            uniques = [uniques[i] for i in np.asarray(ids).tolist()]  # all, in order
    lengths = [len(u) for u in uniques]
    plain = sum(lengths)
    known = learned is not None and name in learned
    # (``train=False``, a delta's few records: a symbol table costs more than it saves)
    fresh = not known and train and plain >= FSST_MIN_BYTES
    if (known and learned[name] is not None) or fresh:  # type: ignore[index]
        table = learned[name] if known else _fsst.train(uniques)  # type: ignore[index]
        codes, ends = _fsst.encode(table, uniques)
        offs = np.zeros(len(uniques) + 1, dtype=np.uint64)
        offs[1:] = ends
        if known or len(codes) + 9 * len(table) <= FSST_MAX_RATIO * plain:
            out[name + ".pool"] = np.frombuffer(codes, dtype=np.uint8)
            put_uints(offs, out, name + ".poffs")
            out[name + ".fsym"], out[name + ".flen"] = _fsst.pack(table)
            meta["fsst"] = True
            if learned is not None:
                learned[name] = table
            return meta
    if learned is not None:
        learned[name] = None
    out[name + ".pool"] = np.frombuffer(b"".join(uniques), dtype=np.uint8)
    put_offsets(lengths, out, name + ".poffs")
    return meta


def _encode_text(
    values: list[str],
    out: Sections,
    name: str,
    train: bool,
    learned: dict[str, Any] | None = None,
) -> dict[str, Any]:
    # values are encoded to UTF-8 one at a time (never all at once: for millions of long
    # texts a list of their bytes would double the peak memory of writing a snapshot)
    meta: dict[str, Any] = {"level": TEXT_LEVEL}
    dict_data = None
    total = sum(len(v) for v in values)
    known = learned is not None and name in learned
    if known:
        raw = learned[name]  # type: ignore[index]
        dict_data = None if raw is None else zstandard.ZstdCompressionDict(raw)
    elif train and len(values) >= 100 and total >= 64 * 1024:
        step = max(1, len(values) // TEXT_TRAIN_SAMPLES)
        samples = [e for v in values[::step] if (e := v.encode(UTF8, SURR))]
        try:
            dict_data = zstandard.train_dictionary(
                min(TEXT_DICT_SIZE, max(4096, total // 20)), samples
            )
        except zstandard.ZstdError:
            dict_data = None  # too few or too uniform samples: plain zstd per record
    if learned is not None and not known:
        learned[name] = None if dict_data is None else dict_data.as_bytes()
    if dict_data is not None:
        out[name + ".zdict"] = np.frombuffer(dict_data.as_bytes(), dtype=np.uint8)
        meta["dict"] = True
    cctx = zstandard.ZstdCompressor(
        level=TEXT_LEVEL, dict_data=dict_data, write_checksum=False, write_dict_id=False
    )
    compress = cctx.compress
    frames = [compress(v.encode(UTF8, SURR)) for v in values]
    out[name + ".zoffs"] = _offsets([len(f) for f in frames])
    out[name + ".z"] = np.frombuffer(b"".join(frames), dtype=np.uint8)
    return meta


# --- reading --------------------------------------------------------------------------------


class Column:
    """A read-only view of one encoded field: ``get(ordinal)`` decodes a value.

    ``raw`` (str columns only) returns a value's stored UTF-8 bytes without decoding; it
    is made on first use (only the pure core's key probes need it), given as the getter
    or as a function that makes it.
    """

    __slots__ = ("_raw", "_raw_make", "ftype", "get", "left_out", "name", "nbytes")

    def __init__(
        self,
        name: str,
        ftype: FieldType,
        get: Getter,
        nbytes: int,
        raw: Getter | None = None,
        left_out: Callable[[int], bool] | None = None,
        raw_make: Callable[[], Getter] | None = None,
    ):
        self.name = name
        self.ftype = ftype
        self.get = get
        self.nbytes = nbytes
        self._raw = raw
        self._raw_make = raw_make
        #: ``left_out(o)``: the null at ``o`` was left out of its record (None: never)
        self.left_out = left_out

    @property
    def raw(self) -> Getter | None:
        if self._raw is None and self._raw_make is not None:
            self._raw = self._raw_make()
            self._raw_make = None
        return self._raw


class ColumnContext:
    """What a column needs to read: the section arrays and, for records and refs, a way to
    turn a target type's ordinal into a record view (resolved lazily: types may refer to
    each other in cycles)."""

    def __init__(self, arrays: dict[str, np.ndarray], views: Callable[[str], Getter]):
        self.arrays = arrays
        self.views = views

    def array(self, name: str) -> np.ndarray:
        try:
            return self.arrays[name]
        except KeyError:
            raise FormatError(f"blob lacks section {name!r}") from None

    def mv(self, name: str) -> memoryview:
        a = self.array(name)
        return memoryview(a) if a.ndim == 1 else memoryview(a.reshape(-1))

    def blocks(self, name: str) -> np.ndarray | None:
        """The block bases of a blocked integer section (see :func:`put_uints`), or None."""
        return self.arrays.get(name + ".blk")

    def uints(self, name: str) -> tuple[Getter, int]:
        """A Python getter ``i -> value`` of an integer section, plain or blocked, and its
        bytes."""
        v = self.mv(name)
        blk = self.blocks(name)
        if blk is None:
            return v.__getitem__, v.nbytes
        b = memoryview(blk.reshape(-1))
        if len(b) << BLOCK_SHIFT < len(v):
            raise FormatError(f"section {name!r}: {len(b)} block bases for {len(v)} values")
        return (lambda i: b[i >> BLOCK_SHIFT] + v[i]), v.nbytes + b.nbytes

    def nbytes(self, name: str) -> int:
        """Bytes of a section and, if blocked, its block bases."""
        blk = self.blocks(name)
        return self.array(name).nbytes + (0 if blk is None else blk.nbytes)


def open_column(ft: FieldType, meta: dict[str, Any], ctx: ColumnContext, name: str) -> Column:
    """Wrap the sections of one field; decoding happens per ``get``.

    With the compiled core, ``get`` is a native column (``nearstate._core.Col``) for every
    kind but long text and datetimes; without it, a Python closure. Both decode the same
    sections to the same values.
    """
    try:
        get, nbytes = _open(ft, meta, ctx, name)
        raw_make = None
        if ft.kind == "str" and not meta.get("nulls"):

            def raw_make() -> Getter:
                return _open_pool(meta, ctx, name, decode=False, nulls=None)[0]

        left_out = None
        if meta.get("absent"):
            ab = ctx.mv(name + ".absent")
            nbytes += ab.nbytes

            def left_out(o: int) -> bool:
                return bool(ab[o >> 3] >> (o & 7) & 1)

    except (KeyError, TypeError, ValueError) as e:
        raise FormatError(f"column {name!r} is malformed: {e!r}") from e
    return Column(name, ft, get, nbytes, None, left_out, raw_make)


Nulls = tuple[np.ndarray, np.ndarray | None] | None  # (bitmap, rank if sparse) or None


def _open(ft: FieldType, meta: dict[str, Any], ctx: ColumnContext, name: str):
    nulls: Nulls = None
    if meta.get("nulls"):
        bitmap = ctx.array(name + ".nulls")
        rank = ctx.array(name + ".nrank") if meta.get("sparse") else None
        if rank is not None and len(rank) * 64 < len(bitmap) * 8:
            raise FormatError(f"column {name!r}: its null rank is shorter than its bitmap")
        nulls = (bitmap, rank)
    get, nbytes = _open_values(ft, meta, ctx, name, nulls)
    if nulls is not None:
        nbytes += nulls[0].nbytes + (0 if nulls[1] is None else nulls[1].nbytes)
    return get, nbytes


def _nkw(nulls: Nulls) -> dict[str, Any]:
    """The compiled column's arguments for a null bitmap (and rank, when sparse)."""
    if nulls is None:
        return {}
    return {"nulls": nulls[0], "nrank": nulls[1]}


def _with_nulls(get: Getter, nulls: Nulls) -> Getter:
    """A Python getter with the null bitmap applied (native columns apply it themselves).

    Sparse columns store only the values that are there: the value of ordinal ``o`` is
    at ``o`` minus the nulls before it (the rank per 64 records plus a popcount)."""
    if nulls is None:
        return get
    nb = memoryview(nulls[0].reshape(-1))
    if nulls[1] is None:

        def get_or_none(o: int, _nb=nb, _inner=get):
            if _nb[o >> 3] >> (o & 7) & 1:
                return None
            return _inner(o)

        return get_or_none
    rank = memoryview(nulls[1].reshape(-1))

    def get_sparse(o: int, _nb=nb, _inner=get):
        if _nb[o >> 3] >> (o & 7) & 1:
            return None
        start = (o >> 6) << 3
        word = int.from_bytes(_nb[start : start + 8], "little") & ((1 << (o & 63)) - 1)
        return _inner(o - rank[o >> 6] - word.bit_count())

    return get_sparse


def _native_ints(kind: int, meta: dict[str, Any], ctx: ColumnContext, name: str, nulls, **kw):
    return _core.Col(
        kind, name, vals=ctx.array(name), vals_blk=ctx.blocks(name),
        base=int(meta.get("base", 0)), **_nkw(nulls), **kw,
    )  # fmt: skip


def _open_int(meta: dict[str, Any], ctx: ColumnContext, name: str) -> tuple[Getter, int]:
    """A Python getter of a stored integer column (nulls not applied)."""
    if meta.get("bigint"):
        g, n = _open_pool(meta, ctx, name, decode=True, nulls=None)
        return (lambda o: int(g(o))), n
    if _core is not None:
        return _native_ints(_core.INT, meta, ctx, name, None), ctx.nbytes(name)
    v, n = ctx.uints(name)
    base = int(meta.get("base", 0))
    if base == 0:
        return v, n
    return (lambda o: v(o) + base), n


def _open_values(ft: FieldType, meta: dict[str, Any], ctx: ColumnContext, name: str, nulls):
    kind = ft.kind
    native = _core is not None
    if kind in ("int", "float", "bool", "record", "ref") and native and not meta.get("bigint"):
        n = ctx.nbytes(name)
        if kind == "int":
            return _native_ints(_core.INT, meta, ctx, name, nulls), n
        if kind == "bool":
            return _native_ints(_core.BOOL, meta, ctx, name, nulls), n
        if kind == "float":
            if "scale" in meta:
                scale = int(meta["scale"])
                return _native_ints(_core.FLOAT_SCALED, meta, ctx, name, nulls, scale=scale), n
            return _native_ints(_core.FLOAT, meta, ctx, name, nulls), n
        assert ft.target is not None
        col = _native_ints(_core.REF, meta, ctx, name, nulls, resolve=ctx.views, target=ft.target)
        return col, n
    if kind == "int":
        g, n = _open_int(meta, ctx, name)
        return _with_nulls(g, nulls), n
    if kind == "float":
        if "scale" in meta:
            g, n = _open_int(meta, ctx, name)
            scale = int(meta["scale"])
            if scale == 1:
                return _with_nulls(lambda o: float(g(o)), nulls), n
            return _with_nulls(lambda o: g(o) / scale, nulls), n
        v = ctx.mv(name)
        return _with_nulls(v.__getitem__, nulls), v.nbytes
    if kind == "bool":
        v = ctx.mv(name)
        return _with_nulls(lambda o: v[o] != 0, nulls), v.nbytes
    if kind == "datetime":
        g, n = _open_int(meta, ctx, name)
        epoch = EPOCH_UTC if meta.get("tz") else EPOCH
        return _with_nulls(lambda o: epoch + _dt.timedelta(microseconds=g(o)), nulls), n
    if kind == "str":
        return _open_pool(meta, ctx, name, decode=True, nulls=nulls)
    if kind == "bytes":
        return _open_pool(meta, ctx, name, decode=False, nulls=nulls)
    if kind == "text":
        g, n = _open_text(meta, ctx, name)
        return _with_nulls(g, nulls), n
    if kind in ("list", "set"):
        assert ft.item is not None
        item = open_column(ft.item, meta["item"], ctx, name + "[]")
        nbytes = ctx.nbytes(name + ".offs") + item.nbytes
        if native:
            k = _core.LIST if kind == "list" else _core.SET
            col = _core.Col(
                k, name, offs=ctx.array(name + ".offs"), offs_blk=ctx.blocks(name + ".offs"),
                item=item.get, **_nkw(nulls),
            )  # fmt: skip
            return col, nbytes
        offs = ctx.uints(name + ".offs")[0]
        iget = item.get
        if kind == "list":

            def get(o: int):
                return [iget(i) for i in range(offs(o), offs(o + 1))]
        else:

            def get(o: int):
                return {iget(i) for i in range(offs(o), offs(o + 1))}

        return _with_nulls(get, nulls), nbytes
    if kind == "dict":
        assert ft.item is not None and ft.key is not None
        kc = open_column(ft.key, meta["key"], ctx, name + "{k}")
        vc = open_column(ft.item, meta["item"], ctx, name + "{v}")
        nbytes = ctx.nbytes(name + ".offs") + kc.nbytes + vc.nbytes
        if native:
            col = _core.Col(
                _core.DICT, name, offs=ctx.array(name + ".offs"),
                offs_blk=ctx.blocks(name + ".offs"), key=kc.get, item=vc.get, **_nkw(nulls),
            )  # fmt: skip
            return col, nbytes
        offs = ctx.uints(name + ".offs")[0]
        kget, vget = kc.get, vc.get

        def get_dict(o: int):
            return {kget(i): vget(i) for i in range(offs(o), offs(o + 1))}

        return _with_nulls(get_dict, nulls), nbytes
    if kind in ("record", "ref"):
        assert ft.target is not None
        ords, n = _open_int(meta, ctx, name)
        target = ft.target
        views = ctx.views

        def get_ref(o: int):
            return views(target)(ords(o))

        return _with_nulls(get_ref, nulls), n
    raise FormatError(f"column {name!r} has unknown kind {kind!r}")


def _open_pool(meta: dict[str, Any], ctx: ColumnContext, name: str, *, decode: bool, nulls):
    pool_a = ctx.array(name + ".pool")
    has_ids = meta.get("pool") == "ids"
    nbytes = pool_a.nbytes + ctx.nbytes(name + ".poffs")
    if has_ids:
        nbytes += ctx.nbytes(name + ".ids")
    fsym = flen = None
    if meta.get("fsst"):
        fsym, flen = ctx.array(name + ".fsym"), ctx.array(name + ".flen")
        nbytes += fsym.nbytes + flen.nbytes
    if _core is not None:
        col = _core.Col(
            _core.STR if decode else _core.BYTES, name, pool=pool_a,
            poffs=ctx.array(name + ".poffs"), poffs_blk=ctx.blocks(name + ".poffs"),
            ids=ctx.array(name + ".ids") if has_ids else None,
            ids_blk=ctx.blocks(name + ".ids") if has_ids else None,
            fsym=fsym, flen=flen, **_nkw(nulls),
        )  # fmt: skip
        return col, nbytes
    pool = ctx.mv(name + ".pool")
    poffs = ctx.uints(name + ".poffs")[0]
    if fsym is not None:
        dec = _fsst.decoder(_fsst.unpack(fsym, flen, name), name)

        def entry(i: int) -> bytes:
            return dec(bytes(pool[poffs(i) : poffs(i + 1)]))
    else:

        def entry(i: int) -> bytes:
            return bytes(pool[poffs(i) : poffs(i + 1)])

    if has_ids:
        ids = ctx.uints(name + ".ids")[0]
        if decode:

            def get(o: int):
                return str(entry(ids(o)), UTF8, SURR)
        else:

            def get(o: int):
                return entry(ids(o))
    elif decode:

        def get(o: int):
            return str(entry(o), UTF8, SURR)
    else:
        get = entry

    return _with_nulls(get, nulls), nbytes


def _open_text(meta: dict[str, Any], ctx: ColumnContext, name: str):
    data = ctx.mv(name + ".z")
    offs = ctx.mv(name + ".zoffs")
    nbytes = data.nbytes + offs.nbytes
    zdict = None
    if meta.get("dict"):
        raw = ctx.mv(name + ".zdict")
        nbytes += raw.nbytes
        zdict = zstandard.ZstdCompressionDict(bytes(raw))
    local = threading.local()  # decompressors are not safe to share between threads

    def get(o: int):
        d = getattr(local, "d", None)
        if d is None:
            d = local.d = zstandard.ZstdDecompressor(dict_data=zdict)
        try:
            raw = d.decompress(data[offs[o] : offs[o + 1]])
        except zstandard.ZstdError as e:
            raise FormatError(f"column {name!r}: record {o} does not decompress: {e}") from e
        return str(raw, UTF8, SURR)

    return get, nbytes


def describe_layout(meta: dict[str, Any], sections: Any, name: str) -> str:
    """The layouts a column's encoder chose, in a few words (for ``nearstate inspect``):
    e.g. ``"symbol table, dictionary, blocked"``; nested element columns after ``[]``."""
    words = []
    if meta.get("fsst"):
        words.append("symbol table")
    if meta.get("pool") == "ids":
        words.append("dictionary")
    if "scale" in meta:
        words.append(f"decimal x{meta['scale']}")
    if meta.get("bigint"):
        words.append("big ints as text")
    if "level" in meta:
        words.append("zstd per record" + (" + dictionary" if meta.get("dict") else ""))
    if meta.get("sparse"):
        words.append("sparse")
    elif meta.get("nulls"):
        words.append("nulls")
    if any(f"{name}{s}.blk" in sections for s in ("", ".offs", ".poffs", ".ids")):
        words.append("blocked")
    inner = [
        describe_layout(meta[k], sections, name + suffix)
        for k, suffix in (("key", "{k}"), ("item", "[]" if "key" not in meta else "{v}"))
        if isinstance(meta.get(k), dict)
    ]
    out = ", ".join(words)
    for i in inner:
        if i:
            out = f"{out}; items: {i}" if out else f"items: {i}"
    return out


def canonical_float(x: float) -> Any:
    """A hashable form that tells -0.0 from 0.0 and matches NaN with NaN (for de-dup)."""
    if x == 0.0 or math.isnan(x):
        return ("f", math.copysign(1.0, x), math.isnan(x))
    return x
