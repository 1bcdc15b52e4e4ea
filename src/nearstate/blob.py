"""The blob file format: a checksummed header and aligned, checksummed sections.

Layout (all integers little-endian)::

    0   8s   magic  b"NSBLOB\\r\\n"
    8   u32  format version (2; version 1 blobs are read too)
    12  u32  flags (0)
    16  u64  header length H
    24  u64  xxh3-64 of the header bytes and their padding
    32  H    header: JSON (kind, dataset, version, tags, schema, types, sections, length)
    ..  pad  zeros up to a multiple of 64
    D   sections, each starting on a 64-byte boundary, zero padded to the next one

Every byte of a blob is covered: the preamble is checked field by field, the header and
each section by an xxh3-64 checksum over their padded extent, and the header records the
total length, so truncation, a flipped bit anywhere, or stray bytes are refused with an
error naming the section. Sections are plain little-endian arrays, so a reader maps the
file and wraps each section as a numpy view without copying: loading is mapping, not
parsing.
"""

from __future__ import annotations

import json
import mmap as _mmap
import os
import struct
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

from .errors import ChecksumError, FormatError

MAGIC = b"NSBLOB\r\n"
FORMAT_VERSION = 2  # 2: blocked integer sections (".blk") and symbol-table pools (".fsym")
READABLE_VERSIONS = (1, 2)  # format 1 is format 2 without those sections: read as it is
ALIGN = 64
_PRE = struct.Struct("<8sIIQQ")

if sys.byteorder != "little":  # pragma: no cover - every supported platform is little-endian
    raise ImportError("nearstate's zero-copy blobs need a little-endian machine")


def _pad(n: int) -> int:
    return -n % ALIGN


def _checksum(buf: Any) -> str:
    return xxhash.xxh3_64_hexdigest(buf)


@dataclass(frozen=True)
class Blob:
    """A blob read into memory: its header and its sections as zero-copy numpy arrays."""

    header: dict[str, Any]
    arrays: dict[str, np.ndarray]
    nbytes: int
    source: str

    @property
    def section_sizes(self) -> dict[str, int]:
        return {s["name"]: s["length"] for s in self.header["sections"]}


def encode_blob(header: Mapping[str, Any], sections: Mapping[str, Any]) -> list[bytes | memoryview]:
    """Lay out a blob; returns the pieces to write in order (no large copies)."""
    table = []
    pieces: list[bytes | memoryview] = []
    offset = 0
    for name, data in sections.items():
        if isinstance(data, np.ndarray):
            arr = np.ascontiguousarray(data)
            if arr.dtype.byteorder == ">":
                arr = arr.astype(arr.dtype.newbyteorder("<"))
            dtype = arr.dtype.str
            raw = memoryview(arr).cast("B") if arr.size else memoryview(b"")
        else:
            dtype = "|u1"
            raw = memoryview(bytes(data))
        length = raw.nbytes
        pad = b"\0" * _pad(length)
        h = xxhash.xxh3_64()
        h.update(raw)
        h.update(pad)
        table.append(
            {
                "name": name,
                "offset": offset,
                "length": length,
                "dtype": dtype,
                "xxh3": h.hexdigest(),
            }
        )
        pieces.append(raw)
        pieces.append(pad)
        offset += length + len(pad)
    head = dict(header)
    head["sections"] = table
    head["data_length"] = offset
    hbytes = json.dumps(head, separators=(",", ":"), ensure_ascii=False).encode()
    hpad = b"\0" * _pad(_PRE.size + len(hbytes))
    pre = _PRE.pack(MAGIC, FORMAT_VERSION, 0, len(hbytes), xxhash.xxh3_64_intdigest(hbytes + hpad))
    return [pre, hbytes, hpad, *pieces]


def write_blob(path: str | Path, header: Mapping[str, Any], sections: Mapping[str, Any]) -> int:
    """Write a blob atomically (temp file, fsync, rename). Returns its size in bytes."""
    return atomic_write(Path(path), encode_blob(header, sections))


