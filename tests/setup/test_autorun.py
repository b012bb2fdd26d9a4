"""Auto-run (autorun.py and the entry points in distro.py): configurator, pre-instrument, hooks."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from typing import Any

import pytest
from opentelemetry.instrumentation.distro import BaseDistro
from opentelemetry.sdk._configuration import _OTelSDKConfigurator
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, TraceIdRatioBased
from opentelemetry.trace import NoOpTracerProvider, ProxyTracerProvider, SpanKind
from opentelemetry.util.http import SanitizeValue

from beacon_otel.capture.processor import BeaconSpanProcessor
from beacon_otel.capture.sampling import BeaconSampler
from beacon_otel.config.settings import BeaconConfig
from beacon_otel.setup import autorun, distro, exits
from beacon_otel.setup.autorun import AutoRun
from beacon_otel.setup.environment import SANITIZE_FIELDS
from tests.conftest import requires

DRY_RUN = {"BEACON_DRY_RUN": "true"}
SERVER_SPAN = {"http.method": "GET", "http.route": "/users/{id}", "http.target": "/users/1"}


def make_provider(sampler: Any = None) -> TracerProvider:
    return TracerProvider(sampler=sampler, shutdown_on_exit=False)


def serve_one(provider: TracerProvider, status: int = 200) -> None:
    span = provider.get_tracer("t").start_span("GET", kind=SpanKind.SERVER, attributes=SERVER_SPAN)
    span.set_attribute("http.status_code", status)
    span.end()


class FakeEntryPoint:
    """Stands in for an opentelemetry_instrumentor entry point."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.received: dict[str, Any] = {}

    def load(self) -> Any:
        received = self.received

        class Instrumentor:
            def instrument(self, **kwargs: Any) -> None:
                received.update(kwargs)

        return Instrumentor


class Recorder(SpanProcessor):
    """A processor the user already passes to the configurator."""

    def on_end(self, span: ReadableSpan) -> None:
        pass


@pytest.fixture
def running(monkeypatch: pytest.MonkeyPatch) -> AutoRun:
    """A fresh process-wide auto-run state in dry-run mode, restored afterwards."""
    state = AutoRun(dict(DRY_RUN))
    monkeypatch.setattr(autorun, "AUTORUN", state)
    return state


# -- settings ----------------------------------------------------------------------------


def test_missing_key_warns_once_naming_it(caplog: pytest.LogCaptureFixture) -> None:
    """Without BEACON_INGEST_KEY Beacon is off, with one WARNING that names the variable."""
    state = AutoRun({})
    with caplog.at_level(logging.DEBUG, logger="beacon_otel"):
        assert state.processor is None
        assert state.processor is None
        state.protect_credentials()
        state.pre_instrument()
    records = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.levelname for r in records] == ["WARNING"]
    assert "BEACON_INGEST_KEY is not set" in records[0].getMessage()


def test_bad_value_logs_one_error_naming_the_setting(caplog: pytest.LogCaptureFixture) -> None:
    """A bad BEACON_* value turns Beacon off with one ERROR naming that variable."""
    state = AutoRun({"BEACON_INGEST_KEY": "k", "BEACON_BATCH_SIZE": "lots"})
    with caplog.at_level(logging.DEBUG, logger="beacon_otel"):
        assert state.processor is None
        state.pre_instrument()
    records = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.levelname for r in records] == ["ERROR"]
    assert "BEACON_BATCH_SIZE" in records[0].getMessage()


@pytest.mark.parametrize(
    "environ",
    [{"BEACON_ENABLED": "false"}, {"BEACON_ENABLED": "0"}, {"OTEL_SDK_DISABLED": "true"}],
)
def test_switched_off_quietly(environ: dict[str, str], caplog: pytest.LogCaptureFixture) -> None:
    """BEACON_ENABLED=false and OTEL_SDK_DISABLED=true turn Beacon off without a warning."""
    state = AutoRun({"BEACON_INGEST_KEY": "k", **environ})
    with caplog.at_level(logging.WARNING, logger="beacon_otel"):
        assert state.processor is None
    assert caplog.records == []


