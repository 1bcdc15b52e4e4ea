"""``nearstate site serve --workers N``: a pool sharing one port, the search index built once
per host; a worker killed while a client keeps requesting is replaced, and no request fails
but those the killed worker had accepted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import nearstate
from nearstate.content.records import SCHEMA
from nearstate.web.processes import free_port, nearstate_command
from test_search import person, story


def children(pid: int) -> set[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return set()
    return {int(p) for p in text.split()}


def until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what}")
        time.sleep(0.05)


def get(url: str) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"Connection": "close"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[tuple[subprocess.Popen, str, Path]]:
    data = tmp_path / "data"
    ds = nearstate.open(data / "dataset")
    w = ds.writer(schema=SCHEMA)
    for i in range(1, 60):
        w.upsert("Story", story(i, f"Story {i} about the godfather"))
        w.upsert("Person", person(i, f"Person {i}"))
    ds.compact()
    w.upsert("Story", story(500, "Moonlight, only in the Log"))  # in each worker's overlay
    port, cache = free_port(), tmp_path / "cache"
    proc = subprocess.Popen(
        [*nearstate_command(), "site", "serve", "--data", str(data), "--no-media", "--port",
         str(port), "--workers", "2", "--search-cache", str(cache), "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        yield proc, f"http://127.0.0.1:{port}", cache
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


def test_a_killed_worker_is_replaced_and_the_others_keep_serving(pool) -> None:
    proc, base, cache = pool

    def answers() -> bool:
        if proc.poll() is not None:
            pytest.fail(proc.stdout.read().decode())
        try:
            return get(base + "/healthz")[0] == 200
        except (OSError, urllib.error.URLError):
            return False

    until(answers, 60, "the pool answers")
    workers = until(lambda: len(children(proc.pid)) == 2 and children(proc.pid), 10, "2 workers")
    # the search index: one file for the host, built once, overlay records found too
    assert len(list(cache.glob("*.arrays"))) == 1
    for _ in range(6):  # whichever worker answers
        status, body = get(base + "/api/search?q=moonlight")
        assert status == 200 and [h["id"] for h in json.loads(body)["hits"]] == [500]

    status, body = get(base + "/api/search?q=godfather")
    expected = json.loads(body)["hits"]
    assert status == 200 and len(expected) >= 10
    results: list[int | str] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                status, body = get(base + "/api/search?q=godfather")
                ok = status == 200 and json.loads(body)["hits"] == expected
                results.append(status if ok else f"{status} {body[:80]!r}")
            except Exception as e:  # every failure is counted, none ends the thread
                results.append(f"error {e!r}")

    threads = [threading.Thread(target=client) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        until(lambda: len(results) > 20, 20, "requests before the kill")
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        new = until(lambda: (children(proc.pid) - workers) or None, 30, "a new worker")
        assert victim not in children(proc.pid)
        before = len(results)
        until(lambda: len(results) > before + 50, 30, "requests after the kill")
        time.sleep(1.0)  # requests while the new worker joins
    finally:
        stop.set()
        for t in threads:
            t.join(20)
    failed = [r for r in results if r != 200]
    # at most the requests in flight at the killed worker: one per client thread
    assert len(failed) <= len(threads), failed
    assert len(results) > 100
    assert proc.poll() is None and len(children(proc.pid)) == 2
    # the new worker answers too: kill the old one and ask again
    (old,) = workers - {victim}
    os.kill(old, signal.SIGTERM)
    until(lambda: old not in children(proc.pid) and len(children(proc.pid)) == 2, 30,
          "the old worker replaced")  # fmt: skip
    assert new & children(proc.pid)
    status, body = get(base + "/api/search?q=moonlight")
    assert status == 200 and [h["id"] for h in json.loads(body)["hits"]] == [500]
    # stopping the pool stops every worker
    pids = children(proc.pid)
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(30) == 0
    for pid in pids:
        status = Path(f"/proc/{pid}/status")
        assert not status.exists() or "zombie" in status.read_text()
    log = proc.stdout.read().decode()
    assert f"(pid {victim}) stopped (killed by SIGKILL); started pid" in log, log


def test_the_demo_runs_its_sites_as_pools(tmp_path: Path) -> None:
    from nearstate.demo.run import plan_services
    from nearstate.web.settings import Settings

    s = Settings.load(str(tmp_path / "demo"))
    one = plan_services(s, "127.0.0.1", 8000, [8080, 8081])
    pools = plan_services(s, "127.0.0.1", 8000, [8080, 8081], workers=3)
    sites = [svc.argv for svc in pools if svc.key.startswith("site-")]
    assert len(sites) == 2 and all(a[a.index("--workers") + 1] == "3" for a in sites)
    assert not any("--workers" in svc.argv for svc in one)


POOL_SCRIPT = """
import gc, json, os, sys, weakref
from nearstate.web.pool import bind, serve_pool

class Cycle:
    pass

def make_app():
    made_in = os.getpid()

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        a, b = Cycle(), Cycle()
        a.other, b.other = b, a  # a cycle only the collector frees
        gone = weakref.ref(a)
        del a, b
        collected = gc.collect()
        body = json.dumps({"pid": os.getpid(), "made_in": made_in, "parent": os.getppid(),
                           "frozen": gc.get_freeze_count(), "enabled": gc.isenabled(),
                           "cycle_freed": gone() is None, "collected": collected}).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})
    return app

serve_pool(make_app, bind("127.0.0.1", int(sys.argv[1])), 2, log_level="warning",
           access_log=False, say=lambda m: print(m, flush=True),
           app_in_parent=sys.argv[2] == "parent")
"""


@pytest.mark.parametrize("where", ["parent", "worker"])
def test_the_pool_freezes_the_parents_objects_and_workers_collect_their_own(where) -> None:
    """The parent's objects are frozen before the fork (a worker's collections do not
    write to them); each worker still frees its own cycles. ``app_in_parent``: the app is
    made once, in the parent, and every worker serves it; otherwise each worker makes
    its own."""
    import sys

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", POOL_SCRIPT, str(port), where],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    try:

        def answers():
            if proc.poll() is not None:
                pytest.fail(proc.stdout.read().decode())
            try:
                return json.loads(get(f"http://127.0.0.1:{port}/")[1])
            except (OSError, ValueError):
                return None

        seen: dict[int, dict] = {}
        deadline = time.monotonic() + 30
        while len(seen) < 2 and time.monotonic() < deadline:
            got = until(answers, 30, "the pool answers")
            seen[got["pid"]] = got
        assert set(seen) == children(proc.pid) and len(seen) == 2
        for r in seen.values():
            assert r["parent"] == proc.pid != r["pid"]
            assert r["frozen"] > 1000  # the parent's imports, at least
            assert r["enabled"] and r["cycle_freed"] and r["collected"] >= 2
            assert r["made_in"] == (proc.pid if where == "parent" else r["pid"])
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(20) == 0
