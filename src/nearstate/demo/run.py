"""``nearstate demo``: the whole platform on one machine, on embedded defaults, until Ctrl-C.

Set-up (in this process, with progress shown; every step is idempotent, so a second run
is quick and an interrupted one carries on where it stopped):

1. the write store is migrated, and an ``editor`` account (role admin, so every page can
   be tried) is made with a random password kept in ``DATA/demo-login`` (mode 0600) and
   printed on every run;
2. the real films are imported and ingested (all 17,472, or the first ``--films N``;
   skipped when the write store already has them);
3. the sample stories and the home layout are made (:mod:`nearstate.demo.samples`),
   unless ``--no-samples``;
4. every pending outbox event is ingested, and the dataset is compacted once, so the
   services start from a version that holds everything.

Then the services, each an OS process of its own (``nearstate ...``), with their output in
``DATA/logs/<name>.log``:

- the CMS editor app with its ingestion worker in process (``cms serve``; in process on
  purpose: on SQLite a save wakes that worker at once, where a separate worker process
  would only poll the outbox);
- the producer (``compact DATASET --follow``), folding the Log into versions;
- one public site per ``--site-port`` (``site serve``; 8080 and 8081 by default).

Contracts:

- Ports are checked before anything is done: a busy port is an error naming the option
  that moves it, and nothing is written or started.
- Each HTTP service must answer (``/login``, ``/healthz``) with 200 within ``--timeout``
  seconds; otherwise, or if a service exits while starting, the error names it and shows
  the end of its log, everything started is stopped, and the exit code is 1.
- Ctrl-C (SIGINT, even if the shell started the demo with it ignored), SIGTERM or SIGHUP
  (unless ignored: ``nohup``) stops every service (SIGTERM to the servers, SIGINT to
  the producer, which finishes its cycle; SIGKILL to whatever still runs after 10 seconds
  or at a second Ctrl-C) and exits 0. A service that exits by itself while running is
  named with its exit code, the others are stopped, and the exit code is 1.
- No child is left behind: each runs in a session of its own (so a terminal's Ctrl-C
  reaches only this process, which stops them in order), is stopped in a ``finally`` on
  every way out, and on Linux is also sent its stop signal by the kernel if this process
  dies without cleaning up (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from ..errors import NearstateError
from ..web.cli import _bar, err, out
from ..web.processes import Service, Services, exit_words, indent, nearstate_command
from ..web.settings import Settings

USER = "editor"
LOGIN_FILE = "demo-login"
SAMPLES_USER = "demo"
# what a data directory made by nearstate holds: --fresh deletes nothing else
_OURS = {"cms.db", "cms.db-wal", "cms.db-shm", "dataset", "media", "secret", LOGIN_FILE, "logs"}


class DemoError(click.ClickException):
    """The demo cannot go on; the message says why in plain words (exit code 1)."""

    def format_message(self) -> str:
        return self.message


class _Stop(BaseException):
    """SIGTERM or SIGHUP arrived: stop like Ctrl-C."""


def _say(message: str) -> None:
    out.print(message, highlight=False, soft_wrap=True)


def _error(message: str) -> None:
    """``error: message`` on stderr; the message is plain text (a log may hold brackets)."""
    from rich.text import Text

    err.print(Text.assemble(("error: ", "bold red"), message), highlight=False, soft_wrap=True)


# -- ports ----------------------------------------------------------------------------------


def _browser_host(host: str) -> str:
    """The host to put in a URL for a server bound to ``host``."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def port_free(host: str, port: int) -> bool:
    """Whether a server could listen on ``host:port`` now (bound as uvicorn binds: with
    ``SO_REUSEADDR``, so a port in TIME_WAIT counts as free)."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)  # fmt: skip
    except socket.gaierror:
        return False
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError:
            return False
    return True


def _check_ports(host: str, cms_port: int, site_ports: Sequence[int]) -> None:
    wanted = [(cms_port, "--cms-port"), *((p, "--site-port") for p in site_ports)]
    seen: set[int] = set()
    for port, option in wanted:
        if not 0 < port < 65536:
            raise DemoError(f"port {port} is not a port number (1 to 65535): pass {option}")
        if port in seen:
            raise DemoError(f"port {port} is given twice: each service needs a port of its own")
        seen.add(port)
        if not port_free(host, port):
            raise DemoError(
                f"port {port} is in use on {host}: pass {option}"
                + (" (once per site)" if option == "--site-port" else "")
                + " to use another"
            )


# -- set-up ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Login:
    user: str
    password: str
    note: str = ""  # something to say about it (a reset, a password that does not work)


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (0600), atomically."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _read_login(path: Path) -> tuple[str, str] | None:
    try:
        fields = dict(line.split(":", 1) for line in path.read_text().splitlines() if ":" in line)
    except FileNotFoundError:
        return None
    user, password = fields.get("user", "").strip(), fields.get("password", "").strip()
    return (user, password) if user and password else None


def ensure_login(store: Any, data: Path) -> Login:
    """The demo's editor account and its password, kept in ``DATA/demo-login``: made on the
    first run, the same on every later one."""
    from ..content.accounts import authenticate, create_user, set_password

    path = data / LOGIN_FILE
    kept = _read_login(path)
    if kept is None:
        exists = store.read_one("SELECT id FROM users WHERE username = ?", (USER,)) is not None
        password = secrets.token_urlsafe(12)
        if exists:
            set_password(store, USER, password)
        else:
            create_user(store, USER, password, role="admin", display_name="Demo editor")
        _write_private(path, f"user: {USER}\npassword: {password}\n")
        note = f"(the password was reset: {path} was missing)" if exists else ""
        return Login(USER, password, note)
    user, password = kept
    if store.read_one("SELECT id FROM users WHERE username = ?", (user,)) is None:
        create_user(store, user, password, role="admin", display_name="Demo editor")
    elif authenticate(store, user, password) is None:
        why = f"(this password, from {path}, no longer works: was it changed in the editor?)"
        return Login(user, password, why)
    return Login(user, password)


def _source_films() -> int:
    from ..content.filmdb import films_path

    path = films_path()
    try:
        con = sqlite3.connect(path.as_uri() + "?mode=ro", uri=True)
        try:
            return int(con.execute("SELECT COUNT(*) FROM omdb").fetchone()[0])
        finally:
            con.close()
    except sqlite3.Error as e:
        raise NearstateError(f"cannot read the film database {path}: {e}") from e


@dataclass
class SetUp:
    """What the set-up did and found."""

    login: Login
    films: int = 0
    imported: bool = False
    stories: tuple[int, ...] = ()
    drafts: list[dict[str, Any]] = field(default_factory=list)  # id, slug, title
    version: int | None = None
    dead: int = 0
    seconds: float = 0.0


def set_up(
    s: Settings,
    *,
    films: int | None,
    samples: bool,
    bar: Callable[[str, int, int], None] | None,
    say: Callable[[str], None],
) -> SetUp:
    """Steps 1-4 of the module's docstring; idempotent."""
    import nearstate

    from ..content import outbox
    from ..content.cms import CMS
    from ..content.db import open_store
    from ..content.films import import_films
    from ..content.ingest import Ingestor, IngestWorker, wait_idle, worker_processes
    from ..content.records import SCHEMA
    from .samples import create_samples

    t0 = time.perf_counter()
    store = open_store(s.cms, migrate=False)
    try:
        applied = store.migrate()
        if applied:
            say(f"Write store {s.cms}: {len(applied)} migration(s) applied.")
        login = ensure_login(store, s.data)
        ds = nearstate.open(s.dataset)
        done = SetUp(login)

        total = _source_films()
        want = total if films is None else max(0, min(films, total))
        have = int(store.read_one("SELECT COUNT(*) AS n FROM titles")["n"])
        done.films = max(have, want)
        if have >= want:
            say(f"{have:,} films are already in the write store.")
        else:
            t = time.perf_counter()
            with worker_processes(s.cms, s.dataset, s.media, 2):
                got = import_films(
                    store,
                    limit=want,
                    progress=(lambda d, n: bar("importing films", d, n)) if bar else None,
                )
                wait_idle(store, progress=(lambda d, n: bar("ingesting films", d, n)) if bar
                          else None)  # fmt: skip
            done.imported = True
            say(f"Imported and ingested {got.titles:,} films in {time.perf_counter() - t:.1f} s.")

        worker = IngestWorker(Ingestor(store, ds.writer(schema=SCHEMA), s.media))
        _drain(worker, store, bar, "ingesting")
        if samples:
            t = time.perf_counter()
            cms = CMS(store)
            r = create_samples(
                cms,
                store,
                s.media,
                user=SAMPLES_USER,
                progress=(lambda d, n: bar("sample stories", d, n)) if bar else None,
            )
            done.stories = r.stories
            done.drafts = [
                {"id": sid, "slug": st["slug"], "title": st["title"]}
                for sid in r.drafts
                for st in [cms.story(sid)]
            ]
            _drain(worker, store, bar, "ingesting stories")
            say(
                f"Sample stories: {len(r.stories)} ({r.created} new, {len(r.published)}"
                f" published, {len(r.drafts)} draft(s)) and the '{r.layout}' layout, made and"
                f" ingested in {time.perf_counter() - t:.1f} s."
            )
        done.dead = len(outbox.dead_letters(store))
        t = time.perf_counter()
        if bar:
            bar("compacting", 0, 1)
        result = ds.compact()
        if bar:
            bar("compacting", 1, 1)
        done.version = result.version if result.version is not None else ds.latest_version()
        if result.version is not None:
            took = time.perf_counter() - t
            say(f"Compacted the Log into version {result.version} in {took:.1f} s.")
        done.seconds = time.perf_counter() - t0
        return done
    finally:
        store.close()


