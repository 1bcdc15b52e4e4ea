"""Rich-text paragraphs on every page that shows them: the editor's form, revision,
comparison and preview pages, and the site's story page, its JSON, search and tag pages.
Links, emphasis and lists render; script, ``javascript:``/``data:`` links (plain,
entity-encoded, mixed case) and event attributes never reach a page; a plain paragraph
renders exactly as before. Also the revision comparison over HTTP."""

from __future__ import annotations

import re
import time
import warnings
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from markupsafe import escape

import nearstate
from nearstate.content.db import WriteStore, open_store
from nearstate.content.media import MediaConfig
from nearstate.content.revdiff import diff_stories, words
from nearstate.web.site import SiteConfig, create_site_app
from test_editor_web import ASSET, csrf_of, login, make_app, seed, story_fields, wait_status

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

RICH = (
    "Intro **bold words** and *slanted* with [a link](https://example.org/x) and "
    "[home](/tags/security).\n"
    "[bad](javascript:alert(1)) [b2](JaVaScRiPt&#58;alert(2)) [b3](&#x6A;avascript:alert(3)) "
    "[b4](data:text/html;base64,PHNjcmlwdD5hbGVydCg0KTwvc2NyaXB0Pg==) "
    '<script>alert(5)</script> <img src=x onerror=alert(6)> <a href="javascript:alert(7)">x</a>'
    "\n\n- first item\n- second item"
)
PLAIN = "Plain *stars* stay <b onmouseover=alert(8)>as typed</b> & [not](https://a.org) a link"
PLAIN_HTML = (
    "<p>Plain *stars* stay &lt;b onmouseover=alert(8)&gt;as typed&lt;/b&gt; &amp; "
    "[not](https://a.org) a link</p>"
)


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[str, dict[str, str]]] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, {k: v or "" for k, v in attrs}))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts.append(data)


def assert_safe(page: str) -> None:
    """Nothing the story's author typed became markup: no event attributes, no link or
    source to javascript:/data:, no script of theirs."""
    p = Tags()
    p.feed(page)
    for tag, attrs in p.found:
        for name, value in attrs.items():
            assert not name.startswith("on"), (tag, name, value)
            if name in ("href", "src", "action", "formaction"):
                v = re.sub(r"[\x00-\x20]", "", value).lower()
                assert not v.startswith(("javascript:", "data:", "vbscript:")), (tag, value)
        assert tag not in ("img", "iframe") or "onerror" not in attrs
    assert not any("alert(" in s for s in p.scripts), p.scripts
    assert "<script>alert" not in page and "<img src=x" not in page


def assert_rich(page: str) -> None:
    assert "<strong>bold words</strong>" in page and "<em>slanted</em>" in page
    assert '<a href="https://example.org/x" rel="noopener">a link</a>' in page
    assert '<a href="/tags/security">home</a>' in page
    assert "<li>first item</li>" in page and "<li>second item</li>" in page


@pytest.fixture
def store(tmp_path: Path) -> Iterator[WriteStore]:
    s = open_store(tmp_path / "cms.db")
    seed(s)
    yield s
    s.close()


def _save(client: TestClient, csrf: str, sid: int | None, base: int | None,
          blocks: list[dict[str, str]], **more: str) -> Any:  # fmt: skip
    data = story_fields("Rich story", blocks, csrf=csrf, base=base, hero=ASSET, authors="1",
                        tags="Security", dek="A dek.", **more)  # fmt: skip
    return client.post("/stories/new" if sid is None else f"/stories/{sid}", data=data,
                       follow_redirects=False)  # fmt: skip


