"""The beacon-otel command line, run as a user runs it: a subprocess."""

from __future__ import annotations

import importlib.metadata
import json
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
from typing import Any

import requests

from beacon_otel.devingest import DevIngest, format_events
from tests.devingest.test_devingest import make_event


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `beacon-otel ARGS` to completion in a subprocess."""
    command = [sys.executable, "-m", "beacon_otel.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False, env=env)


def test_version_prints_the_installed_versions() -> None:
    """--version names beacon-otel's installed version and the OpenTelemetry SDK's, and exits 0."""
    result = run_cli("--version")
    assert result.returncode == 0, result.stderr
    beacon, sdk = importlib.metadata.version("beacon-otel"), importlib.metadata.version("opentelemetry-sdk")
    assert result.stdout.startswith(f"beacon-otel {beacon} (opentelemetry-sdk {sdk}, Python ")


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def post_events(url: str, events: list[dict[str, Any]]) -> None:
    body = json.dumps({"events": events}).encode()
    headers = {"Authorization": "Bearer k", "Content-Type": "application/json"}
    assert requests.post(url, data=body, headers=headers, timeout=10).status_code == 202


class Lines:
    """A subprocess whose stdout lines are read on a thread, so a test can wait for one."""

    def __init__(self, *args: str) -> None:
        command = [sys.executable, "-m", "beacon_otel.cli", *args]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.queue: queue.Queue[str] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.queue.put(line.rstrip("\n"))

    def next(self, timeout: float = 30) -> str:
        return self.queue.get(timeout=timeout)

    def stop(self) -> str:
        """Interrupt as Ctrl-C does; returns stderr."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        _, err = self.process.communicate(timeout=30)
        self.reader.join(10)
        return err


def test_tail_prints_each_event_as_it_arrives() -> None:
    """tail starts with the last N events, then prints one line per new event; Ctrl-C exits 0."""
    invalid = [{"field": "body.price", "message": "Field required"}]
    with DevIngest() as ingest:
        post_events(ingest.url, [make_event(path="/users/1"), make_event(path="/users/2")])
        tail = Lines("tail", "--url", ingest.base_url, "-n", "1", "--interval", "0.1", "--color", "always")
        try:
            first = tail.next()
            assert "/users/2 (/users/{user_id})" in first and "/users/1" not in first
            post_events(
                ingest.url,
                [
                    make_event(path="/users/3", status=500, error="KeyError: 'x'", consumer="acme"),
                    make_event(
                        method="POST", route="/orders", path="/orders", status=422, validation_errors=invalid
                    ),
                ],
            )
            error_line, invalid_line = tail.next(), tail.next()
        finally:
            err = tail.stop()
    assert tail.process.returncode == 0, err
    assert re.search(r"GET +/users/3 \(/users/\{user_id\}\) \x1b\[31m500\x1b\[0m 12ms acme", error_line)
    assert "\x1b[31mKeyError: 'x'\x1b[0m" in error_line
    assert "POST   /orders \x1b[33m422\x1b[0m" in invalid_line and "invalid: body.price" in invalid_line


def test_tail_without_an_ingest_says_how_to_start_one() -> None:
    """tail exits 2 with the command that starts a dev ingest when nothing listens."""
    port = free_port()
    result = run_cli("tail", "--url", f"http://127.0.0.1:{port}")
    assert result.returncode == 2
    assert f"Start it with: beacon-otel dev-ingest --port {port}" in result.stderr


def test_dev_ingest_help_says_the_db_keeps_data() -> None:
    """dev-ingest --help says that --db keeps events across runs, and where the dashboard is."""
    help_text = " ".join(run_cli("dev-ingest", "--help").stdout.split())
    assert "SQLite file that keeps events across runs" in help_text
    assert ":memory: keeps nothing after exit" in help_text
    assert "dashboard is at the same address" in help_text


def test_format_events_shows_errors_and_validation_within_100_columns() -> None:
    """The demo's table of events: error text or validation fields per event, under 100 columns."""
    invalid = [{"field": "body.items.0.price", "message": "Input should be a valid number"}]
    events = [
        make_event(path="/users/" + "9" * 80, consumer="c" * 90),
        make_event(status=500, error="RuntimeError: invoice renderer crashed on order 7 " * 4),
        make_event(method="POST", path="/orders", status=422, validation_errors=invalid),
    ]
    lines = format_events(events).splitlines()
    assert lines[0].split() == ["METHOD", "PATH", "STATUS", "MS", "CONSUMER", "ERROR", "/", "VALIDATION"]
    assert "RuntimeError: invoice renderer" in lines[2]
    assert "body.items.0.price: Input should" in lines[3]
    assert max(map(len, lines)) < 100
