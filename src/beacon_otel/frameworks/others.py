"""Hooks for the frameworks beyond the ASGI/WSGI families' own.

Litestar, Bottle, Falcon, Tornado, Pyramid and aiohttp-server.

Each builder takes the request registry and returns the keyword arguments of that framework's
instrumentation (beacon-otel's own for Litestar and Bottle, OpenTelemetry's for the others),
registered in :data:`beacon_otel.frameworks.hooks.FRAMEWORKS`. As everywhere, a hook only keeps
references (the request's environ or headers); the consumer is read when the span ends.

OpenTelemetry's Pyramid and aiohttp-server instrumentations take no hooks: beacon-otel's own
tween and middleware call these (:data:`COMPANIONS` installs them under auto-run).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from opentelemetry.trace import Status, StatusCode

from beacon_otel.frameworks.hooks import Hook, HookTable, RequestRegistry, asgi_hooks, hook, wsgi_hooks


def litestar_hooks(registry: RequestRegistry) -> dict[str, Hook]:
    """Litestar (beacon-otel's instrumentor or Litestar's own plugin): the scope, validation errors."""
    hooks = asgi_hooks(registry)

    @hook("the Litestar exception hook")
    def exception_hook(span: Any, scope: Mapping[str, Any], exception: BaseException) -> None:
        from beacon_otel.instrumentation.litestar import validation_errors

        errors = validation_errors(exception)
        context = registry.get(span)
        if errors is not None and context is not None:
            context.validation_errors = errors

    hooks["exception_hook"] = exception_hook
    return hooks


def falcon_hooks(registry: RequestRegistry) -> dict[str, Hook]:
    """Falcon (WSGI): its request's environ; the exception Falcon answered with a 500 itself."""
    wsgi = wsgi_hooks(registry)
    wsgi_request, wsgi_response = wsgi["request_hook"], wsgi.get("response_hook")

    @hook("the Falcon request hook")
    def request_hook(span: Any, req: Any) -> None:
        wsgi_request(span, req.env)

    @hook("the Falcon response hook")
    def response_hook(span: Any, req: Any, resp: Any) -> None:
        # Falcon renders an unhandled exception as a 500 inside the app, so the span never sees
        # it; OpenTelemetry's instrumentation keeps it in the environ, where it is recorded.
        exception = req.env.get("opentelemetry-falcon.exc")
        if exception is not None and str(resp.status).startswith("5"):
            record_once(span, exception)
        if wsgi_response is not None:
            wsgi_response(span, req.env)

    return {"request_hook": request_hook, "response_hook": response_hook}


def tornado_hooks(registry: RequestRegistry) -> dict[str, Hook]:
    """Tornado: its request's headers, path and method seen as a WSGI environ would show them."""
    wsgi_request = wsgi_hooks(registry)["request_hook"]

    @hook("the Tornado request hook")
    def server_request_hook(span: Any, handler: Any) -> None:
        wsgi_request(span, tornado_environ(handler.request))
        if span.is_recording():
            # The instrumentation names the span after the route but sets no http.route.
            route = tornado_route(handler)
            if route is not None:
                span.set_attribute("http.route", route)

    return {"server_request_hook": server_request_hook}


def tornado_route(handler: Any) -> str | None:
    """The matched rule as a template: named groups by name, others by the handler's arguments.

    ``/users/(?P<user_id>[0-9]+)`` and ``/users/([0-9]+)`` served by ``get(self, user_id)``
    both give ``/users/{user_id}``, as OpenTelemetry's instrumentation names its spans.
    """
    from tornado.routing import PathMatches

    request = handler.request
    for rule in getattr(handler.application.wildcard_router, "rules", ()):
        matcher = rule.matcher
        if not isinstance(matcher, PathMatches) or matcher.match(request) is None:
            continue
        pattern, groups = matcher._find_groups()
        if pattern is None:  # a pattern Tornado cannot reverse: leave it to the regex rules
            return str(matcher.regex.pattern)
        names = sorted(matcher.regex.groupindex, key=matcher.regex.groupindex.__getitem__)
        if len(names) != groups:
            method = getattr(handler, str(request.method).lower(), None)
            names = list(inspect.signature(method).parameters) if method is not None else []
        if len(names) != groups:
            return str(matcher.regex.pattern)
        return str(pattern % tuple(f"{{{name}}}" for name in names))
    return None


