"""beacon-otel's lean Flask span source: a real SDK SERVER span, cheap, with Beacon's request kept.

Each test builds its own provider (an in-memory exporter stands for any other span processor)
and installs the source on it; the patches on ``flask.Flask`` are undone afterwards.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, Decision, Sampler, SamplingResult
from opentelemetry.trace import SpanKind, StatusCode

from beacon_otel.capture.processor import BeaconSpanProcessor
from beacon_otel.capture.sampling import BeaconSampler
from beacon_otel.config.settings import BeaconConfig
from beacon_otel.frameworks.flask import LEAN_SCOPE, install_lean_source, uninstall_lean_source
from tests.conftest import Pipeline

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"
API_KEY = "key-secret-1"


class WorkerTimeout(BaseException):
    """What a server raises in a worker it gives up on (gunicorn's, gevent's timeouts)."""


def build_app(provider: TracerProvider | None = None) -> Any:
    """A realistic small app: a blueprint, auth in before_request, errors, a streamed body.

    The view opens a span of its own (on ``provider``), which must nest under the request's.
    """
    from flask import Blueprint, Flask, Response, g, request, stream_with_context

    import beacon_otel

    app = Flask(__name__)
    api = Blueprint("api", __name__, url_prefix="/api")

    @app.before_request
    def authenticate() -> None:
        g.user = request.headers.get("X-User")
        if request.headers.get("X-Set-Consumer"):
            beacon_otel.set_consumer(request.headers["X-Set-Consumer"])

    @api.route("/users/<int:user_id>", methods=["GET", "PUT"])
    def user(user_id: int) -> dict[str, Any]:
        with trace.get_tracer("app", tracer_provider=provider).start_as_current_span("load user"):
            return {"id": user_id, "current": trace.get_current_span().get_span_context().span_id}

    @api.get("/boom")
    def boom() -> None:
        raise RuntimeError("kaboom")

    @api.get("/timeout")
    def timeout() -> None:
        raise WorkerTimeout("worker timed out")

    @api.get("/drip")
    def drip() -> Response:
        def chunks() -> Iterator[bytes]:
            for _ in range(3):
                time.sleep(0.05)
                yield b"x"

        return Response(stream_with_context(chunks()), mimetype="text/plain")

    app.register_blueprint(api)
    return app


def resolver(request: Any) -> str | None:
    """A consumer resolver reading what the app's auth layer put on ``flask.g``."""
    from flask import g

    return f"user:{g.user}" if getattr(g, "user", None) else None


class Served:
    """A provider with another span processor and Beacon's, the lean source on it, and the app."""

    def __init__(self, provider: TracerProvider, **config: Any) -> None:
        self.exporter = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.processor = BeaconSpanProcessor(BeaconConfig(**{"dry_run": True, "exclude_paths": (), **config}))
        provider.add_span_processor(self.processor)
        self.pipeline = Pipeline(provider, self.exporter, self.processor)
        install_lean_source(self.processor.requests, provider)
        self.app = build_app(provider)
        self.client = self.app.test_client()

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def server_span(self) -> ReadableSpan:
        (span,) = [span for span in self.spans() if span.kind is SpanKind.SERVER]
        return span

    def events(self) -> list[dict[str, Any]]:
        return self.pipeline.events()


@pytest.fixture
def make_served() -> Iterator[Any]:
    made: list[Served] = []

    def make(sampler: Sampler | None = None, **config: Any) -> Served:
        served = Served(TracerProvider(sampler=sampler, shutdown_on_exit=False), **config)
        made.append(served)
        return served

    yield make
    uninstall_lean_source()
    for served in made:
        served.pipeline.provider.shutdown()


@pytest.fixture
def served(make_served: Any) -> Served:
    made: Served = make_served()
    return made


