"""What every framework integration shares: the signed consistency token, the choice of
consistency per request, and the state a handler reads.

One :class:`ReadModel` per process holds the dataset's consumer and writer. For each
request it makes a :class:`Reading` from what the client sent:

- no token, nothing asked: **eventual** — the state this process holds now (never blocks);
- a token (the cookie, or the header, that the response to the client's last write
  carried): **read-your-writes** — the state once that write is shown here, whichever
  worker or host took the write;
- ``X-Nearstate-Consistency: strong`` (or ``?consistency=strong``): **strong** — the state
  once every write committed before the request is shown.

A token is ``ns1.<dataset>.<position>.<mac>``: the Log position of the write, for the
dataset named (a short hash of its name, or of ``audience``), signed with HMAC-SHA256 and
the secret. A token that is malformed, of another format, for another dataset, signed
with another secret or naming a position past the Log's head is refused with
:class:`TokenRefused` (the adapters answer 400 and drop the cookie); a write not shown in
time is :class:`~nearstate.errors.ReadTimeout` (503). Nothing waits longer than
``timeout``.

Contracts: a ReadModel is thread-safe and fork-aware (a process forked after it was used,
as under ``gunicorn --preload``, makes its own consumer and writer on first use); a
Reading belongs to one request.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs

from ..consumer import CONSISTENCIES, Consumer
from ..errors import InputError, NearstateError, ReadTimeout
from ..layered import State
from ..schema import Schema
from ..writer import Token, Transaction, Writer

FORMAT = "ns1"
COOKIE = "nearstate_token"
HEADER = "x-nearstate-token"
CONSISTENCY_HEADER = "x-nearstate-consistency"
QUERY = "consistency"
_TOKEN = re.compile(
    r"^(?P<fmt>[a-z]+\d+)\.(?P<aud>[0-9a-f]{12})\.(?P<pos>\d{1,19})\.(?P<mac>[A-Za-z0-9_-]{43})$"
)
_OLD = re.compile(r"^[a-z]+\d+\.")


def cookie_value(raw: str | None, name: str) -> str | None:
    """One cookie's value from a Cookie header (the last one of that name wins)."""
    found = None
    for part in (raw or "").split(";"):
        k, sep, v = part.strip().partition("=")
        if sep and k == name:
            found = v.strip().strip('"')
    return found


def query_value(query: bytes | str, name: str | None) -> str | None:
    if not name or not query:
        return None
    text = query.decode("latin-1") if isinstance(query, bytes) else query
    got = parse_qs(text).get(name)
    return got[-1] if got else None


class TokenRefused(InputError):
    """A consistency token was refused: malformed, of another format, for another dataset,
    not signed with this secret, or naming a write the Log does not have. ``reason`` is
    one of ``malformed``, ``format``, ``foreign``, ``signature``, ``unknown``."""

    def __init__(self, message: str, *, reason: str):
        self.reason = reason
        super().__init__(message)


