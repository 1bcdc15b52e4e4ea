"""Backups and restores of the CMS: its write store and its media files.

A CMS backup is a directory or a tar, packed and checked as a dataset backup is
(:mod:`nearstate.backup`: a sealed ``manifest.json`` with every file's size and SHA-256)::

    manifest.json       format ``nearstate-cms-backup``, the dialect, the PostgreSQL schema
                        (if the store lives in one), the store's schema version, counts
    cms.sqlite          SQLite: a copy made with SQLite's online backup API
    cms.pgdump          PostgreSQL: ``pg_dump --format=custom`` (the machine's own tools)
    media/<asset>/...   the uploaded images and their variants

**Consistent.** The database is copied first, as of one moment (the online backup API
copies a snapshot of the file while writers go on; pg_dump reads in one repeatable-read
transaction). The media directory is copied after it: an asset's files are complete and
in place before its row is inserted, and never deleted, so every asset the copied
database names has its files in the copy (an upload made later leaves an unreferenced
directory, which does no harm).

**Restore refuses, never half-writes.** The backup is checked whole first. The target
store must be new: no SQLite file there, or no tables in the PostgreSQL schema (or
database) restored into; the media directory must be absent or empty. SQLite is written
to a temporary file, checked with ``PRAGMA integrity_check`` and linked into place;
PostgreSQL is restored by ``pg_restore --single-transaction`` (all or nothing); the media
go to a temporary directory renamed into place, and are taken away again if the database
part fails. A dump of schema ``X`` restored through a URL whose ``search_path`` names
``Y`` is renamed to ``Y``; pg_restore cannot put it beside an ``X`` of the same database,
so that is refused (restore into another database).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from ..backup import (
    BackupError,
    Report,
    begin,
    check_new_path,
    complete,
    file_entry,
    opened,
    rename_into,
    temp_beside,
)
from .db import open_store

FORMAT = "nearstate-cms-backup"
FORMAT_VERSION = 1
_SEARCH_PATH = re.compile(r"-c\s*search_path\s*=\s*([A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True)
class CmsBackupResult:
    path: Path
    dialect: str
    schema_version: int
    stories: int
    assets: int
    media_files: int
    bytes: int
    seconds: float


@dataclass(frozen=True)
class CmsRestoreResult:
    target: str
    dialect: str
    schema_version: int
    stories: int
    assets: int
    media_files: int
    seconds: float


def _counts(url: str) -> tuple[int, int, int]:
    store = open_store(url, migrate=False)
    try:
        n = {
            t: int(store.read_one(f"SELECT COUNT(*) AS n FROM {t}")["n"])  # type: ignore[index]
            for t in ("stories", "assets")
        }
        return store.schema_version(), n["stories"], n["assets"]
    finally:
        store.close()


def _count(execute: Any) -> tuple[int, int, int]:
    """(schema version, stories, assets) through a DB-API ``execute``."""
    got = [
        int(execute(sql).fetchone()[0] or 0)
        for sql in (
            "SELECT MAX(version) FROM schema_migrations",
            "SELECT COUNT(*) FROM stories",
            "SELECT COUNT(*) FROM assets",
        )
    ]
    return got[0], got[1], got[2]


def _pg_dump(url: str, schema: str | None, file: Path) -> tuple[int, int, int]:
    """pg_dump of the store as of one snapshot, which this transaction exports and counts
    in, so the counts are the dump's."""
    import psycopg

    try:
        with psycopg.connect(url) as c:
            c.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            c.read_only = True
            snap = c.execute("SELECT pg_export_snapshot()").fetchone()[0]  # type: ignore[index]
            counts = _count(c.execute)
            _run([_tool("pg_dump"), "--format=custom", "--no-owner", "--no-privileges",
                  f"--snapshot={snap}", *([f"--schema={schema}"] if schema else []),
                  f"--file={file}", f"--dbname={url}"], "pg_dump")  # fmt: skip
            c.rollback()
    except psycopg.Error as e:
        raise BackupError(f"cannot back up the PostgreSQL store: {e}") from None
    return counts


def _dialect(url: str) -> tuple[str, str]:
    """("sqlite", absolute path) or ("postgres", url)."""
    store = open_store(url, migrate=False)
    try:
        if store.dialect == "sqlite":
            return "sqlite", store.url.split(":///", 1)[1]
        return "postgres", store.url
    finally:
        store.close()


