"""Real servers under load: wrk against uvicorn/FastAPI, gunicorn sync/Flask and gunicorn/Django.

What a team moving from the beaconhq middleware would see. The server is pinned to core 0 and
wrk to core 1 (``taskset``), 8 connections, every request ``GET`` to the last of 42 parametrised
routes with an ``X-API-Key``. Each variant is started fresh for each round, warmed up, then
loaded for a fixed time; rounds interleave the variants (the order rotates each round) so that
drift hits them alike, and the report takes medians.

Every variant's data (Beacon's and beaconhq's events, Apitally's and OTel's spans) goes to one
accept-anything sink, in its own process on wrk's core, never on the server's, and so costs that
core the same little for each. Not to the strict dev ingest: it validates and stores each batch,
about 3 ms of CPU per 100 events, and on wrk's core that pauses wrk, whose clock counts the pause
as the server's latency (Flask's p99 with Beacon: 6.3 ms with the dev ingest, 4.2 ms with the
sink; beaconhq's: 5.2 ms and 3.7 ms; same server, same code). ``--strict-ingest`` sends the events
there all the same. The sink counts what arrives: *arrived* is events (or server spans) received
per request served, warm-up and shutdown included, so a variant that kept up shows 1.00 (a hair
more: the requests in flight when each wrk run ends are served but not counted by wrk).

Server CPU per request is the server's process CPU (every thread of every process of the server:
gunicorn's arbiter and worker, delivery threads included) over the requests wrk completed.
Latencies are wrk's: p50, p99, p99.9 of the run.

``python -m bench.scenarios.real_servers [--quick] [--write] [framework ...]`` runs it alone and prints
the medians; ``--write`` also puts them into ``bench/results.json`` and re-renders ``RESULTS.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import apps, served, services

SERVER_CORE, LOAD_CORE = 0, 1
CONNECTIONS = 8
ROUNDS = 5
"""Rounds of a full run. A bare app's CPU per request moves by up to 40% between rounds on this
VM, and each overhead is paired with its round's bare run: with 3 rounds, slow bare runs in two
of them moved Flask's ratio to beaconhq from 1.8x to 3x."""
WRK_SCRIPT = Path(__file__).with_name("wrk_summary.lua")
BIN = Path(sys.executable).parent
READY_TIMEOUT = 60.0
APITALLY_PATH = BIN.parent / "apitally"
"""Where ``make bench`` installs Apitally, apart from the environment the tests and other variants use."""


@dataclass(frozen=True)
class Variant:
    """One way of serving the app: what the app wires in, and whether ``opentelemetry-instrument`` runs it."""

    key: str
    label: str
    observer: str  # BENCH_OBSERVER (bench/harness/served.py)
    autorun: bool = False
    beacon: bool = False
    otlp: bool = False
    env: tuple[tuple[str, str], ...] = ()  # further settings, for experiments (``--env``)


VARIANTS = (
    Variant("bare", "bare app", "none"),
    Variant("beaconhq", "beaconhq 0.2 middleware", "beaconhq"),
    Variant("apitally", "Apitally 1.0 (OTLP to a local sink)", "apitally"),
    Variant("beacon", "beacon-otel under opentelemetry-instrument", "none", autorun=True, beacon=True),
    Variant("otlp", "stock OTel + OTLP under opentelemetry-instrument", "none", autorun=True, otlp=True),
    Variant(
        "beacon+otlp", "beacon-otel beside OTLP under opentelemetry-instrument", "none", True, beacon=True, otlp=True
    ),
)
SERVERS = {
    "fastapi": "uvicorn (FastAPI)",
    "flask": "gunicorn sync, 1 worker (Flask)",
    "django": "gunicorn sync, 1 worker (Django)",
}


