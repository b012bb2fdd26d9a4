"""FastAPI's own telemetry serving Beacon alone: its unexported operation spans switched off."""

from __future__ import annotations

import pytest

from beacon_otel.common import patching
from beacon_otel.frameworks import fastapi as fastapi_support
from tests.conftest import asgi_request, make_pipeline, requires
from tests.frameworks.fastapi.test_fastapi import CASES, MOUNTED_ERROR, check_cases, fastapi_apps

pytestmark = requires("fastapi", "0.142")  # FastAPI's native telemetry


def operation_spans(pipeline: object) -> list[str]:
    spans = pipeline.exporter.get_finished_spans()  # type: ignore[attr-defined]
    return sorted({span.name for span in spans if span.kind.name == "INTERNAL"})


@pytest.fixture
def pristine(monkeypatch: pytest.MonkeyPatch) -> None:
    """FastAPI's own constructor for this test, whatever an earlier test (auto-run) installed."""
    import fastapi

    init = fastapi.FastAPI.__init__
    while getattr(init, patching.MARKER, None):
        init = init.__wrapped__
    monkeypatch.setattr(fastapi.FastAPI, "__init__", init)


@pytest.fixture
def quiet(pristine: None) -> None:
    """quiet_operation_spans() for this test only (it changes FastAPI's constructor)."""
    fastapi_support.quiet_operation_spans()


def test_native_telemetry_opens_operation_spans_by_default(pristine: None) -> None:
    """Without Beacon's switch, FastAPI's telemetry opens INTERNAL spans per request (the cost)."""
    import fastapi

    pipeline = make_pipeline()
    try:
        app = fastapi.FastAPI(telemetry={"tracer_provider": pipeline.provider})
        app.get("/users/{user_id}")(lambda user_id: {"id": user_id})
        assert asgi_request(app, "GET", "/users/3")[0] == 200
        assert "fastapi.endpoint" in operation_spans(pipeline)
    finally:
        pipeline.provider.shutdown()


def test_switched_off_operation_spans_keep_every_event(quiet: None) -> None:
    """No INTERNAL span any more; consumer, 422 details, exception text and mount routes unchanged."""
    import fastapi

    pipeline = make_pipeline()
    try:
        app = fastapi_apps(fastapi, {"tracer_provider": pipeline.provider})
        check_cases(app, pipeline, [*CASES, MOUNTED_ERROR])
        assert operation_spans(pipeline) == []
        assert any(span.kind.name == "SERVER" for span in pipeline.exporter.get_finished_spans())
    finally:
        pipeline.provider.shutdown()


def test_an_app_asking_for_operation_spans_keeps_them(quiet: None) -> None:
    """``telemetry={"operation_spans": True}`` is the app's choice: Beacon leaves it."""
    import fastapi

    pipeline = make_pipeline()
    try:
        app = fastapi.FastAPI(telemetry={"tracer_provider": pipeline.provider, "operation_spans": True})
        app.get("/users/{user_id}")(lambda user_id: {"id": user_id})
        assert asgi_request(app, "GET", "/users/3")[0] == 200
        assert "fastapi.endpoint" in operation_spans(pipeline)
    finally:
        pipeline.provider.shutdown()


def test_autorun_switches_them_off_only_when_no_trace_exporter(
    pristine: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Beacon alone: switched off with the native telemetry; with OTLP traces the app is untouched."""
    import fastapi

    from beacon_otel.setup.autorun import AutoRun

    running = AutoRun({"BEACON_DRY_RUN": "true"})
    assert running.processor is not None
    try:
        monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
        assert not running.native_telemetry_instead("fastapi")
        assert not patching.is_patched(fastapi.FastAPI, "__init__")
        monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
        assert running.native_telemetry_instead("fastapi")
        assert fastapi_support.QUIET_PATCH.name in patching.patched()
        assert patching.is_patched(fastapi.FastAPI, "__init__")
    finally:
        running.processor.shutdown()
