"""Fuzzing the compiled core (``nearstate._core``): it must never crash, whatever the bytes.

(a) Damaged blobs. One small valid snapshot (str, set, list, dict, nested record, ref,
    nullable and sparse fields, scaled and plain floats, bools, an FSST-compressed pool,
    blocked integer sections, int and str primary keys) has its *sections* damaged —
    bits flipped, bytes and little-endian words overwritten, a section filled or cut
    short — and is loaded with ``verify=False``, so the damage reaches the decoders. Then
    every field of every record is read, every record's ``to_dict()``, and ``get()`` of
    every key. Each read may return a value or raise nearstate's errors (``FormatError``
    and the other ``NearstateError``); ``IndexError`` or ``ValueError`` only where the
    pure-Python reference (a worker process with ``NEARSTATE_PURE=1``) fails on the same
    read too. Any other exception fails the test; a crash ends the run.
(b) ``Col`` built directly over random buffers (any kind, any widths, blocked or not, with
    nulls, sparse ranks, symbol tables and element columns), called on random ordinals;
    string pools, plain or compressed, that must read back unless a section was damaged;
    ``PkIndex`` over random tables; and record views misused from Python.
(c) ``fsst_encode`` on random tables and values: decodes back with ``fsst.decoder`` and
    with a native column, and gives the same bytes as the pure regex encoder.

In half the examples of (a) each section is copied into an allocation of its own (the
others read the sections in place, as a mapped blob is read), and every buffer of (b) has
its own: a read past a section's end then leaves its allocation — where AddressSanitizer
sees it (``scripts/asan``) — instead of landing silently in the next section.

Longer runs: ``NEARSTATE_FUZZ_EXAMPLES`` sets the examples per test (default 200), and
``--hypothesis-seed`` varies the inputs::

    NEARSTATE_FUZZ_EXAMPLES=5000 .venv/bin/python -m pytest -q tests/test_fuzz_core.py \\
        -p no:cacheprovider --hypothesis-seed=7
"""

from __future__ import annotations

import json
import os
import pickle
import random
import struct
import subprocess
import sys
import tempfile
from itertools import pairwise
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import nearstate
from nearstate import Field, FieldType, NearstateError, Schema, TypeDef, _native, fsst
from nearstate.blob import Blob, encode_blob, parse_blob
from nearstate.errors import FormatError

try:
    from nearstate import _core
except ImportError:  # not built: only the pure core (tests that need it are skipped)
    _core = None  # type: ignore[assignment]

needs_core = pytest.mark.skipif(_core is None, reason="the compiled core is not built")

