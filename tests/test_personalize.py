"""Visitor personalisation: learn's arithmetic, the signed cookie (round trip, every kind
of bad cookie, size), row ordering and the "For you" row. Pure functions: no I/O."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from itsdangerous import URLSafeSerializer

from nearstate.content import personalize as pz
from nearstate.content.personalize import (
    COOKIE,
    DECAY,
    MAX_GENRES,
    MAX_SEEN,
    Candidate,
    Profile,
    RowInfo,
    decode,
    encode,
    explain,
    for_you,
    learn,
    row_order,
)

SECRET = "test-secret-0123456789abcdef"
EMPTY = Profile.EMPTY


def signed(obj: object, secret: str = SECRET, salt: str = "nearstate.profile") -> str:
    """A cookie signed exactly as encode signs, holding any JSON-able payload."""
    return URLSafeSerializer(secret, salt=salt).dumps(obj)


class _RawJSON:
    """A 'serializer' that passes JSON text through, to sign payloads json can't write."""

    @staticmethod
    def dumps(obj: str) -> str:
        return obj

    @staticmethod
    def loads(text: str) -> str:
        return text


def signed_raw(text: str) -> str:
    return URLSafeSerializer(SECRET, salt="nearstate.profile", serializer=_RawJSON).dumps(text)


def good_payload() -> list:
    return [1, 3, ["drama", 1.5, "crime", 0.5], [7, 3]]


# ---- constants and Profile ------------------------------------------------------------


def test_contract_constants() -> None:
    assert (COOKIE, MAX_GENRES, MAX_SEEN, DECAY) == ("ns_profile", 12, 30, 0.9)


def test_empty_profile() -> None:
    assert EMPTY == Profile() == Profile({}, (), 0)
    assert dict(EMPTY.affinities) == {} and EMPTY.seen == () and EMPTY.visits == 0
    assert EMPTY.top() == [] and explain(EMPTY) == []


