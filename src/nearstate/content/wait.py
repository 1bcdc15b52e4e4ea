"""Waiting for a save to become visible: the one wait the editor's preview and the
benchmarks share.

A save is visible in a process once (1) the ingestor has processed the revision — its
status in the CMS is no longer ``pending`` (:meth:`CMS.ingest_status
<nearstate.content.cms.ingestion.Ingestion.ingest_status>`) — and (2) that process's
consumer holds the commit the ingestor recorded (``token``: read-your-writes).
:func:`wait_visible` waits for both within one timeout and says which step it got to.

An ingestion worker in the same process wakes the wait at once through an
:class:`Ingested` hook (``IngestWorker(..., on_event=ingested)``); a worker elsewhere is
seen by re-reading the status every ``poll`` seconds.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import NearstateError
from .cms import CMS
from .outbox import Event

Key = tuple[str, str, "int | None"]  # an event's (kind, subject, revision)


class Ingested:
    """An ingestion worker's ``on_event`` hook: counts the events it processed and keeps
    when each ``(kind, subject, revision)`` finished (``time.perf_counter()``), waking
    whoever waits for either; failures are kept in ``failures`` (their first 1,000).
    ``keep``: how many finish times are kept, the newest (None: all, for a benchmark that
    reads them afterwards); a long-running editor keeps the default."""

    def __init__(self, *, keep: int | None = 10_000) -> None:
        self.keep = keep
        self.count = 0
        self.at: dict[Key, float] = {}
        self.failures: list[str] = []
        self._cond = threading.Condition()

    def __call__(self, ev: Event, out: Any, error: BaseException | None) -> None:
        now = time.perf_counter()
        with self._cond:
            self.count += 1
            if error is not None:
                if len(self.failures) < 1000:
                    self.failures.append(f"{ev.kind} {ev.subject}: {error}")
            else:
                # the event's revision, and the newest one processing it read (which may
                # have covered the story's other pending events: outbox.complete_covered)
                read = getattr(out, "revision", None)
                for rev in {ev.revision} if read is None else {ev.revision, read}:
                    key = (ev.kind, ev.subject, rev)
                    self.at.pop(key, None)  # moved to the newest end
                    self.at[key] = now
                    if self.keep is not None and len(self.at) > self.keep:
                        del self.at[next(iter(self.at))]
            self._cond.notify_all()

    def wait_any(self, seen: int, timeout: float) -> int:
        """Until an event has been processed since the count was ``seen`` (a value this
        returned before, or -1 for "now"), at most ``timeout`` seconds; the new count."""
        with self._cond:
            self._cond.wait_for(lambda: seen >= 0 and self.count != seen, max(0.0, timeout))
            return self.count

    def finished_at(self, key: Key, timeout: float) -> float | None:
        """When the event ``key`` finished (``perf_counter`` time), waiting for it up to
        ``timeout`` seconds; None if it did not finish by then. A revision counts as
        finished once it or a later revision of the same subject was processed: an event
        covered by another one's processing is marked done without an ``on_event`` of
        its own."""
        with self._cond:
            self._cond.wait_for(lambda: self._when(key) is not None, max(0.0, timeout))
            return self._when(key)

    def _when(self, key: Key) -> float | None:
        if key in self.at or key[2] is None:
            return self.at.get(key)
        kind, subject, rev = key
        later = [t for (k, s, r), t in self.at.items()
                 if k == kind and s == subject and r is not None and r >= rev]  # fmt: skip
        return min(later) if later else None


@dataclass
class Visible:
    """How far a revision got. ``step``: ``"visible"`` (``state`` holds the save),
    ``"pending"`` (not ingested in time), ``"behind"`` (ingested, but the consumer did not
    reach its commit in time), or the revision's final ingestion status when it will never
    be visible: ``"invalid"``, ``"superseded"`` or ``"failed"`` (``errors`` say why)."""

    step: str
    revision: int
    errors: list[dict[str, Any]] = field(default_factory=list)
    token: int | None = None
    state: Any = None
    seconds: float = 0.0  # how long the wait took


def wait_visible(
    cms: CMS,
    consumer: Any,
    story_id: int,
    revision: int | None,
    timeout: float,
    *,
    ingested: Ingested | None = None,
    poll: float = 0.05,
) -> Visible:
    """Wait up to ``timeout`` seconds for revision ``revision`` of story ``story_id`` (the
    newest when None) to be ingested and then held by ``consumer`` (a
    :class:`~nearstate.Consumer`). Never raises for time running out: the answer's
    ``step`` says how far it got. NotFound for a story or revision that does not exist."""
    t0 = time.monotonic()
    deadline = t0 + max(0.0, timeout)
    seen = ingested.wait_any(-1, 0) if ingested is not None else 0
    st = cms.ingest_status(story_id, revision)
    while st["status"] == "pending" and time.monotonic() < deadline:
        step = min(poll, max(0.0, deadline - time.monotonic()))
        if ingested is not None:
            seen = ingested.wait_any(seen, step)
        else:
            time.sleep(step)
        st = cms.ingest_status(story_id, st["revision"])

    def answer(step: str, state: Any = None) -> Visible:
        return Visible(step, int(st["revision"]), list(st["errors"]), st["token"], state,
                       time.monotonic() - t0)  # fmt: skip

    if st["status"] != "ok":
        return answer(st["status"])
    left = max(0.1, deadline - time.monotonic())  # a moment for the consumer, even at 0
    try:
        if st["token"] is not None:
            state = consumer.wait_for(int(st["token"]), left)
        else:  # the save changed no record: what the consumer holds after a sync shows it
            state = consumer.sync(left)
    except NearstateError:  # ReadTimeout, or the Log could not be read
        return answer("behind")
    return answer("visible", state)
