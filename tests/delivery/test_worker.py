"""DeliveryWorker: batching, bounded buffer, retries, splitting, shutdown and fork."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import select
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from beacon_otel.contract.event import RequestEvent
from beacon_otel.delivery.attempt import Delivery
from beacon_otel.delivery.log import DeliveryLog
from beacon_otel.delivery.outcome import FailureKind
from beacon_otel.delivery.spooling import SpoolPolicy
from beacon_otel.delivery.stats import DeliveryError, DeliveryStats
from beacon_otel.delivery.transports.http import Outcome, Verdict
from beacon_otel.delivery.worker import DeliveryWorker
from tests.support.waiting import wait_until


class ScriptedTransport:
    """Answers each send with the next scripted outcome (then ACCEPTED), recording every body."""

    def __init__(
        self, script: list[Outcome] | None = None, on_send: Callable[[], None] | None = None
    ) -> None:
        self.script = list(script or [])
        self.on_send = on_send
        self.attempts: list[tuple[float, list[dict[str, Any]]]] = []
        self.batch_ids: list[str] = []
        self.lock = threading.Lock()
        self.closed = False
        self.resets = 0

    def send(self, body: bytes, batch_id: str) -> Outcome:
        if self.on_send:
            self.on_send()
        events = json.loads(body)["events"]
        with self.lock:
            self.batch_ids.append(batch_id)
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


def build_worker(
    transport: Any,
    stats: DeliveryStats,
    report: Callable[[DeliveryError], None],
    *,
    spool: Any = None,
    clock: Callable[[], float] = time.monotonic,
    **settings: Any,
) -> DeliveryWorker:
    """A worker wired as the processor wires it, with an in-memory store for a spool."""
    log = DeliveryLog(url="https://ingest.test/v1/ingest", host="ingest.test", spool_path="/spool")
    policy = SpoolPolicy(spool, stats=stats, log=log, clock=clock) if spool is not None else None
    delivery = Delivery(transport, stats=stats, report=report, log=log, spool=policy, clock=clock)
    return DeliveryWorker(delivery, clock=clock, **settings)


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
        worker = build_worker(transport, stats, errors.append, **settings)
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
    monkeypatch.setattr("beacon_otel.delivery.health.backoff_delay", lambda failures, **_: 0.01)
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
    # on_error hears of each retry, with its outcome; nothing was lost.
    assert [(e.reason, e.events, e.status) for e in errors] == [("retrying", 3, 503), ("retrying", 3, None)]
    assert errors[1].outcome is not None and errors[1].outcome.detail == "refused"
    assert len(set(transport.batch_ids)) == 1  # a retry is the same batch to the ingest


def test_recovery_counts_the_events_the_failure_delayed(
    make_worker: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The recovery line counts the failed batch's events and every event queued while failing."""
    caplog.set_level(logging.INFO, logger="beacon_otel")
    monkeypatch.setattr("beacon_otel.delivery.health.backoff_delay", lambda failures, **_: 0.0)
    sends: list[int] = []
    release = threading.Event()

    def on_send() -> None:
        sends.append(1)
        if len(sends) == 2:  # the retry waits while more requests come in
            release.wait(5.0)

    transport = ScriptedTransport([Outcome(Verdict.RETRY, 503)], on_send=on_send)
    worker, transport, _, _ = make_worker(transport)
    for n in range(3):
        worker.submit(event(n))
    wait_until(lambda: len(sends) == 2)
    for n in range(3, 5):
        worker.submit(event(n))
    release.set()
    assert worker.flush(5.0)
    assert sorted(transport.delivered()[3:]) == list(range(5))
    recovered = [r.getMessage() for r in caplog.records if "recovered after" in r.getMessage()]
    assert len(recovered) == 1 and recovered[0].endswith("; 5 events were delayed")


