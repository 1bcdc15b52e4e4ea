"""What the browser tests share: the system's Chromium (never a downloaded one), the flags
it runs with on these machines, the window size and where screenshots go."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
VIEWPORT = {"width": 1280, "height": 900}
SHOTS = Path(__file__).resolve().parents[1] / "docs" / "screenshots"


def require_chromium() -> None:
    """Skip (fail under CI) where the system's Chromium is missing."""
    if CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK):
        return
    reason = f"{CHROMIUM} is missing: the browser tests drive the system's Chromium"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; scripts/system-deps installs it (apt-get install chromium)")
    pytest.skip(f"{reason} (scripts/system-deps installs it; this test never downloads one)")


def launch(pw):
    """The system's Chromium, started by Playwright ``pw`` with the flags above."""
    return pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
