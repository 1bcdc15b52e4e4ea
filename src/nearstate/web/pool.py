"""A pool of worker processes serving one ASGI app on one port, each worker replaced when
it dies.

The parent binds the listening socket once and forks the workers; each worker makes its
own app (its own consumer of the dataset: mapped files, so the host holds one copy of
the state), waits until the app says it is ready, and only then accepts connections from
the shared socket with uvicorn. The parent runs no thread and only watches.

With ``app_in_parent`` the parent makes the app once, and uvicorn's configuration for
it, before the fork; every worker (a replacement too) starts that same, never-started
app, so the code and objects of the app's construction are shared pages instead of a
copy per worker (about 2 MB a worker for the site). Only for apps whose construction
opens nothing a fork cannot share (no connection, no thread: they start in the app's
lifespan). Before forking, the parent collects and freezes its objects (``gc.freeze``):
a worker's collections then skip them and do not write to, and so copy, their pages.

Contracts:

- **One queue**: every worker accepts from the same listening socket, so a connection
  waits in the kernel's queue until some live worker takes it. A worker that dies takes
  with it only the connections it had accepted; the others never notice.
- **Replaced**: a worker that exits while the pool runs is replaced by a new one, which
  joins once it is ready (a starting worker never answers "starting"). A worker that dies
  within ``quick`` seconds of its start ``give_up`` times in a row stops the pool (a
  broken configuration does not fork forever); :func:`serve_pool` then raises
  :class:`PoolError`.
- **Stopped together**: SIGINT or SIGTERM to the parent stops the workers (SIGTERM: uvicorn
  finishes its requests), SIGKILL after ``grace`` seconds; on Linux a worker is sent
  SIGTERM by the kernel if the parent dies without stopping it.
- ``say`` reports what happened (workers started, died, replaced) in plain words.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from ..errors import NearstateError
from .processes import death_signal, exit_words

STOP_GRACE = 10.0


class PoolError(NearstateError):
    """The pool could not run: its port, or workers that keep dying as they start."""


def bind(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` that forked workers inherit."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise PoolError(f"cannot listen on {host}:{port}: {e.strerror or e}") from e
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


def serve_pool(
    make_app: Callable[[], Any],
    sock: socket.socket,
    workers: int,
    *,
    ready: Callable[[Any], None] | None = None,
    log_level: str = "info",
    access_log: bool = True,
    say: Callable[[str], None] = print,
    grace: float = STOP_GRACE,
    quick: float = 2.0,
    give_up: int = 5,
    app_in_parent: bool = False,
) -> None:
    """Run ``workers`` processes serving ``make_app()`` (made in each worker) on ``sock``
    until SIGINT or SIGTERM; ``ready(app)`` blocks in a new worker until its app can
    answer (then it starts accepting). ``app_in_parent``: ``make_app()`` is called once,
    in the parent, before the fork (see the module's docstring). Raises PoolError if
    workers keep dying at start."""
    if workers < 1:
        raise PoolError(f"--workers takes a number of workers, at least 1 (got {workers})")
    import importlib

    # loaded before the fork, so the workers share their pages (what uvicorn loads when
    # a server starts included)
    for name in ("uvicorn", "uvicorn.loops.auto", "uvicorn.protocols.http.auto",
                 "uvicorn.protocols.websockets.auto", "uvicorn.lifespan.on"):  # fmt: skip
        with contextlib.suppress(ImportError):
            importlib.import_module(name)

    made = _Made(make_app, log_level, access_log) if app_in_parent else None
    # what the parent loaded is shared with the workers copy-on-write: kept out of the
    # collector's reach, a worker's collections do not write to (and so copy) its pages
    gc.collect()
    gc.freeze()
    stopping = False

    def stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    old = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    alive: dict[int, tuple[int, float]] = {}  # pid -> (slot, started at)
    quick_deaths = 0
    try:
        for slot in range(workers):
            pid = _fork(made or make_app, sock, ready, log_level, access_log)
            alive[pid] = (slot, time.monotonic())
        say(f"Started {workers} worker(s): pids {', '.join(map(str, alive))}.")
        while not stopping:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                pid, status = 0, 0
            if pid == 0:
                time.sleep(0.1)
                continue
            if pid not in alive:
                continue
            slot, started = alive.pop(pid)
            if stopping:
                break
            code = os.waitstatus_to_exitcode(status)
            quick_deaths = quick_deaths + 1 if time.monotonic() - started < quick else 0
            if quick_deaths >= give_up:
                raise PoolError(
                    f"workers keep stopping as they start (the last: {exit_words(code)}); "
                    "see the log above"
                )
            new = _fork(made or make_app, sock, ready, log_level, access_log)
            alive[new] = (slot, time.monotonic())
            say(f"Worker {slot} (pid {pid}) stopped ({exit_words(code)}); "
                f"started pid {new} in its place.")  # fmt: skip
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        _stop_all(alive, grace)


class _Made:
    """An app made in the parent and uvicorn's configuration for it, loaded: what every
    worker starts."""

    def __init__(self, make_app: Callable[[], Any], log_level: str, access_log: bool):
        import uvicorn

        self.app = make_app()
        self.config = uvicorn.Config(self.app, log_level=log_level, access_log=access_log)
        self.config.load()


def _fork(make_app: Callable[[], Any] | _Made, sock: socket.socket,
          ready: Callable[[Any], None] | None, log_level: str, access_log: bool
          ) -> int:  # fmt: skip
    pdeath = death_signal(signal.SIGTERM)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, signal.SIG_DFL)
        if pdeath is not None:
            pdeath()
        code = _worker(make_app, sock, ready, log_level, access_log)
    except BaseException:  # the worker's last word, then its exit
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return 0  # never reached


def _worker(make_app: Callable[[], Any] | _Made, sock: socket.socket,
            ready: Callable[[Any], None] | None, log_level: str, access_log: bool
            ) -> int:  # fmt: skip
    import uvicorn

    if isinstance(make_app, _Made):
        app, config = make_app.app, make_app.config
    else:
        app = make_app()
        config = uvicorn.Config(app, log_level=log_level, access_log=access_log)
    if ready is not None:
        ready(app)
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
    return 0


def _stop_all(alive: dict[int, tuple[int, float]], grace: float) -> None:
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while alive and time.monotonic() < deadline:
        for pid in list(alive):
            with contextlib.suppress(ChildProcessError):
                done, _ = os.waitpid(pid, os.WNOHANG)
                if not done:
                    continue
            alive.pop(pid, None)
        time.sleep(0.05)
    for pid in list(alive):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


__all__ = ["PoolError", "bind", "serve_pool"]
