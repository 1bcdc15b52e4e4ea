"""The store's verbs: ``import``, ``doctor``, ``inspect``, ``export``, ``lookup``, ``diff``,
``history``, ``versions`` and ``cleanup``. Each says what happened in plain words; errors
print one line naming what was wrong and exit 1."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click
import msgspec
from rich.table import Table

from .. import _native
from ..dataset import LocalDataset
from ..encoding import describe_layout
from ..errors import NearstateError
from ..jsonl import export_jsonl, import_jsonl, record_to_json
from .common import err, existing, fail, out, parse_key, progress


def _size(n: int) -> str:
    return f"{n / 1e6:,.1f} MB" if n >= 1e6 else f"{n / 1e3:,.1f} kB"


@click.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--type", "type_name", required=True, help="Record type name, e.g. Movie.")
@click.option(
    "--key", required=True, help="Primary key field (comma-separate for a composite key)."
)
@click.option("--into", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Dataset directory (created if needed).")  # fmt: skip
@click.option("--quiet", is_flag=True, help="No progress bar.")
def import_cmd(file: Path, type_name: str, key: str, into: Path, quiet: bool) -> None:
    """Import a JSON Lines FILE as a new version of the dataset in --into.

    The schema is inferred from the records. A malformed line (bad JSON, a missing or
    duplicate key, a value that contradicts the field's type) stops the import with the
    line number and field, and nothing is published.
    """
    keys = tuple(k.strip() for k in key.split(","))
    try:
        with progress(not quiet and (err.is_terminal or file.stat().st_size > 50 << 20)) as p:
            res = import_jsonl(file, type_name=type_name, key=keys, into=into, progress=p)
    except NearstateError as e:
        fail(e)
    size = _size(res.blob_bytes)
    if not res.changed:
        out.print(
            f"Read {res.records:,} {type_name} records from {file}: nothing changed, so "
            f"{into} stays at version {res.version} ({res.seconds:.1f} s).",
            highlight=False,
        )
        return
    if res.changes is None:
        what = f"{size} snapshot"
    else:
        parts = [
            f"{n}: {len(c.added):,} added, {len(c.modified):,} changed, {len(c.removed):,} removed"
            for n, c in res.changes.items()
        ]
        what = (
            "; ".join(parts)
            + f"; {size} of "
            + ("delta, reverse delta and snapshot" if res.snapshot else "delta and reverse delta")
        )
    out.print(
        f"Imported {res.records:,} {type_name} records from {file} into {into} as version "
        f"{res.version} ({what}, {res.seconds:.1f} s).",
        highlight=False,
    )


@click.command()
def doctor() -> None:
    """Say which core reads the state (compiled or pure Python) and why, and from where."""
    import platform

    import numpy

    click.echo(f"nearstate core: {_native.describe()}")
    if _native.core is not None:
        click.echo(f"  extension: {_native.core.__file__}")
    else:
        click.echo("  the pure-Python core gives the same results, several times slower")
        if "NEARSTATE_PURE" not in (_native.why_pure or ""):
            click.echo("  reinstall with a C compiler and Python headers to build the compiled one")
    click.echo(f"python {platform.python_version()} ({sys.executable}), numpy {numpy.__version__}")


@click.command()
@click.argument("directory", metavar="DATASET")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def inspect(directory: str, as_json: bool) -> None:
    """Show a dataset's version, types, record counts and bytes per type and field."""
    try:
        ds = existing(directory, holding="a version")
        state = ds.load()
    except NearstateError as e:
        fail(e)
    info: dict[str, Any] = {
        "dataset": state.dataset, "version": state.version, "bytes": state.nbytes,
        "tags": state.tags, "core": _native.NAME, "types": {},
    }  # fmt: skip
    if not isinstance(ds, LocalDataset) or ds.log.path.exists():
        try:
            info["log"] = ds.log.stats()
        except NearstateError as e:
            info["log"] = {"error": str(e)}
    base = state.base
    sections = base.blob.section_sizes
    for name, ts in state.types.items():
        cols = (base.blob.header["types"].get(name) or {}).get("columns", {})
        info["types"][name] = {
            "records": len(ts),
            "key": list(ts.typedef.key) if ts.typedef.key else None,
            "bytes": ts.nbytes,
            "fields": {
                f.name: {
                    "type": f.type.spec(),
                    "bytes": ts.field_nbytes()[f.name],
                    "layout": describe_layout(cols.get(f.name, {}), sections, f"{name}/{f.name}"),
                }
                for f in ts.typedef.fields
            },
        }
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    out.print(
        f"[bold]{state.dataset}[/] version {state.version}: {state.nbytes / 1e6:,.2f} MB "
        f"in {len(info['types'])} types (core: {_native.describe()})",
        highlight=False,
    )
    lg = info.get("log")
    if lg is not None:
        if "error" in lg:
            out.print(f"log: {lg['error']}", highlight=False)
        else:
            out.print(
                f"log: {lg['entries']:,} commits kept (tokens {lg['floor'] + 1}–{lg['head']}), "
                f"{lg['bytes'] / 1e6:,.2f} MB; this version includes up to token "
                f"{state.tags.get('log_position', 0)}",
                highlight=False,
            )
    for name, t in info["types"].items():
        kind = f"key {', '.join(t['key'])}" if t["key"] else "nested"
        table = Table(title=f"{name} — {t['records']:,} records, {kind}, {t['bytes']:,} bytes",
                      title_justify="left")  # fmt: skip
        table.add_column("field")
        table.add_column("type")
        table.add_column("bytes", justify="right")
        table.add_column("bytes/record", justify="right")
        table.add_column("layout")
        for fname, f in t["fields"].items():
            per = f["bytes"] / t["records"] if t["records"] else 0
            table.add_row(fname, f["type"], f"{f['bytes']:,}", f"{per:,.1f}", f["layout"])
        out.print(table)


@click.command()
@click.argument("directory", metavar="DATASET")
@click.option("--type", "type_name", required=True, help="Record type to export.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write here instead of standard output.")  # fmt: skip
def export(directory: str, type_name: str, output: Path | None) -> None:
    """Write a type's records as JSON Lines (the same records an import took in)."""
    try:
        state = existing(directory, holding="a version").load()
        if output is None:
            n = export_jsonl(state, type_name, sys.stdout.buffer)
            sys.stdout.buffer.flush()
        else:
            with open(output, "wb") as f:
                n = export_jsonl(state, type_name, f)
            err.print(f"Exported {n:,} {type_name} records to {output}.", highlight=False)
    except NearstateError as e:
        fail(e)


@click.command()
@click.argument("directory", metavar="DATASET")
@click.argument("type_name")
@click.option("--field", "fields", multiple=True, help="Print only these fields.")
def lookup(directory: str, type_name: str, fields: tuple[str, ...]) -> None:
    """Serve lookups: load the dataset once, then answer one key per line of standard input.

    Each answer is one JSON line (or ``null`` for an unknown key) with the time it took.
    """
    try:
        t0 = time.perf_counter()
        state = existing(directory, holding="a version").load()
        ts = state[type_name]
        for f in fields:
            ts.column(f)
    except NearstateError as e:
        fail(e)
    err.print(
        f"Loaded {state.dataset} version {state.version} ({len(ts):,} {type_name} records) in "
        f"{(time.perf_counter() - t0) * 1e3:.1f} ms. Type a key per line; Ctrl-D ends.",
        highlight=False,
    )
    for line in sys.stdin:
        text = line.strip()
        if not text:
            continue
        t1 = time.perf_counter_ns()
        try:
            rec = ts.get(parse_key(ts, text))
        except NearstateError as e:
            err.print(f"[red]{e}[/]", highlight=False)
            continue
        if rec is None:
            body = None
        elif fields:
            body = {f: rec[f] for f in fields}
        else:
            body = record_to_json(rec)
        took = (time.perf_counter_ns() - t1) / 1e3
        click.echo(msgspec.json.encode(body).decode())
        err.print(
            f"[dim]{text}: {'found' if rec else 'not found'} in {took:.1f} µs[/]", highlight=False
        )


def _short(v: Any, width: int = 60) -> str:
    text = json.dumps(v, default=str, ensure_ascii=False)
    return text if len(text) <= width else text[: width - 1] + "…"


@click.command()
@click.argument("directory", metavar="DATASET")
@click.argument("v1", type=int)
@click.argument("v2", type=int)
@click.option("--limit", type=int, default=20, show_default=True,
              help="Changed records shown per type (all with --json).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def diff(directory: str, v1: int, v2: int, limit: int, as_json: bool) -> None:
    """Show the records added, removed and changed from version V1 to V2, per type, with
    the fields that changed."""
    from ..history import diff_versions

    try:
        ds = existing(directory, holding="a version")
        d = diff_versions(ds.blobs, v1, v2)
    except NearstateError as e:
        fail(e)
    if as_json:
        click.echo(json.dumps({
            n: {"added": t.added, "removed": t.removed,
                "changed": [{"key": k, "fields": {f: {"before": a, "after": b}
                                                  for f, (a, b) in fc.items()}}
                            for k, fc in t.changed.items()]}
            for n, t in d.items()
        }, default=str, indent=2))  # fmt: skip
        return
    if not d:
        out.print(f"Versions {v1} and {v2} hold the same records.", highlight=False)
        return
    for name, t in d.items():
        out.print(
            f"[bold]{name}[/]: {len(t.added):,} added, {len(t.changed):,} changed, "
            f"{len(t.removed):,} removed",
            highlight=False,
        )
        for k in t.added[:limit]:
            out.print(f"  [green]+ {_short(k)}[/]", highlight=False)
        for k in t.removed[:limit]:
            out.print(f"  [red]- {_short(k)}[/]", highlight=False)
        for k, fc in list(t.changed.items())[:limit]:
            out.print(f"  [yellow]~ {_short(k)}[/]", highlight=False)
            for f, (a, b) in fc.items():
                out.print(f"      {f}: {_short(a)} → {_short(b)}", highlight=False)
        more = max(0, len(t.added) - limit) + max(0, len(t.removed) - limit)
        more += max(0, len(t.changed) - limit)
        if more:
            out.print(f"  … and {more:,} more (use --limit or --json)", highlight=False)


@click.command()
@click.argument("directory", metavar="DATASET")
@click.argument("type_name")
@click.argument("key")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def history(directory: str, type_name: str, key: str, as_json: bool) -> None:
    """Show the versions in which the TYPE_NAME record KEY changed, and what changed."""
    from ..history import record_history

    try:
        ds = existing(directory, holding="a version")
        ts = ds.load()[type_name]
        k = parse_key(ts, key)
        entries = record_history(ds.blobs, type_name, k)
    except NearstateError as e:
        fail(e)
    if as_json:
        click.echo(json.dumps([
            {"version": e.version, "created": e.created, "change": e.change,
             "fields": {f: {"before": a, "after": b} for f, (a, b) in e.fields.items()}}
            for e in entries
        ], default=str, indent=2))  # fmt: skip
        return
    if not entries:
        out.print(f"No kept version holds or changed {type_name} {key!r}.", highlight=False)
        return
    for e in entries:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.created)) if e.created else ""
        out.print(f"[bold]version {e.version}[/] {when}  {e.change}", highlight=False)
        for f, (a, b) in e.fields.items():
            if e.change == "added":
                out.print(f"    {f}: {_short(b)}", highlight=False)
            elif e.change == "modified":
                out.print(f"    {f}: {_short(a)} → {_short(b)}", highlight=False)


