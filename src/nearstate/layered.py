"""A version reached by applying deltas to a snapshot, without copying the snapshot.

A :class:`LayeredState` is a snapshot (:class:`ReadState`, shared and never copied) plus
the delta layers applied since, resolved into a small *overlay* per type: which ordinals
now read from which layer, which were removed, which keys were added. Applying a delta
copies only the overlay, so it costs in proportion to the change and the overlay, never
to the dataset, and the previous version stays intact for whoever still holds it.

Types the deltas did not touch are served by the snapshot's own TypeState, at full
speed; a touched type gets a :class:`LayeredTypeState` whose views check the overlay
first. Types that refer to a touched type are layered too, so a reference always reads
the target as it is in this version. (A reference *inside a nested record* reads the
target as of the snapshot or delta that wrote the nested record; see decision 0005.)

Over ~600 lines on purpose: :class:`LayeredState`, :class:`LayeredTypeState` and
:func:`apply_delta` share one private structure, the per-type overlay (``_Overlay``),
which the index helpers at the end also read; splitting them would make that structure
public for no reader outside this module.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import digest as _digest
from .delta import DeltaLayer, shape
from .encoding import Column
from .errors import DeltaError, SchemaError
from .index import HashIndex, check_orderable, in_sorted
from .lazymap import LazyMap
from .ordered import LayeredOrderedIndex, Query, match, predicate
from .pages import PAGE_SHIFT, PagedMap, PagedSet, by_hash, by_ordinal
from .read_state import ReadState, Record, TypeMap, TypeState, index_value
from .schema import FieldType, Schema, TypeDef, per_schema


@dataclass(slots=True)  # not frozen: a frozen one cost a reader ~2 us a commit to make
class Changes:
    """The keys a refresh changed in one type."""

    added: list[Any] = field(default_factory=list)
    modified: list[Any] = field(default_factory=list)
    removed: list[Any] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.modified or self.removed)

    def __len__(self) -> int:
        return len(self.added) + len(self.modified) + len(self.removed)


def gather(into: dict[str, Changes]):
    """An ``on_step`` callback for :func:`nearstate.versions.walk` that appends each step's
    changes per type to ``into`` (not yet netted: see ``versions.net_changes``)."""

    def step(_state: Any, changes: dict[str, Changes] | None) -> None:
        for n, c in (changes or {}).items():
            m = into.setdefault(n, Changes())
            m.added.extend(c.added)
            m.modified.extend(c.modified)
            m.removed.extend(c.removed)

    return step


class _Overlay:
    """What the deltas changed in one type, relative to the snapshot (copy to modify: the
    copy shares every page with this one and copies a page when it first writes to it, so
    a commit costs what it changes, not what changed since the snapshot)."""

    __slots__ = ("added", "entries", "keys_own", "live", "next_ord", "removed")

    def __init__(self, n_base: int):
        # ordinal -> (layer index, layer ordinal)
        self.entries: PagedMap = PagedMap(by_ordinal)
        self.added: PagedMap = PagedMap(by_hash)  # keys not in the snapshot -> ordinal
        self.removed: PagedSet = PagedSet()  # snapshot ordinals removed
        self.keys_own = True  # ``added`` and ``removed`` are this overlay's to write
        self.next_ord = n_base
        self.live = n_base

    def copy(self) -> _Overlay:
        """A copy to modify. ``added`` and ``removed`` stay shared (nobody writes them)
        until :meth:`own_keys`: most commits replace records and add or remove no key."""
        o = _Overlay.__new__(_Overlay)
        o.entries = self.entries.copy()
        o.added = self.added
        o.removed = self.removed
        o.keys_own = False
        o.next_ord = self.next_ord
        o.live = self.live
        return o

    def own_keys(self) -> None:
        """Make ``added`` and ``removed`` this overlay's own, to write them."""
        if not self.keys_own:
            self.added = self.added.copy()
            self.removed = self.removed.copy()
            self.keys_own = True

    def __len__(self) -> int:
        return len(self.entries) + len(self.removed)


@functools.lru_cache(maxsize=4096)  # asked for each column a layered type makes
def _ref_fields(ft: FieldType) -> bool:
    return ft.kind == "ref" or any(_ref_fields(s) for s in (ft.item, ft.key) if s is not None)


