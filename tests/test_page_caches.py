"""What a site worker keeps of its own for reuse stays small (issue 20): the page models'
card caches (nearstate.content.pages) hold at most their bound of cards per type, still
share a card between the pages built from one TypeState, start afresh with a new one and
keep nothing at a bound of 0; the page cache (nearstate.web.site.state) is bounded by
bytes as well as by count."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from nearstate.content.pages import CARD_CACHE, Pages, _story_card, _title_card
from nearstate.errors import InputError
from nearstate.web.site.state import PageCache, Site, SiteConfig
from test_search import make_state, story, title

N = 30
BOUND = 8
GENRES = ("Drama", "Comedy", "Horror")


def films(names: dict[int, str] | None = None) -> dict[str, list[dict[str, Any]]]:
    names = names or {}
    return {
        "Story": [story(i, f"Story {i}", tags=("news",)) for i in range(1, N + 1)],
        "Title": [
            title(100 + i, names.get(100 + i, f"Title {i}"), 1950 + i, genres=(GENRES[i % 3],))
            for i in range(1, N + 1)
        ],
    }


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return make_state(tmp_path_factory.mktemp("cards"), films())


STORIES = list(range(1, N + 1))
TITLES = [100 + i for i in range(1, N + 1)]


def test_more_cards_than_the_bound_leave_at_most_the_bound_held(state: Any) -> None:
    pages = Pages(BOUND)
    for _ in range(3):  # and again: starting over never lets it grow past the bound
        titles = pages.title_cards(state, TITLES, N)
        stories = pages.story_cards(state, STORIES, N)
        held = pages.cards_held()
        assert 0 < held["Title"] <= BOUND and 0 < held["Story"] <= BOUND, held
    # every card right, the ones made after the cache started over too
    assert titles == [_title_card(state["Title"].get(i)) for i in TITLES]
    assert stories == [_story_card(state["Story"].get(i)) for i in STORIES]
    # a genre crawl (every page of every genre) holds no more either
    for g in pages.genres(state):
        slug = g["url"].rsplit("/", 1)[1]
        page = pages.genre(state, slug)
        assert page is not None and page["count"] == g["count"] == N // 3
    assert pages.cards_held()["Title"] <= BOUND


def test_cards_within_the_bound_are_the_same_objects_across_pages(state: Any) -> None:
    pages = Pages(12)
    ids = [i for i in TITLES if state["Title"].get(i).genres == ["Drama"]]  # 10 of them
    first = pages.title_cards(state, ids, N)
    again = pages.title_cards(state, list(reversed(ids)), N)
    assert [c["id"] for c in first] == ids and len(ids) == N // 3
    assert all(a is b for a, b in zip(first, reversed(again), strict=True))
    assert first == [_title_card(state["Title"].get(i)) for i in ids]
    # a page built from the same state shares them: the genre page's cards are these
    page = pages.genre(state, "drama")
    assert page is not None and len(page["titles"]) == len(ids)
    shared = {c["id"]: c for c in first}
    assert all(c is shared[c["id"]] for c in page["titles"])
    assert pages.cards_held()["Title"] == len(ids)


def test_a_new_type_state_starts_a_fresh_cache(state: Any, tmp_path: Path) -> None:
    pages = Pages(BOUND)
    old = pages.title_cards(state, TITLES[:3], 3)
    assert pages.cards_held()["Title"] == 3
    renamed = make_state(tmp_path, films({101: "Renamed"}), version=2)
    new = pages.title_cards(renamed, TITLES[:3], 3)
    assert [c["name"] for c in new] == ["Renamed", "Title 2", "Title 3"]
    assert old[0]["name"] == "Title 1"  # the older state's card is untouched
    assert all(a is not b for a, b in zip(old, new, strict=True))  # none carried over
    assert pages.cards_held()["Title"] == 3
    assert pages.title_cards(renamed, TITLES[:3], 3)[1] is new[1]


def test_a_bound_of_zero_keeps_no_card_and_pages_still_build(state: Any) -> None:
    none, kept = Pages(0), Pages()
    assert kept.cards == CARD_CACHE > 0
    a = none.title_cards(state, TITLES, N)
    b = none.title_cards(state, TITLES, N)
    assert a == b == kept.title_cards(state, TITLES, N)
    assert all(x is not y for x, y in zip(a, b, strict=True))
    assert none.home(state) == kept.home(state) and none.home(state)["hero"] is not None
    assert none.tag(state, "news") == kept.tag(state, "news")
    assert none.genre(state, "horror", page=1) == kept.genre(state, "horror", page=1)
    assert none.title(state, "t-101") == kept.title(state, "t-101") is not None
    assert none.cards_held() == {"Story": 0, "Title": 0}


@pytest.mark.parametrize("bad", [-1, 2.5, "8", None, True])
def test_a_bound_that_is_not_a_whole_number_from_zero_is_refused(bad: Any) -> None:
    with pytest.raises(InputError, match="cards must be a whole number from 0"):
        Pages(bad)


def test_the_site_config_sets_the_bounds() -> None:
    site = Site(SiteConfig(dataset=None, secret_key="k", search=False, card_cache=3,
                           page_cache=5, page_cache_bytes=1000))  # fmt: skip
    assert site.pages.cards == 3
    assert (site.cache.size, site.cache.max_bytes) == (5, 1000)
    default = Site(SiteConfig(dataset=None, secret_key="k", search=False))
    assert default.pages.cards == CARD_CACHE


def test_cards_are_never_those_of_another_state_under_concurrent_pages(
    state: Any, tmp_path: Path
) -> None:
    """Threads building cards from two states at once through one small cache: every card
    is its own state's (a dict of cards only ever holds one TypeState's)."""
    other = make_state(tmp_path, films({100 + i: f"Other {i}" for i in range(1, N + 1)}))
    pages = Pages(4)
    wrong: list[Any] = []

    def run(st: Any, prefix: str) -> None:
        for n in range(300):
            ids = TITLES[n % N :] + TITLES[: n % N]
            for c in pages.title_cards(st, ids, N):
                if not c["name"].startswith(prefix):
                    wrong.append((prefix, c["name"]))

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=run, args=(st, p))
                   for st, p in [(state, "Title"), (other, "Other")] * 2]  # fmt: skip
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(switch)
    assert wrong == []
    assert pages.cards_held()["Title"] <= 4


def test_genre_titles_are_newest_first(state: Any) -> None:
    ids = Pages().genre_titles(state, "Horror")
    years = [state["Title"].get(i).year for i in ids]
    assert len(ids) == N // 3 and years == sorted(years, reverse=True)


# -- the page cache ---------------------------------------------------------------------------


def body(n: int, fill: bytes = b"x") -> Any:
    from nearstate.web.site.state import Entry

    return Entry(fill * n)


def test_the_page_cache_holds_at_most_its_bytes() -> None:
    cache, st = PageCache(size=100, max_bytes=10_000), object()
    for k in range(50):
        cache.put(st, k, body(1_000))
        assert cache.bytes <= 10_000 and len(cache) <= 10
    assert cache.get(st, 49) is not None and cache.get(st, 0) is None  # started over
    cache.put(st, "big", body(10_001))  # larger than the whole cache: not kept
    assert cache.get(st, "big") is None and cache.get(st, 49) is not None


def test_the_page_cache_holds_at_most_its_count_and_one_state() -> None:
    cache, a, b = PageCache(size=3, max_bytes=10**9), object(), object()
    for k in range(7):
        cache.put(a, k, body(10))
        assert len(cache) <= 3
    hit = cache.get(a, 6)
    assert hit is not None and hit.body == b"x" * 10 and cache.hits == 1
    assert cache.get(b, 6) is None  # another state: never the older state's body
    cache.put(b, 6, body(10, b"y"))
    assert cache.get(a, 6) is None and len(cache) == 1 and cache.bytes == 10
    off = PageCache(size=0)
    off.put(a, 1, body(1))
    assert off.get(a, 1) is None and len(off) == 0
