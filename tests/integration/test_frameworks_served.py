"""Every supported framework served by a real server over a socket, zero-code and by hand.

Each framework's example app (tests/apps/<framework>_app.py) gets one server per way in; all
of that framework's checks go through that one server (route template, both consumer header
rules, an unhandled exception's text, a 404, validation errors where the framework has them),
and the events must arrive exactly once at the strict dev ingest with nothing rejected.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from beacon_otel.devingest import DevIngest

from .conftest import Launch
from .test_manual_setup import pipeline_for, serve_uvicorn, serve_wsgi

pytestmark = pytest.mark.integration

API_KEY = "fw-key-123"
BEARER = "Bearer fw-token-456"
BEARER_HASH = "hash_" + hashlib.sha256(BEARER.encode()).hexdigest()[:12]
WITH_KEY = {"X-API-Key": API_KEY}
WITH_TOKEN = {"Authorization": BEARER}


@dataclass(frozen=True)
class Call:
    """One request and the event it must become."""

    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    json: Any = None
    route: str = ""
    status: int = 200
    consumer: str | None = None
    error: str | None = None
    validation_fields: tuple[str, ...] = ()


def calls_for(item: str, template: str, *extra: Call) -> list[Call]:
    """The checks every framework passes: template with both header rules, a 500 and a 404."""
    concrete = template.split("{")[0].split("<")[0] + "7"
    other = template.split("{")[0].split("<")[0] + "8"
    return [
        Call("GET", concrete, WITH_KEY, route=template, consumer=API_KEY),
        Call("GET", other, WITH_TOKEN, route=template, consumer=BEARER_HASH),
        Call("GET", "/boom", route="/boom", status=500, error="RuntimeError: kaboom"),
        Call("GET", f"/no/such/{item}", route=f"/no/such/{item}", status=404),
        *extra,
    ]


LITESTAR_CALLS = calls_for(
    "pet",
    "/zoo/pets/{pet_id:int}",
    Call(
        "POST",
        "/zoo/pets",
        WITH_KEY,
        {"name": "rex"},
        route="/zoo/pets",
        status=400,
        consumer=API_KEY,
        validation_fields=("body.data",),
    ),
)
BOTTLE_CALLS = calls_for("book", "/books/<book_id:int>")

UVICORN = ["uvicorn", "--host", "127.0.0.1", "--port", "{port}"]
GUNICORN = ["gunicorn", "--workers", "1", "--bind", "127.0.0.1:{port}", "--no-control-socket"]


def zero_code_env(ingest: DevIngest, tmp_path: Path) -> dict[str, str | None]:
    """Only Beacon's key and URL: no exporter, no hooks, nothing else configured."""
    return {
        "BEACON_INGEST_KEY": "ingest-key",
        "BEACON_INGEST_URL": ingest.base_url,
        "BEACON_FLUSH_INTERVAL": "0.2",
        "BEACON_STORAGE_PATH": str(tmp_path / "spool"),
    }


def exercise(base: str, calls: list[Call]) -> None:
    for call in calls:
        response = requests.request(
            call.method, base + call.path, headers=call.headers, json=call.json, timeout=15
        )
        assert response.status_code == call.status, (call, response.text[:300])


def check_events(ingest: DevIngest, calls: list[Call]) -> None:
    """Exactly one event per call, each with its route, status, consumer, error and validation fields."""
    events = ingest.wait_for_events(len(calls), timeout=60)

    def key(method: str, path: str) -> tuple[str, str]:
        return method, path

    assert Counter(key(e["method"], e["path"]) for e in events) == Counter(
        key(c.method, c.path) for c in calls
    )
    by_request = {key(e["method"], e["path"]): e for e in events}
    for call in calls:
        event = by_request[key(call.method, call.path)]
        got = (event["route"], event["status"], event["consumer"], event["error"])
        assert got == (call.route, call.status, call.consumer, call.error), event
        fields = tuple(item["field"] for item in event.get("validation_errors") or ())
        assert fields == call.validation_fields, event
    stats = ingest.stats()
    assert stats["batches_rejected"] == 0, stats