@per_schema
def _referring(schema: Schema, names: frozenset[str]) -> frozenset[str]:
    """``names`` plus every keyed type whose references lead to one of them."""
    out = set(names)
    grew = True
    while grew:
        grew = False
        for t in schema:
            if t.name in out or t.key is None:
                continue
            if any(_ref_targets(f.type) & out for f in t.fields):
                out.add(t.name)
                grew = True
    return frozenset(out)


def _ref_targets(ft: FieldType) -> set[str]:
    out = {ft.target} if ft.kind == "ref" and ft.target else set()
    for s in (ft.item, ft.key):
        if s is not None:
            out |= _ref_targets(s)
    return out


class LayeredState(TypeMap):
    """One version: a snapshot plus the deltas applied to it. Read it as a ReadState."""

    def __init__(
        self,
        base: ReadState,
        layers: tuple[DeltaLayer, ...],
        overlays: dict[str, _Overlay],
        *,
        version: int,
        checksums: dict[str, _digest.Checksum] | None,
        tags: dict[str, str],
        reuse: LayeredState | None = None,
        changed: Iterable[str] = (),
        carried: dict[str, _digest.Checksum] | None = None,
    ):
        """``reuse``: the version this one was made from by a layer changing the types in
        ``changed``. A type of ``reuse`` the layer left alone, whose references lead to no
        type it changed, is taken over as it is: a Log commit to one type of ten builds
        one type's reading state, not ten, and what a reader derived from the others
        (caches keyed by the type state, the overlay indexes) stays valid. (The type
        state keeps the version it was made in alive, for as long as it is taken over.)

        ``checksums``: per type, as the layers verified them; or None, worked out from the
        snapshot's and the overlays' digests when first asked for (a layer of Log entries
        verifies nothing, and its digests cost a reader a third of its work per commit),
        with ``carried`` the claims for the types left out of a filtered state."""
        self._base = base
        self.layers = layers
        self._overlays = overlays
        self.version = version
        self.tags = tags
        self.dataset = base.dataset
        self.schema: Schema = base.schema
        self.stored_schema = base.stored_schema
        self.type_filter = base.type_filter
        self.left_out = base.left_out
        self.blob = base.blob
        self._checksums = checksums
        self._carried = carried or {}
        self._types: dict[str, TypeState | LayeredTypeState] = dict(base._types)
        # a type referring to a layered type is layered too (its references re-bind)
        # the names of the types with an overlay: those of ``reuse`` while the layer only
        # changed types it held (most commits: the same frozenset, its hash kept)
        held = reuse._held if reuse is not None else frozenset()
        for n in changed:
            if n not in held or not len(overlays[n]):
                held = frozenset(n for n, ov in overlays.items() if len(ov))
                break
        self._held = held
        if reuse is not None and held is reuse._held and reuse.schema is self.schema:
            layered = reuse._layered
        else:
            layered = _referring(self.schema, held)
        self._layered = layered  # the names of the types read through an overlay
        # and one whose references lead to a changed type re-binds them: not taken over
        stale = _referring(self.schema, changed) if reuse is not None else frozenset()
        for name in layered:
            ov = overlays.get(name)
            old = None if reuse is None or name in stale else reuse._types.get(name)
            if (
                isinstance(old, LayeredTypeState)
                and old._base is base[name]
                and (old._ov is ov if ov is not None else not len(old._ov))
            ):
                self._types[name] = old
                continue
            self._types[name] = LayeredTypeState(self, base[name], ov or _Overlay(len(base[name])))

    @property
    def base(self) -> ReadState:
        """The snapshot under the deltas."""
        return self._base

    @property
    def nbytes(self) -> int:
        """Bytes held: the snapshot plus every delta layer."""
        return self._base.nbytes + sum(layer.nbytes for layer in self.layers)

    def type_nbytes(self) -> dict[str, int]:
        out = self._base.type_nbytes()
        for layer in self.layers:
            for n, ts in layer.state.types.items():
                if n in out:
                    out[n] += ts.nbytes
        return out

    def checksums(self) -> dict[str, _digest.Checksum]:
        if self._checksums is None:
            self._checksums = self._overlay_checksums()
        return dict(self._checksums)

    def _left_out_checksums(self) -> dict[str, _digest.Checksum]:
        """The claims carried for the types a filtered state leaves out (never computed;
        not to be written: a state made from this one shares them)."""
        if self._checksums is None:
            return self._carried
        return {n: c for n, c in self._checksums.items() if n in self.left_out}

    def _overlay_checksums(self) -> dict[str, _digest.Checksum]:
        """Every type's checksum from the snapshot's and the overlay's digests: the
        snapshot's, less the records the overlay removed or replaced, plus those it
        holds. O(the overlay)."""
        sums = self._base.checksums()
        for name, ov in self._overlays.items():
            if not len(ov):
                continue
            bts = self._base[name]
            n_base, bdig = len(bts), bts.digest
            c = sums.get(name, (0, 0))
            for o in ov.removed:
                c = _digest.sub(c, bdig(o))
            layers = self.layers
            for o, (li, lo) in ov.entries.items():
                if o < n_base:
                    c = _digest.sub(c, bdig(o))
                c = _digest.add(c, layers[li].state._types[name].digest(lo))
            sums[name] = c
        sums.update(self._carried)
        return sums

    @property
    def overlay_size(self) -> int:
        """Records read from delta layers or removed since the snapshot."""
        return sum(len(ov) for ov in self._overlays.values())

    def __repr__(self) -> str:
        counts = ", ".join(f"{n}={len(t)}" for n, t in self._types.items() if t.typedef.key)
        return (
            f"<LayeredState {self.dataset} v{self.version} "
            f"(snapshot v{self._base.version} + {len(self.layers)} deltas): {counts}>"
        )

    def _view(self, type_name: str):
        ts = self._types[type_name]
        cls = ts._cls
        return lambda o: cls(ts, o)


