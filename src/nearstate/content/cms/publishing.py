"""A story's lifecycle: ``draft`` → ``published`` (now) or ``scheduled`` (at
``publish_at``) → ``unpublished`` (now, or at ``unpublish_at``). Publishing makes the
newest revision the published one; later saves are drafts until published again. A
publish checks that the story is fit to go live (its references exist, it has what a
published story needs) and writes nothing when it is not.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .. import outbox
from ..db import Tx
from ..rules import Problem, check_publishable, check_references, check_schedule
from .common import SCHEDULED, InvalidContent, Saved, known
from .stories import Stories


class Publishing(Stories):
    """Publishing, scheduling and unpublishing stories (a part of
    :class:`~nearstate.content.cms.CMS`)."""

    def publish(self, story_id: int, *, user: str, base_revision: int | None = None) -> Saved:
        """Publish the newest revision now; InvalidContent (and nothing changes) if it
        refers to something missing or lacks what a published story needs."""
        now = self.clock()
        with self.store.transaction() as tx:
            cur = self._check_base(tx, int(story_id), base_revision)
            self._check_live(tx, cur)
            tx.execute(
                "UPDATE stories SET status = 'published', published_revision = revision,"
                " published_at = COALESCE(published_at, ?), publish_at = NULL,"
                " updated_at = ?, updated_by = ? WHERE id = ?",
                (now, now, user, cur["id"]),
            )
            self._set_tags(tx, cur["id"], cur["data"]["tags"])
            ev = outbox.enqueue(tx, "story", cur["id"], revision=cur["revision"], now=now)
            outbox.enqueue(tx, "layouts", "all", now=now)
            return Saved(cur["id"], cur["revision"], ev)

    def schedule(
        self,
        story_id: int,
        *,
        user: str,
        publish_at: float | None,
        unpublish_at: float | None = None,
        base_revision: int | None = None,
    ) -> Saved:
        """Publish at ``publish_at`` (the newest revision at that time) and/or unpublish at
        ``unpublish_at``; the worker carries them out (:meth:`run_schedules`)."""
        now = self.clock()
        problems = check_schedule(publish_at, unpublish_at, now)
        if publish_at is None and unpublish_at is None:
            problems.append(Problem("publish_at", "give a publish time, an unpublish time or both"))
        if problems:
            raise InvalidContent(problems, "the schedule was not saved")
        with self.store.transaction() as tx:
            cur = self._check_base(tx, int(story_id), base_revision)
            live = cur["status"] == "published"
            if publish_at is not None:
                self._check_live(tx, cur)
            elif not live and cur["status"] != "scheduled":
                raise InvalidContent(
                    [
                        Problem(
                            "unpublish_at", "only a published or scheduled story can be unpublished"
                        )
                    ],
                    "the schedule was not saved",
                )
            status = "published" if live else "scheduled"
            tx.execute(
                "UPDATE stories SET status = ?, publish_at = COALESCE(?, publish_at),"
                " unpublish_at = COALESCE(?, unpublish_at), updated_at = ?, updated_by = ?"
                " WHERE id = ?",
                (status, publish_at, unpublish_at, now, user, cur["id"]),
            )
            ev = outbox.enqueue(tx, "story", cur["id"], revision=cur["revision"], now=now)
            return Saved(cur["id"], cur["revision"], ev)

    def unpublish(self, story_id: int, *, user: str) -> Saved:
        """Take a story off the live site now (its revisions stay)."""
        now = self.clock()
        with self.store.transaction() as tx:
            cur = self._check_base(tx, int(story_id), None)
            if cur["status"] not in ("published", "scheduled"):
                raise InvalidContent(
                    [
                        Problem(
                            "status", f"the story is {cur['status']}, not published or scheduled"
                        )
                    ],
                    f"story {cur['id']} was not unpublished",
                )
            tx.execute(
                "UPDATE stories SET status = 'unpublished', published_revision = NULL,"
                " publish_at = NULL, unpublish_at = NULL, updated_at = ?, updated_by = ?"
                " WHERE id = ?",
                (now, user, cur["id"]),
            )
            tx.execute("DELETE FROM story_tags WHERE story_id = ?", (cur["id"],))
            ev = outbox.enqueue(tx, "story", cur["id"], revision=cur["revision"], now=now)
            outbox.enqueue(tx, "layouts", "all", now=now)
            return Saved(cur["id"], cur["revision"], ev)

    def run_schedules(self, now: float | None = None) -> list[tuple[int, str]]:
        """Carry out the publishes and unpublishes that are due; returns ``(story, what)``
        pairs. A scheduled publish whose story is not publishable any more is cancelled,
        and its problems are recorded on the revision."""
        now = self.clock() if now is None else now
        done: list[tuple[int, str]] = []
        due = self.store.read(
            "SELECT id FROM stories WHERE (publish_at IS NOT NULL AND publish_at <= ?)"
            " OR (unpublish_at IS NOT NULL AND unpublish_at <= ?) ORDER BY id",
            (now, now),
        )
        for r in due:
            with self.store.transaction() as tx:
                cur = self._story(tx, r["id"])
                if cur["publish_at"] is not None and cur["publish_at"] <= now:
                    problems = self._live_problems(tx, cur)
                    if problems:
                        tx.execute(
                            "UPDATE stories SET publish_at = NULL,"
                            " status = CASE WHEN status = 'scheduled' THEN 'draft'"
                            " ELSE status END WHERE id = ?",
                            (cur["id"],),
                        )
                        tx.execute(
                            "UPDATE story_revisions SET ingest_status = 'invalid',"
                            " ingest_errors = ? WHERE story_id = ? AND revision = ?",
                            (
                                json.dumps(
                                    [
                                        {"where": SCHEDULED, "message": f"cancelled: {p}"}
                                        for p in problems
                                    ]
                                ),
                                cur["id"],
                                cur["revision"],
                            ),
                        )
                        done.append((cur["id"], "publish cancelled"))
                    else:
                        tx.execute(
                            "UPDATE stories SET status = 'published',"
                            " published_revision = revision, publish_at = NULL,"
                            " published_at = COALESCE(published_at, ?) WHERE id = ?",
                            (now, cur["id"]),
                        )
                        self._set_tags(tx, cur["id"], cur["data"]["tags"])
                        done.append((cur["id"], "published"))
                if cur["unpublish_at"] is not None and cur["unpublish_at"] <= now:
                    tx.execute(
                        "UPDATE stories SET status = 'unpublished', published_revision = NULL,"
                        " unpublish_at = NULL WHERE id = ?",
                        (cur["id"],),
                    )
                    tx.execute("DELETE FROM story_tags WHERE story_id = ?", (cur["id"],))
                    done.append((cur["id"], "unpublished"))
                outbox.enqueue(tx, "story", cur["id"], revision=cur["revision"], now=now)
                outbox.enqueue(tx, "layouts", "all", now=now)
        return done

    def _live_problems(self, tx: Tx, cur: Mapping[str, Any]) -> list[Problem]:
        story = cur["data"]
        return check_references(story, known(tx, cur["id"])) + check_publishable(story)

    def _check_live(self, tx: Tx, cur: Mapping[str, Any]) -> None:
        problems = self._live_problems(tx, cur)
        if problems:
            raise InvalidContent(problems, f"story {cur['id']} was not published")
