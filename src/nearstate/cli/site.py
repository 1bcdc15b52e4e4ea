"""``nearstate site ...``: the public site, its pages built in each process's memory."""

from __future__ import annotations

import click

from ..errors import NearstateError
from .common import err, fail
from .platform import app_options, serve, settings


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
    help="Rendered pages kept per state (0: render every request).",
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
    quiet: bool,
) -> None:
    """Serve the public site from this process's own copy of the dataset.

    Run several on different ports (or hosts): each holds the whole state in memory and
    follows new versions and the Log. With the write store at hand (the default data
    directory) it also serves /media, standing in for a CDN's origin."""
    import nearstate

    from ..content.db import StoreError, open_store
    from ..web.site import SiteConfig, create_site_app

    try:
        s = settings(data, cms_url, dataset, media_url)
        store = None
        if not no_media:
            try:
                store = open_store(s.cms, migrate=False)
            except StoreError as e:
                err.print(f"Not serving /media: {e}", highlight=False)
        app = create_site_app(
            SiteConfig(
                dataset=nearstate.open(s.dataset),
                secret_key=s.secret,
                store=store,
                media=s.media,
                editor_url=editor_url,
                page_cache=page_cache,
            )
        )
    except NearstateError as e:
        fail(e)
    serve(app, host, port, quiet, f"Site (dataset {s.dataset})")
