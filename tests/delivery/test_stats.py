"""DeliveryStats: what happened to events, counted on the request thread and the delivery thread."""

from __future__ import annotations

from beacon_otel.delivery.stats import DeliveryStats, Fate


def test_queued_events_count_however_they_were_counted() -> None:
    """Events counted by the worker one at a time and in bulk add up in one ``queued`` figure."""
    stats = DeliveryStats()
    for _ in range(3):
        stats.queued_events += 1
    stats.record(Fate.QUEUED, 2)
    stats.record(Fate.SENT, 4)
    snapshot = stats.snapshot()
    assert (snapshot["queued"], snapshot["sent"], snapshot["dropped_total"]) == (5, 4, 0)


def test_a_forked_child_counts_from_zero() -> None:
    """After a fork the child's counters start empty, the queued ones included."""
    stats = DeliveryStats()
    stats.queued_events += 1
    stats.drop("buffer_full")
    stats.after_fork()
    stats.queued_events += 1
    snapshot = stats.snapshot()
    assert (snapshot["queued"], snapshot["dropped_total"]) == (1, 0)