def apply_delta(
    state: ReadState | LayeredState, layer: DeltaLayer, *, trusted: bool = False
) -> tuple[LayeredState | ReadState, dict[str, Changes]]:
    """The version ``layer`` produces from ``state``, and the keys it changed per type.

    Raises :class:`DeltaError` (naming the blob) if the delta does not start at this
    state's version and checksums, or does not arrive at the checksums it claims.
    Costs in proportion to the delta plus the overlay already applied. ``trusted``: the
    layer was made in this process from this state's own types (the Log's overlay), so
    its schema need not match the snapshot's stored one.

    A state that leaves types out (``types=...``) applies the delta's changes to the types
    it loads only; the others' upserts are never opened (``versions.open_layer`` leaves
    their sections unread) and their checksums are *carried* from the delta's claims, not
    verified: only that the delta starts from the checksum the previous blob claimed is
    checked. The version advances as a full state's does.
    """
    if layer.from_version != state.version:
        raise DeltaError(
            f"{layer.name}: goes from version {layer.from_version} to {layer.version}, "
            f"but the state is at version {state.version}"
        )
    base = state.base
    if not trusted and shape(layer.schema) != shape(base.stored_schema):
        raise DeltaError(f"{layer.name}: written for a different schema than the state's")
    # a layer of Log entries (overlay.PlainLayer) claims no checksums: the sums are worked
    # out only if someone asks (LayeredState._overlay_checksums), not on every commit
    lazy = trusted and getattr(layer, "lazy_checksums", False)
    sums = {} if lazy else state.checksums()
    left_out = state.left_out
    for name, c in layer.from_checksums.items():
        if name in left_out:
            if name in sums and sums[name] != c:  # claims against claims
                raise DeltaError(
                    f"{layer.name}: starts from {name} checksum {_digest.fmt(c)}, the "
                    f"previous blob claimed {_digest.fmt(sums[name])} ({name} is filtered out)"
                )
            continue
        if sums.get(name, (0, 0)) != c:
            raise DeltaError(
                f"{layer.name}: starts from {name} checksum {_digest.fmt(c)}, "
                f"the state has {_digest.fmt(sums.get(name, (0, 0)))}"
            )
    if isinstance(state, LayeredState):
        old_overlays, layers = state._overlays, state.layers
    else:
        old_overlays, layers = {}, ()
    # a commit appended to a Log layer (overlay._Commit) reads from that layer, which the
    # state may already end with: then the new state holds the same layers
    shared = getattr(layer, "layer", None)
    if shared is None:
        li, new_layers = len(layers), (*layers, layer)
    elif layers and layers[-1] is shared:
        li, new_layers = len(layers) - 1, layers
    else:
        li, new_layers = len(layers), (*layers, shared)
    first_row = getattr(layer, "first_row", None)
    overlays = dict(old_overlays)
    changes: dict[str, Changes] = {}
    touched: dict[str, list[int]] = {}  # per type, the ordinals this layer changed
    # a commit names the types it changed (most change one): the schema's others are
    # not asked about one by one
    names = getattr(layer, "type_names", None)
    types = base.schema.types
    tdefs: Iterable[TypeDef] = base.schema if names is None else (
        [types[names[0]]] if len(names) == 1 and names[0] in types
        else [t for t in base.schema if t.name in names])  # fmt: skip
    for tdef in tdefs:
        name = tdef.name
        if tdef.key is None:
            continue
        removed = layer.removed.get(name, ())
        n_up = layer.upserted(name)
        if not removed and not n_up:
            continue
        base_ts = base[name]
        old = old_overlays.get(name)
        ov = old.copy() if old is not None else _Overlay(len(base_ts))
        cur = state[name]
        digest_at = cur.digest if not lazy else None
        lookup = base_ts._lookup
        c = sums.get(name, (0, 0))
        ch = Changes()
        hit = touched[name] = []
        for key in removed:
            o = cur.ordinal_of(key)
            if o < 0:
                raise DeltaError(f"{layer.name}: removes {name} {key!r}, which is not there")
            hit.append(o)
            if digest_at is not None:
                c = _digest.sub(c, digest_at(o))
            ov.own_keys()
            ov.entries.pop(o, None)
            if o < ov.next_ord and ov.added.get(key) == o:
                del ov.added[key]
            else:
                ov.removed.add(o)
            ov.live -= 1
            ch.removed.append(key)
        if n_up:
            lts = layer.state[name]
            ldig = lts._digests
            key_at = lts._key_at
            lo0 = 0 if first_row is None else first_row(name)
            for lo in range(lo0, lo0 + n_up):
                key = key_at(lo)
                o = ov.added.get(key)
                if o is None:
                    bo = lookup(key)
                    if bo >= 0:
                        o = bo
                if o is not None and o not in ov.removed:
                    if digest_at is not None:
                        c = _digest.sub(c, digest_at(o))
                    ch.modified.append(key)
                else:
                    ov.own_keys()
                    if o is None:
                        o = ov.next_ord
                        ov.next_ord += 1
                        ov.added[key] = o
                    else:
                        ov.removed.discard(o)
                    ov.live += 1
                    ch.added.append(key)
                ov.entries[o] = (li, lo)
                hit.append(o)
                if not lazy:
                    d = int(ldig[lo]) if ldig is not None else lts.digest(lo)
                    c = (c[0] + 1, (c[1] + d) & ((1 << 64) - 1))
        if lazy:
            overlays[name] = ov
            changes[name] = ch
            continue
        want = layer.checksums.get(name)
        if want is not None and want != c:
            raise DeltaError(
                f"{layer.name}: {name} checksum after applying is {_digest.fmt(c)}, "
                f"the delta claims {_digest.fmt(want)}"
            )
        sums[name] = c
        overlays[name] = ov
        changes[name] = ch
    for name in left_out:  # carried, not verified (see above)
        claim = layer.checksums.get(name)
        if claim is not None:
            sums[name] = claim
    if not lazy and layer.version == base.version and sums == base.checksums():
        return base, changes  # back where the snapshot stands: no overlay needed
    was_layered = isinstance(state, LayeredState)
    if layer.tags or not was_layered:
        tags = dict(base.tags)
        tags.update(layer.tags)
    else:  # a Log commit tags nothing: the same tags (no one writes a state's tags)
        tags = state.tags
    if lazy:
        carried = state._left_out_checksums() if was_layered else {
            n: c for n, c in state.checksums().items() if n in left_out}  # fmt: skip
    new = LayeredState(
        base, new_layers, overlays, version=layer.version,
        checksums=None if lazy else sums, tags=tags,
        reuse=state if was_layered else None, changed=changes,
        carried=carried if lazy else None,
    )  # fmt: skip
    if was_layered:
        _carry_indexes(state, new, touched)
    return new, changes


