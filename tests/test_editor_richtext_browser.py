"""Rich text, the revision comparison and the login in a real browser (Debian's Chromium
driven by Playwright; never a browser download).

The editor app (twice: one with a two-second idle timeout) and the public site run in this
process under uvicorn on loopback ports, over one SQLite write store and one local dataset.
Chromium then:

- edits a story's rich paragraph (bold, a link, a list, and a script, an ``onerror``
  image and a ``javascript:`` link that must stay inert), previews it and sees the site
  render it, with no dialog ever opened;
- compares two revisions side by side from the revisions list and restores the older one
  in one click;
- logs in, logs out everywhere (another browser's session is refused on its next
  request), sees a removed user's session refused, the throttle's 429 with its
  ``Retry-After`` and its plain message, and the idle timeout's message.

Writes ``docs/screenshots/revision-diff.png`` and ``docs/screenshots/story-rich-text.png``.
Without /usr/bin/chromium the module skips, except under CI (``$CI`` set), where it fails.
"""

from __future__ import annotations

import io
import re
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

import nearstate
from browser import SHOTS, VIEWPORT, launch, require_chromium
from nearstate.content import accounts
from nearstate.content.cms import CMS
from nearstate.content.db import WriteStore, open_store
from nearstate.content.media import MediaConfig, store_upload
from nearstate.web.editor import EditorConfig, create_editor_app
from nearstate.web.site import SiteConfig, create_site_app

PASSWORD = "a long enough password"
SECRET = "browser-test-secret-0123456789"

