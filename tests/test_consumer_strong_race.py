"""A strong read (or read-your-writes) returns a state that shows what its position says.

``Consumer.wait_for`` took the state to return and then checked the position shown, as
two reads while the Log's thread could apply a batch in between (it sets the state, then
the position): it could return the older state with the newer position's promise, so a
``sync()`` missed writes acknowledged before it. Seen once on the three-node cluster right
after all servers restarted (a backlog applied at once while two readers synced;
issue 21). Here the window is widened on purpose: reading the state from the caller's
thread takes 5 ms, so the Log's thread applies new entries in between whenever it can.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import nearstate
from nearstate.consumer import Consumer


class _SlowStateRead(Consumer):
    """A consumer whose state, read from the thread named ``reader``, takes 5 ms to read
    (the value read is the one before the pause)."""

    @property
    def _state(self):  # type: ignore[override]
        v = self.__dict__["_state_v"]
        if threading.current_thread().name == "reader":
            time.sleep(0.005)
        return v

    @_state.setter
    def _state(self, v) -> None:  # type: ignore[override]
        self.__dict__["_state_v"] = v


def test_wait_for_never_returns_a_state_behind_its_position(tmp_path: Path) -> None:
    ds = nearstate.open(tmp_path / "ds")
    w = ds.writer()
    w.upsert("Item", {"id": "k", "n": 0})
    c = ds.consumer()
    v = c.__dict__.pop("_state")
    c.__class__ = _SlowStateRead
    c._state = v
    c.start(timeout=10)
    stop = threading.Event()
    wrong: list[str] = []
    done = [0]

    def writer() -> None:  # commits that the Log's thread applies as they come
        w2 = nearstate.open(tmp_path / "ds").writer()
        i = 0
        while not stop.is_set():
            i += 1
            w2.upsert("Item", {"id": f"o{i % 5}", "n": i})

    def reader() -> None:
        for n in range(1, 61):
            tok = w.upsert("Item", {"id": "k", "n": n})
            s = c.wait_for(tok, timeout=10)
            got = s["Item"].get("k")["n"]
            if got != n:
                wrong.append(f"wait_for({tok}) returned k={got} after k={n} was written")
            done[0] += 1

    t_w = threading.Thread(target=writer, daemon=True)
    t_r = threading.Thread(target=reader, name="reader")
    t_w.start()
    t_r.start()
    t_r.join(120)
    stop.set()
    t_w.join(10)
    c.stop()
    assert done[0] == 60
    assert wrong == [], wrong[:5]
