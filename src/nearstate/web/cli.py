"""The platform's verbs: ``nearstate cms ...`` and ``nearstate bench cms ...``.

Registered through entry points (see pyproject.toml), so the store's CLI offers them
without importing the platform. Settings come from options, then the environment, then
defaults under ``--data`` (see :mod:`nearstate.web.settings`).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

from ..errors import InputError, NearstateError
from .settings import Settings

_CLI = "(command line)"  # the actor the audit log names for changes made here

err = Console(stderr=True)
out = Console()


def _fail(e: Exception) -> None:
    err.print(f"[bold red]error:[/] {e}", highlight=False)
    sys.exit(1)


@contextmanager
def _bar(enabled: bool = True) -> Iterator[Callable[[str, int, int], None] | None]:
    if not enabled:
        yield None
        return
    with Progress(
        TextColumn("{task.description:<22}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=False,
    ) as bar:
        tasks: dict[str, Any] = {}

        def report(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done, total=total)

        yield report


def _settings(
    data: str, cms: str | None, dataset: str | None = None, media_url: str | None = None
) -> Settings:
    return Settings.load(data, cms=cms, dataset=dataset, media_url=media_url)


_data = click.option(
    "--data",
    default="data",
    show_default=True,
    help="The data directory (write store, dataset, media, secret).",
)
_cms = click.option(
    "--cms",
    "cms_url",
    default=None,
    help="Write store URL (sqlite:///path or postgresql://...); "
    "default DATA/cms.db or $NEARSTATE_CMS.",
)
_dataset = click.option(
    "--dataset",
    default=None,
    help="Dataset (a directory or nats://host:4222/name); "
    "default DATA/dataset or $NEARSTATE_DATASET.",
)


@click.group()
def cms() -> None:
    """The editorial CMS: its write store, editors, films, the editor app and ingestion."""


@cms.command("init")
@_data
@_cms
@click.option("--admin", default=None, help="Create this admin user (asks for a password).")
@click.option("--password", default=None, help="The admin's password (else prompted).")
def cms_init(data: str, cms_url: str | None, admin: str | None, password: str | None) -> None:
    """Create or migrate the write store (and optionally an admin)."""
    from ..content.accounts import create_user
    from ..content.audit import Actor
    from ..content.db import open_store

    try:
        s = _settings(data, cms_url)
        store = open_store(s.cms, migrate=False)
        applied = store.migrate()
        out.print(
            f"Write store {s.cms}: schema version {store.schema_version()}"
            f" ({len(applied)} migration(s) applied now).",
            highlight=False,
        )
        if admin:
            pw = password or click.prompt("Password", hide_input=True, confirmation_prompt=True)
            create_user(store, admin, pw, role="admin", actor=Actor(_CLI))
            out.print(f"Created admin {admin!r}.", highlight=False)
        store.close()
    except NearstateError as e:
        _fail(e)


@cms.command("add-user")
@click.argument("username")
@_data
@_cms
@click.option("--role", type=click.Choice(["editor", "admin"]), default="editor", show_default=True)
@click.option("--name", "display_name", default=None, help="The name shown to others.")
@click.option("--password", default=None, help="The password (else prompted).")
def cms_add_user(
    username: str,
    data: str,
    cms_url: str | None,
    role: str,
    display_name: str | None,
    password: str | None,
) -> None:
    """Create an editor or admin account."""
    from ..content.accounts import create_user
    from ..content.audit import Actor
    from ..content.db import open_store

    try:
        store = open_store(_settings(data, cms_url).cms)
        pw = password or click.prompt("Password", hide_input=True, confirmation_prompt=True)
        create_user(store, username, pw, role=role, display_name=display_name, actor=Actor(_CLI))
        out.print(f"Created {role} {username!r}.", highlight=False)
        store.close()
    except NearstateError as e:
        _fail(e)


@cms.command("set-password")
@click.argument("username")
@_data
@_cms
@click.option("--password", default=None, help="The new password (else prompted).")
def cms_set_password(username: str, data: str, cms_url: str | None, password: str | None) -> None:
    """Set a user's password and log them out everywhere (an operator's way back in when
    the only admin has forgotten theirs). Also lifts a login lock on the name."""
    from ..content import accounts, audit, throttle
    from ..content.db import open_store

    try:
        store = open_store(_settings(data, cms_url).cms)
        row = store.read_one("SELECT id FROM users WHERE username = ?", (username,))
        if row is None:
            raise InputError(f"there is no user {username!r}")
        pw = password or click.prompt("Password", hide_input=True, confirmation_prompt=True)
        n = accounts.reset_password(store, int(row["id"]), pw, actor=audit.Actor(_CLI))
        throttle.clear(store, username)
        out.print(f"Password of {username!r} set; {n} session(s) logged out.", highlight=False)
        store.close()
    except NearstateError as e:
        _fail(e)


@cms.command("import-films")
@_data
@_cms
@_dataset
@click.option("--limit", type=int, default=None, help="Only the first N films.")
@click.option("--no-ingest", is_flag=True, help="Leave the events for a running worker.")
@click.option(
    "--workers",
    type=int,
    default=2,
    show_default=True,
    help="Ingestion processes, working while the import writes (0: none, ingest"
    " in this process afterwards).",
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
def cms_import_films(
    data: str,
    cms_url: str | None,
    dataset: str | None,
    limit: int | None,
    no_ingest: bool,
    workers: int,
    quiet: bool,
) -> None:
    """Import the real films (bokeh_sampledata) as titles and people, with placeholder
    posters, and ingest them into the dataset."""
    import contextlib

    import nearstate

    from ..content import outbox
    from ..content.db import open_store
    from ..content.films import import_films
    from ..content.ingest import Ingestor, IngestWorker, wait_idle, worker_processes
    from ..content.records import SCHEMA

    try:
        s = _settings(data, cms_url, dataset)
        store = open_store(s.cms)
        nearstate.open(s.dataset)  # made once, before any worker opens it
        parallel = workers > 0 and not no_ingest
        t0 = time.perf_counter()
        with (
            _bar(not quiet) as bar,
            (
                worker_processes(s.cms, s.dataset, s.media, workers)
                if parallel
                else contextlib.nullcontext()
            ),
        ):
            got = import_films(
                store,
                limit=limit,
                progress=(lambda d, t: bar("importing films", d, t)) if bar else None,
            )
            t1 = time.perf_counter()
            out.print(
                f"Imported {got.titles:,} films and {got.people:,} new people into the"
                f" write store in {t1 - t0:.1f} s.",
                highlight=False,
            )
            if no_ingest:
                store.close()
                return
            if parallel:
                wait_idle(store, progress=(lambda d, t: bar("ingesting", d, t)) if bar else None)
            else:
                worker = IngestWorker(
                    Ingestor(store, nearstate.open(s.dataset).writer(schema=SCHEMA), s.media)
                )
                total, n = outbox.pending_count(store), 0
                while worker.run_once():
                    n += 1
                    if bar:
                        bar("ingesting", n, max(total, n))
        dead = outbox.dead_letters(store)
        out.print(
            f"Everything ingested into {s.dataset} {time.perf_counter() - t0:.1f} s after"
            " the import began"
            + (
                f"; {len(dead)} event(s) failed for good (see 'nearstate cms status')."
                if dead
                else "."
            ),
            highlight=False,
        )
        store.close()
    except NearstateError as e:
        _fail(e)


@cms.command("ingest")
@_data
@_cms
@_dataset
@click.option("--once", is_flag=True, help="Process what is pending, then stop.")
@click.option(
    "--poll",
    type=float,
    default=0.5,
    show_default=True,
    help="Seconds between looks at the outbox when nothing wakes the worker.",
)
def cms_ingest(
    data: str, cms_url: str | None, dataset: str | None, once: bool, poll: float
) -> None:
    """Run an ingestion worker: outbox events → render-ready records (Ctrl-C stops it)."""
    import nearstate

    from ..content.db import open_store
    from ..content.ingest import Ingestor, IngestWorker
    from ..content.records import SCHEMA

    def show(ev: Any, outcome: Any, error: BaseException | None) -> None:
        what = f"{ev.kind} {ev.subject}" + (f" r{ev.revision}" if ev.revision else "")
        if error is not None:
            err.print(f"[red]failed[/] {what}: {error}", highlight=False)
        elif outcome.problems:
            err.print(
                f"[yellow]invalid[/] {what}: " + "; ".join(map(str, outcome.problems)),
                highlight=False,
            )
        else:
            out.print(
                f"ingested {what}: {outcome.records} record(s), token {outcome.token}",
                highlight=False,
            )

    try:
        s = _settings(data, cms_url, dataset)
        store = open_store(s.cms)
        worker = IngestWorker(
            Ingestor(store, nearstate.open(s.dataset).writer(schema=SCHEMA), s.media),
            poll=poll,
            on_event=show,
        )
        if once:
            n = worker.drain()
            out.print(f"Processed {n} event(s).", highlight=False)
            return
        out.print(f"Ingesting from {s.cms} into {s.dataset}; Ctrl-C stops.", highlight=False)
        worker.start()
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            worker.stop()
            out.print("Stopped.")
    except NearstateError as e:
        _fail(e)


@cms.command("status")
@_data
@_cms
def cms_status(data: str, cms_url: str | None) -> None:
    """Counts of stories, revisions and outbox events, and the dead letters."""
    from ..content import outbox
    from ..content.db import open_store

    try:
        store = open_store(_settings(data, cms_url).cms)
        t = Table(title="write store", show_header=False)
        for label, sql in (
            ("stories", "SELECT COUNT(*) AS n FROM stories"),
            ("published", "SELECT COUNT(*) AS n FROM stories WHERE status = 'published'"),
            ("revisions", "SELECT COUNT(*) AS n FROM story_revisions"),
            ("titles", "SELECT COUNT(*) AS n FROM titles"),
            ("people", "SELECT COUNT(*) AS n FROM people"),
            ("events pending", "SELECT COUNT(*) AS n FROM outbox WHERE status = 'pending'"),
            ("events done", "SELECT COUNT(*) AS n FROM outbox WHERE status = 'done'"),
            ("events dead", "SELECT COUNT(*) AS n FROM outbox WHERE status = 'dead'"),
        ):
            t.add_row(label, f"{store.read_one(sql)['n']:,}")
        out.print(t)
        for d in outbox.dead_letters(store, limit=20):
            err.print(
                f"dead event {d['id']} ({d['kind']} {d['subject']}, {d['attempts']}"
                f" attempts): {d['last_error']}",
                highlight=False,
            )
        store.close()
    except NearstateError as e:
        _fail(e)


@cms.command("retry")
@click.argument("event_ids", type=int, nargs=-1, required=True)
@_data
@_cms
def cms_retry(event_ids: tuple[int, ...], data: str, cms_url: str | None) -> None:
    """Put dead-lettered events back in the queue."""
    from ..content import outbox
    from ..content.db import open_store

    try:
        store = open_store(_settings(data, cms_url).cms)
        for i in event_ids:
            ok = outbox.retry(store, i)
            out.print(
                f"event {i}: " + ("queued again" if ok else "is not a dead event"), highlight=False
            )
        store.close()
    except NearstateError as e:
        _fail(e)


@cms.command("serve")
@_data
@_cms
@_dataset
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--media-url", default=None, help="CDN base URL of asset variants.")
@click.option("--no-worker", is_flag=True, help="Do not run an ingestion worker in process.")
@click.option("--site-url", default=None, help="The public site's URL, linked from the editor.")
@click.option("--quiet", is_flag=True, help="No access log.")
def cms_serve(
    data: str,
    cms_url: str | None,
    dataset: str | None,
    host: str,
    port: int,
    media_url: str | None,
    no_worker: bool,
    site_url: str | None,
    quiet: bool,
) -> None:
    """Serve the editor app (with an ingestion worker in process, by default)."""
    import nearstate

    from ..content.db import open_store
    from .editor import EditorConfig, create_editor_app

    try:
        s = _settings(data, cms_url, dataset, media_url)
        store = open_store(s.cms)
        app = create_editor_app(
            EditorConfig(
                store=store,
                media=s.media,
                secret_key=s.secret,
                dataset=nearstate.open(s.dataset),
                run_worker=not no_worker,
                site_url=site_url,
            )
        )
    except NearstateError as e:
        _fail(e)
    _run(app, host, port, quiet, f"Editor app (write store {s.cms}, dataset {s.dataset})")


def _run(app: Any, host: str, port: int, quiet: bool, what: str) -> None:
    """Serve ``app`` with uvicorn until Ctrl-C, saying what and where first."""
    import uvicorn

    if not quiet:
        out.print(f"{what} on http://{host}:{port}; Ctrl-C stops it.", highlight=False)
    uvicorn.run(
        app, host=host, port=port, log_level="warning" if quiet else "info", access_log=not quiet
    )


# -- the public site ------------------------------------------------------------------------------


@click.group()
def site() -> None:
    """The public site: pages built in each process's memory."""


