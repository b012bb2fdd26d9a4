"""Django's lean SERVER span (``ServerSpans``): a real SDK span every processor sees, and the
same events as under the contrib instrumentation."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind, StatusCode

from beacon_otel import BeaconConfig, BeaconSampler, BeaconSpanProcessor
from beacon_otel.frameworks import django as django_support
from tests.conftest import Pipeline, configure_django, make_pipeline

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


def installed(pipeline: Pipeline, **hooks: Any) -> Any:
    """A Django test client served through the lean source, on ``pipeline``'s provider."""
    configure_django()
    from django.test import Client

    django_support.install_server_spans(
        {**pipeline.processor.hooks("django"), **hooks},
        tracer_provider=pipeline.provider,
        registry=pipeline.processor.requests,  # as auto-run installs it: plain requests handed over
    )
    return Client(raise_request_exception=False)


@pytest.fixture
def lean() -> Iterator[tuple[Pipeline, Any]]:
    """A pipeline and a test client whose requests go through the lean source."""
    pipeline = make_pipeline()
    try:
        yield pipeline, installed(pipeline)
    finally:
        django_support.uninstall_server_spans()
        pipeline.provider.shutdown()


def only_span(pipeline: Pipeline) -> Any:
    (span,) = pipeline.exporter.get_finished_spans()
    return span


def test_the_span_is_a_server_span_other_processors_see(lean: tuple[Pipeline, Any]) -> None:
    """Kind SERVER, "{method} {route}", the stable attributes, the incoming trace as parent."""
    pipeline, client = lean
    response = client.get(
        "/users/7?tab=1",
        HTTP_HOST="api.example.com:8443",
        HTTP_USER_AGENT="probe/1",
        HTTP_TRACEPARENT=TRACEPARENT,
    )
    assert response.status_code == 200
    span = only_span(pipeline)
    assert (span.name, span.kind, span.instrumentation_scope.name) == (
        "GET users/<int:pk>",
        SpanKind.SERVER,
        "beacon_otel.frameworks.django",
    )
    assert dict(span.attributes) == {
        "http.request.method": "GET",
        "url.scheme": "http",
        "url.path": "/users/7",
        "http.response.status_code": 200,
        "http.route": "users/<int:pk>",
    }
    assert span.parent is not None and span.parent.is_remote
    assert (f"{span.context.trace_id:032x}", f"{span.parent.span_id:016x}") == (TRACE_ID, PARENT_ID)
    assert span.status.status_code is StatusCode.UNSET
    (event,) = pipeline.events()
    assert (event["route"], event["path"], event["status"]) == ("/users/<int:pk>", "/users/7", 200)


def test_the_span_is_current_while_the_view_runs(lean: tuple[Pipeline, Any]) -> None:
    """A span the view opens is the server span's child; set_consumer() in the view names the caller."""
    from tests.frameworks.django import urls

    pipeline, client = lean
    urls.CHILD_TRACER[:] = [pipeline.provider.get_tracer("the app")]
    assert client.get("/nested", HTTP_X_API_KEY="key-1").status_code == 200
    child, server = pipeline.exporter.get_finished_spans()
    assert child.name == "load user"
    assert child.parent is not None and child.parent.span_id == server.context.span_id
    assert child.context.trace_id == server.context.trace_id
    (event,) = pipeline.events()
    assert event["consumer"] == "user-42"


def test_an_unhandled_exception_is_recorded(lean: tuple[Pipeline, Any]) -> None:
    """The view's exception: an exception event, status ERROR and error.type; the event's error text."""
    pipeline, client = lean
    assert client.get("/explode").status_code == 500
    span = only_span(pipeline)
    assert [event.name for event in span.events] == ["exception"]
    assert span.events[0].attributes["exception.type"] == "ZeroDivisionError"
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "ZeroDivisionError"
    (event,) = pipeline.events()
    assert (event["status"], event["error"]) == (500, "ZeroDivisionError: division by zero")


