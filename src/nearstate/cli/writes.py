"""The write path's verbs: ``put``, ``delete``, ``get`` (with a consistency), ``watch`` and
``compact``."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import click
import msgspec

from ..compaction import compact as compact_log
from ..consumer import CONSISTENCIES
from ..dataset import Dataset, open_dataset
from ..errors import InputError, NearstateError, ServerUnreachable
from ..writer import decode_entry
from .common import err, existing, fail, out, parse_key, to_json

_DIR = click.Path(file_okay=False, path_type=Path)
# a dataset: a directory, file:///path or nats://host:4222/name
_DATASET = click.STRING


def _records(text: str) -> list[dict[str, Any]]:
    """One JSON object, or an array of them (``-`` reads standard input)."""
    if text == "-":
        text = sys.stdin.read()
    try:
        v = msgspec.json.decode(text.encode())
    except msgspec.DecodeError as e:
        raise InputError(f"the record is not valid JSON: {e}") from None
    recs = v if isinstance(v, list) else [v]
    for r in recs:
        if not isinstance(r, dict):
            raise InputError(f"a record is a JSON object, not {type(r).__name__}: {r!r}")
    if not recs:
        raise InputError("no record given")
    return recs


@click.command()
@click.argument("dataset", type=_DATASET, metavar="DATASET")
@click.argument("type_name")
@click.argument("record")
@click.option("--expect-absent", is_flag=True, help="Only if no record has this key yet.")
@click.option("--expect-token", type=int, default=None,
              help="Only if the key was last changed by the commit with this token.")  # fmt: skip
def put(dataset: str, type_name: str, record: str, expect_absent: bool,
        expect_token: int | None) -> None:  # fmt: skip
    """Commit RECORD (a JSON object, an array of objects committed together, or - for
    standard input) as TYPE_NAME and print its token."""
    try:
        recs = _records(record)
        w = open_dataset(dataset).writer()
        with w.transaction() as tx:
            for r in recs:
                tx.upsert(type_name, r, expect_absent=expect_absent, expect_token=expect_token)
    except NearstateError as e:
        fail(e)
    assert tx.token is not None
    err.print(f"Committed {len(recs)} {type_name} record{'s' if len(recs) != 1 else ''} "
              f"at token {int(tx.token)}.", highlight=False)  # fmt: skip
    click.echo(int(tx.token))


@click.command()
@click.argument("dataset", type=_DATASET, metavar="DATASET")
@click.argument("type_name")
@click.argument("key")
@click.option("--expect-token", type=int, default=None,
              help="Only if the key was last changed by the commit with this token.")  # fmt: skip
def delete(dataset: str, type_name: str, key: str, expect_token: int | None) -> None:
    """Delete the TYPE_NAME record with KEY and print the token of the deletion."""
    try:
        ds = existing(dataset, holding="anything")
        c = ds.consumer()
        c.refresh()
        ts = c.state[type_name]
        token = ds.writer().delete(type_name, parse_key(ts, key), expect_token=expect_token)
    except NearstateError as e:
        fail(e)
    err.print(f"Deleted {type_name} {key} at token {int(token)}.", highlight=False)
    click.echo(int(token))


@click.command()
@click.argument("dataset", type=_DATASET, metavar="DATASET")
@click.argument("type_name")
@click.argument("key")
@click.option("--consistency", type=click.Choice(CONSISTENCIES), default="eventual",
              show_default=True,
              help="eventual: what is there now; read-your-writes: wait for --token; "
                   "strong: wait for every commit made before this command.")  # fmt: skip
@click.option("--token", type=int, default=None, help="The token to wait for.")
@click.option("--timeout", type=float, default=5.0, show_default=True,
              help="Seconds to wait before giving up.")  # fmt: skip
def get(dataset: str, type_name: str, key: str, consistency: str, token: int | None,
        timeout: float) -> None:  # fmt: skip
    """Print the TYPE_NAME record with primary key KEY as JSON."""
    try:
        ds = existing(dataset, holding="anything")
        c = ds.consumer()
        if consistency == "eventual":
            c.refresh()
        state = c.read(consistency, token=token, timeout=timeout)  # type: ignore[arg-type]
        ts = state[type_name]
        rec = ts.get(parse_key(ts, key))
    except NearstateError as e:
        fail(e)
    if rec is None:
        fail(KeyError(f"no {type_name} with key {key!r} (version {c.version}, log up to "
                       f"token {c.position})"))  # fmt: skip
    click.echo(to_json(rec))


@click.command()
@click.argument("dataset", type=_DATASET, metavar="DATASET")
@click.option("--from", "start", type=int, default=None,
              help="Show commits after this token (default: only new ones).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="One JSON object per commit.")
@click.option("--count", type=int, default=None, help="Stop after this many commits.")
def watch(dataset: str, start: int | None, as_json: bool, count: int | None) -> None:
    """Print committed changes as they arrive (Ctrl-C stops)."""
    try:
        log = open_dataset(dataset).log
    except NearstateError as e:
        fail(e)
    try:
        pos = log.head() if start is None else start
        if not as_json:
            err.print(f"Watching {dataset} for commits after token {pos} (Ctrl-C stops).",
                      highlight=False)  # fmt: skip
        seen = 0
        while count is None or seen < count:
            rows = log.read(pos, 1000)
            if not rows:
                log.wait(pos, 0.5)
                continue
            for p, body in rows:
                e = decode_entry(p, body)
                pos = p
                seen += 1
                _show_entry(e, as_json)
                if count is not None and seen >= count:
                    break
    except KeyboardInterrupt:
        return
    except NearstateError as e:
        fail(e)


def _show_entry(e: Any, as_json: bool) -> None:
    when = time.strftime("%H:%M:%S", time.localtime(e.time_ns / 1e9))
    if as_json:
        changes = [{"type": t, "key": k, "op": "delete" if r is None else "upsert", "record": r}
                   for t, k, r in e.mutations]  # fmt: skip
        click.echo(msgspec.json.encode({"token": e.position, "time_ns": e.time_ns,
                                        "changes": changes}).decode())  # fmt: skip
        sys.stdout.flush()
        return
    for t, k, r in e.mutations:
        if r is None:
            out.print(f"{when}  token {e.position}  deleted {t} {k!r}", highlight=False)
        else:
            body = msgspec.json.encode(r).decode()
            body = body if len(body) <= 100 else body[:97] + "..."
            out.print(f"{when}  token {e.position}  upserted {t} {k!r}  {body}",
                      highlight=False)  # fmt: skip
    sys.stdout.flush()


@click.command()
@click.argument("dataset", type=_DATASET, metavar="DATASET")
@click.option("--follow", is_flag=True, help="Keep folding new commits until Ctrl-C.")
@click.option("--interval", type=float, default=1.0, show_default=True,
              help="Seconds between compactions with --follow.")  # fmt: skip
@click.option("--nice", "niceness", type=click.IntRange(0, 19), default=None,
              help="CPU priority to run at, 0 (as readers) to 19 (lowest). Default: 10 with "
                   "--follow, so readers on the same host come first; 0 otherwise.")  # fmt: skip
def compact(dataset: str, follow: bool, interval: float, niceness: int | None) -> None:
    """Fold the commits in the log into a new version (a delta; a snapshot when due).
    With --follow it keeps going through failures (a server outage, one at its start
    included, a lost lock), saying each one and trying again, until Ctrl-C, at a lower
    CPU priority (--nice): a version is not due at any moment, a reader's page is."""
    _lower_priority(niceness if niceness is not None else (COMPACT_NICENESS if follow else 0))
    while True:
        try:
            ds = existing(dataset, holding="anything")
            break
        except ServerUnreachable as e:
            if not follow:  # a daemon waits for its server to come up; one run does not
                fail(e)
            err.print(f"{e}. Trying again in {max(interval, 1.0):g} s.", highlight=False)
            try:
                time.sleep(max(interval, 1.0))
            except KeyboardInterrupt:
                return
        except NearstateError as e:
            fail(e)
    while True:
        try:
            _compact_with(ds, follow, interval)
            return
        except KeyboardInterrupt:
            return
        except NearstateError as e:
            if not follow:
                fail(e)
            err.print(f"Compaction failed: {e}. Trying again in {max(interval, 1.0):g} s.",
                      highlight=False)  # fmt: skip
            try:
                time.sleep(max(interval, 1.0))
            except KeyboardInterrupt:
                return


