"""The ingestion pipeline: outbox events in, render-ready records out.

For each event the :class:`Ingestor` re-reads the content from the write store (never the
event's copy: an event only says *what* changed), applies the templates and business rules
(slug, excerpt, reading time, card and hero variants, layout rows), validates references,
resolves them into render-ready form (asset id → URL per size, title id → a title card,
person id → a name) and writes the records for that change through the
:class:`~nearstate.Writer` in one transaction. The resulting token is recorded against the
revision (``story_revisions.token``), so a preview can wait for exactly that save.

Idempotent and safe with several workers: a story's records are written on the condition
that nobody changed them since they were read (``expect_token`` / ``expect_absent``), so a
worker holding an older view of a story never overwrites a newer one; it loses the race,
reads again and writes the newest. An event processed twice writes the same records again.

The :class:`IngestWorker` claims events (at least once, with a lease), runs the due
schedules, retries transient failures with backoff and moves events that keep failing to
the dead-letter list (see :mod:`nearstate.content.outbox`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConflictError, InputError, LogError, NearstateError
from ..writer import Token, Writer
from . import outbox
from .cms import CMS, known
from .db import StoreError, Tx, WriteStore, wait_notify
from .media import MediaConfig
from .outbox import Event
from .resolve import layout_rows, person_records, story_record, title_records, when
from .rules import Problem, check_references

log = logging.getLogger(__name__)

_RACES = 10  # conditional-write races one event may lose before it fails (and retries)
WRITE_BATCH = 500  # records per Writer transaction for bulk events (titles, people)
_CRASH_ENV = "NEARSTATE_INGEST_CRASH_AT"  # fault tests: die at a named step


class PermanentFailure(NearstateError):
    """An event that can never succeed (an unknown kind, a malformed payload)."""


def _crash_point(step: str) -> None:
    """Fault injection for the crash tests: exit at once at ``step`` when asked to."""
    if os.environ.get(_CRASH_ENV) == step:
        os._exit(75)


@dataclass
class Outcome:
    """What processing one event did."""

    token: Token | None = None
    records: int = 0
    revision: int | None = None  # a story's: the newest revision read (it covers older ones)
    problems: list[Problem] = field(default_factory=list)
    follow_up: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)


class Ingestor:
    """Turns one event into render-ready records. ``writer`` commits to the dataset;
    ``media`` builds asset URLs. What it reads of the content and the status it records
    go through the CMS (:mod:`nearstate.content.cms.ingestion`); the records are built by
    :mod:`nearstate.content.resolve`."""

    def __init__(self, store: WriteStore, writer: Writer, media: MediaConfig):
        self.store = store
        self.writer = writer
        self.media = media
        self.cms = CMS(store)

    def process(self, event: Event) -> Outcome:
        """Process ``event`` and mark it done in the write store (with the token recorded
        against its revision). Raises on failure, leaving the event to be retried."""
        handler = {
            "story": self._story,
            "layout": self._layout,
            "layouts": self._layouts,
            "titles": self._titles,
            "people": self._people,
        }.get(event.kind)
        if handler is None:
            raise PermanentFailure(f"event {event.id}: unknown kind {event.kind!r}")
        for attempt in range(_RACES):
            try:
                return handler(event)
            except ConflictError:
                # another worker wrote these records since this one read them: read again,
                # after a moment that grows, so two workers racing on one story part ways
                if attempt == _RACES - 1:
                    raise
                time.sleep(random.uniform(0, 0.002 * (attempt + 1)))
        raise AssertionError("unreachable")

    # -- stories ---------------------------------------------------------------------------

    def _story(self, ev: Event) -> Outcome:
        try:
            sid = int(ev.subject)
        except ValueError:
            raise PermanentFailure(f"event {ev.id}: story id {ev.subject!r}") from None
        out = Outcome()
        # the records' tokens before the content is read: a write by another worker after
        # this point makes the conditional write below fail (and this one read again), so
        # content read earlier never overwrites content read later
        t_draft = self.writer.token_of("DraftStory", sid)
        t_live = self.writer.token_of("Story", sid)
        with self.store.transaction(write=False) as tx:
            # the story's other pending events, read before the story: their changes are
            # in what is read next, so this event covers them too (a backlog of saves of
            # one story is ingested once, not once per save)
            covered = outbox.pending_of(tx, "story", ev.subject, but=ev.id)
            s = self.cms.story_row(tx, sid)
            if s is None:
                draft = live = None
                rev = None
                live_wanted = False
            else:
                rev = out.revision = int(s["revision"])
                cur, saved_at = self.cms.revision_content(tx, sid, rev)
                found = known(tx, sid)
                out.problems = check_references(cur, found)
                draft = (
                    None
                    if out.problems
                    else story_record(tx, self.media, sid, rev, cur, saved_at, s)
                )
                live_wanted = s["status"] == "published" and s["published_revision"] is not None
                live = None
                if live_wanted:
                    prev = int(s["published_revision"])
                    if prev == rev:
                        live = draft
                    else:
                        pub, pub_at = self.cms.revision_content(tx, sid, prev)
                        if not check_references(pub, found):
                            live = story_record(tx, self.media, sid, prev, pub, pub_at, s)
        wtx = self.writer.transaction()
        if draft is not None:
            draft_rec = dict(
                draft,
                status=s["status"],
                publish_at=when(s["publish_at"]),
                unpublish_at=when(s["unpublish_at"]),
            )
            wtx.upsert("DraftStory", draft_rec, **_unchanged(t_draft))
        elif s is None and t_draft is not None:
            wtx.delete("DraftStory", sid, expect_token=t_draft)
        if live is not None:
            wtx.upsert("Story", live, **_unchanged(t_live))
        elif not live_wanted and t_live is not None:
            wtx.delete("Story", sid, expect_token=t_live)
        if len(wtx):
            out.token = wtx.commit()
            out.records = len(wtx)
        _crash_point("after-store-commit")
        with self.store.transaction() as tx:
            if rev is not None:
                self.cms.record_story_ingested(tx, sid, rev, out.problems, _int(out.token))
            outbox.complete(tx, ev)
            outbox.complete_covered(tx, covered, ev)
        return out

    # -- titles and people -----------------------------------------------------------------

    def _ids(self, ev: Event) -> list[int]:
        ids = ev.payload.get("ids")
        if ev.kind in ("titles", "people") and ev.subject.isdigit() and not ids:
            ids = [int(ev.subject)]
        if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
            raise PermanentFailure(f"event {ev.id}: payload needs 'ids', a list of integers")
        return ids

    def _titles(self, ev: Event) -> Outcome:
        return self._bulk(ev, "Title", lambda tx, ids: title_records(tx, self.media, ids))

    def _people(self, ev: Event) -> Outcome:
        return self._bulk(ev, "Person", person_records)

    def _bulk(
        self, ev: Event, type_name: str,
        build: Callable[[Tx, list[int]], tuple[list[dict[str, Any]], list[int]]],
    ) -> Outcome:  # fmt: skip
        """The records of the event's ids, built and written ``WRITE_BATCH`` at a time."""
        ids = self._ids(ev)
        out = Outcome()
        for start in range(0, len(ids), WRITE_BATCH):
            chunk = ids[start : start + WRITE_BATCH]
            with self.store.transaction(write=False) as tx:
                records, gone = build(tx, chunk)
            out.token = self._write_all(type_name, records, gone) or out.token
            out.records += len(records) + len(gone)
        with self.store.transaction() as tx:
            outbox.complete(tx, ev)
        return out

    def _write_all(
        self, type_name: str, records: list[dict[str, Any]], gone: Sequence[int]
    ) -> Token | None:
        """Records written whole (last writer wins: they are derived from the write store
        alone, so every writer computes the same ones)."""
        if not records and not gone:
            return None
        with self.writer.transaction() as wtx:
            for r in records:
                wtx.upsert(type_name, r)
            for k in gone:
                wtx.delete(type_name, k)
        return wtx.token

    # -- layouts ---------------------------------------------------------------------------

    def _layouts(self, ev: Event) -> Outcome:
        out = Outcome()
        for lid in self.cms.layout_ids():
            got = self._one_layout(lid)
            out.token = got.token or out.token
            out.records += got.records
        with self.store.transaction() as tx:
            outbox.complete(tx, ev)
        return out

    def _layout(self, ev: Event) -> Outcome:
        out = self._one_layout(ev.subject)
        with self.store.transaction() as tx:
            outbox.complete(tx, ev)
        return out

    def _one_layout(self, lid: str) -> Outcome:
        out = Outcome()
        t = self.writer.token_of("Layout", lid)  # before reading: see _story
        with self.store.transaction(write=False) as tx:
            row = self.cms.layout_row(tx, lid)
            rows = (
                [] if row is None else layout_rows(tx, self.cms, row["data"]["rows"], out.problems)
            )
        wtx = self.writer.transaction()
        if row is None:
            if t is not None:
                wtx.delete("Layout", lid, expect_token=t)
        else:
            rec = {"id": lid, "name": row["name"], "rows": rows, "revision": row["revision"]}
            wtx.upsert("Layout", rec, **_unchanged(t))
        if len(wtx):
            out.token = wtx.commit()
            out.records = 1
        if row is not None:
            with self.store.transaction() as tx:
                self.cms.record_layout_ingested(
                    tx, lid, int(row["revision"]), out.problems, _int(out.token)
                )
        return out


