"""The editorial CMS: stories with revisions and a lifecycle, layouts, the lookups the
editor needs, and the ingestion status of what was saved. Every change is one write-store
transaction that also writes its outbox event, so a change and its announcement to the
ingestion pipeline exist together or not at all.

:class:`CMS` is assembled from its parts, one module each::

    common.py       errors, Saved, known() (references checked against the write store)
    ingestion.py    the CMS's side of ingestion: what the ingestor reads, the status it
                    records (record_*), the status the editor reads (ingest_status)
    stories.py      stories and revisions: read, create, save, restore
    publishing.py   the lifecycle: publish, schedule, unpublish, run_schedules
    layouts.py      layouts, and check_layout
    lookups.py      titles, people, authors and images to pick; re-ingesting an asset's users

Each part builds on the ones above it (a story's reads show its ingestion status; the
lifecycle changes stories). These modules, the outbox (``outbox.py``) and the write store
(``db.py``, ``migrations.py``; ``backup.py`` copies it whole) are the only code that
reads or writes the CMS's tables (stories, story_revisions, story_tags, story_refs,
layouts, outbox); ``tests/test_table_owners.py`` checks it.
"""

from __future__ import annotations

from .common import (
    SCHEDULED,
    STATUSES,
    EditConflict,
    InvalidContent,
    NotFound,
    Saved,
    decoded,
    known,
)
from .layouts import MAX_ROW_ITEMS, MAX_ROWS, ROW_KINDS, Layouts, check_layout
from .lookups import Lookups
from .publishing import Publishing

__all__ = [
    "CMS",
    "MAX_ROWS",
    "MAX_ROW_ITEMS",
    "ROW_KINDS",
    "SCHEDULED",
    "STATUSES",
    "EditConflict",
    "InvalidContent",
    "NotFound",
    "Saved",
    "check_layout",
    "decoded",
    "known",
]


class CMS(Publishing, Layouts, Lookups):
    """The CMS over a write store. Thread-safe (each thread uses its own connection).
    ``clock``: where the time of a change comes from (tests move it)."""
