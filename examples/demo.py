"""The demo: a local Beacon ingest, the example shop instrumented, some traffic, and what arrived.

make demo                       (or: python examples/demo.py [--manual] [--requests N])
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import signal
import socket
import subprocess
import sys
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
    process = subprocess.Popen(command, cwd=EXAMPLES, env=env)
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


def generate_traffic(base: str, count: int) -> dict[str, int]:
    """A mix of callers and outcomes: API keys, bearer tokens, 404s, 422s and crashes."""
    rng = random.Random(7)
    callers = [{"X-API-Key": "acme-prod"}, {"X-API-Key": "globex"}, {"Authorization": "Bearer tok-123"}, {}]
    statuses: dict[str, int] = {}
    # A fresh connection per request: uvicorn closes a connection after an app raises.
    session = requests
    if True:
        for n in range(count):
            headers = rng.choice(callers)
            roll = rng.random()
            if roll < 0.35:
                response = session.get(f"{base}/users/{rng.randint(1, 4)}", headers=headers)
            elif roll < 0.55:
                items = [{"sku": f"sku-{n}", "price": rng.choice([9.99, "free"])}]
                response = session.post(f"{base}/orders?src=demo", json={"items": items}, headers=headers)
            elif roll < 0.75:
                response = session.get(f"{base}/orders/{rng.randint(1, 30)}/invoice", headers=headers)
            elif roll < 0.9:
                response = session.get(f"{base}/admin/reports/q{rng.randint(1, 4)}", headers=headers)
            else:
                response = session.get(f"{base}/no/such/page", headers=headers)
            key = str(response.status_code)
            statuses[key] = statuses.get(key, 0) + 1
    return statuses


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--manual", action="store_true", help="set up by hand instead of opentelemetry-instrument"
    )
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument(
        "--keep", action="store_true", help="keep the ingest and its dashboard running until Ctrl-C"
    )
    args = parser.parse_args()

    ingest, ingest_url = start_ingest()
    port = free_port()
    mode = "manual setup" if args.manual else "opentelemetry-instrument (zero code)"
    dashboard = ingest_url.removesuffix("/v1/ingest") + "/"
    print(f"1. Local Beacon ingest at {ingest_url}")
    print(f"   Live dashboard: {dashboard}  (open it now; it updates as the traffic arrives)")
    print(f"2. Example shop on http://127.0.0.1:{port}, instrumented by {mode}")
    app = start_app(ingest_url, port, args.manual)
    try:
        print(f"3. Sending {args.requests} requests ...", flush=True)
        statuses = generate_traffic(f"http://127.0.0.1:{port}", args.requests)
        print("   responses by status: " + ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items())))
    finally:
        # SIGTERM, as a process manager would: the shutdown flush delivers what is buffered.
        app.send_signal(signal.SIGTERM)
        app.wait(timeout=30)
    print("4. What arrived at the ingest:\n", flush=True)
    summary = subprocess.run(
        [sys.executable, "-m", "beacon_otel.cli", "summary", "--url", ingest_url.removesuffix("/v1/ingest")],
        check=False,
    )
    events = requests.get(ingest_url.removesuffix("/ingest") + "/events", timeout=10).json()
    served = args.requests + 1  # the traffic plus the readiness probe
    print(f"\n{served} requests served, {len(events)} Beacon events arrived. A few of them, as sent:\n")
    print(format_events(examples(events)))
    print(f"\nEvery event and chart: {dashboard}")
    if args.keep:
        print("The ingest keeps running; Ctrl-C to stop.", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            ingest.wait()
    ingest.send_signal(signal.SIGTERM)
    ingest.wait(timeout=10)
    return summary.returncode or int(len(events) != served)


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
