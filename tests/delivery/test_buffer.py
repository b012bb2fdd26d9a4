"""EventBuffer: what waits in memory, its bound, the batches cut from it, and when it spills to disk."""

from __future__ import annotations

import pytest

from beacon_otel.contract.batch import Batch
from beacon_otel.contract.event import RequestEvent
from beacon_otel.delivery.buffer import EventBuffer


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def event(n: int) -> RequestEvent:
    return RequestEvent(1_780_488_000_000_000_000, "GET", "/r", f"/r/{n}", 200, n, None, None)


def filled(count: int, *, max_size: int = 100, clock: Clock | None = None) -> EventBuffer:
    buffer = EventBuffer(max_size=max_size, clock=clock or Clock())
    for n in range(count):
        buffer.add(event(n))
    return buffer


def numbers(batch: Batch) -> list[int]:
    return [e["duration_ms"] for e in batch.events]


def test_the_bound_counts_events_in_batches_too() -> None:
    """Events already cut into unsettled batches still take room: the buffer is full at max_size."""
    buffer = filled(4, max_size=5)
    assert buffer.head(3) is not None
    assert (buffer.events, buffer.batches, buffer.unsent()) == (1, 1, 4)
    assert buffer.add(event(4)) == 2
    assert buffer.add(event(5)) == 0  # full: not added
    assert (buffer.events, buffer.unsent()) == (2, 5)


def test_dropping_the_oldest_refuses_when_memory_is_all_batches() -> None:
    """The oldest loose event makes room; when every event is in a batch being retried, nothing is dropped."""
    buffer = filled(3, max_size=3)
    assert buffer.drop_oldest()
    assert buffer.unsent() == 2
    buffer.head(2)
    assert buffer.events == 0
    assert not buffer.drop_oldest()
    assert buffer.unsent() == 2


def test_the_head_batch_is_sent_again_until_settled() -> None:
    """head() cuts at most ``size`` oldest events once and returns the same batch until it is settled."""
    buffer = filled(5)
    first = buffer.head(3)
    assert first is not None and numbers(first) == [0, 1, 2]
    assert buffer.head(3) is first
    buffer.settled(first)
    second = buffer.head(3)
    assert second is not None and numbers(second) == [3, 4]
    buffer.settled(second)
    assert buffer.head(3) is None and not buffer


def test_the_halves_of_a_split_go_first_in_order() -> None:
    """Requeued batches (a split's halves) come before every other batch, in the order given."""
    buffer = filled(6)
    whole = buffer.head(4)
    assert whole is not None
    buffer.keep(buffer.cut(2, 2)[0])
    buffer.settled(whole)
    buffer.requeue(whole.split(2))
    assert [numbers(b) for b in buffer.take_all(4)] == [[0, 1], [2, 3], [4, 5]]
    assert buffer.unsent() == 0


def test_take_all_gives_unsettled_batches_then_the_rest_cut() -> None:
    """At shutdown memory empties: batches first (oldest events), then loose events in batches of size."""
    buffer = filled(7)
    buffer.head(2)
    assert [numbers(b) for b in buffer.take_all(2)] == [[0, 1], [2, 3], [4, 5], [6]]
    assert not buffer


def test_the_oldest_arrival_is_stamped_by_the_injected_clock() -> None:
    """The flush interval counts from the oldest loose event; after a cut, from the cut."""
    clock = Clock()
    buffer = filled(1, clock=clock)
    clock.now = 105.0
    buffer.add(event(1))
    assert buffer.oldest_at == 100.0
    clock.now = 107.0
    buffer.cut(1, 1)
    assert buffer.oldest_at == 107.0


@pytest.mark.parametrize(
    ("loose", "in_batches", "failing", "spill"),
    [
        (3, 0, True, True),  # failing: one full batch is enough
        (2, 0, True, False),  # not a full batch yet
        (3, 0, False, False),  # the ingest answers: memory first
        (17, 0, False, True),  # answering, but memory is nearly full (20 - 3)
        (0, 6, True, True),  # failing with batches behind the one being retried
        (0, 6, False, False),  # answering: those batches are sent, not spilled
        (0, 3, True, False),  # only the batch being retried: it keeps probing the ingest
    ],
)
def test_when_memory_spills_to_disk(loose: int, in_batches: int, failing: bool, spill: bool) -> None:
    """Memory first while the ingest answers; once it fails, every full batch beyond the head spills."""
    buffer = filled(in_batches, max_size=20)
    for _ in range(in_batches // 3):
        buffer.keep(buffer.cut(3, 3)[0])
    for n in range(loose):
        buffer.add(event(100 + n))
    assert buffer.should_spill(3, batch_size=3, failing=failing) is spill


def test_an_event_that_cannot_be_encoded_is_counted_and_the_rest_of_its_cut_is_kept() -> None:
    """A cut never loses what it popped: the unencodable event is counted, its neighbours batched."""
    lost: list[tuple[str, int]] = []
    buffer = EventBuffer(max_size=100, clock=Clock(), lost=lambda reason, count: lost.append((reason, count)))
    buffer.add(event(0))
    buffer.add(event(1)._replace(end_time_ns=10**30))  # format_ts cannot write year 10**13
    buffer.add(event(2))
    batches = buffer.cut(3, 10)
    assert [numbers(batch) for batch in batches] == [[0, 2]]
    assert lost == [("unencodable", 1)]
    assert not buffer


def test_a_head_made_only_of_unencodable_events_moves_on_to_the_next() -> None:
    """``head`` cuts again when a whole cut was unencodable, instead of failing or stopping."""
    lost: list[tuple[str, int]] = []
    buffer = EventBuffer(max_size=100, clock=Clock(), lost=lambda reason, count: lost.append((reason, count)))
    buffer.add(event(0)._replace(end_time_ns=10**30))
    buffer.add(event(1))
    head = buffer.head(1)
    assert head is not None and numbers(head) == [1]
    assert lost == [("unencodable", 1)]