@site.command("serve")
@_data
@_cms
@_dataset
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8080, show_default=True)
@click.option("--media-url", default=None, help="CDN base URL of asset variants.")
@click.option("--editor-url", default=None, help="The editor app's URL, linked from the footer.")
@click.option("--no-media", is_flag=True, help="Do not serve /media (a CDN does).")
@click.option(
    "--page-cache",
    type=click.IntRange(min=0),
    default=2048,
    show_default=True,
    help="Rendered pages kept per state (0: render every request).",
)
@click.option("--quiet", is_flag=True, help="No access log.")
def site_serve(
    data: str,
    cms_url: str | None,
    dataset: str | None,
    host: str,
    port: int,
    media_url: str | None,
    editor_url: str | None,
    no_media: bool,
    page_cache: int,
    quiet: bool,
) -> None:
    """Serve the public site from this process's own copy of the dataset.

    Run several on different ports (or hosts): each holds the whole state in memory and
    follows new versions and the Log. With the write store at hand (the default data
    directory) it also serves /media, standing in for a CDN's origin."""
    import nearstate

    from ..content.db import StoreError, open_store
    from .site import SiteConfig, create_site_app

    try:
        s = _settings(data, cms_url, dataset, media_url)
        store = None
        if not no_media:
            try:
                store = open_store(s.cms, migrate=False)
            except StoreError as e:
                err.print(f"Not serving /media: {e}", highlight=False)
        app = create_site_app(
            SiteConfig(
                dataset=nearstate.open(s.dataset),
                secret_key=s.secret,
                store=store,
                media=s.media,
                editor_url=editor_url,
                page_cache=page_cache,
            )
        )
    except NearstateError as e:
        _fail(e)
    _run(app, host, port, quiet, f"Site (dataset {s.dataset})")


