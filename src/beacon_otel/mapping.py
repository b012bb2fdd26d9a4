"""A finished HTTP server span becomes one Beacon event (both semantic-convention generations)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from beacon_otel.event import (
    MAX_ERROR,
    MAX_PATH,
    MAX_ROUTE,
    RequestEvent,
    clean_method,
    clean_text,
    clean_url_text,
    clean_validation_errors,
)

# Stable (new) names first, then the old ones: with OTEL_SEMCONV_STABILITY_OPT_IN=http/dup
# a span carries both and they agree.
_METHOD = ("http.request.method", "http.method")
_STATUS = ("http.response.status_code", "http.status_code")


class Unmappable(Exception):
    """The span cannot become a contract-valid event; ``reason`` names the drop counter."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def span_to_event(
    span: ReadableSpan,
    *,
    consumer: str | None = None,
    route: str | None = None,
    validation_errors: list[dict[str, str]] | None = None,
    request_path: str | None = None,
    request_method: Callable[[], str | None] | None = None,
) -> RequestEvent:
    """Map a finished SERVER span.

    ``route`` overrides ``http.route`` (mounted sub-apps). ``request_path`` and
    ``request_method`` come from the request itself (from the hooks) and win over the span's
    lossy attributes; the method is asked for only when the span has none of its own.
    """
    attributes = _plain_attributes(span)
    method = _method(attributes, request_method)
    path = _path(attributes, request_path)
    status = _int(attributes.get(_STATUS[0]) or attributes.get(_STATUS[1]))
    error = None
    if status is None or status >= 500:
        # span.events copies a list on every access: only failed requests need it.
        exception = _exception_text(span.events)
        if status is None:
            if exception is None and span.status.status_code is not StatusCode.ERROR:
                raise Unmappable("no_status")
            # Starlette and raw ASGI/WSGI send the 500 outside the instrumentation's reach.
            status = 500
        error = clean_text(exception, MAX_ERROR) if exception else f"HTTP {status}"
    elif status < 100:
        raise Unmappable("invalid_status")
    if status > 599:
        raise Unmappable("invalid_status")
    start, end = span.start_time, span.end_time
    if start is None or end is None:
        raise Unmappable("unfinished_span")
    return RequestEvent(
        end,
        method,
        _route(route or attributes.get("http.route"), path),
        path,
        status,
        max(0, (end - start) // 1_000_000),
        consumer,
        error,
        clean_validation_errors(validation_errors) if validation_errors else None,
    )


def _plain_attributes(span: ReadableSpan) -> Mapping[str, Any]:
    # span.attributes is a fresh read-only proxy over the SDK's BoundedAttributes, whose
    # .get() raises and catches KeyError on every miss; the dict behind it answers directly.
    # Both are read-only here; the fallback keeps other ReadableSpan implementations working.
    backing = getattr(getattr(span, "_attributes", None), "_dict", None)
    if type(backing) is dict:
        return backing
    return span.attributes or {}


def _method(attributes: Mapping[str, Any], request_method: Callable[[], str | None] | None) -> str:
    method = attributes.get(_METHOD[0])
    if method == "_OTHER":
        # New conventions fold unknown methods into _OTHER and keep the original beside it.
        method = attributes.get("http.request.method_original") or "_OTHER"
    elif method is None:
        method = attributes.get(_METHOD[1])
    if method is None:
        raise Unmappable("not_http")
    if method == "_OTHER":
        # Old conventions keep no original at all: ask the request.
        method = (request_method() if request_method is not None else None) or "OTHER"
    return clean_method(method)


def _path(attributes: Mapping[str, Any], request_path: str | None) -> str:
    path = request_path
    if not path:
        path = attributes.get("url.path")
    if not path:
        target = attributes.get("http.target")
        if target is not None:
            path = str(target).split("?", 1)[0]
            if not path.startswith("/"):  # absolute-form request line: http://host/path
                path = _url_path(path) or path
        else:
            url = attributes.get("http.url") or attributes.get("url.full")
            path = _url_path(url) if url else None
    if not path:
        raise Unmappable("no_path")
    # The query was split off above, so a "?" here is a decoded %3F: re-encode it, or the
    # ingest would take it for a query string and refuse the whole batch.
    path = str(path).replace("?", "%3F")
    if not path.startswith("/"):
        path = "/" + path
    return clean_url_text(path, MAX_PATH)


def _url_path(url: Any) -> str | None:
    try:
        return urlsplit(str(url)).path or "/"
    except ValueError:
        return None


# An app has a fixed set of route templates: each is cleaned once. Bounded all the same.
_clean_routes: dict[str, str] = {}
_CLEAN_ROUTES_LIMIT = 10_000


def _route(template: Any, path: str) -> str:
    if not template:
        return path[:MAX_ROUTE]  # no route matched (404): the contract wants the concrete path
    if type(template) is str and (cached := _clean_routes.get(template)) is not None:
        return cached
    route = str(template)
    if not route.startswith("/"):
        route = "/" + route  # Django reports "users/<int:pk>"
    route = clean_url_text(route, MAX_ROUTE)
    if type(template) is str and len(_clean_routes) < _CLEAN_ROUTES_LIMIT:
        _clean_routes[template] = route
    return route


def _int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _exception_text(events: Sequence[Any]) -> str | None:
    for event in events:
        if event.name == "exception":
            attributes = event.attributes or {}
            # exception.type is module-qualified; the contract wants "ExcType: message".
            exc_type = str(attributes.get("exception.type") or "Exception").rsplit(".", 1)[-1]
            message = attributes.get("exception.message")
            return f"{exc_type}: {message}" if message else exc_type
    return None
