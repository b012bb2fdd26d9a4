"""LitestarInstrumentor: standard server spans for Litestar, and the Beacon events they make."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.trace import SpanKind

from beacon_otel.instrumentation.litestar import LitestarInstrumentor, instrument_app
from tests.conftest import Pipeline, asgi_request
from tests.frameworks.litestar.litestar_app import build_app

ROOT = Path(__file__).resolve().parents[2]
AUTH = "Bearer tok-1"
AUTH_CONSUMER = "hash_" + hashlib.sha256(AUTH.encode()).hexdigest()[:12]


def served(pipeline: Pipeline, app: Any = None) -> Any:
    app = app if app is not None else build_app()
    instrument_app(app, tracer_provider=pipeline.provider, **pipeline.processor.hooks("litestar"))
    return app


def server_spans(pipeline: Pipeline) -> list[Any]:
    return [s for s in pipeline.exporter.get_finished_spans() if s.kind is SpanKind.SERVER]


def test_route_template_with_router_prefix_and_converter(pipeline: Pipeline) -> None:
    """The span's http.route and name carry the declared template, prefix and converter included."""
    app = served(pipeline)
    assert asgi_request(app, "GET", "/zoo/pets/7")[0] == 200
    (span,) = server_spans(pipeline)
    assert span.attributes["http.route"] == "/zoo/pets/{pet_id:int}"
    assert span.name == "GET /zoo/pets/{pet_id:int}"
    (event,) = pipeline.events()
    assert (event["route"], event["path"], event["status"]) == ("/zoo/pets/{pet_id:int}", "/zoo/pets/7", 200)


def test_unmatched_request_has_no_route(pipeline: Pipeline) -> None:
    """A 404 has a span named by its method only and an event whose route is the concrete path."""
    app = served(pipeline)
    assert asgi_request(app, "GET", "/zoo/pets/not-a-number")[0] == 404
    (span,) = server_spans(pipeline)
    assert "http.route" not in span.attributes and span.name == "GET"
    (event,) = pipeline.events()
    assert (event["route"], event["status"], event["error"]) == ("/zoo/pets/not-a-number", 404, None)


def test_unhandled_exception_is_recorded(pipeline: Pipeline) -> None:
    """Litestar answers the exception itself; the span still has it, and the event its text."""
    app = served(pipeline)
    assert asgi_request(app, "GET", "/boom")[0] == 500
    (span,) = server_spans(pipeline)
    assert [e.attributes["exception.type"] for e in span.events if e.name == "exception"] == ["RuntimeError"]
    assert span.status.is_ok is False
    (event,) = pipeline.events()
    assert (event["status"], event["error"]) == (500, "RuntimeError: kaboom")


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        (b'{"name": "a"}', "body.age", "Object missing required field `age`"),
        (b'{"name": "a", "age": "x"}', "body.age", "Expected `int`, got `str`"),
    ],
)
def test_validation_errors(pipeline: Pipeline, body: bytes, field: str, message: str) -> None:
    """A refused body gives Litestar's 400 untouched and the event the failing field as body.<name>."""
    app = served(pipeline)
    status, answer = asgi_request(app, "POST", "/zoo/pets", {"Content-Type": "application/json"}, body)
    assert status == 400 and b"age" in answer
    (event,) = pipeline.events()
    assert event["route"] == "/zoo/pets"
    assert event["error"] is None
    assert event["validation_errors"] == [{"field": field, "message": message}]


def test_query_validation_error_names_the_parameter(pipeline: Pipeline) -> None:
    """A refused query parameter is query.<name>, not the repr of Litestar's ParamType member."""
    app = served(pipeline)
    assert asgi_request(app, "GET", "/zoo/pets?page_size=many")[0] == 400
    (event,) = pipeline.events()
    expected = {"field": "query.page_size", "message": "Expected `int`, got `str`"}
    assert event["validation_errors"] == [expected]


@pytest.mark.parametrize(
    ("headers", "consumer"),
    [({"X-API-Key": "key-1"}, "key-1"), ({"Authorization": AUTH}, AUTH_CONSUMER), ({}, None)],
)
def test_consumer_header_rules(pipeline: Pipeline, headers: dict[str, str], consumer: str | None) -> None:
    """X-API-Key as-is, Authorization hashed, else none: the contract's rules."""
    app = served(pipeline)
    asgi_request(app, "GET", "/zoo/pets/1", headers)
    (event,) = pipeline.events()
    assert event["consumer"] == consumer


