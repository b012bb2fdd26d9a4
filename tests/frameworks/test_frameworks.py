"""Real framework instrumentations in-process: routes, consumers, errors and 422 details."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import Request
from pydantic import BaseModel

from tests.conftest import Pipeline, asgi_request, configure_django, make_pipeline, requires

API_KEY = "key-live-123"
BEARER = "Bearer s3cr3t-token"
BEARER_HASH = "hash_" + hashlib.sha256(BEARER.encode()).hexdigest()[:12]


def only_event(pipeline: Pipeline) -> dict[str, Any]:
    events = pipeline.events()
    assert len(events) == 1, events
    pipeline.processor.clear_dry_run_events()
    return events[0]


def assert_no_credentials_in_spans(pipeline: Pipeline) -> None:
    for span in pipeline.exporter.get_finished_spans():
        for value in (span.attributes or {}).values():
            assert API_KEY not in str(value) and "s3cr3t" not in str(value), span.attributes


# -- FastAPI ---------------------------------------------------------------------------------


class Item(BaseModel):
    price: float


class Order(BaseModel):
    items: list[Item]


@pytest.fixture
def fastapi_pipeline() -> Iterator[tuple[Any, Pipeline]]:
    from fastapi import FastAPI
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    app = FastAPI()
    orders = FastAPI()

    @app.get("/users/{user_id}")
    def get_user(user_id: int) -> dict[str, int]:
        return {"id": user_id}

    @app.post("/orders")
    def create_order(order: Order) -> dict[str, int]:
        return {"items": len(order.items)}

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("kaput")

    @app.get("/whoami")
    def whoami(request: Request) -> dict[str, str]:
        request.state.tenant = "tenant-from-auth"
        return {}

    @orders.get("/orders/{order_id}")
    def get_order(order_id: int) -> dict[str, int]:
        return {"id": order_id}

    app.mount("/api", orders)

    def resolver(scope: Any) -> str | None:
        state = scope.get("state") or {}
        return state.get("tenant")

    pipeline = make_pipeline()
    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=pipeline.provider, **pipeline.processor.hooks("fastapi")
    )
    yield app, pipeline
    FastAPIInstrumentor.uninstrument_app(app)
    pipeline.provider.shutdown()


def test_fastapi_route_template_and_api_key_consumer(fastapi_pipeline: tuple[Any, Pipeline]) -> None:
    """FastAPI gives /users/{user_id}; X-API-Key is the consumer as-is; no query in path."""
    app, pipeline = fastapi_pipeline
    assert asgi_request(app, "GET", "/users/42?x=1", {"X-API-Key": API_KEY})[0] == 200
    event = only_event(pipeline)
    assert event["route"] == "/users/{user_id}" and event["path"] == "/users/42"
    assert (event["status"], event["consumer"], event["error"]) == (200, API_KEY, None)
    assert_no_credentials_in_spans(pipeline)


def test_fastapi_mounted_sub_app_gets_the_full_template(fastapi_pipeline: tuple[Any, Pipeline]) -> None:
    """A route of a mounted sub-app reports /api/orders/{order_id}, not just /api."""
    app, pipeline = fastapi_pipeline
    assert asgi_request(app, "GET", "/api/orders/7")[0] == 200
    event = only_event(pipeline)
    assert (event["route"], event["path"]) == ("/api/orders/{order_id}", "/api/orders/7")


def test_fastapi_validation_errors_keep_the_422(fastapi_pipeline: tuple[Any, Pipeline]) -> None:
    """A 422 carries validation_errors with dotted field paths; the response is FastAPI's own."""
    app, pipeline = fastapi_pipeline
    status, body = asgi_request(
        app,
        "POST",
        "/orders",
        {"Authorization": BEARER, "Content-Type": "application/json"},
        b'{"items": [{"price": "free"}]}',
    )
    assert status == 422
    detail = json.loads(body)["detail"]
    assert detail[0]["loc"] == ["body", "items", 0, "price"]
    event = only_event(pipeline)
    assert event["consumer"] == BEARER_HASH
    assert event["validation_errors"] == [
        {"field": "body.items.0.price", "message": detail[0]["msg"], "type": detail[0]["type"]}
    ]
    assert_no_credentials_in_spans(pipeline)