def test_profile_is_immutable_and_hashable() -> None:
    src = {"drama": 1.0, "crime": 0.5}
    p = Profile(src, (1, 2), 2)
    src["comedy"] = 3.0
    assert "comedy" not in p.affinities
    assert hash(p) == hash(Profile({"crime": 0.5, "drama": 1.0}, (1, 2), 2))
    assert {p, Profile({"crime": 0.5, "drama": 1.0}, (1, 2), 2)} == {p}
    with pytest.raises(AttributeError):
        p.visits = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        p.affinities["x"] = 1.0  # type: ignore[index]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"affinities": {"drama": 0.0}},
        {"affinities": {"drama": -1.0}},
        {"affinities": {"drama": math.nan}},
        {"affinities": {"drama": math.inf}},
        {"affinities": {"drama": 10.5}},
        {"affinities": {"drama": 0.001}},
        {"affinities": {"drama": True}},
        {"affinities": {" drama": 1.0}},
        {"affinities": {"": 1.0}},
        {"affinities": {"x" * 41: 1.0}},
        {"affinities": {f"g{i}": 1.0 for i in range(MAX_GENRES + 1)}},
        {"seen": (1, 1)},
        {"seen": (-1,)},
        {"seen": (True,)},
        {"seen": tuple(range(MAX_SEEN + 1))},
        {"visits": -1},
        {"visits": 1.0},
    ],
)
def test_profile_refuses_what_learn_cannot_produce(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        Profile(**kwargs)


def test_top_strongest_first_ties_by_name() -> None:
    p = Profile({"b": 1.0, "a": 1.0, "c": 2.0, "d": 0.5})
    assert p.top() == [("c", 2.0), ("a", 1.0), ("b", 1.0)]
    assert p.top(1) == [("c", 2.0)]
    assert p.top(10) == [("c", 2.0), ("a", 1.0), ("b", 1.0), ("d", 0.5)]
    assert p.top(0) == []


# ---- learn -------------------------------------------------------------------------


def test_learn_worked_example() -> None:
    p = learn(EMPTY, ["drama", "crime"], story=1)
    assert dict(p.affinities) == {"drama": 0.5, "crime": 0.5}
    assert p.seen == (1,) and p.visits == 1
    p = learn(p, ["drama"])  # 0.9*0.5 + 1 and 0.9*0.5
    assert dict(p.affinities) == {"drama": 1.45, "crime": 0.45}
    assert p.seen == (1,) and p.visits == 2
    p = learn(p, ["comedy", "drama", "crime", "thriller"], story=2)  # each page genre +0.25
    assert dict(p.affinities) == {"drama": 1.555, "crime": 0.655, "comedy": 0.25, "thriller": 0.25}
    assert p.seen == (2, 1) and p.visits == 3
    assert p.top(2) == [("drama", 1.555), ("crime", 0.655)]
    assert list(p.affinities) == ["drama", "crime", "comedy", "thriller"]


def test_learn_decays_old_scores_before_adding_the_new_page() -> None:
    p = learn(EMPTY, ["a"])
    assert p.affinities["a"] == 1.0  # the new page is not decayed on its own visit
    p = learn(p, ["b"])
    assert dict(p.affinities) == {"a": 0.9, "b": 1.0}
    p = learn(p, ["a"])
    assert dict(p.affinities) == {"a": 1.81, "b": 0.9}


def test_learn_rounds_to_three_decimals_and_forgets_below_001() -> None:
    p = learn(EMPTY, ["a", "b", "c"])
    assert dict(p.affinities) == {"a": 0.333, "b": 0.333, "c": 0.333}
    p = learn(Profile({"old": 0.011}), ["new"])
    assert dict(p.affinities) == {"old": 0.01, "new": 1.0}  # 0.0099 rounds to 0.01: kept
    p = learn(p, ["new"])
    assert dict(p.affinities) == {"new": 1.9}  # 0.009 < 0.01: forgotten


def test_scores_never_exceed_ten() -> None:
    p = EMPTY
    for _ in range(300):
        p = learn(p, ["drama"])
    assert 9.99 < p.affinities["drama"] <= 10.0
    assert decode(encode(p, SECRET), SECRET) == p


def test_page_without_genres_teaches_nothing() -> None:
    p = learn(EMPTY, ["drama"], story=4)
    assert learn(p, []) is p
    assert learn(p, ["  ", ""]) is p
    q = learn(p, [], story=5)
    assert q.affinities == p.affinities  # no decay either
    assert q.seen == (5, 4) and q.visits == 2


def test_learn_cleans_genre_names() -> None:
    long = "x" * 39 + " tail"
    p = learn(EMPTY, ["  drama ", "drama", "", "   ", long, "Drama"])
    # distinct cleaned names: "drama", the 39 x's (cut at 40, then stripped), "Drama"
    assert dict(p.affinities) == {"drama": 0.333, "x" * 39: 0.333, "Drama": 0.333}
    twelve = [f"g{i:02d}" for i in range(12)]
    p = learn(EMPTY, twelve)
    assert dict(p.affinities) == {g: 0.1 for g in twelve[:10]}  # the first ten only


def test_learn_refuses_programming_errors() -> None:
    with pytest.raises(TypeError):
        learn(EMPTY, "drama")  # one str, not a list of names
    with pytest.raises(TypeError):
        learn(EMPTY, [3])  # type: ignore[list-item]
    with pytest.raises(ValueError):
        learn(EMPTY, ["drama"], story=-1)


def test_learn_keeps_the_strongest_genres_ties_by_name() -> None:
    ten = [f"a{i}" for i in range(10)]
    p = learn(EMPTY, ten)  # 0.1 each
    p = learn(p, ["b0", "b1", "b2"])  # a*: 0.09; b*: 0.333 -> 13 genres, keep 12
    assert len(p.affinities) == MAX_GENRES
    assert dict(p.affinities) == {
        **{f"b{i}": 0.333 for i in range(3)},
        **{f"a{i}": 0.09 for i in range(9)},
    }
    assert "a9" not in p.affinities  # the tie among the a's is broken by name


def test_learn_seen_newest_first_deduplicated_and_cut() -> None:
    p = EMPTY
    for story in range(35):
        p = learn(p, ["drama"], story=story)
    assert p.seen == tuple(range(34, 4, -1)) and len(p.seen) == MAX_SEEN
    p = learn(p, ["drama"], story=20)
    assert p.seen[0] == 20 and p.seen.count(20) == 1 and len(p.seen) == MAX_SEEN
    assert p.seen[1:] == tuple(i for i in range(34, 4, -1) if i != 20)
    assert p.visits == 36


genre_names = st.text(min_size=0, max_size=50)
page = st.tuples(st.lists(genre_names, max_size=14), st.none() | st.integers(0, 60))


@given(st.lists(page, max_size=40))
@settings(max_examples=150, deadline=None)
def test_learn_invariants_and_cookie_round_trip(pages) -> None:
    p = EMPTY
    for genres, story in pages:
        before = p
        p = learn(p, genres, story=story)
        assert p.visits <= before.visits + 1
        assert len(p.affinities) <= MAX_GENRES and len(p.seen) <= MAX_SEEN
        assert all(0.01 <= s <= 10 and round(s, 3) == s for s in p.affinities.values())
        assert len(set(p.seen)) == len(p.seen)
        if story is not None:
            assert p.seen[0] == story
    assert decode(encode(p, SECRET), SECRET) == p
    assert learn(EMPTY, ["drama"]) == learn(EMPTY, ["drama"])  # deterministic


# ---- encode / decode ------------------------------------------------------------------

clean_name = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=40).filter(
    lambda g: g == g.strip()
)
profiles = st.builds(
    Profile,
    st.dictionaries(clean_name, st.integers(10, 10_000).map(lambda n: n / 1000), max_size=12),
    st.lists(st.integers(0, 2**53 - 1), unique=True, max_size=30).map(tuple),
    st.integers(0, 10**9),
)


