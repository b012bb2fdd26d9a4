"""A real server's instructions per request, every thread: what a loaded machine cannot blur.

The real-server benchmark's CPU per request moves by 10% between rounds on a shared machine,
more than the 5% the beside-OTLP target is about. Here the same server, started the same way
(``opentelemetry-instrument`` + uvicorn/FastAPI or gunicorn sync/Flask, the same environment as
:mod:`bench.scenarios.real_servers`), runs under callgrind with instrumentation off; after a
warm-up, ``callgrind_control -i on`` turns it on, ``REQUESTS`` requests go to the last route
over one keep-alive connection, the process idles ``SETTLE`` seconds (so that the delivery
thread and the OTLP exporter do their share of the work), and the counts of every thread are
dumped. Kernel work (syscalls, context switches) is not counted; ``strace -c -f`` says that.

``python -m bench.scenarios.server_instructions [fastapi|flask|django] [variant ...]`` prints
instructions per request per variant (``otlp`` and ``beacon+otlp`` by default) and the targets'
ratios among those counted: beside OTLP over OTLP alone, Beacon's and beaconhq's overheads.
"""

from __future__ import annotations

import glob
import http.client
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

from bench.harness import apps, served
from bench.scenarios import real_servers as rs

REQUESTS = 2000
WARM_UP = 300
SETTLE = 6.0  # past the OTLP exporter's 5 s schedule
READY = 300.0


def _requests(port: int, n: int) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for _ in range(n):
        connection.request("GET", served.LAST_ROUTE_PATH, headers={"X-API-Key": apps.API_KEY})
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}")
    connection.close()


def _wait_ready(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("server exited")
        try:
            _requests(port, 1)
            return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError("server not ready")


def _serving_pid(root: int, framework: str) -> int:
    """The process that serves: uvicorn's only one, or gunicorn's worker (the arbiter's child)."""
    if framework == "fastapi":
        return root
    children = subprocess.run(["pgrep", "-P", str(root)], capture_output=True, text=True).stdout.split()
    if len(children) != 1:
        raise RuntimeError(f"expected one gunicorn worker under {root}, got {children}")
    return int(children[0])


def count(framework: str, variant: rs.Variant, ingest: str, sink: str) -> float:
    """Instructions per request, every thread of the serving process, for one variant."""
    directory = tempfile.mkdtemp(prefix="bench-server-count-")
    spool = tempfile.mkdtemp(prefix="bench-spool-")
    port = rs._free_port()
    command = rs.server_command(framework, port)
    if variant.autorun:
        command = [str(rs.BIN / "opentelemetry-instrument"), *command]
    process = subprocess.Popen(
        [
            "taskset", "-c", str(rs.SERVER_CORE),
            "valgrind", "--tool=callgrind", "--instr-atstart=no", "--trace-children=yes",
            f"--callgrind-out-file={directory}/out.%p", *command,
        ],
        env=rs.server_environment(framework, variant, ingest, sink, spool),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        _wait_ready(port, process)
        _requests(port, WARM_UP)
        pid = _serving_pid(process.pid, framework)
        subprocess.run(["callgrind_control", "-i", "on", str(pid)], check=True, capture_output=True)
        _requests(port, REQUESTS)
        time.sleep(SETTLE)
        subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True)
        dumps = glob.glob(f"{directory}/out.{pid}.*")
        if not dumps:
            raise RuntimeError("callgrind wrote no dump")
        with open(sorted(dumps)[-1]) as profile:
            for line in profile:
                if line.startswith(("summary:", "totals:")):
                    return int(line.split()[1]) / REQUESTS
        raise RuntimeError("no total in the dump")
    finally:
        os.killpg(process.pid, 9)
        process.wait()
        shutil.rmtree(directory, ignore_errors=True)
        shutil.rmtree(spool, ignore_errors=True)


def main(argv: list[str]) -> None:
    framework = argv[0] if argv else "fastapi"
    keys = argv[1:] or ["otlp", "beacon+otlp"]
    variants = [v for key in keys for v in rs.VARIANTS if v.key == key]
    results: dict[str, Any] = {}
    with rs._services(strict_ingest=False) as (ingest, sink):
        for variant in variants:
            results[variant.key] = count(framework, variant, ingest.base_url, sink.base_url)
            figure = results[variant.key]
            print(f"  {framework}/{variant.key}: {figure:,.0f} instructions per request", flush=True)
    if "otlp" in results and "beacon+otlp" in results:
        print(f"  beside OTLP / OTLP alone: {results['beacon+otlp'] / results['otlp']:.3f}x")
    if {"bare", "beaconhq", "beacon"} <= results.keys():
        above = {key: results[key] - results["bare"] for key in ("beaconhq", "beacon")}
        print(
            f"  above bare: beacon-otel {above['beacon']:+,.0f}, beaconhq {above['beaconhq']:+,.0f}: "
            f"{above['beacon'] / above['beaconhq']:.2f}x"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
