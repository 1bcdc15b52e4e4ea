"""The story form in a real browser: choosers, dragged blocks and the preview beside it.

The editor (``nearstate cms serve``, its ingestion worker in process) and one public site
(``nearstate site serve``) run as processes of their own over a temporary data directory
holding FILMS films and the sample stories; Debian's Chromium, driven by Playwright
(never a browser download), plays an editor:

- a chooser is searched and picked from with the keyboard alone (type, arrow down, Enter;
  Escape closes the list), with thumbnails; an image is uploaded from the hero chooser and
  becomes the hero; the save stores the ids picked;
- a block is dragged above another with the pointer and another moved with the keyboard;
  publishing shows the body in that order on the site;
- the preview beside the form shows the save right after saving (the frame asks for the
  save's revision, which waits for its token), and its width follows the device switch.

The tests write ``docs/screenshots/editor-{chooser,blocks,preview}.png`` (1280×900). Without
/usr/bin/chromium the module skips, except under CI (``$CI`` set), where it fails.
"""

from __future__ import annotations

import io
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from browser import SHOTS, VIEWPORT, launch, require_chromium

ADMIN, PASSWORD = "ada", "a long enough password"
FILMS = 120
START_TIMEOUT = 30.0
VISIBLE_WITHIN = 5.0  # seconds for a publish to reach the site


def _nearstate() -> list[str]:
    script = Path(sys.executable).with_name("nearstate")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from nearstate.cli import main; sys.exit(main())"]


def _env() -> dict[str, str]:
    """This environment without NEARSTATE_* settings, which would override ``--data``."""
    return {k: v for k, v in os.environ.items() if not k.startswith("NEARSTATE_")}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Stack:
    data: Path
    editor: str
    site: str
    story: int  # a published story
    slug: str
    draft: int
    title: tuple[int, str]  # a film with a poster: (id, its name's first word)
    author: tuple[int, str]  # a staff writer: (id, name)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)


def _set_up(data: Path) -> dict[str, Any]:
    ns, run = _nearstate(), {"check": True, "env": _env(), "capture_output": True}
    subprocess.run([*ns, "cms", "init", "--data", str(data), "--admin", ADMIN,
                    "--password", PASSWORD], **run)  # fmt: skip
    subprocess.run([*ns, "cms", "import-films", "--data", str(data), "--limit", str(FILMS),
                    "--quiet"], **run)  # fmt: skip
    import nearstate
    from nearstate.content import outbox
    from nearstate.content.cms import CMS
    from nearstate.content.db import open_store
    from nearstate.content.ingest import IngestWorker, ingestor_for
    from nearstate.content.media import MediaConfig
    from nearstate.demo.samples import create_samples

    media = MediaConfig(root=data / "media", base_url="/media")
    store = open_store(f"sqlite:///{(data / 'cms.db').resolve()}")
    try:
        r = create_samples(CMS(store), store, media, user=ADMIN)
        ds = nearstate.open(data / "dataset")
        IngestWorker(ingestor_for(store, ds, media)).drain(timeout=60)
        assert outbox.pending_count(store) == 0 and outbox.dead_letters(store) == []
        ds.compact()
        story = CMS(store).story(r.published[0])
        # a film with a poster, whose first word is rare enough to find it first
        films = store.read(
            "SELECT id, name FROM titles WHERE poster_asset IS NOT NULL ORDER BY id LIMIT 200"
        )
        first = {}
        for f in films:
            w = f["name"].split()[0].lower()
            first.setdefault(w, []).append(f)
        title = next(fs[0] for w, fs in first.items() if len(fs) == 1 and len(w) >= 5)
        staff = store.read_one("SELECT id, name FROM people WHERE staff = 1 ORDER BY id")
        assert staff is not None
        return {
            "story": r.published[0],
            "slug": story["data"]["slug"],
            "draft": r.drafts[0],
            "title": (int(title["id"]), title["name"].split()[0]),
            "author": (int(staff["id"]), staff["name"]),
        }
    finally:
        store.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require_chromium()
    pytest.importorskip("playwright.sync_api", reason="playwright is a dev dependency")
    data = tmp_path_factory.mktemp("editor-browser") / "data"
    try:
        facts = _set_up(data)
    except subprocess.CalledProcessError as e:
        pytest.fail(f"set-up failed: {e.cmd}\n{e.stdout.decode()}\n{e.stderr.decode()}")
    ns, d = _nearstate(), ["--data", str(data)]
    ep, sp = _port(), _port()
    s = Stack(data, f"http://127.0.0.1:{ep}", f"http://127.0.0.1:{sp}", **facts)
    logs = {"editor": data.parent / "editor.log", "site": data.parent / "site.log"}
    argv = {
        "editor": [*ns, "cms", "serve", *d, "--port", str(ep), "--quiet"],
        "site": [*ns, "site", "serve", *d, "--port", str(sp), "--quiet"],
    }
    ready = {"editor": f"{s.editor}/login", "site": f"{s.site}/healthz"}
    try:
        for name in argv:
            with logs[name].open("wb") as out:
                s.procs.append(subprocess.Popen(argv[name], stdin=subprocess.DEVNULL,
                               stdout=out, stderr=subprocess.STDOUT, env=_env(),
                               start_new_session=True))  # fmt: skip
        import urllib.request

        deadline = time.monotonic() + START_TIMEOUT
        for name, url in ready.items():
            while True:
                try:
                    with urllib.request.urlopen(url, timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"{name} not ready in {START_TIMEOUT} s:\n"
                                + logs[name].read_text(errors="replace")[-2000:])  # fmt: skip
                time.sleep(0.1)
        yield s
        for p in s.procs:
            assert p.poll() is None, "a service exited while the tests ran"
    finally:
        for p in s.procs:
            if p.poll() is None:
                p.terminate()
        for p in s.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


