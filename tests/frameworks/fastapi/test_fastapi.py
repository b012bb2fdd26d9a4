"""FastAPI: whichever layer produced the SERVER span, the one event tells the truth.

FastAPI's own telemetry, the contrib instrumentations on the top app only, or on every app
(as auto-run does): same route, consumer, validation errors and exception text. Mounted
sub-apps, Host routes, WebSockets, and the user's excluded URLs.
"""

from __future__ import annotations

import contextlib
import hashlib
from typing import Any

import pytest
from fastapi import WebSocket
from pydantic import BaseModel
from starlette.websockets import WebSocketDisconnect

from tests.conftest import Pipeline, asgi_request, make_pipeline, requires

API_KEY = "key-live-123"
BEARER = "Bearer s3cr3t-token"
BEARER_HASH = "hash_" + hashlib.sha256(BEARER.encode()).hexdigest()[:12]
JSON = {"Content-Type": "application/json"}
BAD_ITEM = b'{"price": "free"}'
PRICE_ERROR = {
    "field": "body.price",
    "message": "Input should be a valid number, unable to parse string as a number",
    "type": "float_parsing",
}


class Item(BaseModel):
    price: float


def summary(event: dict[str, Any]) -> tuple[Any, ...]:
    return (
        event["method"],
        event["route"],
        event["path"],
        event["status"],
        event["consumer"],
        event["error"],
    )


def fastapi_apps(fastapi: Any, telemetry: dict[str, Any] | None = None) -> Any:
    """A FastAPI app with a router, an auth dependency, a mounted FastAPI and Starlette app."""
    from fastapi import APIRouter, Depends, Header
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    def account(x_api_key: str | None = Header(default=None)) -> str | None:
        return x_api_key

    app = fastapi.FastAPI(telemetry=telemetry) if telemetry is not None else fastapi.FastAPI()
    users = APIRouter(prefix="/users", dependencies=[Depends(account)])

    @users.get("/{user_id}")
    def get_user(user_id: int) -> dict[str, int]:
        return {"id": user_id}

    @app.post("/items")
    def create_item(item: Item) -> dict[str, float]:
        return {"price": item.price}

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("kaboom")

    app.include_router(users)
    sub = fastapi.FastAPI()

    @sub.post("/things")
    def create_thing(item: Item) -> dict[str, float]:
        return {"price": item.price}

    @sub.get("/things/{thing_id}")
    def get_thing(thing_id: int) -> dict[str, int]:
        if thing_id == 0:
            raise KeyError("thing 0")
        return {"id": thing_id}

    async def page(request: Any) -> JSONResponse:
        return JSONResponse({"page": request.path_params["name"]})

    app.mount("/v2", sub)
    app.mount("/pages", Starlette(routes=[Route("/{name}", page)]))
    return app


CASES = [
    # (method, path, headers, body) -> (route, status, consumer, error, validation_errors)
    (("GET", "/users/7", {"X-API-Key": API_KEY}, b""), ("/users/{user_id}", 200, API_KEY, None, None)),
    (("GET", "/users/7", {"Authorization": BEARER}, b""), ("/users/{user_id}", 200, BEARER_HASH, None, None)),
    (
        ("POST", "/items", {**JSON, "X-API-Key": API_KEY}, BAD_ITEM),
        ("/items", 422, API_KEY, None, [PRICE_ERROR]),
    ),
    (("GET", "/boom", {}, b""), ("/boom", 500, None, "RuntimeError: kaboom", None)),
    (("GET", "/nowhere", {"X-API-Key": API_KEY}, b""), ("/nowhere", 404, API_KEY, None, None)),
    (("DELETE", "/users/7", {}, b""), ("/users/{user_id}", 405, None, None, None)),
    (("POST", "/v2/things", JSON, BAD_ITEM), ("/v2/things", 422, None, None, [PRICE_ERROR])),
    (("GET", "/v2/things/3", {}, b""), ("/v2/things/{thing_id}", 200, None, None, None)),
    (("GET", "/v2/missing/1", {}, b""), ("/v2/missing/1", 404, None, None, None)),
    (("GET", "/pages/about", {}, b""), ("/pages/{name}", 200, None, None, None)),
]
MOUNTED_ERROR = (
    ("GET", "/v2/things/0", {}, b""),
    ("/v2/things/{thing_id}", 500, None, "KeyError: 'thing 0'", None),
)