# -- benchmarks ---------------------------------------------------------------------------------


@click.group("cms")
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

    with _bar(not as_json) as bar:
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

    with _bar(not as_json) as bar:
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

    with _bar(not as_json) as bar:
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


@click.command("site")
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
        with _bar(not as_json) as bar:
            r = bench_site(
                films=films,
                iterations=iterations,
                seconds=seconds,
                connections=connections,
                trials=trials,
                progress=bar,
            )
    except NearstateError as e:
        _fail(e)
    _report(r, as_json, summary(r))


@click.command("compare")
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
        _fail(NearstateError("--iterations, --trials, --old-trials, --connections, --seconds"
                             " and --refresh must be positive"))  # fmt: skip
    try:
        with _bar(not as_json) as bar:
            r = bench_compare(films=films, iterations=iterations, trials=trials,
                              old_trials=old_trials, refresh=refresh, seconds=seconds,
                              connections=connections, nats_url=nats_url, pg_url=pg_url,
                              progress=bar)  # fmt: skip
        command = "nearstate bench compare " + shlex.join(sys.argv[3:] if len(sys.argv) > 3
                                                          else [])  # fmt: skip
        paths = write_report(r, report_dir, name=name, command=command.strip())
    except NearstateError as e:
        _fail(e)
    _report(r, as_json, [*summary(r), "Wrote " + ", ".join(str(p) for p in paths)])
