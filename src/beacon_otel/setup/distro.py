"""Setting beacon-otel up: ``configure()`` by hand, or the ``opentelemetry-instrument`` entry points.

Zero-code: ``BEACON_INGEST_KEY=... opentelemetry-instrument uvicorn app:app``. The distro,
the configurator and the pre-instrument hook below are registered in pyproject.toml; the
machinery they share lives in ``beacon_otel.setup.autorun``.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from opentelemetry.environment_variables import (
    OTEL_LOGS_EXPORTER,
    OTEL_METRICS_EXPORTER,
    OTEL_TRACES_EXPORTER,
)
from opentelemetry.instrumentation.distro import BaseDistro  # type: ignore[attr-defined]
from opentelemetry.sdk._configuration import _OTelSDKConfigurator
from opentelemetry.sdk.trace import TracerProvider

from beacon_otel.capture.processor import BeaconSpanProcessor
from beacon_otel.common import guard
from beacon_otel.config.settings import BeaconConfig
from beacon_otel.frameworks import fastapi as fastapi_support
from beacon_otel.setup import autorun, environment, exits

logger = logging.getLogger("beacon_otel")


def configure(
    config: BeaconConfig | None = None, *, tracer_provider: TracerProvider | None = None
) -> BeaconSpanProcessor:
    """Attach a ``BeaconSpanProcessor`` to ``tracer_provider`` (or the global SDK provider).

    ``config`` defaults to ``BeaconConfig.from_env()``, so a missing or bad ``BEACON_*``
    setting fails here, at startup, with a message naming it. Without a provider and with no
    SDK provider installed globally, one is created with the sampler from
    ``OTEL_TRACES_SAMPLER`` wrapped in ``BeaconSampler`` and installed. A provider of your own
    keeps its sampler: wrap it in ``BeaconSampler`` to count sampled-out requests too.

    What is buffered when the process ends is delivered within ``shutdown_timeout`` (the rest
    spooled) on SIGTERM too, and under uvicorn, which ends without exit handlers: no lifespan
    code needed (``beacon_otel.setup.exits``).
    """
    if config is None:
        environment.warn_unknown_variables(os.environ)
        config = BeaconConfig.from_env()
    provider = tracer_provider if tracer_provider is not None else _global_sdk_provider()
    running = autorun.AUTORUN.processor_on(provider)
    if running is not None:
        # Under opentelemetry-instrument with BEACON_INGEST_KEY set, a second processor
        # would count every request twice.
        logger.warning(
            "beacon-otel: already running under opentelemetry-instrument (configured from "
            "BEACON_* variables); configure() returns that processor and ignores its arguments"
        )
        return running
    processor = BeaconSpanProcessor(config)
    provider.add_span_processor(processor)
    if "starlette" in sys.modules:
        # An app with FastAPI's own telemetry (telemetry={...}) passes through no hooks: its
        # last response message leaves the request's context from here, as under auto-run.
        with guard.contained("sending the FastAPI response's last message outside the request"):
            fastapi_support.send_last_message_outside()
    # What is buffered when the server stops goes out, under any server (docs/servers.md).
    exits.flush_at_exit(processor, provider)
    return processor


def _global_sdk_provider() -> TracerProvider:
    provider = autorun.global_sdk_provider()
    if provider is None:
        raise RuntimeError(
            "beacon-otel needs an SDK TracerProvider, but another provider is installed "
            "globally: pass tracer_provider= to configure()"
        )
    return provider


class BeaconDistro(BaseDistro):  # type: ignore[misc]
    """The ``beacon_otel`` distro: no exporter by default, consumer hooks for the frameworks."""

    _beacon_otel_distro = True  # instrumentors.DISTRO_MARKER

    def _configure(self, **kwargs: Any) -> None:
        autorun.AUTORUN.distro_configured = True
        # Beacon alone needs no exporter; opentelemetry-distro's default (otlp over gRPC)
        # fails the whole start-up when the gRPC exporter is not installed.
        for variable in (OTEL_TRACES_EXPORTER, OTEL_METRICS_EXPORTER, OTEL_LOGS_EXPORTER):
            os.environ.setdefault(variable, "none")
        with guard.startup_step("setting up Beacon"):
            autorun.AUTORUN.protect_credentials()

    def load_instrumentor(self, entry_point: Any, **kwargs: Any) -> None:
        """Instrument as usual, with Beacon's hooks composed with any the caller passes."""
        if autorun.AUTORUN.served_without(entry_point.name, kwargs):
            return
        kwargs = autorun.AUTORUN.instrumentor_kwargs(entry_point.name, kwargs)
        super().load_instrumentor(entry_point, **kwargs)


class BeaconConfigurator(_OTelSDKConfigurator):
    """The SDK's configurator with Beacon's processor and sampler added; exporters unchanged."""

    def _configure(self, **kwargs: Any) -> None:
        running = autorun.AUTORUN
        with guard.startup_step("setting up Beacon"):
            kwargs = running.configurator_kwargs(kwargs)
        try:
            super()._configure(**kwargs)  # type: ignore[no-untyped-call]
        except Exception as exc:
            rescued = False
            with guard.startup_step("setting up Beacon"):
                rescued = running.rescue(exc)
            if not rescued:
                raise
            return
        with guard.startup_step("setting up Beacon"):
            running.configured()


def pre_instrument() -> None:
    """The ``opentelemetry_pre_instrument`` hook: runs whichever distro and configurator won."""
    with guard.startup_step("setting up Beacon"):
        autorun.AUTORUN.pre_instrument()
