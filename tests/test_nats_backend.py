"""What the NATS JetStream backend does beyond the generic contracts (nearstate.testing):

* URLs: ``nats://host:port/name?replicas=&lease=``, refused options and names, several
  servers, ``NEARSTATE_DATASET``, a server that is not there;
* optimistic concurrency across processes: compare-and-set increments and ``expect_absent``
  claims raced by three writer processes lose nothing and let exactly one win;
* trimming: key positions and the schema indexed into the KV bucket keep conditions
  (``token_of``, ``expect_token``, ``expect_absent``) right on handles that never saw the
  trimmed entries, including a handle that was cut off while they were written and trimmed;
* a transaction over the server's max_payload is refused whole; a large one is compressed;
* the producer lease: refused while held (and renewed), free once a killed holder's lease
  expires and not before, free at once when released;
* the Object Store: a 50 MB blob, damaged objects, deletes and replacements, and blobs
  that nats-py's own object store reads and writes;
* an outage of the server: writes and ``head`` fail at once with LogUnavailable, reads go
  on from memory, and the same handles recover by themselves;
* the ``nearstate`` verbs on a NATS URL.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner

import nearstate
from history import Child, spawn
from natsserver import Throwaway, drop, free_port, private_server, server_url, unique
from nearstate import (
    BlobNotFound,
    ConflictError,
    CycleError,
    DatasetError,
    InputError,
    LockedError,
    LogError,
    LogUnavailable,
    NatsDataset,
    Writer,
)
from nearstate.backends.nats_conn import NatsConnection
from nearstate.backends.nats_log import NatsLog
from nearstate.backends.nats_store import CHUNK, NatsBlobStore
from nearstate.cli import main
from nearstate.writer import decode_entry

pytest.importorskip("nats", reason="the 'nats' extra is not installed")

LONG = 15.0  # a wait that should end is given this long


# --- fixtures and helpers ---------------------------------------------------------------------


class Dataset:
    """A dataset name of this test's own on the shared server, and its URL."""

    def __init__(self, prefix: str = "nb") -> None:
        self.server = server_url()
        self.name = unique(prefix)
        self.url = f"{self.server}/{self.name}"

    def open(self, options: str = "") -> NatsDataset:
        ds = nearstate.open(self.url + options)
        assert isinstance(ds, NatsDataset)
        return ds


@pytest.fixture
def dataset() -> Iterator[Dataset]:
    d = Dataset()
    yield d
    drop(d.server, d.name)


@pytest.fixture
def connections() -> Iterator[list[NatsConnection]]:
    """Connections of the test's own (closed at the end)."""
    made: list[NatsConnection] = []
    yield made
    for c in made:
        c.close()


def own_connection(connections: list[NatsConnection], url: str) -> NatsConnection:
    """A connection not shared with the process's other handles (as another process has)."""
    c = NatsConnection(url)
    connections.append(c)
    return c


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


class Proxy:
    """A TCP relay to a NATS server that a test can cut (every connection dropped, new ones
    refused) and restore: one client loses the server while the others keep it."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port = self._listener.getsockname()[1]
        self._open = True
        self._closed = False
        self._socks: list[socket.socket] = []
        self._mu = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self._open:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._mu:
                self._socks += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self._open = False
        with self._mu:
            for s in self._socks:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            self._socks = []

    def restore(self) -> None:
        self._open = True

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._listener.close()


@pytest.fixture
def proxy() -> Iterator[Proxy]:
    p = Proxy(port_of(server_url()))
    yield p
    p.close()


def wait_until(check: Any, what: str, timeout: float = LONG) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what}")
        time.sleep(0.02)


def cli(*args: Any, input: str | None = None) -> tuple[int, str, str]:
    """Run a verb; its exit code, standard output and standard error (with the line
    breaks of the terminal width undone)."""
    r = CliRunner().invoke(main, [str(a) for a in args], input=input)
    return r.exit_code, r.stdout, " ".join(r.stderr.split())


# --- URLs -------------------------------------------------------------------------------------


def test_url_options_reach_the_backend(dataset: Dataset) -> None:
    """replicas and lease from the query string are what the ports are built with; the
    dataset's name and URL come from the path."""
    ds = dataset.open("?replicas=1&lease=2.5")
    assert ds.name == dataset.name
    assert ds.url == dataset.url
    assert ds.announcer.lease == 2.5
    assert ds.replicas == ds.log.replicas == ds.blobs.replicas == ds.announcer.replicas == 1
    assert ds.log.names.log_stream == f"NEARSTATE_LOG_{dataset.name}"
    # the lease reaches the lock the producer takes
    with ds.producer(holder="me"):
        entry = ds.log.conn.run(ds.announcer._kv.get("lock"))
        lock = json.loads(entry.value)
        assert lock["holder"] == "me"
        assert 2.0 < lock["expires"] - time.time() <= 2.5
    assert nearstate.open(dataset.url).announcer.lease == 10.0  # the default


@pytest.mark.parametrize(
    ("tail", "message"),
    [
        ("", "name the dataset after the server"),
        ("/", "name the dataset after the server"),
        ("/a.b", "bad dataset name 'a.b'"),
        ("/a%20b", "bad dataset name 'a b'"),
        ("/a/b", "bad dataset name 'a/b'"),
        ("/" + "x" * 65, "use 1-64 letters"),
        ("/ok?foo=1", "unknown option(s) foo"),
        ("/ok?replicas=2&colour=red&foo=1", "unknown option(s) colour, foo"),
        ("/ok?replicas=0", "replicas must be 1 to 5, not 0"),
        ("/ok?replicas=6", "replicas must be 1 to 5, not 6"),
        ("/ok?replicas=three", "'three'"),
        ("/ok?lease=soon", "'soon'"),
    ],
)
def test_bad_urls_are_refused_naming_the_problem(tail: str, message: str) -> None:
    """A bad URL is an InputError naming what is wrong, raised before anything connects
    (the server named here does not exist)."""
    url = f"nats://127.0.0.1:{free_port()}{tail}"
    t0 = time.monotonic()
    with pytest.raises(InputError) as e:
        nearstate.open(url)
    assert message in str(e.value)
    assert time.monotonic() - t0 < 1.0  # no connection was tried


