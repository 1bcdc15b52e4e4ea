"""Faults and bad input around versions, on a LocalDataset.

* a missing delta: the refresh fails, the consumer stays on its version and says which
  blob is missing — unless a snapshot of the target exists, which it then loads;
* a corrupted delta or reverse delta: refused with an error naming the blob (falling back
  to a snapshot route where there is one); once the file is restored, refreshes work;
* a delta under another delta's name: DeltaError naming the blob;
* an announcement of a version that does not exist, or one that cannot be read: the
  consumer stays, in the foreground and in its background thread, and moves on by itself
  once a good version is announced;
* a producer killed in the middle of publishing (SIGKILL in a subprocess): the previous
  version stays announced and loadable, the lock is released by the kernel, and the next
  producer publishes the next version;
* a corrupted snapshot: refused with an error naming the damaged section.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import nearstate
from nearstate import (
    ChecksumError,
    Consumer,
    DatasetError,
    DeltaError,
    LocalDataset,
    LockedError,
    NearstateError,
    Producer,
    ReadState,
)
from nearstate.blob import ALIGN, parse_blob
from nearstate.versions import delta_name, record_name, reverse_name, snapshot_name
from versioned import ITEM, Model, item


def base_model(n: int = 30) -> Model:
    return {i: item(i, score=i / 2 if i % 2 else None, tags=[f"t{i % 3}"]) for i in range(n)}


def full(p: Producer, model: Model, **kw: Any) -> nearstate.CycleResult:
    kw.setdefault("schema", ITEM)
    return p.run_cycle(lambda ws: ws.add_many("Item", list(model.values())), **kw)


def records(state: Any) -> Model:
    return {r.key: r.to_dict() for r in state["Item"]}


def replace_file(path: Path, data: bytes) -> None:
    """Swap in new bytes by rename, so maps of the old file keep their bytes."""
    tmp = path.with_name(f".{path.name}.test")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def flip_middle_byte(path: Path) -> bytes:
    """Flip one byte in the middle of a file; return the original bytes."""
    original = path.read_bytes()
    data = bytearray(original)
    data[len(data) // 2] ^= 0x5A
    replace_file(path, bytes(data))
    return original


def announce_raw(ds: LocalDataset, content: bytes) -> None:
    replace_file(ds.path / "announced.json", content)


def wait_until(cond: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


@pytest.fixture
def ds(tmp_path: Path) -> LocalDataset:
    return LocalDataset(tmp_path / "ds")


@pytest.fixture
def producer(ds: LocalDataset) -> Iterator[Producer]:
    p = ds.producer(retain_snapshots=None)
    yield p
    p.close()


def three_versions(p: Producer, *, snapshot_at_3: bool = False) -> dict[int, Model]:
    """1: snapshot; 2: delta; 3: delta (and a snapshot if asked)."""
    hist: dict[int, Model] = {}
    m = base_model()
    full(p, m)
    hist[1] = copy.deepcopy(m)
    m[1]["name"] = "two"
    m[100] = item(100)
    full(p, m)
    hist[2] = copy.deepcopy(m)
    m[2]["name"] = "three"
    del m[5]
    full(p, m, snapshot=snapshot_at_3)
    hist[3] = copy.deepcopy(m)
    return hist


def three_versions_after_1(p: Producer, *, snapshot_at_3: bool = False) -> dict[int, Model]:
    """Versions 2 and 3 over a version 1 of base_model() that ``p`` already published."""
    hist = {1: base_model()}
    m = copy.deepcopy(hist[1])
    m[1]["name"] = "two"
    m[100] = item(100)
    assert full(p, m).version == 2
    hist[2] = copy.deepcopy(m)
    m[2]["name"] = "three"
    del m[5]
    assert full(p, m, snapshot=snapshot_at_3).version == 3
    hist[3] = copy.deepcopy(m)
    return hist


# --- missing deltas ---------------------------------------------------------------------------


def test_a_missing_delta_fails_the_refresh_and_the_consumer_stays(
    ds: LocalDataset, producer: Producer
) -> None:
    full(producer, base_model())
    c = ds.consumer()
    c.refresh()
    hist = three_versions_after_1(producer)
    name = delta_name(3)
    path = ds.blobs.path(name)
    saved = path.read_bytes()
    path.unlink()
    with pytest.raises(NearstateError) as ei:
        c.refresh()
    assert name in str(ei.value)
    assert c.version == 1 and records(c.state) == hist[1]
    assert c.last_error is not None and name in c.last_error and "3" in c.last_error
    assert c.announced_version == 3
    # a fresh consumer cannot load version 3 either
    fresh = ds.consumer()
    with pytest.raises(DatasetError):
        fresh.refresh()
    assert fresh.version is None and fresh.last_error is not None
    # version 2 is still reachable
    c.move_to(2)
    assert records(c.state) == hist[2] and c.last_error is None
    # the blob comes back: the next refresh succeeds
    replace_file(path, saved)
    assert c.refresh() is True and c.version == 3
    assert records(c.state) == hist[3] and c.last_error is None


def test_a_missing_delta_falls_back_to_the_targets_snapshot(
    ds: LocalDataset, producer: Producer
) -> None:
    full(producer, base_model())
    c = ds.consumer()
    c.refresh()
    events: list[nearstate.RefreshEvent] = []
    c.add_listener(events.append)
    hist = three_versions_after_1(producer, snapshot_at_3=True)
    assert snapshot_name(3) in ds.blobs.list()
    ds.blobs.delete(delta_name(2))
    assert c.refresh() is True
    assert c.version == 3 and c.last_error is None
    assert isinstance(c.state, ReadState)  # the snapshot of version 3
    assert records(c.state) == hist[3]
    assert events[-1].changes is None and events[-1].previous == 1


# --- corrupted deltas -------------------------------------------------------------------------


def test_a_corrupted_delta_is_refused_by_a_new_consumer(
    ds: LocalDataset, producer: Producer
) -> None:
    hist = three_versions(producer)
    name = delta_name(2)
    original = flip_middle_byte(ds.blobs.path(name))
    c = ds.consumer()
    with pytest.raises(NearstateError) as ei:
        c.refresh()
    assert isinstance(ei.value, ChecksumError)
    assert name in str(ei.value)
    assert c.version is None and c.last_error is not None and name in c.last_error
    with pytest.raises(ChecksumError):
        ds.load(3)
    replace_file(ds.blobs.path(name), original)
    assert c.refresh() is True
    assert records(c.state) == hist[3]


def test_a_corrupted_delta_is_refused_and_the_consumer_stays(
    ds: LocalDataset, producer: Producer
) -> None:
    full(producer, base_model())
    c = ds.consumer()
    c.refresh()
    hist = three_versions_after_1(producer)
    name = delta_name(3)
    original = flip_middle_byte(ds.blobs.path(name))
    with pytest.raises(NearstateError) as ei:
        c.refresh()
    assert isinstance(ei.value, ChecksumError)
    assert name in str(ei.value)
    assert c.version == 1 and records(c.state) == hist[1]
    assert c.last_error is not None and name in c.last_error
    replace_file(ds.blobs.path(name), original)
    assert c.refresh() is True and records(c.state) == hist[3]


def test_a_corrupted_delta_falls_back_to_the_targets_snapshot(
    ds: LocalDataset, producer: Producer
) -> None:
    full(producer, base_model())
    c = ds.consumer()
    c.refresh()
    hist = three_versions_after_1(producer, snapshot_at_3=True)
    flip_middle_byte(ds.blobs.path(delta_name(3)))
    assert c.refresh() is True and c.version == 3
    assert records(c.state) == hist[3] and c.last_error is None


def test_a_corrupted_reverse_delta_falls_back_to_snapshot_and_deltas(
    ds: LocalDataset, producer: Producer
) -> None:
    hist = three_versions(producer)
    c = ds.consumer()
    c.refresh()
    flip_middle_byte(ds.blobs.path(reverse_name(3)))
    assert c.move_to(2) is True and c.version == 2
    assert records(c.state) == hist[2] and c.last_error is None
    c.move_to(1)  # reverse/2-1 is fine
    assert records(c.state) == hist[1]


# --- a delta under the wrong name -------------------------------------------------------------


def test_a_delta_from_another_version_is_refused(ds: LocalDataset, producer: Producer) -> None:
    hist = three_versions(producer)
    c = ds.consumer()
    c.move_to(2)
    wrong = delta_name(3)
    replace_file(ds.blobs.path(wrong), ds.blobs.path(delta_name(2)).read_bytes())
    with pytest.raises(DeltaError) as ei:
        c.refresh()
    assert wrong in str(ei.value)
    assert c.version == 2 and records(c.state) == hist[2]
    assert c.last_error is not None and wrong in c.last_error
    with pytest.raises(DeltaError, match=wrong):
        ds.load(3)
    # a delta of the right versions with the wrong content (another dataset's) fails too
    other = LocalDataset(ds.path.parent / "other")
    with other.producer() as op:
        m = base_model()
        m[0]["name"] = "different"
        full(op, m)
        m[1]["name"] = "two"
        full(op, m)
        m[2]["name"] = "three"
        full(op, m)
    replace_file(ds.blobs.path(wrong), other.blobs.path(delta_name(3)).read_bytes())
    with pytest.raises(DeltaError) as ei:
        c.refresh()
    assert wrong in str(ei.value) and "checksum" in str(ei.value)
    assert c.version == 2


# --- bad announcements ------------------------------------------------------------------------


def test_an_announced_version_that_does_not_exist(ds: LocalDataset, producer: Producer) -> None:
    hist = three_versions(producer)
    c = ds.consumer()
    c.refresh()
    announce_raw(ds, json.dumps({"version": 99}).encode())
    with pytest.raises(NearstateError, match="99"):
        c.refresh()
    assert c.version == 3 and records(c.state) == hist[3]
    assert c.last_error is not None and "99" in c.last_error
    assert c.announced_version == 99
    fresh = ds.consumer()
    with pytest.raises(DatasetError, match="99"):
        fresh.refresh()
    assert fresh.version is None
    # the producer is not misled: it holds version 3 and publishes 4
    m = copy.deepcopy(hist[3])
    m[7]["name"] = "four"
    assert full(producer, m).version == 4
    assert c.refresh() and c.version == 4 and records(c.state) == m
    assert c.last_error is None


def test_the_background_thread_rides_out_a_bad_announcement(
    ds: LocalDataset, producer: Producer
) -> None:
    hist = three_versions(producer)
    c = ds.consumer(retry_interval=0.05)
    c.start(timeout=10)
    try:
        assert c.version == 3
        announce_raw(ds, json.dumps({"version": 99}).encode())
        assert wait_until(lambda: "99" in (c.last_error or ""))
        assert c.version == 3 and records(c.state) == hist[3]
        # still failing, still serving, after several retries
        first = c.last_error
        time.sleep(0.2)
        assert c.version == 3 and c.last_error == first
        m = copy.deepcopy(hist[3])
        m[8]["name"] = "four"
        full(producer, m)
        assert c.wait_for_version(4, 10)
        assert records(c.state) == m
        assert wait_until(lambda: c.last_error is None)
    finally:
        c.stop()


@pytest.mark.parametrize(
    "content",
    [b'{"v": 3}', b'{"version": "abc"}', b'{"version": null}', b"[]"],
    ids=["no-version", "str", "null", "list"],
)
def test_a_malformed_announcement_raises_a_nearstate_error(
    ds: LocalDataset, producer: Producer, content: bytes
) -> None:
    hist = three_versions(producer)
    c = ds.consumer()
    c.refresh()
    announce_raw(ds, content)
    try:
        c.refresh()
    except NearstateError as e:
        assert "version" in str(e) or "announced" in str(e)
    else:
        pytest.fail("a malformed announcement was accepted")
    assert c.version == 3 and records(c.state) == hist[3]


def test_an_unreadable_announcement_sets_last_error(ds: LocalDataset, producer: Producer) -> None:
    three_versions(producer)
    c = ds.consumer()
    c.refresh()
    announce_raw(ds, b"{not json")
    with pytest.raises(DatasetError, match=r"announced\.json"):
        c.refresh()
    assert c.version == 3
    assert c.last_error is not None and "announced.json" in c.last_error


def test_the_background_thread_survives_an_unreadable_announcement(
    ds: LocalDataset, producer: Producer
) -> None:
    hist = three_versions(producer)
    c = ds.consumer(retry_interval=0.05)
    c.start(timeout=10)
    try:
        for content in (b"{not json", b'{"v": 3}'):
            announce_raw(ds, content)
            time.sleep(0.15)  # let the thread meet it a few times; nothing to wait for
            assert c.version == 3 and records(c.state) == hist[3]
        m = copy.deepcopy(hist[3])
        m[9]["name"] = "four"
        full(producer, m)
        assert c.wait_for_version(4, 10)
        assert records(c.state) == m
    finally:
        c.stop()


# --- a producer killed while publishing -------------------------------------------------------

KILLED_PRODUCER = textwrap.dedent(
    """
    import os, signal, sys
    import nearstate
    from nearstate.backends import local

    path, kill_after = sys.argv[1], int(sys.argv[2])
    put = local.LocalBlobStore.put
    written = []

    def put_then_die(self, name, parts):
        n = put(self, name, parts)
        written.append(name)
        print(name, flush=True)
        if len(written) >= kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
        return n

    local.LocalBlobStore.put = put_then_die
    p = nearstate.LocalDataset(path).producer(retain_snapshots=None)
    p.run_incremental(lambda inc: (
        inc.upsert("Item", {"id": 1, "name": "never announced", "score": 1.0, "tags": []}),
        inc.delete("Item", 2),
    ))
    print("NOT KILLED", flush=True)
    """
)


@pytest.mark.parametrize("kill_after", [1, 2, 3], ids=["delta", "reverse", "record"])
def test_a_producer_killed_while_publishing(ds: LocalDataset, kill_after: int) -> None:
    with ds.producer(retain_snapshots=None) as p:
        m = base_model()
        full(p, m)
        m[3]["name"] = "two"
        full(p, m)
    follower = ds.consumer()
    follower.refresh()
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_PRODUCER, str(ds.path), str(kill_after)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    written = proc.stdout.split()
    assert written == [delta_name(3), reverse_name(3), record_name(3)][:kill_after]
    assert "NOT KILLED" not in proc.stdout
    # the previous version is still the announced one, and loads
    assert ds.latest_version() == 2
    assert follower.refresh() is False and follower.version == 2
    c = ds.consumer()
    c.refresh()
    assert c.version == 2 and records(c.state) == m
    assert records(ds.load()) == m
    # the kernel released the lock: a new producer restores version 2 and publishes 3
    with ds.producer(retain_snapshots=None) as p2:
        assert p2.version == 2
        m[4]["name"] = "three"
        r = p2.run_incremental(lambda inc: inc.upsert("Item", m[4]))
        assert r.version == 3 and r.previous == 2
        assert {n: (c.added, c.modified, c.removed) for n, c in r.changes.items()} == {
            "Item": ([], [4], [])
        }
    for consumer in (follower, c, ds.consumer()):
        consumer.refresh()
        assert consumer.version == 3 and records(consumer.state) == m
    c.move_to(2)
    assert c.state["Item"].get(4).name == "item 4"
    assert c.state["Item"].get(1).name == "item 1"


def test_a_lock_held_by_another_process(ds: LocalDataset) -> None:
    with ds.producer() as p:
        full(p, base_model())
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, nearstate\n"
            "p = nearstate.LocalDataset(sys.argv[1]).producer()\n"
            "print('locked', flush=True)\n"
            "sys.stdin.read()\n",
            str(ds.path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(LockedError) as ei:
            ds.producer()
        assert f"pid {holder.pid}" in str(ei.value)
        holder.kill()
        holder.wait(30)
        with ds.producer() as p:
            assert p.version == 1
            m = base_model()
            m[0]["name"] = "after the holder died"
            assert full(p, m).version == 2
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(30)


# --- corrupted snapshots ----------------------------------------------------------------------


def section_at(data: bytes, offset: int) -> str:
    """The checksummed region of a blob holding a byte."""
    blob = parse_blob(data, source="<test>")
    hlen = int.from_bytes(data[16:24], "little")
    data_start = 32 + hlen + (-(32 + hlen) % ALIGN)
    if offset < data_start:
        return "header"
    for s in blob.header["sections"]:
        start = data_start + int(s["offset"])
        end = start + int(s["length"]) + (-int(s["length"]) % ALIGN)
        if start <= offset < end:
            return s["name"]
    raise AssertionError(f"offset {offset} is in no section")


def test_a_corrupted_snapshot_names_the_section(ds: LocalDataset, producer: Producer) -> None:
    m = {i: item(i, name=f"a fairly long name for item number {i}", tags=["x", "y"])
         for i in range(2000)}  # fmt: skip
    full(producer, m)
    path = ds.snapshot_path(1)
    data = path.read_bytes()
    middle = len(data) // 2
    section = section_at(data, middle)
    assert section != "header"  # the premise: the middle byte is in a data section
    flip_middle_byte(path)
    c = ds.consumer()
    with pytest.raises(ChecksumError) as ei:
        c.refresh()
    assert ei.value.section == section
    assert repr(section) in str(ei.value) and snapshot_name(1) in str(ei.value)
    assert c.version is None and c.last_error is not None and section in c.last_error
    with pytest.raises(ChecksumError) as ei:
        ds.load()
    assert ei.value.section == section
    for mmap in (True, False):
        with pytest.raises(ChecksumError) as ei:
            nearstate.load(path, mmap=mmap)
        assert ei.value.section == section
    # a producer restoring from the damaged snapshot refuses to start, and keeps no lock
    producer.close()
    with pytest.raises(ChecksumError):
        ds.producer()
    replace_file(path, data)
    assert c.refresh() is True and records(c.state) == m
    with ds.producer() as p:
        assert p.version == 1


def test_a_corrupted_snapshot_under_a_following_consumer(
    ds: LocalDataset, producer: Producer
) -> None:
    """A consumer already holding a snapshot keeps reading it when the file is damaged
    later (it was replaced by rename), and refuses the damaged one on a fresh load."""
    hist = three_versions(producer)
    c = ds.consumer()
    c.move_to(1)
    flip_middle_byte(ds.snapshot_path(1))
    assert c.refresh() is True and records(c.state) == hist[3]
    c.move_to(1)
    assert records(c.state) == hist[1]
    fresh = Consumer(ds.blobs, ds.announcer)
    with pytest.raises(ChecksumError):
        fresh.refresh()
