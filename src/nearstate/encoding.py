"""How one field's values are laid out as columns, and how they are read back.

Writing: :func:`encode_column` turns a list of normalised values into named sections
(numpy arrays or bytes) plus a small JSON-able ``meta`` dict that the blob header keeps.
Reading: :func:`open_column` wraps those sections (zero-copy views) in a :class:`Column`
whose ``get(ordinal)`` decodes one value.

Layouts, by kind:

* int, datetime — frame of reference: ``value - base`` in the narrowest unsigned width;
  ints beyond 64 bits fall back to a string pool of their decimal form.
* float — decimal scaling when every value is a short decimal (7.2 is stored as the
  integer 72 with scale 10, in the narrowest width, and read back bit for bit); else
  float32 when every value survives the round trip; else float64.
* bool — one byte each.
* str, bytes — a per-field de-duplicated pool (bytes + offsets) and, unless every value is
  distinct, a narrow array of pool ids per record.
* text (long text) — each value compressed alone with a zstd dictionary trained on the
  field, so one record decompresses without its neighbours.
* list, set, dict — offsets into flattened element column(s).
* record, ref — the ordinal of the nested or referenced record.
* nullable — a packed null bitmap beside the values.
"""

from __future__ import annotations

import datetime as _dt
import math
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import zstandard

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


def _offsets(lengths: list[int] | np.ndarray) -> np.ndarray:
    lens = np.asarray(lengths, dtype=np.int64)
    offs = np.zeros(len(lens) + 1, dtype=np.int64)
    np.cumsum(lens, out=offs[1:])
    return offs.astype(narrow_uint(int(offs[-1]) if len(offs) else 0))


# --- writing --------------------------------------------------------------------------------


def zero_value(ft: FieldType) -> Any:
    """A placeholder stored where a value is null (never read back)."""
    return {
        "int": 0, "float": 0.0, "bool": False, "str": "", "text": "", "bytes": b"",
        "datetime": EPOCH, "list": [], "set": [], "dict": {}, "record": 0, "ref": 0,
    }[ft.kind]  # fmt: skip


