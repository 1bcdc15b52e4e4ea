"""The editorial CMS: stories with revisions and a lifecycle, layouts, and the lookups the
editor needs. Every change is one write-store transaction that also writes its outbox
event, so a change and its announcement to the ingestion pipeline exist together or not at
all.

Lifecycle of a story: ``draft`` → ``published`` (now) or ``scheduled`` (at ``publish_at``)
→ ``unpublished`` (now, or at ``unpublish_at``). Publishing makes the newest revision the
published one; later saves are drafts until published again. Every save — and every
restore, which copies an old revision forward — makes a new revision.

Concurrent edits: every change names the revision it was based on (``base_revision``);
when somebody else saved in between, :class:`EditConflict` says who and when, and nothing
is written.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import InputError, NearstateError
from . import outbox
from .db import IntegrityError, Tx, WriteStore
from .rules import (
    MAX_ID,
    Known,
    Problem,
    check_publishable,
    check_references,
    check_schedule,
    check_story,
    references,
    slugify,
)

STATUSES = ("draft", "scheduled", "published", "unpublished")
ROW_KINDS = ("stories", "titles", "tag", "genre")
MAX_ROWS = 30
SCHEDULED = "scheduled publish"  # where a cancelled scheduled publish records why
MAX_ROW_ITEMS = 40


class InvalidContent(InputError):
    """The content was refused; ``problems`` says where and why, in plain words."""

    def __init__(self, problems: Sequence[Problem], what: str = "the story was not saved"):
        self.problems = list(problems)
        super().__init__(f"{what}: " + "; ".join(map(str, self.problems)))


class NotFound(InputError):
    """No story, revision or layout with that id."""


class EditConflict(NearstateError):
    """Somebody else saved since the revision this change was based on."""

    def __init__(self, what: str, base: int, current: int, by: str, at: float):
        self.base, self.current, self.by, self.at = base, current, by, at
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))
        super().__init__(
            f"{what} was changed by {by} at {when} (revision {current}) after you opened "
            f"revision {base}; your change was not saved. Reload it, then make your change "
            "again."
        )


@dataclass(frozen=True)
class Saved:
    """What a change made: the story (or layout) and its new revision, and its event."""

    id: int | str
    revision: int
    event: int


def _known(tx: Tx, story_id: int | None) -> Known:
    def subset(sql: str, ids: set[Any]) -> set[Any]:
        if not ids:
            return set()
        marks = ",".join("?" * len(ids))
        return {r["id"] for r in tx.all(sql.format(marks=marks), tuple(ids))}

    def slug_taken(slug: str) -> bool:
        row = tx.one("SELECT id FROM stories WHERE slug = ?", (slug,))
        return row is not None and row["id"] != story_id

    return Known(
        assets=lambda ids: subset("SELECT id FROM assets WHERE id IN ({marks})", ids),
        titles=lambda ids: subset("SELECT id FROM titles WHERE id IN ({marks})", ids),
        people=lambda ids: subset("SELECT id FROM people WHERE id IN ({marks})", ids),
        slug_taken=slug_taken,
    )


class CMS:
    """The CMS over a write store. Thread-safe (each thread uses its own connection)."""

    def __init__(self, store: WriteStore, *, clock: Callable[[], float] = time.time):
        self.store = store
        self.clock = clock

    # -- stories: reading ------------------------------------------------------------------

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
        return _decoded(row)

    def list_stories(
        self, q: str = "", *, status: str | None = None, limit: int = 50, offset: int = 0
    ) -> list[dict[str, Any]]:
        """Stories, newest change first; ``q`` matches words of the title or the slug."""
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
        return self.store.read(
            "SELECT s.id, s.slug, s.title, s.status, s.revision, s.published_revision,"
            " s.publish_at, s.unpublish_at, s.updated_at, s.updated_by, r.ingest_status"
            " FROM stories s JOIN story_revisions r ON r.story_id = s.id"
            " AND r.revision = s.revision WHERE "
            + " AND ".join(where)
            + " ORDER BY s.updated_at DESC, s.id DESC LIMIT ? OFFSET ?",
            (*params, max(1, min(limit, 500)), max(0, offset)),
        )

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
            _decoded(r)
        return rows

    def revision(self, story_id: int, revision: int) -> dict[str, Any]:
        row = self.store.read_one(
            "SELECT * FROM story_revisions WHERE story_id = ? AND revision = ?",
            (int(story_id), int(revision)),
        )
        if row is None:
            raise NotFound(f"story {story_id} has no revision {revision}")
        return _decoded(row)

    def ingest_status(self, story_id: int, revision: int | None = None) -> dict[str, Any]:
        """``{"status", "errors", "token"}`` of a revision (the newest by default):
        status is pending, ok, invalid, superseded or failed."""
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
        return {
            "revision": row["revision"],
            "status": row["ingest_status"],
            "errors": json.loads(row["ingest_errors"]),
            "token": row["token"],
        }

    # -- stories: changing -----------------------------------------------------------------

    def create_story(self, data: Any, *, user: str) -> Saved:
        """A new draft story from ``data``; InvalidContent if its shape is wrong."""
        story, problems = check_story(data)
        if problems:
            raise InvalidContent(problems)
        now = self.clock()
        try:
            with self.store.transaction() as tx:
                row = tx.one(
                    "INSERT INTO stories (slug, title, status, revision, created_at,"
                    " updated_at, updated_by) VALUES (?, ?, 'draft', 1, ?, ?, ?) RETURNING id",
                    (story["slug"], story["title"], now, now, user),
                )
                assert row is not None
                sid = int(row["id"])
                return self._add_revision(tx, sid, 1, story, user, now, "created")
        except IntegrityError as e:
            raise self._slug_problem(story, e) from None

    def save_story(
        self, story_id: int, data: Any, *, base_revision: int, user: str, note: str = ""
    ) -> Saved:
        """Save ``data`` as the next revision of a story opened at ``base_revision``."""
        story, problems = check_story(data)
        if problems:
            raise InvalidContent(problems)
        now = self.clock()
        try:
            with self.store.transaction() as tx:
                rev = self._bump(
                    tx,
                    int(story_id),
                    int(base_revision),
                    user,
                    now,
                    slug=story["slug"],
                    title=story["title"],
                )
                return self._add_revision(tx, int(story_id), rev, story, user, now, note)
        except IntegrityError as e:
            raise self._slug_problem(story, e) from None

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

    # -- story helpers ---------------------------------------------------------------------

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

    def _live_problems(self, tx: Tx, cur: Mapping[str, Any]) -> list[Problem]:
        story = cur["data"]
        return check_references(story, _known(tx, cur["id"])) + check_publishable(story)

    def _check_live(self, tx: Tx, cur: Mapping[str, Any]) -> None:
        problems = self._live_problems(tx, cur)
        if problems:
            raise InvalidContent(problems, f"story {cur['id']} was not published")

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

    # -- layouts ---------------------------------------------------------------------------

    def layouts(self) -> list[dict[str, Any]]:
        return self.store.read(
            "SELECT id, name, revision, updated_at, updated_by, ingest_status FROM layouts"
            " ORDER BY id"
        )

    def layout(self, layout_id: str) -> dict[str, Any]:
        row = self.store.read_one("SELECT * FROM layouts WHERE id = ?", (layout_id,))
        if row is None:
            raise NotFound(f"there is no layout {layout_id!r}")
        return _decoded(row)

    def save_layout(
        self, layout_id: str, *, name: str, rows: Any, user: str, base_revision: int | None
    ) -> Saved:
        """Create (``base_revision=None``) or change a layout: ordered rows, each
        ``{"heading", "kind", ...}`` where kind is ``stories`` (``ids``), ``titles``
        (``ids``), ``tag`` (newest published stories tagged ``tag``) or ``genre`` (titles of
        ``genre``, newest first); rule rows take a ``limit``."""
        clean, problems = check_layout(layout_id, name, rows)
        if problems:
            raise InvalidContent(problems, f"layout {layout_id!r} was not saved")
        now = self.clock()
        data = json.dumps({"rows": clean}, ensure_ascii=False)
        with self.store.transaction() as tx:
            if base_revision is None:
                try:
                    tx.execute(
                        "INSERT INTO layouts (id, name, revision, data, updated_at, updated_by)"
                        " VALUES (?, ?, 1, ?, ?, ?)",
                        (layout_id, name.strip(), data, now, user),
                    )
                except IntegrityError:
                    raise InvalidContent(
                        [Problem("id", f"layout {layout_id!r} already exists")],
                        f"layout {layout_id!r} was not saved",
                    ) from None
                rev = 1
            else:
                row = tx.one(
                    "UPDATE layouts SET revision = revision + 1, name = ?, data = ?,"
                    " updated_at = ?, updated_by = ?, ingest_status = 'pending'"
                    " WHERE id = ? AND revision = ? RETURNING revision",
                    (name.strip(), data, now, user, layout_id, int(base_revision)),
                )
                if row is None:
                    cur = tx.one("SELECT * FROM layouts WHERE id = ?", (layout_id,))
                    if cur is None:
                        raise NotFound(f"there is no layout {layout_id!r}")
                    raise EditConflict(
                        f"layout {layout_id!r} was not saved",
                        int(base_revision),
                        int(cur["revision"]),
                        cur["updated_by"],
                        float(cur["updated_at"]),
                    )
                rev = int(row["revision"])
            ev = outbox.enqueue(tx, "layout", layout_id, revision=rev, now=now)
            return Saved(layout_id, rev, ev)

    # -- lookups for the editor ------------------------------------------------------------

    def find_titles(self, q: str, *, limit: int = 20) -> list[dict[str, Any]]:
        """Titles whose name contains every word of ``q`` (or whose id is ``q``)."""
        words = q.lower().split()[:6]
        if not words:
            return []
        if len(words) == 1 and words[0].isdigit():
            if len(words[0]) > 18:
                return []  # no title has an id that large (and no database would take it)
            return self.store.read(
                "SELECT id, name, year FROM titles WHERE id = ?", (int(words[0]),)
            )
        where = " AND ".join(["LOWER(name) LIKE ?"] * len(words))
        return self.store.read(
            f"SELECT id, name, year FROM titles WHERE {where} ORDER BY year DESC, id LIMIT ?",
            (*[f"%{w}%" for w in words], limit),
        )

    def find_people(self, q: str, *, limit: int = 20) -> list[dict[str, Any]]:
        words = q.lower().split()[:6]
        if not words:
            return self.store.read(
                "SELECT id, name FROM people WHERE staff = 1 ORDER BY name LIMIT ?", (limit,)
            )
        where = " AND ".join(["LOWER(name) LIKE ?"] * len(words))
        return self.store.read(
            f"SELECT id, name FROM people WHERE {where} ORDER BY staff DESC, name LIMIT ?",
            (*[f"%{w}%" for w in words], limit),
        )

    def add_staff(self, name: str) -> int:
        """A person who writes for the site (an author); returns their id (existing name:
        the same person)."""
        name = " ".join(name.split())
        if not name or len(name) > 120:
            raise InvalidContent(
                [Problem("name", "a name of 1 to 120 characters is required")],
                "the author was not added",
            )
        with self.store.transaction() as tx:
            row = tx.one("SELECT id FROM people WHERE name = ?", (name,))
            if row is not None:
                tx.execute("UPDATE people SET staff = 1 WHERE id = ?", (row["id"],))
                pid = int(row["id"])
            else:
                pid = int(tx.value("SELECT COALESCE(MAX(id), 0) + 1 AS n FROM people"))
                tx.execute(
                    "INSERT INTO people (id, name, slug, staff) VALUES (?, ?, ?, 1)",
                    (pid, name, slugify(name) or f"person-{pid}"),
                )
            outbox.enqueue(tx, "people", "staff", payload={"ids": [pid]})
        return pid

    def assets(self, *, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        return self.store.read(
            "SELECT * FROM assets WHERE kind = 'image' ORDER BY created_at DESC LIMIT ? OFFSET ?",
            (limit, offset),
        )

    def asset_changed(self, asset_id: str) -> int:
        """Re-ingest what shows an asset (after its alt text or focal point changed)."""
        with self.store.transaction() as tx:
            return self._dependents(tx, "asset", asset_id)

    def _dependents(self, tx: Tx, kind: str, ref: str) -> int:
        n = 0
        for r in tx.all("SELECT story_id FROM story_refs WHERE kind = ? AND ref = ?", (kind, ref)):
            outbox.enqueue(tx, "story", r["story_id"])
            n += 1
        if kind == "asset":
            ids = [r["id"] for r in tx.all("SELECT id FROM titles WHERE poster_asset = ?", (ref,))]
            if ids:
                outbox.enqueue(tx, "titles", "asset", payload={"ids": ids})
                n += len(ids)
        return n


def _decoded(row: dict[str, Any]) -> dict[str, Any]:
    """A row with its JSON columns (``data``, ``ingest_errors``) parsed, in place."""
    for col in ("data", "ingest_errors"):
        if col in row:
            row[col] = json.loads(row[col])
    return row


def check_layout(
    layout_id: str, name: str, rows: Any
) -> tuple[list[dict[str, Any]], list[Problem]]:
    """A layout's rows checked and normalised."""
    problems: list[Problem] = []
    if not isinstance(layout_id, str) or slugify(layout_id) != layout_id:
        problems.append(Problem("id", f"{layout_id!r} must be lower-case words joined by '-'"))
    if not isinstance(name, str) or not name.strip() or len(name) > 120:
        problems.append(Problem("name", "a name of 1 to 120 characters is required"))
    if not isinstance(rows, list):
        return [], [*problems, Problem("rows", "must be a list of rows")]
    if len(rows) > MAX_ROWS:
        problems.append(Problem("rows", f"has {len(rows)} rows; at most {MAX_ROWS} are allowed"))
    out: list[dict[str, Any]] = []
    for i, r in enumerate(rows[:MAX_ROWS]):
        where = f"rows[{i + 1}]"
        if not isinstance(r, Mapping):
            problems.append(Problem(where, "must be an object with a heading and a kind"))
            continue
        kind = r.get("kind")
        heading = str(r.get("heading") or "").strip()
        if not heading or len(heading) > 120:
            problems.append(
                Problem(f"{where}.heading", "a heading of 1 to 120 characters is required")
            )
        if kind not in ROW_KINDS:
            problems.append(
                Problem(f"{where}.kind", f"{kind!r} is not one of {', '.join(ROW_KINDS)}")
            )
            continue
        row: dict[str, Any] = {"heading": heading, "kind": kind}
        if kind in ("stories", "titles"):
            ids = r.get("ids") or []
            if isinstance(ids, str):
                ids = [x for x in ids.replace(",", " ").split()]
            try:
                row["ids"] = list(dict.fromkeys(int(x) for x in ids))
                if not all(0 < x <= MAX_ID for x in row["ids"]):
                    raise ValueError(ids)
            except (TypeError, ValueError, OverflowError):
                problems.append(Problem(f"{where}.ids", "must be a list of numeric ids"))
                row["ids"] = []
            if not row["ids"]:
                problems.append(Problem(f"{where}.ids", f"a {kind} row needs at least one id"))
            if len(row["ids"]) > MAX_ROW_ITEMS:
                problems.append(Problem(f"{where}.ids", f"at most {MAX_ROW_ITEMS} ids"))
        else:
            value = (
                slugify(str(r.get(kind) or "")) if kind == "tag" else str(r.get(kind) or "").strip()
            )
            if not value:
                problems.append(Problem(f"{where}.{kind}", f"a {kind} row needs a {kind}"))
            row[kind] = value
            try:
                raw = r.get("limit")
                limit = 12 if raw is None or raw == "" else int(raw)
            except (TypeError, ValueError, OverflowError):
                limit = 0
            if not 1 <= limit <= MAX_ROW_ITEMS:
                problems.append(Problem(f"{where}.limit", f"a limit is 1 to {MAX_ROW_ITEMS}"))
            row["limit"] = limit
        out.append(row)
    return out, problems