@pytest.fixture(scope="module")
def browser(stack: Stack) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = launch(pw)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(stack: Stack, browser: Any) -> Iterator[Any]:
    """A logged-in editor's page."""
    ctx = browser.new_context(viewport=VIEWPORT)
    try:
        p = ctx.new_page()
        p.goto(f"{stack.editor}/login")
        p.fill("input[name=username]", ADMIN)
        p.fill("input[name=password]", PASSWORD)
        p.click("form[action='/login'] button[type=submit]")
        p.wait_for_url(f"{stack.editor}/")
        yield p
    finally:
        ctx.close()


def _shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=False)


def _story(stack: Stack, sid: int) -> dict[str, Any]:
    from nearstate.content.cms import CMS
    from nearstate.content.db import open_store

    store = open_store(f"sqlite:///{(stack.data / 'cms.db').resolve()}")
    try:
        return CMS(store).story(sid)
    finally:
        store.close()


def _png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (320, 200), (20, 120, 200)).save(buf, "PNG")
    return buf.getvalue()


def _save(page: Any, stack: Stack, sid: int, action: str = "save") -> int:
    """Click an action button; the revision the page then says was saved (or is live)."""
    base = int(page.locator("form.story input[name=base_revision]").input_value())
    with page.expect_navigation():
        page.locator(f"form.story .actions button[name=action][value={action}]").click()
    row = _story(stack, sid)
    assert row["revision"] >= base
    return int(row["revision"])


# -- the tests ------------------------------------------------------------------------------


