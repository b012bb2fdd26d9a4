"""The dev ingest under load: how long ingest POSTs take with a large store and dashboards open.

Fills a SQLite file with ``--events`` events (as earlier runs leave them in the default --db),
starts ``beacon-otel dev-ingest`` on it in its own process, times the first summary (the one
that reads every stored event), then keeps ``--dashboards`` pollers asking for /v1/summary and
/v1/stats every 2 s (as open dashboards do) while an app POSTs 100-event batches 5 times a
second for ``--seconds``. Prints the latencies of both. Not part of ``make bench``:

    .venv/bin/python -m bench.scenarios.dev_ingest_load --events 1000000 --dashboards 3 --seconds 30
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests

from beacon_otel.devingest.store import EventStore
from bench.harness.services import Service

HEADERS = {"Authorization": "Bearer bench", "Content-Type": "application/json"}
POLL_S = 2.0  # the dashboard's own interval


def event(i: int) -> dict[str, Any]:
    """A varied event: 20 routes, 4 statuses, 50 consumers, a second apart per 100 events."""
    second = 1_780_000_000 + i // 100
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)) + f".{i % 1000:03d}+00:00"
    return {
        "ts": stamp,
        "method": "GET",
        "route": f"/items/{i % 20}/{{id}}",
        "path": f"/items/{i % 20}/{i}",
        "status": (200, 200, 404, 500)[i % 4],
        "duration_ms": (i * 7) % 900,
        "consumer": f"consumer-{i % 50}",
        "error": "HTTP 500" if i % 4 == 3 else None,
    }


def fill(path: Path, count: int) -> None:
    store = EventStore(str(path))
    try:
        for start in range(0, count, 10_000):
            batch = [event(i) for i in range(start, min(start + 10_000, count))]
            store.store_batch(batch, None, "2026-06-03T12:00:00.000+00:00")
    finally:
        store.close()


def figures(seconds: list[float]) -> str:
    if not seconds:
        return "none"
    ordered = sorted(seconds)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return (
        f"n={len(ordered)} p50={statistics.median(ordered) * 1000:.0f} ms "
        f"p95={p95 * 1000:.0f} ms max={ordered[-1] * 1000:.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--dashboards", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "bench.sqlite3"
        started = time.perf_counter()
        fill(db, args.events)
        print(f"filled {args.events} events in {time.perf_counter() - started:.1f} s")
        service = Service(["-m", "beacon_otel.cli", "dev-ingest", "--port", "0", "--db", str(db), "--quiet"])
        try:
            first_summary(service.base_url, args.events)
            run(service.base_url, args)
        finally:
            service.stop()


def first_summary(base_url: str, stored: int) -> None:
    """Time the first summary, which reads every stored event, and POSTs sent meanwhile."""
    done = threading.Event()
    posts: list[float] = []
    poster = threading.Thread(target=post_until, args=(base_url, done, posts, stored + 10_000_000))
    poster.start()
    started = time.perf_counter()
    try:
        requests.get(base_url + "/v1/summary", timeout=600).raise_for_status()
    finally:
        done.set()
        poster.join()
    print(f"first summary (reads every stored event): {time.perf_counter() - started:.2f} s")
    print(f"100-event POSTs meanwhile: {figures(posts)}")


def post_until(base_url: str, stop: threading.Event, posts: list[float], first_id: int) -> None:
    """POST a 100-event batch every 0.2 s (an app at 500 requests/s) until ``stop``."""
    with requests.Session() as session:
        while not stop.is_set():
            body = json.dumps({"events": [event(i) for i in range(first_id, first_id + 100)]})
            first_id += 100
            started = time.perf_counter()
            session.post(base_url + "/v1/ingest", data=body, headers=HEADERS, timeout=600).raise_for_status()
            posts.append(time.perf_counter() - started)
            stop.wait(max(0.0, 0.2 - posts[-1]))


def run(base_url: str, args: argparse.Namespace) -> None:
    """Dashboards polling while an app POSTs, for ``args.seconds``."""
    stop = threading.Event()
    polls: list[float] = []

    def dashboard() -> None:
        with requests.Session() as session:
            while not stop.is_set():
                started = time.perf_counter()
                session.get(base_url + "/v1/summary", timeout=600).raise_for_status()
                session.get(base_url + "/v1/stats", timeout=600).raise_for_status()
                polls.append(time.perf_counter() - started)
                stop.wait(POLL_S)

    pollers = [threading.Thread(target=dashboard) for _ in range(args.dashboards)]
    for poller in pollers:
        poller.start()
    posts: list[float] = []
    timer = threading.Timer(args.seconds, stop.set)
    timer.start()
    post_until(base_url, stop, posts, args.events + 20_000_000)
    for poller in pollers:
        poller.join()
    print(f"{args.dashboards} dashboards, summary + stats poll: {figures(polls)}")
    print(f"100-event POSTs over {args.seconds:.0f} s: {figures(posts)}")


if __name__ == "__main__":
    main()