def _drain(worker: Any, store: Any, bar: Callable[[str, int, int], None] | None,
           label: str) -> None:  # fmt: skip
    from ..content import outbox

    total = outbox.pending_count(store)
    if not total:
        return
    n = 0
    while worker.run_once():
        n += 1
        if bar:
            bar(label, n, max(total, n))
    if bar:  # one claim may take several events of the same story
        bar(label, max(total, n), max(total, n))


# -- services -------------------------------------------------------------------------------


def plan_services(
    s: Settings, host: str, cms_port: int, site_ports: Sequence[int]
) -> list[Service]:
    """The services to run: the CMS editor app, the producer and one site per port."""
    cmd = nearstate_command()
    at = _browser_host(host)
    cms_url = f"http://{at}:{cms_port}"
    site_urls = [f"http://{at}:{p}" for p in site_ports]
    common = ["--data", str(s.data), "--cms", s.cms, "--dataset", s.dataset, "--quiet"]
    cms = [*cmd, "cms", "serve", *common, "--host", host, "--port", str(cms_port)]
    if site_urls:
        cms += ["--site-url", site_urls[0]]
    services = [
        Service("the CMS editor app", "cms", cms, f"{cms_url}/login"),
        Service(
            "the producer (compact --follow)",
            "producer",
            [*cmd, "compact", s.dataset, "--follow"],
            None,
            stop_signal=signal.SIGINT,  # it finishes the cycle under way, then exits
        ),
    ]
    for port, url in zip(site_ports, site_urls, strict=True):
        site = [*cmd, "site", "serve", *common, "--host", host, "--port", str(port)]
        services.append(
            Service(
                f"the site on port {port}",
                f"site-{port}",
                [*site, "--editor-url", cms_url],
                f"{url}/healthz",
            )
        )
    return services