def test_rich_text_is_rendered_and_neutralised_on_every_page(
    store: WriteStore, tmp_path: Path
) -> None:
    ds = nearstate.open(tmp_path / "ds")
    app = make_app(store, tmp_path, dataset=ds)
    with TestClient(app) as ed:
        csrf = login(ed)
        r = _save(ed, csrf, None, None, [
            {"kind": "paragraph", "text": RICH, "format": "markdown"},
            {"kind": "paragraph", "text": PLAIN, "format": "plain"},
        ])  # fmt: skip
        assert r.status_code == 303, r.text
        sid = int(re.search(r"/stories/(\d+)", r.headers["location"]).group(1))  # type: ignore[union-attr]
        r = _save(ed, csrf, sid, 1, [
            {"kind": "paragraph", "text": RICH, "format": "markdown"},
            {"kind": "paragraph", "text": PLAIN, "format": "plain"},
        ], action="publish")  # fmt: skip
        assert r.status_code == 303, r.text  # unchanged: revision 1 is published
        assert wait_status(ed, sid, 1)["status"] == "ok"

        # the editor: the form shows the source, escaped, with its format chosen
        form = ed.get(f"/stories/{sid}").text
        assert_safe(form)
        assert str(escape(RICH)) in form
        assert re.search(r'name="block-0-format">\s*<option value="markdown" selected', form)
        assert re.search(r'name="block-1-format">\s*<option value="markdown">rich text</option>\s*'
                         r'<option value="plain" selected', form)  # fmt: skip
        # revision, comparison and preview pages render it
        for path in (f"/stories/{sid}/revisions/1", f"/stories/{sid}/preview?revision=1"):
            page = ed.get(path)
            assert page.status_code == 200, (path, page.text)
            assert_safe(page.text)
            assert_rich(page.text)
            assert PLAIN_HTML in page.text or str(escape(PLAIN)) in page.text
        assert PLAIN_HTML in ed.get(f"/stories/{sid}/preview?revision=1").text
        cmp_page = ed.get(f"/stories/{sid}/revisions/compare?a=1&b=1")
        assert cmp_page.status_code == 200
        assert_safe(cmp_page.text)
        assert_safe(ed.get(f"/stories/{sid}/revisions").text)

    site = create_site_app(SiteConfig(dataset=ds, secret_key="s", store=store,
                                      media=MediaConfig(root=tmp_path / "media")))  # fmt: skip
    with TestClient(site) as c:
        deadline = time.monotonic() + 10
        while c.get("/stories/rich-story").status_code != 200:
            assert time.monotonic() < deadline, "the site never showed the story"
            time.sleep(0.05)
        page = c.get("/stories/rich-story").text
        assert_safe(page)
        assert_rich(page)
        assert PLAIN_HTML in page  # a plain paragraph: exactly as before rich text
        body = c.get("/api/stories/rich-story").json()["body"]
        assert body[0]["format"] == "markdown" and body[0]["text"] == RICH
        assert_rich(body[0]["html"])
        assert_safe(body[0]["html"])
        assert body[1] == {"kind": "paragraph", "text": PLAIN}  # no format, no html
        while not c.get("/api/search", params={"q": "x"}).json()["ready"]:
            assert time.monotonic() < deadline + 10
            time.sleep(0.05)
        hits = c.get("/api/search", params={"q": "slanted"}).json()
        assert any(h["url"] == "/stories/rich-story" for h in hits["hits"]), hits
        found = c.get("/search", params={"q": "slanted"}).text
        assert_safe(found)
        tag = c.get("/tags/security").text
        assert_safe(tag)


def test_words_diff_keeps_each_side_whole() -> None:
    a = "The quick brown fox jumps."
    b = "The quick red fox leaps, quietly."
    left, right = words(a, b)
    assert "".join(p.text for p in left) == a and "".join(p.text for p in right) == b
    assert [p.text for p in left if p.op == "removed"] == ["brown", "jumps"]
    assert [p.text for p in right if p.op == "added"] == ["red", "leaps, quietly"]
    assert {p.op for p in left} <= {"same", "removed"}
    assert {p.op for p in right} <= {"same", "added"}


def test_story_diff_fields_and_blocks() -> None:
    old = {
        "title": "Old title", "slug": "s", "dek": "", "hero": None, "tags": ["a"],
        "related": [1], "authors": [1],
        "body": [
            {"kind": "paragraph", "text": "One two three."},
            {"kind": "heading", "text": "Part", "level": 2},
            {"kind": "quote", "text": "Said.", "cite": "Ann"},
        ],
    }  # fmt: skip
    new = {
        **old, "title": "New title", "tags": ["a", "b"],
        "body": [
            {"kind": "paragraph", "text": "One **two** three.", "format": "markdown"},
            {"kind": "image", "asset": ASSET, "text": "caption"},
            {"kind": "heading", "text": "Part", "level": 2},
        ],
    }  # fmt: skip
    d = diff_stories(old, new)
    changed = {f.name for f in d.fields if f.changed}
    assert changed == {"title", "tags"}
    assert [(b.op, b.old_at, b.new_at) for b in d.blocks] == [
        ("changed", 1, 1), ("added", None, 2), ("same", 2, 3), ("removed", 3, None),
    ]  # fmt: skip
    para = d.blocks[0]
    assert [p.text for p in para.text_new if p.op == "added"] == ["**", "**"]
    fmt = next(x for x in para.details if x.name == "format")
    assert fmt.changed and "".join(p.text for p in fmt.new) == "markdown"
    assert d.counts == {"fields": 2, "changed": 1, "added": 1, "removed": 1}
    assert not diff_stories(old, old).changed