@given(profiles, st.text(min_size=1, max_size=40))
@settings(max_examples=200, deadline=None)
def test_encode_decode_round_trip(p: Profile, secret: str) -> None:
    value = encode(p, secret)
    assert re.fullmatch(r"[A-Za-z0-9_.\-]+", value)  # cookie-safe, no quoting needed
    assert decode(value, secret) == p
    assert encode(p, secret) == value  # deterministic


def test_encode_rounds_scores_to_three_decimals() -> None:
    p = Profile({"drama": 1.23456, "crime": 0.0104})
    assert dict(decode(encode(p, SECRET), SECRET).affinities) == {"drama": 1.235, "crime": 0.01}


def test_encode_needs_a_secret() -> None:
    with pytest.raises(ValueError):
        encode(EMPTY, "")


def test_good_payload_helper_is_accepted() -> None:
    # guards the bad-cookie tests below: only the one defect differs from a good cookie
    assert decode(signed(good_payload()), SECRET) == Profile(
        {"drama": 1.5, "crime": 0.5}, (7, 3), 3
    )


def _with(index: int, value: object) -> list:
    data = good_payload()
    data[index] = value
    return data


def _score(value: object) -> list:
    return _with(2, ["drama", value, "crime", 0.5])


BAD_PAYLOADS = {
    "not a list": {"visits": 3},
    "string": "profile",
    "null": None,
    "short": [1, 3, []],
    "long": [*good_payload(), 0],
    "other format": _with(0, 2),
    "format as bool": _with(0, True),
    "format as float": _with(0, 1.0),
    "visits str": _with(1, "3"),
    "visits float": _with(1, 3.0),
    "visits bool": _with(1, True),
    "visits negative": _with(1, -1),
    "visits huge": _with(1, 10**30),
    "pairs not a list": _with(2, {"drama": 1.5}),
    "pairs odd": _with(2, ["drama", 1.5, "crime"]),
    "pairs nested": _with(2, [["drama", 1.5]]),
    "genre not str": _with(2, [3, 1.5]),
    "genre empty": _with(2, ["", 1.5]),
    "genre unstripped": _with(2, [" drama", 1.5]),
    "genre too long": _with(2, ["x" * 41, 1.5]),
    "genre repeated": _with(2, ["drama", 1.5, "drama", 0.5]),
    "too many genres": _with(2, [x for i in range(13) for x in (f"g{i}", 1.0)]),
    "score str": _score("1.5"),
    "score null": _score(None),
    "score bool": _score(True),
    "score negative": _score(-1.0),
    "score zero": _score(0),
    "score below 0.01": _score(0.001),
    "score above 10": _score(10.5),
    "score huge": _score(1e300),
    "score huge int": _score(10**400),
    "score nan": _score(math.nan),
    "score inf": _score(math.inf),
    "score -inf": _score(-math.inf),
    "seen not a list": _with(3, 7),
    "seen str": _with(3, [7, "3"]),
    "seen float": _with(3, [7.0]),
    "seen bool": _with(3, [True]),
    "seen negative": _with(3, [-7]),
    "seen huge": _with(3, [2**64]),
    "seen repeated": _with(3, [7, 7]),
    "seen too long": _with(3, list(range(31))),
}


@pytest.mark.parametrize("payload", BAD_PAYLOADS.values(), ids=BAD_PAYLOADS.keys())
def test_signed_but_malformed_payloads_are_empty(payload: object) -> None:
    assert decode(signed(payload), SECRET) is EMPTY


