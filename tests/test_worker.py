"""DeliveryWorker: batching, bounded buffer, retries, splitting, shutdown and fork."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from beacon_otel.event import RequestEvent
from beacon_otel.transport import Outcome, Verdict
from beacon_otel.worker import DeliveryError, DeliveryStats, DeliveryWorker


class ScriptedTransport:
    """Answers each send with the next scripted outcome (then ACCEPTED), recording every body."""

    def __init__(
        self, script: list[Outcome] | None = None, on_send: Callable[[], None] | None = None
    ) -> None:
        self.script = list(script or [])
        self.on_send = on_send
        self.attempts: list[tuple[float, list[dict[str, Any]]]] = []
        self.lock = threading.Lock()
        self.closed = False
        self.resets = 0

    def send(self, body: bytes) -> Outcome:
        if self.on_send:
            self.on_send()
        events = json.loads(body)["events"]
        with self.lock:
            self.attempts.append((time.monotonic(), events))
            return self.script.pop(0) if self.script else Outcome(Verdict.ACCEPTED, status=202)

    def delivered(self) -> list[int]:
        """Paths (as ints) of events in attempts that were accepted, in order."""
        with self.lock:
            return [e["duration_ms"] for _, events in self.attempts for e in events]

    def reset(self) -> None:
        self.resets += 1

    def close(self) -> None:
        self.closed = True


def event(n: int) -> RequestEvent:
    return RequestEvent(1_780_488_000_000_000_000, "GET", "/r", f"/r/{n}", 200, n, None, None)


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)


@pytest.fixture
def make_worker() -> Iterator[
    Callable[..., tuple[DeliveryWorker, ScriptedTransport, DeliveryStats, list[DeliveryError]]]
]:
    workers: list[DeliveryWorker] = []

    def build(transport: ScriptedTransport | None = None, **options: Any) -> Any:
        transport = transport or ScriptedTransport()
        stats = DeliveryStats()
        errors: list[DeliveryError] = []
        settings = {"batch_size": 3, "flush_interval": 60.0, "max_buffer_size": 100, "shutdown_timeout": 2.0}
        settings.update(options)
        worker = DeliveryWorker(transport, stats=stats, report=errors.append, **settings)
        workers.append(worker)
        return worker, transport, stats, errors

    yield build
    for worker in workers:
        worker.shutdown(timeout=0.5)


def test_full_batches_go_at_once_in_order(make_worker: Any) -> None:
    """A full batch is sent without waiting for the interval; order is kept."""
    worker, transport, stats, _ = make_worker()
    for n in range(7):
        worker.submit(event(n))
    wait_until(lambda: len(transport.attempts) == 2)
    assert [len(events) for _, events in transport.attempts] == [3, 3]
    assert worker.flush(2.0)
    assert transport.delivered() == list(range(7))
    assert stats.snapshot()["sent"] == 7


def test_interval_flush_sends_a_partial_batch(make_worker: Any) -> None:
    """A lone event goes out after flush_interval."""
    worker, transport, _, _ = make_worker(flush_interval=0.05)
    worker.submit(event(1))
    wait_until(lambda: transport.delivered() == [1])


def test_full_buffer_drops_the_oldest_and_counts(make_worker: Any) -> None:
    """Past max_buffer_size the oldest events go, each counted as buffer_full."""
    worker, transport, stats, _ = make_worker(batch_size=100, max_buffer_size=5)
    for n in range(8):
        assert worker.submit(event(n))
    assert worker.buffered() == 5
    assert worker.flush(2.0)
    assert transport.delivered() == [3, 4, 5, 6, 7]
    snapshot = stats.snapshot()
    assert (snapshot["queued"], snapshot["sent"], snapshot["dropped"]) == (8, 5, {"buffer_full": 3})


def test_transient_failure_is_retried_without_duplicates(
    make_worker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two 503s, then success: every event delivered once, retries counted."""
    monkeypatch.setattr("beacon_otel.worker.backoff_delay", lambda attempt: 0.01)
    transport = ScriptedTransport(
        [Outcome(Verdict.RETRY, 503), Outcome(Verdict.RETRY, status=None, detail="refused")]
    )
    worker, transport, stats, errors = make_worker(transport)
    for n in range(3):
        worker.submit(event(n))
    assert worker.flush(5.0)
    accepted = transport.attempts[-1][1]
    assert [e["duration_ms"] for e in accepted] == [0, 1, 2]
    assert len(transport.attempts) == 3
    snapshot = stats.snapshot()
    assert (snapshot["sent"], snapshot["retried"], snapshot["dropped_total"]) == (3, 6, 0)
    assert errors == []


