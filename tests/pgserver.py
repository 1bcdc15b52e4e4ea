"""A PostgreSQL database for the CMS tests.

``pg_url()`` is ``NEARSTATE_PG_URL`` if set, else ``postgresql://postgres@127.0.0.1:5432/test``
when something answers there. Without one the PostgreSQL tests skip with the reason,
except under ``CI``, where they fail. Each test gets a schema of its own (dropped after it),
reached through ``options=-csearch_path=...`` in the URL, so tests never see each other's
rows.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Iterator
from urllib.parse import quote, urlsplit

import pytest

DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"


def pg_url() -> str:
    url = os.environ.get("NEARSTATE_PG_URL") or DEFAULT
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5432), 0.5):
            pass
    except OSError as e:
        why = f"no PostgreSQL for the tests at {url}: {e} (set NEARSTATE_PG_URL)"
        if os.environ.get("CI"):
            pytest.fail(why + "; under CI these tests must run")
        pytest.skip(why)
    return url


@contextlib.contextmanager
def private_schema() -> Iterator[str]:
    """A URL whose connections work in a fresh schema; the schema is dropped afterwards."""
    import psycopg

    base = pg_url()
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}options={quote(f'-csearch_path={name}')}"
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