@pytest.mark.parametrize(
    "text",
    [
        '[1,3,["drama",1e400],[]]',
        '[1,3,["drama",NaN],[]]',
        '[1,3,["drama",-Infinity],[]]',
        '[1,3,["drama",1.5],[]',
        "[" * 5000 + "]" * 5000,
        "not json",
        '[1,3,["\\ud800",1.5],[]]',
    ],
)
def test_signed_but_broken_json_is_empty(text: str) -> None:
    assert decode(signed_raw(text), SECRET) is EMPTY


def test_bad_cookies_are_empty() -> None:
    good = encode(Profile({"drama": 1.5}, (7,), 1), SECRET)
    assert decode(good, SECRET) != EMPTY
    body, sig = good.rsplit(".", 1)
    flipped = sig[:-3] + ("A" if sig[-3] != "A" else "B") + sig[-2:]
    tampered_body = signed([1, 1, ["drama", 9.0], [7]]).rsplit(".", 1)[0] + "." + sig
    for value in [
        None,
        "",
        body + "." + flipped,  # tampered signature
        tampered_body,  # another payload under this signature
        body,  # no signature
        encode(Profile({"drama": 1.5}), "another secret"),
        signed(good_payload(), salt="another.salt"),  # same secret, other purpose
        signed(good_payload(), salt=""),
        "garbage",
        "....",
        "%%%",
        "a.b.c",
        good + "x",
        good + "." + "A" * 5000,  # oversized
    ]:
        assert decode(value, SECRET) is EMPTY, value
    assert decode(good, "") is EMPTY
    assert decode(123, SECRET) is EMPTY  # type: ignore[arg-type]


def test_oversized_cookie_is_refused_before_any_work(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = pz._serializer

    def spy(secret: str):
        calls.append(secret)
        return real(secret)

    monkeypatch.setattr(pz, "_serializer", spy)
    good = encode(Profile({"drama": 1.5}), SECRET)
    calls.clear()
    assert decode(good + "." * (pz.MAX_COOKIE - len(good)), SECRET) is EMPTY
    assert calls == [SECRET]  # at the limit: verified (and refused: bad signature)
    assert decode(good + "." * (pz.MAX_COOKIE + 1 - len(good)), SECRET) is EMPTY
    assert calls == [SECRET]  # past the limit: not even verified


@given(st.text(max_size=300))
@settings(max_examples=200, deadline=None)
def test_decode_never_raises_on_text(value: str) -> None:
    assert decode(value, SECRET) is EMPTY


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=45),
    lambda inner: st.lists(inner, max_size=8) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=40,
)


@given(json_values)
@settings(max_examples=300, deadline=None)
def test_decode_never_raises_on_signed_json(payload: object) -> None:
    p = decode(signed(payload), SECRET)
    assert isinstance(p, Profile)
    assert decode(encode(p, SECRET), SECRET) == p


def _full(names: list[str], ids: list[int]) -> Profile:
    return Profile({g: round(9.999 - 0.777 * i, 3) for i, g in enumerate(names)}, tuple(ids), 10**9)


def test_cookie_size_when_full() -> None:
    everyday = [
        "drama", "comedy", "science fiction", "documentary", "thriller", "romance",
        "animation", "crime", "horror", "family", "music", "history",
    ]  # fmt: skip
    p = _full(everyday, list(range(900_001, 900_031)))
    assert len(encode(p, SECRET)) < 1024
    # worst ASCII case: twelve 40-character names that do not compress, 16-digit ids
    names = [
        f"{i:02d}" + "".join(chr(33 + (i * 7 + j * 13) % 90) for j in range(38)) for i in range(12)
    ]
    ids = [2**53 - 1 - 982_451_653 * i for i in range(30)]
    p = _full(names, ids)
    value = encode(p, SECRET)
    assert len(value) < 1536 and decode(value, SECRET) == p
    # worst of all: four-byte characters; still a single cookie that decode accepts
    p = _full([chr(0x1F600 + i) * 40 for i in range(12)], ids)
    value = encode(p, SECRET)
    assert len(value) <= pz.MAX_COOKIE and decode(value, SECRET) == p


# ---- row_order ------------------------------------------------------------------------