def atomic_write(path: Path, parts: Any) -> int:
    """Write ``parts`` (buffers) to ``path`` via a temporary file of its own, fsync and
    rename, then fsync the directory; a reader or a crash sees the old file or the new
    one. Returns the size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # a unique temporary name per call: two writers of one name never share a file
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-")
    tmp = Path(tmp_name)
    os.fchmod(fd, 0o644)  # mkstemp makes it private; blobs are read by other processes
    n = 0
    try:
        with os.fdopen(fd, "wb") as f:
            for p in parts:
                n += f.write(p)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return n


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_blob(path: str | Path, *, mmap: bool = True, verify: bool = True) -> Blob:
    """Read a blob from a file: mapped (zero-copy, the default) or read into memory.

    With ``verify`` (the default) every section's checksum is checked before anything is
    returned; a bad blob raises :class:`FormatError` or :class:`ChecksumError`.
    """
    path = Path(path)
    try:
        if mmap:
            with open(path, "rb") as f:
                try:
                    buf: Any = _mmap.mmap(f.fileno(), 0, access=_mmap.ACCESS_READ)
                except ValueError as e:  # empty file
                    raise FormatError(f"{path}: not a nearstate blob ({e})") from e
        else:
            buf = path.read_bytes()
    except OSError as e:
        raise FormatError(f"cannot read blob {path}: {e.strerror or e}") from e
    return parse_blob(buf, verify=verify, source=str(path))


def parse_blob(buf: Any, *, verify: bool = True, source: str = "<bytes>") -> Blob:
    """Check the structure of ``buf`` (bytes, mmap...) and wrap its sections without copying."""
    mv = memoryview(buf)
    n = mv.nbytes
    if n < _PRE.size:
        if bytes(mv[: min(n, len(MAGIC))]) != MAGIC[: min(n, len(MAGIC))] or n == 0:
            raise FormatError(f"{source}: not a nearstate blob ({n} bytes, no blob magic)")
        raise FormatError(f"{source}: truncated: {n} bytes, a blob has at least {_PRE.size}")
    magic, fmt, flags, hlen, hsum = _PRE.unpack_from(mv, 0)
    if magic != MAGIC:
        raise FormatError(f"{source}: not a nearstate blob (bad magic {bytes(magic)!r})")
    if fmt not in READABLE_VERSIONS:
        raise FormatError(
            f"{source}: blob format version {fmt} is not supported (this nearstate reads "
            f"versions {', '.join(map(str, READABLE_VERSIONS))}; re-import the data with the "
            "nearstate that wrote it, or upgrade)"
        )
    if flags != 0:
        raise FormatError(f"{source}: unknown flags {flags:#x} in the preamble")
    data_start = _PRE.size + hlen + _pad(_PRE.size + hlen)
    if data_start > n:
        raise FormatError(
            f"{source}: truncated in the header ({n} bytes, header ends at {data_start})"
        )
    if xxhash.xxh3_64_intdigest(mv[_PRE.size : data_start]) != hsum:
        raise ChecksumError(f"{source}: section 'header' fails its checksum", section="header")
    try:
        header = json.loads(bytes(mv[_PRE.size : _PRE.size + hlen]))
        sections = header["sections"]
        data_length = int(header["data_length"])
    except (ValueError, KeyError, TypeError) as e:
        raise FormatError(f"{source}: header is malformed: {e!r}") from e
    if data_start + data_length != n:
        raise FormatError(
            f"{source}: truncated or padded: the header says {data_start + data_length} "
            f"bytes, the blob has {n}"
        )
    arrays: dict[str, np.ndarray] = {}
    expected = 0
    for s in sections:
        name, off, length = s["name"], int(s["offset"]), int(s["length"])
        end = off + length + _pad(length)
        if off != expected or end > data_length:
            raise FormatError(f"{source}: section {name!r} is out of place")
        expected = end
        if (
            verify
            and xxhash.xxh3_64_hexdigest(mv[data_start + off : data_start + end]) != s["xxh3"]
        ):
            raise ChecksumError(f"{source}: section {name!r} fails its checksum", section=name)
        try:
            dtype = np.dtype(s["dtype"])
            arrays[name] = np.frombuffer(
                buf, dtype=dtype, count=length // dtype.itemsize, offset=data_start + off
            )
        except (TypeError, ValueError) as e:
            raise FormatError(f"{source}: section {name!r} cannot be read: {e}") from e
    if expected != data_length:
        raise FormatError(f"{source}: sections do not fill the blob")
    return Blob(header, arrays, n, source)
