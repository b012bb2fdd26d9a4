"""Beacon adds no route lookup to a FastAPI request: the app's own routing is the only one.

The contrib FastAPI instrumentation names its span by matching every route of the app on every
request, so its cost grows with the app. Under auto-run with no trace exporter, FastAPI's own
telemetry serves Beacon instead and the route comes from routing itself: a request to the last
of N routes tries each route's pattern once, as in the app without OpenTelemetry.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from beacon_otel.devingest import DevIngest
from tests.conftest import requires
from tests.integration.conftest import Launch

pytestmark = [pytest.mark.integration, requires("fastapi", "0.142")]  # FastAPI's native telemetry

UVICORN = ["uvicorn", "--host", "127.0.0.1", "--port", "{port}", "--no-access-log", "sized_fastapi:app"]


def test_fastapi_route_table_is_matched_once_per_request(
    launch: Launch, ingest: DevIngest, tmp_path: Path
) -> None:
    """Zero-code FastAPI, Beacon alone: the last of 300 routes tries each route pattern once, and
    Beacon still reports its template."""
    env = {
        "BEACON_INGEST_KEY": "ingest-key",
        "BEACON_INGEST_URL": ingest.base_url,
        "BEACON_FLUSH_INTERVAL": "0.2",
        "BEACON_STORAGE_PATH": str(tmp_path / f"spool-{uuid.uuid4().hex[:6]}"),
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "SIZED_APP_ROUTES": "300",
    }
    server = launch(UVICORN, env)
    for item in (1, 2, 3):
        status, _ = server.request("GET", f"/r299/items/{item}")
        assert status == 200, server.log()
    events = ingest.wait_for_events(3, timeout=60)
    assert {event["route"] for event in events} == {"/r299/items/{item_id}"}, events

    status, body = server.request("GET", "/matches")
    assert status == 200, server.log()
    counted = json.loads(body)
    # Each request to the last route tries every pattern once; /matches tries its own (the first).
    assert counted["routes"] == 301
    assert counted["tried"] == 3 * counted["routes"] + 1, counted
