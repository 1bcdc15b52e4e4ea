"""Benchmarks of the read path (``nearstate bench site``).

One run builds a scratch system the way the demo runs it — a SQLite write store with the
real films and published stories, a local dataset, the editor app with its ingestion
worker, a producer compacting the Log, two site processes — and measures:

- **home page construction in process**: the page model and its HTML, from the state in
  memory, with the page cache off (p50/p99; anonymous and personalised);
- **story page over HTTP**: requests per second one site process answers on loopback,
  driven by ``wrk`` (with the per-state page cache, as it runs, and without);
- **save → preview**: an editor's save through the JSON API, then the editor's preview
  of that revision, which waits for exactly that save's token (how many show the save,
  and how long from the save's request to the preview's answer);
- **publish → live**: a publish through the API until both site processes answer the
  story's new title (they follow the Log; nothing tells them).
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nearstate

from ..content.accounts import create_user
from ..content.cms import CMS
from ..content.db import WriteStore, open_store
from ..content.films import import_films
from ..content.ingest import IngestWorker, ingestor_for
from ..content.media import MediaConfig
from ..demo.samples import create_samples
from ..errors import NearstateError
from ..web.processes import Service, Services, free_port, nearstate_command
from .cms import scratch
from .stats import percentiles

Progress = Callable[[str, int, int], None]
SECRET = "a secret for the site benchmark only"
PASSWORD = "a long bench password"


def _publish_fixtures(store: WriteStore, media: MediaConfig, films: int | None) -> list[int]:
    """The demo's content: the films, then its sample stories and ``home`` layout (a
    featured row, tag rows, genre rows of titles, the latest stories). Returns the
    published stories' ids."""
    import_films(store, limit=films)
    made = create_samples(CMS(store), store, media, user="bench")
    return list(made.published)


def _timed(fn: Callable[[], Any], n: int) -> dict[str, float]:
    xs = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        xs.append((time.perf_counter() - t0) * 1000)
    return percentiles(xs)


def in_process(dataset: Path, slug: str, n: int) -> dict[str, Any]:
    """Home and story construction from the state in this process (page cache off)."""
    from starlette.requests import Request

    from ..content import personalize
    from ..web.site import Site, SiteConfig

    ds = nearstate.open(dataset)
    c = ds.consumer().start()
    try:
        site = Site(SiteConfig(dataset=ds, secret_key=SECRET, consumer=c, search=False,
                               page_cache=0))  # fmt: skip
        state = c.state
        req = Request({"type": "http", "method": "GET", "path": "/", "headers": [],
                       "query_string": b""})  # fmt: skip
        pages = site.pages

        def home(profile: personalize.Profile | None = None) -> bytes:
            page = pages.home(state, profile)
            return site.render("site/home.html", req, page=page, nav=pages.genres(state)[:12])

        prof = personalize.Profile.EMPTY
        for genres in (["Drama"], ["Drama", "Romance"], ["Horror"], ["Drama", "War"]):
            prof = personalize.learn(prof, genres)

        def story() -> bytes:
            page = pages.story(state, slug)
            return site.render("site/story.html", req, page=page, nav=pages.genres(state)[:12])

        for fn in (home, lambda: home(prof), story):  # warm: derived indexes, templates
            fn()
        out = {
            "home_ms": _timed(home, n),
            "home_personalised_ms": _timed(lambda: home(prof), n),
            "home_model_ms": _timed(lambda: pages.home(state), n),
            "story_ms": _timed(story, n),
            "story_model_ms": _timed(lambda: pages.story(state, slug), n),
            "home_bytes": len(home()),
            "home_cards": sum(len(r["cards"]) for r in pages.home(state)["rows"]),
        }
        return out
    finally:
        c.stop()


class System:
    """The editor app, the producer and two sites, as processes (the demo's shape)."""

    def __init__(self, data: Path, cms: str, sites: int = 2, *, editor: bool = True,
                 site_args: tuple[str, ...] = ()):  # fmt: skip
        self.cms_port = free_port()
        self.site_ports = [free_port() for _ in range(sites)]
        cmd, d = nearstate_command(), str(data)
        plan = []
        if editor:
            plan += [
                Service("cms", "cms", [*cmd, "cms", "serve", "--data", d, "--cms", cms, "--port",
                        str(self.cms_port), "--quiet"],
                        f"http://127.0.0.1:{self.cms_port}/login"),
                Service("producer", "producer", [*cmd, "compact", str(data / "dataset"),
                        "--follow"], None),
            ]  # fmt: skip
        for i, port in enumerate(self.site_ports):
            plan.append(Service(f"site{i + 1}", f"site{i + 1}", [*cmd, "site", "serve", "--data",
                                d, "--cms", cms, "--port", str(port), "--quiet", *site_args],
                                f"http://127.0.0.1:{port}/healthz"))  # fmt: skip
        self.services = Services(plan, data / "logs", env={"NEARSTATE_SECRET": SECRET})

    def __enter__(self) -> System:
        try:
            self.services.start()
            self.services.wait_ready(90.0)
        except BaseException:
            self.services.stop(grace=15.0)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.services.stop(grace=15.0)


