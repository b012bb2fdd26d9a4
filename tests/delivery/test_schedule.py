"""DeliverySchedule: why the delivery thread wakes, and how long it sleeps, by tables on a fake clock."""

from __future__ import annotations

from typing import Any

import pytest

from beacon_otel.common import cooperative
from beacon_otel.contract.event import RequestEvent
from beacon_otel.delivery.attempt import Delivery
from beacon_otel.delivery.health import DOWN_AFTER
from beacon_otel.delivery.log import DeliveryLog
from beacon_otel.delivery.outcome import FailureKind, Outcome, Verdict
from beacon_otel.delivery.schedule import FIRST_FLUSH, DeliverySchedule, Wake
from beacon_otel.delivery.spooling import IDLE_RECHECK, SpoolPolicy
from beacon_otel.delivery.stats import DeliveryStats

REFUSED = Outcome(Verdict.RETRY, detail="connection refused", kind=FailureKind.CONNECTION_REFUSED)
WAIT_20 = Outcome(Verdict.RETRY, 429, retry_after=20.0, kind=FailureKind.HTTP)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class EmptyStore:
    """A spool that takes every batch and never has one to give back."""

    problem = None

    def write(self, body: bytes, events: int, batch_id: str) -> bool:
        return True

    def claim(self) -> None:
        return None

    def pending(self) -> int:
        return 0


class NeverSends:
    """A transport the schedule never calls: it only decides."""

    def send(self, body: bytes, batch_id: str) -> Outcome:
        raise AssertionError("the schedule does not send")

    def reset(self) -> None: ...

    def close(self) -> None: ...


def event(n: int) -> RequestEvent:
    return RequestEvent(1_780_488_000_000_000_000, "GET", "/r", f"/r/{n}", 200, n, None, None)


def schedule(
    clock: Clock, *, spool: bool, failures: list[Outcome], events: int, sent_before: bool = True
) -> DeliverySchedule:
    """Batches of 3, a 60 s interval, 20 events of memory; ``events`` buffered after ``failures``.

    ``sent_before``: a batch went already (the first partial batch of a process waits less).
    """
    stats = DeliveryStats()
    log = DeliveryLog(url="https://ingest.test/v1/ingest", host="ingest.test", spool_path="/spool")
    policy = SpoolPolicy(EmptyStore(), stats=stats, log=log, clock=clock) if spool else None
    delivery = Delivery(
        NeverSends(), stats=stats, report=lambda error: None, log=log, spool=policy, clock=clock
    )
    made = DeliverySchedule(
        delivery, cooperative.primitives(), batch_size=3, flush_interval=60.0, max_buffer_size=20, clock=clock
    )
    if sent_before:
        for n in range(3):
            made.buffer.add(event(n))
        with made.sync.lock:
            assert made.why_awake() is Wake.SEND
        made.buffer.take_all(3)
        made.live_batch_taken()
    for outcome in failures:
        delivery.health.failed(outcome)
    for n in range(events):
        made.buffer.add(event(n))
    if spool:
        assert policy is not None
        policy.next_batch()  # looked once and found nothing: the next look is IDLE_RECHECK away
    return made


@pytest.mark.parametrize(
    ("spool", "failures", "events", "seconds_later", "expected"),
    [
        (False, [], 0, 0.0, None),  # nothing to do
        (False, [], 3, 0.0, Wake.SEND),  # a full batch goes at once
        (False, [], 2, 59.9, None),  # a partial batch waits for the interval
        (False, [], 2, 60.0, Wake.SEND),  # ... and goes when it is up
        (False, [REFUSED], 3, 0.0, None),  # a backoff holds the full batch (no disk to use)
        (True, [REFUSED], 3, 0.0, Wake.OFFLOAD),  # failing with a spool: a full batch goes to disk
        (True, [], 3, 0.0, Wake.SEND),  # answering: memory first, the batch is sent
        (True, [], 0, IDLE_RECHECK, Wake.REPLAY),  # the spool is worth another look
        (True, [WAIT_20] * DOWN_AFTER, 2, 10.0, None),  # Retry-After holds even the replay
    ],
)
def test_why_the_thread_wakes(
    spool: bool, failures: list[Outcome], events: int, seconds_later: float, expected: Wake | None
) -> None:
    """Shutdown first, then memory to disk (even in a backoff), then a due batch, then the spool."""
    clock = Clock()
    made = schedule(clock, spool=spool, failures=failures, events=events)
    clock.now += seconds_later
    with made.sync.lock:
        assert made.why_awake() is expected


