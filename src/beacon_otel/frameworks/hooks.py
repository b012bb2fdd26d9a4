"""The request side: what a request tells Beacon that its span must not carry.

The consumer comes from credentials (X-API-Key, Authorization) that must never become span
attributes, where every other exporter would ship them. So each request gets a
:class:`~beacon_otel.request.context.RequestContext` when its SERVER span starts (kept by
:class:`~beacon_otel.request.registry.RequestRegistry`), the framework hooks keep the request (scope,
environ, framework request) in it, and the processor turns it into one frozen
:class:`~beacon_otel.mapping.facts.RequestFacts` when the span ends.

Frameworks are one table, :data:`FRAMEWORKS`: a name (the instrumentor's entry-point name)
to a function giving the hook keyword arguments of that framework's instrumentation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from beacon_otel.common import guard
from beacon_otel.common.compose import compose as compose
from beacon_otel.frameworks import wsgi as wsgi_support
from beacon_otel.request.registry import RequestRegistry as RequestRegistry
from beacon_otel.request.registry import current_request as current_request

Hook = Callable[..., None]
HookTable = Callable[[RequestRegistry], dict[str, Hook]]


def hooks_for(registry: RequestRegistry, framework: str) -> dict[str, Hook]:
    """Keyword arguments for ``<Framework>Instrumentor().instrument(...)`` or ``instrument_app``."""
    table = FRAMEWORKS.get(framework)
    if table is None:
        raise ValueError(f"Expected framework to be one of {', '.join(FRAMEWORKS)}, got {framework!r}")
    return table(registry)


# -- each framework's hooks -------------------------------------------------------------------
#
# A hook runs inside the instrumentation, on the request's thread: it only keeps references.
# Each is guarded (WSGI hooks are unprotected upstream: one that raises breaks the request).


def hook(action: str) -> Callable[[Hook], Hook]:
    """A hook whose failure is contained: logged once, never raised into the request."""
    return guard.guarded(action, default=None)


def asgi_hooks(registry: RequestRegistry) -> dict[str, Hook]:
    """ASGI, Starlette and FastAPI: the scope, read when the span ends (after routing)."""

    def server_request_hook(span: Any, scope: Mapping[str, Any]) -> None:
        # Inline try rather than ``@hook``: one call less on every request.
        try:
            context = registry.open(span)
            if context is not None and context.scope is None:
                context.scope = scope
        except Exception:
            guard.internal_error("the ASGI request hook")

    return {"server_request_hook": server_request_hook}


def fastapi_hooks(registry: RequestRegistry) -> dict[str, Hook]:
    """FastAPI: the ASGI hooks, and its request validation errors recorded on the request."""
    from beacon_otel.frameworks.fastapi import capture_validation_errors

    capture_validation_errors()
    return asgi_hooks(registry)


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
            if context is not None:
                context.consumer = registry.rules.from_environ(environ)
                context.resolved = True

        hooks["response_hook"] = response_hook
    return hooks


def flask_hooks(registry: RequestRegistry) -> dict[str, Hook]:
    """Flask: the environ, the route of a 405, and the resolver inside the request context."""
    import flask  # noqa: F401  (without Flask, fail here at set-up rather than on a request)

    def request_hook(span: Any, environ: Mapping[str, Any]) -> None:
        try:  # inline, as in the ASGI hook
            context = registry.open(span)
            if context is None:
                return
            context.environ = environ
            request = wsgi_support.current_flask_request()
            if request is not None:
                context.request = request
                if request.routing_exception is not None:
                    context.route = wsgi_support.flask_rule_of_405(request)
                wsgi_support.watch_flask_stream(context, registry.body_sent)
        except Exception:
            guard.internal_error("the Flask request hook")

    hooks = {"request_hook": request_hook}
    if registry.rules.has_resolver:

        @hook("the Flask response hook")
        def response_hook(span: Any, *_: Any) -> None:
            context = registry.get(span)
            if context is None:
                return
            # Called from start_response, inside the request context: the resolver sees
            # flask.request with whatever the app's auth layer attached to it.
            request = wsgi_support.current_flask_request()
            environ = request.environ if request is not None else context.environ
            context.consumer = registry.rules.from_environ(environ or {}, request)
            context.resolved = True

        hooks["response_hook"] = response_hook
    return hooks


def django_hooks(registry: RequestRegistry) -> dict[str, Hook]:
    """Django: its ``HttpRequest`` (decoded path, ``request.user`` for a resolver); Ninja, REST framework."""
    from beacon_otel.frameworks import django as django_support

    @hook("the Django request hook")
    def request_hook(span: Any, request: Any) -> None:
        context = registry.open(span)
        if context is not None:
            context.request = request
            context.environ = request.META
            context.path = request.path
            if not django_support.installed:
                django_support.capture_validation_errors()  # Ninja, REST framework

    resolve = registry.rules.has_resolver

    # Always a response hook: a streamed response's event waits for its last byte.
    @hook("the Django response hook")
    def response_hook(span: Any, request: Any, response: Any) -> None:
        context = registry.get(span)
        if context is None:
            return
        context.route = django_support.ninja_route(request)  # after routing: the view is known
        if resolve:
            # After the middleware chain: request.user and friends are set by now.
            context.consumer = registry.rules.from_environ(request.META, request)
            context.resolved = True
        wsgi_support.watch_django_stream(context, response, registry.body_sent)

    return {"request_hook": request_hook, "response_hook": response_hook}


FRAMEWORKS: dict[str, HookTable] = {
    "asgi": asgi_hooks,
    "fastapi": fastapi_hooks,
    "starlette": asgi_hooks,
    "wsgi": wsgi_hooks,
    "flask": flask_hooks,
    "django": django_hooks,
}
"""Instrumentor entry-point name -> the hooks of its instrumentation. Add a framework here."""


# Litestar, Bottle, Falcon, Tornado, Pyramid, aiohttp: built on the hooks above, in a module of
# their own, with the tween and middleware auto-run installs where an instrumentation takes no hooks.
from beacon_otel.frameworks.others import COMPANIONS as COMPANIONS  # noqa: E402
from beacon_otel.frameworks.others import TABLE as _MORE_FRAMEWORKS  # noqa: E402

FRAMEWORKS.update(_MORE_FRAMEWORKS)
