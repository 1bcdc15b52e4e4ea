"""``nearstate demo`` run for real, as a user runs it: set-up, the CMS, the producer and two
sites as processes of their own, Ctrl-C, a busy port, a service that dies. No test may
leave a process behind."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from nearstate.content.db import open_store
from nearstate.demo.run import LOGIN_FILE, USER, ensure_login, port_free

NEARSTATE = str(Path(sys.executable).with_name("nearstate"))
FILMS = "300"
RUNNING = "nearstate demo is running"


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Demo:
    """One ``nearstate demo`` process, its output read as it comes."""

    def __init__(self, data: Path, *args: str, sigint_ignored: bool = False):
        self.ports = free_ports(3)
        cms, a, b = self.ports
        argv = [NEARSTATE, "demo", "--data", str(data), "--films", FILMS, "--timeout", "60"]
        argv += ["--cms-port", str(cms), "--site-port", str(a), "--site-port", str(b), *args]
        self.err_path = data.parent / f"demo-{cms}.err"
        self._err = open(self.err_path, "w")  # noqa: SIM115 (closed in close())
        ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint_ignored else None
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=self._err,
            text=True,
            start_new_session=True,
            preexec_fn=ignore,
        )
        self.lines: list[str] = []
        self.running = threading.Event()
        self.pids: set[int] = set()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if RUNNING in line:
                self.running.set()

    @property
    def out(self) -> str:
        return "".join(self.lines)

    @property
    def err(self) -> str:
        return self.err_path.read_text()

    def wait_running(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not self.running.wait(0.2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"the demo is not running (exit {self.proc.poll()}):\n{self.out}\n{self.err}"
                )
        time.sleep(0.3)  # the rest of the banner
        self.pids = {p.pid for p in self.children()}

    def children(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def service(self, *words: str) -> psutil.Process:
        for p in self.children():
            with_args = " ".join(p.cmdline())
            if all(w in with_args for w in words):
                return p
        raise AssertionError(f"no child process runs {words}")

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the demo did not stop within {timeout} s:\n{self.out}\n{self.err}")

    def close(self) -> None:
        """Kill whatever is left (a failed test must not leave processes behind)."""
        pids = {self.proc.pid, *self.pids, *(p.pid for p in self.children())}
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                p = psutil.Process(pid)
                if "nearstate" in " ".join(p.cmdline()):  # not a pid reused since
                    p.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        self._err.close()

    def assert_no_children_left(self) -> None:
        assert self.pids, "no child pids were recorded"
        deadline = time.monotonic() + 5
        alive = self.pids
        while alive and time.monotonic() < deadline:
            alive = {p for p in alive if _alive(p)}
            time.sleep(0.1)
        assert not alive, f"processes left behind: {alive}"


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data directory for the module: the first run sets it up, later runs reuse it."""
    return tmp_path_factory.mktemp("demo") / "data"


@pytest.fixture
def demo(data: Path) -> Iterator[list[Demo]]:
    started: list[Demo] = []
    yield started
    for d in started:
        d.close()


def urls(out: str) -> list[str]:
    return list(dict.fromkeys(re.findall(r"http://127\.0\.0\.1:\d+(?=\s|$)", out)))


def test_the_demo_runs_the_platform_until_ctrl_c(data: Path, demo: list[Demo]) -> None:
    # started as a shell without job control starts a background command: SIGINT ignored
    d = Demo(data, sigint_ignored=True)
    demo.append(d)
    d.wait_running()
    cms_port, a, b = d.ports
    cms, site_a, site_b = (f"http://127.0.0.1:{p}" for p in d.ports)
    assert urls(d.out)[:3] == [cms, site_a, site_b]

    # the login: printed, kept for the owner only, and it works
    login = (data / LOGIN_FILE).read_text()
    password = re.search(r"password: (\S+)", login).group(1)
    assert f"log in as {USER}, password {password}" in d.out
    assert stat.S_IMODE((data / LOGIN_FILE).stat().st_mode) == 0o600

    # four services, each a process of its own
    d.service("cms", "serve", str(cms_port))
    d.service("compact", "--follow")
    d.service("site", "serve", str(a))
    d.service("site", "serve", str(b))
    with httpx.Client(timeout=10) as http:
        assert http.get(f"{cms}/login").status_code == 200
        for site in (site_a, site_b):
            assert http.get(f"{site}/healthz").status_code == 200
            home = http.get(f"{site}/")
            assert home.status_code == 200 and "Featured" in home.text

        # publish the draft the banner suggests: both sites show it
        m = re.search(r"/stories/(\d+)\), open the draft", d.out)
        slug = re.search(rf"{site_a}/stories/([a-z0-9-]+)", d.out).group(1)
        assert m and http.get(f"{site_a}/stories/{slug}").status_code == 404  # a draft
        r = http.post(f"{cms}/api/login", json={"username": USER, "password": password})
        assert r.status_code == 200, r.text
        r = http.post(
            f"{cms}/api/stories/{m.group(1)}/publish",
            json={},
            headers={"X-CSRF-Token": r.json()["csrf"]},
        )
        assert r.status_code == 200, r.text
        for site in (site_a, site_b):
            deadline = time.monotonic() + 10
            while http.get(f"{site}/stories/{slug}").status_code != 200:
                assert time.monotonic() < deadline, f"{site} never showed the published story"
                time.sleep(0.05)

    d.proc.send_signal(signal.SIGINT)
    assert d.wait(30) == 0, d.err
    assert "Stopped the CMS editor app, the producer" in d.out
    assert "had to be killed" not in d.out  # each stopped on its signal
    d.assert_no_children_left()
    assert all(port_free("127.0.0.1", p) for p in d.ports)


