"""Checking a recorded history of concurrent writes and reads against what nearstate
promises. Each function takes the events of a run and returns a list of violations in
words (empty: the property holds), so a test can show every one at once.

An event is a dict with a ``kind``:

``init``      a shared counter created before the run: ``key``, ``n`` (its value), ``token``
``put``       an acknowledged blind upsert: ``proc``, ``key``, ``n``, ``token``, and the
              monotonic clock just before the call (``t0``) and after it returned (``t1``)
``cas``       an acknowledged compare-and-set increment of a counter: ``proc``, ``key``,
              ``old``, ``new``, ``expect`` (the token it required), ``token``
``read``      an eventual read by a consumer: ``proc``, ``pos`` (the consumer's position),
              ``vals`` (key -> value seen, None when absent)
``ryw``       a reader's own ``put`` followed by ``wait_for(token)``: ``proc``, ``key``,
              ``n``, ``token``, ``t0``, ``t1`` as for ``put``, then ``pos`` and ``vals`` seen
``strong``    a ``sync()`` read: ``proc``, ``t0`` (clock before the call), ``pos``, ``vals``
``create``    an acknowledged ``expect_absent`` upsert: ``proc``, ``key``, ``n``, ``token``
``refused``   an ``expect_absent`` upsert refused with ConflictError: ``proc``, ``key``,
              ``current`` (the token the error carried)

Every process's events are in the order it did them. Clocks are ``time.monotonic()``, one
clock for every process on the host (Linux CLOCK_MONOTONIC).

:class:`Child` runs one such process (or any other a test needs) and reads what it prints.
"""

from __future__ import annotations

import bisect
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

LONG = 60.0  # how long a child is waited for: generous, the machine is shared and slow at times

Event = dict[str, Any]

READS = ("read", "ryw", "strong")
WRITES = ("put", "ryw")  # events that acknowledge a blind write of ``key`` = ``n``


def load(paths: Iterable[Path]) -> list[Event]:
    """The events of JSON-lines files, file by file (each file in its order). A line cut
    short by a killed process is not an event and is skipped."""
    out: list[Event] = []
    for p in paths:
        for line in Path(p).read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def by_proc(events: Iterable[Event]) -> dict[str, list[Event]]:
    out: dict[str, list[Event]] = defaultdict(list)
    for e in events:
        out[e.get("proc", "?")].append(e)
    return out


def check_read_your_writes(events: Iterable[Event]) -> list[str]:
    """Every ``wait_for(token)`` of a process's own write returned a state showing that
    write (or a newer value of the key) and a position at least the token."""
    bad = []
    for e in events:
        if e["kind"] != "ryw":
            continue
        seen = e["vals"].get(e["key"])
        if seen is None or seen < e["n"]:
            bad.append(f"{e['proc']}: wrote {e['key']}={e['n']} (token {e['token']}) but "
                       f"wait_for returned {e['key']}={seen}")  # fmt: skip
        if e["pos"] < e["token"]:
            bad.append(f"{e['proc']}: wait_for({e['token']}) returned at position {e['pos']}")
    return bad


def check_monotonic_reads(events: Iterable[Event]) -> list[str]:
    """Per process, reads never go back: the consumer's position never decreases, and the
    value seen for each key (all keys only ever grow) never decreases nor disappears."""
    bad = []
    for proc, evs in by_proc(events).items():
        last_pos = None
        last: dict[str, int] = {}
        for i, e in enumerate(ev for ev in evs if ev["kind"] in READS):
            if last_pos is not None and e["pos"] < last_pos:
                bad.append(f"{proc}: read {i} at position {e['pos']} after {last_pos}")
            last_pos = e["pos"] if last_pos is None else max(last_pos, e["pos"])
            for k, v in e["vals"].items():
                before = last.get(k)
                if before is not None and (v is None or v < before):
                    bad.append(f"{proc}: read {i} saw {k}={v} after {k}={before}")
                if v is not None:
                    last[k] = v if before is None else max(before, v)
    return bad