def test_fastapi_unhandled_exception(fastapi_pipeline: tuple[Any, Pipeline]) -> None:
    """An exception in a FastAPI endpoint is a 500 with "ExcType: message"."""
    app, pipeline = fastapi_pipeline
    assert asgi_request(app, "GET", "/boom")[0] == 500
    event = only_event(pipeline)
    assert (event["status"], event["error"], event["route"]) == (500, "RuntimeError: kaput", "/boom")


def test_fastapi_404_reports_the_path(fastapi_pipeline: tuple[Any, Pipeline]) -> None:
    """No route matched: the route is the concrete path."""
    app, pipeline = fastapi_pipeline
    assert asgi_request(app, "GET", "/nowhere/1")[0] == 404
    event = only_event(pipeline)
    assert (event["route"], event["status"], event["error"]) == ("/nowhere/1", 404, None)


def test_consumer_resolver_sees_what_the_app_set_during_the_request() -> None:
    """The resolver runs when the response is known: state set by the endpoint is visible."""
    from fastapi import FastAPI
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    app = FastAPI()

    @app.get("/me")
    def me(request: Request) -> dict[str, str]:
        request.state.tenant = "acme"
        return {}

    pipeline = make_pipeline(consumer_resolver=lambda scope: scope["state"].get("tenant"))
    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=pipeline.provider, **pipeline.processor.hooks("fastapi")
    )
    try:
        asgi_request(app, "GET", "/me", {"X-API-Key": API_KEY})
        assert only_event(pipeline)["consumer"] == "acme"
    finally:
        FastAPIInstrumentor.uninstrument_app(app)
        pipeline.provider.shutdown()


def test_raising_resolver_counts_as_no_consumer() -> None:
    """A resolver that raises never breaks the request; the consumer is null."""
    from fastapi import FastAPI
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    app = FastAPI()

    @app.get("/ok")
    def ok() -> dict[str, str]:
        return {}

    def resolver(scope: Any) -> str:
        raise KeyError("no tenant")

    pipeline = make_pipeline(consumer_resolver=resolver)
    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=pipeline.provider, **pipeline.processor.hooks("fastapi")
    )
    try:
        assert asgi_request(app, "GET", "/ok", {"X-API-Key": API_KEY})[0] == 200
        event = only_event(pipeline)
        assert (event["status"], event["consumer"]) == (200, None)
    finally:
        FastAPIInstrumentor.uninstrument_app(app)
        pipeline.provider.shutdown()


@requires("fastapi", "0.142")  # FastAPI's native telemetry
def test_mounted_fastapi_sub_app_with_native_telemetry_counts_once() -> None:
    """FastAPI's own telemetry in a mounted sub-app opens a second SERVER span: still one event."""
    from fastapi import FastAPI
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    pipeline = make_pipeline()
    app = FastAPI()
    sub = FastAPI(telemetry={"tracer_provider": pipeline.provider})

    @sub.get("/reports/{report_id}")
    def report(report_id: str) -> dict[str, str]:
        return {"id": report_id}

    app.mount("/admin", sub)
    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=pipeline.provider, **pipeline.processor.hooks("fastapi")
    )
    try:
        for _ in range(3):
            assert asgi_request(app, "GET", "/admin/reports/q1", {"X-API-Key": API_KEY})[0] == 200
        server_spans = [s for s in pipeline.exporter.get_finished_spans() if s.kind.name == "SERVER"]
        assert len(server_spans) == 6  # both layers still reach every other exporter
        events = pipeline.events()
        assert [(e["route"], e["consumer"]) for e in events] == [("/admin/reports/{report_id}", API_KEY)] * 3
    finally:
        FastAPIInstrumentor.uninstrument_app(app)
        pipeline.provider.shutdown()


# -- Starlette and raw ASGI --------------------------------------------------------------------


