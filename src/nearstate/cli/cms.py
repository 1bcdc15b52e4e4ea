"""``nearstate cms ...``: the editorial CMS — its write store, editors, the films, the
editor app and ingestion. Settings come from options, then the environment, then defaults
under ``--data`` (see :mod:`nearstate.web.settings`)."""

from __future__ import annotations

import time
from typing import Any

import click
from rich.table import Table

from ..errors import InputError, NearstateError
from .common import err, fail, out, progress
from .platform import app_options, cms_option, data_option, dataset_option, serve, settings

CLI_ACTOR = "(command line)"  # the actor the audit log names for changes made here


@click.group()
def cms() -> None:
    """The editorial CMS: its write store, editors, films, the editor app and ingestion."""


@cms.command("init")
@data_option
@cms_option
@click.option("--admin", default=None, help="Create this admin user (asks for a password).")
@click.option("--password", default=None, help="The admin's password (else prompted).")
def cms_init(data: str, cms_url: str | None, admin: str | None, password: str | None) -> None:
    """Create or migrate the write store (and optionally an admin)."""
    from ..content.accounts import create_user
    from ..content.audit import Actor
    from ..content.db import open_store

    try:
        s = settings(data, cms_url)
        store = open_store(s.cms, migrate=False)
        applied = store.migrate()
        out.print(
            f"Write store {s.cms}: schema version {store.schema_version()}"
            f" ({len(applied)} migration(s) applied now).",
            highlight=False,
        )
        if admin:
            pw = password or click.prompt("Password", hide_input=True, confirmation_prompt=True)
            create_user(store, admin, pw, role="admin", actor=Actor(CLI_ACTOR))
            out.print(f"Created admin {admin!r}.", highlight=False)
        store.close()
    except NearstateError as e:
        fail(e)


@cms.command("add-user")
@click.argument("username")
@data_option
@cms_option
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
        store = open_store(settings(data, cms_url).cms)
        pw = password or click.prompt("Password", hide_input=True, confirmation_prompt=True)
        create_user(
            store, username, pw, role=role, display_name=display_name, actor=Actor(CLI_ACTOR)
        )
        out.print(f"Created {role} {username!r}.", highlight=False)
        store.close()
    except NearstateError as e:
        fail(e)


@cms.command("set-password")
@click.argument("username")
@data_option
@cms_option
@click.option("--password", default=None, help="The new password (else prompted).")
def cms_set_password(username: str, data: str, cms_url: str | None, password: str | None) -> None:
    """Set a user's password and log them out everywhere (an operator's way back in when
    the only admin has forgotten theirs). Also lifts a login lock on the name."""
    from ..content import accounts, audit, throttle
    from ..content.db import open_store

    try:
        store = open_store(settings(data, cms_url).cms)
        row = store.read_one("SELECT id FROM users WHERE username = ?", (username,))
        if row is None:
            raise InputError(f"there is no user {username!r}")
        pw = password or click.prompt("Password", hide_input=True, confirmation_prompt=True)
        n = accounts.reset_password(store, int(row["id"]), pw, actor=audit.Actor(CLI_ACTOR))
        throttle.clear(store, username)
        out.print(f"Password of {username!r} set; {n} session(s) logged out.", highlight=False)
        store.close()
    except NearstateError as e:
        fail(e)


