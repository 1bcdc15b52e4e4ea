"""``nearstate demo``: the whole platform on one machine, on embedded defaults, until Ctrl-C.

What it sets up and runs, and its contracts, are in :mod:`nearstate.demo.run`; this module
is the verb: ports checked first, progress and the banner, signals, and stopping every
service on every way out.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import click

from ..demo.run import (
    LOGIN_FILE,
    SetUp,
    browser_host,
    plan_services,
    port_free,
    set_up,
)
from ..errors import NearstateError
from ..web.processes import Service, Services, exit_words, indent
from ..web.settings import Settings
from .common import err, out, progress

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
    at = browser_host(host)
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
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes per site, sharing its port (one copy of the state "
              "per host).")  # fmt: skip
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
    workers: int,
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
            with progress(True) as bar:
                done = set_up(s, films=films, samples=not no_samples, bar=bar,
                              say=_say)  # fmt: skip
            plan = plan_services(s, host, cms_port, site_ports, workers)
            services = Services(plan, s.data / "logs")
            t = time.perf_counter()
            services.start()
            with progress(True) as bar:
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
