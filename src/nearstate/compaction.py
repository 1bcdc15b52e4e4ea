"""Compaction: the Producer folds the committed Log into the next version.

:func:`compact` reads the entries past the Log position the current version includes,
nets them per key (the last write wins) and runs an incremental cycle — cost in proportion
to the change — tagging the new version with the Log position it includes
(``log_position``). Consumers holding that version drop the entries it covers from their
overlay. The Log is then trimmed up to the position of the oldest version kept, so any
kept version can still be replayed forward. A :class:`Compactor` runs this on a timer.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import msgspec

from .errors import CycleError, NearstateError
from .ports import Log
from .producer import CycleResult, Producer
from .schema import Schema
from .versions import Catalog, read_record
from .write_state import WriteState
from .writer import LOG_POSITION, decode_entry, version_position

log = logging.getLogger("nearstate.compaction")


def compact(producer: Producer, log_: Log, *, trim: bool = True, snapshot: bool = False
            ) -> CycleResult:  # fmt: skip
    """Fold every entry committed so far into one new version (none if the entries change
    nothing). Returns the cycle's result; raises CycleError if the cycle fails (the Log
    keeps everything, so the next compaction retries)."""
    prior = producer.state
    after = version_position(prior)
    head = log_.head()
    if head <= after:
        return CycleResult(None, producer.version, {}, False, {})
    sj = log_.schema()
    log_schema = Schema.from_json(msgspec.json.decode(sj)) if sj is not None else None
    net: dict[str, dict[Any, dict[str, Any] | None]] = {}
    pos = after
    while pos < head:
        rows = log_.read(pos, 10_000)
        if not rows:
            break
        for p, body in rows:
            if p > head:
                break
            for type_name, key, rec in decode_entry(p, body, log_schema).mutations:
                net.setdefault(type_name, {})[key] = rec
            pos = p
    tags = {LOG_POSITION: str(pos)}
    if prior is None or (
        log_schema is not None and any(t.name not in prior.stored_schema for t in log_schema)
    ):
        try:
            full = _full(prior, net, log_schema)
        except NearstateError as e:
            raise CycleError(f"the log's records do not form a state: {e}",
                             stage="populate") from e  # fmt: skip
        result = producer.run_cycle(full, snapshot=True, tags=tags)
    else:

        def mutate(inc: Any) -> None:
            for type_name, changes in net.items():
                for key, rec in changes.items():
                    if rec is None:
                        inc.delete(type_name, key)
                    else:
                        inc.upsert(type_name, rec)

        result = producer.run_incremental(mutate, snapshot=snapshot, tags=tags)
    if trim and result.version is not None:
        trim_log(producer, log_)
    return result


def _full(prior: Any, net: dict[str, dict[Any, Any]], log_schema: Schema | None) -> WriteState:
    """Every record of the next version (when the Log brought new types: a snapshot)."""
    schema = log_schema if prior is None else prior.stored_schema.extended(log_schema)
    assert schema is not None
    ws = WriteState(schema)
    if prior is not None:
        for name in prior:
            ts = prior[name]
            if ts.typedef.key is None:
                continue
            changed = net.get(name, {})
            ws.add_many(name, [r.to_dict() for r in ts if r.key not in changed])
    for name, changes in net.items():
        ups = [rec for rec in changes.values() if rec is not None]
        if ups:
            ws.add_many(name, ups)
    return ws


def trim_log(producer: Producer, log_: Log) -> int:
    """Trim the Log up to the position of the oldest version still kept."""
    cat = Catalog(producer.blobs)
    kept = sorted(cat.records | cat.snapshots)
    if not kept:
        return 0
    try:
        rec = read_record(producer.blobs, kept[0])
        upto = int(rec.get("tags", {}).get(LOG_POSITION, 0))
    except (NearstateError, ValueError, TypeError) as e:
        log.warning("not trimming the log: cannot read version %s (%s)", kept[0], e)
        return 0
    return log_.trim(upto) if upto > 0 else 0


class Compactor:
    """Runs :func:`compact` every ``interval`` seconds in a background thread (when at
    least ``min_entries`` are waiting). Failures are logged and kept in
    :attr:`last_error`; the next round retries."""

    def __init__(self, producer: Producer, log_: Log, *, interval: float = 1.0,
                 min_entries: int = 1):  # fmt: skip
        self.producer = producer
        self.log = log_
        self.interval = interval
        self.min_entries = min_entries
        self.last_error: str | None = None
        self.last_result: CycleResult | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> CycleResult | None:
        waiting = self.log.head() - version_position(self.producer.state)
        if waiting < self.min_entries:
            return None
        r = compact(self.producer, self.log)
        self.last_result = r
        return r

    def start(self) -> Compactor:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="nearstate-compactor",
                                            daemon=True)  # fmt: skip
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        t, self._thread = self._thread, None
        if t is not None:
            t.join(timeout=30)

    def __enter__(self) -> Compactor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.run_once()
                self.last_error = None
            except NearstateError as e:
                self.last_error = str(e)
                log.warning("compaction failed: %s", e)
            except Exception as e:
                self.last_error = repr(e)
                log.exception("compaction crashed")
