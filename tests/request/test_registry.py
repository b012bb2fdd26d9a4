"""The request registry: every context it registers knows the span it was opened for."""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind

from beacon_otel.request.consumer import ConsumerRules
from beacon_otel.request.registry import RequestRegistry


def test_a_context_knows_its_span_whether_started_or_opened_by_a_hook() -> None:
    """``started`` (the processor saw the span start) and ``open`` (a hook's span from a provider
    without the processor) give a context with the span's context and id, filed under that id:
    what ``finish`` and the processor's direct path look it up by."""
    registry = RequestRegistry(ConsumerRules(None, None))
    tracer = TracerProvider().get_tracer("test")
    for register in (registry.started, registry.open):
        span = tracer.start_span("GET /users/{user_id}", kind=SpanKind.SERVER)
        register(span)
        context = registry.get(span)
        assert context is not None
        assert context.span_context is span.get_span_context()
        assert context.span_id == span.get_span_context().span_id != 0
        registry.finish(context.span_id)
        assert registry.get(span) is None  # forgotten by its id
        span.end()
