"""Tornado: its request seen as a WSGI environ would show it, and the matched rule as a template."""

from __future__ import annotations

import inspect
from typing import Any

from beacon_otel.frameworks.base import Hook, headers_environ, hook
from beacon_otel.frameworks.wsgi import wsgi_hooks
from beacon_otel.request.registry import RequestRegistry


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