def starlette_app() -> Any:
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Mount, Route

    async def user(request: Any) -> JSONResponse:
        return JSONResponse({"id": request.path_params["user_id"]})

    async def fail(request: Any) -> JSONResponse:
        raise ValueError("nope")

    return Starlette(
        routes=[
            Route("/users/{user_id:int}", user),
            Route("/fail", fail),
            Mount("/v2", routes=[Mount("/tenants/{tenant}", routes=[Route("/users/{user_id:int}", user)])]),
        ]
    )


def test_starlette_nested_mounts_and_converters() -> None:
    """Starlette keeps converters; nested mounts give every prefix as declared."""
    from opentelemetry.instrumentation.starlette import StarletteInstrumentor

    app = starlette_app()
    pipeline = make_pipeline(consumer_header="X-Tenant")
    StarletteInstrumentor.instrument_app(
        app, tracer_provider=pipeline.provider, **pipeline.processor.hooks("starlette")
    )
    try:
        asgi_request(app, "GET", "/users/5", {"X-Tenant": "t1", "X-API-Key": API_KEY})
        event = only_event(pipeline)
        assert (event["route"], event["consumer"]) == ("/users/{user_id:int}", "t1")
        asgi_request(app, "GET", "/v2/tenants/acme/users/5")
        assert only_event(pipeline)["route"] == "/v2/tenants/{tenant}/users/{user_id:int}"
        assert asgi_request(app, "GET", "/fail")[0] == 500
        event = only_event(pipeline)
        assert (event["status"], event["error"]) == (500, "ValueError: nope")
    finally:
        StarletteInstrumentor.uninstrument_app(app)
        pipeline.provider.shutdown()


def test_raw_asgi_middleware() -> None:
    """A bare ASGI app wrapped by OpenTelemetryMiddleware: no route, so the path; consumer hashed."""
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    pipeline = make_pipeline()
    wrapped = OpenTelemetryMiddleware(
        app, tracer_provider=pipeline.provider, **pipeline.processor.hooks("asgi")
    )
    try:
        asgi_request(wrapped, "DELETE", "/things/9", {"Authorization": BEARER})
        event = only_event(pipeline)
        assert (event["method"], event["route"], event["status"]) == ("DELETE", "/things/9", 204)
        assert event["consumer"] == BEARER_HASH
    finally:
        pipeline.provider.shutdown()


# -- Flask and raw WSGI ------------------------------------------------------------------------


def test_flask_routes_consumer_and_errors() -> None:
    """Flask gives /users/<int:user_id>; errors and 404s map by the contract."""
    from flask import Flask, g
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    app = Flask(__name__)

    @app.route("/users/<int:user_id>")
    def user(user_id: int) -> dict[str, int]:
        g.tenant = "from-flask-g"
        return {"id": user_id}

    @app.route("/crash")
    def crash() -> str:
        raise LookupError("missing thing")

    def resolver(request: Any) -> str | None:
        from flask import g

        return getattr(g, "tenant", None) or request.headers.get("X-API-Key")

    pipeline = make_pipeline(consumer_resolver=resolver)
    FlaskInstrumentor().instrument_app(
        app, tracer_provider=pipeline.provider, **pipeline.processor.hooks("flask")
    )
    client = app.test_client()
    try:
        assert client.get("/users/3?debug=1", headers={"X-API-Key": API_KEY}).status_code == 200
        event = only_event(pipeline)
        assert (event["route"], event["path"], event["consumer"]) == (
            "/users/<int:user_id>",
            "/users/3",
            "from-flask-g",
        )
        assert client.get("/crash", headers={"X-API-Key": API_KEY}).status_code == 500
        event = only_event(pipeline)
        assert (event["status"], event["error"], event["consumer"]) == (
            500,
            "LookupError: missing thing",
            API_KEY,
        )
        assert client.get("/missing").status_code == 404
        event = only_event(pipeline)
        assert (event["route"], event["error"]) == ("/missing", None)
        assert_no_credentials_in_spans(pipeline)
    finally:
        FlaskInstrumentor().uninstrument_app(app)
        pipeline.provider.shutdown()


