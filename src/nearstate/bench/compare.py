"""``nearstate bench compare``: the old CQRS read path against embedded state, in one run.

One CMS and one ingestion pipeline feed both read paths from the same content:

- **nearstate**: the producer and two site processes, each holding the whole state in
  memory (the demo's shape; page cache off, so every page is built on request);
- **the old path** (:mod:`nearstate.bench.oldpath`): the ingestion's render-ready fragments
  published to a NATS JetStream stream, a data service writing them to a PostgreSQL table,
  a page data service with a per-key timed near-cache, and a page construction service
  fetching each page's fragments over HTTP.

Measured: home and story page construction (p50, p99; in a construction process, data and
templates, anonymous visitor); editor save → preview visible; publish → live visible;
the read data in memory (nearstate's state, the old store's hydrated fragments as zstd
Parquet, the same as Python objects); requests per second at fixed concurrency (wrk).
Both paths render the same templates; the run checks that they answer the same HTML.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import nearstate

from ..content.cms import CMS
from ..errors import NearstateError
from ..web.processes import Service, Services, free_port
from .cms import scratch
from .oldpath import log as oldlog
from .site import (
    System,
    in_process,
    login,
    make_content,
    phase,
    publish_to_live,
    save_to_preview,
    wrk,
)
from .stats import percentiles

Progress = Callable[[str, int, int], None]
NATS_URL = "nats://127.0.0.1:4222"
PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
TARGETS = {"page_speedup": 20.0, "preview_ratio": 0.01, "memory_ratio": 0.25}


class OldPath:
    """The old read path's four processes for one run (see :mod:`nearstate.bench.oldpath`)."""

    def __init__(self, data: Path, nats_url: str, pg_url: str, refresh: float):
        self.data, self.nats_url, self.pg_url, self.refresh = data, nats_url, pg_url, refresh
        self.run = uuid.uuid4().hex[:10].upper()
        self.table = oldlog.names(self.run)["table"]
        self.services = Services([], data / "logs")
        self.data_port, self.pages_port = free_port(), free_port()
        self.data_url = f"http://127.0.0.1:{self.data_port}"
        self.pages_url = f"http://127.0.0.1:{self.pages_port}"
        self.ready = data / "oldpath-ready.json"

    @property
    def procs(self) -> dict[str, subprocess.Popen[bytes]]:
        """The processes by role (``data``, ``pagedata``, ``pages``, ``ingest``)."""
        return {k.removeprefix("old-"): p for k, p in self.services.procs().items()}

    def start(self, name: str, *args: str) -> None:
        """Start the role ``name`` (again, if it exited) with ``args``."""
        cmd = [sys.executable, "-m", "nearstate.bench.oldpath", *args]
        self.services.run(Service(f"the old path's {name} process", f"old-{name}", cmd, None))

    def __enter__(self) -> OldPath:
        n, p, r = self.nats_url, self.pg_url, self.run
        try:
            oldlog.create(n, p, r)
            self.start("data", "data", "--nats", n, "--pg", p, "--run", r)
            self.start("pagedata", "pagedata", "--pg", p, "--run", r, "--port",
                       str(self.data_port), "--refresh", f"{self.refresh:g}")  # fmt: skip
            self.start("pages", "pages", "--data-url", self.data_url, "--port",
                       str(self.pages_port))  # fmt: skip
            self.start("ingest", "ingest", "--dataset", str(self.data / "dataset"), "--nats",
                       n, "--run", r, "--ready", str(self.ready))  # fmt: skip
        except BaseException:
            self.__exit__()  # what was made is removed: no stream, table or process left
            raise
        return self

    def wait_loaded(self, progress: Progress | None, timeout: float = 900.0) -> int:
        """Wait until every fragment of the first publication is in the table (and the
        services answer); returns how many fragments there are."""
        import httpx
        import psycopg

        deadline = time.monotonic() + timeout
        total = None
        with psycopg.connect(self.pg_url, autocommit=True) as conn:
            while time.monotonic() < deadline:
                self.check_alive()
                if total is None and self.ready.exists():
                    total = json.loads(self.ready.read_text())["fragments"]
                n = conn.execute(f"SELECT count(*) FROM {self.table}").fetchone()[0]
                if progress:
                    progress("old path: fragments into PostgreSQL", n, total or max(n, 1) + 1)
                if total is not None and n >= total:
                    break
                time.sleep(0.5)
            else:
                raise NearstateError(f"the old path did not load its fragments in {timeout:g} s")
        while time.monotonic() < deadline:
            self.check_alive()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.pages_url}/healthz", timeout=2).status_code == 200:
                    return int(total)
            time.sleep(0.2)
        raise NearstateError("the old path's page construction service did not come up")

    def check_alive(self) -> None:
        """ServiceError naming a process that has exited, with the end of its log."""
        self.services.check_alive()

    def __exit__(self, *exc: object) -> None:
        self.services.stop(grace=15.0)
        oldlog.drop(self.nats_url, self.pg_url, self.run)


