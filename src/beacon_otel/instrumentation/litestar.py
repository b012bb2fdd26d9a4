"""Litestar server spans: ``LitestarInstrumentor`` (no OpenTelemetry instrumentation exists).

The span comes from OpenTelemetry's ASGI middleware wrapped around the app's ASGI handler, so
every request has one, 404s and 405s included. Two things only Litestar knows are added:

- the route template with router prefixes and converters (``/zoo/pets/{pet_id:int}``), set
  as ``http.route`` and in the span name when the response starts, after routing;
- the exceptions Litestar turns into responses itself: an unhandled one (a 500) is recorded
  on the span as an exception event, and every one is given to ``exception_hook``.

An app that uses Litestar's own ``OpenTelemetryPlugin`` keeps its single span; its route
(``GET /users/42``, the method and the concrete path) is corrected the same way.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Collection, MutableMapping
from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.trace import Status, StatusCode
from opentelemetry.util.http import get_excluded_urls

from beacon_otel.common import guard, patching
from beacon_otel.common.compose import compose
from beacon_otel.instrumentation.new_apps import NewApps

ExceptionHook = Callable[[Any, MutableMapping[str, Any], BaseException], None]
"""``exception_hook(span, scope, exception)``: every exception Litestar answers for itself."""

_HTTP_ROUTE = "http.route"
NEW_APPS_PATCH = patching.site(
    "litestar: every new app instrumented",
    package="litestar",
    target="litestar.Litestar.__init__",
    when="when beacon-otel's Litestar instrumentor is on (auto-run does it)",
)


class LitestarInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Server spans for every ``litestar.Litestar`` app created once ``instrument()`` ran.

    Accepts ``tracer_provider``, ``meter_provider``, ``server_request_hook(span, scope)``,
    ``client_request_hook``, ``client_response_hook``, ``exclude_spans`` (as OpenTelemetry's
    ASGI middleware does) and ``exception_hook(span, scope, exception)``.
    ``LITESTAR_EXCLUDED_URLS`` (or ``OTEL_PYTHON_EXCLUDED_URLS``) excludes URLs.
    """

    _new_apps = NewApps("Litestar", NEW_APPS_PATCH)

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("litestar >= 2.8",)

    def _instrument(self, **kwargs: Any) -> None:
        from litestar import Litestar

        self._new_apps.start(Litestar, instrument_app, kwargs)

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
    server_request_hook: Callable[..., None] | None = None,
    client_request_hook: Callable[..., None] | None = None,
    client_response_hook: Callable[..., None] | None = None,
    exception_hook: ExceptionHook | None = None,
    exclude_spans: list[str] | None = None,
    **_: Any,
) -> None:
    """Wrap ``app``'s ASGI handler in a server span, once per app."""
    handler = app.asgi_handler
    plugin_middleware = getattr(handler, "open_telemetry_middleware", None)
    outermost = plugin_middleware if isinstance(plugin_middleware, OpenTelemetryMiddleware) else handler
    if isinstance(getattr(outermost, "app", None), RouteRecorder):
        return  # instrumented already (Litestar apps have slots: no marker attribute, no weakref)
    app.after_exception.append(_exception_recorder(exception_hook))
    if isinstance(plugin_middleware, OpenTelemetryMiddleware):
        # Litestar's OpenTelemetryPlugin already opens the span: one span per request, so its
        # middleware is kept, given the hooks, and its route corrected from inside.
        plugin_middleware.app = RouteRecorder(plugin_middleware.app, app)
        if server_request_hook is not None:
            plugin_middleware.server_request_hook = compose(
                server_request_hook, plugin_middleware.server_request_hook
            )
        return
    app.asgi_handler = OpenTelemetryMiddleware(
        RouteRecorder(handler, app),
        excluded_urls=get_excluded_urls("LITESTAR"),
        default_span_details=span_details,
        server_request_hook=server_request_hook,
        client_request_hook=client_request_hook,
        client_response_hook=client_response_hook,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        exclude_spans=exclude_spans,  # type: ignore[arg-type]
    )