def _rows() -> list[RowInfo]:
    return [
        RowInfo(0, {"drama": 2, "comedy": 1}, 4, pinned=True),  # hero
        RowInfo(1, {"comedy": 4}, 4),
        RowInfo(2, {"horror": 3}, 6),
        RowInfo(3, {"drama": 5}, 5),
        RowInfo(4, {}, 0),
    ]


def test_row_order_empty_profile_is_layout_order() -> None:
    assert row_order(_rows(), EMPTY) == [0, 1, 2, 3, 4]
    assert row_order(list(reversed(_rows())), EMPTY) == [0, 1, 2, 3, 4]
    assert row_order([], EMPTY) == []


def test_row_order_drama_lover_gets_the_drama_row_first() -> None:
    lover = learn(learn(EMPTY, ["drama"]), ["drama", "horror"])  # drama 1.4, horror 0.5
    assert row_order(_rows(), lover) == [0, 3, 2, 1, 4]  # hero pinned; 1.4 > 0.25 > 0 = 0
    unpinned = [RowInfo(r.index, r.genres, r.items) for r in _rows()]
    assert row_order(unpinned, lover) == [3, 0, 2, 1, 4]  # hero scores 1.4*2/4 = 0.7


def test_row_order_pinned_rows_keep_their_slots() -> None:
    rows = [
        RowInfo(0, {"comedy": 1}, 1),
        RowInfo(1, {"comedy": 1}, 1),
        RowInfo(2, {"drama": 1}, 1, pinned=True),
        RowInfo(3, {"drama": 1}, 1),
    ]
    assert row_order(rows, learn(EMPTY, ["drama"])) == [3, 0, 2, 1]
    # non-contiguous indexes: slots are the layout positions, not the index values
    gaps = [RowInfo(10, {}, 1, pinned=True), RowInfo(20, {}, 1), RowInfo(30, {"drama": 1}, 1)]
    assert row_order(gaps, learn(EMPTY, ["drama"])) == [10, 30, 20]


def test_row_order_equal_scores_keep_layout_order_and_is_deterministic() -> None:
    rows = [RowInfo(i, {"drama": 1, "crime": 1}, 2) for i in range(6)]
    rows.append(RowInfo(6, {"crime": 2, "drama": 2}, 4))  # same score, other dict order
    p = learn(learn(EMPTY, ["crime"]), ["drama", "crime", "x"])
    assert row_order(rows, p) == list(range(7))
    assert row_order(rows, p) == row_order(list(reversed(rows)), p)


def test_row_order_scores_by_share_of_items() -> None:
    p = Profile({"drama": 1.0, "comedy": 0.6})
    rows = [RowInfo(0, {"drama": 1}, 4), RowInfo(1, {"comedy": 1}, 1), RowInfo(2, {"drama": 1}, 2)]
    # scores: 0.25, 0.6, 0.5
    assert row_order(rows, p) == [1, 2, 0]
    # a miscounted row (more matches than items, negative counts) is clamped, not an error
    odd = [RowInfo(0, {"drama": 9}, 2), RowInfo(1, {"comedy": 2, "drama": -5}, 2)]
    assert row_order(odd, p) == [0, 1]


def test_row_order_refuses_duplicate_indexes() -> None:
    with pytest.raises(ValueError):
        row_order([RowInfo(1, {}, 1), RowInfo(1, {}, 1)], EMPTY)


# ---- for_you --------------------------------------------------------------------------


def story(i: int, *genres: str, rank: int = 0) -> Candidate:
    return Candidate("story", i, genres, rank)


def title(i: int, *genres: str, rank: int = 0) -> Candidate:
    return Candidate("title", i, genres, rank)


def test_for_you_empty_profile_or_limit() -> None:
    cands = [story(1, "drama"), title(2, "comedy")]
    assert for_you(EMPTY, cands) == []
    assert for_you(Profile(seen=(3,), visits=1), cands) == []
    assert for_you(learn(EMPTY, ["drama"]), cands, limit=0) == []


def test_for_you_drops_seen_stories_and_zero_scores() -> None:
    p = learn(learn(EMPTY, ["drama"], story=1), ["drama"], story=2)
    cands = [story(1, "drama"), story(2, "drama"), title(1, "drama"), story(3, "comedy")]
    cands += [story(4, "drama"), title(5), story(6)]
    assert for_you(p, cands) == [story(4, "drama"), title(1, "drama")]  # titles are not seen


