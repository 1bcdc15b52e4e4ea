"""Site search: an in-memory inverted index over the live ``Story``, ``Title`` and
``Person`` records, kept up to date from the consumer's refresh events.

Contracts:

- Words: text is decomposed (NFKD), marks are dropped, case is folded, and it is split on
  anything that is not a letter or digit, so "Amélie" is found by "amelie" and "Cléo from
  5 to 7" by "cleo 5". Words are cut to 40 characters, in documents and queries alike.
- Matching: every query word (the first 8 of the first 1,000 characters; repeats count
  once) must match a word of the document, exactly or as its prefix ("godf" finds "The
  Godfather"). A word scores the best field weight it matched with (story title 3, tags 2,
  dek 1.5, search text 1; title name 3, genres and director and cast names 1; person name
  3), halved for a prefix match; a document scores the sum, plus 1 when the whole query
  equals its label (a title's name, without the year). Results are ordered by score, then
  type (Story, Title, Person), case-folded label, label and key.
- Bad queries are never an error and never slow: an empty or punctuation-only query finds
  nothing. Only an unknown name in ``types`` raises :class:`~nearstate.errors.InputError`.
- Prefixes: a sorted vocabulary (kept with ``insort``; a word is removed with its last
  posting) gives a query word's range of words by bisection; prefixes of one or two
  characters, whose ranges are wide, have document sets of their own.
- Incremental: a document keeps its words, so re-indexing or dropping one costs in
  proportion to that document, never to the index. ``changes=None`` rebuilds aside and
  swaps.
- Thread-safe: updates are serialised and applied under the lock searches hold, all of
  one refresh at once, so a search sees every document of a refresh whole, or none.
"""

from __future__ import annotations

import heapq
import re
import sys
import threading
import time
import unicodedata
from bisect import bisect_left, insort
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import DatasetError, InputError
from ..layered import State

MAX_WORD = 40  #: characters kept of a word
MAX_QUERY_WORDS = 8  #: query words used
MAX_QUERY_CHARS = 1000  #: characters of a query read
PREFIX = 0.5  #: a prefix match scores this fraction of the field weight
LABEL_BOOST = 1.0  #: added when the whole query equals the document's label

_SHORT = range(1, 3)  # prefix lengths whose matches are kept as sets of their own
_FEW = 1000  # candidates few enough to look the other query words up in their own words
_WORD = re.compile(r"[^\W_]+")  # letters and digits (\w without the underscore)
_END = chr(0x10FFFF)  # sorts after any character a word may hold (it is no letter)

# A document's id in the postings is its rank: (type index, folded label, label, key), so
# the documents of one score come out in result order by sorting their ids.
Rank = tuple[int, str, str, Any]
Groups = dict[float, set[Rank]]  # score -> documents


class _Marks(dict[int, Any]):
    """A ``str.translate`` table deleting every mark (category M), filled as met."""

    def __missing__(self, cp: int) -> Any:
        v = None if unicodedata.category(chr(cp))[0] == "M" else cp
        self[cp] = v
        return v


_MARKS = _Marks()


def words(text: str) -> list[str]:
    """The words of ``text``: accents stripped, case folded, cut to :data:`MAX_WORD`."""
    if text.isascii():
        text = text.lower()
    else:
        text = unicodedata.normalize("NFKD", text).translate(_MARKS).casefold()
    return [w[:MAX_WORD] for w in _WORD.findall(text)]


@dataclass(frozen=True)
class Hit:
    """One search result."""

    type: str  #: "Story" | "Title" | "Person"
    key: int
    label: str  #: story title, title name with " (year)" when known, person name
    slug: str
    score: float


class Doc:
    """One document: its rank, slug, label words, and words (interned) with the best
    weight each has in it."""

    __slots__ = ("_sorted", "label_key", "rank", "slug", "weights", "words")

    def __init__(self, t: int, key: Any, label: str, slug: str, label_words: list[str],
                 fields: list[tuple[float, list[str]]]) -> None:  # fmt: skip
        """``fields``: (weight, words), lightest first."""
        folded = label.casefold()
        self.rank: Rank = (t, label if folded == label else folded, label, key)
        self.slug, self.label_key = slug, " ".join(label_words)
        best: dict[str, float] = {}
        for weight, ws in fields:  # lighter first: heavier fields win
            best.update(dict.fromkeys(ws, weight))
        self.words = tuple(map(sys.intern, best))  # one str per word in the whole index
        self.weights = tuple(best.values())
        self._sorted: tuple[list[str], list[float]] | None = None  # made on first need

    def best(self, q: str) -> float:
        """The score of query word ``q`` in this document (0: no match)."""
        if self._sorted is None:
            pairs = sorted(zip(self.words, self.weights, strict=True))
            self._sorted = ([w for w, _ in pairs], [wt for _, wt in pairs])
        ws, weights = self._sorted
        i, best = bisect_left(ws, q), 0.0
        while i < len(ws) and ws[i].startswith(q):
            best = max(best, weights[i] if ws[i] == q else weights[i] * PREFIX)
            i += 1
        return best

    def shorts(self) -> set[tuple[str, float]]:
        """(short prefix, weight) of each word longer than the prefix (see Core.short)."""
        pairs = zip(self.words, self.weights, strict=True)
        return {(w[:n], wt) for w, wt in pairs for n in _SHORT if len(w) > n}


