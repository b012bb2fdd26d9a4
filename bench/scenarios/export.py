"""Export throughput: events delivered per second, and client CPU per 1,000 events.

A client process submits pre-built events to the processor's own delivery worker as fast as
it can, then flushes; the worker batches (``BEACON_BATCH_SIZE``, default 100), encodes and
POSTs them one request at a time over loopback, exactly as in production. The receiver runs
in another process, so its CPU is not counted; it is read from ``/proc`` and reported beside.

Two receivers: the strict dev ingest (validates every event, stores it in SQLite), and the
accept-anything sink, which shows what the client alone can do when the receiver is cheap.
With and without gzip (``BeaconConfig(compression=True)``).

The events are pre-built ``RequestEvent`` objects, as ``on_end`` hands them to the worker: the
request thread maps each finished span (``processor.event_for``, timed by ``bench.scenarios.processor_alone``),
so what is measured here is the delivery thread's whole work.
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import time
from typing import Any

from bench.harness import child, services

ROUTES = [
    ("GET", "/users/{user_id}"),
    ("GET", "/orders/{order_id}"),
    ("POST", "/orders"),
    ("GET", "/products"),
    ("GET", "/products/{sku}/reviews"),
    ("PUT", "/users/{user_id}/settings"),
    ("DELETE", "/sessions/{session_id}"),
    ("GET", "/search"),
]


def sample_events(n: int, seed: int = 7) -> list[Any]:
    """``n`` varied, contract-valid events: routes, paths, statuses, consumers, errors."""
    from beacon_otel.contract.event import RequestEvent

    rng = random.Random(seed)
    now = time.time_ns()
    consumers = [f"key_live_{i:04d}" for i in range(40)] + [f"hash_{i:012x}" for i in range(10)] + [None]
    events = []
    for i in range(n):
        method, route = ROUTES[i % len(ROUTES)]
        path = route.replace("{user_id}", str(rng.randrange(1, 10**6)))
        path = path.replace("{order_id}", str(rng.randrange(1, 10**7)))
        path = path.replace("{sku}", f"SKU-{rng.randrange(10**5):05d}").replace("{session_id}", f"{i:x}")
        status = rng.choices((200, 201, 204, 400, 404, 422, 500), weights=(70, 8, 4, 5, 7, 4, 2))[0]
        events.append(
            RequestEvent(
                end_time_ns=now - (n - i) * 1_000_000,
                method=method,
                route=route,
                path=path,
                status=status,
                duration_ms=int(rng.expovariate(1 / 40)),
                consumer=rng.choice(consumers),
                error="RuntimeError: upstream timed out" if status >= 500 else None,
            )
        )
    return events


def client(ingest_url: str, compression: bool, n: int, batch_size: int = 100) -> dict[str, Any]:
    """Deliver ``n`` events through a production-wired processor; wall and CPU seconds."""
    from beacon_otel import BeaconConfig, BeaconSpanProcessor

    config = BeaconConfig(
        ingest_key="bench-ingest-key",
        ingest_url=ingest_url,
        compression=compression,
        batch_size=batch_size,
        max_buffer_size=max(n, batch_size),  # nothing may be evicted: every event must arrive
    )
    processor = BeaconSpanProcessor(config)
    worker = processor._worker  # events are pre-built: only delivery is measured
    events = sample_events(n)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for event in events:
        worker.submit(event)
    submitted_cpu = time.process_time() - cpu0
    delivered = processor.force_flush(120_000)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    stats = processor.stats.snapshot()
    processor.shutdown()
    return {
        "wall": wall,
        "cpu": cpu,
        "submit_cpu": submitted_cpu,
        "flushed": delivered,
        "sent": stats["sent"],
    }


CONFIGS = [
    ("strict dev ingest", False, 100),
    ("strict dev ingest", True, 100),
    ("accept-anything sink", False, 100),
    ("accept-anything sink", True, 100),
    ("accept-anything sink", False, 500),
]
"""Receiver, gzip, batch size."""


def run(*, events: int, repeats: int, log=print) -> list[dict[str, Any]]:
    """Every configuration ``repeats`` times, interleaved; medians."""
    results: dict[int, list[dict[str, Any]]] = {i: [] for i in range(len(CONFIGS))}
    with services.running(services.dev_ingest(), services.sink()) as (ingest, sink):
        receivers = {"strict dev ingest": ingest, "accept-anything sink": sink}
        for repeat in range(repeats):
            for index, (name, compression, batch_size) in enumerate(CONFIGS):
                receiver = receivers[name]
                cpu_before = receiver.cpu_seconds()
                result = _client_process(receiver.base_url, compression, events, batch_size)
                result["receiver_cpu"] = receiver.cpu_seconds() - cpu_before
                results[index].append(result)
                log(
                    f"  export {repeat + 1}/{repeats}: {_label(name, compression, batch_size)}: "
                    f"{events / result['wall']:,.0f} events/s"
                )
        stored, received = ingest.get("/v1/stats"), sink.get("/")
    ingested = events * repeats * sum(1 for config in CONFIGS if config[0] == "strict dev ingest")
    sunk = events * repeats * sum(1 for config in CONFIGS if config[0] != "strict dev ingest")
    if stored["events_accepted"] != ingested or stored["batches_rejected"] or received["events"] != sunk:
        raise RuntimeError(f"events lost: ingest {stored}, sink {received}")
    summary = []
    for index, (name, compression, batch_size) in enumerate(CONFIGS):
        runs = results[index]
        summary.append(
            {
                "receiver": name,
                "gzip": compression,
                "batch_size": batch_size,
                "label": _label(name, compression, batch_size),
                "events": events,
                "events_per_s": statistics.median(events / r["wall"] for r in runs),
                "cpu_ms_per_1k": statistics.median(r["cpu"] / events * 1e6 for r in runs),
                "submit_cpu_ms_per_1k": statistics.median(r["submit_cpu"] / events * 1e6 for r in runs),
                "receiver_cpu_ms_per_1k": statistics.median(r["receiver_cpu"] / events * 1e6 for r in runs),
            }
        )
    return summary


def _label(receiver: str, compression: bool, batch_size: int) -> str:
    label = f"{receiver}, gzip {'on' if compression else 'off'}"
    return label + (f", batch_size {batch_size}" if batch_size != 100 else "")


def _client_process(url: str, compression: bool, n: int, batch_size: int) -> dict[str, Any]:
    mode = "gzip" if compression else "plain"
    result: dict[str, Any] = child.run_module("bench.scenarios.export", ["client", url, mode, str(n), str(batch_size)])
    return result


def main(argv: list[str]) -> None:
    if argv[:1] == ["client"]:
        print(json.dumps(client(argv[1], argv[2] == "gzip", int(argv[3]), int(argv[4]))))
        return
    for row in run(events=50_000, repeats=1):
        print(row)


if __name__ == "__main__":
    main(sys.argv[1:])
