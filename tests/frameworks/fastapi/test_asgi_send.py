"""The response's last message reaches the server outside the request's context.

uvicorn starts its keep-alive timer inside the server's ``send`` for the last body message, and
asyncio's timer keeps a copy of the caller's context variables until it purges cancelled
timers: a copy taken inside the request holds the SERVER span and Beacon's request alive for
seconds. The server's ``send`` here takes that same copy (``contextvars.copy_context()``, what
``loop.call_later`` does) and the tests read what it holds.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace

from beacon_otel.common import patching
from beacon_otel.frameworks import fastapi as fastapi_support
from beacon_otel.frameworks.fastapi import SEND_OUTSIDE_PATCH
from beacon_otel.frameworks.starlette import SEND_OUTSIDE_PATCH as STARLETTE_SEND_OUTSIDE_PATCH
from beacon_otel.request import registry
from tests.conftest import Pipeline, make_pipeline, requires
from tests.frameworks.fastapi.test_fastapi import CASES, MOUNTED_ERROR, check_cases, fastapi_apps

pytestmark = requires("fastapi", "0.142")  # FastAPI's native telemetry: the SERVER span Beacon reads


@pytest.fixture
def sent_outside() -> Iterator[None]:
    """Beacon's patch of FastAPI's and Starlette's ``__call__`` for this test only."""
    fastapi_support.send_last_message_outside()
    yield
    patching.undo(SEND_OUTSIDE_PATCH)
    patching.undo(STARLETTE_SEND_OUTSIDE_PATCH)


@pytest.fixture
def unpatched(monkeypatch: pytest.MonkeyPatch) -> None:
    """FastAPI's and Starlette's own ``__call__`` for this test, whatever an earlier test installed."""
    import fastapi
    from starlette.applications import Starlette

    for cls in (fastapi.FastAPI, Starlette):
        call = cls.__dict__["__call__"]
        while getattr(call, patching.MARKER, None):
            call = call.__wrapped__
        monkeypatch.setattr(cls, "__call__", call)


@pytest.fixture
def native() -> Iterator[Pipeline]:
    built = make_pipeline()
    yield built
    built.provider.shutdown()


def serve_once(app: Any, path: str = "/users/7") -> dict[str, contextvars.Context]:
    """One request as a server serves it; the context copies its ``send`` took, by message type."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), (b"x-api-key", b"key-1")],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
    }
    copies: dict[str, contextvars.Context] = {}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        copies[message["type"]] = contextvars.copy_context()

    asyncio.run(app(scope, receive, send))
    return copies


def users_app(pipeline: Pipeline) -> Any:
    import fastapi

    app = fastapi.FastAPI(telemetry={"tracer_provider": pipeline.provider})
    app.get("/users/{user_id}")(lambda user_id: {"id": user_id})
    return app


def holds_the_request(copy: contextvars.Context) -> bool:
    """Whether the copy references the request's span or Beacon's request (ended or not)."""
    span_held = copy.run(trace.get_current_span).get_span_context().is_valid
    return span_held or copy.get(registry._CURRENT) is not None


def test_without_the_patch_the_servers_copy_holds_the_request(unpatched: None, native: Pipeline) -> None:
    """What the patch is for: a server's callback made in the last ``send`` keeps the live span."""
    copies = serve_once(users_app(native))
    assert holds_the_request(copies["http.response.body"])


def test_the_last_message_is_sent_outside_the_request(sent_outside: None, native: Pipeline) -> None:
    """The last body message: no span, no Beacon request; the response start keeps both."""
    copies = serve_once(users_app(native))
    assert not holds_the_request(copies["http.response.body"])
    assert holds_the_request(copies["http.response.start"])


def test_the_event_and_span_are_whole(sent_outside: None, native: Pipeline) -> None:
    """The span ends after the server's ``send`` returns, in the request: its event is complete."""
    serve_once(users_app(native))
    events = native.events()
    assert [(e["route"], e["status"], e["consumer"]) for e in events] == [("/users/{user_id}", 200, "key-1")]
    (span,) = [s for s in native.exporter.get_finished_spans() if s.kind is trace.SpanKind.SERVER]
    assert span.attributes is not None and span.attributes.get("http.response.status_code", 200) == 200


def test_every_case_and_mounted_apps_keep_their_events(sent_outside: None, native: Pipeline) -> None:
    """Consumers, 422 details, mounts, and an exception in a mounted app: events unchanged."""
    import fastapi

    app = fastapi_apps(fastapi, {"tracer_provider": native.provider})
    check_cases(app, native, [*CASES, MOUNTED_ERROR])
    copies = serve_once(app, "/v2/things/1")  # a mounted FastAPI app: wrapped once, outermost
    assert not holds_the_request(copies["http.response.body"])


