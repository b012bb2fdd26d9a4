"""Beacon under ``opentelemetry-instrument``, whichever distro and configurator win.

Start-up runs ``distro.configure()``, then one configurator, then the
``opentelemetry_pre_instrument`` hooks, then every instrumentor through the winning distro's
``load_instrumentor``. When another distro is installed too (``opentelemetry-distro``),
entry-point order picks the winners (contrib#2144), so each of our entry points only moves
one process-wide ``AutoRun`` forward, and the pre-instrument hook, which runs whoever won,
finishes what the others could not: attach the processor, wrap the sampler, route the hooks.
What is read from the environment is :mod:`beacon_otel.setup.environment`'s, how the hooks reach
another distro's instrumentors :mod:`beacon_otel.setup.instrumentors`'.

Auto-run must never take the app down: every step is guarded, and a missing or bad setting
turns Beacon off with one log line while the app and the rest of OpenTelemetry run on.
"""

from __future__ import annotations

import logging
import os
from collections.abc import MutableMapping
from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.distro import BaseDistro  # type: ignore[attr-defined]
from opentelemetry.sdk.trace import TracerProvider

from beacon_otel.capture.processor import BeaconSpanProcessor
from beacon_otel.capture.sampling import BeaconSampler
from beacon_otel.common import guard
from beacon_otel.frameworks import fastapi as fastapi_support
from beacon_otel.frameworks.base import Hook
from beacon_otel.frameworks.table import FRAMEWORKS, LEAN_SOURCES
from beacon_otel.setup import environment, exits, instrumentors
from beacon_otel.setup.environment import sampler_from_env, warn_unseen_frameworks
from beacon_otel.setup.instrumentors import active_distros

logger = logging.getLogger("beacon_otel")


