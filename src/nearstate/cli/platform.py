"""What the platform's verbs (``cms``, ``site``) share: the ``--data``, ``--cms`` and
``--dataset`` options, the settings they make, and serving an app until Ctrl-C."""

from __future__ import annotations

from typing import Any

import click

from ..web.settings import Settings
from .common import out

data_option = click.option(
    "--data",
    default="data",
    show_default=True,
    help="The data directory (write store, dataset, media, secret).",
)
cms_option = click.option(
    "--cms",
    "cms_url",
    default=None,
    help="Write store URL (sqlite:///path or postgresql://...); "
    "default DATA/cms.db or $NEARSTATE_CMS.",
)
dataset_option = click.option(
    "--dataset",
    default=None,
    help="Dataset (a directory or nats://host:4222/name); "
    "default DATA/dataset or $NEARSTATE_DATASET.",
)


def settings(
    data: str, cms: str | None, dataset: str | None = None, media_url: str | None = None
) -> Settings:
    """The platform's settings: options, then the environment, then defaults under DATA."""
    return Settings.load(data, cms=cms, dataset=dataset, media_url=media_url)


def serve(app: Any, host: str, port: int, quiet: bool, what: str) -> None:
    """Serve ``app`` with uvicorn until Ctrl-C, saying what and where first."""
    import uvicorn

    if not quiet:
        out.print(f"{what} on http://{host}:{port}; Ctrl-C stops it.", highlight=False)
    uvicorn.run(
        app, host=host, port=port, log_level="warning" if quiet else "info", access_log=not quiet
    )
