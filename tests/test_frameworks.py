"""Per-request consistency in the web frameworks (nearstate.frameworks) and the examples
that use it (examples/: FastAPI, Flask, Django).

In process: tokens are signed, checked and refused with the reason named (malformed,
another format, another dataset, another secret, a write the Log does not have); a
ReadModel reads eventual by default, waits for the client's token (read-your-writes) and
for the Log's head (strong); the FastAPI dependency works without the middleware; the
Django settings are checked.

End to end, for each framework: each example is served for real as two servers of two
worker processes each (``uvicorn --workers 2``; ``gunicorn -w 2``) over one local dataset
in tmp_path, and driven with real HTTP requests (a fresh connection each, so the workers
take turns): a write through server A is read back through server B with the token its
response set (cookie or header); strong reads see a write made without a token; forged,
foreign and stale-format tokens are refused at once with 400 and the cookie dropped; a
killed worker is replaced while the other keeps serving, and with server A gone, B still
serves A's writes to their writers. The servers run with ``NEARSTATE_FOLLOW=0`` (the
state moves only when a request needs it), so a read that does not wait for the token
would miss the write. One more run of the FastAPI example uses a NATS dataset.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

import nearstate
from natsserver import drop, free_port, server_url, unique
from nearstate import InputError, ReadTimeout
from nearstate.frameworks import ReadModel, TokenRefused, TokenSigner

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
BIN = Path(sys.executable).parent
SECRET = "a test secret, long enough"
LONG = 60.0  # a server start that should end: given this long


# -- in process ----------------------------------------------------------------------------


def test_a_token_round_trips_and_a_rotated_secret_still_verifies() -> None:
    old = TokenSigner("the old secret of 16+", "shop")
    text = old.sign(42)
    assert text.startswith("ns1.") and old.verify(text) == 42
    rotated = TokenSigner(["the new secret of 16+", "the old secret of 16+"], "shop")
    assert rotated.verify(text) == 42
    with pytest.raises(TokenRefused) as e:
        old.verify(rotated.sign(7))
    assert e.value.reason == "signature"
    with pytest.raises(InputError, match="at least 16"):
        TokenSigner("short", "shop")


@pytest.mark.parametrize(
    ("make", "reason", "words"),
    [
        (lambda s: "", "malformed", "malformed"),
        (lambda s: "ns1.nothing", "malformed", "malformed"),
        (lambda s: s.sign(5)[:-3] + "abc", "signature", "forged"),
        (lambda s: s.sign(5).replace(".5.", ".6."), "signature", "forged"),
        (lambda s: "ns0" + s.sign(5)[3:], "format", "format"),
        (lambda s: "v2.abc.5.xyz", "format", "format"),
        (lambda s: TokenSigner(SECRET, "another").sign(5), "foreign", "another dataset"),
        (lambda s: TokenSigner("another secret 1234", "shop").sign(5), "signature", "secret"),
    ],
)  # fmt: skip
def test_each_kind_of_bad_token_is_refused_with_its_reason(
    make: Callable[[TokenSigner], str], reason: str, words: str
) -> None:
    signer = TokenSigner(SECRET, "shop")
    with pytest.raises(TokenRefused, match=words) as e:
        signer.verify(make(signer))
    assert e.value.reason == reason


@pytest.fixture
def model(tmp_path: Path) -> Iterator[ReadModel]:
    m = ReadModel(tmp_path / "shop", secret=SECRET, follow=False, timeout=2.0)
    yield m
    m.stop()


def name_of(reading: Any, key: str) -> str | None:
    rec = reading.state["Item"].get(key)
    return None if rec is None else rec.name


def test_eventual_by_default_read_your_writes_with_a_token_strong_on_request(
    model: ReadModel, tmp_path: Path
) -> None:
    model.writer.upsert("Item", {"id": "a", "name": "first"})
    assert name_of(model.begin(token=None, asked=None), "a") == "first"  # the state is held
    # another process writes (its own Writer), and signs its token
    other = ReadModel(tmp_path / "shop", secret=SECRET, follow=False)
    with other.writer.transaction() as tx:
        tx.upsert("Item", {"id": "a", "name": "second"})
    token = other.signer.sign(tx.token)
    eventual = model.begin(token=None, asked=None)
    assert eventual.consistency == "eventual" and name_of(eventual, "a") == "first"
    ryw = model.begin(token=token, asked=None)
    assert ryw.consistency == "read-your-writes" and ryw.token == tx.token
    assert name_of(ryw, "a") == "second"
    other.writer.upsert("Item", {"id": "b", "name": "third"})
    assert model.begin(token=None, asked="eventual").state["Item"].get("b") is None
    strong = model.begin(token=None, asked="Strong")
    assert strong.consistency == "strong" and name_of(strong, "b") == "third"
    with pytest.raises(InputError, match="unknown consistency 'soon'"):
        model.begin(token=None, asked="soon")


def test_a_write_sets_the_token_to_send_and_never_lowers_it(model: ReadModel) -> None:
    t1 = model.writer.upsert("Item", {"id": "a", "name": "x"})
    t2 = model.writer.upsert("Item", {"id": "a", "name": "y"})
    r = model.begin(token=model.signer.sign(t2), asked=None)
    assert r.issued is None  # nothing written: nothing to send
    r.wrote(t1)  # an older write noted: the client keeps the newer token
    assert model.signer.verify(r.issued) == t2
    t3 = r.upsert("Item", {"id": "c", "name": "z"})
    assert model.signer.verify(r.issued) == t3 > t2
    with r.transaction() as tx:
        tx.delete("Item", "c")
    assert model.signer.verify(r.issued) == tx.token > t3
    names = dict(model.response_headers(r))
    assert names["X-Nearstate-Token"] == r.issued
    assert "HttpOnly" in names["Set-Cookie"] and "SameSite=Lax" in names["Set-Cookie"]


def test_a_token_past_the_logs_head_is_refused_at_once(model: ReadModel) -> None:
    model.writer.upsert("Item", {"id": "a", "name": "x"})
    t0 = time.monotonic()
    with pytest.raises(TokenRefused, match="Log ends at 1") as e:
        model.begin(token=model.signer.sign(10_000), asked=None)
    assert e.value.reason == "unknown" and time.monotonic() - t0 < 1.0


def test_refusals_are_400_with_the_cookie_dropped_and_timeouts_503(model: ReadModel) -> None:
    status, body, headers = model.refusal(TokenRefused("forged", reason="signature"))
    assert status == 400 and json.loads(body) == {"error": "forged", "reason": "signature"}
    assert "Max-Age=0" in dict(headers)["Set-Cookie"]
    status, body, headers = model.refusal(ReadTimeout("token 9 is not visible after 2 s"))
    assert status == 503 and "not visible here yet" in json.loads(body)["error"]
    assert dict(headers)["Retry-After"] == "1" and "Set-Cookie" not in dict(headers)


def test_the_fastapi_dependency_works_without_the_middleware(tmp_path: Path) -> None:
    from fastapi import Depends, FastAPI
    from fastapi.testclient import TestClient

    from nearstate.frameworks.fastapi import nearstate_dependency

    model = ReadModel(tmp_path / "shop", secret=SECRET, follow=False)
    dep = Depends(nearstate_dependency(model))  # a default: annotations here are strings
    app = FastAPI()

    @app.put("/items/{key}")
    def put(key: str, r: Any = dep) -> dict:
        return {"token": int(r.upsert("Item", {"id": key, "name": key.upper()}))}

    @app.get("/items/{key}")
    def get(key: str, r: Any = dep) -> dict:
        rec = r.state["Item"].get(key)
        return {"consistency": r.consistency, "name": None if rec is None else rec.name}

    try:
        with TestClient(app) as client:
            got = client.put("/items/a")
            assert got.status_code == 200
            token = got.headers["x-nearstate-token"]
            assert model.signer.verify(token) == got.json()["token"]
            assert client.cookies.get("nearstate_token") == token
            assert client.get("/items/a").json() == {"consistency": "read-your-writes",
                                                     "name": "A"}  # fmt: skip
            other = ReadModel(tmp_path / "shop", secret=SECRET, follow=False)
            t = other.writer.upsert("Item", {"id": "b", "name": "B"})
            client.cookies.clear()
            assert client.get("/items/b").json() == {"consistency": "eventual", "name": None}
            seen = client.get("/items/b", headers={"X-Nearstate-Token": model.signer.sign(t)})
            assert seen.json() == {"consistency": "read-your-writes", "name": "B"}
            bad = client.get("/items/b", headers={"X-Nearstate-Token": token[:-2] + "xx"})
            assert bad.status_code == 400 and "forged" in bad.json()["detail"]
            assert "max-age=0" in bad.headers["set-cookie"].lower()
    finally:
        model.stop()


def test_django_settings_are_checked() -> None:
    from django.core.exceptions import ImproperlyConfigured

    from nearstate.frameworks.django.apps import model_from_settings

    with pytest.raises(ImproperlyConfigured, match="'DATASET'"):
        model_from_settings({"TIMEOUT": 1}, "a secret key of the project")
    with pytest.raises(ImproperlyConfigured, match=r"unknown keys \['TIMEOUTS'\]"):
        model_from_settings({"DATASET": "/x", "TIMEOUTS": 1}, "a secret key of the project")
    with pytest.raises(ImproperlyConfigured, match="SECRET"):
        model_from_settings({"DATASET": "/x"}, None)
    with pytest.raises(ImproperlyConfigured, match="SCHEMA"):
        model_from_settings({"DATASET": "/x", "SCHEMA": "no.such.Thing"}, "a secret key 1234")


# -- end to end: the examples served as two servers of two workers -------------------------


@dataclass(frozen=True)
class Example:
    name: str
    command: Callable[[int], list[str]]
    path: str  # the collection's path; an item is path/key
    write_method: str
    body: Callable[[str, str], dict[str, Any]]  # (key, value) -> the JSON to write
    value: Callable[[dict[str, Any]], str]  # an item's JSON -> the value written


def _gunicorn(chdir: str, app: str) -> Callable[[int], list[str]]:
    return lambda port: [
        str(BIN / "gunicorn"), "-w", "2", "-b", f"127.0.0.1:{port}", "--no-control-socket",
        "--chdir", str(EXAMPLES / chdir), "--log-level", "warning", app,
    ]  # fmt: skip


def _uvicorn(port: int) -> list[str]:
    return [
        str(BIN / "uvicorn"), "app:app", "--app-dir", str(EXAMPLES / "fastapi_catalogue"),
        "--workers", "2", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
    ]  # fmt: skip


EXAMPLES_RUN = {
    "fastapi": Example(
        "fastapi",
        _uvicorn,
        "/products",
        "PUT",
        lambda key, value: {"name": value, "category": "tea", "price_cents": 450},
        lambda item: item["product"]["name"],
    ),
    "flask": Example(
        "flask",
        _gunicorn("flask_app", "app:app"),
        "/notices",
        "POST",
        lambda key, value: {"id": key, "title": value, "body": "noon, upstairs"},
        lambda item: item["notice"]["title"],
    ),
    "django": Example(
        "django",
        _gunicorn("django_app", "bookshop.wsgi"),
        "/books",
        "PUT",
        lambda key, value: {"title": value, "author": "Herbert", "copies": 3},
        lambda item: item["book"]["title"],
    ),
}


class Server:
    """An example served on a free port, in a process group of its own."""

    def __init__(self, ex: Example, dataset: str, log: Path, *, follow: bool):
        self.ex = ex
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "NEARSTATE_DATASET": dataset,
            "NEARSTATE_SECRET": SECRET,
            "NEARSTATE_FOLLOW": "1" if follow else "0",
        }
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                ex.command(self.port), cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + LONG
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"{ex.name} server exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + ex.path, timeout=2).status_code < 500:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"{ex.name} server did not answer in {LONG:g} s: {log.read_text()}")
            time.sleep(0.2)

    def workers(self) -> set[int]:
        """The pids of the server's live worker processes."""
        out = set()
        for c in psutil.Process(self.proc.pid).children(recursive=True):
            try:
                cmd = " ".join(c.cmdline())
                if c.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in cmd:
                    out.add(c.pid)
            except psutil.NoSuchProcess:
                pass
        return out

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def call(method: str, url: str, **kw: Any) -> httpx.Response:
    """One request on a fresh connection (so the server's workers take turns)."""
    return httpx.request(method, url, timeout=10, **kw)


