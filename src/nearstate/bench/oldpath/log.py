"""The old path's log side: ingestion publishes fragments to a JetStream stream (standing
in for Kafka), and the data service consumes them into a PostgreSQL table (standing in for
Cassandra).

- :func:`run_ingestion` follows the render-ready records the CMS's ingestion writes (a
  nearstate consumer of the dataset: the records themselves, as the old ingestion had them
  in hand), applies the old path's page templates (:mod:`.fragments`) and publishes every
  fragment a change touched, one message per fragment: header ``Key``, the JSON as body;
  a tombstone has header ``Tombstone`` and no body.
- :func:`run_data_service` is a durable consumer of the stream: it writes each batch of
  messages into the table ``(key, value, updated_at)`` in one transaction, then
  acknowledges them (at least once; a redelivered message rewrites the same row).
"""

from __future__ import annotations

import asyncio
import json
import queue
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...content.pages import Pages
from ...errors import NearstateError
from .fragments import Published, changed

Progress = Callable[[str, int, int], None]


def names(run: str) -> dict[str, str]:
    """The JetStream stream, subject and durable consumer, and the table, of a run."""
    return {
        "stream": f"OLDPATH_{run}",
        "subject": f"oldpath.{run}.fragments",
        "durable": "data-service",
        "table": f"oldpath_{run.lower()}",
    }


def create(nats_url: str, pg_url: str, run: str) -> None:
    """Create the stream and the table of ``run`` (both empty)."""
    import nats
    import psycopg

    n = names(run)

    async def go() -> None:
        nc = await nats.connect(nats_url, connect_timeout=3, allow_reconnect=False,
                                max_reconnect_attempts=0)  # fmt: skip
        try:
            await nc.jetstream().add_stream(name=n["stream"], subjects=[n["subject"]])
        finally:
            await nc.close()

    from ...backends.nats_conn import _reachable

    # nats-py retries a first connection for minutes: see first whether anything listens
    why = _reachable(nats_url, 3.0)
    try:
        if why is None:
            asyncio.run(go())
    except Exception as e:
        why = repr(e)
    if why is not None:
        raise NearstateError(f"the old path needs NATS with JetStream at {nats_url}: {why}")
    try:
        with psycopg.connect(pg_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {n['table']} (key text PRIMARY KEY,"
                " value bytea NOT NULL, updated_at double precision NOT NULL)"
            )
    except psycopg.Error as e:
        raise NearstateError(f"the old path needs PostgreSQL at {pg_url}: {e}") from e


def drop(nats_url: str, pg_url: str, run: str) -> None:
    """Remove the stream and the table of ``run`` (what exists of them)."""
    import contextlib

    import nats
    import psycopg

    n = names(run)

    async def go() -> None:
        nc = await nats.connect(nats_url, connect_timeout=3, allow_reconnect=False,
                                max_reconnect_attempts=0)  # fmt: skip
        try:
            with contextlib.suppress(Exception):
                await nc.jetstream().delete_stream(n["stream"])
        finally:
            await nc.close()

    from ...backends.nats_conn import _reachable

    if _reachable(nats_url, 3.0) is None:
        with contextlib.suppress(Exception):
            asyncio.run(go())
    with (
        contextlib.suppress(psycopg.Error),
        psycopg.connect(pg_url, autocommit=True, connect_timeout=5) as conn,
    ):
        conn.execute(f"DROP TABLE IF EXISTS {n['table']}")


# -- ingestion: fragments to the stream ------------------------------------------------------


class Publisher:
    """Publishes fragments to the run's stream from synchronous code (one event loop in a
    thread); :meth:`send` returns once JetStream has acknowledged every message."""

    def __init__(self, nats_url: str, run: str):
        from ...backends.nats_conn import NatsConnection

        self.subject = names(run)["subject"]
        self.stream = names(run)["stream"]
        self.conn = NatsConnection(nats_url, request_timeout=10.0)
        self._js: Any = None

    def send(self, fragments: list[tuple[str, bytes | None]], progress: Progress | None = None
             ) -> None:  # fmt: skip
        async def go() -> None:
            if self._js is None:  # one context: it subscribes to its acks' inbox once
                self._js = self.conn.nc.jetstream(publish_async_max_pending=2000)
            jsc = self._js
            futures = []
            for i, (key, body) in enumerate(fragments):
                hdr = {"Key": key} if body is not None else {"Key": key, "Tombstone": "1"}
                futures.append(await jsc.publish_async(self.subject, body or b"", headers=hdr))
                if progress and i % 2000 == 0:
                    progress("publishing fragments", i, len(fragments))
            for f in futures:
                await f

        self.conn.run(go(), timeout=600)
        if progress:
            progress("publishing fragments", len(fragments), len(fragments))

    def close(self) -> None:
        self.conn.close()


def run_ingestion(dataset: str, nats_url: str, run: str, ready: Path,
                  stop: threading.Event | None = None) -> None:  # fmt: skip
    """Publish every fragment of the dataset's current state, write ``ready`` (a JSON
    object with the number of fragments), then publish what each change touches until
    ``stop`` is set (or SIGTERM)."""
    import nearstate

    stop = stop or _stop_on_signals()
    ds = nearstate.open(dataset)
    consumer = ds.consumer()
    consumer.start()
    pending: queue.SimpleQueue[Any] = queue.SimpleQueue()
    consumer.add_listener(lambda ev: pending.put(ev.changes))
    pages, published = Pages(), Published()
    pub = Publisher(nats_url, run)
    try:
        first = changed(consumer.state, pages, published, None)
        pub.send(first)
        tmp = ready.with_suffix(".tmp")
        tmp.write_text(json.dumps({"fragments": len(published), "at": time.time()}))
        tmp.replace(ready)
        while not stop.is_set():
            try:
                batch = [pending.get(timeout=0.2)]
            except queue.Empty:
                continue
            while not pending.empty():
                batch.append(pending.get_nowait())
            merged: dict[str, Any] | None = {}
            for ch in batch:
                if ch is None or merged is None:
                    merged = None
                else:
                    merged.update({t: c for t, c in ch.items() if c})
            out = changed(consumer.state, pages, published, merged)
            if out:
                pub.send(out)
    finally:
        pub.close()
        consumer.stop()


def _stop_on_signals() -> threading.Event:
    ev = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: ev.set())
    return ev


