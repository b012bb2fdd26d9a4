"""span_to_event: one finished SERVER span becomes one contract-valid event."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode

from beacon_otel.mapping.facts import RequestFacts
from beacon_otel.mapping.span_to_event import Unmappable, plain_event, span_to_event

START = 1_780_488_000_000_000_000
OLD = {"http.method": "GET", "http.target": "/users/7?expand=1", "http.status_code": 200}
NEW = {
    "http.request.method": "GET",
    "url.path": "/users/7",
    "url.query": "expand=1",
    "http.response.status_code": 200,
}


def make_span(
    attributes: dict[str, Any],
    *,
    duration_ns: int = 42_500_000,
    status: StatusCode = StatusCode.UNSET,
    exception: tuple[str, str] | None = None,
) -> ReadableSpan:
    events = []
    if exception:
        events.append(Event("exception", {"exception.type": exception[0], "exception.message": exception[1]}))
    return ReadableSpan(
        name="GET /users/{id}",
        context=SpanContext(trace_id=1, span_id=2, is_remote=False),
        kind=SpanKind.SERVER,
        attributes=attributes,
        events=events,
        status=Status(status),
        start_time=START,
        end_time=START + duration_ns,
    )


@pytest.mark.parametrize("attributes", [OLD, NEW, {**OLD, **NEW}], ids=["default", "http", "http/dup"])
def test_both_semconv_generations_map_alike(attributes: dict[str, Any]) -> None:
    """Old, new and duplicated attribute names give the same event."""
    event = span_to_event(make_span({**attributes, "http.route": "/users/{id}"}))
    assert (event.method, event.route, event.path, event.status) == ("GET", "/users/{id}", "/users/7", 200)
    assert event.duration_ms == 42
    assert event.as_dict()["ts"] == "2026-06-03T12:00:00.042+00:00"
    assert event.error is None and event.consumer is None


def test_other_method_uses_the_original() -> None:
    """New conventions' _OTHER falls back to http.request.method_original."""
    attributes = {**NEW, "http.request.method": "_OTHER", "http.request.method_original": "purge"}
    assert span_to_event(make_span(attributes)).method == "PURGE"


@pytest.mark.parametrize(
    ("attributes", "path"),
    [
        ({"http.method": "GET", "http.status_code": 200, "http.target": "/a?b=c"}, "/a"),
        ({"http.method": "GET", "http.status_code": 200, "http.url": "http://h/x/y?z=1"}, "/x/y"),
        ({"http.method": "GET", "http.status_code": 200, "url.full": "http://h/u"}, "/u"),
        ({"http.method": "GET", "http.status_code": 200, "url.path": "no-slash"}, "/no-slash"),
    ],
)
def test_path_fallbacks_drop_the_query(attributes: dict[str, Any], path: str) -> None:
    """url.path, then http.target, then http.url: never the query string."""
    assert span_to_event(make_span(attributes)).path == path


@pytest.mark.parametrize(
    ("template", "route"),
    [
        ("/users/{user_id}", "/users/{user_id}"),  # FastAPI
        ("/users/{user_id:int}", "/users/{user_id:int}"),  # Starlette keeps converters
        ("/users/<int:user_id>", "/users/<int:user_id>"),  # Flask
        ("users/<int:pk>", "/users/<int:pk>"),  # Django, without the leading slash
        ("", "/users/7"),  # Django's root pattern, or no route
    ],
)
def test_route_templates_get_a_leading_slash(template: str, route: str) -> None:
    """Every framework's template is kept, normalised to start with /."""
    attributes = {**NEW, "http.route": template} if template else NEW
    assert span_to_event(make_span(attributes)).route == route


def test_unmatched_request_uses_the_concrete_path_as_route() -> None:
    """A 404 without http.route reports the path as its route."""
    event = span_to_event(make_span({**NEW, "http.response.status_code": 404}))
    assert (event.route, event.status, event.error) == ("/users/7", 404, None)


def test_route_override_wins_for_mounted_apps() -> None:
    """The hooks' full template replaces the mount prefix that http.route carries."""
    event = span_to_event(
        make_span({**NEW, "http.route": "/api"}), RequestFacts(route="/api/orders/{order_id}")
    )
    assert event.route == "/api/orders/{order_id}"


def test_unhandled_exception_with_500() -> None:
    """FastAPI/Flask/Django: exception event + 500 gives "ExcType: message"."""
    span = make_span(
        {**NEW, "http.response.status_code": 500},
        status=StatusCode.ERROR,
        exception=("app.errors.OrderError", "order 7 is broken"),
    )
    assert span_to_event(span).error == "OrderError: order 7 is broken"


