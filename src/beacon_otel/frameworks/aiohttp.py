"""aiohttp server: a middleware that shows Beacon each request, which OpenTelemetry's cannot.

OpenTelemetry's aiohttp-server instrumentation takes no hooks, so without this middleware
Beacon never sees a request's headers and every consumer is null. It runs right after
OpenTelemetry's middleware, inside the request's span, and before the app's own middlewares
(an auth middleware answering 401 still has its caller counted).

By hand, on an app built after ``AioHttpServerInstrumentor().instrument()``::

    beacon_otel.frameworks.aiohttp.instrument_app(app, **beacon.hooks("aiohttp-server"))

Under ``opentelemetry-instrument`` beacon-otel adds it to every ``web.Application``
(:func:`patch_application`).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from opentelemetry import trace

from beacon_otel.common import guard, patching
from beacon_otel.frameworks.base import Hook, headers_environ, hook
from beacon_otel.request.registry import RequestRegistry

RequestHook = Callable[[Any, Any], None]
"""``request_hook(span, request)``: the server span and the ``aiohttp.web.Request``."""
_OTEL_MODULE = "opentelemetry.instrumentation.aiohttp_server"
MIDDLEWARE_PATCH = patching.site(
    "aiohttp: Beacon's middleware in every app",
    package="aiohttp",
    target="aiohttp.web_app.Application.__init__",
    when="under auto-run, with the aiohttp server instrumentation",
)


class BeaconMiddleware:
    """New-style aiohttp middleware (``__middleware_version__ = 1``) calling the request hook."""

    __middleware_version__ = 1

    def __init__(self, request_hook: RequestHook) -> None:
        self.request_hook = request_hook

    async def __call__(self, request: Any, handler: Callable[[Any], Awaitable[Any]]) -> Any:
        span = trace.get_current_span()  # OpenTelemetry's middleware made its span current
        if span.is_recording():
            with guard.contained("showing Beacon an aiohttp request"):
                self.request_hook(span, request)
        return await handler(request)


def instrument_app(app: Any, *, request_hook: RequestHook | None = None, **_: Any) -> None:
    """Add Beacon's middleware to ``app`` right after OpenTelemetry's, once per app.

    Raises ``RuntimeError`` when the app already runs: its middleware list is frozen then.
    """
    if request_hook is None:
        return
    middlewares = app.middlewares
    if any(isinstance(m, BeaconMiddleware) for m in middlewares):
        return
    after = 0
    for index, middleware in enumerate(middlewares):
        if getattr(middleware, "__module__", None) == _OTEL_MODULE:
            after = index + 1
    if middlewares.frozen:
        raise RuntimeError("beacon-otel: add Beacon's aiohttp middleware before the app starts")
    middlewares.insert(after, BeaconMiddleware(request_hook))


def patch_application(request_hook: RequestHook) -> None:
    """Zero-code: every ``web.Application`` gets the middleware when it is made.

    The base class's ``__init__`` is wrapped, not ``web.Application`` replaced as OpenTelemetry
    does, so the order in which the two are set up does not matter: OpenTelemetry's subclass
    puts its middleware first before calling this ``__init__``.
    """
    from aiohttp import web_app

    def with_middleware(original: Any) -> Any:
        @functools.wraps(original)
        def init(app: Any, *args: Any, **kwargs: Any) -> None:
            original(app, *args, **kwargs)
            with guard.contained("adding Beacon's aiohttp middleware"):
                instrument_app(app, request_hook=request_hook)

        return init

    patching.patch(web_app.Application, "__init__", with_middleware, site=MIDDLEWARE_PATCH)


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


def install_middleware(hooks: dict[str, Hook]) -> None:
    """Under auto-run: Beacon's middleware in every aiohttp application made from now on."""
    patch_application(hooks["request_hook"])
