"""The example service set up by hand on your own TracerProvider, beside any other exporter.

BEACON_INGEST_KEY=... uvicorn manual_setup:app
"""

from __future__ import annotations

import os

from opentelemetry import trace
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from shop_app import app

import beacon_otel

provider = TracerProvider()
if os.environ.get("SHOP_CONSOLE_SPANS"):
    # Any other exporter keeps working as before; Beacon is one more processor beside it.
    provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
# Config from BEACON_* variables. configure() also delivers what is buffered when the server
# stops (uvicorn ends with the signal it received, so exit handlers never run): no lifespan code.
beacon = beacon_otel.configure(tracer_provider=provider)
trace.set_tracer_provider(provider)

# The one line that gives Beacon the consumer of each request (X-API-Key, Authorization, ...).
FastAPIInstrumentor.instrument_app(app, tracer_provider=provider, **beacon.hooks("fastapi"))