def _carry_indexes(old: LayeredState, new: LayeredState, touched: dict[str, list[int]]) -> None:
    """Hand the overlay indexes the last version built to the new one, updated for the
    ordinals this layer changed: a find() after a delta costs what the change costs, not
    a rebuild over the whole overlay. An index on a reference into a type this layer
    changed is not handed on: a record it did not touch reads another value when its
    target appears or goes (a key where there was a dangling None), so it is rebuilt."""
    changed: set[str] | None = None
    for name in new._layered:  # the others have no overlay, so no overlay index
        nts = new._types[name]
        ots = old._types.get(name)
        if not isinstance(ots, LayeredTypeState):
            continue
        if not ots._ov_indexes or ots._base is not nts._base:
            continue
        if changed is None:
            changed = {n for n, h in touched.items() if h}
        hit = touched.get(name)
        ftypes = {f.name: f.type for f in nts.typedef.fields}
        for fields, idx in list(ots._ov_indexes.items()):
            if any(_ref_targets(ftypes[f]) & changed for f in fields):
                continue  # its records' references may read otherwise now: rebuilt on use
            if not hit:
                nts._ov_indexes[fields] = idx  # the overlay did not change here
                continue
            gone = _index_entries(ots, fields, sorted(o for o in set(hit) if o in ots._ov.entries))
            come = _index_entries(nts, fields, sorted(o for o in set(hit) if o in nts._ov.entries))
            nts._ov_indexes[fields] = idx.updated(gone, come)