def _unchanged(token: Token | None) -> dict[str, Any]:
    """The condition 'nobody changed this record since I looked'."""
    return {"expect_absent": True} if token is None else {"expect_token": int(token)}


def _int(token: Token | None) -> int | None:
    return None if token is None else int(token)


# -- the worker ---------------------------------------------------------------------------------


def _transient(e: BaseException) -> bool:
    if isinstance(e, StoreError):
        return e.transient
    return isinstance(e, LogError | ConflictError | OSError | TimeoutError)


class IngestWorker:
    """Claims outbox events and ingests them, in a thread (:meth:`start`) or step by step
    (:meth:`run_once`, :meth:`drain`). Several workers, in any processes, may share a
    write store. ``poll``: seconds between looks at the outbox when nothing wakes it."""

    def __init__(
        self,
        ingestor: Ingestor,
        *,
        name: str | None = None,
        lease: float = 30.0,
        poll: float = 0.5,
        max_attempts: int = 6,
        on_event: Callable[[Event, Outcome | None, BaseException | None], None] | None = None,
    ) -> None:
        self.ingestor = ingestor
        self.store = ingestor.store
        self.name = name or f"worker-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.lease = lease
        self.poll = poll
        self.max_attempts = max_attempts
        self.on_event = on_event
        self.processed = 0
        self.failed = 0
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_schedules = 0.0

    def run_once(self) -> bool:
        """Claim and process one event; False when none is available."""
        ev = outbox.claim(self.store, self.name, lease=self.lease)
        if ev is None:
            return False
        try:
            out = self.ingestor.process(ev)
        except Exception as e:
            self.failed += 1
            permanent = isinstance(e, PermanentFailure | InputError) and not _transient(e)
            why = f"{type(e).__name__}: {e}"
            self.last_error = f"event {ev.id} ({ev.kind} {ev.subject}): {why}"
            with contextlib.suppress(StoreError):
                status = outbox.fail(
                    self.store, ev, why, max_attempts=self.max_attempts, retry=not permanent
                )
                if status == "dead" and ev.kind == "story" and ev.subject.isdigit():
                    self._mark_failed(ev, why)
                (log.error if status == "dead" else log.warning)(
                    "%s; %s",
                    self.last_error,
                    "moved to the dead-letter list" if status == "dead" else "will retry",
                )
            if self.on_event:
                self.on_event(ev, None, e)
            return True
        self.processed += 1
        self.last_error = None
        if self.on_event:
            self.on_event(ev, out, None)
        return True

    def _mark_failed(self, ev: Event, why: str) -> None:
        """A story event that failed for good: its revision says so (with the error), so
        the editor shows 'failed' rather than 'pending' forever."""
        self.ingestor.cms.record_story_failed(
            int(ev.subject), f"failed after {ev.attempts} attempts: {why}"
        )

    def run_schedules(self) -> None:
        now = time.time()
        if now >= self._next_schedules:
            self._next_schedules = now + 1.0
            for sid, what in CMS(self.store).run_schedules(now):
                log.info("story %s: %s on schedule", sid, what)

    def drain(self, timeout: float | None = None) -> int:
        """Process events until none is available (or ``timeout`` seconds pass); returns
        how many were processed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        n = 0
        while self.run_once():
            n += 1
            if deadline is not None and time.monotonic() > deadline:
                break
        return n

    def start(self) -> IngestWorker:
        self._thread = threading.Thread(target=self.run, name=f"ingest {self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.store._wake(outbox.CHANNEL)
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        """Until :meth:`stop`: process events as they come, and the schedules."""
        listener = None
        with contextlib.suppress(Exception):
            listener = self.store.listener(outbox.CHANNEL)
        try:
            while not self._stop.is_set():
                seen = self.store.wakes(outbox.CHANNEL)
                try:
                    self.run_schedules()
                    busy = self.run_once()
                except StoreError as e:
                    self.last_error = f"the write store failed: {e}"
                    log.warning("%s", self.last_error)
                    self._stop.wait(self.poll)
                    continue
                except Exception as e:  # never let the worker thread die
                    self.last_error = f"{type(e).__name__}: {e}"
                    log.exception("the ingestion worker failed; going on")
                    self._stop.wait(self.poll)
                    continue
                if busy:
                    continue
                if listener is not None and (listener.closed or listener.broken):
                    listener = None  # the database went away: poll, and listen again later
                if listener is None and self.store.dialect == "postgres":
                    with contextlib.suppress(Exception):
                        listener = self.store.listener(outbox.CHANNEL)
                if listener is not None:
                    if not wait_notify(listener, self.poll):
                        self.store.wait_wake(outbox.CHANNEL, seen, 0)
                else:
                    self.store.wait_wake(outbox.CHANNEL, seen, self.poll)
        finally:
            if listener is not None:
                with contextlib.suppress(Exception):
                    listener.close()


# -- workers in processes of their own ---------------------------------------------------------


def ingestor_for(store: WriteStore, dataset: Any, media: MediaConfig) -> Ingestor:
    """The one wiring of an ingestor: the CMS's write store, a Writer of ``dataset`` (a
    Dataset, or a URL or directory to open) with the schema of the platform's records
    (:data:`nearstate.content.records.SCHEMA`), and the media configuration."""
    from ..dataset import open_dataset
    from .records import SCHEMA

    ds = open_dataset(dataset) if isinstance(dataset, (str, Path)) else dataset
    return Ingestor(store, ds.writer(schema=SCHEMA), media)


def _worker_process(cms: str, dataset: str, media_root: str, media_url: str, poll: float,
                    stop: Any) -> None:  # fmt: skip
    from .db import open_store

    store = open_store(cms, migrate=False)
    media = MediaConfig(Path(media_root), media_url)
    worker = IngestWorker(ingestor_for(store, dataset, media), poll=poll)
    while not stop.is_set():
        if not worker.run_once():
            stop.wait(poll)
    store.close()


@contextlib.contextmanager
def worker_processes(cms: str, dataset: str, media: MediaConfig, count: int, *,
                     poll: float = 0.1) -> Iterator[None]:  # fmt: skip
    """``count`` ingestion workers in processes of their own for the duration of the block
    (bulk work on several cores: a film import keeps them all busy). They stop when the
    block ends; wait for the outbox to empty first (:func:`wait_idle`)."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    procs = [
        ctx.Process(target=_worker_process, daemon=True, name=f"ingest-{i}",
                    args=(cms, dataset, str(media.root), media.base_url, poll, stop))
        for i in range(count)
    ]  # fmt: skip
    for p in procs:
        p.start()
    try:
        yield
    finally:
        stop.set()
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()


def wait_idle(store: WriteStore, *, timeout: float = 600.0,
              progress: Callable[[int, int], None] | None = None) -> None:  # fmt: skip
    """Wait until no outbox event is pending (dead ones do not count); TimeoutError after
    ``timeout`` seconds. ``progress(done, total)`` as the queue drains."""
    deadline = time.monotonic() + timeout
    first: int | None = None
    while True:
        n = outbox.pending_count(store)
        first = n if first is None else max(first, n)
        if progress is not None:
            progress(first - n, first)
        if n == 0:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{n} outbox events are still pending after {timeout:.0f} s")
        time.sleep(0.05)
