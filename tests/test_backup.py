"""Backups and restores of a dataset (nearstate.backup, ``nearstate backup|restore``), on a
local directory and on NATS JetStream: consistent under concurrent writes and compaction,
damaged or incomplete backups refused with the file named, nothing half-restored."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import nearstate
from nearstate.backends.local_log import LocalLog
from nearstate.backends.memory import MemoryLog
from nearstate.backup import MANIFEST, BackupError, backup, restore
from nearstate.cli import main
from nearstate.dataset import open_dataset
from nearstate.errors import ConflictError, LogError, LogTrimmed
from nearstate.ports import Append

Where = Callable[[str], str]


@pytest.fixture(params=["local", "nats"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Where]:
    """Names a new dataset on the backend of the run: a directory, or a NATS dataset of
    the test's own (deleted afterwards)."""
    made: list[str] = []
    if request.param == "local":
        yield lambda name: str(tmp_path / name)
        return
    from natsserver import drop, server_url, unique

    server = server_url()

    def nats(name: str) -> str:
        made.append(unique(f"bk-{name}"))
        return f"{server}/{made[-1]}"

    yield nats
    for name in made:
        drop(server, name)


def _items(ds: Any) -> dict[int, int]:
    c = ds.consumer()
    c.sync()
    return {r["id"]: r["n"] for r in c.state["Item"]}