def server_command(framework: str, port: int) -> list[str]:
    """The command line a user would type, less ``opentelemetry-instrument``."""
    if framework == "fastapi":
        return [
            str(BIN / "uvicorn"),
            "--factory",
            "bench.harness.served:fastapi_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
        ]
    factory = "flask_app()" if framework == "flask" else "django_app()"
    return [
        str(BIN / "gunicorn"),
        "--workers",
        "1",
        "--worker-class",
        "sync",
        "--bind",
        f"127.0.0.1:{port}",
        "--log-level",
        "warning",
        f"bench.harness.served:{factory}",
    ]


def server_environment(framework: str, variant: Variant, ingest: str, sink: str, spool: str) -> dict[str, str]:
    """The environment of one server: the observer's settings, Beacon's and OTel's variables.

    ``ingest`` receives Beacon's and beaconhq's events (the sink, or the strict dev ingest),
    ``sink`` the spans of OTLP exporters.
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith(("OTEL_", "BEACON_"))}
    repo = str(Path(__file__).parents[2])
    env["PYTHONPATH"] = repo + os.pathsep + env.get("PYTHONPATH", "") if env.get("PYTHONPATH") else repo
    env.update(BENCH_OBSERVER=variant.observer, BENCH_INGEST_URL=ingest, BENCH_SINK_URL=sink)
    if variant.observer == "apitally":
        env["PYTHONPATH"] = str(APITALLY_PATH) + os.pathsep + env["PYTHONPATH"]
    if framework == "django":
        env["DJANGO_SETTINGS_MODULE"] = "bench.harness.served"
    if variant.autorun:
        env.update(
            OTEL_SERVICE_NAME="bench",
            OTEL_METRICS_EXPORTER="none",
            OTEL_LOGS_EXPORTER="none",
            OTEL_TRACES_EXPORTER="otlp" if variant.otlp else "none",
            BEACON_INGEST_KEY=served.INGEST_KEY,
            BEACON_INGEST_URL=ingest,
            BEACON_STORAGE_PATH=spool,
        )
        if variant.otlp:
            env["OTEL_EXPORTER_OTLP_PROTOCOL"] = "http/protobuf"
            env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = f"{sink}/v1/traces"
        if not variant.beacon:
            env["BEACON_ENABLED"] = "false"
    env.update(variant.env)
    return env


class Server:
    """One server process group, pinned to the server's core, stopped with its whole group."""

    def __init__(self, framework: str, variant: Variant, ingest: str, sink: str) -> None:
        self.port = _free_port()
        self.spool = tempfile.mkdtemp(prefix="bench-spool-")
        command = server_command(framework, self.port)
        if variant.autorun:
            command = [str(BIN / "opentelemetry-instrument"), *command]
        self.process = subprocess.Popen(
            ["taskset", "-c", str(SERVER_CORE), *command],
            env=server_environment(framework, variant, ingest, sink, self.spool),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.url = f"http://127.0.0.1:{self.port}{served.LAST_ROUTE_PATH}"

    def wait_ready(self) -> int:
        """Until the last route answers 200; the requests it served (the warm-up follows anyway)."""
        deadline = time.monotonic() + READY_TIMEOUT
        request = urllib.request.Request(self.url, headers={"X-API-Key": apps.API_KEY})
        served = 0
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self._stderr()}")
            with contextlib.suppress(OSError), urllib.request.urlopen(request, timeout=2) as response:
                served += 1  # an answer of any status was a request the app handled
                if response.status == 200:
                    return served
            time.sleep(0.1)
        raise RuntimeError(f"server not ready in {READY_TIMEOUT} s: {self._stderr()}")

    def cpu_seconds(self) -> float:
        """User + system CPU of every process in the server's group so far."""
        total = 0.0
        for pid in _group_pids(self.process.pid):
            with contextlib.suppress(OSError):
                with open(f"/proc/{pid}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self._stderr()
        shutil.rmtree(self.spool, ignore_errors=True)

    def _stderr(self) -> str:
        assert self.process.stderr is not None
        if self.process.poll() is None:
            return ""
        text = self.process.stderr.read().decode(errors="replace")
        self.process.stderr.close()
        return text[-2000:]


def _group_pids(group: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
                if int(fields[2]) == group:  # field 5 of stat: the process group
                    pids.append(int(entry))
    return pids


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wrk(url: str, seconds: float) -> dict[str, Any]:
    """One wrk run on the load core: 1 thread, 8 connections, ``X-API-Key`` on every request."""
    command = [
        "taskset", "-c", str(LOAD_CORE), "wrk", "-t1", f"-c{CONNECTIONS}", f"-d{max(1, round(seconds))}s",
        "-H", f"X-API-Key: {apps.API_KEY}", "-s", str(WRK_SCRIPT), url,
    ]  # fmt: skip
    output = subprocess.run(command, capture_output=True, text=True, check=True, timeout=seconds + 60).stdout
    for line in output.splitlines():
        if line.startswith("BENCH "):
            return dict(json.loads(line[len("BENCH ") :]))
    raise RuntimeError(f"wrk printed no summary: {output[-500:]}")


def measure_once(
    framework: str, variant: Variant, ingest: services.Service, sink: services.Service, warmup: float, seconds: float
) -> dict[str, Any]:
    """Start the variant fresh, warm it up, load it; its figures, and what reached the sink."""
    before = sink.get("/")
    server = Server(framework, variant, ingest.base_url, sink.base_url)
    try:
        served = server.wait_ready()
        served += wrk(server.url, warmup)["requests"]
        cpu0 = server.cpu_seconds()
        run = wrk(server.url, seconds)
        cpu = server.cpu_seconds() - cpu0
    finally:
        server.stop()  # SIGTERM: each observer sends what it still holds, as on a deploy
    after = sink.get("/")
    completed = max(run["requests"], 1)
    served += run["requests"]
    return {
        **run,
        "req_s": run["requests"] / (run["duration_us"] / 1e6),
        "us_per_request": run["duration_us"] / completed,  # one core, saturated: 1 / throughput
        "cpu_us_per_request": cpu * 1e6 / completed,
        "served": served,
        "events_arrived": after["events"] - before["events"],
        "spans_arrived": after["server_spans"] - before["server_spans"],
        "load": os.getloadavg()[0],
    }


def measure(
    frameworks: list[str],
    *,
    rounds: int,
    warmup: float,
    seconds: float,
    variants: tuple[Variant, ...] = VARIANTS,
    strict_ingest: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Every framework and variant, ``rounds`` interleaved rounds; runs and medians per cell.

    Events go to the sink, or with ``strict_ingest`` to the strict dev ingest (module docstring).
    """
    if not (APITALLY_PATH / "apitally").is_dir():
        log(f"  Apitally is not installed in {APITALLY_PATH} (make bench installs it): its variant is left out")
        variants = tuple(v for v in variants if v.observer != "apitally")
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {fw: {v.key: [] for v in variants} for fw in frameworks}
    with _services(strict_ingest) as (ingest, sink):
        for round_index in range(rounds):
            for framework in frameworks:
                order = list(variants[round_index % len(variants) :] + variants[: round_index % len(variants)])
                for variant in order:
                    result = measure_once(framework, variant, ingest, sink, warmup, seconds)
                    runs[framework][variant.key].append(result)
                    log(
                        f"  round {round_index + 1}/{rounds} {framework}/{variant.key}: {result['req_s']:,.0f} req/s, "
                        f"CPU {result['cpu_us_per_request']:.0f} us/request, p50 {result['p50_us'] / 1000:.1f} ms, "
                        f"p99 {result['p99_us'] / 1000:.1f} ms (load {result['load']:.1f})"
                    )
    return {
        "settings": {
            "rounds": rounds,
            "warmup_s": warmup,
            "seconds": seconds,
            "connections": CONNECTIONS,
            "events_to": "the strict dev ingest" if strict_ingest else "the sink",
        },
        "labels": {v.key: v.label for v in variants},
        "servers": {fw: SERVERS[fw] for fw in frameworks},
        "runs": runs,
        "medians": {
            fw: {key: medians(cells, counted=not strict_ingest) for key, cells in by_variant.items()}
            for fw, by_variant in runs.items()
        },
    }


MEASURES = ("req_s", "us_per_request", "cpu_us_per_request", "p50_us", "p99_us", "p999_us", "errors", "non_2xx")


def medians(runs: list[dict[str, Any]], *, counted: bool = True) -> dict[str, float]:
    """The median of each measure over rounds; the tail spread (p99/p50) is the median of each round's.

    With ``counted`` (every event went to the sink), also what arrived per request served.
    """
    if not runs:
        return {}
    cell = {name: statistics.median(run[name] for run in runs) for name in MEASURES}
    cell["spread"] = statistics.median(run["p99_us"] / max(run["p50_us"], 1) for run in runs)
    if counted and all("served" in run for run in runs):
        for arrived in ("events_arrived", "spans_arrived"):
            cell[arrived.replace("arrived", "per_request")] = statistics.median(
                run[arrived] / max(run["served"], 1) for run in runs
            )
    return cell


@contextlib.contextmanager
def _services(strict_ingest: bool) -> Iterator[tuple[services.Service, services.Service]]:
    """Where events and spans go, served on the load core so the server's core is its own.

    The sink takes both, unless ``strict_ingest`` sends the events to the strict dev ingest.
    """
    sink = services.sink()
    ingest = services.dev_ingest() if strict_ingest else sink
    started = [sink] if ingest is sink else [sink, ingest]
    with services.running(*started):
        for service in started:
            for task in os.listdir(f"/proc/{service.process.pid}/task"):
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(int(task), {LOAD_CORE})
        yield ingest, sink


def available() -> str | None:
    """Why the section cannot run here, or None."""
    if shutil.which("wrk") is None:
        return "wrk is not installed (Debian package wrk; make bench installs it when run as root)"
    if shutil.which("taskset") is None:
        return "taskset is not installed (util-linux)"
    if len(os.sched_getaffinity(0)) < 2:
        return "fewer than 2 cores"
    for tool in ("uvicorn", "gunicorn", "opentelemetry-instrument"):
        if not (BIN / tool).exists():
            return f"{tool} is not installed in {BIN}"
    return None


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scenarios.real_servers", description=__doc__.splitlines()[0])
    parser.add_argument("frameworks", nargs="*", default=list(SERVERS))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--variants", help="comma-separated variant keys (all by default)")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a further setting for every variant run (BEACON_SERVER_SPANS=stock, say); repeatable",
    )
    parser.add_argument(
        "--strict-ingest",
        action="store_true",
        help="send the events to the strict dev ingest, not the sink (its CPU then pauses wrk: module docstring)",
    )
    parser.add_argument(
        "--write", action="store_true", help="put the figures into bench/results.json and re-render RESULTS.md"
    )
    args = parser.parse_args(argv)
    extra = tuple(tuple(setting.split("=", 1)) for setting in args.env)
    chosen = tuple(
        dataclasses.replace(v, env=v.env + extra)  # type: ignore[arg-type]
        for v in VARIANTS
        if not args.variants or v.key in args.variants.split(",")
    )
    rounds, warmup, seconds = (1, 2.0, 4.0) if args.quick else (ROUNDS, 2.0, 8.0)
    load_before = os.getloadavg()
    result = measure(
        args.frameworks,
        rounds=rounds,
        warmup=warmup,
        seconds=seconds,
        variants=chosen,
        strict_ingest=args.strict_ingest,
        log=print,
    )
    print(json.dumps(result["medians"], indent=1))
    if args.write:
        from bench.report import render

        results = json.loads(render.RESULTS_JSON.read_text())
        results["real_servers"] = {**result, "mode": "quick" if args.quick else "full", "load_before": load_before}
        render.write(results)


if __name__ == "__main__":
    main(sys.argv[1:])
