"""Every supported framework served by a real server over a socket, zero-code and by hand.

Each framework's example app (tests/frameworks/<framework>/<framework>_app.py) gets one server per way in; all
of that framework's checks go through that one server (route template, both consumer header
rules, an unhandled exception's text, a 404, validation errors where the framework has them),
and the events must arrive exactly once at the strict dev ingest with nothing rejected.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import requests
from opentelemetry.sdk.trace import TracerProvider
from packaging.version import Version

from beacon_otel import BeaconSpanProcessor
from beacon_otel.devingest import DevIngest
from tests.support.apps import app_file

from .conftest import Launch, Server, clean_environ, free_port
from .test_manual_setup import pipeline_for, serve_uvicorn, serve_wsgi

pytestmark = pytest.mark.integration

API_KEY = "fw-key-123"
BEARER = "Bearer fw-token-456"
BEARER_HASH = "hash_" + hashlib.sha256(BEARER.encode()).hexdigest()[:12]
WITH_KEY = {"X-API-Key": API_KEY}
WITH_TOKEN = {"Authorization": BEARER}


@dataclass(frozen=True)
class Call:
    """One request and the event it must become."""

    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    json: Any = None
    route: str = ""
    status: int = 200
    consumer: str | None = None
    error: str | None = None
    validation_fields: tuple[str, ...] = ()


def calls_for(item: str, template: str, *extra: Call) -> list[Call]:
    """The checks every framework passes: template with both header rules and set_consumer(),
    a 500 and a 404."""
    concrete = template.split("{")[0].split("<")[0] + "7"
    other = template.split("{")[0].split("<")[0] + "8"
    named = template.split("{")[0].split("<")[0] + "9"
    return [
        Call("GET", concrete, WITH_KEY, route=template, consumer=API_KEY),
        # The app's auth code names the caller with set_consumer(): over the header rules.
        Call("GET", named, {**WITH_KEY, "X-User": "user-9"}, route=template, consumer="user-9"),
        Call("GET", other, WITH_TOKEN, route=template, consumer=BEARER_HASH),
        Call("GET", "/boom", route="/boom", status=500, error="RuntimeError: kaboom"),
        Call("GET", f"/no/such/{item}", route=f"/no/such/{item}", status=404),
        *extra,
    ]


LITESTAR_CALLS = calls_for(
    "pet",
    "/zoo/pets/{pet_id:int}",
    Call(
        "POST",
        "/zoo/pets",
        WITH_KEY,
        {"name": "rex"},
        route="/zoo/pets",
        status=400,
        consumer=API_KEY,
        validation_fields=("body.age",),
    ),
)
BOTTLE_CALLS = calls_for("book", "/books/<book_id:int>")
FALCON_CALLS = calls_for("user", "/users/{user_id:int}")
TORNADO_CALLS = calls_for("user", "/users/{user_id}")
# OpenTelemetry's Pyramid and aiohttp instrumentations take no hooks: beacon-otel's tween and
# middleware show Beacon the request. Pyramid's /boom is answered by the app's exception view.
PYRAMID_CALLS = calls_for("user", "/users/{user_id}")
AIOHTTP_CALLS = calls_for("user", "/users/{user_id}")

UVICORN = ["uvicorn", "--host", "127.0.0.1", "--port", "{port}"]
# gunicorn 25.1+ opens a control socket unless told not to; earlier releases lack the option.
NO_CONTROL_SOCKET = ["--no-control-socket"] if Version(version("gunicorn")) >= Version("25.1") else []
GUNICORN = ["gunicorn", "--workers", "1", "--bind", "127.0.0.1:{port}", *NO_CONTROL_SOCKET]


def zero_code_env(ingest: DevIngest, tmp_path: Path) -> dict[str, str | None]:
    """Only Beacon's key and URL: no exporter, no hooks, nothing else configured."""
    return {
        "BEACON_INGEST_KEY": "ingest-key",
        "BEACON_INGEST_URL": ingest.base_url,
        "BEACON_FLUSH_INTERVAL": "0.2",
        "BEACON_STORAGE_PATH": str(tmp_path / "spool"),
    }


