"""Every instruction count of a run, most important first, within a time budget.

Each count is a callgrind run of its own (``bench.harness.instructions``): importing the frameworks
and OpenTelemetry under callgrind costs a minute of CPU or more, so a run cannot count
everything on a loaded 2-core machine. The jobs run a few at a time (``parallel``) in priority order; a job
not started when the budget is spent is skipped and its figures show as "n/a" (the
report's *instruction counts* line lists what was skipped).

``python -m bench.harness.counts [BUDGET_SECONDS]`` counts and prints the figures as JSON.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench.harness import services
from bench.scenarios import flatness, overhead
from bench.scenarios import processor_alone as processor

OVERHEAD_REQUESTS_FACTOR = 10
"""The overhead app's counts take this many times the requests of the route cells."""

JOBS: tuple[tuple[str, ...], ...] = (
    # The request path at both ends of the route table, and the overhead app (cell "users").
    ("routes", "fastapi", "bare"),
    ("routes", "fastapi", "beacon"),
    ("routes", "flask", "bare"),
    ("routes", "flask", "beacon"),
    # Beside OTLP, with the same SDK defaults.
    ("overhead", "fastapi/otlp-autorun-same-defaults"),
    ("overhead", "fastapi/beacon+otlp"),
    ("overhead", "flask/otlp-autorun-same-defaults"),
    ("overhead", "flask/beacon+otlp"),
    # Beacon's own work, then against beaconhq.
    ("processor",),
    ("overhead", "fastapi/beaconhq"),
    ("overhead", "flask/beaconhq"),
    ("routes", "starlette", "bare"),
    ("routes", "starlette", "beacon"),
    ("routes", "django", "bare"),
    ("routes", "django", "beacon"),
    ("routes", "fastapi", "native"),
    ("overhead", "fastapi/otlp"),
    ("overhead", "flask/otlp"),
    # Django against beaconhq, and the instrumentation its lean span source stands in for.
    ("routes", "django", "beaconhq"),
    ("routes", "django", "beacon-stock"),
    # Flask's contrib instrumentation, which its lean span source stands in for with Beacon alone.
    ("overhead", "flask/beacon-stock"),
)


def run(n: int, budget_s: float, log: Callable[[str], None] = print, parallel: int = 2) -> dict[str, Any]:
    """Count the jobs in order, ``parallel`` at a time, starting none after ``budget_s`` seconds."""
    deadline = time.monotonic() + budget_s
    counted: dict[str, Any] = {
        "routes": {},
        "routes_allocator": {},
        "overhead": {},
        "processor": {},
        "skipped": [],
        "n": n,
    }
    lock = threading.Lock()
    with services.running(services.dev_ingest(), services.sink()) as (ingest, sink):

        def job(spec: tuple[str, ...]) -> None:
            name = "/".join(spec)
            if time.monotonic() > deadline:
                with lock:
                    counted["skipped"].append(name)
                return
            started = time.monotonic()
            figures = _count(spec, n, ingest.base_url, sink.base_url)
            with lock:
                _store(counted, spec, figures)
            log(f"  instructions: {name} ({time.monotonic() - started:.0f} s): {_short(figures)}")

        with ThreadPoolExecutor(parallel) as pool:
            for future in [pool.submit(job, spec) for spec in JOBS]:
                future.result()
    return counted


def _count(spec: tuple[str, ...], n: int, ingest: str, sink: str) -> Any:
    if spec[0] == "routes":
        return flatness.count(spec[1], spec[2], n, ingest, sink, hash_seed=None)
    if spec[0] == "overhead":
        # Ten times the requests: a few garbage collections and exporter wake-ups more or less
        # move a 20-request count of these 1.5-million-instruction requests by up to 15,000
        # per request, the size of the differences the beside-OTLP target is about.
        return overhead.count_one(spec[1], n * OVERHEAD_REQUESTS_FACTOR, ingest, sink)
    return processor.count_all(200)


def _store(counted: dict[str, Any], spec: tuple[str, ...], figures: Any) -> None:
    if spec[0] == "routes":
        key = f"{spec[1]}/{spec[2]}"
        # (all instructions, the allocator's own) per cell: see bench.scenarios.flatness for why both
        users = figures.pop("users", None)
        counted["routes"][key] = {cell: total for cell, (total, _) in figures.items()}
        counted["routes_allocator"][key] = {cell: allocator for cell, (_, allocator) in figures.items()}
        if users is not None:  # the overhead app, counted in the same process
            counted["overhead"][key] = users[0]
    elif spec[0] == "overhead":
        counted["overhead"][spec[1]] = figures
    else:
        counted["processor"] = figures


def _short(figures: Any) -> str:
    if isinstance(figures, dict):
        return ", ".join(f"{k} {v[0] if isinstance(v, tuple) else v:,.0f}" for k, v in figures.items())
    return f"{figures:,.0f}"


def main(argv: list[str]) -> None:
    budget = float(argv[0]) if argv else 3600.0
    n = int(argv[1]) if len(argv) > 1 else 30
    print(json.dumps(run(n, budget), indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
