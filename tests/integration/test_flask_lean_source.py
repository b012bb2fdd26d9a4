"""Flask under ``opentelemetry-instrument gunicorn``: the lean span source and the stock
instrumentation make the same events at the strict dev ingest.

With Beacon alone (no exporter) auto-run installs beacon-otel's lean span source; with
``BEACON_SERVER_SPANS=stock`` it loads the contrib Flask instrumentation. The same requests to a
realistic app (blueprints, auth in ``before_request`` naming the consumer, 403/404/405/500, a
streamed download) must become the same events either way.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from beacon_otel.devingest import DevIngest

from .conftest import Launch

pytestmark = pytest.mark.integration

GUNICORN = ["gunicorn", "--workers", "1", "--bind", "127.0.0.1:{port}", "--no-control-socket"]
APP = "realistic_flask:app"
API_KEY = "key-live-7"
DOWNLOAD_S = 0.8

CALLS: list[tuple[str, str, dict[str, str], int]] = [
    ("GET", "/api/v1/orders/1", {"X-API-Key": API_KEY}, 200),
    ("PUT", "/api/v1/orders/2", {"X-Session": "tok-bob", "X-API-Key": API_KEY}, 200),
    ("DELETE", "/api/v1/orders/3", {"X-API-Key": API_KEY}, 405),
    ("GET", "/api/v1/orders/4/items/pen-9", {"Authorization": "Bearer t-1"}, 200),
    ("GET", "/api/v1/orders/0", {"X-Session": "tok-ann"}, 500),
    ("GET", "/api/v1/nowhere", {}, 404),
    ("GET", "/admin/stats", {"X-Session": "tok-bob"}, 403),
    ("GET", "/admin/stats", {"X-Session": "tok-ann"}, 200),
    ("GET", f"/api/v1/export?duration={DOWNLOAD_S}", {"X-API-Key": API_KEY}, 200),
    (
        "GET",
        "/api/v1/orders/5",
        {"X-API-Key": API_KEY, "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
        200,
    ),
]
STARTED = "INFO beacon-otel: sending to "
COMPARED = ("method", "route", "path", "status", "consumer", "error", "validation_errors")


def serve(launch: Launch, ingest: DevIngest, tmp_path: Path, **extra: str) -> tuple[str | None, list[Any]]:
    """Serve every call, then SIGTERM; the span's scope as the app saw it, and the events."""
    env = {
        "BEACON_INGEST_KEY": "ingest-key",
        "BEACON_INGEST_URL": ingest.base_url,
        "BEACON_STORAGE_PATH": str(tmp_path / f"spool-{uuid.uuid4().hex[:6]}"),
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        **extra,
    }
    server = launch([*GUNICORN, APP], env)
    for method, path, headers, status in CALLS:
        got, _ = server.request(method, path, headers)
        assert got == status, (method, path, server.log())
    got, body = server.request("GET", "/scope")
    assert got == 200
    assert server.terminate() == 0
    events = ingest.wait_for_events(len(CALLS) + 1, timeout=60)
    assert ingest.stats()["batches_rejected"] == 0
    # Beacon's one line is where events go: no error, no warning.
    lines = server.log().splitlines()
    assert [line for line in lines if "beacon-otel: " in line and STARTED not in line] == []
    ingest.reset()
    return json.loads(body)["scope"], events


def comparable(events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return sorted(tuple(str(event.get(key)) for key in COMPARED) for event in events)


def test_lean_source_and_stock_instrumentation_make_the_same_events(
    launch: Launch, ingest: DevIngest, tmp_path: Path
) -> None:
    """Same routes (blueprint prefixes, the 405's rule, the 404's path), statuses, consumers
    (headers, set_consumer() in before_request), errors; the download lasts until its last byte."""
    lean_scope, lean = serve(launch, ingest, tmp_path)
    stock_scope, stock = serve(launch, ingest, tmp_path, BEACON_SERVER_SPANS="stock")
    assert lean_scope == "beacon_otel.frameworks.flask"
    assert stock_scope == "opentelemetry.instrumentation.flask"
    assert comparable(lean) == comparable(stock)
    by_route = {(e["method"], e["route"], e["status"]): e for e in lean}
    assert by_route[("DELETE", "/api/v1/orders/<int:order_id>", 405)]["consumer"] == API_KEY
    assert by_route[("GET", "/api/v1/orders/<int:order_id>", 500)]["error"] == "KeyError: 'order 0'"
    assert by_route[("GET", "/api/v1/orders/<int:order_id>", 500)]["consumer"] == "ann"
    assert by_route[("PUT", "/api/v1/orders/<int:order_id>", 200)]["consumer"] == "bob"
    assert by_route[("GET", "/api/v1/nowhere", 404)]["path"] == "/api/v1/nowhere"
    assert by_route[("GET", "/admin/stats", 403)]["consumer"] == "bob"
    for events in (lean, stock):
        (download,) = [e for e in events if e["route"] == "/api/v1/export"]
        assert download["duration_ms"] >= DOWNLOAD_S * 1000


@pytest.mark.parametrize(
    ("settings", "scope"),
    [
        ({}, "beacon_otel.frameworks.flask"),
        ({"OTEL_TRACES_EXPORTER": "console"}, "opentelemetry.instrumentation.flask"),
        ({"OTEL_METRICS_EXPORTER": "console"}, "opentelemetry.instrumentation.flask"),
        ({"BEACON_SERVER_SPANS": "stock"}, "opentelemetry.instrumentation.flask"),
        ({"BEACON_ENABLED": "false"}, "opentelemetry.instrumentation.flask"),
    ],
    ids=["beacon-alone", "trace-exporter", "metrics-exporter", "forced-stock", "beacon-off"],
)
def test_which_instrumentation_serves_flask(
    launch: Launch, ingest: DevIngest, tmp_path: Path, settings: dict[str, str], scope: str
) -> None:
    """The lean source only with Beacon on and alone; any exporter, the setting, or Beacon off: the
    contrib instrumentation, as without beacon-otel."""
    env = {
        "BEACON_INGEST_KEY": "ingest-key",
        "BEACON_INGEST_URL": ingest.base_url,
        "BEACON_STORAGE_PATH": str(tmp_path / "spool"),
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_METRIC_EXPORT_INTERVAL": "600000",
        **settings,
    }
    server = launch([*GUNICORN, APP], env)
    status, body = server.request("GET", "/scope")
    assert status == 200, server.log()
    assert json.loads(body)["scope"] == scope
