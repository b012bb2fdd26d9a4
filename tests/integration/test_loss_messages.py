"""What the log says when events are lost matches what happened, with an ingest that never answers.

Each test runs a real processor against a closed loopback port (connection refused), so nothing is
delivered, and reads Beacon's own log lines.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind

from beacon_otel import BeaconConfig, BeaconSpanProcessor

from .conftest import free_port

pytestmark = pytest.mark.integration


def end_spans(processor: BeaconSpanProcessor, count: int) -> None:
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("loss")
    for n in range(count):
        attributes = {"http.method": "GET", "http.target": f"/loss/{n}", "http.status_code": 200}
        tracer.start_span("GET", kind=SpanKind.SERVER, attributes=attributes).end()


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "beacon_otel" and r.levelno >= logging.WARNING
    ]


def unreachable(**settings: object) -> BeaconConfig:
    return BeaconConfig(
        ingest_key="bk_loss",
        ingest_url=f"http://127.0.0.1:{free_port()}",
        flush_interval=60,
        timeout=1,
        **settings,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("spool", "said"),
    [
        ("off", "dropped: the memory buffer is full and no spool is configured"),
        (
            "unwritable",
            "dropped: the memory buffer is full and the spool cannot take batches (cannot write to",
        ),
    ],
)
def test_a_full_buffer_says_why_the_spool_did_not_take_the_events(
    spool: str, said: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With the spool off or unwritable, the drop line does not claim that the spool is full."""
    (tmp_path / "a-file").write_text("not a directory")
    where = (
        {"max_storage_bytes": 0} if spool == "off" else {"storage_path": str(tmp_path / "a-file" / "spool")}
    )
    processor = unreachable(max_buffer_size=10, batch_size=10, **where)
    with caplog.at_level(logging.WARNING, logger="beacon_otel"):
        p = BeaconSpanProcessor(processor)
        end_spans(p, 30)
        p.shutdown()
    lines = [line for line in warnings(caplog) if "Beacon events dropped" in line]
    assert lines and all(said in line for line in lines), warnings(caplog)
    assert not any("could be written to the spool" in line for line in warnings(caplog))
    assert p.stats.snapshot()["dropped"]["buffer_full"] == 20


def test_events_left_at_shutdown_are_said_once_with_the_total(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No spool, ingest down: one line gives every event left at shutdown, as the summary does."""
    processor = BeaconSpanProcessor(unreachable(max_storage_bytes=0, batch_size=10, shutdown_timeout=0.5))
    with caplog.at_level(logging.WARNING, logger="beacon_otel"):
        end_spans(processor, 200)
        processor.shutdown()
    lost = processor.stats.snapshot()["dropped"]
    [line] = [line for line in warnings(caplog) if "not delivered before the shutdown deadline" in line]
    assert int(re.match(r"beacon-otel: (\d+) Beacon events", line)[1]) == lost["shutdown"]  # type: ignore[index]
    [summary] = [line for line in warnings(caplog) if "events sent" in line]
    assert f"shutdown={lost['shutdown']}" in summary
    assert sum(lost.values()) == 200
