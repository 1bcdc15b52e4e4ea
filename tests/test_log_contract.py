"""The Log backends held to ``LogContract`` (nearstate.testing): the in-memory MemoryLog and
the SQLite LocalLog; plus what only LocalLog promises: handles on one directory (and other
processes) share the Log, and the file appears only with the first append."""

from __future__ import annotations

import select
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from nearstate.backends.local_log import FILE, LocalLog
from nearstate.backends.memory import MemoryLog
from nearstate.ports import Append, Log, LogView
from nearstate.testing import LONG, PROMPT, SHORT, LogContract


class TestMemoryLog(LogContract):
    """One MemoryLog is every writer's handle."""

    @pytest.fixture
    def log(self) -> Log:
        return MemoryLog()


class TestLocalLog(LogContract):
    """Separate LocalLog objects on one directory, as separate writers would hold."""

    @pytest.fixture
    def log(self, tmp_path: Path) -> Log:
        return LocalLog(tmp_path / "ds")

    @pytest.fixture
    def second_log(self, tmp_path: Path) -> Log:
        return LocalLog(tmp_path / "ds")


# --- LocalLog only ---------------------------------------------------------------------------


def _put(log: Log, body: bytes, keys: list[tuple[str, str, bool]] | None = None) -> int:
    return log.append(lambda view: Append(body, list(keys or [])))


def test_local_handles_share_one_log(tmp_path: Path) -> None:
    """Two LocalLog handles on one directory see each other's entries, key positions and
    schema, and continue each other's positions."""
    a, b = LocalLog(tmp_path), LocalLog(tmp_path)
    assert _put(a, b"from a", [("T", "1", True)]) == 1
    assert b.head() == 1
    assert [(p, bytes(x)) for p, x in b.read(0)] == [(1, b"from a")]
    assert b.append(lambda v: Append(b"from b", [], {"types": []})) == 2
    assert a.head() == 2
    assert [(p, bytes(x)) for p, x in a.read(1)] == [(2, b"from b")]
    assert a.schema() == b.schema() is not None
    seen: list[tuple[int, bool] | None] = []

    def look(view: LogView) -> Append:
        seen.append(view.last("T", "1"))
        return Append(b"3", [])

    b.append(look)
    assert seen == [(1, True)]
    assert a.trim(2) == 2
    assert [(p, bytes(x)) for p, x in b.read(2)] == [(3, b"3")]


def test_local_file_appears_only_with_the_first_append(tmp_path: Path) -> None:
    """Reading a Log that was never written creates nothing: head 0, no entries, no schema,
    trim removes nothing, wait times out with 0, stats are zero; the first append creates
    the directory and the file."""
    root = tmp_path / "not-yet"
    log = LocalLog(root)
    assert log.head() == 0
    assert log.read(0) == []
    assert log.schema() is None
    assert log.trim(5) == 0
    t0 = time.monotonic()
    assert log.wait(0, SHORT) == 0
    assert time.monotonic() - t0 < SHORT + PROMPT
    assert log.stats() == {"head": 0, "floor": 0, "entries": 0, "bytes": 0}
    assert not root.exists()
    assert _put(log, b"first") == 1
    assert (root / FILE).is_file()
    stats = log.stats()
    assert (stats["head"], stats["entries"]) == (1, 1) and stats["bytes"] > 0


_CHILD_APPENDER = """
    import sys
    from nearstate.backends.local_log import LocalLog
    from nearstate.ports import Append

    log = LocalLog(sys.argv[1])
    print("ready", flush=True)
    sys.stdin.readline()  # wait for the parent's go
    print(log.append(lambda view: Append(b"from the child", [("T", "c", True)])), flush=True)
"""


def test_local_wait_sees_an_append_from_another_process(tmp_path: Path) -> None:
    """A waiter in this process returns promptly when another process appends (it cannot
    be woken in-process, so this exercises the polling path)."""
    log = LocalLog(tmp_path)
    _put(log, b"from the parent")
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_CHILD_APPENDER), str(tmp_path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert child.stdin is not None and child.stdout is not None
        ready, _, _ = select.select([child.stdout], [], [], LONG)
        assert ready and child.stdout.readline().strip() == "ready"
        child.stdin.write("go\n")
        child.stdin.flush()
        t0 = time.monotonic()
        head = log.wait(1, LONG)
        elapsed = time.monotonic() - t0
        out, err = child.communicate(timeout=LONG)
        assert child.returncode == 0, err
        assert out.strip() == "2"
        assert head == 2
        assert elapsed < PROMPT
        assert [(p, bytes(b)) for p, b in log.read(1)] == [(2, b"from the child")]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(LONG)


def test_local_first_appends_from_many_handles_at_once(tmp_path: Path) -> None:
    """Several writers appending at the same moment to a Log that does not exist yet (each
    thread with its own handle, as separate processes would) all succeed: creating the
    file and switching it to WAL mode waits for the others instead of failing with
    'database is locked'. Repeated on fresh directories, since the race is short."""
    n, trials = 12, 30
    failures: list[str] = []
    for trial in range(trials):
        root = tmp_path / f"trial-{trial}"
        start = threading.Barrier(n)
        errors: list[BaseException] = []

        def writer(root: Path = root, start: threading.Barrier = start,
                   errors: list[BaseException] = errors) -> None:  # fmt: skip
            log = LocalLog(root)
            start.wait()
            try:
                _put(log, b"x")
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=writer) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(LONG)
            assert not t.is_alive()
        if errors:
            failures.append(f"trial {trial}: {errors[0]!r}")
            break
        else:
            assert LocalLog(root).head() == n
    assert failures == []