EXAMPLES = int(os.environ.get("NEARSTATE_FUZZ_EXAMPLES", "200"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- (a) damaged blobs ----------------------------------------------------------------------


def schema() -> Schema:
    ft = FieldType
    return Schema(
        [
            TypeDef(
                "Person",
                (
                    Field("id", ft("int")),
                    Field("name", ft("str")),
                    Field("bio", ft("str")),  # long and distinct: an FSST pool
                ),
                key=("id",),
            ),
            TypeDef(
                "Info",
                (
                    Field("studio", ft("str")),
                    Field("budget", ft("int", True)),
                    Field("tags", ft("set", item=ft("str"))),
                ),
            ),
            TypeDef(
                "Movie",
                (
                    Field("slug", ft("str")),
                    Field("year", ft("int", True)),
                    Field("director", ft("ref", target="Person")),
                    Field("cast", ft("list", item=ft("ref", target="Person"))),
                    Field("genres", ft("list", item=ft("str"))),
                    Field("scores", ft("dict", key=ft("str"), item=ft("float"))),
                    Field("rating", ft("float", True)),
                    Field("gross", ft("float")),
                    Field("seen", ft("bool")),
                    Field("info", ft("record", True, target="Info")),
                    Field("aka", ft("list", True, item=ft("str", True))),
                ),
                key=("slug",),
            ),
        ]
    )


def build_snapshot() -> bytes:
    rng = random.Random(7)
    syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "ze", "qua", "ber", "don"]

    def word() -> str:
        return "".join(rng.choice(syllables) for _ in range(rng.randint(1, 4)))

    ws = nearstate.WriteState(schema())
    for p in range(48):
        bio = " ".join(word() for _ in range(24))
        ws.add("Person", {"id": 10 * p, "name": f"{word()} {word()}", "bio": bio})
    for m in range(80):  # over 64: sparse columns have two null rank entries
        ws.add(
            "Movie",
            {
                "slug": f"movie-{m}-{word()}",
                "year": None if m % 6 == 0 else 1950 + m,
                "director": 10 * (m % 48),
                "cast": [10 * ((m + k) % 48) for k in range(m % 4)],
                "genres": rng.sample(["drama", "comedy", "noir", "western", "é-ü"], m % 3),
                "scores": {word(): m / 4 for _ in range(m % 3)},
                "rating": None if m % 7 == 0 else m / 10,
                "gross": m * 1.0e6 + 0.123456789,
                "seen": m % 2 == 0,
                "info": None
                if m % 5 == 0
                else {
                    "studio": f"studio {m % 4}",
                    "budget": m % 3 or None,
                    "tags": {word() for _ in range(m % 3)},
                },
                "aka": None if m % 4 == 0 else [None if k == 1 else word() for k in range(m % 3)],
            },
        )
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "good.blob"
        ws.write_snapshot(path)
        return path.read_bytes()


class Snap:
    """The good snapshot, its sections' raw bytes, and the reads made of every version."""

    def __init__(self) -> None:
        self.data = build_snapshot()
        blob = parse_blob(self.data)
        self.header = {k: v for k, v in blob.header.items() if k not in ("sections", "data_length")}
        self.dtypes = {s["name"]: s["dtype"] for s in blob.header["sections"]}
        self.sections = {k: bytes(memoryview(a).cast("B")) for k, a in blob.arrays.items()}
        self.names = list(self.sections)
        state = nearstate.from_bytes(self.data)
        self.reads: list[tuple] = []
        for tname in state:
            ts = state[tname]
            for o in range(len(ts)):
                self.reads += [("field", tname, o, f) for f in ts.fields]
                self.reads.append(("dict", tname, o))
        keys = {
            "Person": [*state["Person"].keys(), -1, 5, 10**30, True],
            "Movie": [*state["Movie"].keys(), "", "nope", "\ud800"],
        }
        self.reads += [("get", t, k) for t, ks in keys.items() for k in ks]
        self.good = run_reads(self.data, True, self.reads)


def damaged(snap: Snap, mutations: list[tuple]) -> bytes:
    """The snapshot with ``mutations`` applied to its sections (laid out again: a section
    cut short is a shorter section, every other one stays where the header says)."""
    raw = {k: bytearray(v) for k, v in snap.sections.items()}
    for op, i, *args in mutations:
        b = raw[snap.names[i % len(snap.names)]]
        if op == "cut":
            del b[args[0] % (len(b) + 1) :]
        elif not b:
            continue
        elif op == "flip":
            b[args[0] % len(b)] ^= 1 << args[1]
        elif op == "byte":
            b[args[0] % len(b)] = args[1]
        elif op == "word":
            width, value = args[1], args[2] % (1 << (8 * args[1]))
            at = args[0] % len(b)
            b[at : at + width] = value.to_bytes(width, "little")[: len(b) - at]
        elif op == "fill":
            b[:] = bytes([args[0]]) * len(b)
    sections = {}
    for name, b in raw.items():
        dt = np.dtype(snap.dtypes[name])
        sections[name] = np.frombuffer(bytes(b[: len(b) - len(b) % dt.itemsize]), dtype=dt)
    return b"".join(encode_blob(snap.header, sections))


def _category(e: BaseException) -> str:
    if isinstance(e, NearstateError):
        return "nearstate"
    if isinstance(e, IndexError):
        return "index"
    if isinstance(e, ValueError):
        return "value"
    return f"other: {type(e).__name__}: {e}"


class Hang(BaseException):
    """A read of the reference that did not finish in time (the worker's alarm; a
    BaseException, so that no ``except Exception`` on the way takes it for an error)."""


def _read(state: Any, read: tuple) -> None:
    ts = state[read[1]]
    if read[0] == "field":
        getattr(ts[read[2]], read[3])
    elif read[0] == "dict":
        ts[read[2]].to_dict()
    else:
        r = ts.get(read[2])
        if r is not None:
            r.to_dict()


def alone(a: np.ndarray) -> np.ndarray:
    """A copy of ``a`` in an allocation that ends where it ends. (numpy gives an empty array
    one item's bytes, where a read of item 0 would go unseen: an empty section is a view
    at the end of a one-item allocation instead.)"""
    if a.size:
        return a.copy()
    end = memoryview(np.empty(1, dtype=a.dtype)).cast("B")[a.dtype.itemsize :]
    return np.frombuffer(end, dtype=a.dtype)  # (np.empty(1)[1:] would point at its start)


def load(data: bytes, isolate: bool) -> Any:
    """A ReadState over ``data``, read without checksums."""
    blob = parse_blob(data, verify=False)
    if isolate:  # each section in an allocation of its own (see the module docstring)
        arrays = {k: alone(a) for k, a in blob.arrays.items()}
        blob = Blob(blob.header, arrays, blob.nbytes, blob.source)
    return nearstate.ReadState(blob)


def outcome(f: Any, *args: Any) -> tuple[str, Any]:
    """("ok", result) or (the category of the error f raised, None)."""
    try:
        return "ok", f(*args)
    except Hang:
        return "hang", None
    except Exception as e:
        return _category(e), None


def run_reads(data: bytes, isolate: bool, reads: list[tuple]) -> list[str]:
    """The outcome of loading ``data``, then of each read ("ok" or the error's category)."""
    c, state = outcome(load, data, isolate)
    if c != "ok":
        return [c]
    return [c, *(outcome(_read, state, r)[0] for r in reads)]


def _send(f: Any, obj: Any) -> None:
    b = pickle.dumps(obj)
    f.write(struct.pack("<Q", len(b)) + b)
    f.flush()


def _recv(f: Any) -> Any:
    head = f.read(8)
    if len(head) < 8:
        raise EOFError
    return pickle.loads(f.read(struct.unpack("<Q", head)[0]))


def worker() -> None:
    """The reference: on the pure core, answers ``(data, isolate, reads)`` with the outcome
    of each read (a read that takes over a second is a "hang": the pure probe of a damaged
    key table may never end)."""
    import signal

    assert _native.core is None, "the reference runs on the pure core"

    def alarm(*_: Any) -> None:
        raise Hang

    signal.signal(signal.SIGALRM, alarm)
    while True:
        try:
            data, isolate, reads = _recv(sys.stdin.buffer)
        except EOFError:
            return
        signal.setitimer(signal.ITIMER_REAL, 5.0)
        c, state = outcome(load, data, isolate)
        out = [c]
        for read in reads if c == "ok" else ():  # each read on its own clock
            signal.setitimer(signal.ITIMER_REAL, 1.0)
            out.append(outcome(_read, state, read)[0])
        signal.setitimer(signal.ITIMER_REAL, 0)
        _send(sys.stdout.buffer, out)


class Reference:
    """A worker process on the pure core (started on first use)."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None

    def outcomes(self, data: bytes, isolate: bool, reads: list[tuple]) -> list[str]:
        if self.proc is None:
            env = {**os.environ, "NEARSTATE_PURE": "1"}
            self.proc = subprocess.Popen(
                [sys.executable, __file__, "--worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env,
            )
        assert self.proc.stdin and self.proc.stdout
        _send(self.proc.stdin, (data, isolate, reads))
        return _recv(self.proc.stdout)

    def close(self) -> None:
        if self.proc is not None:
            assert self.proc.stdin
            self.proc.stdin.close()
            self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def snap() -> Snap:
    if _native.core is None:
        pytest.skip("damaged blobs are read by the compiled core; the pure core is its reference")
    return Snap()


@pytest.fixture(scope="module")
def reference() -> Any:
    ref = Reference()
    yield ref
    ref.close()


def test_the_snapshot_has_what_the_fuzzing_needs(snap: Snap) -> None:
    meta = json.dumps(snap.header["types"])
    assert '"fsst": true' in meta and '"sparse": true' in meta and '"pool": "ids"' in meta
    assert any(n.endswith(".blk") for n in snap.names)
    assert {"Person/#pk", "Movie/#pk", "Movie/year.nrank", "Movie/rating.nulls"} <= set(snap.names)
    assert snap.good == ["ok"] * (len(snap.reads) + 1)
    # laid out again undamaged, the snapshot reads the same
    again = nearstate.from_bytes(damaged(snap, []))
    good = nearstate.from_bytes(snap.data)
    for t in good:
        assert [r.to_dict() for r in again[t]] == [r.to_dict() for r in good[t]]


def test_the_reference_agrees_on_the_good_snapshot(snap: Snap, reference: Reference) -> None:
    reads = snap.reads[::7]
    assert reference.outcomes(snap.data, False, reads) == ["ok"] * (len(reads) + 1)


INTERESTING = [0, 1, 2, 7, 8, 63, 64, 0x7F, 0x80, 0xFF, 0x100, 0xFFFF, 2**31, 2**32 - 1]
INTERESTING += [2**63 - 1, 2**63, 2**63 + 1, 2**64 - 1, 2**64 - 2]
POS = st.integers(0, 1 << 16)
SECTION = st.integers(0, 255)
MUTATION = st.one_of(
    st.tuples(st.just("flip"), SECTION, POS, st.integers(0, 7)),
    st.tuples(st.just("byte"), SECTION, POS, st.integers(0, 255)),
    st.tuples(
        st.just("word"),
        SECTION,
        POS,
        st.sampled_from([1, 2, 4, 8]),
        st.sampled_from(INTERESTING) | st.integers(0, 2**64 - 1),
    ),
    st.tuples(st.just("fill"), SECTION, st.sampled_from([0, 1, 0x7F, 0x80, 0xFF])),
    st.tuples(st.just("cut"), SECTION, POS),
)


@FUZZ
@given(mutations=st.lists(MUTATION, min_size=1, max_size=6), isolate=st.booleans())
def test_damaged_sections_never_crash_the_core(
    snap: Snap, reference: Reference, mutations: list[tuple], isolate: bool
) -> None:
    data = damaged(snap, mutations)
    native = run_reads(data, isolate, snap.reads)
    event(f"load: {native[0]}")
    event(f"reads that failed: {'none' if native.count('ok') == len(native) else 'some'}")
    reads = [None, *snap.reads][: len(native)]
    assert not [c for c in native if c.startswith("other")], [
        (r, c) for r, c in zip(reads, native, strict=True) if c.startswith("other")
    ]
    # IndexError and ValueError only where the pure reference fails on that read too
    ask = [i for i, c in enumerate(native) if c in ("index", "value")]
    if not ask:
        return
    asked = [i for i in ask if i]  # 0 is the load, always made
    pure = reference.outcomes(data, isolate, [reads[i] for i in asked])
    pure += pure[:1] * (len(asked) + 1 - len(pure))  # no load, no read
    by_read = dict(zip([0, *asked], pure, strict=True))
    disagree = [
        (reads[i], native[i], by_read[i])
        for i in ask
        if by_read[i] not in ("index", "value", "nearstate")
    ]
    assert not disagree, disagree


# --- (b) columns over random buffers ----------------------------------------------------------

DTYPES = ["u1", "<u2", "<u4", "<u8", "<f4", "<f8", "<i8", "<i2"]
UINTS = ["u1", "<u2", "<u4", "<u8"]


@st.composite
def buffers(draw: Any, dtypes: list[str] | None = None, max_size: int = 48) -> Any:
    """None, or bytes or a numpy array of a random width — random bytes, small ints
    (sorted, often: offsets) or extreme ones — each in an allocation of its own."""
    kind = draw(st.sampled_from(["none", "bytes", "array", "ints", "sorted", "extremes"]))
    if kind == "none":
        return None
    if kind == "extremes":  # edges of the signed and unsigned ranges, and small ints
        ints = draw(st.lists(st.sampled_from(INTERESTING), max_size=max_size // 4))
        return np.array(ints, dtype="<u8")
    if kind in ("ints", "sorted"):
        ints = draw(st.lists(st.integers(0, 70), max_size=max_size // 2))
        dt = np.dtype(draw(st.sampled_from(UINTS)))
        return np.array(sorted(ints) if kind == "sorted" else ints, dtype=dt)
    raw = draw(
        st.binary(max_size=max_size)
        | st.lists(st.sampled_from([0, 1, 2, 0xFF]), max_size=max_size).map(bytes)
    )
    if kind == "bytes":
        return raw
    dt = np.dtype(draw(st.sampled_from(dtypes or DTYPES)))
    return np.frombuffer(raw[: len(raw) - len(raw) % dt.itemsize], dtype=dt).copy()


class Items:
    """A Python element column: raises IndexError past ``n`` like the pure getters."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __call__(self, i: int) -> int:
        if not 0 <= i < self.n:
            raise IndexError(i)
        return i


@st.composite
def symbol_tables(draw: Any) -> tuple[Any, Any]:
    if draw(st.booleans()):
        return draw(buffers(max_size=80)), draw(buffers(max_size=12))
    table = draw(st.lists(st.binary(min_size=1, max_size=8), max_size=12))
    fsym, flen = fsst.pack(table)
    return fsym.copy(), flen.copy()


# the arguments each kind reads (any other is given now and then: it must be ignored)
NUMBERS = ("vals", "vals_blk")
POOLS = ("pool", "poffs", "poffs_blk", "ids", "ids_blk", "fsym")
NESTS = ("offs", "offs_blk", "item", "key")
READS = {0: NUMBERS, 1: NUMBERS, 2: NUMBERS, 3: NUMBERS, 4: POOLS, 5: POOLS, 6: NUMBERS}
READS |= {7: NESTS, 8: NESTS, 9: NESTS}


@st.composite
def columns(draw: Any, depth: int = 0, scalar: bool = False) -> Any:
    """(kind, a Col of that kind over random buffers, or None if construction refused it)."""
    kind = draw(st.sampled_from([0, 1, 2, 3, 4, 5] if scalar or depth else [*range(10), 11]))
    reads = READS.get(kind, ())
    kw: dict[str, Any] = {}
    for name in (*NUMBERS, *POOLS, *NESTS, "nulls", "nrank"):
        if name not in reads and name not in ("nulls", "nrank") and draw(st.integers(0, 9)):
            continue
        if name.endswith(("_blk", "nrank")) and draw(st.booleans()):
            continue  # often absent: float and bool columns refuse them, for one
        if name == "fsym":
            kw["fsym"], kw["flen"] = draw(symbol_tables()) if draw(st.booleans()) else (None, None)
        elif name in ("item", "key"):
            if depth or draw(st.booleans()):
                kw[name] = Items(draw(st.integers(0, 40)))
            else:  # (scalar: the items of sets and the keys of dicts must hash)
                kw[name] = draw(columns(depth + 1, scalar=True))[1]
        else:
            kw[name] = draw(buffers())
    kw["base"] = draw(st.sampled_from([0, -1, 2**63 - 1, -(2**63)]) | st.integers(-9, 9))
    kw["scale"] = draw(st.sampled_from([1, 10, 100, 0, -1, 2**62]))
    if kind == 6 or not draw(st.integers(0, 9)):
        kw["resolve"], kw["target"] = (lambda t: lambda o: (t, o)), "T"
    kw = {k: v for k, v in kw.items() if v is not None}
    try:
        return kind, _core.Col(kind, f"T/c{depth}", **kw)
    except (TypeError, ValueError, FormatError):
        return kind, None


ORDINALS = st.lists(
    st.integers(-3, 70) | st.sampled_from([2**31, 2**62, -(2**63), 2**63 - 1]), max_size=12
)
MALFORMED = (FormatError, ValueError, IndexError)  # ValueError: the pure core set no class
TYPES = {0: int, 1: float, 2: float, 3: bool, 4: str, 5: bytes, 7: list, 8: set, 9: dict}


@needs_core
@FUZZ
@given(col=columns(), ordinals=ORDINALS)
def test_columns_over_random_buffers_never_crash(col: tuple[int, Any], ordinals: list[int]) -> None:
    kind, col = col
    event(f"kind {kind}: {'refused' if col is None else 'built'}")
    if col is None:
        return
    assert len(col) >= 0
    for o in [*ordinals, *range(min(len(col), 40))]:
        try:
            v = col(o)
        except MALFORMED as e:
            event(f"kind {kind}: {type(e).__name__}")
            continue
        event(f"kind {kind}: a value")
        assert 0 <= o < len(col)
        if v is not None and kind in TYPES:
            assert type(v) is TYPES[kind]


@st.composite
def pools(draw: Any) -> tuple[Any, list[bytes] | None]:
    """(a str or bytes Col, the values it holds or None if its sections are damaged): a
    plain or FSST-compressed pool, offsets of any width (blocked or not), pool ids or none,
    and now and then a damaged section or an extreme id."""
    uniques = draw(st.lists(st.binary(max_size=10), min_size=1, max_size=10))
    table = draw(st.lists(st.binary(min_size=1, max_size=8), unique=True, max_size=12))
    compress = draw(st.booleans())
    if compress:
        fsym, flen = fsst.pack(table)
        codes, ends = _core.fsst_encode(fsym.tobytes(), flen.tobytes(), uniques)
        ends = np.frombuffer(ends, dtype="<u8").tolist()
    else:
        codes, ends = b"".join(uniques), np.cumsum([len(u) for u in uniques]).tolist()
    kw: dict[str, Any] = {"pool": alone(np.frombuffer(codes, dtype="u1"))}
    if compress:
        kw["fsym"], kw["flen"] = fsym.copy(), flen.copy()
    kw["poffs"] = np.array([0, *ends], dtype=draw(st.sampled_from(["<u2", "<u4", "<u8"])))
    ids = draw(st.none() | st.lists(st.integers(0, len(uniques) - 1), max_size=20))
    if ids is not None:
        kw["ids"] = np.array(ids, dtype=draw(st.sampled_from(UINTS)))
    expected = uniques if ids is None else [uniques[i] for i in ids]
    if draw(st.booleans()):  # damage: a section replaced, or a pool id of 2**63 - 1 ...
        name = draw(st.sampled_from(["pool", "poffs", "ids", "ids_blk", "poffs_blk", "flen", "id"]))
        if name == "id":
            at = draw(st.integers(0, len(ids or ())))
            extreme = draw(st.sampled_from([len(uniques), 2**62, 2**63 - 1, 2**63, 2**64 - 1]))
            some = ids or []
            kw["ids"] = np.array([*some[:at], extreme, *some[at:]], dtype="<u8")
        else:
            kw[name] = draw(buffers(UINTS, max_size=24))
        expected = None
    kind = draw(st.sampled_from([_core.STR, _core.BYTES]))
    try:
        col = _core.Col(kind, "T/s", **{k: v for k, v in kw.items() if v is not None})
    except (TypeError, ValueError, FormatError):
        return None, None
    if expected is not None and kind == _core.STR:
        expected = [_utf8(v) for v in expected]
    return col, expected


def _utf8(v: bytes) -> Any:
    try:
        return v.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return MALFORMED  # a str column refuses it (FormatError)


@needs_core
@FUZZ
@given(pool=pools(), ordinals=ORDINALS)
def test_string_pools_never_crash_and_read_back(
    pool: tuple[Any, list | None], ordinals: list[int]
) -> None:
    col, expected = pool
    if col is None:
        return
    got = []
    for o in [*range(len(col)), *ordinals]:
        try:
            got.append(col(o))
        except MALFORMED:
            got.append(MALFORMED)
    if expected is not None:  # an undamaged pool reads back
        assert got[: len(col)] == expected


@st.composite
def key_columns(draw: Any) -> Any:
    n = draw(st.integers(0, 20))
    if draw(st.booleans()):
        vals = draw(st.lists(st.integers(0, 2**64 - 1), min_size=n, max_size=n))
        base = draw(st.integers(-9, 9))
        return _core.Col(_core.INT, "K/id", vals=np.array(vals, dtype="<u8"), base=base)
    keys = draw(st.lists(st.text(max_size=6), min_size=n, max_size=n))
    raw = [k.encode("utf-8", "surrogatepass") for k in keys]
    poffs = np.cumsum([0, *map(len, raw)]).astype("<u4")
    if draw(st.booleans()):  # damaged offsets
        damaged = draw(buffers(["u1", "<u4", "<u8"]))
        poffs = poffs if damaged is None else damaged
    pool = np.frombuffer(b"".join(raw) or b"\0", dtype="u1").copy()
    try:
        return _core.Col(_core.STR, "K/id", pool=pool, poffs=poffs)
    except (TypeError, ValueError, FormatError):
        return None


@needs_core
@FUZZ
@given(
    keycol=key_columns(),
    table=buffers(["u1", "<u2", "<u4", "<u8"], max_size=64),
    keys=st.lists(st.integers(-(2**70), 2**70) | st.text(max_size=6) | st.none(), max_size=12),
)
def test_primary_key_probes_over_random_tables_never_crash(
    keycol: Any, table: Any, keys: list[Any]
) -> None:
    if keycol is None or table is None:
        return
    try:
        pk = _core.PkIndex(table, keycol)
    except (ValueError, FormatError):
        return
    for k in keys:
        try:
            o = pk(k)
        except MALFORMED:
            continue
        assert -1 <= o < len(keycol)


def _known_crashes() -> list[Any]:
    """Minimal inputs of the bugs the fuzzing found (each read past a buffer, crashed, or
    failed without a nearstate error), as calls that must now raise MALFORMED."""
    u1, u8 = (lambda *v: np.array(v, dtype="u1")), (lambda *v: np.array(v, dtype="<u8"))
    pool = {"pool": u1(97, 98, 99), "poffs": u1(0, 1, 3)}
    sparse = {"nulls": u1(*[0] * 10), "nrank": u1(0)}  # 80 records, one rank entry of two

    def items(i: int) -> int:
        if i >= 3:
            raise IndexError(i)
        return i

    return [
        # a sparse column's null rank one entry short (ordinals 64..79 read past it)
        lambda: _core.Col(_core.INT, "T/x", vals=u1(*range(80)), **sparse)(70),
        # a pool id of 2**63 - 1: "id + 1 >= n" overflowed (a wild read, or a segfault)
        lambda: _core.Col(_core.STR, "T/x", ids=u8(2**63 - 1), **pool)(0),
        # a uint64 key table slot over 2**63 became a negative ordinal
        lambda: _core.PkIndex(u8(*[2**63 + 1] * 8), _core.Col(_core.INT, "T/k", vals=u1(1)))(5),
        # damaged list offsets: a list of 2**40 slots allocated (MemoryError, or ASan's abort)
        lambda: _core.Col(_core.LIST, "T/l", offs=u8(0, 2**40), item=items)(0),
        lambda: _core.Col(
            _core.LIST, "T/l", offs=u8(0, 2**40), item=_core.Col(_core.INT, "T/l[]", vals=u1(1))
        )(0),
        # a symbol table without its lengths: no exception set (SystemError)
        lambda: _core.Col(_core.STR, "T/x", fsym=u8(0), **pool),
    ]


@needs_core
@pytest.mark.parametrize("case", range(6))
def test_known_crashes_stay_fixed(case: int) -> None:
    with pytest.raises((*MALFORMED, TypeError)):
        _known_crashes()[case]()


def test_a_record_view_without_its_state_raises() -> None:
    if _core is None:
        pytest.skip("the compiled core is not built")
    r = _core.RecordBase.__new__(_core.RecordBase)  # never initialised: no TypeState
    with pytest.raises((AttributeError, TypeError)):
        r.to_dict()
    r = _core.RecordBase(object(), 0)
    del r._ts
    with pytest.raises((AttributeError, TypeError)):
        r.to_dict()


def test_to_dict_survives_a_getter_that_empties_the_columns() -> None:
    # to_dict iterates the TypeState's columns and calls each getter, which is Python code:
    # the field name it had borrowed from the dict was used after the getter freed it
    if _core is None:
        pytest.skip("the compiled core is not built")

    class State:
        _columns: dict[str, Any]

    class Column:
        def __init__(self, get: Any) -> None:
            self.get = get

    ts = State()

    def get(o: int) -> int:
        ts._columns.clear()  # the names' last references
        return o + 1

    ts._columns = {"".join(["field", str(i)]): Column(get) for i in range(3)}
    assert _core.RecordBase(ts, 0).to_dict() == {"field0": 1}


# --- (c) FSST encoding -------------------------------------------------------------------------


@st.composite
def tables_and_values(draw: Any) -> tuple[list[bytes], list[bytes]]:
    big = draw(st.booleans())
    # symbols over a two-letter alphabet share their first bytes: the encoder's buckets by
    # first two bytes then hold many symbols of several lengths
    sym = st.binary(min_size=1, max_size=8)
    if draw(st.booleans()):
        sym = st.lists(st.sampled_from([b"a", b"b"]), min_size=1, max_size=8).map(b"".join)
    table = draw(st.lists(sym, unique=True, max_size=255 if big else 24))
    piece = st.binary(max_size=3)
    if table:
        piece = st.sampled_from(table) | piece
    values = draw(st.lists(st.lists(piece, max_size=12).map(b"".join), max_size=20))
    return table, values


def _decode_all(table: list[bytes], codes: bytes, ends: Any) -> list[bytes]:
    dec = fsst.decoder(table, "T/x")
    bounds = [0, *map(int, ends)]
    return [dec(codes[a:b]) for a, b in pairwise(bounds)]


@needs_core
@FUZZ
@given(tv=tables_and_values())
def test_fsst_encode_round_trips_and_matches_the_reference(
    tv: tuple[list[bytes], list[bytes]],
) -> None:
    table, values = tv
    fsym, flen = fsst.pack(table)
    codes, ends = _core.fsst_encode(fsym.tobytes(), flen.tobytes(), values)
    ends = np.frombuffer(ends, dtype="<u8")
    assert len(ends) == len(values)
    assert _decode_all(table, codes, ends) == values
    with mock.patch.object(_native, "core", None):  # the pure regex encoder
        pure_codes, pure_ends = fsst.encode(table, values)
    assert (codes, ends.tolist()) == (pure_codes, pure_ends.tolist())
    # and the compiled decoder reads the same codes back
    poffs = np.array([0, *ends.tolist()], dtype="<u8")
    pool = alone(np.frombuffer(codes, dtype="u1"))
    col = _core.Col(_core.BYTES, "T/x", pool=pool, poffs=poffs, fsym=fsym, flen=flen)
    assert [col(i) for i in range(len(values))] == values


@needs_core
@FUZZ
@given(
    fsym=st.binary(max_size=80),
    flen=st.binary(max_size=12),
    values=st.lists(st.binary(max_size=20) | st.integers(0, 3), max_size=6),
)
def test_fsst_encode_refuses_bad_tables_and_values(
    fsym: bytes, flen: bytes, values: list[Any]
) -> None:
    try:
        codes, ends = _core.fsst_encode(fsym, flen, values)
    except (ValueError, TypeError):
        return
    table = [fsym[8 * i : 8 * i + n] for i, n in enumerate(flen)]
    assert _decode_all(table, codes, np.frombuffer(ends, dtype="<u8")) == values


if __name__ == "__main__" and sys.argv[1:] == ["--worker"]:
    worker()


def _tp_clear(obj: object) -> None:
    """Call the type's tp_clear slot, as the cycle collector does (CPython's type layout:
    tp_clear is the 25th pointer-sized field of PyTypeObject)."""
    import ctypes

    slot = ctypes.c_void_p.from_address(id(type(obj)) + 24 * ctypes.sizeof(ctypes.c_void_p))
    assert slot.value, "the type has no tp_clear"
    ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.py_object)(slot.value)(obj)  # the GIL held