class AutoRun:
    """Beacon's part of one ``opentelemetry-instrument`` start-up; one per process."""

    def __init__(self, environ: MutableMapping[str, str] | None = None) -> None:
        self.environ = os.environ if environ is None else environ
        self.distro_configured = False
        """Set by Beacon's distro: its ``load_instrumentor`` gives the instrumentors our hooks."""
        self.provider: TracerProvider | None = None
        """The provider the processor is attached to, once it is."""
        self._decided = False
        self._processor: BeaconSpanProcessor | None = None
        self._kwargs_sampler: BeaconSampler | None = None

    @property
    def processor(self) -> BeaconSpanProcessor | None:
        """The processor, or ``None`` when Beacon is off; decided (and logged) once per process."""
        if not self._decided:
            self._decided = True
            config = environment.config_from(self.environ)
            self._processor = BeaconSpanProcessor(config) if config is not None else None
        return self._processor

    def processor_on(self, provider: object) -> BeaconSpanProcessor | None:
        """The auto-run processor if it is attached to ``provider``."""
        return self._processor if self.provider is not None and self.provider is provider else None

    def protect_credentials(self) -> None:
        """Make every HTTP instrumentation redact credential headers it is told to capture."""
        processor = self.processor
        if processor is not None:
            environment.protect_credentials(self.environ, processor.config.consumer_header)

    # -- the SDK configurator -----------------------------------------------------------

    def configurator_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The SDK configurator's kwargs with Beacon's processor first and the sampler wrapped."""
        processor = self.processor
        if processor is None or self.environ.get("OTEL_CONFIG_FILE"):
            # With a config file the SDK ignores kwargs (and says so): attach afterwards.
            return kwargs
        self.protect_credentials()
        sampler = kwargs.get("sampler") or sampler_from_env()
        self._kwargs_sampler = sampler if isinstance(sampler, BeaconSampler) else BeaconSampler(sampler)
        kwargs = {
            **kwargs,
            "span_processors": [processor, *(kwargs.get("span_processors") or ())],
            "sampler": self._kwargs_sampler,
        }
        meters_off = environment.meters_off(self.environ)
        if meters_off is not None:
            kwargs.setdefault("meter_configurator", meters_off)
        return kwargs

    def configured(self) -> None:
        """After the SDK configurator: note where the processor went, or attach it now."""
        if self.processor is None or self.provider is not None:
            return
        provider = trace.get_tracer_provider()
        if not isinstance(provider, TracerProvider):
            return  # left to pre_instrument, which says why if it cannot attach either
        if self._kwargs_sampler is not None and provider.sampler is self._kwargs_sampler:
            self.provider = provider  # built from our kwargs: the processor is on it
        else:
            self.attach(provider)

    def rescue(self, error: Exception) -> bool:
        """After the SDK configurator raised: keep Beacon running if it can; False to re-raise."""
        if self.processor is None:
            return False  # nothing of ours involved: fail exactly as the SDK alone would
        logger.error(
            "beacon-otel: the OpenTelemetry SDK configuration failed (%s: %s); Beacon analytics "
            "keep running, the other exporters are not set up",
            type(error).__name__,
            error,
        )
        self.configured()
        if self.provider is None:
            provider = global_sdk_provider()
            if provider is not None:
                self.attach(provider)
        return self.provider is not None

    # -- the pre-instrument hook ----------------------------------------------------------

    def pre_instrument(self) -> None:
        """Finish what the winning distro and configurator did not do for Beacon."""
        if self.processor is None:
            return
        self.protect_credentials()
        if self.provider is None:
            provider = global_sdk_provider()
            if provider is None:
                logger.error(
                    "beacon-otel: Beacon analytics are off: the global tracer provider is %s, "
                    "not the OpenTelemetry SDK's",
                    type(trace.get_tracer_provider()).__name__,
                )
                return
            self.attach(provider)
        if not self.distro_configured:
            self.route_hooks_through_active_distros()
        self.flush_on_sigterm()
        warn_unseen_frameworks()

    def flush_on_sigterm(self) -> None:
        """Deliver what is buffered however the process ends (``beacon_otel.setup.exits``)."""
        if self._processor is not None:
            exits.flush_at_exit(self._processor, self.provider)

    def attach(self, provider: TracerProvider) -> None:
        """Add the processor to ``provider`` and wrap its sampler, once."""
        processor = self.processor
        if processor is None or self.provider is provider:
            return
        if not isinstance(provider.sampler, BeaconSampler):
            # Tracers take the sampler when created; this runs before the instrumentors.
            provider.sampler = BeaconSampler(provider.sampler)
        provider.add_span_processor(processor)
        self.provider = provider

    # -- the instrumentors ----------------------------------------------------------------

    def route_hooks_through_active_distros(self) -> None:
        """Give the instrumentors Beacon's hooks through another distro's ``load_instrumentor``."""
        instrumentors.route_hooks_through_foreign(active_distros(), self)

    def route_hooks_through(self, distro: BaseDistro) -> None:
        """Wrap one distro instance's ``load_instrumentor`` so it passes Beacon's hooks."""
        instrumentors.route_hooks_through(distro, self)

    def served_without(self, name: str, kwargs: dict[str, Any]) -> bool:
        """Whether instrumentor ``name`` stays unloaded: something cheaper serves Beacon instead.

        FastAPI's own telemetry, or beacon-otel's lean span source for the framework
        (:data:`~beacon_otel.frameworks.table.LEAN_SOURCES`), installed here.
        """
        return self.native_telemetry_instead(name) or self.lean_source_instead(name, kwargs)

    def lean_source_instead(self, name: str, kwargs: dict[str, Any]) -> bool:
        """Install beacon-otel's lean span source for ``name`` if Beacon alone reads its spans.

        Only with Beacon on, ``BEACON_SERVER_SPANS=auto``, no trace or metrics exporter
        configured, no header capture asked of the instrumentations, and no argument for the
        instrumentor beyond ``skip_dep_check`` (hooks or options another distro passes are the
        instrumentation's to honour). If installing fails, the instrumentor is loaded as usual.
        """
        install = LEAN_SOURCES.get(name)
        processor = self.processor
        if install is None or processor is None or processor.config.server_spans == "stock":
            return False
        if not environment.beacon_reads_alone(self.environ) or environment.headers_captured(self.environ):
            return False
        if set(kwargs) - {"skip_dep_check"}:
            logger.debug("beacon-otel: the %s instrumentor was given options; it serves Beacon", name)
            return False
        installed = False
        with guard.startup_step(f"installing beacon-otel's {name} span source"):
            install(processor.requests)
            installed = True
        if installed:
            logger.debug("beacon-otel: beacon-otel's %s span source serves Beacon (no exporter)", name)
        return installed

    def native_telemetry_instead(self, name: str) -> bool:
        """Whether FastAPI's own telemetry (without its unexported operation spans) serves Beacon."""
        native = name == "fastapi" and self.processor is not None and environment.native_fastapi_telemetry()
        if native:
            fastapi_support.quiet_operation_spans()
            with guard.startup_step("sending FastAPI's last response message outside the request"):
                fastapi_support.send_last_message_outside()
        return native

    def instrumentor_kwargs(self, name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        """``kwargs`` for instrumentor ``name`` with Beacon's hooks composed before the user's."""
        processor = self.processor
        if processor is None or name not in FRAMEWORKS:
            return kwargs
        ours: dict[str, Hook] = {}
        with guard.startup_step(f"adding the consumer hooks to the {name} instrumentation"):
            ours = processor.hooks(name)
            if instrumentors.install_companion(name, ours):
                return kwargs  # the instrumentation takes no hooks: beacon-otel's tween or middleware does
        return instrumentors.with_hooks(name, kwargs, ours)


def global_sdk_provider() -> TracerProvider | None:
    """The global SDK provider, installing one (sampler wrapped) if none is set; else ``None``."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider):
        trace.set_tracer_provider(TracerProvider(sampler=BeaconSampler(sampler_from_env())))
        provider = trace.get_tracer_provider()
    return provider if isinstance(provider, TracerProvider) else None


AUTORUN = AutoRun()
"""This process's auto-run state, shared by the distro, configurator and pre-instrument hook."""
