"""The layout editor in a real browser (the same services as tests/test_editor_browser.py:
``nearstate cms serve`` and ``nearstate site serve`` over the demo's sample stories and
its ``home`` layout; Debian's Chromium through Playwright, never a download).

An editor picks a published story into the "Featured" row with the keyboard alone
(type, arrow down, Enter), drags the second row above the first by its handle, and saves;
the layout stores both, and the site's home page shows the rows in the new order with the
story picked. Writes ``docs/screenshots/editor-layout.png``.
"""

from __future__ import annotations

import time
from typing import Any

from browser import SHOTS
from test_editor_browser import Stack, browser, page, stack  # the services and a logged-in page

__all__ = ["browser", "page", "stack"]  # fixtures, used by name

VISIBLE_WITHIN = 10.0  # seconds for a saved layout to reach the site's home page


def _read(stack: Stack, fn: Any) -> Any:
    from nearstate.content.cms import CMS
    from nearstate.content.db import open_store

    store = open_store(f"sqlite:///{(stack.data / 'cms.db').resolve()}")
    try:
        return fn(CMS(store), store)
    finally:
        store.close()


def test_pick_by_keyboard_drag_and_save_a_layout(stack: Stack, page: Any) -> None:
    from playwright.sync_api import expect

    layout = _read(stack, lambda cms, _: cms.layout("home"))
    rows = layout["data"]["rows"]
    assert rows[0]["heading"] == "Featured" and rows[0]["kind"] == "stories"
    second = rows[1]["heading"]
    # a published story the Featured row does not hold yet
    published = _read(stack, lambda _, st: st.read(
        "SELECT id, title FROM stories WHERE status = 'published' ORDER BY id"))  # fmt: skip
    pick = next(s for s in published if int(s["id"]) not in rows[0]["ids"])

    page.goto(f"{stack.editor}/layouts/home")
    blocks = page.locator("form.layout [data-blocks] > fieldset.block:not(.new)")
    assert blocks.count() == len(rows)
    first = blocks.nth(0)
    # only the row kind's fields show: the stories chooser, not the titles one
    expect(first.locator("fieldset.chooser.f-stories")).to_be_visible()
    expect(first.locator("fieldset.chooser.f-titles")).to_be_hidden()

    # pick by keyboard: type in the row's search box, arrow down, Enter
    box = first.locator("fieldset.chooser.f-stories")
    search = box.locator("input[type=search]")
    search.focus()
    search.press_sequentially(pick["title"][:40], delay=15)
    options = box.locator("ul.options li[role=option]")
    expect(options.first).to_contain_text(pick["title"][:40])
    search.press("ArrowDown")
    expect(options.first).to_have_attribute("aria-selected", "true")
    expect(search).to_have_attribute("aria-activedescendant", options.first.get_attribute("id"))
    first.evaluate("e => e.scrollIntoView({block: 'start'})")
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "editor-layout.png"), full_page=False)
    search.press("Enter")
    expect(box.locator("ul.options")).to_be_hidden()
    picked = box.locator(f"ul.chosen input[name=row-0-stories][value='{pick['id']}']")
    expect(picked).to_be_checked()
    assert box.locator("ul.chosen input:checked").count() == len(rows[0]["ids"]) + 1

    # drag row 2 above row 1 by its handle, with the pointer
    handle = blocks.nth(1).locator("button.handle")
    first.evaluate("e => e.scrollIntoView({block: 'start'})")
    target = blocks.nth(0).bounding_box()
    hb = handle.bounding_box()
    assert target and hb
    page.mouse.move(hb["x"] + hb["width"] / 2, hb["y"] + hb["height"] / 2)
    page.mouse.down()
    page.mouse.move(hb["x"] + 5, target["y"] + 20, steps=12)
    page.mouse.up()
    expect(blocks.nth(0).locator("input[name$='-heading']")).to_have_value(second)
    expect(blocks.nth(1).locator("input[name$='-heading']")).to_have_value("Featured")
    expect(blocks.nth(0).locator("input[data-pos]")).to_have_value("1")
    expect(blocks.nth(0).locator(":scope > legend")).to_have_text("Row 1")

    # "Add a row" numbers the new row's fields after the form's last (left empty: not saved)
    n_all = page.locator("form.layout [data-blocks] > fieldset.block").count()
    page.locator("form.layout [data-add-block]").click()
    added = page.locator("form.layout [data-blocks] > fieldset.block").last
    expect(added.locator(f"select[name='row-{n_all}-kind']")).to_be_focused()
    expect(added.locator(":scope > legend")).to_have_text("New row")

    with page.expect_navigation():
        page.locator("form.layout .actions button[type=submit]").click()
    expect(page.locator("body")).to_contain_text(
        f"Layout saved as revision {layout['revision'] + 1}"
    )
    saved = _read(stack, lambda cms, _: cms.layout("home"))["data"]["rows"]
    assert [r["heading"] for r in saved[:2]] == [second, "Featured"]
    assert saved[1]["ids"] == [*rows[0]["ids"], int(pick["id"])]  # the data format unchanged
    assert saved[2:] == rows[2:]

    # the site's home shows the new order, and the story picked in its row
    site = page.context.new_page()
    t0 = time.monotonic()
    while True:
        site.goto(f"{stack.site}/")
        heads = [h.strip() for h in site.locator("section.row > h2").all_inner_texts()]
        if heads[:2] == [second, "Featured"]:
            break
        assert time.monotonic() - t0 < VISIBLE_WITHIN, f"the home page still shows {heads[:3]}"
        time.sleep(0.2)
    featured = site.locator("section.row[aria-label='Featured']")
    expect(featured).to_contain_text(pick["title"])