#: the CPU priority of `nearstate compact --follow` unless --nice says otherwise
COMPACT_NICENESS = 10


def _lower_priority(niceness: int) -> None:
    """Run this process at ``niceness`` at least (never raise its priority). Where the
    priority cannot be set, nothing changes."""
    try:
        now = os.getpriority(os.PRIO_PROCESS, 0)
        if niceness > now:
            os.setpriority(os.PRIO_PROCESS, 0, niceness)
    except (AttributeError, OSError):
        pass


def _compact_with(ds: Dataset, follow: bool, interval: float) -> None:
    # following, a due snapshot is written in the background: compactions keep their pace
    with ds.producer(background_snapshots=follow) as p:
        while True:
            r = compact_log(p, ds.log)
            if r.version is None:
                if not follow:
                    out.print(f"Nothing to fold: version {p.version} includes every "
                              "commit.", highlight=False)  # fmt: skip
            else:
                if r.changes is None:
                    what = "a snapshot: the schema gained types"
                else:
                    kind = "a delta and a snapshot" if r.snapshot else "a delta"
                    if p.writing_snapshot == r.version:
                        kind = "a delta; its snapshot is being written in the background"
                    what = f"{r.changed:,} records changed, {kind}"
                out.print(f"Folded the log up to token {p.state.tags.get('log_position')} "
                          f"into version {r.version} ({what}).", highlight=False)  # fmt: skip
            if not follow:
                return
            time.sleep(interval)


VERBS = [put, delete, get, watch, compact]
