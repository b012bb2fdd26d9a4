"""Beacon's Pyramid tween, where OpenTelemetry's Pyramid instrumentation takes no hooks."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from opentelemetry.trace import SpanKind

from beacon_otel.common import patching
from beacon_otel.frameworks import aiohttp as aiohttp_support
from beacon_otel.frameworks import pyramid as pyramid_support
from beacon_otel.setup.autorun import AutoRun
from tests.conftest import Pipeline, make_pipeline

API_KEY = "key-live-123"
BEARER = "Bearer s3cr3t-token"
BEARER_HASH = "hash_" + hashlib.sha256(BEARER.encode()).hexdigest()[:12]

# WebOb (under Pyramid) imports cgi, deprecated on Python 3.11 and 3.12.
pytestmark = pytest.mark.filterwarnings("ignore:'cgi' is deprecated:DeprecationWarning")


@pytest.fixture
def pipeline() -> Any:
    built = make_pipeline()
    yield built
    built.provider.shutdown()


# -- Pyramid -----------------------------------------------------------------------------------


def pyramid_tween_names(app: Any) -> list[str]:
    from pyramid.interfaces import ITweens

    return [name for name, _ in app.registry.queryUtility(ITweens).implicit()]


def test_pyramid_tween_sits_once_between_opentelemetry_and_the_exception_view() -> None:
    """Under OpenTelemetry's tween (its span is open there), over EXCVIEW; a second call adds nothing."""
    from opentelemetry.instrumentation.pyramid import PyramidInstrumentor
    from pyramid.tweens import EXCVIEW

    from tests.frameworks.pyramid.pyramid_app import build_app

    def hook(span: Any, request: Any, response: Any) -> None:
        pass

    def instrument(config: Any) -> None:
        pyramid_support.instrument_config(config, request_hook=hook)  # before OpenTelemetry's
        PyramidInstrumentor().instrument_config(config)
        pyramid_support.instrument_config(config, request_hook=hook)

    names = pyramid_tween_names(build_app(instrument))
    assert names.count(pyramid_support.TWEEN) == 1, names
    at = names.index(pyramid_support.TWEEN)
    assert names.index(pyramid_support.OTEL_TWEEN) < at < names.index(EXCVIEW), names


def test_pyramid_tween_without_opentelemetry_still_builds() -> None:
    """Without OpenTelemetry's tween the app still builds, Beacon's tween over the exception view."""
    from tests.frameworks.pyramid.pyramid_app import build_app

    app = build_app(lambda config: pyramid_support.instrument_config(config, request_hook=lambda *a: None))
    assert pyramid_support.TWEEN in pyramid_tween_names(app)


def test_pyramid_raising_hook_never_breaks_the_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """A request hook that raises is logged; the app answers as it would without Beacon."""
    from opentelemetry.instrumentation.pyramid import PyramidInstrumentor
    from werkzeug.test import Client

    from tests.frameworks.pyramid.pyramid_app import build_app

    monkeypatch.delenv("BEACON_RAISE_INTERNAL_ERRORS")
    calls = []

    def broken(span: Any, request: Any, response: Any) -> None:
        calls.append(request.path)
        raise RuntimeError("hook bug")

    def instrument(config: Any) -> None:
        PyramidInstrumentor().instrument_config(config)
        pyramid_support.instrument_config(config, request_hook=broken)

    client = Client(build_app(instrument))
    response = client.get("/users/7")
    assert (response.status_code, response.get_json()) == (200, {"id": 7})
    assert client.get("/boom").status_code == 500
    assert calls == ["/users/7", "/boom"]


class FakePyramidRequest:
    """What the hook reads of a Pyramid request: environ, and the exception a view handled."""

    def __init__(self, headers: dict[str, str], exception: BaseException | None = None) -> None:
        self.environ = {"REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": "/boom"}
        for name, value in headers.items():
            self.environ["HTTP_" + name.upper().replace("-", "_")] = value
        self.exception = exception


class FakeResponse:
    def __init__(self, status_int: int) -> None:
        self.status_int = status_int


def test_pyramid_hook_reads_the_consumer_and_the_exception_an_exception_view_answered(
    pipeline: Pipeline,
) -> None:
    """An exception rendered as a 500 by an exception view is the event's error; the consumer is read."""
    hook = pipeline.processor.hooks("pyramid")["request_hook"]
    tracer = pipeline.provider.get_tracer("t")
    with tracer.start_as_current_span("GET /boom", kind=SpanKind.SERVER) as span:
        span.set_attributes({"http.request.method": "GET", "http.response.status_code": 500})
        hook(span, FakePyramidRequest({"Authorization": BEARER}, RuntimeError("kaboom")), FakeResponse(500))
    with tracer.start_as_current_span("GET /boom", kind=SpanKind.SERVER) as span:
        span.set_attributes({"http.request.method": "GET", "http.response.status_code": 404})
        # An HTTPException answered by the not-found view is a response, not an error.
        hook(span, FakePyramidRequest({"X-API-Key": API_KEY}, LookupError("x")), FakeResponse(404))
    first, second = pipeline.events()
    assert (first["consumer"], first["error"]) == (BEARER_HASH, "RuntimeError: kaboom")
    assert (second["consumer"], second["error"]) == (API_KEY, None)


# -- auto-run ----------------------------------------------------------------------------------


def test_autorun_installs_the_tween_and_middleware_once_and_leaves_the_kwargs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Pyramid and aiohttp instrumentors get their kwargs untouched; Beacon patches each framework once."""
    from aiohttp import web, web_app
    from pyramid.config import Configurator

    monkeypatch.setattr(Configurator, "make_wsgi_app", Configurator.make_wsgi_app)
    monkeypatch.setattr(web_app.Application, "__init__", web_app.Application.__init__)
    running = AutoRun({"BEACON_INGEST_KEY": "k", "BEACON_DRY_RUN": "true"})
    for name in ("pyramid", "aiohttp-server", "pyramid", "aiohttp-server"):
        kwargs = {"skip_dep_check": True}
        assert running.instrumentor_kwargs(name, kwargs) is kwargs
    patched = Configurator.make_wsgi_app
    assert patching.is_patched(Configurator, "make_wsgi_app")
    assert not getattr(patched.__wrapped__, patching.MARKER, None)  # wrapped once, not twice
    app = web.Application()
    assert sum(isinstance(m, aiohttp_support.BeaconMiddleware) for m in app.middlewares) == 1
