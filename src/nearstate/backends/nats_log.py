"""The Log of a NATS dataset: a JetStream stream with one message per transaction.

A position is the message's stream sequence (the stream holds nothing else, so positions
are 1, 2, 3, ... and JetStream never reuses one, even after a purge).

Each handle follows the stream with an ordered push consumer (nats-py re-creates it after
a gap, a missed heartbeat or a server restart) and keeps, for the entries it has seen,
each key's last position and the latest schema. That is the :class:`~nearstate.ports.LogView`
a writer's conditions are checked against. A commit is published with
``Nats-Expected-Last-Sequence`` set to the position the view was taken at: if another
writer got there first, JetStream refuses it, the handle catches up, and ``prepare`` runs
again against the new head (optimistic concurrency across processes and hosts). The
token is returned only once JetStream has acknowledged the message (stored, and on an
R=3 stream replicated to a quorum). ``Nats-Msg-Id`` (one per attempt) makes a resend of
the same attempt a duplicate rather than a second entry.

The head is asked of the stream's leader, and on a replicated stream an answer that may
be stale is refused (``LogUnavailable``) instead of believed. A server cut off from the
others goes on answering for the stream from its own copy for a while: as the old
leader (nats-server steps a leader down only after 10-20 s without a quorum, while the
others elect a new one after 4-9 s and take writes) or, once it has no leader, as a
follower. So:

* :meth:`NatsLog.head` (what ``sync()`` waits for) sends a *barrier*: a message on the
  Log's subject whose ``Nats-Expected-Last-Sequence`` no stream ever reaches. The leader
  replicates it like any message, the check fails when it is applied, and the refusal
  carries the stream's last sequence at that point of the replicated order: every
  commit acknowledged before the barrier was sent is at or below it. A leader without a
  quorum cannot get it replicated, so the barrier times out. Nothing is stored (had a
  server stored it, it is an entry with no mutations, and its own position is the head).
  That holds up to nats-server 2.11 (checked with 2.9.10); 2.12 and later check the
  header at the leader before replicating, and there the head rests on the lease below.
* A mirror of the Log (a stream of the same name in another region's JetStream domain,
  mirroring the home region's) answers reads from its own copy, which may lag: its head
  is asked of the origin the same way, by a barrier on the Log's subject, which reaches
  the home region's stream over the leaf or gateway link (and nothing answers it while
  that link is down).
* Every stream info the handle relies on (the head a consumer's staleness is confirmed
  with, the bounds a read checks) must come from a leader that has heard from a quorum
  of the stream's replicas within ``LEASE`` seconds, fewer than the 4 s a follower waits
  before it stands for election; an answer from a server with no leader is refused.

Trimming keeps what conditions need: before entries are purged, every key they changed
(and the latest schema) is written to the dataset's KV bucket as ``k.<hash>`` (never
moving a key backwards), and a handle that has not seen an entry asks the KV bucket.

Message body: msgpack ``[keys, schema JSON text | None, entry body]``, zstd-compressed
(header ``Nearstate-Encoding: zstd``) when larger than ``compress_over`` bytes.

Over ~600 lines on purpose: :class:`NatsLog` implements one port (:class:`~nearstate.ports.Log`)
whose methods share the handle's view, its ordered consumer and the leader checks
described above; each piece of that (appends, the barrier head, leases, trimming through
the KV bucket) depends on the same state.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import msgspec
import zstandard

from ..errors import InputError, LogError, LogTrimmed, LogUnavailable
from ..ports import Append, LogView
from .nats_conn import (
    Names,
    NatsConnection,
    Unavailable,
    describe,
    ensure_kv,
    ensure_stream,
    nats_error,
)

SCHEMA_KEY = "log.schema"
LEASE = 3.0  # seconds within which a stream leader must have heard from a quorum (see above)


# The parts of a stream's info the Log reads (its bounds, its leader's view of the
# replicas, a mirror's link), decoded by msgspec from the server's JSON: a strong read asks
# for them once, and nats-py's full StreamInfo cost 60 us of parsing a call (a third of
# what the request costs this side).
class _Peer(msgspec.Struct):
    name: str = ""
    current: bool = False
    offline: bool = False
    active: int = 0  # nanoseconds since the leader heard from it


class _Cluster(msgspec.Struct):
    leader: str | None = None
    replicas: list[_Peer] | None = None


class _Mirror(msgspec.Struct):
    name: str = ""
    active: int | None = None  # nanoseconds since the mirror heard from its origin
    error: Any = None


class _Bounds(msgspec.Struct):
    first_seq: int = 0
    last_seq: int = 0


class _StreamInfo(msgspec.Struct):
    state: _Bounds = msgspec.field(default_factory=_Bounds)
    cluster: _Cluster | None = None
    mirror: _Mirror | None = None
    error: dict[str, Any] | None = None


_STREAM_INFO = msgspec.json.Decoder(_StreamInfo)
_NEVER = str(2**63 - 1)  # an expected last sequence no stream reaches: the barrier's
# a barrier stored anyway is an entry with no mutations: [keys, schema, entry body]
_NO_OP = msgspec.msgpack.encode([[], None, msgspec.msgpack.encode([0, [], False])])
KEEP_MAX = 200_000  # entries a handle buffers for a reader that stopped reading
_zc = threading.local()


def _key_name(type_name: str, key_id: str) -> str:
    h = hashlib.blake2b(f"{type_name}\0{key_id}".encode(), digest_size=16).hexdigest()
    return f"k.{h}"


def _decode(msg: Any) -> tuple[list[Any], str | None, bytes]:
    data = msg.data
    if (msg.headers or {}).get("Nearstate-Encoding") == "zstd":
        d = getattr(_zc, "d", None)
        if d is None:
            d = _zc.d = zstandard.ZstdDecompressor()
        data = d.decompress(data)
    try:
        keys, schema, body = msgspec.msgpack.decode(data)
    except (msgspec.DecodeError, ValueError, TypeError) as e:
        raise LogError(f"a Log message is not a nearstate entry: {e}") from None
    return keys, schema, body


class _View:
    def __init__(self, log: NatsLog):
        self._log = log

    def last(self, type_name: str, key_id: str) -> tuple[int, bool] | None:
        return self._log._last(type_name, key_id)

    def schema(self) -> str | None:
        return self._log._schema_text()


class NatsLog:
    """The Log of dataset ``NAME``: stream ``NEARSTATE_LOG_NAME``."""

    def __init__(
        self,
        conn: NatsConnection,
        dataset: str,
        *,
        replicas: int = 1,
        compress_over: int = 64 * 1024,
        catch_up_timeout: float = 10.0,
    ):
        self.conn = conn
        self.names = Names(dataset)
        self.replicas = replicas
        self.compress_over = compress_over
        self.catch_up_timeout = catch_up_timeout
        self._mu = threading.Condition()
        self._writing = threading.Lock()
        self._setup_lock = threading.Lock()
        self._kv: Any = None
        self._sub: Any = None
        # what this handle has seen of the stream (guarded by _mu)
        self._pos = 0  # every entry up to here is applied
        self._keys: dict[tuple[str, str], tuple[int, bool]] = {}
        self._complete = False  # _keys covers every entry ever appended (none was trimmed)
        self._schema: tuple[int, str] | None = None  # latest schema entry seen
        self._kv_keys: dict[tuple[str, str], tuple[int, bool] | None] = {}
        self._kv_schema: tuple[str | None] | None = None
        self._kept: deque[tuple[int, bytes]] | None = None  # bodies kept for a reader
        self._kept_from = 0  # every entry after this is in _kept
        self._copies = 1  # the stream's replicas (known once following)
        self._mirror = False  # the stream mirrors another (a region's copy of the Log)
        self._indexed = 0  # entries up to here are in the KV bucket (or were never needed)
        self.error: str | None = None  # the last problem the follower met

    def __repr__(self) -> str:
        return f"NatsLog({self.conn.url!r}, {self.names.dataset!r})"

    def _where(self) -> str:
        return f"the log {self.names.log_stream} at {self.conn.url}"

    def _run(self, coro: Any, timeout: float | None = None) -> Any:
        try:
            return self.conn.run(coro, timeout)
        except Unavailable as e:
            raise LogUnavailable(f"{self._where()} is unavailable: {e}") from None
        except nats_error() as e:
            raise LogError(f"{self._where()}: {describe(e)}") from None

    # -- following the stream ----------------------------------------------------------

    def _follow(self) -> None:
        """Start following (once): create the stream and KV bucket if needed, subscribe
        from the first entry, and wait until the handle has seen the head."""
        if self._sub is not None:
            return
        with self._setup_lock:
            if self._sub is not None:
                return
            from nats.js import api

            js = self.conn.js
            n = self.names

            async def start() -> Any:
                await ensure_stream(js, n.log_stream, [n.log_subject], self.replicas)
                self._kv = await ensure_kv(js, n, self.replicas)
                info = await js.stream_info(n.log_stream)
                first, last = info.state.first_seq, info.state.last_seq
                self._copies = int(info.config.num_replicas or 1)
                self._mirror = info.config.mirror is not None
                with self._mu:  # a clean view (also when following again after close)
                    self._keys.clear()
                    self._kv_keys.clear()
                    self._kv_schema = None
                    self._schema = None
                    self._kept = None
                    self._pos = max(first - 1, 0)
                    self._kept_from = self._pos
                    self._indexed = self._pos  # purged before: indexed by whoever purged
                    self._complete = first <= 1
                sub = await js.subscribe(
                    n.log_subject,
                    stream=n.log_stream,
                    cb=self._on_msg,
                    ordered_consumer=True,
                    idle_heartbeat=1.0,
                    deliver_policy=api.DeliverPolicy.ALL,
                    pending_bytes_limit=512 * 1024 * 1024,
                )
                return sub, last

            self._sub, last = self._run(start())
        self._await_pos(last, time.monotonic() + self.catch_up_timeout)

    async def _on_msg(self, msg: Any) -> None:
        seq = msg.metadata.sequence.stream
        try:
            keys, schema, body = _decode(msg)
        except LogError as e:
            self.error = f"entry {seq}: {e}"
            keys, schema, body = [], None, msg.data
        with self._mu:
            self._apply(seq, keys, schema, body)

    def _apply(self, seq: int, keys: list[Any], schema: str | None, body: bytes) -> None:
        """Take entry ``seq`` into the view (``_mu`` held)."""
        if seq <= self._pos:
            return  # this handle appended it and applied it already
        if seq > self._pos + 1:
            # entries in between were trimmed while this handle was not following
            self._forget(seq - 1)
        for t, k, exists in keys:
            self._keys[(t, k)] = (seq, bool(exists))
        if schema is not None:
            self._schema = (seq, schema)
        if self._kept is not None:
            self._kept.append((seq, body))
            if len(self._kept) > KEEP_MAX:  # nobody is reading: stop keeping
                self._kept = None
        self._pos = seq
        self._mu.notify_all()

    def _forget(self, pos: int) -> None:
        """Entries up to ``pos`` were trimmed unseen (``_mu`` held): what this handle knew
        of keys and the schema may be out of date (the KV bucket has it now), and a reader
        behind ``pos`` must recover through a version."""
        self._keys.clear()
        self._kv_keys.clear()
        self._kv_schema = None
        self._schema = None
        self._complete = False
        if self._kept is not None:
            self._kept = deque()
            self._kept_from = pos
        self._indexed = max(self._indexed, pos)  # purged unseen: indexed by the purger
        if pos > self._pos:
            self._pos = pos
            self._mu.notify_all()

    def _catch_up(self, deadline: float) -> None:
        """Bring this handle's view up to the head the server reports now."""
        first, last = self._bounds()
        with self._mu:
            if first > self._pos + 1:  # the next entry this handle expects is gone
                self._forget(first - 1)
        self._await_pos(last, deadline)

    def _await_pos(self, want: int, deadline: float) -> None:
        with self._mu:
            while self._pos < want:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise LogUnavailable(
                        f"{self._where()}: this process has seen entries up to {self._pos} "
                        f"but the head is {want}; it could not catch up"
                        + (f" ({self.error})" if self.error else "")
                    )
                self._mu.wait(min(left, 0.5))

    def _bounds(self, *, origin: bool = False) -> tuple[int, int]:
        """(first kept position, head), asked of the stream's leader; LogUnavailable if the
        server that answered may not know the head (see the module docstring). With
        ``origin``, a mirror's head counts only while the mirror hears from its origin."""
        info = self._run(self._stream_info())
        self._check_leader(info)
        if origin:
            self._check_origin(info)
        return info.state.first_seq, info.state.last_seq

    async def _stream_info(self) -> _StreamInfo:
        """The Log stream's info, as nats-py's ``stream_info`` asks for it (the same
        subject, timeout and errors: no responders, an API error), read lean."""
        from nats.errors import NoRespondersError
        from nats.js.errors import APIError, ServiceUnavailableError

        js = self.conn.js  # its API prefix names the JetStream domain (another region's)
        prefix = getattr(js, "_prefix", "$JS.API")
        try:
            msg = await self.conn.nc.request(f"{prefix}.STREAM.INFO.{self.names.log_stream}",
                                             b"", timeout=getattr(js, "_timeout", 5.0))  # fmt: skip
        except NoRespondersError:
            raise ServiceUnavailableError from None
        try:
            info = _STREAM_INFO.decode(msg.data)
        except msgspec.DecodeError as e:
            raise LogError(f"{self._where()}: the server's stream info is unreadable: {e}") from e
        if info.error is not None:
            raise APIError.from_error(info.error)
        return info

    def _check_origin(self, info: Any) -> None:
        """Refuse a mirror's head (LogUnavailable) once the mirror has not heard from the
        stream it mirrors within LEASE: its head is then no longer the Log's, and a
        consumer following it must not count as caught up (its staleness grows)."""
        m = getattr(info, "mirror", None)
        if m is None:
            return
        active = m.active if m.active is not None else -1
        if m.error or active < 0 or active > LEASE * 1e9:
            heard = "never" if active < 0 else f"{active / 1e9:.1f} s ago"
            raise LogUnavailable(
                f"{self._where()} is a mirror of {m.name} that last heard from it {heard}"
                + (f" ({m.error})" if m.error else "")
                + ": the link to the Log's home region is down, and what it holds may "
                "be behind"
            )

    def _check_leader(self, info: Any) -> None:
        """Refuse a stream info that may be stale: from a server of a replicated stream
        with no leader (a follower answers for a leaderless group with its own copy), or
        from a leader that has not heard from a quorum of the replicas within LEASE."""
        c = info.cluster
        replicas = (c.replicas or []) if c is not None else []
        if not replicas:
            return  # one copy: the server that answers holds the stream
        if not c.leader:
            raise LogUnavailable(
                f"{self._where()} is unavailable: the stream has no leader (a server "
                "without one answered from its own copy, which may be stale)"
            )
        heard = 1 + sum(1 for p in replicas
                        if not p.offline and (p.active or 0) < LEASE * 1e9)  # fmt: skip
        need = (len(replicas) + 1) // 2 + 1
        if heard < need:
            raise LogUnavailable(
                f"{self._where()} is unavailable: its leader {c.leader} has heard from "
                f"{heard - 1} of its {len(replicas)} replicas within {LEASE:g} s and may be "
                "cut off from a majority that elected another leader"
            )

    def _leader_head(self) -> int:
        """The head of a replicated stream, as of a barrier replicated after every commit
        acknowledged before this call (see the module docstring)."""
        from nats.js.errors import APIError

        async def barrier() -> int:
            try:
                ack = await self.conn.js.publish(
                    self.names.log_subject, _NO_OP,
                    headers={"Nats-Expected-Last-Sequence": _NEVER},
                )  # fmt: skip
            except APIError as e:
                if getattr(e, "err_code", None) != 10071:  # wrong last sequence: N
                    raise
                m = re.search(r"(\d+)\s*$", e.description or "")
                if m is None:
                    raise
                return int(m.group(1))
            return int(ack.seq)  # stored after all: replicated, a head of its own

        head = self._run(barrier())
        # nats-server 2.12 and later refuse the barrier before replicating it: then the
        # answer is the leader's own, which a leader still holding a quorum knows
        self._bounds()
        return head

    def _sync(self) -> None:
        """Bring this handle's view up to the head."""
        self._follow()
        self._catch_up(time.monotonic() + self.catch_up_timeout)

    # -- what the view answers ------------------------------------------------------------

    def _last(self, type_name: str, key_id: str) -> tuple[int, bool] | None:
        with self._mu:
            hit = self._keys.get((type_name, key_id))
            if hit is not None or self._complete:
                return hit
            if (type_name, key_id) in self._kv_keys:
                return self._kv_keys[(type_name, key_id)]
        from nats.js.errors import NotFoundError

        async def get() -> tuple[int, bool] | None:
            try:
                e = await self._kv.get(_key_name(type_name, key_id))
            except NotFoundError:
                return None
            pos, exists, t, k = msgspec.msgpack.decode(e.value)
            return (pos, bool(exists)) if (t, k) == (type_name, key_id) else None

        got = self._run(get())
        with self._mu:
            self._kv_keys[(type_name, key_id)] = got
            return self._keys.get((type_name, key_id), got)

    def _schema_text(self) -> str | None:
        with self._mu:
            if self._schema is not None:
                return self._schema[1]
            if self._complete:
                return None
            if self._kv_schema is not None:
                return self._kv_schema[0]
        from nats.js.errors import NotFoundError

        async def get() -> str | None:
            try:
                e = await self._kv.get(SCHEMA_KEY)
            except NotFoundError:
                return None
            return msgspec.msgpack.decode(e.value)[1]

        got = self._run(get())
        with self._mu:
            self._kv_schema = (got,)
            return self._schema[1] if self._schema is not None else got

    # -- the Log protocol ----------------------------------------------------------------

    def append(self, prepare: Callable[[LogView], Append]) -> int:
        self._follow()
        deadline = time.monotonic() + self.catch_up_timeout
        with self._writing:
            while True:
                if not self.conn.connected:
                    raise LogUnavailable(
                        f"{self._where()} is unavailable: not connected "
                        "(reconnecting); nothing was written"
                    )
                with self._mu:
                    at = self._pos
                try:
                    app = prepare(_View(self))
                except BaseException:
                    # a refusal counts only if it was made at the head: if this handle
                    # was behind, catch up and ask again
                    first, last = self._bounds()
                    if last <= at and first <= at + 1:
                        raise
                    self._catch_up(deadline)
                    continue
                schema = json.dumps(app.schema, sort_keys=True) if app.schema is not None else None
                keys = [[t, k, bool(e)] for t, k, e in app.keys]
                payload = msgspec.msgpack.encode([keys, schema, bytes(app.body)])
                # an id of this attempt's own: a retry follows a refusal (nothing stored),
                # and nats-server 2.10+ refuses an id still "in process" from the refused
                # attempt (10158) where a new one would be checked like any commit
                msg_id = uuid.uuid4().hex
                headers = {"Nats-Expected-Last-Sequence": str(at), "Nats-Msg-Id": msg_id}
                if len(payload) > self.compress_over:
                    payload = zstandard.ZstdCompressor(level=1).compress(payload)
                    headers["Nearstate-Encoding"] = "zstd"
                limit = self.conn.nc.max_payload
                if len(payload) + 512 > limit:
                    raise InputError(
                        f"this transaction is {len(payload):,} bytes on the wire, more than "
                        f"the NATS server's max_payload ({limit:,}); split it into smaller "
                        "transactions or raise max_payload (docs/operations.md)"
                    )
                try:
                    ack = self.conn.run(
                        self.conn.js.publish(self.names.log_subject, payload, headers=headers)
                    )
                except Unavailable as e:
                    raise LogUnavailable(
                        f"{self._where()} is unavailable: {e}; the commit may or may not have "
                        "been stored (its token was not acknowledged)"
                    ) from None
                except Exception as e:
                    err_code = getattr(e, "err_code", None)
                    if err_code in (10071, 10164):  # another writer appended first
                        self._catch_up(deadline)
                        continue
                    raise LogError(
                        f"{self._where()} refused the commit: {describe(e)}; nothing was stored"
                    ) from None
                with self._mu:
                    if ack.seq == self._pos + 1:
                        self._apply(ack.seq, keys, schema, bytes(app.body))
                return int(ack.seq)

    def last(self, type_name: str, key_id: str) -> tuple[int, bool] | None:
        """As of the head the stream's leader reports now: this handle catches up to it
        first (as :meth:`append` does before answering its view), without the write lock."""
        self._follow()
        self._catch_up(time.monotonic() + self.catch_up_timeout)
        return self._last(type_name, key_id)

    def head(self) -> int:
        """The last committed position. On a replicated stream, confirmed by a barrier
        through the stream's leader and a quorum (about one commit's round trip):
        LogUnavailable where no quorum can be reached, rather than a stale head. On a
        mirror (another region's copy of the Log, docs/decisions/0021-regions.md) the
        barrier goes to the origin stream, so the head is the home region's:
        LogUnavailable while the link to it is down, never the mirror's own head."""
        self._follow()
        if self._copies > 1 or self._mirror:
            return self._leader_head()
        return self._bounds()[1]

    def read(self, after: int, limit: int = 1000, *, fresh: bool = True) -> list[tuple[int, bytes]]:
        self._follow()
        after = max(int(after), 0)
        if not fresh:
            with self._mu:  # what this handle has received already, if it has any
                kept = self._kept
                if kept is not None and after >= self._kept_from and self._pos > after:
                    while kept and kept[0][0] <= after:
                        kept.popleft()
                    self._kept_from = after
                    return [e for e, _ in zip(kept, range(max(limit, 0)), strict=False)]
        first, last = self._bounds()
        if after + 1 < first:
            raise LogTrimmed(
                f"{self._where()}: entries after {after} were trimmed (it now starts at {first})"
            )
        upto = min(last, after + max(limit, 0))
        if upto <= after:
            if self._mirror:  # caught up with a mirror: the Log's head only while it hears
                self._bounds(origin=True)  # from its origin (else LogUnavailable)
            return []
        with self._mu:
            if self._kept is None:
                self._kept = deque()
                self._kept_from = self._pos
            if after >= self._kept_from:
                try:
                    self._await_pos(upto, time.monotonic() + 2.0)
                except LogUnavailable:
                    pass  # the follower is stuck: read directly below
                else:
                    kept = self._kept
                    if kept is not None and after >= self._kept_from:
                        while kept and kept[0][0] <= after:
                            kept.popleft()
                        self._kept_from = after
                        return [(p, b) for p, b in kept if p <= upto]
        return [(p, b) for p, _, _, b in self._fetch(after, upto)]

    def _fetch(self, after: int, upto: int) -> list[tuple[int, list[Any], str | None, bytes]]:
        """Entries ``after+1 .. upto`` (position, keys, schema, body), read by a consumer
        of their own."""
        from nats.js import api

        rows: list[tuple[int, list[Any], str | None, bytes]] = []
        js = self.conn.js
        n = self.names

        async def fetch() -> list[tuple[int, list[Any], str | None, bytes]]:
            done = asyncio.Event()

            async def on_msg(msg: Any) -> None:
                seq = msg.metadata.sequence.stream
                if seq <= upto and (not rows or seq > rows[-1][0]):
                    try:
                        rows.append((seq, *_decode(msg)))
                    except LogError:
                        rows.append((seq, [], None, msg.data))
                if seq >= upto or msg.metadata.num_pending == 0:
                    done.set()

            sub = await js.subscribe(
                n.log_subject,
                stream=n.log_stream,
                cb=on_msg,
                ordered_consumer=True,
                idle_heartbeat=1.0,
                deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
                config=api.ConsumerConfig(opt_start_seq=after + 1),
                pending_bytes_limit=512 * 1024 * 1024,
            )
            try:
                await asyncio.wait_for(done.wait(), self.catch_up_timeout)
            finally:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
            return rows

        try:
            got = self._run(fetch(), self.catch_up_timeout + 5)
        except TimeoutError:
            raise LogUnavailable(
                f"{self._where()}: reading entries after {after} timed out"
            ) from None
        if got and got[0][0] > after + 1:
            raise LogTrimmed(
                f"{self._where()}: entries after {after} were trimmed (it now "
                f"starts at {got[0][0]})"
            )
        return got

    def wait(self, after: int, timeout: float) -> int:
        self._follow()
        with self._mu:
            self._mu.wait_for(lambda: self._pos > after, timeout)
            if self._pos > after:
                return self._pos
        # the leader's, while it holds a quorum (no barrier); a mirror's while it hears
        # from its origin
        return self._bounds(origin=True)[1]

    def trim(self, upto: int) -> int:
        self._sync()
        first, last = self._bounds()
        upto = min(int(upto), last)
        if upto <= 0 or upto < first:
            return 0
        # index what the purged entries say about keys and the schema, then purge. This
        # handle has seen every entry after _indexed: the keys whose last change is among
        # those to purge go to the KV bucket (a key changed again later is still in the
        # stream, where every handle reads it)
        with self._mu:
            base = max(self._indexed, first - 1)
            keys = {k: v for k, v in self._keys.items() if base < v[0] <= upto}
            sch = self._schema
            schema = sch if sch is not None and base < sch[0] <= upto else None
        self._run(self._index(keys, schema), timeout=max(30.0, len(keys) / 500))

        async def purge() -> int:
            resp = await self.conn.nc.request(
                f"$JS.API.STREAM.PURGE.{self.names.log_stream}",
                json.dumps({"seq": upto + 1}).encode(),
                timeout=self.conn.request_timeout,
            )
            r = json.loads(resp.data)
            if "error" in r:
                raise LogError(f"{self._where()}: purge refused: {r['error']}")
            return int(r.get("purged", 0))

        purged = self._run(purge())
        with self._mu:
            self._indexed = max(self._indexed, upto)
        return purged

    def start_after(self, position: int, entries: Iterable[Append] = (),
                    keys: Iterable[tuple[str, str, int, bool]] = ()) -> int:  # fmt: skip
        """Make an empty Log's next position ``position + 1``, as if the entries up to it
        had been trimmed, with ``keys`` as the last changes those made (``(type, key id,
        position, exists afterwards)``, written to the KV bucket as a trim writes them),
        and append ``entries`` from there (a restore or clone of a version that includes
        the former, with the Log past it), many in flight at once, each expecting the one
        before. Returns the head. LogError if the Log holds or
        ever held an entry. nats-server 2.9 cannot set a stream's first sequence, and
        purging an empty stream forward leaves its expected-last-sequence check behind
        (the next commit is refused until a restart), so ``position`` entries with no
        mutations are stored and then trimmed: the cost grows with ``position``."""
        self._sync()
        first, last = self._bounds()
        if last or first > 1:
            raise LogError(f"{self._where()} is not empty: a restore needs a new Log")
        want = int(position)
        js, subject = self.conn.js, self.names.log_subject

        async def fill() -> int:
            # unacknowledged publishes (one round trip for all), then acknowledged ones
            # for any the server dropped; the stream's last sequence says how many landed
            nc, stream = self.conn.nc, self.names.log_stream
            for _ in range(want):
                await nc.publish(subject, _NO_OP)
            await nc.flush()
            seen, still = -1, 0
            while True:
                last = (await js.stream_info(stream)).state.last_seq
                if last >= want:
                    return last
                seen, still = last, (still + 1 if last == seen else 0)
                if still < 5:  # the server may still be storing what it was sent
                    await asyncio.sleep(0.05)
                    continue
                for _ in range(want - last):
                    await js.publish(subject, _NO_OP)

        if want > 0:
            # not followed meanwhile: the placeholders would crowd this handle's connection
            # (its requests timed out behind 100,000 of them on a busy host)
            self.close()
            if self._run(fill(), timeout=60 + want / 1000) != want:
                raise LogError(f"{self._where()}: another writer appended while the Log was "
                               "being prepared for a restore")  # fmt: skip

            async def purge() -> None:  # nothing to index: placeholders change no key
                resp = await self.conn.nc.request(
                    f"$JS.API.STREAM.PURGE.{self.names.log_stream}",
                    json.dumps({"seq": want + 1}).encode(), timeout=30,
                )  # fmt: skip
                r = json.loads(resp.data)
                if "error" in r:
                    raise LogError(f"{self._where()}: purge refused: {r['error']}")

            self._run(purge())
            self._follow()
        known: dict[tuple[str, str], tuple[int, bool]] = {}
        for t, k, p, e in keys:
            if not 0 < p <= want:
                raise LogError(f"a key's last change at {p} is not among the positions up "
                               f"to {want}")  # fmt: skip
            known[(t, k)] = (int(p), bool(e))
        if known:
            self._run(self._index(known, None), timeout=max(30.0, len(known) / 500))
        at = want
        batch: list[Append] = []
        for entry in [*entries, None]:
            if entry is not None:
                batch.append(entry)
            if batch and (entry is None or len(batch) == 256):
                at = self._put_batch(batch, at)
                batch = []
        return at

    def _put_batch(self, batch: list[Append], at: int) -> int:
        """Publish ``batch`` after position ``at``, all in flight at once (one connection
        keeps their order; each expects the one before it); the new head."""
        js, subject, limit = self.conn.js, self.names.log_subject, self.conn.nc.max_payload
        msgs = []
        for i, app in enumerate(batch):
            schema = json.dumps(app.schema, sort_keys=True) if app.schema is not None else None
            keys = [[t, k, bool(e)] for t, k, e in app.keys]
            payload = msgspec.msgpack.encode([keys, schema, bytes(app.body)])
            headers = {"Nats-Expected-Last-Sequence": str(at + i),
                       "Nats-Msg-Id": uuid.uuid4().hex}  # fmt: skip
            if len(payload) > self.compress_over:
                payload = zstandard.ZstdCompressor(level=1).compress(payload)
                headers["Nearstate-Encoding"] = "zstd"
            if len(payload) + 512 > limit:
                raise InputError(f"entry {at + i + 1} is {len(payload):,} bytes on the "
                                 f"wire, over the server's max_payload ({limit:,})")  # fmt: skip
            msgs.append((payload, headers))

        async def put() -> list[Any]:
            return await asyncio.gather(*(js.publish(subject, p, headers=h) for p, h in msgs))

        acks = self._run(put(), timeout=60 + len(batch) / 100)
        for i, ack in enumerate(acks):
            if int(ack.seq) != at + i + 1:
                raise LogError(f"{self._where()}: restored entry {at + i + 1} landed at "
                               f"{ack.seq}")  # fmt: skip
        return at + len(batch)

    async def _index(
        self, keys: dict[tuple[str, str], tuple[int, bool]], schema: tuple[int, str] | None
    ) -> None:
        """Write key positions (and the schema) to the KV bucket, never moving one back."""
        from nats.js.errors import KeyWrongLastSequenceError, NotFoundError

        kv = self._kv
        gate = asyncio.Semaphore(64)

        async def newer(name: str, value: bytes, pos: int) -> None:
            async with gate:
                with contextlib.suppress(KeyWrongLastSequenceError):
                    await kv.create(name, value)  # most keys are new to the index
                    return
                while True:
                    try:
                        e = await kv.get(name)
                    except NotFoundError:
                        try:
                            await kv.create(name, value)
                            return
                        except KeyWrongLastSequenceError:
                            continue
                    if msgspec.msgpack.decode(e.value)[0] >= pos:
                        return
                    try:
                        await kv.update(name, value, last=e.revision)
                        return
                    except KeyWrongLastSequenceError:
                        continue

        jobs = [
            newer(_key_name(t, k), msgspec.msgpack.encode([p, ex, t, k]), p)
            for (t, k), (p, ex) in keys.items()
        ]
        if schema is not None:
            jobs.append(newer(SCHEMA_KEY, msgspec.msgpack.encode(list(schema)), schema[0]))
        await asyncio.gather(*jobs)

    def schema(self, *, fresh: bool = True) -> str | None:
        if fresh:
            self._sync()
        else:
            self._follow()
        return self._schema_text()

    def key_positions(self) -> list[tuple[str, str, int, bool]]:
        """Every key's last change as the Log knows it (the KV bucket's index of trimmed
        entries, and the entries in the stream): ``(type, key id, position, exists
        afterwards)`` (for a backup)."""
        from nats.js import api

        self._sync()
        js, n = self.conn.js, self.names
        subject = f"$KV.{n.bucket}.k.>"

        async def indexed() -> list[list[Any]]:
            si = await js.stream_info(n.kv_stream, subjects_filter=subject)
            if not si.state.subjects:
                return []
            out: list[list[Any]] = []
            done = asyncio.Event()

            async def on_key(msg: Any) -> None:
                if msg.data:
                    out.append(msgspec.msgpack.decode(msg.data))
                if msg.metadata.num_pending == 0:
                    done.set()

            sub = await js.subscribe(
                subject, stream=n.kv_stream, cb=on_key, ordered_consumer=True,
                idle_heartbeat=1.0, deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT,
            )  # fmt: skip
            try:
                await asyncio.wait_for(done.wait(), 60)
            finally:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
            return out

        found: dict[tuple[str, str], tuple[int, bool]] = {
            (t, k): (int(p), bool(e)) for p, e, t, k in self._run(indexed(), timeout=90)
        }
        with self._mu:
            for key, (p, e) in self._keys.items():
                if key not in found or found[key][0] < p:
                    found[key] = (p, e)
        return [(t, k, p, e) for (t, k), (p, e) in found.items()]

    # -- for operators -------------------------------------------------------------------

    def floor(self) -> int:
        """The position up to which entries were trimmed (0: none)."""
        self._follow()
        return max(self._bounds()[0] - 1, 0)

    def stats(self) -> dict[str, Any]:
        """Head, trim floor, entries kept and their bytes (for ``nearstate inspect``)."""
        self._follow()
        info = self._run(self.conn.js.stream_info(self.names.log_stream))
        s = info.state
        return {"head": s.last_seq, "floor": max(s.first_seq - 1, 0), "entries": s.messages,
                "bytes": s.bytes, "stream": self.names.log_stream}  # fmt: skip

    def close(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                self.conn.call(self._sub.unsubscribe(), timeout=2)
            self._sub = None
