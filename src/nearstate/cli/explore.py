"""``nearstate explore DATASET``: the read-only explorer over a dataset, served over HTTP."""

from __future__ import annotations

import click

from ..errors import NearstateError
from .common import existing, fail
from .platform import serve


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
    serve(app, host, port, quiet, f"Explorer of {dataset} (read-only, version "
                                  f"{ds.latest_version()} announced)")  # fmt: skip