def test_consumer_resolver_gets_the_scope() -> None:
    """A resolver decides from the ASGI scope, over the header rules."""
    from tests.conftest import make_pipeline

    pipeline = make_pipeline(consumer_resolver=lambda scope: f"tenant-{scope['path'].rsplit('/', 1)[-1]}")
    try:
        app = served(pipeline)
        asgi_request(app, "GET", "/zoo/pets/9", {"X-API-Key": "key-1"})
        assert [e["consumer"] for e in pipeline.events()] == ["tenant-9"]
    finally:
        pipeline.provider.shutdown()


def test_instrumented_once(pipeline: Pipeline) -> None:
    """Instrumenting an app twice still gives one span per request."""
    app = served(pipeline)
    instrument_app(app, tracer_provider=pipeline.provider)
    asgi_request(app, "GET", "/zoo/pets/1")
    assert len(server_spans(pipeline)) == 1


def test_litestar_opentelemetry_plugin(pipeline: Pipeline) -> None:
    """Litestar's own plugin keeps its one span, whose route becomes the template, not 'GET /path'."""
    # Older Litestar releases have no OpenTelemetry plugin to handle.
    plugin = pytest.importorskip("litestar.plugins.opentelemetry")
    OpenTelemetryConfig, OpenTelemetryPlugin = plugin.OpenTelemetryConfig, plugin.OpenTelemetryPlugin

    config = OpenTelemetryConfig(tracer_provider=pipeline.provider)
    app = served(pipeline, build_app(plugins=[OpenTelemetryPlugin(config)]))
    asgi_request(app, "GET", "/zoo/pets/3", {"X-API-Key": "key-1"})
    asgi_request(app, "GET", "/nope")
    asgi_request(app, "GET", "/boom")
    routes = sorted(s.attributes.get("http.route") for s in server_spans(pipeline))
    assert routes == ["", "/boom", "/zoo/pets/{pet_id:int}"]
    events = {e["path"]: e for e in pipeline.events()}
    assert len(events) == 3
    assert (events["/zoo/pets/3"]["route"], events["/zoo/pets/3"]["consumer"]) == (
        "/zoo/pets/{pet_id:int}",
        "key-1",
    )
    assert events["/nope"]["route"] == "/nope"
    assert events["/boom"]["error"] == "RuntimeError: kaboom"


def test_instrumentor_instruments_apps_created_afterwards(pipeline: Pipeline) -> None:
    """instrument() covers every Litestar app built after it; uninstrument() stops that."""
    instrumentor = LitestarInstrumentor()
    instrumentor.instrument(tracer_provider=pipeline.provider, **pipeline.processor.hooks("litestar"))
    try:
        app = build_app()
    finally:
        instrumentor.uninstrument()
    asgi_request(app, "GET", "/zoo/pets/5", {"X-API-Key": "key-2"})
    asgi_request(build_app(), "GET", "/zoo/pets/6")
    events = pipeline.events()
    assert [(e["route"], e["consumer"]) for e in events] == [("/zoo/pets/{pet_id:int}", "key-2")]


PROBE = """
import json
from tests.frameworks.litestar.litestar_app import build_app
from tests.frameworks.bottle.bottle_app import build_app as build_bottle
from beacon_otel.instrumentation.litestar import instrument_app
from beacon_otel.instrumentation.bottle import instrument_app as instrument_bottle
from tests.conftest import asgi_request, make_pipeline
from wsgiref.util import setup_testing_defaults
pipeline = make_pipeline()
app = build_app()
instrument_app(app, tracer_provider=pipeline.provider, **pipeline.processor.hooks("litestar"))
asgi_request(app, "GET", "/zoo/pets/1")
bottle = build_bottle()
instrument_bottle(bottle, tracer_provider=pipeline.provider, **pipeline.processor.hooks("bottle"))
environ = {"PATH_INFO": "/books/2"}
setup_testing_defaults(environ)
b"".join(bottle(environ, lambda *a: None))
print(json.dumps({
    "keys": [sorted(s.attributes) for s in pipeline.exporter.get_finished_spans() if s.kind.name == "SERVER"],
    "routes": [e["route"] for e in pipeline.events()],
}))
"""


@pytest.mark.parametrize("mode", ["http", "http/dup"])
def test_semantic_convention_modes(mode: str) -> None:
    """Litestar and Bottle spans follow OTEL_SEMCONV_STABILITY_OPT_IN like the contrib ones; same events."""
    import json

    env = {**os.environ, "OTEL_SEMCONV_STABILITY_OPT_IN": mode}
    probe = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert probe.returncode == 0, probe.stderr
    result = json.loads(probe.stdout.splitlines()[-1])
    for keys in result["keys"]:
        assert {"http.request.method", "http.response.status_code", "http.route", "url.scheme"} <= set(keys)
        assert ("http.method" in keys) is (mode == "http/dup")
    assert result["routes"] == ["/zoo/pets/{pet_id:int}", "/books/<book_id:int>"]
