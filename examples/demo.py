"""The demo: a local Beacon ingest and its dashboard, the example shop instrumented, live traffic.

make demo                       (or: python examples/demo.py [--manual] [--rate N] [--requests N])

The dashboard's URL is the first line printed. Traffic keeps flowing (a few requests a second from
a mix of consumers, with 404s, validation errors and crashes) until Ctrl-C, which stops the shop
as a process manager would, so its last events are delivered, and prints what arrived.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

from beacon_otel.devingest import format_events

EXAMPLES = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_ingest() -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "beacon_otel.cli", "dev-ingest", "--port", "0", "--db", ":memory:", "--quiet"],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # Ctrl-C reaches the demo alone, which stops the others in order
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    match = re.search(r"(http://\S+/v1/ingest)", line)
    if not match:
        process.kill()
        raise SystemExit(f"the dev ingest did not start: {line!r}")
    return process, match.group(1)


def start_app(ingest_url: str, port: int, manual: bool) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "BEACON_INGEST_KEY": "demo-ingest-key",
        "BEACON_INGEST_URL": ingest_url,
        "BEACON_FLUSH_INTERVAL": "1",
        "PYTHONPATH": str(EXAMPLES),
    }
    uvicorn = [
        str(BIN / "uvicorn"),
        "--port",
        str(port),
        "--log-level",
        "critical",
    ]  # the crashes are on purpose
    if manual:
        command = [*uvicorn, "manual_setup:app"]
    else:
        command = [str(BIN / "opentelemetry-instrument"), *uvicorn, "shop_app:app"]
    process = subprocess.Popen(command, cwd=EXAMPLES, env=env, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            requests.get(f"http://127.0.0.1:{port}/health", timeout=1)
            return process
        except requests.ConnectionError:
            if process.poll() is not None:
                raise SystemExit("the example app exited during startup") from None
            time.sleep(0.1)
    process.kill()
    raise SystemExit("the example app did not start within 30 s")


CALLERS = [
    {"X-API-Key": "acme-prod"},
    {"X-API-Key": "acme-prod"},
    {"X-API-Key": "globex"},
    {"X-API-Key": "initech"},
    {"Authorization": "Bearer tok-123"},  # becomes hash_... : a bearer token is never sent as-is
    {},  # no credentials: consumer "-"
]


class Traffic:
    """Requests to the shop from a background thread, a few a second, until stopped."""

    def __init__(self, base: str, rate: float, limit: int | None) -> None:
        self.base = base
        self.interval = 1 / rate
        self.limit = limit
        self.statuses: dict[str, int] = {}
        self.sent = 0
        self.stopped = threading.Event()
        self.finished = threading.Event()
        self._rng = random.Random(7)
        self._thread = threading.Thread(target=self._run, name="demo-traffic", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.stopped.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            while not self.stopped.is_set() and (self.limit is None or self.sent < self.limit):
                response = self._one_request()
                key = str(response.status_code)
                self.statuses[key] = self.statuses.get(key, 0) + 1
                self.sent += 1
                self.stopped.wait(self.interval)
        finally:
            self.finished.set()

    def _one_request(self) -> requests.Response:
        """A mix of callers and outcomes: 200s, 404s, 422s with their invalid fields, crashes."""
        rng, base, n = self._rng, self.base, self.sent
        headers = rng.choice(CALLERS)
        roll = rng.random()
        # A fresh connection per request: uvicorn closes a connection after an app raises.
        if roll < 0.35:
            return requests.get(f"{base}/users/{rng.randint(1, 4)}", headers=headers, timeout=10)
        if roll < 0.55:
            price = rng.choice([9.99, 24.5, "free"])
            items: object = [{"sku": f"sku-{n}", "price": price}] if rng.random() < 0.9 else "none"
            return requests.post(
                f"{base}/orders?src=demo", json={"items": items}, headers=headers, timeout=10
            )
        if roll < 0.75:
            return requests.get(f"{base}/orders/{rng.randint(1, 30)}/invoice", headers=headers, timeout=10)
        if roll < 0.9:
            return requests.get(f"{base}/admin/reports/q{rng.randint(1, 4)}", headers=headers, timeout=10)
        return requests.get(f"{base}/no/such/page", headers=headers, timeout=10)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--manual", action="store_true", help="set up by hand instead of opentelemetry-instrument"
    )
    parser.add_argument("--rate", type=float, default=4.0, help="requests a second (%(default)s)")
    parser.add_argument("--requests", type=int, help="stop after this many (default: at Ctrl-C)")
    args = parser.parse_args()

    # Ctrl-C or SIGTERM ends the traffic; everything after it runs in order, uninterrupted.
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    ingest, ingest_url = start_ingest()
    base_url = ingest_url.removesuffix("/v1/ingest")
    dashboard = base_url + "/"
    print(f"Beacon dashboard: {dashboard}  (open it in a browser; Ctrl-C stops the demo)", flush=True)
    try:
        port = free_port()
        mode = "manual setup" if args.manual else "opentelemetry-instrument (zero code)"
        print(f"Local Beacon ingest at {ingest_url}")
        print(f"Example shop on http://127.0.0.1:{port}, instrumented by {mode}", flush=True)
        app = start_app(ingest_url, port, args.manual)
        traffic = Traffic(f"http://127.0.0.1:{port}", args.rate, args.requests)
        try:
            print(f"Sending about {args.rate:g} requests a second; Ctrl-C stops.", flush=True)
            traffic.start()
            while not stop.is_set() and not traffic.finished.is_set():
                stop.wait(0.2)
            traffic.stop()
        finally:
            # SIGTERM, as a process manager would: the shutdown flush delivers what is buffered.
            app.send_signal(signal.SIGTERM)
            app.wait(timeout=30)
        print("\nresponses by status: " + ", ".join(f"{k}: {v}" for k, v in sorted(traffic.statuses.items())))
        print("What arrived at the ingest:\n", flush=True)
        summary = subprocess.run(
            [sys.executable, "-m", "beacon_otel.cli", "summary", "--url", base_url], check=False
        )
        events = requests.get(f"{base_url}/v1/events", timeout=10).json()
        print(f"\n{traffic.sent} requests sent, {len(events)} Beacon events arrived. A few, as sent:\n")
        print(format_events(examples(events)), flush=True)
        return summary.returncode or int(len(events) != traffic.sent)
    finally:
        ingest.send_signal(signal.SIGTERM)
        ingest.wait(timeout=10)


def examples(events: list[dict[str, object]]) -> list[dict[str, object]]:
    """One event of each kind Beacon tells apart: a success, a crash, a validation failure, a 404."""
    kinds = [
        lambda e: e["error"] is None and e["status"] == 200 and e["consumer"] is not None,
        lambda e: e["error"] is not None,
        lambda e: "validation_errors" in e,
        lambda e: e["status"] == 404,
    ]
    return [found for kind in kinds if (found := next((e for e in events if kind(e)), None)) is not None]


if __name__ == "__main__":
    raise SystemExit(main())
