"""The auto-run Flask app set up by hand: the README's lines, nothing server-specific."""

from __future__ import annotations

from flask_app import app
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.sdk.trace import TracerProvider

import beacon_otel

provider = TracerProvider()
beacon = beacon_otel.configure(tracer_provider=provider)
FlaskInstrumentor().instrument_app(app, tracer_provider=provider, **beacon.hooks("flask"))

__all__ = ["app"]
