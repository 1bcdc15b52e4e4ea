"""What the editor looks up in the write store besides stories: titles and people to refer
to, authors to add, images to pick, and the stories to ingest again when an asset they
show changes."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from .. import outbox
from ..db import Tx
from ..rules import Problem, slugify
from .common import InvalidContent, Part


class Lookups(Part):
    """The editor's lookups (a part of :class:`~nearstate.content.cms.CMS`)."""

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

    def stories_showing(self, asset_id: str, *, limit: int = 100) -> list[dict[str, Any]]:
        """The stories (``id``, ``title``) whose newest revision shows asset ``asset_id``."""
        return self.store.read(
            "SELECT s.id, s.title FROM story_refs r JOIN stories s ON s.id = r.story_id"
            " WHERE r.kind = 'asset' AND r.ref = ? ORDER BY s.id LIMIT ?",
            (asset_id, limit),
        )

    def stories_by_id(self, ids: list[int]) -> list[dict[str, Any]]:
        """The stories (``id``, ``title``, ``slug``, ``status``) among ``ids`` that exist."""
        if not ids:
            return []
        marks = ", ".join("?" * len(ids))
        return self.store.read(
            f"SELECT id, title, slug, status FROM stories WHERE id IN ({marks})", list(ids)
        )

    def story_heroes(self, ids: list[int]) -> dict[int, str]:
        """The hero image (an asset id) of each story among ``ids`` whose newest revision
        has one."""
        if not ids:
            return {}
        marks = ", ".join("?" * len(ids))
        out: dict[int, str] = {}
        for r in self.store.read(
            "SELECT s.id, r.data FROM stories s JOIN story_revisions r ON r.story_id = s.id"
            f" AND r.revision = s.revision WHERE s.id IN ({marks})",
            list(ids),
        ):
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                hero = json.loads(r["data"]).get("hero")
                if isinstance(hero, str) and hero:
                    out[int(r["id"])] = hero
        return out

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
