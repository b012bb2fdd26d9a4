"""Delivery under gevent and eventlet: green threads never deadlock on Beacon's locks.

Each case runs ``tests/apps/green_requests.py`` in a child process (monkey-patching cannot be
undone in the test process): 300 server spans end on 20 green threads, then a flush.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "apps" / "green_requests.py"


@pytest.mark.parametrize("moment", ["before", "after"])
@pytest.mark.parametrize("library", ["gevent", "eventlet"])
def test_green_threads_deliver_every_event(library: str, moment: str) -> None:
    """Patched before or after Beacon is set up, every span's event is delivered, nothing hangs.

    Patched after (what gunicorn's gevent and eventlet workers do to a forked master that had
    Beacon loaded), the delivery worker's lock was a native one: the request greenlet holding
    it yielded to start the delivery greenlet, which then blocked the only OS thread on it.
    """
    if importlib.util.find_spec(library) is None:  # not imported here: eventlet hooks fork()
        pytest.skip(f"{library} is not installed")
    result = subprocess.run(
        [sys.executable, "-W", "ignore", str(SCRIPT), library, moment],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["flushed"]
    assert report["events"] == report["expected"] == 300
    assert report["stats"]["dropped_total"] == 0
