"""What the spool says: batches left on disk at shutdown, and their replay at the next start.

Both used to pass in silence: a process stopped during an outage said nothing of the events it
left on disk, and the next one sent them without a word.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from beacon_otel.devingest import DevIngest
from tests.support.waiting import wait_until

from .conftest import Launch

pytestmark = pytest.mark.integration

KEY = "spool-key"
UVICORN = ["uvicorn", "--host", "127.0.0.1", "--port", "{port}", "fastapi_app:app"]


def test_spooled_at_shutdown_and_replayed_at_start_are_said(launch: Launch, tmp_path: Path) -> None:
    """Ingest down at SIGTERM: one line with the batches left and where; the next process, with the
    ingest back, sends them and says so in one line, and every event arrives once."""
    spool = tmp_path / "spool"
    with DevIngest(ingest_key=KEY) as ingest:
        env = {
            "BEACON_INGEST_KEY": KEY,
            "BEACON_INGEST_URL": ingest.base_url,
            "BEACON_STORAGE_PATH": str(spool),
            "BEACON_SHUTDOWN_TIMEOUT": "1",
        }
        ingest.stop()
        first = launch(UVICORN, env)
        for n in (1, 2, 3):
            assert first.request("GET", f"/users/{n}")[0] == 200
        assert first.terminate() in (0, -15), first.log()
        (left,) = [line for line in first.log().splitlines() if "wait in the spool" in line]
        assert re.search(
            rf"\d+ batches wait in the spool at {re.escape(str(spool))}/\w+; they are sent", left
        )

        ingest.start()
        second = launch(UVICORN, env)  # no traffic: the spool is replayed at start
        events = ingest.wait_for_events(3, timeout=60)
        replayed = wait_until(
            lambda: [line for line in second.log().splitlines() if "waited in the spool" in line],
            30,
            "the replay line",
        )
        assert second.terminate() in (0, -15), second.log()
    assert sorted(e["path"] for e in events) == ["/users/1", "/users/2", "/users/3"]
    assert len(replayed) == 1 and re.search(
        r"sent 3 events \(\d+ batches\) that waited in the spool", replayed[0]
    )
    assert "wait in the spool" not in second.log()  # nothing left behind this time