def test_exception_without_status_means_500() -> None:
    """Starlette/raw ASGI/WSGI send the 500 outside the middleware: no status, but an exception."""
    attributes = {k: v for k, v in NEW.items() if k != "http.response.status_code"}
    event = span_to_event(make_span(attributes, status=StatusCode.ERROR, exception=("ValueError", "bad")))
    assert (event.status, event.error) == (500, "ValueError: bad")


def test_error_status_without_exception_or_status_means_500() -> None:
    """ERROR with no status at all is a failed request."""
    attributes = {k: v for k, v in NEW.items() if k != "http.response.status_code"}
    event = span_to_event(make_span(attributes, status=StatusCode.ERROR))
    assert (event.status, event.error) == (500, "HTTP 500")


def test_5xx_without_exception() -> None:
    """A 503 returned by the app is an error "HTTP 503"."""
    event = span_to_event(make_span({**NEW, "http.response.status_code": 503}, status=StatusCode.ERROR))
    assert event.error == "HTTP 503"


def test_error_status_alone_is_not_a_failure() -> None:
    """Django's Http404 sets ERROR and records an exception, but the request got a 404."""
    span = make_span(
        {**NEW, "http.response.status_code": 404},
        status=StatusCode.ERROR,
        exception=("django.http.response.Http404", "No Order matches"),
    )
    event = span_to_event(span)
    assert (event.status, event.error) == (404, None)


def test_no_status_and_no_failure_is_dropped() -> None:
    """A span with no status and no error (client went away) cannot be a valid event."""
    attributes = {k: v for k, v in NEW.items() if k != "http.response.status_code"}
    with pytest.raises(Unmappable) as info:
        span_to_event(make_span(attributes))
    assert info.value.reason == "no_status"


@pytest.mark.parametrize("status", [99, 600, 0])
def test_out_of_range_status_is_dropped(status: int) -> None:
    """Statuses outside 100..599 are never sent."""
    with pytest.raises(Unmappable):
        span_to_event(make_span({**NEW, "http.response.status_code": status}))


def test_non_http_server_span_is_not_ours() -> None:
    """A gRPC or messaging SERVER span has no HTTP method: not an event."""
    with pytest.raises(Unmappable) as info:
        span_to_event(make_span({"rpc.system": "grpc"}))
    assert info.value.reason == "not_http"


def test_long_and_hostile_strings_are_made_valid() -> None:
    """Huge paths, control characters, surrogates and long errors are truncated and cleaned."""
    span = make_span(
        {
            "http.request.method": "GET",
            "url.path": "/" + "\ud800x\n" * 3000,
            "http.route": "/r/" + "y" * 5000,
            "http.response.status_code": 500,
        },
        exception=("ValueError", "e" * 10_000),
    )
    event = span_to_event(span)
    assert len(event.path) == 4096 and "\n" not in event.path
    event.path.encode("utf-8")
    assert len(event.route) == 2048
    assert event.error is not None and len(event.error) == 8192


def test_duration_is_whole_milliseconds_never_negative() -> None:
    """duration_ms floors to whole milliseconds and is clamped at zero."""
    assert span_to_event(make_span(NEW, duration_ns=999_999)).duration_ms == 0
    assert span_to_event(make_span(NEW, duration_ns=-5)).duration_ms == 0
    assert span_to_event(make_span(NEW, duration_ns=1_500_000_000)).duration_ms == 1500


def test_consumer_and_validation_errors_are_attached() -> None:
    """What the hooks learned joins the event; validation errors are bounded."""
    errors = [{"field": "body.items.0.price", "message": "bad", "type": "float_parsing"}]
    event = span_to_event(
        make_span({**NEW, "http.response.status_code": 422}),
        RequestFacts(consumer="acme", validation_errors=errors),
    )
    assert event.consumer == "acme"
    assert event.as_dict()["validation_errors"] == errors


def test_request_path_fills_in_when_the_span_has_none() -> None:
    """New-convention WSGI spans without RAW_URI carry no path: the hooks' request path is used."""
    attributes = {
        "http.request.method": "GET",
        "http.response.status_code": 200,
        "http.route": "users/<int:pk>",
    }
    event = span_to_event(make_span(attributes), RequestFacts(path="/users/12"))
    assert (event.path, event.route) == ("/users/12", "/users/<int:pk>")


