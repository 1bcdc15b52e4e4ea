"""Indexes: the primary-key hash table stored in every snapshot, and hash indexes built on
demand over any field or tuple of fields.

The primary-key table is open addressing with linear probing over slots holding
``ordinal + 1`` (0 = empty) in the narrowest unsigned width, at most three quarters full;
the slot of a hash is ``hash % size``. The hash is CRC-32 of the key's canonical
bytes (:func:`key_bytes`): stable across processes and machines, so the table is written
once by the producer and used in place, without rebuilding, by every reader.
"""

from __future__ import annotations

import datetime as _dt
import threading
import zlib
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ._native import core as _core
from .errors import SchemaError

if TYPE_CHECKING:
    from .encoding import Column


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
    from .encoding import narrow_uint

    tags = np.zeros(size, dtype=np.uint8)
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

    def __len__(self) -> int:
        return len(self._groups)

    def values(self):
        return self._groups.keys()


class LazyIndexes:
    """Per type: hash indexes built on first use, once, safely under many threads."""

    def __init__(self, build: Callable[[tuple[str, ...]], HashIndex]):
        self._build = build
        self._built: dict[tuple[str, ...], HashIndex] = {}
        self._lock = threading.Lock()

    def get(self, fields: tuple[str, ...]) -> HashIndex:
        idx = self._built.get(fields)
        if idx is None:
            with self._lock:
                idx = self._built.get(fields)
                if idx is None:
                    idx = self._built[fields] = self._build(fields)
        return idx