def test_a_real_sdk_server_span_other_processors_see(served: Served) -> None:
    """Kind SERVER, the stable name "{method} {route}", and the stable attributes an event needs, to
    every processor; not the query string, which may carry credentials."""
    response = served.client.get("/api/users/7?token=secret-1")
    assert response.status_code == 200
    span = served.server_span()
    assert span.name == "GET /api/users/<int:user_id>"
    assert span.instrumentation_scope is not None and span.instrumentation_scope.name == LEAN_SCOPE
    attributes = dict(span.attributes or {})
    assert {key: attributes.get(key) for key in attributes} == {
        "http.request.method": "GET",
        "url.path": "/api/users/7",
        "url.scheme": "http",
        "http.route": "/api/users/<int:user_id>",
        "http.response.status_code": 200,
    }
    assert span.status.status_code is StatusCode.UNSET
    (event,) = served.events()
    assert (event["method"], event["route"], event["path"], event["status"]) == (
        "GET",
        "/api/users/<int:user_id>",
        "/api/users/7",
        200,
    )


def test_the_span_is_current_during_the_view_and_continues_the_incoming_trace(served: Served) -> None:
    """A traceparent makes the span a child of the caller's; the view's own span nests under it."""
    response = served.client.get("/api/users/1", headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})
    span = served.server_span()
    assert span.context is not None and span.parent is not None
    assert f"{span.context.trace_id:032x}" == TRACE_ID
    assert f"{span.parent.span_id:016x}" == PARENT_ID and span.parent.is_remote
    (child,) = [each for each in served.spans() if each.name == "load user"]
    assert child.parent is not None and child.parent.span_id == span.context.span_id
    assert response.get_json()["current"] == child.context.span_id  # type: ignore[union-attr]
    assert trace.get_current_span() is trace.INVALID_SPAN  # nothing left current afterwards


def test_an_unhandled_exception_is_recorded_and_the_span_is_in_error(served: Served) -> None:
    """The exception event and status ERROR, as the instrumentation records them; the event's error."""
    assert served.client.get("/api/boom").status_code == 500
    span = served.server_span()
    assert [event.name for event in span.events] == ["exception"]
    assert span.events[0].attributes is not None
    assert span.events[0].attributes["exception.type"] == "RuntimeError"
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "RuntimeError: kaboom"
    assert span.attributes is not None and span.attributes["http.response.status_code"] == 500
    assert span.attributes["error.type"] == "500"
    (event,) = served.events()
    assert (event["status"], event["error"], event["route"]) == (500, "RuntimeError: kaboom", "/api/boom")


def test_an_exception_flask_propagates_is_recorded_once(served: Served) -> None:
    """With TESTING on, Flask re-raises: the span still ends, once, with one exception event."""
    served.app.testing = True
    with pytest.raises(RuntimeError):
        served.client.get("/api/boom")
    span = served.server_span()
    assert [event.name for event in span.events] == ["exception"]
    assert span.status.status_code is StatusCode.ERROR
    (event,) = served.events()
    assert (event["status"], event["error"]) == (500, "RuntimeError: kaboom")
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_unmatched_and_refused_requests(served: Served) -> None:
    """404: named by the method alone, no http.route, the path as route; 405: the rule of the path."""
    assert served.client.get("/nope").status_code == 404
    assert served.client.delete("/api/users/3").status_code == 405
    spans = sorted(served.spans(), key=lambda span: span.start_time or 0)
    assert [(span.name, (span.attributes or {}).get("http.route")) for span in spans] == [
        ("GET", None),
        ("DELETE", None),
    ]
    assert [(e["route"], e["status"]) for e in served.events()] == [
        ("/nope", 404),
        ("/api/users/<int:user_id>", 405),
    ]


def test_consumer_from_headers_set_consumer_and_a_resolver(make_served: Any) -> None:
    """The header rules, set_consumer() in before_request, and a resolver that reads flask.g."""
    served = make_served()
    served.client.get("/api/users/1", headers={"X-API-Key": API_KEY})
    served.client.get("/api/users/2", headers={"X-API-Key": API_KEY, "X-Set-Consumer": "tenant-9"})
    assert [event["consumer"] for event in served.events()] == [API_KEY, "tenant-9"]
    uninstall_lean_source()
    with_resolver = make_served(consumer_resolver=resolver)
    with_resolver.client.get("/api/users/1", headers={"X-User": "ann"})
    with_resolver.client.get("/api/users/2", headers={"X-User": "bob", "X-Set-Consumer": "tenant-9"})
    assert [event["consumer"] for event in with_resolver.events()] == ["user:ann", "tenant-9"]
    for span in with_resolver.spans():
        assert API_KEY not in str(dict(span.attributes or {}))