def test_a_service_that_dies_stops_the_demo(data: Path, demo: list[Demo]) -> None:
    d = Demo(data)
    demo.append(d)
    d.wait_running()
    assert "films are already in the write store" in d.out  # set-up is done once
    assert "(0 new," in d.out
    _, _, b = d.ports
    site = d.service("site", "serve", str(b))
    site.send_signal(signal.SIGKILL)
    code = d.wait(30)
    assert code == 1
    assert f"the site on port {b} stopped unexpectedly (killed by SIGKILL)" in d.err
    assert "Stopped the CMS editor app" in d.out
    d.assert_no_children_left()


def test_sigterm_stops_it_too(data: Path, demo: list[Demo]) -> None:
    d = Demo(data)
    demo.append(d)
    d.wait_running()
    d.proc.send_signal(signal.SIGTERM)
    assert d.wait(30) == 0, d.err
    assert "SIGTERM: stopping." in d.out and "had to be killed" not in d.out
    d.assert_no_children_left()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_services_stop_even_when_the_demo_is_killed(data: Path, demo: list[Demo]) -> None:
    d = Demo(data)
    demo.append(d)
    d.wait_running()
    d.proc.kill()  # no chance to clean up: the kernel tells the services
    assert d.wait(10) == -signal.SIGKILL
    d.assert_no_children_left()


@pytest.mark.parametrize("which", ["--cms-port", "--site-port"])
def test_a_busy_port_is_refused_before_anything_starts(tmp_path: Path, which: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cms, a, b = free_ports(3)
        ports = {"--cms-port": cms, "--site-port": a}
        ports[which] = port
        argv = [NEARSTATE, "demo", "--data", str(tmp_path / "data"), "--films", FILMS,
                "--cms-port", str(ports["--cms-port"]), "--site-port", str(ports["--site-port"]),
                "--site-port", str(b)]  # fmt: skip
        r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert f"port {port} is in use on 127.0.0.1: pass {which}" in r.stderr
    assert not (tmp_path / "data").exists()  # nothing was made, nothing started


def test_fresh_deletes_only_a_demo_data_directory(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "thesis.tex").write_text("years of work")
    cms, a, b = free_ports(3)
    argv = [NEARSTATE, "demo", "--data", str(tmp_path / "data"), "--fresh", "--yes",
            "--cms-port", str(cms), "--site-port", str(a), "--site-port", str(b)]  # fmt: skip
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "holds things a demo did not make (thesis.tex)" in r.stderr
    assert (tmp_path / "data" / "thesis.tex").read_text() == "years of work"


def test_the_login_is_made_once_and_kept(tmp_path: Path) -> None:
    from nearstate.content.accounts import authenticate

    store = open_store(f"sqlite:///{tmp_path / 'cms.db'}")
    try:
        first = ensure_login(store, tmp_path)
        assert first.user == USER and len(first.password) >= 10 and not first.note
        assert authenticate(store, USER, first.password)["role"] == "admin"
        assert stat.S_IMODE((tmp_path / LOGIN_FILE).stat().st_mode) == 0o600
        assert ensure_login(store, tmp_path) == first
        os.unlink(tmp_path / LOGIN_FILE)  # lost: a new password, and it says so
        again = ensure_login(store, tmp_path)
        assert again.password != first.password and "reset" in again.note
        assert authenticate(store, USER, again.password) and not authenticate(
            store, USER, first.password
        )
    finally:
        store.close()


def test_a_service_that_fails_to_start_is_named_with_its_log(tmp_path: Path) -> None:
    from nearstate.web.processes import Service, ServiceError, Services

    port = free_ports(1)[0]
    crash = "import sys; print('cannot start: [bad] config'); sys.exit(3)"
    services = Services(
        [
            Service(
                "the sleeper",
                "sleeper",
                [sys.executable, "-c", "import time; time.sleep(60)"],
                None,
            ),
            Service(
                "the broken one",
                "broken",
                [sys.executable, "-c", crash],
                f"http://127.0.0.1:{port}/healthz",
            ),
        ],
        tmp_path / "logs",
    )
    services.start()
    pids = [s.pid for s in services.services]
    try:
        with pytest.raises(ServiceError) as e:
            services.wait_ready(30, None)
    finally:
        services.stop(grace=5)
    msg = str(e.value)
    assert "the broken one stopped while starting (exit code 3)" in msg
    assert f"{tmp_path / 'logs' / 'broken.log'}" in msg and "cannot start: [bad] config" in msg
    assert not any(_alive(p) for p in pids if p is not None)