def serve_zero_code(
    launch: Launch, argv: list[str], ingest: DevIngest, tmp_path: Path, calls: list[Call]
) -> None:
    server = launch(argv, zero_code_env(ingest, tmp_path))
    exercise(f"http://127.0.0.1:{server.port}", calls)
    check_events(ingest, calls)
    assert server.terminate() in (0, -15), server.log()
    # Apps log their own tracebacks for /boom; Beacon must have nothing to say.
    assert [line for line in server.log().splitlines() if "beacon-otel" in line] == [], server.log()


@pytest.fixture
def ingest() -> Iterator[DevIngest]:
    with DevIngest(ingest_key="ingest-key") as server:
        yield server


# -- Litestar --------------------------------------------------------------------------------


def test_litestar_zero_code(launch: Launch, ingest: DevIngest, tmp_path: Path) -> None:
    """opentelemetry-instrument uvicorn: found through beacon-otel's litestar instrumentor entry point."""
    serve_zero_code(launch, [*UVICORN, "litestar_app:app"], ingest, tmp_path, LITESTAR_CALLS)


def test_litestar_by_hand(ingest: DevIngest) -> None:
    """LitestarInstrumentor.instrument_app with Beacon's hooks, served by uvicorn."""
    from beacon_otel.instrumentation.litestar import LitestarInstrumentor
    from tests.apps.litestar_app import build_app

    provider, _, processor = pipeline_for(ingest)
    app = build_app()
    LitestarInstrumentor.instrument_app(app, tracer_provider=provider, **processor.hooks("litestar"))
    try:
        with serve_uvicorn(app) as base:
            exercise(base, LITESTAR_CALLS)
        assert processor.force_flush(10_000)
        check_events(ingest, LITESTAR_CALLS)
    finally:
        provider.shutdown()


def test_litestar_own_plugin_by_hand(ingest: DevIngest) -> None:
    """Litestar's OpenTelemetryPlugin with Beacon's hook: one event per request, the template as route."""
    from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin

    from beacon_otel.instrumentation.litestar import LitestarInstrumentor
    from tests.apps.litestar_app import build_app

    provider, _, processor = pipeline_for(ingest)
    app = build_app(plugins=[OpenTelemetryPlugin(OpenTelemetryConfig(tracer_provider=provider))])
    LitestarInstrumentor.instrument_app(app, **processor.hooks("litestar"))
    try:
        with serve_uvicorn(app) as base:
            exercise(base, LITESTAR_CALLS)
        assert processor.force_flush(10_000)
        check_events(ingest, LITESTAR_CALLS)
    finally:
        provider.shutdown()


# -- Bottle ----------------------------------------------------------------------------------


def test_bottle_zero_code(launch: Launch, ingest: DevIngest, tmp_path: Path) -> None:
    """opentelemetry-instrument gunicorn: found through beacon-otel's bottle instrumentor entry point."""
    serve_zero_code(launch, [*GUNICORN, "bottle_app:app"], ingest, tmp_path, BOTTLE_CALLS)


def test_bottle_by_hand(ingest: DevIngest) -> None:
    """BottleInstrumentor.instrument_app with Beacon's hooks, on a threaded WSGI server."""
    from beacon_otel.instrumentation.bottle import BottleInstrumentor
    from tests.apps.bottle_app import build_app

    provider, _, processor = pipeline_for(ingest)
    app = build_app()
    BottleInstrumentor.instrument_app(app, tracer_provider=provider, **processor.hooks("bottle"))
    try:
        with serve_wsgi(app) as base:
            exercise(base, BOTTLE_CALLS)
        assert processor.force_flush(10_000)
        check_events(ingest, BOTTLE_CALLS)
    finally:
        provider.shutdown()


Builder = Callable[[], Any]
