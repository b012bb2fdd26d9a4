"""Console mode: BEACON_DRY_RUN=true under a real opentelemetry-instrument shows each event."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

APP = """
from flask import Flask

app = Flask(__name__)


@app.get("/users/<int:user_id>")
def user(user_id):
    if user_id == 0:
        raise LookupError("no user 0")
    return {"id": user_id}


client = app.test_client()
client.get("/users/42", headers={"X-API-Key": "acme"})
client.get("/users/0")
"""


def test_dry_run_prints_each_event_without_an_ingest(tmp_path: Path) -> None:
    """With no key and no ingest, a dry run under opentelemetry-instrument prints one line per event
    (route, path, status, consumer, error) on stderr, and sends nothing."""
    (tmp_path / "app.py").write_text(APP)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BEACON_", "OTEL_"))}
    env |= {"BEACON_DRY_RUN": "true", "OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none"}
    env |= {"OTEL_LOGS_EXPORTER": "none", "XDG_STATE_HOME": str(tmp_path / "state")}
    instrument = str(Path(sys.executable).parent / "opentelemetry-instrument")
    result = subprocess.run(
        [instrument, sys.executable, "app.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("beacon-otel dry run: ")]
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith("beacon-otel dry run: GET /users/<int:user_id> path=/users/42 200 ")
    assert lines[0].endswith("ms consumer=acme")
    assert "path=/users/0 500 " in lines[1] and "error='LookupError: no user 0'" in lines[1]
    assert not (tmp_path / "state").exists()  # no spool either: nothing was ever to be sent
