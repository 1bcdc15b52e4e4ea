"""The explorer in a real browser, served the way a user serves it: ``nearstate explore
DATASET --port P`` as a process of its own over a dataset made through the writer and two
compactions (see ``test_explorer.build_local``). Chromium (Debian's, at /usr/bin/chromium,
driven by Playwright; never a browser download) walks: the types → the Movie type → Movie 3
→ its director (a reference link) → the versions → the diff of versions 1 and 2 → Movie
3's history, checking on each page what the dataset holds; then, over a dataset the
content pipeline made (``test_explorer.build_content``), from a Story to a Title its
related-title card copies.

It writes the docs' pictures, ``docs/screenshots/explorer-{types,record,reference,diff,
history,content}.png`` (1280×900). Without /usr/bin/chromium the module skips, except under CI
(``$CI`` set), where it fails."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from browser import SHOTS, VIEWPORT, launch, require_chromium
from test_explorer import build_content, build_local


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serving(root: Path, dataset: Path) -> Iterator[str]:
    """``nearstate explore DATASET`` as a process of its own; yields its URL."""
    port = _free_port()
    script = Path(sys.executable).with_name("nearstate")
    argv = [str(script)] if script.is_file() else [sys.executable, "-m", "nearstate"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEARSTATE_")}
    log = root / f"explore-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*argv, "explore", str(dataset), "--port", str(port), "--quiet"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(url + "/", timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"nearstate explore did not start:\n{log.read_text()}")
            time.sleep(0.1)
        assert "read-only" in log.read_text()  # it said what it serves
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture(scope="module")
def explorer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any]]:
    """The URL of a running ``nearstate explore`` and its dataset."""
    require_chromium()
    pytest.importorskip("playwright.sync_api", reason="playwright is a dev dependency")
    root = tmp_path_factory.mktemp("explorer-browser")
    ds = build_local(root / "ds")
    with serving(root, root / "ds") as url:
        yield url, ds


@pytest.fixture(scope="module")
def page(explorer: tuple[str, Any]) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = launch(pw)
        try:
            ctx = b.new_context(viewport=VIEWPORT)
            yield ctx.new_page()
        finally:
            b.close()


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"explorer-{name}.png"), full_page=False)


def test_types_record_reference_diff_history(page: Any, explorer: tuple[str, Any]) -> None:
    url, ds = explorer
    state = ds.load()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

    page.goto(url + "/")
    table = page.locator("#types")
    for name in state:
        assert table.get_by_role("link", name=name, exact=True).count() == 1
    assert f"{len(state['Movie']):,}" in table.inner_text()
    shot(page, "types")

    table.get_by_role("link", name="Movie", exact=True).click()
    page.wait_for_url("**/types/Movie")
    assert page.locator("#records a.key").count() == 50
    page.locator("#records").get_by_role("link", name="3", exact=True).click()
    page.wait_for_url("**/types/Movie/record?key=3")
    rec = state["Movie"].get(3)
    body = page.locator("#record").inner_text()
    assert rec.title in body and rec.info.language in body
    shot(page, "record")

    director = page.locator("#record a.ref", has_text=f"Person {rec.director.key}").first
    director.click()
    page.wait_for_url(f"**/types/Person/record?key={rec.director.key}")
    assert rec.director.name in page.locator("#record").inner_text()
    shot(page, "reference")

    page.get_by_role("link", name="Versions", exact=True).click()
    page.wait_for_url("**/versions")
    form = page.locator("#compare")
    form.locator("select[name=from]").select_option("1")
    form.locator("select[name=to]").select_option("2")
    form.get_by_role("button").click()
    page.wait_for_url("**/diff?from=1&to=2")
    movies = page.locator("#diff-Movie")
    assert "1 added, 1 changed, 1 removed" in movies.inner_text()
    changed = movies.locator("table.changed").inner_text()
    assert "Film 003" in changed and "Film three, retitled" in changed
    shot(page, "diff")

    movies.locator("table.changed caption a").first.click()
    page.wait_for_url("**/types/Movie/record?key=3&v=2")
    page.locator("#history").click()
    page.wait_for_url("**/types/Movie/history?key=3")
    changes = page.locator("#history li.change")
    assert changes.count() == 2
    assert "added" in changes.nth(0).inner_text() and "modified" in changes.nth(1).inner_text()
    assert "Film three, retitled" in changes.nth(1).inner_text()
    shot(page, "history")
    assert errors == []


def test_the_content_dataset_links_cards_to_records(
    page: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The demo's kind of dataset: a published Story's related titles are cards copied
    into it; each links to the Title it copies."""
    root = tmp_path_factory.mktemp("explorer-content")
    ds, story, ids = build_content(root)
    state = ds.load()
    with serving(root, root / "dataset") as url:
        page.goto(f"{url}/types/Story/record?key={story}")
        record = page.locator("#record")
        assert "First light, revised" in record.inner_text()
        card = record.locator("a.card", has_text=f"Title {ids[0]}").first
        card.evaluate("a => a.closest('tr').scrollIntoView({block: 'center'})")
        shot(page, "content")
        card.click()
        page.wait_for_url(f"**/types/Title/record?key={ids[0]}")
        assert state["Title"].get(ids[0]).name in page.locator("#record").inner_text()