def test_request_path_wins_over_lossy_attributes() -> None:
    """The request's own path beats a decoded url.path or a cut http.target."""
    attributes = {**OLD, "http.target": "/items/a?b"}  # uvicorn: decoded %3F, looks like a query
    event = span_to_event(make_span(attributes), RequestFacts(path="/items/a?b"))
    assert event.path == "/items/a%3Fb"


@pytest.mark.parametrize(
    "attributes", [{**NEW, "url.path": "/items/a?b"}, {**OLD, "http.target": "/x/y?q=1"}]
)
def test_a_question_mark_never_reaches_the_path(attributes: dict[str, Any]) -> None:
    """A decoded ?, in url.path, is re-encoded; a real query is cut off."""
    path = span_to_event(make_span(attributes)).path
    assert "?" not in path and path in {"/items/a%3Fb", "/x/y"}


def test_absolute_form_target_keeps_only_the_path() -> None:
    """GET http://host/items HTTP/1.1 gives /items, not /http://host/items."""
    attributes = {**OLD, "http.target": "http://example.com/items/absolute?x=1"}
    assert span_to_event(make_span(attributes)).path == "/items/absolute"


@pytest.mark.parametrize(
    ("attributes", "from_request", "method"),
    [
        ({**OLD, "http.method": "_OTHER"}, "PURGE", "PURGE"),
        ({**NEW, "http.request.method": "_OTHER"}, "M-SEARCH", "M-SEARCH"),
        ({**OLD, "http.method": "_OTHER"}, None, "OTHER"),
    ],
)
def test_unknown_methods_come_from_the_request(
    attributes: dict[str, Any], from_request: str | None, method: str
) -> None:
    """Old conventions keep no original method: the hooks' request knows it."""
    assert span_to_event(make_span(attributes), RequestFacts(method=from_request)).method == method


def test_route_templates_are_cleaned_once_and_the_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A template maps the same from the cache; past the limit, templates are cleaned each time."""
    from beacon_otel.mapping import span_to_event as mapping

    monkeypatch.setattr(mapping, "_clean_routes", {})
    monkeypatch.setattr(mapping, "_CLEAN_ROUTES_LIMIT", 2)
    for _ in range(2):
        assert mapping._route("users/<int:pk>", "/users/1") == "/users/<int:pk>"
        assert mapping._route("/a\x01{b}", "/a") == "/a%01{b}"
        assert mapping._route("/third/{x}", "/third/1") == "/third/{x}"
    assert mapping._clean_routes == {"users/<int:pk>": "/users/<int:pk>", "/a\x01{b}": "/a%01{b}"}


PLAIN = [
    # (method, path, route template, status)
    ("GET", "/users/7", "/users/{id}", 200),
    ("POST", "/users", "/users", 201),
    ("GET", "/nope", None, 404),
    ("DELETE", "/users/7", "/users/{id}", 499),
]


@pytest.mark.parametrize(("method", "path", "template", "status"), PLAIN)
def test_a_plain_request_makes_the_event_its_span_makes(
    method: str, path: str, template: str | None, status: int
) -> None:
    """plain_event gives exactly what span_to_event makes of the request's span."""
    attributes: dict[str, Any] = {
        "http.request.method": method,
        "url.path": path,
        "http.response.status_code": status,
    }
    if template is not None:
        attributes["http.route"] = template
    facts = RequestFacts(method=method, path=path, consumer="key-1")
    expected = span_to_event(make_span(attributes), facts)  # cleans and keeps the template
    assert plain_event(START + 42_500_000, method, template, path, status, START, "key-1") == expected


@pytest.mark.parametrize(
    ("method", "path", "template", "status"),
    [
        ("GET", "/users/7", "/users/{id}", 500),  # failed: the error text is read from the span
        ("GET", "/users/7", "/users/{id}", 99),
        ("GET", "/users/7", "/users/{id}", None),
        ("PURGE", "/users/7", "/users/{id}", 200),
        ("GET", "/users/?x", "/users/{id}", 200),
        ("GET", "/caf\u00e9", "/users/{id}", 200),
        ("GET", "users/7", "/users/{id}", 200),
        ("GET", None, "/users/{id}", 200),
        ("GET", "/users/7", "/never/mapped/{id}", 200),  # a template not cleaned yet
    ],
)
def test_anything_else_takes_the_general_way(
    method: str, path: str | None, template: str | None, status: int | None
) -> None:
    """plain_event answers None unless every field is one span_to_event passes through as it is."""
    span_to_event(make_span({**NEW, "http.route": "/users/{id}"}))  # "/users/{id}" is cleaned
    assert plain_event(START + 1, method, template, path, status, START, "key-1") is None