def tornado_environ(request: Any) -> dict[str, Any]:
    """A PEP 3333 view of a Tornado request: header values are latin-1 strings there too."""
    environ = headers_environ(request.method, request.path, request.headers.get_all())
    environ["tornado.request"] = request
    return environ


def pyramid_hooks(registry: RequestRegistry) -> dict[str, Hook]:
    """Pyramid (beacon-otel's tween): its request, and the exception an exception view answered."""

    @hook("the Pyramid request hook")
    def request_hook(span: Any, request: Any, response: Any) -> None:
        context = registry.open(span)
        if context is None:
            return
        context.environ = request.environ
        context.request = request  # what a consumer resolver receives
        # An exception view that renders a 500 itself hides the exception from OpenTelemetry's
        # tween, above it; Pyramid keeps what it handled on the request.
        exception = getattr(request, "exception", None)
        status = getattr(response, "status_int", 0)
        if isinstance(exception, Exception) and status >= 500:
            record_once(span, exception)

    return {"request_hook": request_hook}


def aiohttp_hooks(registry: RequestRegistry) -> dict[str, Hook]:
    """aiohttp server (beacon-otel's middleware): its request, seen as a WSGI environ would show it."""

    @hook("the aiohttp request hook")
    def request_hook(span: Any, request: Any) -> None:
        context = registry.open(span)
        if context is not None:
            # Decoded, as an ASGI scope's path is; the environ's strings are latin-1 by PEP 3333.
            path = str(request.path).encode("utf-8").decode("latin-1")
            context.environ = headers_environ(request.method, path, request.headers.items())
            context.request = request
        # OpenTelemetry's aiohttp-server instrumentation up to 0.64b0 puts the handler's function
        # name in http.route (its span name has the template): the resource's canonical path is
        # the route, and an unmatched request (no resource) has none, as later releases say.
        resource = getattr(getattr(request.match_info, "route", None), "resource", None)
        canonical = getattr(resource, "canonical", None)
        span.set_attribute("http.route", canonical if isinstance(canonical, str) else "")

    return {"request_hook": request_hook}


def record_once(span: Any, exception: BaseException) -> None:
    """Record ``exception`` on ``span`` as an error, unless the span has an exception already."""
    if span.is_recording() and not any(event.name == "exception" for event in span.events):
        span.record_exception(exception)
        span.set_status(Status(StatusCode.ERROR, f"{type(exception).__name__}: {exception}"))


def headers_environ(method: str, path: str, headers: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """A PEP 3333 view of a request's method, path and headers (the first value of each)."""
    environ: dict[str, Any] = {"REQUEST_METHOD": method, "SCRIPT_NAME": "", "PATH_INFO": path}
    for name, value in headers:
        environ.setdefault("HTTP_" + name.upper().replace("-", "_"), value)
    return environ


TABLE: dict[str, HookTable] = {
    "litestar": litestar_hooks,
    "bottle": wsgi_hooks,
    "falcon": falcon_hooks,
    "falcon_asgi": asgi_hooks,
    "tornado": tornado_hooks,
    "pyramid": pyramid_hooks,
    "aiohttp-server": aiohttp_hooks,
}
"""Instrumentor entry-point name -> hooks, merged into :data:`beacon_otel.frameworks.hooks.FRAMEWORKS`."""


def _install_pyramid_tween(hooks: dict[str, Hook]) -> None:
    from beacon_otel.frameworks.pyramid import patch_configurator

    patch_configurator(hooks["request_hook"])


def _install_aiohttp_middleware(hooks: dict[str, Hook]) -> None:
    from beacon_otel.frameworks.aiohttp import patch_application

    patch_application(hooks["request_hook"])


COMPANIONS: dict[str, Callable[[dict[str, Hook]], None]] = {
    "pyramid": _install_pyramid_tween,
    "aiohttp-server": _install_aiohttp_middleware,
}
"""Instrumentors that take no hooks -> installs beacon-otel's own tween or middleware with them.

Auto-run calls these instead of passing the hooks to the instrumentor, which would ignore them.
"""