def exercise(base: str, calls: list[Call]) -> None:
    for call in calls:
        response = requests.request(
            call.method, base + call.path, headers=call.headers, json=call.json, timeout=15
        )
        assert response.status_code == call.status, (call, response.text[:300])


def check_events(ingest: DevIngest, calls: list[Call]) -> None:
    """Exactly one event per call, each with its route, status, consumer, error and validation fields."""
    events = ingest.wait_for_events(len(calls), timeout=60)

    def key(method: str, path: str) -> tuple[str, str]:
        return method, path

    assert Counter(key(e["method"], e["path"]) for e in events) == Counter(
        key(c.method, c.path) for c in calls
    )
    by_request = {key(e["method"], e["path"]): e for e in events}
    for call in calls:
        event = by_request[key(call.method, call.path)]
        got = (event["route"], event["status"], event["consumer"], event["error"])
        assert got == (call.route, call.status, call.consumer, call.error), event
        fields = tuple(item["field"] for item in event.get("validation_errors") or ())
        assert fields == call.validation_fields, event
    stats = ingest.stats()
    assert stats["batches_rejected"] == 0, stats


def serve_zero_code(
    launch: Launch,
    argv: list[str],
    ingest: DevIngest,
    tmp_path: Path,
    calls: list[Call],
    env: dict[str, str] | None = None,
) -> None:
    server = launch(argv, {**zero_code_env(ingest, tmp_path), **(env or {})})
    exercise(f"http://127.0.0.1:{server.port}", calls)
    check_events(ingest, calls)
    assert server.terminate() in (0, -15), server.log()
    # Apps log their own tracebacks for /boom; Beacon must have nothing to warn about
    # (its start-up INFO line, where it sends, is expected).
    lines = server.log().splitlines()
    complaints = [line for line in lines if "beacon-otel" in line and " INFO " not in line]
    assert complaints == [], server.log()


@pytest.fixture
def ingest() -> Iterator[DevIngest]:
    with DevIngest(ingest_key="ingest-key") as server:
        yield server


@dataclass
class ByHand:
    """Beacon on a provider of the test's own, as a user sets it up by hand; undone at teardown."""

    provider: TracerProvider
    processor: BeaconSpanProcessor
    ingest: DevIngest
    undo: list[Callable[[], object]] = field(default_factory=list)
    """What the test instrumented, uninstrumented in reverse order before the provider shuts down."""

    def instrument(self, instrumentor: Any, hooks_for: str) -> None:
        """``instrumentor.instrument()`` on this provider with Beacon's hooks for ``hooks_for``."""
        instrumentor.instrument(tracer_provider=self.provider, **self.processor.hooks(hooks_for))
        self.undo.append(instrumentor.uninstrument)

    def check(self, server: contextlib.AbstractContextManager[str], calls: list[Call]) -> None:
        """Every call through ``server`` (started here), then exactly its events at the ingest."""
        with server as base:
            exercise(base, calls)
        assert self.processor.force_flush(10_000)
        check_events(self.ingest, calls)


@pytest.fixture
def by_hand(ingest: DevIngest) -> Iterator[ByHand]:
    provider, _, processor = pipeline_for(ingest)
    setup = ByHand(provider, processor, ingest)
    try:
        yield setup
    finally:
        for undo in reversed(setup.undo):
            undo()
        provider.shutdown()


# -- Litestar --------------------------------------------------------------------------------


def test_litestar_zero_code(launch: Launch, ingest: DevIngest, tmp_path: Path) -> None:
    """opentelemetry-instrument uvicorn: found through beacon-otel's litestar instrumentor entry point."""
    serve_zero_code(launch, [*UVICORN, "litestar_app:app"], ingest, tmp_path, LITESTAR_CALLS)