def _story(r: Any) -> Doc:
    title = r.title
    tw = words(title)
    fields = [(1.0, words(r.search_text)), (1.5, words(r.dek)),
              (2.0, words(" ".join(r.tags))), (3.0, tw)]  # fmt: skip
    return Doc(0, r.key, title, r.slug, tw, fields)


def _title(r: Any) -> Doc:
    name, year = r.name, r.year
    nw = words(name)
    people = " ".join([p.name for p in r.directors] + [p.name for p in r.cast])
    fields = [(1.0, words(" ".join(r.genres) + " " + people)), (3.0, nw)]
    return Doc(1, r.key, f"{name} ({year})" if year else name, r.slug, nw, fields)


def _person(r: Any) -> Doc:
    name = r.name
    nw = words(name)
    return Doc(2, r.key, name, r.slug, nw, [(3.0, nw)])


MAKERS = (_story, _title, _person)


def _take(table: dict[str, set[Rank]], word: str, rank: Rank) -> None:
    ids = table[word]
    ids.discard(rank)
    if not ids:
        del table[word]


class Core:
    """The index proper. ``tables``: weight -> word -> documents (so a query word's
    matches group by score with set operations); ``short``: weight -> prefix of 1-2
    characters -> documents with a longer word starting so; ``vocab``: every word,
    sorted; ``labels``: label words -> documents. Not thread-safe."""

    __slots__ = ("docs", "labels", "short", "tables", "vocab")

    def __init__(self, docs: Iterable[Doc] = ()) -> None:
        self.docs: dict[tuple[int, Any], Doc] = {}  # (type index, key) -> document
        self.tables: dict[float, dict[str, set[Rank]]] = {}
        self.short: dict[float, dict[str, set[Rank]]] = {}
        self.labels: dict[str, list[Rank]] = {}
        for d in docs:  # in bulk: the vocabulary and short prefixes are made at the end
            self._add(d, bulk=True)
        self.vocab = sorted(set().union(*self.tables.values()))
        for wt, table in self.tables.items():
            by_prefix: dict[str, list[set[Rank]]] = {}
            for w, ranks in table.items():
                for n in _SHORT:
                    if len(w) > n:
                        by_prefix.setdefault(w[:n], []).append(ranks)
            self.short[wt] = {p: set().union(*sets) for p, sets in by_prefix.items()}

    def _add(self, doc: Doc, bulk: bool = False) -> list[str]:
        """Index ``doc`` (absent); returns the words new to the index (``bulk``: the
        caller makes vocabulary and short prefixes)."""
        rank, tables, new = doc.rank, self.tables, []
        self.docs[rank[0], rank[3]] = doc
        self.labels.setdefault(doc.label_key, []).append(rank)
        for w, wt in zip(doc.words, doc.weights, strict=True):
            t = tables.get(wt)
            if t is None:
                t = tables[wt] = {}
            ids = t.get(w)
            if ids is not None:
                ids.add(rank)
                continue
            t[w] = {rank}
            if not bulk and not any(w in o for o in tables.values() if o is not t):
                new.append(w)
        for p, wt in () if bulk else doc.shorts():
            self.short.setdefault(wt, {}).setdefault(p, set()).add(rank)
        return new

    def put(self, doc: Doc) -> None:
        """Index ``doc``, replacing the document of the same type and key if any."""
        self.drop(doc.rank[0], doc.rank[3])
        for w in self._add(doc):
            insort(self.vocab, w)

    def drop(self, t: int, key: Any) -> None:
        doc = self.docs.pop((t, key), None)
        if doc is None:
            return
        rank, tables = doc.rank, self.tables
        same_label = self.labels[doc.label_key]
        same_label.remove(rank)
        if not same_label:
            del self.labels[doc.label_key]
        for w, wt in zip(doc.words, doc.weights, strict=True):
            _take(tables[wt], w, rank)
            if not any(w in t for t in tables.values()):
                del self.vocab[bisect_left(self.vocab, w)]
        for p, wt in doc.shorts():
            _take(self.short[wt], p, rank)


TYPES = ("Story", "Title", "Person")  #: the types searched, in result order