def check_cas_chains(events: Iterable[Event], final: Mapping[str, Any]) -> list[str]:
    """Conditional writes of each shared counter form one chain: ordered by token, each
    success read the value and the token the previous one (or the initial write) left, no
    value was the starting point of two successes, and the final value (a strong read)
    equals the initial value plus the number of successes."""
    bad = []
    init: dict[str, Event] = {}
    cas: dict[str, list[Event]] = defaultdict(list)
    for e in events:
        if e["kind"] == "init":
            init[e["key"]] = e
        elif e["kind"] == "cas":
            cas[e["key"]].append(e)
    for key in sorted(set(init) | set(cas)):
        if key not in init:
            bad.append(f"{key}: conditional writes of a counter never created")
            continue
        ops = sorted(cas[key], key=lambda e: e["token"])
        olds: dict[int, Event] = {}
        for e in ops:
            if e["old"] in olds:
                o = olds[e["old"]]
                bad.append(f"{key}: two conditional writes both moved it from {e['old']}: "
                           f"{o['proc']} (token {o['token']}) and {e['proc']} "
                           f"(token {e['token']})")  # fmt: skip
            olds[e["old"]] = e
        prev_new, prev_token = init[key]["n"], init[key]["token"]
        for e in ops:
            if e["old"] != prev_new or e["expect"] != prev_token:
                bad.append(f"{key}: {e['proc']} committed {e['old']}->{e['new']} expecting "
                           f"token {e['expect']} at token {e['token']}, but the value was "
                           f"{prev_new} from token {prev_token}")  # fmt: skip
            if e["new"] != e["old"] + 1:
                bad.append(f"{key}: {e['proc']} recorded {e['old']}->{e['new']}, not +1")
            prev_new, prev_token = e["new"], e["token"]
        want = init[key]["n"] + len(ops)
        if final.get(key) != want:
            bad.append(f"{key}: a strong read shows {final.get(key)} after {len(ops)} "
                       f"successful increments from {init[key]['n']} (want {want})")  # fmt: skip
    return bad


def check_no_lost_writes(events: Iterable[Event], final: Mapping[str, Any]) -> list[str]:
    """Every acknowledged blind write is kept: the final value of each key (a strong read
    after every process stopped) is the last value acknowledged for it."""
    bad = []
    last: dict[str, Event] = {}
    for e in events:
        if e["kind"] in WRITES and (e["key"] not in last or e["token"] > last[e["key"]]["token"]):
            last[e["key"]] = e
    for key, e in sorted(last.items()):
        if final.get(key) != e["n"]:
            bad.append(f"{key}: last acknowledged {e['n']} (token {e['token']}, by "
                       f"{e['proc']}) but the final read shows {final.get(key)}")  # fmt: skip
    return bad


def check_unique_tokens(events: Iterable[Event]) -> list[str]:
    """No two acknowledged commits got the same token."""
    bad = []
    seen: dict[int, Event] = {}
    for e in events:
        if e["kind"] not in ("init", "put", "cas", "ryw"):
            continue
        t = e["token"]
        if t in seen:
            o = seen[t]
            bad.append(f"token {t} acknowledged twice: {o.get('proc', 'init')} {o['key']} and "
                       f"{e.get('proc', 'init')} {e['key']}")  # fmt: skip
        seen[t] = e
    return bad


def check_strong_reads(events: Iterable[Event]) -> list[str]:
    """A ``sync()`` read shows every blind write acknowledged before the read began (of the
    keys it looked at)."""
    acked: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for e in events:
        if e["kind"] in WRITES:
            acked[e["key"]].append((e["t1"], e["n"]))
    best: dict[str, tuple[list[float], list[int]]] = {}
    for key, xs in acked.items():
        xs.sort()
        running, highest = [], None
        for _, n in xs:
            highest = n if highest is None else max(highest, n)
            running.append(highest)
        best[key] = ([t for t, _ in xs], running)
    bad = []
    for e in events:
        if e["kind"] != "strong":
            continue
        for key, (times, running) in best.items():
            if key not in e["vals"]:
                continue  # the read did not look at this key
            i = bisect.bisect_left(times, e["t0"])
            if i == 0:
                continue
            want, seen = running[i - 1], e["vals"].get(key)
            if seen is None or seen < want:
                bad.append(f"{e['proc']}: sync() from t={e['t0']:.6f} shows {key}={seen}, "
                           f"but {key}={want} was acknowledged before it began")  # fmt: skip
    return bad