def test_litestar_by_hand(by_hand: ByHand) -> None:
    """LitestarInstrumentor.instrument_app with Beacon's hooks, served by uvicorn."""
    from beacon_otel.instrumentation.litestar import LitestarInstrumentor
    from tests.frameworks.litestar.litestar_app import build_app

    app = build_app()
    LitestarInstrumentor.instrument_app(
        app, tracer_provider=by_hand.provider, **by_hand.processor.hooks("litestar")
    )
    by_hand.check(serve_uvicorn(app), LITESTAR_CALLS)


def test_litestar_own_plugin_by_hand(by_hand: ByHand) -> None:
    """Litestar's OpenTelemetryPlugin with Beacon's hook: one event per request, the template as route."""
    # Older Litestar releases have no OpenTelemetry plugin to handle.
    plugin = pytest.importorskip("litestar.plugins.opentelemetry")
    OpenTelemetryConfig, OpenTelemetryPlugin = plugin.OpenTelemetryConfig, plugin.OpenTelemetryPlugin

    from beacon_otel.instrumentation.litestar import LitestarInstrumentor
    from tests.frameworks.litestar.litestar_app import build_app

    app = build_app(plugins=[OpenTelemetryPlugin(OpenTelemetryConfig(tracer_provider=by_hand.provider))])
    LitestarInstrumentor.instrument_app(app, **by_hand.processor.hooks("litestar"))
    by_hand.check(serve_uvicorn(app), LITESTAR_CALLS)


# -- Bottle ----------------------------------------------------------------------------------


def test_bottle_zero_code(launch: Launch, ingest: DevIngest, tmp_path: Path) -> None:
    """opentelemetry-instrument gunicorn: found through beacon-otel's bottle instrumentor entry point."""
    serve_zero_code(launch, [*GUNICORN, "bottle_app:app"], ingest, tmp_path, BOTTLE_CALLS)


def test_bottle_by_hand(by_hand: ByHand) -> None:
    """BottleInstrumentor.instrument_app with Beacon's hooks, on a threaded WSGI server."""
    from beacon_otel.instrumentation.bottle import BottleInstrumentor
    from tests.frameworks.bottle.bottle_app import build_app

    app = build_app()
    hooks = by_hand.processor.hooks("bottle")
    BottleInstrumentor.instrument_app(app, tracer_provider=by_hand.provider, **hooks)
    by_hand.check(serve_wsgi(app), BOTTLE_CALLS)


# -- Falcon (OpenTelemetry's instrumentation, Beacon's hooks) ---------------------------------


def test_falcon_zero_code(launch: Launch, ingest: DevIngest, tmp_path: Path) -> None:
    """opentelemetry-instrument gunicorn with opentelemetry-instrumentation-falcon installed."""
    serve_zero_code(launch, [*GUNICORN, "falcon_app:app"], ingest, tmp_path, FALCON_CALLS)


def test_falcon_by_hand(by_hand: ByHand) -> None:
    """FalconInstrumentor().instrument with Beacon's hooks, on a threaded WSGI server."""
    from opentelemetry.instrumentation.falcon import FalconInstrumentor

    from tests.frameworks.falcon.falcon_app import build_app

    by_hand.instrument(FalconInstrumentor(), "falcon")
    by_hand.check(serve_wsgi(build_app()), FALCON_CALLS)


# -- Falcon ASGI (beacon-otel's instrumentor: OpenTelemetry's covers falcon.App only) -----------


def test_falcon_asgi_zero_code(launch: Launch, ingest: DevIngest, tmp_path: Path) -> None:
    """opentelemetry-instrument uvicorn: falcon.asgi.App found through the falcon_asgi entry point."""
    serve_zero_code(launch, [*UVICORN, "falcon_asgi_app:app"], ingest, tmp_path, FALCON_CALLS)


def test_falcon_asgi_by_hand(by_hand: ByHand) -> None:
    """FalconAsgiInstrumentor().instrument with Beacon's hooks, then the app, served by uvicorn."""
    from beacon_otel.instrumentation.falcon_asgi import FalconAsgiInstrumentor
    from tests.frameworks.falcon.falcon_asgi_app import build_app

    by_hand.instrument(FalconAsgiInstrumentor(), "falcon_asgi")
    by_hand.check(serve_uvicorn(build_app()), FALCON_CALLS)


