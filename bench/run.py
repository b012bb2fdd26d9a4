"""Run every benchmark once: ``bench/results.json``, rendered into ``bench/RESULTS.md``.

``make bench`` runs this (``python -m bench.run``). ``--quick`` (or ``BENCH_QUICK=1``) runs fewer,
shorter rounds, a 15-second outage (60 s in a full run) and fewer instruction counts, to try the suite; its numbers
are noisier. ``--memory-seconds`` sets the length of the outage.
``BENCH_INSTRUCTIONS=0`` skips the callgrind counts (they need Debian's ``valgrind``).

The instruction counts (``bench.harness.counts``: callgrind, about 50 times slower than native, but
unaffected by the load) run beside the timed benchmarks from the start, within a time budget
(``BENCH_COUNT_BUDGET`` seconds in which a count may start: 1500, quick 240); the run waits for the counts started.
The real-server section (wrk, ``bench.scenarios.real_servers``) runs last, once the counts are done, since
it pins the server to one core and wrk to the other.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import os
import platform
import subprocess
import sys
import threading
import time
import timeit
from pathlib import Path
from typing import Any

from bench.harness import counts, instructions
from bench.report import render as report
from bench.scenarios import app_size as routes
from bench.scenarios import export, memory, overhead, real_servers, startup
from bench.scenarios import processor_alone as processor

PACKAGES = (
    "beacon-otel",
    "opentelemetry-sdk",
    "opentelemetry-instrumentation",
    "opentelemetry-exporter-otlp-proto-http",
    "fastapi",
    "starlette",
    "flask",
    "django",
    "uvicorn",
    "requests",
    "beaconhq",
)


class Settings:
    """How much of everything to run."""

    def __init__(self, quick: bool, memory_seconds: float | None) -> None:
        # Sized for about 15 minutes on 2 cores shared with other work (the counts run beside).
        self.quick = quick
        self.rounds, self.requests, self.warmup = (2, 500, 200) if quick else (3, 1_000, 300)
        self.route_rounds = 1 if quick else 2
        self.calls, self.call_rounds = (2_000, 3) if quick else (5_000, 3)
        self.events, self.export_repeats = (10_000, 1) if quick else (20_000, 2)
        self.memory_seconds = memory_seconds or (15.0 if quick else 60.0)
        self.rate = 1_000
        self.starts = 1 if quick else 2
        self.counted_requests = 10 if quick else 20
        # Real servers: rounds, warm-up and load seconds per variant (each started fresh).
        full = (real_servers.ROUNDS, 2.0, 8.0)
        self.server_rounds, self.server_warmup, self.server_seconds = (1, 2.0, 4.0) if quick else full

    def as_data(self) -> dict[str, Any]:
        return dict(vars(self))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", default=os.environ.get("BENCH_QUICK") == "1")
    parser.add_argument("--memory-seconds", type=float, help="length of the ingest outage (120)")
    parser.add_argument("--json", type=Path, default=report.RESULTS_JSON)
    parser.add_argument("--output", type=Path, default=report.RESULTS_MD)
    args = parser.parse_args(argv)
    settings = Settings(args.quick, args.memory_seconds)
    count = os.environ.get("BENCH_INSTRUCTIONS", "1") != "0" and instructions.available()
    started = time.monotonic()
    meta = machine_info()
    meta["mode"] = "quick mode (`BENCH_QUICK=1`): fewer rounds, noisier" if settings.quick else "full run"
    meta["command"] = "make bench" + (" BENCH_QUICK=1" if settings.quick else "")
    log(f"bench: {'quick' if settings.quick else 'full'} run on {meta['cpu']}, {meta['cores']} cores")
    results: dict[str, Any] = {"settings": settings.as_data()}
    counted: dict[str, Any] = {}
    counting = threading.Thread(target=_count, args=(settings, counted), daemon=True)
    if count:
        counting.start()

    log("1/7 cost per request as the app grows (routes)")
    measured = routes.measure(rounds=settings.route_rounds, quick=settings.quick, log=log)
    results["routes"] = {**measured, "table": routes.summarise(measured)}
    log(f"  ({time.monotonic() - started:.0f} s so far)")
    log("2/7 per-request overhead, in process")
    results["overhead"] = {
        "variants": overhead.measure(
            list(overhead.VARIANTS),
            rounds=settings.rounds,
            requests=settings.requests,
            warmup=settings.warmup,
            log=log,
        ),
        "rounds": settings.rounds,
        "requests": settings.requests,
        "warmup": settings.warmup,
    }
    log(f"  ({time.monotonic() - started:.0f} s so far)")
    log("3/7 the processor alone")
    results["processor"] = processor.run(n=settings.calls, rounds=settings.call_rounds, log=log)
    log("4/7 start-up and memory")
    results["startup"] = startup.run(repeats=settings.starts, log=log)
    log(f"  ({time.monotonic() - started:.0f} s so far)")
    log("5/7 export throughput")
    results["export"] = export.run(events=settings.events, repeats=settings.export_repeats, log=log)
    log(f"  ({time.monotonic() - started:.0f} s so far)")
    log("6/7 memory through an ingest outage")
    results["memory"] = memory.run(seconds=settings.memory_seconds, rate=settings.rate, log=log)
    if count:
        log("  waiting for the instruction counts")
        counting.join()
        if "error" in counted:
            raise RuntimeError(f"counting instructions failed: {counted['error']}")
        results["instructions"] = counted
        skipped = ", ".join(counted["skipped"]) or "none"
        meta["instructions"] = (
            f"callgrind (valgrind), request thread only, {counted['n']} requests per case after a warm-up "
            f"({counted['n'] * counts.OVERHEAD_REQUESTS_FACTOR} for the overhead app of section 2) "
            f"(`perf stat -e instructions` is not supported on this VM); not counted within the budget: {skipped}"
        )
    # After the counts: callgrind on either core would compete with the pinned server or wrk.
    log(f"  ({time.monotonic() - started:.0f} s so far)")
    if why_not := real_servers.available():
        log(f"7/7 real servers under load: skipped, {why_not}")
    else:
        log(f"7/7 real servers under load (load average {os.getloadavg()[0]:.1f})")
        results["real_servers"] = real_servers.measure(
            list(real_servers.SERVERS),
            rounds=settings.server_rounds,
            warmup=settings.server_warmup,
            seconds=settings.server_seconds,
            log=log,
        )
    meta["load_after"] = os.getloadavg()
    meta["wall_s"] = time.monotonic() - started
    meta["finished"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    results["meta"] = meta
    report.write(results, args.json, args.output)
    log(f"bench: wrote {args.json} and {args.output} in {meta['wall_s']:.0f} s")


def _count(settings: Settings, counted: dict[str, Any]) -> None:
    """Every instruction count within the budget (``bench.harness.counts``), into ``counted``."""
    budget = float(os.environ.get("BENCH_COUNT_BUDGET", 240 if settings.quick else 1500))
    try:
        # One count at a time: on a 2-core machine the timed benchmarks keep the other core.
        counted.update(counts.run(settings.counted_requests, budget, log=log, parallel=1))
    except Exception as exc:  # reported by main once the timed benchmarks end
        counted["error"] = repr(exc)


def log(line: str) -> None:
    print(line, flush=True)


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "src"], capture_output=True, text=True).stdout
        commit += " (src/ has uncommitted changes)" if dirty.strip() else ""
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": f"{platform.system()} {platform.release()}",
        "versions": versions,
        "commit": commit,
        "load_before": os.getloadavg(),
        "calibration": {
            "dict.get (hit)": _ns("d.get('a')", "d = {'a': 1}"),
            "os.getpid()": _ns("getpid()", "from os import getpid"),
            "lock acquire + release": _ns(
                "a(); r()", "import threading; l = threading.Lock(); a, r = l.acquire, l.release"
            ),
        },
    }


def _ns(stmt: str, setup: str) -> float:
    return min(timeit.repeat(stmt, setup, number=200_000, repeat=5)) / 200_000 * 1e9


if __name__ == "__main__":
    main(sys.argv[1:])
