"""The ingest's health: backoff with full jitter, when it is down or hung, how long it failed."""

from __future__ import annotations

import pytest

from beacon_otel.delivery.health import DOWN_AFTER, IngestHealth, backoff_delay
from beacon_otel.delivery.outcome import FailureKind, Outcome, Verdict


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


REFUSED = Outcome(Verdict.RETRY, detail="connection refused", kind=FailureKind.CONNECTION_REFUSED)
TIMED_OUT = Outcome(Verdict.RETRY, detail="timed out after 5 s", kind=FailureKind.TIMEOUT)


@pytest.mark.parametrize(
    ("failures", "rand", "expected"),
    [
        (1, 1.0, 1.0),
        (2, 1.0, 2.0),
        (3, 0.5, 2.0),
        (6, 1.0, 30.0),  # capped
        (60, 1.0, 30.0),  # no overflow however long the outage
        (4, 0.0, 0.0),  # full jitter reaches zero
    ],
)
def test_backoff_is_exponential_with_full_jitter_and_capped(
    failures: int, rand: float, expected: float
) -> None:
    """The delay after n failures is uniform in [0, min(30, 2**(n-1))] seconds."""
    assert backoff_delay(failures, rand=lambda: rand) == expected


@pytest.mark.parametrize(
    ("outcomes", "ready_after", "down", "hung"),
    [
        ([REFUSED], 1.0, False, False),
        ([REFUSED] * DOWN_AFTER, 2.0, True, False),
        ([TIMED_OUT], 1.0, False, True),
        ([REFUSED, Outcome(Verdict.RETRY, 429, retry_after=20.0, kind=FailureKind.HTTP)], 20.0, True, False),
    ],
)
def test_failures_set_the_backoff_and_the_state(
    outcomes: list[Outcome], ready_after: float, down: bool, hung: bool
) -> None:
    """Each failure moves the next attempt out (Retry-After wins when longer); down and hung follow."""
    clock = Clock()
    health = IngestHealth(clock=clock, rand=lambda: 1.0)
    for outcome in outcomes:
        health.failed(outcome)
    assert not health.ready()
    assert health.seconds_to_wait() == pytest.approx(ready_after)
    clock.now += ready_after
    assert health.ready()
    assert (health.failing, health.down, health.hung) == (True, down, hung)


def test_success_clears_everything_and_says_how_long_it_failed() -> None:
    """The first success after failures returns the outage's length; later ones return None."""
    clock = Clock()
    health = IngestHealth(clock=clock, rand=lambda: 0.0)
    assert health.succeeded() is None
    health.failed(TIMED_OUT)
    clock.now += 7.5
    health.failed(REFUSED)
    assert health.succeeded() == pytest.approx(7.5)
    assert (health.failing, health.down, health.hung, health.ready()) == (False, False, False, True)
    assert health.succeeded() is None