class LayeredTypeState:
    """The records of one type in a layered version: the snapshot's, overridden by the
    overlay. Same reading API as :class:`TypeState`."""

    def __init__(self, state: LayeredState, base: TypeState, ov: _Overlay):
        self.name = base.name
        self.typedef = base.typedef
        self._state = state
        self._base = base
        self._ov = ov
        self._ov_indexes: dict[tuple[str, ...], HashIndex] = {}
        # nothing here walks the layers: a consumer that has followed hundreds of
        # versions (a delta layer each) and lays Log entries over them makes one of these
        # per commit. A record in a layer is read through the layers tuple by its entry.
        layers = state.layers
        name = self.name
        entries = ov.entries
        sh = type_shape(self.typedef)
        ftypes, cls = sh.ftypes, sh.view

        def column(fname: str) -> Column:
            ft = ftypes[fname]
            bget = base._columns[fname].get

            def lget(e: tuple[int, int]) -> Any:
                return layers[e[0]].state._types[name]._columns[fname].get(e[1])

            if _ref_fields(ft):
                bget = _rebind_base(ft, bget, state)
                lget = _rebind_keys(ft, lget, state)
            return Column(fname, ft, _composite(entries, self._flat_entries(), bget, lget), 0)

        columns = LazyMap.over(sh.names, sh.name_set, column)
        self._columns = columns
        self._cls = cls
        self.view = cls
        bdig = base.digest

        def digest(o: int) -> int:
            e = entries.get(o)
            if e is None:
                return bdig(o)
            return layers[e[0]].state._types[name].digest(e[1])

        self.digest = digest
        lookup = base._lookup
        assert lookup is not None
        rpages, aget = ov.removed.pages, ov.added.get

        def paged_ordinal_of(k: Any) -> int:
            # a key the snapshot has is never in ``added`` (it keeps its snapshot ordinal,
            # even removed and written again): the snapshot's probe first, then the keys
            # the overlay added
            o = lookup(k)
            if o >= 0:
                r = rpages.get(o >> PAGE_SHIFT)
                return -1 if r is not None and o in r else o
            o = aget(k)
            return -1 if o is None else o

        # records replaced only (no key added or removed): the snapshot's own probe
        ordinal_of = paged_ordinal_of if ov.added.n or ov.removed.n else lookup

        self.ordinal_of = ordinal_of

        def get(k: Any, default: Any = None) -> Record | Any:
            o = ordinal_of(k)
            return default if o < 0 else cls(self, o)

        self.get = get

    def __getattr__(self, name: str) -> Any:
        if name == "_lock":  # guards the caches built on first use; made on first use too
            return self.__dict__.setdefault("_lock", threading.Lock())  # atomic: one wins
        # the key reader is made on first use (iterating keys, a record's key): making
        # the key column on every commit cost a reader a fifth of its work per commit
        if name != "_key_at":
            raise AttributeError(name)
        key = self.typedef.key
        assert key is not None
        kcols = [self._columns[k].get for k in key]
        k_at = kcols[0] if len(kcols) == 1 else (lambda o: tuple(g(o) for g in kcols))
        self.__dict__["_key_at"] = k_at
        return k_at

    def _flat_entries(self) -> dict[int, tuple[int, int]] | None:
        """The overlay's entries as one dict, where there are very few (made once per
        version, with its first column): a field read is then one dict lookup, as before
        the overlay was paged. None for more."""
        flat = self.__dict__.get("_flat")
        if flat is None and len(self._ov.entries) <= FLAT_ENTRIES:
            flat = self.__dict__["_flat"] = dict(self._ov.entries.items())
        return flat

    @property
    def nbytes(self) -> int:
        """Bytes of the snapshot's records of this type plus those of every layer."""
        n = self._base.nbytes
        for layer in self._state.layers:
            t = layer.state._types.get(self.name)
            if t is not None:
                n += t.nbytes
        return n

    def __len__(self) -> int:
        return self._ov.live

    def _live(self) -> Iterator[int]:
        rpages = self._ov.removed.pages
        n_base = len(self._base)
        page = 1 << PAGE_SHIFT
        for start in range(0, n_base, page):
            end = min(start + page, n_base)
            r = rpages.get(start >> PAGE_SHIFT)
            if not r:
                yield from range(start, end)
            else:
                yield from (o for o in range(start, end) if o not in r)
        entries = self._ov.entries
        for o in range(n_base, self._ov.next_ord):
            if o in entries:
                yield o

    def __iter__(self) -> Iterator[Record]:
        cls = self._cls
        for o in self._live():
            yield cls(self, o)

    def __getitem__(self, ordinal: int) -> Record:
        if not self._is_live(ordinal):
            raise IndexError(f"{self.name}: no record at ordinal {ordinal}")
        return self._cls(self, ordinal)

    def _is_live(self, o: int) -> bool:
        if 0 <= o < len(self._base):
            return o not in self._ov.removed
        return o in self._ov.entries

    def __contains__(self, key: Any) -> bool:
        return self.ordinal_of(key) >= 0

    def keys(self) -> Iterator[Any]:
        k = self._key_at
        for o in self._live():
            yield k(o)

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(self._columns)

    def field_nbytes(self) -> dict[str, int]:
        return self._base.field_nbytes()

    def column(self, name: str) -> Column:
        try:
            return self._columns[name]
        except KeyError:
            raise SchemaError(f"type {self.name!r} has no field {name!r}") from None

    def all_digests(self) -> np.ndarray:
        return np.fromiter((self.digest(o) for o in self._live()), np.uint64, len(self))

    # -- indexes: the snapshot's (built once, shared by every version) + the overlay's ---

    def find(self, **where: Any) -> list[Record]:
        if any(isinstance(v, Query) for v in where.values()):
            return self._find_queries(where)
        fields = tuple(where)
        base_idx = self._base.index(*fields)
        vals = [index_value(v) for v in where.values()]
        value = tuple(vals) if len(vals) > 1 else vals[0]
        entries, removed = self._ov.entries, self._ov.removed
        out = [
            int(o) for o in base_idx.ordinals(value) if o not in removed and int(o) not in entries
        ]
        extra = self._overlay_index(fields).ordinals(value)
        if len(extra):
            out.extend(int(o) for o in extra)
            out.sort()  # ordinal order, as a snapshot's find gives (two sorted runs: a merge)
        cls = self._cls
        return [cls(self, o) for o in out]

    def find_one(self, **where: Any) -> Record | None:
        found = self.find(**where)
        return found[0] if found else None

    def index(self, *fields: str) -> Any:
        """A combined index (``ordinals(value)``) over the snapshot and the overlay."""
        for f in fields:
            self.column(f)
        return _CombinedIndex(self, fields)

    def ordered(self, field: str) -> LayeredOrderedIndex:
        """The ordered index on ``field`` in this version: the snapshot's (built once,
        shared by every version) with the overlay's records placed in it once per
        version, at a cost in proportion to the overlay. Same API as ``TypeState``'s."""
        col = self.column(field)
        check_orderable(f"{self.name}.{field}", col.ftype)
        cache = self.__dict__.setdefault("_ordered", {})
        idx = cache.get(field)
        if idx is None:
            with self._lock:
                idx = cache.get(field)
                if idx is None:
                    idx = cache[field] = LayeredOrderedIndex(
                        self._base.ordered(field),
                        col.get,
                        self._base.column(field).get,
                        sorted(self._ov.entries),
                        self._hidden(),
                        self._records,
                    )
        return idx

    def _find_queries(self, where: dict[str, Any]) -> list[Record]:
        """``find`` with queries: the snapshot's answer without the records the overlay
        removed or replaced, plus the overlay's records that meet every condition."""
        base = match(self._base, where, index_value)
        base = base[~in_sorted(base, self._hidden())]
        preds = [
            predicate(self.column(f), v, index_value, f"{self.name}.{f}") for f, v in where.items()
        ]
        extra = [o for o in sorted(self._ov.entries) if all(p(o) for p in preds)]
        ords = np.sort(np.concatenate([base, np.array(extra, dtype=np.int64)]))
        return self._records(ords)

    def _hidden(self) -> np.ndarray:
        """The snapshot's ordinals this version removed or replaced, sorted."""
        h = self.__dict__.get("_hidden_ords")
        if h is None:
            n_base = len(self._base)
            hidden = self._ov.removed.union(o for o in self._ov.entries if o < n_base)
            h = self.__dict__["_hidden_ords"] = np.array(sorted(hidden), dtype=np.int64)
        return h

    def _records(self, ordinals: np.ndarray) -> list[Record]:
        cls = self._cls
        return [cls(self, o) for o in ordinals.tolist()]

    def _overlay_index(self, fields: tuple[str, ...]) -> HashIndex:
        idx = self._ov_indexes.get(fields)
        if idx is None:
            with self._lock:
                idx = self._ov_indexes.get(fields)
                if idx is None:
                    idx = self._ov_indexes[fields] = self._build_overlay_index(fields)
        return idx

    def _build_overlay_index(self, fields: tuple[str, ...]) -> HashIndex:
        return HashIndex(fields, _index_entries(self, fields, sorted(self._ov.entries)))