def test_each_batch_and_each_split_half_has_its_own_id(make_worker: Any) -> None:
    """Idempotency keys: distinct per batch, and a 413's halves each get a new one."""
    transport = ScriptedTransport([Outcome(Verdict.SPLIT, 413)])
    worker, transport, _, _ = make_worker(transport, batch_size=4)
    for n in range(8):
        worker.submit(event(n))
    assert worker.flush(2.0)
    # 4 (refused), its halves 2 + 2, then the second 4 whole: accepted halves probe the limit up.
    assert [len(events) for _, events in transport.attempts] == [4, 2, 2, 4]
    assert len(set(transport.batch_ids)) == 4
    assert all(len(batch_id) == 32 for batch_id in transport.batch_ids)


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
    # 8 and its first half refused, the quarter halves accepted; each acceptance doubles the
    # limit again, so the second half of 8 goes whole.
    assert sizes == [8, 4, 2, 2, 4]
    accepted = [e["duration_ms"] for _, events in transport.attempts[2:] for e in events]
    assert accepted == list(range(8))
    assert stats.snapshot()["sent"] == 8


def test_retries_are_bounded(make_worker: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """An ingest that never recovers costs a bounded number of attempts, then a counted drop."""
    monkeypatch.setattr("beacon_otel.delivery.health.backoff_delay", lambda failures, **_: 0.0)
    transport = ScriptedTransport([Outcome(Verdict.RETRY, 500)] * 50)
    worker, transport, stats, errors = make_worker(transport)
    for n in range(3):
        worker.submit(event(n))
    worker.flush(5.0)
    assert len(transport.attempts) == 6
    assert stats.snapshot()["dropped"] == {"retries_exhausted": 3}
    assert [e.reason for e in errors] == ["retrying"] * 6 + ["retries_exhausted"]


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


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_while_the_counters_are_locked_never_blocks_the_child(make_worker: Any) -> None:
    """A fork taken while the delivery thread holds the counters' lock leaves the child free."""
    worker, _, stats, _ = make_worker(batch_size=100)
    worker.submit(event(1))
    read_end, write_end = os.pipe()
    with stats._lock:  # as the parent's delivery thread may, at the moment of the fork
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            try:
                worker.submit(event(2))  # counts the event: would wait forever on the old lock
                os.write(write_end, json.dumps(stats.snapshot()).encode())
            finally:
                os._exit(0)
    os.close(write_end)
    try:
        ready, _, _ = select.select([read_end], [], [], 10.0)
        assert ready, "the child blocked on the counters' lock"
        with os.fdopen(read_end) as pipe:
            counted = json.loads(pipe.read())
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert counted["queued"] == 1, "the child counts its own event, not the parent's"


# -- with a spool --------------------------------------------------------------------------


class MemoryStore:
    """An in-memory stand-in for the disk spool with the same lease semantics."""

    def __init__(self, bodies: list[bytes] | None = None) -> None:
        self.lock = threading.Lock()
        self.waiting: list[tuple[bytes, int, str]] = [
            (b, len(json.loads(b)["events"]), f"spooled{i}") for i, b in enumerate(bodies or [])
        ]
        self.acked: list[bytes] = []
        self.on_ack: Callable[[], None] | None = None
        self.refuse = False
        self.problem: str | None = None

    def write(self, body: bytes, events: int, batch_id: str) -> bool:
        if self.refuse:
            self.problem = "spool full (100 of 100 bytes) at /spool"
            return False
        with self.lock:
            self.waiting.append((body, events, batch_id))
        return True

    def claim(self) -> Any:
        with self.lock:
            if not self.waiting:
                return None
            body, events, batch_id = self.waiting.pop(0)
        store = self

        class Leased:
            def __init__(self) -> None:
                self.body, self.events, self.batch_id = body, events, batch_id

            def ack(self) -> None:
                if store.on_ack is not None:
                    store.on_ack()
                store.acked.append(body)

            def release(self) -> None:
                with store.lock:
                    store.waiting.insert(0, (body, events, batch_id))

        return Leased()

    def pending(self) -> int:
        with self.lock:
            return len(self.waiting)

    def spooled_events(self) -> list[int]:
        with self.lock:
            return [e["duration_ms"] for body, _, _ in self.waiting for e in json.loads(body)["events"]]


def body_of(*numbers: int) -> bytes:
    return json.dumps({"events": [event(n).as_dict() for n in numbers]}).encode()


def test_exhausted_batches_are_spooled_not_dropped(make_worker: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """After MAX_ATTEMPTS the batch waits on disk, counted as spooled, nothing dropped."""
    monkeypatch.setattr("beacon_otel.delivery.health.backoff_delay", lambda failures, **_: 0.0)
    store = MemoryStore()
    transport = ScriptedTransport([Outcome(Verdict.RETRY, 503)] * 6)
    worker, transport, stats, errors = make_worker(transport, spool=store)
    for n in range(3):
        worker.submit(event(n))
    wait_until(lambda: stats.snapshot()["spooled"] == 3)
    assert store.spooled_events() == [0, 1, 2] or stats.snapshot()["recovered"] == 3
    assert stats.snapshot()["dropped_total"] == 0
    assert {e.reason for e in errors} == {"retrying"}


def test_outage_moves_full_batches_to_the_spool_and_replays_them(
    make_worker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the ingest is down full batches go to disk; when it is back all arrive once, in order."""
    monkeypatch.setattr("beacon_otel.delivery.health.backoff_delay", lambda failures, **_: 0.02)
    down = threading.Event()
    down.set()

    class Outage(ScriptedTransport):
        def send(self, body: bytes, batch_id: str) -> Outcome:
            if down.is_set():
                with self.lock:
                    self.attempts.append((time.monotonic(), []))
                return Outcome(Verdict.RETRY, detail="connection refused")
            return super().send(body, batch_id)

    store = MemoryStore()
    worker, transport, stats, _ = make_worker(Outage(), spool=store, max_buffer_size=10)
    for n in range(3):
        worker.submit(event(n))
    wait_until(lambda: stats.snapshot()["spooled"] == 3)  # first batch exhausted its attempts
    for n in range(3, 30):
        worker.submit(event(n))
        if n % 3 == 2:
            wait_until(lambda: worker.buffered() < 3)
    wait_until(lambda: stats.snapshot()["spooled"] >= 27)
    down.clear()
    wait_until(lambda: stats.snapshot()["sent"] + stats.snapshot()["recovered"] == 30)
    delivered = sorted(transport.delivered())
    assert delivered == list(range(30))
    assert stats.snapshot()["dropped_total"] == 0


def test_spool_left_by_an_earlier_run_is_replayed_at_start(make_worker: Any) -> None:
    """Batches on disk at startup are delivered oldest first with no new traffic."""
    store = MemoryStore([body_of(1, 2), body_of(3), body_of(4, 5)])
    _, transport, stats, _ = make_worker(spool=store)
    wait_until(lambda: stats.snapshot()["recovered"] == 5)
    assert transport.delivered() == [1, 2, 3, 4, 5]
    assert store.pending() == 0 and len(store.acked) == 3


def test_the_first_event_wakes_a_thread_idle_since_the_start_replay(make_worker: Any) -> None:
    """A thread started for a spool left by an earlier run, then idle on empty memory for the
    60 s interval, still sends a process's first partial batch after FIRST_FLUSH (1 s)."""
    store = MemoryStore([body_of(1)])
    worker, transport, stats, _ = make_worker(spool=store, flush_interval=60.0)
    wait_until(lambda: stats.snapshot()["recovered"] == 1)
    worker.submit(event(2))
    wait_until(lambda: transport.delivered() == [1, 2], 10, "the first live event, well before the interval")


def test_replayed_events_are_counted_before_their_batch_is_removed() -> None:
    """Whoever sees the spool empty sees its events counted as recovered."""
    store = MemoryStore([body_of(1, 2), body_of(3)])
    stats = DeliveryStats()
    seen: list[int] = []
    store.on_ack = lambda: seen.append(stats.snapshot()["recovered"])
    worker = build_worker(
        ScriptedTransport(),
        stats,
        lambda error: None,
        spool=store,
        batch_size=3,
        flush_interval=60.0,
        max_buffer_size=100,
        shutdown_timeout=2.0,
    )  # replays at once: the store holds batches
    try:
        wait_until(lambda: len(store.acked) == 2)
    finally:
        worker.shutdown(timeout=0.5)
    assert seen == [2, 3]


def test_replay_stops_at_the_first_failure_and_keeps_the_batch(
    make_worker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed replay releases its batch; it is sent again later, exactly once."""
    monkeypatch.setattr("beacon_otel.delivery.health.backoff_delay", lambda failures, **_: 0.05)
    store = MemoryStore([body_of(1), body_of(2)])
    transport = ScriptedTransport([Outcome(Verdict.RETRY, 503)])
    _, transport, stats, _ = make_worker(transport, spool=store)
    wait_until(lambda: stats.snapshot()["recovered"] == 2)
    attempts = [[e["duration_ms"] for e in events] for _, events in transport.attempts]
    assert attempts == [[1], [1], [2]]


def test_refused_spooled_batch_is_dropped_and_reported(make_worker: Any) -> None:
    """A spooled batch the ingest refuses for good is removed, counted and reported."""
    store = MemoryStore([body_of(1)])
    transport = ScriptedTransport([Outcome(Verdict.REJECTED, 400, detail="bad")])
    _, _, stats, errors = make_worker(transport, spool=store)
    wait_until(lambda: stats.snapshot()["dropped"] == {"rejected": 1})
    assert store.pending() == 0 and errors[0].status == 400


def test_shutdown_while_down_spools_everything_and_honours_retry_after(make_worker: Any) -> None:
    """At shutdown inside a Retry-After window nothing is sent; everything is spooled."""
    store = MemoryStore()
    transport = ScriptedTransport([Outcome(Verdict.RETRY, 429, retry_after=30)])
    worker, transport, stats, errors = make_worker(transport, spool=store, batch_size=2)
    for n in range(5):
        worker.submit(event(n))
    wait_until(lambda: len(transport.attempts) == 1)
    worker.shutdown(timeout=1.0)
    assert len(transport.attempts) == 1
    assert sorted(store.spooled_events()) == [0, 1, 2, 3, 4]
    snapshot = stats.snapshot()
    assert (snapshot["spooled"], snapshot["dropped_total"]) == (5, 0)
    assert [e.reason for e in errors] == ["retrying"]  # the 429 itself; nothing was lost


# -- memory first, then disk, then drop; replay beside live traffic ----------------------------


class Switchable(ScriptedTransport):
    """Refuses connections while ``down`` is set; a scripted ingest otherwise."""

    def __init__(self, script: list[Outcome] | None = None) -> None:
        super().__init__(script)
        self.down = threading.Event()
        self.refused = 0

    def send(self, body: bytes, batch_id: str) -> Outcome:
        if self.down.is_set():
            with self.lock:
                self.refused += 1
            return Outcome(Verdict.RETRY, detail="connection refused", kind=FailureKind.CONNECTION_REFUSED)
        return super().send(body, batch_id)


def test_an_outage_fills_the_disk_not_the_drop_counter(
    make_worker: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """With the ingest down, a burst far larger than memory is spooled; all arrive once after."""
    caplog.set_level(logging.INFO, logger="beacon_otel")
    monkeypatch.setattr("beacon_otel.delivery.health.backoff_delay", lambda failures, **_: 0.05)
    transport = Switchable()
    transport.down.set()
    store = MemoryStore()
    worker, transport, stats, _ = make_worker(transport, spool=store, batch_size=5, max_buffer_size=20)
    for n in range(300):
        worker.submit(event(n))
        if n % 5 == 4:
            # A real app serves requests over time; the delivery thread gets its turn (memory
            # keeps half the buffer once the ingest fails: 10 of 20).
            wait_until(lambda: worker.buffered() <= 10)
    assert stats.snapshot()["dropped_total"] == 0
    assert stats.snapshot()["spooled"] >= 280
    transport.down.clear()
    assert worker.flush(10.0)
    wait_until(lambda: stats.snapshot()["sent"] + stats.snapshot()["recovered"] == 300, timeout=20)
    assert sorted(transport.delivered()) == list(range(300))
    assert stats.snapshot()["dropped_total"] == 0
    # The backlog's line is written once the spool is empty, after its last batch was counted.
    wait_until(lambda: any("waited in the spool" in r.getMessage() for r in caplog.records))
    # What the user read: the failure in words, then (once) that events went to disk, then recovery.
    told = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert told[0].startswith("beacon-otel: cannot deliver to ingest.test: connection refused")
    assert [m for m in told if "wait on disk" in m] == [
        "beacon-otel: ingest.test is still failing; events now wait on disk at /spool"
    ]
    assert "recovered after" in told[-2]
    # Then one line for the whole backlog sent from disk, not one per batch.
    recovered = stats.snapshot()["recovered"]
    assert re.fullmatch(
        rf"beacon-otel: sent {recovered} events \(\d+ batches\) that waited in the spool at /spool", told[-1]
    )


class SlowDisk(MemoryStore):
    """A spool whose writes wait for ``go``: a disk slower than the requests coming in."""

    def __init__(self) -> None:
        super().__init__()
        self.go = threading.Event()
        self.writing = threading.Event()
        self.sizes: list[int] = []

    def write(self, body: bytes, events: int, batch_id: str) -> bool:
        self.writing.set()
        self.go.wait(10)
        self.sizes.append(events)
        return super().write(body, events, batch_id)


def test_a_disk_slower_than_the_requests_takes_what_waits_in_one_file(
    make_worker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a write is slow, memory keeps filling; the next write takes it all, not one batch.

    One batch a file, each file's fsync bounds how fast a burst can go to disk: a 10 ms fsync
    dropped 13% of a 2,000-request-a-second burst into a 200-event buffer.
    """
    monkeypatch.setattr("beacon_otel.delivery.health.backoff_delay", lambda failures, **_: 0.05)
    transport = Switchable()
    transport.down.set()
    store = SlowDisk()
    worker, transport, stats, _ = make_worker(transport, spool=store, batch_size=5, max_buffer_size=40)
    for n in range(10):  # the head batch fails once; the next full batch goes to disk
        worker.submit(event(n))
    assert store.writing.wait(5)
    for n in range(10, 38):  # 28 more while that write is on its way: the buffer never overflows
        worker.submit(event(n))
    assert worker.buffered() == 38  # the 5 on their way to disk are still in memory
    store.go.set()
    wait_until(lambda: len(store.sizes) == 2)
    assert store.sizes == [5, 25]  # the whole batches that waited, in one file
    assert stats.snapshot()["dropped_total"] == 0
    transport.down.clear()
    assert worker.flush(10.0)
    wait_until(lambda: stats.snapshot()["sent"] + stats.snapshot()["recovered"] == 38, timeout=20)
    assert sorted(transport.delivered()) == list(range(38))
    # Sent from the spool as it was written: one request of 25 events.
    assert 25 in [len(events) for _, events in transport.attempts]


def test_a_refused_large_write_waits_in_memory_in_batches_of_the_usual_size(make_worker: Any) -> None:
    """What the disk refused goes back to memory as batch_size batches, to be sent as usual."""
    transport = Switchable()
    transport.down.set()
    store = SlowDisk()
    store.refuse = True
    worker, transport, stats, _ = make_worker(transport, spool=store, batch_size=5, max_buffer_size=40)
    for n in range(10):
        worker.submit(event(n))
    assert store.writing.wait(5)
    for n in range(10, 30):
        worker.submit(event(n))
    store.go.set()
    wait_until(lambda: transport.refused >= 2)
    store.refuse = False
    transport.down.clear()
    wait_until(lambda: stats.snapshot()["sent"] + stats.snapshot()["recovered"] == 30, timeout=20)
    assert sorted(transport.delivered()) == list(range(30))
    assert stats.snapshot()["dropped_total"] == 0
    # The disk rests after refusing, so all went from memory, none larger than batch_size.
    assert stats.snapshot()["recovered"] == 0
    assert max(len(events) for _, events in transport.attempts) == 5


def test_a_full_spool_keeps_batches_in_memory_and_says_so_once(
    make_worker: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A refused spool write is not a loss: the batch waits in memory, "spool full" is logged once."""
    monkeypatch.setattr("beacon_otel.delivery.health.backoff_delay", lambda failures, **_: 0.02)
    transport = Switchable()
    transport.down.set()
    store = MemoryStore()
    store.refuse = True
    worker, transport, stats, _ = make_worker(transport, spool=store, batch_size=5, max_buffer_size=40)
    for n in range(30):
        worker.submit(event(n))
    wait_until(lambda: transport.refused >= 4)
    assert stats.snapshot()["dropped_total"] == 0 and worker.buffered() == 30
    store.refuse = False
    transport.down.clear()
    wait_until(lambda: stats.snapshot()["sent"] + stats.snapshot()["recovered"] == 30, timeout=20)
    assert sorted(transport.delivered()) == list(range(30))
    spool_lines = [r for r in caplog.records if "spool full" in r.getMessage()]
    assert len(spool_lines) == 1
    assert "events wait in memory" in spool_lines[0].getMessage()
    assert "retries_exhausted" not in stats.snapshot()["dropped"]


def test_spooled_batches_are_replayed_while_live_traffic_flows(make_worker: Any) -> None:
    """A backlog on disk is sent between live batches, not after the traffic stops."""
    store = MemoryStore([body_of(1000 + n) for n in range(40)])
    # Each request takes a round trip, as with a real ingest: the backlog cannot all go at once.
    transport = ScriptedTransport(on_send=lambda: time.sleep(0.01))
    worker, transport, stats, _ = make_worker(transport, spool=store, batch_size=5)
    live = 0
    deadline = time.monotonic() + 60
    while stats.snapshot()["recovered"] < 40:
        for _ in range(5):
            worker.submit(event(live))
            live += 1
        # Steady traffic the thread keeps up with (memory never fills, nothing dropped).
        wait_until(lambda: worker.buffered() < 50, timeout=30)
        assert time.monotonic() < deadline, "the backlog was not replayed while traffic flowed"
    assert worker.flush(5.0)
    assert sorted(transport.delivered()) == sorted([*range(live), *range(1000, 1040)])
    # Interleaved: live batches went out while the backlog was being replayed.
    kinds = ["replay" if events[0]["duration_ms"] >= 1000 else "live" for _, events in transport.attempts]
    last_replay = max(i for i, kind in enumerate(kinds) if kind == "replay")
    assert "live" in kinds[:last_replay]


def test_a_413_on_a_replayed_batch_splits_it_and_the_limit_is_learnt(make_worker: Any) -> None:
    """A spooled batch too large for the ingest is split like a live one; later ones go at the limit."""
    store = MemoryStore([body_of(*range(0, 8)), body_of(*range(8, 16))])
    transport = ScriptedTransport([Outcome(Verdict.SPLIT, 413), Outcome(Verdict.SPLIT, 413)])
    _, transport, stats, errors = make_worker(transport, spool=store, batch_size=8)
    wait_until(lambda: stats.snapshot()["sent"] + stats.snapshot()["recovered"] == 16)
    assert sorted(transport.delivered()[-16:]) == list(range(16))
    sizes = [len(events) for _, events in transport.attempts]
    # Two 413s teach a limit in bytes; what follows is cut under it, or under its probed-up double.
    assert sizes[:2] == [8, 4] and sum(sizes[2:]) == 16 and len(sizes) <= 10
    assert stats.snapshot()["dropped_total"] == 0 and errors == []
    assert store.pending() == 0


def test_a_known_hung_ingest_does_not_hold_shutdown(make_worker: Any) -> None:
    """After a request timed out, shutdown spools at once instead of waiting out its deadline."""
    timed_out = Outcome(Verdict.RETRY, detail="timed out after 5 s", kind=FailureKind.TIMEOUT)
    store = MemoryStore()
    transport = ScriptedTransport([timed_out])
    worker, transport, stats, _ = make_worker(transport, spool=store, batch_size=2)
    for n in range(5):
        worker.submit(event(n))
    # The timeout is known once the thread has recorded the answer, a moment after the send
    # returned it: shutting down before then would find the ingest merely untried.
    wait_until(lambda: worker._delivery.health.hung, what="the timed-out request recorded")
    started = time.monotonic()
    worker.shutdown(timeout=30.0)
    assert time.monotonic() - started < 5.0
    assert sorted(store.spooled_events()) == [0, 1, 2, 3, 4]
    assert stats.snapshot()["dropped_total"] == 0


def test_a_request_hanging_at_shutdown_is_waited_on_for_a_second_only(make_worker: Any) -> None:
    """A POST in flight for over a second at shutdown: everything spooled at once, not at the deadline."""
    release = threading.Event()
    store = MemoryStore()
    transport = ScriptedTransport(on_send=lambda: release.wait(30))
    worker, transport, stats, _ = make_worker(transport, spool=store, batch_size=2)
    for n in range(5):
        worker.submit(event(n))
    wait_until(lambda: worker._busy)
    started = time.monotonic()
    worker.shutdown(timeout=30.0)
    elapsed = time.monotonic() - started
    flushed = worker.flush(30.0)  # as the provider's flush after the shutdown would
    after_flush = time.monotonic() - started
    release.set()
    assert elapsed < 5.0  # the patience is one second; the shutdown timeout thirty
    assert flushed and after_flush < 5.0
    # The batch in flight is spooled too, with its Idempotency-Key: at least once, never lost.
    assert sorted(store.spooled_events()) == [0, 1, 2, 3, 4]
    assert stats.snapshot()["dropped_total"] == 0


def test_without_a_spool_a_slow_request_at_shutdown_is_waited_on(make_worker: Any) -> None:
    """No disk to keep it on: a POST answering after two seconds is waited for, nothing lost."""
    release = threading.Event()
    transport = ScriptedTransport(on_send=lambda: release.wait(30))
    worker, transport, stats, _ = make_worker(transport, batch_size=2)
    for n in range(4):
        worker.submit(event(n))
    wait_until(lambda: worker._busy)
    threading.Timer(2.0, release.set).start()  # slow, not hung: past the one-second patience
    worker.shutdown(timeout=30.0)
    assert sorted(transport.delivered()) == [0, 1, 2, 3]
    assert stats.snapshot()["dropped_total"] == 0


def test_a_spooled_batch_keeps_its_idempotency_key(make_worker: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The id of a batch's first attempt is the id of its replay from disk."""
    monkeypatch.setattr("beacon_otel.delivery.health.backoff_delay", lambda failures, **_: 0.0)
    store = MemoryStore()
    transport = ScriptedTransport([Outcome(Verdict.RETRY, 503)] * 6)
    worker, transport, stats, _ = make_worker(transport, spool=store)
    for n in range(3):
        worker.submit(event(n))
    wait_until(lambda: stats.snapshot()["recovered"] == 3)
    assert len(set(transport.batch_ids)) == 1 and len(transport.batch_ids) == 7


def test_a_413_teaches_a_limit_in_bytes_not_in_events(make_worker: Any) -> None:
    """After a 413 on two large events, batches of many small ones still go whole."""
    transport = ScriptedTransport([Outcome(Verdict.SPLIT, 413)])
    worker, transport, stats, _ = make_worker(transport, batch_size=50)
    worker.submit(event(0)._replace(path="/" + "x" * 4000))
    worker.submit(event(1)._replace(path="/" + "y" * 4000))
    assert worker.flush(2.0)
    for n in range(2, 102):
        worker.submit(event(n))
    assert worker.flush(5.0)
    sizes = [len(events) for _, events in transport.attempts]
    assert sizes == [2, 1, 1, 50, 50]  # a limit in events would have sent 100 POSTs of one
    assert stats.snapshot()["sent"] == 102


def test_a_learnt_body_limit_is_probed_again_after_a_while(
    make_worker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``BODY_LIMIT_PROBE`` seconds after a 413, a full batch is tried again."""
    monkeypatch.setattr("beacon_otel.delivery.attempt.BODY_LIMIT_PROBE", 0.0)
    transport = ScriptedTransport([Outcome(Verdict.SPLIT, 413)])
    worker, transport, _, _ = make_worker(transport, batch_size=8)
    for n in range(8):
        worker.submit(event(n))
    assert worker.flush(2.0)
    for n in range(8, 16):
        worker.submit(event(n))
    assert worker.flush(2.0)
    assert [len(events) for _, events in transport.attempts] == [8, 4, 4, 8]
