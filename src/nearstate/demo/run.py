"""``nearstate demo``: the whole platform on one machine, on embedded defaults, until Ctrl-C.

This module sets the demo up and plans its services; the verb (ports, progress, the
banner, signals, stopping) is :mod:`nearstate.cli.demo`, and the services are started and
stopped by :mod:`nearstate.web.processes`.

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

import os
import secrets
import signal
import socket
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import NearstateError
from ..web.processes import Service, nearstate_command
from ..web.settings import Settings

USER = "editor"
LOGIN_FILE = "demo-login"
SAMPLES_USER = "demo"


# -- ports ----------------------------------------------------------------------------------


def browser_host(host: str) -> str:
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
    from ..content.ingest import IngestWorker, ingestor_for, wait_idle, worker_processes
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

        worker = IngestWorker(ingestor_for(store, ds, s.media))
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
    s: Settings, host: str, cms_port: int, site_ports: Sequence[int], workers: int = 1
) -> list[Service]:
    """The services to run: the CMS editor app, the producer and one site per port (each
    a pool of ``workers`` processes sharing the port when more than 1)."""
    cmd = nearstate_command()
    at = browser_host(host)
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
    pool = ["--workers", str(workers)] if workers > 1 else []
    for port, url in zip(site_ports, site_urls, strict=True):
        site = [*cmd, "site", "serve", *common, "--host", host, "--port", str(port)]
        services.append(
            Service(
                f"the site on port {port}",
                f"site-{port}",
                [*site, "--editor-url", cms_url, *pool],
                f"{url}/healthz",
            )
        )
    return services


__all__ = ["LOGIN_FILE", "USER", "Login", "SetUp", "browser_host", "ensure_login", "plan_services",
           "port_free", "set_up"]  # fmt: skip