def test_client_errors_are_not_server_errors(lean: tuple[Pipeline, Any]) -> None:
    """Http404 raised by a view is recorded, not an ERROR; an unmatched path has no route; a 405
    keeps the route that matched; an unknown method is _OTHER with its original."""
    pipeline, client = lean
    assert client.get("/users/404").status_code == 404
    assert client.get("/no/such/page").status_code == 404
    assert client.post("/only-get").status_code == 405
    assert client.generic("PURGE", "/users/3").status_code == 200
    raised, unmatched, refused, purge = pipeline.exporter.get_finished_spans()
    assert [event.name for event in raised.events] == ["exception"]
    assert raised.status.status_code is StatusCode.UNSET and "error.type" not in raised.attributes
    assert (unmatched.name, unmatched.attributes.get("http.route")) == ("GET", None)
    assert (refused.name, refused.attributes["http.response.status_code"]) == ("POST only-get", 405)
    assert (purge.name, purge.attributes["http.request.method"]) == ("HTTP users/<int:pk>", "_OTHER")
    assert purge.attributes["http.request.method_original"] == "PURGE"
    assert [(e["method"], e["route"], e["status"], e["error"]) for e in pipeline.events()] == [
        ("GET", "/users/<int:pk>", 404, None),
        ("GET", "/no/such/page", 404, None),
        ("POST", "/only-get", 405, None),
        ("PURGE", "/users/<int:pk>", 200, None),
    ]


def test_re_path_routes_read_as_templates(lean: tuple[Pipeline, Any]) -> None:
    """A re_path's pattern is the span's route as written, and a template in the event."""
    pipeline, client = lean
    assert client.get("/legacy/1999/").status_code == 200
    assert only_span(pipeline).attributes["http.route"] == "^legacy/(?P<year>[0-9]{4})/$"
    (event,) = pipeline.events()
    assert event["route"] == "/legacy/<year>/"


def test_excluded_urls_get_no_span_and_no_event(monkeypatch: pytest.MonkeyPatch) -> None:
    """OTEL_PYTHON_DJANGO_EXCLUDED_URLS, matched as the contrib instrumentation matches it."""
    from django.test import override_settings

    monkeypatch.setenv("OTEL_PYTHON_EXCLUDED_URLS", "nothing-here")
    monkeypatch.setenv("OTEL_PYTHON_DJANGO_EXCLUDED_URLS", "users/7,explode")
    pipeline = make_pipeline()
    try:
        client = installed(pipeline)
        assert [client.get(p).status_code for p in ("/users/7", "/explode", "/users/8")] == [200, 500, 200]
        # A Host outside ALLOWED_HOSTS: no URL to match, so not excluded; the app answers as it
        # would (no middleware here checks the host).
        with override_settings(ALLOWED_HOSTS=["good.example"]):
            assert client.get("/users/9", HTTP_HOST="evil.example").status_code == 200
        spans = pipeline.exporter.get_finished_spans()
        assert [span.attributes["url.path"] for span in spans] == ["/users/8", "/users/9"]
        assert [event["path"] for event in pipeline.events()] == ["/users/8", "/users/9"]
    finally:
        django_support.uninstall_server_spans()
        pipeline.provider.shutdown()


