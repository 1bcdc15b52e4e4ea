"""The render-ready records the ingestion pipeline writes into the nearstate dataset.

Everything a page needs is resolved here, so the read path builds pages from these records
alone: images carry their URL per size, title cards their name, year, genres and poster,
people their names. Nested records (``Image``, ``TitleCard``, ``Block``, ``Row``) are
stored once per distinct value.

Drafts and published content are kept apart by type: ``Story`` holds only published
stories (what the live site reads), ``DraftStory`` the newest saved revision of every
story (what the editor's preview reads).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from nearstate import LongText, Schema, record


@dataclass
class Image:
    asset: str
    alt: str
    width: int
    height: int
    focal_x: float
    focal_y: float
    small: str
    medium: str
    large: str


@dataclass
class TitleCard:
    id: int
    slug: str
    name: str
    year: int | None
    genres: list[str]
    poster: Image | None = None


@dataclass
class PersonCard:
    id: int
    slug: str
    name: str


@dataclass
class Block:
    """One body block. ``kind`` is paragraph, heading, image, quote, title or video.
    ``level`` is a heading's level, and a paragraph's text format: 0 plain text, 1 the
    rich-text Markdown subset (:mod:`nearstate.content.richtext`)."""

    kind: str
    text: str = ""
    level: int = 0
    cite: str = ""
    image: Image | None = None
    title: TitleCard | None = None
    video: str = ""


@dataclass
class StoryFields:
    id: int
    slug: str
    title: str
    dek: str
    excerpt: str
    reading_minutes: int
    body: list[Block]
    hero: Image | None
    card: Image | None
    tags: list[str]
    genres: list[str]
    related: list[TitleCard]
    authors: list[PersonCard]
    revision: int
    updated_at: dt.datetime
    published_at: dt.datetime | None = None
    search_text: LongText = ""


@record(key="id", name="Story")
@dataclass
class Story(StoryFields):
    """A published story: the revision that was published, render-ready."""


@record(key="id", name="DraftStory")
@dataclass
class DraftStory(StoryFields):
    """The newest saved revision of a story, for preview; never read by the live site."""

    status: str = "draft"
    publish_at: dt.datetime | None = None
    unpublish_at: dt.datetime | None = None


@record(key="id", name="Title")
@dataclass
class Title:
    id: int
    slug: str
    name: str
    year: int | None
    runtime: int | None
    genres: list[str]
    directors: list[PersonCard]
    writers: list[PersonCard]
    cast: list[PersonCard]
    language: str
    country: str
    awards: str
    poster: Image | None


@record(key="id", name="Person")
@dataclass
class Person:
    id: int
    slug: str
    name: str
    titles: list[int] = field(default_factory=list)


@dataclass
class Row:
    """One row of a layout: a heading and the stories or titles it shows, in order."""

    heading: str
    items: str  # "stories" or "titles"
    ids: list[int]
    rule: str = ""  # how the ids were chosen, e.g. "newest stories tagged behind-the-scenes"


@record(key="id", name="Layout")
@dataclass
class Layout:
    id: str
    name: str
    rows: list[Row]
    revision: int


SCHEMA = Schema.from_dataclasses(Story, DraftStory, Title, Person, Layout)
LIVE_TYPES = ("Story", "Title", "Person", "Layout")
