"""A snapshot's hash indexes built once per host and mapped by every process.

A :class:`~nearstate.index.HashIndex` holds a dict of numpy arrays per process: on the
films' content, the ``slug`` indexes of three types take 16 MB in every site worker,
more than twice the state itself. Once :func:`share_indexes` names a directory, a
snapshot's type state builds a hash index there instead (:mod:`nearstate.hostfile`: once
per host, under a lock, atomically, checked when mapped) and every process maps it.

The file holds each distinct value's 64-bit hash (XXH3 of a canonical encoding: numbers
by value, so ``1``, ``1.0`` and ``True`` are one value as in a dict; strings by their
UTF-8; datetimes by their ISO form, aware ones in UTC; tuples element by element),
sorted, and each value's ordinals. Contracts:

- The same answers as the in-memory index: a lookup hashes the value and bisects. Two
  distinct values of one snapshot with the same hash make the build fall back to the
  in-memory index (never a merged group); a value the snapshot does not hold could meet a
  held value's hash with odds of about ``n / 2**64``.
- Values it cannot encode canonically (another type) fall back to the in-memory index.
- A snapshot's index files replace those of the dataset's older snapshots when built
  (a process still mapping one reads on).
- Only snapshots (a :class:`~nearstate.read_state.TypeState`); the overlay of a layered
  version keeps its own small index in memory, as before.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

from .hostfile import HostArrays, open_or_build

FORMAT = 1
_root: Path | None = None


def share_indexes(root: str | Path | None) -> None:
    """Build snapshots' hash indexes once per host in directory ``root`` and map them
    (None: each process builds its own in memory, the default). Process-wide; set it
    before states are read (an app's start)."""
    global _root
    _root = None if root is None else Path(root)


def shared_root() -> Path | None:
    """The directory :func:`share_indexes` named, or None."""
    return _root


class _Unhashable(Exception):
    pass


def canonical(v: Any) -> bytes:
    """The bytes a value is hashed by (equal values in a dict: equal bytes)."""
    if v is None:
        return b"N"
    if isinstance(v, bool | int):
        return b"i%d" % int(v)
    if isinstance(v, float):
        return b"i%d" % int(v) if v.is_integer() else b"f" + repr(v).encode()
    if isinstance(v, str):
        return b"s" + v.encode("utf-8", "surrogatepass")
    if isinstance(v, bytes):
        return b"b" + v
    if isinstance(v, tuple):
        parts = [canonical(x) for x in v]
        return b"t" + b"".join(len(p).to_bytes(4, "little") + p for p in parts)
    if isinstance(v, _dt.datetime):
        if v.tzinfo is not None and v.utcoffset() is not None:
            return b"D" + v.astimezone(_dt.UTC).isoformat().encode()
        return b"d" + v.isoformat().encode()
    if isinstance(v, _dt.date):
        return b"a" + v.isoformat().encode()
    raise _Unhashable(type(v).__name__)


def _hash(v: Any) -> int:
    return xxhash.xxh3_64_intdigest(canonical(v))


class MappedHashIndex:
    """A hash index read from a mapped file: ``ordinals(value)`` as HashIndex's."""

    __slots__ = ("_h", "_off", "_ords", "arrays", "fields")

    def __init__(self, fields: tuple[str, ...], arrays: HostArrays):
        self.fields = fields
        self.arrays = arrays
        self._h, self._off, self._ords = arrays["hash"], arrays["off"], arrays["ords"]

    def ordinals(self, value: Any) -> np.ndarray:
        try:
            h = _hash(value)
        except _Unhashable:
            return np.zeros(0, dtype=np.uint32)
        i = int(np.searchsorted(self._h, np.uint64(h)))
        if i < len(self._h) and int(self._h[i]) == h:
            return self._ords[int(self._off[i]) : int(self._off[i + 1])]
        return np.zeros(0, dtype=np.uint32)

    def __len__(self) -> int:
        return len(self._h)


def mapped_index(key_parts: tuple[Any, ...], fields: tuple[str, ...],
                 build: Callable[[], Any]) -> MappedHashIndex | None:  # fmt: skip
    """The index named by ``key_parts`` (dataset, version, then what else tells the
    snapshot's type apart) mapped from the shared directory (built from
    ``build()``, an in-memory HashIndex, by the first process); None when sharing is off
    or the index's values cannot be shared (the caller builds its own)."""
    root = _root
    if root is None:
        return None
    dataset, version = key_parts[0], int(key_parts[1])
    prefix = f"index-{hashlib.sha256(str(dataset).encode()).hexdigest()[:8]}-v"
    digest = hashlib.sha256(repr((FORMAT, *key_parts, fields)).encode()).hexdigest()[:24]
    try:
        arrays = open_or_build(root, f"{prefix}{version}-{digest}", lambda: _arrays(build()))
    except _Unhashable:
        return None
    if arrays.how != "mapped":  # a new snapshot's index: those of older ones retire
        _tidy(root, prefix, version)
    return MappedHashIndex(fields, arrays)


def _tidy(root: Path, prefix: str, version: int) -> None:
    for p in root.glob(f"{prefix}*"):
        v = p.name[len(prefix) :].split("-", 1)[0]
        if v.isdigit() and int(v) < version:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()


def _arrays(idx: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    values = list(idx.values())
    hashes = np.fromiter((_hash(v) for v in values), np.uint64, len(values))
    order = np.argsort(hashes, kind="stable")
    hashes = hashes[order]
    if len(hashes) > 1 and bool((hashes[1:] == hashes[:-1]).any()):
        raise _Unhashable("two values share a hash")
    groups = [np.asarray(idx.ordinals(values[i]), dtype=np.uint32) for i in order.tolist()]
    off = np.zeros(len(groups) + 1, np.int64)
    np.cumsum([len(g) for g in groups], out=off[1:])
    ords = np.concatenate(groups) if groups else np.zeros(0, np.uint32)
    return {"hash": hashes, "off": off, "ords": ords}, {"values": len(values)}


__all__ = ["MappedHashIndex", "canonical", "mapped_index", "share_indexes", "shared_root"]