def test_a_streamed_body_counts_until_its_last_byte(served: Served) -> None:
    """The span ends when the view returns; the event waits for the server to close the body."""
    response = served.client.get("/api/drip", buffered=False)
    assert served.events() == []
    assert b"".join(response.response) == b"xxx"
    response.close()
    (event,) = served.events()
    assert (event["route"], event["status"]) == ("/api/drip", 200)
    assert event["duration_ms"] >= 150


@pytest.mark.parametrize("variable", ["OTEL_PYTHON_FLASK_EXCLUDED_URLS", "OTEL_PYTHON_EXCLUDED_URLS"])
def test_excluded_urls_make_no_span(make_served: Any, monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    """The instrumentation's exclusion settings hold: no span, no event, the request served."""
    monkeypatch.setenv(variable, "api/users/1$,nothing-else")
    served = make_served()
    assert served.client.get("/api/users/1").status_code == 200
    assert served.client.get("/api/users/2").status_code == 200
    assert [span.name for span in served.spans() if span.kind is SpanKind.SERVER] == [
        "GET /api/users/<int:user_id>"
    ]
    assert [event["path"] for event in served.events()] == ["/api/users/2"]


class RouteRecordingSampler(Sampler):
    """A sampler that decides by the route, as a user's may: it must see it at start."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any, Any]] = []

    def should_sample(
        self,
        parent_context: Any,
        trace_id: int,
        name: str,
        kind: Any = None,
        attributes: Any = None,
        links: Any = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        self.seen.append((name, kind, dict(attributes or {}).get("http.route")))
        return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)

    def get_description(self) -> str:
        return "RouteRecordingSampler"


def test_the_provider_sampler_decides_with_the_route_and_beacon_counts_what_it_drops(
    make_served: Any,
) -> None:
    """The sampler sees the span's name, kind and route; a dropped request is still counted."""
    sampler = RouteRecordingSampler()
    served = make_served(sampler=sampler)
    served.client.get("/api/users/1")
    assert sampler.seen[0] == ("GET /api/users/<int:user_id>", SpanKind.SERVER, "/api/users/<int:user_id>")
    uninstall_lean_source()
    dropping = make_served(sampler=BeaconSampler(ALWAYS_OFF))
    dropping.client.get("/api/users/1")
    assert dropping.spans() == []  # the exporter's processor skips unsampled spans (the view's dropped)
    assert [event["status"] for event in dropping.events()] == [200]


def test_apps_built_before_installing_are_served(make_served: Any) -> None:
    """The source wraps Flask's methods, not the class: an app made earlier is served too."""
    early = build_app()
    served = make_served()
    assert early.test_client().get("/api/users/4").status_code == 200
    assert [event["path"] for event in served.events()] == ["/api/users/4"]


def test_a_second_install_changes_nothing(served: Served) -> None:
    """Installing twice (two processors, a second auto-run step) makes one span per request."""
    install_lean_source(served.processor.requests, served.pipeline.provider)
    served.client.get("/api/users/1")
    assert len(served.spans()) == 2  # the server span and the view's own


def test_a_request_leaves_no_reference_cycle(served: Served) -> None:
    """Once served, a request's objects are freed at once, not left to the garbage collector
    (which would then run twice as often on the request threads)."""
    from beacon_otel.frameworks.flask import _Served
    from beacon_otel.request.context import RequestContext

    served.client.get("/api/users/1")
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for user in range(5):
            served.client.get(f"/api/users/{user}", headers={"X-API-Key": API_KEY})
        served.client.get("/api/boom")
        gc.collect()
        ours = [type(o).__name__ for o in gc.garbage if isinstance(o, (_Served, RequestContext))]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert ours == []
    assert len(served.events()) == 7


def test_a_base_exception_through_flask_ends_the_span_as_a_failed_request(served: Served) -> None:
    """Not an Exception, so Flask lets it through: the span still ends, in error, recorded; the
    event is a failed request, and nothing stays current."""
    with pytest.raises(WorkerTimeout):
        served.client.get("/api/timeout")
    span = served.server_span()
    assert [event.name for event in span.events] == ["exception"]
    assert span.status.status_code is StatusCode.ERROR
    (event,) = served.events()
    assert (event["status"], event["error"], event["route"]) == (
        500,
        "WorkerTimeout: worker timed out",
        "/api/timeout",
    )
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_a_plain_request_hands_its_facts_to_beacon_and_its_event_is_the_one_its_span_makes(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once its route is known, a plain request's event is made from the source's facts, without
    the processor reading its span: the same event, and the span other processors see unchanged."""
    from beacon_otel.mapping import span_view

    served.client.get("/api/users/7", headers={"X-API-Key": API_KEY})  # the route's first: the span is read
    read_servers: list[Any] = []
    reading = span_view.read

    def counting(span: Any, only: Any = None) -> Any:
        if span.kind is SpanKind.SERVER:
            read_servers.append(span)
        return reading(span, only)

    monkeypatch.setattr(span_view, "read", counting)
    served.client.get("/api/users/7", headers={"X-API-Key": API_KEY})
    assert read_servers == []
    first, second = served.events()
    assert first["ts"] <= second["ts"]
    for event in (first, second):
        del event["ts"], event["duration_ms"]
    assert first == second
    assert (first["method"], first["route"], first["path"], first["status"], first["consumer"]) == (
        "GET",
        "/api/users/<int:user_id>",
        "/api/users/7",
        200,
        API_KEY,
    )
    one, two = [span for span in served.spans() if span.kind is SpanKind.SERVER]
    assert dict(one.attributes or {}) == dict(two.attributes or {})
    assert len(served.processor.requests) == 0  # nothing left behind


def test_a_plain_request_the_user_excludes_makes_no_event(make_served: Any) -> None:
    """exclude_paths holds for requests whose facts the source hands over: counted as excluded."""
    excluding = make_served(exclude_paths=(r"^/api/users/",))
    excluding.client.get("/api/users/1")
    excluding.client.get("/api/users/1")
    assert excluding.events() == []
    assert excluding.processor.stats.snapshot()["excluded"] == 2


def test_inside_another_span_the_request_is_one_layer_of_it(served: Served) -> None:
    """Under a span already current (a WSGI middleware's, an invocation's), the request's span is
    an INTERNAL child of it, current during the view, and the outer one is current again after."""
    tracer = served.pipeline.provider.get_tracer("outer")
    with tracer.start_as_current_span("outer") as outer:
        response = served.client.get("/api/users/3")
        assert trace.get_current_span() is outer
    (span,) = [each for each in served.spans() if each.name == "GET /api/users/<int:user_id>"]
    assert span.kind is SpanKind.INTERNAL
    assert span.parent is not None and span.parent.span_id == outer.get_span_context().span_id
    (child,) = [each for each in served.spans() if each.name == "load user"]
    assert child.parent is not None and span.context is not None and child.context is not None
    assert child.parent.span_id == span.context.span_id
    assert response.get_json()["current"] == child.context.span_id


def test_under_an_outer_request_the_flask_request_is_one_layer_of_its_one_event(served: Served) -> None:
    """Under an outer SERVER span (an AWS Lambda invocation's), the Flask request gives the outer
    request its facts (here the consumer, from its headers) and makes no event of its own."""
    tracer = served.pipeline.provider.get_tracer("invocation")
    outer_attributes = {"http.request.method": "GET", "url.path": "/api/users/3", "url.scheme": "https"}
    with tracer.start_as_current_span(
        "invocation", kind=SpanKind.SERVER, attributes=outer_attributes
    ) as outer:
        served.client.get("/api/users/3", headers={"X-API-Key": API_KEY})
        outer.set_attribute("http.response.status_code", 200)
    (event,) = served.events()
    assert (event["path"], event["status"], event["consumer"]) == ("/api/users/3", 200, API_KEY)
