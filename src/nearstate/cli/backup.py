"""Backups and clones of a dataset: ``backup``, ``restore`` and ``clone`` (see
:mod:`nearstate.backup`). A dataset is a directory, ``file:///path`` or
``nats://host:4222/name``."""

from __future__ import annotations

from pathlib import Path

import click

from ..backup import backup as backup_dataset
from ..backup import clone as clone_dataset
from ..backup import restore as restore_dataset
from ..errors import NearstateError
from .common import err, existing, fail, out, progress


def _size(n: int) -> str:
    return f"{n / 1e6:,.1f} MB" if n >= 1e6 else f"{n / 1e3:,.1f} kB"


def _bar(quiet: bool) -> bool:
    return not quiet and err.is_terminal


@click.command()
@click.argument("dataset", metavar="DATASET")
@click.argument("out_path", metavar="OUT", type=click.Path(path_type=Path))
@click.option("--quiet", is_flag=True, help="No progress bar.")
def backup(dataset: str, out_path: Path, quiet: bool) -> None:
    """Copy DATASET consistently to OUT: its announced version and the Log's entries past
    it, with a manifest of checksums. OUT is a new directory, or a tar when it ends in
    .tar, .tar.gz or .tgz. Writers and the producer may go on meanwhile; everything
    acknowledged before the backup started is in it."""
    try:
        ds = existing(dataset, holding="anything")
        with progress(_bar(quiet)) as p:
            r = backup_dataset(ds, out_path, report=p)
    except NearstateError as e:
        fail(e)
    what = f"version {r.version}" if r.version is not None else "no version"
    out.print(
        f"Backed up {dataset} to {r.path}: {what} ({r.blobs} blobs) and {r.entries:,} Log "
        f"entries past it, up to position {r.head}; {_size(r.bytes)} in {r.seconds:.1f} s.",
        highlight=False,
    )


@click.command()
@click.argument("backup_path", metavar="BACKUP", type=click.Path(path_type=Path))
@click.argument("dataset", metavar="DATASET")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def restore(backup_path: Path, dataset: str, quiet: bool) -> None:
    """Restore BACKUP (made by 'nearstate backup') as the new dataset DATASET. The backup
    is checked against its manifest first; a damaged or incomplete one is refused, and
    DATASET appears whole or not at all."""
    try:
        with progress(_bar(quiet)) as p:
            r = restore_dataset(backup_path, dataset, report=p)
    except NearstateError as e:
        fail(e)
    what = f"version {r.version}" if r.version is not None else "no version"
    out.print(
        f"Restored {backup_path} into {dataset}: {what} ({r.blobs} blobs) and {r.entries:,} "
        f"Log entries, up to position {r.head}, in {r.seconds:.1f} s.",
        highlight=False,
    )


@click.command()
@click.argument("source", metavar="SRC")
@click.argument("target", metavar="DST")
@click.option("--version", "version", type=int, default=None,
              help="Clone this version exactly (default: the announced one plus the Log "
                   "past it).")  # fmt: skip
@click.option("--quiet", is_flag=True, help="No progress bar.")
def clone(source: str, target: str, version: int | None, quiet: bool) -> None:
    """Make DST a new dataset at a version of SRC that shares its blobs (hard links
    between local directories; copied on NATS). Writes to either never reach the other."""
    try:
        src = existing(source, holding="a version")
        with progress(_bar(quiet)) as p:
            r = clone_dataset(src, target, version=version, report=p)
    except NearstateError as e:
        fail(e)
    shared = f"{r.linked} blobs shared" + (f", {r.copied} copied" if r.copied else "")
    if not r.linked:
        shared = f"{r.copied} blobs copied"
    out.print(
        f"Cloned {source} into {target} at version {r.version} ({shared}) with {r.entries:,} "
        f"Log entries past it, in {r.seconds:.1f} s.",
        highlight=False,
    )


VERBS = [backup, restore, clone]
