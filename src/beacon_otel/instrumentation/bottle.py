"""Bottle server spans: ``BottleInstrumentor`` (no OpenTelemetry instrumentation exists).

The span comes from OpenTelemetry's WSGI middleware, put in front of each app's ``wsgi``
method, so every request has one, 404s included. A Bottle plugin adds what only Bottle knows,
inside the route's call:

- the rule as declared (``/books/<book_id:int>``), set as ``http.route`` and in the span name;
- an exception raised by the route: Bottle answers it with a 500 page itself (``catchall``),
  so the middleware never sees it; it is recorded on the span as an exception event.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Collection
from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
from opentelemetry.trace import Status, StatusCode

from beacon_otel.common import guard, patching
from beacon_otel.instrumentation.new_apps import NewApps

_HTTP_ROUTE = "http.route"
NEW_APPS_PATCH = patching.site(
    "bottle: every new app instrumented",
    package="bottle",
    target="bottle.Bottle.__init__",
    when="when beacon-otel's Bottle instrumentor is on (auto-run does it)",
)
_instrumented: weakref.WeakSet[Any] = weakref.WeakSet()


class BottleInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Server spans for every ``bottle.Bottle`` app created once ``instrument()`` ran.

    Accepts ``tracer_provider``, ``meter_provider``, ``request_hook(span, environ)`` and
    ``response_hook(span, environ, status, response_headers)``, as OpenTelemetry's WSGI
    middleware does. ``bottle.default_app()`` exists before anything can be instrumented:
    pass it to ``instrument_app``.
    """

    _new_apps = NewApps("Bottle", NEW_APPS_PATCH)

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("bottle >= 0.13",)

    def _instrument(self, **kwargs: Any) -> None:
        import bottle  # type: ignore[import-untyped]

        self._new_apps.start(bottle.Bottle, instrument_app, kwargs)
        # Apps made at import time, before any instrumentation (the default app, module-level
        # `app = Bottle()` imported by the server before instrument() ran) are covered too.
        for app in list(bottle.app):
            with guard.contained("instrumenting a Bottle app"):
                instrument_app(app, **kwargs)

    def _uninstrument(self, **kwargs: Any) -> None:
        self._new_apps.stop()

    @staticmethod
    def instrument_app(app: Any, **kwargs: Any) -> None:
        """Instrument one app (same keyword arguments as ``instrument()``)."""
        instrument_app(app, **kwargs)


def instrument_app(
    app: Any,
    *,
    tracer_provider: Any = None,
    meter_provider: Any = None,
    request_hook: Callable[..., None] | None = None,
    response_hook: Callable[..., None] | None = None,
    **_: Any,
) -> None:
    """Put the server span in front of ``app`` and the route plugin inside it, once per app."""
    if app in _instrumented:
        return
    _instrumented.add(app)
    app.install(RoutePlugin())
    # An instance attribute shadows the method: Bottle.__call__ calls self.wsgi.
    app.wsgi = OpenTelemetryMiddleware(
        app.wsgi,
        request_hook=request_hook,
        response_hook=response_hook,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
    )


class RoutePlugin:
    """Bottle plugin (API 2): the route's rule and unhandled exception, on the server span."""

    name = "opentelemetry_route"
    api = 2

    def apply(self, callback: Callable[..., Any], route: Any) -> Callable[..., Any]:
        import bottle

        passed_through = (bottle.HTTPResponse, bottle.RouteReset)

        @functools.wraps(callback)
        def traced(*args: Any, **kwargs: Any) -> Any:
            span = trace.get_current_span()
            if not span.is_recording():
                return callback(*args, **kwargs)
            with guard.contained("setting the Bottle route"):
                rule = str(route.rule)  # read per call: mounting prefixes rules in place
                span.set_attribute(_HTTP_ROUTE, rule)
                span.update_name(f"{route.method} {rule}")
            try:
                return callback(*args, **kwargs)
            except passed_through:
                raise  # abort(), redirect(): responses, not failures
            except Exception as exc:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
                raise

        return traced