def test_shutdown_wakes_the_thread_even_during_a_backoff() -> None:
    """stop() turns every state into STOP: the drain decides what can still go."""
    clock = Clock()
    made = schedule(clock, spool=True, failures=[WAIT_20] * DOWN_AFTER, events=3)
    with made.sync.lock:
        made.stop(clock() + 5.0)
        assert made.why_awake() is Wake.STOP
        assert made.deadline == 105.0


@pytest.mark.parametrize(
    ("spool", "failures", "events", "seconds"),
    [
        (False, [], 0, 60.0),  # idle: one interval
        (True, [], 2, IDLE_RECHECK),  # the next look at the spool comes before the interval
        (True, [], 0, IDLE_RECHECK),
    ],
)
def test_how_long_the_thread_sleeps(spool: bool, failures: list[Outcome], events: int, seconds: Any) -> None:
    """The thread sleeps until the first thing that may need it, never through a backoff's end."""
    clock = Clock()
    made = schedule(clock, spool=spool, failures=failures, events=events)
    with made.sync.lock:
        assert made.seconds_to_sleep() == pytest.approx(seconds)


@pytest.mark.parametrize(("seconds_later", "expected"), [(FIRST_FLUSH - 0.1, None), (FIRST_FLUSH, Wake.SEND)])
def test_first_partial_batch_of_a_process_goes_sooner(seconds_later: float, expected: Wake | None) -> None:
    """A new process's first partial batch waits FIRST_FLUSH (1 s), not the 60 s interval."""
    clock = Clock()
    made = schedule(clock, spool=False, failures=[], events=2, sent_before=False)
    with made.sync.lock:
        assert made.seconds_to_sleep() == pytest.approx(FIRST_FLUSH)
        clock.now += seconds_later
        assert made.why_awake() is expected


def test_after_the_first_batch_the_interval_applies() -> None:
    """Once a batch went, partial batches wait the whole flush_interval again."""
    clock = Clock()
    made = schedule(clock, spool=False, failures=[], events=2, sent_before=False)
    with made.sync.lock:
        clock.now += FIRST_FLUSH
        assert made.why_awake() is Wake.SEND
        assert made.why_awake() is Wake.SEND, "still due when the send step checks again"
        made.buffer.take_all(3)
        made.live_batch_taken()
        made.buffer.add(event(9))
        assert made.seconds_to_sleep() == pytest.approx(60.0)
        clock.now += 59.9
        assert made.why_awake() is None


@pytest.mark.parametrize("spool", [True, False])
def test_a_flush_during_a_backoff_goes_to_disk(spool: bool) -> None:
    """A flush (AWS Lambda's, after every invocation) does not wait out a backoff: memory goes to
    disk at once. Without a spool it waits, as the events have nowhere else to go."""
    clock = Clock()
    made = schedule(clock, spool=spool, failures=[REFUSED], events=2)
    with made.sync.lock:
        assert made.why_awake() is None  # backing off: nothing to do yet
        made._flush_requests += 1  # what flushed_by() does while it waits
        assert made.why_awake() is (Wake.OFFLOAD if spool else None)


def test_a_batch_to_retry_waits_for_the_backoff_and_no_longer() -> None:
    """A batch waiting for its retry wakes the thread when Retry-After ends, not an interval later."""
    clock = Clock()
    made = schedule(clock, spool=False, failures=[WAIT_20], events=3)
    with made.sync.lock:
        assert made.buffer.head(3) is not None  # cut, sent, refused: it waits in memory
        assert made.seconds_to_sleep() == pytest.approx(20.0)
        clock.now += 20.0
        assert made.why_awake() is Wake.SEND
