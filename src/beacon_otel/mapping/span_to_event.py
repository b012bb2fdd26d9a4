"""A finished HTTP server span becomes one Beacon event (both semantic-convention generations)."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from beacon_otel.contract.event import (
    MAX_ERROR,
    MAX_PATH,
    MAX_ROUTE,
    STANDARD_METHODS,
    RequestEvent,
    clean_method,
    clean_text,
    clean_url_text,
    clean_validation_errors,
)
from beacon_otel.mapping.facts import NO_FACTS, RequestFacts, exception_text
from beacon_otel.mapping.span_view import SpanView, read
from beacon_otel.mapping.templates import regex_route_template

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
    span: SpanView | ReadableSpan, request: RequestFacts = NO_FACTS, error_detail: str = "first_line"
) -> RequestEvent:
    """Map a finished SERVER span (as the processor read it), with what its request said.

    The request's path and method win over the span's lossy attributes; its route over
    ``http.route`` (mounted sub-apps, ``Host`` routes); the exception text of the span's
    ``exception`` event over the request's, which covers spans that record none (FastAPI's
    own telemetry). The method is the request's only when the span has none of its own.
    ``error_detail`` says how much of the exception text the event keeps (:func:`error_text`).
    """
    # The processor hands over its one reading; a ReadableSpan (tests, users) is read here.
    _, _, attributes, start, end, readable = span if type(span) is tuple else read(span)  # type: ignore[arg-type]
    # Each field has a quick path for what nearly every request carries (a standard method, an
    # int status, a plain ASCII path): no call, no copy. Anything else takes the general one.
    method = attributes.get(_METHOD[0]) or attributes.get(_METHOD[1])
    if type(method) is not str or method not in STANDARD_METHODS:
        method = _method(attributes, request.method)
    path = request.path
    # What _path would return unchanged: absolute, printable ASCII, no "?" to re-encode.
    if not (
        type(path) is str
        and path[:1] == "/"
        and len(path) <= MAX_PATH
        and path.isascii()
        and path.isprintable()
        and "?" not in path
    ):
        path = _path(attributes, path)
    status = attributes.get(_STATUS[0]) or attributes.get(_STATUS[1])
    if type(status) is not int:
        status = _int(status)
    error = None
    if status is None or status >= 500:
        # span.events copies a list on every access: only failed requests need it.
        exception = exception_text(readable.events) or request.error
        if status is None:
            if exception is None and readable.status.status_code is not StatusCode.ERROR:
                raise Unmappable("no_status")
            # Starlette and raw ASGI/WSGI send the 500 outside the instrumentation's reach.
            status = 500
        error = clean_text(error_text(exception, error_detail), MAX_ERROR) if exception else f"HTTP {status}"
    elif status < 100:
        raise Unmappable("invalid_status")
    if status > 599:
        raise Unmappable("invalid_status")
    if start is None or end is None:
        raise Unmappable("unfinished_span")
    if not (type(start) is int and type(end) is int and start >= 0 and 0 <= end <= LATEST_TS_NS):
        # A custom instrumentation may pass floats (time.time() * 1e9) or seconds; a float
        # duration_ms gets the whole batch refused, and a time past year 9999 cannot be a ts.
        start, end = _time_ns(start), _time_ns(end)
    if request.body_sent_ns is not None and request.body_sent_ns > end:
        end = request.body_sent_ns  # a streamed body: the span ended before its last byte
    template = request.route
    if template is None or (not request.route_matched and status in (404, 405)):
        template = attributes.get("http.route") if template is None else None
    route = _clean_routes.get(template) if type(template) is str else None
    validation_errors = request.validation_errors
    duration_ms = (end - start) // 1_000_000
    return _event(
        (
            end,
            method,
            route if route is not None else _route(template, path),
            path,
            status,
            duration_ms if duration_ms > 0 else 0,
            request.consumer,
            error,
            clean_validation_errors(validation_errors) if validation_errors else None,
        )
    )


_event: Callable[[tuple[Any, ...]], RequestEvent] = functools.partial(tuple.__new__, RequestEvent)
"""A ``RequestEvent`` from all its fields in order, made in C (as ``request.context._facts``)."""


def plain_event(
    end: int,
    method: str,
    template: str | None,
    path: str | None,
    status: int | None,
    start: int,
    consumer: str | None,
) -> RequestEvent | None:
    """The event :func:`span_to_event` would make of a request's span on its quick paths alone.

    For a span source that knows its request's facts (``frameworks.flask``'s and
    ``frameworks.django``'s lean ones), without reading the span (about 20,000 instructions
    less). ``None`` unless the request is plain: a standard method, a plain ASCII path, a status
    from 100 to 499, and a route template cleaned before (or none: the concrete path). Anything
    else goes the general way.
    """
    if not (
        type(status) is int
        and 100 <= status < 500
        and method in STANDARD_METHODS
        and type(path) is str
        and path[:1] == "/"
        and len(path) <= MAX_PATH
        and path.isascii()
        and path.isprintable()
        and "?" not in path
    ):
        return None
    if template is None:
        route: str | None = path[:MAX_ROUTE]
    else:
        route = _clean_routes.get(template)
        if route is None:
            return None
    duration_ms = (end - start) // 1_000_000
    return _event(
        (end, method, route, path, status, duration_ms if duration_ms > 0 else 0, consumer, None, None)
    )


def error_text(exception: str, detail: str) -> str:
    """``"ExcType: message"`` cut to ``detail``: ``type``, ``first_line`` or ``full``.

    The first line is the default because drivers put data on the lines after it: SQLAlchemy's
    ``[SQL: ...]`` and ``[parameters: ('z@example.com',)]``, psycopg's ``DETAIL: Key (email)=...``.
    """
    if detail == "first_line":
        lines = exception.splitlines()
        return lines[0].rstrip() if lines else exception
    if detail == "type":
        return exception.split(":", 1)[0]
    return exception


def _method(attributes: Mapping[str, Any], request_method: str | None) -> str:
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
        method = request_method or "OTHER"
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
    if _looks_like_regex(route):
        route = regex_route_template(route)  # Django re_path, DRF routers
    if not route.startswith("/"):
        route = "/" + route  # Django reports "users/<int:pk>"
    route = clean_url_text(route, MAX_ROUTE)
    if type(template) is str and len(_clean_routes) < _CLEAN_ROUTES_LIMIT:
        _clean_routes[template] = route
    return route


def _looks_like_regex(route: str) -> bool:
    return route.startswith("^") or route.endswith("$") or "(?P<" in route


LATEST_TS_NS = 253_402_300_799_999_999_999
"""9999-12-31T23:59:59.999+00:00, the last time an ISO 8601 ``ts`` can say, in nanoseconds."""


def _time_ns(value: Any) -> int:
    """A span time as whole nanoseconds since the epoch; ``Unmappable`` when it cannot be one."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Unmappable("invalid_time")
    if isinstance(value, float) and not math.isfinite(value):
        raise Unmappable("invalid_time")
    time_ns = int(value)
    if not 0 <= time_ns <= LATEST_TS_NS:
        raise Unmappable("invalid_time")
    return time_ns


def _int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