def test_retry_after_is_honoured(make_worker: Any) -> None:
    """Nothing is sent inside the Retry-After window."""
    transport = ScriptedTransport([Outcome(Verdict.RETRY, 429, retry_after=0.4)])
    worker, transport, _, _ = make_worker(transport)
    for n in range(3):
        worker.submit(event(n))
    assert worker.flush(5.0)
    (first, _), (second, _) = transport.attempts
    assert second - first >= 0.4


def test_permanent_rejection_is_dropped_once_and_reported(make_worker: Any) -> None:
    """A 401 is not retried: counted, reported to on_error, the next batch still goes."""
    transport = ScriptedTransport([Outcome(Verdict.REJECTED, 401, detail="bad key")])
    worker, transport, stats, errors = make_worker(transport)
    for n in range(6):
        worker.submit(event(n))
    assert worker.flush(2.0)
    assert len(transport.attempts) == 2
    assert stats.snapshot()["dropped"] == {"rejected": 3}
    assert len(errors) == 1 and errors[0].status == 401 and errors[0].events == 3


def test_413_splits_the_batch_and_resends_the_halves(make_worker: Any) -> None:
    """A too-large batch is halved until it fits; nothing is lost or duplicated."""
    transport = ScriptedTransport([Outcome(Verdict.SPLIT, 413), Outcome(Verdict.SPLIT, 413)])
    worker, transport, stats, _ = make_worker(transport, batch_size=8)
    for n in range(8):
        worker.submit(event(n))
    assert worker.flush(2.0)
    sizes = [len(events) for _, events in transport.attempts]
    assert sizes == [8, 4, 2, 2, 4]
    accepted = [e["duration_ms"] for _, events in transport.attempts[2:] for e in events]
    assert accepted == list(range(8))
    assert stats.snapshot()["sent"] == 8


def test_retries_are_bounded(make_worker: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """An ingest that never recovers costs a bounded number of attempts, then a counted drop."""
    monkeypatch.setattr("beacon_otel.worker.backoff_delay", lambda attempt: 0.0)
    transport = ScriptedTransport([Outcome(Verdict.RETRY, 500)] * 50)
    worker, transport, stats, errors = make_worker(transport)
    for n in range(3):
        worker.submit(event(n))
    worker.flush(5.0)
    assert len(transport.attempts) == 6
    assert stats.snapshot()["dropped"] == {"retries_exhausted": 3}
    assert errors[0].reason == "retries_exhausted"


def test_shutdown_flushes_and_then_refuses(make_worker: Any) -> None:
    """Shutdown delivers what is buffered; later events are refused and counted."""
    worker, transport, stats, _ = make_worker()
    worker.submit(event(1))
    worker.shutdown(timeout=2.0)
    assert transport.delivered() == [1] and transport.closed
    assert worker.submit(event(2)) is False
    assert stats.snapshot()["dropped"] == {"after_shutdown": 1}


def test_shutdown_is_bounded_when_the_ingest_hangs(make_worker: Any) -> None:
    """A hung ingest cannot hold shutdown past its deadline; the loss is counted."""
    release = threading.Event()
    worker, _transport, stats, errors = make_worker(ScriptedTransport(on_send=lambda: release.wait(10)))
    worker.submit(event(1))
    worker.submit(event(2))
    worker.submit(event(3))
    wait_until(lambda: worker._busy)
    started = time.monotonic()
    worker.shutdown(timeout=0.3)
    elapsed = time.monotonic() - started
    release.set()
    assert elapsed < 3.0
    assert stats.snapshot()["dropped"] == {"shutdown": 3}
    assert errors and errors[-1].reason == "shutdown"


def test_submit_never_waits_for_the_network(make_worker: Any) -> None:
    """While a send hangs, submit() still returns at once and buffers."""
    release = threading.Event()
    worker, _, _, _ = make_worker(ScriptedTransport(on_send=lambda: release.wait(10)), batch_size=1)
    worker.submit(event(0))
    wait_until(lambda: worker._busy)
    for n in range(1, 50):
        assert worker.submit(event(n))
    assert worker.buffered() == 50
    release.set()
    assert worker.flush(5.0)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_child_starts_empty_and_delivers_its_own(make_worker: Any) -> None:
    """A forked child drops the parent's buffer (the parent sends it) and works on its own."""
    worker, transport, _, _ = make_worker(batch_size=100)
    worker.submit(event(1))
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            result = {"buffered_after_fork": worker.buffered(), "resets": transport.resets}
            worker.submit(event(2))
            result["flushed"] = worker.flush(2.0)
            result["child_delivered"] = transport.delivered()
            os.write(write_end, json.dumps(result).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        result = json.loads(pipe.read())
    os.waitpid(pid, 0)
    assert result == {"buffered_after_fork": 0, "resets": 1, "flushed": True, "child_delivered": [2]}
    assert worker.flush(2.0)
    assert transport.delivered() == [1]
