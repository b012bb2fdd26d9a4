"""Start-up and memory: process start to first response, RSS after 10,000 requests, import time.

Start-up is reported as wall time and as the server process's CPU time up to the first
response (from /proc): on a loaded machine the wall time mostly measures the neighbours.

Each variant runs in a fresh server process (``python -m bench.scenarios.startup serve FRAMEWORK
VARIANT``) that installs its observer as ``bench.scenarios.overhead`` does (beacon-otel by
``opentelemetry-instrument``'s own ``initialize()``), builds the app and serves it on a
loopback socket: uvicorn for FastAPI, wsgiref for Flask. The driver times from spawning the
process to the first 200 response to ``GET /users/1`` over that socket. Then the server
serves 10,000 requests in process, flushes, and reports its resident set (``VmRSS``) and its
peak (``VmHWM``) from ``/proc/self/status``.

Import time is the CPU time of ``import beacon_otel`` in a fresh process, median of several;
``beacon_otel.setup.distro`` is the module ``opentelemetry-instrument`` loads first.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from bench.harness import apps, services
from bench.scenarios import overhead

VARIANTS = {
    "bare": "bare app",
    "beaconhq": "beaconhq 0.2.0 middleware",
    "otlp": "stock OTel + BatchSpanProcessor + OTLP/HTTP",
    "beacon": "beacon-otel under opentelemetry-instrument",
}
FRAMEWORKS = ("fastapi", "flask")
LOAD = 10_000
MODULES = ("opentelemetry.sdk.trace", "beacon_otel", "beacon_otel.setup.distro")
"""The SDK's tracing (what any OpenTelemetry user imports) for scale, then the package and its distro."""


def serve(framework: str, variant: str, ingest: str, sink: str) -> None:
    """The server process: set up, listen, print the port; on ``load`` serve 10,000 and report RSS."""
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    harness = overhead.VARIANTS[f"{framework}/{variant}"].setup(ingest, sink)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    threading.Thread(target=_listen(framework, harness.app, listener), daemon=True).start()
    answers.write(json.dumps({"port": port}) + "\n")
    for line in sys.stdin:
        if line.strip() != "load":
            break
        driver = apps.driver_for(framework, harness.app)
        driver.run(LOAD)
        harness.flush()
        answers.write(json.dumps({"not_ok": driver.not_ok, **_memory()}) + "\n")
    harness.flush()


def _listen(framework: str, app: Any, listener: socket.socket) -> Callable[[], None]:
    if framework == "fastapi":
        import uvicorn

        config = uvicorn.Config(app, log_level="warning", lifespan="off")
        server = uvicorn.Server(config)
        return lambda: server.run(sockets=[listener])
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    # The listener the driver was told about, not a second bind of the same port.
    wsgi = WSGIServer(listener.getsockname(), Quiet, bind_and_activate=False)
    wsgi.socket.close()
    wsgi.socket = listener
    wsgi.server_name, wsgi.server_port = listener.getsockname()
    wsgi.setup_environ()
    wsgi.set_app(app)
    listener.listen()
    return wsgi.serve_forever


def _memory() -> dict[str, int]:
    figures = {}
    with open("/proc/self/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                figures[name] = int(value.split()[0]) * 1024
    return {"rss": figures["VmRSS"], "peak_rss": figures["VmHWM"]}


def _first_response(port: int, deadline: float) -> None:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/users/1", headers={"X-API-Key": apps.API_KEY})
    while True:
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                if response.status == 200:
                    response.read()
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.002)


def one_start(framework: str, variant: str, ingest: str, sink: str, load: bool) -> dict[str, Any]:
    """Spawn a server, time it to its first response; optionally load it and read its memory."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.scenarios.startup", "serve", framework, variant, ingest, sink],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        port = json.loads(process.stdout.readline())["port"]
        _first_response(port, time.monotonic() + 60)
        result: dict[str, Any] = {
            "first_response_s": time.perf_counter() - started,
            "first_response_cpu_s": _cpu_seconds(process.pid),
        }
        if load:
            process.stdin.write("load\n")
            process.stdin.flush()
            result.update(json.loads(process.stdout.readline()))
        process.stdin.write("quit\n")
        process.stdin.close()
        process.wait(60)
        return result
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used so far: start-up's cost, whatever the machine's load."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def import_times(repeats: int) -> dict[str, float]:
    """Median CPU ms to import each of ``MODULES`` in a fresh process (nothing imported before)."""
    samples: dict[str, list[float]] = {module: [] for module in MODULES}
    probe = "import time; t = time.process_time(); import {}; print(time.process_time() - t)"
    for _ in range(repeats):
        for module in MODULES:
            out = subprocess.run(
                [sys.executable, "-c", probe.format(module)], capture_output=True, text=True, check=True
            ).stdout
            samples[module].append(float(out.strip().splitlines()[-1]) * 1000)
    return {module: statistics.median(values) for module, values in samples.items()}


def run(*, repeats: int, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Every framework x variant ``repeats`` times (interleaved); the first start of each is loaded."""
    starts: dict[str, list[dict[str, Any]]] = {}
    with services.running(services.dev_ingest(), services.sink()) as (ingest, sink):
        for repeat in range(repeats):
            for framework in FRAMEWORKS:
                for variant in VARIANTS:
                    key = f"{framework}/{variant}"
                    result = one_start(framework, variant, ingest.base_url, sink.base_url, load=repeat == 0)
                    if result.get("not_ok"):
                        raise RuntimeError(f"{key}: {result['not_ok']} responses were not 200")
                    starts.setdefault(key, []).append(result)
            log(f"  start-up: round {repeat + 1}/{repeats} done")
    summary = {
        key: {
            "first_response_s": statistics.median(r["first_response_s"] for r in runs),
            "first_response_cpu_s": statistics.median(r["first_response_cpu_s"] for r in runs),
            "rss": runs[0]["rss"],
            "peak_rss": runs[0]["peak_rss"],
        }
        for key, runs in starts.items()
    }
    return {"servers": summary, "repeats": repeats, "load": LOAD, "import_ms": import_times(max(3, repeats))}


def main(argv: list[str]) -> None:
    if argv[:1] == ["serve"]:
        serve(*argv[1:5])
        return
    print(json.dumps(run(repeats=int(argv[0]) if argv else 2), indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
