"""What every part of the CMS shares: its errors, what a change returns, the story
statuses, the check of a story's references against the write store, and the base of the
parts (a write store and a clock)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ...errors import InputError, NearstateError
from ..db import Tx, WriteStore
from ..rules import Known, Problem

STATUSES = ("draft", "scheduled", "published", "unpublished")
SCHEDULED = "scheduled publish"  # where a cancelled scheduled publish records why


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


# the module the errors are shown from (``nearstate.content.cms.NotFound``), as before the
# CMS became a package
for _cls in (InvalidContent, NotFound, EditConflict):
    _cls.__module__ = "nearstate.content.cms"


@dataclass(frozen=True)
class Saved:
    """What a change made: the story (or layout) and its new revision, and its event."""

    id: int | str
    revision: int
    event: int


def known(tx: Tx, story_id: int | None) -> Known:
    """What exists in the write store, as the rules ask it (``rules.check_references``):
    assets, titles and people by id, and whether another story than ``story_id`` has a
    slug."""

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


def decoded(row: dict[str, Any]) -> dict[str, Any]:
    """A row with its JSON columns (``data``, ``ingest_errors``) parsed, in place."""
    for col in ("data", "ingest_errors"):
        if col in row:
            row[col] = json.loads(row[col])
    return row


class Part:
    """The base of the CMS's parts: each reads and writes the write store ``store`` and
    takes the time from ``clock``."""

    def __init__(self, store: WriteStore, *, clock: Callable[[], float] = time.time):
        self.store = store
        self.clock = clock