def _listing(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


# -- the Log can start where a version left it ----------------------------------------


def test_an_empty_log_starts_after_a_position_on_every_backend(tmp_path: Path) -> None:
    from natsserver import drop, server_url, unique

    server, name = server_url(), unique("bk-log")
    nats = open_dataset(f"{server}/{name}")
    try:
        for log in (MemoryLog(), LocalLog(tmp_path), nats.log):
            entries = [Append(b"a", [("T", "1", True)], {"types": []}),
                       Append(b"b", [("T", "2", True), ("T", "1", False)])]  # fmt: skip
            keys = [("T", "9", 700, True), ("T", "1", 1100, True), ("U", "x", 3, False)]
            assert log.start_after(1200, entries, keys) == 1202
            assert log.last("T", "9") == (700, True) and log.last("U", "x") == (3, False)
            assert sorted(log.key_positions()) == [
                ("T", "1", 1202, False),
                ("T", "2", 1202, True),
                ("T", "9", 700, True),
                ("U", "x", 3, False),
            ]
            assert log.head() == 1202
            assert log.read(1200) == [(1201, b"a"), (1202, b"b")]
            assert log.last("T", "1") == (1202, False) and log.last("T", "2") == (1202, True)
            assert json.loads(log.schema()) == {"types": []}
            with pytest.raises(LogTrimmed):
                log.read(1199)
            pos = log.append(lambda _v: Append(b"x", [("T", "1", True)]))
            assert pos == 1203
            with pytest.raises(LogError, match="not empty"):
                log.start_after(5)
    finally:
        drop(server, name)


# -- round trip under concurrent writes ------------------------------------------------


def test_a_backup_taken_under_writes_holds_every_acknowledged_write(
    where: Where, tmp_path: Path
) -> None:
    src = open_dataset(where("src"))
    w = src.writer()
    for i in range(200):
        w.upsert("Item", {"id": i, "n": i})
    src.compact()
    acked: list[tuple[int, int]] = []  # (id, token), in commit order
    stop = threading.Event()
    errors: list[BaseException] = []

    def write() -> None:
        i = 1000
        try:
            while not stop.is_set():
                acked.append((i, int(w.upsert("Item", {"id": i, "n": i}))))
                i += 1
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    writer = threading.Thread(target=write)
    writer.start()
    # a producer folds the Log into versions (and trims it) while the backup runs
    with src.compactor(interval=0.05):
        while len(acked) < 100:
            time.sleep(0.01)
        before = list(acked)  # acknowledged before the backup started
        r = backup(src, tmp_path / "b")
        while len(acked) < len(before) + 100:  # the writer went on meanwhile
            time.sleep(0.01)
    stop.set()
    writer.join()
    assert not errors
    assert r.version is not None and r.head >= before[-1][1]

    dst = where("dst")
    rr = restore(tmp_path / "b", dst)
    assert (rr.version, rr.head) == (r.version, r.head)
    got = open_dataset(dst)
    items = _items(got)
    for i, _tok in before:
        assert items.get(i) == i, f"write {i}, acknowledged before the backup, is missing"
    # exactly the records the source had at the backup's head: nothing more, nothing less
    want = {i: i for i in range(200)} | {i: i for i, tok in acked if tok <= r.head}
    assert items == want
    # the Log keeps its positions: a token from before the backup names the same commit
    assert got.log.head() == r.head
    # (those folded into the version too: the Log's record of each key's last change)
    gw = got.writer()
    for i, tok in acked:
        if tok <= r.head:
            assert gw.token_of("Item", i) == tok
    assert [gw.token_of("Item", i) for i in range(0, 200, 37)] == [1, 38, 75, 112, 149, 186]
    with pytest.raises(ConflictError):
        gw.upsert("Item", {"id": 37, "n": 0}, expect_token=37)
    assert gw.upsert("Item", {"id": 37, "n": 0}, expect_token=38) == r.head + 1
    # and the restored dataset takes writes and compactions of its own
    t = gw.upsert("Item", {"id": 5, "n": -5})
    assert t == r.head + 2
    got.compact()
    assert _items(got)[5] == -5


def test_a_backup_restores_into_the_other_backend(where: Where, tmp_path: Path) -> None:
    """The format is the ports', not a backend's: local -> NATS and NATS -> local."""
    src = open_dataset(where("src"))
    w = src.writer()
    for i in range(30):
        w.upsert("Item", {"id": i, "n": i})
    src.compact()
    w.upsert("Item", {"id": 100, "n": 7})
    w.delete("Item", 3)
    backup(src, tmp_path / "b.tar.gz")
    from natsserver import drop, server_url, unique

    if isinstance(src, nearstate.LocalDataset):
        server, name = server_url(), unique("bk-other")
        other = f"{server}/{name}"
    else:
        server, name, other = "", "", str(tmp_path / "other")
    try:
        restore(tmp_path / "b.tar.gz", other)
        items = _items(open_dataset(other))
        assert items == {i: i for i in range(30) if i != 3} | {100: 7}
    finally:
        if name:
            drop(server, name)


# -- damaged, incomplete, or in the way ---------------------------------------------


@pytest.fixture
def made(tmp_path: Path) -> Path:
    """A local dataset's backup directory (a version and Log entries past it)."""
    src = open_dataset(tmp_path / "src")
    w = src.writer()
    for i in range(50):
        w.upsert("Item", {"id": i, "n": i})
    src.compact()
    for i in range(50, 60):
        w.upsert("Item", {"id": i, "n": i})
    backup(src, tmp_path / "b")
    return tmp_path / "b"


def _first(d: Path, under: str) -> Path:
    return sorted(p for p in (d / under).rglob("*") if p.is_file())[0]


@pytest.mark.parametrize(
    "damage, message",
    [
        ("flip a blob byte", r"blobs/snapshots/\S+ does not match its SHA-256"),
        ("truncate the log", r"log/\S+ is \d+ bytes, the manifest says \d+ \(truncated"),
        ("remove a blob", r"is incomplete: blobs/\S+ is missing"),
        ("alter the manifest", r"manifest.json does not match its checksum"),
        ("cut the manifest", r"manifest.json is damaged"),
        ("no manifest", r"not a nearstate backup \(no manifest.json\)"),
    ],
)
def test_a_damaged_backup_is_refused_naming_the_file(
    made: Path, where: Where, damage: str, message: str
) -> None:
    if damage == "flip a blob byte":
        p = _first(made, "blobs/snapshots")
        data = bytearray(p.read_bytes())
        data[len(data) // 2] ^= 0x40
        p.write_bytes(data)
    elif damage == "truncate the log":
        p = _first(made, "log")
        p.write_bytes(p.read_bytes()[:-7])
    elif damage == "remove a blob":
        _first(made, "blobs/versions").unlink()
    elif damage == "alter the manifest":
        m = json.loads((made / MANIFEST).read_text())
        m["head"] += 1
        (made / MANIFEST).write_text(json.dumps(m))
    elif damage == "cut the manifest":
        (made / MANIFEST).write_bytes((made / MANIFEST).read_bytes()[:100])
    else:
        (made / MANIFEST).unlink()
    target = where("dst")
    with pytest.raises(BackupError, match=message):
        restore(made, target)
    # nothing at the target, and nothing left beside it
    if "://" in target:
        assert not open_dataset(target).exists()
    else:
        assert not Path(target).exists()
        assert _listing(Path(target).parent) == ["b", "src"]


def test_a_truncated_tar_is_refused(made: Path, tmp_path: Path) -> None:
    src = open_dataset(tmp_path / "src")
    backup(src, tmp_path / "b.tgz")
    whole = (tmp_path / "b.tgz").read_bytes()
    (tmp_path / "b.tgz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(BackupError, match=r"b.tgz is not a readable backup: a damaged or "
                                          r"truncated tar"):  # fmt: skip
        restore(tmp_path / "b.tgz", tmp_path / "dst")
    assert not (tmp_path / "dst").exists()


def test_a_version_that_does_not_load_leaves_nothing(made: Path, where: Where) -> None:
    """A blob that matches a manifest but not its own checksums (a backup made of a
    damaged store) fails at the check before the announcement: the target is removed."""
    import hashlib

    from nearstate.backup import seal

    p = _first(made, "blobs/snapshots")
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x01
    p.write_bytes(data)
    m = json.loads((made / MANIFEST).read_text())
    rel = p.relative_to(made).as_posix()
    m["files"][rel] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (made / MANIFEST).write_text(json.dumps(seal(m)))
    target = where("dst")
    with pytest.raises(BackupError, match=r"restore into .* failed, nothing was left there"):
        restore(made, target)
    if "://" in target:
        ds = open_dataset(target)
        assert not ds.exists() and ds.blobs.list() == []
    else:
        assert not Path(target).exists()
        assert _listing(Path(target).parent) == ["b", "src"]


def test_restore_and_backup_never_write_over_something(made: Path, where: Where,
                                                       tmp_path: Path) -> None:  # fmt: skip
    target = where("dst")
    restore(made, target)
    before = _items(open_dataset(target))
    with pytest.raises(BackupError, match=r"already .*(holds a dataset|not empty)"):
        restore(made, target)
    assert _items(open_dataset(target)) == before
    with pytest.raises(BackupError, match="already exists and is not empty"):
        backup(open_dataset(tmp_path / "src"), made)


# -- the command line ------------------------------------------------------------------


def test_the_commands_say_what_happened(made: Path, tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["backup", str(tmp_path / "src"), str(tmp_path / "b2.tar")])
    assert r.exit_code == 0, r.output
    assert "version 1 (2 blobs) and 10 Log entries past it, up to position 60" in " ".join(
        r.output.split()
    )
    r = CliRunner().invoke(main, ["restore", str(tmp_path / "b2.tar"), str(tmp_path / "r")])
    assert r.exit_code == 0, r.output
    assert "Restored" in r.output and "10 Log entries" in " ".join(r.output.split())
    assert _items(open_dataset(tmp_path / "r")) == {i: i for i in range(60)}
    os.truncate(tmp_path / "b2.tar", 3000)
    r = CliRunner().invoke(main, ["restore", str(tmp_path / "b2.tar"), str(tmp_path / "r2")])
    assert r.exit_code == 1
    assert "error:" in r.output and "not a readable backup" in " ".join(r.output.split())
    r = CliRunner().invoke(main, ["backup", str(tmp_path / "nothing"), str(tmp_path / "b3")])
    assert r.exit_code == 1 and "holds no dataset" in " ".join(r.output.split())


def test_the_backup_benchmark_reports_every_figure(tmp_path: Path) -> None:
    from nearstate.bench.backup import run

    lines = run(300, 10, 1, None, tmp_path)
    text = "\n".join(lines)
    assert "300 records in version 2" in text and "10 Log entries past it" in text
    for what in ("backup to a directory", "backup to a .tar.gz", "restore (local)",
                 "clone (local, hard links)"):  # fmt: skip
        assert what in text
    assert "MB as a directory" in text
    assert _items_of(open_dataset(tmp_path / "r0")) == _items_of(open_dataset(tmp_path / "src"))


def _items_of(ds: Any) -> dict[int, str]:
    c = ds.consumer()
    c.sync()
    return {r["id"]: r["title"] for r in c.state["Product"]}
