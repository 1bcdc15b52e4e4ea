"""Rich text: the Markdown subset renders links, emphasis and lists, and nothing a reader
types can produce a tag, an attribute or a link scheme outside the allowlist."""

from __future__ import annotations

import sys
from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nearstate.content import richtext
from nearstate.content.rules import check_story, excerpt, plain_text


class Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.comments: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_comment(self, data):
        self.comments.append(data)

    def handle_decl(self, decl):
        self.comments.append(decl)

    def handle_pi(self, data):
        self.comments.append(data)


def tags_of(html: str) -> list[tuple[str, dict[str, str | None]]]:
    p = Collect()
    p.feed(html)
    p.close()
    assert not p.comments, html
    return p.tags


def assert_allowed(html: str) -> None:
    """Every tag and attribute is on the allowlist, every link's scheme too, and an
    external link carries rel=noopener."""
    for tag, attrs in tags_of(html):
        assert tag in richtext.ALLOWED, (tag, html)
        assert set(attrs) <= richtext.ALLOWED[tag], (tag, attrs, html)
        if tag == "a":
            href = attrs.get("href") or ""
            # what a browser would take for the scheme (tabs/newlines dropped)
            seen = "".join(c for c in href if c not in "\t\r\n").strip()
            scheme = urlsplit(seen).scheme.lower()
            assert scheme in ("", "http", "https", "mailto"), (href, html)
            assert not seen.startswith("//")
            if scheme:
                assert attrs.get("rel") == "noopener", html
        if tag == "ol":
            assert (attrs.get("start") or "1").isdigit()


MARKS = st.sampled_from(
    [
        "*", "**", "_", "[", "]", "(", ")", "<", ">", "\"", "'", "&", "#", ";", ":", "\n",
        "\n\n", "- ", "1. ", "\\", "`", "!", "=", "/", "javascript:", "JaVa\tScRiPt:",
        "data:text/html,", "vbscript:", "&#58;", "&colon;", "&#x6A;", "%3A", "http://x.org",
        "https://", "mailto:", "//", "<script>", "</script>", "<img src=x onerror=alert(1)>",
        "onerror=", "onload=", "style=", "<a href=", "<svg/onload=alert(1)>", "<!--", "-->",
        "<iframe", "\x00", "\x01", " ", "x", "word",
    ]
)  # fmt: skip


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(MARKS, st.text(max_size=8)), max_size=40).map("".join))
def test_no_input_yields_anything_outside_the_allowlist(source: str) -> None:
    assert_allowed(richtext.to_html(source))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_yields_only_allowed_html(source: str) -> None:
    assert_allowed(richtext.to_html(source))


def test_links_emphasis_and_lists() -> None:
    html = richtext.to_html(
        "Read **this** and *that* on [the site](https://example.org/a?b=1) or "
        "[here](/stories/x) or [mail](mailto:a@example.org).\n\n- one\n- two\n\n3. three"
    )
    assert "<strong>this</strong>" in html and "<em>that</em>" in html
    assert '<a href="https://example.org/a?b=1" rel="noopener">the site</a>' in html
    assert '<a href="/stories/x">here</a>' in html  # a link on the site: no rel
    assert '<a href="mailto:a@example.org" rel="noopener">mail</a>' in html
    assert "<ul>\n<li>one</li>\n<li>two</li>\n</ul>" in html
    assert '<ol start="3">' in html
    assert_allowed(html)


@pytest.mark.parametrize(
    "source",
    [
        "[x](javascript:alert(1))",
        "[x](JAVASCRIPT:alert(1))",
        "[x](javascript&#58;alert(1))",
        "[x](javascript&colon;alert(1))",
        "[x](&#x6A;avascript:alert(1))",
        "[x](&#106;&#97;&#118;&#97;&#115;&#99;&#114;&#105;&#112;&#116;&#58;alert(1))",
        "[x](<java\tscript:alert(1)>)",
        "[x](<java\nscript:alert(1)>)",
        "[x]( javascript:alert(1))",
        "[x](\x01javascript:alert(1))",
        "[x](vbscript:msgbox(1))",
        "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
        "[x](//evil.example/)",
        "[x][r]\n\n[r]: javascript:alert(1)",
        "<a href='javascript:alert(1)'>x</a>",
    ],
)
def test_dangerous_links_are_not_made(source: str) -> None:
    html = richtext.to_html(source)
    assert "<a" not in html, html
    assert_allowed(html)


