"""The dev ingest beside a real browser: headless Chromium (Debian's) pages of another origin,
a DNS-rebinding name, and the dashboard's CSP."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from playwright.sync_api import expect

from beacon_otel.devingest import DevIngest, Fault
from tests.support.browser import TIMEOUT_MS, system_chromium
from tests.support.events import wire_event

REBIND_NAME = "rebind.attacker.example"
AUTH = {"Authorization": "Bearer dev", "Content-Type": "application/json"}
EVENT = wire_event(consumer="sk_live_raw_key")

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless chromium from the system (never a downloaded browser)."""
    # What DNS rebinding achieves: the attacker's name resolves to this machine's loopback.
    with system_chromium(f"--host-resolver-rules=MAP {REBIND_NAME} 127.0.0.1") as browser:
        yield browser


@pytest.fixture
def ingest() -> Iterator[DevIngest]:
    """A dev ingest holding 20 events, as after a developer's earlier runs."""
    with DevIngest() as server:
        body = json.dumps({"events": [EVENT] * 20})
        assert requests.post(server.url, data=body, headers=AUTH, timeout=10).status_code == 202
        yield server


class _Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        page = b"<!doctype html><title>another site</title><p>nothing to see"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def other_site() -> Iterator[str]:
    """A page of another origin (another port of loopback), as any site the developer visits."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# Each a simple request a page may send anywhere without asking: the browser sends it, the
# page never sees the answer.
ATTACK = """async (base) => {
  const faults = JSON.stringify(Array(50).fill({status: 401}));
  const sent = [];
  for (const [path, init] of [
    ["/v1/_faults", {method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"}, body: faults}],
    ["/v1/_faults", {method: "POST", mode: "no-cors", body: new URLSearchParams({x: faults})}],
    ["/v1/ingest", {method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"},
                    body: JSON.stringify({events: [{}]})}],
    ["/v1/_reset", {method: "POST", mode: "no-cors"}],
  ]) {
    const response = await fetch(base + path, init);
    sent.push(response.type);
  }
  return sent;
}"""


def test_a_page_of_another_origin_cannot_drive_it(browser: Any, ingest: DevIngest, other_site: str) -> None:
    """No-cors fetches from another origin to _faults, ingest and _reset are sent, and change nothing."""
    ingest.script([Fault(status=503)])
    page = browser.new_page()
    page.goto(other_site, timeout=TIMEOUT_MS)
    assert page.evaluate(ATTACK, ingest.base_url) == ["opaque"] * 4  # the browser did send them
    page.close()
    assert ingest.faults == [Fault(status=503)]  # neither replaced by 50 401s nor consumed
    assert ingest.stats()["events_stored"] == 20
    assert ingest.stats()["batches_rejected"] == 0
    assert [a["outcome"] for a in ingest.arrivals()] == ["accepted"]


def test_a_form_of_another_origin_cannot_reset_it(browser: Any, ingest: DevIngest, other_site: str) -> None:
    """A cross-site form POST (a navigation, text/plain) to _reset is refused: nothing is wiped."""
    page = browser.new_page()
    page.goto(other_site, timeout=TIMEOUT_MS)
    form = """(action) => {
      const form = document.createElement("form");
      form.method = "POST"; form.action = action; form.enctype = "text/plain";
      const field = document.createElement("input");
      field.name = "{}"; field.value = ""; form.append(field); document.body.append(form);
      form.submit();
    }"""
    with page.expect_navigation(timeout=TIMEOUT_MS) as navigation:
        page.evaluate(form, ingest.base_url + "/v1/_reset")
    assert navigation.value.status == 403
    page.close()
    assert ingest.stats()["events_stored"] == 20


def test_a_rebinding_name_reads_nothing(browser: Any, ingest: DevIngest) -> None:
    """Under a name that resolves to loopback (DNS rebinding), the page and every read are refused."""
    page = browser.new_page()
    rebound = f"http://{REBIND_NAME}:{ingest.port}"
    response = page.goto(rebound + "/v1/events", timeout=TIMEOUT_MS)
    assert response is not None and response.status == 421
    assert "sk_live_raw_key" not in page.content()
    # Same-origin now, as far as the browser knows: the reads a rebinding script would make.
    read = """async () => Promise.all(["/v1/events", "/v1/summary", "/v1/stats", "/"].map(
      async (path) => { const r = await fetch(path); return [r.status, await r.text()]; }))"""
    for status, text in page.evaluate(read):
        assert status == 421
        assert "sk_live_raw_key" not in text
    reset = """async () => (await fetch("/v1/_reset",
      {method: "POST", headers: {"Content-Type": "application/json"}, body: "{}"})).status"""
    assert page.evaluate(reset) == 421
    page.close()
    assert ingest.stats()["events_stored"] == 20


def test_the_dashboard_runs_its_own_script_only(browser: Any, ingest: DevIngest) -> None:
    """The CSP names the page's script and style by hash: they run; an injected inline script or
    style attribute does not."""
    page = browser.new_page()
    response = page.goto(ingest.base_url + "/", timeout=TIMEOUT_MS)
    assert response is not None
    policy = response.headers["content-security-policy"]
    assert "'unsafe-inline'" not in policy and "script-src 'sha256-" in policy
    expect(page.locator("#routes tbody tr")).to_have_count(1, timeout=TIMEOUT_MS)  # its own script ran
    expect(page.locator("#routes")).to_contain_text("/users/{user_id}", timeout=TIMEOUT_MS)
    injected = """() => {
      const script = document.createElement("script");
      script.textContent = "window.injected = 1";
      document.body.append(script);
      document.body.insertAdjacentHTML("beforeend", '<p id="styled" style="color: rgb(1, 2, 3)">x</p>');
      return [window.injected === 1, getComputedStyle(document.getElementById("styled")).color];
    }"""
    ran, colour = page.evaluate(injected)
    assert ran is False
    assert colour != "rgb(1, 2, 3)"
    page.close()


def test_beyond_loopback_the_dashboard_reads_with_the_key_in_its_address(browser: Any) -> None:
    """Bound beyond loopback, /#key=KEY shows the figures; without it the page says it needs the key."""
    with DevIngest(host="0.0.0.0", ingest_key="dev") as ingest:
        base = f"http://127.0.0.1:{ingest.port}"
        body = json.dumps({"events": [EVENT]})
        assert requests.post(base + "/v1/ingest", data=body, headers=AUTH, timeout=10).status_code == 202
        page = browser.new_page()
        page.goto(base + "/", timeout=TIMEOUT_MS)
        expect(page.locator("#updated")).to_contain_text("needs its key", timeout=TIMEOUT_MS)
        assert "sk_live_raw_key" not in page.content()
        page.goto(base + "/?status=2xx#key=dev", timeout=TIMEOUT_MS)
        page.reload(timeout=TIMEOUT_MS)  # a fragment change alone does not load the page again
        expect(page.locator("#routes")).to_contain_text("/users/{user_id}", timeout=TIMEOUT_MS)
        expect(page.locator("#consumer")).to_contain_text("sk_live_raw_key", timeout=TIMEOUT_MS)
        assert page.url.endswith("?status=2xx#key=dev")  # the filter is kept in the address, and the key
        page.close()
