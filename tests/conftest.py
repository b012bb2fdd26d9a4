"""Shared fixtures: a provider with an in-memory exporter beside a dry-run Beacon processor."""

from __future__ import annotations

import asyncio
import http.server
import importlib.metadata
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from packaging.version import Version

from beacon_otel import BeaconConfig, BeaconSpanProcessor


def requires(distribution: str, minimum: str) -> pytest.MarkDecorator:
    """Skips a test of a feature that ``distribution`` gained in ``minimum``, naming both versions.

    The version matrix's oldest session installs the lowest releases pyproject.toml allows (FastAPI
    0.110 has no native telemetry): the test still runs wherever the feature exists.
    """
    installed = importlib.metadata.version(distribution)
    return pytest.mark.skipif(
        Version(installed) < Version(minimum),
        reason=f"needs {distribution}>={minimum} (installed: {installed})",
    )


@dataclass
class Pipeline:
    """A TracerProvider carrying an InMemorySpanExporter and a dry-run BeaconSpanProcessor."""

    provider: TracerProvider
    exporter: InMemorySpanExporter
    processor: BeaconSpanProcessor

    def events(self) -> list[dict[str, Any]]:
        """Flush and return what Beacon would have sent."""
        assert self.processor.force_flush(5_000)
        return self.processor.dry_run_events()


def make_pipeline(**config: Any) -> Pipeline:
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    # Every request makes an event here, /healthz and /v2/ping included (tests/test_exclude_paths.py
    # covers the default list).
    config.setdefault("exclude_paths", ())
    processor = BeaconSpanProcessor(BeaconConfig(dry_run=True, **config))
    provider.add_span_processor(processor)
    return Pipeline(provider, exporter, processor)


@pytest.fixture(autouse=True)
def private_state_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default spool directory of every test lives in a temporary directory."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("state")))


@pytest.fixture
def pipeline() -> Iterator[Pipeline]:
    """A fresh dry-run pipeline, shut down after the test."""
    built = make_pipeline()
    yield built
    built.provider.shutdown()


def asgi_request(
    app: Any, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
) -> tuple[int, bytes]:
    """Drive one HTTP request through an ASGI app in-process; returns (status, body)."""
    raw_path, _, query = path.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": raw_path,
        "raw_path": raw_path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode("latin-1")) for k, v in (headers or {}).items()]
        + [(b"host", b"testserver"), (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
    }
    received = False
    response: dict[str, Any] = {"status": 0, "body": b""}

    async def receive() -> dict[str, Any]:
        nonlocal received
        if received:
            await asyncio.sleep(3600)
        received = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            response["status"] = message["status"]
        elif message["type"] == "http.response.body":
            response["body"] += message.get("body", b"")

    async def run() -> None:
        try:
            await app(scope, receive, send)
        except Exception:
            if not response["status"]:
                response["status"] = 500  # what a server answers when the app raises

    asyncio.run(run())
    return response["status"], response["body"]


def json_body(body: bytes) -> Any:
    return json.loads(body.decode())


def configure_django() -> None:
    """Django settings for the in-process Django tests (settings are per process)."""
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            DEBUG=False,
            ALLOWED_HOSTS=["*"],
            ROOT_URLCONF="tests.frameworks.django.urls",
            MIDDLEWARE=[],
            SECRET_KEY="unit-tests",
            USE_TZ=True,
        )
        django.setup()


class RecordingHandler(http.server.BaseHTTPRequestHandler):
    """Answers with the server's scripted status and records each request."""

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        body = self.rfile.read(length)
        server: Any = self.server
        server.requests.append((self.path, dict(self.headers), body))
        status, headers = server.script.pop(0) if server.script else (202, {})
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[Any]:
    """A loopback HTTP server answering scripted statuses and recording requests."""
    httpd: Any = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RecordingHandler)
    httpd.requests = []
    httpd.script = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def url_of(httpd: Any) -> str:
    """The base URL of a server started by the ``server`` fixture."""
    return f"http://127.0.0.1:{httpd.server_address[1]}"


@pytest.fixture(autouse=True)
def raise_internal_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    """Beacon's own bugs propagate in tests instead of being logged by the guard."""
    monkeypatch.setenv("BEACON_RAISE_INTERNAL_ERRORS", "1")
