"""A span's path through the processor is a straight line (docs/layout.md, *A span's path*).

``on_end`` -> ``span_view.read`` -> ``registry.pop`` -> the frameworks' one ``settle`` step (the
route read from the scope inside it) -> ``context.facts`` -> ``span_to_event`` -> ``submit``:
each stage entered once per request, in that order, none called back from a later one.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from packaging.version import Version

from beacon_otel.capture import processor as processor_module
from beacon_otel.frameworks import settle as settle_module
from beacon_otel.mapping import span_view
from beacon_otel.request.context import RequestContext
from beacon_otel.request.registry import RequestRegistry
from tests.conftest import Pipeline, asgi_request, make_pipeline

SETTLED_ASGI = ["read", "pop", "settle", "route", "/settle", "facts", "map", "submit"]
SETTLED_WSGI = ["read", "pop", "settle", "/settle", "facts", "map", "submit"]


@pytest.fixture
def stages(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[list[str], Pipeline]]:
    """Each stage's entry replaced by a counter that notes its name, then calls the stage."""
    entered: list[str] = []

    def noted(name: str, original: Callable[..., Any], *, only_found: bool = False) -> Callable[..., Any]:
        def entry(*args: Any, **kwargs: Any) -> Any:
            result = original(*args, **kwargs)
            if not only_found or result is not None:
                entered.append(name)
            return result

        return entry

    original_settle = processor_module.settle

    def settle(context: RequestContext, span: Any) -> bool:
        entered.append("settle")
        try:
            return original_settle(context, span)
        finally:
            entered.append("/settle")

    original_route = settle_module.asgi_route

    def route(scope: Any) -> Any:
        entered.append("route")
        return original_route(scope)

    # read: a SERVER span's (None for any other kind, which is no request's stage).
    monkeypatch.setattr(span_view, "read", noted("read", span_view.read, only_found=True))
    monkeypatch.setattr(RequestRegistry, "pop", noted("pop", RequestRegistry.pop, only_found=True))
    monkeypatch.setattr(processor_module, "settle", settle)
    monkeypatch.setattr(settle_module, "asgi_route", route)
    monkeypatch.setattr(RequestContext, "facts", noted("facts", RequestContext.facts))
    monkeypatch.setattr(processor_module, "span_to_event", noted("map", processor_module.span_to_event))
    pipeline = make_pipeline()
    worker = pipeline.processor._worker
    monkeypatch.setattr(worker, "submit", noted("submit", worker.submit))
    yield entered, pipeline
    pipeline.provider.shutdown()


def one_event(
    entered: list[str], pipeline: Pipeline, serve: Callable[[], int], status: int
) -> dict[str, Any]:
    entered.clear()
    assert serve() == status
    events = pipeline.events()
    pipeline.processor.clear_dry_run_events()
    assert len(events) == 1, events
    return events[0]


def test_a_fastapi_request_enters_each_stage_once_in_order(stages: tuple[list[str], Pipeline]) -> None:
    import fastapi
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    entered, pipeline = stages
    app = fastapi.FastAPI()

    @app.get("/users/{user_id}")
    def user(user_id: int) -> dict[str, int]:
        return {"id": user_id}

    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=pipeline.provider, **pipeline.processor.hooks("fastapi")
    )
    try:
        event = one_event(entered, pipeline, lambda: asgi_request(app, "GET", "/users/7")[0], 200)
    finally:
        FastAPIInstrumentor.uninstrument_app(app)
    assert entered == SETTLED_ASGI
    assert event["route"] == "/users/{user_id}"


def test_a_starlette_request_into_a_mount_enters_each_stage_once_in_order(
    stages: tuple[list[str], Pipeline],
) -> None:
    """The mount's full template is read from the scope inside settle; facts only reads it."""
    from opentelemetry.instrumentation.starlette import StarletteInstrumentor
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Mount, Route

    entered, pipeline = stages

    async def item(request: Any) -> JSONResponse:
        return JSONResponse({"id": request.path_params["item_id"]})

    app = Starlette(routes=[Mount("/api", routes=[Route("/items/{item_id}", item)])])
    StarletteInstrumentor.instrument_app(
        app, tracer_provider=pipeline.provider, **pipeline.processor.hooks("starlette")
    )
    try:
        event = one_event(entered, pipeline, lambda: asgi_request(app, "GET", "/api/items/3")[0], 200)
    finally:
        StarletteInstrumentor.uninstrument_app(app)
    assert entered == SETTLED_ASGI
    assert event["route"] == "/api/items/{item_id}"


@pytest.mark.skipif(
    Version(importlib.metadata.version("fastapi")) < Version("0.142"), reason="needs FastAPI's own telemetry"
)
def test_a_native_fastapi_request_into_a_mounted_sub_app_enters_each_stage_once(
    stages: tuple[list[str], Pipeline],
) -> None:
    """FastAPI's own telemetry is folded in and the mounted app's route read, in the one settle step."""
    import fastapi

    entered, pipeline = stages
    app = fastapi.FastAPI(telemetry={"tracer_provider": pipeline.provider})
    sub = fastapi.FastAPI()

    @sub.get("/things/{thing_id}")
    def thing(thing_id: int) -> dict[str, int]:
        return {"id": thing_id}

    app.mount("/v2", sub)
    event = one_event(entered, pipeline, lambda: asgi_request(app, "GET", "/v2/things/3")[0], 200)
    assert entered == SETTLED_ASGI
    assert event["route"] == "/v2/things/{thing_id}"


def test_a_flask_request_enters_each_stage_once_in_order(stages: tuple[list[str], Pipeline]) -> None:
    from flask import Flask
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    entered, pipeline = stages
    app = Flask(__name__)

    @app.route("/users/<int:user_id>")
    def user(user_id: int) -> dict[str, int]:
        return {"id": user_id}

    FlaskInstrumentor().instrument_app(
        app, tracer_provider=pipeline.provider, **pipeline.processor.hooks("flask")
    )
    try:
        event = one_event(entered, pipeline, lambda: app.test_client().get("/users/3").status_code, 200)
    finally:
        FlaskInstrumentor().uninstrument_app(app)
    assert entered == SETTLED_WSGI
    assert event["route"] == "/users/<int:user_id>"
