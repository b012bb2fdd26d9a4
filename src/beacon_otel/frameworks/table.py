"""The frameworks Beacon knows, one table: each instrumentor's name to its framework's hooks.

The consumer comes from credentials (X-API-Key, Authorization) that must never become span
attributes, where every other exporter would ship them. So each request gets a
:class:`~beacon_otel.request.context.RequestContext` when its SERVER span starts (kept by
:class:`~beacon_otel.request.registry.RequestRegistry`), the framework hooks keep the request
(scope, environ, framework request) in it, and the processor turns it into one frozen
:class:`~beacon_otel.mapping.facts.RequestFacts` when the span ends.

Everything Beacon knows about one framework is in its module of this package; this table is
the one place a framework is added. OpenTelemetry's Pyramid and aiohttp-server instrumentations
take no hooks: beacon-otel's own tween and middleware call them (:data:`COMPANIONS` installs
them under auto-run). Where Beacon is the only reader of the spans, auto-run installs beacon-otel's
own lean span source for a framework instead of its instrumentation (:data:`LEAN_SOURCES`).
"""

from __future__ import annotations

from collections.abc import Callable

from beacon_otel.common import guard
from beacon_otel.frameworks import aiohttp, django, falcon, fastapi, flask, litestar, pyramid, tornado
from beacon_otel.frameworks.asgi import asgi_hooks
from beacon_otel.frameworks.base import Hook, HookTable
from beacon_otel.frameworks.wsgi import wsgi_hooks
from beacon_otel.request.registry import RequestRegistry

FRAMEWORKS: dict[str, HookTable] = {
    "asgi": asgi_hooks,
    "fastapi": fastapi.fastapi_hooks,
    "starlette": asgi_hooks,
    "wsgi": wsgi_hooks,
    "flask": flask.flask_hooks,
    "django": django.django_hooks,
    "litestar": litestar.litestar_hooks,
    "bottle": wsgi_hooks,
    "falcon": falcon.falcon_hooks,
    "falcon_asgi": asgi_hooks,
    "tornado": tornado.tornado_hooks,
    "pyramid": pyramid.pyramid_hooks,
    "aiohttp-server": aiohttp.aiohttp_hooks,
}
"""Instrumentor entry-point name -> the hooks of its instrumentation. Add a framework here."""

COMPANIONS: dict[str, Callable[[dict[str, Hook]], None]] = {
    "pyramid": pyramid.install_tween,
    "aiohttp-server": aiohttp.install_middleware,
}
"""Instrumentors that take no hooks -> installs beacon-otel's own tween or middleware with them.

Auto-run calls these instead of passing the hooks to the instrumentor, which would ignore them.
"""

LeanSource = Callable[[RequestRegistry], None]
"""Installs a framework's lean span source: SERVER spans on the global tracer provider, with the
request's context filled in directly (no hooks), for ``registry``."""

LEAN_SOURCES: dict[str, LeanSource] = {
    "flask": flask.install_lean_source,
    "django": django.install_lean_source,
}
"""Instrumentors whose framework has a lean span source -> the function that installs it.

A lean source makes a real SDK SERVER span with the stable semantic conventions' name and the
few attributes an event needs, at a fraction of the instrumentation's cost. Auto-run installs
it instead of loading the instrumentor when no trace or metrics exporter is configured (nobody
else would see the attributes and metrics the instrumentation adds), unless
``BEACON_SERVER_SPANS=stock``.
"""


CAPTURE_HEADER_VARIABLES = (
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST",
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE",
)
"""The instrumentations' header capture: span attributes only they make, so a framework that is
asked for them keeps its instrumentation instead of a lean source (auto-run, and the doctor)."""


def hooks_for(registry: RequestRegistry, framework: str) -> dict[str, Hook]:
    """Keyword arguments for ``<Framework>Instrumentor().instrument(...)`` or ``instrument_app``."""
    table = FRAMEWORKS.get(framework)
    if table is None:
        raise ValueError(f"Expected framework to be one of {', '.join(FRAMEWORKS)}, got {framework!r}")
    if framework in ("fastapi", "starlette"):
        # By hand as under auto-run: without it uvicorn's keep-alive timer keeps each request's
        # span alive, and the garbage collector's full collections make the latency tail.
        with guard.contained(f"sending the {framework} response's last message outside the request"):
            fastapi.send_last_message_outside()
    return table(registry)