@pytest.mark.parametrize("wrapped", [True, False], ids=["beacon-sampler", "plain-sampler"])
def test_sampling_goes_through_the_providers_sampler(wrapped: bool) -> None:
    """A sampler that drops everything: with BeaconSampler the request is still counted and
    nothing exported; without it, no span at all, and the request is served all the same."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=BeaconSampler(ALWAYS_OFF) if wrapped else ALWAYS_OFF)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    processor = BeaconSpanProcessor(BeaconConfig(dry_run=True, exclude_paths=()))
    provider.add_span_processor(processor)
    pipeline = Pipeline(provider, exporter, processor)
    try:
        client = installed(pipeline)
        assert client.get("/users/5", HTTP_X_API_KEY="key-5").status_code == 200
        assert exporter.get_finished_spans() == ()
        events = pipeline.events()
        assert [(e["route"], e["consumer"]) for e in events] == (
            [("/users/<int:pk>", "key-5")] if wrapped else []
        )
    finally:
        django_support.uninstall_server_spans()
        provider.shutdown()


def test_the_hooks_see_the_request_after_the_middleware_chain() -> None:
    """A consumer resolver sees what the app's own middleware set on the request (request.user)."""
    from django.test import override_settings

    configure_django()
    pipeline = make_pipeline(consumer_resolver=lambda request: getattr(request.user, "username", None))
    try:
        with override_settings(MIDDLEWARE=["tests.frameworks.django.test_server_spans.token_user"]):
            client = installed(pipeline)
            assert client.get("/users/1", HTTP_X_TOKEN="ada").status_code == 200
            django_support.uninstall_server_spans()
        (event,) = pipeline.events()
        assert event["consumer"] == "ada"
    finally:
        django_support.uninstall_server_spans()
        pipeline.provider.shutdown()


def token_user(get_response: Any) -> Any:
    """The app's token authentication: ``request.user`` from ``X-Token``."""
    from types import SimpleNamespace

    def middleware(request: Any) -> Any:
        request.user = SimpleNamespace(username=request.headers.get("X-Token"))
        return get_response(request)

    return middleware


def test_the_middleware_goes_first_once_and_leaves_with_uninstall() -> None:
    """First in MIDDLEWARE (OTEL_PYTHON_DJANGO_MIDDLEWARE_POSITION aside), never twice."""
    from django.conf import settings
    from django.test import override_settings

    configure_django()
    pipeline = make_pipeline()
    try:
        with override_settings(MIDDLEWARE=("app.first", "app.second")):
            installed(pipeline)
            installed(pipeline)
            assert settings.MIDDLEWARE == [django_support.SERVER_SPANS_MIDDLEWARE, "app.first", "app.second"]
            django_support.uninstall_server_spans()
            assert settings.MIDDLEWARE == ["app.first", "app.second"]
    finally:
        django_support.uninstall_server_spans()
        pipeline.provider.shutdown()


def test_switched_off_as_the_contrib_instrumentation_is(monkeypatch: pytest.MonkeyPatch) -> None:
    """OTEL_PYTHON_DJANGO_INSTRUMENT=False: no middleware, no span."""
    from django.conf import settings

    configure_django()
    monkeypatch.setenv("OTEL_PYTHON_DJANGO_INSTRUMENT", "False")
    django_support.install_server_spans({})
    assert django_support.SERVER_SPANS_MIDDLEWARE not in settings.MIDDLEWARE