def test_a_key_turns_beacon_on() -> None:
    """With BEACON_INGEST_KEY set the processor is built from the BEACON_* variables."""
    state = AutoRun({"BEACON_INGEST_KEY": "k", "BEACON_BATCH_SIZE": "7"})
    assert isinstance(state.processor, BeaconSpanProcessor)
    assert state.processor.config.batch_size == 7


# -- credentials -------------------------------------------------------------------------


def test_credential_headers_are_added_to_the_sanitize_fields() -> None:
    """Credentials and the consumer header join the user's sanitize list, once."""
    environ = {**DRY_RUN, "BEACON_CONSUMER_HEADER": "X-Tenant", SANITIZE_FIELDS: ".*session.*"}
    state = AutoRun(environ)
    state.protect_credentials()
    state.protect_credentials()
    fields = environ[SANITIZE_FIELDS].split(",")
    assert fields[0] == ".*session.*"
    assert len(fields) == len(set(fields)) == 7
    sanitize = SanitizeValue(fields)
    # ASGI reports lower-case names, WSGI upper-case with dashes.
    for header in ("authorization", "X-API-KEY", "x-api-key", "Cookie", "X-TENANT", "x-tenant"):
        assert sanitize.sanitize_header_value(header, "secret") == "[REDACTED]", header
    assert sanitize.sanitize_header_value("user-agent", "curl") == "curl"


def test_credentials_are_left_alone_when_beacon_is_off() -> None:
    """With Beacon off, the instrumentations' settings are untouched."""
    environ: dict[str, str] = {"BEACON_ENABLED": "false"}
    AutoRun(environ).protect_credentials()
    assert SANITIZE_FIELDS not in environ


# -- configurator ------------------------------------------------------------------------


