"""Start and stop the platform's processes: one supervisor for the demo and the benchmarks.

A :class:`Service` is one child process (``nearstate cms serve``, ``site serve``,
``compact --follow``, an old-path role ...) with its output in a log file of its own and,
for a server, the URL that answers 200 once it is ready. :class:`Services` starts a list
of them together, waits until they answer, watches them and stops them together.

Contracts:

- A child runs in a session of its own (a terminal's Ctrl-C reaches only the parent,
  which stops the children in order) and, on Linux, is sent its stop signal by the kernel
  if the parent dies without cleaning up (``PR_SET_PDEATHSIG``).
- :meth:`Services.wait_ready` and :meth:`Services.check_alive` raise
  :class:`ServiceError` naming the service and showing the end of its log.
- :meth:`Services.stop` sends each its stop signal, then SIGKILL to the process group
  after ``grace`` seconds (or at once on a second Ctrl-C), and never leaves one running.
- Never raises from :meth:`Services.stop`; callable more than once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ..errors import NearstateError

STOP_GRACE = 10.0


class ServiceError(NearstateError):
    """A child process exited while it should run, or did not answer in time; the message
    names it and shows the end of its log."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def nearstate_command() -> list[str]:
    """How to run ``nearstate`` in a child process with this interpreter."""
    script = Path(sys.executable).with_name("nearstate")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from nearstate.cli import main;"
            " sys.exit(main(prog_name='nearstate'))"]  # fmt: skip


def death_signal(sig: int) -> Callable[[], None] | None:
    """A preexec_fn asking Linux to send ``sig`` to the child when this process dies
    (everything it calls is looked up before the fork)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()
    getppid, exit_ = os.getppid, os._exit

    def set_it() -> None:
        prctl(1, sig, 0, 0, 0)  # PR_SET_PDEATHSIG
        if getppid() != parent:  # the parent died before prctl: nobody is left to stop us
            exit_(1)

    return set_it


@dataclass
class Service:
    """One child process: its command, its log, and the URL that says it is ready."""

    name: str  # in messages: "the CMS editor app", "the site on port 8080"
    key: str  # its log's name
    argv: list[str]
    health: str | None  # the URL that answers 200 when it is ready
    stop_signal: int = signal.SIGTERM
    log: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    _log_file: IO[bytes] | None = None

    def start(self, logs: Path, env: dict[str, str]) -> None:
        self.log = logs / f"{self.key}.log"
        if self.log.exists():
            self.log.replace(self.log.with_suffix(".log.1"))  # the previous run's, kept
        self._log_file = open(self.log, "wb")  # noqa: SIM115 (closed in close())
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=death_signal(self.stop_signal),
        )

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def send(self, sig: int) -> None:
        """Send ``sig`` to the child's whole process group."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def close(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def tail(self, lines: int = 15) -> str:
        if self.log is None:
            return ""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.rstrip().splitlines()[-lines:])

    def ready(self) -> bool:
        """Whether the health URL answers 200 now."""
        if self.health is None:
            return True
        try:
            with urllib.request.urlopen(self.health, timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False


def exit_words(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _failure(svc: Service, what: str) -> ServiceError:
    tail = svc.tail()
    msg = f"{svc.name} {what}. Its log is {svc.log}"
    return ServiceError(msg + (":\n" + indent(tail) if tail else " (empty)."))


def indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


class Services:
    """Child processes started together and stopped together (the demo's services, a
    benchmark's system, the old path's processes)."""

    def __init__(self, services: list[Service], logs: Path, env: Mapping[str, str] | None = None):
        self.services = services
        self.logs = logs
        self.env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        self._hurry = False

    def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        for svc in self.services:
            svc.start(self.logs, self.env)

    def run(self, svc: Service) -> Service:
        """Start one more service (in place of the one with the same key, which must have
        exited) and return it."""
        self.logs.mkdir(parents=True, exist_ok=True)
        self.services = [s for s in self.services if s.key != svc.key] + [svc]
        svc.start(self.logs, self.env)
        return svc

    def procs(self) -> dict[str, subprocess.Popen[bytes]]:
        """The started services' processes by key."""
        return {svc.key: svc.proc for svc in self.services if svc.proc is not None}

    def check_alive(self) -> None:
        """ServiceError naming the first service that has exited."""
        for svc in self.services:
            if svc.proc is not None and svc.proc.poll() is not None:
                raise _failure(svc, f"exited ({exit_words(svc.proc.returncode)})")

    def __enter__(self) -> Services:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_ready(
        self, timeout: float, tick: Callable[[str, int, int], None] | None = None
    ) -> None:
        """Until every service answers; ServiceError naming the first that exits or is not
        ready within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        pending = list(self.services)
        total = len(pending)
        while pending:
            for svc in self.services:
                if not svc.running():
                    assert svc.proc is not None
                    raise _failure(
                        svc, f"stopped while starting ({exit_words(svc.proc.returncode)})"
                    )
            pending = [svc for svc in pending if not svc.ready()]
            if tick:
                tick("starting services", total - len(pending), total)
            if not pending:
                return
            if time.monotonic() > deadline:
                svc = pending[0]
                raise _failure(svc, f"did not answer {svc.health} within {timeout:g} s")
            time.sleep(0.1)

    def watch(self) -> tuple[Service, int]:
        """Block until a service exits; return it and its exit code."""
        while True:
            for svc in self.services:
                assert svc.proc is not None
                code = svc.proc.poll()
                if code is not None:
                    return svc, code
            time.sleep(0.2)

    def stop(self, grace: float = STOP_GRACE) -> list[Service]:
        """Stop every service: its stop signal, then SIGKILL after ``grace`` seconds (or
        at once on a second Ctrl-C); returns those that had to be killed."""
        started = [svc for svc in self.services if svc.proc is not None]
        for svc in started:
            if svc.running():
                svc.send(svc.stop_signal)

        def hurry(signum: int, frame: Any) -> None:
            self._hurry = True

        previous: dict[int, Any] = {}
        with contextlib.suppress(ValueError):  # not the main thread: no handlers
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                previous[sig] = signal.signal(sig, hurry)
        try:
            deadline = time.monotonic() + grace
            while any(svc.running() for svc in started):
                if self._hurry or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            killed = [svc for svc in started if svc.running()]
            for svc in started:  # the group too: nothing a service started outlives it
                svc.send(signal.SIGKILL)
            for svc in started:
                assert svc.proc is not None
                with contextlib.suppress(subprocess.TimeoutExpired):
                    svc.proc.wait(5)
                svc.close()
            return killed
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


__all__ = ["STOP_GRACE", "Service", "ServiceError", "Services", "death_signal", "exit_words",
           "free_port", "indent", "nearstate_command"]  # fmt: skip
