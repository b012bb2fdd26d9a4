"""FastAPI: its request validation errors, and the spans of its own (native) telemetry.

FastAPI 0.142+ opens its own SERVER span (``FastAPI(telemetry={...})``) and keeps, for
synchronous processors, what the request went through: ``fastapi.telemetry.get_telemetry_data()``
gives the request and the validation errors while the span ends. Its span records no
``exception`` event, so the exception text comes from the same per-request record.

Under the contrib FastAPI instrumentation FastAPI's telemetry steps aside and nothing records
the validation errors: Beacon then observes the construction of ``RequestValidationError``
(the 422 response stays FastAPI's own, custom handlers keep working), once per process.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from types import FrameType
from typing import Any

from beacon_otel.common import guard, patching
from beacon_otel.frameworks import flask, starlette
from beacon_otel.frameworks.asgi import asgi_hooks, outermost_sends_outside
from beacon_otel.frameworks.base import Hook, validation_items
from beacon_otel.mapping import span_view
from beacon_otel.mapping.facts import exception_text
from beacon_otel.mapping.span_view import SpanView
from beacon_otel.request.context import RequestContext
from beacon_otel.request.registry import RequestRegistry, current_request

NATIVE_SCOPE = "fastapi"
"""The instrumentation scope name of FastAPI's own spans."""
_EXCLUDED_URLS = "OTEL_PYTHON_FASTAPI_EXCLUDED_URLS"
_ANY_EXCLUDED_URLS = "OTEL_PYTHON_EXCLUDED_URLS"

VALIDATION_PATCH = patching.site(
    "fastapi: request validation errors recorded",
    package="fastapi",
    target="fastapi.exceptions.RequestValidationError.__init__",
    when="with Beacon's FastAPI hooks (auto-run, or hooks('fastapi'))",
)
QUIET_PATCH = patching.site(
    "fastapi: no operation spans unless asked",
    package="fastapi",
    target="fastapi.FastAPI.__init__",
    when="under auto-run, when FastAPI's own telemetry serves Beacon and no trace exporter is set",
)
SEND_OUTSIDE_PATCH = patching.site(
    "fastapi: the response's last message sent outside the request's context",
    package="fastapi",
    target="fastapi.FastAPI.__call__",
    when="under auto-run, with FastAPI's own telemetry or the contrib FastAPI instrumentation",
)


def capture_validation_errors() -> None:
    """Record FastAPI's request validation errors on the request being served, once per process."""
    try:
        from fastapi.exceptions import RequestValidationError
    except ImportError:
        return
    patching.patch(RequestValidationError, "__init__", _observed_init, site=VALIDATION_PATCH)


def _observed_init(original_init: Any) -> Any:
    @functools.wraps(original_init)
    def observed_init(self: Any, errors: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, errors, *args, **kwargs)
        with guard.contained("recording FastAPI validation errors"):
            context = current_request()
            if context is not None:
                context.validation_errors = validation_items(errors)

    return observed_init


def has_native_telemetry() -> bool:
    """Whether this FastAPI has telemetry of its own (0.142 and later)."""
    try:
        import fastapi.telemetry  # noqa: F401
    except ImportError:
        return False
    return True


def is_native_span(span: SpanView) -> bool:
    """Whether FastAPI's own telemetry opened this span."""
    _, scope_name, _, _, _, _ = span
    return scope_name == NATIVE_SCOPE


def absorb_native_telemetry(context: RequestContext) -> None:
    """What FastAPI recorded for the request whose native span is ending, onto its context.

    Runs inside ``span.end()``, where FastAPI's per-request record is still current.
    """
    try:
        from fastapi.telemetry import get_telemetry_data
    except ImportError:  # pragma: no cover - a native span means FastAPI has telemetry
        return
    data = get_telemetry_data()
    if data is not None:
        if context.scope is None:
            request = data.request if data.request is not None else data.websocket
            scope = getattr(request, "scope", None)
            if scope is not None:
                context.scope = scope
        if data.errors and context.validation_errors is None:
            context.validation_errors = validation_items(data.errors)
    if context.error is None:
        context.error = _native_exception_text()
    if context.scope is None:
        context.scope = _native_scope()


@functools.cache
def _user_excluded_urls() -> Any:
    """The contrib FastAPI instrumentation's exclusion list, read once; None when unset."""
    if not (os.environ.get(_EXCLUDED_URLS) or os.environ.get(_ANY_EXCLUDED_URLS)):
        return None
    from opentelemetry.util.http import get_excluded_urls

    return get_excluded_urls("FASTAPI")


