"""Run every benchmark once and write ``bench/RESULTS.md``: ``python -m bench.run [--quick]``.

``make bench`` runs this. ``--quick`` (or ``BENCH_QUICK=1``) runs fewer, shorter rounds and a
15-second outage, to try the suite; its numbers are noisier. ``--memory-seconds`` sets the
length of the outage (120 s by default).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import subprocess
import sys
import time
import timeit
from pathlib import Path
from typing import Any

from bench import export, memory, overhead, processor, report

RESULTS = Path(__file__).with_name("RESULTS.md")
PACKAGES = (
    "beacon-otel",
    "opentelemetry-sdk",
    "opentelemetry-instrumentation",
    "opentelemetry-exporter-otlp-proto-http",
    "fastapi",
    "starlette",
    "flask",
    "django",
    "requests",
    "beaconhq",
    "peekapi",
)


class Settings:
    """How much of everything to run."""

    def __init__(self, quick: bool, memory_seconds: float | None) -> None:
        self.quick = quick
        self.rounds, self.requests, self.warmup = (3, 1_000, 300) if quick else (5, 4_000, 500)
        self.calls, self.call_rounds = (3_000, 3) if quick else (10_000, 5)
        # FastAPI requests per round with spans held or mapped at once (bench.processor.retention).
        self.retention_requests, self.retention_rounds = (3_000, 3) if quick else (3_000, 9)
        self.events, self.export_repeats = (20_000, 1) if quick else (30_000, 3)
        self.memory_seconds = memory_seconds or (15.0 if quick else 120.0)
        self.rate = 1_000


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", default=os.environ.get("BENCH_QUICK") == "1")
    parser.add_argument("--memory-seconds", type=float, help="length of the ingest outage (120)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    settings = Settings(args.quick, args.memory_seconds)
    started = time.monotonic()
    machine = machine_info()
    log(f"bench: {'quick' if settings.quick else 'full'} run on {machine['cpu']}, {machine['cores']} cores")

    log("1/4 per-request overhead, in process")
    outcomes = overhead.measure(
        list(overhead.VARIANTS),
        rounds=settings.rounds,
        requests=settings.requests,
        warmup=settings.warmup,
        log=log,
    )
    log(f"  ({time.monotonic() - started:.0f} s so far)")
    log("2/4 the processor alone")
    calls = processor.run(
        n=settings.calls,
        rounds=settings.call_rounds,
        retention_requests=settings.retention_requests,
        retention_rounds=settings.retention_rounds,
        log=log,
    )
    log(f"  ({time.monotonic() - started:.0f} s so far)")
    log("3/4 export throughput")
    exported = export.run(events=settings.events, repeats=settings.export_repeats, log=log)
    log(f"  ({time.monotonic() - started:.0f} s so far)")
    log("4/4 memory through an ingest outage")
    held = memory.run(seconds=settings.memory_seconds, rate=settings.rate, log=log)

    machine["load_after"] = os.getloadavg()
    wall = time.monotonic() - started
    text = report.render(settings, machine, wall, outcomes, calls, exported, held)
    args.output.write_text(text)
    log(f"bench: wrote {args.output} in {wall:.0f} s")


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
