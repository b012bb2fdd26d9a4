"""What the processor asks of the frameworks when a request ends: one small interface.

The processor names no framework. It asks here whether a span is an inner layer of a mounted
app, and settles a request whose server span ended in one step (:func:`settle`): what the
framework's own telemetry recorded (FastAPI's native spans), the route an app matched inside an
AWS Lambda invocation, and an ASGI request's route read from its scope after routing (Starlette's
mounts and ``Host`` routes). The request side then only reads what settle left in the context.
"""

from __future__ import annotations

from beacon_otel.frameworks.aws_lambda import LAMBDA_SCOPE
from beacon_otel.frameworks.fastapi import (
    NATIVE_SCOPE,
    absorb_inner_span,
    absorb_native_telemetry,
    excluded_by_user,
    is_inner_layer,
)
from beacon_otel.frameworks.starlette import asgi_route
from beacon_otel.mapping.span_view import SpanView
from beacon_otel.request.context import RequestContext

__all__ = [
    "absorb_inner_span",
    "is_inner_layer",
    "settle",
]


def settle(context: RequestContext, span: SpanView) -> bool:
    """The frameworks' one step for a request whose server span ended; False if the user excluded it.

    In order: FastAPI's own telemetry folded into ``context`` (its scope, validation errors and
    exception text), the app's route under an AWS Lambda invocation span (the concrete path when
    the app matched none), then, for an ASGI request no hook gave a route, the template read from
    its scope after routing (``context.route`` and ``context.matched``; ``None`` keeps the span's).
    Inline rather than one call per framework: this runs for every request.
    """
    scope_name = span[1]
    if scope_name == NATIVE_SCOPE:
        absorb_native_telemetry(context)
        if excluded_by_user(context):
            return False  # no span from the contrib instrumentation, no event from us
    if context.route is None:
        if context.inner_route is not None and scope_name == LAMBDA_SCOPE:
            context.route = context.inner_route  # the app inside the invocation
        elif (scope := context.scope) is not None:
            context.route, context.matched = asgi_route(scope)
    return True
