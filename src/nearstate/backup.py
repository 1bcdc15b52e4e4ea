"""Backups, restores and clones of a dataset, made through its ports, so a local
directory and NATS JetStream work alike (and a backup of one restores into the other).

A backup is a directory, or a tar of one (``OUT.tar``, ``OUT.tar.gz``, ``OUT.tgz``)::

    manifest.json          what it holds: format, source, the version and its Log position,
                           the Log's head when it was taken, the announcement, the Log's
                           schema, and the size and SHA-256 of every other file; its own
                           SHA-256 (of the rest of it) in ``checksum``
    blobs/<blob name>      what the version needs: the newest snapshot at or before it, the
                           deltas (and reverse deltas) from there to it, their version records
    keys.msgpack           each key's last change at or before the version (the Log keeps
                           them past a trim, for conditions): ``[[type, key, position,
                           exists], ...]``
    log/<first>.msgpack    the Log's entries past the version, ``[[position, body], ...]``,
                           up to 10,000 to a file

**Consistent.** The announcement is read first, then the blobs of its version, then the Log
past the version's position up to the head read after the announcement. Everything
acknowledged before the backup started is at or below that head: in the version, or in the
entries copied. Versions announced meanwhile do not matter (blobs never change); if the
producer deletes a blob or trims the Log under the backup, it starts again from the new
announcement (a few times, then it gives up saying why).

**Restore refuses, never half-writes.** Every file is checked against the manifest (and the
manifest against its checksum) before anything is written; a missing, truncated or altered
file is named. The target must be new. A local dataset is built in a temporary directory
beside the target, its version loaded and checked, and renamed into place; a NATS dataset
gets its blobs and Log first, the version is loaded and checked, and the announcement comes
last; a failure deletes what was written. The restored Log keeps the positions of the
original (:meth:`~nearstate.backends.local_log.LocalLog.start_after`), and each key's last
change (``keys.msgpack``, read before the head: a key changed after that read has its
change among the entries), so tokens handed out before the backup still name the same
commits and conditions on them hold. (A clone of an older ``--version`` knows only the
keys not changed since; the others read as token 0, so a condition on an older token is
refused, never wrongly accepted.)

**Clones** (:func:`clone`) are a new dataset at a version of another, as RAW Hollow's
namespace clone: locally the blob files are hard links to the source's (no bytes copied;
blobs are never changed in place, a new one is written to a temporary file and renamed, so
a write to either dataset never reaches the other). On NATS the blobs are copied: the
Object Store has no shared entries a reader follows, and a source deleting an old blob
purges its chunks, which a reference would dangle on.

(Over 600 lines as one module: backup, restore and clone share the version's route, the
manifest's checks and the writing of a new dataset; split by verb if it grows.)
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import hashlib
import json
import os
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import unquote, urlparse

import msgspec

from .dataset import Dataset, LocalDataset, open_dataset
from .errors import BlobNotFound, DatasetError, LogTrimmed, NearstateError
from .ports import Append, Log
from .schema import Schema
from .versions import (
    Catalog,
    announced_version,
    delta_name,
    load_version,
    read_record,
    record_name,
    reverse_name,
    snapshot_name,
)
from .writer import LOG_POSITION, decode_entry, key_id

FORMAT = "nearstate-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
KEYS = "keys.msgpack"
ENTRIES_PER_FILE = 10_000
ATTEMPTS = 5
_TAR = (".tar", ".tar.gz", ".tgz")

Report = Callable[[str, int, int], None]


class BackupError(DatasetError):
    """A backup cannot be made, read or restored; the message names the file or target."""


@runtime_checkable
class StartsAfter(Protocol):
    """A Log that can begin at a given position with given entries (every backend's Log:
    :meth:`nearstate.backends.local_log.LocalLog.start_after`)."""

    def start_after(self, position: int, entries: Iterable[Append] = (),
                    keys: Iterable[tuple[str, str, int, bool]] = ()) -> int: ...  # fmt: skip


@dataclass(frozen=True)
class BackupResult:
    path: Path
    version: int | None  #: the version held (None: the dataset had only Log entries)
    log_position: int  #: the Log position that version includes
    head: int  #: the Log's head the backup reaches
    entries: int  #: Log entries copied past the version
    blobs: int
    bytes: int  #: the size of the backup's files
    seconds: float


@dataclass(frozen=True)
class RestoreResult:
    target: str
    version: int | None
    head: int
    entries: int
    blobs: int
    seconds: float


@dataclass(frozen=True)
class CloneResult:
    target: str
    version: int
    log_position: int
    entries: int
    linked: int  #: blobs shared with the source (hard links)
    copied: int  #: blobs copied (NATS, or another filesystem)
    seconds: float


# -- what a version needs -------------------------------------------------------------


def _route_names(ds: Dataset, version: int) -> list[str]:
    """The blobs that load ``version``: its snapshot route and their version records."""
    cat = Catalog(ds.blobs)
    start = cat.route(version)
    if start is None:
        raise BackupError(f"{_where(ds)}: version {version} cannot be loaded (no snapshot at "
                          "or before it is linked to it by deltas)")  # fmt: skip
    names = {snapshot_name(start)}
    for v in range(start + 1, version + 1):
        names.add(delta_name(v))
    have = set(ds.blobs.list())
    for v in range(start, version + 1):
        for n in (record_name(v), reverse_name(v) if v > start else None):
            if n is not None and n in have:
                names.add(n)
    return sorted(names)


def _where(ds: Dataset) -> str:
    return str(getattr(ds, "url", ds))


def _position(ann: dict[str, Any] | None) -> int:
    if ann is None:
        return 0
    try:
        return int((ann.get("tags") or {}).get(LOG_POSITION, 0))
    except (TypeError, ValueError):
        raise DatasetError(f"announcement of version {ann.get('version')} has a malformed "
                           f"{LOG_POSITION} tag") from None  # fmt: skip


def _key_positions(log: Any) -> list[tuple[str, str, int, bool]]:
    """Every key's last change as the Log knows it (none from a Log that cannot say)."""
    get = getattr(log, "key_positions", None)
    return [(t, k, int(p), bool(e)) for t, k, p, e in get()] if get is not None else []


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write(path: Path, data: Any) -> tuple[int, str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    view = memoryview(data).cast("B")
    with open(path, "wb") as f:
        f.write(view)
        f.flush()
        os.fsync(f.fileno())
    return len(view), hashlib.sha256(view).hexdigest()


def _read_entries(log: Log, after: int, head: int) -> Iterator[list[tuple[int, bytes]]]:
    """The entries ``after+1 .. head`` in batches; DatasetError at a gap."""
    pos = after
    while pos < head:
        rows = [(p, bytes(b)) for p, b in log.read(pos, ENTRIES_PER_FILE) if p <= head]
        if not rows:
            raise DatasetError(f"the Log's head is {head}, but no entry after {pos} came back")
        for p, _ in rows:
            if p != pos + 1:
                raise DatasetError(f"the Log has no entry {pos + 1} (the next is {p})")
            pos = p
        yield rows


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def seal(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest with its ``checksum``: the SHA-256 of the rest of it."""
    body = {k: v for k, v in manifest.items() if k != "checksum"}
    text = json.dumps(body, sort_keys=True).encode()
    return {**body, "checksum": hashlib.sha256(text).hexdigest()}


# -- backup ---------------------------------------------------------------------------


def backup(ds: Dataset, out: str | Path, *, report: Report | None = None) -> BackupResult:
    """Write a consistent copy of ``ds`` to ``out`` (a directory, or a tar by its suffix),
    which must not exist yet (or be an empty directory). Nothing is left at ``out`` if
    it fails."""
    t0 = time.monotonic()
    out = Path(out)
    work = begin(out)
    try:
        why = ""
        for _attempt in range(ATTEMPTS):
            try:
                manifest = _copy(ds, work, report)
                break
            except (BlobNotFound, LogTrimmed) as e:
                # the producer cleaned up or trimmed under us: a newer version holds it all
                why = str(e)
                shutil.rmtree(work)
                work.mkdir()
        else:
            raise BackupError(f"{_where(ds)} kept changing under the backup ({ATTEMPTS} "
                              f"tries; last: {why}); nothing was written to {out}")  # fmt: skip
        size = complete(work, out, manifest)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    m = manifest
    return BackupResult(out, m["version"], m["log_position"], m["head"], m["entries"],
                        len(m["blobs"]), size, time.monotonic() - t0)  # fmt: skip


def begin(out: Path) -> Path:
    """A temporary directory beside ``out`` to gather a backup in; BackupError if ``out``
    exists (an empty directory is fine)."""
    check_new_path(out, "backup")
    return temp_beside(out, "partial")


def complete(work: Path, out: Path, manifest: dict[str, Any]) -> int:
    """Seal ``manifest`` (whose ``files`` name what ``work`` holds) into ``work``, and make
    it ``out``: renamed, or packed into a tar when ``out`` ends in .tar, .tar.gz or .tgz
    (then ``work`` is removed). Returns the backup's size in bytes."""
    (work / MANIFEST).write_text(json.dumps(seal(manifest), indent=1, sort_keys=True))
    if not out.name.endswith(_TAR):
        rename_into(work, out)
        return sum(f["size"] for f in manifest["files"].values())
    tmp_tar = work.with_name(work.name + ".tar")
    gz = out.name.endswith((".gz", ".tgz"))
    try:
        # gzip level 1: blobs are compressed already; on the 100k bench backup (8.1 MB)
        # levels 9 (tarfile's default) / 6 / 1 took 7.5 / 2.8 / 0.85 s for 5.45 / 5.47 / 5.52 MB
        opts: dict[str, Any] = {"mode": "w:gz", "compresslevel": 1} if gz else {"mode": "w"}
        with tarfile.open(tmp_tar, **opts) as tar:
            for p in sorted(work.rglob("*")):
                tar.add(p, arcname=p.relative_to(work).as_posix(), recursive=False)
        with open(tmp_tar, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp_tar, out)
    finally:
        tmp_tar.unlink(missing_ok=True)
    shutil.rmtree(work)
    return out.stat().st_size


def file_entry(path: Path) -> dict[str, Any]:
    """What a manifest says of a file: its size and SHA-256."""
    return {"size": path.stat().st_size, "sha256": _sha256(path)}


def _copy(ds: Dataset, work: Path, report: Report | None) -> dict[str, Any]:
    ann = ds.announced()
    version = None if ann is None else announced_version(ann)
    after = _position(ann)
    # keys before the head: one changed in between has its change among the entries
    keys = [k for k in _key_positions(ds.log) if k[2] <= after]
    head = ds.log.head()  # after the announcement: every write acknowledged before it
    if version is None and head == 0:
        raise BackupError(f"{_where(ds)} holds no dataset (nothing announced or written)")
    files: dict[str, dict[str, Any]] = {}
    names = _route_names(ds, version) if version is not None else []
    for i, name in enumerate(names):
        size, digest = _write(work / "blobs" / name, ds.blobs.get(name))
        files[f"blobs/{name}"] = {"size": size, "sha256": digest}
        if report:
            report("copying blobs", i + 1, len(names))
    size, digest = _write(work / KEYS, msgspec.msgpack.encode(keys))
    files[KEYS] = {"size": size, "sha256": digest}
    n = 0
    for rows in _read_entries(ds.log, after, head):
        rel = f"log/{rows[0][0]:020d}.msgpack"
        size, digest = _write(work / rel, msgspec.msgpack.encode(rows))
        files[rel] = {"size": size, "sha256": digest}
        n += len(rows)
        if report:
            report("copying the Log", n, head - after)
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "created": _now(),
        "source": _where(ds), "dataset": ds.name,
        "version": version, "log_position": after, "head": head, "entries": n,
        "announcement": ann, "log_schema": ds.log.schema(), "blobs": names, "files": files,
        "keys": len(keys),
    }  # fmt: skip


# -- reading a backup -----------------------------------------------------------------


@contextlib.contextmanager
def opened(path: str | Path, *, report: Report | None = None, kind: str = FORMAT
           ) -> Iterator[tuple[Path, dict]]:  # fmt: skip
    """The backup at ``path`` as ``(directory, manifest)``, every file checked against the
    manifest (whose ``format`` must be ``kind``); a tar is unpacked into a temporary
    directory for the duration. BackupError naming what is wrong otherwise."""
    path = Path(path)
    if not path.exists():
        raise BackupError(f"no backup at {path}")
    if path.is_dir():
        yield path, _verify(path, report, kind)
        return
    tmp = Path(tempfile.mkdtemp(prefix=".nearstate-restore-"))
    try:
        try:
            with tarfile.open(path) as tar:
                tar.extractall(tmp, filter="data")
        except (tarfile.TarError, EOFError, OSError, zlib_error()) as e:
            first = (str(e).splitlines() or [type(e).__name__])[0].rstrip(":")
            raise BackupError(f"{path} is not a readable backup: a damaged or truncated tar "
                              f"({first})") from None  # fmt: skip
        yield tmp, _verify(tmp, report, kind, shown=path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def zlib_error() -> type[Exception]:
    import zlib

    return zlib.error


def _verify(d: Path, report: Report | None, kind: str, shown: Path | None = None
            ) -> dict[str, Any]:  # fmt: skip
    where = shown or d
    try:
        m = json.loads((d / MANIFEST).read_bytes())
    except FileNotFoundError:
        raise BackupError(f"{where} is not a nearstate backup (no {MANIFEST})") from None
    except (OSError, ValueError) as e:
        raise BackupError(f"{where}: {MANIFEST} is damaged ({e})") from None
    if not isinstance(m, dict) or m.get("format") != kind:
        raise BackupError(f"{where}: {MANIFEST} does not describe a {kind}")
    if m.get("format_version") != FORMAT_VERSION:
        raise BackupError(f"{where}: backup format {m.get('format_version')!r}; this "
                          f"nearstate reads format {FORMAT_VERSION}")  # fmt: skip
    if seal(m)["checksum"] != m.get("checksum"):
        raise BackupError(f"{where}: {MANIFEST} does not match its checksum (altered or damaged)")
    files = m["files"]
    for i, (rel, want) in enumerate(sorted(files.items())):
        p = d / rel
        if not p.is_file():
            raise BackupError(f"{where} is incomplete: {rel} is missing")
        size = p.stat().st_size
        if size != want["size"]:
            raise BackupError(f"{where}: {rel} is {size} bytes, the manifest says "
                              f"{want['size']} (truncated or altered)")  # fmt: skip
        if _sha256(p) != want["sha256"]:
            raise BackupError(f"{where}: {rel} does not match its SHA-256 (damaged or altered)")
        if report:
            report("checking the backup", i + 1, len(files))
    if kind != FORMAT:
        return m
    logs = sorted(r for r in files if r.startswith("log/"))
    blobs = [f"blobs/{n}" for n in m["blobs"]]
    extra = 1 if KEYS in files else 0
    if any(b not in files for b in blobs) or len(blobs) + len(logs) + extra != len(files):
        raise BackupError(f"{where}: {MANIFEST} lists files it does not account for")
    return m


def _entries(d: Path, m: dict[str, Any]) -> Iterator[list[tuple[int, bytes]]]:
    for rel in sorted(r for r in m["files"] if r.startswith("log/")):
        rows = msgspec.msgpack.decode((d / rel).read_bytes())
        yield [(int(p), bytes(b)) for p, b in rows]


# -- writing a dataset: restore and clone share it -----------------------------------


def check_new_path(p: Path, what: str) -> None:
    """BackupError unless ``p`` is absent or an empty directory (``what``: the verb)."""
    if p.exists() and (not p.is_dir() or any(p.iterdir())):
        raise BackupError(f"{p} already exists and is not empty: {what} into a new place "
                          "(nothing was written)")  # fmt: skip


def _open_up(d: Path) -> None:
    """A temporary directory (private when made) gets a new directory's usual mode."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(d, 0o777 & ~mask)


def temp_beside(p: Path, what: str) -> Path:
    """A new temporary directory beside ``p`` (same filesystem: it can be renamed to it)."""
    p.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{p.name}.{what}-", dir=p.parent))
    _open_up(work)
    return work


def rename_into(work: Path, target: Path) -> None:
    """Rename ``work`` to ``target`` (absent or an empty directory) and sync the parent;
    BackupError if ``target`` was filled meanwhile."""
    try:
        os.replace(work, target)  # onto a missing or empty directory: atomic
    except OSError as e:
        if e.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
            raise BackupError(f"{target} was filled by someone else meanwhile; nothing "
                              "was written to it") from None  # fmt: skip
        raise
    with contextlib.suppress(OSError):
        fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class _Target:
    """A new dataset being written: local ones in a temporary directory renamed into place
    at the end, NATS ones announced last and deleted on failure."""

    def __init__(self, target: str | Path, what: str):
        self.shown = str(target)
        self.what = what
        text = str(target)
        self.work: Path | None = None
        if "://" in text and not text.startswith("file:"):
            ds = open_dataset(text)
            if ds.exists() or ds.blobs.list():
                raise BackupError(f"{_where(ds)} already holds a dataset: {what} into a new "
                                  "one (nothing was written)")  # fmt: skip
            self.final: Path | None = None
        else:
            path = Path(unquote(urlparse(text).path)) if text.startswith("file:") else Path(text)
            check_new_path(path, what)
            self.final = path
            self.work = temp_beside(path, what)
            ds = LocalDataset(self.work)
        self.ds: Dataset = ds

    def write_log(self, after: int, batches: Iterable[list[tuple[int, bytes]]],
                  schema_text: str | None, total: int, report: Report | None,
                  keys: list[tuple[str, str, int, bool]]) -> int:  # fmt: skip
        """Start the new Log after position ``after`` with ``keys`` as the last changes up
        to it, and append the entries there, at the positions they had; returns how
        many."""
        log: StartsAfter = self.ds.log
        if not isinstance(log, StartsAfter):
            raise BackupError(f"the Log of {self.shown} cannot start at a given position")
        schema = Schema.from_json(json.loads(schema_text)) if schema_text else None
        first_schema = json.loads(schema_text) if schema_text else None
        n = 0

        def appends() -> Iterator[Append]:
            nonlocal n
            for rows in batches:
                for pos, body in rows:
                    if pos != after + n + 1:
                        raise BackupError(f"the Log entries jump from {after + n} to {pos}")
                    e = decode_entry(pos, body, schema)
                    keys = [(t, key_id(k), rec is not None) for t, k, rec in e.mutations]
                    yield Append(body, keys, first_schema if n == 0 else None)
                    n += 1
                if report:
                    report("writing the Log", n, total)

        head = log.start_after(after, appends(), keys)
        if head != after + n:
            raise BackupError(f"the new Log of {self.shown} ends at {head}, not {after + n}")
        return n

    def finish(self, ann: dict[str, Any] | None) -> None:
        if ann is not None:
            v = announced_version(ann)
            load_version(self.ds.blobs, v, verify=True)  # every section checked
            self.ds.announcer.announce(ann)
        if self.final is not None:
            assert self.work is not None
            self.ds.log.close()
            self.ds.announcer.close()
            rename_into(self.work, self.final)
            self.work = None

    def abandon(self) -> None:
        with contextlib.suppress(Exception):
            self.ds.log.close()
        if self.work is not None:
            shutil.rmtree(self.work, ignore_errors=True)
        elif self.final is None:
            with contextlib.suppress(NearstateError):
                self.ds.delete()  # type: ignore[attr-defined]


def restore(path: str | Path, target: str | Path, *, report: Report | None = None
            ) -> RestoreResult:  # fmt: skip
    """Restore the backup at ``path`` as a new dataset ``target`` (a directory or URL).
    The backup is checked whole first; the target appears complete or not at all."""
    t0 = time.monotonic()
    with opened(path, report=report) as (d, m):
        tgt = _Target(target, "restore")
        try:
            names = m["blobs"]
            for i, name in enumerate(names):
                data = (d / "blobs" / name).read_bytes()
                tgt.ds.blobs.put(name, [data])
                if report:
                    report("writing blobs", i + 1, len(names))
            raw = msgspec.msgpack.decode((d / KEYS).read_bytes()) if KEYS in m["files"] else []
            keys = [(t, k, int(p), bool(e)) for t, k, p, e in raw]
            n = tgt.write_log(int(m["log_position"]), _entries(d, m), m.get("log_schema"),
                              int(m["entries"]), report, keys)  # fmt: skip
            tgt.finish(m.get("announcement"))
        except BaseException as e:
            tgt.abandon()
            if isinstance(e, NearstateError) and not isinstance(e, BackupError):
                raise BackupError(f"restore into {target} failed, nothing was left there: "
                                  f"{e}") from e  # fmt: skip
            raise
    return RestoreResult(str(target), m["version"], int(m["head"]), n, len(names),
                         time.monotonic() - t0)  # fmt: skip


def clone(src: Dataset, target: str | Path, *, version: int | None = None,
          report: Report | None = None) -> CloneResult:  # fmt: skip
    """A new dataset ``target`` at a version of ``src``: without ``version``, the announced
    one plus the Log's entries past it (the source as it stands); with it, exactly that
    version. Blobs are hard links between local datasets (copied otherwise); writes to
    either dataset never reach the other."""
    t0 = time.monotonic()
    ann = src.announced()
    if ann is None:
        raise BackupError(f"{_where(src)} holds no version to clone (nothing announced)")
    current = announced_version(ann)
    if version is not None and version != current:
        if not 1 <= version <= current:
            raise BackupError(f"{_where(src)} has no version {version} (the current one is "
                              f"{current})")  # fmt: skip
        try:
            ann = read_record(src.blobs, version)
        except BlobNotFound:
            raise BackupError(f"{_where(src)} no longer keeps version {version}") from None
    v = announced_version(ann)
    after = _position(ann)
    keys = [k for k in _key_positions(src.log) if k[2] <= after]
    head = src.log.head() if version is None else after
    tgt = _Target(target, "clone")
    linked = copied = 0
    try:
        names = _route_names(src, v)
        local = isinstance(src, LocalDataset) and tgt.work is not None
        for i, name in enumerate(names):
            if local and _link(src, tgt, name):  # type: ignore[arg-type]
                linked += 1
            else:
                tgt.ds.blobs.put(name, [src.blobs.get(name)])
                copied += 1
            if report:
                report("sharing blobs" if local else "copying blobs", i + 1, len(names))
        try:
            n = tgt.write_log(after, _read_entries(src.log, after, head), src.log.schema(),
                              head - after, report, keys)  # fmt: skip
        except LogTrimmed as e:
            raise BackupError(f"{_where(src)} moved on while cloning ({e}); try again") from e
        tgt.finish(ann)
    except BaseException as e:
        tgt.abandon()
        if isinstance(e, NearstateError) and not isinstance(e, BackupError):
            raise BackupError(f"clone into {target} failed, nothing was left there: {e}") from e
        raise
    return CloneResult(str(target), v, after, n, linked, copied, time.monotonic() - t0)


def _link(src: LocalDataset, tgt: _Target, name: str) -> bool:
    """Hard-link blob ``name`` into the clone; False where the filesystems differ."""
    assert tgt.work is not None
    dst = tgt.work / name
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src.blobs.path(name), dst)
    except FileNotFoundError:
        raise BlobNotFound(f"no blob {name!r} in {_where(src)}", name=name) from None
    except OSError as e:
        if e.errno in (errno.EXDEV, errno.EPERM, errno.EMLINK):
            return False
        raise
    return True