def _index_entries(ts: LayeredTypeState, fields: tuple[str, ...], ordinals: list[int]
                   ) -> list[tuple[int, Any]]:  # fmt: skip
    """``(ordinal, value)`` pairs a hash index on ``fields`` holds for these ordinals (a
    list or set field: one per distinct element; several fields: every combination)."""
    cols = [ts._columns[f] for f in fields]

    def hashable(ft: FieldType, v: Any) -> list[Any]:
        if ft.kind in ("list", "set"):
            return list(dict.fromkeys(index_value(x) for x in (v or ())))
        return [index_value(v)]

    out: list[tuple[int, Any]] = []
    for o in ordinals:
        per = [hashable(c.ftype, c.get(o)) for c in cols]
        if len(per) == 1:
            out.extend((o, v) for v in per[0])
        else:
            combos: list[tuple] = [()]
            for vs in per:
                combos = [(*t, v) for t in combos for v in vs]
            out.extend((o, combo) for combo in combos)
    return out


class TypeShape:
    """What every per-commit reading object of one type shares: field types by name, the
    field names as a tuple and a frozenset, each name's position, the datetime fields'
    positions, the key fields' positions, and the shared view class."""

    __slots__ = ("dt_fields", "ftypes", "index", "key_idx", "name_set", "names", "view")

    def __init__(self, tdef: TypeDef):
        self.ftypes = {f.name: f.type for f in tdef.fields}
        self.names = tuple(self.ftypes)
        self.name_set = frozenset(self.names)
        self.index = {n: i for i, n in enumerate(self.names)}
        self.dt_fields = tuple(i for i, f in enumerate(tdef.fields) if f.type.kind == "datetime")
        self.key_idx = tuple(self.index[k] for k in tdef.key) if tdef.key else ()
        self.view = shared_view_class(tdef.name, self.names)