# -- page construction ------------------------------------------------------------------------


def _baseline_pages(data_url: str, slug: str, n: int) -> dict[str, Any]:
    """The old path's home and story construction, timed in this process: the fragments
    fetched from the page data service (a warm near-cache), then rendered."""
    from starlette.requests import Request

    from .oldpath.construct import PageConstruction

    async def go() -> dict[str, Any]:
        pc = PageConstruction(data_url)
        req = Request({"type": "http", "method": "GET", "path": "/", "headers": [],
                       "query_string": b""})  # fmt: skip
        try:

            async def home() -> bytes:
                got = await pc.home()
                assert got is not None, "the old path has no home page"
                return pc.render("site/home.html", req, got)

            async def story() -> bytes:
                got = await pc.story(slug)
                assert got is not None, f"the old path has no story {slug}"
                return pc.render("site/story.html", req, got)

            async def timed(fn: Callable[[], Any]) -> dict[str, float]:
                xs = []
                for _ in range(n):
                    t0 = time.perf_counter()
                    await fn()
                    xs.append((time.perf_counter() - t0) * 1000)
                return percentiles(xs)

            for _ in range(20):  # warm: connections, the near-cache, templates
                await home()
                await story()
            return {
                "home_ms": await timed(home),
                "home_model_ms": await timed(pc.home),
                "story_ms": await timed(story),
                "story_model_ms": await timed(lambda: pc.story(slug)),
                "home_bytes": len(await home()),
            }
        finally:
            await pc.close()

    return asyncio.run(go())


def _same_html(a: str, b: str, path: str) -> bool:
    import httpx

    ra, rb = httpx.get(a + path, timeout=10), httpx.get(b + path, timeout=10)
    return ra.status_code == rb.status_code == 200 and ra.content == rb.content


# -- memory -----------------------------------------------------------------------------------


def _memory(dataset: Path, pg_url: str, table: str, work: Path) -> dict[str, Any]:
    """nearstate's state (the snapshot's bytes and the Python objects a load makes) against
    the old store's fragments: as zstd Parquet, as Python objects, and in PostgreSQL."""
    import psycopg

    from .store import traced

    ds = nearstate.open(dataset)

    def load() -> Any:
        st = ds.load()
        for ts in st.types.values():  # touch a record of every type (lazy views made)
            for rec in ts:
                _ = rec
                break
        return st

    state, overhead = traced(load)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        rows = conn.execute(f"SELECT key, value FROM {table} ORDER BY key").fetchall()
        pg_bytes = conn.execute("SELECT pg_total_relation_size(%s)", (table,)).fetchone()[0]
    raw = [(k, bytes(v)) for k, v in rows]
    del rows
    json_bytes = sum(len(v) for _, v in raw)
    objects, py_bytes = traced(lambda: [(k, json.loads(v)) for k, v in raw])
    parquet, fallbacks = _parquet(objects, work)
    kinds: dict[str, int] = {}
    for k, _ in objects:
        kind = k.split(":", 1)[0]
        kinds[kind] = kinds.get(kind, 0) + 1
    return {
        "nearstate": state.nbytes + overhead,
        "hydrated_parquet": parquet,
        "python_objects": py_bytes,
        "detail": {
            "nearstate_blob": state.nbytes,
            "nearstate_python": overhead,
            "nearstate_types": {n: len(ts) for n, ts in state.types.items()},
            "fragments": len(objects),
            "fragments_by_kind": kinds,
            "fragments_json": json_bytes,
            "postgres_table": pg_bytes,
            "parquet_json_fallback": fallbacks,
        },
    }