def wrk(url: str, seconds: float, connections: int) -> dict[str, Any]:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise NearstateError("the HTTP benchmark needs wrk: run ./scripts/system-deps "
                             "(or apt-get install wrk)")  # fmt: skip
    out = subprocess.run(
        [wrk, "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lat = dict(re.findall(r"\s+(50|99)%\s+([\d.]+\w+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return {"requests_per_s": round(rps), "p50": lat.get("50"), "p99": lat.get("99"),
            "non_2xx": int(non2xx.group(1)) if non2xx else 0}  # fmt: skip


def login(base: str) -> Any:
    import httpx

    cl = httpx.Client(base_url=base, timeout=30)
    r = cl.post("/api/login", json={"username": "bench", "password": PASSWORD})
    r.raise_for_status()
    cl.headers["X-CSRF-Token"] = r.json()["csrf"]
    return cl


def save_to_preview(cl: Any, sid: int, trials: int, progress: Progress | None) -> dict:
    """Save, then ask the editor's preview for that revision: it must show the save."""
    shown, times, wrong = 0, [], []
    for i in range(trials):
        doc = cl.get(f"/api/stories/{sid}").json()
        story, rev = doc["story"], doc["revision"]
        marker = f"preview-check-{i}-{random.randrange(10**9)}"
        story["body"][0]["text"] = f"{marker} " + story["body"][0]["text"][:400]
        t0 = time.perf_counter()
        put = cl.put(f"/api/stories/{sid}", json={"base_revision": rev, "story": story})
        put.raise_for_status()
        new = put.json()["revision"]
        r = cl.get(f"/stories/{sid}/preview", params={"revision": new})
        dt = (time.perf_counter() - t0) * 1000
        if r.status_code == 200 and marker in r.text and f'data-revision="{new}"' in r.text:
            shown += 1
            times.append(dt)
        else:
            wrong.append(f"revision {new}: {r.status_code}")
        if progress:
            progress("save → preview", i + 1, trials)
    return {"trials": trials, "shown": shown, "shown_pct": round(100 * shown / trials, 2),
            "ms": percentiles(times), "failures": wrong[:5],
            "samples_ms": sorted(round(t, 2) for t in times)}  # fmt: skip


def publish_to_live(cl: Any, sid: int, sites: list[str], trials: int,
                     progress: Progress | None) -> dict:  # fmt: skip
    """Retitle and publish; time from the publish request until every site shows it."""
    import httpx

    times, per_site, missed = [], {s: [] for s in sites}, 0
    clients = {s: httpx.Client(base_url=s, timeout=5) for s in sites}
    try:
        for i in range(trials):
            doc = cl.get(f"/api/stories/{sid}").json()
            story, rev = doc["story"], doc["revision"]
            title = f"Live check {i} {random.randrange(10**9)}"
            story["title"] = title
            story["slug"] = slug = doc["slug"]  # kept: a new title would otherwise rename it
            put = cl.put(f"/api/stories/{sid}", json={"base_revision": rev, "story": story})
            put.raise_for_status()
            t0 = time.perf_counter()
            cl.post(f"/api/stories/{sid}/publish", json={}).raise_for_status()
            seen: dict[str, float] = {}

            def watch(
                site: str, slug: str = slug, title: str = title, t0: float = t0,
                seen: dict[str, float] = seen,
            ) -> None:  # fmt: skip
                deadline = time.perf_counter() + 5
                while time.perf_counter() < deadline:
                    r = clients[site].get(f"/api/stories/{slug}")
                    if r.status_code == 200 and r.json().get("title") == title:
                        seen[site] = (time.perf_counter() - t0) * 1000
                        return

            threads = [threading.Thread(target=watch, args=(s,)) for s in sites]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if len(seen) == len(sites):
                times.append(max(seen.values()))
                for s, v in seen.items():
                    per_site[s].append(v)
            else:
                missed += 1
            if progress:
                progress("publish → live", i + 1, trials)
    finally:
        for c in clients.values():
            c.close()
    return {"trials": trials, "visible_on_all": len(times), "missed": missed,
            "ms": percentiles(times),
            "per_site_p50_ms": [percentiles(v)["p50"] for v in per_site.values()],
            "samples_ms": sorted(round(t, 2) for t in times)}  # fmt: skip


def _ingest(store: WriteStore, data: Path) -> None:
    ds = nearstate.open(data / "dataset")
    IngestWorker(ingestor_for(store, ds, MediaConfig(data / "media"))).drain()
    ds.compact()


@contextlib.contextmanager
def phase(progress: Progress | None, name: str) -> Iterator[None]:
    if progress:
        progress(name, 0, 1)
    yield
    if progress:
        progress(name, 1, 1)


def make_content(tmp: Path, url: str, films: int | None, progress: Progress | None
             ) -> tuple[WriteStore, list[int]]:  # fmt: skip
    """The demo's content in a scratch write store at ``url``, with the ``bench`` editor,
    ingested into ``tmp``/dataset; returns the open store and the published stories."""
    store = open_store(url)
    with phase(progress, "films and stories"):
        published = _publish_fixtures(store, MediaConfig(root=tmp / "media"), films)
        create_user(store, "bench", PASSWORD)
        _ingest(store, tmp)
    return store, published


def bench_site(
    *,
    films: int | None = None,
    iterations: int = 2000,
    seconds: float = 10.0,
    connections: int = 16,
    trials: int = 200,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """The read path's figures (see the module docstring); ``films`` None: all 17,472."""
    with scratch(None) as (tmp, url):
        store, published = make_content(tmp, url, films, progress)
        sid = published[0]
        slug = CMS(store).story(sid)["slug"]
        titles = store.read_one("SELECT COUNT(*) AS n FROM titles")["n"]
        with phase(progress, "in process"):
            inproc = in_process(tmp / "dataset", slug, iterations)
        with System(tmp, url) as system:
            sites = [f"http://127.0.0.1:{p}" for p in system.site_ports]
            story_url = f"{sites[0]}/stories/{slug}"
            http: dict[str, Any] = {}
            with phase(progress, "story page over HTTP"):
                http["story_cached"] = wrk(story_url, seconds, connections)
                http["story_json"] = wrk(f"{sites[0]}/api/stories/{slug}", seconds, connections)
                http["home_anonymous"] = wrk(f"{sites[0]}/", seconds, connections)
            editor = login(f"http://127.0.0.1:{system.cms_port}")
            try:
                preview = save_to_preview(editor, published[1], trials, progress)
                live = publish_to_live(editor, published[2], sites, trials, progress)
            finally:
                editor.close()
        # the same story page rendered on every request (no page cache)
        with System(tmp, url, sites=1, editor=False, site_args=("--page-cache", "0")) as system:
            site = f"http://127.0.0.1:{system.site_ports[0]}"
            with phase(progress, "story page, no cache"):
                http["story_uncached"] = wrk(f"{site}/stories/{slug}", seconds, connections)
        store.close()
    return {
        "films": titles,
        "stories": len(published),
        "cpus": os.cpu_count(),
        "in_process": inproc,
        "http": http,
        "wrk": {"threads": 1, "connections": connections, "seconds": seconds},
        "save_to_preview": preview,
        "publish_to_live": live,
        "targets": {
            "home_p50_ms": 2.0,
            "story_requests_per_s": 2000,
            "preview_shown_pct": 100,
            "preview_p99_ms": 100,
            "live_p99_ms": 250,
        },
    }


def summary(r: dict[str, Any]) -> list[str]:
    ip, http, pv, lv = r["in_process"], r["http"], r["save_to_preview"], r["publish_to_live"]
    met = lambda ok: "met" if ok else "NOT met"  # noqa: E731
    return [
        f"{r['films']:,} films, {r['stories']} stories, {r['cpus']} CPUs",
        f"home page built in process: p50 {ip['home_ms']['p50']} ms, p99 {ip['home_ms']['p99']}"
        f" ms ({ip['home_cards']} cards; personalised p50 {ip['home_personalised_ms']['p50']} ms)"
        f" — target p50 ≤ 2 ms: {met(ip['home_ms']['p50'] <= 2)}",
        f"story page over HTTP, one process: {http['story_cached']['requests_per_s']:,} req/s"
        f" (rendered every time: {http['story_uncached']['requests_per_s']:,} req/s; JSON"
        f" {http['story_json']['requests_per_s']:,}) — target ≥ 2,000:"
        f" {met(http['story_cached']['requests_per_s'] >= 2000)}",
        f"save → preview: {pv['shown']}/{pv['trials']} showed the save, p50 {pv['ms']['p50']} ms,"
        f" p99 {pv['ms']['p99']} ms — target 100%, p99 ≤ 100 ms:"
        f" {met(pv['shown'] == pv['trials'] and pv['ms']['p99'] <= 100)}",
        f"publish → on both sites: {lv['visible_on_all']}/{lv['trials']}, p50 {lv['ms']['p50']}"
        f" ms, p99 {lv['ms']['p99']} ms — target p99 ≤ 250 ms:"
        f" {met(lv['missed'] == 0 and lv['ms']['p99'] <= 250)}",
    ]