def encode_column(
    ft: FieldType, values: list[Any], out: Sections, name: str, *, train: bool = True
) -> dict[str, Any]:
    """Encode ``values`` (already normalised for ``ft``) into ``out``; return the meta.

    ``train=False`` compresses text without training a dictionary (training costs tens of
    milliseconds, which would dominate a small delta).
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
        z = zero_value(ft)
        if ft.kind == "datetime" and any(v is not None and v.tzinfo for v in values):
            z = EPOCH_UTC
        values = [z if v is None else v for v in values]
    kind = ft.kind
    if kind in ("int", "record", "ref"):
        meta.update(_encode_int(values, out, name))
    elif kind == "datetime":
        meta.update(_encode_datetime(values, out, name))
    elif kind == "float":
        a = np.array(values, dtype=np.float64)
        scaled = _decimal_scale(a)
        if scaled is not None:
            ints, scale = scaled
            meta.update(_encode_int(ints, out, name))
            meta["scale"] = scale
        elif _fits_float32(a):
            a = a.astype(np.float32)
            out[name] = a.astype(a.dtype.newbyteorder("<"))
        else:
            out[name] = a.astype(a.dtype.newbyteorder("<"))
    elif kind == "bool":
        out[name] = np.array(values, dtype=np.uint8)
    elif kind == "str":
        meta.update(_encode_pool([v.encode(UTF8, SURR) for v in values], out, name))
    elif kind == "bytes":
        meta.update(_encode_pool(values, out, name))
    elif kind == "text":
        meta.update(_encode_text(values, out, name, train))
    elif kind in ("list", "set"):
        assert ft.item is not None
        out[name + ".offs"] = _offsets([len(v) for v in values])
        flat = [x for v in values for x in v]
        meta["item"] = encode_column(ft.item, flat, out, name + "[]", train=train)
    elif kind == "dict":
        assert ft.item is not None and ft.key is not None
        out[name + ".offs"] = _offsets([len(v) for v in values])
        meta["key"] = encode_column(
            ft.key, [k for v in values for k in v], out, name + "{k}", train=train
        )
        meta["item"] = encode_column(
            ft.item, [x for v in values for x in v.values()], out, name + "{v}", train=train
        )
    else:  # pragma: no cover - the schema validates kinds
        raise AssertionError(kind)
    return meta


def _fits_float32(a: np.ndarray) -> bool:
    with np.errstate(over="ignore"):
        back = a.astype(np.float32).astype(np.float64)
    return bool(np.array_equal(back.view(np.int64), a.view(np.int64)))


def _decimal_scale(a: np.ndarray) -> tuple[list[int], int] | None:
    """``(ints, scale)`` with ``ints[i] / scale`` bit-identical to ``a[i]``, or None."""
    if not len(a) or not np.all(np.isfinite(a)) or np.any(np.signbit(a) & (a == 0)):
        return None
    if np.max(np.abs(a)) >= 2**50:
        return None
    for digits in range(5):
        scale = 10**digits
        s = np.round(a * scale)
        if np.array_equal((s / scale).view(np.int64), a.view(np.int64)):
            return s.astype(np.int64).tolist(), scale
    return None


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
    dt = narrow_uint(hi - lo)
    # subtract in Python ints' range safely: shift via uint64 wrap-around arithmetic
    shifted = (a.view(np.uint64) - np.uint64(lo & 0xFFFFFFFFFFFFFFFF)).astype(dt)
    out[name] = shifted
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


def _encode_pool(values: list[bytes], out: Sections, name: str) -> dict[str, Any]:
    index: dict[bytes, int] = {}
    ids = [index.setdefault(v, len(index)) for v in values]
    uniques = list(index)
    out[name + ".pool"] = np.frombuffer(b"".join(uniques), dtype=np.uint8)
    out[name + ".poffs"] = _offsets([len(u) for u in uniques])
    if len(uniques) == len(values):
        return {"pool": "identity"}
    out[name + ".ids"] = np.array(ids, dtype=narrow_uint(max(len(uniques) - 1, 0)))
    return {"pool": "ids"}


def _encode_text(values: list[str], out: Sections, name: str, train: bool) -> dict[str, Any]:
    # values are encoded to UTF-8 one at a time (never all at once: for millions of long
    # texts a list of their bytes would double the peak memory of writing a snapshot)
    meta: dict[str, Any] = {"level": TEXT_LEVEL}
    dict_data = None
    total = sum(len(v) for v in values)
    if train and len(values) >= 100 and total >= 64 * 1024:
        step = max(1, len(values) // TEXT_TRAIN_SAMPLES)
        samples = [e for v in values[::step] if (e := v.encode(UTF8, SURR))]
        try:
            dict_data = zstandard.train_dictionary(
                min(TEXT_DICT_SIZE, max(4096, total // 20)), samples
            )
        except zstandard.ZstdError:
            dict_data = None  # too few or too uniform samples: plain zstd per record
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

    ``raw`` (str columns only) returns a value's stored UTF-8 bytes without decoding.
    """

    __slots__ = ("ftype", "get", "left_out", "name", "nbytes", "raw")

    def __init__(
        self,
        name: str,
        ftype: FieldType,
        get: Getter,
        nbytes: int,
        raw: Getter | None = None,
        left_out: Callable[[int], bool] | None = None,
    ):
        self.name = name
        self.ftype = ftype
        self.get = get
        self.nbytes = nbytes
        self.raw = raw
        #: ``left_out(o)``: the null at ``o`` was left out of its record (None: never)
        self.left_out = left_out


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


def open_column(ft: FieldType, meta: dict[str, Any], ctx: ColumnContext, name: str) -> Column:
    """Wrap the sections of one field; decoding happens per ``get``."""
    try:
        get, nbytes = _open(ft, meta, ctx, name)
        raw = None
        if ft.kind == "str" and not meta.get("nulls"):
            raw = _open_pool(meta, ctx, name, decode=False)[0]
        left_out = None
        if meta.get("absent"):
            ab = ctx.mv(name + ".absent")
            nbytes += ab.nbytes

            def left_out(o: int) -> bool:
                return bool(ab[o >> 3] >> (o & 7) & 1)

    except (KeyError, TypeError, ValueError) as e:
        raise FormatError(f"column {name!r} is malformed: {e!r}") from e
    return Column(name, ft, get, nbytes, raw, left_out)


