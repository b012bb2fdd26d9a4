"""What a misbehaving ingest costs one POST: memory for a huge reply, time for a trickled one.

``python -m bench.scenarios.replies`` prints one JSON line per scenario. Each POST runs in a fresh child
process (its peak RSS is its own), against a loopback server in this process:

- ``huge``: a 500 reply of 300 MB, sent as fast as the client reads it;
- ``trickled-headers``: a status line, then a header one byte a second;
- ``trickled-body``: a 503 with its headers, then a body one byte a second.

The client is ``IngestTransport`` with ``BEACON_TIMEOUT``-style ``timeout=5``; a POST still
running after ``--cap`` seconds (120 by default) is reported as ``"capped"``. The transport's
constructor changed (it took a ``BeaconConfig`` before), so either form is used, which lets the
same command measure an older checkout (``PYTHONPATH=<old>/src python -m bench.scenarios.replies``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Callable

HUGE = 300 * 1024 * 1024
TIMEOUT = 5.0

CHILD = """
import inspect, json, resource, sys, time
from beacon_otel.delivery.transports.http import IngestTransport
url, timeout = sys.argv[1], float(sys.argv[2])
if "config" in inspect.signature(IngestTransport).parameters:
    from beacon_otel import BeaconConfig
    transport = IngestTransport(BeaconConfig(ingest_key="k", ingest_url=url, timeout=timeout))
else:
    transport = IngestTransport(url=url + "/v1/ingest", key="k", timeout=timeout)
send = transport.send
args = (b'{"events":[]}', "b1") if len(inspect.signature(send).parameters) > 1 else (b'{"events":[]}',)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.monotonic()
outcome = send(*args)
seconds = time.monotonic() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": round(seconds, 2), "rss_before_mib": round(before / 1024, 1),
                  "rss_peak_mib": round(peak / 1024, 1), "verdict": outcome.verdict.value,
                  "status": outcome.status, "detail": outcome.detail[:80]}))
"""


def huge(conn: socket.socket, stop: threading.Event) -> None:
    conn.sendall(f"HTTP/1.1 500 Error\r\nContent-Length: {HUGE}\r\n\r\n".encode())
    chunk = b"x" * 65536
    for _ in range(HUGE // len(chunk)):
        conn.sendall(chunk)


def trickled_headers(conn: socket.socket, stop: threading.Event) -> None:
    conn.sendall(b"HTTP/1.1 202 Accepted\r\nX-Slow: ")
    while not stop.wait(1.0):
        conn.sendall(b"a")


def trickled_body(conn: socket.socket, stop: threading.Event) -> None:
    conn.sendall(b"HTTP/1.1 503 Unavailable\r\nContent-Length: 100000\r\n\r\n")
    while not stop.wait(1.0):
        conn.sendall(b"a")


SCENARIOS: dict[str, Callable[[socket.socket, threading.Event], None]] = {
    "huge": huge,
    "trickled-headers": trickled_headers,
    "trickled-body": trickled_body,
}


def serve(behaviour: Callable[[socket.socket, threading.Event], None], stop: threading.Event) -> int:
    """A one-behaviour HTTP server on a free loopback port; returns the port."""
    listener = socket.create_server(("127.0.0.1", 0))

    def handle(conn: socket.socket) -> None:
        with conn:
            reader = conn.makefile("rb")
            length = 0
            while (line := reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            reader.read(length)
            with contextlib.suppress(OSError):  # the client hung up: what the scenario is about
                behaviour(conn, stop)

    def accept() -> None:
        with listener:
            listener.settimeout(0.2)
            while not stop.is_set():
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return int(listener.getsockname()[1])


def measure(name: str, cap: float) -> dict[str, object]:
    stop = threading.Event()
    port = serve(SCENARIOS[name], stop)
    try:
        done = subprocess.run(
            [sys.executable, "-c", CHILD, f"http://127.0.0.1:{port}", str(TIMEOUT)],
            capture_output=True,
            text=True,
            timeout=cap,
        )
        result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    except subprocess.TimeoutExpired:
        result = {"seconds": "capped", "cap_s": cap}
    finally:
        stop.set()
    return {"scenario": name, "timeout_s": TIMEOUT, **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", default=list(SCENARIOS))
    parser.add_argument("--cap", type=float, default=120.0)
    options = parser.parse_args()
    for name in options.scenarios:
        print(json.dumps(measure(name, options.cap)), flush=True)


if __name__ == "__main__":
    main()
