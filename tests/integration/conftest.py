"""Real servers under opentelemetry-instrument, a strict dev ingest and an OTLP/HTTP receiver.

Everything runs over loopback: free ports, readiness polled with a deadline, every process
started in its own process group and killed in teardown, every wait bounded.
"""

from __future__ import annotations

import contextlib
import gzip
import http.client
import importlib.metadata
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from beacon_otel.devingest import DevIngest
from tests.support.apps import APP_PATH, APPS

VENV_BIN = Path(sys.executable).parent
READY_TIMEOUT = 30.0
EXIT_TIMEOUT = 30.0
SPAN_KIND_SERVER = 2  # opentelemetry.proto.trace.v1.Span.SpanKind.SPAN_KIND_SERVER


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- OTLP/HTTP receiver --------------------------------------------------------------------


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as an OTLP exporter sent it."""

    service: str
    name: str
    kind: int
    attributes: Mapping[str, Any]

    @property
    def is_server(self) -> bool:
        return self.kind == SPAN_KIND_SERVER


def _plain(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which == "array_value":
        return [_plain(item) for item in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _plain(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, which) if which else None


class OtlpReceiver:
    """A tiny OTLP/HTTP endpoint that keeps every span it is sent, with its service name."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._spans: list[ReceivedSpan] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver._keep(request)
                payload = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1/traces"

    def _keep(self, request: ExportTraceServiceRequest) -> None:
        spans = []
        for resource_spans in request.resource_spans:
            resource = {kv.key: _plain(kv.value) for kv in resource_spans.resource.attributes}
            service = str(resource.get("service.name", ""))
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    attributes = {kv.key: _plain(kv.value) for kv in span.attributes}
                    spans.append(ReceivedSpan(service, span.name, span.kind, attributes))
        with self._arrived:
            self._spans.extend(spans)
            self._arrived.notify_all()

    def spans(self, service: str) -> list[ReceivedSpan]:
        """Every span received so far from ``service``."""
        with self._lock:
            return [span for span in self._spans if span.service == service]

    def wait_for_server_spans(self, service: str, count: int, timeout: float = 10.0) -> None:
        """Block until ``service`` has sent ``count`` SERVER spans; fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while (got := sum(1 for s in self._spans if s.service == service and s.is_server)) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    pytest.fail(f"{service}: {got} of {count} server spans after {timeout}s")
                self._arrived.wait(remaining)

    def start(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


@pytest.fixture(scope="session")
def otlp() -> Iterator[OtlpReceiver]:
    """One receiver for the session; each run is told apart by its service.name."""
    receiver = OtlpReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture
def ingest() -> Iterator[DevIngest]:
    """A fresh strict dev ingest for one test."""
    with DevIngest() as server:
        yield server


# -- app servers ---------------------------------------------------------------------------


@dataclass
class Server:
    """One app server started under opentelemetry-instrument, in its own process group."""

    argv: list[str]
    env: dict[str, str]
    log_path: Path
    port: int
    cwd: Path = APPS
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    ready_timeout: float = READY_TIMEOUT

    def start(self) -> Server:
        ready_dir = self._watch_gunicorn_workers()
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.ready_timeout
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"{self.argv[1]} exited with {self.process.returncode}:\n{self.log()}")
            try:
                # A bare connect: readiness without a request that would become an event.
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                if ready_dir is None or len(list(ready_dir.iterdir())) >= self._gunicorn_workers():
                    return self
                if time.monotonic() > deadline:
                    pytest.fail(f"gunicorn workers not all booted after {self.ready_timeout}s:\n{self.log()}")
                time.sleep(0.05)
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"{self.argv[1]} not listening after {self.ready_timeout}s:\n{self.log()}")
                time.sleep(0.05)

    def _watch_gunicorn_workers(self) -> Path | None:
        """For gunicorn, a directory where every booted worker leaves a marker (gunicorn_ready.py)."""
        if "gunicorn" not in self.argv[:2] or "-c" in self.argv or "--config" in self.argv:
            return None
        ready_dir = self.log_path.with_name(self.log_path.stem + "-ready")
        ready_dir.mkdir()
        at = self.argv.index("gunicorn") + 1
        # -c, not --config: opentelemetry-instrument would take --config for one of its own.
        self.argv[at:at] = ["-c", str(APPS / "gunicorn_ready.py")]
        self.env["TEST_GUNICORN_READY_DIR"] = str(ready_dir)
        return ready_dir

    def gunicorn_workers_booted(self) -> bool:
        """Every worker gunicorn now runs has loaded the app (and it runs as many as asked for).

        Counting "Booting worker" log lines races a worker just forked, which logs that line only
        once it runs: the master's live children, read from /proc, leave no such window.
        """
        assert self.process is not None
        ready_dir = self.log_path.with_name(self.log_path.stem + "-ready")
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        try:
            workers = children.read_text().split()
        except OSError:
            return False
        return len(workers) == self._gunicorn_workers() and all(
            (ready_dir / f"worker-{pid}").exists() for pid in workers
        )

    def _gunicorn_workers(self) -> int:
        for flag in ("--workers", "-w"):
            if flag in self.argv:
                return int(self.argv[self.argv.index(flag) + 1])
        return 1

    def request(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
    ) -> tuple[int, bytes]:
        """One request on a fresh connection; returns (status, body)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
        try:
            connection.request(method, path, body=body, headers=dict(headers or {}))
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def terminate(self) -> int:
        """SIGTERM to the server's main process, as ``kill <pid>`` would; waits for it to end."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{self.argv[1]} still running {EXIT_TIMEOUT}s after SIGTERM:\n{self.log()}")

    def kill(self) -> None:
        """Kill the whole process group (workers included), whatever state it is in."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


Launch = Callable[..., Server]


def clean_environ() -> dict[str, str]:
    """This environment without any OpenTelemetry or Beacon setting, the venv first on PATH."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("OTEL_", "BEACON_")) and key not in ("PYTHONPATH", "DJANGO_SETTINGS_MODULE")
    }
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = APP_PATH  # every app by its module name, wherever the child runs
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Launch]:
    """Start ``opentelemetry-instrument <argv>`` with ``env``; every server is killed at teardown.

    ``argv`` may contain ``{port}``, replaced by a free port.
    """
    servers: list[Server] = []

    def start(argv: list[str], env: Mapping[str, str | None]) -> Server:
        port = free_port()
        full_env = clean_environ()
        for key, value in env.items():
            if value is None:
                full_env.pop(key, None)
            else:
                full_env[key] = value
        server = Server(
            argv=[str(VENV_BIN / "opentelemetry-instrument"), *(a.format(port=port) for a in argv)],
            env=full_env,
            log_path=tmp_path / f"server-{len(servers)}.log",
            port=port,
        )
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.kill()


@pytest.fixture(scope="session")
def distro_overlay(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """opentelemetry-distro, installed once per session into a directory for PYTHONPATH only.

    Its entry points become visible to the subprocess without touching the main venv.
    """
    version = importlib.metadata.version("opentelemetry-instrumentation")
    target = tmp_path_factory.mktemp("otel-distro-overlay")
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-deps",
        "--disable-pip-version-check",
        "--target",
        str(target),
        f"opentelemetry-distro=={version}",
    ]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired:
        pytest.skip(f"installing opentelemetry-distro=={version} took over 180 s")
    if result.returncode != 0:
        pytest.skip(f"opentelemetry-distro=={version} could not be installed: {result.stderr[-400:]}")
    return target
