"""WSGI: the environ every WSGI framework's hooks keep, streamed bodies' real duration, and
what a lean span source reads from an environ.

Flask's and Django's instrumentations end the request's span when the view returns, before
the server iterates a streamed body: a 2 s ``stream_with_context``-less download arrives as
2 ms. PEP 3333 servers call the response iterable's ``close()`` after its last byte; both
frameworks let a callback run there (:func:`body_closer`), so the request's event waits for it
and its duration is the time until the last byte was handed to the server.

A framework's lean span source (``frameworks.table.LEAN_SOURCES``) takes the request's trace
context from the environ's headers (:data:`ENVIRON_GETTER`) and its span's stable
semantic-convention attributes from the environ (:func:`server_span_attributes`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter

from beacon_otel.common import guard
from beacon_otel.frameworks.base import Hook, hook
from beacon_otel.request.context import RequestContext, wsgi_path
from beacon_otel.request.registry import RequestRegistry

BodySent = Callable[[RequestContext], None]


def wsgi_hooks(registry: RequestRegistry) -> dict[str, Hook]:
    """A WSGI app under OpenTelemetryMiddleware: the environ."""

    def request_hook(span: Any, environ: Mapping[str, Any]) -> None:
        try:  # inline, as in the ASGI hook
            context = registry.open(span)
            if context is not None:
                context.environ = environ
        except Exception:
            guard.internal_error("the WSGI request hook")

    hooks = {"request_hook": request_hook}
    if registry.rules.has_resolver:
        # A resolver may need the request while it is current. Header rules read the environ
        # the request hook kept, when the span ends: no response hook, no cost per response.
        @hook("the WSGI response hook")
        def response_hook(span: Any, environ: Mapping[str, Any], *_: Any) -> None:
            context = registry.get(span)
            if context is not None and not context.resolved:  # set_consumer() wins
                context.consumer = registry.rules.from_environ(environ)
                context.resolved = True

        hooks["response_hook"] = response_hook
    return hooks


def body_closer(context: RequestContext, body_sent: BodySent) -> Callable[[], None]:
    """Hold the request's event until the callback returned runs: the server closed the body."""
    if context.body_sent_ns is None:
        context.body_sent_ns = 0  # streaming: the event waits

    @guard.guarded("ending a streamed request", default=None)
    def closed() -> None:
        context.body_sent_ns = time.time_ns()
        body_sent(context)

    return closed


HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})
"""The methods the semantic conventions name; any other is ``_OTHER`` (``http.request.method``)."""


class EnvironGetter(Getter[Mapping[str, Any]]):
    """The propagators' view of a WSGI environ: header ``traceparent`` is ``HTTP_TRACEPARENT``."""

    def __init__(self) -> None:
        self._names: dict[str, str] = {}

    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        """The header's value, as the one-item list the propagators take; ``None`` when absent."""
        name = self._names.get(key)
        if name is None:
            # The propagators ask for the same few headers on every request.
            name = self._names.setdefault(key, environ_name(key))
        value = carrier.get(name)
        return [value] if value is not None else None

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        """Every header the environ carries, named as on the wire (lower case, with hyphens)."""
        return [key[5:].lower().replace("_", "-") for key in carrier if key.startswith("HTTP_")]


ENVIRON_GETTER = EnvironGetter()


def environ_name(header: str) -> str:
    """The environ key of an HTTP header: ``traceparent`` -> ``HTTP_TRACEPARENT``."""
    return "HTTP_" + header.upper().replace("-", "_")


class IncomingContext:
    """The trace context a request brings, extracted through the global propagator.

    The default propagators (W3C trace context and baggage) find nothing in a request without
    their headers, and most requests to a service at the edge carry none: then the context they
    would return is made here, without the extraction's dozen calls. Any other propagator is
    always asked.
    """

    __slots__ = ("_headers", "_textmap", "_without")

    def __init__(self) -> None:
        self._textmap: Any = None
        self._headers: tuple[str, ...] | None = None
        self._without: Context | None = None

    def __call__(self, environ: Mapping[str, Any]) -> Context:
        """The context for a request's span: its parent, if the request named one."""
        textmap = propagate.get_global_textmap()
        if textmap is not self._textmap:
            self._learn(textmap)
        headers = self._headers
        if headers is not None:
            for header in headers:
                if header in environ:
                    break
            else:
                # What the W3C propagators return when they find nothing: the context the
                # first one starts from (an empty one for trace context, the current for baggage).
                return self._without if self._without is not None else otel_context.get_current()
        return textmap.extract(environ, getter=ENVIRON_GETTER)

    def _learn(self, textmap: Any) -> None:
        """Which headers ``textmap`` reads, when it is made of the W3C propagators only."""
        from opentelemetry.baggage.propagation import W3CBaggagePropagator
        from opentelemetry.propagators.composite import CompositePropagator
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        known = (TraceContextTextMapPropagator, W3CBaggagePropagator)
        parts = getattr(textmap, "_propagators", None) if type(textmap) is CompositePropagator else [textmap]
        self._textmap = textmap
        if not parts or not all(type(part) in known for part in parts):
            self._headers = None
            return
        self._headers = tuple(environ_name(field) for part in parts for field in sorted(part.fields))
        self._without = Context() if type(parts[0]) is TraceContextTextMapPropagator else None


def server_span_attributes(environ: Mapping[str, Any]) -> dict[str, Any]:
    """A SERVER span's start attributes from a WSGI environ, in the stable HTTP conventions.

    What an event needs (method, path, scheme), and no more: each attribute costs the SDK a few
    microseconds to check and store. Not the query string, which may carry credentials. The
    path is the client's (:func:`~beacon_otel.request.context.wsgi_path`), ``/`` when empty; a
    method outside the standard ones is ``_OTHER``, with ``http.request.method_original``.
    """
    method = environ.get("REQUEST_METHOD", "")
    raw = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    # wsgi_path(), inline for the usual ASCII path (a call less on every request).
    path = raw if type(raw) is str and raw.isascii() else wsgi_path(environ)
    attributes: dict[str, Any] = {
        "http.request.method": method,
        "url.path": path or "/",
        "url.scheme": environ.get("wsgi.url_scheme", "http"),
    }
    if method not in HTTP_METHODS:
        upper = method.upper()
        attributes["http.request.method"] = upper if upper in HTTP_METHODS else "_OTHER"
        attributes["http.request.method_original"] = method
    return attributes
