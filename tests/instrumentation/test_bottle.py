"""BottleInstrumentor: standard server spans for Bottle, and the Beacon events they make."""

from __future__ import annotations

import hashlib
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest
from opentelemetry.trace import SpanKind

from beacon_otel.instrumentation.bottle import BottleInstrumentor, instrument_app
from tests.conftest import Pipeline, make_pipeline
from tests.frameworks.bottle.bottle_app import build_app

AUTH = "Bearer tok-1"
AUTH_CONSUMER = "hash_" + hashlib.sha256(AUTH.encode()).hexdigest()[:12]


def call(app: Any, path: str, headers: dict[str, str] | None = None) -> int:
    """One request through the WSGI app in-process; returns the status."""
    environ: dict[str, Any] = {"PATH_INFO": path, "REQUEST_METHOD": "GET"}
    for name, value in (headers or {}).items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    setup_testing_defaults(environ)
    statuses = []
    body = app(environ, lambda status, headers, exc_info=None: statuses.append(status))
    b"".join(body)
    if hasattr(body, "close"):
        body.close()
    return int(statuses[0].split()[0])


def served(pipeline: Pipeline) -> Any:
    app = build_app()
    instrument_app(app, tracer_provider=pipeline.provider, **pipeline.processor.hooks("bottle"))
    return app


def server_spans(pipeline: Pipeline) -> list[Any]:
    return [s for s in pipeline.exporter.get_finished_spans() if s.kind is SpanKind.SERVER]


def test_route_rule(pipeline: Pipeline) -> None:
    """The span's http.route and name carry the rule as declared; the event's route too."""
    app = served(pipeline)
    assert call(app, "/books/12") == 200
    (span,) = server_spans(pipeline)
    assert (span.attributes["http.route"], span.name) == ("/books/<book_id:int>", "GET /books/<book_id:int>")
    (event,) = pipeline.events()
    assert (event["route"], event["path"], event["status"]) == ("/books/<book_id:int>", "/books/12", 200)


def test_unmatched_request(pipeline: Pipeline) -> None:
    """A 404 has a span without a route, and an event whose route is the concrete path."""
    app = served(pipeline)
    assert call(app, "/books/x") == 404
    (span,) = server_spans(pipeline)
    assert "http.route" not in span.attributes
    (event,) = pipeline.events()
    assert (event["route"], event["status"], event["error"]) == ("/books/x", 404, None)


def test_unhandled_exception_is_recorded(pipeline: Pipeline) -> None:
    """Bottle answers the exception with its own 500 page; the span and the event still have it."""
    app = served(pipeline)
    assert call(app, "/boom") == 500
    (span,) = server_spans(pipeline)
    assert [e.attributes["exception.message"] for e in span.events if e.name == "exception"] == ["kaboom"]
    (event,) = pipeline.events()
    assert (event["status"], event["error"]) == (500, "RuntimeError: kaboom")


def test_abort_is_not_an_error(pipeline: Pipeline) -> None:
    """bottle.abort(403) is a response, not a failure: no exception event, no error."""
    import bottle

    app = served(pipeline)

    @app.get("/secret")
    def secret() -> None:
        bottle.abort(403, "no")

    assert call(app, "/secret") == 403
    (span,) = server_spans(pipeline)
    assert [e for e in span.events if e.name == "exception"] == []
    (event,) = pipeline.events()
    assert (event["route"], event["status"], event["error"]) == ("/secret", 403, None)


@pytest.mark.parametrize(
    ("headers", "consumer"),
    [({"X-API-Key": "key-1"}, "key-1"), ({"Authorization": AUTH}, AUTH_CONSUMER), ({}, None)],
)
def test_consumer_header_rules(pipeline: Pipeline, headers: dict[str, str], consumer: str | None) -> None:
    """X-API-Key as-is, Authorization hashed, else none."""
    app = served(pipeline)
    call(app, "/books/1", headers)
    (event,) = pipeline.events()
    assert event["consumer"] == consumer


def test_consumer_resolver() -> None:
    """A resolver decides from the WSGI environ, over the header rules."""
    pipeline = make_pipeline(consumer_resolver=lambda environ: environ.get("HTTP_X_TENANT"))
    try:
        app = served(pipeline)
        call(app, "/books/1", {"X-Tenant": "acme", "X-API-Key": "key-1"})
        assert [e["consumer"] for e in pipeline.events()] == ["acme"]
    finally:
        pipeline.provider.shutdown()


def test_instrumentor_covers_new_apps_once(pipeline: Pipeline) -> None:
    """instrument() covers apps built after it, each once; uninstrument() stops that."""
    instrumentor = BottleInstrumentor()
    instrumentor.instrument(tracer_provider=pipeline.provider, **pipeline.processor.hooks("bottle"))
    try:
        app = build_app()
        instrument_app(app, tracer_provider=pipeline.provider)
    finally:
        instrumentor.uninstrument()
    call(app, "/books/3", {"X-API-Key": "key-2"})
    call(build_app(), "/books/4")
    assert [(e["route"], e["consumer"]) for e in pipeline.events()] == [("/books/<book_id:int>", "key-2")]
    assert len(server_spans(pipeline)) == 1
