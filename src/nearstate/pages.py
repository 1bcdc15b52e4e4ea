"""Maps and sets that a new version copies in time proportional to what it changes.

A consumer shows each commit as a new version of its overlay (what the deltas and Log
entries changed, relative to the snapshot). Copying the overlay's dicts for every commit
cost each commit the records changed since the snapshot: 100k of them, about 3 ms, on
every reader, for one record. Here an entry lives in a *page* (a small dict or set) chosen
by its ordinal (``o >> PAGE_SHIFT``) or its key's hash; a copy shares every page with the
original and copies a page only when it first writes to it. A copy costs the number of
pages (a reference each), a write one page.

A version is never written to once a newer one was copied from it: :meth:`PagedMap.copy`
takes the ownership of every page away from the original, so a later write to it would
copy the page, not change the copy's.

Reads on hot paths (a record's fields, a key lookup) use the page dicts directly
(``pages.get(o >> PAGE_SHIFT)``), one dict lookup more than a plain dict.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

PAGE_SHIFT = 8  # 256 ordinals a page
# A copy costs the pages' count and a write one page's entries, so the best page holds
# about the square root of the entries: for 1k to 100k entries changed since the
# snapshot, 256 ordinals a page copies 260 to 650 references a commit (1,024 a page
# copied 1,020 to 1,120: a tail of a thousand new records sits in one page).
KEY_GROWTH = 2  # a key map doubles its pages when it holds more than 2 * pages**2 keys
KEY_PAGES_MAX = 4096


def by_ordinal(o: int) -> int:
    return o >> PAGE_SHIFT


def by_hash(k: Any) -> int:
    """Marks a map of keys spread by hash over pages whose count grows with the keys
    (about the square root of the keys: see ``KEY_GROWTH``)."""
    return hash(k)


_NO: Any = object()


class PagedMap:
    """A mapping split into page dicts, copied page by page on write. ``page_of`` says
    how: ``by_ordinal``, pages of ``1 << PAGE_SHIFT`` ordinals; ``by_hash``, keys spread by
    their hash over a number of pages that grows with the map (one page while it is
    small), so a copy and a write each cost about the square root of the entries."""

    __slots__ = ("_mine", "mask", "n", "pages")

    def __init__(self, page_of: Callable[[Any], int] = by_ordinal):
        # the page of a key: ``k >> PAGE_SHIFT`` (mask -1), or ``hash(k) & mask``
        self.mask = 0 if page_of is by_hash else -1
        self.pages: dict[int, dict[Any, Any]] = {}
        self._mine: set[int] = set()  # pages this map may write in place
        self.n = 0

    def _page(self, k: Any) -> int:
        m = self.mask
        return k >> PAGE_SHIFT if m < 0 else hash(k) & m

    def copy(self) -> PagedMap:
        out = PagedMap.__new__(PagedMap)
        out.mask = self.mask
        out.pages = dict(self.pages)
        out._mine = set()
        out.n = self.n
        self._mine = set()  # shared from now on: neither side writes them in place
        return out

    def _writable(self, p: int) -> dict[Any, Any]:
        d = self.pages.get(p)
        if p not in self._mine:
            d = {} if d is None else dict(d)
            self.pages[p] = d
            self._mine.add(p)
        assert d is not None
        return d

    def _grow(self) -> None:
        """Spread the keys over twice the pages (new pages: copies keep the old ones)."""
        mask = self.mask * 2 + 1
        pages: dict[int, dict[Any, Any]] = {}
        for d in self.pages.values():
            for k, v in d.items():
                p = hash(k) & mask
                page = pages.get(p)
                if page is None:
                    page = pages[p] = {}
                page[k] = v
        self.mask, self.pages, self._mine = mask, pages, set(pages)

    def get(self, k: Any, default: Any = None) -> Any:
        m = self.mask  # _page inlined: a layered type's key lookups go through here
        d = self.pages.get(k >> PAGE_SHIFT if m < 0 else hash(k) & m)
        return default if d is None else d.get(k, default)

    def __contains__(self, k: Any) -> bool:
        d = self.pages.get(self._page(k))
        return d is not None and k in d

    def __getitem__(self, k: Any) -> Any:
        v = self.get(k, _NO)
        if v is _NO:
            raise KeyError(k)
        return v

    def __setitem__(self, k: Any, v: Any) -> None:
        d = self._writable(self._page(k))
        if k not in d:
            self.n += 1
            m = self.mask
            if m >= 0 and self.n > KEY_GROWTH * (m + 1) ** 2 and m + 1 < KEY_PAGES_MAX:
                d[k] = v
                self._grow()
                return
        d[k] = v

    def pop(self, k: Any, default: Any = _NO) -> Any:
        p = self._page(k)
        d = self.pages.get(p)
        if d is None or k not in d:
            if default is _NO:
                raise KeyError(k)
            return default
        self.n -= 1
        return self._writable(p).pop(k)

    def __delitem__(self, k: Any) -> None:
        self.pop(k)

    def __len__(self) -> int:
        return self.n

    def __bool__(self) -> bool:
        return self.n > 0

    def __iter__(self) -> Iterator[Any]:
        for p in sorted(self.pages):
            yield from self.pages[p]

    def keys(self) -> Iterator[Any]:
        return iter(self)

    def values(self) -> Iterator[Any]:
        """In the order of :meth:`keys` (page by page)."""
        for p in sorted(self.pages):
            yield from self.pages[p].values()

    def items(self) -> Iterator[tuple[Any, Any]]:
        for p in sorted(self.pages):
            yield from self.pages[p].items()

    def sorted_keys(self) -> list[Any]:
        """The keys in order (ordinal pages come in order: each page is sorted alone)."""
        out: list[Any] = []
        for p in sorted(self.pages):
            out.extend(sorted(self.pages[p]))
        return out


class PagedSet:
    """A set of ordinals split into page sets, copied page by page on write."""

    __slots__ = ("_mine", "n", "pages")

    def __init__(self) -> None:
        self.pages: dict[int, set[int]] = {}
        self._mine: set[int] = set()
        self.n = 0

    def copy(self) -> PagedSet:
        out = PagedSet.__new__(PagedSet)
        out.pages = dict(self.pages)
        out._mine = set()
        out.n = self.n
        self._mine = set()
        return out

    def _writable(self, p: int) -> set[int]:
        s = self.pages.get(p)
        if p not in self._mine:
            s = set() if s is None else set(s)
            self.pages[p] = s
            self._mine.add(p)
        assert s is not None
        return s

    def __contains__(self, o: Any) -> bool:
        s = self.pages.get(o >> PAGE_SHIFT)
        return s is not None and o in s

    def add(self, o: int) -> None:
        s = self._writable(o >> PAGE_SHIFT)
        if o not in s:
            s.add(o)
            self.n += 1

    def discard(self, o: int) -> None:
        p = o >> PAGE_SHIFT
        s = self.pages.get(p)
        if s is not None and o in s:
            self._writable(p).discard(o)
            self.n -= 1

    def __len__(self) -> int:
        return self.n

    def __bool__(self) -> bool:
        return self.n > 0

    def __iter__(self) -> Iterator[int]:
        for p in sorted(self.pages):
            yield from sorted(self.pages[p])

    def union(self, other: Iterable[int]) -> set[int]:
        out: set[int] = set(other)
        for s in self.pages.values():
            out |= s
        return out
