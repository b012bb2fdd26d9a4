"""A process with Beacon set up from its BEACON_* environment, for the spool tests.

``python spool_client.py write URL KEY BATCHES EVENTS CLOCK_OFFSET_S``: spool ``BATCHES`` batches of
``EVENTS`` contract-valid events for (URL, KEY) under ``BEACON_STORAGE_PATH``, with a wall clock
``CLOCK_OFFSET_S`` seconds off (negative: behind), as a process would during an outage.

``python spool_client.py serve SPANS``: a processor from the environment ends ``SPANS`` SERVER spans
(paths ``/spool/<n>``), flushes, waits up to 60 s for its spool to empty, shuts down, and prints its
counters as JSON on the last line.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from beacon_otel.contract.batch import Batch
from beacon_otel.spool.store import Spool, destination_fingerprint


def write(url: str, key: str, batches: int, events: int, offset: float) -> None:
    spool = Spool(
        Path(os.environ["BEACON_STORAGE_PATH"]),
        destination=destination_fingerprint(url, key),
        max_bytes=1 << 30,
        clock=lambda: time.time() + offset,
    )
    ts = time.strftime("%Y-%m-%dT%H:%M:%S.000+00:00", time.gmtime(time.time() + offset))
    for b in range(batches):
        items = [
            {"ts": ts, "method": "GET", "route": "/spooled/{n}", "path": f"/spooled/{b * events + n}",
             "status": 200, "duration_ms": 1, "consumer": None, "error": None}
            for n in range(events)
        ]  # fmt: skip
        batch = Batch(items)
        assert spool.write(batch.body(), len(batch), batch.batch_id)


def serve(spans: int) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import SpanKind

    from beacon_otel import BeaconConfig, BeaconSpanProcessor

    processor = BeaconSpanProcessor(BeaconConfig.from_env(os.environ))
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("spool-client")
    for n in range(spans):
        attributes = {"http.method": "GET", "http.target": f"/spool/{n}", "http.status_code": 200}
        tracer.start_span("GET", kind=SpanKind.SERVER, attributes=attributes).end()
    processor.force_flush(30_000)
    deadline = time.monotonic() + 60
    while processor.spool is not None and processor.spool.pending() and time.monotonic() < deadline:
        time.sleep(0.1)
    processor.shutdown()
    stats = processor.stats.snapshot()
    if processor.spool is not None:
        stats["spool"] = {
            "pending": processor.spool.pending(),
            "quarantined": processor.spool.stats.quarantined,
        }
    print(json.dumps(stats))


if __name__ == "__main__":
    if sys.argv[1] == "write":
        write(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6]))
    else:
        serve(int(sys.argv[2]))
