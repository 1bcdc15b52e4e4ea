"""The editorial rules, one by one: templates (slug, excerpt, reading time, video embeds),
the shape check a story passes at the door, the reference and publish rules ingestion
applies, schedules and layouts. Pure functions: no database."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nearstate.content import rules
from nearstate.content.cms import MAX_ROW_ITEMS, MAX_ROWS, check_layout
from nearstate.content.rules import (
    Known,
    Problem,
    check_publishable,
    check_references,
    check_schedule,
    check_story,
    excerpt,
    normalise_slug,
    reading_minutes,
    references,
    slugify,
    video_embed,
)

SLUG = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
ASSET = "a-0123456789abcdef"
ASSET2 = "a-fedcba9876543210"


def wheres(problems: list[Problem]) -> list[str]:
    return [p.where for p in problems]


def messages(problems: list[Problem], where: str) -> str:
    return " | ".join(p.message for p in problems if p.where == where)


# -- slugs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("Hello World", "hello-world"),
        ("Crème brûlée à la Zoë", "creme-brulee-a-la-zoe"),
        ("  --Stranger Things: Season 4!!--  ", "stranger-things-season-4"),
        ("It's 2024 — what's next?", "it-s-2024-what-s-next"),
        ("ÆSIR ßtraße Øre", "aesir-sstrasse-ore"),  # letters with a Latin spelling
        ("!!!", ""),
        ("", ""),
        ("日本語のタイトル", ""),
        ("ﬁnal ①", "final-1"),  # NFKD folds ligatures and circled digits
    ],
)
def test_slugify(text: str, want: str) -> None:
    assert slugify(text) == want


def test_slugify_limit_never_ends_with_a_dash() -> None:
    assert slugify("abc def ghi", limit=4) == "abc"
    assert slugify("abc def ghi", limit=6) == "abc"  # cut at a word boundary
    assert slugify("abc def ghi", limit=7) == "abc-def"
    assert slugify("abcdefghi", limit=4) == "abcd"  # one long word: cut inside it
    long = slugify("word " * 100)
    assert len(long) <= rules.MAX_SLUG and SLUG.match(long)


def test_normalise_slug() -> None:
    assert normalise_slug("My Slug", "Title") == "my-slug"
    assert normalise_slug("", "The Crown: Season 6") == "the-crown-season-6"
    assert normalise_slug(None, "Élan vital") == "elan-vital"
    assert normalise_slug("???", "Fallback Title") == "fallback-title"
    assert normalise_slug("", "!!!") == "story"  # nothing usable anywhere
    assert len(normalise_slug("", "x" * 500)) == rules.MAX_SLUG


@settings(max_examples=300, deadline=None)
@given(st.text(), st.integers(min_value=1, max_value=120))
def test_slugify_output_is_a_slug_or_empty(text: str, limit: int) -> None:
    out = slugify(text, limit=limit)
    assert out == "" or SLUG.match(out), out
    assert len(out) <= limit
    assert slugify(out, limit=limit) == out  # a slug is its own slug


# -- excerpt -------------------------------------------------------------------------------


def test_excerpt_dek_wins() -> None:
    body = [{"kind": "paragraph", "text": "The first paragraph."}]
    assert excerpt("  The   dek\n line ", body) == "The dek line"


def test_excerpt_falls_back_to_the_first_non_empty_paragraph() -> None:
    body = [
        {"kind": "heading", "text": "Not me", "level": 2},
        {"kind": "quote", "text": "Nor me"},
        {"kind": "paragraph", "text": "   "},
        {"kind": "paragraph", "text": "First\tparagraph\n\nhere."},
        {"kind": "paragraph", "text": "Second."},
    ]
    assert excerpt("", body) == "First paragraph here."
    assert excerpt("   ", body) == "First paragraph here."
    assert excerpt("", [{"kind": "image", "asset": ASSET, "text": "caption"}]) == ""
    assert excerpt("", []) == ""


def test_excerpt_is_cut_at_a_word_with_an_ellipsis() -> None:
    text = " ".join(f"word{i}," for i in range(100))
    out = excerpt(text, [], limit=60)
    assert out.endswith("…")
    assert len(out) <= 60
    kept = out[:-1]
    assert not kept.endswith((",", " ")), out  # trailing punctuation goes before the "…"
    assert text.startswith(kept)
    # cut between words, never inside one
    assert text[len(kept)] in ", "
    # a text within the limit is kept whole
    assert excerpt("x" * 60, [], limit=60) == "x" * 60
    # one long word: cut inside it, as nothing better exists
    long = excerpt("y" * 100, [], limit=10)
    assert long == "y" * 9 + "…"


@settings(max_examples=200, deadline=None)
@given(st.text(), st.integers(min_value=2, max_value=300))
def test_excerpt_properties(text: str, limit: int) -> None:
    out = excerpt(text, [], limit=limit)
    assert len(out) <= limit
    assert "  " not in out and "\n" not in out
    collapsed = " ".join(text.split())
    if len(collapsed) <= limit:
        assert out == collapsed
    else:
        assert out.endswith("…")


# -- reading time --------------------------------------------------------------------------


def test_reading_minutes() -> None:
    para = lambda n: {"kind": "paragraph", "text": "w " * n}  # noqa: E731
    assert reading_minutes([]) == 1
    assert reading_minutes([para(1)]) == 1
    assert reading_minutes([para(230)]) == 1
    assert reading_minutes([para(231)]) == 2
    assert (
        reading_minutes(
            [
                para(200),
                {"kind": "heading", "text": "a b", "level": 2},
                {"kind": "quote", "text": "c " * 29},
            ]
        )
        == 2
    )
    assert reading_minutes([para(460)]) == 2
    # captions, title cards and videos are not read as text
    others = [
        {"kind": "image", "asset": ASSET, "text": "w " * 1000},
        {"kind": "title", "title": 1, "text": "w " * 1000},
        {"kind": "video", "url": "https://youtu.be/dQw4w9WgXcQ", "text": "w " * 1000},
    ]
    assert reading_minutes([para(230), *others]) == 1


# -- video embeds --------------------------------------------------------------------------

YT = "https://www.youtube-nocookie.com/embed/dQw4w9WgXcQ"


@pytest.mark.parametrize(
    ("url", "want"),
    [
        ("https://www.youtube.com/watch?v=dQw4w9WgXcQ", YT),
        ("https://youtube.com/watch?feature=share&v=dQw4w9WgXcQ&t=3", YT),
        ("http://m.youtube.com/watch?v=dQw4w9WgXcQ", YT),
        ("  https://www.youtube.com/watch?v=dQw4w9WgXcQ  ", YT),
        ("https://www.youtube.com/shorts/dQw4w9WgXcQ", YT),
        ("https://www.youtube.com/embed/dQw4w9WgXcQ?autoplay=1", YT),
        ("https://www.youtube-nocookie.com/embed/dQw4w9WgXcQ", YT),
        ("https://youtu.be/dQw4w9WgXcQ", YT),
        ("https://youtu.be/dQw4w9WgXcQ?t=42", YT),
        ("https://vimeo.com/76979871", "https://player.vimeo.com/video/76979871"),
        (
            "https://vimeo.com/channels/staffpicks/76979871/",
            "https://player.vimeo.com/video/76979871",
        ),
        ("https://player.vimeo.com/video/76979871", "https://player.vimeo.com/video/76979871"),
    ],
)
def test_video_embed_accepts(url: str, want: str) -> None:
    assert video_embed(url) == want


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "JavaScript://youtube.com/%0aalert(1)",
        "data:text/html,<script>alert(1)</script>",
        "ftp://youtube.com/watch?v=dQw4w9WgXcQ",
        "https://evil.example/watch?v=dQw4w9WgXcQ",
        "https://youtube.com.evil.example/watch?v=dQw4w9WgXcQ",
        "https://notyoutube.com/watch?v=dQw4w9WgXcQ",
        'https://www.youtube.com/watch?v=dQw4w9"><script>',
        "https://www.youtube.com/watch?v=abc",  # too short for an id
        "https://www.youtube.com/watch?v=" + "a" * 40,
        "https://www.youtube.com/watch",
        "https://www.youtube.com/embed/../../evil",
        "https://youtu.be/dQw4w9WgXcQ/../x",
        "https://youtu.be/",
        "https://vimeo.com/",
        "https://vimeo.com/staffpicks",
        "https://vimeo.com/123abc",
        "https://[::1",
        "not a url",
        "",
    ],
)
def test_video_embed_refuses(url: str) -> None:
    assert video_embed(url) is None


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_video_embed_only_yields_the_two_players(url: str) -> None:
    out = video_embed(url)
    assert out is None or re.fullmatch(
        r"https://www\.youtube-nocookie\.com/embed/[A-Za-z0-9_-]{6,20}"
        r"|https://player\.vimeo\.com/video/[0-9]+",
        out,
    )


# -- the shape of a story ------------------------------------------------------------------


def good_story(**over: object) -> dict:
    story = {
        "title": "  A Title  ",
        "slug": "",
        "dek": " The dek ",
        "hero": ASSET,
        "tags": ["Behind the Scenes"],
        "related": [593],
        "authors": [1],
        "body": [
            {"kind": "paragraph", "text": " Words. "},
            {"kind": "heading", "text": "A heading", "level": 3},
            {"kind": "quote", "text": "Said.", "cite": " Someone "},
            {"kind": "image", "asset": ASSET2, "text": "A caption"},
            {"kind": "title", "title": "593"},
            {"kind": "video", "url": "https://youtu.be/dQw4w9WgXcQ"},
        ],
    }
    story.update(over)
    return story


def test_check_story_normalises_a_good_story() -> None:
    story, problems = check_story(good_story())
    assert problems == []
    assert story == {
        "title": "A Title",
        "slug": "a-title",
        "dek": "The dek",
        "hero": ASSET,
        "tags": ["behind-the-scenes"],
        "related": [593],
        "authors": [1],
        "body": [
            {"kind": "paragraph", "text": "Words."},
            {"kind": "heading", "text": "A heading", "level": 3},
            {"kind": "quote", "text": "Said.", "cite": "Someone"},
            {"kind": "image", "asset": ASSET2, "text": "A caption"},
            {"kind": "title", "title": 593},
            {"kind": "video", "url": "https://youtu.be/dQw4w9WgXcQ"},
        ],
    }
    # a normalised story is its own normal form (restore re-checks an old revision)
    assert check_story(story) == (story, [])


def test_check_story_minimal() -> None:
    story, problems = check_story({"title": "Only a title"})
    assert problems == []
    assert story["body"] == [] and story["hero"] is None and story["tags"] == []
    assert story["slug"] == "only-a-title"


@pytest.mark.parametrize("data", [None, [], "a story", 3, ["title"]])
def test_check_story_not_an_object(data: object) -> None:
    story, problems = check_story(data)
    assert story == {} and wheres(problems) == ["story"]


def test_check_story_missing_title() -> None:
    for data in ({}, {"title": ""}, {"title": "   "}, {"title": None}):
        _, problems = check_story(data)
        assert wheres(problems) == ["title"], data
        assert "required" in problems[0].message


def test_check_story_fields_must_be_text() -> None:
    _, problems = check_story({"title": 5, "dek": ["x"], "slug": {"a": 1}})
    assert sorted(wheres(problems)) == ["dek", "slug", "title"]
    assert "must be text, not int" in messages(problems, "title")
    assert "must be text, not list" in messages(problems, "dek")
    assert "must be text, not dict" in messages(problems, "slug")


def test_check_story_limits_of_text_fields() -> None:
    _, problems = check_story({"title": "t" * 201, "dek": "d" * 401})
    assert sorted(wheres(problems)) == ["dek", "title"]
    assert "201 characters; at most 200" in messages(problems, "title")
    assert "401 characters; at most 400" in messages(problems, "dek")
    assert check_story({"title": "t" * 200, "dek": "d" * 400})[1] == []


def test_check_story_unknown_fields() -> None:
    _, problems = check_story({"title": "T", "subtitle": "x", "Body": []})
    assert sorted(wheres(problems)) == ["Body", "subtitle"]
    assert "is not a story field" in messages(problems, "subtitle")


def test_check_story_blocks() -> None:
    body = [
        {"kind": "gallery", "text": "x"},
        "just text",
        {"kind": "heading", "text": "H", "level": 5},
        {"kind": "heading", "text": "H", "level": "two"},
        {"kind": "paragraph", "text": "   "},
        {"kind": "quote"},
        {"kind": "image", "asset": "../../etc/passwd"},
        {"kind": "image"},
        {"kind": "title", "title": "abc"},
        {"kind": "title"},
        {"kind": "title", "title": True},
        {"kind": "title", "title": 1.5},
        {"kind": "video", "url": "https://evil.example/v.mp4"},
        {"kind": "paragraph", "text": 7},
    ]
    story, problems = check_story({"title": "T", "body": body})
    assert wheres(problems) == [
        "body[1]",
        "body[2]",
        "body[3].level",
        "body[4].level",
        "body[5].text",
        "body[6].text",
        "body[7].asset",
        "body[8].asset",
        "body[9].title",
        "body[10].title",
        "body[11].title",
        "body[12].title",
        "body[13].url",
        "body[14].text",
        "body[14].text",  # not text, and then a paragraph without text
    ]
    assert "'gallery' is not one of paragraph, heading" in messages(problems, "body[1]")
    assert "2, 3 or 4" in messages(problems, "body[3].level")
    assert "a paragraph needs text" in messages(problems, "body[5].text")
    assert "a quote needs text" in messages(problems, "body[6].text")
    assert "is not an asset id" in messages(problems, "body[7].asset")
    assert "'abc' is not a title id" in messages(problems, "body[9].title")
    assert "not a YouTube or Vimeo link" in messages(problems, "body[13].url")
    assert "must be text" in messages(problems, "body[14].text")
    # an unknown or malformed block is dropped from the normalised body; the rest stay
    assert len(story["body"]) == len(body) - 2


def test_check_story_heading_level_default_and_text_limits() -> None:
    story, problems = check_story(
        {
            "title": "T",
            "body": [
                {"kind": "heading", "text": "H"},
                {"kind": "heading", "text": "H", "level": "4"},
            ],
        }
    )
    assert problems == [] and [b["level"] for b in story["body"]] == [2, 4]
    _, problems = check_story(
        {"title": "T", "body": [{"kind": "paragraph", "text": "x" * (rules.MAX_BLOCK_TEXT + 1)}]}
    )
    assert wheres(problems) == ["body[1].text"]
    assert f"at most {rules.MAX_BLOCK_TEXT}" in problems[0].message


def test_check_story_bad_hero() -> None:
    for hero in ("a-XYZ", "a-0123456789abcde", "ph-", 5, ["a-0123456789abcdef"]):
        story, problems = check_story({"title": "T", "hero": hero})
        assert wheres(problems) == ["hero"], hero
        assert story["hero"] is None
    assert check_story({"title": "T", "hero": "ph-593"})[1] == []
    assert check_story({"title": "T", "hero": ""})[0]["hero"] is None


def test_check_story_too_many_blocks() -> None:
    body = [{"kind": "paragraph", "text": "p"}] * (rules.MAX_BLOCKS + 5)
    story, problems = check_story({"title": "T", "body": body})
    assert wheres(problems) == ["body"]
    assert f"has {rules.MAX_BLOCKS + 5} blocks; at most {rules.MAX_BLOCKS}" in problems[0].message
    assert len(story["body"]) == rules.MAX_BLOCKS


def test_check_story_oversize_body() -> None:
    body = [{"kind": "paragraph", "text": "x" * 19_000}] * 14  # each block within its limit
    _, problems = check_story({"title": "T", "body": body})
    assert wheres(problems) == ["body"]
    assert "KB; at most 256 KB" in problems[0].message
    assert check_story({"title": "T", "body": body[:13]})[1] == []


def test_check_story_body_must_be_a_list() -> None:
    for body in ("text", {"kind": "paragraph"}, 3):
        story, problems = check_story({"title": "T", "body": body})
        assert wheres(problems) == ["body"] and story["body"] == []


def test_check_story_tags() -> None:
    story, problems = check_story(
        {
            "title": "T",
            "tags": [
                "Behind the Scenes",
                "behind-the-scenes",
                " BEHIND  the scenes ",
                "Crème",
                "",
                "!!!",
                42,
            ],
        }
    )
    assert problems == []
    assert story["tags"] == ["behind-the-scenes", "creme", "42"]
    story, problems = check_story({"title": "T", "tags": "Drama, Comedy ,drama"})
    assert problems == [] and story["tags"] == ["drama", "comedy"]
    story, _ = check_story({"title": "T", "tags": ["x" * 100]})
    assert story["tags"] == ["x" * rules.MAX_TAG]
    _, problems = check_story({"title": "T", "tags": {"a": 1}})
    assert wheres(problems) == ["tags"]
    _, problems = check_story({"title": "T", "tags": [f"tag {i}" for i in range(21)]})
    assert wheres(problems) == ["tags"] and "has 21 tags; at most 20" in problems[0].message
    assert check_story({"title": "T", "tags": [f"tag {i}" for i in range(20)]})[1] == []


def test_check_story_related_and_authors() -> None:
    story, problems = check_story(
        {"title": "T", "related": [3, "3", "07", 5, 3], "authors": ["12", 12, 4]}
    )
    assert problems == []
    assert story["related"] == [3, 7, 5] and story["authors"] == [12, 4]
    assert all(type(x) is int for x in story["related"] + story["authors"])
    _, problems = check_story(
        {"title": "T", "related": [1, "x", 2.5, True, None, 0, -3, 2**63], "authors": "1,2"}
    )
    assert wheres(problems) == [
        "related[1]",
        "related[2]",
        "related[3]",
        "related[4]",
        "related[5]",
        "related[6]",
        "related[7]",
        "authors",
    ]
    assert "is not a number" in messages(problems, "related[1]")
    assert "is not an id" in messages(problems, "related[2]")
    assert "must be a list of ids" in messages(problems, "authors")
    _, problems = check_story({"title": "T", "related": list(range(1, 32))})
    assert wheres(problems) == ["related"] and "has 31 entries; at most 30" in problems[0].message
    _, problems = check_story({"title": "T", "authors": list(range(1, 12))})
    assert wheres(problems) == ["authors"] and "at most 10" in problems[0].message
    # duplicates do not count against the limit
    assert check_story({"title": "T", "authors": [1] * 50})[1] == []


def test_check_story_ids_beyond_64_bits_are_refused() -> None:
    """An id no database column can hold is refused at the door, not when a worker or a
    publish tries to look it up."""
    big = 10**20
    _, problems = check_story({"title": "T", "related": [big], "authors": [str(big)]})
    assert wheres(problems) == ["related[0]", "authors[0]"]
    _, problems = check_story({"title": "T", "body": [{"kind": "title", "title": big}]})
    assert wheres(problems) == ["body[1].title"]
    assert check_story({"title": "T", "related": [2**63 - 1]})[1] == []


def test_check_story_infinite_numbers_are_problems_not_crashes() -> None:
    body = [
        {"kind": "heading", "text": "H", "level": float("inf")},
        {"kind": "title", "title": float("inf")},
        {"kind": "title", "title": float("nan")},
    ]
    _, problems = check_story({"title": "T", "body": body})
    assert wheres(problems) == ["body[1].level", "body[2].title", "body[3].title"]


json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)
block_like = st.fixed_dictionaries(
    {"kind": st.sampled_from([*rules.BLOCK_KINDS, "gallery"]) | json_like},
    optional={
        "text": st.text(max_size=40) | json_like,
        "level": st.integers(-1, 6) | json_like,
        "asset": st.sampled_from([ASSET, "a-bad"]) | json_like,
        "title": st.integers(-5, 10**20) | st.text(max_size=25) | json_like,
        "url": st.sampled_from(["https://youtu.be/dQw4w9WgXcQ", "javascript:x"]) | json_like,
        "cite": json_like,
    },
)
story_like = st.fixed_dictionaries(
    {},
    optional={
        "title": st.text(max_size=250) | json_like,
        "slug": st.text(max_size=50) | json_like,
        "dek": st.text(max_size=50) | json_like,
        "hero": st.sampled_from([ASSET, "ph-1", "x"]) | json_like,
        "tags": st.lists(st.text(max_size=20) | json_like, max_size=25) | json_like,
        "related": st.lists(st.integers() | st.text(max_size=8) | json_like, max_size=8)
        | json_like,
        "authors": st.lists(st.integers() | st.text(max_size=8), max_size=12) | json_like,
        "body": st.lists(block_like | json_like, max_size=8) | json_like,
        "extra": json_like,
    },
)


@settings(max_examples=300, deadline=None)
@given(json_like | story_like)
def test_check_story_never_raises(data: object) -> None:
    story, problems = check_story(data)
    assert all(isinstance(p, Problem) and isinstance(p.where, str) and p.message for p in problems)
    if problems:
        return
    # a story without problems is a clean, storable normal form
    json.dumps(story)  # JSON-serialisable (it is stored as a revision's data)
    assert SLUG.match(story["slug"])
    assert story["title"] and story["title"] == story["title"].strip()
    assert all(SLUG.match(t) for t in story["tags"])
    assert len(set(story["tags"])) == len(story["tags"])
    for ids in (story["related"], story["authors"]):
        assert all(type(i) is int and 0 < i < 2**63 for i in ids)
        assert len(set(ids)) == len(ids)
    for b in story["body"]:
        assert b["kind"] in rules.BLOCK_KINDS
        if b["kind"] == "title":
            assert type(b["title"]) is int and 0 < b["title"] < 2**63
        if b["kind"] == "video":
            assert video_embed(b["url"]) is not None
    assert check_story(story) == (story, [])


# -- references ----------------------------------------------------------------------------


def known(
    assets: set[str] = frozenset(),
    titles: set[int] = frozenset(),
    people: set[int] = frozenset(),
    slugs: set[str] = frozenset(),
) -> Known:
    return Known(
        assets=lambda ids: ids & assets,
        titles=lambda ids: ids & titles,
        people=lambda ids: ids & people,
        slug_taken=lambda s: s in slugs,
    )


def test_references() -> None:
    story, _ = check_story(good_story())
    assert references(story) == ({ASSET, ASSET2}, {593}, {1})


def test_check_references_all_present() -> None:
    story, _ = check_story(good_story())
    assert check_references(story, known({ASSET, ASSET2}, {593}, {1})) == []


def test_check_references_names_every_missing_one_with_its_place() -> None:
    story, _ = check_story(
        good_story(
            related=[593, 7],
            authors=[1, 2],
            body=[
                {"kind": "paragraph", "text": "p"},
                {"kind": "image", "asset": ASSET2},
                {"kind": "title", "title": 8},
                {"kind": "title", "title": 593},
            ],
        )
    )
    problems = check_references(story, known(titles={593}, people={1}))
    assert [str(p) for p in problems] == [
        f"hero: asset {ASSET} does not exist",
        f"body[2].asset: asset {ASSET2} does not exist",
        "body[3].title: title 8 does not exist",
        "related: title 7 does not exist",
        "authors: person 2 does not exist",
    ]


def test_check_references_slug() -> None:
    story, _ = check_story(good_story())
    k = known({ASSET, ASSET2}, {593}, {1}, slugs={"a-title"})
    assert [str(p) for p in check_references(story, k)] == [
        "slug: 'a-title' is already used by another story"
    ]
    # the CMS's slug_taken says False for the story's own slug; then it is fine
    assert check_references(story, known({ASSET, ASSET2}, {593}, {1}, slugs={"other"})) == []


# -- publish rules -------------------------------------------------------------------------


def test_check_publishable() -> None:
    story, _ = check_story(good_story())
    assert check_publishable(story) == []
    bare, _ = check_story({"title": "T", "body": [{"kind": "quote", "text": "q"}]})
    problems = check_publishable(bare)
    assert wheres(problems) == ["dek", "hero", "authors", "body"]
    assert "needs a dek" in messages(problems, "dek")
    assert "needs a hero image" in messages(problems, "hero")
    assert "at least one author" in messages(problems, "authors")
    assert "at least one paragraph" in messages(problems, "body")
    for field, value in (("dek", ""), ("hero", None), ("authors", []), ("body", [])):
        s = dict(story, **{field: value})
        assert wheres(check_publishable(s)) == [field]


# -- schedules -----------------------------------------------------------------------------


def test_check_schedule() -> None:
    now = 1000.0
    assert check_schedule(1001, None, now) == []
    assert check_schedule(None, 1001, now) == []
    assert check_schedule(1001, 1002, now) == []
    assert check_schedule(None, None, now) == []
    assert wheres(check_schedule(1000, None, now)) == ["publish_at"]
    assert wheres(check_schedule(999, None, now)) == ["publish_at"]
    assert wheres(check_schedule(None, 1000, now)) == ["unpublish_at"]
    assert wheres(check_schedule(1001, 1001, now)) == ["unpublish_at"]
    assert "after the publish time" in check_schedule(1005, 1002, now)[0].message
    assert wheres(check_schedule(500, 400, now)) == ["publish_at", "unpublish_at"]
    assert "must be in the future" in check_schedule(500, 400, now)[1].message


# -- layouts -------------------------------------------------------------------------------


def test_check_layout_normalises() -> None:
    rows = [
        {"heading": " Picks ", "kind": "stories", "ids": "3, 1 3"},
        {"heading": "Films", "kind": "titles", "ids": [5, "6", 5]},
        {"heading": "Tagged", "kind": "tag", "tag": "Behind the Scenes", "limit": "5"},
        {"heading": "Dramas", "kind": "genre", "genre": " Drama "},
    ]
    clean, problems = check_layout("home", "Home", rows)
    assert problems == []
    assert clean == [
        {"heading": "Picks", "kind": "stories", "ids": [3, 1]},
        {"heading": "Films", "kind": "titles", "ids": [5, 6]},
        {"heading": "Tagged", "kind": "tag", "tag": "behind-the-scenes", "limit": 5},
        {"heading": "Dramas", "kind": "genre", "genre": "Drama", "limit": 12},
    ]


def test_check_layout_problems() -> None:
    rows = [
        {"kind": "stories", "ids": [1]},
        {"heading": "H", "kind": "carousel"},
        {"heading": "H", "kind": "stories"},
        {"heading": "H", "kind": "titles", "ids": ["x"]},
        {"heading": "H", "kind": "titles", "ids": list(range(1, MAX_ROW_ITEMS + 2))},
        {"heading": "H", "kind": "tag", "tag": "!!!"},
        {"heading": "H", "kind": "genre", "genre": "Drama", "limit": -1},
        {"heading": "H", "kind": "genre", "genre": "Drama", "limit": MAX_ROW_ITEMS + 1},
        {"heading": "H", "kind": "genre", "genre": "Drama", "limit": "many"},
        "a row",
        {"heading": "H", "kind": "stories", "ids": [float("inf")]},
        {"heading": "H", "kind": "tag", "tag": "x", "limit": float("inf")},
        {"heading": "H", "kind": "stories", "ids": [10**20]},
    ]
    _, problems = check_layout("Home Page", "", rows)
    assert wheres(problems) == [
        "id",
        "name",
        "rows[1].heading",
        "rows[2].kind",
        "rows[3].ids",
        "rows[4].ids",
        "rows[4].ids",
        "rows[5].ids",
        "rows[6].tag",
        "rows[7].limit",
        "rows[8].limit",
        "rows[9].limit",
        "rows[10]",
        "rows[11].ids",
        "rows[11].ids",
        "rows[12].limit",
        "rows[13].ids",
        "rows[13].ids",
    ]
    _, problems = check_layout("home", "Home", "not rows")
    assert wheres(problems) == ["rows"]
    _, problems = check_layout("home", "x" * 121, [])
    assert wheres(problems) == ["name"]
    many = [{"heading": "H", "kind": "genre", "genre": "g"}] * (MAX_ROWS + 1)
    clean, problems = check_layout("home", "Home", many)
    assert wheres(problems) == ["rows"] and len(clean) == MAX_ROWS
