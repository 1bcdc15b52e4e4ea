"""Backups and restores of the CMS (nearstate.content.backup, ``nearstate cms
backup|restore``) on SQLite and PostgreSQL, with the media: a backup taken while an editor
saves holds every story saved before it; damaged backups are refused; nothing is written
over an existing store."""

from __future__ import annotations

import hashlib
import io
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from nearstate.backup import BackupError
from nearstate.cli import main
from nearstate.content.backup import backup_cms, restore_cms
from nearstate.content.cms import CMS
from nearstate.content.db import open_store
from nearstate.content.media import MediaConfig, store_upload


def _png(seed: int) -> bytes:
    from PIL import Image

    im = Image.new("RGB", (640, 400), (seed * 40 % 256, 120, 200 - seed))
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def _files(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def target(store_url: str, tmp_path: Path) -> Iterator[str]:
    """A new store to restore into: a SQLite path, or a schema of a database the test
    makes (and drops): pg_restore puts a schema back under its own name, then renamed."""
    if store_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'restored' / 'cms.db'}"
        return
    import psycopg

    from pgserver import pg_url

    base = pg_url()
    db = f"t_restore_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base, autocommit=True) as c:
        c.execute(f"CREATE DATABASE {db}")
    url = base.rsplit("/", 1)[0] + f"/{db}?options=-csearch_path%3Drestored"
    try:
        yield url
    finally:
        with psycopg.connect(base, autocommit=True) as c:
            c.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


@pytest.fixture
def filled(store_url: str, tmp_path: Path) -> tuple[str, MediaConfig, list[int], list[str]]:
    store = open_store(store_url)
    media = MediaConfig(root=tmp_path / "media")
    cms = CMS(store)
    ids = [cms.create_story({"title": f"Story {i}"}, user="ann").id for i in range(12)]
    assets = [store_upload(store, media, _png(i), filename=f"p{i}.png")["id"] for i in range(3)]
    store.close()
    return store_url, media, ids, assets


def _stories(url: str) -> dict[int, str]:
    store = open_store(url)
    try:
        return {r["id"]: r["title"] for r in store.read("SELECT id, title FROM stories")}
    finally:
        store.close()


def test_a_cms_backup_under_saves_restores_with_its_media(
    filled: Any, target: str, tmp_path: Path
) -> None:
    url, media, ids, assets = filled
    saved: list[int] = []
    stop = threading.Event()

    def edit() -> None:
        store = open_store(url)
        cms = CMS(store)
        try:
            while not stop.is_set():
                saved.append(cms.create_story({"title": f"Later {len(saved)}"},
                                              user="bob").id)  # fmt: skip
        finally:
            store.close()

    editor = threading.Thread(target=edit)
    editor.start()
    try:
        while len(saved) < 5:
            stop.wait(0.01)
        before = list(saved)
        r = backup_cms(url, media.root, tmp_path / "cms.tgz")
    finally:
        stop.set()
        editor.join()
    assert r.assets == 3 and r.media_files == len(_files(media.root)) > 3
    assert r.stories >= 12 + len(before)

    rr = restore_cms(tmp_path / "cms.tgz", target, tmp_path / "restored-media")
    assert (rr.stories, rr.assets, rr.media_files) == (r.stories, r.assets, r.media_files)
    got = _stories(target)
    for i in [*ids, *before]:
        assert i in got, f"story {i}, saved before the backup, is missing"
    source = _stories(url)
    assert all(source[i] == t for i, t in got.items())  # the same rows, as of one moment
    # every asset row has its files, byte for byte
    assert _files(tmp_path / "restored-media") == _files(media.root)
    store = open_store(target)
    try:
        rows = {a["id"] for a in store.read("SELECT id FROM assets")}
        assert rows == set(assets)
        for a in rows:
            assert (tmp_path / "restored-media" / a).is_dir()
        # the restored CMS works: a new story gets an id past the restored ones
        new = CMS(store).create_story({"title": "After"}, user="ann").id
        assert new > max(got)
    finally:
        store.close()


def test_a_damaged_cms_backup_is_refused_and_nothing_is_written(
    filled: Any, target: str, tmp_path: Path
) -> None:
    url, media, _ids, _assets = filled
    backup_cms(url, media.root, tmp_path / "b")
    victim = sorted((tmp_path / "b" / "media").rglob("*.png"))[0]
    victim.write_bytes(victim.read_bytes()[:-10])
    with pytest.raises(BackupError, match=r"media/\S+ is \d+ bytes, the manifest says"):
        restore_cms(tmp_path / "b", target, tmp_path / "restored-media")
    assert not (tmp_path / "restored-media").exists()
    if target.startswith("sqlite"):
        assert not (tmp_path / "restored").exists()
    else:
        import psycopg

        with psycopg.connect(target.split("?")[0]) as c:
            assert c.execute("SELECT COUNT(*) FROM pg_tables WHERE schemaname NOT IN "
                             "('pg_catalog', 'information_schema')").fetchone()[0] == 0  # fmt: skip


def test_a_cms_restore_never_writes_over_a_store(filled: Any, tmp_path: Path) -> None:
    url, media, _ids, _assets = filled
    backup_cms(url, media.root, tmp_path / "b")
    # the source itself is an existing store: refused, and the media stay as they were
    before = _files(media.root)
    with pytest.raises(BackupError, match="already"):
        restore_cms(tmp_path / "b", url, tmp_path / "other-media")
    assert not (tmp_path / "other-media").exists()
    assert _files(media.root) == before


def test_the_cms_commands_on_sqlite(tmp_path: Path) -> None:
    data = tmp_path / "data"
    r = CliRunner().invoke(main, ["cms", "init", "--data", str(data)])
    assert r.exit_code == 0, r.output
    store = open_store(f"sqlite:///{data / 'cms.db'}")
    CMS(store).create_story({"title": "Kept"}, user="ann")
    store_upload(store, MediaConfig(root=data / "media"), _png(1), filename="a.png")
    store.close()
    r = CliRunner().invoke(main, ["cms", "backup", str(tmp_path / "b.tar"), "--data", str(data)])
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "Backed up the sqlite write store" in text and "1 stories, 1 assets" in text
    r = CliRunner().invoke(main, ["cms", "restore", str(tmp_path / "b.tar"),
                                  "--data", str(tmp_path / "new")])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "Restored" in r.output
    assert list(_stories(f"sqlite:///{tmp_path / 'new' / 'cms.db'}").values()) == ["Kept"]
    assert _files(tmp_path / "new" / "media") == _files(data / "media")
    r = CliRunner().invoke(main, ["cms", "restore", str(tmp_path / "b.tar"),
                                  "--data", str(tmp_path / "new")])  # fmt: skip
    assert r.exit_code == 1 and "already exists" in " ".join(r.output.split())