def test_choosers_search_and_pick_by_keyboard(stack: Stack, page: Any) -> None:
    from playwright.sync_api import expect

    sid = stack.draft
    page.goto(f"{stack.editor}/stories/{sid}")
    tid, word = stack.title
    related = page.locator("fieldset.chooser[data-name=related]")
    box = related.locator("input[role=combobox]")
    options = related.locator("ul[role=listbox]")
    expect(related.locator(".find button[name=op]")).to_be_hidden()  # JS: no Find button

    # type, arrow down, Enter: the film is chosen, with its poster
    box.click()
    box.type(word, delay=30)
    expect(box).to_have_attribute("aria-expanded", "true")
    first = options.locator("li[role=option]").first
    expect(first).to_contain_text(word)
    expect(first.locator("img")).to_have_attribute("src", re.compile("/media/"))
    box.press("ArrowDown")
    expect(first).to_have_attribute("aria-selected", "true")
    _shot(page, "editor-chooser")
    expect(box).to_have_attribute("aria-activedescendant", first.get_attribute("id") or "?")
    box.press("Enter")
    expect(options).to_be_hidden()
    chosen = related.locator(f"ul.chosen input[value='{tid}']")
    expect(chosen).to_be_checked()
    expect(related.locator("ul.chosen img").last).to_be_visible()

    # Escape closes the list without picking
    box.type(word[:3], delay=30)
    expect(options).to_be_visible()
    box.press("Escape")
    expect(options).to_be_hidden()
    expect(box).to_have_attribute("aria-expanded", "false")

    # an author, by keyboard only: Tab into the chooser, type, arrows, Enter
    pid, name = stack.author
    authors = page.locator("fieldset.chooser[data-name=authors]")
    abox = authors.locator("input[role=combobox]")
    abox.focus()
    abox.type(name.split()[-1], delay=30)
    expect(authors.locator("li[role=option]").first).to_contain_text(name)
    abox.press("ArrowDown")
    abox.press("Enter")
    expect(authors.locator(f"ul.chosen input[value='{pid}']")).to_be_checked()

    # an image uploaded from the hero chooser becomes the hero
    hero = page.locator("fieldset.chooser[data-name=hero]")
    hero.locator("details.upload-here summary").click()
    hero.locator("input[data-upload-file]").set_input_files(
        {"name": "blue-card.png", "mimeType": "image/png", "buffer": _png()}
    )
    hero.locator("input[data-upload-alt]").fill("A blue card")
    hero.locator("button[data-upload]").click()
    expect(hero.locator(".upload-status")).to_contain_text("Uploaded blue-card.png")
    picked = hero.locator("ul.chosen li:not(.none) input[type=radio]")
    expect(picked).to_be_checked()
    asset = picked.get_attribute("value")
    assert asset and asset.startswith("a-")

    # a block added with "Add a block" (a heading) and the first one removed
    before = [b.get("text", "") for b in _story(stack, sid)["data"]["body"]]
    page.locator("form.story button[data-add-block]").click()
    added = page.locator("form.story [data-blocks] > fieldset.block").last
    expect(added.locator("select[name$='-kind']")).to_be_focused()
    added.locator("select[name$='-kind']").select_option("heading")
    expect(added.locator("input[name$='-level']")).to_be_visible()  # a heading's field
    added.locator("textarea[name$='-text']").fill("Added in the browser")
    page.locator("form.story input[name='block-0-remove']").check()

    _save(page, stack, sid)
    data = _story(stack, sid)["data"]
    assert tid in data["related"] and pid in data["authors"] and data["hero"] == asset
    assert [b.get("text", "") for b in data["body"]] == [*before[1:], "Added in the browser"]
    assert data["body"][-1] == {"kind": "heading", "text": "Added in the browser", "level": 2}
    # the form shows the choices again, named
    expect(
        page.locator(f"fieldset.chooser[data-name=related] input[value='{tid}']")
    ).to_be_checked()
    expect(hero.locator("ul.chosen")).to_contain_text("blue-card.png")


def _body_texts(page: Any) -> list[str]:
    return [t.strip() for t in page.locator("article.story .body > *").all_inner_texts()]


