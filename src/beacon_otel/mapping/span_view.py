"""The one place that reads a span: the SDK's own fields, each with the public API as fallback.

Every ``ReadableSpan`` property is a call, and ``span.attributes`` builds a fresh read-only proxy
whose ``.get()`` raises and catches ``KeyError`` on every miss, on every span of every request.
The SDK's private fields answer directly, so they are read, here and nowhere else; where a field
is missing (another ``ReadableSpan`` implementation, an SDK that renamed it) the public property
answers instead. A finished request's span is read once, into a :class:`SpanView`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, overload

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

_SERVER = SpanKind.SERVER


def request_kind(span: Any) -> SpanKind | None:
    """As a span starts, its kind if it may be a request's; ``None`` for any other span.

    A SERVER span opens a request; another span may be a mounted app's inner layer only if it
    carries the request's method, which nearly every other span (an http send, a query) lacks.
    One call for both questions: this runs for every span.
    """
    kind = getattr(span, "_kind", None) or span.kind
    if kind is _SERVER:
        return kind
    backing = getattr(getattr(span, "_attributes", None), "_dict", None)
    if type(backing) is not dict:
        backing = span.attributes or {}
    if "http.method" in backing or "http.request.method" in backing:
        return kind  # type: ignore[no-any-return]
    return None


def attributes(span: Any) -> Mapping[str, Any]:
    """The span's attributes, to read only: the SDK's own dict where there is one."""
    backing = getattr(getattr(span, "_attributes", None), "_dict", None)
    if type(backing) is dict:
        return backing
    return span.attributes or {}


def scope_name(span: Any) -> str | None:
    """The name of the instrumentation scope that opened the span (``"fastapi"`` for FastAPI's own)."""
    scope = getattr(span, "_instrumentation_scope", None) or span.instrumentation_scope
    if scope is None:
        return None
    return getattr(scope, "_name", None) or scope.name  # type: ignore[no-any-return]


SpanView = tuple[int | None, str | None, Mapping[str, Any], int | None, int | None, ReadableSpan]
"""A finished span, read once: ``(span_id, scope_name, attributes, start_ns, end_ns, span)``.

``span_id`` is ``None`` for a span without a context (not the SDK's: it never started here);
``span`` is there for what only some requests need, read through the public API: the events (a
fresh copy on each access) and the status of a failed request. A plain tuple, unpacked where it
is read, rather than a named tuple: one is made per request, and a named tuple costs about 2,100
instructions to make, a plain one about 430.
"""


@overload
def read(span: ReadableSpan) -> SpanView: ...


@overload
def read(span: ReadableSpan, only: SpanKind) -> SpanView | None: ...


def read(span: ReadableSpan, only: SpanKind | None = None) -> SpanView | None:
    """Everything the event needs from a finished span, in one pass over its fields.

    With ``only``, ``None`` for a span of another kind: as a span ends, its kind and (for a
    SERVER span) the rest are read in one call.
    """
    if only is not None and (getattr(span, "_kind", None) or span.kind) is not only:
        return None
    span_context = span.context
    backing = getattr(getattr(span, "_attributes", None), "_dict", None)
    scope = getattr(span, "_instrumentation_scope", None) or span.instrumentation_scope
    return (
        span_context.span_id if span_context is not None else None,
        None if scope is None else (getattr(scope, "_name", None) or scope.name),
        backing if type(backing) is dict else (span.attributes or {}),
        getattr(span, "_start_time", None) or span.start_time,
        getattr(span, "_end_time", None) or span.end_time,
        span,
    )
