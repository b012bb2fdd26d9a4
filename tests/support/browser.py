"""Debian's headless Chromium for the browser tests, driven by Playwright (never a downloaded browser)."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags, Chromium's own connections are refused on a closed
# network, many at a time.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
TIMEOUT_MS = 60_000


@contextlib.contextmanager
def system_chromium(*extra_flags: str) -> Iterator[Any]:
    """The system's chromium, launched headless with ``extra_flags``; skipped (failed on CI) if missing."""
    if not shutil.which(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: `make test` installs it with apt-get when run as root")
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium (make test does it as root)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=[*CHROMIUM_FLAGS, *extra_flags], timeout=TIMEOUT_MS
        )
        try:
            yield browser
        finally:
            browser.close()
