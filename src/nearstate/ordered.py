"""Ordered indexes: range, prefix and IN queries over one field, in O(log n + k).

Queries are small values given to ``find`` (combined with each other and with equality by
intersecting ordinals), or asked of one field's :class:`OrderedIndex` for results in the
field's order::

    movies.find(year=between(1990, 1999), genre=one_of(["Drama", "Noir"]))
    movies.ordered("title").prefix("Star", limit=20)       # by title
    movies.ordered("released").range(limit=10, reverse=True)   # the ten newest

An ordered index is, per field, every record's ordinal sorted by the field's value (ties
by ordinal) beside the sorted keys: integers, booleans and datetimes (microseconds) as the
narrowest unsigned offsets from the smallest, floats as float64, strings as the rank of
their value among the field's distinct values (the values themselves stay in the column's
pool and are decoded only by the binary search). It is built on first use with numpy
straight from the column's stored sections, kept for the life of the version, and shared
by every layered version over that snapshot (which add their few overlay records by brute
force: see :class:`LayeredOrderedIndex`).

What matches, identically on a ReadState and on a LayeredState of the same records:

* bounds compare by Python's rules (an int field takes int or float bounds, exactly; a
  datetime field takes datetimes of its own kind, naive or aware); a bound of another
  type, a NaN bound or ``prefix`` on a non-str field raise :class:`SchemaError` naming the
  field;
* nulls never match; NaN matches no range (it sorts after every number) but does match
  ``one_of([nan])``, as ``find(x=nan)`` does;
* a list or set field matches when any element does; a record is returned once, at its
  first matching element in the order asked for.

Over ~600 lines on purpose: a snapshot's :class:`OrderedIndex` and a layered version's
:class:`LayeredOrderedIndex` must answer identically (the rules above), and share the
reading methods (``_OrderedAPI``) and the query values; ``find`` combines them.
"""

from __future__ import annotations

import bisect
import datetime as _dt
import math
import numbers
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .encoding import EPOCH, EPOCH_UTC, Column, ColumnContext
from .errors import SchemaError
from .index import (
    ORDERED_KINDS,
    SortedKeys,
    check_orderable,
    first_unique,
    in_sorted,
    micros,
    ordered_keys,
    slice_positions,
    slices,
)

_NAN_KEY = ("nan",)
_STEP = 32  # a str index keeps every 32nd distinct value decoded
_FILTER_RATIO = 16  # check candidates one by one once another condition matches 16x more

# --- queries --------------------------------------------------------------------------------


class Query:
    """A condition on one field, given as a value to ``find``: :func:`between`,
    :func:`above`, :func:`below`, :func:`prefix` or :func:`one_of`."""

    __slots__ = ()

    def test(self, value: Any) -> bool:
        """Whether one (element) value matches, by Python's comparisons."""
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Range(Query):
    """Values between ``lo`` and ``hi`` (None: unbounded), inclusive unless told."""

    lo: Any = None
    hi: Any = None
    lo_inclusive: bool = True
    hi_inclusive: bool = True

    def test(self, value: Any) -> bool:
        if value is None or value != value:  # nulls and NaN are in no range
            return False
        lo, hi = self.lo, self.hi
        if lo is not None and not (lo <= value if self.lo_inclusive else lo < value):
            return False
        return hi is None or (value <= hi if self.hi_inclusive else value < hi)


@dataclass(frozen=True, slots=True)
class Prefix(Query):
    """Strings starting with ``prefix``."""

    prefix: str

    def test(self, value: Any) -> bool:
        return isinstance(value, str) and value.startswith(self.prefix)


