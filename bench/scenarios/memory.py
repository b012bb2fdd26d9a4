"""Memory through an ingest outage: RSS at a steady request rate while nothing can be delivered.

The FastAPI app runs under beacon-otel exactly as ``opentelemetry-instrument`` sets it up,
pointed at a loopback port where nothing listens, and serves requests at a steady rate
(in process, no sockets). Every second the worker samples its RSS, the events held in
memory (``processor.buffered()``) and the delivery counters. Two set-ups run side by side:
the in-memory buffer alone (``BEACON_MAX_STORAGE_BYTES=0``: no disk spool), which must stay
within ``BEACON_MAX_BUFFER_SIZE`` (default 10,000) by dropping the oldest events, and the
default, where the spool takes full batches to disk once the ingest has stayed down.

The memory an event costs is the RSS growth from the warm baseline to the plateau, divided
by the events the buffer gained in between.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from bench.harness import apps, child

SETUPS = {
    "buffer only (no spool)": {"BEACON_MAX_STORAGE_BYTES": "0"},
    "default (disk spool on)": {},
}
WARMUP = 1000


def closed_port() -> int:
    """A loopback port nothing listens on: connections are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_bytes() -> int:
    """This process's resident set size now (Linux)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def worker(seconds: float, rate: int) -> list[dict[str, Any]]:
    """Serve ``rate`` requests a second for ``seconds``, sampling once a second."""
    from opentelemetry.instrumentation.auto_instrumentation import initialize

    initialize(swallow_exceptions=False)
    from beacon_otel.setup.autorun import AUTORUN

    beacon = AUTORUN.processor
    if beacon is None:
        raise RuntimeError("beacon-otel did not start under auto-run")
    driver = apps.AsgiDriver(apps.fastapi_app())
    driver.run(WARMUP)
    samples = [_sample(0.0, beacon, WARMUP)]
    started = time.monotonic()
    served = WARMUP
    tick = 0.01
    per_tick = rate * tick
    owed = 0.0
    next_tick = started
    next_sample = started + 1.0
    while (now := time.monotonic()) < started + seconds:
        if now < next_tick:
            time.sleep(next_tick - now)
            continue
        owed += per_tick
        while owed >= 1:
            driver.one(served)
            served += 1
            owed -= 1
        next_tick += tick
        if now >= next_sample:
            samples.append(_sample(now - started, beacon, served))
            next_sample += 1.0
    samples.append(_sample(time.monotonic() - started, beacon, served))
    if driver.not_ok:
        raise RuntimeError(f"{driver.not_ok} requests were not answered 200")
    return samples


def _sample(elapsed: float, beacon: Any, served: int) -> dict[str, Any]:
    stats = beacon.stats.snapshot()
    return {
        "t": round(elapsed, 2),
        "rss": rss_bytes(),
        "buffered": beacon.buffered(),
        "served": served,
        "dropped": stats["dropped"],
        "spooled": stats.get("spooled", 0),
    }


def run(*, seconds: float, rate: int, log=print) -> dict[str, dict[str, Any]]:
    """Both set-ups at once, each in its own process; a summary per set-up."""
    port = closed_port()
    processes = {}
    for name, overrides in SETUPS.items():
        env = {
            **os.environ,
            "OTEL_SERVICE_NAME": "bench-memory",
            "BEACON_INGEST_KEY": "bench-ingest-key",
            "BEACON_INGEST_URL": f"http://127.0.0.1:{port}",
            "BEACON_STORAGE_PATH": tempfile.mkdtemp(prefix="bench-spool-"),
            **overrides,
        }
        processes[name] = subprocess.Popen(
            [sys.executable, "-m", "bench.scenarios.memory", "worker", str(seconds), str(rate)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
    log(f"  memory: {len(processes)} set-ups, {seconds:.0f} s at {rate} requests/s, ingest down")
    summaries = {}
    for name, process in processes.items():
        out, _ = process.communicate(timeout=seconds + 120)
        if process.returncode:
            raise RuntimeError(f"memory worker {name!r} failed ({process.returncode})")
        summaries[name] = summarise(child.last_json_line(out), rate)
    return summaries


def summarise(samples: list[dict[str, Any]], rate: int) -> dict[str, Any]:
    """Baseline, plateau, peak and drift of RSS; events held; the cost of 10,000 of them."""
    baseline, last = samples[0], samples[-1]
    half = [s for s in samples if s["t"] >= last["t"] / 2]
    plateau_rss = statistics.median(s["rss"] for s in half)
    plateau_buffered = statistics.median(s["buffered"] for s in half)
    gained = plateau_buffered - baseline["buffered"]
    per_10k = (plateau_rss - baseline["rss"]) / gained * 10_000 if gained > 1000 else None
    minutes = (half[-1]["t"] - half[0]["t"]) / 60 or 1
    return {
        "rate": rate,
        "seconds": last["t"],
        "served": last["served"],
        "baseline_rss": baseline["rss"],
        "plateau_rss": plateau_rss,
        "peak_rss": max(s["rss"] for s in samples),
        "end_rss": last["rss"],
        "drift_per_min": (half[-1]["rss"] - half[0]["rss"]) / minutes,
        "max_buffered": max(s["buffered"] for s in samples),
        "end_buffered": last["buffered"],
        "dropped": last["dropped"],
        "spooled": last["spooled"],
        "per_10k": per_10k,
        "timeline": [(s["t"], s["rss"], s["buffered"]) for s in samples],
    }


def main(argv: list[str]) -> None:
    if argv[:1] == ["worker"]:
        samples = worker(float(argv[1]), int(argv[2]))
        print(json.dumps(samples))
        return
    for name, summary in run(seconds=float(argv[0]) if argv else 30, rate=1000).items():
        summary.pop("timeline")
        print(name, summary)


if __name__ == "__main__":
    main(sys.argv[1:])