def test_configurator_kwargs_put_beacon_first_and_wrap_the_env_sampler(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The processor goes before the user's, and the OTEL_TRACES_SAMPLER choice is wrapped."""
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.5")
    state = AutoRun(dict(DRY_RUN))
    theirs = Recorder()
    kwargs = state.configurator_kwargs({"span_processors": [theirs], "auto_instrumentation_version": "x"})
    assert kwargs["span_processors"] == [state.processor, theirs]
    assert kwargs["auto_instrumentation_version"] == "x"
    sampler = kwargs["sampler"]
    assert isinstance(sampler, BeaconSampler)
    assert sampler.delegate.get_description() == "TraceIdRatioBased{0.5}"


def test_configurator_kwargs_default_sampler_matches_the_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no OTEL_TRACES_SAMPLER the wrapped sampler is the SDK's default, parent-based always-on."""
    monkeypatch.delenv("OTEL_TRACES_SAMPLER", raising=False)
    sampler = AutoRun(dict(DRY_RUN)).configurator_kwargs({})["sampler"]
    assert sampler.delegate.get_description() == make_provider().sampler.get_description()


def test_configurator_kwargs_wrap_a_given_sampler_once() -> None:
    """A sampler passed by a subclass is wrapped; a BeaconSampler is not wrapped twice."""
    given = ParentBased(TraceIdRatioBased(0.1))
    assert AutoRun(dict(DRY_RUN)).configurator_kwargs({"sampler": given})["sampler"].delegate is given
    wrapped = BeaconSampler(given)
    assert AutoRun(dict(DRY_RUN)).configurator_kwargs({"sampler": wrapped})["sampler"] is wrapped


@pytest.mark.parametrize(
    "environ", [{"BEACON_ENABLED": "false"}, {**DRY_RUN, "OTEL_CONFIG_FILE": "otel.yaml"}]
)
def test_configurator_kwargs_untouched(environ: dict[str, str]) -> None:
    """Beacon off, or a config file (which makes the SDK ignore kwargs): kwargs pass as given."""
    kwargs = {"auto_instrumentation_version": "x"}
    assert AutoRun(environ).configurator_kwargs(kwargs) is kwargs


def test_configurator_hands_beacon_to_the_sdk(running: AutoRun, monkeypatch: pytest.MonkeyPatch) -> None:
    """BeaconConfigurator calls the SDK's configurator with the processor and wrapped sampler."""
    seen: dict[str, Any] = {}
    monkeypatch.setattr(_OTelSDKConfigurator, "_configure", lambda self, **kw: seen.update(kw))
    distro.BeaconConfigurator().configure(auto_instrumentation_version="0.66b1")
    assert seen["span_processors"] == [running.processor]
    assert isinstance(seen["sampler"], BeaconSampler)
    assert seen["auto_instrumentation_version"] == "0.66b1"


def test_configured_recognises_the_provider_built_from_its_kwargs(
    running: AutoRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A provider built with Beacon's sampler already has the processor: it is not added twice."""
    kwargs = running.configurator_kwargs({})
    provider = make_provider(kwargs["sampler"])
    for processor in kwargs["span_processors"]:
        provider.add_span_processor(processor)
    monkeypatch.setattr(autorun.trace, "get_tracer_provider", lambda: provider)
    running.configured()
    assert running.provider is provider
    serve_one(provider)
    assert running.processor is not None
    running.processor.force_flush()
    assert len(running.processor.dry_run_events()) == 1


def test_configured_attaches_to_a_provider_built_otherwise(
    running: AutoRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A provider built without Beacon's kwargs (config file) gets the processor afterwards."""
    provider = make_provider()
    monkeypatch.setattr(autorun.trace, "get_tracer_provider", lambda: provider)
    running.configured()
    assert running.provider is provider
    assert isinstance(provider.sampler, BeaconSampler)


def test_sdk_failure_keeps_beacon_running(
    running: AutoRun, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """When the SDK's set-up raises (exporter missing), Beacon logs it and keeps its own provider."""
    provider = make_provider()

    def fail(self: Any, **kwargs: Any) -> None:
        raise RuntimeError("Requested component 'otlp_proto_grpc' not found")

    monkeypatch.setattr(_OTelSDKConfigurator, "_configure", fail)
    monkeypatch.setattr(autorun, "global_sdk_provider", lambda: provider)
    with caplog.at_level(logging.ERROR, logger="beacon_otel"):
        distro.BeaconConfigurator().configure()
    assert running.provider is provider
    assert "otlp_proto_grpc" in caplog.records[0].getMessage()


def test_sdk_failure_is_raised_when_beacon_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """With Beacon off, a failing SDK set-up fails exactly as it would without beacon-otel."""
    monkeypatch.setattr(autorun, "AUTORUN", AutoRun({"BEACON_ENABLED": "false"}))

    def fail(self: Any, **kwargs: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(_OTelSDKConfigurator, "_configure", fail)
    with pytest.raises(RuntimeError, match="boom"):
        distro.BeaconConfigurator().configure()


# -- attaching, pre-instrument -----------------------------------------------------------


def test_attach_adds_the_processor_and_wraps_the_sampler_once(running: AutoRun) -> None:
    """attach() makes a sampled-out request reach Beacon, and is idempotent."""
    provider = make_provider(ALWAYS_OFF)
    running.attach(provider)
    running.attach(provider)
    assert isinstance(provider.sampler, BeaconSampler)
    assert provider.sampler.delegate is ALWAYS_OFF
    serve_one(provider)
    assert running.processor is not None
    running.processor.force_flush()
    assert len(running.processor.dry_run_events()) == 1


def test_pre_instrument_attaches_when_another_configurator_won(
    running: AutoRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a foreign configurator, the hook attaches to the global SDK provider."""
    provider = make_provider()
    monkeypatch.setattr(autorun, "global_sdk_provider", lambda: provider)
    monkeypatch.setattr(autorun, "active_distros", list)
    monkeypatch.setattr(AutoRun, "flush_on_sigterm", lambda self: None)
    running.distro_configured = True
    distro.pre_instrument()
    assert running.provider is provider
    assert running.environ[SANITIZE_FIELDS]


def test_pre_instrument_without_an_sdk_provider_logs_one_error(
    running: AutoRun, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A non-SDK global provider cannot take the processor: one ERROR, nothing raised."""
    monkeypatch.setattr(autorun, "global_sdk_provider", lambda: None)
    with caplog.at_level(logging.WARNING, logger="beacon_otel"):
        distro.pre_instrument()
    assert running.provider is None
    assert [r.levelname for r in caplog.records] == ["ERROR"]


def test_pre_instrument_never_raises(running: AutoRun, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unexpected failure in the hook is logged: start-up carries on."""

    def explode() -> None:
        raise RuntimeError("unexpected")

    monkeypatch.setattr(autorun, "global_sdk_provider", explode)
    distro.pre_instrument()


def test_pre_instrument_routes_hooks_through_a_foreign_distro(
    running: AutoRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When another distro won, its load_instrumentor is wrapped to pass Beacon's hooks."""
    running.environ["BEACON_SERVER_SPANS"] = "stock"

    class OtherDistro(BaseDistro):
        def _configure(self, **kwargs: Any) -> None:
            pass

    other = OtherDistro()
    monkeypatch.setattr(autorun, "global_sdk_provider", make_provider)
    monkeypatch.setattr(autorun, "active_distros", lambda: [other])
    monkeypatch.setattr(AutoRun, "flush_on_sigterm", lambda self: None)
    distro.pre_instrument()
    running.route_hooks_through(other)  # a second time changes nothing
    entry_point = FakeEntryPoint("flask")
    other.load_instrumentor(entry_point, skip_dep_check=True)
    assert set(entry_point.received) == {"request_hook", "skip_dep_check"}


def test_no_reachable_distro_is_one_warning(
    running: AutoRun, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """If no foreign distro instance can be found, one WARNING says what is lost and the fix."""
    monkeypatch.setattr(autorun, "active_distros", list)
    with caplog.at_level(logging.WARNING, logger="beacon_otel"):
        running.route_hooks_through_active_distros()
    assert len(caplog.records) == 1
    assert "OTEL_PYTHON_DISTRO=beacon_otel" in caplog.records[0].getMessage()


def test_active_distros_finds_instantiated_distros() -> None:
    """Distros are per-class singletons: an instantiated one is found by its class."""

    class FoundDistro(BaseDistro):
        def _configure(self, **kwargs: Any) -> None:
            pass

    instance = FoundDistro()
    assert instance in autorun.active_distros()


# -- instrumentor hooks ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "keys"),
    [
        ("fastapi", {"server_request_hook", "exclude_spans"}),
        ("starlette", {"server_request_hook"}),
        ("flask", {"request_hook"}),
        ("django", {"request_hook", "response_hook"}),  # the response: streamed bodies
    ],
)
def test_distro_gives_frameworks_their_hooks(
    running: AutoRun, name: str, keys: set[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """BeaconDistro.load_instrumentor passes the framework's consumer hooks (stock instrumentation)."""
    monkeypatch.setitem(sys.modules, "fastapi.telemetry", None)  # a FastAPI without its own
    running.environ["BEACON_SERVER_SPANS"] = "stock"
    entry_point = FakeEntryPoint(name)
    distro.BeaconDistro().load_instrumentor(entry_point, skip_dep_check=True)
    assert set(entry_point.received) == keys | {"skip_dep_check"}


def test_asgi_internal_spans_are_kept_for_a_trace_exporter(
    running: AutoRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    """send/receive spans are left out only when no trace exporter would see them."""
    monkeypatch.setitem(sys.modules, "fastapi.telemetry", None)  # a FastAPI without its own
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    entry_point = FakeEntryPoint("fastapi")
    distro.BeaconDistro().load_instrumentor(entry_point)
    assert entry_point.received["exclude_spans"] == ["receive", "send"]
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    entry_point = FakeEntryPoint("fastapi")
    distro.BeaconDistro().load_instrumentor(entry_point)
    assert "exclude_spans" not in entry_point.received
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    entry_point = FakeEntryPoint("fastapi")
    distro.BeaconDistro().load_instrumentor(entry_point, exclude_spans=["send"])
    assert entry_point.received["exclude_spans"] == ["send"]  # the user's choice wins


@requires("fastapi", "0.142")  # FastAPI's native telemetry
def test_fastapi_telemetry_serves_beacon_when_nobody_exports_traces(
    running: AutoRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With FastAPI's own telemetry and no trace exporter, the contrib FastAPI instrumentor stays
    out (its cost grows with the number of routes); with an exporter it is loaded as asked."""
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    entry_point = FakeEntryPoint("fastapi")
    distro.BeaconDistro().load_instrumentor(entry_point, skip_dep_check=True)
    assert entry_point.received == {}
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    entry_point = FakeEntryPoint("fastapi")
    distro.BeaconDistro().load_instrumentor(entry_point, skip_dep_check=True)
    assert set(entry_point.received) == {"server_request_hook", "skip_dep_check"}


def test_other_instrumentors_get_their_kwargs_unchanged(running: AutoRun) -> None:
    """Non-framework instrumentors (requests, sqlite3, ...) get exactly what they were given."""
    entry_point = FakeEntryPoint("requests")
    distro.BeaconDistro().load_instrumentor(entry_point, skip_dep_check=True)
    assert entry_point.received == {"skip_dep_check": True}


def test_user_hooks_are_composed_and_failsafe(running: AutoRun) -> None:
    """A hook the caller passes still runs after Beacon's, and one that raises cannot break it."""
    calls: list[str] = []

    def theirs(span: Any, scope: Any) -> None:
        calls.append("theirs")
        raise ValueError("user bug")

    kwargs = running.instrumentor_kwargs("asgi", {"server_request_hook": theirs})
    provider = make_provider()
    span = provider.get_tracer("t").start_span("GET", kind=SpanKind.SERVER)
    kwargs["server_request_hook"](span, {"type": "http", "headers": []})
    assert calls == ["theirs"]


def test_hooks_are_not_added_when_beacon_is_off() -> None:
    """With Beacon off, instrumentors get exactly the kwargs they were given."""
    kwargs = {"skip_dep_check": True}
    assert AutoRun({"BEACON_ENABLED": "false"}).instrumentor_kwargs("flask", kwargs) is kwargs


def test_distro_defaults_to_no_exporter(running: AutoRun, monkeypatch: pytest.MonkeyPatch) -> None:
    """With nothing set, no exporter is required; a user's choice is kept."""
    for variable in ("OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER", "OTEL_LOGS_EXPORTER"):
        monkeypatch.setenv(variable, "placeholder")
        monkeypatch.delenv(variable)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    distro.BeaconDistro().configure()
    assert os.environ["OTEL_TRACES_EXPORTER"] == "otlp"
    assert os.environ["OTEL_METRICS_EXPORTER"] == os.environ["OTEL_LOGS_EXPORTER"] == "none"
    assert running.distro_configured


# -- SIGTERM -----------------------------------------------------------------------------


def test_autorun_registers_its_processor_for_the_exit_flush(running: AutoRun) -> None:
    """Auto-run hands its processor and provider to beacon_otel.setup.exits, which SIGTERM delivers."""
    previous = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        provider = make_provider()
        running.attach(provider)
        running.flush_on_sigterm()
        assert getattr(signal.getsignal(signal.SIGTERM), "_beacon_otel", False)
        assert any(ref() is running.processor for ref, _ in exits._registered)
    finally:
        signal.signal(signal.SIGTERM, previous)
        exits._registered.clear()


# -- manual configure() ------------------------------------------------------------------


def test_configure_attaches_to_the_given_provider() -> None:
    """configure() adds one processor to the provider it is given and leaves its sampler alone."""
    provider = make_provider(ALWAYS_OFF)
    processor = distro.configure(BeaconConfig(dry_run=True), tracer_provider=provider)
    assert provider.sampler is ALWAYS_OFF
    serve_one(provider, status=201)
    processor.force_flush()
    assert processor.dry_run_events() == []  # ALWAYS_OFF without BeaconSampler: nothing seen


def test_configure_from_the_environment_names_misspelt_settings(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """configure() reading BEACON_* warns once about a variable no setting reads."""
    monkeypatch.setenv("BEACON_DRY_RUN", "true")
    monkeypatch.setenv("BEACON_BATCH_SIZ", "10")
    provider = make_provider(ALWAYS_OFF)
    with caplog.at_level(logging.WARNING, logger="beacon_otel"):
        processor = distro.configure(tracer_provider=provider)
    try:
        (record,) = [r for r in caplog.records if "unknown settings" in r.getMessage()]
        assert "BEACON_BATCH_SIZ (did you mean BEACON_BATCH_SIZE?)" in record.getMessage()
        assert processor.config.batch_size == 100
    finally:
        provider.shutdown()


def test_configure_under_autorun_does_not_count_twice(
    running: AutoRun, caplog: pytest.LogCaptureFixture
) -> None:
    """Under auto-run, configure() on the same provider returns the running processor."""
    provider = make_provider()
    running.attach(provider)
    with caplog.at_level(logging.WARNING, logger="beacon_otel"):
        processor = distro.configure(BeaconConfig(dry_run=True), tracer_provider=provider)
    assert processor is running.processor
    assert any("already running under opentelemetry-instrument" in r.getMessage() for r in caplog.records)
    serve_one(provider)
    processor.force_flush()
    assert len(processor.dry_run_events()) == 1


class FakeGlobals:
    """Stands in for the global tracer provider slot, so no test sets the real one."""

    def __init__(self, current: object) -> None:
        self.current = current

    def get(self) -> object:
        return self.current

    def set(self, provider: object) -> None:
        if isinstance(self.current, ProxyTracerProvider):
            self.current = provider


def test_global_provider_is_created_with_the_sampler_wrapped(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no provider installed, one is installed whose sampler counts sampled-out requests."""
    slot = FakeGlobals(ProxyTracerProvider())
    monkeypatch.setattr(autorun.trace, "get_tracer_provider", slot.get)
    monkeypatch.setattr(autorun.trace, "set_tracer_provider", slot.set)
    provider = autorun.global_sdk_provider()
    assert provider is slot.current
    assert isinstance(provider, TracerProvider)
    assert isinstance(provider.sampler, BeaconSampler)
    provider.shutdown()


def test_configure_refuses_a_foreign_global_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    """configure() without a provider says what to do when the global one is not the SDK's."""
    slot = FakeGlobals(NoOpTracerProvider())
    monkeypatch.setattr(autorun.trace, "get_tracer_provider", slot.get)
    monkeypatch.setattr(autorun.trace, "set_tracer_provider", slot.set)
    with pytest.raises(RuntimeError, match="pass tracer_provider= to configure"):
        distro.configure(BeaconConfig(dry_run=True))


def test_configured_leaves_a_foreign_provider_to_pre_instrument(
    running: AutoRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the configurator, a non-SDK global provider is not attached to (nor raised on)."""
    monkeypatch.setattr(autorun.trace, "get_tracer_provider", NoOpTracerProvider)
    running.configured()
    assert running.provider is None


def test_sigterm_handler_only_from_the_main_thread(running: AutoRun) -> None:
    """Signal handlers can only be installed from the main thread: elsewhere it is skipped."""
    previous = signal.getsignal(signal.SIGTERM)
    errors: list[BaseException] = []

    def install() -> None:
        try:
            running.flush_on_sigterm()
        except BaseException as exc:  # pragma: no cover - the failure this test guards against
            errors.append(exc)

    thread = threading.Thread(target=install)
    thread.start()
    thread.join(5)
    assert errors == []
    assert signal.getsignal(signal.SIGTERM) == previous


def test_meters_nobody_reads_are_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """No metrics exporter: the SDK's meters are disabled, so requests record nothing for nobody."""
    from opentelemetry.sdk.metrics._internal import _disable_meter_configurator

    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    assert AutoRun(dict(DRY_RUN)).configurator_kwargs({})["meter_configurator"] is _disable_meter_configurator
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "console")
    assert "meter_configurator" not in AutoRun(dict(DRY_RUN)).configurator_kwargs({})


# -- lean span sources ---------------------------------------------------------------------


@pytest.fixture
def lean_source(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """A lean span source registered for the "flask" instrumentor; lists the registries it got."""
    installed: list[Any] = []
    monkeypatch.setitem(autorun.LEAN_SOURCES, "flask", installed.append)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    monkeypatch.delenv("OTEL_CONFIG_FILE", raising=False)
    return installed


def test_a_lean_source_replaces_the_instrumentor_when_beacon_reads_alone(
    running: AutoRun, lean_source: list[Any]
) -> None:
    """No trace or metrics exporter: the lean source is installed with Beacon's request registry and
    the instrumentor is not loaded."""
    entry_point = FakeEntryPoint("flask")
    distro.BeaconDistro().load_instrumentor(entry_point, skip_dep_check=True)
    assert entry_point.received == {}
    processor = running.processor
    assert processor is not None
    assert lean_source == [processor.requests]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("OTEL_TRACES_EXPORTER", "otlp"),
        ("OTEL_TRACES_EXPORTER", "none,console"),
        ("OTEL_METRICS_EXPORTER", "otlp"),
        ("OTEL_CONFIG_FILE", "/etc/otel.yaml"),
        ("BEACON_SERVER_SPANS", "stock"),
        ("BEACON_SERVER_SPANS", " Stock "),
        ("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST", "x-tenant"),
        ("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE", "content-type"),
    ],
)
def test_the_instrumentor_stays_where_others_read_the_spans_or_the_user_says_so(
    running: AutoRun, lean_source: list[Any], monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    """A trace or metrics exporter (or an SDK config file, which may name one), header capture
    (only the instrumentation does it), or BEACON_SERVER_SPANS=stock: the instrumentor is loaded
    with Beacon's hooks, as before."""
    monkeypatch.setenv(variable, value)
    running.environ[variable] = value
    entry_point = FakeEntryPoint("flask")
    distro.BeaconDistro().load_instrumentor(entry_point, skip_dep_check=True)
    assert set(entry_point.received) == {"request_hook", "skip_dep_check"}
    assert lean_source == []


def test_the_instrumentor_stays_when_given_options(running: AutoRun, lean_source: list[Any]) -> None:
    """Options for the instrumentor (a hook, excluded URLs another distro passes) are its to honour."""
    entry_point = FakeEntryPoint("flask")
    distro.BeaconDistro().load_instrumentor(entry_point, excluded_urls="health")
    assert set(entry_point.received) == {"request_hook", "excluded_urls"}
    assert lean_source == []


def test_a_lean_source_that_fails_to_install_leaves_the_instrumentor(
    running: AutoRun, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Installing the lean source raised: one ERROR, and the instrumentor is loaded as usual."""

    def broken(registry: Any) -> None:
        raise RuntimeError("no such framework")

    monkeypatch.setitem(autorun.LEAN_SOURCES, "flask", broken)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    entry_point = FakeEntryPoint("flask")
    with caplog.at_level(logging.ERROR, logger="beacon_otel"):
        distro.BeaconDistro().load_instrumentor(entry_point, skip_dep_check=True)
    assert set(entry_point.received) == {"request_hook", "skip_dep_check"}
    assert [record.getMessage() for record in caplog.records] == [
        "beacon-otel: installing beacon-otel's flask span source failed; the app runs on without it"
    ]


def test_no_lean_source_when_beacon_is_off(lean_source: list[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """With Beacon off, the instrumentor is loaded exactly as without beacon-otel."""
    monkeypatch.setattr(autorun, "AUTORUN", AutoRun({"BEACON_ENABLED": "false"}))
    entry_point = FakeEntryPoint("flask")
    distro.BeaconDistro().load_instrumentor(entry_point, skip_dep_check=True)
    assert entry_point.received == {"skip_dep_check": True}
    assert lean_source == []


def test_a_foreign_distro_installs_the_lean_source_too(
    running: AutoRun, lean_source: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """When another distro won start-up, its wrapped load_instrumentor chooses the same way."""

    class OtherDistro(BaseDistro):
        def _configure(self, **kwargs: Any) -> None:
            pass

    other = OtherDistro()
    running.route_hooks_through(other)
    entry_point = FakeEntryPoint("flask")
    other.load_instrumentor(entry_point, skip_dep_check=True)
    assert entry_point.received == {}
    assert len(lean_source) == 1


def test_a_bad_server_spans_value_turns_beacon_off_naming_it(caplog: pytest.LogCaptureFixture) -> None:
    """BEACON_SERVER_SPANS takes auto or stock; anything else is one ERROR naming it, Beacon off."""
    with caplog.at_level(logging.WARNING, logger="beacon_otel"):
        assert AutoRun({**DRY_RUN, "BEACON_SERVER_SPANS": "lean"}).processor is None
    assert [record.getMessage() for record in caplog.records] == [
        "beacon-otel: Beacon analytics are off: Expected server_spans (BEACON_SERVER_SPANS) to be one of "
        "auto, stock, got 'lean'"
    ]