class Following:
    """:meth:`follow` and :meth:`unfollow` for an index with ``_writing`` (a lock),
    ``_following`` and ``_update(state, changes, position)``: shared by
    :class:`SearchIndex` and the host-mapped index of :mod:`.search_map`."""

    _writing: Any
    _following: tuple[Any, Callable[[Any], None]] | None

    def _update(self, state: Any, changes: Any, position: Any) -> None:
        raise NotImplementedError

    def follow(self, consumer: Any) -> Any:
        """Index ``consumer.state`` now (if it holds one) and after every refresh (the
        listener runs on the consumer's listener thread; ``consumer.drain()`` waits for
        it). Returns self."""

        def state() -> Any:
            try:
                return consumer.state
            except DatasetError:
                return None  # nothing held yet: the first refresh brings everything

        def listener(ev: Any) -> None:
            self._update(state, ev.changes, ev.position)

        with self._writing:  # events arriving meanwhile are applied after the build
            consumer.add_listener(listener)
            self._following = (consumer, listener)
            self._update(state, None, getattr(consumer, "position", None))
        return self

    def unfollow(self) -> None:
        """Stop following the consumer given to :meth:`follow` (the index stays)."""
        if self._following is not None:
            consumer, listener = self._following
            self._following = None
            consumer.remove_listener(listener)


class SearchIndex(Following):
    """Search over the site's live records; see the module docstring for the contracts.

    ``version`` and ``position`` are the state version and Log position last indexed
    (None until known); :meth:`stats` reports sizes and timings for /metrics."""

    TYPES = TYPES

    def __init__(self) -> None:
        self._core = Core()
        self._lock = threading.Lock()  # held by searches and while changes are applied
        self._writing = threading.RLock()  # one update at a time (reading the state too)
        self.version: int | None = None
        self.position: int | None = None
        self.updates = 0
        self.last_update_ms = 0.0
        self._following: tuple[Any, Callable[[Any], None]] | None = None

    @classmethod
    def build(cls, state: State) -> SearchIndex:
        """An index of every Story, Title and Person in ``state``."""
        index = cls()
        index.update(state, None)
        return index

    def update(self, state: State, changes: Mapping[str, Any] | None) -> None:
        """Bring the index up to ``state``: with ``changes`` None rebuild from it, else
        re-read each key added, modified or removed in the three types (present: index
        it, absent: drop it). Idempotent; may run concurrently with searches."""
        self._update(lambda: state, changes, None)

    def _update(self, get_state: Callable[[], Any], changes: Mapping[str, Any] | None,
                position: int | None) -> None:  # fmt: skip
        with self._writing:  # the state is read under it: a later update reads a newer one
            t0 = time.perf_counter()
            state = get_state()
            if changes is None:
                core = Core(MAKERS[i](r) for i, ts in self._types_in(state) for r in ts)
                with self._lock:
                    self._core = core
            else:
                todo: list[tuple[int, Any, Doc | None]] = []
                for i, ts in self._types_in(state, changes):
                    ch = changes[self.TYPES[i]]
                    for key in dict.fromkeys([*ch.added, *ch.modified, *ch.removed]):
                        rec = None if ts is None else ts.get(key)
                        todo.append((i, key, None if rec is None else MAKERS[i](rec)))
                with self._lock:
                    for i, key, doc in todo:
                        if doc is None:
                            self._core.drop(i, key)
                        else:
                            self._core.put(doc)
            self.version = getattr(state, "version", None)
            if position is not None:
                self.position = max(position, self.position or 0)
            self.updates += 1
            self.last_update_ms = (time.perf_counter() - t0) * 1000

    def _types_in(self, state: State, only: Mapping[str, Any] | None = None):
        """(type index, TypeState or None) of the types to read: all present, or those
        ``only`` names with changes."""
        for i, name in enumerate(self.TYPES):
            if only is None or only.get(name):
                ts = None if state is None else state.get(name)
                if ts is not None or only is not None:
                    yield i, ts

    def __len__(self) -> int:
        return len(self._core.docs)

    @property
    def words(self) -> int:
        """Distinct words indexed."""
        return len(self._core.vocab)

    def stats(self) -> dict[str, Any]:
        """Documents, words, version and position indexed, updates, the last one's ms."""
        return {"documents": len(self), "words": self.words, "version": self.version,
                "position": self.position, "updates": self.updates,
                "last_update_ms": round(self.last_update_ms, 3)}  # fmt: skip

    def search(self, query: str, *, limit: int = 20,
               types: Collection[str] | None = None) -> list[Hit]:  # fmt: skip
        """The best ``limit`` documents matching every word of ``query``, best first,
        restricted to ``types`` (None: all). Raises InputError for an unknown type."""
        allowed = self._allowed(types)
        qwords = query_words(query)
        if not qwords or not allowed or limit <= 0:
            return []
        with self._lock:
            found = ranked(self._core, qwords, allowed, limit)
        return [Hit(self.TYPES[rank[0]], rank[3], rank[2], slug, score)
                for score, rank, slug in found]  # fmt: skip

    def _allowed(self, types: Collection[str] | None) -> set[int]:
        return allowed_types(types)


