"""What the platform's verbs (``cms``, ``site``) share: the ``--data``, ``--cms`` and
``--dataset`` options, the settings they make, and serving an app until Ctrl-C."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from ..web.settings import Settings
from .common import out

F = TypeVar("F", bound=Callable[..., Any])

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


def app_options(port: int) -> Callable[[F], F]:
    """The options of a verb that serves an app: ``--data``, ``--cms``, ``--dataset``,
    ``--host``, ``--port`` (``port`` by default) and ``--media-url``."""

    def wrap(fn: F) -> F:
        for option in reversed([
            data_option,
            cms_option,
            dataset_option,
            click.option("--host", default="127.0.0.1", show_default=True),
            click.option("--port", type=int, default=port, show_default=True),
            click.option("--media-url", default=None, help="CDN base URL of asset variants."),
        ]):  # fmt: skip
            fn = option(fn)
        return fn

    return wrap


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