@pytest.mark.parametrize("lease", ["0", "-1", "nan"])
def test_a_lease_that_is_not_positive_is_refused(lease: str) -> None:
    with pytest.raises(InputError, match="lease"):
        nearstate.open(f"{server_url()}/{unique()}?lease={lease}")


def test_several_servers_in_one_url(dataset: Dataset) -> None:
    """nats://h1:4222,h2:4222/name: the client may use any listed server (here the first
    one is down, so it must fail over to the second)."""
    host_port = dataset.server.removeprefix("nats://")
    ds = nearstate.open(f"nats://127.0.0.1:{free_port()},{host_port}/{dataset.name}")
    token = ds.writer().upsert("Item", {"id": "a"})
    assert dataset.open().writer().token_of("Item", "a") == token


def test_the_environment_names_the_dataset(
    dataset: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    """nearstate.open() with no URL opens NEARSTATE_DATASET (options included); without
    it, it says what to set."""
    monkeypatch.setenv("NEARSTATE_DATASET", dataset.url + "?lease=4")
    ds = nearstate.open()
    assert isinstance(ds, NatsDataset)
    assert ds.name == dataset.name
    assert ds.announcer.lease == 4.0
    token = ds.writer().upsert("Item", {"id": "from-env"})
    assert dataset.open().writer().token_of("Item", "from-env") == token
    monkeypatch.delenv("NEARSTATE_DATASET")
    with pytest.raises(InputError, match="NEARSTATE_DATASET"):
        nearstate.open()


def test_a_server_that_is_not_there() -> None:
    """Nothing listens: a DatasetError saying it cannot connect, within seconds (the
    connection attempt is bounded, not retried forever)."""
    url = f"nats://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    with pytest.raises(DatasetError) as e:
        nearstate.open(f"{url}/nobody")
    took = time.monotonic() - t0
    assert f"cannot connect to NATS at {url}" in str(e.value)
    assert took < 10.0, f"took {took:.1f} s"


def test_a_stream_the_server_refuses_to_create(dataset: Dataset) -> None:
    """Streams the server cannot create are a nearstate error naming the reason, from
    each port."""
    ds = dataset.open("?replicas=3")
    with pytest.raises(LogError, match="replicas > 1 not supported"):
        ds.log.head()
    with pytest.raises(DatasetError, match="replicas > 1 not supported"):
        ds.announced()
    with pytest.raises(DatasetError, match="replicas > 1 not supported"):
        ds.blobs.list()


# --- writers in separate processes ------------------------------------------------------------

CAS_WORKER = """
import json, sys
import nearstate
from nearstate import ConflictError
from nearstate.writer import decode_entry

ds = nearstate.open(sys.argv[1])
w = ds.writer()
w.token_of("Counter", "c")  # connected and following before the race starts
print("ready", flush=True)
sys.stdin.readline()
done, conflicts = [], 0
while len(done) < int(sys.argv[2]):
    token = w.token_of("Counter", "c")
    (_, body), = ds.log.read(token - 1, 1)
    (_, _, rec), = decode_entry(token, body).mutations
    try:
        t = w.upsert("Counter", {"id": "c", "n": rec["n"] + 1}, expect_token=token)
    except ConflictError:
        conflicts += 1
        continue
    done.append([int(t), rec["n"] + 1])
print(json.dumps({"done": done, "conflicts": conflicts}), flush=True)
"""


def race(children: list[Child], code: str, *args: str, n: int = 3) -> list[Any]:
    """Run ``code`` in ``n`` processes, start them together, return what each printed."""
    procs = [spawn(children, code, *args) for _ in range(n)]
    for p in procs:
        p.expect("ready")
    for p in procs:
        assert p.proc.stdin is not None
        p.proc.stdin.write("go\n")
        p.proc.stdin.flush()
    out = [json.loads(p.read_line(LONG * 2)) for p in procs]
    for p in procs:
        p.wait()
    return out


def test_compare_and_set_increments_race_across_processes(
    dataset: Dataset, children: list[Child]
) -> None:
    """Three processes increment one counter with expect_token: every increment that
    succeeded counts, none is lost, no token is given twice, and they did collide."""
    ds = dataset.open()
    ds.writer().upsert("Counter", {"id": "c", "n": 0})
    per = 12
    results = race(children, CAS_WORKER, dataset.url, str(per))
    done = [tuple(d) for r in results for d in r["done"]]
    tokens = [t for t, _ in done]
    assert len(done) == 3 * per
    assert len(set(tokens)) == len(tokens)
    # each success saw the value before it: the values are 1..N, each once
    assert sorted(n for _, n in done) == list(range(1, 3 * per + 1))
    assert sum(r["conflicts"] for r in results) > 0, "the writers never collided"
    state = ds.consumer().sync(LONG)
    assert state["Counter"].get("c").n == 3 * per
    assert ds.log.head() == 1 + 3 * per  # refused attempts appended nothing
    assert ds.writer().token_of("Counter", "c") == max(tokens)


CLAIM_WORKER = """
import json, os, sys
import nearstate
from nearstate import ConflictError

w = nearstate.open(sys.argv[1]).writer()
w.token_of("Claim", "warm-up")
print("ready", flush=True)
sys.stdin.readline()
won, lost = {}, {}
for i in range(int(sys.argv[2])):
    key = f"k{i}"
    try:
        won[key] = int(w.upsert("Claim", {"id": key, "by": os.getpid()}, expect_absent=True))
    except ConflictError as e:
        lost[key] = int(e.current)
print(json.dumps({"pid": os.getpid(), "won": won, "lost": lost}), flush=True)
"""


def test_expect_absent_claims_race_across_processes(
    dataset: Dataset, children: list[Child]
) -> None:
    """Three processes claim the same keys with expect_absent: each key is won exactly
    once, the record is the winner's, and each loser was told the winner's token."""
    ds = dataset.open()
    ds.writer().upsert("Claim", {"id": "seed", "by": 0})  # the type exists before the race
    keys = 8
    results = race(children, CLAIM_WORKER, dataset.url, str(keys))
    state = ds.consumer().sync(LONG)
    for i in range(keys):
        key = f"k{i}"
        winners = [r for r in results if key in r["won"]]
        assert len(winners) == 1, f"{key} won by {len(winners)} processes"
        (w,) = winners
        losers = [r for r in results if key in r["lost"]]
        assert len(losers) == 2
        assert all(r["lost"][key] == w["won"][key] for r in losers)
        assert state["Claim"].get(key).by == w["pid"]
    assert ds.log.head() == 1 + keys


# --- trimming -------------------------------------------------------------------------------


def kv_keys(ds: NatsDataset) -> list[str]:
    conn = ds.log.conn

    async def keys() -> list[str]:
        kv = await conn.js.key_value(ds.log.names.bucket)
        return await kv.keys()

    return sorted(conn.run(keys()))


def test_conditions_after_a_trim_on_handles_that_never_saw_the_entries(
    dataset: Dataset, connections: list[NatsConnection]
) -> None:
    """Compaction trims the Log; key positions and the schema were indexed into the KV
    bucket first, so a fresh handle (and one on a connection of its own, without the
    version) still knows each key's token: expect_token with the current token succeeds,
    a stale one is a ConflictError, a deleted key is absent. Twice, so an index entry is
    also moved forward."""
    a = dataset.open()
    w = a.writer()
    t1 = w.upsert("Item", {"id": "a", "n": 1})
    t2 = w.upsert("Item", {"id": "b", "n": 1})
    t3 = w.upsert("Item", {"id": "a", "n": 2})
    w.upsert("Item", {"id": "gone", "n": 0})
    w.delete("Item", "gone")
    assert a.compact().version == 1
    stats = a.log.stats()
    assert stats["entries"] == 0 and stats["floor"] == stats["head"] == 5  # all trimmed
    keys = kv_keys(a)
    assert "log.schema" in keys
    assert len([k for k in keys if k.startswith("k.")]) == 3  # a, b, gone

    # a raw handle on a connection of its own: only the KV index can answer
    raw = NatsLog(own_connection(connections, dataset.server), dataset.name)
    bare = Writer(raw)
    assert bare.token_of("Item", "a") == t3
    assert bare.token_of("Item", "b") == t2
    assert bare.token_of("Item", "gone") is None
    assert bare.schema is not None and "Item" in bare.schema
    assert raw.schema() == a.log.schema()

    # a fresh dataset handle
    fresh = dataset.open().writer()
    assert fresh.token_of("Item", "a") == t3
    with pytest.raises(ConflictError) as e:
        fresh.upsert("Item", {"id": "a", "n": 99}, expect_token=t1)
    assert e.value.current == t3
    with pytest.raises(ConflictError):
        fresh.upsert("Item", {"id": "b", "n": 99}, expect_absent=True)
    t6 = fresh.upsert("Item", {"id": "a", "n": 3}, expect_token=t3)
    t7 = fresh.upsert("Item", {"id": "gone", "n": 1}, expect_absent=True)
    # the first handle followed all along and sees them too
    with pytest.raises(ConflictError):
        w.upsert("Item", {"id": "a", "n": 99}, expect_token=t3)

    # a second trim (everything: versions 1 and 2 are kept, so compaction alone trims
    # only up to version 1) moves a's index entry forward
    assert a.compact().version == 2
    a.log.trim(a.log.head())
    assert a.log.stats()["entries"] == 0
    again = Writer(NatsLog(own_connection(connections, dataset.server), dataset.name))
    assert again.token_of("Item", "a") == t6
    assert again.token_of("Item", "gone") == t7
    assert again.token_of("Item", "b") == t2
    with pytest.raises(ConflictError):
        again.upsert("Item", {"id": "a", "n": 99}, expect_token=t3)
    assert again.upsert("Item", {"id": "a", "n": 4}, expect_token=t6) > t7


def test_a_handle_cut_off_while_entries_were_written_and_trimmed(
    dataset: Dataset, proxy: Proxy, connections: list[NatsConnection]
) -> None:
    """A handle follows the Log; its connection is cut while another writer changes a key
    and the Log is trimmed past that change. Back online, the handle sees the gap: it
    does not trust what it knew of the key (its stale token is refused, the new one is
    known) instead of letting a lost update through."""
    a = dataset.open()
    w = a.writer()
    t1 = w.upsert("Item", {"id": "a", "n": 1})
    conn = own_connection(connections, proxy.url)
    follower = NatsLog(conn, dataset.name)
    wb = Writer(follower)
    assert wb.token_of("Item", "a") == t1
    proxy.cut()
    wait_until(lambda: not conn.connected, "the cut connection noticed")
    t2 = w.upsert("Item", {"id": "a", "n": 2})
    a.compact()
    assert a.log.stats()["floor"] == t2
    w.upsert("Item", {"id": "z", "n": 0})  # an entry after the trimmed ones
    proxy.restore()
    wait_until(lambda: conn.connected, "reconnected")
    # (token_of is asked only once the handle is at the head again: see
    # test_token_of_on_a_handle_that_is_behind)
    with pytest.raises(ConflictError) as e:
        wb.upsert("Item", {"id": "a", "n": 99}, expect_token=t1)
    assert e.value.current == t2
    t4 = wb.upsert("Item", {"id": "a", "n": 3}, expect_token=t2)
    assert t4 == t2 + 2
    assert wb.token_of("Item", "a") == t4


def test_a_handle_cut_off_while_every_entry_was_trimmed(
    dataset: Dataset, proxy: Proxy, connections: list[NatsConnection]
) -> None:
    a = dataset.open()
    w = a.writer()
    t1 = w.upsert("Item", {"id": "a", "n": 1})
    conn = own_connection(connections, proxy.url)
    wb = Writer(NatsLog(conn, dataset.name, catch_up_timeout=2.0))
    assert wb.token_of("Item", "a") == t1
    proxy.cut()
    wait_until(lambda: not conn.connected, "the cut connection noticed")
    t2 = w.upsert("Item", {"id": "a", "n": 2})
    a.compact()
    assert a.log.stats()["entries"] == 0  # nothing kept after the trimmed entries
    proxy.restore()
    wait_until(lambda: conn.connected, "reconnected")
    assert wb.token_of("Item", "a") == t2


def test_a_handle_closed_and_used_again_after_a_trim(dataset: Dataset) -> None:
    a = dataset.open()
    w = a.writer()
    t1 = w.upsert("Item", {"id": "a", "n": 1})
    b = dataset.open()
    wb = b.writer()
    assert wb.token_of("Item", "a") == t1
    b.log.close()
    t2 = w.upsert("Item", {"id": "a", "n": 2})
    a.compact()
    with pytest.raises(ConflictError):
        wb.upsert("Item", {"id": "a", "n": 99}, expect_token=t1)
    assert wb.token_of("Item", "a") == t2


def test_token_of_on_a_handle_that_is_behind(dataset: Dataset) -> None:
    """A handle whose follower delivers late (here: each new entry 0.5 s late) still
    answers token_of with the key's token at the head."""
    a = dataset.open()
    w = a.writer()
    t1 = w.upsert("Item", {"id": "a", "n": 1})
    b = NatsLog(a.log.conn, dataset.name)
    on_msg = b._on_msg

    async def late(msg: Any) -> None:
        if msg.metadata.sequence.stream > t1:
            await asyncio.sleep(0.5)
        await on_msg(msg)

    b._on_msg = late  # type: ignore[method-assign]
    wb = Writer(b)
    assert wb.token_of("Item", "a") == t1
    t2 = w.upsert("Item", {"id": "a", "n": 2})
    try:
        assert wb.token_of("Item", "a") == t2
    finally:
        b.close()


# --- payload limits and compression -----------------------------------------------------------


def test_a_transaction_over_max_payload_is_refused_whole(dataset: Dataset) -> None:
    """Incompressible records adding up to more than the server's max_payload (1 MB): an
    InputError naming max_payload, and nothing appended; a smaller one then commits."""
    ds = dataset.open()
    w = ds.writer()
    w.upsert("Blob", {"id": "first", "data": "x"})
    limit = ds.log.conn.nc.max_payload
    assert limit == 1 << 20
    with pytest.raises(InputError) as e, w.transaction() as tx:
        for i in range(80):  # 80 x 32 KB of hex: ~2.6 MB, ~1.3 MB compressed
            tx.upsert("Blob", {"id": f"k{i}", "data": os.urandom(16 * 1024).hex()})
    assert "max_payload" in str(e.value)
    assert f"{limit:,}" in str(e.value)
    assert ds.log.head() == 1
    assert w.token_of("Blob", "k0") is None
    with w.transaction() as tx:
        for i in range(10):
            tx.upsert("Blob", {"id": f"k{i}", "data": os.urandom(16 * 1024).hex()})
    assert tx.token == 2


def test_a_large_entry_is_stored_compressed_and_read_back(
    dataset: Dataset, connections: list[NatsConnection]
) -> None:
    """An entry over 64 KB goes out zstd-compressed (marked in a header), much smaller
    than it is; another connection reads it back exactly."""
    ds = dataset.open()
    text = "".join(f"line {i} of a long and repetitive text\n" for i in range(20_000))
    assert len(text) > 700_000
    token = ds.writer().upsert("Doc", {"id": "d", "text": text})
    conn = ds.log.conn
    msg = conn.run(conn.js.get_msg(ds.log.names.log_stream, int(token)))
    assert (msg.headers or {}).get("Nearstate-Encoding") == "zstd"
    assert len(msg.data) < len(text) / 5
    other = NatsLog(own_connection(connections, dataset.server), dataset.name)
    ((pos, body),) = other.read(int(token) - 1, 10)
    ((type_name, key, rec),) = decode_entry(pos, body).mutations
    assert (type_name, key, rec["text"]) == ("Doc", "d", text)


# --- the producer lease -----------------------------------------------------------------------

HOLDER = """
import sys, time
import nearstate
p = nearstate.open(sys.argv[1]).producer(holder="victim-holder")
print("held", flush=True)
time.sleep(120)
"""


def test_a_killed_producer_blocks_others_until_its_lease_expires(
    dataset: Dataset, children: list[Child]
) -> None:
    """lease=1: while the holder lives, others are refused (naming it) for 3x the lease,
    so it is renewed; once it is SIGKILLed, others are still refused at first and get the
    lock when the lease runs out."""
    url = dataset.url + "?lease=1"
    holder = spawn(children, HOLDER, url)
    holder.expect("held")
    ds = nearstate.open(url)
    with pytest.raises(LockedError) as e:
        ds.producer(holder="second")
    assert "victim-holder" in str(e.value)
    assert f"pid {holder.pid}" in str(e.value)
    t0 = time.monotonic()
    refusals = 0
    while time.monotonic() - t0 < 3.0:
        with pytest.raises(LockedError):
            ds.producer(holder="second")
        refusals += 1
        time.sleep(0.1)
    assert refusals > 10
    holder.kill()
    killed = time.monotonic()
    with pytest.raises(LockedError):
        ds.producer(holder="second")  # the lease has not run out yet
    while True:
        try:
            p = ds.producer(holder="second")
            break
        except LockedError:
            assert time.monotonic() - killed < 3.0, "the dead holder's lease never expired"
            time.sleep(0.02)
    took = time.monotonic() - killed
    p.close()
    assert 0.2 < took < 2.5, took


def test_a_released_lock_is_free_at_once(dataset: Dataset) -> None:
    """Closing the producer deletes the lock: the next one gets it without waiting for
    the lease (10 s here)."""
    ds = dataset.open()
    first = ds.producer(holder="first")
    with pytest.raises(LockedError, match="first"):
        dataset.open().producer(holder="second")
    first.close()
    t0 = time.monotonic()
    with dataset.open().producer(holder="second"):
        assert time.monotonic() - t0 < 1.0
    first.close()  # idempotent, and does not free the lock of another
    with ds.producer(holder="third"), pytest.raises(LockedError, match="third"):
        dataset.open().producer(holder="fourth")


def test_a_producer_that_lost_its_lease_does_not_publish(dataset: Dataset, proxy: Proxy) -> None:
    a = NatsDataset(proxy.url, dataset.name, lease=1)
    b = dataset.open("?lease=1")
    b.writer().upsert("Item", {"id": "a", "n": 1})
    pa = a.producer(holder="A")
    proxy.cut()
    time.sleep(1.6)  # A cannot renew: its lease runs out
    pb = b.producer(holder="B")
    proxy.restore()
    try:
        wait_until(lambda: a.log.conn.connected, "A reconnected")
        time.sleep(0.7)  # A's renewal finds the lock taken
        with pytest.raises((DatasetError, CycleError)):  # LockedError is a DatasetError
            nearstate.compact(pa, a.log)
        assert b.announced() is None
    finally:
        pb.close()
        pa.close()
        a.log.conn.close()


# --- the object store -------------------------------------------------------------------------


def obj_messages(blobs: NatsBlobStore) -> int:
    conn = blobs.conn
    return conn.run(conn.js.stream_info(blobs.names.obj_stream)).state.messages


def test_a_50_mb_blob_round_trips(dataset: Dataset) -> None:
    blobs = dataset.open().blobs
    data = os.urandom(50 * 1024 * 1024 + 12345)
    t0 = time.monotonic()
    # parts of odd sizes: a small one, then the rest
    assert blobs.put("snapshots/big.blob", [data[:1000], memoryview(data)[1000:]]) == len(data)
    t1 = time.monotonic()
    got = blobs.get("snapshots/big.blob")
    t2 = time.monotonic()
    assert len(got) == len(data)
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    assert t1 - t0 < 20 and t2 - t1 < 20, (t1 - t0, t2 - t1)
    # chunks of CHUNK bytes, and one meta message
    assert obj_messages(blobs) == -(-len(data) // CHUNK) + 1


def test_damaged_objects_are_reported(dataset: Dataset) -> None:
    """A meta message whose digest does not match, a chunk too many, a chunk replaced, and
    chunks gone: each is a DatasetError saying what is wrong, never wrong bytes."""
    blobs = dataset.open().blobs
    # what comes from the store, each get: a host's cache serves the bytes it checked once
    # (test_the_host_cache_fetches_once_and_refetches_what_is_damaged)
    blobs.cache = None
    conn = blobs.conn
    bucket = blobs.names.bucket

    def meta(name: str) -> dict[str, Any]:
        m = conn.run(conn.js.get_last_msg(blobs.names.obj_stream, blobs._meta_subject(name)))
        return json.loads(m.data)

    for name in ("digest", "extra", "replaced"):
        blobs.put(name, [b"the bytes of " + name.encode()])
        assert bytes(blobs.get(name)) == b"the bytes of " + name.encode()

    # the digest in the meta message no longer matches
    m = meta("digest")
    wrong = base64.urlsafe_b64encode(hashlib.sha256(b"other").digest()).decode()
    m["digest"] = "SHA-256=" + wrong
    conn.run(
        conn.js.publish(
            blobs._meta_subject("digest"), json.dumps(m).encode(), headers={"Nats-Rollup": "sub"}
        )
    )
    with pytest.raises(DatasetError, match="does not match its SHA-256 digest"):
        blobs.get("digest")

    # a bogus chunk after the real one
    conn.run(conn.js.publish(f"$O.{bucket}.C.{meta('extra')['nuid']}", b"bogus"))
    with pytest.raises(DatasetError, match=r"damaged|does not match its SHA-256 digest"):
        blobs.get("extra")

    # the chunk replaced by one of the same size
    subject = f"$O.{bucket}.C.{meta('replaced')['nuid']}"
    conn.run(conn.js.purge_stream(blobs.names.obj_stream, subject=subject))
    conn.run(conn.js.publish(subject, b"THE BYTES OF replaced"))
    with pytest.raises(DatasetError, match="does not match its SHA-256 digest"):
        blobs.get("replaced")

    # the chunks gone: the get gives up once no chunk comes for get_timeout seconds
    conn.run(conn.js.purge_stream(blobs.names.obj_stream, subject=subject))
    impatient = NatsBlobStore(conn, dataset.name, get_timeout=0.5)
    t0 = time.monotonic()
    with pytest.raises(DatasetError, match="'replaced'"):  # e.g. stalled at 0 of 21 bytes
        impatient.get("replaced")
    assert time.monotonic() - t0 < 3.0


def test_a_blob_deleted_while_it_is_read_is_not_found_at_once(dataset: Dataset) -> None:
    """A delete racing a get: the reader has the name, the deleter purges the name and then
    the chunks, so no chunk ever comes. The get says BlobNotFound within about a second, not
    after get_timeout, so a consumer can move on to a newer version (CI caught a reader
    stalling on a snapshot the compactor had just retired)."""
    blobs = dataset.open().blobs
    conn = blobs.conn
    blobs.put("retired", [b"x" * 5000])
    info = blobs._run(blobs._info("retired"))
    # the chunks go first here, so the get below finds the name but waits for chunks...
    conn.run(conn.js.purge_stream(blobs.names.obj_stream,
                                  subject=f"$O.{blobs.names.bucket}.C.{info.nuid}"))  # fmt: skip
    patient = NatsBlobStore(conn, dataset.name, get_timeout=60)
    # ...and the name goes while it waits
    threading.Timer(0.3, lambda: blobs.delete("retired")).start()
    t0 = time.monotonic()
    with pytest.raises(BlobNotFound, match=r"'retired'.*deleted while being read"):
        patient.get("retired")
    assert time.monotonic() - t0 < 5.0
    # a replacement (new chunks under a new id) is told apart from damage the same way
    blobs.put("swapped", [b"old bytes"])
    old = blobs._run(blobs._info("swapped"))
    conn.run(conn.js.purge_stream(blobs.names.obj_stream,
                                  subject=f"$O.{blobs.names.bucket}.C.{old.nuid}"))  # fmt: skip
    threading.Timer(0.3, lambda: blobs.put("swapped", [b"new bytes"])).start()
    with pytest.raises(BlobNotFound, match="replaced while being read"):
        patient.get("swapped")
    assert bytes(blobs.get("swapped")) == b"new bytes"


def test_list_after_deletes_and_replacements(dataset: Dataset) -> None:
    """list() shows what is there (by prefix), not what was deleted; replacing a blob
    purges its old chunks and deleting it leaves nothing behind, so the stream does not
    grow."""
    blobs = dataset.open().blobs
    big = os.urandom(3 * CHUNK - 7)  # three chunks
    for name in ("deltas/1", "deltas/2", "snapshots/1", "versions/1"):
        blobs.put(name, [big])
    assert blobs.list() == ["deltas/1", "deltas/2", "snapshots/1", "versions/1"]
    assert blobs.list("deltas/") == ["deltas/1", "deltas/2"]
    kept = obj_messages(blobs)
    assert kept == 4 * (3 + 1)
    for _ in range(3):
        blobs.put("deltas/2", [big])
    assert obj_messages(blobs) == kept
    blobs.delete("deltas/1")
    blobs.delete("snapshots/1")
    blobs.delete("snapshots/1")  # deleting twice is harmless
    blobs.delete("never-there")
    assert blobs.list() == ["deltas/2", "versions/1"]
    assert blobs.list("snapshots/") == []
    assert obj_messages(blobs) == kept - 2 * (3 + 1)  # chunks and name purged: no tombstone
    with pytest.raises(BlobNotFound):
        blobs.get("deltas/1")
    blobs.put("deltas/1", [b"back"])
    assert bytes(blobs.get("deltas/1")) == b"back"
    assert blobs.list("deltas/") == ["deltas/1", "deltas/2"]


def test_blobs_are_nats_objects(dataset: Dataset) -> None:
    """The layout is the Object Store's own: nats-py's object store reads a blob put here
    (checking its digest) and one it puts is read here."""
    blobs = dataset.open().blobs
    conn = blobs.conn
    ours = os.urandom(2 * CHUNK + 99)
    blobs.put("snapshots/ours.blob", [ours])
    theirs = os.urandom(300_000)

    async def nats_py() -> bytes:
        obs = await conn.js.object_store(blobs.names.bucket)
        await obs.put("theirs", theirs)
        return (await obs.get("snapshots/ours.blob")).data

    assert conn.run(nats_py(), timeout=30) == ours
    assert bytes(blobs.get("theirs")) == theirs
    assert blobs.list() == ["snapshots/ours.blob", "theirs"]


# --- an outage ----------------------------------------------------------------------------------


@pytest.fixture
def throwaway() -> Iterator[Throwaway]:
    yield from private_server()


def test_an_outage_fails_fast_and_the_same_handles_recover(
    throwaway: Throwaway, connections: list[NatsConnection]
) -> None:
    """The server stops: a write and head() raise LogUnavailable at once, eventual reads
    go on from memory. It starts again: the same writer commits, and the same consumer
    shows a write made by another connection (its follower resumed by itself)."""
    name = unique("outage")
    ds = nearstate.open(f"{throwaway.url}/{name}")
    try:
        w = ds.writer()
        c = ds.consumer()
        t1 = w.upsert("Item", {"id": "a", "n": 1})
        assert c.wait_for(t1, LONG)["Item"].get("a").n == 1

        throwaway.stop()
        wait_until(lambda: not ds.log.conn.connected, "the client noticed")
        t0 = time.monotonic()
        with pytest.raises(LogUnavailable, match="nothing was written"):
            w.upsert("Item", {"id": "b", "n": 1})
        assert time.monotonic() - t0 < 1.0
        t0 = time.monotonic()
        with pytest.raises(LogUnavailable):
            ds.log.head()
        with pytest.raises(LogUnavailable):
            w.token_of("Item", "a")
        with pytest.raises(DatasetError):
            ds.announced()
        assert time.monotonic() - t0 < 1.0
        assert c.read("eventual")["Item"].get("a").n == 1

        throwaway.start()
        deadline = time.monotonic() + LONG
        while True:
            try:
                t2 = w.upsert("Item", {"id": "b", "n": 2})
                break
            except LogUnavailable:
                assert time.monotonic() < deadline, "the writer never recovered"
                time.sleep(0.05)
        assert t2 == t1 + 1  # nothing of the refused write was stored
        assert ds.log.head() == t2
        other = Writer(NatsLog(own_connection(connections, throwaway.url), name))
        t3 = other.upsert("Item", {"id": "a", "n": 3}, expect_token=t1)
        state = c.wait_for(t3, LONG)
        assert state["Item"].get("a").n == 3 and state["Item"].get("b").n == 2
        with pytest.raises(ConflictError):
            w.upsert("Item", {"id": "a", "n": 9}, expect_token=t1)
        assert w.upsert("Item", {"id": "a", "n": 4}, expect_token=t3) == t3 + 1
    finally:
        ds.log.conn.close()


def test_a_closed_shared_connection_is_replaced(throwaway: Throwaway) -> None:
    from nearstate.backends.nats_conn import connection

    first = connection(throwaway.url)
    first.close()
    try:
        assert nearstate.open(f"{throwaway.url}/{unique()}").log.head() == 0
    finally:
        connection(throwaway.url).close()


# --- the command line ---------------------------------------------------------------------------


def test_cli_verbs_on_a_nats_url(dataset: Dataset, children: list[Child]) -> None:
    """put, get (eventual and strong), delete, watch (live, in another process, and from a
    token), compact and inspect --json, all on nats://host:port/name."""
    d = dataset.url
    code, _, err = cli("get", d, "Story", "s1")
    assert code == 1 and "holds no dataset" in err
    code, out, err = cli("put", d, "Story", '{"id": "s1", "title": "Hello"}')
    assert code == 0, err
    assert int(out) == 1 and "Committed 1 Story record at token 1" in err

    watcher = spawn(
        children,
        "from nearstate.cli import main; main()",
        *["watch", d, "--from", "1", "--count", "2", "--json"],
    )
    code, out, err = cli("put", d, "Story", '[{"id": "s2", "title": "B"}, {"id": "s3"}]')
    assert code == 0 and int(out) == 2, err
    code, out, err = cli("delete", d, "Story", "s3")
    assert code == 0 and int(out) == 3, err
    seen = [json.loads(watcher.read_line(LONG)) for _ in range(2)]
    watcher.wait()
    assert [e["token"] for e in seen] == [2, 3]
    assert [(c["key"], c["op"]) for c in seen[0]["changes"]] == [("s2", "upsert"), ("s3", "upsert")]
    assert seen[1]["changes"] == [{"type": "Story", "key": "s3", "op": "delete", "record": None}]

    code, out, err = cli("put", d, "Story", '{"id": "s1", "title": "x"}', "--expect-token", "2")
    assert code == 1 and "last changed at token 1, not 2" in err
    for consistency in ("eventual", "strong"):
        code, out, err = cli("get", d, "Story", "s1", "--consistency", consistency)
        assert code == 0, err
        assert json.loads(out) == {"id": "s1", "title": "Hello"}
    code, out, err = cli("watch", d, "--from", "0", "--count", "1", "--json")
    assert code == 0, err
    assert json.loads(out)["changes"][0]["record"] == {"id": "s1", "title": "Hello"}

    code, _, err = cli("inspect", d, "--json")
    assert code == 1 and "nothing announced" in err
    code, out, err = cli("compact", d)
    assert code == 0, err
    assert "Folded the log up to token 3 into version 1" in " ".join(out.split())
    code, out, _ = cli("compact", d)
    assert code == 0 and "Nothing to fold" in out
    code, out, err = cli("inspect", d, "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["version"] == 1
    assert info["types"]["Story"]["records"] == 2
    assert info["log"] == {"head": 3, "floor": 3, "entries": 0, "bytes": 0,
                           "stream": f"NEARSTATE_LOG_{dataset.name}"}  # fmt: skip
    code, _, err = cli("watch", d, "--from", "0", "--count", "1")
    assert code == 1 and "trimmed" in err

    # after the trim: a condition with the token the index kept, and a strong read
    code, out, err = cli("put", d, "Story", '{"id": "s2", "title": "B2"}', "--expect-token", "2")
    assert code == 0 and int(out) == 4, err
    code, out, err = cli("get", d, "Story", "s2", "--consistency", "strong")
    assert code == 0, err
    assert json.loads(out)["title"] == "B2"


def test_a_full_log_refuses_a_commit_plainly(dataset: Dataset) -> None:
    """A Log stream at its byte limit (max_bytes with discard=new, as docs/operations.md
    advises) refuses a commit: a LogError saying nothing was stored — not LogUnavailable,
    which would mean the server could not be asked — and the head does not move."""
    from nats.js import api

    ds = nearstate.open(dataset.url)
    w = ds.writer()
    w.upsert("Story", {"id": "s0", "body": "x"})
    conn = ds.log.conn

    async def limit() -> None:
        info = await conn.js.stream_info(ds.log.names.log_stream)
        cfg = info.config
        cfg.max_bytes = info.state.bytes + 200
        cfg.discard = api.DiscardPolicy.NEW
        await conn.js.update_stream(cfg)

    conn.call(limit(), timeout=10)
    head = ds.log.head()
    with pytest.raises(nearstate.LogError, match="nothing was stored") as e:
        for i in range(20):
            w.upsert("Story", {"id": f"s{i + 1}", "body": "y" * 500})
    assert not isinstance(e.value, nearstate.LogUnavailable)
    last = ds.log.head()
    assert last >= head
    with pytest.raises(nearstate.LogError, match="nothing was stored"):
        w.upsert("Story", {"id": "late", "body": "z" * 500})
    assert ds.log.head() == last


def _compact_follow(url: str) -> subprocess.Popen[str]:
    """`nearstate compact URL --follow --interval 0.2` in a process of its own."""
    return subprocess.Popen(
        [sys.executable, "-c", "from nearstate.cli import main; main()", "compact", url,
         "--follow", "--interval", "0.2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_compact_follow_keeps_going_through_an_outage(throwaway: Throwaway) -> None:
    """`nearstate compact --follow` on a server that goes away and comes back says each
    failure and folds new commits again afterwards, in the same process."""
    srv = throwaway
    url = f"{srv.url}/{unique('cf')}"
    w = nearstate.open(url).writer()
    first = w.upsert("Story", {"id": "a", "n": 1})

    def folded(token: int, deadline: float) -> int:
        """The log position of the newest version once it includes ``token`` (or 0)."""
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(nearstate.NearstateError):
                c = nearstate.open(url).consumer()
                c.refresh()
                if (pos := int(c.state.tags.get("log_position", 0))) >= int(token):
                    return pos
            time.sleep(0.2)
        return 0

    proc = _compact_follow(url)
    try:
        # the outage comes once the compactor is following (it has folded the first
        # commit), not while it is still starting: a server missing at its start is a
        # plain failure to open the dataset, which is not what this test is about
        assert folded(first, time.monotonic() + 60), "compact --follow never folded"
        srv.stop()
        time.sleep(2.5)
        srv.start()
        deadline = time.monotonic() + 30
        token = None
        while token is None and time.monotonic() < deadline:
            try:
                token = w.upsert("Story", {"id": "b", "n": 2})
            except nearstate.LogUnavailable:
                time.sleep(0.2)
        assert token is not None
        assert folded(token, deadline) >= int(token), "no new commit folded after the outage"
        assert proc.poll() is None, "compact --follow ended"
    finally:
        proc.terminate()
        _, errs = proc.communicate(timeout=10)
    assert "Compaction failed" in errs and "Trying again" in errs, errs


def test_compact_follow_waits_for_a_server_that_is_down_when_it_starts(
    throwaway: Throwaway,
) -> None:
    """`nearstate compact --follow` started while the server is down says it cannot reach
    it and tries again, then folds once the server is back; without --follow the same
    start fails at once, naming the server."""
    srv = throwaway
    url = f"{srv.url}/{unique('cw')}"
    first = nearstate.open(url).writer().upsert("Story", {"id": "a", "n": 1})
    srv.stop()
    once = subprocess.run(
        [sys.executable, "-c", "from nearstate.cli import main; main()", "compact", url],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert once.returncode != 0 and "cannot connect to NATS" in once.stderr, once.stderr
    proc = _compact_follow(url)
    try:
        time.sleep(3)  # a few attempts against nothing
        assert proc.poll() is None, "compact --follow gave up on a server that was down"
        srv.start()
        deadline = time.monotonic() + 60
        pos = 0
        while pos < int(first) and time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(nearstate.NearstateError):
                c = nearstate.open(url).consumer()
                c.refresh()
                pos = int(c.state.tags.get("log_position", 0))
            time.sleep(0.2)
        assert pos >= int(first), "nothing folded once the server was back"
        assert proc.poll() is None, "compact --follow ended"
    finally:
        proc.terminate()
        _, errs = proc.communicate(timeout=10)
    assert "cannot connect to NATS" in errs and "Trying again" in errs, errs


# --- the host's blob cache ----------------------------------------------------------------------


def test_the_host_cache_fetches_once_and_refetches_what_is_damaged(
    dataset: Dataset, tmp_path: Any
) -> None:
    """A blob fetched by one process is mapped by the others of the host without a fetch
    (another process included); a cached file whose bytes were damaged is fetched again;
    blobs the store deleted, and a killed fetch's temporary file, are tidied away."""
    cache_dir = tmp_path / "cache"
    opt = f"?cache={cache_dir}"
    first = dataset.open(opt).blobs
    assert first.cache is not None and first.cache.root == cache_dir
    data = os.urandom(3 * CHUNK + 17)
    first.put("snap/1", [data])
    got = first.get("snap/1")
    assert bytes(got) == data and first.cache.fetches == 1
    assert not isinstance(got, (bytes, bytearray))  # a map of the cached file
    second = dataset.open(opt).blobs  # another handle, as another worker of the host
    assert bytes(second.get("snap/1")) == data and second.cache.fetches == 0
    code = ("import hashlib, sys, nearstate; b = nearstate.open(sys.argv[1]).blobs; "
            "print(hashlib.sha256(b.get('snap/1')).hexdigest(), b.cache.fetches)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code, dataset.url + opt],
                         capture_output=True, text=True, check=True, timeout=60)  # fmt: skip
    assert out.stdout.split() == [hashlib.sha256(data).hexdigest(), "0"]  # mapped, not fetched
    # a byte of the cached file damaged: a process that had not checked it fetches again
    (cached,) = [p for p in cache_dir.glob("snap%2F1@*") if p.suffix != ".lock"]
    raw = bytearray(cached.read_bytes())
    raw[5] ^= 0xFF
    cached.write_bytes(bytes(raw))
    third = dataset.open(opt).blobs
    assert bytes(third.get("snap/1")) == data and third.cache.fetches == 1
    # a deleted blob's file goes with the next fetch; so does a dead process's tmp file
    (cache_dir / ".snap%2F1@gone.999999999.tmp").write_bytes(b"half")
    first.put("snap/2", [b"two"])
    first.delete("snap/1")
    assert bytes(first.get("snap/2")) == b"two"
    names = sorted(p.name for p in cache_dir.iterdir() if not p.name.endswith(".lock"))
    assert names == [n for n in names if n.startswith("snap%2F2@")] and len(names) == 1
    assert dataset.open("?cache=off").blobs.cache is None
