"""AWS Lambda: the invocation's SERVER span wraps the app's own, which knows the request.

The Lambda instrumentation (AWS's OpenTelemetry layer runs it) opens a SERVER span per
invocation, with HTTP attributes taken from API Gateway's event: its ``http.route`` is the
concrete path for an HTTP API and the resource (often ``/{proxy+}``) for a REST API. The app
inside (FastAPI through Mangum, Flask through apig-wsgi) is an inner layer of that request: its
route, matched by the framework, is the request's, and a request it matched nothing for reports
the concrete path. :func:`beacon_otel.frameworks.settle.settle` adopts it, in the request's one
settle step.
"""

from __future__ import annotations

LAMBDA_SCOPE = "opentelemetry.instrumentation.aws_lambda"
"""The instrumentation scope name of an invocation's SERVER span."""