def test_drag_reorder_then_publish_shows_the_order_on_the_site(stack: Stack, page: Any) -> None:
    from playwright.sync_api import expect

    sid = stack.story
    page.goto(f"{stack.site}/stories/{stack.slug}")
    before = _body_texts(page)
    assert len(before) >= 3, before

    page.goto(f"{stack.editor}/stories/{sid}")
    blocks = page.locator("form.story [data-blocks] > fieldset.block:not(.new)")
    n = blocks.count()
    assert n >= 3
    texts = [blocks.nth(i).locator("textarea").input_value() for i in range(n)]

    # drag block 2 by its handle above block 1, with the pointer
    handle = blocks.nth(1).locator("button.handle")
    blocks.nth(0).evaluate("e => e.scrollIntoView({block: 'start'})")
    target = blocks.nth(0).bounding_box()
    hb = handle.bounding_box()
    assert target and hb
    page.mouse.move(hb["x"] + hb["width"] / 2, hb["y"] + hb["height"] / 2)
    page.mouse.down()
    page.mouse.move(hb["x"] + 5, target["y"] + 60, steps=12)
    _shot(page, "editor-blocks")
    page.mouse.up()
    expect(blocks.nth(0).locator("textarea")).to_have_value(texts[1])
    expect(blocks.nth(1).locator("textarea")).to_have_value(texts[0])
    expect(blocks.nth(0).locator("input[data-pos]")).to_have_value("1")
    expect(blocks.nth(1).locator("input[data-pos]")).to_have_value("2")

    # and the (new) first block down twice with the keyboard, on its handle
    blocks.nth(0).locator("button.handle").focus()
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    expect(page.locator(":focus")).to_have_class("handle")
    order = [texts[0], texts[2], texts[1], *texts[3:]]
    for i, t in enumerate(order):
        expect(blocks.nth(i).locator("textarea")).to_have_value(t)

    rev = _save(page, stack, sid, "publish")
    body = _story(stack, sid)["data"]["body"]
    assert [b.get("text", "") for b in body] == order
    expect(page.locator("section.facts")).to_contain_text(f"Live revision: {rev}")

    # the site shows the body in the new order within a few seconds (in a page of its
    # own: the editor's page reloads itself once the publish is ready)
    site = page.context.new_page()
    t0 = time.monotonic()
    while True:
        site.goto(f"{stack.site}/stories/{stack.slug}")
        art = site.locator("article.story")
        if art.get_attribute("data-revision") == str(rev):
            break
        assert time.monotonic() - t0 < VISIBLE_WITHIN, "the site did not show the publish"
        time.sleep(0.1)
    assert _body_texts(site) == [before[0], before[2], before[1], *before[3:]]


def test_the_preview_beside_the_form_shows_the_save(stack: Stack, page: Any) -> None:
    from playwright.sync_api import expect

    sid = stack.draft
    page.goto(f"{stack.editor}/stories/{sid}")
    new_title = f"Seen beside the form at {time.strftime('%H:%M:%S')}"
    page.locator("form.story input[name=title]").fill(new_title)
    t0 = time.perf_counter()
    rev = _save(page, stack, sid)
    frame = page.frame_locator("#preview-frame")
    article = frame.locator("article.story")
    expect(article).to_have_attribute("data-revision", str(rev), timeout=5000)
    expect(article.locator("h1")).to_have_text(new_title)
    shown = time.perf_counter() - t0
    # the frame's request, answered once revision `rev` was readable (Navigation Timing)
    answer = frame.locator("body").evaluate(
        "b => { const n = performance.getEntriesByType('navigation')[0];"
        " return n.responseStart - n.requestStart; }"
    )
    print(f"\nsave → preview beside the form: {shown * 1000:.0f} ms in the browser"
          f" (the preview's request answered in {answer:.0f} ms)")  # fmt: skip
    _shot(page, "editor-preview")

    # the device switch sets the frame's width (the site's own layout for that width)
    iframe = page.locator("#preview-frame")
    widths = {}
    for device in ("tablet", "desktop", "phone"):
        page.locator(f"label[for=device-{device}]").click()
        widths[device] = iframe.evaluate("f => f.getBoundingClientRect().width")
        inner = frame.locator("body").evaluate("b => window.innerWidth")
        assert inner == {"phone": 390, "tablet": 768, "desktop": 1280}[device]
    assert all(abs(w - 390) < 2 for w in widths.values()), widths  # scaled to the pane

    # autosave (on for a draft): a change is saved as a draft revision a moment after the
    # last keystroke, and the preview beside the form follows it, without a click
    autosave = page.locator("form.story input[data-autosave]")
    expect(autosave).to_be_checked()
    dek = f"Saved without a click at {time.strftime('%H:%M:%S')}"
    page.locator("form.story textarea[name=dek]").fill(dek)
    status = page.locator("form.story .autosave-status")
    expect(status).to_contain_text(f"Draft saved as revision {rev + 1}", timeout=10_000)
    expect(page.locator("form.story input[name=base_revision]")).to_have_value(str(rev + 1))
    expect(article).to_have_attribute("data-revision", str(rev + 1), timeout=5000)
    expect(article.locator(".dek")).to_have_text(dek)
    assert _story(stack, sid)["data"]["dek"] == dek
    # and a save right after builds on the autosaved revision (no conflict with it)
    page.locator("form.story input[name=title]").fill(new_title + ", saved")
    assert _save(page, stack, sid) == rev + 2
    expect(page.locator("#saved")).to_have_text(f"Saved as revision {rev + 2}.")
