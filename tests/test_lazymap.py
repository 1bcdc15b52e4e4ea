"""nearstate.lazymap.LazyMap: values made on first use, every key known up front."""

from __future__ import annotations

from typing import Any

import pytest

from nearstate.lazymap import LazyMap


def test_values_are_made_once_on_first_use_and_iteration_keeps_the_keys_order() -> None:
    made: list[str] = []

    def make(name: str) -> str:
        made.append(name)
        return name.upper()

    m = LazyMap(("a", "b", "c"), make)
    assert len(m) == 3 and list(m) == ["a", "b", "c"] and "b" in m and "z" not in m
    assert made == []  # knowing the keys makes nothing
    assert m["c"] == "C" and m["c"] == "C" and made == ["c"]
    assert m.get("z") is None and m.get("z", 1) == 1 and m.get("b") == "B"
    assert made == ["c", "b"]
    with pytest.raises(KeyError):
        m["z"]
    assert list(m.items()) == [("a", "A"), ("b", "B"), ("c", "C")]  # the keys' order
    assert made == ["c", "b", "a"]  # each made once
    assert list(m.values()) == ["A", "B", "C"] and list(m.keys()) == ["a", "b", "c"]


def test_threads_missing_and_filling_at_once_make_each_value_once_in_order() -> None:
    """Readers on several threads miss keys while another fills the map in order (what
    a record's ``to_dict`` does): each value is made once, every thread reads the one
    made, and the filled map iterates in the keys' order."""
    import sys
    import threading
    import time

    names = tuple(f"f{i}" for i in range(40))
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for _ in range(50):
            made: list[str] = []

            def make(name: str, made: list[str] = made) -> object:
                made.append(name)
                time.sleep(0)  # let another thread in while a value is being made
                return object()

            m = LazyMap(names, make)
            start = threading.Barrier(4)
            seen: list[Any] = []

            def read(i: int, m: LazyMap = m, start: Any = start, seen: list[Any] = seen) -> None:
                start.wait()
                if i == 0:
                    seen.append(list(m.items()))
                else:
                    seen.append([(n, m[n]) for n in reversed(names)])

            threads = [threading.Thread(target=read, args=(i,)) for i in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert sorted(made) == sorted(names)  # each made once
            want = {n: dict.__getitem__(m, n) for n in names}
            for got in seen:
                assert all(want[n] is v for n, v in got)
                assert len(got) == len(names)
            assert list(m.keys()) == list(names)
    finally:
        sys.setswitchinterval(interval)
