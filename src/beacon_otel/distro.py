"""Setting beacon-otel up: ``configure()`` for manual setup."""

from __future__ import annotations

import logging

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from beacon_otel.config import BeaconConfig
from beacon_otel.processor import BeaconSpanProcessor

logger = logging.getLogger("beacon_otel")


def configure(
    config: BeaconConfig | None = None, *, tracer_provider: TracerProvider | None = None
) -> BeaconSpanProcessor:
    """Attach a ``BeaconSpanProcessor`` to ``tracer_provider`` (or the global SDK provider).

    ``config`` defaults to ``BeaconConfig.from_env()``, so a missing or bad ``BEACON_*``
    setting fails here, at startup, with a message naming it. Without a provider and with no
    SDK provider installed globally, one is created and installed.
    """
    config = BeaconConfig.from_env() if config is None else config
    provider = tracer_provider if tracer_provider is not None else _global_sdk_provider()
    processor = BeaconSpanProcessor(config)
    provider.add_span_processor(processor)
    return processor


def _global_sdk_provider() -> TracerProvider:
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        return provider
    provider = TracerProvider()
    trace.set_tracer_provider(provider)
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        raise RuntimeError(
            "beacon-otel needs an SDK TracerProvider, but another provider is installed "
            "globally: pass tracer_provider= to configure()"
        )
    return provider