class TokenSigner:
    """Signs Log positions of one dataset and checks tokens. ``secrets``: the first signs,
    every one verifies (rotate by putting the new secret first). ``audience``: the
    dataset's identity in the token (its name, unless given)."""

    def __init__(self, secrets: str | Iterable[str], audience: str):
        keys = [secrets] if isinstance(secrets, str) else list(secrets)
        if not keys or any(not isinstance(k, str) or len(k) < 16 for k in keys):
            raise InputError("a consistency token secret is text of at least 16 characters")
        self._keys = [k.encode() for k in keys]
        self.audience = hashlib.sha256(audience.encode()).hexdigest()[:12]

    def _mac(self, key: bytes, position: int) -> str:
        msg = f"nearstate-consistency\x00{FORMAT}\x00{self.audience}\x00{position}".encode()
        digest = hmac.new(key, msg, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def sign(self, token: int) -> str:
        position = int(token)
        if position < 0:
            raise InputError(f"a token is a Log position (0 or more), not {position}")
        return f"{FORMAT}.{self.audience}.{position}.{self._mac(self._keys[0], position)}"

    def verify(self, text: str) -> Token:
        """The position a token names, or TokenRefused saying why not."""
        m = _TOKEN.match(text) if isinstance(text, str) and len(text) < 200 else None
        if m is None:
            if isinstance(text, str) and _OLD.match(text) and not text.startswith(FORMAT + "."):
                raise TokenRefused(
                    f"the consistency token is in a format this server does not read "
                    f"({text.split('.')[0]!r}; it reads {FORMAT!r}): drop it and read again",
                    reason="format",
                )
            raise TokenRefused("the consistency token is malformed", reason="malformed")
        if m["fmt"] != FORMAT:
            raise TokenRefused(
                f"the consistency token is in a format this server does not read "
                f"({m['fmt']!r}; it reads {FORMAT!r}): drop it and read again",
                reason="format",
            )
        if m["aud"] != self.audience:
            raise TokenRefused(
                "the consistency token was issued for another dataset", reason="foreign"
            )
        position = int(m["pos"])
        sent = m["mac"].encode()
        if not any(hmac.compare_digest(self._mac(k, position).encode(), sent) for k in self._keys):
            raise TokenRefused(
                "the consistency token's signature does not match: it was forged or signed "
                "with another secret",
                reason="signature",
            )
        return Token(position)


@dataclass(frozen=True)
class Plan:
    """What a request asks for, checked but not yet waited on."""

    consistency: str
    token: Token | None  # the client's token (read-your-writes)


class Reading:
    """The state one request reads, and the writes it makes.

    ``consistency`` is what was chosen; ``token`` the client's own last write (or None);
    :attr:`state` one immutable state (hold it for the whole request). Writes made
    through :meth:`upsert`, :meth:`delete` or :meth:`transaction` (or noted with
    :meth:`wrote`) make the response carry a new token, so the client's next request,
    to any worker, reads them."""

    def __init__(self, model: ReadModel, plan: Plan, state: State | None):
        self.model = model
        self.consistency = plan.consistency
        self.token = plan.token
        self._state = state
        self.written: Token | None = None
        self.on_write: Callable[[Reading], Any] | None = None

    @property
    def state(self) -> State:
        if self._state is None:
            self._state = self.model.consumer.state
        return self._state

    @property
    def writer(self) -> Writer:
        return self.model.writer

    def wrote(self, token: int) -> Token:
        """Note a write made elsewhere (say, through an ingestor) as this client's."""
        t = Token(int(token))
        if self.written is None or t > self.written:
            self.written = t
            if self.on_write is not None:
                self.on_write(self)
        return t

    def upsert(self, type_name: str, record: Mapping[str, Any], **conditions: Any) -> Token:
        return self.wrote(self.writer.upsert(type_name, record, **conditions))

    def delete(self, type_name: str, key: Any, **conditions: Any) -> Token:
        return self.wrote(self.writer.delete(type_name, key, **conditions))

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """``with reading.transaction() as tx: tx.upsert(...)`` — committed when the
        block ends without an exception, and noted as this client's write."""
        with self.writer.transaction() as tx:
            yield tx
        if tx.token is not None:
            self.wrote(tx.token)

    @property
    def issued(self) -> str | None:
        """The signed token the response should carry (None: nothing written)."""
        if self.written is None:
            return None
        latest = self.written if self.token is None else max(self.written, self.token)
        return self.model.signer.sign(latest)


class ReadModel:
    """A dataset as a web process reads and writes it (one per process).

    ``dataset``: a nearstate dataset (``nearstate.open(url)``) or its URL. ``secret``:
    signs the tokens (text, 16 characters or more; a list to rotate). ``schema``: types
    the writer declares. ``timeout``: seconds a request may wait for its write or the
    Log's head. ``follow``: follow the Log in the background (False: the state moves only
    when a request needs it to; eventual reads stay on what was last shown).
    ``cookie``/``header``/``consistency_header``/``query``: the names read and written
    (``query=None``: no query flag). ``cookie_secure``, ``cookie_max_age``: the cookie's
    attributes (it is always HttpOnly, SameSite=Lax, Path=/). ``audience``: the dataset's
    identity in tokens (default: its name).
    """

    def __init__(
        self,
        dataset: Any,
        *,
        secret: str | Iterable[str],
        schema: Schema | None = None,
        timeout: float = 5.0,
        follow: bool = True,
        cookie: str = COOKIE,
        header: str = HEADER,
        consistency_header: str = CONSISTENCY_HEADER,
        query: str | None = QUERY,
        cookie_secure: bool = False,
        cookie_max_age: int = 24 * 3600,
        audience: str | None = None,
        consumer_options: Mapping[str, Any] | None = None,
    ):
        if isinstance(dataset, (str, os.PathLike)):
            from ..dataset import open_dataset

            dataset = open_dataset(dataset)
        if timeout <= 0:
            raise InputError(f"timeout is a number of seconds above 0, not {timeout!r}")
        self.dataset = dataset
        self.schema = schema
        self.timeout = float(timeout)
        self.follow = follow
        self.cookie = cookie
        self.header = header.lower()
        self.consistency_header = consistency_header.lower()
        self.query = query
        self.cookie_secure = cookie_secure
        self.cookie_max_age = cookie_max_age
        self.signer = TokenSigner(secret, audience if audience is not None else dataset.name)
        self._consumer_options = dict(consumer_options or {})
        self._lock = threading.Lock()
        self._pid = -1
        self._consumer: Consumer | None = None
        self._writer: Writer | None = None

    # -- per process ----------------------------------------------------------------------

    def _own(self) -> None:
        """Start afresh in a process forked after this model was used (held lock)."""
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._consumer = None
            self._writer = None

    @property
    def consumer(self) -> Consumer:
        c = self._consumer
        if c is not None and self._pid == os.getpid():
            return c
        with self._lock:
            self._own()
            if self._consumer is None:
                c = self.dataset.consumer(**self._consumer_options)
                if self.follow:
                    c.start(wait=False)
                self._consumer = c
            return self._consumer

    @property
    def writer(self) -> Writer:
        w = self._writer
        if w is not None and self._pid == os.getpid():
            return w
        with self._lock:
            self._own()
            if self._writer is None:
                self._writer = self.dataset.writer(schema=self.schema)
            return self._writer

    def start(self) -> None:
        """Make the consumer now rather than on the first request (an app's startup)."""
        self.consumer  # noqa: B018

    def stop(self) -> None:
        with self._lock:
            c, self._consumer = self._consumer, None
        if c is not None and self._pid == os.getpid():
            c.stop()

    # -- per request ----------------------------------------------------------------------

    def plan(self, *, token: str | None, asked: str | None) -> Plan:
        """Check what the request sent (no waiting): ``token`` the header's or cookie's
        text, ``asked`` the consistency header's or query flag's value."""
        t = self.signer.verify(token.strip()) if token else None
        if asked:
            asked = asked.strip().lower()
            if asked not in CONSISTENCIES:
                raise InputError(
                    f"unknown consistency {asked!r}: ask for one of {', '.join(CONSISTENCIES)}"
                )
            if asked == "eventual":
                return Plan("eventual", t)
            if asked == "strong":
                return Plan("strong", t)
            return Plan("read-your-writes", t)
        return Plan("eventual" if t is None else "read-your-writes", t)

    def ready(self, plan: Plan) -> bool:
        """Whether :meth:`open` returns without waiting or reading the Log."""
        if plan.consistency == "strong":
            return False
        if plan.consistency == "eventual" or plan.token is None:
            return True
        c = self._consumer
        return c is not None and self._pid == os.getpid() and c.position >= plan.token

    def open(self, plan: Plan) -> Reading:
        """The Reading for ``plan``: may block up to ``timeout`` seconds (ReadTimeout), or
        refuse a token naming a write past the Log's head (TokenRefused)."""
        if plan.consistency == "strong":
            return Reading(self, plan, self.consumer.sync(self.timeout))
        if plan.consistency == "eventual" or plan.token is None:
            return Reading(self, plan, None)
        c = self.consumer
        if c.position < plan.token:
            assert c.log is not None
            head = c.log.head()
            if plan.token > head:
                raise TokenRefused(
                    f"the consistency token names write {int(plan.token)} but this dataset's "
                    f"Log ends at {head}: it was issued for another copy of the dataset",
                    reason="unknown",
                )
        return Reading(self, plan, c.wait_for(plan.token, self.timeout))

    def begin(self, *, token: str | None, asked: str | None) -> Reading:
        """:meth:`plan` then :meth:`open` (for threaded servers: WSGI, Django)."""
        return self.open(self.plan(token=token, asked=asked))

    def chosen_token(self, header: str | None, cookie: str | None) -> str | None:
        """The header's token if sent (API clients), else the cookie's (browsers)."""
        return header if header else cookie

    # -- responses ------------------------------------------------------------------------

    def cookie_header(self, value: str | None) -> str:
        """A Set-Cookie header value: the token, or (None) one that drops it."""
        jar: SimpleCookie = SimpleCookie()
        jar[self.cookie] = value or ""
        morsel = jar[self.cookie]
        morsel["path"] = "/"
        morsel["httponly"] = True
        morsel["samesite"] = "Lax"
        morsel["max-age"] = self.cookie_max_age if value else 0
        if self.cookie_secure:
            morsel["secure"] = True
        return morsel.OutputString()

    def response_headers(self, reading: Reading) -> list[tuple[str, str]]:
        """Headers to add to a response: the consistency read, and the new token (cookie
        and header) when the request wrote."""
        out = [("X-Nearstate-Consistency", reading.consistency)]
        issued = reading.issued
        if issued is not None:
            out.append(("Set-Cookie", self.cookie_header(issued)))
            out.append(("X-Nearstate-Token", issued))
        return out

    def refusal(self, error: NearstateError) -> tuple[int, str, list[tuple[str, str]]]:
        """(status, JSON body, headers) for a request whose consistency cannot be given."""
        import json

        headers = [("Content-Type", "application/json"), ("Cache-Control", "no-store")]
        if isinstance(error, ReadTimeout):
            status = 503
            message = f"your last write is not visible here yet: {error}"
            headers.append(("Retry-After", "1"))
        else:
            status = 400
            message = str(error)
            if isinstance(error, TokenRefused):
                headers.append(("Set-Cookie", self.cookie_header(None)))
        reason = getattr(error, "reason", None) or type(error).__name__
        body = json.dumps({"error": message, "reason": reason})
        return status, body, headers
