"""What the processor asks of the frameworks when a request ends: one small interface.

The processor names no framework. It asks here whether a span is a framework's own (FastAPI's
native telemetry), settles what that telemetry recorded into the request's context in one step,
asks whether a span is an inner layer of a mounted app, and reads an ASGI request's route from
its scope after routing (Starlette's mounts and ``Host`` routes).
"""

from __future__ import annotations

from beacon_otel.frameworks.aws_lambda import adopt_app_route
from beacon_otel.frameworks.fastapi import (
    absorb_inner_span,
    absorb_native_telemetry,
    excluded_by_user,
    is_inner_layer,
    is_native_span,
)
from beacon_otel.frameworks.starlette import asgi_route as scope_route
from beacon_otel.request.context import RequestContext

__all__ = [
    "absorb_inner_span",
    "adopt_app_route",
    "is_inner_layer",
    "is_native_span",
    "scope_route",
    "settle",
]


def settle(context: RequestContext) -> bool:
    """Fold what the framework's own telemetry recorded into ``context``; False if the user excluded it."""
    absorb_native_telemetry(context)
    return not excluded_by_user(context)