@pytest.mark.parametrize(
    "source",
    [
        "<script>alert(1)</script>",
        "<img src=x onerror=alert(1)>",
        '<p onclick="alert(1)">x</p>',
        "<svg/onload=alert(1)>",
        '[x](https://a.org "t" onmouseover="alert(1)")',
        '[x](https://a.org" onmouseover="alert(1))',
        "**<b onmouseover=alert(1)>x</b>**",
    ],
)
def test_html_is_shown_as_text(source: str) -> None:
    html = richtext.to_html(source)
    assert "<script" not in html and "<img" not in html and "<svg" not in html
    for _tag, attrs in tags_of(html):
        assert not any(a.startswith("on") for a in attrs), html
    assert_allowed(html)


def test_plain_words_and_the_story_rules() -> None:
    src = "Some **bold** words and a [link](https://a.org).\n\n- one\n- two"
    assert richtext.to_plain(src) == "Some bold words and a link.\none\ntwo"
    story, problems = check_story(
        {
            "title": "T",
            "body": [
                {"kind": "paragraph", "text": src, "format": "markdown"},
                {"kind": "paragraph", "text": "Plain *stays* as typed"},
            ],
        }
    )
    assert not problems
    assert story["body"][0]["format"] == "markdown"
    assert "format" not in story["body"][1]  # a plain paragraph is stored as before
    assert plain_text(story["body"]) == (
        "Some bold words and a link.\none\ntwo\nPlain *stays* as typed"
    )
    assert excerpt("", story["body"]) == "Some bold words and a link. one two"


def test_an_unknown_format_is_refused() -> None:
    _, problems = check_story(
        {"title": "T", "body": [{"kind": "paragraph", "text": "x", "format": "html"}]}
    )
    assert [p.where for p in problems] == ["body[1].format"]
    assert "plain" in problems[0].message and "markdown" in problems[0].message


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.one_of(MARKS, st.text(max_size=6)), max_size=30)
    .map("".join)
    .filter(lambda s: "\x00" not in s)
)
def test_escaped_text_shows_exactly_its_words(text: str) -> None:
    source = richtext.escape(text)
    html = richtext.to_html(source)
    assert {tag for tag, _ in tags_of(html)} <= {"p", "br"}, (text, source, html)
    words = [w for w in richtext.to_plain(source).split()]
    assert words == text.replace("\r", "\n").split() or not text.strip(), (text, source)


def test_the_results_kept_are_bounded_by_count_and_by_bytes() -> None:
    m = richtext.Memo(size=50, max_bytes=20_000, max_entry=5_000)
    for i in range(400):  # sources of 10 to 1,600 characters, results twice as long
        src = f"{i} " + "x" * (i * 4 % 1600)
        assert m.put(src, src * 2) == src * 2
        assert len(m) <= 50 and m.bytes <= 20_000
        assert m.get(src) == src * 2  # just put: kept (it fits)
    assert m.bytes == sum(sys.getsizeof(s) + sys.getsizeof(r) for s, r in m._held.items())
    big = "y" * 2_000  # with its result over max_entry: given back, not kept
    held = len(m)
    assert m.put(big, big * 2) == big * 2 and m.get(big) is None and len(m) == held
    none = richtext.Memo(size=0)
    assert none.put("a", "b") == "b" and none.get("a") is None and len(none) == 0


def test_a_long_paragraph_is_rendered_each_time_not_kept() -> None:
    short = "A **short** paragraph [with a link](https://a.org)."
    long = "A *long* one, " + "word " * (richtext.MEMO_ENTRY // 5)
    for fn, memo in ((richtext.to_html, richtext._html), (richtext.to_plain, richtext._plain)):
        first = fn(short)
        assert memo.get(short) == first and fn(short) is first  # kept, and reused
        out = fn(long)
        assert memo.get(long) is None  # not kept: it would take a share of the bound
        assert fn(long) == out and out.startswith(("<p>A <em>long</em> one, word", "A long"))