def _parquet(objects: list[tuple[str, Any]], work: Path) -> tuple[int, list[str]]:
    """The fragments written as zstd Parquet, one file per kind of fragment (columns
    nested as the JSON is); a kind pyarrow cannot type is written as JSON text instead."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    by_kind: dict[str, list[tuple[str, Any]]] = {}
    for k, v in objects:
        by_kind.setdefault(k.split(":", 1)[0], []).append((k, v))
    total, fallbacks = 0, []
    for kind, items in sorted(by_kind.items()):
        out = work / f"fragments-{kind}.parquet"
        try:
            table = pa.Table.from_pylist([{"key": k, "fragment": v} for k, v in items])
        except (pa.ArrowException, ValueError, TypeError):
            fallbacks.append(kind)
            table = pa.table({"key": [k for k, _ in items],
                              "fragment": [json.dumps(v) for _, v in items]})  # fmt: skip
        pq.write_table(table, out, compression="zstd")
        total += out.stat().st_size
        out.unlink()
    return total, fallbacks


# -- freshness of the old path ----------------------------------------------------------------


def _poll(url: str, check: Callable[[Any], bool], t0: float, timeout: float, client: Any,
          every: float = 0.02) -> float | None:  # fmt: skip
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        with contextlib.suppress(Exception):
            if check(client.get(url)):
                return (time.perf_counter() - t0) * 1000
        time.sleep(every)
    return None


def _in_store(pg: Any, table: str, key: str, needle: str, t0: float, timeout: float,
              done: threading.Event) -> float | None:  # fmt: skip
    """When the fragment ``key`` in the table first holds ``needle`` (ms after ``t0``)."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline and not done.is_set():
        row = pg.execute(f"SELECT value FROM {table} WHERE key = %s", (key,)).fetchone()
        if row is not None and needle.encode() in bytes(row[0]):
            return (time.perf_counter() - t0) * 1000
        time.sleep(0.01)
    return None


