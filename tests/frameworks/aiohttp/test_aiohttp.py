"""Beacon's aiohttp middleware, where OpenTelemetry's aiohttp server instrumentation takes no hooks."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from beacon_otel.frameworks import aiohttp as aiohttp_support
from tests.conftest import Pipeline, make_pipeline

API_KEY = "key-live-123"

# OpenTelemetry's aiohttp instrumentor subclasses web.Application, which aiohttp warns about.
NO_SUBCLASS_WARNING = pytest.mark.filterwarnings(
    "ignore:Inheritance class _InstrumentedApplication:DeprecationWarning"
)


@pytest.fixture
def pipeline() -> Any:
    built = make_pipeline()
    yield built
    built.provider.shutdown()


async def aiohttp_get(app: Any, path: str, headers: dict[str, str]) -> int:
    from aiohttp.test_utils import TestClient, TestServer

    async with TestClient(TestServer(app)) as client:
        response = await client.get(path, headers=headers)
        return response.status


@NO_SUBCLASS_WARNING
def test_aiohttp_middleware_runs_before_the_apps_own(pipeline: Pipeline) -> None:
    """An app middleware answering 401 still has its caller counted; one middleware per app."""
    from aiohttp import web
    from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor

    @web.middleware
    async def refuse(request: web.Request, handler: Any) -> web.StreamResponse:
        raise web.HTTPUnauthorized()

    instrumentor = AioHttpServerInstrumentor()
    instrumentor.instrument(tracer_provider=pipeline.provider)
    try:
        app = web.Application(middlewares=[refuse])
        hooks = pipeline.processor.hooks("aiohttp-server")
        aiohttp_support.instrument_app(app, **hooks)
        aiohttp_support.instrument_app(app, **hooks)
        kinds = [
            type(m).__name__ if isinstance(m, aiohttp_support.BeaconMiddleware) else m
            for m in app.middlewares
        ]
        assert kinds[1:] == ["BeaconMiddleware", refuse], kinds
        assert asyncio.run(aiohttp_get(app, "/private", {"X-API-Key": API_KEY})) == 401
    finally:
        instrumentor.uninstrument()
    (event,) = pipeline.events()
    assert (event["status"], event["path"], event["consumer"]) == (401, "/private", API_KEY)


def test_aiohttp_middleware_cannot_join_a_running_app() -> None:
    """A frozen (started) app's middleware list cannot change: said at set-up, not silently ignored."""
    from aiohttp import web

    app = web.Application()
    app.freeze()
    with pytest.raises(RuntimeError, match="before the app starts"):
        aiohttp_support.instrument_app(app, request_hook=lambda span, request: None)


@NO_SUBCLASS_WARNING
def test_aiohttp_consumer_resolver_receives_the_aiohttp_request() -> None:
    """A consumer_resolver is given the web.Request, as docs/frameworks.md says."""
    from aiohttp import web
    from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor

    seen: list[Any] = []

    def resolver(request: Any) -> str:
        seen.append(request)
        return f"team-{request.headers['X-Team']}"

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hi")

    pipeline = make_pipeline(consumer_resolver=resolver)
    instrumentor = AioHttpServerInstrumentor()
    instrumentor.instrument(tracer_provider=pipeline.provider)
    try:
        app = web.Application()
        app.router.add_get("/hello", hello)
        aiohttp_support.instrument_app(app, **pipeline.processor.hooks("aiohttp-server"))
        assert asyncio.run(aiohttp_get(app, "/hello", {"X-Team": "blue"})) == 200
        (event,) = pipeline.events()
    finally:
        instrumentor.uninstrument()
        pipeline.provider.shutdown()
    assert event["consumer"] == "team-blue"
    assert [type(request) for request in seen] == [web.Request]