# -- the command ----------------------------------------------------------------------------


@contextlib.contextmanager
def _signals() -> Iterator[None]:
    """For the duration of the block, SIGINT raises KeyboardInterrupt and SIGTERM and SIGHUP
    raise :class:`_Stop` in the main thread. SIGINT even when it was ignored (as a shell
    without job control leaves it for a command run in the background): Ctrl-C and
    ``kill -INT`` always stop the demo, and the services start with it at its default, so
    they stop on it too. A SIGHUP ignored (``nohup``) stays ignored."""

    def stop(signum: int, frame: Any) -> None:
        raise _Stop(signal.Signals(signum).name)

    old = {signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler)}
    old[signal.SIGTERM] = signal.signal(signal.SIGTERM, stop)
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        old[signal.SIGHUP] = signal.signal(signal.SIGHUP, stop)
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _fresh(data: Path, yes: bool) -> None:
    if not data.exists():
        return
    if not data.is_dir():
        raise DemoError(f"{data} is not a directory; --fresh deletes only a demo's data directory")
    foreign = sorted(p.name for p in data.iterdir() if p.name not in _OURS)
    if foreign:
        raise DemoError(
            f"{data} holds things a demo did not make ({', '.join(foreign[:5])}); --fresh"
            " deletes nothing else: delete it yourself, or pick another --data"
        )
    if not yes and not click.confirm(f"Delete {data} and everything in it?", default=False):
        raise DemoError("Nothing was deleted; run without --fresh to keep the data.")
    shutil.rmtree(data)
    _say(f"Deleted {data}.")


