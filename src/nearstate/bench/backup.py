"""How long backups, restores and clones of a dataset take, and how big a backup is.

    python -m nearstate.bench.backup [-n 100000] [--entries 1000] [--runs 3] [--nats URL]

Makes a dataset of ``-n`` generated catalogue records (:func:`write_catalog`), folds
``--entries`` single-record commits into a second version and leaves as many more in the
Log past it, then times, ``--runs`` times
each, in this process (no interpreter start-up): a backup to a directory and to a
``.tar.gz``, a restore of the directory into a new local dataset, and a local clone; with
``--nats``, the same dataset restored into NATS, backed up from there and restored back.
Prints the median and the spread of each, and the backup's size.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..backup import backup, clone, restore
from ..dataset import open_dataset
from ..jsonl import import_jsonl
from .datasets import write_catalog


def _timed(runs: int, fn: Callable[[int], Any]) -> list[float]:
    out = []
    for r in range(runs):
        t0 = time.perf_counter()
        fn(r)
        out.append(time.perf_counter() - t0)
    return out


def _line(what: str, xs: list[float]) -> str:
    return (f"{what:<34} median {statistics.median(xs):7.3f} s  "
            f"(min {min(xs):.3f}, max {max(xs):.3f}, {len(xs)} runs)")  # fmt: skip


def run(n: int, entries: int, runs: int, nats: str | None, work: Path) -> list[str]:
    data = work / "catalog.jsonl"
    write_catalog(data, n)
    src = open_dataset(work / "src")
    import_jsonl(data, type_name="Product", key="id", into=work / "src")
    w, products = src.writer(), src.load()["Product"]
    for i in range(1, 2 * entries + 1):
        w.upsert("Product", {**products[i].to_dict(), "title": f"Changed {i}"})
        if i == entries:
            src.compact()  # a version that includes Log positions, as a running system has
    lines = [f"dataset: {n:,} records in version {src.latest_version()} (a snapshot and a "
             f"delta, at Log position {entries:,}), {entries:,} Log entries past it"]  # fmt: skip
    lines.append(
        _line("backup to a directory", _timed(runs, lambda r: backup(src, work / f"b{r}")))
    )
    size = sum(p.stat().st_size for p in (work / "b0").rglob("*") if p.is_file())
    lines.append(
        _line("backup to a .tar.gz", _timed(runs, lambda r: backup(src, work / f"b{r}.tgz")))
    )
    tgz = (work / "b0.tgz").stat().st_size
    lines.append(
        _line("restore (local)", _timed(runs, lambda r: restore(work / "b0", work / f"r{r}")))
    )
    lines.append(
        _line("clone (local, hard links)", _timed(runs, lambda r: clone(src, work / f"c{r}")))
    )
    lines.append(f"backup size: {size / 1e6:.1f} MB as a directory, {tgz / 1e6:.1f} MB as .tar.gz")
    if nats:
        from ..dataset import NatsDataset

        names: list[str] = []

        def url() -> str:
            names.append(f"bench-backup-{uuid.uuid4().hex[:8]}")
            return f"{nats.rstrip('/')}/{names[-1]}"

        try:
            home = url()
            restore(work / "b0", home)
            lines.append(
                _line("restore (into NATS)", _timed(runs, lambda r: restore(work / "b0", url())))
            )
            ds = open_dataset(home)
            lines.append(
                _line("backup (from NATS)", _timed(runs, lambda r: backup(ds, work / f"n{r}")))
            )
        finally:
            for name in names:
                d = NatsDataset(nats, name, cache=None)
                d.delete()
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=100_000, help="records (default 100,000)")
    ap.add_argument("--entries", type=int, default=1_000, help="Log entries past the version")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--nats", default=None, help="also through this NATS server (nats://...)")
    ap.add_argument("--work", default=None, help="working directory (default: a temporary one)")
    a = ap.parse_args(argv)
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="nearstate-bench-backup-"))
    try:
        for line in run(a.n, a.entries, a.runs, a.nats, work):
            print(line, flush=True)
    finally:
        if not a.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
