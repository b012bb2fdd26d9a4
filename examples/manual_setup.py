"""The example service set up by hand on your own TracerProvider, beside any other exporter.

BEACON_INGEST_KEY=... uvicorn manual_setup:app
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from shop_app import app

from beacon_otel import BeaconConfig, BeaconSpanProcessor

provider = TracerProvider()
if os.environ.get("SHOP_CONSOLE_SPANS"):
    # Any other exporter keeps working as before; Beacon is one more processor beside it.
    provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
beacon = BeaconSpanProcessor(BeaconConfig.from_env())
provider.add_span_processor(beacon)
trace.set_tracer_provider(provider)

# The one line that gives Beacon the consumer of each request (X-API-Key, Authorization, ...).
FastAPIInstrumentor.instrument_app(app, tracer_provider=provider, **beacon.hooks("fastapi"))

# uvicorn ends with the signal it received, so atexit handlers never run: flush when the
# app's lifespan ends instead, after the last request has been served.
_app_lifespan = app.router.lifespan_context


@asynccontextmanager
async def lifespan_then_flush(app: Any) -> AsyncIterator[Any]:
    async with _app_lifespan(app) as state:
        yield state
    provider.shutdown()


app.router.lifespan_context = lifespan_then_flush
