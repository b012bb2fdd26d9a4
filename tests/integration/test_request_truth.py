"""The true event whatever produced the span, over real sockets to the strict dev ingest.

FastAPI's own telemetry set up by hand, FastAPI and Starlette under ``opentelemetry-instrument``
(with and without a trace exporter, so both span sources), mounted sub-apps, Host routes, a
Django REST framework project, a Flask 405 and streamed Flask and Django bodies.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from beacon_otel.devingest import DevIngest
from tests.integration.conftest import VENV_BIN, Launch, OtlpReceiver, Server, clean_environ, free_port

pytestmark = pytest.mark.integration

API_KEY = "key-live-42"
TOKEN = "Bearer tok-xyz"
TOKEN_HASH = "hash_" + hashlib.sha256(TOKEN.encode()).hexdigest()[:12]
JSON = {"Content-Type": "application/json"}
BAD_ITEM = b'{"name": "pen", "price": "free"}'
PRICE_ERROR = {
    "field": "body.price",
    "message": "Input should be a valid number, unable to parse string as a number",
    "type": "float_parsing",
}


@dataclass
class Call:
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    route: str = ""
    status: int = 200
    consumer: str | None = None
    error: str | None = None
    validation_errors: list[dict[str, str]] | None = None


FASTAPI_CALLS = [
    Call("GET", "/users/7", {"X-API-Key": API_KEY}, route="/users/{user_id}", consumer=API_KEY),
    Call("GET", "/users/8", {"Authorization": TOKEN}, route="/users/{user_id}", consumer=TOKEN_HASH),
    Call(
        "GET", "/users/9", {"X-API-Key": "revoked"}, route="/users/{user_id}", status=401, consumer="revoked"
    ),
    Call(
        "POST",
        "/items",
        {**JSON, "X-API-Key": API_KEY},
        BAD_ITEM,
        "/items",
        422,
        API_KEY,
        None,
        [PRICE_ERROR],
    ),
    Call("GET", "/boom", route="/boom", status=500, error="RuntimeError: kaboom"),
    Call("GET", "/nowhere", {"X-API-Key": API_KEY}, route="/nowhere", status=404, consumer=API_KEY),
    Call("GET", "/reports/r199/5", route="/reports/r199/{report_id}"),
    Call("POST", "/v2/orders", JSON, BAD_ITEM, "/v2/orders", 422, None, None, [PRICE_ERROR]),
    Call("GET", "/v2/orders/3", route="/v2/orders/{order_id}"),
    Call("GET", "/v2/orders/0", route="/v2/orders/{order_id}", status=500, error="KeyError: 'order 0'"),
    Call("GET", "/v2/missing", route="/v2/missing", status=404),
    Call("GET", "/pages/about", route="/pages/{name}"),
]


def beacon_env(ingest: DevIngest, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "BEACON_INGEST_KEY": "ingest-key",
        "BEACON_INGEST_URL": ingest.base_url,
        "BEACON_FLUSH_INTERVAL": "0.2",
        "BEACON_STORAGE_PATH": str(tmp_path / f"spool-{uuid.uuid4().hex[:6]}"),
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        **extra,
    }


def check(server: Server, ingest: DevIngest, calls: list[Call]) -> list[dict[str, Any]]:
    """Send every call; exactly one event each arrives, with the expected content."""
    for call in calls:
        status, _ = server.request(call.method, call.path, call.headers, call.body)
        assert status == call.status, (call, server.log())
    ingest.wait_for_events(len(calls), timeout=60)
    server.request("GET", "/__flush_marker__")  # one more request: its event comes after any duplicate
    events = [
        e for e in ingest.wait_for_events(len(calls) + 1, timeout=60) if e["path"] != "/__flush_marker__"
    ]
    assert len(events) == len(calls), events
    stats = ingest.stats()
    assert stats["batches_rejected"] == 0, stats["rejections"]
    by_request = {(e["method"], e["path"], e["status"]): e for e in events}
    for call in calls:
        event = by_request[(call.method, call.path.split("?")[0], call.status)]
        got = (event["route"], event["consumer"], event["error"], event.get("validation_errors"))
        assert got == (call.route, call.consumer, call.error, call.validation_errors), (call, event)
    return events


@pytest.fixture
def plain_server(tmp_path: Path) -> Iterator[Any]:
    """Start a server without opentelemetry-instrument (manual setup); killed at teardown."""
    servers: list[Server] = []

    def start(argv: list[str], env: dict[str, str]) -> Server:
        port = free_port()
        full_env = {**clean_environ(), **env}
        server = Server(
            argv=[str(VENV_BIN / argv[0]), *(a.format(port=port) for a in argv[1:])],
            env=full_env,
            log_path=tmp_path / f"plain-{len(servers)}.log",
            port=port,
        )
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.kill()


UVICORN = ["uvicorn", "--host", "127.0.0.1", "--port", "{port}"]


def test_fastapi_native_telemetry_manual_setup(plain_server: Any, ingest: DevIngest, tmp_path: Path) -> None:
    """FastAPI(telemetry={"tracer_provider": provider}) + BeaconSpanProcessor, nothing else: consumer
    by both header rules, 422 details, exception text, mounted apps' routes, errors and 404s."""
    env = beacon_env(ingest, tmp_path, REQUEST_APP_NATIVE="1")
    server = plain_server([*UVICORN, "request_fastapi:app"], env)
    check(server, ingest, FASTAPI_CALLS)


