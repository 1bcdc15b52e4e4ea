"""nearstate.lazymap.LazyMap: values made on first use, every key known up front."""

from __future__ import annotations

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