_SHAPES: dict[int, tuple[TypeDef, TypeShape]] = {}


def type_shape(tdef: TypeDef) -> TypeShape:
    """The :class:`TypeShape` of ``tdef``, kept per TypeDef object (a reader makes a
    layered type and a layer's type per commit). Held with the TypeDef, so a freed one's
    id is never taken for another's."""
    hit = _SHAPES.get(id(tdef))
    if hit is not None and hit[0] is tdef:
        return hit[1]
    out = TypeShape(tdef)
    if len(_SHAPES) > 1024:
        _SHAPES.clear()
    _SHAPES[id(tdef)] = (tdef, out)
    return out


@functools.lru_cache(maxsize=256)
def shared_view_class(type_name: str, fields: tuple[str, ...]) -> type[Record]:
    """One view class per type and field list, shared by every layered version: its
    properties read ``self._ts._columns`` (a version makes no class of its own, so the
    versions it replaces are freed without the cycle collector)."""
    ns: dict[str, Any] = {"__slots__": ()}
    for name in fields:
        if name.isidentifier() and not hasattr(Record, name):
            ns[name] = property(lambda self, _n=name: self._ts._columns[_n].get(self._ord))
    return type(type_name.replace(".", "_"), (Record,), ns)


class _CombinedIndex:
    def __init__(self, ts: LayeredTypeState, fields: tuple[str, ...]):
        self._ts = ts
        self.fields = fields

    def ordinals(self, value: Any) -> np.ndarray:
        ts = self._ts
        base = ts._base.index(*self.fields).ordinals(value)
        entries, removed = ts._ov.entries, ts._ov.removed
        keep = [int(o) for o in base if int(o) not in removed and int(o) not in entries]
        keep.extend(int(o) for o in ts._overlay_index(self.fields).ordinals(value))
        keep.sort()
        return np.array(keep, dtype=np.int64)