@pytest.mark.parametrize("exporter", ["none", "otlp"], ids=["beacon-alone", "beside-otlp"])
def test_fastapi_under_autorun_both_span_sources(
    launch: Launch, ingest: DevIngest, otlp: OtlpReceiver, tmp_path: Path, exporter: str
) -> None:
    """Zero-code FastAPI: FastAPI's own telemetry serves Beacon alone; beside OTLP the contrib
    instrumentation the user installed runs as before. Same events either way."""
    service = f"run-{uuid.uuid4().hex[:8]}"
    env = beacon_env(
        ingest,
        tmp_path,
        OTEL_TRACES_EXPORTER=exporter,
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=otlp.endpoint,
        OTEL_BSP_SCHEDULE_DELAY="200",
        OTEL_SERVICE_NAME=service,
    )
    server = launch([*UVICORN, "request_fastapi:app"], env)
    check(server, ingest, FASTAPI_CALLS)
    if exporter == "otlp":
        # The user's spans are the contrib instrumentation's, as without Beacon.
        otlp.wait_for_server_spans(service, len(FASTAPI_CALLS), timeout=30)
        names = {span.name for span in otlp.spans(service) if span.is_server}
        assert "GET /users/{user_id}" in names


def test_starlette_with_fastapi_mounted_and_host_routes(
    launch: Launch, ingest: DevIngest, tmp_path: Path
) -> None:
    """Zero-code Starlette: a mounted FastAPI's 422 details, exception text and 404; Host routes
    report the inner template (two tenants, one route), not each concrete path."""
    host_a, host_b = {"Host": "acme.example.com"}, {"Host": "globex.example.com"}
    calls = [
        Call("POST", "/api/items", JSON, BAD_ITEM, "/api/items", 422, None, None, [PRICE_ERROR]),
        Call("GET", "/api/items/0", route="/api/items/{item_id}", status=500, error="LookupError: item 0"),
        Call("GET", "/api/nothing", route="/api/nothing", status=404),
        Call("GET", "/t/home", host_a, route="/t/{name}"),
        Call("GET", "/t/about", host_b, route="/t/{name}"),
        Call("GET", "/docs/intro", host_a, route="/docs/{slug}"),
    ]
    env = beacon_env(ingest, tmp_path, OTEL_TRACES_EXPORTER="none")
    server = launch([*UVICORN, "request_starlette:app"], env)
    check(server, ingest, calls)


GUNICORN = [
    "gunicorn",
    "--workers",
    "1",
    "--threads",
    "4",
    "--bind",
    "127.0.0.1:{port}",
    "--no-control-socket",
]


def test_drf_router_and_re_path_routes_and_a_streamed_django_response(
    launch: Launch, ingest: DevIngest, tmp_path: Path
) -> None:
    """Django REST framework router routes and re_path read as templates; a streamed response
    lasts until its last byte."""
    calls = [
        Call("GET", "/api/books/", {"X-API-Key": API_KEY}, route="/api/books/", consumer=API_KEY),
        Call("GET", "/api/books/1/", route="/api/books/<pk>/"),
        Call("GET", "/api/books/2.json", route="/api/books/<pk>.<format>"),
        Call("GET", "/api/books.json", route="/api/books.<format>"),
        Call("GET", "/legacy/1999/", route="/legacy/<year>/"),
        Call("GET", "/download?duration=1.2", route="/download"),
    ]
    env = beacon_env(
        ingest, tmp_path, OTEL_TRACES_EXPORTER="none", DJANGO_SETTINGS_MODULE="drfproject.settings"
    )
    server = launch([*GUNICORN, "drfproject.wsgi"], env)
    events = check(server, ingest, calls)
    download = next(e for e in events if e["route"] == "/download")
    assert download["duration_ms"] >= 1200


def test_flask_405_and_streamed_body(launch: Launch, ingest: DevIngest, tmp_path: Path) -> None:
    """Flask: a 405 has the rule that matched the path; a streamed body lasts until its last byte."""
    calls = [
        Call("DELETE", "/users/3", route="/users/<int:user_id>", status=405),
        Call("PUT", "/users/3", route="/users/<int:user_id>"),
        Call("GET", "/drip?duration=1.2", route="/drip"),
    ]
    env = beacon_env(ingest, tmp_path, OTEL_TRACES_EXPORTER="none")
    server = launch([*GUNICORN, "request_flask:app"], env)
    events = check(server, ingest, calls)
    drip = next(e for e in events if e["route"] == "/drip")
    assert drip["duration_ms"] >= 1200


@pytest.mark.parametrize(
    "argv",
    [
        ["uvicorn", "--host", "127.0.0.1", "--port", "{port}", "fastapi_app:app"],
        ["gunicorn", "--bind", "127.0.0.1:{port}", "--no-control-socket", "flask_app:app"],
    ],
    ids=["ASGI uvicorn", "WSGI gunicorn"],
)
def test_a_header_sent_twice_names_its_first_value_under_asgi_and_wsgi(
    argv: list[str], launch: Launch, ingest: DevIngest, tmp_path: Path
) -> None:
    """Two X-API-Key headers: the consumer is the first value on both (WSGI servers join them)."""
    import http.client

    server = launch(argv, beacon_env(ingest, tmp_path, OTEL_TRACES_EXPORTER="none"))
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=15)
    try:
        connection.putrequest("GET", "/users/12")
        connection.putheader("X-API-Key", "first-key")
        connection.putheader("X-API-Key", "second-key")
        connection.endheaders()
        assert connection.getresponse().status == 200
    finally:
        connection.close()
    [event] = ingest.wait_for_events(1, timeout=60)
    assert event["consumer"] == "first-key"
