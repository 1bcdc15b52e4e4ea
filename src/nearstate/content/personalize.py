"""Visitor personalisation: a taste profile kept in a signed cookie, no server-side storage.

Every function here is pure and deterministic — no clock, no randomness, no I/O: the same
profile and inputs always give the same output.

Contracts:

- :func:`learn` folds one viewed page into a :class:`Profile`. Old affinities are decayed
  first (× :data:`DECAY`), then each distinct page genre gains ``1/len(genres)``; every score
  is rounded to 3 decimals (the cookie's precision, so what a request computes is exactly
  what the next request decodes), scores below 0.01 are dropped and the :data:`MAX_GENRES`
  strongest are kept (ties by name). A page with no genres teaches nothing: affinities are
  left alone (and without a story the profile is returned unchanged). Scores stay in
  ``[0.01, 10]``: each visit adds at most 1, so they approach ``1 / (1 - DECAY)``.
- :func:`encode` signs a profile into a compact, cookie-safe string; :func:`decode` turns a
  cookie back into a profile and **never raises**: a missing, oversized, tampered,
  foreign-secret, malformed or out-of-range cookie is :attr:`Profile.EMPTY`.
- :func:`row_order` orders home rows by affinity; pinned rows keep their slots and, with an
  empty profile, the order is exactly the layout order.
- :func:`for_you` picks candidates for the "For you" row, with a variety rule (see there).
- :func:`explain` gives each genre's score and share, for a "your profile" page.
"""

from __future__ import annotations

import base64
import functools
import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

COOKIE = "ns_profile"
MAX_GENRES = 12  # affinities kept (the strongest)
MAX_SEEN = 30  # recently seen story ids kept, newest first
DECAY = 0.9  # each visit multiplies old affinities by this, then adds the page's genres
MIN_SCORE = 0.01  # affinities below this (after rounding) are forgotten
MAX_SCORE = 10.0  # = 1 / (1 - DECAY): no run of visits can push a score past this
GENRE_CHARS = 40  # a genre name is cut to this many characters
GENRES_PER_PAGE = 10  # only a page's first ten (distinct, cleaned) genres are learnt
MAX_VISITS = 10**9  # the visit counter saturates here
MAX_ID = 2**53 - 1  # story ids are 0..MAX_ID (exact in JSON everywhere)
MAX_COOKIE = 4096  # longer cookie values are refused before any work
SALT = "nearstate.profile"
_FORMAT = 1  # first element of the signed payload; bump when the layout changes


def _strength(item: tuple[str, float]) -> tuple[float, str]:
    return (-item[1], item[0])


