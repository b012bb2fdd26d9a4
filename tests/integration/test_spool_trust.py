"""The spool across restarts: another key's batches, a clock fixed by NTP, files that are not batches.

Each test spools batches from one process (``tests/apps/spool_client.py write``) and runs Beacon in
another (``spool_client.py serve``, or ``beacon-otel spool-deliver``) against the strict dev ingest
over loopback, as a restarted service would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from beacon_otel.devingest import DevIngest
from beacon_otel.spool import files
from beacon_otel.spool.store import destination_fingerprint

from .conftest import APPS, clean_environ, free_port

pytestmark = pytest.mark.integration

CLIENT = str(APPS / "spool_client.py")
DAY = 86_400


def beacon(tmp_path: Path, ingest: DevIngest, key: str) -> dict[str, str]:
    return clean_environ() | {
        "BEACON_INGEST_KEY": key,
        "BEACON_INGEST_URL": ingest.base_url,
        "BEACON_STORAGE_PATH": str(tmp_path / "spool"),
        "BEACON_FLUSH_INTERVAL": "60",
    }


def run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)


def spool_batches(env: dict[str, str], url: str, key: str, batches: int, events: int, offset: float) -> None:
    result = run([sys.executable, CLIENT, "write", url, key, str(batches), str(events), str(offset)], env)
    assert result.returncode == 0, result.stderr


def serve(env: dict[str, str], spans: int) -> tuple[dict[str, object], str]:
    result = run([sys.executable, CLIENT, "serve", str(spans)], env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stderr


def spooled_paths(ingest: DevIngest) -> list[str]:
    return [e["path"] for e in ingest.events() if e["path"].startswith("/spooled/")]


def test_a_rotated_key_leaves_its_batches_said_and_delivered_only_with_that_key(tmp_path: Path) -> None:
    """300 events spooled under bk_old; restarted with bk_new: one WARNING names them, none is sent
    with bk_new; ``beacon-otel spool-deliver`` with bk_old sends all 300 with bk_old."""
    port = free_port()
    with DevIngest(port=port, ingest_key="bk_new") as ingest:
        old = beacon(tmp_path, ingest, "bk_old")
        spool_batches(old, ingest.url, "bk_old", batches=3, events=100, offset=0)
        stats, log = serve(beacon(tmp_path, ingest, "bk_new"), spans=5)
        assert stats["sent"] == 5
        assert spooled_paths(ingest) == []
        warnings = [line for line in log.splitlines() if "other ingest URL or key" in line]
        assert len(warnings) == 1, log
        assert "holds 300 events in 3 batches for 1 other ingest URL or key" in warnings[0]
        assert "bk_old" not in log
    with DevIngest(port=port, ingest_key="bk_old") as ingest:  # the same ingest, now refusing bk_new
        result = run([sys.executable, "-m", "beacon_otel.cli", "spool-deliver"], old)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "sent 300 events; 0 refused; 0 batches left" in result.stdout
        assert sorted(spooled_paths(ingest)) == sorted(f"/spooled/{n}" for n in range(300))


def test_batches_written_while_the_clock_was_days_behind_are_delivered(tmp_path: Path) -> None:
    """2,000 events spooled with the wall clock 3 days behind; after NTP and a restart, all arrive."""
    with DevIngest() as ingest:
        env = beacon(tmp_path, ingest, "bk_clock")
        spool_batches(env, ingest.url, "bk_clock", batches=20, events=100, offset=-3 * DAY)
        stats, log = serve(env, spans=1)
        assert stats["dropped_total"] == 0, log
        assert len(spooled_paths(ingest)) == 2_000
        assert "expired" not in log


def test_a_fifo_and_a_crafted_batch_are_set_aside_and_live_delivery_goes_on(tmp_path: Path) -> None:
    """A FIFO named like a batch and a checksum-valid batch of non-objects: both quarantined and
    counted, every live event delivered."""
    with DevIngest() as ingest:
        env = beacon(tmp_path, ingest, "bk_files")
        directory = tmp_path / "spool" / destination_fingerprint(ingest.url, "bk_files")
        directory.mkdir(parents=True, mode=0o700)
        os.chmod(tmp_path / "spool", 0o700)
        os.mkfifo(directory / "beacon-spool-v2-00000000000000000001-1-000001-0000000a.batch", 0o600)
        crafted = b'{"events":[1,2,3]}'
        (directory / "beacon-spool-v2-00000000000000000002-1-000002-0000000b.batch").write_bytes(
            files.encode(crafted, 3, "crafted-batch")
        )
        stats, log = serve(env, spans=50)
    assert stats["sent"] == 50, log
    assert stats["dropped"] == {"spool_quarantined": 3}
    assert stats["spool"] == {"pending": 0, "quarantined": 2}
    assert sorted(p.name for p in directory.iterdir()) == [
        ".beacon-spool-quarantined-beacon-spool-v2-00000000000000000001-1-000001-0000000a.batch",
        ".beacon-spool-quarantined-beacon-spool-v2-00000000000000000002-1-000002-0000000b.batch",
    ]
    assert log.count("is not a batch") == 2, log
