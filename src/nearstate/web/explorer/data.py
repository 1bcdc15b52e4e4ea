"""What the explorer reads, and nothing it could write with: :class:`Explorer` holds a
consumer of the dataset (never started: it is refreshed, at most once a second, when a page
asks) and answers the pages' questions — the state at a version, the versions kept, the
diff of two, a record's history, the Log's tail past the announced version and what the
backend knows of its consumers.

Contracts: read-only. It calls the ports' reading methods only (``BlobStore.get``/``list``,
``Announcer.latest``, ``Log.head``/``read``/``stats``); it never waits on the Log (a wait
would bind a wake-up socket in a local dataset's directory). Safe for many threads: the
consumer swaps immutable states, and the cache of older versions is guarded by a lock.
Bad input raises :class:`PageError` with the HTTP status to answer and a sentence saying
what was wrong.
"""

from __future__ import annotations

import datetime as _dt
import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import msgspec

from ...errors import NearstateError
from ...history import HistoryEntry, TypeDiff, diff_versions, record_history
from ...layered import State
from ...read_state import TypeState
from ...schema import FieldType, Schema, TypeDef
from ...versions import Catalog, read_record
from ...writer import LOG_POSITION, Entry, decode_entry

REFRESH_EVERY = 1.0  # seconds between two refreshes of the consumer
KEPT_VERSIONS = 4  # older versions kept loaded for the pages that show them


class PageError(Exception):
    """A request the explorer refuses: ``status`` (400 or 404) and what was wrong."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class VersionRow:
    version: int
    created: float | None
    snapshot: bool
    delta: bool
    reverse: bool
    changes: dict[str, dict[str, int]] | None
    announced: bool


@dataclass(frozen=True)
class Backlog:
    """The Log past the announced version: ``entries`` (newest first, at most ``limit``),
    ``total`` of them, the Log's ``head``, and the position the version includes."""

    entries: list[Entry]
    total: int
    head: int
    included: int
    stats: dict[str, Any] | None


class Explorer:
    """The read side of one dataset, for the explorer's pages."""

    def __init__(self, dataset: Any, *, refresh_every: float = REFRESH_EVERY):
        self.dataset = dataset
        self.consumer = dataset.consumer()
        self.refresh_every = refresh_every
        self._refreshed = -math.inf
        self._lock = threading.Lock()
        self._old: OrderedDict[int, State] = OrderedDict()
        self.last_error: str | None = None

    # -- states ------------------------------------------------------------------------

    def current(self) -> State:
        """What a reader sees now: the announced version with the Log's tail over it."""
        now = time.monotonic()
        if now - self._refreshed >= self.refresh_every:
            self._refreshed = now
            try:
                self.consumer.refresh()
                self.last_error = None
            except NearstateError as e:
                self.last_error = str(e)
        try:
            return self.consumer.state
        except NearstateError as e:
            raise PageError(404, f"The dataset has nothing to show: {e}") from None

    def state(self, version: str | None) -> State:
        """The current state (``version`` empty or None) or the kept version named."""
        if version in (None, ""):
            return self.current()
        v = self.version_number(version)
        with self._lock:
            s = self._old.get(v)
            if s is not None:
                self._old.move_to_end(v)
                return s
        try:
            s = self.dataset.load(v)
        except NearstateError as e:
            raise PageError(404, f"Version {v} cannot be read: {e}") from None
        with self._lock:
            self._old[v] = s
            while len(self._old) > KEPT_VERSIONS:
                self._old.popitem(last=False)
        return s

    def version_number(self, text: str) -> int:
        """A version named in a request: a kept one, else PageError 400 or 404."""
        try:
            v = int(text)
        except (TypeError, ValueError):
            raise PageError(400, f"{text!r} is not a version number.") from None
        kept = self.kept_versions()
        if v not in kept:
            have = ", ".join(map(str, kept[-8:])) or "none"
            raise PageError(404, f"There is no version {v} in this dataset (kept: {have}).")
        return v

    def kept_versions(self) -> list[int]:
        cat = Catalog(self.dataset.blobs)
        return sorted(cat.records | cat.snapshots)

    # -- versions, diffs, history --------------------------------------------------------

    def versions(self) -> list[VersionRow]:
        cat = Catalog(self.dataset.blobs)
        announced = self.dataset.latest_version()
        rows = []
        for v in sorted(cat.records | cat.snapshots, reverse=True):
            try:
                rec = read_record(self.dataset.blobs, v) if v in cat.records else {}
            except NearstateError:
                rec = {}
            rows.append(VersionRow(
                v, rec.get("created"), v in cat.snapshots, v in cat.deltas, v in cat.reverses,
                rec.get("changes"), v == announced,
            ))  # fmt: skip
        return rows

    def diff(self, v1: str, v2: str) -> dict[str, TypeDiff]:
        a, b = self.version_number(v1), self.version_number(v2)
        try:
            return diff_versions(self.dataset.blobs, a, b)
        except NearstateError as e:
            raise PageError(404, f"Versions {a} and {b} cannot be compared: {e}") from None

    def history(self, type_name: str, key: Any) -> list[HistoryEntry]:
        try:
            return record_history(self.dataset.blobs, type_name, key)
        except NearstateError as e:
            raise PageError(
                404, f"The history of {type_name} {key!r} cannot be read: {e}"
            ) from None

    # -- the Log and its readers ------------------------------------------------------------

    def backlog(self, limit: int = 50) -> Backlog:
        """The entries committed past the announced version (the tail compaction has not
        folded in yet), newest first."""
        log = self.dataset.log
        try:
            ann = self.dataset.announced() or {}
            included = int((ann.get("tags") or {}).get(LOG_POSITION, 0))
        except (NearstateError, ValueError, TypeError) as e:
            raise PageError(404, f"The announcement cannot be read: {e}") from None
        try:
            head = log.head()
            stats = log.stats() if hasattr(log, "stats") else None
            first = max(included, head - limit)
            rows = log.read(first, limit) if head > first else []
        except NearstateError as e:
            raise PageError(404, f"The Log cannot be read: {e}") from None
        schema = self._log_schema()
        entries = [decode_entry(p, b, schema) for p, b in rows]
        entries.reverse()
        return Backlog(entries, max(0, head - included), head, included, stats)

    def _log_schema(self) -> Schema | None:
        try:
            sj = self.dataset.log.schema()
        except NearstateError:
            return None
        return None if sj is None else Schema.from_json(msgspec.json.decode(sj))

    def readers(self) -> dict[str, Any]:
        """What is known of the dataset's readers: this explorer's own consumer always; on
        NATS, every consumer the server holds on the Log's stream (position, pending,
        last activity)."""
        c = self.consumer
        own = {
            "version": c.version,
            "announced": c.announced_version,
            "lag": c.lag,
            "position": c.position,
            "log_lag": _or_none(c.log_lag),
            "refreshed": c.last_refresh,
            "error": self.last_error or c.last_error,
        }
        out: dict[str, Any] = {"own": own, "server": None, "server_error": None}
        try:
            out["server"] = stream_readers(self.dataset.log)
        except Exception as e:  # a server's refusal or a lost connection, in words
            out["server_error"] = f"{type(e).__name__}: {e}"
        return out


