"""BeaconSpanProcessor: which spans become events, and that nothing it does reaches the app."""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind

from beacon_otel import BeaconConfig, BeaconSpanProcessor, configure
from beacon_otel.delivery.cycle import DeliveryCycle
from tests.conftest import Pipeline, make_pipeline

HTTP = {"http.request.method": "GET", "url.path": "/x", "http.response.status_code": 200}


def test_only_server_spans_become_events(pipeline: Pipeline) -> None:
    """CLIENT, INTERNAL and non-HTTP SERVER spans are ignored; HTTP SERVER spans are mapped."""
    tracer = pipeline.provider.get_tracer("test")
    for kind in (SpanKind.CLIENT, SpanKind.INTERNAL, SpanKind.PRODUCER):
        tracer.start_span("x", kind=kind, attributes=HTTP).end()
    tracer.start_span("grpc", kind=SpanKind.SERVER, attributes={"rpc.system": "grpc"}).end()
    tracer.start_span("GET /x", kind=SpanKind.SERVER, attributes=HTTP).end()
    events = pipeline.events()
    assert [e["path"] for e in events] == ["/x"]
    assert pipeline.processor.stats.snapshot()["dropped_total"] == 0


def test_disabled_processor_sends_nothing() -> None:
    """enabled=False makes the processor a no-op."""
    provider = TracerProvider()
    processor = BeaconSpanProcessor(BeaconConfig(dry_run=True, enabled=False))
    provider.add_span_processor(processor)
    provider.get_tracer("t").start_span("GET /x", kind=SpanKind.SERVER, attributes=HTTP).end()
    assert processor.force_flush(1000)
    assert processor.dry_run_events() == []
    provider.shutdown()


def test_unmappable_span_is_counted_not_sent(pipeline: Pipeline) -> None:
    """A span without a status and without an error is dropped and counted."""
    attributes = {"http.request.method": "GET", "url.path": "/gone"}
    pipeline.provider.get_tracer("t").start_span("GET", kind=SpanKind.SERVER, attributes=attributes).end()
    assert pipeline.events() == []
    assert pipeline.processor.stats.snapshot()["dropped"] == {"unmappable_no_status": 1}


