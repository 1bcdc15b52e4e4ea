"""Site search with its index built once per host: the version's documents in a mapped
file every worker shares, the Log's newer records in a small index of each worker's own.

:class:`SearchIndex` holds every document in Python sets and dicts: about 166 MB for
81k documents, in every worker process. :class:`HostSearchIndex` answers the same
queries with the same results (see :mod:`.search` for the contracts of words, matching,
scoring and order) from two parts:

- **the base**: the documents of the snapshot the state reads from, laid out as arrays
  (documents in result order, the sorted vocabulary, each word's postings) in a file of
  the host's cache directory (:mod:`nearstate.hostfile`: built once per host under a
  lock, atomically, keyed by the dataset, the snapshot's version and its checksums,
  checked when mapped; a damaged file is refused and built again). Every worker maps it.
  The process that builds a snapshot's file removes those of the dataset's older
  snapshots (a worker still mapping one reads on; one that needs it again rebuilds it).
- **the overlay**: the documents added, changed or removed since that snapshot (the
  Log's records and later versions' deltas), in a :class:`~.search.Core` of this
  worker's own, and a mask hiding the base's copies of the documents it replaced.

A query is answered by each part and the two lists merged in the result order.
A state loaded whole (``changes=None``) moves the base to that state's snapshot; so does
an overlay grown past a tenth of the base once the state reads from a newer snapshot.

Contracts: as :class:`SearchIndex` (thread-safe; a search sees a refresh whole or not at
all). Keys of the three types must be integers (the content schema's are); a state
whose keys are not is refused with :class:`~nearstate.errors.InputError`.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..hostfile import HostArrays, open_or_build
from ..layered import State
from .search import (
    LABEL_BOOST,
    MAKERS,
    PREFIX,
    TYPES,
    Core,
    Doc,
    Following,
    Hit,
    Rank,
    allowed_types,
    query_words,
    ranked,
)

FORMAT = 1  #: the layout of the arrays; part of the file's key
WEIGHTS = (1.0, 1.5, 2.0, 3.0)  #: field weights, stored as their index (see .search)
_END = chr(0x10FFFF)
REBASE_AT = 0.1  #: overlay documents, as a share of the base's, that move the base on


class _Strings:
    """A sorted or indexed sequence of strings stored as UTF-8 bytes and offsets (UTF-8
    byte order is code point order, so bisection works on it as on ``str``)."""

    def __init__(self, blob: np.ndarray, offsets: np.ndarray):
        self._blob = blob
        self._off = offsets

    def __len__(self) -> int:
        return len(self._off) - 1

    def __getitem__(self, i: int) -> str:
        off = self._off
        return self._blob[int(off[i]) : int(off[i + 1])].tobytes().decode()


def _pack(strings: list[str]) -> tuple[np.ndarray, np.ndarray]:
    encoded = [s.encode() for s in strings]
    off = np.zeros(len(encoded) + 1, np.int64)
    np.cumsum([len(b) for b in encoded], out=off[1:])
    return np.frombuffer(b"".join(encoded), np.uint8).copy(), off


def _csr(groups: list[np.ndarray]) -> np.ndarray:
    off = np.zeros(len(groups) + 1, np.int64)
    np.cumsum([len(g) for g in groups], out=off[1:])
    return off


def base_arrays(state: State) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The base's arrays for every Story, Title and Person in ``state``."""
    docs: list[Doc] = []
    for i, name in enumerate(TYPES):
        ts = state.get(name)
        if ts is not None:
            docs.extend(MAKERS[i](r) for r in ts)
    docs.sort(key=lambda d: d.rank)
    for d in docs:
        if type(d.rank[3]) is not int:
            raise InputError(f"{TYPES[d.rank[0]]} key {d.rank[3]!r} is not an integer: a "
                             "host search index needs integer keys", field="key")  # fmt: skip
    n = len(docs)
    a: dict[str, np.ndarray] = {}
    a["type"] = np.fromiter((d.rank[0] for d in docs), np.uint8, n)
    a["key"] = np.fromiter((d.rank[3] for d in docs), np.int64, n)
    a["label"], a["label_off"] = _pack([d.rank[2] for d in docs])
    a["slug"], a["slug_off"] = _pack([d.slug for d in docs])
    # (type, key) -> document: keys sorted within each type
    order = np.lexsort((a["key"], a["type"]))
    a["by_key"] = order.astype(np.uint32)
    a["key_sorted"] = a["key"][order]
    a["type_off"] = np.searchsorted(a["type"][order], np.arange(len(TYPES) + 1)).astype(np.int64)
    # label words -> documents
    labels: dict[str, list[int]] = {}
    for i, d in enumerate(docs):
        labels.setdefault(d.label_key, []).append(i)
    lkeys = sorted(labels)
    a["lab"], a["lab_off"] = _pack(lkeys)
    lgroups = [np.asarray(labels[k], np.uint32) for k in lkeys]
    a["lab_docs_off"] = _csr(lgroups)
    a["lab_docs"] = np.concatenate(lgroups) if lgroups else np.zeros(0, np.uint32)
    del labels, lgroups
    # word -> postings (document, weight index), words sorted
    code = {w: i for i, w in enumerate(WEIGHTS)}
    postings: dict[str, list[int]] = {}
    for i, d in enumerate(docs):
        for w, wt in zip(d.words, d.weights, strict=True):
            postings.setdefault(w, []).append(i * 4 + code[wt])
    vocab = sorted(postings)
    a["vocab"], a["vocab_off"] = _pack(vocab)
    flat = np.fromiter((p for w in vocab for p in postings[w]), np.int64,
                       sum(len(p) for p in postings.values()))  # fmt: skip
    a["post_off"] = _csr([postings[w] for w in vocab])  # type: ignore[misc]
    a["post_doc"] = (flat >> 2).astype(np.uint32)
    a["post_wt"] = (flat & 3).astype(np.uint8)
    meta = {"documents": n, "words": len(vocab), "version": getattr(state, "version", None)}
    return a, meta