class _Affinities(Mapping[str, float]):
    """An immutable, hashable ``genre -> score`` mapping, iterated strongest first."""

    __slots__ = ("_d", "_items")

    def __init__(self, pairs: Iterable[tuple[str, float]] = ()) -> None:
        self._items = tuple(sorted(pairs, key=_strength))
        self._d = dict(self._items)
        if len(self._d) != len(self._items):
            raise ValueError("duplicate genre in affinities")

    def __getitem__(self, key: str) -> float:
        return self._d[key]

    def __iter__(self) -> Iterator[str]:
        return (g for g, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(frozenset(self._items))

    def __repr__(self) -> str:
        return f"{{{', '.join(f'{g!r}: {s!r}' for g, s in self._items)}}}"


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_id(v: object) -> int:
    if isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_ID:
        return v
    raise ValueError(f"story id must be an int in 0..{MAX_ID}, got {v!r}")


@dataclass(frozen=True)
class Profile:
    """One visitor's taste. Immutable and hashable; invalid values raise ``ValueError``.

    ``affinities`` maps at most :data:`MAX_GENRES` clean genre names to scores in
    ``[MIN_SCORE, MAX_SCORE]`` (iterated strongest first, ties by name); ``seen`` holds at
    most :data:`MAX_SEEN` distinct story ids, newest first; ``visits`` counts the pages
    learnt from. These are exactly the profiles :func:`learn` can produce and
    :func:`decode` accepts, so ``decode(encode(p, k), k) == p`` whenever p's scores have
    at most 3 decimals (as :func:`learn` keeps them).
    """

    affinities: Mapping[str, float] = field(default_factory=dict)
    seen: tuple[int, ...] = ()
    visits: int = 0
    EMPTY: ClassVar[Profile]

    def __post_init__(self) -> None:
        pairs = list(self.affinities.items())
        if len(pairs) > MAX_GENRES:
            raise ValueError(f"at most {MAX_GENRES} affinities, got {len(pairs)}")
        for g, s in pairs:
            if not isinstance(g, str) or not g or _clean_name(g) != g:
                raise ValueError(f"genre must be a clean, non-empty str, got {g!r}")
            # the comparison also refuses NaN, infinities and ints too big for a float
            if not isinstance(s, int | float) or isinstance(s, bool):
                raise ValueError(f"score of {g!r} must be a number, got {s!r}")
            if not MIN_SCORE <= s <= MAX_SCORE:
                raise ValueError(f"score of {g!r} must be in [{MIN_SCORE}, {MAX_SCORE}]")
        seen = tuple(_check_id(i) for i in self.seen)
        if len(set(seen)) != len(seen) or len(seen) > MAX_SEEN:
            raise ValueError(f"seen must hold at most {MAX_SEEN} distinct story ids")
        if not _is_int(self.visits) or not 0 <= self.visits <= MAX_VISITS:
            raise ValueError(f"visits must be an int in 0..{MAX_VISITS}, got {self.visits!r}")
        object.__setattr__(self, "affinities", _Affinities((g, float(s)) for g, s in pairs))
        object.__setattr__(self, "seen", seen)

    def top(self, n: int = 3) -> list[tuple[str, float]]:
        """The ``n`` strongest genres with their scores, strongest first, ties by name."""
        return list(self.affinities.items())[: max(n, 0)]


Profile.EMPTY = Profile()


def _clean_name(name: str) -> str:
    """Stripped, cut to :data:`GENRE_CHARS`; lone surrogates (unencodable) become ``?``."""
    name = name.strip()[:GENRE_CHARS].rstrip()
    return name if name.isascii() else name.encode("utf-8", "replace").decode("utf-8")


def clean_genres(genres: Sequence[str]) -> list[str]:
    """Stripped, cut to :data:`GENRE_CHARS`, empties and repeats dropped, first ten kept."""
    if isinstance(genres, str):
        raise TypeError("genres must be a sequence of names, not one str")
    out: list[str] = []
    for g in genres:
        if not isinstance(g, str):
            raise TypeError(f"genre must be a str, got {g!r}")
        name = _clean_name(g)
        if name and name not in out:
            out.append(name)
            if len(out) == GENRES_PER_PAGE:
                break
    return out


def learn(profile: Profile, genres: Sequence[str], *, story: int | None = None) -> Profile:
    """The profile after one more page view (see the module docstring for the arithmetic)."""
    names = clean_genres(genres)
    if not names and story is None:
        return profile
    scores = dict(profile.affinities)
    if names:
        scores = {g: s * DECAY for g, s in scores.items()}
        for g in names:
            scores[g] = scores.get(g, 0.0) + 1 / len(names)
        kept = ((g, round(s, 3)) for g, s in scores.items())
        scores = dict(sorted((p for p in kept if p[1] >= MIN_SCORE), key=_strength)[:MAX_GENRES])
    seen = profile.seen
    if story is not None:
        sid = _check_id(story)
        seen = (sid, *(i for i in seen if i != sid))[:MAX_SEEN]
    return Profile(scores, seen, min(profile.visits + 1, MAX_VISITS))


@functools.lru_cache(maxsize=8)
def _serializer(secret: str) -> Any:
    """Signed, URL-safe base64 of compact JSON. Not itsdangerous' URLSafeSerializer: it
    tries zlib on every dump, which cost 0.18 ms a page view (most of a page's budget)
    for a payload of a few hundred bytes; and the signer is made once per secret."""
    from itsdangerous import BadPayload, Signer  # the "web" extra; imported where needed

    signer = Signer(secret, salt=SALT)

    class _Serializer:
        @staticmethod
        def dumps(obj: Any) -> str:
            raw = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
            return signer.sign(base64.urlsafe_b64encode(raw).rstrip(b"=")).decode("ascii")

        @staticmethod
        def loads(value: str) -> Any:
            payload = signer.unsign(value.encode("ascii"))
            try:
                raw = base64.urlsafe_b64decode(payload + b"=" * (-len(payload) % 4))
                return json.loads(raw)
            except ValueError as e:
                raise BadPayload(f"not a profile: {e}") from e

    return _Serializer()


def encode(profile: Profile, secret: str) -> str:
    """The profile as a signed, URL- and cookie-safe string (scores at 3 decimals).

    Under 1 KB for a full profile with everyday genre names and ids; at most ~1.5 KB with
    twelve 40-character names and 16-digit ids. An empty ``secret`` raises ``ValueError``.
    """
    if not secret:
        raise ValueError("a secret is required to sign the profile cookie")
    pairs = [x for g, s in profile.affinities.items() for x in (g, round(s, 3))]
    return str(_serializer(secret).dumps([_FORMAT, profile.visits, pairs, list(profile.seen)]))


def decode(value: str | None, secret: str) -> Profile:
    """The profile in a cookie made by :func:`encode`; :attr:`Profile.EMPTY` for anything
    else (missing, oversized, bad signature, other secret, wrong shape, out-of-range or
    non-finite numbers, names :func:`learn` could not have produced). Never raises."""
    if not value or not secret or not isinstance(value, str) or len(value) > MAX_COOKIE:
        return Profile.EMPTY
    try:
        return _from_payload(_serializer(secret).loads(value))
    except Exception:  # BadSignature, BadPayload, ValueError, TypeError, RecursionError...
        return Profile.EMPTY


def _from_payload(data: object) -> Profile:
    """Shape checks here; ranges, names and limits are :class:`Profile`'s own checks."""
    if not isinstance(data, list) or len(data) != 4:
        raise ValueError("not a profile payload")
    fmt, visits, pairs, seen = data
    if not _is_int(fmt) or fmt != _FORMAT:
        raise ValueError("unknown profile format")
    if not isinstance(pairs, list) or len(pairs) % 2 or not isinstance(seen, list):
        raise ValueError("bad profile payload")
    scores = list(zip(pairs[::2], pairs[1::2], strict=True))
    if len({g for g, _ in scores if isinstance(g, str)}) != len(scores):
        raise ValueError("repeated or non-str genre")
    return Profile(dict(scores), tuple(seen), visits)


@dataclass(frozen=True)
class RowInfo:
    """What :func:`row_order` needs about one home row."""

    index: int  # its position in the layout
    genres: Mapping[str, int]  # genre -> how many of the row's items have it (0..items)
    items: int  # how many items the row has
    pinned: bool = False  # stays in its slot (e.g. the hero row)

    def score(self, profile: Profile) -> float:
        """``sum(affinity[g] * count / items)``, each count clamped to ``0..items`` (a
        miscounted row is not worth a failed page); 0 for a row without items."""
        if self.items <= 0:
            return 0.0
        aff, items = profile.affinities, self.items
        return sum(
            aff.get(_clean_name(g), 0.0) * min(max(n, 0), items) / items
            for g, n in sorted(self.genres.items())
        )


def row_order(rows: Sequence[RowInfo], profile: Profile) -> list[int]:
    """Row indexes in display order.

    The layout order is the rows sorted by ``index``, and its slots are numbered in that
    order. Pinned rows stay in their slots; the other rows fill the remaining slots by score,
    highest first, equal scores in layout order (a stable sort), so an empty profile gives
    exactly the layout order. Duplicate indexes raise ``ValueError``.
    """
    layout = sorted(rows, key=lambda r: r.index)
    if len({r.index for r in layout}) != len(layout):
        raise ValueError("duplicate row index")
    movable = iter(sorted((r for r in layout if not r.pinned), key=lambda r: -r.score(profile)))
    return [r.index if r.pinned else next(movable).index for r in layout]


@dataclass(frozen=True)
class Candidate:
    """An item that may go in the "For you" row."""

    kind: str  # "story" | "title"
    id: int
    genres: tuple[str, ...]
    rank: int  # freshness rank: 0 = newest/most featured; lower is better

    def __post_init__(self) -> None:
        if self.kind not in ("story", "title"):
            raise ValueError(f"kind must be 'story' or 'title', got {self.kind!r}")
        if isinstance(self.genres, str):
            raise TypeError("genres must be a sequence of names, not one str")
        object.__setattr__(self, "genres", tuple(self.genres))


def _match(profile: Profile, c: Candidate) -> tuple[float, str]:
    """(score, lead genre): the sum of the affinities of the candidate's distinct (cleaned)
    genres, and its matching genre with the highest affinity (ties by name)."""
    aff = profile.affinities
    names = {_clean_name(g) for g in c.genres}
    matches = sorted(((g, aff[g]) for g in names if g in aff), key=_strength)
    return sum(s for _, s in matches), (matches[0][0] if matches else "")


def for_you(
    profile: Profile, candidates: Iterable[Candidate], *, limit: int = 12
) -> list[Candidate]:
    """At most ``limit`` candidates for the "For you" row; ``[]`` for a profile without
    affinities or a ``limit`` below 1.

    A candidate's score is the sum of the profile's affinities for its distinct genres.
    Candidates scoring 0 and stories in ``profile.seen`` are dropped; a repeated
    ``(kind, id)`` counts once (its best-ordered occurrence). The rest are ordered by score
    desc, then rank asc, then kind, then id.

    Variety rule: each candidate's *lead genre* is its matching genre with the highest
    affinity (ties by name). Walking the ordered list, a candidate is taken while fewer than
    ``ceil(limit / 2)`` taken candidates share its lead genre, otherwise it is deferred.
    When the walk ends with room left, the deferred candidates fill it in their order. So a
    genre holds at most ``ceil(limit / 2)`` places before every other genre's candidates
    have had their turn, and the row is still filled when only one genre matches.
    """
    if limit < 1 or not profile.affinities:
        return []
    seen = set(profile.seen)
    scored: list[tuple[tuple[float, int, str, int], str, Candidate]] = []
    for c in candidates:
        if c.kind == "story" and c.id in seen:
            continue
        score, lead = _match(profile, c)
        if score > 0:
            scored.append(((-score, c.rank, c.kind, c.id), lead, c))
    scored.sort(key=lambda t: t[0])
    cap = math.ceil(limit / 2)
    taken: list[Candidate] = []
    deferred: list[Candidate] = []
    per_lead: dict[str, int] = {}
    done: set[tuple[str, int]] = set()
    for _, lead, c in scored:
        if (c.kind, c.id) in done:
            continue
        done.add((c.kind, c.id))
        if per_lead.get(lead, 0) < cap:
            per_lead[lead] = per_lead.get(lead, 0) + 1
            taken.append(c)
            if len(taken) == limit:
                return taken
        else:
            deferred.append(c)
    return (taken + deferred)[:limit]


def explain(profile: Profile) -> list[tuple[str, float, float]]:
    """``(genre, score, share)`` strongest first (ties by name); ``share`` is the score over
    the total, in 0..1, the shares summing to 1 (``[]`` for an empty profile)."""
    total = sum(profile.affinities.values())
    return [(g, s, s / total) for g, s in profile.affinities.items()]