def test_for_you_order_score_rank_kind_id() -> None:
    p = Profile({"drama": 2.0, "crime": 1.0, "comedy": 0.5})
    cands = [
        story(9, "comedy", rank=0),  # 0.5
        title(3, "drama", rank=5),  # 2.0
        story(3, "drama", rank=5),  # 2.0: same score and rank, "story" < "title"
        story(1, "drama", rank=5),  # 2.0: lower id first
        title(8, "drama", rank=1),  # 2.0, fresher
        story(5, "drama", "crime"),  # 3.0
        story(6, "drama", "drama"),  # 2.0 (repeated genre counts once), rank 0
    ]
    got = for_you(p, cands, limit=20)
    assert [(c.kind, c.id) for c in got] == [
        ("story", 5), ("story", 6), ("title", 8), ("story", 1), ("story", 3), ("title", 3),
        ("story", 9),
    ]  # fmt: skip
    assert for_you(p, list(reversed(cands)), limit=20) == got  # input order does not matter
    assert for_you(p, cands, limit=20) == got  # deterministic


def test_for_you_limit() -> None:
    p = Profile({"drama": 1.0, "comedy": 0.9, "crime": 0.8})
    cands = [story(i, ("drama", "comedy", "crime")[i % 3], rank=i) for i in range(40)]
    assert len(for_you(p, cands)) == 12
    assert len(for_you(p, cands, limit=5)) == 5
    assert len(for_you(p, cands[:4], limit=12)) == 4


def test_for_you_variety_rule() -> None:
    p = Profile({"drama": 3.0, "comedy": 1.0})
    dramas = [story(i, "drama", rank=i) for i in range(12)]
    comedies = [title(100 + i, "comedy", rank=i) for i in range(3)]
    cands = dramas + comedies
    # limit 6: at most ceil(6/2) = 3 dramas before the comedies get their turn
    got = for_you(p, cands, limit=6)
    assert got == dramas[:3] + comedies
    # limit 12: 6 dramas, the 3 comedies, then the deferred dramas fill the row
    got = for_you(p, cands, limit=12)
    assert got == dramas[:6] + comedies + dramas[6:9]
    # odd limit: ceil(5/2) = 3
    assert for_you(p, cands, limit=5) == dramas[:3] + comedies[:2]
    # only one genre matches: the row still fills
    assert for_you(p, dramas, limit=8) == dramas[:8]


def test_for_you_variety_counts_the_strongest_matching_genre() -> None:
    p = Profile({"drama": 3.0, "crime": 2.0, "comedy": 1.0})
    # drama+crime items lead with drama; crime+comedy items lead with crime
    dc = [story(i, "crime", "drama", rank=i) for i in range(6)]  # score 5
    cc = [story(10 + i, "comedy", "crime", rank=i) for i in range(3)]  # score 3
    got = for_you(p, dc + cc, limit=4)
    assert got == dc[:2] + cc[:2]
    # ties for the lead genre are broken by name: "action" leads over "drama"
    q = Profile({"action": 1.0, "drama": 1.0})
    both = [story(i, "drama", "action", rank=i) for i in range(3)]
    drama_only = [story(10, "drama", rank=0)]
    assert for_you(q, both + drama_only, limit=2) == [both[0], drama_only[0]]


def test_for_you_counts_a_repeated_candidate_once() -> None:
    p = Profile({"drama": 1.0})
    got = for_you(p, [story(1, "drama", rank=3), story(1, "drama", rank=1), story(2, "drama")])
    assert got == [story(2, "drama"), story(1, "drama", rank=1)]


def test_for_you_matches_cleaned_genre_names() -> None:
    p = learn(EMPTY, [" drama "])
    assert for_you(p, [story(1, "drama "), story(2, "  drama")]) == [
        story(1, "drama "),
        story(2, "  drama"),
    ]


def test_candidate_checks() -> None:
    with pytest.raises(ValueError):
        Candidate("video", 1, ("drama",), 0)
    with pytest.raises(TypeError):
        Candidate("story", 1, "drama", 0)  # type: ignore[arg-type]
    assert Candidate("story", 1, ["drama"], 0).genres == ("drama",)  # type: ignore[arg-type]


# ---- explain --------------------------------------------------------------------------


def test_explain_scores_and_shares() -> None:
    p = Profile({"crime": 1.0, "drama": 3.0, "comedy": 1.0})
    assert explain(p) == [("drama", 3.0, 0.6), ("comedy", 1.0, 0.2), ("crime", 1.0, 0.2)]
    assert math.isclose(sum(s for _, _, s in explain(p)), 1.0)