@click.command()
@click.argument("directory", metavar="DATASET")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def versions(directory: str, as_json: bool) -> None:
    """List the kept versions: which blobs each has and how many records it changed."""
    from ..versions import Catalog, read_record

    try:
        ds = existing(directory, holding="a version")
        cat = Catalog(ds.blobs)
        rows = []
        for v in sorted(cat.records | cat.snapshots):
            try:
                rec = read_record(ds.blobs, v)
            except NearstateError:
                rec = {"version": v}
            rows.append({
                "version": v, "created": rec.get("created"),
                "snapshot": v in cat.snapshots, "delta": v in cat.deltas,
                "reverse": v in cat.reverses, "changes": rec.get("changes"),
            })  # fmt: skip
        current = ds.latest_version()
    except NearstateError as e:
        fail(e)
    if as_json:
        click.echo(json.dumps({"announced": current, "versions": rows}, indent=2))
        return
    table = Table("version", "created", "blobs", "changes", title=f"{directory}")
    for r in rows:
        blobs = ", ".join(b for b in ("snapshot", "delta", "reverse") if r[b]) or "—"
        ch = r["changes"]
        text = "first version or new schema" if ch is None else "; ".join(
            f"{n} +{c['added']:,} ~{c['modified']:,} -{c['removed']:,}" for n, c in ch.items()
        )  # fmt: skip
        when = (
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["created"]))
            if r["created"] else ""
        )  # fmt: skip
        mark = " (announced)" if r["version"] == current else ""
        table.add_row(f"{r['version']}{mark}", when, blobs, text)
    out.print(table)


@click.command()
@click.argument("directory", metavar="DATASET")
@click.option("--keep", type=click.IntRange(min=1), default=5, show_default=True,
              help="Snapshots to keep (with the deltas between them).")  # fmt: skip
def cleanup(directory: str, keep: int) -> None:
    """Delete versions older than the newest KEEP snapshots."""
    try:
        ds = existing(directory, holding="a version")
        gone = ds.cleanup(keep)
    except NearstateError as e:
        fail(e)
    if not gone:
        out.print(f"Nothing to delete: {directory} holds at most {keep} snapshots.",
                  highlight=False)  # fmt: skip
        return
    out.print(f"Deleted {len(gone):,} blobs older than the newest {keep} snapshots; "
              f"versions {', '.join(map(str, ds.versions()[:1]))}… remain.",
              highlight=False)  # fmt: skip


VERBS = [import_cmd, doctor, inspect, export, lookup, diff, history, versions, cleanup]
