"""`make demo`: the dashboard's URL first, live traffic until Ctrl-C, then a clean exit."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo.py"
DEADLINE = 60.0

pytestmark = pytest.mark.integration


@pytest.fixture
def demo() -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [sys.executable, str(DEMO), "--rate", "20"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    with process:
        yield process
        if process.poll() is None:
            process.kill()


def poll(url: str, done: Callable[[Any], bool], what: str) -> Any:
    """GET url until done(its JSON) holds, within the deadline."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        body = requests.get(url, timeout=10).json()
        if done(body):
            return body
        time.sleep(0.2)
    pytest.fail(f"within {DEADLINE:.0f} s: {what}; last answer {body}")


def test_demo_shows_the_dashboard_first_keeps_traffic_flowing_and_stops_cleanly_at_ctrl_c(
    demo: subprocess.Popen[str],
) -> None:
    """The first line names the dashboard; events keep arriving, from several consumers with
    404s, 422s and 500s, until SIGINT; then the shop's last events arrive and the demo exits 0."""
    assert demo.stdout is not None
    first = demo.stdout.readline()
    match = re.match(r"Beacon dashboard: (http://127\.0\.0\.1:\d+/) ", first)
    assert match, first
    dashboard = match.group(1)
    assert "<html" in requests.get(dashboard, timeout=10).text.lower()

    stats = f"{dashboard}v1/stats"
    earlier = poll(stats, lambda s: s["events_stored"] >= 5, "the first events")["events_stored"]
    poll(stats, lambda s: s["events_stored"] > earlier + 10, "more events, later")

    def varied(summary: dict[str, Any]) -> bool:
        statuses = set(summary["totals"]["statuses"])
        consumers = {row["consumer"] for row in summary["consumers"]}
        wanted = {"200", "404", "422", "500"}
        return (
            wanted <= statuses
            and {"acme-prod", "globex", "-"} <= consumers
            and any(c.startswith("hash_") for c in consumers)
        )

    poll(f"{dashboard}v1/summary", varied, "successes, 404s, 422s and 500s from a consumer mix")

    demo.send_signal(signal.SIGINT)
    output, _ = demo.communicate(timeout=DEADLINE)
    assert demo.returncode == 0, output
    sent, arrived = re.search(r"(\d+) requests sent, (\d+) Beacon events arrived", output).groups()  # type: ignore[union-attr]
    assert sent == arrived and int(sent) > earlier + 10, output
    with pytest.raises(requests.ConnectionError):
        requests.get(dashboard, timeout=5)