def query_words(query: Any) -> list[str]:
    """The words of ``query`` a search uses (the first 8 of its first 1,000 characters)."""
    return words(query[:MAX_QUERY_CHARS])[:MAX_QUERY_WORDS] if isinstance(query, str) else []


def allowed_types(types: Collection[str] | None) -> set[int]:
    """The type indexes ``types`` names (None: all); InputError for an unknown name."""
    if types is None:
        return set(range(len(TYPES)))
    if isinstance(types, str):
        types = (types,)
    out = set()
    for t in types:
        if t not in TYPES:
            raise InputError(f"unknown type {t!r}: use {', '.join(TYPES)}", field="types")
        out.add(TYPES.index(t))
    return out


def ranked(core: Core, qwords: list[str], allowed: set[int],
           limit: int) -> list[tuple[float, Rank, str]]:  # fmt: skip
    """(score, rank, slug) of the best ``limit`` documents of ``core`` matching every
    word of ``qwords`` (as :func:`query_words` gives them), of the types ``allowed``,
    best first. Not thread-safe (the caller holds the index's lock)."""
    groups = _match(core, list(dict.fromkeys(qwords)))
    for rank in core.labels.get(" ".join(qwords), ()):
        for score, ranks in list(groups.items()):
            if rank in ranks:
                ranks.discard(rank)
                groups.setdefault(score + LABEL_BOOST, set()).add(rank)
                break
    out: list[tuple[float, Rank, str]] = []
    for score in sorted(groups, reverse=True):
        g: Collection[Rank] = groups[score]
        if len(allowed) < len(TYPES):
            g = [r for r in g if r[0] in allowed]
        need = limit - len(out)
        best = heapq.nsmallest(need, g) if len(g) > need else sorted(g)
        out.extend((score, r, core.docs[r[0], r[3]].slug) for r in best)
        if len(out) >= limit:
            break
    return out


def _levels(core: Core, q: str) -> list[tuple[float, set[Rank]]]:
    """The documents matching query word ``q`` by score, best first, each once (under
    the best weight it matched with). Set operations only (C speed)."""
    vocab = core.vocab
    lo = bisect_left(vocab, q)
    span = vocab[lo : bisect_left(vocab, q + _END, lo)]
    levels: Groups = {}
    for wt, table in core.tables.items():
        if span and span[0] == q and q in table:
            levels.setdefault(wt, set()).update(table[q])
        if len(q) in _SHORT:
            got = core.short.get(wt, {}).get(q)
            prefixed = [] if got is None else [got]
        else:
            prefixed = [table[w] for w in span if w != q and w in table]
        if prefixed:
            levels.setdefault(wt * PREFIX, set()).update(*prefixed)
    out, seen = [], set()
    for score in sorted(levels, reverse=True):
        ranks = levels[score] - seen
        if ranks:
            out.append((score, ranks))
            seen |= ranks
    return out


def _match(core: Core, terms: list[str]) -> Groups:
    """The documents matching every term, grouped by summed score. Terms are taken
    rarest first (by a cheap estimate). While candidates are many, each term's levels are
    intersected with them (set operations); once few, the remaining terms are looked up
    in the candidates' own words."""
    vocab, tables = core.vocab, core.tables.values()
    spans = []
    for q in terms:
        lo = bisect_left(vocab, q)
        hi = bisect_left(vocab, q + _END, lo)
        if lo == hi:
            return {}
        spans.append((hi - lo + sum(len(t.get(q, ())) for t in tables), q))
    spans.sort()
    groups = dict(_levels(core, spans[0][1]))
    rest = [q for _, q in spans[1:]]
    while rest and groups:
        if sum(map(len, groups.values())) <= _FEW:
            return _look_in_docs(core, groups, rest)
        folded: Groups = {}
        for s2, b in _levels(core, rest.pop(0)):
            for s1, a in groups.items():
                both = a & b
                if both:
                    folded.setdefault(s1 + s2, set()).update(both)
        groups = folded
    return groups


def _look_in_docs(core: Core, groups: Groups, terms: list[str]) -> Groups:
    """``groups`` narrowed to the documents whose own words match every term."""
    out: Groups = {}
    for base, ranks in groups.items():
        for rank in ranks:
            doc, score = core.docs[rank[0], rank[3]], base
            for q in terms:
                s = doc.best(q)
                if not s:
                    break
                score += s
            else:
                out.setdefault(score, set()).add(rank)
    return out
