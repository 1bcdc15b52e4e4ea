"""``nearstate explore DATASET``: the read-only explorer over a dataset, served over HTTP."""

from __future__ import annotations

import click

from ..errors import NearstateError
from .common import existing, fail, out


@click.command()
@click.argument("dataset", metavar="DATASET")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8090, show_default=True,
              help="Port to listen on.")  # fmt: skip
@click.option("--quiet", is_flag=True, help="No access log.")
def explore(dataset: str, host: str, port: int, quiet: bool) -> None:
    """Browse DATASET (a directory or a URL such as nats://host:4222/name) in a browser:
    types, records, indexes, versions, diffs, a record's history and the Log's tail.

    Read-only: it never changes the dataset, and answers only GET requests."""
    from ..web.explorer import ExplorerConfig, create_explorer_app

    try:
        ds = existing(dataset, holding="a version")
        app = create_explorer_app(ExplorerConfig(dataset=ds))
    except NearstateError as e:
        fail(e)
    import uvicorn

    out.print(
        f"Explorer of {dataset} (read-only; version {ds.latest_version()} announced) on "
        f"http://{host}:{port}/; Ctrl-C stops it.",
        highlight=False,
    )
    level = "warning" if quiet else "info"
    uvicorn.run(app, host=host, port=port, log_level=level, access_log=not quiet)
