"""What every group of verbs shares: the consoles, how an error ends a verb, the progress
bar, and how a verb opens the dataset and reads the key it is given.

Imports only the store, so the store's verbs load nothing of the platform (the platform
verbs' own options are in :mod:`nearstate.cli.platform`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, NoReturn

import msgspec
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

from ..dataset import Dataset, open_dataset
from ..errors import DatasetError, SchemaError
from ..jsonl import record_to_json
from ..read_state import TypeState

err = Console(stderr=True)
out = Console()

Report = Callable[[str, int, int], None]

# the import's phases in words; other phases are shown as they are named
_PHASES = {
    "read": "reading and staging",
    "stage": "staging records",
    "write": "joining and writing",
}


def fail(e: Exception) -> NoReturn:
    """Print ``error: e`` on stderr and exit 1."""
    err.print(f"[bold red]error:[/] {e}", highlight=False)
    sys.exit(1)


@contextmanager
def progress(enabled: bool = True) -> Iterator[Report | None]:
    """A progress bar on stderr, one line per phase, as ``report(phase, done, total)``
    (None when not ``enabled``).

    Drawn on each report, not by rich's refresh thread: an import forks worker processes
    only from a process that runs one thread (see :func:`nearstate.jsonl.import_jsonl`).
    """
    if not enabled:
        yield None
        return
    with Progress(
        TextColumn("{task.description:<22}"), BarColumn(), TaskProgressColumn(),
        TimeRemainingColumn(), console=err, transient=False, auto_refresh=False,
    ) as bar:  # fmt: skip
        tasks: dict[str, Any] = {}

        def report(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(_PHASES.get(phase, phase), total=total)
            bar.update(tasks[phase], completed=done, total=total, refresh=True)

        yield report


def existing(target: str | Path, *, holding: Literal["a version", "anything"]) -> Dataset:
    """The dataset named by a directory or URL (``file:///path``, ``nats://host:4222/name``),
    which must hold ``"a version"`` (one announced: what the read verbs need) or
    ``"anything"`` (a version or commits in its Log: what the write path's verbs need).
    DatasetError naming ``target`` otherwise."""
    name = str(target)
    url = name if "://" in name else Path(name)
    if holding == "a version":
        if isinstance(url, Path) and not (url / "announced.json").is_file():
            raise DatasetError(f"{target} holds no dataset (no announced.json)")
        ds = open_dataset(url)
        if ds.announced() is None:
            raise DatasetError(f"{target} holds no dataset (nothing announced)")
        return ds
    if isinstance(url, Path) and not url.is_dir():
        raise DatasetError(f"{target} holds no dataset (nothing published or written)")
    ds = open_dataset(url)
    if not ds.exists():
        raise DatasetError(f"{target} holds no dataset (nothing published or written)")
    return ds


def parse_key(ts: TypeState, text: str) -> Any:
    """A key typed on the command line, converted to the key field's type."""
    assert ts.typedef.key is not None
    parts = [text] if len(ts.typedef.key) == 1 else text.split(",")
    if len(parts) != len(ts.typedef.key):
        raise SchemaError(
            f"{ts.name} has a composite key ({', '.join(ts.typedef.key)}): give "
            f"{len(ts.typedef.key)} values separated by commas"
        )
    vals = []
    for name, part in zip(ts.typedef.key, parts, strict=True):
        kind = ts.typedef.field(name).type.kind
        if kind == "int":
            try:
                vals.append(int(part))
            except ValueError:
                raise SchemaError(f"{ts.name}.{name} is an integer; {part!r} is not") from None
        else:
            vals.append(part)
    return vals[0] if len(vals) == 1 else tuple(vals)


def to_json(rec: Any) -> bytes:
    """A record as indented JSON."""
    return msgspec.json.format(msgspec.json.encode(record_to_json(rec)), indent=2)
