"""Django's lean SERVER span end to end: a site built as sites are, under ``opentelemetry-instrument``.

With only ``BEACON_*`` set, auto-run serves Django's requests through beacon-otel's own span
source; with a trace exporter, through the contrib instrumentation. The dev ingest must get the
same events either way (less their times), under gunicorn and under uvicorn (Django's ASGI
handler), and the exporter the contrib instrumentation's spans.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from beacon_otel.devingest import DevIngest
from beacon_otel.frameworks.django import SERVER_SPANS_MIDDLEWARE

from .conftest import VENV_BIN, Launch, OtlpReceiver, clean_environ

pytestmark = pytest.mark.integration

API_KEY = "site-key-123"
BEARER = "Bearer site-token-456"
BEARER_HASH = "hash_" + hashlib.sha256(BEARER.encode()).hexdigest()[:12]
ORDER = "6f1c2b9e-8a51-4a3e-9c1b-2f6e1d7a0b55"
MISSING_ORDER = "00000000-0000-0000-0000-000000000404"


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    status: int = 200
    body: bytes | None = None


CALLS = [
    Call("GET", "/shop/products/7/", {"X-API-Key": API_KEY}),
    Call("GET", "/shop/products/blue-mug/reviews/", {"Authorization": BEARER}),
    Call("GET", f"/shop/orders/{ORDER}", {"X-Token": "ada"}),  # the app's token login: the resolver
    Call("GET", f"/shop/orders/{MISSING_ORDER}", status=404),  # Http404 raised by the view
    Call("GET", "/shop/checkout", {"X-API-Key": API_KEY}, status=405),
    Call("POST", "/shop/checkout", {"X-User": "user-9"}, status=201),  # set_consumer() in middleware
    Call("GET", "/shop/boom", status=500),
    Call("GET", "/shop/products/7", status=301),  # CommonMiddleware's APPEND_SLASH redirect
    Call("GET", "/accounts/me", {"X-Token": "grace"}),
    Call("GET", "/accounts/files/reports/2024/q1.pdf"),
    Call("GET", "/archive/2024/03/"),
    Call("GET", "/blobs/c0ffee"),
    Call("GET", "/no/such/page", status=404),
    Call("DELETE", "/blobs/c0ffee"),  # no method restriction: the view answers
    Call("GET", "/download?duration=0.8"),
    Call(
        "POST",
        "/api/books/",
        {"Content-Type": "application/json", "X-API-Key": API_KEY},
        400,
        b'{"title": ""}',
    ),
]
CONTRIB_MIDDLEWARE = "opentelemetry.instrumentation.django.middleware.otel_middleware._DjangoMiddleware"
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
UVICORN = ["uvicorn", "--host", "127.0.0.1", "--port", "{port}", "siteproject.asgi:application"]


def site_env(ingest: DevIngest, tmp_path: Path, **extra: str) -> dict[str, str | None]:
    return {
        "BEACON_INGEST_KEY": "ingest-key",
        "BEACON_INGEST_URL": ingest.base_url,
        "BEACON_FLUSH_INTERVAL": "0.2",
        "BEACON_STORAGE_PATH": str(tmp_path / f"spool-{uuid.uuid4().hex[:6]}"),
        "BEACON_CONSUMER_RESOLVER": "siteproject.auth:consumer_of",
        "DJANGO_SETTINGS_MODULE": "siteproject.settings",
        **extra,
    }


def served_events(
    launch: Launch, argv: list[str], env: dict[str, str | None]
) -> tuple[list[dict[str, Any]], str]:
    """Send every call; the events, sorted by request, once each has arrived exactly once, and
    the outermost middleware (which span source served them)."""
    with DevIngest(ingest_key="ingest-key") as ingest:
        env = {**env, "BEACON_INGEST_URL": ingest.base_url}
        server = launch(argv, env)
        for call in CALLS:
            status, _ = server.request(call.method, call.path, call.headers, call.body)
            assert status == call.status, (call, server.log())
        events = ingest.wait_for_events(len(CALLS), timeout=60)
        _, stack = server.request("GET", "/stack")  # its event comes after any duplicate
        events = [e for e in ingest.wait_for_events(len(CALLS) + 1, timeout=60) if e["path"] != "/stack"]
        assert ingest.stats()["batches_rejected"] == 0, ingest.stats()["rejections"]
        assert server.terminate() in (0, -15), server.log()
    complaints = [
        line for line in server.log().splitlines() if "beacon-otel" in line and " INFO " not in line
    ]
    assert complaints == [], server.log()
    assert len(events) == len(CALLS), events
    return sorted(events, key=lambda e: (e["path"], e["method"])), json.loads(stack)["middleware"][0]


def comparable(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events less their times; a streamed download's duration reads as "until its last byte"."""
    return [
        {
            **{key: value for key, value in event.items() if key not in ("ts", "duration_ms")},
            "streamed_until_last_byte": event["duration_ms"] >= 800 if event["path"] == "/download" else None,
        }
        for event in events
    ]


