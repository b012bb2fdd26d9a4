"""What a user reads about delivery: one line at start, failures in words, rate-limited, recovery."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import pytest

from beacon_otel.delivery.log import REPEAT_INTERVAL, DeliveryLog
from beacon_otel.delivery.outcome import FailureKind, Outcome, Verdict

REFUSED = Outcome(Verdict.RETRY, detail="connection refused", kind=FailureKind.CONNECTION_REFUSED)
DNS = Outcome(Verdict.RETRY, detail="DNS lookup failed for ingest.test", kind=FailureKind.DNS)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def log_and_clock() -> tuple[DeliveryLog, Clock]:
    clock = Clock()
    return DeliveryLog(
        url="https://ingest.test/v1/ingest", host="ingest.test", spool_path="/s", clock=clock
    ), clock


def messages(caplog: pytest.LogCaptureFixture, level: int = logging.INFO) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= level]


def test_failures_are_told_once_a_minute_per_kind(
    log_and_clock: tuple[DeliveryLog, Clock], caplog: pytest.LogCaptureFixture
) -> None:
    """The first failure is a WARNING in words; repeats of a kind wait a minute; a new kind is told."""
    log, clock = log_and_clock
    caplog.set_level(logging.INFO, logger="beacon_otel")
    log.failing(REFUSED, first=True, next_step="retrying in 1.0 s; events wait in memory")
    for _ in range(10):
        clock.now += 1
        log.failing(REFUSED, first=False, next_step="spooling to /s")
    log.failing(DNS, first=False, next_step="spooling to /s")
    clock.now += REPEAT_INTERVAL
    log.failing(REFUSED, first=False, next_step="spooling to /s")
    assert messages(caplog) == [
        "beacon-otel: cannot deliver to ingest.test: connection refused; "
        "retrying in 1.0 s; events wait in memory",
        "beacon-otel: still cannot deliver to ingest.test: DNS lookup failed for ingest.test; spooling to /s",
        "beacon-otel: still cannot deliver to ingest.test: connection refused; spooling to /s",
    ]


def test_recovery_is_told_with_the_delayed_events(
    log_and_clock: tuple[DeliveryLog, Clock], caplog: pytest.LogCaptureFixture
) -> None:
    """One INFO line when delivery works again, and the next failure is told at once."""
    log, _ = log_and_clock
    caplog.set_level(logging.INFO, logger="beacon_otel")
    log.failing(REFUSED, first=True, next_step="x")
    log.recovered(12.34, 250)
    log.failing(REFUSED, first=False, next_step="x")
    assert messages(caplog)[1:] == [
        "beacon-otel: delivery to ingest.test recovered after 12.3 s; 250 events were delayed",
        "beacon-otel: still cannot deliver to ingest.test: connection refused; x",
    ]


def test_attempts_are_readable_at_debug(
    log_and_clock: tuple[DeliveryLog, Clock], caplog: pytest.LogCaptureFixture
) -> None:
    """Every attempt at DEBUG: URL, batch id prefix, size and the outcome in words, no reprs."""
    log, _ = log_and_clock
    caplog.set_level(logging.DEBUG, logger="beacon_otel")
    log.attempt(REFUSED, 50, "0123456789abcdef" * 2, 0.0123, replay=False)
    log.attempt(Outcome(Verdict.ACCEPTED, 202), 50, "f" * 32, 0.002, replay=True)
    assert messages(caplog, logging.DEBUG) == [
        "beacon-otel: POST https://ingest.test/v1/ingest, batch 01234567 of 50 events: "
        "retry: connection refused in 12 ms",
        "beacon-otel: POST https://ingest.test/v1/ingest, spooled batch ffffffff of 50 events: "
        "accepted (HTTP 202) in 2 ms",
    ]


def run_unconfigured(code: str, **env: str) -> str:
    """stderr of a fresh interpreter that never configures logging."""
    completed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **env},
        check=True,
    )
    return completed.stderr


STARTED_AND_FAILING = """
    from beacon_otel.delivery.log import DeliveryLog, make_visible
    from beacon_otel.delivery.outcome import FailureKind, Outcome, Verdict
    import logging, sys
    make_visible(debug=sys.argv[-1] == "debug" or %s)
    log = DeliveryLog(url="https://ingest.test/v1/ingest", host="ingest.test", spool_path="/spool")
    log.started()
    outcome = Outcome(Verdict.RETRY, detail="connection refused", kind=FailureKind.CONNECTION_REFUSED)
    log.attempt(outcome, 3, "a" * 32, 0.001, replay=False)
    log.failing(outcome, first=True, next_step="retrying in 1.0 s; events wait in memory")
    %s
    log.recovered(3.0, 7)
"""


def test_lines_reach_stderr_in_an_app_that_never_configured_logging() -> None:
    """Start, failure and recovery are printed even though Python would print only warnings."""
    stderr = run_unconfigured(STARTED_AND_FAILING % ("False", ""))
    assert "INFO beacon-otel: sending to https://ingest.test/v1/ingest, spool at /spool" in stderr
    assert "WARNING beacon-otel: cannot deliver to ingest.test: connection refused; retrying" in stderr
    assert "INFO beacon-otel: delivery to ingest.test recovered after 3.0 s; 7 events were delayed" in stderr
    assert "POST" not in stderr  # attempts only with debug


def test_once_the_app_configures_logging_lines_go_its_way_only() -> None:
    """After logging.basicConfig each line is printed once, by the app's handler."""
    stderr = run_unconfigured(
        STARTED_AND_FAILING % ("False", "logging.basicConfig(format='APP %(message)s')")
    )
    assert stderr.count("cannot deliver to ingest.test") == 1
    assert stderr.count("recovered after 3.0 s") == 1
    assert "APP beacon-otel: delivery to ingest.test recovered" in stderr


def test_debug_prints_every_attempt_whatever_the_app_configured() -> None:
    """BEACON_DEBUG: every attempt on stderr, even with the root logger at WARNING."""
    stderr = run_unconfigured(
        STARTED_AND_FAILING.replace("import logging, sys", "import logging, sys; logging.basicConfig()")
        % ("True", "")
    )
    assert (
        "DEBUG beacon-otel: POST https://ingest.test/v1/ingest, batch aaaaaaaa of 3 events: retry" in stderr
    )
    assert stderr.count("cannot deliver to ingest.test") == 1


def test_going_to_disk_is_told_once_per_outage(
    log_and_clock: tuple[DeliveryLog, Clock], caplog: pytest.LogCaptureFixture
) -> None:
    """When batches start to wait on disk the user reads where, once; again after a recovery."""
    log, _ = log_and_clock
    caplog.set_level(logging.INFO, logger="beacon_otel")
    for _ in range(3):
        log.spooling()
    log.recovered(1.0, 10)
    log.spooling()
    lines = [m for m in messages(caplog) if "wait on disk" in m]
    assert lines == ["beacon-otel: ingest.test is still failing; events now wait on disk at /s"] * 2