def _schema_of(url: str) -> str | None:
    """The schema a PostgreSQL URL's ``options=-csearch_path=...`` names, or None."""
    for opt in parse_qs(urlsplit(url).query).get("options", []):
        m = _SEARCH_PATH.search(opt)
        if m:
            return m.group(1)
    return None


def _without_options(url: str) -> str:
    parts = urlsplit(url)
    q = [(k, v) for k, vs in parse_qs(parts.query).items() if k != "options" for v in vs]
    return urlunsplit(parts._replace(query=urlencode(q)))


def _tool(name: str) -> str:
    exe = shutil.which(name)
    if exe is None:
        raise BackupError(f"{name} is not installed (PostgreSQL's client tools are needed "
                          "for a PostgreSQL CMS's backups)")  # fmt: skip
    return exe


def _run(args: list[str], what: str) -> None:
    try:
        r = subprocess.run(args, capture_output=True, text=True, timeout=3600)
    except OSError as e:
        raise BackupError(f"{what} could not run: {e}") from None
    if r.returncode != 0:
        tail = " ".join((r.stderr or r.stdout).split())[-600:]
        raise BackupError(f"{what} failed (exit {r.returncode}): {tail}")


def _copy_media(root: Path, dest: Path, report: Report | None) -> dict[str, dict[str, Any]]:
    files: dict[str, dict[str, Any]] = {}
    if not root.is_dir():
        return files
    found = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    for i, p in enumerate(found):
        rel = p.relative_to(root).as_posix()
        target = dest / "media" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, target)
        files[f"media/{rel}"] = file_entry(target)
        if report:
            report("copying media", i + 1, len(found))
    return files


# -- backup -----------------------------------------------------------------------------


def backup_cms(store_url: str, media_root: str | Path, out: str | Path, *,
               report: Report | None = None) -> CmsBackupResult:  # fmt: skip
    """Back up the CMS at ``store_url`` with the media under ``media_root`` to ``out`` (a
    new directory, or a tar by its suffix). Editors may go on working meanwhile."""
    t0 = time.monotonic()
    out = Path(out)
    dialect, where = _dialect(store_url)
    work = begin(out)
    try:
        files: dict[str, dict[str, Any]] = {}
        schema = None
        if dialect == "sqlite":
            name = "cms.sqlite"
            src = sqlite3.connect(where, timeout=30)
            dst = sqlite3.connect(work / name)
            try:
                src.backup(dst, pages=1024)
                version, stories, assets = _count(dst.execute)
            except sqlite3.Error as e:
                raise BackupError(f"cannot back up the SQLite store {where}: {e}") from None
            finally:
                dst.close()
                src.close()
        else:
            name = "cms.pgdump"
            schema = _schema_of(store_url)
            version, stories, assets = _pg_dump(store_url, schema, work / name)
        if report:
            report("copying the write store", 1, 1)
        files[name] = file_entry(work / name)
        files.update(_copy_media(Path(media_root), work, report))
        manifest = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "dialect": dialect,
            "schema": schema, "schema_version": version, "store": name,
            "stories": stories, "assets": assets, "files": files,
            "media_files": sum(1 for f in files if f.startswith("media/")),
        }  # fmt: skip
        size = complete(work, out, manifest)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return CmsBackupResult(out, dialect, version, stories, assets, manifest["media_files"],
                           size, time.monotonic() - t0)  # fmt: skip


# -- restore ----------------------------------------------------------------------------


@contextlib.contextmanager
def _media_placed(d: Path, root: Path) -> Iterator[int]:
    """The backup's media renamed into place at ``root`` for the block's duration, and
    taken away again if the block fails."""
    check_new_path(root, "restore the media")
    work = temp_beside(root, "restore")
    n = 0
    try:
        src = d / "media"
        if src.is_dir():
            for p in sorted(src.rglob("*")):
                if p.is_file():
                    t = work / p.relative_to(src)
                    t.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(p, t)
                    n += 1
        rename_into(work, root)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    try:
        yield n
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise


def restore_cms(backup: str | Path, store_url: str, media_root: str | Path, *,
                report: Report | None = None) -> CmsRestoreResult:  # fmt: skip
    """Restore the CMS backup at ``backup`` into the new store ``store_url`` and the new
    media directory ``media_root``; both appear whole or not at all."""
    t0 = time.monotonic()
    with opened(backup, report=report, kind=FORMAT) as (d, m):
        if m.get("format_version") != FORMAT_VERSION:
            raise BackupError(f"{backup}: CMS backup format {m.get('format_version')!r}; this "
                              f"nearstate reads format {FORMAT_VERSION}")  # fmt: skip
        is_pg = store_url.split(":", 1)[0] in ("postgresql", "postgres")
        if (m["dialect"] == "postgres") != is_pg:
            raise BackupError(f"{backup} holds a {m['dialect']} store; {store_url} is not one "
                              "(restore it into the same kind of database)")  # fmt: skip
        finish = _pg_target(d, m, store_url) if is_pg else _sqlite_target(d, m, store_url)
        with _media_placed(d, Path(media_root)) as n:
            finish()
            if report:
                report("restoring the write store", 1, 1)
    version, stories, assets = _counts(store_url)
    return CmsRestoreResult(store_url, m["dialect"], version, stories, assets, n,
                            time.monotonic() - t0)  # fmt: skip


def _sqlite_target(d: Path, m: dict[str, Any], url: str) -> Any:
    text = url.split("://", 1)[1] if "://" in url else url
    path = Path("/" + text.lstrip("/")) if url.startswith("sqlite:///") else Path(text)
    if path.is_dir():
        path = path / "cms.db"
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-journal")):
        if p.exists():
            raise BackupError(f"{p} already exists: restore the CMS into a new store "
                              "(nothing was written)")  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)

    def finish() -> None:
        tmp = path.with_name(f".{path.name}.restore-{os.getpid()}")
        try:
            shutil.copyfile(d / m["store"], tmp)
            with contextlib.closing(sqlite3.connect(tmp)) as c:
                ok = c.execute("PRAGMA integrity_check").fetchone()[0]
                if ok != "ok":
                    raise BackupError(f"the backup's SQLite store fails its integrity check: {ok}")
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)  # never over a file that appeared meanwhile
            except FileExistsError:
                raise BackupError(f"{path} appeared while restoring; it was left as it "
                                  "is") from None  # fmt: skip
        finally:
            tmp.unlink(missing_ok=True)

    return finish


def _pg_target(d: Path, m: dict[str, Any], url: str) -> Any:
    import psycopg

    source = m.get("schema")
    target = _schema_of(url) or source
    base = _without_options(url)
    try:
        with psycopg.connect(base, autocommit=True) as c:

            def tables(schema: str) -> int:
                return int(c.execute("SELECT COUNT(*) FROM pg_tables WHERE schemaname = %s",
                                     (schema,)).fetchone()[0])  # fmt: skip

            def exists(schema: str) -> bool:
                return c.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s",
                                 (schema,)).fetchone() is not None  # fmt: skip

            if source is None and target not in (None, "public"):
                raise BackupError("the backup holds a whole database's public schema; restore "
                                  "it into a database without a search_path option")  # fmt: skip
            into = target or "public"
            if tables(into):
                raise BackupError(f"schema {into} of {_without_options(url)} already holds "
                                  "tables: restore the CMS into a new schema or database "
                                  "(nothing was written)")  # fmt: skip
            if source and source != target and exists(source):
                raise BackupError(f"the backup's schema {source} already exists in that "
                                  "database; pg_restore cannot restore it under another "
                                  "name beside it: restore into another database")  # fmt: skip
    except psycopg.Error as e:
        raise BackupError(f"cannot reach PostgreSQL at {base}: {e}") from None

    def finish() -> None:
        try:
            with psycopg.connect(base, autocommit=True) as c:
                found = c.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (target,))
                dropped = bool(source and target and found.fetchone())
                if dropped:  # an empty schema made for the restore: pg_restore makes it
                    c.execute(f'DROP SCHEMA "{target}"')
            restored = False
            try:
                _run([_tool("pg_restore"), "--single-transaction", "--exit-on-error",
                      "--no-owner", "--no-privileges", f"--dbname={base}",
                      str(d / m["store"])], "pg_restore")  # fmt: skip
                restored = True
                if source and target and source != target:
                    with psycopg.connect(base, autocommit=True) as c:
                        c.execute(f'ALTER SCHEMA "{source}" RENAME TO "{target}"')
            except BaseException:
                with psycopg.connect(base, autocommit=True) as c:
                    if restored and source:
                        c.execute(f'DROP SCHEMA IF EXISTS "{source}" CASCADE')
                    if dropped:
                        c.execute(f'CREATE SCHEMA IF NOT EXISTS "{target}"')
                raise
        except psycopg.Error as e:
            raise BackupError(f"restoring into PostgreSQL at {base} failed: {e}") from None

    return finish