def test_compare_page_side_by_side_and_restore(store: WriteStore, tmp_path: Path) -> None:
    app = make_app(store, tmp_path)
    with TestClient(app) as ed:
        csrf = login(ed)
        r = _save(ed, csrf, None, None, [{"kind": "paragraph", "text": "The brown fox."}])
        sid = int(re.search(r"/stories/(\d+)", r.headers["location"]).group(1))  # type: ignore[union-attr]
        r = _save(ed, csrf, sid, 1, [
            {"kind": "paragraph", "text": "The red fox <script>x</script>."},
            {"kind": "quote", "text": "New words.", "cite": "Ann"},
        ])  # fmt: skip
        assert r.status_code == 303, r.text
        listing = ed.get(f"/stories/{sid}/revisions").text
        assert f'href="/stories/{sid}/revisions/compare?a=1&amp;b=2"' in listing
        assert f'action="/stories/{sid}/revisions/compare"' in listing

        page = ed.get(f"/stories/{sid}/revisions/compare", params={"a": "1", "b": "2"})
        assert page.status_code == 200
        text = page.text
        assert "<del>brown</del>" in text and "<ins>red</ins>" in text
        assert "&lt;script&gt;" in text and "<script>x" not in text
        assert 'data-op="added"' in text and "New words." in text
        assert "0 fields changed; 1 block changed, 1 added, 0 removed." in text
        # the default: the revision before the current one against the current one
        assert ed.get(f"/stories/{sid}/revisions/compare").text.count("<del>brown</del>") == 1
        # restoring from the comparison: one click (a form with its button)
        m = re.search(r'<form method="post" action="(/stories/\d+/revisions/1/restore)"', text)
        assert m
        r = ed.post(m.group(1), data={"csrf": csrf_of(text), "base_revision": "2"},
                    follow_redirects=False)  # fmt: skip
        assert r.status_code == 303 and r.headers["location"] == f"/stories/{sid}?saved=3"
        same = ed.get(f"/stories/{sid}/revisions/compare?a=1&b=3").text
        assert "Revisions 1 and 3 have the same content." in same

        # bad input: a clear answer, nothing shown as if it worked
        for q, code, words_ in (
            ("a=9&b=1", 404, "has no revision 9"),
            ("a=x", 400, "revision a must be a whole number"),
            ("a=0", 400, "revision a must be between 1"),
        ):
            r = ed.get(f"/stories/{sid}/revisions/compare?{q}")
            assert r.status_code == code and words_ in r.text, (q, r.status_code, r.text[:300])
        assert ed.get("/stories/999/revisions/compare").status_code == 404
    with TestClient(app) as anon:
        r = anon.get(f"/stories/{sid}/revisions/compare", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/login")


# -- the site's story template, over arbitrary paragraphs -----------------------------------------

_SOURCE = st.lists(
    st.sampled_from(
        ["**", "*", "_", "[", "](", ")", "\n", "\n\n", "- ", "1. ", "<script>", "</script>",
         "<img src=x onerror=alert(1)>", "javascript:", "JaVa\tScRiPt:", "&#58;", "data:",
         "https://a.org", "/x", "mailto:a@b.c", " onload=", "\"", "'", "x", " "]
    ) | st.text(max_size=5),
    max_size=25,
).map("".join)  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rich=_SOURCE, plain=_SOURCE)
def test_the_story_template_never_emits_more_than_the_allowlist(rich: str, plain: str) -> None:
    """The site's story body (the site, the preview) over any rich and plain paragraph:
    the only tags in it are the template's own and the allowlist's, no attribute is an
    event handler, no link is to javascript: or data:."""
    import jinja2

    from nearstate.content import richtext
    from nearstate.content.pages import story_model
    from nearstate.web.site.html import card_html

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("nearstate.web", "templates"), autoescape=True
    )
    env.globals["card_html"] = card_html
    record = SimpleNamespace(
        id=1, slug="s", title="T", dek="", excerpt="", reading_minutes=1, revision=1,
        published_at=None, updated_at=None, hero=None, tags=[], genres=[], related=[],
        authors=[],
        body=[
            SimpleNamespace(kind="paragraph", text=rich, level=richtext.LEVELS["markdown"]),
            SimpleNamespace(kind="paragraph", text=plain, level=0),
        ],
    )  # fmt: skip
    macros = env.get_template("site/macros.html").module
    html = str(macros.story_body(story_model(record), links=True))  # type: ignore[attr-defined]
    body = html[html.index('<div class="body">') :]
    p = Tags()
    p.feed(body)
    own = {"div", "p", "h2"}  # the template's: the body, a plain paragraph, the rich div
    for tag, attrs in p.found:
        assert tag in own | set(richtext.ALLOWED), (tag, body)
        assert set(attrs) <= richtext.ALLOWED.get(tag, frozenset()) | {"class"}, (tag, body)
    assert_safe(html)
    assert f"<p>{escape(plain)}</p>" in html  # a plain paragraph: exactly as before