@cms.command("import-films")
@data_option
@cms_option
@dataset_option
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
    from ..content.ingest import IngestWorker, ingestor_for, wait_idle, worker_processes

    try:
        s = settings(data, cms_url, dataset)
        store = open_store(s.cms)
        nearstate.open(s.dataset)  # made once, before any worker opens it
        parallel = workers > 0 and not no_ingest
        t0 = time.perf_counter()
        with (
            progress(not quiet) as bar,
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
                worker = IngestWorker(ingestor_for(store, s.dataset, s.media))
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
        fail(e)


@cms.command("ingest")
@data_option
@cms_option
@dataset_option
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

    from ..content.db import open_store
    from ..content.ingest import IngestWorker, ingestor_for

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
        s = settings(data, cms_url, dataset)
        store = open_store(s.cms)
        worker = IngestWorker(ingestor_for(store, s.dataset, s.media), poll=poll, on_event=show)
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
        fail(e)


@cms.command("status")
@data_option
@cms_option
def cms_status(data: str, cms_url: str | None) -> None:
    """Counts of stories, revisions and outbox events, and the dead letters."""
    from ..content import outbox
    from ..content.cms import CMS
    from ..content.db import open_store

    try:
        store = open_store(settings(data, cms_url).cms)
        t = Table(title="write store", show_header=False)
        stories = CMS(store).counts()
        events = outbox.counts(store)
        for label, n in (
            ("stories", stories["stories"]),
            ("published", stories["published"]),
            ("revisions", stories["revisions"]),
            ("titles", store.read_one("SELECT COUNT(*) AS n FROM titles")["n"]),
            ("people", store.read_one("SELECT COUNT(*) AS n FROM people")["n"]),
            ("events pending", events["pending"]),
            ("events done", events["done"]),
            ("events dead", events["dead"]),
        ):
            t.add_row(label, f"{n:,}")
        out.print(t)
        for d in outbox.dead_letters(store, limit=20):
            err.print(
                f"dead event {d['id']} ({d['kind']} {d['subject']}, {d['attempts']}"
                f" attempts): {d['last_error']}",
                highlight=False,
            )
        store.close()
    except NearstateError as e:
        fail(e)


@cms.command("retry")
@click.argument("event_ids", type=int, nargs=-1, required=True)
@data_option
@cms_option
def cms_retry(event_ids: tuple[int, ...], data: str, cms_url: str | None) -> None:
    """Put dead-lettered events back in the queue."""
    from ..content import outbox
    from ..content.db import open_store

    try:
        store = open_store(settings(data, cms_url).cms)
        for i in event_ids:
            ok = outbox.retry(store, i)
            out.print(
                f"event {i}: " + ("queued again" if ok else "is not a dead event"), highlight=False
            )
        store.close()
    except NearstateError as e:
        fail(e)


@cms.command("serve")
@app_options(port=8000)
@click.option("--no-worker", is_flag=True, help="Do not run an ingestion worker in process.")
@click.option("--site-url", default=None, help="The public site's URL, linked from the editor.")
@click.option("--quiet", is_flag=True, help="No access log.")
@click.option(
    "--idle-timeout",
    type=click.IntRange(0, 7 * 24 * 60),
    default=120,
    show_default=True,
    help="Minutes without a request after which a login ends (0: never).",
)
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
    idle_timeout: int,
) -> None:
    """Serve the editor app (with an ingestion worker in process, by default)."""
    import nearstate

    from ..content.db import open_store
    from ..web.editor import EditorConfig, create_editor_app

    try:
        s = settings(data, cms_url, dataset, media_url)
        store = open_store(s.cms)
        app = create_editor_app(
            EditorConfig(
                store=store,
                media=s.media,
                secret_key=s.secret,
                dataset=nearstate.open(s.dataset),
                run_worker=not no_worker,
                site_url=site_url,
                session_idle_timeout=idle_timeout * 60,
            )
        )
    except NearstateError as e:
        fail(e)
    serve(app, host, port, quiet, f"Editor app (write store {s.cms}, dataset {s.dataset})")


@cms.command("backup")
@click.argument("out_path", metavar="OUT")
@data_option
@cms_option
@click.option("--quiet", is_flag=True, help="No progress bar.")
def cms_backup(out_path: str, data: str, cms_url: str | None, quiet: bool) -> None:
    """Back up the write store and its media to OUT (a new directory, or a tar when it ends
    in .tar, .tar.gz or .tgz): SQLite through its online backup API, PostgreSQL with
    pg_dump. Editors may go on working meanwhile."""
    from ..content.backup import backup_cms

    try:
        s = settings(data, cms_url)
        with progress(not quiet and err.is_terminal) as p:
            r = backup_cms(s.cms, s.media.root, out_path, report=p)
    except NearstateError as e:
        fail(e)
    out.print(
        f"Backed up the {r.dialect} write store {s.cms} (schema version {r.schema_version}: "
        f"{r.stories:,} stories, {r.assets:,} assets) and {r.media_files:,} media files "
        f"to {r.path}; {r.bytes / 1e6:,.1f} MB in {r.seconds:.1f} s.",
        highlight=False,
    )


@cms.command("restore")
@click.argument("backup_path", metavar="BACKUP")
@data_option
@cms_option
@click.option("--quiet", is_flag=True, help="No progress bar.")
def cms_restore(backup_path: str, data: str, cms_url: str | None, quiet: bool) -> None:
    """Restore BACKUP (made by 'nearstate cms backup') into a new write store and media
    directory. The backup is checked first; a damaged one is refused, and nothing is
    written over an existing store or media."""
    from ..content.backup import restore_cms

    try:
        s = settings(data, cms_url)
        with progress(not quiet and err.is_terminal) as p:
            r = restore_cms(backup_path, s.cms, s.media.root, report=p)
    except NearstateError as e:
        fail(e)
    out.print(
        f"Restored {backup_path} into the write store {s.cms} (schema version "
        f"{r.schema_version}: {r.stories:,} stories, {r.assets:,} assets) and "
        f"{r.media_files:,} media files into {s.media.root}, in {r.seconds:.1f} s.",
        highlight=False,
    )