def refused_fields(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The REST framework serializer's validation errors on the refused POST: (field, type)."""
    (refused,) = [event for event in events if event["path"] == "/api/books/"]
    return [(item["field"], item.get("type", "")) for item in refused["validation_errors"]]


EXPECTED = {
    ("GET", "/shop/products/7/"): ("/shop/products/<int:pk>/", 200, API_KEY, None),
    ("GET", "/shop/products/blue-mug/reviews/"): ("/shop/products/<slug:slug>/reviews/", 200, None, None),
    ("GET", f"/shop/orders/{ORDER}"): ("/shop/orders/<uuid:order_id>", 200, "user:ada", None),
    ("GET", f"/shop/orders/{MISSING_ORDER}"): ("/shop/orders/<uuid:order_id>", 404, None, None),
    ("GET", "/shop/checkout"): ("/shop/checkout", 405, API_KEY, None),
    ("POST", "/shop/checkout"): ("/shop/checkout", 201, "user-9", None),
    ("GET", "/shop/boom"): ("/shop/boom", 500, None, "RuntimeError: kaboom"),
    ("GET", "/shop/products/7"): ("/shop/products/7", 301, None, None),
    ("GET", "/accounts/me"): ("/accounts/me", 200, "user:grace", None),
    ("GET", "/accounts/files/reports/2024/q1.pdf"): ("/accounts/files/<path:rest>", 200, None, None),
    ("GET", "/archive/2024/03/"): ("/archive/<year>/<month>/", 200, None, None),
    ("GET", "/blobs/c0ffee"): ("/blobs/<hex:digest>", 200, None, None),
    ("GET", "/no/such/page"): ("/no/such/page", 404, None, None),
    ("DELETE", "/blobs/c0ffee"): ("/blobs/<hex:digest>", 200, None, None),
    ("GET", "/download"): ("/download", 200, None, None),
    ("POST", "/api/books/"): ("/api/books/", 400, API_KEY, None),
}
"""Route, status, consumer and error of each call's event. The resolver replaces the header rules:
a bearer token alone names nobody, as the app's resolver says."""


def test_lean_and_stock_give_the_same_events_under_gunicorn(
    launch: Launch, tmp_path: Path, otlp: OtlpReceiver
) -> None:
    """Beacon alone (lean source) and beside OTLP (contrib instrumentation): identical events,
    REST framework's validation errors included."""
    with DevIngest() as placeholder:
        lean_env = site_env(placeholder, tmp_path)
        service = f"site-{uuid.uuid4().hex[:8]}"
        stock_env = site_env(
            placeholder,
            tmp_path,
            OTEL_TRACES_EXPORTER="otlp",
            OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
            OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=otlp.endpoint,
            OTEL_SERVICE_NAME=service,
        )
    lean, lean_source = served_events(launch, [*GUNICORN, "siteproject.wsgi"], lean_env)
    stock, stock_source = served_events(launch, [*GUNICORN, "siteproject.wsgi"], stock_env)
    assert (lean_source, stock_source) == (SERVER_SPANS_MIDDLEWARE, CONTRIB_MIDDLEWARE)
    assert {
        (e["method"], e["path"]): (e["route"], e["status"], e["consumer"], e["error"]) for e in lean
    } == EXPECTED
    assert comparable(lean) == comparable(stock)
    assert refused_fields(lean) == [("title", "blank"), ("year", "required")]
    assert all(event["streamed_until_last_byte"] in (True, None) for event in comparable(lean))
    # The exporter got the contrib instrumentation's spans, not the lean source's.
    otlp.wait_for_server_spans(service, len(CALLS) + 1)
    names = {span.name for span in otlp.spans(service) if span.is_server}
    assert "GET shop/products/<int:pk>/" in names


def test_lean_source_under_uvicorn_gives_the_same_events(launch: Launch, tmp_path: Path) -> None:
    """Django's ASGI handler under uvicorn: the lean middleware runs in Django's request thread,
    the resolver reads request.user there, and the events are those of gunicorn's."""
    with DevIngest() as placeholder:
        env = site_env(placeholder, tmp_path)
    under_asgi, source = served_events(launch, UVICORN, env)
    assert source == SERVER_SPANS_MIDDLEWARE
    assert {
        (e["method"], e["path"]): (e["route"], e["status"], e["consumer"], e["error"]) for e in under_asgi
    } == EXPECTED
    assert all(event["streamed_until_last_byte"] in (True, None) for event in comparable(under_asgi))
    assert refused_fields(under_asgi) == [("title", "blank"), ("year", "required")]


FIRST_MIDDLEWARE = """
import django
from django.conf import settings
django.setup()
print("first middleware:", settings.MIDDLEWARE[0])
"""


@pytest.mark.parametrize(
    ("setting", "source"),
    [
        pytest.param({}, SERVER_SPANS_MIDDLEWARE, id="beacon-alone"),
        pytest.param({"OTEL_TRACES_EXPORTER": "console"}, CONTRIB_MIDDLEWARE, id="trace-exporter"),
        pytest.param({"OTEL_METRICS_EXPORTER": "console"}, CONTRIB_MIDDLEWARE, id="metrics-exporter"),
        pytest.param({"BEACON_SERVER_SPANS": "stock"}, CONTRIB_MIDDLEWARE, id="stock-asked-for"),
        pytest.param({"BEACON_ENABLED": "false"}, CONTRIB_MIDDLEWARE, id="beacon-off"),
    ],
)
def test_which_span_source_auto_run_installs(tmp_path: Path, setting: dict[str, str], source: str) -> None:
    """opentelemetry-instrument with only BEACON_* set puts the lean middleware first; an exporter,
    BEACON_SERVER_SPANS=stock or Beacon off keeps the contrib instrumentation's."""
    env = {
        **clean_environ(),
        "BEACON_INGEST_KEY": "ingest-key",
        "BEACON_DRY_RUN": "true",
        "BEACON_STORAGE_PATH": str(tmp_path / "spool"),
        "DJANGO_SETTINGS_MODULE": "siteproject.settings",
        **setting,
    }
    done = subprocess.run(
        [str(VENV_BIN / "opentelemetry-instrument"), "python", "-c", FIRST_MIDDLEWARE],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    # The console exporters print too (at exit): the line of ours is picked out.
    assert f"first middleware: {source}" in done.stdout.splitlines(), done.stdout + done.stderr
