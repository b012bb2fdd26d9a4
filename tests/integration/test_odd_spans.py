"""Span times from custom instrumentations: floats, seconds, far future, over a real dev ingest.

OpenTelemetry's API takes any ``start_time``/``end_time`` it is given. Each test ends SERVER spans
on a processor of its own that delivers to the strict dev ingest over loopback; every span is
either stored or counted, never refused by the ingest or lost without a counter.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind

from beacon_otel import BeaconConfig, BeaconSpanProcessor
from beacon_otel.devingest import DevIngest

pytestmark = pytest.mark.integration

SPANS = 100


@pytest.fixture
def ingest() -> Iterator[DevIngest]:
    with DevIngest(ingest_key="bk_odd") as server:
        yield server


def processor_for(ingest: DevIngest, tmp_path: object) -> tuple[BeaconSpanProcessor, TracerProvider]:
    processor = BeaconSpanProcessor(
        BeaconConfig(
            ingest_key="bk_odd",
            ingest_url=ingest.base_url,
            batch_size=SPANS,
            flush_interval=60,
            storage_path=str(tmp_path),
        )
    )
    provider = TracerProvider()
    provider.add_span_processor(processor)
    return processor, provider


ATTRIBUTES = {"http.method": "GET", "http.route": "/odd/{n}", "http.status_code": 200}


def test_float_start_times_are_stored_with_integer_durations(ingest: DevIngest, tmp_path: object) -> None:
    """``start_time=(time.time() - 0.5) * 1e9`` (a float): every event stored, ``duration_ms`` about 500."""
    processor, provider = processor_for(ingest, tmp_path)
    tracer = provider.get_tracer("custom")
    for n in range(SPANS):
        span = tracer.start_span(
            "GET /odd/{n}",
            kind=SpanKind.SERVER,
            attributes={**ATTRIBUTES, "http.target": f"/odd/{n}"},
            start_time=(time.time() - 0.5) * 1e9,  # type: ignore[arg-type]  # what users write
        )
        span.end()
    assert processor.force_flush(30_000)
    events = ingest.wait_for_events(SPANS)
    assert len(events) == SPANS
    assert all(type(e["duration_ms"]) is int and 400 <= e["duration_ms"] < 60_000 for e in events)
    assert ingest.stats()["batches_rejected"] == 0
    provider.shutdown()


def test_odd_end_times_are_stored_or_counted_never_lost(ingest: DevIngest, tmp_path: object) -> None:
    """Float, far-future and NaN end times: 100 spans, each stored or counted ``unmappable_invalid_time``."""
    processor, provider = processor_for(ingest, tmp_path)
    tracer = provider.get_tracer("custom")
    odd_ends = [None, time.time(), float(time.time_ns()), 10**30, math.nan]  # None: the SDK's own
    for n in range(SPANS):
        span = tracer.start_span(
            "GET /odd/{n}", kind=SpanKind.SERVER, attributes={**ATTRIBUTES, "http.target": f"/odd/{n}"}
        )
        span.end(end_time=odd_ends[n % len(odd_ends)])  # type: ignore[arg-type]
    assert processor.force_flush(30_000)
    invalid = sum(1 for n in range(SPANS) if n % len(odd_ends) in (3, 4))
    events = ingest.wait_for_events(SPANS - invalid)
    dropped = processor.stats.snapshot()["dropped"]
    assert len(events) == SPANS - invalid == 60
    assert dropped == {"unmappable_invalid_time": invalid}
    assert ingest.stats()["batches_rejected"] == 0
    provider.shutdown()
