"""Clones (nearstate.backup.clone, ``nearstate clone``): a new dataset at a version of
another, sharing its blob files by hard links locally (copied on NATS), with writes to
either never reaching the other."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from nearstate.backup import BackupError, clone
from nearstate.cli import main
from nearstate.dataset import LocalDataset, open_dataset


def _items(ds: Any) -> dict[int, int]:
    c = ds.consumer()
    c.sync()
    return {r["id"]: r["n"] for r in c.state["Item"]}


def _source(url: str | Path) -> Any:
    """Version 1 (ids 0-49), version 2 (ids 0-59, 0 changed), and Log entries past it."""
    ds = open_dataset(url)
    w = ds.writer()
    for i in range(50):
        w.upsert("Item", {"id": i, "n": i})
    ds.compact()
    for i in range(50, 60):
        w.upsert("Item", {"id": i, "n": i})
    w.upsert("Item", {"id": 0, "n": 100})
    ds.compact()
    w.upsert("Item", {"id": 70, "n": 70})
    w.delete("Item", 1)
    return ds


def _digests(d: Path) -> dict[str, str]:
    return {
        p.relative_to(d).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(d.rglob("*"))
        if p.is_file() and p.suffix in (".blob", ".json")
    }


AT_HEAD = {i: i for i in range(60) if i != 1} | {0: 100, 70: 70}


@pytest.fixture
def nats_names() -> Iterator[list[str]]:
    from natsserver import drop, server_url

    names: list[str] = []
    yield names
    for n in names:
        drop(server_url(), n)


def _nats(names: list[str], tag: str) -> str:
    from natsserver import server_url, unique

    names.append(unique(f"cl-{tag}"))
    return f"{server_url()}/{names[-1]}"


def test_a_local_clone_shares_the_blob_files(tmp_path: Path) -> None:
    src = _source(tmp_path / "src")
    r = clone(src, tmp_path / "dst")
    assert r.version == 2 and r.copied == 0 and r.linked >= 2 and r.entries == 2
    dst = open_dataset(tmp_path / "dst")
    assert isinstance(dst, LocalDataset)
    shared = [n for n in dst.blobs.list()]
    assert len(shared) == r.linked
    for name in shared:
        a, b = src.blobs.path(name).stat(), dst.blobs.path(name).stat()
        assert (a.st_ino, a.st_dev) == (b.st_ino, b.st_dev) and a.st_nlink >= 2
    assert _items(dst) == _items(src) == AT_HEAD
    assert dst.log.head() == src.log.head()
    sw, dw = src.writer(), dst.writer()  # tokens, of keys folded into versions too
    assert [dw.token_of("Item", i) for i in AT_HEAD] == [sw.token_of("Item", i) for i in AT_HEAD]


def test_writes_to_a_local_clone_never_reach_the_source_and_back(tmp_path: Path) -> None:
    src = _source(tmp_path / "src")
    clone(src, tmp_path / "dst")
    dst = open_dataset(tmp_path / "dst")
    src_files, src_head = _digests(tmp_path / "src"), src.log.head()

    # the clone writes, compacts (snapshot included) and cleans up its old versions
    dw = dst.writer()
    for i in range(200, 260):
        dw.upsert("Item", {"id": i, "n": -i})
    dw.upsert("Item", {"id": 0, "n": -1})
    with dst.producer(retain_snapshots=1) as p:
        from nearstate.compaction import compact

        compact(p, dst.log, snapshot=True)
    assert _items(dst) == AT_HEAD | {i: -i for i in range(200, 260)} | {0: -1}
    # the source: same files, same bytes, same Log, same records
    assert _digests(tmp_path / "src") == src_files
    assert src.log.head() == src_head
    assert _items(open_dataset(tmp_path / "src")) == AT_HEAD

    # and the other way: the source moves on, the clone stays where it was
    dst_before = _items(dst)
    dst_files = _digests(tmp_path / "dst")
    sw = src.writer()
    sw.upsert("Item", {"id": 2, "n": 222})
    with src.producer(retain_snapshots=1) as p:
        from nearstate.compaction import compact

        compact(p, src.log, snapshot=True)
    assert _items(open_dataset(tmp_path / "src"))[2] == 222
    assert _items(open_dataset(tmp_path / "dst")) == dst_before
    assert _digests(tmp_path / "dst") == dst_files


def test_a_clone_of_an_older_version(tmp_path: Path) -> None:
    src = _source(tmp_path / "src")
    r = clone(src, tmp_path / "v1", version=1)
    assert (r.version, r.entries) == (1, 0)
    v1 = open_dataset(tmp_path / "v1")
    assert _items(v1) == {i: i for i in range(50)}
    assert v1.log.head() == r.log_position == 50
    assert v1.writer().upsert("Item", {"id": 9, "n": 0}) == 51
    with pytest.raises(BackupError, match="has no version 9"):
        clone(src, tmp_path / "v9", version=9)
    assert not (tmp_path / "v9").exists()


def test_a_clone_never_lands_on_something(tmp_path: Path) -> None:
    src = _source(tmp_path / "src")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("mine")
    with pytest.raises(BackupError, match="already exists and is not empty"):
        clone(src, tmp_path / "busy")
    assert [p.name for p in (tmp_path / "busy").iterdir()] == ["x"]


def test_a_nats_clone_copies_and_stays_apart(tmp_path: Path, nats_names: list[str]) -> None:
    src = _source(_nats(nats_names, "src"))
    target = _nats(nats_names, "dst")
    r = clone(src, target)
    assert r.linked == 0 and r.copied >= 2 and r.entries == 2
    dst = open_dataset(target)
    assert _items(dst) == AT_HEAD
    sw, dw = src.writer(), dst.writer()
    assert [dw.token_of("Item", i) for i in AT_HEAD] == [sw.token_of("Item", i) for i in AT_HEAD]
    dst.writer().upsert("Item", {"id": 3, "n": -3})
    dst.compact()
    src.writer().upsert("Item", {"id": 4, "n": -4})
    src.compact()
    assert _items(open_dataset(target))[3] == -3 and _items(open_dataset(target))[4] == 4
    s = _items(src)
    assert s[3] == 3 and s[4] == -4
    # a local clone of a NATS dataset copies too
    r2 = clone(src, tmp_path / "here")
    assert r2.linked == 0 and _items(open_dataset(tmp_path / "here"))[4] == -4


def test_the_clone_command(tmp_path: Path) -> None:
    _source(tmp_path / "src")
    r = CliRunner().invoke(main, ["clone", str(tmp_path / "src"), str(tmp_path / "c"),
                                  "--version", "1"])  # fmt: skip
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "at version 1" in text and "blobs shared" in text and "0 Log entries" in text
    r = CliRunner().invoke(main, ["clone", str(tmp_path / "none"), str(tmp_path / "d")])
    assert r.exit_code == 1 and "holds no dataset" in " ".join(r.output.split())
