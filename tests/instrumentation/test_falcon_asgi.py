"""FalconAsgiInstrumentor: standard server spans for falcon.asgi.App, and the Beacon events they make."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.trace import SpanKind, StatusCode

from beacon_otel.instrumentation.falcon_asgi import FalconAsgiInstrumentor
from tests.conftest import Pipeline, asgi_request, make_pipeline
from tests.frameworks.falcon.falcon_asgi_app import build_app

API_KEY = "key-live-123"


@pytest.fixture
def served() -> Iterator[tuple[Any, Pipeline]]:
    """An app made after instrument(), with Beacon's hooks; uninstrumented afterwards."""
    import falcon.asgi

    original = falcon.asgi.App
    pipeline = make_pipeline()
    instrumentor = FalconAsgiInstrumentor()
    instrumentor.instrument(tracer_provider=pipeline.provider, **pipeline.processor.hooks("falcon_asgi"))
    try:
        yield build_app(), pipeline
    finally:
        instrumentor.uninstrument()
        pipeline.provider.shutdown()
    assert falcon.asgi.App is original  # uninstrument() puts Falcon's class back


def server_spans(pipeline: Pipeline) -> list[Any]:
    return [s for s in pipeline.exporter.get_finished_spans() if s.kind is SpanKind.SERVER]


def test_uri_template_is_the_route_and_the_span_name(served: tuple[Any, Pipeline]) -> None:
    """http.route and the span name carry the URI template as declared; the event's route too."""
    app, pipeline = served
    assert asgi_request(app, "GET", "/users/12", {"X-API-Key": API_KEY})[0] == 200
    (span,) = server_spans(pipeline)
    assert (span.name, span.attributes["http.route"]) == ("GET /users/{user_id:int}", "/users/{user_id:int}")
    (event,) = pipeline.events()
    assert (event["route"], event["consumer"]) == ("/users/{user_id:int}", API_KEY)


def test_exception_falcon_answers_is_recorded_and_a_404_is_not(served: tuple[Any, Pipeline]) -> None:
    """Falcon renders an unhandled exception as a 500 itself: the span records it; a 404 is no error."""
    app, pipeline = served
    assert asgi_request(app, "GET", "/boom")[0] == 500
    assert asgi_request(app, "GET", "/nope")[0] == 404
    boom, nope = server_spans(pipeline)
    assert boom.status.status_code is StatusCode.ERROR
    assert [e.name for e in boom.events] == ["exception"]
    assert "http.route" not in (nope.attributes or {}) and nope.events == ()
    first, second = pipeline.events()
    assert (first["status"], first["error"]) == (500, "RuntimeError: kaboom")
    assert (second["status"], second["route"], second["error"]) == (404, "/nope", None)


def test_apps_made_before_instrument_are_left_alone() -> None:
    """Like OpenTelemetry's Falcon instrumentation: only apps made afterwards get spans."""
    early = build_app()
    pipeline = make_pipeline()
    instrumentor = FalconAsgiInstrumentor()
    instrumentor.instrument(tracer_provider=pipeline.provider)
    try:
        assert asgi_request(early, "GET", "/users/1")[0] == 200
        assert server_spans(pipeline) == []
    finally:
        instrumentor.uninstrument()
        pipeline.provider.shutdown()
