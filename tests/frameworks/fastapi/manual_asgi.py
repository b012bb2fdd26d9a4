"""The auto-run FastAPI app set up by hand: the README's lines, nothing server-specific.

``configure()`` is the one Beacon line: it also delivers what is buffered when the server
stops (SIGTERM under uvicorn included), so no lifespan code is needed.
"""

from __future__ import annotations

from fastapi_app import app
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.trace import TracerProvider

import beacon_otel

provider = TracerProvider()
beacon = beacon_otel.configure(tracer_provider=provider)
FastAPIInstrumentor.instrument_app(app, tracer_provider=provider, **beacon.hooks("fastapi"))

__all__ = ["app"]