@dataclass(frozen=True, slots=True)
class OneOf(Query):
    """Values equal to one of ``values`` (SQL's IN)."""

    values: tuple[Any, ...]
    _keys: frozenset[Any] = field(default=frozenset(), compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_keys", frozenset(_eq_key(v) for v in self.values))

    def test(self, value: Any) -> bool:
        return value is not None and _eq_key(value) in self._keys


def between(
    lo: Any = None, hi: Any = None, *, lo_inclusive: bool = True, hi_inclusive: bool = True
) -> Range:
    """Values from ``lo`` to ``hi``, both included unless told (None: no bound on that
    side). ``find(year=between(1990, 1999))``; ``lo > hi`` matches nothing."""
    return Range(lo, hi, bool(lo_inclusive), bool(hi_inclusive))


def above(value: Any, *, inclusive: bool = False) -> Range:
    """Values greater than ``value`` (or equal, with ``inclusive=True``)."""
    return Range(value, None, bool(inclusive), True)


def below(value: Any, *, inclusive: bool = False) -> Range:
    """Values less than ``value`` (or equal, with ``inclusive=True``)."""
    return Range(None, value, True, bool(inclusive))


def prefix(p: str) -> Prefix:
    """Strings starting with ``p`` (a str field; ``prefix("")`` matches every value)."""
    return Prefix(p)


def one_of(values: Iterable[Any]) -> OneOf:
    """Values equal to any of ``values``: ``find(genre=one_of(["Drama", "Noir"]))``."""
    if isinstance(values, (str, bytes)):
        raise SchemaError(f"one_of takes a collection of values, not one value: {values!r}")
    try:
        return OneOf(tuple(values))
    except TypeError as e:  # an unhashable value
        raise SchemaError(f"one_of takes hashable values: {e}") from e


def _eq_key(v: Any) -> Any:
    return _NAN_KEY if type(v) is float and v != v else v


# --- the index ------------------------------------------------------------------------------


class _OrderedAPI:
    """The reading methods shared by a snapshot's index and a layered version's."""

    field: str
    _make: Callable[[np.ndarray], list[Any]]

    def ordinals(
        self, query: Query | None = None, *, limit: int | None = None, reverse: bool = False
    ) -> np.ndarray:
        raise NotImplementedError

    def range(
        self,
        lo: Any = None,
        hi: Any = None,
        *,
        lo_inclusive: bool = True,
        hi_inclusive: bool = True,
        limit: int | None = None,
        reverse: bool = False,
    ) -> list[Any]:
        """Records with a value from ``lo`` to ``hi`` (see :func:`between`), in the
        field's order (``reverse``: from the largest), at most ``limit``."""
        q = Range(lo, hi, lo_inclusive, hi_inclusive)
        return self._make(self.ordinals(q, limit=limit, reverse=reverse))

    def prefix(self, p: str, *, limit: int | None = None, reverse: bool = False) -> list[Any]:
        """Records whose value starts with ``p``, in the field's order."""
        return self._make(self.ordinals(Prefix(p), limit=limit, reverse=reverse))

    def one_of(
        self, values: Iterable[Any], *, limit: int | None = None, reverse: bool = False
    ) -> list[Any]:
        """Records whose value is one of ``values``, in the field's order."""
        return self._make(self.ordinals(one_of(values), limit=limit, reverse=reverse))


class OrderedIndex(_OrderedAPI):
    """One field's records in the order of its values (ties by ordinal).

    ``range``, ``prefix`` and ``one_of`` return records in that order and ``ordinals``
    their ordinals, each in O(log n + k); ``count`` is O(log n) (O(k) for list and set
    fields); ``min`` and ``max`` return values. ``ordinals()`` with no query: every record
    with a non-null value, NaN last.

    Contracts: immutable once built; any number of threads may read it. Bad bounds raise
    :class:`SchemaError` naming the field; nothing is ever partly returned.
    """

    __slots__ = (
        "_domain", "_kbase", "_keys", "_kmax", "_make", "_n", "_nv", "_nw", "_ords", "_sample",
        "_tz", "_wbytes", "_word", "_words", "field", "kind", "multi",
    )  # fmt: skip

    def __init__(self, field: str, kind: str, multi: bool, make, keys: SortedKeys):
        self.field = field  #: ``Type.field``
        self.kind = kind  #: the kind of the values (of the elements, for lists and sets)
        self.multi = multi  #: a list or set field: a record may have several entries
        self._make = make
        self._domain = keys.domain
        self._keys = keys.keys
        self._ords = keys.ords
        self._n = len(keys.ords)
        self._nv = keys.nv
        self._kbase, self._kmax = keys.kbase, keys.kmax
        self._word, self._nw = keys.word, keys.nw
        self._words, self._wbytes = keys.words, keys.wbytes
        # every _STEP-th distinct value, decoded: a binary search decodes few of the rest
        self._sample = [] if keys.words else [keys.word(r) for r in range(0, keys.nw, _STEP)]
        self._tz = keys.tz

    def __repr__(self) -> str:
        return f"<OrderedIndex {self.field} ({self.kind}): {self._n} entries>"

    @property
    def nbytes(self) -> int:
        """Bytes held by the index's arrays."""
        return int(self._keys.nbytes + self._ords.nbytes) + self._wbytes

    # -- queries -------------------------------------------------------------------------

    def ordinals(
        self, query: Query | None = None, *, limit: int | None = None, reverse: bool = False
    ) -> np.ndarray:
        """The ordinals matching ``query`` in the field's order (uint32)."""
        return self._take(self._spans(query), _limit(limit), reverse)

    def count(self, query: Query | None = None) -> int:
        """How many records match (each once)."""
        spans = self._spans(query)
        if self.multi:
            return len(np.unique(self._take(spans, None, False)))
        return sum(j - i for i, j in spans)

    def min(self) -> Any:
        """The smallest value (None when there is none; NaN is not a smallest value)."""
        return self._value(0) if self._nv else None

    def max(self) -> Any:
        """The largest value (None when there is none; NaN is not a largest value)."""
        return self._value(self._nv - 1) if self._nv else None

    # -- positions in the sorted entries -------------------------------------------------

    def _spans(self, q: Query | None) -> list[tuple[int, int]]:
        """``[(i, j), ...]``: the entries matching ``q``, in order (validates ``q``)."""
        if q is None:
            return [(0, self._n)] if self._n else []
        if isinstance(q, Range):
            i = 0 if q.lo is None else self._lower(self._norm(q.lo, "lower bound"), q.lo_inclusive)
            j = (
                self._nv
                if q.hi is None
                else self._upper(self._norm(q.hi, "upper bound"), q.hi_inclusive)
            )
            return [(i, j)] if i < j else []  # fmt: skip
        if isinstance(q, Prefix):
            if self.kind != "str":
                raise SchemaError(f"{self.field}: prefix() needs a str field, not {self.kind}")
            p = self._norm(q.prefix, "prefix")
            i = self._rpos(self._rank(p, False))
            end = _prefix_end(p)
            j = self._rpos(self._nw if end is None else self._rank(end, False))
            return [(i, j)] if i < j else []
        if isinstance(q, OneOf):
            spans = set()
            for v in q.values:
                if v is None:
                    raise SchemaError(
                        f"{self.field}: one_of() cannot hold None (nulls match no query; "
                        f"find({self.field.rpartition('.')[2]}=None) finds them)"
                    )
                v = self._norm(v, "value", nan=True)
                if v != v:
                    i, j = self._nv, self._n
                else:
                    i, j = self._lower(v, True), self._upper(v, True)
                if i < j:
                    spans.add((i, j))
            return sorted(spans)
        raise SchemaError(
            f"{self.field}: {q!r} is not a query (use between, above, below, prefix or one_of)"
        )

    def _norm(self, v: Any, what: str, *, nan: bool = False) -> Any:
        """A bound or value as the index compares it; SchemaError if it cannot be."""
        k = self.kind
        if k in ("int", "float", "bool"):
            if isinstance(v, numbers.Integral):
                return int(v)
            if isinstance(v, numbers.Real):
                f = float(v)
                if f != f and not nan:
                    raise SchemaError(f"{self.field}: a NaN {what} matches nothing; give a number")
                return f
        elif k == "str":
            if isinstance(v, str):
                return str(v)
        elif k == "datetime" and isinstance(v, _dt.datetime):
            aware = v.tzinfo is not None
            if self._tz is not None and aware != self._tz:
                kind = "timezone-aware" if self._tz else "naive"
                raise SchemaError(
                    f"{self.field} holds {kind} datetimes; the {what} {v!r} is not {kind}"
                )
            return v
        raise SchemaError(
            f"{self.field}: the {what} {v!r} ({type(v).__name__}) cannot be compared with "
            f"its {k} values"
        )

    def _lower(self, b: Any, inclusive: bool) -> int:
        """The first entry whose key is >= ``b`` (> ``b`` if not ``inclusive``)."""
        d = self._domain
        if d == "int":
            if isinstance(b, _dt.datetime):
                t = micros(b)
                return self._ipos(t if inclusive else t + 1, "left")
            if isinstance(b, int):
                return self._ipos(b if inclusive else b + 1, "left")
            if math.isinf(b):
                return 0 if b < 0 else self._nv
            return self._ipos(math.ceil(b) if inclusive else math.floor(b) + 1, "left")
        if d == "float":
            return self._fpos(b, "left" if inclusive else "right")
        return self._rpos(self._rank(b, not inclusive))

    def _upper(self, b: Any, inclusive: bool) -> int:
        """One past the last entry whose key is <= ``b`` (< ``b`` if not ``inclusive``)."""
        d = self._domain
        if d == "int":
            if isinstance(b, _dt.datetime):
                t = micros(b)
                return self._ipos(t if inclusive else t - 1, "right")
            if isinstance(b, int):
                return self._ipos(b if inclusive else b - 1, "right")
            if math.isinf(b):
                return self._nv if b > 0 else 0
            return self._ipos(math.floor(b) if inclusive else math.ceil(b) - 1, "right")
        if d == "float":
            return self._fpos(b, "right" if inclusive else "left")
        return self._rpos(self._rank(b, inclusive))

    def _rank(self, x: Any, right: bool) -> int:
        """Distinct values below ``x`` (``right``: at most ``x``): bisect the sample, then
        the at most _STEP values between two samples."""
        bis = bisect.bisect_right if right else bisect.bisect_left
        if self._words is not None:
            return bis(self._words, x)
        b = bis(self._sample, x)
        lo, hi = max(0, (b - 1) * _STEP), min(self._nw, b * _STEP)
        return bis(range(self._nw), x, lo, hi, key=self._word)

    def _ipos(self, t: int, side: str) -> int:
        # integer keys are stored as t - kbase in 0..kmax
        r = t - self._kbase
        if r < 0:
            return 0
        if r > self._kmax:
            return self._nv
        return int(self._keys.searchsorted(self._keys.dtype.type(r), side))  # type: ignore[call-overload]

    def _fpos(self, b: float | int, side: str) -> int:
        if isinstance(b, int):  # exactly, though b may not be a float
            try:
                f = float(b)
            except OverflowError:  # beyond every finite float, short of an infinity
                f = math.inf if b > 0 else -math.inf
            if f < b:  # x >= b and x > b both mean x > f; x <= b and x < b mean x <= f
                side = "right"
            elif f > b:  # x >= b and x > b mean x >= f; x <= b and x < b mean x < f
                side = "left"
            b = f
        return min(int(self._keys.searchsorted(b, side)), self._nv)  # type: ignore[call-overload]

    def _rpos(self, r: int) -> int:
        # string (and big int) keys are ranks among the distinct values
        if r >= self._nw:
            return self._n
        return int(self._keys.searchsorted(self._keys.dtype.type(r), "left"))  # type: ignore[call-overload]

    def _value(self, p: int) -> Any:
        k = int(self._keys[p]) if self._domain != "float" else float(self._keys[p])
        if self._domain == "rank":
            return self._word(k)
        if self._domain == "float":
            return k
        v = self._kbase + k
        if self.kind == "bool":
            return bool(v)
        if self.kind == "datetime":
            return (EPOCH_UTC if self._tz else EPOCH) + _dt.timedelta(microseconds=v)
        return v

    def _where(self, v: Any, o: int) -> int:
        """The position an entry ``(v, o)`` has (or would have) among the sorted entries."""
        if v != v:
            lo, hi = self._nv, self._n
        else:
            lo, hi = self._lower(v, True), self._upper(v, True)
        return lo + int(np.searchsorted(self._ords[lo:hi], o))

    def _take(self, spans: list[tuple[int, int]], limit: int | None, reverse: bool) -> np.ndarray:
        if not self.multi:
            return slices(self._ords, spans, limit, reverse)
        want = limit
        while True:
            got = first_unique(slices(self._ords, spans, want, reverse))
            total = sum(j - i for i, j in spans)
            if limit is None or len(got) >= limit or want is None or want >= total:
                return got[:limit] if limit is not None else got
            want = max(want * 4, 64)


def _limit(limit: int | None) -> int | None:
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be None or an int >= 0, not {limit!r}")
    return limit


def _prefix_end(p: str) -> str | None:
    """The smallest string above every string starting with ``p`` (None: there is none)."""
    while p:
        c = ord(p[-1])
        if c < 0x10FFFF:
            return p[:-1] + chr(c + 1)
        p = p[:-1]
    return None


def build_ordered(
    where: str,
    column: Column,
    count: int,
    make: Callable[[np.ndarray], list[Any]],
    sections: tuple[dict[str, Any], ColumnContext, str] | None = None,
) -> OrderedIndex:
    """The ordered index of ``column`` over ordinals ``0..count-1`` (see
    :func:`nearstate.index.ordered_keys`); ``make`` turns ordinals into records."""
    et = check_orderable(where, column.ftype)
    keys = ordered_keys(where, column, count, sections)
    return OrderedIndex(where, et.kind, column.ftype.kind in ("list", "set"), make, keys)


# --- find: several conditions -----------------------------------------------------------------


def predicate(
    column: Column, cond: Any, eq_key: Callable[[Any], Any], where: str
) -> Callable[[int], bool]:
    """``ordinal -> bool``: whether a record's value meets ``cond`` (a :class:`Query`, or a
    value for equality as ``find`` means it), read with ``column.get``."""
    get = column.get
    multi = column.ftype.kind in ("list", "set")
    if isinstance(cond, OneOf):  # equality as find means it (a Record as its key)
        keys = {eq_key(v) for v in cond.values}

        def test(x: Any) -> bool:
            return x is not None and eq_key(x) in keys
    elif isinstance(cond, Query):
        test = cond.test
    else:
        k = eq_key(cond)

        def test(x: Any) -> bool:
            return eq_key(x) == k

    def pred(o: int) -> bool:
        v = get(o)
        try:
            if multi:
                return any(test(x) for x in (v or ()))
            return test(v)
        except TypeError as e:
            raise SchemaError(f"{where}: {cond!r} cannot be compared with {v!r}: {e}") from e

    return pred


def match(ts: Any, where: dict[str, Any], eq_key: Callable[[Any], Any]) -> np.ndarray:
    """The ordinals (sorted, int64) of ``ts``'s records meeting every condition of
    ``where``: equality values through the hash index, queries through ordered indexes
    (``one_of`` on a kind with no order, a reference say, through the hash index).

    The condition matching fewest entries goes first (counted in O(log n) per ordered
    index); each next one is intersected, or, when it matches many more, checked on the
    few candidates left one by one."""
    eq = {f: v for f, v in where.items() if not isinstance(v, Query)}
    conds: list[tuple[int, Callable[[], np.ndarray], str, Any]] = []
    if eq:
        idx = ts.index(*eq)
        keys = [eq_key(v) for v in eq.values()]
        got = idx.ordinals(tuple(keys) if len(keys) > 1 else keys[0])
        conds.append((len(got), lambda g=got: g, "", eq))
    for f, q in where.items():
        if not isinstance(q, Query):
            continue
        col = ts.column(f)
        et = col.ftype.item if col.ftype.kind in ("list", "set") else col.ftype
        if isinstance(q, OneOf) and et is not None and et.kind not in ORDERED_KINDS:
            if any(v is None for v in q.values):
                raise SchemaError(
                    f"{ts.name}.{f}: one_of() cannot hold None (nulls match no query)"
                )
            hidx = ts.index(f)
            groups = [hidx.ordinals(eq_key(v)) for v in q.values]
            conds.append((sum(map(len, groups)), lambda g=groups: _concat(g), f, q))
        else:
            oi = ts.ordered(f)
            spans = oi._spans(q)
            conds.append((sum(j - i for i, j in spans),
                          lambda oi=oi, s=spans: oi._take(s, None, False), f, q))  # fmt: skip
    conds.sort(key=lambda c: c[0])
    cand = np.unique(conds[0][1]().astype(np.int64))
    for est, fetch, f, cond in conds[1:]:
        if not len(cand):
            break
        if est > _FILTER_RATIO * len(cand) + 64:
            items = cond.items() if f == "" else [(f, cond)]
            preds = [predicate(ts.column(g), c, eq_key, f"{ts.name}.{g}") for g, c in items]
            keep = [o for o in cand.tolist() if all(p(o) for p in preds)]
            cand = np.array(keep, dtype=np.int64)
        else:
            cand = np.intersect1d(cand, fetch().astype(np.int64))
    return cand


def _concat(groups: Sequence[np.ndarray]) -> np.ndarray:
    return np.concatenate(groups) if groups else np.zeros(0, np.int64)


# --- a layered version: the snapshot's index plus the overlay -------------------------------


class LayeredOrderedIndex(_OrderedAPI):
    """The ordered index of a field in a layered version: the snapshot's
    :class:`OrderedIndex` (built once, shared by every version over it) without the
    records the overlay removed or replaced, merged with the overlay's records, which are
    read and placed among the snapshot's entries once per version (O(m log n) for m
    overlay records). Same API and answers as :class:`OrderedIndex` over the same records.
    """

    def __init__(
        self,
        base: OrderedIndex,
        get: Callable[[int], Any],
        base_get: Callable[[int], Any],
        overlay: Iterable[int],
        hidden: np.ndarray,
        make: Callable[[np.ndarray], list[Any]],
    ):
        """``get``: the field in this version; ``base_get``: in the snapshot;
        ``overlay``: the ordinals read from the overlay (live); ``hidden``: the snapshot's
        ordinals removed or replaced (sorted)."""
        self._b = base
        self.field, self.kind, self.multi = base.field, base.kind, base.multi
        self._make = make
        self._hidden = hidden
        self._hidden_set = set(hidden.tolist())
        items = []
        for o in overlay:
            v = get(o)
            for x in dict.fromkeys(v or ()) if base.multi else (v,):
                if x is None:
                    continue
                nx = base._norm(x, "value", nan=True)  # a bool as an int, say
                nan = nx != nx
                items.append((base._where(nx, o), (1, 0) if nan else (0, nx), o, x))
        items.sort(key=lambda t: t[:3])
        self._items = items  # (position among the snapshot's entries, sort key, ordinal, value)
        self._hpos: np.ndarray | None = None
        self._base_get = base_get

    def __repr__(self) -> str:
        return f"<LayeredOrderedIndex {self.field}: +{len(self._items)} overlay entries>"

    def ordinals(
        self, query: Query | None = None, *, limit: int | None = None, reverse: bool = False
    ) -> np.ndarray:
        limit = _limit(limit)
        b = self._b
        spans = b._spans(query)
        ov = [(p, o) for p, _, o, x in self._items if query is None or query.test(x)]
        total = sum(j - i for i, j in spans)
        want = None if limit is None else limit + len(self._hidden)
        while True:
            pos = slice_positions(spans, want, reverse)
            done = want is None or want >= total
            keep = pos[~in_sorted(b._ords[pos].astype(np.int64), self._hidden)]
            if not done and len(pos):  # overlay entries beyond what was taken wait
                edge = int(pos[-1])
                mine = [t for t in ov if (t[0] > edge if reverse else t[0] <= edge)]
            else:
                mine = ov
            keys = np.concatenate(
                [np.array([2 * p for p, _ in mine], dtype=np.int64), 2 * keep + 1]
            )
            ords = np.concatenate([np.array([o for _, o in mine], dtype=np.int64),
                                   b._ords[keep].astype(np.int64)])  # fmt: skip
            got = ords[np.argsort(keys, kind="stable")]
            if reverse:
                got = got[::-1]
            if self.multi:
                got = first_unique(got)
            if limit is None or len(got) >= limit or done:
                return (got if limit is None else got[:limit]).astype(np.uint32)
            want = max(want * 4, 64)  # type: ignore[operator]

    def count(self, query: Query | None = None) -> int:
        """How many records match (each once)."""
        if self.multi:
            return len(np.unique(self.ordinals(query)))
        spans = self._b._spans(query)
        hpos = self._hidden_positions()
        n = sum(
            (j - i) - int(np.searchsorted(hpos, j) - np.searchsorted(hpos, i)) for i, j in spans
        )
        return n + sum(1 for *_, x in self._items if query is None or query.test(x))

    def min(self) -> Any:
        return self._edge(False)

    def max(self) -> Any:
        return self._edge(True)

    def _edge(self, last: bool) -> Any:
        b = self._b
        best = None
        steps = range(b._nv - 1, -1, -1) if last else range(b._nv)
        for p in steps:
            if int(b._ords[p]) not in self._hidden_set:
                best = b._value(p)
                break
        xs = [x for *_, x in self._items if x == x]
        if xs:
            x = xs[-1] if last else xs[0]
            if best is None or (x > best if last else x < best):
                best = x
        return best

    def _hidden_positions(self) -> np.ndarray:
        """Where the hidden ordinals' entries sit among the snapshot's (scalar fields)."""
        if self._hpos is None:
            b = self._b
            pos = []
            for o in self._hidden.tolist():
                v = self._base_get(o)
                if v is not None:
                    pos.append(b._where(b._norm(v, "value", nan=True), o))
            self._hpos = np.array(sorted(pos), dtype=np.int64)
        return self._hpos