def stream_readers(log: Any) -> list[dict[str, Any]] | None:
    """The readers a NATS server holds on the Log's stream (each handle that follows the
    Log has one): the position delivered to it, the entries still pending, and when it
    was last sent one; None for a Log that keeps no such list (a local dataset's)."""
    conn, names = getattr(log, "conn", None), getattr(log, "names", None)
    js = getattr(conn, "js", None)
    if js is None or names is None:
        return None

    async def infos() -> Any:
        return await js.consumers_info(names.log_stream)

    now = time.time()
    out = []
    for ci in conn.run(infos(), 10.0):  # type: ignore[union-attr]
        d = ci.delivered
        active = d.last_active.timestamp() if d is not None and d.last_active else None
        out.append({
            "name": ci.name,
            "position": d.stream_seq if d is not None else 0,
            "pending": int(ci.num_pending or 0),
            "active": active,
            "idle": None if active is None else max(0.0, now - active),
        })  # fmt: skip
    out.sort(key=lambda r: (r["position"], r["name"]))
    return out


def _or_none(fn: Any) -> Any:
    try:
        return fn()
    except NearstateError:
        return None


# -- reading what a request names -------------------------------------------------------------


def type_of(state: State, name: str) -> TypeState:
    if name not in state:
        known = ", ".join(sorted(state)) or "none"
        raise PageError(404, f"There is no type {name!r} in this version (types: {known}).")
    return state[name]  # type: ignore[no-any-return]


def field_type(td: TypeDef, name: str) -> FieldType:
    for f in td.fields:
        if f.name == name:
            return f.type
    raise PageError(400, f"{td.name} has no field {name!r} (fields: {', '.join(td.field_names)}).")


def parse_key(state: State, ts: TypeState, parts: list[str]) -> Any:
    """A primary key given as one text per key field, converted to the fields' types."""
    key = ts.typedef.key
    if key is None:
        raise PageError(400, f"{ts.name} has no primary key: its records are nested in others.")
    if len(parts) != len(key):
        raise PageError(400, f"{ts.name}'s key is ({', '.join(key)}): give {len(key)} "
                             f"value{'s' if len(key) > 1 else ''}, not {len(parts)}.")  # fmt: skip
    vals = [
        parse_value(state.schema, f"{ts.name}.{k}", ts.typedef.field(k).type, p)
        for k, p in zip(key, parts, strict=True)
    ]
    return vals[0] if len(vals) == 1 else tuple(vals)


def parse_value(schema: Schema, where: str, ft: FieldType, text: str) -> Any:
    """``text`` as a value of ``ft`` (of its element for lists and sets; of the target's
    key for references), else PageError 400 naming the field."""
    if ft.kind in ("list", "set") and ft.item is not None:
        return parse_value(schema, where, ft.item, text)
    kind = ft.kind
    try:
        if kind == "int":
            return int(text.strip())
        if kind == "float":
            v = float(text.strip())
            if not math.isfinite(v):
                raise ValueError("not a finite number")
            return v
        if kind == "bool":
            t = text.strip().lower()
            if t in ("true", "1", "yes"):
                return True
            if t in ("false", "0", "no"):
                return False
            raise ValueError("use true or false")
        if kind in ("str", "text"):
            return text
        if kind == "datetime":
            return _dt.datetime.fromisoformat(text.strip())
    except ValueError as e:
        raise PageError(400, f"{where} holds {kind} values; {text!r} is not one ({e}).") from None
    if kind == "ref" and ft.target is not None and ft.target in schema.types:
        target = schema[ft.target]
        if target.key is not None and len(target.key) == 1:
            kf = target.field(target.key[0])
            return parse_value(schema, f"{ft.target}.{kf.name}", kf.type, text)
    raise PageError(400, f"{where} ({ft.spec()}) cannot be searched by a typed value.")
