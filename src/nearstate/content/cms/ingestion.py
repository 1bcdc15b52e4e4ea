"""The CMS's side of ingestion: what the ingestor reads of the content, the ingestion
status it records back against revisions and layouts, and that status as the editor reads
it.

Status of a story revision: ``pending`` (saved, not ingested yet) → ``ok`` (its records
are in the dataset; ``token`` is the commit to wait for), ``invalid`` (it refers to
something missing; ``errors`` say what), ``superseded`` (a newer revision was ingested
first) or ``failed`` (its event went to the dead-letter list). The ingestor calls the
``record_*`` methods; nothing else writes these columns (``tests/test_table_owners.py``
keeps SQL on the CMS's tables inside the CMS).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from typing import Any

from .. import outbox
from ..db import StoreError, Tx
from ..rules import Problem
from .common import SCHEDULED, NotFound, Part


def _in(ids: Iterable[Any]) -> str:
    return ",".join("?" * len(list(ids)))


class Ingestion(Part):
    """The ingestion status of stories and layouts (a part of
    :class:`~nearstate.content.cms.CMS`)."""

    # -- the status, as the editor reads it ------------------------------------------------

    def ingest_status(self, story_id: int, revision: int | None = None) -> dict[str, Any]:
        """``{"revision", "status", "errors", "token"}`` of a revision (the newest by
        default): status is pending, ok, invalid, superseded or failed. A revision still
        pending whose event is in the dead-letter list (so it would stay pending for ever)
        is failed, with the event's error."""
        with self.store.transaction(write=False) as tx:
            if revision is None:
                revision = tx.value("SELECT revision FROM stories WHERE id = ?", (story_id,))
                if revision is None:
                    raise NotFound(f"there is no story {story_id}")
            row = tx.one(
                "SELECT revision, ingest_status, ingest_errors, token FROM story_revisions"
                " WHERE story_id = ? AND revision = ?",
                (int(story_id), int(revision)),
            )
        if row is None:
            raise NotFound(f"story {story_id} has no revision {revision}")
        st = {
            "revision": row["revision"],
            "status": row["ingest_status"],
            "errors": json.loads(row["ingest_errors"]),
            "token": row["token"],
        }
        if st["status"] == "pending":
            dead = outbox.dead_event(self.store, "story", str(story_id), int(row["revision"]))
            if dead is not None:
                error = dead["last_error"] or "the ingestion pipeline gave up"
                st["status"] = "failed"
                st["errors"] = [{"where": f"event {dead['id']}", "message": error}]
        return st

    def status_counts(self) -> dict[str, int]:
        """How many story revisions are in each ingestion status."""
        rows = self.store.read(
            "SELECT ingest_status AS s, COUNT(*) AS n FROM story_revisions GROUP BY 1"
        )
        return {r["s"]: int(r["n"]) for r in rows}

    def _mark_dead(self, rows: list[dict[str, Any]], story_id: int | None = None) -> None:
        """Rows still "pending" whose event is dead shown as "failed" (rows of stories, or
        the revisions of story ``story_id``), in place."""
        pending = [r for r in rows if r.get("ingest_status") == "pending"]
        if not pending:
            return
        ids = [story_id] if story_id is not None else [r["id"] for r in pending]
        dead = outbox.dead_revisions(self.store, "story", [str(i) for i in ids])
        for r in pending:
            if (str(story_id if story_id is not None else r["id"]), r["revision"]) in dead:
                r["ingest_status"] = "failed"

    # -- what the ingestor reads (inside its own read transaction ``tx``) -------------------

    def story_row(self, tx: Tx, story_id: int) -> dict[str, Any] | None:
        """The story's row (its status, newest and published revision, times), or None."""
        return tx.one("SELECT * FROM stories WHERE id = ?", (story_id,))

    def revision_content(self, tx: Tx, story_id: int, revision: int) -> tuple[dict, float]:
        """A revision's content and when it was saved; StoreError if there is none (the
        story row names it, so the write store is inconsistent)."""
        row = tx.one(
            "SELECT data, created_at FROM story_revisions WHERE story_id = ? AND revision = ?",
            (story_id, revision),
        )
        if row is None:
            raise StoreError(f"story {story_id} has no revision {revision}")
        return json.loads(row["data"]), float(row["created_at"])

    def layout_ids(self) -> list[str]:
        return [r["id"] for r in self.store.read("SELECT id FROM layouts ORDER BY id")]

    def layout_row(self, tx: Tx, layout_id: str) -> dict[str, Any] | None:
        """The layout's row with its rows parsed (``data``), or None."""
        row = tx.one("SELECT * FROM layouts WHERE id = ?", (layout_id,))
        if row is not None:
            row["data"] = json.loads(row["data"])
        return row

    def published_among(self, tx: Tx, ids: Sequence[int]) -> set[int]:
        """Which of the stories ``ids`` are published."""
        if not ids:
            return set()
        return {
            r["id"]
            for r in tx.all(
                f"SELECT id FROM stories WHERE status = 'published' AND id IN ({_in(ids)})",
                tuple(ids),
            )
        }

    def newest_tagged(self, tx: Tx, tag: str, limit: int) -> list[int]:
        """The newest published stories tagged ``tag``, at most ``limit``."""
        return [
            r["id"]
            for r in tx.all(
                "SELECT s.id FROM story_tags t JOIN stories s ON s.id = t.story_id"
                " WHERE t.tag = ? AND s.status = 'published'"
                " ORDER BY s.published_at DESC, s.id DESC LIMIT ?",
                (tag, limit),
            )
        ]

    # -- what the ingestor records ---------------------------------------------------------

    def record_story_ingested(
        self, tx: Tx, story_id: int, revision: int, problems: Sequence[Problem], token: int | None
    ) -> None:
        """Revision ``revision`` was ingested (its records committed at ``token``; None when
        nothing changed) with ``problems`` (then ``invalid``, else ``ok``); older revisions
        still pending are ``superseded``. Why a scheduled publish of the revision was
        cancelled stays with it."""
        old = tx.value(
            "SELECT ingest_errors FROM story_revisions WHERE story_id = ? AND revision = ?",
            (story_id, revision),
        )
        kept = [e for e in json.loads(old or "[]") if e.get("where") == SCHEDULED]
        found = [p.to_dict() for p in problems] + kept
        now = time.time()
        tx.execute(
            "UPDATE story_revisions SET ingest_status = ?, ingest_errors = ?,"
            " token = ?, ingested_at = ? WHERE story_id = ? AND revision = ?",
            ("invalid" if found else "ok", json.dumps(found), token, now, story_id, revision),
        )
        tx.execute(
            "UPDATE story_revisions SET ingest_status = 'superseded', token = ?,"
            " ingested_at = ? WHERE story_id = ? AND revision < ?"
            " AND ingest_status = 'pending'",
            (token, now, story_id, revision),
        )

    def record_story_failed(self, story_id: int, message: str) -> None:
        """Ingesting the story failed for good: its newest revision, if still pending, is
        ``failed`` with ``message``, so the editor shows that rather than pending for ever."""
        problem = {"where": "ingestion", "message": message}
        with self.store.transaction() as tx:
            tx.execute(
                "UPDATE story_revisions SET ingest_status = 'failed', ingest_errors = ?"
                " WHERE story_id = ? AND revision = (SELECT revision FROM stories WHERE id = ?)"
                " AND ingest_status = 'pending'",
                (json.dumps([problem]), story_id, story_id),
            )

    def record_layout_ingested(
        self, tx: Tx, layout_id: str, revision: int, problems: Sequence[Problem],
        token: int | None,
    ) -> None:  # fmt: skip
        """Revision ``revision`` of a layout was ingested (``ok``; ``problems`` say which
        of its items were left out)."""
        tx.execute(
            "UPDATE layouts SET ingest_status = ?, ingest_errors = ?, token = ?"
            " WHERE id = ? AND revision = ?",
            ("ok", json.dumps([p.to_dict() for p in problems]), token, layout_id, revision),
        )
