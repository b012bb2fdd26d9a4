"""The Pyramid app set up by hand, as docs/frameworks.md says: served without opentelemetry-instrument."""

from __future__ import annotations

from typing import Any

from opentelemetry.instrumentation.pyramid import PyramidInstrumentor
from pyramid_app import build_app

import beacon_otel
from beacon_otel.frameworks import pyramid as pyramid_support

beacon = beacon_otel.configure()  # BEACON_* settings; OpenTelemetry's Pyramid spans use the global provider


def instrument(config: Any) -> None:
    PyramidInstrumentor().instrument_config(config)
    pyramid_support.instrument_config(config, **beacon.hooks("pyramid"))


app = build_app(instrument)