def check_creations(events: Iterable[Event], final: Mapping[str, Any]) -> list[str]:
    """Of processes racing to create one key (``expect_absent``), exactly one succeeded;
    each refusal carried the winner's token; the final value is the winner's."""
    won: dict[str, list[Event]] = defaultdict(list)
    refused: dict[str, list[Event]] = defaultdict(list)
    for e in events:
        if e["kind"] == "create":
            won[e["key"]].append(e)
        elif e["kind"] == "refused":
            refused[e["key"]].append(e)
    bad = []
    for key in sorted(set(won) | set(refused)):
        ws = won[key]
        if len(ws) != 1:
            bad.append(f"{key}: created {len(ws)} times (by "
                       f"{', '.join(w['proc'] for w in ws) or 'none'})")  # fmt: skip
            continue
        (w,) = ws
        for r in refused[key]:
            if r["current"] != w["token"]:
                bad.append(f"{key}: {r['proc']} was refused with token {r['current']}, but "
                           f"{w['proc']} created it at token {w['token']}")  # fmt: skip
        if final.get(key) != w["n"]:
            bad.append(f"{key}: created as {w['n']} by {w['proc']} but the final read shows "
                       f"{final.get(key)}")  # fmt: skip
    return bad


def check_all(events: list[Event], final: Mapping[str, Any]) -> list[str]:
    """Every check above."""
    return [
        *check_read_your_writes(events),
        *check_monotonic_reads(events),
        *check_cas_chains(events, final),
        *check_no_lost_writes(events, final),
        *check_unique_tokens(events),
        *check_strong_reads(events),
    ]


# --- child processes --------------------------------------------------------------------------


class Child:
    """``code`` run by a fresh Python (this interpreter) with ``args``. A thread reads the
    lines it prints as they come (so it never blocks on a full pipe, and no line is missed
    in a buffer); its stderr goes to a file, read back to explain a failure. Its stdin stays
    open, so it can block reading it. ``prefix`` goes before the command (such as
    ``ip netns exec NS``, which runs it in a network namespace under the same pid)."""

    def __init__(self, code: str, *args: str, prefix: Sequence[str] = ()):
        self._err = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed by close())
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-c", textwrap.dedent(code), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._err,
            text=True,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._pump = threading.Thread(target=self._read, daemon=True)
        self._pump.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr(self) -> str:
        self._err.seek(0)
        return self._err.read()

    def read_line(self, timeout: float = LONG) -> str:
        """The next line it prints (stripped), waiting at most ``timeout`` seconds;
        AssertionError, with its stderr, if none comes."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"the child printed nothing within {timeout}s; stderr: "
                                 f"{self.stderr()}") from None  # fmt: skip
        if line is None:
            self._lines.put(None)
            self.proc.wait(LONG)
            raise AssertionError(f"the child exited ({self.proc.returncode}) early: "
                                 f"{self.stderr()}")  # fmt: skip
        return line.strip()

    def expect(self, prefix: str, timeout: float = LONG) -> str:
        """The next line, which must start with ``prefix``."""
        line = self.read_line(timeout)
        assert line.startswith(prefix), f"the child said {line!r}, not {prefix!r}..."
        return line

    def kill(self) -> None:
        """SIGKILL it and reap it; AssertionError if it had ended by itself."""
        os.kill(self.proc.pid, signal.SIGKILL)
        code = self.proc.wait(LONG)
        assert code == -signal.SIGKILL, f"the child ended ({code}) before it was killed"

    def wait(self, timeout: float = LONG) -> None:
        """Wait for it to end by itself; AssertionError, with its stderr, unless it ends
        with status 0."""
        code = self.proc.wait(timeout)
        assert code == 0, f"the child exited with {code}: {self.stderr()}"

    def rest(self) -> list[str]:
        """Once it has ended: the whole lines it printed that were not read yet (a line cut
        short by a kill is not one)."""
        self._pump.join(LONG)
        out = []
        while (line := self._lines.get_nowait()) is not None:
            if line.endswith("\n"):
                out.append(line.strip())
        self._lines.put(None)
        return out

    def close(self) -> None:
        """Kill it if it still runs, reap it and close its files."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(LONG)
        self._pump.join(LONG)
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                f.close()
        self._err.close()


def spawn(children: list[Child], code: str, *args: str) -> Child:
    """Start ``code`` in a child process, kept in ``children`` (the fixture kills any
    still running at the end of the test)."""
    p = Child(code, *args)
    children.append(p)
    return p
