"""The span view: the SDK's own fields where they are, the public API where they are not, alike."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.trace import SpanKind

from beacon_otel.mapping import span_view

HTTP: dict[str, Any] = {"http.request.method": "GET", "url.path": "/x", "http.response.status_code": 200}


class PublicOnly:
    """A span that answers only through ReadableSpan's public properties (another SDK's, say)."""

    def __init__(self, span: ReadableSpan) -> None:
        self._span = span
        self.context = span.context
        self.kind = span.kind
        self.attributes = span.attributes
        self.start_time = span.start_time
        self.end_time = span.end_time
        self.instrumentation_scope = span.instrumentation_scope


def finished(kind: SpanKind, attributes: dict[str, Any]) -> ReadableSpan:
    span = (
        TracerProvider()
        .get_tracer("an.instrumentation")
        .start_span("GET /x", kind=kind, attributes=attributes)
    )
    span.end()
    assert isinstance(span, ReadableSpan)
    return span


def test_public_fallbacks_read_what_the_sdk_fields_do() -> None:
    """Every field of the view is the same from the SDK's private fields and from the public API."""
    span = finished(SpanKind.SERVER, HTTP)
    private, public = span_view.read(span), span_view.read(PublicOnly(span))  # type: ignore[arg-type]
    assert private[:5] == public[:5]
    span_id, scope_name, attributes, start, end = private[:5]
    assert span_id == span.context.span_id
    assert scope_name == "an.instrumentation"
    assert dict(attributes) == HTTP
    assert (start, end) == (span.start_time, span.end_time)


@pytest.mark.parametrize("kind", [SpanKind.INTERNAL, SpanKind.CLIENT])
def test_only_reads_spans_of_that_kind(kind: SpanKind) -> None:
    """As spans end, only SERVER spans are read; any other kind answers None, privately or publicly."""
    server, other = finished(SpanKind.SERVER, HTTP), finished(kind, HTTP)
    assert span_view.read(server, SpanKind.SERVER) == span_view.read(server)
    assert span_view.read(PublicOnly(server), SpanKind.SERVER) is not None  # type: ignore[arg-type]
    assert span_view.read(other, SpanKind.SERVER) is None
    assert span_view.read(PublicOnly(other), SpanKind.SERVER) is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "attributes", "expected"),
    [
        (SpanKind.SERVER, {}, SpanKind.SERVER),
        (SpanKind.INTERNAL, {"http.method": "GET"}, SpanKind.INTERNAL),
        (SpanKind.INTERNAL, {"http.request.method": "GET"}, SpanKind.INTERNAL),
        (SpanKind.INTERNAL, {"asgi.event.type": "http.response.body"}, None),
        (SpanKind.CLIENT, {"db.system": "postgresql"}, None),
    ],
)
def test_request_kind_names_only_spans_that_may_be_a_requests(
    kind: SpanKind, attributes: dict[str, Any], expected: SpanKind | None
) -> None:
    """SERVER spans, and other spans carrying the request's method (a mounted app's layer)."""
    span = finished(kind, attributes)
    assert span_view.request_kind(span) is expected
    assert span_view.request_kind(PublicOnly(span)) is expected


def test_a_span_without_a_context_has_no_id() -> None:
    """A span that is not the SDK's (no context) reads with ``span_id`` None: the processor skips it."""
    span = ReadableSpan(name="x", context=None, kind=SpanKind.SERVER, attributes=HTTP)
    assert span_view.read(span)[0] is None