def base_key(state: State) -> str:
    """The file key of ``state``'s snapshot: its dataset, version and the checksums of
    the three types (a digest of them), and the layout's format."""
    base = state.base
    sums = base.checksums()
    text = repr((FORMAT, base.dataset, base.version, [sums.get(t) for t in TYPES]))
    return f"{_prefix(base.dataset)}{base.version}-{hashlib.sha256(text.encode()).hexdigest()[:24]}"


def _prefix(dataset: str) -> str:
    return f"search-{hashlib.sha256(dataset.encode()).hexdigest()[:8]}-v"


def tidy(root: Path, dataset: str, version: int) -> int:
    """Remove the search files of ``dataset`` for snapshots older than ``version`` (a
    process still mapping one keeps reading it); returns how many were removed."""
    prefix, n = _prefix(dataset), 0
    for p in Path(root).glob(f"{prefix}*"):
        v = p.name[len(prefix) :].split("-", 1)[0]
        if v.isdigit() and int(v) < version:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                n += p.suffix == ".arrays"
    return n


class _Base:
    """The mapped arrays of one snapshot, searched with numpy."""

    def __init__(self, arrays: HostArrays):
        self.arrays = arrays
        g = arrays.__getitem__
        self.type, self.key = g("type"), g("key")
        self.labels = _Strings(g("label"), g("label_off"))
        self.slugs = _Strings(g("slug"), g("slug_off"))
        self.by_key, self.key_sorted, self.type_off = g("by_key"), g("key_sorted"), g("type_off")
        self.lab = _Strings(g("lab"), g("lab_off"))
        self.lab_docs, self.lab_docs_off = g("lab_docs"), g("lab_docs_off")
        self.vocab = _Strings(g("vocab"), g("vocab_off"))
        self.post_off, self.post_doc, self.post_wt = g("post_off"), g("post_doc"), g("post_wt")
        self.n = len(self.type)
        self.weights = np.asarray(WEIGHTS, np.float64)

    def doc_of(self, t: int, key: Any) -> int:
        """The document of (type index, key), or -1."""
        if type(key) is not int:
            return -1
        lo, hi = int(self.type_off[t]), int(self.type_off[t + 1])
        keys = self.key_sorted[lo:hi]
        i = int(np.searchsorted(keys, key))
        return int(self.by_key[lo + i]) if i < hi - lo and int(keys[i]) == key else -1

    def term(self, q: str) -> np.ndarray | None:
        """Each document's score for query word ``q`` (0: no match); None: none match."""
        vocab = self.vocab
        lo = bisect_left(vocab, q)  # type: ignore[arg-type]
        hi = bisect_left(vocab, q + _END, lo)  # type: ignore[arg-type]
        if lo == hi:
            return None
        scores = np.zeros(self.n, np.float64)
        exact = vocab[lo] == q
        start = lo + 1 if exact else lo
        if start < hi:  # words that q is a prefix of: half their weight, the best kept
            a, b = int(self.post_off[start]), int(self.post_off[hi])
            docs, wts = self.post_doc[a:b], self.post_wt[a:b]
            for c in np.unique(wts):  # ascending: a heavier weight overwrites a lighter
                scores[docs[wts == c]] = WEIGHTS[c] * PREFIX
        if exact:
            a, b = int(self.post_off[lo]), int(self.post_off[lo + 1])
            docs = self.post_doc[a:b]
            scores[docs] = np.maximum(scores[docs], self.weights[self.post_wt[a:b]])
        return scores

    def search(self, qwords: list[str], allowed: set[int], limit: int,
               hidden: np.ndarray) -> list[tuple[float, Rank, str]]:  # fmt: skip
        total: np.ndarray | None = None
        for q in dict.fromkeys(qwords):
            s = self.term(q)
            if s is None:
                return []
            total = s if total is None else np.where((total > 0) & (s > 0), total + s, 0.0)
        assert total is not None
        if len(hidden):
            total[hidden] = 0.0
        label = " ".join(qwords)
        i = bisect_left(self.lab, label)  # type: ignore[arg-type]
        if i < len(self.lab) and self.lab[i] == label:
            ids = self.lab_docs[int(self.lab_docs_off[i]) : int(self.lab_docs_off[i + 1])]
            total[ids] = np.where(total[ids] > 0, total[ids] + LABEL_BOOST, 0.0)
        if len(allowed) < len(TYPES):
            total[~np.isin(self.type, list(allowed))] = 0.0
        cand = np.flatnonzero(total)
        if len(cand) > limit:  # the best ``limit`` scores, ties in document (result) order
            cut = np.partition(-total[cand], limit - 1)[limit - 1]
            cand = cand[-total[cand] <= cut]
        best = cand[np.lexsort((cand, -total[cand]))][:limit]
        out = []
        for d in best.tolist():
            label = self.labels[d]
            folded = label.casefold()
            rank = (int(self.type[d]), label if folded == label else folded, label,
                    int(self.key[d]))  # fmt: skip
            out.append((float(total[d]), rank, self.slugs[d]))
        return out


