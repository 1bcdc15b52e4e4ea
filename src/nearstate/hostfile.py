"""Arrays a reader derives from a version, built once per host into a file every process
of the host maps.

A worker pool of eight processes that each build the same index from the same version
holds eight copies of it. :func:`open_or_build` makes the first process that needs the
arrays build them into a file of the cache directory; every process (that one included)
maps the file, so the host's page cache holds one copy, shared.

File layout: 8 bytes of magic, the header's length (8 bytes, little-endian), the header
(JSON: the key, each array's offset, dtype and shape, the body's size and XXH3-128),
then the arrays, each at an offset that is a multiple of 64.

Contracts:

- **Atomic**: a file is written to a temporary name, flushed to disk and renamed into
  place; a process killed while building leaves a temporary file (removed by the next
  build once its process is gone), never a file under the final name with missing bytes.
- **Built once**: building holds an exclusive ``flock`` on the file's lock file; a process
  that waited for it finds the file in place and maps it.
- **Keyed**: the file's name is the caller's key (a digest of what the arrays are made
  from), and the header repeats it; a file whose header names another key is refused.
- **Checked**: each time a process opens the file it checks its magic, header, size and
  the body's XXH3-128; a damaged file is refused (:class:`~nearstate.errors.DatasetError`
  inside, never returned), removed and built again.
- Thread-safe and process-safe; the mapping stays readable after the file is removed.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import mmap
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

from .errors import DatasetError

MAGIC = b"NSHOST01"
ALIGN = 64
_LEN = struct.Struct("<Q")


class HostArrays:
    """The arrays of one mapped file, by name (read-only numpy views of the mapping).

    ``how``: "mapped" (the file was in place and sound), "built" (this process built
    it) or "rebuilt" (a damaged file was refused and built again). ``meta``: what the
    builder stored beside the arrays."""

    def __init__(self, path: Path, mm: mmap.mmap, header: dict[str, Any], how: str):
        self.path = path
        self.how = how
        self.meta: dict[str, Any] = header.get("meta", {})
        self.nbytes = len(mm)
        self._mm = mm
        self.arrays: dict[str, np.ndarray] = {}
        for name, (offset, dtype, shape) in header["arrays"].items():
            n = int(np.prod(shape, dtype=np.int64))
            a = np.frombuffer(mm, dtype=np.dtype(dtype), count=n, offset=offset)
            self.arrays[name] = a.reshape(shape)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]


def open_or_build(
    root: Path,
    key: str,
    build: Callable[[], tuple[dict[str, np.ndarray], dict[str, Any]]],
) -> HostArrays:
    """The arrays filed under ``key`` in directory ``root`` (made if missing): mapped if
    the file is in place and sound, else built by ``build`` (returning the arrays and a
    JSON-able ``meta``) under the file's lock, written atomically and mapped."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{key}.arrays"
    found = _try_map(path, key)
    if isinstance(found, HostArrays):
        return found
    damaged = found is not None
    with _locked(root / f"{key}.lock"):
        again = _try_map(path, key)  # another process built it while we waited
        if isinstance(again, HostArrays):
            return again
        if again is not None:
            damaged = True
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        _tidy_temporaries(root, key)
        arrays, meta = build()
        _write(path, key, arrays, meta)
        del arrays, meta
    _trim_heap()
    got = _try_map(path, key)
    if not isinstance(got, HostArrays):
        raise DatasetError(f"{path}: the file just written does not read back: {got}")
    got.how = "rebuilt" if damaged else "built"
    return got


def _trim_heap() -> None:
    """Hand the heap a build freed back to the system (glibc's ``malloc_trim``): the
    process that built a host file serves on, and a build of the films' search index
    left it holding 42 MB more than one that mapped the file; this returns about 19 MB of
    them (the rest is Python's own small-object arenas, kept partly used). Nothing where
    the C library has no such call."""
    try:
        libc = ctypes.CDLL(None)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return
    trim.argtypes = [ctypes.c_size_t]
    trim(0)


def _try_map(path: Path, key: str) -> HostArrays | str | None:
    """The mapped arrays; None when there is no file; the reason when it is refused."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        size = os.fstat(fd).st_size
        if size < len(MAGIC) + _LEN.size:
            return "shorter than its header"
        mm = mmap.mmap(fd, size, prot=mmap.PROT_READ)
    finally:
        os.close(fd)
    try:
        header = _checked_header(mm, key)
    except DatasetError as e:
        mm.close()
        return str(e)
    return HostArrays(path, mm, header, "mapped")


def _checked_header(mm: mmap.mmap, key: str) -> dict[str, Any]:
    if mm[: len(MAGIC)] != MAGIC:
        raise DatasetError("not a nearstate host file (bad magic)")
    (hlen,) = _LEN.unpack_from(mm, len(MAGIC))
    start = len(MAGIC) + _LEN.size
    try:
        header = json.loads(bytes(mm[start : start + hlen]))
        body = int(header["body"])
        size, digest = int(header["size"]), str(header["xxh3"])
        arrays = header["arrays"]
    except (ValueError, KeyError, TypeError) as e:
        raise DatasetError(f"damaged header ({e})") from e
    if header.get("key") != key:
        raise DatasetError(f"the header names key {header.get('key')!r}, not {key!r}")
    if body + size != len(mm):
        raise DatasetError(f"{len(mm)} bytes where the header says {body + size}")
    if xxhash.xxh3_128_hexdigest(memoryview(mm)[body:]) != digest:
        raise DatasetError("the body's checksum does not match its header")
    for name, (offset, dtype, shape) in arrays.items():
        n = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        if not body <= offset <= offset + n <= len(mm):
            raise DatasetError(f"array {name!r} lies outside the file")
    return header


def _write(path: Path, key: str, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    layout: dict[str, list[Any]] = {}
    offset = 0
    for name, a in arrays.items():
        offset = -(-offset // ALIGN) * ALIGN
        layout[name] = [offset, a.dtype.str, list(a.shape)]
        offset += a.nbytes
    size = offset
    digest = xxhash.xxh3_128()
    # the header holds absolute offsets: its length is fixed first with room for them
    header = {"key": key, "arrays": layout, "meta": meta, "body": 0, "size": size, "xxh3": ""}
    probe = json.dumps(header).encode()
    body = -(-(len(MAGIC) + _LEN.size + len(probe) + 256) // ALIGN) * ALIGN
    for v in layout.values():
        v[0] += body
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(b"\0" * body)
        pos = 0
        for name, a in arrays.items():
            want = layout[name][0] - body
            if want > pos:
                pad = b"\0" * (want - pos)
                f.write(pad)
                digest.update(pad)
                pos = want
            data = np.ascontiguousarray(a).view(np.uint8).reshape(-1).data
            f.write(data)
            digest.update(data)
            pos += a.nbytes
        header.update(body=body, xxh3=digest.hexdigest())
        raw = json.dumps(header).encode()
        assert len(MAGIC) + _LEN.size + len(raw) <= body
        f.seek(0)
        f.write(MAGIC + _LEN.pack(len(raw)) + raw)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@contextlib.contextmanager
def _locked(lock: Path):
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _tidy_temporaries(root: Path, key: str) -> None:
    """Remove temporary files of ``key`` left by builders that are gone (under the lock:
    no live process is writing one)."""
    for p in root.glob(f"{key}.arrays.*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


__all__ = ["HostArrays", "open_or_build"]