def test_a_failing_hook_never_reaches_the_request(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A response hook that raises: logged once, the response and the span are as usual."""
    monkeypatch.delenv("BEACON_RAISE_INTERNAL_ERRORS", raising=False)

    def broken(*_: Any) -> None:
        raise RuntimeError("hook bug")

    pipeline = make_pipeline()
    try:
        client = installed(pipeline, response_hook=broken)
        assert client.get("/users/2").status_code == 200
        span = only_span(pipeline)
        assert span.end_time is not None and span.attributes["http.response.status_code"] == 200
        assert "completing a Django request's span failed" in caplog.text
    finally:
        django_support.uninstall_server_spans()
        pipeline.provider.shutdown()


def test_a_streamed_body_counts_until_its_last_byte(lean: tuple[Pipeline, Any]) -> None:
    """StreamingHttpResponse: the span ends with the view, the event waits for the server's close()."""
    pipeline, client = lean
    response = client.get("/stream")
    assert only_span(pipeline).attributes["http.response.status_code"] == 200
    assert pipeline.events() == []
    assert b"".join(response.streaming_content) == b"xxx"
    response.close()
    (event,) = pipeline.events()
    assert (event["route"], event["status"]) == ("/stream", 200)
    assert event["duration_ms"] >= 300


class HeaderParent:
    """A propagator of the app's own: the parent span id in ``X-Parent``."""

    fields = frozenset({"x-parent"})

    def extract(self, carrier: Any, context: Any = None, getter: Any = None) -> Any:
        from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

        (value,) = getter.get(carrier, "x-parent") or [None]
        if value is None:
            return context
        parent = SpanContext(int(TRACE_ID, 16), int(value, 16), is_remote=True, trace_flags=TraceFlags(1))
        return set_span_in_context(NonRecordingSpan(parent), context)

    def inject(self, carrier: Any, context: Any = None, setter: Any = None) -> None:
        pass


def test_the_global_propagator_is_the_one_asked(
    lean: tuple[Pipeline, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another propagator set globally by the app: its header gives the parent; W3C's is not read."""
    from opentelemetry import propagate

    pipeline, client = lean
    monkeypatch.setattr(propagate, "_HTTP_TEXT_FORMAT", HeaderParent())
    assert client.get(
        "/users/1", HTTP_X_PARENT=PARENT_ID, HTTP_TRACEPARENT=f"00-{'1' * 32}-{'2' * 16}-01"
    ).status_code
    span = only_span(pipeline)
    assert span.parent is not None
    assert (f"{span.context.trace_id:032x}", f"{span.parent.span_id:016x}") == (TRACE_ID, PARENT_ID)


def test_baggage_alone_is_extracted(lean: tuple[Pipeline, Any]) -> None:
    """A request with baggage and no traceparent: the baggage is current while the view runs."""
    from opentelemetry import baggage

    from tests.frameworks.django import urls

    seen: list[Any] = []

    class Recording:
        def start_as_current_span(self, name: str) -> Any:
            seen.append(baggage.get_baggage("tenant"))
            return pipeline.provider.get_tracer("the app").start_as_current_span(name)

    pipeline, client = lean
    urls.CHILD_TRACER[:] = [Recording()]
    assert client.get("/nested", HTTP_BAGGAGE="tenant=acme").status_code == 200
    assert seen == ["acme"]
    assert only_span_named(pipeline, "GET nested").parent is None


def only_span_named(pipeline: Pipeline, name: str) -> Any:
    (span,) = [span for span in pipeline.exporter.get_finished_spans() if span.name == name]
    return span


def test_inside_a_span_of_the_apps_own_it_is_a_child_not_a_request(lean: tuple[Pipeline, Any]) -> None:
    """Django called inside a span already current (a WSGI middleware of the app's own): an
    INTERNAL child of it, and no second request."""
    pipeline, client = lean
    with pipeline.provider.get_tracer("the app's wsgi layer").start_as_current_span("outer"):
        assert client.get("/users/3").status_code == 200
    inner, outer = pipeline.exporter.get_finished_spans()
    assert (inner.kind, inner.name) == (SpanKind.INTERNAL, "GET users/<int:pk>")
    assert inner.parent is not None and inner.parent.span_id == outer.context.span_id
    assert pipeline.events() == []  # the outer span is no HTTP server span: nothing to count


def test_an_exception_no_middleware_answers_ends_the_span_too(lean: tuple[Pipeline, Any]) -> None:
    """A BaseException through Django (a worker's timeout raises SystemExit): recorded, span ended,
    the request counted as a failure; the exception goes on to the server."""
    pipeline, client = lean
    with pytest.raises(KeyboardInterrupt):
        client.get("/interrupt")
    span = only_span(pipeline)
    assert span.end_time is not None and span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "KeyboardInterrupt"
    (event,) = pipeline.events()
    assert (event["route"], event["status"], event["error"]) == ("/interrupt", 500, "KeyboardInterrupt")


@pytest.mark.parametrize(("position", "index"), [("1", 1), ("2", 2), ("9", 0), ("first", 0)])
def test_the_middleware_position_is_read_as_the_contrib_instrumentation_reads_it(
    position: str, index: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OTEL_PYTHON_DJANGO_MIDDLEWARE_POSITION places it; out of range or not a number: first."""
    from django.conf import settings
    from django.test import override_settings

    configure_django()
    monkeypatch.setenv("OTEL_PYTHON_DJANGO_MIDDLEWARE_POSITION", position)
    pipeline = make_pipeline()
    try:
        with override_settings(MIDDLEWARE=["app.first", "app.second"]):
            installed(pipeline)
            assert settings.MIDDLEWARE.index(django_support.SERVER_SPANS_MIDDLEWARE) == index
            django_support.uninstall_server_spans()
    finally:
        django_support.uninstall_server_spans()
        pipeline.provider.shutdown()


def test_a_plain_request_hands_its_facts_to_beacon_and_its_event_is_the_one_its_span_makes(
    lean: tuple[Pipeline, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once its route has been mapped, a plain request's event is made from the source's facts
    without the processor reading its span: the same event; the span other processors see unchanged."""
    from beacon_otel.mapping import span_view

    pipeline, client = lean
    client.get("/users/7", HTTP_X_API_KEY="key-7")  # the route's first request: its span is read
    read_servers: list[Any] = []
    reading = span_view.read

    def counting(span: Any, only: Any = None) -> Any:
        if span.kind is SpanKind.SERVER:
            read_servers.append(span)
        return reading(span, only)

    monkeypatch.setattr(span_view, "read", counting)
    client.get("/users/7", HTTP_X_API_KEY="key-7")
    assert read_servers == []
    first, second = pipeline.events()
    for event in (first, second):
        del event["ts"], event["duration_ms"]
    assert (
        first
        == second
        == {
            "method": "GET",
            "route": "/users/<int:pk>",
            "path": "/users/7",
            "status": 200,
            "consumer": "key-7",
            "error": None,
        }
    )
    one, two = pipeline.exporter.get_finished_spans()
    assert (one.name, dict(one.attributes or {})) == (two.name, dict(two.attributes or {}))
    assert len(pipeline.processor.requests) == 0  # nothing left behind


def test_requests_that_are_not_plain_are_read_from_their_span(
    lean: tuple[Pipeline, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 5xx, an exception, a streamed body, an unknown method: the processor reads the span."""
    from beacon_otel.mapping import span_view

    pipeline, client = lean
    paths = ("/explode", "/users/404", "/stream")

    def serve(path: str) -> None:
        response = client.get(path)
        if response.streaming:  # as a server sends it
            b"".join(response.streaming_content)
            response.close()

    for path in paths:
        serve(path)  # each route mapped once
    client.generic("PURGE", "/users/3")
    read_servers: list[str] = []
    reading = span_view.read

    def counting(span: Any, only: Any = None) -> Any:
        if span.kind is SpanKind.SERVER:
            read_servers.append(span.attributes["url.path"])
        return reading(span, only)

    monkeypatch.setattr(span_view, "read", counting)
    for path in paths:
        serve(path)
    client.generic("PURGE", "/users/3")
    assert read_servers == [*paths, "/users/3"]
    assert [e["status"] for e in pipeline.events()][4:] == [500, 404, 200, 200]


def test_a_plain_request_the_user_excludes_makes_no_event() -> None:
    """exclude_paths holds for the requests whose facts the source hands over: counted as excluded."""
    pipeline = make_pipeline(exclude_paths=(r"^/users/",))
    try:
        client = installed(pipeline)
        client.get("/users/1")
        client.get("/users/1")
        assert pipeline.events() == []
        assert pipeline.processor.stats.snapshot()["excluded"] == 2
    finally:
        django_support.uninstall_server_spans()
        pipeline.provider.shutdown()