# an overlay this small is also read as one dict (_flat_entries): making it is made per
# version, so it must cost next to nothing (at 1,024 it was most of a commit's cost)
FLAT_ENTRIES = 32


def _composite(entries: PagedMap, flat: dict[int, tuple[int, int]] | None, bget, lget):
    if flat is not None:
        eget = flat.get

        def get_flat(o: int):
            e = eget(o)
            if e is None:
                return bget(o)
            return lget(e)

        return get_flat
    epages = entries.pages  # read directly: a field read is one dict lookup more

    def get(o: int):
        d = epages.get(o >> PAGE_SHIFT)
        if d is None:
            return bget(o)
        e = d.get(o)
        if e is None:
            return bget(o)
        return lget(e)

    return get


def _rebind(ft: FieldType, get, resolve):
    """Wrap ``get`` so every reference it returns (alone or in a list, set or dict) goes
    through ``resolve(target type, value)``."""

    def conv(t: FieldType, v: Any) -> Any:
        if v is None:
            return None
        k = t.kind
        if k == "ref":
            assert t.target is not None
            return resolve(t.target, v)
        if k == "list":
            return [conv(t.item, x) for x in v]  # type: ignore[arg-type]
        if k == "set":
            return {conv(t.item, x) for x in v}  # type: ignore[arg-type]
        if k == "dict":
            return {a: conv(t.item, b) for a, b in v.items()}  # type: ignore[arg-type]
        return v

    return lambda o: conv(ft, get(o))


def _rebind_base(ft: FieldType, get, state: LayeredState):
    """Snapshot references point at snapshot views; re-point them at this version."""

    def resolve(target: str, rec: Record) -> Any:
        ts = state._types[target]
        if isinstance(ts, LayeredTypeState):
            return ts._cls(ts, rec._ord) if ts._is_live(rec._ord) else None
        return rec

    return _rebind(ft, get, resolve)


def _rebind_keys(ft: FieldType, get, state: LayeredState):
    """Delta references are stored as keys; resolve them in this version."""
    return _rebind(ft, get, lambda target, key: state._types[target].get(key))


#: One version as a reader holds it: a snapshot (:class:`ReadState`) or a snapshot with
#: deltas and Log entries laid over it (:class:`LayeredState`); both read the same way.
#: The one name for it in signatures, the apps' included (``nearstate.State``).
State = ReadState | LayeredState
