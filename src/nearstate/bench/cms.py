"""Benchmarks of the editorial write path (``nearstate bench cms ...``).

- :func:`bench_save`: an editor's save → its render-ready records committed to the
  dataset (by the ingestion worker running as it does in the CMS process).
- :func:`bench_import`: the real films into the write store, then through ingestion into
  the dataset as Title and Person records.
- :func:`bench_editors`: many editors saving over HTTP against the editor app for a while;
  counts 5xx answers and lost updates (an acknowledged save missing from the newest
  revision).

Each works in a scratch directory (and, for PostgreSQL, a scratch schema it drops).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import random
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import nearstate

from ..content import outbox
from ..content.accounts import create_user
from ..content.cms import CMS
from ..content.db import WriteStore, open_store
from ..content.films import import_films
from ..content.ingest import IngestWorker, ingestor_for, wait_idle, worker_processes
from ..content.media import MediaConfig, store_upload
from ..content.wait import Ingested
from ..web.processes import Service, Services, free_port
from .stats import percentiles

Progress = Callable[[str, int, int], None]


@contextlib.contextmanager
def scratch(cms: str | None) -> Iterator[tuple[Path, str]]:
    """A scratch directory and a write store URL in it (SQLite), or a scratch schema of the
    PostgreSQL database ``cms`` names; both removed afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix="nearstate-bench-"))
    try:
        if cms is None or not cms.startswith(("postgresql://", "postgres://")):
            yield tmp, f"sqlite:///{tmp / 'cms.db'}"
            return
        import psycopg

        name = f"bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(cms, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {name}")
        sep = "&" if "?" in cms else "?"
        try:
            yield tmp, f"{cms}{sep}options={quote(f'-csearch_path={name}')}"
        finally:
            with psycopg.connect(cms, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _png(seed: int, size: tuple[int, int] = (1600, 900)) -> bytes:
    from PIL import Image

    rng = random.Random(seed)
    im = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def _fixtures(store: WriteStore, media: MediaConfig, films: int) -> dict[str, Any]:
    """Films, an author and two images to refer to."""
    import_films(store, limit=films)
    cms = CMS(store)
    author = cms.add_staff("Bench Writer")
    assets = [
        store_upload(store, media, _png(i), filename=f"b{i}.png", alt=f"image {i}")["id"]
        for i in range(2)
    ]
    titles = [r["id"] for r in store.read("SELECT id FROM titles ORDER BY id LIMIT 40")]
    return {"author": author, "assets": assets, "titles": titles}


def _story(fx: dict[str, Any], rng: random.Random, n: int) -> dict[str, Any]:
    words = "the crew built the set in eleven days and shot the finale at dawn".split()  # noqa: SIM905
    paras = [
        " ".join(rng.choice(words) for _ in range(rng.randrange(40, 120)))
        for _ in range(rng.randrange(3, 8))
    ]
    t = rng.sample(fx["titles"], 3)
    body: list[dict[str, Any]] = [{"kind": "paragraph", "text": p} for p in paras]
    body.insert(1, {"kind": "image", "asset": fx["assets"][1], "text": "On set"})
    body.insert(2, {"kind": "title", "title": t[0]})
    body.append({"kind": "quote", "text": "We had one take.", "cite": "The director"})
    return {
        "title": f"Behind the scenes, part {n}",
        "dek": "How it was made.",
        "body": body,
        "hero": fx["assets"][0],
        "tags": ["behind-the-scenes"],
        "related": t[1:],
        "authors": [fx["author"]],
    }


def _wait_idle(
    store: WriteStore, timeout: float, progress: Progress | None = None, label: str = "ingesting"
) -> None:
    """:func:`~nearstate.content.ingest.wait_idle` with this module's labelled progress."""
    wait_idle(
        store, timeout=timeout, progress=(lambda d, t: progress(label, d, t)) if progress else None
    )


def bench_save(
    *,
    cms: str | None = None,
    saves: int = 1000,
    stories: int = 20,
    interval: float = 0.02,
    films: int = 500,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Save → render-ready records committed, on the embedded backend: ``saves`` saves,
    one every ``interval`` seconds, across ``stories`` stories; the ingestion worker runs
    in this process as it does in the CMS."""
    with scratch(cms) as (tmp, url):
        store = open_store(url)
        media = MediaConfig(root=tmp / "media")
        fx = _fixtures(store, media, films)
        ds = nearstate.open(tmp / "dataset")
        done = Ingested(keep=None)  # when the worker finished each event
        worker = IngestWorker(ingestor_for(store, ds, media), on_event=done).start()
        try:
            _wait_idle(store, 120, progress, "ingesting fixtures")
            c = CMS(store)
            rng = random.Random(7)
            ids, number = [], {}
            for i in range(stories):
                sid = int(c.create_story(_story(fx, rng, i), user="bench").id)
                ids.append(sid)
                number[sid] = i  # its title, and so its slug, stays the same
            _wait_idle(store, 60)
            revs = {sid: 1 for sid in ids}
            save_ms: list[float] = []
            visible_ms: list[float] = []
            keys = []
            for i in range(saves):
                sid = rng.choice(ids)
                data = _story(fx, rng, number[sid])
                t0 = time.perf_counter()
                s = c.save_story(sid, data, base_revision=revs[sid], user="bench")
                t1 = time.perf_counter()
                revs[sid] = s.revision
                save_ms.append((t1 - t0) * 1000)
                keys.append((("story", str(sid), s.revision), t1))
                if progress and i % 50 == 0:
                    progress("saving", i, saves)
                time.sleep(interval * rng.uniform(0.5, 1.5))
            missing = 0
            for key, t1 in keys:
                at = done.finished_at(key, 30)
                if at is None:
                    missing += 1
                else:
                    visible_ms.append((at - t1) * 1000)
            if progress:
                progress("saving", saves, saves)
            statuses = c.status_counts()
        finally:
            worker.stop()
            store.close()
        return {
            "backend": "postgresql" if store.dialect == "postgres" else "sqlite",
            "saves": saves,
            "stories": stories,
            "interval_ms": interval * 1000,
            "save_ms": percentiles(save_ms),
            "records_committed_ms": percentiles(visible_ms),
            "not_ingested": missing,
            "failures": done.failures[:5],
            "revision_status": statuses,
        }


def bench_import(
    *,
    cms: str | None = None,
    limit: int | None = None,
    workers: int = 2,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """All the films into a fresh write store while ``workers`` ingestion processes turn
    the events into Title and Person records in a fresh dataset; times each part."""
    with scratch(cms) as (tmp, url):
        store = open_store(url)
        media = MediaConfig(root=tmp / "media")
        ds = nearstate.open(tmp / "dataset")
        t0 = time.perf_counter()
        with worker_processes(url, str(tmp / "dataset"), media, workers):
            got = import_films(
                store,
                limit=limit,
                progress=(lambda d, t: progress("importing films", d, t)) if progress else None,
            )
            t1 = time.perf_counter()
            wait_idle(
                store, progress=(lambda d, t: progress("ingesting", d, t)) if progress else None
            )
            t2 = time.perf_counter()
        c = ds.consumer()
        c.sync(60)
        titles, people = len(c.state["Title"]), len(c.state["Person"])
        dead = len(outbox.dead_letters(store))
        events = sum(outbox.counts(store).values())
        dialect = store.dialect
        store.close()
        return {
            "backend": "postgresql" if dialect == "postgres" else "sqlite",
            "workers": workers,
            "films": got.titles,
            "people": got.people,
            "placeholders": got.placeholders,
            "write_store_s": round(t1 - t0, 2),
            "ingestion_after_write_store_s": round(t2 - t1, 2),
            "total_s": round(t2 - t0, 2),
            "events": events,
            "dead_events": dead,
            "title_records": titles,
            "person_records": people,
        }


# -- many editors over HTTP ---------------------------------------------------------------------


def _editor_app(data: Path, cms: str, port: int) -> Services:
    """The editor app as a process of its own; SIGUSR1 dumps its threads into its log (to
    see where a stuck worker waits)."""
    code = (
        "import faulthandler, signal, sys; faulthandler.register(signal.SIGUSR1);"
        " from nearstate.cli import main; sys.exit(main())"
    )
    argv = [sys.executable, "-c", code, "cms", "serve", "--data", str(data), "--cms", cms,
            "--port", str(port), "--quiet"]  # fmt: skip
    app = Service("the editor app", "cms", argv, f"http://127.0.0.1:{port}/login")
    secret = {"NEARSTATE_SECRET": "a secret for the editors benchmark only"}
    return Services([app], data / "logs", env=secret)


def bench_editors(
    *,
    cms: str | None = None,
    editors: int = 50,
    seconds: float = 60.0,
    stories: int = 25,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """``editors`` clients, each logged in as its own user, for ``seconds``: read a story,
    append a line to it, save it on the revision read; on a conflict read it again and
    retry. Afterwards every acknowledged line must be in its story's newest revision,
    each story must have exactly one revision per acknowledged save, and the dataset's
    drafts must show the newest revisions."""

    with scratch(cms) as (tmp, url):
        store = open_store(url)
        fx = _fixtures(store, MediaConfig(root=tmp / "media"), 200)
        c = CMS(store)
        rng = random.Random(11)
        ids = [c.create_story(_story(fx, rng, i), user="bench").id for i in range(stories)]
        password = "a long bench password"
        for i in range(editors):
            create_user(store, f"editor{i}", password)
            if progress:
                progress("creating editors", i + 1, editors)
        port = free_port()
        server = _editor_app(tmp, url, port)
        base = f"http://127.0.0.1:{port}"
        try:
            server.start()
            server.wait_ready(60)
            _wait_idle(store, 120, progress, "ingesting fixtures")
            stats = asyncio.run(_editors(base, ids, editors, seconds, password, progress))
            try:
                _wait_idle(store, 120)
            except TimeoutError as e:
                app = server.services[0]
                app.send(signal.SIGUSR1)
                time.sleep(1)
                raise TimeoutError(f"{e}; the editor app said: {app.tail(60)}") from None
            check = _check_lost(store, ids, stats.pop("acked"), tmp / "dataset")
        finally:
            server.stop(grace=15.0)
            store.close()
        return {
            "backend": "postgresql" if url.startswith("postgres") else "sqlite",
            "editors": editors,
            "seconds": seconds,
            "stories": stories,
            **stats,
            **check,
        }


async def _editors(
    base: str,
    ids: list[int],
    editors: int,
    seconds: float,
    password: str,
    progress: Progress | None,
) -> dict[str, Any]:
    import httpx

    acked: dict[int, list[str]] = {i: [] for i in ids}
    counts = {"saves": 0, "conflicts": 0, "status_4xx": 0, "status_5xx": 0, "errors": 0}
    lat: list[float] = []
    examples: list[str] = []
    t_end = time.monotonic() + seconds
    start = time.monotonic()

    async def one(k: int) -> None:
        rng = random.Random(k)
        limits = httpx.Limits(max_connections=2)
        async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as cl:
            r = await cl.post("/api/login", json={"username": f"editor{k}", "password": password})
            r.raise_for_status()
            headers = {"X-CSRF-Token": r.json()["csrf"]}
            n = 0
            while time.monotonic() < t_end:
                sid = rng.choice(ids)
                try:
                    got = await cl.get(f"/api/stories/{sid}")
                    if got.status_code != 200:
                        counts["status_5xx" if got.status_code >= 500 else "status_4xx"] += 1
                        continue
                    doc = got.json()
                    story, rev = _story_of(doc)
                    marker = f"e{k}n{n}"
                    body = story["body"]
                    last = body[-1] if body else None
                    if (
                        last
                        and last.get("kind") == "paragraph"
                        and last["text"].startswith("log:")
                        and len(last["text"]) < 15_000
                    ):
                        last["text"] += f" {marker}"
                    else:
                        body.append({"kind": "paragraph", "text": f"log: {marker}"})
                    t0 = time.perf_counter()
                    put = await cl.put(
                        f"/api/stories/{sid}",
                        headers=headers,
                        json={"base_revision": rev, "story": story},
                    )
                    lat.append((time.perf_counter() - t0) * 1000)
                    if put.status_code in (200, 201):
                        acked[sid].append(marker)
                        counts["saves"] += 1
                        n += 1
                    elif put.status_code == 409:
                        counts["conflicts"] += 1
                    elif put.status_code >= 500:
                        counts["status_5xx"] += 1
                        if len(examples) < 5:
                            examples.append(f"{put.status_code}: {put.text[:300]}")
                    else:
                        counts["status_4xx"] += 1
                        if len(examples) < 5:
                            examples.append(f"{put.status_code}: {put.text[:300]}")
                except httpx.HTTPError as e:
                    counts["errors"] += 1
                    if len(examples) < 5:
                        examples.append(f"{type(e).__name__}: {e}")

    async def ticker() -> None:
        while time.monotonic() < t_end:
            if progress:
                progress("editing", int(time.monotonic() - start), int(seconds))
            await asyncio.sleep(1)

    await asyncio.gather(ticker(), *(one(k) for k in range(editors)))
    took = time.monotonic() - start
    return {
        **counts,
        "saves_per_s": round(counts["saves"] / took, 1),
        "save_request_ms": percentiles(lat),
        "examples": examples,
        "acked": acked,
    }


def _story_of(doc: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """The editable story and its revision from ``GET /api/stories/{id}``."""
    story = doc.get("story") or doc.get("data")
    return dict(story), int(doc["revision"])


def _check_lost(
    store: WriteStore, ids: list[int], acked: dict[int, list[str]], dataset: Path
) -> dict[str, Any]:
    cms = CMS(store)
    lost = 0
    wrong_revisions = 0
    for sid in ids:
        cur = cms.story(sid)
        text = " ".join(b.get("text", "") for b in cur["data"]["body"])
        have = set(text.split())
        lost += sum(1 for m in acked[sid] if m not in have)
        revs = cms.revisions(sid)
        if len(revs) != 1 + len(acked[sid]):
            wrong_revisions += 1
    c = nearstate.open(dataset).consumer()
    c.sync(60)
    stale = sum(
        1 for sid in ids if c.state["DraftStory"].get(sid).revision != cms.story(sid)["revision"]
    )
    return {
        "lost_updates": lost,
        "stories_with_unexpected_revisions": wrong_revisions,
        "drafts_not_at_newest_revision": stale,
        "acked_saves": sum(map(len, acked.values())),
    }


def as_json(result: dict[str, Any]) -> str:
    return json.dumps(result, indent=2)
