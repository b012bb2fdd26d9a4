"""The dev ingest's dashboard in a real headless browser: Debian's chromium driven by Playwright."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import expect, sync_playwright

from beacon_otel.devingest import DevIngest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = Path(__file__).resolve().parents[2] / ".artifacts" / "dashboard.png"
TIMEOUT_MS = 60_000

pytestmark = pytest.mark.integration


def event(**changes: Any) -> dict[str, Any]:
    base = {
        "ts": "2026-06-03T12:00:00.000+00:00",
        "method": "GET",
        "route": "/users/{user_id}",
        "path": "/users/42",
        "status": 200,
        "duration_ms": 12,
        "consumer": "acme",
        "error": None,
    }
    return {**base, **changes}


def send(ingest: DevIngest, events: list[dict[str, Any]]) -> None:
    headers = {"Authorization": "Bearer dev", "Content-Type": "application/json"}
    response = requests.post(ingest.url, data=json.dumps({"events": events}), headers=headers, timeout=10)
    assert response.status_code == 202, response.text


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless chromium from the system (never a downloaded browser)."""
    if not shutil.which(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: `make test` installs it with apt-get when run as root")
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium (make test does it as root)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_FLAGS, timeout=TIMEOUT_MS
        )
        try:
            yield browser
        finally:
            browser.close()


def test_dashboard_shows_what_was_sent_and_updates_itself(
    browser: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """The page loads without console errors, shows routes, figures, errors, validation fields and
    charts from the events sent, follows new events by itself and filters by consumer."""
    invalid = [{"field": "body.items.0.price", "message": "Field required", "type": "missing"}]
    events = [event(duration_ms=d) for d in (5, 8, 12, 20, 35, 60, 90, 150, 400, 900)]
    events += [
        event(path="/users/7", status=500, error="ZeroDivisionError: division by zero", consumer="globex")
    ]
    events += [
        event(method="POST", route="/orders", path="/orders", status=422, validation_errors=invalid)
    ] * 2
    events += [event(route="/missing", path="/missing", status=404, consumer=None)]
    problems: list[str] = []
    with DevIngest() as ingest:
        send(ingest, events)
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        page.on(
            "console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None
        )
        page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
        page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
        page.goto(ingest.base_url + "/", timeout=TIMEOUT_MS)

        routes = page.locator("#routes tbody tr")
        routes.first.wait_for(timeout=TIMEOUT_MS)
        expect(routes).to_have_count(3, timeout=TIMEOUT_MS)
        first = routes.nth(0).inner_text()
        assert "GET" in first and "/users/{user_id}" in first and "11" in first and "acme (10)" in first
        assert "1 (9.1%)" in first  # one 5xx out of 11
        assert "/orders" in routes.nth(1).inner_text()
        assert "14" in page.locator("#totals").inner_text()
        assert "ZeroDivisionError: division by zero" in page.locator("#errors").inner_text()
        validation = page.locator("#validation").inner_text()
        assert "body.items.0.price" in validation and "Field required" in validation
        assert page.locator("#latency rect").count() == 11  # one bar per histogram bucket
        assert page.locator("#traffic rect").count() >= 1

        # It follows new events by itself: no reload.
        send(ingest, [event(route="/health", path="/health", consumer="initech")])
        expect(page.locator("#routes")).to_contain_text("/health", timeout=TIMEOUT_MS)

        # The consumer filter narrows every figure, and keeps the choice in the address.
        page.locator("#consumer").select_option("globex")
        expect(routes).to_have_count(1, timeout=TIMEOUT_MS)
        assert "globex (1)" in routes.nth(0).inner_text()
        assert "consumer=globex" in page.url
        page.locator("#consumer").select_option("")
        page.locator("#status").select_option("4xx")
        expect(routes).to_have_count(2, timeout=TIMEOUT_MS)
        page.locator("#status").select_option("")
        expect(routes).to_have_count(4, timeout=TIMEOUT_MS)

        SCREENSHOT.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
        with capsys.disabled():  # shown in every run, not only failing ones
            print(f"\ndashboard screenshot: {SCREENSHOT}")
        page.close()
    assert problems == []
    assert SCREENSHOT.stat().st_size > 10_000
