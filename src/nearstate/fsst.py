"""Symbol-table compression for string pools, after FSST (Boncz, Neumann, Leis, VLDB 2020).

A table holds at most 255 symbols of 1 to 8 bytes, trained per column. A value is stored
as a sequence of one-byte codes: code ``c < 255`` stands for symbol ``c``; code 255 (the
escape) is followed by one literal byte. Decoding one value alone is a table lookup per
code, so a pool stays random-access: no neighbours, no frame, no dictionary to prime.

Training (:func:`train`) follows the paper's loop on a sample of the values: tokenise the
sample greedily (longest symbol first) with the current table, count every token and
every pair of adjacent tokens, score each candidate — a token, or two adjacent tokens
joined and cut to 8 bytes — by ``count × length`` (the bytes it would cover), keep the
255 best, and repeat five times. In the last round single bytes count eight times, so
frequent bytes keep a code rather than an escape. Ties are broken by the symbol's bytes,
so a table depends only on the values.

This module is the reference: :func:`encode` and :func:`decode` in pure Python. The
compiled core (``nearstate._core``) encodes and decodes the same format; tests check that
both give identical bytes.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from itertools import pairwise

import numpy as np

from .errors import FormatError

ESCAPE = 255
MAX_SYMBOLS = 255
MAX_LEN = 8
GENERATIONS = 5
SINGLE_BYTE_BOOST = 8
SAMPLE_BYTES = 1 << 15  # the paper trains on 16 KB; twice that is still milliseconds


def _sample(values: Sequence[bytes], budget: int) -> list[bytes]:
    total = sum(map(len, values))
    if total <= budget:
        return list(values)
    step = max(1, total // budget)
    return list(values[::step])


def _tokenizer(table: Sequence[bytes]) -> re.Pattern[bytes]:
    # alternatives longest first: at each position the regex takes the longest symbol
    # that matches there, else one byte — the same greedy rule as the compiled encoder
    syms = sorted(table, key=lambda s: (-len(s), s))
    alts = [re.escape(s) for s in syms]
    return re.compile(b"|".join([*alts, b"."]), re.DOTALL)


def train(values: Sequence[bytes], *, sample_bytes: int = SAMPLE_BYTES) -> list[bytes]:
    """A symbol table for ``values`` (deterministic: the same values give the same table)."""
    sample = [v for v in _sample(values, sample_bytes) if v]
    table: list[bytes] = []
    for generation in range(GENERATIONS):
        findall = _tokenizer(table).findall
        gain: Counter[bytes] = Counter()
        for v in sample:
            toks = findall(v)
            for t in toks:
                gain[t] += len(t)
            for a, b in pairwise(toks):
                s = (a + b)[:MAX_LEN]
                gain[s] += len(s)
        if generation == GENERATIONS - 1:
            # the last round keeps single bytes that occur often, so few bytes are escaped
            # (an escape costs two bytes): 1-3% smaller on names, titles and prose
            for s in gain:
                if len(s) == 1:
                    gain[s] *= SINGLE_BYTE_BOOST
        table = [s for s, _ in sorted(gain.items(), key=lambda kv: (-kv[1], kv[0]))]
        table = table[:MAX_SYMBOLS]
    return table


def pack(table: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """The table as stored: symbols zero-padded to 8 bytes (uint64), and their lengths."""
    fsym = np.frombuffer(b"".join(s.ljust(MAX_LEN, b"\0") for s in table), dtype="<u8")
    flen = np.array([len(s) for s in table], dtype=np.uint8)
    return fsym, flen


def unpack(fsym: np.ndarray, flen: np.ndarray, where: str) -> list[bytes]:
    """The table from its stored form; FormatError naming ``where`` if it is damaged."""
    lens = bytes(memoryview(flen).cast("B"))
    raw = bytes(memoryview(fsym).cast("B"))
    if len(lens) > MAX_SYMBOLS or len(raw) != MAX_LEN * len(lens):
        raise FormatError(
            f"column {where!r}: its symbol table is damaged ({len(lens)} symbols, {len(raw)} bytes)"
        )
    out = []
    for i, n in enumerate(lens):
        if not 1 <= n <= MAX_LEN:
            raise FormatError(
                f"column {where!r}: its symbol table is damaged (symbol {i} has length {n})"
            )
        out.append(raw[MAX_LEN * i : MAX_LEN * i + n])
    return out


def encode(table: Sequence[bytes], values: Sequence[bytes]) -> tuple[bytes, np.ndarray]:
    """``(codes, ends)``: every value's codes, concatenated, and the end offset of each."""
    from ._native import core

    if core is not None:
        fsym, flen = pack(table)
        codes, ends = core.fsst_encode(fsym.tobytes(), flen.tobytes(), list(values))
        return codes, np.frombuffer(ends, dtype="<u8")
    code = {s: bytes([i]) for i, s in enumerate(table)}
    findall = _tokenizer(table).findall
    esc = bytes([ESCAPE])
    parts = []
    ends = np.zeros(len(values), dtype=np.uint64)
    n = 0
    for i, v in enumerate(values):
        c = b"".join([code.get(t) or esc + t for t in findall(v)])
        parts.append(c)
        n += len(c)
        ends[i] = n
    return b"".join(parts), ends


def decoder(table: Sequence[bytes], where: str):
    """A function ``codes -> bytes`` for one value (the pure-Python reference)."""
    syms = list(table)
    nsym = len(syms)

    def decode(codes: bytes) -> bytes:
        if ESCAPE not in codes:
            if codes and max(codes) >= nsym:
                raise FormatError(f"column {where!r} is malformed: code beyond the symbol table")
            return b"".join([syms[c] for c in codes])
        out = bytearray()
        i, n = 0, len(codes)
        while i < n:
            c = codes[i]
            if c == ESCAPE:
                if i + 1 >= n:
                    raise FormatError(
                        f"column {where!r} is malformed: symbol-table escape at the end of a value"
                    )
                out.append(codes[i + 1])
                i += 2
                continue
            if c >= nsym:
                raise FormatError(f"column {where!r} is malformed: code beyond the symbol table")
            out += syms[c]
            i += 1
        return bytes(out)

    return decode
