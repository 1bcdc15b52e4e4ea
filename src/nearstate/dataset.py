"""A local dataset directory: snapshot blobs and the announcement of the current version.

Layout::

    DIR/
      announced.json                  {"version": N, "snapshot": "snapshots/..."}
      snapshots/00000000000000000001.blob

A version is published by writing its blob (temp file, fsync, rename) and only then
replacing ``announced.json`` the same way, so a reader never sees a version whose blob is
incomplete, and a crash mid-publish leaves the previous version announced.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .blob import _fsync_dir
from .errors import DatasetError
from .read_state import ReadState, load
from .schema import Schema
from .write_state import WriteState

ANNOUNCED = "announced.json"


class LocalDataset:
    """A dataset kept in a local directory (created on first publish)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"LocalDataset({str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.path.resolve().name

    def exists(self) -> bool:
        return (self.path / ANNOUNCED).is_file()

    def announced(self) -> dict[str, Any] | None:
        """The current announcement, or None if nothing was ever published."""
        try:
            return json.loads((self.path / ANNOUNCED).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise DatasetError(f"{self.path}: cannot read {ANNOUNCED}: {e}") from e

    def latest_version(self) -> int | None:
        a = self.announced()
        return None if a is None else int(a["version"])

    def snapshot_path(self, version: int) -> Path:
        return self.path / "snapshots" / f"{version:020d}.blob"

    def load(
        self, version: int | None = None, *, mmap: bool = True, verify: bool = True,
        schema: Schema | None = None,
    ) -> ReadState:  # fmt: skip
        """Load the announced version (or ``version``)."""
        if version is None:
            version = self.latest_version()
            if version is None:
                raise DatasetError(
                    f"{self.path} holds no dataset yet (no {ANNOUNCED}); "
                    "create one with 'nearstate import'"
                )
        p = self.snapshot_path(version)
        if not p.is_file():
            raise DatasetError(f"{self.path}: version {version} has no snapshot")
        return load(p, mmap=mmap, verify=verify, schema=schema)

    def publish(self, ws: WriteState, *, tags: dict[str, str] | None = None) -> int:
        """Write ``ws`` as the next version's snapshot and announce it. Returns the version."""
        version = (self.latest_version() or 0) + 1
        p = self.snapshot_path(version)
        p.parent.mkdir(parents=True, exist_ok=True)
        ws.write_snapshot(p, dataset=self.name, version=version, tags=tags)
        self._announce({"version": version, "snapshot": str(p.relative_to(self.path))})
        return version

    def _announce(self, obj: dict[str, Any]) -> None:
        tmp = self.path / f".{ANNOUNCED}.tmp-{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path / ANNOUNCED)
        _fsync_dir(self.path)