# -- Tornado (OpenTelemetry's instrumentation, Beacon's hook) ---------------------------------


def test_tornado_zero_code(launch: Launch, ingest: DevIngest, tmp_path: Path) -> None:
    """opentelemetry-instrument python tornado_app.py with opentelemetry-instrumentation-tornado."""
    serve_zero_code(
        launch, ["python", str(app_file("tornado_app.py")), "{port}"], ingest, tmp_path, TORNADO_CALLS
    )


def test_tornado_by_hand(by_hand: ByHand) -> None:
    """TornadoInstrumentor().instrument with Beacon's hook, Tornado's own server in a thread."""
    from opentelemetry.instrumentation.tornado import TornadoInstrumentor

    from tests.frameworks.tornado.tornado_app import build_app

    by_hand.instrument(TornadoInstrumentor(), "tornado")
    by_hand.check(serve_tornado(build_app()), TORNADO_CALLS)


@contextlib.contextmanager
def serve_tornado(app: Any) -> Iterator[str]:
    """Tornado's HTTP server on its own event loop thread, on a free port."""
    import tornado.httpserver
    import tornado.netutil

    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
    port = sockets[0].getsockname()[1]
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stopped: asyncio.Event | None = None

    async def run() -> None:
        nonlocal stopped
        stopped = asyncio.Event()
        server = tornado.httpserver.HTTPServer(app)
        server.add_sockets(sockets)
        started.set()
        await stopped.wait()
        server.stop()
        await server.close_all_connections()

    thread = threading.Thread(target=loop.run_until_complete, args=(run(),), daemon=True)
    thread.start()
    assert started.wait(30), "tornado did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        assert stopped is not None
        loop.call_soon_threadsafe(stopped.set)
        thread.join(10)
        loop.close()


# -- Pyramid and aiohttp (OpenTelemetry's instrumentation, beacon-otel's tween and middleware) --


def test_pyramid_zero_code(launch: Launch, ingest: DevIngest, tmp_path: Path) -> None:
    """opentelemetry-instrument gunicorn: Beacon's tween in the app; consumer, exception-view error."""
    serve_zero_code(launch, [*GUNICORN, "pyramid_app:app"], ingest, tmp_path, PYRAMID_CALLS)


def test_pyramid_by_hand(ingest: DevIngest, tmp_path: Path) -> None:
    """configure(), PyramidInstrumentor().instrument_config and Beacon's instrument_config, under gunicorn.

    Without opentelemetry-instrument: OpenTelemetry's Pyramid spans go to the global provider,
    which configure() sets up (tests/frameworks/pyramid/manual_pyramid.py).
    """
    serve_by_hand([*GUNICORN, "manual_pyramid:app"], {}, ingest, tmp_path, PYRAMID_CALLS)


def serve_by_hand(
    argv: list[str], env: dict[str, str], ingest: DevIngest, tmp_path: Path, calls: list[Call]
) -> None:
    """A server whose app sets Beacon up itself, started without opentelemetry-instrument."""
    port = free_port()
    server = Server(
        argv=[a.format(port=port) for a in argv],
        env={**clean_environ(), **zero_code_env(ingest, tmp_path), **env},
        log_path=tmp_path / "server.log",
        port=port,
    )
    try:
        server.start()
        exercise(f"http://127.0.0.1:{port}", calls)
        check_events(ingest, calls)
        assert server.terminate() in (0, -15), server.log()
    finally:
        server.kill()


def test_aiohttp_zero_code(launch: Launch, ingest: DevIngest, tmp_path: Path) -> None:
    """opentelemetry-instrument python aiohttp_app.py: Beacon's middleware added to every app."""
    serve_zero_code(
        launch, ["python", str(app_file("aiohttp_app.py")), "{port}"], ingest, tmp_path, AIOHTTP_CALLS
    )