def test_raw_wsgi_middleware_with_a_raising_hook_never_breaks_the_request() -> None:
    """Raw WSGI hooks are unprotected upstream; ours are failsafe, and the consumer still resolves."""
    from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
    from werkzeug.test import Client

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("201 Created", [("Content-Type", "text/plain")])
        return [b"made"]

    def broken_resolver(request: Any) -> str:
        raise RuntimeError("resolver bug")

    pipeline = make_pipeline(consumer_resolver=broken_resolver)
    wrapped = OpenTelemetryMiddleware(
        app, tracer_provider=pipeline.provider, **pipeline.processor.hooks("wsgi")
    )
    try:
        response = Client(wrapped).post("/items?x=1", headers={"X-API-Key": API_KEY})
        assert response.status_code == 201
        response.close()  # the WSGI middleware ends its span when the body is closed
        event = only_event(pipeline)
        assert (event["method"], event["route"], event["path"], event["status"]) == (
            "POST",
            "/items",
            "/items",
            201,
        )
        assert event["consumer"] is None
    finally:
        pipeline.provider.shutdown()


# -- Django ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def django_pipeline() -> Iterator[Pipeline]:
    configure_django()
    from opentelemetry.instrumentation.django import DjangoInstrumentor

    pipeline = make_pipeline()
    DjangoInstrumentor().instrument(tracer_provider=pipeline.provider, **pipeline.processor.hooks("django"))
    yield pipeline
    DjangoInstrumentor().uninstrument()
    pipeline.provider.shutdown()


def test_django_routes_get_a_leading_slash(django_pipeline: Pipeline) -> None:
    """Django's users/<int:pk> becomes /users/<int:pk>; X-API-Key is the consumer."""
    from django.test import Client

    client = Client(raise_request_exception=False)
    assert client.get("/users/12", HTTP_X_API_KEY=API_KEY).status_code == 200
    event = only_event(django_pipeline)
    assert (event["route"], event["path"], event["consumer"]) == ("/users/<int:pk>", "/users/12", API_KEY)
    assert client.get("/", HTTP_AUTHORIZATION=BEARER).status_code == 200
    event = only_event(django_pipeline)
    assert (event["route"], event["consumer"]) == ("/", BEARER_HASH)
    assert_no_credentials_in_spans(django_pipeline)


def test_django_errors_and_http404(django_pipeline: Pipeline) -> None:
    """An exception is a 500 with its text; Http404 is a plain 404 without error."""
    from django.test import Client

    client = Client(raise_request_exception=False)
    assert client.get("/explode").status_code == 500
    event = only_event(django_pipeline)
    assert (event["status"], event["error"], event["route"]) == (
        500,
        "ZeroDivisionError: division by zero",
        "/explode",
    )
    assert client.get("/users/404").status_code == 404
    event = only_event(django_pipeline)
    assert (event["status"], event["error"]) == (404, None)


# -- the framework table --------------------------------------------------------------------


def test_a_framework_added_to_the_table_gets_its_hooks(monkeypatch: pytest.MonkeyPatch) -> None:
    """FRAMEWORKS is the one place a framework is added: hooks(name) then returns its hooks."""
    from beacon_otel.frameworks import table
    from beacon_otel.frameworks.asgi import asgi_hooks

    monkeypatch.setitem(table.FRAMEWORKS, "tinyframework", asgi_hooks)
    pipeline = make_pipeline()
    try:
        assert set(pipeline.processor.hooks("tinyframework")) == {"server_request_hook"}
    finally:
        pipeline.provider.shutdown()


def test_a_hook_that_breaks_never_reaches_the_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure inside one of Beacon's hooks is contained (outside the test suite's raise mode)."""
    from opentelemetry.trace import SpanKind

    monkeypatch.delenv("BEACON_RAISE_INTERNAL_ERRORS")
    pipeline = make_pipeline()
    try:
        hook = pipeline.processor.hooks("django")["request_hook"]
        span = pipeline.provider.get_tracer("t").start_span("GET", kind=SpanKind.SERVER)
        hook(span, object())  # no .META: the hook fails inside
        span.end()
    finally:
        pipeline.provider.shutdown()
