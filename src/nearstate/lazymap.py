"""A mapping whose keys are known up front and whose values are made on first use.

A reader makes a layer and a layered type per commit, a Writer a WriteState per commit;
each has an entry per field or per type, and a commit reads a few of them. Looking up a
made entry is a plain dict lookup (what the record views' properties do on every field
read); ``get``, ``in``, ``len`` and iteration know every key without making anything;
``keys``, ``values`` and ``items`` make the rest first, and the dict's own order is then
the keys' order (what ``to_dict`` iterates, in C, through :meth:`LazyMap._fill`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

# Making values (a miss) and filling the rest in order take this lock: ``_fill`` empties
# the dict and refills it in the keys' order, and a reader on another thread that misses
# a key meanwhile must wait for it, not make a second value out of order (nor may one
# thread iterate in C while another inserts). Lookups of made values take no lock. One
# lock for every map: misses are rare (a field's first read) and a value's maker may miss
# in another map on the same thread (hence reentrant).
_MAKING = threading.RLock()


class LazyMap(dict):
    __slots__ = ("_full", "_make", "_names", "_set")

    def __init__(self, names: Iterable[str], make: Callable[[str], Any]):
        super().__init__()
        self._names = tuple(names)
        self._set = frozenset(self._names)
        self._make = make
        self._full = False

    @classmethod
    def over(cls, names: tuple[str, ...], name_set: frozenset[str],
             make: Callable[[str], Any]) -> LazyMap:  # fmt: skip
        """A LazyMap over keys already held as a tuple and a frozenset of it (a caller
        that makes one per commit over the same keys keeps them once)."""
        m = cls.__new__(cls)
        m._names, m._set, m._make, m._full = names, name_set, make, False
        return m

    def __missing__(self, name: str) -> Any:
        if name not in self._set:
            raise KeyError(name)
        with _MAKING:
            v = dict.get(self, name)  # made meanwhile by another thread
            if v is None:
                v = self._make(name)
                dict.__setitem__(self, name, v)
        return v

    def _fill(self) -> None:
        """Make every value, in the keys' order."""
        if self._full:
            return
        with _MAKING:
            if not self._full:
                made = {n: dict.get(self, n) or self._make(n) for n in self._names}
                dict.clear(self)
                dict.update(self, made)
                self._full = True

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return self[name] if name in self._set else default

    def __contains__(self, name: object) -> bool:
        return name in self._set

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def keys(self):  # type: ignore[override]
        self._fill()
        return super().keys()

    def values(self):  # type: ignore[override]
        self._fill()
        return super().values()

    def items(self):  # type: ignore[override]
        self._fill()
        return super().items()
