"""AWS Lambda: the invocation's SERVER span wraps the app's own, which knows the request.

The Lambda instrumentation (AWS's OpenTelemetry layer runs it) opens a SERVER span per
invocation, with HTTP attributes taken from API Gateway's event: its ``http.route`` is the
concrete path for an HTTP API and the resource (often ``/{proxy+}``) for a REST API. The app
inside (FastAPI through Mangum, Flask through apig-wsgi) is an inner layer of that request: its
route, matched by the framework, is the request's, and a request it matched nothing for reports
the concrete path.
"""

from __future__ import annotations

from beacon_otel.mapping.span_view import SpanView
from beacon_otel.request.context import RequestContext

LAMBDA_SCOPE = "opentelemetry.instrumentation.aws_lambda"


def adopt_app_route(context: RequestContext, span: SpanView) -> None:
    """An invocation span's request takes the route its app matched (none: the concrete path)."""
    _, scope_name, _, _, _, _ = span
    if scope_name == LAMBDA_SCOPE and context.route is None:
        context.route = context.inner_route
