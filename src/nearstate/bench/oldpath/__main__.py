"""``python -m nearstate.bench.oldpath ROLE …``: one process of the old read path (started
by ``nearstate bench compare``; see the package docstring)."""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def main() -> None:
    """One process of the old read path (the benchmark baseline)."""


@main.command()
@click.option("--dataset", required=True, help="The nearstate dataset the CMS ingests into.")
@click.option("--nats", "nats_url", required=True)
@click.option("--run", required=True, help="The run's name (its stream and table).")
@click.option("--ready", required=True, type=click.Path(path_type=Path))
def ingest(dataset: str, nats_url: str, run: str, ready: Path) -> None:
    """Publish fragments to the stream: all of them, then what each change touches."""
    from .log import run_ingestion

    run_ingestion(dataset, nats_url, run, ready)


@main.command()
@click.option("--nats", "nats_url", required=True)
@click.option("--pg", "pg_url", required=True)
@click.option("--run", required=True)
def data(nats_url: str, pg_url: str, run: str) -> None:
    """Consume the stream into the table."""
    from .log import run_data_service

    run_data_service(nats_url, pg_url, run)


def _serve(app: object, port: int) -> None:
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                loop="uvloop", http="httptools")  # fmt: skip


@main.command()
@click.option("--pg", "pg_url", required=True)
@click.option("--run", required=True)
@click.option("--port", type=int, required=True)
@click.option("--refresh", type=float, required=True, help="Seconds between a key's reloads.")
def pagedata(pg_url: str, run: str, port: int, refresh: float) -> None:
    """Serve the fragments from a near-cache over the table."""
    from .log import names
    from .pagedata import NearCache, StoreReader, create_page_data_app

    cache = NearCache(StoreReader(pg_url, names(run)["table"]), refresh)
    _serve(create_page_data_app(cache), port)


@main.command()
@click.option("--data-url", required=True, help="The page data service's URL.")
@click.option("--port", type=int, required=True)
def pages(data_url: str, port: int) -> None:
    """Serve pages built from fragments fetched from the page data service."""
    from .construct import create_construction_app

    _serve(create_construction_app(data_url), port)


if __name__ == "__main__":
    main()
