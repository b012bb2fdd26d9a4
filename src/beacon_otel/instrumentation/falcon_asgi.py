"""Falcon ASGI server spans: ``FalconAsgiInstrumentor`` (OpenTelemetry's covers ``falcon.App`` only).

OpenTelemetry's Falcon instrumentation replaces the WSGI ``falcon.App``; an app made from
``falcon.asgi.App`` answers every request without a span. This instrumentor replaces
``falcon.asgi.App`` the same way, with a subclass whose apps:

- open the span with OpenTelemetry's own ASGI middleware around the whole app, so every
  request has one, 404s included (attributes, metrics, both convention generations, excluded
  URLs from ``OTEL_PYTHON_FALCON_EXCLUDED_URLS``, as the contrib ASGI instrumentations);
- set the URI template (``/users/{user_id:int}``) as ``http.route`` and in the span name, from a
  Falcon middleware that runs once the request is routed;
- record an exception Falcon answers with a 500 itself (its default handler renders the page,
  so the middleware never sees it) on the span.

Like OpenTelemetry's Falcon instrumentation, it covers apps made after ``instrument()``.
"""

from __future__ import annotations

import functools
from collections.abc import Collection
from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.util.http import get_excluded_urls

from beacon_otel.common import guard, patching

PATCH = patching.site(
    "falcon: falcon.asgi.App opens a server span",
    package="falcon",
    target="falcon.asgi.App",
    when="when beacon-otel's Falcon ASGI instrumentor is on (auto-run does it)",
)

_HTTP_ROUTE = "http.route"


class FalconAsgiInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Server spans for every ``falcon.asgi.App`` made once ``instrument()`` ran.

    Accepts ``tracer_provider``, ``meter_provider``, ``server_request_hook(span, scope)``,
    ``client_request_hook``, ``client_response_hook`` and ``exclude_spans``, as OpenTelemetry's
    ASGI middleware does.
    """

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("falcon >= 3.1",)

    def _instrument(self, **kwargs: Any) -> None:
        import falcon.asgi

        patching.patch(
            falcon.asgi, "App", lambda original: instrumented_app_class(original, kwargs), site=PATCH
        )

    def _uninstrument(self, **kwargs: Any) -> None:
        patching.undo(PATCH)


def instrumented_app_class(base: Any, options: dict[str, Any]) -> Any:
    """A subclass of Falcon's ASGI ``App`` whose instances open a server span per request."""
    excluded_urls = get_excluded_urls("FALCON")

    class InstrumentedApp(base):  # type: ignore[misc]
        """``falcon.asgi.App`` with OpenTelemetry's ASGI middleware in front of it."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._beacon_otel_handler = None
            with guard.contained("instrumenting a Falcon ASGI app"):
                self.add_middleware(RouteRecorder())
                self._beacon_otel_handler = OpenTelemetryMiddleware(
                    functools.partial(base.__call__, self),
                    excluded_urls=excluded_urls,
                    default_span_details=_span_details,
                    server_request_hook=options.get("server_request_hook"),
                    client_request_hook=options.get("client_request_hook"),
                    client_response_hook=options.get("client_response_hook"),
                    tracer_provider=options.get("tracer_provider"),
                    meter_provider=options.get("meter_provider"),
                    exclude_spans=options.get("exclude_spans"),
                )

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            handler = self._beacon_otel_handler
            if handler is None or scope.get("type") != "http":
                await base.__call__(self, scope, receive, send)
                return
            await handler(scope, receive, send)

        async def _handle_exception(
            self, req: Any, resp: Any, ex: Exception, params: Any, ws: Any = None
        ) -> Any:
            with guard.contained("recording a Falcon exception"):
                _record_unhandled(ex)
            return await super()._handle_exception(req, resp, ex, params, ws)

    InstrumentedApp.__name__ = InstrumentedApp.__qualname__ = "App"
    InstrumentedApp.__module__ = base.__module__
    return InstrumentedApp


def _span_details(scope: Any) -> tuple[str, dict[str, Any]]:
    """The span name before routing: the method alone, as the conventions ask without a route."""
    method = scope.get("method")
    return (str(method) if method else "HTTP"), {}


def _record_unhandled(ex: Exception) -> None:
    """An exception no ``HTTPError`` stands for: Falcon answers it with a 500 the span must explain."""
    import falcon

    if isinstance(ex, (falcon.HTTPError, falcon.HTTPStatus)):
        return  # responses, not failures (a 5xx HTTPError keeps its status, "HTTP 5xx")
    span = trace.get_current_span()
    if span.is_recording():
        span.record_exception(ex)
        span.set_status(trace.Status(trace.StatusCode.ERROR, f"{type(ex).__name__}: {ex}"))


class RouteRecorder:
    """Falcon ASGI middleware: the matched URI template onto the server span."""

    async def process_resource(self, req: Any, resp: Any, resource: Any, params: Any) -> None:
        template = getattr(req, "uri_template", None)
        span = trace.get_current_span()
        if template and resource is not None and span.is_recording():
            with guard.contained("setting the Falcon route"):
                span.set_attribute(_HTTP_ROUTE, str(template))
                span.update_name(f"{req.method} {template}")
