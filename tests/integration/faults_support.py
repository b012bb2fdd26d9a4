"""Helpers for the fault-injection suite: paced traffic, RSS sampling, spool reading, accounting.

Every request of a run hits ``/items/{n}`` with a unique ``n``, so each event's ``path`` names the
request it came from: a number served but never delivered is lost, one delivered twice is a
duplicate. Waits poll with a deadline; threads stop on an event and their loops are bounded.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import hashlib
import http.client
import itertools
import json
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support import waiting

from .conftest import Server

# Fault scenarios poll the app under load: a slower poll keeps the probe out of the figures.
wait_until = functools.partial(waiting.wait_until, interval=0.05)
ITEM_PATH = re.compile(r"/items/(\d+)")
SPOOL_HEADER = re.compile(rb"beacon-spool v2 (\d+) [\x21-\x7e]+ ([0-9a-f]{64})")


def beacon_env(ingest_url: str, spool: Path, **overrides: str | None) -> dict[str, str | None]:
    """Beacon alone under opentelemetry-instrument, spooling into ``spool`` (a test's tmp dir)."""
    env: dict[str, str | None] = {
        "BEACON_INGEST_KEY": "ingest-key",
        "BEACON_INGEST_URL": ingest_url,
        "BEACON_STORAGE_PATH": str(spool),
        "BEACON_FLUSH_INTERVAL": "1",
        "BEACON_SHUTDOWN_TIMEOUT": "2",
        "OTEL_SERVICE_NAME": "beacon-faults",
        # The counters endpoint must not become an event itself.
        "OTEL_PYTHON_FASTAPI_EXCLUDED_URLS": "_beacon/stats",
        "OTEL_PYTHON_FLASK_EXCLUDED_URLS": "_beacon/stats",
    }
    env.update(overrides)
    return env


def summary(scenario: str, **figures: object) -> None:
    """One line of figures per scenario, shown by ``pytest -s``."""
    shown = " ".join(f"{name}={value}" for name, value in figures.items())
    print(f"\nFAULTS {scenario}: {shown}")


# -- traffic -----------------------------------------------------------------------------------


@dataclass
class Served:
    """One request the app answered."""

    n: int
    status: int
    pid: int | None
    at: float = 0.0
    """When the answer came (monotonic clock)."""


class Load:
    """Paced GETs of ``/items/{n}`` from a few threads, each ``n`` unique; records what was served.

    With ``keep_alive`` each thread reuses one connection (uvicorn); without, every request opens
    its own (gunicorn's sync workers close after each response, and fresh connections spread
    requests over the workers).
    """

    def __init__(
        self,
        port: int,
        *,
        rate: float,
        threads: int = 2,
        first: int = 0,
        keep_alive: bool = True,
        max_requests: int = 100_000,
    ) -> None:
        self.port = port
        self.rate = rate
        self.threads = threads
        self.keep_alive = keep_alive
        self._numbers = itertools.count(first)
        self._budget = max_requests
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []
        self.served: list[Served] = []
        self.failures: collections.Counter[str] = collections.Counter()
        self.attempted: set[int] = set()
        self.started_at = self.stopped_at = 0.0

    def _next(self) -> int | None:
        with self._lock:
            if self._budget <= 0:
                return None
            self._budget -= 1
            n = next(self._numbers)
            self.attempted.add(n)
            return n

    def _run(self) -> None:
        interval = self.threads / self.rate
        connection: http.client.HTTPConnection | None = None
        next_at = time.monotonic()
        try:
            while not self._stop.is_set():
                n = self._next()
                if n is None:
                    return
                if connection is None:
                    connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                try:
                    connection.request("GET", f"/items/{n}")
                    response = connection.getresponse()
                    body = response.read()
                    pid = json.loads(body).get("pid") if response.status == 200 else None
                    with self._lock:
                        self.served.append(Served(n, response.status, pid, time.monotonic()))
                    if not self.keep_alive or response.will_close:
                        connection.close()
                        connection = None
                except (OSError, http.client.HTTPException, ValueError) as exc:
                    with self._lock:
                        self.failures[type(exc).__name__] += 1
                    connection.close()
                    connection = None
                next_at += interval
                delay = next_at - time.monotonic()
                if delay < -1.0:
                    next_at = time.monotonic()  # far behind: pace from now rather than burst
                elif delay > 0:
                    self._stop.wait(delay)  # pacing, and a prompt stop
        finally:
            if connection is not None:
                connection.close()

    def start(self) -> Load:
        self.started_at = time.monotonic()
        self._workers = [
            threading.Thread(target=self._run, name=f"load-{i}", daemon=True) for i in range(self.threads)
        ]
        for worker in self._workers:
            worker.start()
        return self

    def stop(self) -> Load:
        self._stop.set()
        for worker in self._workers:
            worker.join(15)
        assert not any(worker.is_alive() for worker in self._workers), "load threads did not stop"
        self.stopped_at = time.monotonic()
        return self

    def run_for(self, seconds: float) -> Load:
        """Start, keep the pace for ``seconds``, stop."""
        self.start()
        self._stop.wait(seconds)
        return self.stop()

    def drain(self, timeout: float) -> Load:
        """Start (unless started), send the whole ``max_requests`` budget, stop; fail after ``timeout``."""
        if not self._workers:
            self.start()
        try:
            wait_until(lambda: all(not w.is_alive() for w in self._workers), timeout, "the requests sent")
        finally:
            self.stop()
        return self

    def ok(self) -> set[int]:
        """Numbers answered with 200."""
        with self._lock:
            return {s.n for s in self.served if s.status == 200}

    def pids(self) -> collections.Counter[int]:
        """Requests answered per worker pid."""
        with self._lock:
            return collections.Counter(s.pid for s in self.served if s.pid is not None)

    def achieved_rate(self) -> float:
        """Answers per second, from the start to the last answer (a budget may run out early)."""
        with self._lock:
            last = max((s.at for s in self.served), default=self.started_at)
            elapsed = last - self.started_at
            return len(self.served) / elapsed if elapsed > 0 else 0.0


# -- memory ------------------------------------------------------------------------------------


def rss_kib(pid: int) -> int | None:
    """VmRSS of a process in KiB, from /proc; None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    return int(match[1]) if match else None


class RssSampler:
    """Samples a process's RSS on a thread, labelled by the phase the test says it is in."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        self.pid = pid
        self.interval = interval
        self.phase = "before"
        self.samples: dict[str, list[int]] = collections.defaultdict(list)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            value = rss_kib(self.pid)
            if value is not None:
                self.samples[self.phase].append(value)
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def peak_mib(self, phase: str) -> float:
        return max(self.samples[phase], default=0) / 1024

    def last_mib(self, phase: str) -> float:
        values = self.samples[phase]
        return values[-1] / 1024 if values else 0.0


# -- processes ---------------------------------------------------------------------------------


def terminate_timed(server: Server, timeout: float = 30.0) -> float:
    """SIGTERM to the server's main process; seconds until it exited (fails past ``timeout``)."""
    assert server.process is not None
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    try:
        server.process.wait(timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {timeout}s after SIGTERM:\n{server.log()[-3000:]}")
    return time.monotonic() - started


def get_json(port: int, path: str) -> Any:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        assert response.status == 200, (path, response.status)
        return json.loads(response.read())
    finally:
        connection.close()


def stats_when_idle(port: int, timeout: float = 10.0) -> dict[str, Any]:
    """The app's Beacon counters once nothing is left in its memory."""
    found: dict[str, Any] = {}

    def idle() -> bool:
        found.update(get_json(port, "/_beacon/stats"))
        return found["buffered"] == 0

    wait_until(idle, timeout, "an empty delivery buffer")
    return found


def stats_by_worker(port: int, workers: int, timeout: float = 20.0) -> dict[int, dict[str, Any]]:
    """Every worker's Beacon counters, asking on fresh concurrent connections until each answered."""
    found: dict[int, dict[str, Any]] = {}
    lock = threading.Lock()
    done = threading.Event()

    def ask() -> None:
        for _ in range(200):  # bounded; fresh connections land on whichever worker accepts
            if done.is_set():
                return
            stats = get_json(port, "/_beacon/stats")
            with lock:
                found[stats["pid"]] = stats
                if len(found) >= workers:
                    done.set()

    askers = [threading.Thread(target=ask, daemon=True) for _ in range(2 * workers)]
    for asker in askers:
        asker.start()
    done.wait(timeout)
    for asker in askers:
        asker.join(timeout)
    assert len(found) >= workers, f"only workers {sorted(found)} answered"
    return found


# -- the spool on disk -------------------------------------------------------------------------


@dataclass
class SpoolContents:
    """What a spool directory holds, read without touching it."""

    batches: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Intact batch files (queued or leased), by file name, with their events."""
    corrupt: list[str] = field(default_factory=list)
    temporary: list[str] = field(default_factory=list)
    leased: list[str] = field(default_factory=list)

    def events(self) -> list[dict[str, Any]]:
        return [event for events in self.batches.values() for event in events]

    def files(self) -> int:
        return len(self.batches) + len(self.corrupt) + len(self.temporary)


def destination_dir(root: Path) -> Path:
    """The one destination subdirectory a process made under the spool root ``root``."""
    subdirectories = [path for path in root.iterdir() if path.is_dir()]
    assert len(subdirectories) == 1, f"expected one destination in {root}: {subdirectories}"
    return subdirectories[0]


def spool_files(root: Path) -> list[str]:
    """Names of every file under a spool root, in all its destination subdirectories."""
    if not root.is_dir():
        return []
    return sorted(path.name for path in root.rglob("*") if path.is_file())


def read_spool(directory: Path) -> SpoolContents:
    """Parse every file under a spool root (each destination subdirectory) or a destination's."""
    contents = SpoolContents()
    if not directory.is_dir():
        return contents
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        name = path.name
        if name.startswith(".beacon-spool-tmp-"):
            contents.temporary.append(name)
            continue
        if ".lease-" in name:
            contents.leased.append(name)
        try:
            data = path.read_bytes()
        except OSError:
            continue  # claimed or removed meanwhile
        header, _, body = data.partition(b"\n")
        match = SPOOL_HEADER.fullmatch(header)
        if match is None or hashlib.sha256(body).hexdigest().encode() != match[2]:
            contents.corrupt.append(name)
            continue
        events = json.loads(body)["events"]
        assert len(events) == int(match[1]), name
        contents.batches[name] = events
    return contents


# -- accounting --------------------------------------------------------------------------------


def item_numbers(events: Iterable[dict[str, Any]]) -> collections.Counter[int]:
    """How often each request number arrived, from the events' ``/items/{n}`` paths."""
    found: collections.Counter[int] = collections.Counter()
    for event in events:
        match = ITEM_PATH.fullmatch(event["path"])
        if match:
            found[int(match[1])] += 1
    return found


@dataclass(frozen=True)
class Tally:
    """Served requests against arrived events."""

    served: int
    arrived: int
    lost: int
    duplicated: int
    unexpected: int
    """Events for numbers that were never sent (should be impossible)."""


def tally(served: set[int], arrived: collections.Counter[int], attempted: set[int] | None = None) -> Tally:
    """Lost = served but never arrived; duplicated = arrived more than once."""
    sent = served if attempted is None else attempted
    return Tally(
        served=len(served),
        arrived=sum(arrived.values()),
        lost=len(served - set(arrived)),
        duplicated=sum(count - 1 for count in arrived.values() if count > 1),
        unexpected=len(set(arrived) - sent),
    )


# -- raw requests ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RawProbe:
    """One hand-made request; ``X-API-Key: probe-<i>-<key_suffix>`` names it in its event."""

    name: str
    request_line: bytes
    key_suffix: bytes = b""
    http10: bool = False

    def request(self, index: int) -> bytes:
        key = b"X-API-Key: probe-%d-" % index + self.key_suffix + b"\r\n"
        if self.http10:
            return self.request_line + key + b"\r\n"
        return self.request_line + b"Host: 127.0.0.1\r\nConnection: close\r\n" + key + b"\r\n"


BAD_INPUT = [
    RawProbe("8k-path", b"GET /items/" + b"a" * 8000 + b" HTTP/1.1\r\n"),
    RawProbe("2k-api-key", b"GET /items/key HTTP/1.1\r\n", b"k" * 2048),
    RawProbe("non-utf8-api-key", b"GET /items/key-bytes HTTP/1.1\r\n", b"\xff\xfe\x80"),
    RawProbe("pct-control", b"GET /items/%00%01%1b%7f HTTP/1.1\r\n"),
    RawProbe("pct-invalid-utf8", b"GET /items/%ff%fe HTTP/1.1\r\n"),
    RawProbe("pct-utf8", b"GET /items/caf%C3%A9 HTTP/1.1\r\n"),
    RawProbe("raw-non-utf8-path", b"GET /items/\xff\xfe HTTP/1.1\r\n"),
    RawProbe("raw-control-path", b"GET /items/a\x01b HTTP/1.1\r\n"),
    RawProbe("purge", b"PURGE /items/purge HTTP/1.1\r\n"),
    RawProbe("40-char-method", b"X" * 40 + b" /items/method HTTP/1.1\r\n"),
    RawProbe("m-search", b"M-SEARCH /items/search HTTP/1.1\r\n"),
    RawProbe("lower-case-method", b"get /items/lower HTTP/1.1\r\n"),
    RawProbe("3k-query", b"GET /items/query?x=" + b"y" * 3000 + b" HTTP/1.1\r\n"),
    RawProbe("12k-query", b"GET /items/query?x=" + b"y" * 12000 + b" HTTP/1.1\r\n"),
    RawProbe("pct-invalid-utf8-query", b"GET /items/query?q=%ff%fe HTTP/1.1\r\n"),
    RawProbe("raw-non-utf8-query", b"GET /items/query?q=\xff\xfe HTTP/1.1\r\n"),
    RawProbe("absolute-form", b"GET http://example.com/items/absolute HTTP/1.1\r\n"),
    RawProbe("asterisk-form", b"OPTIONS * HTTP/1.1\r\n"),
    RawProbe("http-1.0-no-host", b"GET /items/old HTTP/1.0\r\n", http10=True),
]


@dataclass(frozen=True)
class RawAnswer:
    """The status line of the answer, and whether the app (not the server alone) produced it."""

    status_line: str
    by_app: bool


def send_raw(port: int, data: bytes, timeout: float = 10.0) -> RawAnswer:
    """Send bytes as they are, read until the server closes; never raises for a bad answer."""
    chunks: list[bytes] = []
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        with contextlib.suppress(OSError):  # a reset or a timeout: whatever came is the answer
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    head = b"".join(chunks).partition(b"\r\n\r\n")[0]
    status_line = head.partition(b"\r\n")[0].decode("latin-1")
    return RawAnswer(status_line, b"\r\nx-served-by: app" in head.lower())