def _banner(done: SetUp, services: list[Service], s: Settings, cms_port: int,
            site_ports: Sequence[int], host: str, started: float) -> None:  # fmt: skip
    at = _browser_host(host)
    cms = f"http://{at}:{cms_port}"
    sites = [f"http://{at}:{p}" for p in site_ports]
    lines = [
        "",
        f"nearstate demo is running (set-up {done.seconds:.1f} s, services ready"
        f" {started:.1f} s later).",
        "",
        f"  CMS editor app  {cms}",
        f"                  log in as {done.login.user}, password {done.login.password}"
        + (f" {done.login.note}" if done.login.note else ""),
        *(f"  Site            {u}" for u in sites),
        "  Producer        folds the Log into a new version every second",
        "",
        f"  {done.films:,} films; dataset {s.dataset}"
        + (f" (version {done.version})" if done.version is not None else "")
        + f"; logs in {services[0].log.parent if services[0].log else s.data / 'logs'}/;"
        f" the login is kept in {s.data / LOGIN_FILE}.",
    ]
    if done.dead:
        lines.append(
            f"  {done.dead} outbox event(s) failed for good: nearstate cms status --data {s.data}"
        )
    lines += ["", "Things to try:"]
    site = sites[0] if sites else None
    if done.drafts:
        d = done.drafts[0]
        lines.append(
            f"  1. In the editor ({cms}/stories/{d['id']}), open the draft “{d['title']}”,"
            " change a line, save, and press Preview: it shows exactly that save."
        )
        if site:
            lines.append(
                "  2. Publish it, then open it on every site at once: "
                + ", ".join(f"{u}/stories/{d['slug']}" for u in sites)
                + " (it is there within milliseconds, on every site)."
            )
    else:
        lines.append(f"  1. Write a story in the editor ({cms}), preview it and publish it.")
        if site:
            lines.append(f"  2. See it on every site at once: {', '.join(sites)}.")
    if site:
        lines += [
            f"  3. Search: {site}/search?q=oscar",
            f"  4. A site's metrics (Prometheus text): {site}/metrics",
            f"  5. Read a few stories of a genre, then the home page learns it: {site}/profile",
        ]
    lines += ["", "Ctrl-C stops everything."]
    for line in lines:
        _say(line)
    sys.stdout.flush()


@click.command("demo")
@click.option("--data", default="data/demo", show_default=True,
              help="The data directory (write store, dataset, media, logs).")  # fmt: skip
@click.option("--host", default="127.0.0.1", show_default=True, help="Where the services listen.")
@click.option("--cms-port", type=int, default=8000, show_default=True,
              help="The CMS editor app's port.")  # fmt: skip
@click.option("--site-port", "site_ports", type=int, multiple=True, default=(8080, 8081),
              show_default=True, help="A public site's port (repeat for more sites).")  # fmt: skip
@click.option("--films", type=int, default=None,
              help="Import only the first N films (quicker; default all 17,472).")  # fmt: skip
@click.option("--fresh", is_flag=True, help="Delete DATA first (asks unless --yes).")
@click.option("--yes", is_flag=True, help="Do not ask before --fresh deletes DATA.")
@click.option("--no-samples", is_flag=True, help="No sample stories or home layout.")
@click.option("--timeout", type=float, default=120.0, show_default=True,
              help="Seconds each service has to answer once started.")  # fmt: skip
def demo(
    data: str,
    host: str,
    cms_port: int,
    site_ports: tuple[int, ...],
    films: int | None,
    fresh: bool,
    yes: bool,
    no_samples: bool,
    timeout: float,
) -> None:
    """Run the whole platform on this machine until Ctrl-C: the CMS editor app (with its
    ingestion worker), the producer and two public sites, after importing the real films
    and making sample stories (once; later runs start in seconds)."""
    if films is not None and films < 1:
        raise DemoError("--films takes a number of films, at least 1")
    _check_ports(host, cms_port, site_ports)
    if fresh:
        _fresh(Path(os.environ.get("NEARSTATE_DATA") or data), yes)
    services: Services | None = None
    code = 0
    with _signals():
        try:
            s = Settings.load(data)
            with _bar(True) as bar:
                done = set_up(s, films=films, samples=not no_samples, bar=bar,
                              say=_say)  # fmt: skip
            plan = plan_services(s, host, cms_port, site_ports)
            services = Services(plan, s.data / "logs")
            t = time.perf_counter()
            services.start()
            with _bar(True) as bar:
                services.wait_ready(timeout, bar)
            _banner(done, plan, s, cms_port, site_ports, host, time.perf_counter() - t)
            svc, exit_code = services.watch()
            err.print(
                f"[bold red]{svc.name} stopped unexpectedly ({exit_words(exit_code)}).[/]"
                f" Stopping the others. Its log is {svc.log}:",
                highlight=False,
                soft_wrap=True,
            )
            tail = svc.tail()
            if tail:
                err.print(indent(tail), highlight=False, markup=False, soft_wrap=True)
            code = 1
        except (KeyboardInterrupt, _Stop) as e:
            why = "Ctrl-C" if isinstance(e, KeyboardInterrupt) else str(e)
            _say(f"\n{why}: stopping.")
        except (NearstateError, TimeoutError) as e:
            _error(str(e))
            code = 1
        except DemoError as e:
            _error(e.message)
            code = 1
        finally:
            if services is not None:
                running = [svc.name for svc in services.services if svc.running()]
                killed = services.stop()
                if running:
                    how = f" ({_and([k.name for k in killed])} had to be killed)" if killed else ""
                    _say(f"Stopped {_and(running)}{how}.")
    sys.stdout.flush()
    sys.exit(code)


def _and(items: Sequence[str]) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


__all__ = ["DemoError", "demo", "ensure_login", "plan_services",
           "port_free", "set_up"]  # fmt: skip