RICH = (
    "Agnès Varda shot **Cléo from 5 to 7** in *real time*, across Paris, in the summer of "
    "1961. Read [the restoration notes](https://example.org/cleo) or more "
    "[stories about Varda](/tags/varda).\n\n"
    "What to watch for:\n\n"
    "- the *ninety minutes* on screen match the hours on the clocks\n"
    "- the mirror scenes in the hat shop\n"
    "- Michel Legrand at the piano\n\n"
    "<script>alert('script')</script> <img src=x onerror=alert('img')> "
    "[a trap](javascript:alert('link')) [another](JaVaScRiPt&#58;alert('encoded'))"
)
RICH_EDITED = RICH.replace("in the summer of 1961", "on the longest day of June 1961")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    """An ASGI app under uvicorn on a loopback port, in a thread of this process."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@dataclass
class System:
    store: WriteStore
    cms: CMS
    editor: str
    idle_editor: str
    site: str
    hero: str
    story: int


def _hero_jpeg() -> bytes:
    from PIL import Image

    im = Image.new("RGB", (1600, 900))
    px = im.load()
    assert px is not None
    for x in range(0, 1600, 4):
        for y in range(0, 900, 4):
            c = (40 + x * 150 // 1600, 30 + y * 60 // 900, 90 + (x + y) * 100 // 2500)
            for dx in range(4):
                for dy in range(4):
                    px[x + dx, y + dy] = c
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=85)
    return buf.getvalue()


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    require_chromium()
    pytest.importorskip("playwright.sync_api", reason="playwright is a dev dependency")
    root = tmp_path_factory.mktemp("richtext-browser")
    store = open_store(root / "cms.db")
    for name, role in (("ann", "editor"), ("root", "admin"), ("bo", "editor"), ("cy", "editor")):
        accounts.create_user(store, name, PASSWORD, role=role, display_name=name.title())
    cms = CMS(store)
    media = MediaConfig(root=root / "media")
    hero = store_upload(store, media, _hero_jpeg(), filename="cleo.jpg", alt="Paris at dusk")
    author = cms.add_staff("Maren Okafor")
    data = {
        "title": "Cléo, in real time",
        "dek": "Ninety minutes of a Paris afternoon, and the clocks that keep them.",
        "hero": hero["id"],
        "tags": ["Varda"],
        "authors": [author],
        "body": [
            {"kind": "paragraph", "text": RICH, "format": "markdown"},
            {"kind": "heading", "text": "The plain paragraph", "level": 2},
            {"kind": "paragraph", "text": "Written before rich text: *stars* stay as typed."},
        ],
    }
    story = cms.create_story(data, user="ann")
    ds = nearstate.open(root / "dataset")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        common = {"store": store, "media": media, "secret_key": SECRET}
        editor = Served(create_editor_app(EditorConfig(dataset=ds, **common)))
        idle = Served(
            create_editor_app(EditorConfig(run_worker=False, session_idle_timeout=2, **common))
        )
        site = Served(create_site_app(SiteConfig(dataset=ds, secret_key=SECRET, store=store,
                                                 media=media, editor_url=editor.url)))  # fmt: skip
    try:
        yield System(store, cms, editor.url, idle.url, site.url, hero["id"], int(story.id))
    finally:
        for s in (site, idle, editor):
            s.stop()
        store.close()


@pytest.fixture(scope="module")
def browser(system: System) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = launch(pw)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def new_page(browser: Any) -> Iterator[Any]:
    """Pages in fresh browser contexts (own cookies); any dialog fails the test."""
    contexts: list[Any] = []
    dialogs: list[str] = []

    def make() -> Any:
        ctx = browser.new_context(viewport=VIEWPORT)
        contexts.append(ctx)
        page = ctx.new_page()
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        return page

    yield make
    for ctx in contexts:
        ctx.close()
    assert dialogs == [], f"a script ran: {dialogs}"


def _shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=False)


def _log_in(page: Any, base: str, user: str, path: str = "/") -> None:
    page.goto(f"{base}{path}")
    assert "/login" in page.url
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", PASSWORD)
    page.click("form[action='/login'] button[type=submit]")
    page.wait_for_url(f"{base}{path}")


def _assert_inert(page: Any) -> None:
    """Nothing the author typed became a script, an event handler or a javascript: link."""
    assert page.locator("a[href^='javascript' i], a[href^='data:' i]").count() == 0
    assert page.locator("img[onerror], [onload], [onclick], [onmouseover]").count() == 0
    bad = page.evaluate(
        "() => [...document.scripts].filter(s => /alert\\(/.test(s.textContent)).length"
    )
    assert bad == 0


def _wait_until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


# -- rich text and revisions --------------------------------------------------------------------


def test_rich_text_edit_preview_site_and_revision_diff(system: System, new_page: Any) -> None:
    from playwright.sync_api import expect

    page = new_page()
    ed, sid = system.editor, system.story
    _log_in(page, ed, "ann", f"/stories/{sid}")
    # the paragraph's source is in its text box, its format is rich text
    expect(page.locator("textarea[name='block-0-text']")).to_have_value(RICH)
    expect(page.locator("select[name='block-0-format']")).to_have_value("markdown")
    expect(page.locator("select[name='block-2-format']")).to_have_value("plain")
    page.fill("textarea[name='block-0-text']", RICH_EDITED)
    page.locator("form.story button[name=action][value=save]:visible").first.click()
    page.wait_for_url(re.compile(rf"/stories/{sid}\?saved=2$"))

    # the preview of revision 2 renders it, the traps stay text
    page.goto(f"{ed}/stories/{sid}/preview?revision=2")
    body = page.locator(".site-preview")
    expect(body.locator("strong", has_text="Cléo from 5 to 7")).to_be_visible()
    expect(body.locator("em", has_text="real time")).to_be_visible()
    link = body.locator("a", has_text="the restoration notes")
    expect(link).to_have_attribute("href", "https://example.org/cleo")
    expect(link).to_have_attribute("rel", "noopener")
    expect(body.locator("li")).to_have_count(3)
    expect(body).to_contain_text("<script>alert('script')</script>")
    expect(body).to_contain_text("[a trap](javascript:alert('link'))")
    expect(body).to_contain_text("Written before rich text: *stars* stay as typed.")
    _assert_inert(page)

    # the revisions list: revision 1 against 2 is chosen; compare them side by side
    page.goto(f"{ed}/stories/{sid}/revisions")
    expect(page.locator("input[name=a][value='1']")).to_be_checked()
    expect(page.locator("input[name=b][value='2']")).to_be_checked()
    page.click("text=Compare the two chosen")
    page.wait_for_url(re.compile(rf"/stories/{sid}/revisions/compare\?(b=2&a=1|a=1&b=2)$"))
    row = page.locator("tr.block.changed").first
    # "in the summer of 1961" -> "on the longest day of June 1961", word by word
    assert row.locator("td.old del").all_inner_texts() == ["in", "summer"]
    assert row.locator("td.new ins").all_inner_texts() == ["on", "longest day", "June"]
    expect(row.locator("td.old")).to_contain_text("in the summer of 1961")
    expect(row.locator("td.new")).to_contain_text("on the longest day of June 1961")
    expect(page.locator("p.facts")).to_contain_text(
        "From revision 1 to 2: 0 fields changed; 1 block changed, 0 added, 0 removed."
    )
    _assert_inert(page)
    row.scroll_into_view_if_needed()
    page.evaluate("window.scrollTo(0, 0)")
    _shot(page, "revision-diff")

    # restore the older one: one click
    page.click("button:has-text('Restore revision 1')")
    page.wait_for_url(re.compile(rf"/stories/{sid}\?saved=3$"))
    expect(page.locator("p.flash")).to_contain_text("Revision 1 restored as revision 3.")
    expect(page.locator("textarea[name='block-0-text']")).to_have_value(RICH)

    # published, the site renders it the same way
    system.cms.publish(sid, user="ann")
    site = new_page()

    def shown() -> bool:
        r = site.goto(f"{system.site}/stories/cleo-in-real-time")
        return r is not None and r.status == 200

    _wait_until(shown, 15, "the site to show the story")
    story = site.locator("article, main").first
    expect(story.locator(".rich strong", has_text="Cléo from 5 to 7")).to_be_visible()
    expect(story.locator(".rich a[rel=noopener]", has_text="the restoration notes")).to_be_visible()
    expect(story.locator("p", has_text="*stars* stay as typed")).to_be_visible()
    _assert_inert(site)
    site.locator(".rich").first.scroll_into_view_if_needed()
    _shot(site, "story-rich-text")


def test_rich_text_toolbar_puts_the_marks_in(system: System, new_page: Any) -> None:
    from playwright.sync_api import expect

    page = new_page()
    _log_in(page, system.editor, "ann", "/stories/new")
    box = page.locator("textarea[name='block-0-text']")
    bar = page.locator("fieldset[data-block]").first.locator(".rt-bar")
    expect(bar).to_be_visible()  # a new paragraph is rich text
    box.fill("Varda at work\nLegrand at the piano")

    def select(start: int, end: int) -> None:
        box.evaluate(f"t => {{ t.focus(); t.setSelectionRange({start}, {end}); }}")

    select(0, 5)
    bar.locator("[data-rt=bold]").click()
    expect(box).to_have_value("**Varda** at work\nLegrand at the piano")
    select(13, 17)  # "work"
    page.keyboard.press("Control+I")
    expect(box).to_have_value("**Varda** at *work*\nLegrand at the piano")
    box.evaluate("t => t.setSelectionRange(t.value.length - 5, t.value.length)")  # "piano"
    bar.locator("[data-rt=link]").click()
    expect(box).to_have_value("**Varda** at *work*\nLegrand at the [piano](https://)")
    page.keyboard.type("https://example.org/legrand")  # the address was selected
    expect(box).to_have_value(
        "**Varda** at *work*\nLegrand at the [piano](https://example.org/legrand)"
    )
    page.locator("fieldset[data-block]").first.scroll_into_view_if_needed()
    _shot(page, "editor-rich-text")
    box.fill("one\ntwo\n\nthree")
    box.evaluate("t => t.setSelectionRange(0, t.value.length)")
    bar.locator("[data-rt=bullets]").click()
    expect(box).to_have_value("- one\n- two\n\n- three")
    box.evaluate("t => t.setSelectionRange(0, t.value.length)")
    bar.locator("[data-rt=numbers]").click()
    expect(box).to_have_value("1. one\n2. two\n\n3. three")
    # plain text, or another kind of block: no toolbar
    page.select_option("select[name='block-0-format']", "plain")
    expect(bar).to_be_hidden()
    page.select_option("select[name='block-0-format']", "markdown")
    expect(bar).to_be_visible()
    page.select_option("select[name='block-0-kind']", "heading")
    expect(bar).to_be_hidden()
    expect(page.locator("select[name='block-0-format']")).to_be_hidden()  # paragraphs only


# -- the login ----------------------------------------------------------------------------------


def test_logout_everywhere_refuses_the_other_browser(system: System, new_page: Any) -> None:
    from playwright.sync_api import expect

    first, second = new_page(), new_page()
    _log_in(first, system.editor, "bo")
    _log_in(second, system.editor, "bo", "/stories/new")
    first.goto(f"{system.editor}/account")
    first.click("button:has-text('Log out everywhere')")
    first.wait_for_url(re.compile(r"/login"))
    expect(first.locator("p.flash")).to_contain_text("You are logged out everywhere.")
    # the other browser's next request is refused: back to the login form
    second.goto(f"{system.editor}/stories/new")
    assert "/login" in second.url
    expect(second.locator("form[action='/login']")).to_be_visible()


def test_a_removed_users_session_is_refused(system: System, new_page: Any) -> None:
    from playwright.sync_api import expect

    cy, admin = new_page(), new_page()
    _log_in(cy, system.editor, "cy", "/stories/new")
    uid = int(system.store.read_one("SELECT id FROM users WHERE username = 'cy'")["id"])
    _log_in(admin, system.editor, "root", f"/admin/users/{uid}")
    admin.fill("form[action$='/remove'] input[name=confirm]", "cy")
    admin.click("button:has-text('Remove cy')")
    expect(admin.locator("body")).to_contain_text("cy")
    assert accounts.get_user(system.store, uid) is None
    cy.goto(f"{system.editor}/stories/new")
    assert "/login" in cy.url
    cy.fill("input[name=username]", "cy")
    cy.fill("input[name=password]", PASSWORD)
    cy.click("form[action='/login'] button[type=submit]")
    expect(cy.locator("p.error")).to_have_text("Wrong username or password.")


def test_throttled_login_shows_429_and_when_to_try_again(system: System, new_page: Any) -> None:
    from playwright.sync_api import expect

    page = new_page()
    page.goto(f"{system.editor}/login")
    statuses = []
    for _ in range(6):
        page.fill("input[name=username]", "dee")
        page.fill("input[name=password]", "not the password at all")
        with page.expect_response(
            lambda r: r.url.endswith("/login") and r.request.method == "POST"
        ) as got:
            page.click("form[action='/login'] button[type=submit]")
        statuses.append(got.value.status)
        page.wait_for_load_state()
    assert statuses == [401] * 5 + [429]
    retry = got.value.headers.get("retry-after")
    assert retry is not None and 800 <= int(retry) <= 900  # the 15-minute window
    expect(page.locator("p.error[role=alert]")).to_have_text(
        "Too many failed logins for this account or from your network. For safety, logging"
        " in is paused: try again in 15 minutes."
    )


def test_an_idle_session_ends_with_a_plain_message(system: System, new_page: Any) -> None:
    from playwright.sync_api import expect

    page = new_page()
    _log_in(page, system.idle_editor, "ann", "/stories/new")
    time.sleep(2.5)
    page.goto(f"{system.idle_editor}/stories/new")
    assert "/login" in page.url
    expect(page.locator("p.flash")).to_contain_text(
        "You were logged out because you had been inactive for too long."
    )