def excluded_by_user(context: RequestContext) -> bool:
    """A request the user excluded from FastAPI's instrumentation (a health check, say).

    ``OTEL_PYTHON_FASTAPI_EXCLUDED_URLS`` (or ``OTEL_PYTHON_EXCLUDED_URLS``) is the contrib
    instrumentation's setting: it makes no span for those URLs, so Beacon makes no event. When
    FastAPI's own telemetry serves Beacon instead, Beacon honours the same setting, matched
    against the same URL the contrib middleware builds.
    """
    scope = context.scope
    excluded = _user_excluded_urls()
    if scope is None or excluded is None:
        return False
    from opentelemetry.instrumentation.asgi import get_host_port_url_tuple

    _, _, url = get_host_port_url_tuple(scope)  # type: ignore[no-untyped-call]
    return bool(excluded.url_disabled(url))


_INNER_LAYERS = frozenset(
    [
        *(
            f"opentelemetry.instrumentation.{name}"
            for name in ("asgi", "fastapi", "starlette", "wsgi", "flask", "django")
        ),
        flask.LEAN_SCOPE,  # beacon-otel's lean span source
    ]
)


def is_inner_layer(span: Any) -> bool:
    """An INTERNAL span of an instrumented app inside the request's SERVER span.

    The contrib ASGI and WSGI instrumentations open one (not a SERVER span: its parent is
    local) with the request's HTTP attributes, for a mounted app or for the app inside an AWS
    Lambda invocation's span; ``http send``/``http receive`` spans carry none of them.
    """
    # Attributes first: nearly every span asked about (http send/receive) fails there, cheaply.
    attributes = span_view.attributes(span)
    if "http.request.method" not in attributes and "http.method" not in attributes:
        return False
    return span_view.scope_name(span) in _INNER_LAYERS


def absorb_inner_span(context: RequestContext, span: SpanView) -> None:
    """An inner SERVER span of the request ended: keep what it knows that the outer may not."""
    _, _, attributes, _, _, readable = span
    if is_native_span(span):
        absorb_native_telemetry(context)
    if context.error is None:
        context.error = exception_text(readable.events)
    if not context.inner_route:
        route = attributes.get("http.route")
        context.inner_route = route if isinstance(route, str) else ""


def _native_exception_text() -> str | None:
    # FastAPI keeps the request's unhandled exceptions on its private per-request record;
    # the public TelemetryData has none. Read defensively: absent in other versions.
    try:
        from fastapi.telemetry._api import _get_request_telemetry
    except ImportError:  # pragma: no cover - another FastAPI layout: "HTTP 500" then
        return None
    record = _get_request_telemetry()
    exceptions = getattr(record, "_exceptions", None) or ()
    for exc in reversed(list(exceptions)):
        if isinstance(exc, Exception):
            text = str(exc)
            return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return None


def _native_scope() -> Mapping[str, Any] | None:
    # A request no route handler saw (a 404, a 405) leaves TelemetryData.request empty, yet
    # its consumer and path are in the ASGI scope that FastAPI's telemetry is running with.
    # The span ends inside that call, so its frame is on this thread's stack.
    try:
        from fastapi.telemetry._asgi import NativeTelemetry
    except ImportError:  # pragma: no cover
        return None
    code = NativeTelemetry.__call__.__code__
    import sys

    frame: FrameType | None = sys._getframe(1)
    for _ in range(40):
        if frame is None:
            return None
        if frame.f_code is code:
            scope = frame.f_locals.get("scope")
            return scope if isinstance(scope, Mapping) else None
        frame = frame.f_back
    return None


@guard.guarded("switching off FastAPI's unexported operation spans", default=None)
def quiet_operation_spans() -> None:
    """FastAPI apps made from now on open no INTERNAL operation spans unless asked to.

    With FastAPI's own telemetry serving Beacon and no trace exporter, its ``fastapi.endpoint``,
    ``fastapi.dependencies`` and ``fastapi.serialization`` spans reach nobody (Beacon reads the
    SERVER span and the request's telemetry data, which FastAPI records either way), yet each
    costs a span's start and end on every request. An app given ``operation_spans`` in its
    ``telemetry`` settings keeps that choice.
    """
    import fastapi

    patching.patch(fastapi.FastAPI, "__init__", _quiet_init, site=QUIET_PATCH)


def send_last_message_outside() -> None:
    """FastAPI and Starlette apps give the server the response's last message outside the request.

    FastAPI's own ``__call__`` opens its telemetry's SERVER span before Starlette's runs, so
    the server's ``send`` is wrapped there (see
    :func:`beacon_otel.frameworks.asgi.send_outside_request`).
    """
    starlette.send_last_message_outside()
    try:
        import fastapi
    except ImportError:
        return
    patching.patch(fastapi.FastAPI, "__call__", outermost_sends_outside, site=SEND_OUTSIDE_PATCH)


def _quiet_init(original: Any) -> Any:
    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        chosen = kwargs.get("telemetry") or {}
        config = getattr(self, "_telemetry", None)  # the settings FastAPI reads per request
        if "operation_spans" not in chosen and isinstance(config, dict):
            config["operation_spans"] = False

    return __init__


def fastapi_hooks(registry: RequestRegistry) -> dict[str, Hook]:
    """FastAPI: the ASGI hooks, and its request validation errors recorded on the request."""
    capture_validation_errors()
    return asgi_hooks(registry)