@pytest.mark.skipif(
    _native.core is None or sys.implementation.name != "cpython", reason="compiled core only"
)
def test_objects_cleared_by_the_garbage_collector_refuse_instead_of_crashing() -> None:
    """tp_clear empties a compiled object's references while a cycle is torn down; a call
    that still reaches one (from a __del__, say) gets ReferenceError, never a crash."""
    core = _native.core
    vals = np.arange(10, dtype=np.uint8)
    item = core.Col(core.INT, "T/x[]", vals=vals)
    lst = core.Col(core.LIST, "T/x", offs=np.array([0, 2, 4], dtype=np.uint8), item=item)
    ref = core.Col(core.REF, "T/r", vals=vals, resolve=lambda t: lambda o: o, target="U")

    class V(core.RecordBase):
        __slots__ = ()

    maker = core.Maker(V, object())
    getter = core.Getter(lambda k: 0, maker)
    keycol = core.Col(core.INT, "T/k", vals=vals)
    pk = core.PkIndex(np.zeros(16, dtype=np.uint8), keycol)
    assert lst(0) == [0, 1] and ref(3) == 3 and isinstance(getter(1), V)
    for obj in (lst, ref, maker, getter, pk):
        _tp_clear(obj)
    for call in (lambda: lst(0), lambda: ref(3), lambda: maker(0), lambda: getter(1),
                 lambda: pk(1)):  # fmt: skip
        with pytest.raises(ReferenceError):
            call()