class HostSearchIndex(Following):
    """Search over the site's live records with the snapshot's part mapped from the host
    cache directory ``root``; the same API and results as :class:`SearchIndex`."""

    TYPES = TYPES

    def __init__(self, root: Path):
        self.root = Path(root)
        self._base: _Base | None = None
        self._overlay = Core()
        self._hidden: set[int] = set()  # base documents the overlay replaced or removed
        self._hidden_arr = np.zeros(0, np.int64)
        self._lock = threading.Lock()
        self._writing = threading.RLock()
        self.version: int | None = None
        self.position: int | None = None
        self.updates = 0
        self.last_update_ms = 0.0
        self._snapshot: int | None = None  # the version of the base's snapshot
        self.base_how: str | None = None  # how the base file was had: mapped|built|rebuilt
        self._following: tuple[Any, Callable[[Any], None]] | None = None

    @classmethod
    def build(cls, state: State, root: Path) -> HostSearchIndex:
        index = cls(root)
        index.update(state, None)
        return index

    def update(self, state: State, changes: Mapping[str, Any] | None) -> None:
        """As :meth:`SearchIndex.update`; ``changes`` None moves the base to ``state``'s
        snapshot (mapped, or built once per host) and indexes what differs from it."""
        self._update(lambda: state, changes, None)

    def _update(self, get_state: Callable[[], Any], changes: Mapping[str, Any] | None,
                position: int | None) -> None:  # fmt: skip
        with self._writing:
            t0 = time.perf_counter()
            state = get_state()
            if changes is None:
                self._rebase(state)
            else:
                self._apply(state, {t: changes[t] for t in TYPES if changes.get(t)})
                if self._outgrown(state):
                    self._rebase(state)
            self.version = getattr(state, "version", None)
            if position is not None:
                self.position = max(position, self.position or 0)
            self.updates += 1
            self.last_update_ms = (time.perf_counter() - t0) * 1000

    def _outgrown(self, state: Any) -> bool:
        """Whether the overlay holds more than :data:`REBASE_AT` of the base (at least
        1,000 documents) while ``state`` reads from a newer snapshot than the base's: a
        worker that follows versions for long moves to a newer shared file rather than
        indexing every change since an old one on its own."""
        base, n = self._base, len(self._overlay.docs)
        if base is None or state is None or n < max(1000, REBASE_AT * base.n):
            return False
        return getattr(state.base, "version", None) != self._snapshot

    def _rebase(self, state: Any) -> None:
        if state is None:
            with self._lock:
                self._base, self._overlay, self._hidden = None, Core(), set()
                self._hidden_arr = np.zeros(0, np.int64)
            return
        snapshot = state.base
        self._snapshot = snapshot.version
        arrays = open_or_build(self.root, base_key(state), lambda: base_arrays(snapshot))
        base = _Base(arrays)
        if arrays.how != "mapped":  # a new snapshot's file: those of older ones retire
            tidy(self.root, snapshot.dataset, snapshot.version)
        changed: dict[str, list[Any]] = {}
        for name in TYPES:
            ts, bts = state.get(name), snapshot.get(name)
            changed[name] = _differing(ts, bts)
        todo = self._docs(state, changed)
        core, hidden = Core(), set()
        for i, key, doc in todo:
            d = base.doc_of(i, key)
            if d >= 0:
                hidden.add(d)
            if doc is not None:
                core.put(doc)
        with self._lock:
            self._base, self._overlay, self._hidden = base, core, hidden
            self._hidden_arr = np.fromiter(hidden, np.int64, len(hidden))
            self.base_how = arrays.how

    def _docs(self, state: Any, keys: Mapping[str, Collection[Any]]
              ) -> list[tuple[int, Any, Doc | None]]:  # fmt: skip
        out: list[tuple[int, Any, Doc | None]] = []
        for i, name in enumerate(TYPES):
            ks = keys.get(name)
            if not ks:
                continue
            ts = None if state is None else state.get(name)
            for key in ks:
                rec = None if ts is None else ts.get(key)
                out.append((i, key, None if rec is None else MAKERS[i](rec)))
        return out

    def _apply(self, state: Any, changes: Mapping[str, Any]) -> None:
        keys = {t: list(dict.fromkeys([*c.added, *c.modified, *c.removed]))
                for t, c in changes.items()}  # fmt: skip
        todo = self._docs(state, keys)
        base = self._base
        with self._lock:
            added = False
            for i, key, doc in todo:
                if base is not None:
                    d = base.doc_of(i, key)
                    if d >= 0 and d not in self._hidden:
                        self._hidden.add(d)
                        added = True
                if doc is None:
                    self._overlay.drop(i, key)
                else:
                    self._overlay.put(doc)
            if added:
                self._hidden_arr = np.fromiter(self._hidden, np.int64, len(self._hidden))

    def __len__(self) -> int:
        base = self._base
        return (0 if base is None else base.n - len(self._hidden)) + len(self._overlay.docs)

    @property
    def words(self) -> int:
        """Distinct words of the base plus the overlay's words the base lacks (the base's
        words found only in hidden documents are counted too)."""
        base = self._base
        if base is None:
            return len(self._overlay.vocab)
        vocab = base.vocab
        extra = 0
        for w in self._overlay.vocab:
            i = bisect_left(vocab, w)  # type: ignore[arg-type]
            extra += not (i < len(vocab) and vocab[i] == w)
        return len(vocab) + extra

    @property
    def overlay_documents(self) -> int:
        return len(self._overlay.docs)

    def stats(self) -> dict[str, Any]:
        base = self._base
        return {"documents": len(self), "version": self.version, "position": self.position,
                "updates": self.updates, "last_update_ms": round(self.last_update_ms, 3),
                "overlay_documents": self.overlay_documents,
                "base_file": None if base is None else str(base.arrays.path),
                "base_bytes": 0 if base is None else base.arrays.nbytes}  # fmt: skip

    def search(self, query: str, *, limit: int = 20,
               types: Collection[str] | None = None) -> list[Hit]:  # fmt: skip
        """As :meth:`SearchIndex.search`."""
        allowed = allowed_types(types)
        qwords = query_words(query)
        if not qwords or not allowed or limit <= 0:
            return []
        with self._lock:
            found = ranked(self._overlay, qwords, allowed, limit)
            if self._base is not None:
                found += self._base.search(qwords, allowed, limit, self._hidden_arr)
        found.sort(key=lambda f: (-f[0], f[1]))
        return [Hit(TYPES[rank[0]], rank[3], rank[2], slug, score)
                for score, rank, slug in found[:limit]]  # fmt: skip


def _differing(ts: Any, bts: Any) -> list[Any]:
    """Keys whose record in ``ts`` is not the snapshot's (``bts``) one: added, changed or
    removed. O(the type) once per state loaded whole; nothing when it is the snapshot's."""
    if ts is bts:
        return []
    if ts is None or bts is None:
        return list((ts or bts).keys())
    n = len(bts)
    out = []
    for k in ts.keys():  # noqa: SIM118 (a type state iterates its records)
        o = ts.ordinal_of(k)
        if o >= n or ts.digest(o) != bts.digest(o):
            out.append(k)
    out.extend(k for k in bts.keys() if k not in ts)  # noqa: SIM118
    return out


__all__ = ["FORMAT", "HostSearchIndex", "base_arrays", "base_key", "tidy"]
