"""SpoolPolicy and NoSpool: the delivery side of the spool, and the absence of one."""

from __future__ import annotations

import math

from beacon_otel.contract.batch import Batch
from beacon_otel.delivery.log import DeliveryLog
from beacon_otel.delivery.spooling import DISK_RETRY, NoSpool, SpoolPolicy
from beacon_otel.delivery.stats import DeliveryStats


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class RefusingStore:
    """A spool that refuses writes while ``full``, as a full disk does."""

    def __init__(self) -> None:
        self.full = True
        self.written: list[str] = []

    @property
    def problem(self) -> str | None:
        return "spool full (10 of 10 bytes) at /spool" if self.full else None

    def write(self, body: bytes, events: int, batch_id: str) -> bool:
        if self.full:
            return False
        self.written.append(batch_id)
        return True

    def claim(self) -> None:
        return None

    def pending(self) -> int:
        return len(self.written)


def batch() -> Batch:
    return Batch([{"method": "GET"}])


def test_a_refused_write_rests_the_disk_for_disk_retry_seconds() -> None:
    """After the disk refuses a batch it is not offered another for DISK_RETRY s; then it is tried again."""
    clock = Clock()
    store = RefusingStore()
    log = DeliveryLog(url="https://ingest.test/v1/ingest", host="ingest.test", spool_path="/spool")
    policy = SpoolPolicy(store, stats=DeliveryStats(), log=log, clock=clock)
    assert policy.ready()
    assert not policy.keep(batch())
    clock.now += DISK_RETRY - 0.1
    assert not policy.ready()
    clock.now += 0.2
    assert policy.ready()
    store.full = False
    kept = batch()
    assert policy.keep(kept)
    assert store.written == [kept.batch_id]


def test_no_spool_keeps_nothing_and_has_nothing_to_replay() -> None:
    """Without a spool nothing is kept (the caller counts it lost) and the thread never looks at disk."""
    spool = NoSpool()
    assert not spool.configured and not spool.ready()
    assert not spool.keep(batch())
    assert not spool.has_backlog() and spool.next_batch() is None
    assert spool.seconds_to_next_look() == math.inf
    assert spool.pending() == 0