# OpenTelemetry's instrumentor subclasses web.Application, which aiohttp warns about.
@pytest.mark.filterwarnings("ignore:Inheritance class _InstrumentedApplication:DeprecationWarning")
def test_aiohttp_by_hand(by_hand: ByHand) -> None:
    """AioHttpServerInstrumentor().instrument, then Beacon's instrument_app on the app, aiohttp's server."""
    from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor

    from beacon_otel.frameworks import aiohttp as aiohttp_support
    from tests.frameworks.aiohttp.aiohttp_app import build_app

    instrumentor = AioHttpServerInstrumentor()
    instrumentor.instrument(tracer_provider=by_hand.provider)
    by_hand.undo.append(instrumentor.uninstrument)
    app = build_app()
    aiohttp_support.instrument_app(app, **by_hand.processor.hooks("aiohttp-server"))
    by_hand.check(serve_aiohttp(app), AIOHTTP_CALLS)


@contextlib.contextmanager
def serve_aiohttp(app: Any) -> Iterator[str]:
    """aiohttp's own server on its own event loop thread, on a free port."""
    from aiohttp import web

    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, access_log=None)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


# -- Django Ninja and Django REST framework (OpenTelemetry's Django instrumentation) -----------

NINJA_CALLS = [
    Call("GET", "/api/items/7", WITH_KEY, route="/api/items/{item_id}", consumer=API_KEY),
    Call("GET", "/api/items/8", WITH_TOKEN, route="/api/items/{item_id}", consumer=BEARER_HASH),
    Call("GET", "/api/boom", route="/api/boom", status=500, error="RuntimeError: kaboom"),
    Call("GET", "/no/such/item", route="/no/such/item", status=404),
    Call(
        "POST",
        "/api/items",
        WITH_KEY,
        {"name": "rex"},
        route="/api/items",
        status=422,
        consumer=API_KEY,
        validation_fields=("body.item.price",),
    ),
]
DRF_CALLS = [
    Call("GET", "/api/books/7/", WITH_KEY, route="/api/books/<pk>/", consumer=API_KEY),
    Call("GET", "/api/books/8/", WITH_TOKEN, route="/api/books/<pk>/", consumer=BEARER_HASH),
    Call("GET", "/api/boom/", route="/api/boom/", status=500, error="RuntimeError: kaboom"),
    Call("GET", "/no/such/book", route="/no/such/book", status=404),
    Call(
        "POST",
        "/api/books/",
        WITH_TOKEN,
        {"title": ""},
        route="/api/books/",
        status=400,
        consumer=BEARER_HASH,
        validation_fields=("title", "year"),
    ),
]
DJANGO_PROJECTS = [
    pytest.param("ninjaproject", NINJA_CALLS, id="ninja"),
    pytest.param("drfproject", DRF_CALLS, id="rest-framework"),
]


@pytest.mark.parametrize(("project", "calls"), DJANGO_PROJECTS)
def test_django_api_frameworks_zero_code(
    launch: Launch, ingest: DevIngest, tmp_path: Path, project: str, calls: list[Call]
) -> None:
    """opentelemetry-instrument gunicorn: Ninja's own route notation, both frameworks' validation errors."""
    env = {"DJANGO_SETTINGS_MODULE": f"{project}.settings"}
    serve_zero_code(launch, [*GUNICORN, f"{project}.wsgi"], ingest, tmp_path, calls, env)


@pytest.mark.parametrize(("project", "calls"), DJANGO_PROJECTS)
def test_django_api_frameworks_by_hand(
    ingest: DevIngest, tmp_path: Path, project: str, calls: list[Call]
) -> None:
    """configure() and DjangoInstrumentor with Beacon's hooks in the WSGI module, under gunicorn."""
    env = {"DJANGO_SETTINGS_MODULE": f"{project}.settings"}
    serve_by_hand([*GUNICORN, "manual_django_wsgi"], env, ingest, tmp_path, calls)