def _open(ft: FieldType, meta: dict[str, Any], ctx: ColumnContext, name: str):
    get, nbytes = _open_values(ft, meta, ctx, name)
    if meta.get("nulls"):
        nb = ctx.mv(name + ".nulls")
        nbytes += nb.nbytes
        inner = get

        def get(o: int, _nb=nb, _inner=inner):
            if _nb[o >> 3] >> (o & 7) & 1:
                return None
            return _inner(o)

    return get, nbytes


def _open_int(meta: dict[str, Any], ctx: ColumnContext, name: str) -> tuple[Getter, int]:
    if meta.get("bigint"):
        g, n = _open_pool(meta, ctx, name, decode=True)
        return (lambda o: int(g(o))), n
    v = ctx.mv(name)
    base = int(meta.get("base", 0))
    if base == 0:
        return v.__getitem__, v.nbytes
    return (lambda o: v[o] + base), v.nbytes


def _open_values(ft: FieldType, meta: dict[str, Any], ctx: ColumnContext, name: str):
    kind = ft.kind
    if kind == "int":
        return _open_int(meta, ctx, name)
    if kind == "float":
        if "scale" in meta:
            g, n = _open_int(meta, ctx, name)
            scale = int(meta["scale"])
            if scale == 1:
                return (lambda o: float(g(o))), n
            return (lambda o: g(o) / scale), n
        v = ctx.mv(name)
        return v.__getitem__, v.nbytes
    if kind == "bool":
        v = ctx.mv(name)
        return (lambda o: v[o] != 0), v.nbytes
    if kind == "datetime":
        g, n = _open_int(meta, ctx, name)
        epoch = EPOCH_UTC if meta.get("tz") else EPOCH
        return (lambda o: epoch + _dt.timedelta(microseconds=g(o))), n
    if kind == "str":
        return _open_pool(meta, ctx, name, decode=True)
    if kind == "bytes":
        return _open_pool(meta, ctx, name, decode=False)
    if kind == "text":
        return _open_text(meta, ctx, name)
    if kind in ("list", "set"):
        assert ft.item is not None
        offs = ctx.mv(name + ".offs")
        item = open_column(ft.item, meta["item"], ctx, name + "[]")
        iget = item.get
        if kind == "list":

            def get(o: int):
                return [iget(i) for i in range(offs[o], offs[o + 1])]
        else:

            def get(o: int):
                return {iget(i) for i in range(offs[o], offs[o + 1])}

        return get, offs.nbytes + item.nbytes
    if kind == "dict":
        assert ft.item is not None and ft.key is not None
        offs = ctx.mv(name + ".offs")
        kc = open_column(ft.key, meta["key"], ctx, name + "{k}")
        vc = open_column(ft.item, meta["item"], ctx, name + "{v}")
        kget, vget = kc.get, vc.get

        def get(o: int):
            return {kget(i): vget(i) for i in range(offs[o], offs[o + 1])}

        return get, offs.nbytes + kc.nbytes + vc.nbytes
    if kind in ("record", "ref"):
        assert ft.target is not None
        ords, n = _open_int(meta, ctx, name)
        target = ft.target
        views = ctx.views

        def get(o: int):
            return views(target)(ords(o))

        return get, n
    raise FormatError(f"column {name!r} has unknown kind {kind!r}")


def _open_pool(meta: dict[str, Any], ctx: ColumnContext, name: str, *, decode: bool):
    pool = ctx.mv(name + ".pool")
    poffs = ctx.mv(name + ".poffs")
    nbytes = pool.nbytes + poffs.nbytes
    if meta.get("pool") == "ids":
        ids = ctx.mv(name + ".ids")
        nbytes += ids.nbytes
        if decode:

            def get(o: int):
                i = ids[o]
                return str(pool[poffs[i] : poffs[i + 1]], UTF8, SURR)
        else:

            def get(o: int):
                i = ids[o]
                return bytes(pool[poffs[i] : poffs[i + 1]])
    elif decode:

        def get(o: int):
            return str(pool[poffs[o] : poffs[o + 1]], UTF8, SURR)
    else:

        def get(o: int):
            return bytes(pool[poffs[o] : poffs[o + 1]])

    return get, nbytes


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


def canonical_float(x: float) -> Any:
    """A hashable form that tells -0.0 from 0.0 and matches NaN with NaN (for de-dup)."""
    if x == 0.0 or math.isnan(x):
        return ("f", math.copysign(1.0, x), math.isnan(x))
    return x
