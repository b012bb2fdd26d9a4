"""Falcon (WSGI): its request's environ, and the exception Falcon answered with a 500 itself.

Falcon's ASGI app is instrumented by :mod:`beacon_otel.instrumentation.falcon_asgi`; its hooks
are the ASGI ones.
"""

from __future__ import annotations

from typing import Any

from beacon_otel.frameworks.base import Hook, hook, record_once
from beacon_otel.frameworks.wsgi import wsgi_hooks
from beacon_otel.request.registry import RequestRegistry


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
