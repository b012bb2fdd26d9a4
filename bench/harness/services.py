"""The loopback servers the benchmarks deliver to, each in its own process.

A strict Beacon dev ingest (``python -m beacon_otel.cli dev-ingest``) and a sink that answers
200 to any POST (OTLP/HTTP traces, peekapi's events). Each runs in a separate process so that
its CPU is never counted against the process being measured, and neither competes with it
for the GIL.

``python -m bench.harness.services sink`` runs the sink in the foreground.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

READY_TIMEOUT = 30.0
_LISTENING = re.compile(r"listening on (http://\S+)")


# -- the sink --------------------------------------------------------------------------------


class _SinkHandler(BaseHTTPRequestHandler):
    """Answers every POST at once and counts what came only when asked (GET).

    Decoding on arrival would cost the sink's core (wrk's, in the real-server benchmark) a
    protobuf parse per OTLP export, tens of milliseconds for a large one, while wrk measures.
    """

    protocol_version = "HTTP/1.1"  # keep-alive, as every exporter's pooled session expects
    disable_nagle_algorithm = True
    counts: ClassVar[dict[str, int]] = {"requests": 0, "spans": 0, "server_spans": 0, "events": 0, "bytes": 0}
    pending: ClassVar[list[tuple[str, bool, bytes]]] = []
    """Bodies received and not yet counted: (path, gzipped, body)."""
    lock = threading.Lock()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.lock:
            self.counts["requests"] += 1
            self.counts["bytes"] += len(body)
            self.pending.append((self.path, self.headers.get("Content-Encoding") == "gzip", body))
        self._answer(200, b"{}", "application/json")

    def do_GET(self) -> None:
        with self.lock:
            pending, self.pending[:] = list(self.pending), []
        found = {"spans": 0, "server_spans": 0, "events": 0}
        for path, gzipped, body in pending:
            if gzipped:
                body = gzip.decompress(body)
            if path.startswith("/v1/traces"):
                spans, server = _count_spans(body)
                found["spans"] += spans
                found["server_spans"] += server
            else:
                with contextlib.suppress(ValueError):
                    payload = json.loads(body)
                    found["events"] += len(payload) if isinstance(payload, list) else len(payload.get("events", ()))
        with self.lock:
            for key, value in found.items():
                self.counts[key] += value
            data = json.dumps(self.counts).encode()
        self._answer(200, data, "application/json")

    def _answer(self, status: int, data: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _count_spans(body: bytes) -> tuple[int, int]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    request = ExportTraceServiceRequest.FromString(body)
    spans = server = 0
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans += 1
                server += span.kind == 2  # SPAN_KIND_SERVER
    return spans, server


def serve_sink() -> None:
    """Serve the sink on a free loopback port until SIGTERM; print the URL first."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SinkHandler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"Sink listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever(poll_interval=0.1)


# -- running them ----------------------------------------------------------------------------


class Service:
    """A server process started by a benchmark, with the base URL it printed."""

    def __init__(self, args: list[str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        self.base_url = self._wait_for_url()

    def _wait_for_url(self) -> str:
        assert self.process.stdout is not None
        timer = threading.Timer(READY_TIMEOUT, self.process.kill)
        timer.start()
        try:
            for line in self.process.stdout:
                if match := _LISTENING.search(line):
                    url = match.group(1)
                    return url.removesuffix("/v1/ingest")
        finally:
            timer.cancel()
        raise RuntimeError(f"{self.process.args} exited without printing its URL")

    def get(self, path: str) -> Any:
        """GET a JSON document from the server."""
        with urllib.request.urlopen(self.base_url + path, timeout=10) as response:
            return json.load(response)

    def post(self, path: str) -> Any:
        """POST an empty JSON object (the dev ingest's /v1/_reset takes JSON only)."""
        request = urllib.request.Request(
            self.base_url + path, data=b"{}", headers={"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    def cpu_seconds(self) -> float:
        """User + system CPU the server process has used so far (Linux /proc)."""
        with open(f"/proc/{self.process.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not end within five seconds."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


def dev_ingest() -> Service:
    """The strict dev ingest, storing in memory, in its own process."""
    return Service(["-m", "beacon_otel.cli", "dev-ingest", "--port", "0", "--db", ":memory:", "--quiet"])


def sink() -> Service:
    """The accept-anything sink, in its own process."""
    return Service(["-m", "bench.harness.services", "sink"])


@contextlib.contextmanager
def running(*services: Service) -> Iterator[tuple[Service, ...]]:
    """Stop every service on the way out, whatever happened."""
    try:
        yield services
    finally:
        for service in services:
            service.stop()


if __name__ == "__main__":
    if sys.argv[1:] != ["sink"]:
        sys.exit("usage: python -m bench.harness.services sink")
    serve_sink()
