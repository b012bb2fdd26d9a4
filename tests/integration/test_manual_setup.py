"""Manual setup over real sockets: FastAPI on uvicorn, Flask and Django on a threaded WSGI server.

Each app is instrumented by hand with ``BeaconSpanProcessor`` beside an ``InMemorySpanExporter``
and ships to the strict dev ingest: every request must arrive exactly once, with the right
route template, status, consumer and error, and no batch may be rejected.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from beacon_otel import BeaconConfig, BeaconSpanProcessor
from beacon_otel.devingest import DevIngest
from tests.conftest import configure_django

pytestmark = pytest.mark.integration

API_KEY = "live-key-777"
BEARER = "Bearer tok-abc-123"
BEARER_HASH = "hash_" + hashlib.sha256(BEARER.encode()).hexdigest()[:12]
Expected = tuple[str, str, str, int, "str | None", "str | None"]


@pytest.fixture
def ingest() -> Iterator[DevIngest]:
    with DevIngest(ingest_key="ingest-key") as server:
        yield server


def pipeline_for(ingest: DevIngest) -> tuple[TracerProvider, InMemorySpanExporter, BeaconSpanProcessor]:
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    config = BeaconConfig(ingest_key="ingest-key", ingest_url=ingest.url, batch_size=7, flush_interval=0.2)
    processor = BeaconSpanProcessor(config)
    provider.add_span_processor(processor)
    return provider, exporter, processor


def listening_socket() -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock


@contextlib.contextmanager
def serve_uvicorn(app: Any) -> Iterator[str]:
    import uvicorn

    sock = listening_socket()
    server = uvicorn.Server(uvicorn.Config(app, log_level="critical", lifespan="off"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    try:
        wait_listening(sock, lambda: server.started)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@contextlib.contextmanager
def serve_wsgi(app: Any) -> Iterator[str]:
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def wait_listening(sock: socket.socket, ready: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise AssertionError("server did not start in time")
        time.sleep(0.01)  # polling a flag with a deadline


def exercise(base: str, calls: list[tuple[str, str, dict[str, str], Any]]) -> list[int]:
    statuses = []
    for method, path, headers, body in calls:
        # A fresh connection per call: servers may close a connection after an app error.
        response = requests.request(method, base + path, headers=headers, json=body, timeout=10)
        statuses.append(response.status_code)
    return statuses


def check_delivery(
    ingest: DevIngest,
    processor: BeaconSpanProcessor,
    exporter: InMemorySpanExporter,
    expected: list[Expected],
) -> list[dict[str, Any]]:
    assert processor.force_flush(10_000)
    events = ingest.wait_for_events(len(expected), timeout=10)
    arrived = Counter(
        (e["method"], e["route"], e["path"], e["status"], e["consumer"], e["error"]) for e in events
    )
    assert arrived == Counter(expected)
    stats = ingest.stats()
    assert stats["batches_rejected"] == 0, stats["rejections"]
    assert processor.stats.snapshot()["dropped_total"] == 0
    server_spans = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert len(server_spans) >= len(expected)  # the in-memory exporter still gets every span
    for span in exporter.get_finished_spans():
        for value in (span.attributes or {}).values():
            assert API_KEY not in str(value) and "tok-abc" not in str(value)
    return events


def test_fastapi_on_uvicorn(ingest: DevIngest) -> None:
    """FastAPI served by uvicorn: templates incl. a mounted sub-app, consumers, 422, 404, 500."""
    from fastapi import FastAPI
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    from tests.frameworks.fastapi.manual_fastapi import build_app

    provider, exporter, processor = pipeline_for(ingest)
    app: FastAPI = build_app()
    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider, **processor.hooks("fastapi"))
    calls = [
        ("GET", "/users/1?verbose=1", {"X-API-Key": API_KEY}, None),
        ("GET", "/users/2", {"Authorization": BEARER}, None),
        ("POST", "/orders", {"X-API-Key": API_KEY}, {"items": [{"price": 3.5}]}),
        ("POST", "/orders", {}, {"items": [{"price": "free"}]}),
        ("GET", "/api/orders/9", {"X-API-Key": API_KEY}, None),
        ("GET", "/fail", {}, None),
        ("GET", "/missing/page", {}, None),
    ] * 3
    try:
        with serve_uvicorn(app) as base:
            statuses = exercise(base, calls)
        assert statuses[:7] == [200, 200, 201, 422, 200, 500, 404]
        expected: list[Expected] = [
            ("GET", "/users/{user_id}", "/users/1", 200, API_KEY, None),
            ("GET", "/users/{user_id}", "/users/2", 200, BEARER_HASH, None),
            ("POST", "/orders", "/orders", 201, API_KEY, None),
            ("POST", "/orders", "/orders", 422, None, None),
            ("GET", "/api/orders/{order_id}", "/api/orders/9", 200, API_KEY, None),
            ("GET", "/fail", "/fail", 500, None, "RuntimeError: payment backend down"),
            ("GET", "/missing/page", "/missing/page", 404, None, None),
        ] * 3
        events = check_delivery(ingest, processor, exporter, expected)
        invalid = [e for e in events if e["status"] == 422]
        assert all(e["validation_errors"][0]["field"] == "body.items.0.price" for e in invalid)
    finally:
        FastAPIInstrumentor.uninstrument_app(app)
        provider.shutdown()


def test_flask_on_a_threaded_wsgi_server(ingest: DevIngest) -> None:
    """Flask served over a socket: <int:...> templates, consumers, errors and 404s."""
    from flask import Flask
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    app = Flask("manual_flask")

    @app.route("/users/<int:user_id>")
    def user(user_id: int) -> dict[str, int]:
        return {"id": user_id}

    @app.route("/orders", methods=["POST"])
    def create() -> tuple[dict[str, bool], int]:
        return {"ok": True}, 201

    @app.route("/fail")
    def fail() -> str:
        raise ValueError("ledger mismatch")

    provider, exporter, processor = pipeline_for(ingest)
    FlaskInstrumentor().instrument_app(app, tracer_provider=provider, **processor.hooks("flask"))
    calls = [
        ("GET", "/users/5?x=y", {"X-API-Key": API_KEY}, None),
        ("POST", "/orders", {"Authorization": BEARER}, {"a": 1}),
        ("GET", "/fail", {"X-API-Key": API_KEY}, None),
        ("GET", "/nowhere", {}, None),
    ] * 4
    try:
        with serve_wsgi(app) as base:
            statuses = exercise(base, calls)
        assert statuses[:4] == [200, 201, 500, 404]
        expected: list[Expected] = [
            ("GET", "/users/<int:user_id>", "/users/5", 200, API_KEY, None),
            ("POST", "/orders", "/orders", 201, BEARER_HASH, None),
            ("GET", "/fail", "/fail", 500, API_KEY, "ValueError: ledger mismatch"),
            ("GET", "/nowhere", "/nowhere", 404, None, None),
        ] * 4
        check_delivery(ingest, processor, exporter, expected)
    finally:
        FlaskInstrumentor().uninstrument_app(app)
        provider.shutdown()


def test_django_on_a_threaded_wsgi_server(ingest: DevIngest) -> None:
    """Django served over a socket: /users/<int:pk>, the root route, errors and Http404."""
    configure_django()
    from django.core.wsgi import get_wsgi_application
    from opentelemetry.instrumentation.django import DjangoInstrumentor

    provider, exporter, processor = pipeline_for(ingest)
    DjangoInstrumentor().instrument(tracer_provider=provider, **processor.hooks("django"))
    calls = [
        ("GET", "/users/12", {"X-API-Key": API_KEY}, None),
        ("GET", "/", {"Authorization": BEARER}, None),
        ("GET", "/explode", {}, None),
        ("GET", "/users/404", {"X-API-Key": API_KEY}, None),
    ] * 4
    try:
        with serve_wsgi(get_wsgi_application()) as base:
            statuses = exercise(base, calls)
        assert statuses[:4] == [200, 200, 500, 404]
        expected: list[Expected] = [
            ("GET", "/users/<int:pk>", "/users/12", 200, API_KEY, None),
            ("GET", "/", "/", 200, BEARER_HASH, None),
            ("GET", "/explode", "/explode", 500, None, "ZeroDivisionError: division by zero"),
            ("GET", "/users/<int:pk>", "/users/404", 404, API_KEY, None),
        ] * 4
        check_delivery(ingest, processor, exporter, expected)
    finally:
        DjangoInstrumentor().uninstrument()
        provider.shutdown()