def check_cases(app: Any, pipeline: Pipeline, cases: list[Any]) -> None:
    for (method, path, headers, body), (route, status, consumer, error, errors) in cases:
        assert asgi_request(app, method, path, headers, body)[0] == status, path
        events = pipeline.events()
        pipeline.processor.clear_dry_run_events()
        assert len(events) == 1, (path, events)
        event = events[0]
        assert summary(event) == (method, route, path, status, consumer, error), path
        assert event.get("validation_errors") == errors, path


@requires("fastapi", "0.142")  # FastAPI's native telemetry
def test_fastapi_native_telemetry_alone_gives_the_whole_event() -> None:
    """FastAPI(telemetry={"tracer_provider": provider}) and the processor on that provider, nothing else:
    consumer by both header rules (a 404 too), 422 details, exception text, mount routes."""
    import fastapi

    pipeline = make_pipeline()
    try:
        app = fastapi_apps(fastapi, {"tracer_provider": pipeline.provider})
        check_cases(app, pipeline, [*CASES, MOUNTED_ERROR])
    finally:
        pipeline.provider.shutdown()


def test_contrib_instrumentation_of_the_top_app_gives_the_same_events() -> None:
    """instrument_app on the top app only: sub-apps' 422s and 404s inside mounts are right too."""
    import fastapi
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    pipeline = make_pipeline()
    app = fastapi_apps(fastapi)
    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=pipeline.provider, **pipeline.processor.hooks("fastapi")
    )
    try:
        check_cases(app, pipeline, CASES)
    finally:
        FastAPIInstrumentor.uninstrument_app(app)
        pipeline.provider.shutdown()


def test_contrib_instrumentation_of_every_app_gives_the_same_events() -> None:
    """FastAPIInstrumentor().instrument(), as auto-run does it: every app instrumented. The
    exception escaping a mounted app is recorded only on its inner span; the event has it."""
    import fastapi
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    pipeline = make_pipeline()
    instrumentor = FastAPIInstrumentor()
    instrumentor.instrument(tracer_provider=pipeline.provider, **pipeline.processor.hooks("fastapi"))
    try:
        app = fastapi_apps(fastapi)
        check_cases(app, pipeline, [*CASES, MOUNTED_ERROR])
    finally:
        instrumentor.uninstrument()
        pipeline.provider.shutdown()


@requires("fastapi", "0.142")  # FastAPI's native telemetry
def test_native_telemetry_inside_an_instrumented_app_gives_one_event_with_everything() -> None:
    """Both sources at once (native telemetry in the sub-app under an instrumented top app): one event,
    the sub-app's exception text and validation errors included."""
    import fastapi
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    pipeline = make_pipeline()
    app = fastapi.FastAPI()
    sub = fastapi.FastAPI(telemetry={"tracer_provider": pipeline.provider})

    @sub.post("/things")
    def create_thing(item: Item) -> dict[str, float]:
        return {"price": item.price}

    @sub.get("/things/{thing_id}")
    def get_thing(thing_id: int) -> dict[str, int]:
        raise KeyError("thing 0")

    app.mount("/v2", sub)
    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=pipeline.provider, **pipeline.processor.hooks("fastapi")
    )
    try:
        cases = [
            (
                ("POST", "/v2/things", {**JSON, "X-API-Key": API_KEY}, BAD_ITEM),
                ("/v2/things", 422, API_KEY, None, [PRICE_ERROR]),
            ),
            MOUNTED_ERROR,
        ]
        check_cases(app, pipeline, cases)
    finally:
        FastAPIInstrumentor.uninstrument_app(app)
        pipeline.provider.shutdown()


def starlette_with_fastapi_and_hosts() -> Any:
    import fastapi
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Host, Mount, Route

    inner = fastapi.FastAPI()

    @inner.post("/things")
    def create_thing(item: Item) -> dict[str, float]:
        return {"price": item.price}

    async def tenant_page(request: Any) -> JSONResponse:
        return JSONResponse({"name": request.path_params["name"]})

    async def doc_page(request: Any) -> JSONResponse:
        return JSONResponse({"page": request.path_params["page"]})

    tenant_site = Starlette(
        routes=[Route("/t/{name}", tenant_page), Mount("/docs", routes=[Route("/{page}", doc_page)])]
    )
    return Starlette(
        routes=[
            Mount("/fa", inner),
            Host("{tenant}.example.com", app=tenant_site),
        ]
    )


