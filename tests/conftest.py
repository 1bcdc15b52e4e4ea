"""Fixtures shared by the test modules."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from history import Child


@pytest.fixture
def children() -> Iterator[list[Child]]:
    """Child processes a test starts; any still running at the end are killed."""
    procs: list[Child] = []
    yield procs
    for p in procs:
        p.close()
