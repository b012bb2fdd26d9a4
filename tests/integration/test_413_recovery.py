"""One 413 does not shrink every later batch: the limit is learnt in bytes, over the strict dev ingest."""

from __future__ import annotations

from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind

from beacon_otel import BeaconConfig, BeaconSpanProcessor
from beacon_otel.devingest import DevIngest, Fault

pytestmark = pytest.mark.integration

EVENTS = 2_000


def test_after_one_413_on_two_events_2000_events_go_in_full_batches(tmp_path: Path) -> None:
    """A 413 on a 2-event batch, then 2,000 events: about 20 POSTs of 100, not 2,000 of one."""
    with DevIngest() as ingest:
        ingest.script([Fault(status=413)])
        processor = BeaconSpanProcessor(
            BeaconConfig(
                ingest_key="bk_413",
                ingest_url=ingest.base_url,
                batch_size=100,
                flush_interval=60,
                max_buffer_size=EVENTS + 10,
                storage_path=str(tmp_path / "spool"),
            )
        )
        provider = TracerProvider()
        provider.add_span_processor(processor)
        tracer = provider.get_tracer("413")

        def serve(first: int, count: int) -> None:
            for n in range(first, first + count):
                attributes = {"http.method": "GET", "http.target": f"/big/{n}", "http.status_code": 200}
                tracer.start_span("GET", kind=SpanKind.SERVER, attributes=attributes).end()

        serve(0, 2)
        assert processor.force_flush(30_000)
        assert ingest.stats()["batches_accepted"] == 2  # the 413's halves
        serve(2, EVENTS)
        assert processor.force_flush(60_000)
        stats = ingest.stats()
        provider.shutdown()
    assert stats["events_accepted"] == EVENTS + 2
    posts_after = stats["batches_accepted"] - 2
    print(f"\n413 RECOVERY: {EVENTS} events after one 413 took {posts_after} POSTs")
    assert posts_after <= 2 * (EVENTS // 100)  # a few small probes, then full batches again