# --- (d) staging helpers: str_pool and gather against their Python references --------------


@needs_core
@FUZZ
@given(values=st.lists(st.text(max_size=6) | st.sampled_from(["a", "é", "", "a\x00b"]),
                       max_size=40))  # fmt: skip
def test_str_pool_matches_a_dict(values: list[str]) -> None:
    ids, uniques, total = _core.str_pool(values)
    index: dict[bytes, int] = {}
    want = [index.setdefault(v.encode(), len(index)) for v in values]
    assert np.frombuffer(ids, np.uint32).tolist() == want
    assert uniques == list(index) and total == sum(len(v.encode()) for v in values)


@needs_core
def test_str_pool_leaves_what_it_cannot_encode_to_python() -> None:
    assert _core.str_pool(["a", "\ud800"]) is None  # a lone surrogate has no UTF-8 form
    assert _core.str_pool(["a", b"b"]) is None
    assert _core.str_pool([]) == (b"", [], 0)
    with pytest.raises(TypeError):
        _core.str_pool(("a",))


@needs_core
@FUZZ
@given(
    records=st.lists(
        st.dictionaries(
            st.sampled_from(["a", "b", "c", "zz"]) | st.integers(0, 2),
            st.integers() | st.none() | st.text(max_size=3),
            max_size=4,
        ),
        max_size=12,
    ),
    names=st.lists(st.sampled_from(["a", "b", "c"]), unique=True, max_size=3),
)
def test_gather_matches_reading_each_record(records: list[dict], names: list[str]) -> None:
    absent = object()
    cols, bad = _core.gather(records, tuple(names), absent)
    assert cols == [[r.get(n, absent) for r in records] for n in names]
    others = [i for i, r in enumerate(records) if set(r) - set(names)]
    assert bad == (others[0] if others else -1)


@needs_core
def test_gather_leaves_other_mappings_to_python() -> None:
    from collections import OrderedDict

    assert _core.gather([{"a": 1}, OrderedDict(a=2)], ("a",), None) is None
    assert _core.gather([{"a": 1}, [("a", 2)]], ("a",), None) is None
    assert _core.gather([], ("a",), None) == ([[]], -1)