def test_fastapi_mounted_in_starlette_and_host_routes() -> None:
    """FastAPI inside Starlette: its 422 details, a 404 inside it is the concrete path.

    Host routes report the inner template (the host pattern is not part of the route), with
    the prefixes of mounts inside, not the concrete path.
    """
    from opentelemetry.instrumentation.starlette import StarletteInstrumentor

    pipeline = make_pipeline()
    app = starlette_with_fastapi_and_hosts()
    StarletteInstrumentor.instrument_app(
        app, tracer_provider=pipeline.provider, **pipeline.processor.hooks("starlette")
    )
    import beacon_otel.frameworks.fastapi

    beacon_otel.frameworks.fastapi.capture_validation_errors()  # what hooks("fastapi") does under auto-run
    host = {"Host": "acme.example.com"}
    try:
        check_cases(
            app,
            pipeline,
            [
                (("POST", "/fa/things", JSON, BAD_ITEM), ("/fa/things", 422, None, None, [PRICE_ERROR])),
                (("GET", "/fa/nothing", {}, b""), ("/fa/nothing", 404, None, None, None)),
                (("GET", "/t/x1", host, b""), ("/t/{name}", 200, None, None, None)),
                (("GET", "/t/x2", host, b""), ("/t/{name}", 200, None, None, None)),
                (("GET", "/docs/intro", host, b""), ("/docs/{page}", 200, None, None, None)),
            ],
        )
    finally:
        StarletteInstrumentor.uninstrument_app(app)
        pipeline.provider.shutdown()


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
@requires("fastapi", "0.142")  # FastAPI's native telemetry
def test_websocket_connections_make_no_event_and_no_drop() -> None:
    """A WebSocket connection (accepted or refused at the handshake) is not an API request in the
    contract's sense: no event, and nothing counted as lost (docs/routes.md)."""
    import fastapi
    from starlette.testclient import TestClient

    pipeline = make_pipeline()
    app = fastapi.FastAPI(telemetry={"tracer_provider": pipeline.provider})

    @app.websocket("/ws")
    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                await websocket.send_text(await websocket.receive_text())

    @app.websocket("/refused")
    async def refused(websocket: WebSocket) -> None:
        await websocket.close(code=1008)

    @app.get("/plain")
    def plain() -> dict[str, str]:
        return {}

    try:
        with TestClient(app) as client:
            with client.websocket_connect("/ws", headers={"X-API-Key": API_KEY}) as ws:
                ws.send_text("hi")
                assert ws.receive_text() == "hi"
            with pytest.raises(WebSocketDisconnect), client.websocket_connect("/refused") as ws:
                ws.receive_text()
            assert client.get("/plain").status_code == 200
        assert [e["route"] for e in pipeline.events()] == ["/plain"]
        assert pipeline.processor.stats.snapshot()["dropped_total"] == 0
        assert any(s.name.startswith("WS") for s in pipeline.exporter.get_finished_spans())
    finally:
        pipeline.provider.shutdown()


@requires("fastapi", "0.142")  # FastAPI's native telemetry
def test_native_telemetry_honours_the_fastapi_excluded_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    """A URL excluded from FastAPI's instrumentation (a health check) makes no event when FastAPI's
    own telemetry serves Beacon, as the contrib instrumentation it replaces makes no span for it."""
    import fastapi

    from beacon_otel.frameworks import fastapi as fastapi_support

    monkeypatch.setenv("OTEL_PYTHON_FASTAPI_EXCLUDED_URLS", "healthz,internal/.*")
    fastapi_support._user_excluded_urls.cache_clear()
    pipeline = make_pipeline()
    try:
        app = fastapi.FastAPI(telemetry={"tracer_provider": pipeline.provider})
        app.get("/healthz")(lambda: {"ok": True})
        app.get("/internal/{name}")(lambda name: {"name": name})
        app.get("/users/{user_id}")(lambda user_id: {"id": user_id})
        for path in ("/healthz", "/internal/metrics", "/users/7", "/healthz"):
            assert asgi_request(app, "GET", path)[0] == 200
        events = pipeline.events()
        assert [(e["route"], e["path"]) for e in events] == [("/users/{user_id}", "/users/7")]
        assert pipeline.processor.stats.snapshot()["dropped_total"] == 0
    finally:
        pipeline.provider.shutdown()
        monkeypatch.delenv("OTEL_PYTHON_FASTAPI_EXCLUDED_URLS")
        fastapi_support._user_excluded_urls.cache_clear()
