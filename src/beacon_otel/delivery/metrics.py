"""Beacon's own health as OpenTelemetry metrics, named after the SDK's self-observability conventions.

Every instrument but one is observable: it reads the processor's counters (and, through a
callback, its queue) when the app's MeterProvider collects, so a request costs nothing more.
The one histogram, the duration of each ingest request, is recorded on the delivery thread,
once per batch. With no MeterProvider
configured the instruments are the API's proxies: collection never happens, and neither does
any of this.

- ``otel.sdk.processor.span.queue.size`` (observable up-down counter): events waiting in memory;
- ``otel.sdk.processor.span.queue.capacity`` (observable up-down counter): ``max_buffer_size``;
- ``otel.sdk.processor.span.processed`` (observable counter): events queued, or with
  ``error.type`` dropped before the queue (``buffer_full``, ``unmappable_*``, ``internal_error``);
- ``otel.sdk.exporter.span.exported`` (observable counter): events the ingest accepted, or with
  ``error.type`` lost in delivery (``rejected``, ``retries_exhausted``, ``shutdown``, ...);
- ``beacon.exporter.span.spooled`` and ``beacon.exporter.span.recovered`` (observable counters):
  events written to the disk spool, and spooled events delivered later (no convention fits);
- ``otel.sdk.exporter.operation.duration`` (histogram, seconds): one ingest request, with
  ``http.response.status_code`` when answered and ``error.type`` when it failed.

Each carries ``otel.component.type`` (``beacon_span_processor`` or ``beacon_ingest_exporter``)
and ``otel.component.name`` (the type and a per-process number).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

from beacon_otel.delivery.stats import DeliveryStats
from beacon_otel.version import __version__

if TYPE_CHECKING:
    from beacon_otel.delivery.outcome import Outcome
    from beacon_otel.delivery.transports.base import Transport

PROCESSOR_TYPE = "beacon_span_processor"
EXPORTER_TYPE = "beacon_ingest_exporter"
# Dropped before an event reaches the queue: the processor's failures; the rest are delivery's.
_PROCESSOR_REASONS = ("buffer_full", "internal_error", "unmappable_")
_numbers = itertools.count()


class SelfMetrics:
    """The processor's instruments, on ``meter_provider`` or the global one (also when set later).

    They read ``stats`` and call ``queue_size`` only when a MeterProvider collects; ``capacity``
    is the queue's bound (``max_buffer_size``).
    """

    def __init__(
        self,
        stats: DeliveryStats,
        *,
        queue_size: Callable[[], int],
        capacity: int,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        number = next(_numbers)
        self._stats = stats
        self._queue_size_now = queue_size
        self._capacity = capacity
        self._processor_attrs = {
            "otel.component.type": PROCESSOR_TYPE,
            "otel.component.name": f"{PROCESSOR_TYPE}/{number}",
        }
        self._exporter_attrs = {
            "otel.component.type": EXPORTER_TYPE,
            "otel.component.name": f"{EXPORTER_TYPE}/{number}",
        }
        provider = meter_provider or metrics.get_meter_provider()
        meter = provider.get_meter("beacon_otel", __version__)
        meter.create_observable_up_down_counter(
            "otel.sdk.processor.span.queue.size",
            [self._queue_size],
            unit="{span}",
            description="Events waiting in memory to be delivered",
        )
        meter.create_observable_up_down_counter(
            "otel.sdk.processor.span.queue.capacity",
            [self._queue_capacity],
            unit="{span}",
            description="How many events memory holds before the oldest are dropped",
        )
        meter.create_observable_counter(
            "otel.sdk.processor.span.processed",
            [self._processed],
            unit="{span}",
            description="SERVER spans made into queued events, or dropped (error.type)",
        )
        meter.create_observable_counter(
            "otel.sdk.exporter.span.exported",
            [self._exported],
            unit="{span}",
            description="Events the ingest accepted, or lost in delivery (error.type)",
        )
        meter.create_observable_counter(
            "beacon.exporter.span.spooled",
            [self._spooled],
            unit="{span}",
            description="Events written to the disk spool",
        )
        meter.create_observable_counter(
            "beacon.exporter.span.recovered",
            [self._recovered],
            unit="{span}",
            description="Spooled events delivered later",
        )
        self._duration = meter.create_histogram(
            "otel.sdk.exporter.operation.duration", unit="s", description="Duration of one ingest request"
        )

    def timed(self, transport: Transport) -> Transport:
        """``transport`` with each send's duration recorded."""
        return _TimedTransport(transport, self)

    def record_send(self, seconds: float, outcome: Outcome) -> None:
        attributes: dict[str, Any] = dict(self._exporter_attrs)
        if outcome.status is not None:
            attributes["http.response.status_code"] = outcome.status
        if outcome.kind is not None:
            attributes["error.type"] = str(outcome.status) if outcome.status else outcome.kind.value
        self._duration.record(seconds, attributes)

    # -- callbacks, run only when a MeterProvider collects ----------------------------------

    def _queue_size(self, options: CallbackOptions) -> Iterable[Observation]:
        yield Observation(self._queue_size_now(), self._processor_attrs)

    def _queue_capacity(self, options: CallbackOptions) -> Iterable[Observation]:
        yield Observation(self._capacity, self._processor_attrs)

    def _processed(self, options: CallbackOptions) -> Iterable[Observation]:
        snapshot = self._stats.snapshot()
        yield Observation(snapshot["queued"], self._processor_attrs)
        for reason, count in snapshot["dropped"].items():
            if reason.startswith(_PROCESSOR_REASONS):
                yield Observation(count, {**self._processor_attrs, "error.type": reason})

    def _exported(self, options: CallbackOptions) -> Iterable[Observation]:
        snapshot = self._stats.snapshot()
        yield Observation(snapshot["sent"], self._exporter_attrs)
        for reason, count in snapshot["dropped"].items():
            if not reason.startswith(_PROCESSOR_REASONS):
                yield Observation(count, {**self._exporter_attrs, "error.type": reason})

    def _spooled(self, options: CallbackOptions) -> Iterable[Observation]:
        yield Observation(self._stats.snapshot()["spooled"], self._exporter_attrs)

    def _recovered(self, options: CallbackOptions) -> Iterable[Observation]:
        yield Observation(self._stats.snapshot()["recovered"], self._exporter_attrs)


class _TimedTransport:
    """Times each ingest request for ``otel.sdk.exporter.operation.duration``."""

    def __init__(self, transport: Transport, metrics: SelfMetrics) -> None:
        self._transport = transport
        self._metrics = metrics

    def send(self, body: bytes, batch_id: str) -> Outcome:
        started = time.monotonic()
        outcome = self._transport.send(body, batch_id)
        self._metrics.record_send(time.monotonic() - started, outcome)
        return outcome

    def reset(self) -> None:
        self._transport.reset()

    def close(self) -> None:
        self._transport.close()
