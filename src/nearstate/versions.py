"""Where the versions of a dataset live in a BlobStore, and how to reach one.

Names::

    snapshots/<v>.blob           the whole state of version v
    deltas/<v-1>-<v>.blob        from v-1 to v
    reverse/<v>-<v-1>.blob       from v back to v-1
    versions/<v>.json            what version v is: its blobs, checksums, counts, changes

(``<v>`` is the version zero-padded to 20 digits, so names sort in version order.)
Versions are numbered 1, 2, 3 …; each delta goes from one version to the next.
"""

from __future__ import annotations

import json
import mmap
from collections.abc import Callable, Collection, Iterable
from typing import Any

from .blob import parse_blob
from .delta import DeltaLayer
from .errors import BlobError, BlobNotFound, DatasetError, NearstateError
from .layered import Changes, LayeredState, apply_delta
from .ports import BlobStore
from .read_state import ReadState, narrow_blob, read_buffer
from .schema import Schema


def snapshot_name(v: int) -> str:
    return f"snapshots/{v:020d}.blob"


def delta_name(v: int) -> str:
    """The delta that produces version ``v`` (from ``v - 1``)."""
    return f"deltas/{v - 1:020d}-{v:020d}.blob"


def reverse_name(v: int) -> str:
    """The reverse delta from version ``v`` back to ``v - 1``."""
    return f"reverse/{v:020d}-{v - 1:020d}.blob"


def record_name(v: int) -> str:
    return f"versions/{v:020d}.json"


def _versions(names: Iterable[str], *, second: bool = False) -> set[int]:
    out = set()
    for n in names:
        stem = n.rsplit("/", 1)[-1].split(".", 1)[0]
        parts = stem.split("-")
        try:
            out.add(int(parts[1] if second and len(parts) > 1 else parts[0]))
        except ValueError:
            continue
    return out


class Catalog:
    """What a blob store holds: snapshot versions, delta targets, reverse-delta origins."""

    def __init__(self, blobs: BlobStore):
        names = blobs.list()  # one listing (over a network store, one request)

        def under(prefix: str) -> list[str]:
            return [n for n in names if n.startswith(prefix)]

        self.snapshots = _versions(under("snapshots/"))
        self.deltas = _versions(under("deltas/"), second=True)  # versions reachable
        self.reverses = _versions(under("reverse/"))  # versions one can step back from
        self.records = _versions(under("versions/"))

    def route(self, target: int) -> int | None:
        """The newest snapshot from which deltas reach ``target``, or None."""
        v = target
        while True:
            if v in self.snapshots:
                return v
            if v not in self.deltas:
                return None
            v -= 1


def read_record(blobs: BlobStore, v: int) -> dict[str, Any]:
    name = record_name(v)
    try:
        return json.loads(bytes(blobs.get(name)))
    except ValueError as e:
        raise DatasetError(f"{name}: not a version record ({e})") from e


def open_snapshot(
    blobs: BlobStore,
    v: int,
    *,
    verify: bool = True,
    schema: Schema | None = None,
    types: Iterable[str] | None = None,
) -> ReadState:
    """The snapshot of version ``v`` (``types``: of those types only; the others'
    sections are never read, see :func:`nearstate.read_state.read_buffer`)."""
    name = snapshot_name(v)
    state = read_buffer(blobs.get(name), source=name, verify=verify, schema=schema, types=types)
    if state.version != v:
        raise DatasetError(f"{name} holds version {state.version}, not {v}")
    return state


def open_layer(
    blobs: BlobStore,
    name: str,
    *,
    verify: bool = True,
    schema: Schema | None = None,
    types: Collection[str] | None = None,
) -> DeltaLayer:
    """The delta ``name``, opened for applying. ``types``: only their upserts and removed
    keys are opened (and checked with ``verify``); the other types' sections are never
    read, and copied out of a buffer that is not a mapped file, so it can be freed."""
    buf = blobs.get(name)
    if types is None:
        return DeltaLayer(parse_blob(buf, verify=verify, source=name), name, schema)
    blob = parse_blob(buf, verify=False, source=name)
    blob = narrow_blob(blob, types, verify=verify, copy=not isinstance(buf, mmap.mmap))
    return DeltaLayer(blob, name, schema)


