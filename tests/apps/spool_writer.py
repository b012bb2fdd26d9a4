"""A process that turns synthetic server spans into Beacon events, for the spool fault tests.

``write`` makes SERVER spans for ``/items/{n}`` (n counting up from ``--first``) at ``--rate`` per
second through a real ``BeaconSpanProcessor`` whose ingest is down, so that batches keep going to
the spool; run it for ``--duration`` seconds (then print the counters as JSON) or until killed.
The backoff schedule is compressed (``--backoff``), standing in for minutes of outage: the six
attempts before spooling take milliseconds, and each later wait lasts ``--backoff`` seconds.

``drain`` starts a processor on the same spool with the ingest up, sends no traffic, waits until
the spool directory holds no batch, and prints the counters as JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind

from beacon_otel import BeaconConfig, BeaconSpanProcessor
from beacon_otel.delivery import health as ingest_health


def counters(processor: BeaconSpanProcessor) -> dict[str, Any]:
    spool = processor.spool
    return {
        "delivery": processor.stats.snapshot(),
        "spool": dataclasses.asdict(spool.stats) if spool is not None else None,
        "buffered": processor.buffered(),
    }


def processor_for(args: argparse.Namespace) -> BeaconSpanProcessor:
    config = BeaconConfig(
        ingest_key="ingest-key",
        ingest_url=args.url,
        storage_path=Path(args.spool),
        batch_size=args.batch_size,
        max_buffer_size=args.max_buffer,
        flush_interval=0.2,
        timeout=2.0,
        shutdown_timeout=2.0,
    )
    return BeaconSpanProcessor(config)


def write(args: argparse.Namespace) -> int:
    later_wait = args.backoff

    def compressed_backoff(failures: int, **_: Any) -> float:
        return 0.001 if failures < ingest_health.GIVE_UP_AFTER else later_wait

    ingest_health.backoff_delay = compressed_backoff  # type: ignore[assignment]
    processor = processor_for(args)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("spool-writer")
    per_tick = max(1, round(args.rate / 100))
    started = time.monotonic()
    n = args.first
    tick = 0
    while args.duration <= 0 or time.monotonic() - started < args.duration:
        for _ in range(per_tick):
            attributes = {
                "http.method": "GET",
                "http.target": f"/items/{n}",
                "http.route": "/items/{n}",
                "http.status_code": 200,
            }
            with tracer.start_as_current_span("GET /items/{n}", kind=SpanKind.SERVER, attributes=attributes):
                pass
            n += 1
        tick += 1
        time.sleep(max(0.0, started + tick / 100 - time.monotonic()))  # pacing at 100 ticks a second
    print(json.dumps({"generated": n - args.first, **counters(processor)}), flush=True)
    return 0


def drain(args: argparse.Namespace) -> int:
    started = time.monotonic()
    processor = processor_for(args)  # a spool holding batches starts delivery on its own
    assert processor.spool is not None
    directory = processor.spool.directory  # this destination's subdirectory of the spool root
    deadline = started + args.duration
    # Batches the spool wrote, queued or leased: a foreign file that only looks alike stays there.
    ours = re.compile(r"beacon-spool-v2-\d{20}-\d+-\d+-[0-9a-f]{8}\.batch(\.lease-\d+-\d+)?")
    while any(ours.fullmatch(p.name) for p in directory.iterdir()):
        if time.monotonic() > deadline:
            print(json.dumps({"stalled": True, "left": sorted(p.name for p in directory.iterdir())}))
            return 1
        time.sleep(0.05)
    seconds = time.monotonic() - started
    processor.shutdown()  # joins the delivery thread: every counter is final
    print(json.dumps({"seconds": seconds, **counters(processor)}), flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["write", "drain"])
    parser.add_argument("--spool", required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--max-buffer", type=int, default=10_000)
    parser.add_argument("--backoff", type=float, default=0.001)
    parser.add_argument("--duration", type=float, default=0.0)
    args = parser.parse_args()
    return write(args) if args.mode == "write" else drain(args)


if __name__ == "__main__":
    sys.exit(main())
