"""Debian's headless Chromium, driven by Playwright (never ``playwright install``: the
browser is the system's ``chromium``, which `.ci/run` installs with apt)."""

from __future__ import annotations

import os
import shutil
from typing import Any

import pytest

# Nothing of the browser's own may call out: no updates, no sync, no field trials.
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_path() -> str:
    """``$KILLSWITCH_CHROMIUM``, else ``chromium`` on the PATH; a clear failure without it."""
    found = os.environ.get("KILLSWITCH_CHROMIUM") or shutil.which("chromium")
    if not found:
        pytest.fail(
            "headless Chromium is not installed: apt-get install chromium "
            "(.ci/run installs it), or set KILLSWITCH_CHROMIUM to its path"
        )
    return found


def launch(playwright: Any) -> Any:
    """A Chromium browser on this machine's own binary."""
    return playwright.chromium.launch(executable_path=chromium_path(), args=ARGS, headless=True)