def span_details(scope: MutableMapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The span name before routing: the method alone, as the conventions ask without a route."""
    method = scope.get("method")
    return (str(method) if method else "HTTP"), {}


class RouteRecorder:
    """Sets the route template on the server span when the response starts (after routing)."""

    def __init__(self, handler: Callable[..., Awaitable[None]], app: Any) -> None:
        self.handler = handler
        self.app = app
        self._templates: dict[tuple[str | None, int], str] = {}

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await self.handler(scope, receive, send)
            return
        span = trace.get_current_span()  # the server span: the middleware made it current
        if not span.is_recording():
            await self.handler(scope, receive, send)
            return

        async def send_with_route(message: MutableMapping[str, Any]) -> None:
            if message.get("type") == "http.response.start":
                with guard.contained("setting the Litestar route"):
                    self._set_route(span, scope)
            await send(message)

        await self.handler(scope, receive, send_with_route)

    def _set_route(self, span: Any, scope: MutableMapping[str, Any]) -> None:
        template = self.template(scope)
        if template:
            span.set_attribute(_HTTP_ROUTE, template)
            span.update_name(f"{scope.get('method', 'HTTP')} {template}")
        elif str(span.attributes.get(_HTTP_ROUTE, "")).startswith(f"{scope.get('method')} "):
            # The plugin's "GET /nope" is neither a route nor a path: unmatched has no route.
            span.set_attribute(_HTTP_ROUTE, "")

    def template(self, scope: MutableMapping[str, Any]) -> str | None:
        """The declared path of the matched route, router prefixes and converters included."""
        handler = scope.get("route_handler")
        if handler is None:
            return None  # routing failed: nothing matched
        # Litestar 2.9+ keeps the matched template in the scope, without converters; older
        # ones only the handler, which is enough when it serves one route.
        path_format = scope.get("path_template")
        known = path_format if isinstance(path_format, str) else None
        template = self._templates.get((known, id(handler)))
        if template is None:
            self._templates = self._route_templates()
            template = self._templates.get((known, id(handler)), known)
        return template

    def _route_templates(self) -> dict[tuple[str | None, int], str]:
        templates: dict[tuple[str | None, int], str] = {}
        paths_of: dict[int, set[str]] = {}
        for route in self.app.routes:
            for handler in getattr(route, "route_handlers", ()):
                templates[(route.path_format, id(handler))] = route.path
                paths_of.setdefault(id(handler), set()).add(route.path)
        for handler_id, paths in paths_of.items():
            if len(paths) == 1:
                templates[(None, handler_id)] = next(iter(paths))
        return templates


def _exception_recorder(exception_hook: ExceptionHook | None) -> Callable[..., Awaitable[None]]:
    """An ``after_exception`` handler: Litestar answers exceptions before the middleware sees them."""

    async def record(exception: BaseException, scope: MutableMapping[str, Any]) -> None:
        span = trace.get_current_span()
        if not span.is_recording():
            return
        with guard.contained("recording a Litestar exception"):
            status = getattr(exception, "status_code", None)
            if not isinstance(status, int) or status >= 500:
                span.record_exception(exception)
                span.set_status(Status(StatusCode.ERROR, f"{type(exception).__name__}: {exception}"))
        if exception_hook is not None:
            with guard.contained("the Litestar exception hook", user_code=True):
                exception_hook(span, scope, exception)

    return record


def validation_errors(exception: BaseException) -> list[dict[str, str]] | None:
    """A ``ValidationException``'s details as Beacon's ``validation_errors``; else ``None``.

    Litestar lists each failure as ``{"message", "key", "source"}``; the field is
    ``source.key`` (``body.age``, ``path.pet_id``, ``query.page_size``), like FastAPI's ``loc``.
    """
    from litestar.exceptions import ValidationException

    if not isinstance(exception, ValidationException):
        return None
    extra = exception.extra if isinstance(exception.extra, list) else []
    items = []
    for error in extra:
        if isinstance(error, dict):
            message = str(error.get("message", ""))
            field = _field(error.get("source"), error.get("key"), message)
            items.append({"field": field, "message": message})
    return items or [{"field": "", "message": str(exception.detail)}]


_MISSING = re.compile(r"missing required field `([^`]+)`")


def _field(source: object, key: object, message: str) -> str:
    """``source.key`` as FastAPI would name it: ``query.page_size``, ``body.age``.

    The source of a parameter is a ``ParamType`` member, whose ``str()`` is its repr
    (``ParamType.QUERY``): its value is the name. A body failure's key is the object that
    failed, ``data`` for the body itself: a missing field names itself only in the message.
    """
    source = getattr(source, "value", source)
    parts = [str(part) for part in (source, key) if part]
    if source == "body":
        if key == "data":
            parts.pop()
        if (missing := _MISSING.search(message)) is not None:
            parts.append(missing.group(1))
    return ".".join(parts)