# -- the data service: the stream to the table ------------------------------------------------


async def data_service(nats_url: str, pg_url: str, run: str, stop: asyncio.Event) -> None:
    """Consume the stream into the table until ``stop`` is set: each batch of messages that
    arrived together is written in one transaction (the last message of a key wins), then
    acknowledged."""
    import nats
    import psycopg

    n = names(run)
    nc = await nats.connect(nats_url, connect_timeout=3, max_reconnect_attempts=-1)
    conn = await psycopg.AsyncConnection.connect(pg_url)
    inbox: list[Any] = []
    arrived = asyncio.Event()

    async def on_msg(msg: Any) -> None:
        inbox.append(msg)
        arrived.set()

    js = nc.jetstream()
    sub = await js.subscribe(n["subject"], stream=n["stream"], durable=n["durable"], cb=on_msg,
                             manual_ack=True, pending_msgs_limit=100_000)  # fmt: skip
    upsert = (
        f"INSERT INTO {n['table']} (key, value, updated_at) VALUES (%s, %s, %s)"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at"
    )
    try:
        while not stop.is_set():
            try:
                await asyncio.wait_for(arrived.wait(), 0.5)
            except TimeoutError:
                continue
            arrived.clear()
            batch, inbox[:] = list(inbox), []
            last: dict[str, bytes | None] = {}
            for m in batch:
                hdr = m.headers or {}
                key = hdr.get("Key")
                if key is None:
                    continue  # not ours: acknowledged and dropped
                last[key] = None if hdr.get("Tombstone") else bytes(m.data)
            now = time.time()
            async with conn.transaction(), conn.cursor() as cur:
                rows = [(k, v, now) for k, v in last.items() if v is not None]
                if rows:
                    await cur.executemany(upsert, rows)
                gone = [k for k, v in last.items() if v is None]
                if gone:
                    await cur.execute(f"DELETE FROM {n['table']} WHERE key = ANY(%s)", (gone,))
            for m in batch:
                await m.ack()
    finally:
        await sub.unsubscribe()
        await nc.close()
        await conn.close()


def run_data_service(nats_url: str, pg_url: str, run: str) -> None:
    """:func:`data_service` until SIGTERM or SIGINT."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await data_service(nats_url, pg_url, run, stop)

    try:
        asyncio.run(main())
    except OSError as e:
        raise NearstateError(f"the data service could not start: {e}") from e
