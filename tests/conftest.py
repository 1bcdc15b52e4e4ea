"""Fixtures shared by the test modules."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest

from history import Child


def pytest_report_header(config: pytest.Config) -> str:
    """Which nats-server the tests that start their own run (see natsserver.binary)."""
    import natsserver

    return natsserver.describe()


@pytest.fixture(scope="session", autouse=True)
def _blob_cache_of_the_run() -> Iterator[None]:
    """NATS datasets keep fetched blobs in a host cache (nearstate.backends.blob_cache):
    the tests' go to a directory of this run, removed at its end, not the user's."""
    if "NEARSTATE_CACHE_DIR" in os.environ:
        yield
        return
    d = tempfile.mkdtemp(prefix="nearstate-test-cache-")
    os.environ["NEARSTATE_CACHE_DIR"] = d
    yield
    os.environ.pop("NEARSTATE_CACHE_DIR", None)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def children() -> Iterator[list[Child]]:
    """Child processes a test starts; any still running at the end are killed."""
    procs: list[Child] = []
    yield procs
    for p in procs:
        p.close()


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """A CMS write store URL: a SQLite file, or a PostgreSQL schema of the test's own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'cms.db'}"
        return
    from pgserver import private_schema

    with private_schema() as url:
        yield url


@pytest.fixture
def write_store(store_url: str) -> Iterator[object]:
    """An open, migrated CMS write store (SQLite and PostgreSQL); closed afterwards."""
    from nearstate.content.db import open_store

    store = open_store(store_url)
    yield store
    store.close()
