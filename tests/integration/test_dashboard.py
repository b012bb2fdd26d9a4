"""The dev ingest's dashboard in a real headless browser: Debian's chromium driven by Playwright."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import expect

from beacon_otel.devingest import DevIngest
from tests.support.browser import TIMEOUT_MS, system_chromium
from tests.support.events import wire_event

SCREENSHOT = Path(__file__).resolve().parents[2] / ".artifacts" / "dashboard.png"

pytestmark = pytest.mark.integration


def send(ingest: DevIngest, events: list[dict[str, Any]]) -> None:
    headers = {"Authorization": "Bearer dev", "Content-Type": "application/json"}
    response = requests.post(ingest.url, data=json.dumps({"events": events}), headers=headers, timeout=10)
    assert response.status_code == 202, response.text


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless chromium from the system (never a downloaded browser)."""
    with system_chromium() as browser:
        yield browser


def test_dashboard_shows_what_was_sent_and_updates_itself(
    browser: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """The page loads without console errors, shows routes, figures, errors, validation fields and
    charts from the events sent, follows new events by itself and filters by consumer."""
    invalid = [{"field": "body.items.0.price", "message": "Field required", "type": "missing"}]
    events = [wire_event(duration_ms=d) for d in (5, 8, 12, 20, 35, 60, 90, 150, 400, 900)]
    events += [
        wire_event(
            path="/users/7", status=500, error="ZeroDivisionError: division by zero", consumer="globex"
        )
    ]
    events += [
        wire_event(method="POST", route="/orders", path="/orders", status=422, validation_errors=invalid)
    ] * 2
    events += [wire_event(route="/missing", path="/missing", status=404, consumer=None)]
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
        send(ingest, [wire_event(route="/health", path="/health", consumer="initech")])
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


DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"


def charted_requests(page: Any) -> int:
    """The requests the traffic chart draws: the sum of its bars' values."""
    return int(
        page.evaluate(
            "[...document.querySelectorAll('#traffic rect[data-value]')]"
            ".reduce((sum, bar) => sum + Number(bar.dataset.value), 0)"
        )
    )


def test_dashboard_views_empty_state_consumers_routes_drill_down_errors_and_time_range(
    browser: Any,
) -> None:
    """With no events the page says what to run; then the consumers view explains `-` and hash_,
    routes show 4xx and 5xx rates and `<1 ms`, a route's row opens its recent requests and errors,
    the same error is one group with its count, validation failures are grouped by field, and the
    traffic chart follows the time range. Each view's screenshot is written into docs/images."""
    problems: list[str] = []
    DOCS_IMAGES.mkdir(exist_ok=True)
    now = datetime.now(timezone.utc)

    def ago(seconds: float) -> str:
        return (now - timedelta(seconds=seconds)).isoformat(timespec="milliseconds")

    crash = "RuntimeError: invoice renderer crashed"
    invalid = [{"field": "body.items.0.price", "message": "Input should be a valid number", "type": "float"}]
    recent = [wire_event(ts=ago(20 + i), duration_ms=0, consumer="acme") for i in range(6)]
    recent += [
        wire_event(
            ts=ago(10 + i),
            route="/orders/{id}/invoice",
            path=f"/orders/{i}/invoice",
            status=500,
            error=crash,
            consumer=None,
        )
        for i in range(9)
    ]
    recent += [wire_event(ts=ago(5), path="/users/9", status=404, consumer="hash_0123456789ab")]
    recent += [
        wire_event(
            ts=ago(4), method="POST", route="/orders", path="/orders", status=422, validation_errors=invalid
        )
    ]
    recent += [wire_event(ts=ago(3), path="/users/1", consumer=None)]
    earlier = [wire_event(ts=ago(7200 + i), consumer="globex", duration_ms=40) for i in range(4)]

    with DevIngest() as ingest:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on(
            "console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None
        )
        page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
        page.goto(ingest.base_url + "/", timeout=TIMEOUT_MS)

        empty = page.locator("#empty")
        expect(empty).to_be_visible(timeout=TIMEOUT_MS)
        command = page.locator("#empty-command").inner_text()
        run = "opentelemetry-instrument uvicorn app:app"
        assert command == f"BEACON_INGEST_KEY=dev BEACON_INGEST_URL={ingest.base_url} {run}"
        assert "make demo" in empty.inner_text()
        empty.screenshot(path=str(DOCS_IMAGES / "dashboard-empty.png"))

        send(ingest, earlier + recent)
        expect(empty).to_be_hidden(timeout=TIMEOUT_MS)

        routes = page.locator("#routes tbody tr")
        expect(routes).to_have_count(3, timeout=TIMEOUT_MS)
        users = routes.filter(has_text="/users/{user_id}").inner_text()
        assert "<1 ms" in users and "8.3%" in users  # 4xx: one 404 of 12; p50 of the sub-millisecond ones
        invoice = routes.filter(has_text="/orders/{id}/invoice").inner_text()
        assert "100.0%" in invoice and "0.0%" in invoice  # every request a 5xx, none a 4xx
        page.screenshot(path=str(DOCS_IMAGES / "dashboard.png"), full_page=True)

        consumers = page.locator("#consumers-view")
        rows = consumers.locator("tbody tr")
        expect(rows).to_have_count(4, timeout=TIMEOUT_MS)
        by_name = {row.locator("td").first.inner_text(): row.inner_text() for row in rows.all()}
        assert set(by_name) == {"acme", "-", "globex", "hash_0123456789ab"}
        assert "GET /orders/{id}/invoice (9)" in by_name["-"] and "90.0%" in by_name["-"]
        assert "GET /users/{user_id} (6)" in by_name["acme"]
        note = consumers.locator(".note").inner_text()
        assert "- means no consumer" in note and "hash_… is an Authorization header" in note
        consumers.screenshot(path=str(DOCS_IMAGES / "dashboard-consumers.png"))

        groups = page.locator("#errors tbody tr")
        expect(groups).to_have_count(1, timeout=TIMEOUT_MS)  # nine crashes, one group
        group = groups.first.inner_text()
        assert crash in group and "\t9\t" in group and ago(18)[:10] in group
        validation = page.locator("#validation").inner_text()
        assert "body.items.0.price" in validation and "\t1\t" in validation
        page.locator("#errors-view").screenshot(path=str(DOCS_IMAGES / "dashboard-errors.png"))

        page.locator("#routes .route-link", has_text="/orders/{id}/invoice").click()
        drill = page.locator("#drill")
        expect(drill).to_be_visible(timeout=TIMEOUT_MS)
        expect(page.locator("#drill-title")).to_have_text("GET /orders/{id}/invoice", timeout=TIMEOUT_MS)
        expect(page.locator("#drill-recent tbody tr")).to_have_count(9, timeout=TIMEOUT_MS)
        last_sent = page.locator("#drill-recent tbody tr").first.inner_text()
        assert "/orders/8/invoice" in last_sent  # the last one received comes first
        expect(page.locator("#drill-errors tbody tr")).to_have_count(9, timeout=TIMEOUT_MS)
        assert "route=GET+%2Forders%2F%7Bid%7D%2Finvoice" in page.url
        page.locator("#routes-view").screenshot(path=str(DOCS_IMAGES / "dashboard-routes.png"))
        drill.screenshot(path=str(DOCS_IMAGES / "dashboard-route-drill-down.png"))
        page.locator("#drill-close").click()
        expect(drill).to_be_hidden(timeout=TIMEOUT_MS)

        traffic = page.locator("#traffic")
        expect(traffic).to_have_attribute("data-total", str(len(earlier + recent)), timeout=TIMEOUT_MS)
        page.locator("#range").select_option("5m")
        expect(page).to_have_url(re.compile(r"range=5m"), timeout=TIMEOUT_MS)
        expect(traffic).to_have_attribute("data-total", str(len(recent)), timeout=TIMEOUT_MS)
        assert charted_requests(page) == len(recent)
        page.locator("#range").select_option("1h")
        expect(traffic).to_have_attribute("data-total", str(len(recent)), timeout=TIMEOUT_MS)
        page.locator("#range").select_option("all")
        expect(traffic).to_have_attribute("data-total", str(len(earlier + recent)), timeout=TIMEOUT_MS)
        assert charted_requests(page) == len(earlier + recent)
        page.close()
    assert problems == []
    for name in ("", "-empty", "-consumers", "-errors", "-routes", "-route-drill-down"):
        assert (DOCS_IMAGES / f"dashboard{name}.png").stat().st_size > 5_000