def write(server: Server, key: str, value: str, **kw: Any) -> httpx.Response:
    ex = server.ex
    got = call(ex.write_method, f"{server.url}{ex.path}/{key}" if ex.write_method == "PUT"
               else server.url + ex.path, json=ex.body(key, value), **kw)  # fmt: skip
    assert got.status_code in (200, 201), got.text
    return got


def read(server: Server, key: str, **kw: Any) -> httpx.Response:
    return call("GET", f"{server.url}{server.ex.path}/{key}", **kw)


def cookie_of(response: httpx.Response) -> str:
    got = response.cookies.get("nearstate_token")
    assert got, f"no token cookie in {response.headers}"
    return got


@pytest.fixture(scope="module", params=sorted(EXAMPLES_RUN))
def pair(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[tuple[Server, Server, str]]:  # fmt: skip
    ex = EXAMPLES_RUN[request.param]
    d = tmp_path_factory.mktemp(ex.name)
    dataset = str(d / "data")
    a = Server(ex, dataset, d / "a.log", follow=False)
    try:
        b = Server(ex, dataset, d / "b.log", follow=False)
    except BaseException:
        a.stop()
        raise
    write(a, "seed", "v0")
    for _ in range(8):  # B's workers take their state now; without the Log followed it stays
        assert call("GET", b.url + ex.path).status_code == 200
    yield a, b, dataset
    a.stop()
    b.stop()


@pytest.mark.slow
def test_a_write_through_one_server_is_read_through_the_other(
    pair: tuple[Server, Server, str],
) -> None:
    a, b, _ = pair
    ex = a.ex
    wrote = write(a, "k1", "first")
    cookie = cookie_of(wrote)
    assert wrote.headers["x-nearstate-token"] == cookie and cookie.startswith("ns1.")
    set_cookie = wrote.headers["set-cookie"].lower()
    assert "httponly" in set_cookie and "samesite=lax" in set_cookie
    pids = set()
    for _ in range(6):
        got = read(b, "k1", cookies={"nearstate_token": cookie})
        assert got.status_code == 200, got.text
        assert ex.value(got.json()) == "first"
        assert got.headers["x-nearstate-consistency"] == "read-your-writes"
        pids.add(got.headers["x-worker-pid"])
    # a second write by the same client: its token moves on; an API client sends the header
    again = write(a, "k1", "second", cookies={"nearstate_token": cookie})
    header = again.headers["x-nearstate-token"]
    assert header != cookie
    for _ in range(6):
        got = read(b, "k1", headers={"X-Nearstate-Token": header})
        assert got.status_code == 200 and ex.value(got.json()) == "second", got.text
        pids.add(got.headers["x-worker-pid"])
    assert pids <= {str(p) for p in b.workers()}


@pytest.mark.slow
def test_strong_reads_see_a_write_made_by_someone_else(pair: tuple[Server, Server, str]) -> None:
    a, b, _ = pair
    write(a, "k2", "theirs")  # no token kept: another client's write
    for _ in range(4):
        got = read(b, "k2", headers={"X-Nearstate-Consistency": "strong"})
        assert got.status_code == 200 and a.ex.value(got.json()) == "theirs", got.text
        assert got.headers["x-nearstate-consistency"] == "strong"
        got = read(b, "k2", params={"consistency": "strong"})
        assert got.status_code == 200 and a.ex.value(got.json()) == "theirs", got.text
    got = read(b, "k2", headers={"X-Nearstate-Consistency": "whenever"})
    assert got.status_code == 400 and "unknown consistency 'whenever'" in got.json()["error"]


@pytest.mark.slow
def test_forged_foreign_and_stale_tokens_are_refused_at_once(
    pair: tuple[Server, Server, str],
) -> None:
    a, b, dataset = pair
    good = cookie_of(write(a, "k3", "mine"))
    signer = TokenSigner(SECRET, nearstate.open(dataset).name)
    assert signer.verify(good) > 0
    bad = {
        "forged": (good[:-4] + "AAAA", "forged"),
        "another secret": (TokenSigner("someone else's secret", "data").sign(1), "secret"),
        "another dataset": (TokenSigner(SECRET, "another").sign(1), "another dataset"),
        "stale format": ("ns0" + good[3:], "format"),
        "garbage": ("<script>", "malformed"),
        "a write not in the Log": (signer.sign(10**9), "Log ends at"),
    }
    for what, (token, words) in bad.items():
        for how in ({"cookies": {"nearstate_token": token}},
                    {"headers": {"X-Nearstate-Token": token}}):  # fmt: skip
            t0 = time.monotonic()
            got = read(b, "k3", **how)
            assert time.monotonic() - t0 < 3.0, what  # refused, not waited on (timeout 5 s)
            assert got.status_code == 400, (what, got.text)
            assert words in got.json()["error"], (what, got.json())
            assert "max-age=0" in got.headers["set-cookie"].lower(), what  # the cookie dropped


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXAMPLES_RUN))
def test_a_killed_worker_and_a_lost_server_leave_the_rest_serving(name: str, tmp_path: Path
                                                                  ) -> None:  # fmt: skip
    ex, d = EXAMPLES_RUN[name], tmp_path
    dataset = str(d / "data")
    a = Server(ex, dataset, d / "a.log", follow=True)
    b = Server(ex, dataset, d / "b.log", follow=True)
    try:
        cookie = cookie_of(write(a, "k", "before"))
        before = b.workers()
        assert len(before) >= 2, before
        victim = int(read(b, "k", cookies={"nearstate_token": cookie}).headers["x-worker-pid"])
        assert victim in before
        os.kill(victim, signal.SIGKILL)
        for _ in range(12):  # the other worker answers meanwhile
            got = read(b, "k", cookies={"nearstate_token": cookie})
            assert got.status_code == 200 and ex.value(got.json()) == "before", got.text
        deadline = time.monotonic() + 30
        while len(b.workers() - {victim}) < len(before):  # and the server replaces it
            assert time.monotonic() < deadline, f"{ex.name}: no worker replaced {victim}"
            time.sleep(0.2)
        a.stop(signal.SIGKILL)  # server A is gone: B serves A's writes to their writer
        for _ in range(6):
            got = read(b, "k", cookies={"nearstate_token": cookie})
            assert got.status_code == 200 and ex.value(got.json()) == "before", got.text
        token = write(b, "k", "after").headers["x-nearstate-token"]
        got = read(b, "k", headers={"X-Nearstate-Token": token})
        assert got.status_code == 200 and ex.value(got.json()) == "after", got.text
    finally:
        a.stop()
        b.stop()


@pytest.mark.slow
def test_the_fastapi_example_on_a_nats_dataset(tmp_path: Path) -> None:
    url = server_url()
    name = unique("frameworks")
    dataset = f"{url}/{name}"
    ex = EXAMPLES_RUN["fastapi"]
    a = Server(ex, dataset, tmp_path / "a.log", follow=False)
    try:
        b = Server(ex, dataset, tmp_path / "b.log", follow=False)
        try:
            write(a, "seed", "v0")
            for _ in range(6):
                assert call("GET", b.url + ex.path).status_code == 200
            cookie = cookie_of(write(a, "k", "over nats"))
            for _ in range(4):
                got = read(b, "k", cookies={"nearstate_token": cookie})
                assert got.status_code == 200 and ex.value(got.json()) == "over nats", got.text
        finally:
            b.stop()
    finally:
        a.stop()
        drop(url, name)
