"""``nearstate site ...``: the public site, its pages built in each process's memory."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..errors import NearstateError
from .common import err, fail, out
from .platform import app_options, serve, settings

MB = 1 << 20


@click.group()
def site() -> None:
    """The public site: pages built in each process's memory."""


@site.command("serve")
@app_options(port=8080)
@click.option("--editor-url", default=None, help="The editor app's URL, linked from the footer.")
@click.option("--no-media", is_flag=True, help="Do not serve /media (a CDN does).")
@click.option(
    "--page-cache",
    type=click.IntRange(min=0),
    default=2048,
    show_default=True,
    help="Rendered pages kept per worker, for the state shown (0: render every request).",
)
@click.option(
    "--page-cache-mb",
    type=click.IntRange(min=0),
    default=16,
    show_default=True,
    help="At most this many MiB of rendered pages kept per worker (0: none kept).",
)
@click.option(
    "--card-cache",
    type=click.IntRange(min=0),
    default=1024,
    show_default=True,
    help="Story and title cards kept per worker for the pages, of each (0: each card made anew).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Worker processes sharing the port (a worker that dies is replaced).",
)
@click.option(
    "--search-cache",
    default=None,
    help="Directory where the search index is built once per host and mapped by every "
    "worker, or 'off' (each builds its own); default with --workers > 1: "
    "$NEARSTATE_CACHE_DIR/search or ~/.cache/nearstate/search.",
)
@click.option(
    "--ready-timeout",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds a new worker waits for its copy of the state before it takes requests.",
)
@click.option("--quiet", is_flag=True, help="No access log.")
def site_serve(
    data: str,
    cms_url: str | None,
    dataset: str | None,
    host: str,
    port: int,
    media_url: str | None,
    editor_url: str | None,
    no_media: bool,
    page_cache: int,
    page_cache_mb: int,
    card_cache: int,
    workers: int,
    search_cache: str | None,
    ready_timeout: float,
    quiet: bool,
) -> None:
    """Serve the public site from this process's own copy of the dataset.

    Run several on different ports (or hosts): each holds the whole state in memory and
    follows new versions and the Log. With the write store at hand (the default data
    directory) it also serves /media, standing in for a CDN's origin.

    With --workers N, N processes share the port; the snapshot is mapped, and the search
    index built once per host and mapped, so the host holds one copy of each."""
    import nearstate

    from ..content.db import StoreError, open_store
    from ..web.site import SiteConfig, create_site_app

    try:
        s = settings(data, cms_url, dataset, media_url)
    except NearstateError as e:
        fail(e)
    cache = _search_cache(search_cache, workers)
    caches = cache_settings(page_cache, page_cache_mb, card_cache)

    def make_app() -> Any:
        if cache is not None:  # the snapshot's hash indexes too: once per host, mapped
            from ..shared_index import share_indexes

            share_indexes(cache)
        store = None
        if not no_media:
            try:
                store = open_store(s.cms, migrate=False)
            except StoreError as e:
                err.print(f"Not serving /media: {e}", highlight=False)
        return create_site_app(
            SiteConfig(
                dataset=nearstate.open(s.dataset),
                secret_key=s.secret,
                store=store,
                media=s.media,
                editor_url=editor_url,
                search_cache=cache,
                **caches,
            )
        )

    what = f"Site (dataset {s.dataset})"
    if workers == 1:
        try:
            app = make_app()
        except NearstateError as e:
            fail(e)
        serve(app, host, port, quiet, what)
        return
    # the app made once in the pool's parent (shared by the workers) when making it opens
    # no connection: no write store, and a local dataset (a NATS one connects)
    local = "://" not in str(s.dataset) or str(s.dataset).startswith("file:")
    serve_workers(make_app, host, port, workers, quiet, what, ready_timeout, editor_url,
                  app_in_parent=no_media and local)  # fmt: skip


def cache_settings(page_cache: int, page_cache_mb: int, card_cache: int) -> dict[str, int]:
    """The ``SiteConfig`` fields of what each worker keeps of its own, from the options."""
    return {"page_cache": page_cache, "page_cache_bytes": page_cache_mb * MB,
            "card_cache": card_cache}  # fmt: skip


def _search_cache(option: str | None, workers: int) -> Path | None:
    if option == "off" or (option is None and workers == 1):
        return None
    if option:
        return Path(option)
    from ..backends.blob_cache import default_root

    return default_root().parent / "search"


def serve_workers(make_app: Callable[[], Any], host: str, port: int, workers: int, quiet: bool,
                  what: str, ready_timeout: float, editor_url: str | None = None,
                  app_in_parent: bool = False) -> None:  # fmt: skip
    """Serve ``make_app()`` from a pool of ``workers`` processes sharing ``port``."""
    from ..web.pool import bind, serve_pool

    def ready(app: Any) -> None:
        if not app.state.site.wait_ready(ready_timeout):
            err.print(f"A worker (pid {os.getpid()}) takes requests before its state is "
                      f"loaded ({ready_timeout:g} s passed).", highlight=False)  # fmt: skip

    from ..web.site.state import http_url, templates

    templates(http_url(editor_url))  # compiled once, before the fork: shared by the workers
    try:
        sock = bind(host, port)
        if not quiet:
            out.print(f"{what} on http://{host}:{port} with {workers} workers; Ctrl-C stops "
                      "it.", highlight=False)  # fmt: skip
        serve_pool(make_app, sock, workers, ready=ready, log_level="warning" if quiet else "info",
                   access_log=not quiet, say=lambda m: err.print(m, highlight=False),
                   app_in_parent=app_in_parent)  # fmt: skip
    except NearstateError as e:
        fail(e)
