"""Stories and their revisions: reading them, creating, saving, restoring. Every save —
and every restore, which copies an old revision forward — makes a new revision, in one
write-store transaction with its outbox event.

Concurrent edits: every change names the revision it was based on (``base_revision``);
when somebody else saved in between, :class:`EditConflict` says who and when, and nothing
is written.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ...errors import InputError
from .. import outbox
from ..db import IntegrityError, Tx
from ..rules import Problem, check_story, references, slugify
from .common import STATUSES, EditConflict, InvalidContent, NotFound, Saved, decoded
from .ingestion import Ingestion


class Stories(Ingestion):
    """The CMS's stories (a part of :class:`~nearstate.content.cms.CMS`), with what
    ingestion records of them."""

    # -- reading ---------------------------------------------------------------------------

    def story(self, story_id: int) -> dict[str, Any]:
        """The story's row with its newest revision's content (``data``), that revision's
        ingestion status, and the published revision's number."""
        with self.store.transaction(write=False) as tx:
            return self._story(tx, int(story_id))

    def _story(self, tx: Tx, story_id: int) -> dict[str, Any]:
        row = tx.one(
            "SELECT s.*, r.data, r.ingest_status, r.ingest_errors, r.token, r.author"
            " FROM stories s JOIN story_revisions r"
            " ON r.story_id = s.id AND r.revision = s.revision WHERE s.id = ?",
            (story_id,),
        )
        if row is None:
            raise NotFound(f"there is no story {story_id}")
        return decoded(row)

    def list_stories(
        self, q: str = "", *, status: str | None = None, limit: int = 50, offset: int = 0
    ) -> list[dict[str, Any]]:
        """Stories, newest change first; ``q`` matches words of the title or the slug.
        ``ingest_status`` is the newest revision's (see :meth:`ingest_status`)."""
        where, params = ["1=1"], []
        for word in q.lower().split()[:8]:
            like = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            slug = slugify(word)
            if slug:
                where.append("(LOWER(s.title) LIKE ? ESCAPE '\\' OR s.slug LIKE ?)")
                params += [f"%{like}%", f"%{slug}%"]
            else:
                where.append("LOWER(s.title) LIKE ? ESCAPE '\\'")
                params.append(f"%{like}%")
        if status:
            if status not in STATUSES:
                raise InputError(f"unknown status {status!r} (one of {', '.join(STATUSES)})")
            where.append("s.status = ?")
            params.append(status)
        rows = self.store.read(
            "SELECT s.id, s.slug, s.title, s.status, s.revision, s.published_revision,"
            " s.publish_at, s.unpublish_at, s.updated_at, s.updated_by, r.ingest_status"
            " FROM stories s JOIN story_revisions r ON r.story_id = s.id"
            " AND r.revision = s.revision WHERE "
            + " AND ".join(where)
            + " ORDER BY s.updated_at DESC, s.id DESC LIMIT ? OFFSET ?",
            (*params, max(1, min(limit, 500)), max(0, offset)),
        )
        self._mark_dead(rows)
        return rows

    def revisions(self, story_id: int) -> list[dict[str, Any]]:
        """Every revision of a story, newest first, with its ingestion status."""
        rows = self.store.read(
            "SELECT revision, created_at, author, note, ingest_status, ingest_errors, token"
            " FROM story_revisions WHERE story_id = ? ORDER BY revision DESC",
            (int(story_id),),
        )
        if not rows:
            raise NotFound(f"there is no story {story_id}")
        for r in rows:
            decoded(r)
        self._mark_dead(rows, int(story_id))
        return rows

    def revision(self, story_id: int, revision: int) -> dict[str, Any]:
        row = self.store.read_one(
            "SELECT * FROM story_revisions WHERE story_id = ? AND revision = ?",
            (int(story_id), int(revision)),
        )
        if row is None:
            raise NotFound(f"story {story_id} has no revision {revision}")
        return decoded(row)

    def story_by_slug(self, slug: str) -> dict[str, Any] | None:
        """The row (no content) of the story with ``slug``: its id, status, revision,
        published revision and who changed it last; None if there is none."""
        return self.store.read_one(
            "SELECT id, status, revision, published_revision, updated_by FROM stories"
            " WHERE slug = ?",
            (slug,),
        )

    def slugs(self) -> dict[int, str]:
        """Every story's slug by id."""
        return {int(r["id"]): r["slug"] for r in self.store.read("SELECT id, slug FROM stories")}

    def counts(self) -> dict[str, int]:
        """How many stories, published stories and revisions there are."""
        row = self.store.read_one(
            "SELECT (SELECT COUNT(*) FROM stories) AS stories,"
            " (SELECT COUNT(*) FROM stories WHERE status = 'published') AS published,"
            " (SELECT COUNT(*) FROM story_revisions) AS revisions"
        )
        assert row is not None
        return {k: int(row[k]) for k in ("stories", "published", "revisions")}

    # -- changing --------------------------------------------------------------------------

    def create_story(self, data: Any, *, user: str) -> Saved:
        """A new draft story from ``data``; InvalidContent if its shape is wrong."""
        story = _checked(data)
        now = self.clock()
        with self._writing(story) as tx:
            row = tx.one(
                "INSERT INTO stories (slug, title, status, revision, created_at,"
                " updated_at, updated_by) VALUES (?, ?, 'draft', 1, ?, ?, ?) RETURNING id",
                (story["slug"], story["title"], now, now, user),
            )
            assert row is not None
            return self._add_revision(tx, int(row["id"]), 1, story, user, now, "created")

    def save_story(
        self, story_id: int, data: Any, *, base_revision: int, user: str, note: str = ""
    ) -> Saved:
        """Save ``data`` as the next revision of a story opened at ``base_revision``."""
        story = _checked(data)
        now = self.clock()
        with self._writing(story) as tx:
            sid = int(story_id)
            rev = self._bump(
                tx, sid, int(base_revision), user, now, slug=story["slug"], title=story["title"]
            )
            return self._add_revision(tx, sid, rev, story, user, now, note)

    def restore(self, story_id: int, revision: int, *, base_revision: int, user: str) -> Saved:
        """Make an old revision's content the newest revision again."""
        old = self.revision(story_id, revision)
        return self.save_story(
            story_id,
            old["data"],
            base_revision=base_revision,
            user=user,
            note=f"restored revision {revision}",
        )

    # -- helpers ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _writing(self, story: Mapping[str, Any]) -> Iterator[Tx]:
        """A write transaction saving ``story``; a slug another story has is refused as
        InvalidContent (and nothing is written)."""
        try:
            with self.store.transaction() as tx:
                yield tx
        except IntegrityError as e:
            raise self._slug_problem(story, e) from None

    def _bump(
        self, tx: Tx, story_id: int, base: int, user: str, now: float, *, slug: str, title: str
    ) -> int:
        row = tx.one(
            "UPDATE stories SET revision = revision + 1, slug = ?, title = ?, updated_at = ?,"
            " updated_by = ? WHERE id = ? AND revision = ? RETURNING revision",
            (slug, title, now, user, story_id, base),
        )
        if row is None:
            self._conflict(tx, story_id, base)
        assert row is not None
        return int(row["revision"])

    def _conflict(self, tx: Tx, story_id: int, base: int) -> None:
        cur = tx.one(
            "SELECT revision, updated_by, updated_at FROM stories WHERE id = ?", (story_id,)
        )
        if cur is None:
            raise NotFound(f"there is no story {story_id}")
        raise EditConflict(
            f"story {story_id}",
            base,
            int(cur["revision"]),
            cur["updated_by"],
            float(cur["updated_at"]),
        )

    def _check_base(self, tx: Tx, story_id: int, base: int | None) -> dict[str, Any]:
        cur = self._story(tx, story_id)
        if base is not None and int(base) != cur["revision"]:
            raise EditConflict(
                f"story {story_id}",
                int(base),
                cur["revision"],
                cur["updated_by"],
                float(cur["updated_at"]),
            )
        return cur

    def _add_revision(
        self, tx: Tx, sid: int, rev: int, story: Mapping[str, Any], user: str, now: float, note: str
    ) -> Saved:
        tx.execute(
            "INSERT INTO story_revisions (story_id, revision, data, created_at, author, note)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (sid, rev, json.dumps(story, ensure_ascii=False), now, user, note[:200]),
        )
        assets, titles, people = references(story)
        tx.execute("DELETE FROM story_refs WHERE story_id = ?", (sid,))
        refs = [(sid, "asset", a) for a in sorted(assets)]
        refs += [(sid, "title", str(t)) for t in sorted(titles)]
        refs += [(sid, "person", str(p)) for p in sorted(people)]
        tx.executemany("INSERT INTO story_refs (story_id, kind, ref) VALUES (?, ?, ?)", refs)
        ev = outbox.enqueue(tx, "story", sid, revision=rev, now=now)
        return Saved(sid, rev, ev)

    def _set_tags(self, tx: Tx, sid: int, tags: Sequence[str]) -> None:
        tx.execute("DELETE FROM story_tags WHERE story_id = ?", (sid,))
        tx.executemany(
            "INSERT INTO story_tags (tag, story_id) VALUES (?, ?)", [(t, sid) for t in tags]
        )

    @staticmethod
    def _slug_problem(story: Mapping[str, Any], e: IntegrityError) -> InvalidContent:
        if "slug" in str(e).lower():
            return InvalidContent(
                [Problem("slug", f"{story['slug']!r} is already used by another story")]
            )
        return InvalidContent([Problem("story", str(e))])


def _checked(data: Any) -> dict[str, Any]:
    """``data`` as a story (checked and normalised); InvalidContent if its shape is wrong."""
    story, problems = check_story(data)
    if problems:
        raise InvalidContent(problems)
    return story
