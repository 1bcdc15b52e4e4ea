"""Blobs fetched from a remote store, kept once per host and mapped by every process.

A consumer of a NATS dataset used to read each blob it fetched into a buffer of its own:
eight worker processes on a host held eight copies of every version. With a cache
directory, the first process that needs a blob fetches it into a file there; every
process (that one included) maps the file, so the host's page cache holds one copy,
shared, and a process that starts later maps it without fetching.

* **Atomic**: a blob is fetched into a temporary file and renamed into place only once
  its bytes match the store's SHA-256; a process killed mid-fetch leaves a temporary file
  the next fetch of that blob removes, never a cached blob with missing bytes.
* **One fetch per host**: fetching holds an exclusive ``flock`` on the blob's lock file;
  a process that waited for it finds the file in place and maps it.
* **Checked**: the first time a process maps a cached file it checks its size and
  SHA-256 against the store's; a damaged file is removed and fetched again.
* **Named by content**: a file is named by the blob's name and the store's object id
  (a blob replaced under the same name is another file).
* **Cleaned as versions retire**: after each fetch the cache removes the files of blobs
  the store no longer has. A process that still maps one keeps its pages (an unlinked
  file stays readable while mapped).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import mmap
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote, unquote

from ..errors import DatasetError

SEP = "@"  # between a blob's quoted name and its object id in a file name


def default_root() -> Path:
    """``$NEARSTATE_CACHE_DIR``, else ``$XDG_CACHE_HOME/nearstate`` or ``~/.cache/nearstate``,
    with ``blobs`` below it."""
    env = os.environ.get("NEARSTATE_CACHE_DIR")
    if env:
        return Path(env) / "blobs"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "nearstate" / "blobs"


class BlobCache:
    """The cache directory ``root`` (made on first use) of one remote dataset."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._checked: set[str] = set()  # "file digest": checked by this process
        self._lock = threading.Lock()
        self.fetches = 0  # blobs this process fetched from the store (not found cached)

    def _file(self, name: str, object_id: str) -> Path:
        return self.root / f"{quote(name, safe='')}{SEP}{object_id}"

    def open(self, name: str, object_id: str, size: int, sha256: str,
             fetch: Callable[[BinaryIO], Any], where: str = "the store") -> Any:  # fmt: skip
        """The blob's bytes, mapped from the cache (fetched into it first if needed with
        ``fetch(file)``, which writes them and returns a hashlib SHA-256 of what it
        wrote). ``sha256`` is the store's digest (URL-safe base64, padding optional);
        ``where`` names the store in errors."""
        if size == 0:
            return b""
        path = self._file(name, object_id)
        got = self._map_checked(path, size, sha256)
        if got is not None:
            return got
        self.root.mkdir(parents=True, exist_ok=True)
        with open(path.with_name(path.name + ".lock"), "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # one fetch per host at a time
            got = self._map_checked(path, size, sha256)  # another process fetched it
            if got is not None:
                return got
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            try:
                with open(tmp, "wb") as f:
                    digest = fetch(f)
                    f.flush()
                    os.fsync(f.fileno())
                    written = f.tell()
                if written != size:
                    raise DatasetError(f"blob {name!r} is damaged: {written} of {size} bytes "
                                       f"came from {where}")  # fmt: skip
                if not _same(digest, sha256):
                    raise DatasetError(f"blob {name!r} in {where} does not match its SHA-256 "
                                       "digest")  # fmt: skip
                os.replace(tmp, path)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
            self.fetches += 1
            with self._lock:
                self._checked.add(f"{path.name} {sha256}")
        out = _map(path)
        assert out is not None
        return out

    def _map_checked(self, path: Path, size: int, sha256: str) -> Any | None:
        """The cached file mapped, if it is there and whole (checked once per process); a
        damaged one is removed."""
        m = _map(path)
        if m is None:
            return None
        seen = f"{path.name} {sha256}"  # checked against this digest (the store's, now)
        with self._lock:
            checked = seen in self._checked
        if checked and len(m) == size:
            return m
        if len(m) == size and _same(hashlib.sha256(m), sha256):
            with self._lock:
                self._checked.add(seen)
            return m
        m.close()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # damaged: fetched again
        return None

    def tidy(self, names: Iterable[str]) -> int:
        """Remove the cached files of blobs not in ``names`` (the store's blobs now), and
        temporary files left by processes that died. Returns how many were removed."""
        if not self.root.is_dir():
            return 0
        keep = set(names)
        removed = 0
        for entry in os.scandir(self.root):
            n = entry.name
            gone = False
            if n.startswith(".") and n.endswith(".tmp"):
                pid = n.rsplit(".", 2)[-2]
                gone = pid.isdigit() and not _alive(int(pid))
            elif SEP in n and not n.endswith(".lock"):
                gone = unquote(n.rsplit(SEP, 1)[0]) not in keep
            elif n.endswith(".lock"):
                gone = unquote(n[: -len(".lock")].rsplit(SEP, 1)[0]) not in keep
            if gone:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed += 1
        return removed


def _map(path: Path) -> Any | None:
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                return None
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except FileNotFoundError:
        return None


def _same(digest: Any, sha256: str) -> bool:
    """Whether a hashlib SHA-256 is ``sha256`` (URL-safe base64, padding optional)."""
    got = base64.urlsafe_b64encode(digest.digest()).decode()
    return got.rstrip("=") == sha256.rstrip("=")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
