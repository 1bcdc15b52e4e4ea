"""Layouts: the home page's rows (and any other page's), edited like stories — each change
a new revision, with its outbox event — and checked by :func:`check_layout`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .. import outbox
from ..db import IntegrityError
from ..rules import MAX_ID, Problem, slugify
from .common import EditConflict, InvalidContent, NotFound, Part, Saved, decoded

ROW_KINDS = ("stories", "titles", "tag", "genre")
MAX_ROWS = 30
MAX_ROW_ITEMS = 40


class Layouts(Part):
    """The CMS's layouts (a part of :class:`~nearstate.content.cms.CMS`)."""

    def layouts(self) -> list[dict[str, Any]]:
        return self.store.read(
            "SELECT id, name, revision, updated_at, updated_by, ingest_status FROM layouts"
            " ORDER BY id"
        )

    def layout(self, layout_id: str) -> dict[str, Any]:
        row = self.store.read_one("SELECT * FROM layouts WHERE id = ?", (layout_id,))
        if row is None:
            raise NotFound(f"there is no layout {layout_id!r}")
        return decoded(row)

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