def test_a_starlette_app_sends_its_last_message_outside(sent_outside: None) -> None:
    """A Starlette app under the contrib instrumentation: the same, its span untouched."""
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    pipeline = make_pipeline()
    try:

        async def user(request: Any) -> Any:
            return JSONResponse({"id": request.path_params["user_id"]})

        app = Starlette(
            routes=[Route("/users/{user_id}", user)],
            middleware=[Middleware(OpenTelemetryMiddleware, tracer_provider=pipeline.provider)],
        )
        copies = serve_once(app)
        assert not copies["http.response.body"].run(trace.get_current_span).get_span_context().is_valid
        assert copies["http.response.start"].run(trace.get_current_span).get_span_context().is_valid
        server = [s for s in pipeline.exporter.get_finished_spans() if s.kind is trace.SpanKind.SERVER]
        assert len(server) == 1 and server[0].attributes is not None
        assert server[0].attributes.get("http.status_code") == 200
    finally:
        pipeline.provider.shutdown()


def test_autorun_installs_it_with_either_span_source(monkeypatch: pytest.MonkeyPatch) -> None:
    """FastAPI's own telemetry (no exporter) or the contrib instrumentation (traces exported)."""
    import fastapi
    from starlette.applications import Starlette

    from beacon_otel.setup import instrumentors
    from beacon_otel.setup.autorun import AutoRun

    running = AutoRun({"BEACON_DRY_RUN": "true"})
    assert running.processor is not None
    try:
        monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
        assert running.native_telemetry_instead("fastapi")
        assert patching.is_patched(fastapi.FastAPI, "__call__")
        assert patching.is_patched(Starlette, "__call__")
        patching.undo(SEND_OUTSIDE_PATCH)
        patching.undo(STARLETTE_SEND_OUTSIDE_PATCH)
        monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
        instrumentors.with_hooks("starlette", {}, {})
        assert patching.is_patched(Starlette, "__call__")
    finally:
        patching.undo(SEND_OUTSIDE_PATCH)
        patching.undo(STARLETTE_SEND_OUTSIDE_PATCH)
        patching.undo(fastapi_support.QUIET_PATCH)
        running.processor.shutdown()


def test_an_app_wrapped_by_hand_in_the_asgi_middleware_keeps_its_send_spans_in_the_trace(
    sent_outside: None,
) -> None:
    """``OpenTelemetryMiddleware(app)``: its ``http send`` spans stay children of its SERVER span."""
    import fastapi
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    pipeline = make_pipeline()
    try:
        app = fastapi.FastAPI(telemetry={"enabled": False})
        app.get("/users/{user_id}")(lambda user_id: {"id": user_id})
        serve_once(OpenTelemetryMiddleware(app, tracer_provider=pipeline.provider))
        spans = pipeline.exporter.get_finished_spans()
        (server,) = [s for s in spans if s.kind is trace.SpanKind.SERVER]
        sends = [s for s in spans if s.name.endswith("send")]
        assert len(sends) == 2
        assert all(s.parent is not None and s.parent.span_id == server.context.span_id for s in sends)
    finally:
        pipeline.provider.shutdown()


def test_a_manual_set_up_installs_it_too(unpatched: None) -> None:
    """``configure(tracer_provider=...)`` with FastAPI's own telemetry, or ``hooks("starlette")``."""
    import fastapi
    from opentelemetry.sdk.trace import TracerProvider
    from starlette.applications import Starlette

    import beacon_otel
    from beacon_otel.config.settings import BeaconConfig

    provider = TracerProvider()
    beacon = beacon_otel.configure(BeaconConfig(ingest_key="k", dry_run=True), tracer_provider=provider)
    try:
        assert patching.is_patched(fastapi.FastAPI, "__call__")
        app = fastapi.FastAPI(telemetry={"tracer_provider": provider})
        app.get("/users/{user_id}")(lambda user_id: {"id": user_id})
        copies = serve_once(app)
        assert not holds_the_request(copies["http.response.body"])
        assert holds_the_request(copies["http.response.start"])
        assert beacon.force_flush()
        events = beacon.dry_run_events()
        assert [(e["route"], e["consumer"]) for e in events] == [("/users/{user_id}", "key-1")]
        patching.undo(SEND_OUTSIDE_PATCH)
        patching.undo(STARLETTE_SEND_OUTSIDE_PATCH)
        beacon.hooks("starlette")  # the contrib instrumentation, by hand
        assert patching.is_patched(Starlette, "__call__")
    finally:
        patching.undo(SEND_OUTSIDE_PATCH)
        patching.undo(STARLETTE_SEND_OUTSIDE_PATCH)
        provider.shutdown()
