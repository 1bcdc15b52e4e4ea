"""The write store's schema, as numbered migrations (``(number, name, sql)``).

Never edit a migration that has shipped: add the next number. Words in braces are filled
in per dialect by :meth:`~nearstate.content.db.WriteStore.sql` (``{id}`` is an
auto-numbered primary key, ``{float}`` a double, ``{bigint}`` a 64-bit integer). Times are
seconds since the epoch; JSON is stored as TEXT so both databases read it the same way.
"""

from __future__ import annotations

_CORE = """
CREATE TABLE users (
    id {id},
    username TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('editor', 'admin')),
    created_at {float} NOT NULL
);
CREATE TABLE people (
    id {bigint} PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    slug TEXT NOT NULL,
    staff INTEGER NOT NULL DEFAULT 0,
    bio TEXT NOT NULL DEFAULT ''
);
CREATE TABLE assets (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('image', 'placeholder')),
    filename TEXT NOT NULL,
    content_type TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    alt TEXT NOT NULL DEFAULT '',
    focal_x {float} NOT NULL DEFAULT 0.5,
    focal_y {float} NOT NULL DEFAULT 0.5,
    bytes {bigint} NOT NULL DEFAULT 0,
    sha256 TEXT NOT NULL DEFAULT '',
    created_at {float} NOT NULL,
    created_by TEXT NOT NULL DEFAULT ''
);
CREATE TABLE titles (
    id {bigint} PRIMARY KEY,
    imdb_id TEXT,
    name TEXT NOT NULL,
    slug TEXT NOT NULL,
    year INTEGER,
    runtime INTEGER,
    released TEXT,
    genres TEXT NOT NULL DEFAULT '[]',
    language TEXT NOT NULL DEFAULT '',
    country TEXT NOT NULL DEFAULT '',
    awards TEXT NOT NULL DEFAULT '',
    oscars INTEGER NOT NULL DEFAULT 0,
    poster_asset TEXT REFERENCES assets (id),
    updated_at {float} NOT NULL
);
CREATE TABLE title_people (
    title_id {bigint} NOT NULL REFERENCES titles (id),
    role TEXT NOT NULL CHECK (role IN ('director', 'writer', 'cast')),
    position INTEGER NOT NULL,
    person_id {bigint} NOT NULL REFERENCES people (id),
    PRIMARY KEY (title_id, role, position)
);
CREATE INDEX title_people_person ON title_people (person_id);
CREATE TABLE title_genres (
    genre TEXT NOT NULL,
    title_id {bigint} NOT NULL REFERENCES titles (id),
    PRIMARY KEY (genre, title_id)
);
CREATE TABLE stories (
    id {id},
    slug TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('draft', 'scheduled', 'published', 'unpublished')),
    revision INTEGER NOT NULL,
    published_revision INTEGER,
    publish_at {float},
    unpublish_at {float},
    published_at {float},
    created_at {float} NOT NULL,
    updated_at {float} NOT NULL,
    updated_by TEXT NOT NULL
);
CREATE INDEX stories_updated ON stories (updated_at);
CREATE TABLE story_revisions (
    story_id {bigint} NOT NULL REFERENCES stories (id),
    revision INTEGER NOT NULL,
    data TEXT NOT NULL,
    created_at {float} NOT NULL,
    author TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT '',
    ingest_status TEXT NOT NULL DEFAULT 'pending',
    ingest_errors TEXT NOT NULL DEFAULT '[]',
    token {bigint},
    ingested_at {float},
    PRIMARY KEY (story_id, revision)
);
CREATE TABLE story_tags (
    tag TEXT NOT NULL,
    story_id {bigint} NOT NULL REFERENCES stories (id),
    PRIMARY KEY (tag, story_id)
);
CREATE TABLE story_refs (
    story_id {bigint} NOT NULL REFERENCES stories (id),
    kind TEXT NOT NULL,
    ref TEXT NOT NULL,
    PRIMARY KEY (kind, ref, story_id)
);
CREATE TABLE layouts (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    revision INTEGER NOT NULL,
    data TEXT NOT NULL,
    updated_at {float} NOT NULL,
    updated_by TEXT NOT NULL,
    ingest_status TEXT NOT NULL DEFAULT 'pending',
    ingest_errors TEXT NOT NULL DEFAULT '[]',
    token {bigint}
);
CREATE TABLE outbox (
    id {id},
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    revision INTEGER,
    payload TEXT NOT NULL DEFAULT '{}',
    created_at {float} NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0,
    available_at {float} NOT NULL,
    claimed_by TEXT,
    claimed_until {float},
    last_error TEXT,
    done_at {float}
);
CREATE INDEX outbox_pending ON outbox (status, id)
"""

_LOOKUP_INDEXES = """
CREATE INDEX title_genres_title ON title_genres (title_id);
CREATE INDEX story_tags_story ON story_tags (story_id);
CREATE INDEX story_refs_story ON story_refs (story_id);
CREATE INDEX titles_poster ON titles (poster_asset)
"""

_OUTBOX_INDEXES = """
CREATE INDEX outbox_subject ON outbox (kind, subject, status, claimed_until)
"""

# The editor's login (issue 22): sessions kept here, not in the cookie, so that removing,
# demoting or re-passwording a user holds on their next request; failed logins, counted
# across every editor process; and the audit log of what editors did.
_LOGIN = """
CREATE TABLE sessions (
    id {id},
    token_hash TEXT NOT NULL UNIQUE,
    user_id {bigint} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at {float} NOT NULL,
    last_seen_at {float} NOT NULL,
    expires_at {float} NOT NULL,
    address TEXT NOT NULL DEFAULT '',
    user_agent TEXT NOT NULL DEFAULT '',
    flash TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX sessions_user ON sessions (user_id);
CREATE INDEX sessions_expires ON sessions (expires_at);
CREATE TABLE login_failures (
    id {id},
    username TEXT NOT NULL,
    address TEXT NOT NULL,
    at {float} NOT NULL
);
CREATE INDEX login_failures_username ON login_failures (username, at);
CREATE INDEX login_failures_address ON login_failures (address, at);
CREATE INDEX login_failures_at ON login_failures (at);
CREATE TABLE audit_log (
    id {id},
    at {float} NOT NULL,
    actor TEXT NOT NULL,
    actor_id {bigint},
    action TEXT NOT NULL,
    subject TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT '',
    address TEXT NOT NULL DEFAULT ''
);
CREATE INDEX audit_log_actor ON audit_log (actor, id);
CREATE INDEX audit_log_action ON audit_log (action, id)
"""

MIGRATIONS: list[tuple[int, str, str]] = [
    (1, "users, people, assets, titles, stories with revisions, layouts, outbox", _CORE),
    (2, "indexes for lookups by title, by story and by poster", _LOOKUP_INDEXES),
    (3, "an index for claiming one subject's events at a time", _OUTBOX_INDEXES),
    (4, "server-side sessions, failed logins and the audit log", _LOGIN),
]