def _old_freshness(cms_url: str, old: OldPath, stories: list[tuple[int, str]], trials: int,
                   kind: str, progress: Progress | None) -> dict[str, Any]:  # fmt: skip
    """Saves (``kind`` "preview") or publishes ("live") of several stories at once, each
    timed until the old path's page construction shows it (and, on the way, until its
    fragment is in the table). Stories are independent keys of the near-cache, so running
    them side by side does not change what each waits for."""
    import httpx
    import psycopg

    timeout = old.refresh * 2 + 20
    visible: list[float] = []
    stored: list[float] = []
    missed: list[str] = []
    lock = threading.Lock()
    per = max(1, -(-trials // len(stories)))
    done_count = [0]

    what = "save → preview" if kind == "preview" else "publish → live"
    watchers = ThreadPoolExecutor(len(stories), thread_name_prefix="in-store")

    # one login per worker, one after another before they start: the editor throttles
    # logins of one account racing each other (each holds a place among its failures
    # until its password is checked), as it would a guesser's
    clients = {sid: login(cms_url) for sid, _ in stories}

    def worker(sid: int, slug: str) -> None:
        cl = clients[sid]
        pages = httpx.Client(base_url=old.pages_url, timeout=5)
        pg = psycopg.connect(old.pg_url, autocommit=True)
        try:
            for i in range(per):
                with lock:
                    if done_count[0] >= trials:
                        return
                    done_count[0] += 1
                doc = cl.get(f"/api/stories/{sid}").json()
                story, rev = doc["story"], doc["revision"]
                mark = f"old-path-check-{kind}-{i}-{random.randrange(10**9)}"
                if kind == "preview":
                    story["body"][0]["text"] = f"{mark} " + story["body"][0]["text"][:400]
                    url, key = f"/preview/{sid}", f"draft:{sid}"

                    def check(r: Any, mark: str = mark) -> bool:
                        return r.status_code == 200 and mark in r.text
                else:
                    story["title"] = mark
                    story["slug"] = slug
                    url, key = f"/api/stories/{slug}", f"story:{slug}"

                    def check(r: Any, mark: str = mark) -> bool:
                        return r.status_code == 200 and r.json().get("title") == mark

                pages.get(url)  # the key is in the near-cache, as a page in use would be
                time.sleep(random.uniform(0, old.refresh))  # a save comes at any moment
                t0 = time.perf_counter()
                put = cl.put(f"/api/stories/{sid}", json={"base_revision": rev, "story": story})
                put.raise_for_status()
                if kind == "live":
                    t0 = time.perf_counter()
                    cl.post(f"/api/stories/{sid}/publish", json={}).raise_for_status()
                done = threading.Event()
                stored_at = watchers.submit(_in_store, pg, old.table, key, mark, t0, timeout, done)
                seen = _poll(url, check, t0, timeout, pages, every=0.05)
                done.set()
                in_store = stored_at.result()
                with lock:
                    if seen is None:
                        missed.append(f"story {sid}: not visible within {timeout:g} s")
                    else:
                        visible.append(seen)
                        if in_store is not None:
                            stored.append(in_store)
                    if progress:
                        progress(f"old path: {what}", len(visible) + len(missed), trials)
        finally:
            cl.close()
            pages.close()
            pg.close()

    threads = [threading.Thread(target=worker, args=s) for s in stories]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    watchers.shutdown()
    return {"trials": len(visible) + len(missed), "visible": len(visible),
            "missed": len(missed), "failures": missed[:5], "ms": percentiles(visible),
            "in_store_ms": percentiles(stored), "samples_ms": sorted(round(x, 2) for x in visible),
            "poll_ms": 50, "concurrent_stories": len(stories)}  # fmt: skip


# -- the run ----------------------------------------------------------------------------------


def bench_compare(
    *,
    films: int | None = None,
    iterations: int = 1000,
    trials: int = 100,
    old_trials: int = 40,
    refresh: float = 10.0,
    seconds: float = 10.0,
    connections: int = 16,
    nats_url: str = NATS_URL,
    pg_url: str = PG_URL,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Both read paths' figures (see the module docstring); ``films`` None: all 17,472."""
    if refresh <= 0:
        raise NearstateError(f"--refresh must be positive seconds, not {refresh}")
    with scratch(None) as (tmp, url):
        store, published = make_content(tmp, url, films, progress)
        slugs = CMS(store).slugs()
        slug = slugs[published[0]]
        titles = store.read_one("SELECT COUNT(*) AS n FROM titles")["n"]
        with (  # the old path first: without NATS or PostgreSQL the run stops at once
            OldPath(tmp, nats_url, pg_url, refresh) as old,
            System(tmp, url, site_args=("--page-cache", "0")) as system,
        ):
            fragments = old.wait_loaded(progress)
            sites = [f"http://127.0.0.1:{p}" for p in system.site_ports]
            same = {p: _same_html(sites[0], old.pages_url, p) for p in ("/", f"/stories/{slug}")}
            with phase(progress, "page construction"):
                ns_pages = in_process(tmp / "dataset", slug, iterations)
                old_pages = _baseline_pages(old.data_url, slug, iterations)
            with phase(progress, "memory"):
                memory = _memory(tmp / "dataset", pg_url, old.table, tmp)
            http: dict[str, Any] = {}
            with phase(progress, "requests per second (wrk)"):
                for name, base in (("nearstate", sites[0]), ("baseline", old.pages_url)):
                    http[name] = {
                        page: wrk(base + path, seconds, connections)
                        for page, path in (("home", "/"), ("story", f"/stories/{slug}"),
                                           ("home_json", "/api/home"),
                                           ("story_json", f"/api/stories/{slug}"))
                    }  # fmt: skip
            cms_url = f"http://127.0.0.1:{system.cms_port}"
            editor = login(cms_url)
            try:
                ns_preview = save_to_preview(editor, published[1], trials, progress)
                ns_live = publish_to_live(editor, published[2], sites, trials, progress)
            finally:
                editor.close()
            others = [(s, slugs[s]) for s in published[3:11]] or [(published[0], slug)]
            old_preview = _old_freshness(cms_url, old, others, old_trials, "preview", progress)
            old_live = _old_freshness(cms_url, old, others, old_trials, "live", progress)
            cache_stats = None
            with contextlib.suppress(Exception):
                import httpx

                cache_stats = httpx.get(f"{old.data_url}/stats", timeout=5).json()
        store.close()
    return _result({
        "titles": titles, "published": published, "refresh": refresh, "fragments": fragments,
        "same": same, "ns_pages": ns_pages, "old_pages": old_pages, "memory": memory,
        "http": http, "ns_preview": ns_preview, "ns_live": ns_live, "old_preview": old_preview,
        "old_live": old_live, "connections": connections, "seconds": seconds,
        "cache_stats": cache_stats,
    })  # fmt: skip


def _result(v: dict[str, Any]) -> dict[str, Any]:
    ns_pages, old_pages = v["ns_pages"], v["old_pages"]
    ns_preview, old_preview = v["ns_preview"], v["old_preview"]
    ns_live, old_live = v["ns_live"], v["old_live"]

    def pq(d: dict[str, float]) -> dict[str, float]:
        return {"p50": d["p50"], "p99": d["p99"]}

    return {
        "films": v["titles"],
        "stories": len(v["published"]),
        "cpus": os.cpu_count(),
        "refresh_s": v["refresh"],
        "fragments": v["fragments"],
        "same_html": v["same"],
        # page construction as Tudum's service did it: the page's data, which clients
        # render (server-driven UI); then the same with the HTML rendered here
        "page_ms": {
            "nearstate": pq(ns_pages["home_model_ms"]),
            "baseline": pq(old_pages["home_model_ms"]),
        },
        "story_page_ms": {
            "nearstate": pq(ns_pages["story_model_ms"]),
            "baseline": pq(old_pages["story_model_ms"]),
        },
        "page_html_ms": {
            "nearstate": pq(ns_pages["home_ms"]),
            "baseline": pq(old_pages["home_ms"]),
        },
        "story_html_ms": {
            "nearstate": pq(ns_pages["story_ms"]),
            "baseline": pq(old_pages["story_ms"]),
        },
        "page_detail": {"nearstate": ns_pages, "baseline": old_pages},
        "preview_visible_ms": {
            "nearstate": pq(ns_preview["ms"]),
            "baseline": pq(old_preview["ms"]),
        },
        "live_visible_ms": {"nearstate": pq(ns_live["ms"]), "baseline": pq(old_live["ms"])},
        "freshness_detail": {
            "nearstate_preview": ns_preview,
            "nearstate_live": ns_live,
            "baseline_preview": old_preview,
            "baseline_live": old_live,
        },
        "memory_bytes": {
            k: v["memory"][k] for k in ("nearstate", "hydrated_parquet", "python_objects")
        },
        "memory_detail": v["memory"]["detail"],
        "requests_per_s": {
            sys_: {page: r["requests_per_s"] for page, r in pages.items()}
            for sys_, pages in v["http"].items()
        },
        "http": v["http"],
        "wrk": {"threads": 1, "connections": v["connections"], "seconds": v["seconds"]},
        "near_cache": v.get("cache_stats"),
        "targets": TARGETS,
    }


def ratios(r: dict[str, Any]) -> dict[str, float | None]:
    """The three target ratios of a result; None where a figure is missing (no trial
    showed its change, say), which no target accepts."""
    pm, pv, mem = r["page_ms"], r["preview_visible_ms"], r["memory_bytes"]

    def div(a: float, b: float, digits: int) -> float | None:
        return round(a / b, digits) if a > 0 and b > 0 else None

    return {
        "page_speedup": div(pm["baseline"]["p50"], pm["nearstate"]["p50"], 1),
        "preview_ratio": div(pv["nearstate"]["p50"], pv["baseline"]["p50"], 4),
        "memory_ratio": div(mem["nearstate"], mem["hydrated_parquet"], 3),
    }