def _open_step(
    blobs: BlobStore, name: str, state: Any, *, verify: bool, schema: Schema | None
) -> DeltaLayer:
    """The delta ``name`` opened for ``state``: a filtered state (``types=...``) reads it
    with its own schema, cut to the types it loads."""
    if state.type_filter is None:
        return open_layer(blobs, name, verify=verify, schema=schema)
    return open_layer(blobs, name, verify=verify, schema=state.schema, types=state.schema.types)


Step = Callable[[Any, dict[str, Changes] | None], None]


def load_version(
    blobs: BlobStore,
    target: int,
    *,
    verify: bool = True,
    schema: Schema | None = None,
    catalog: Catalog | None = None,
    types: Iterable[str] | None = None,
) -> ReadState | LayeredState:
    """Version ``target``: its snapshot, or the newest snapshot before it plus deltas.
    ``types``: of those types only (see :func:`nearstate.layered.apply_delta`)."""
    cat = catalog or Catalog(blobs)
    start = cat.route(target)
    if start is None:
        raise DatasetError(
            f"version {target} cannot be loaded: no snapshot at or before it is linked "
            f"to it by deltas (snapshots: {sorted(cat.snapshots)[-5:] or 'none'})"
        )
    state: ReadState | LayeredState = open_snapshot(
        blobs, start, verify=verify, schema=schema, types=types
    )
    for v in range(start + 1, target + 1):
        layer = _open_step(blobs, delta_name(v), state, verify=verify, schema=schema)
        state, _ = apply_delta(state, layer)
    return state


def walk(
    blobs: BlobStore,
    state: ReadState | LayeredState,
    target: int,
    *,
    verify: bool = True,
    on_step: Step | None = None,
    schema: Schema | None = None,
) -> ReadState | LayeredState:
    """From ``state`` to ``target`` by deltas (forward) or reverse deltas (backward).

    Raises the first error met (a missing or bad blob, a delta that does not apply) with
    the blob's name in the message; ``state`` itself is never changed. A filtered state
    (``types=...``) stays filtered: each delta is opened for its types only.
    """
    v = state.version
    while v != target:
        name = delta_name(v + 1) if target > v else reverse_name(v)
        layer = _open_step(blobs, name, state, verify=verify, schema=schema)
        state, changes = apply_delta(state, layer)
        if on_step is not None:
            on_step(state, changes)
        v = state.version
    return state


def announced_version(ann: Any) -> int:
    """The version an announcement names; DatasetError if it is malformed."""
    v = ann.get("version") if isinstance(ann, dict) else None
    if type(v) is not int or v < 1:
        raise DatasetError(f"malformed announcement {str(ann)[:80]!r}: no positive integer "
                           "'version'")  # fmt: skip
    return v


def net_changes(old: Any, new: Any, touched: dict[str, Changes]) -> dict[str, Changes]:
    """The net change from ``old`` to ``new`` among the keys some step ``touched``
    (a key added then removed is no change; one changed and changed back neither)."""
    out: dict[str, Changes] = {}
    for name, ch in touched.items():
        a = old[name] if name in old else None  # noqa: SIM401 (a state has no .get)
        b = new[name] if name in new else None  # noqa: SIM401
        net = Changes()
        for k in dict.fromkeys([*ch.added, *ch.modified, *ch.removed]):
            oa = a.ordinal_of(k) if a is not None else -1
            ob = b.ordinal_of(k) if b is not None else -1
            if oa < 0 and ob >= 0:
                net.added.append(k)
            elif oa >= 0 and ob < 0:
                net.removed.append(k)
            elif oa >= 0 and ob >= 0 and a.digest(oa) != b.digest(ob):  # type: ignore[union-attr]
                net.modified.append(k)
        if net:
            out[name] = net
    return out


def describe(e: BaseException) -> str:
    if isinstance(e, BlobNotFound):
        return f"missing blob {e.name}"
    notes = "".join(f"; {n}" for n in getattr(e, "__notes__", ()))
    if isinstance(e, (BlobError, NearstateError)):
        return str(e) + notes
    return f"{type(e).__name__}: {e}{notes}"
