"""Requests being served: each SERVER span's :class:`~beacon_otel.request.context.RequestContext`.

A request gets its context when its SERVER span starts; the framework hooks fill it while
the request runs and the processor takes it when the span ends. A request may open more than
one SERVER span (a mounted FastAPI app with its own telemetry inside an instrumented one):
the inner spans share the outer span's context, so whatever layer learns something (the
scope, the validation errors, the exception) puts it on the one request that becomes the
one event.

This runs for every span of every request, so the common path is a few dictionary and
context-variable operations: the hooks find the request the thread or task is serving through
a context variable, not by the span's id.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import Any

from opentelemetry import trace

from beacon_otel.request.consumer import ConsumerRules
from beacon_otel.request.context import RequestContext

_SERVER = trace.SpanKind.SERVER

_CURRENT: ContextVar[tuple[Any, RequestContext] | None] = ContextVar("beacon_request", default=None)
"""The request being served in this task or thread, with its outermost SERVER span."""


def current_request() -> RequestContext | None:
    """The context of the request this code runs for, while its outermost span is live."""
    current = _CURRENT.get()
    if current is None or not current[0].is_recording():
        return None  # left over from an earlier request on this thread
    return current[1]


def leave() -> Token[tuple[Any, RequestContext] | None]:
    """Name no request current in this context until :func:`come_back` (see ``frameworks.asgi``)."""
    return _CURRENT.set(None)


def come_back(token: Token[tuple[Any, RequestContext] | None]) -> None:
    """Undo :func:`leave`."""
    _CURRENT.reset(token)


class RequestRegistry:
    """Request contexts keyed by server span id, bounded so a span that never ends cannot leak."""

    def __init__(
        self,
        rules: ConsumerRules,
        limit: int = 100_000,
        body_sent: Callable[[RequestContext], None] | None = None,
    ) -> None:
        self.rules = rules
        self.body_sent = body_sent or _nothing
        """Called when a streamed body's last byte went out, with its request's context."""
        self._limit = limit
        self._contexts: dict[int, RequestContext] = {}
        self._nested: dict[int, RequestContext] = {}
        self.inner_layers = self._nested
        """Open inner layers by span id, to test for truth: the usual answer is a quick no."""
        self.current = _CURRENT
        """The request this task or thread serves, with its outermost SERVER span: a span source
        that has just started a span finds its context here, as :meth:`open` would, and the
        processor a request whose facts were handed over (``RequestContext.handed_over``), without
        a call."""
        self.evicted = 0

    def started(self, span: Any) -> None:
        """A SERVER span started: a new request, or one more layer of the current one.

        A mounted FastAPI sub-app (its native telemetry) opens a second SERVER span for the
        same request under a fresh OpenTelemetry context, so the current span cannot tell. A
        context variable set when the outer span starts can: same task, or same thread.
        """
        current = _CURRENT.get()
        if current is not None and current[0] is not span and current[0].is_recording():
            self.nest(span, current[1])
            return
        # _add(span), inline: this runs for every request.
        context = RequestContext()
        contexts = self._contexts
        if len(contexts) >= self._limit:
            self._evict_one()
        span_context = context.span_context = span.get_span_context()
        span_id = context.span_id = span_context.span_id
        contexts[span_id] = context
        _CURRENT.set((span, context))

    def serving(self) -> RequestContext | None:
        """The request this task or thread is serving, if its outermost span is still live."""
        return current_request()

    def nest(self, span: Any, outer: RequestContext) -> None:
        """``span`` is an inner layer of ``outer``'s request: its end goes to the same event.

        Also for the INTERNAL span an instrumented mounted app opens inside the request's
        SERVER span: only that span records the exception escaping the mounted app.
        """
        if len(self._nested) < self._limit:  # bounded even if such spans never end
            self._nested[span.get_span_context().span_id] = outer
            outer.inner_open += 1

    def _add(self, span: Any) -> RequestContext:
        """A new request's context, knowing its span (as every registered context does)."""
        context = RequestContext()
        contexts = self._contexts
        if len(contexts) >= self._limit:
            self._evict_one()
        span_context = context.span_context = span.get_span_context()
        span_id = context.span_id = span_context.span_id
        contexts[span_id] = context
        return context

    def _evict_one(self) -> None:
        """Forget the oldest request: its span never ended, or not yet."""
        # No lock: single dict operations are atomic, and eviction only has to be approximate.
        with contextlib.suppress(StopIteration, KeyError, RuntimeError):
            self._contexts.pop(next(iter(self._contexts)))
            self.evicted += 1

    def open(self, span: Any) -> RequestContext | None:
        """The context of a recording SERVER span, for its hooks; ``None`` for any other span."""
        current = _CURRENT.get()
        if current is not None and current[0] is span:
            return current[1]  # the usual case: the outermost span of the request served here
        # NonRecordingSpan has no .kind; sampled-out spans never reach on_end, so keep nothing.
        kind = getattr(span, "kind", None)
        if kind is not _SERVER:
            # An instrumented app inside another SERVER span (a Lambda invocation, a mount) opens
            # an INTERNAL span, nested into the outer request when it started.
            if kind is None or not self._nested:
                return None
            return self._nested.get(span.get_span_context().span_id)
        if not span.is_recording():
            return None
        span_id = span.get_span_context().span_id
        context = self._contexts.get(span_id) or self._nested.get(span_id)
        # Opened here when on_start did not see the span: the hooks were given to an
        # instrumentation whose provider does not carry this processor.
        return context if context is not None else self._add(span)

    def get(self, span: Any) -> RequestContext | None:
        """The context of a live span, if it has one."""
        current = _CURRENT.get()
        if current is not None and current[0] is span:
            return current[1]
        span_id = span.get_span_context().span_id
        return self._contexts.get(span_id) or self._nested.get(span_id)

    def pop(self, span_id: int) -> RequestContext | None:
        """Take the context of an ended outermost span."""
        return self._contexts.pop(span_id, None)

    def finish(self, span_id: int) -> None:
        """A request whose span source handed its facts over is done: forget it, and name no
        request current here (the next request's start then need not ask the ended span)."""
        self._contexts.pop(span_id, None)
        _CURRENT.set(None)

    def pop_nested(self, span_id: int) -> RequestContext | None:
        """Take the outer request's context if ``span_id`` was an inner layer; else ``None``."""
        if not self._nested:
            return None
        return self._nested.pop(span_id, None)

    def __len__(self) -> int:
        return len(self._contexts) + len(self._nested)


def _nothing(context: RequestContext) -> None:
    pass
