"""What changed between versions, and in which versions a record changed.

Both follow deltas where they can, so they cost in proportion to the changes; across a
version that has no delta (a new schema) they compare whole states by record digest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import DatasetError, NearstateError
from .layered import Changes, State, gather
from .ports import BlobStore
from .read_state import Record
from .versions import Catalog, load_version, read_record, walk


@dataclass
class TypeDiff:
    """Keys added and removed, and per changed key the fields that differ (old, new)."""

    added: list[Any] = field(default_factory=list)
    removed: list[Any] = field(default_factory=list)
    changed: dict[Any, dict[str, tuple[Any, Any]]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)


@dataclass(frozen=True)
class HistoryEntry:
    """One version in which a record changed."""

    version: int
    created: float | None
    change: str  # "added", "modified" or "removed"
    fields: dict[str, tuple[Any, Any]]  # field -> (before, after); all fields when added


def field_changes(before: Record | None, after: Record | None) -> dict[str, tuple[Any, Any]]:
    """The fields whose values differ between two versions of a record."""
    a = before.to_dict() if before is not None else {}
    b = after.to_dict() if after is not None else {}
    out = {}
    for name in dict.fromkeys([*a, *b]):
        va, vb = a.get(name), b.get(name)
        if va != vb or type(va) is not type(vb):
            out[name] = (va, vb)
    return out


def diff_states(
    old: State, new: State, candidates: dict[str, Changes] | None = None
) -> dict[str, TypeDiff]:
    """Per keyed type, what ``new`` adds, removes and changes relative to ``old``.

    ``candidates`` (the keys deltas reported changed) limits the work to those keys;
    without it every key of both states is compared by digest.
    """
    out: dict[str, TypeDiff] = {}
    names = [n for n in dict.fromkeys([*old, *new]) if _keyed(old, n) or _keyed(new, n)]
    for name in names:
        a, b = _type(old, name), _type(new, name)
        td = TypeDiff()
        if candidates is not None:
            ch = candidates.get(name)
            keys = [] if ch is None else list(dict.fromkeys([*ch.added, *ch.modified, *ch.removed]))
        else:
            keys = list(dict.fromkeys([*(a.keys() if a else ()), *(b.keys() if b else ())]))
        for k in keys:
            ra = a.get(k) if a is not None else None
            rb = b.get(k) if b is not None else None
            if ra is None and rb is None:
                continue
            if ra is None:
                td.added.append(k)
            elif rb is None:
                td.removed.append(k)
            elif candidates is None and a.digest(ra.ordinal) == b.digest(rb.ordinal):  # type: ignore[union-attr]
                continue
            else:
                fc = field_changes(ra, rb)
                if fc:
                    td.changed[k] = fc
        if td:
            out[name] = td
    return out


def _type(state: State, name: str) -> Any:
    return state[name] if name in state else None  # noqa: SIM401 (a state has no .get)


def _keyed(state: State, name: str) -> bool:
    return name in state and state[name].typedef.key is not None


def diff_versions(blobs: BlobStore, v1: int, v2: int) -> dict[str, TypeDiff]:
    """What changed from version ``v1`` to ``v2`` (either order)."""
    s1 = load_version(blobs, v1)
    merged: dict[str, Changes] = {}

    try:
        s2 = walk(blobs, s1, v2, on_step=gather(merged))
        return diff_states(s1, s2, merged)
    except NearstateError:
        s2 = load_version(blobs, v2)  # no delta chain between them: compare everything
        return diff_states(s1, s2)


def record_history(blobs: BlobStore, type_name: str, key: Any) -> list[HistoryEntry]:
    """Every kept version in which the record ``key`` of ``type_name`` changed."""
    cat = Catalog(blobs)
    if not cat.snapshots:
        raise DatasetError("the dataset holds no versions")
    latest = max(cat.records | cat.snapshots)
    first = min(cat.snapshots)
    state: State = load_version(blobs, first, catalog=cat)
    out: list[HistoryEntry] = []

    def created(v: int) -> float | None:
        try:
            return read_record(blobs, v).get("created")
        except NearstateError:
            return None

    if type_name not in state:
        raise DatasetError(f"no type {type_name!r} in the dataset")
    rec = state[type_name].get(key)
    if rec is not None:
        out.append(HistoryEntry(first, created(first), "added", field_changes(None, rec)))
    v = first
    while v < latest:
        prev = state
        try:
            state = walk(blobs, state, v + 1)
            ch = _changed_in(prev, state, type_name, key)
        except NearstateError:
            state = load_version(blobs, v + 1, catalog=cat)
            ch = _changed_in(prev, state, type_name, key)
        v += 1
        if ch is not None:
            out.append(HistoryEntry(v, created(v), *ch))
    return out


def _changed_in(
    prev: State, new: State, type_name: str, key: Any
) -> tuple[str, dict[str, tuple[Any, Any]]] | None:
    a = prev[type_name].get(key) if type_name in prev else None
    b = new[type_name].get(key) if type_name in new else None
    if a is None and b is None:
        return None
    if a is None:
        return "added", field_changes(None, b)
    if b is None:
        return "removed", field_changes(a, None)
    if a.to_dict() == b.to_dict():
        return None
    return "modified", field_changes(a, b)