def test_internal_failure_never_reaches_the_caller(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If on_end itself breaks, it swallows it, counts it, and later processors still run."""
    monkeypatch.delenv("BEACON_RAISE_INTERNAL_ERRORS")

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("bug")

    monkeypatch.setattr(pipeline.processor._worker, "submit", broken)
    pipeline.provider.get_tracer("t").start_span("GET /x", kind=SpanKind.SERVER, attributes=HTTP).end()
    assert pipeline.processor.stats.snapshot()["dropped"] == {"internal_error": 1}
    assert len(pipeline.exporter.get_finished_spans()) == 1


def test_mapping_failure_costs_only_its_own_event(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A span whose mapping breaks is counted; the requests around it are delivered."""
    monkeypatch.delenv("BEACON_RAISE_INTERNAL_ERRORS")
    import beacon_otel.capture.processor

    real = beacon_otel.capture.processor.span_to_event

    def broken_for_y(span: Any, facts: Any, *options: Any) -> Any:
        _, _, attributes, _, _, _ = span  # as the processor read it (mapping.span_view)
        if attributes["url.path"] == "/y":
            raise RuntimeError("bug")
        return real(span, facts, *options)

    monkeypatch.setattr("beacon_otel.capture.processor.span_to_event", broken_for_y)
    tracer = pipeline.provider.get_tracer("t")
    for path in ("/x", "/y", "/z"):
        tracer.start_span("GET", kind=SpanKind.SERVER, attributes={**HTTP, "url.path": path}).end()
    assert [e["path"] for e in pipeline.events()] == ["/x", "/z"]
    tracer.start_span("GET", kind=SpanKind.SERVER, attributes={**HTTP, "url.path": "/later"}).end()
    assert [e["path"] for e in pipeline.events()] == ["/x", "/z", "/later"]
    assert pipeline.processor.stats.snapshot()["dropped"] == {"internal_error": 1}


def test_resolver_runs_while_the_request_is_current() -> None:
    """A consumer resolver runs on the request's thread when its span ends, seeing its context."""
    current_user: contextvars.ContextVar[str | None] = contextvars.ContextVar("user", default=None)
    built = make_pipeline(consumer_resolver=lambda scope: current_user.get())
    try:
        hook = built.processor.hooks("asgi")["server_request_hook"]
        span = built.provider.get_tracer("t").start_span("GET /x", kind=SpanKind.SERVER, attributes=HTTP)
        hook(span, {"headers": []})
        token = current_user.set("ada")
        span.end()
        current_user.reset(token)
        assert [e["consumer"] for e in built.events()] == ["ada"]
    finally:
        built.provider.shutdown()


def test_hook_contexts_are_released_when_spans_end(pipeline: Pipeline) -> None:
    """The registry keeps nothing once the request's span has ended."""
    tracer = pipeline.provider.get_tracer("t")
    hook = pipeline.processor.hooks("asgi")["server_request_hook"]
    for _ in range(10):
        span = tracer.start_span("GET /x", kind=SpanKind.SERVER, attributes=HTTP)
        hook(span, {"headers": [(b"x-api-key", b"k")]})
        span.end()
    assert len(pipeline.processor.requests) == 0
    assert [e["consumer"] for e in pipeline.events()] == ["k"] * 10


def test_hooks_ignore_non_server_and_non_recording_spans(pipeline: Pipeline) -> None:
    """Hooks called with an INTERNAL or a NonRecordingSpan keep nothing."""
    from opentelemetry.trace import INVALID_SPAN

    hooks = pipeline.processor.hooks("django")
    internal = pipeline.provider.get_tracer("t").start_span("x", kind=SpanKind.INTERNAL)
    hooks["request_hook"](internal, object())
    hooks["request_hook"](INVALID_SPAN, object())
    internal.end()
    assert len(pipeline.processor.requests) == 0


def test_unknown_framework_is_a_clear_error(pipeline: Pipeline) -> None:
    """hooks() names the frameworks it knows."""
    with pytest.raises(ValueError, match="fastapi"):
        pipeline.processor.hooks("cherrypy")


def test_on_error_that_raises_is_contained(caplog: pytest.LogCaptureFixture) -> None:
    """A raising on_error is logged at debug, never propagated (the user's bug, not ours)."""
    from beacon_otel.delivery.stats import DeliveryError

    def on_error(error: BaseException) -> None:
        raise RuntimeError("user bug")

    processor = BeaconSpanProcessor(BeaconConfig(dry_run=True, on_error=on_error))
    with caplog.at_level(logging.DEBUG, logger="beacon_otel"):
        processor._report(DeliveryError("rejected", 3))
    failures = [r for r in caplog.records if "on_error callback failed" in r.getMessage()]
    assert failures and failures[0].exc_info is not None
    processor.shutdown()


def test_shutdown_logs_one_summary_line_when_events_were_lost(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Drops are never silent: shutdown reports them by reason."""
    # The delivery thread waits until the three spans have ended: memory for one, two dropped.
    go = threading.Event()
    run = DeliveryCycle.run
    monkeypatch.setattr(DeliveryCycle, "run", lambda self: (go.wait(10), run(self))[1])
    provider = TracerProvider()
    processor = BeaconSpanProcessor(BeaconConfig(dry_run=True, max_buffer_size=1, batch_size=1))
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")
    for _ in range(3):
        tracer.start_span("GET /x", kind=SpanKind.SERVER, attributes=HTTP).end()
    go.set()
    with caplog.at_level(logging.WARNING, logger="beacon_otel"):
        provider.shutdown()
    assert any("1 events sent, 2 dropped (buffer_full=2)" in r.getMessage() for r in caplog.records)


def test_configure_attaches_to_the_given_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    """configure() reads the environment and adds the processor beside what is there."""
    monkeypatch.setenv("BEACON_INGEST_KEY", "k")
    monkeypatch.setenv("BEACON_DRY_RUN", "true")
    provider = TracerProvider()
    processor = configure(tracer_provider=provider)
    assert processor.config.dry_run and processor.config.ingest_key == "k"
    provider.get_tracer("t").start_span("GET /x", kind=SpanKind.SERVER, attributes=HTTP).end()
    assert processor.force_flush(1000)
    assert len(processor.dry_run_events()) == 1
    provider.shutdown()


def test_configure_without_key_fails_at_startup(monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing key is a startup error naming BEACON_INGEST_KEY."""
    from beacon_otel import BeaconConfigError

    monkeypatch.delenv("BEACON_INGEST_KEY", raising=False)
    with pytest.raises(BeaconConfigError, match="BEACON_INGEST_KEY"):
        configure(tracer_provider=TracerProvider())


def test_events_left_at_shutdown_are_spooled_and_replayed_by_the_next_start(tmp_path: Any) -> None:
    """Ingest down at shutdown: events wait on disk; the next process start delivers them once."""
    import socket

    from beacon_otel.devingest import DevIngest

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = {
        "ingest_key": "k",
        "ingest_url": f"http://127.0.0.1:{port}",
        "storage_path": tmp_path,
        "shutdown_timeout": 1.0,
        "timeout": 0.5,
    }
    provider = TracerProvider()
    first = BeaconSpanProcessor(BeaconConfig(**settings))
    provider.add_span_processor(first)
    tracer = provider.get_tracer("t")
    for n in range(7):
        attributes = {**HTTP, "url.path": f"/x/{n}"}
        tracer.start_span("GET /x", kind=SpanKind.SERVER, attributes=attributes).end()
    provider.shutdown()
    assert first.stats.snapshot()["spooled"] == 7 and first.stats.snapshot()["dropped_total"] == 0
    assert [path for path in tmp_path.rglob("*") if path.is_file()]

    with DevIngest(port=port) as ingest:
        second = BeaconSpanProcessor(BeaconConfig(**settings))
        events = ingest.wait_for_events(7, timeout=10)
        assert sorted(e["path"] for e in events) == [f"/x/{n}" for n in range(7)]
        # The ingest stores before it answers: the count follows the response.
        deadline = time.monotonic() + 5
        while second.stats.snapshot()["recovered"] < 7 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert second.stats.snapshot()["recovered"] == 7
        second.shutdown()
    assert not [path for path in tmp_path.rglob("*") if path.is_file()]


@pytest.mark.parametrize("framework", ["wsgi", "flask"])
def test_response_hooks_only_for_a_resolver(framework: str) -> None:
    """Header rules need no response hook (the request hook keeps the environ); a resolver does.

    Django always gets one: it is where a streamed response is seen (tests/frameworks/django/test_django.py).
    """
    plain = make_pipeline()
    resolved = make_pipeline(consumer_resolver=lambda request: "tenant")
    try:
        assert set(plain.processor.hooks(framework)) == {"request_hook"}
        assert set(resolved.processor.hooks(framework)) == {"request_hook", "response_hook"}
    finally:
        plain.provider.shutdown()
        resolved.provider.shutdown()


def test_handed_over_facts_make_the_event_of_their_own_span_only(pipeline: Pipeline) -> None:
    """A span source's handed-over facts make its request's event when that span ends, unread.

    A span ending meanwhile (a child, on the same thread) neither takes them nor loses them;
    facts that are not plain (a 5xx) leave the event to the span, read as any other.
    """
    tracer = pipeline.provider.get_tracer("t")
    requests = pipeline.processor.requests
    attributes = {**HTTP, "url.path": "/users/7", "http.route": "/users/{id}"}

    def serve(handed_status: int, span_status: int) -> None:
        span = tracer.start_span("GET /users/{id}", kind=SpanKind.SERVER, attributes=attributes)
        span.set_attribute("http.response.status_code", span_status)
        context = requests.open(span)
        assert context is not None
        context.path = "/users/7"
        start = span.start_time
        assert start is not None
        context.handed_over = ("GET", "/users/{id}", handed_status, start, start + 3_000_000)
        tracer.start_span("SELECT", kind=SpanKind.CLIENT).end()  # a child ending first
        span.end(start + 3_000_000)

    # The route's first request: its span is read, and its template cleaned once.
    tracer.start_span("GET /users/{id}", kind=SpanKind.SERVER, attributes=attributes).end()
    serve(handed_status=201, span_status=200)  # the facts, not the span: 201
    serve(handed_status=503, span_status=502)  # not plain: the span's 502
    events = pipeline.events()
    assert [(e["status"], e["route"], e["duration_ms"]) for e in events[1:]] == [
        (201, "/users/{id}", 3),
        (502, "/users/{id}", 3),
    ]
    assert len(requests) == 0
