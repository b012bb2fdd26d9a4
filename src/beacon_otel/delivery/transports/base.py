"""What every transport is: something that takes an encoded batch and says what came of it.

The HTTP transport (:mod:`~beacon_otel.delivery.transports.http`), the dry run's in-memory sink
echoed to the console (:mod:`~beacon_otel.delivery.transports.console`) and the self-metrics'
timing wrapper all answer to this one protocol; the delivery (:mod:`beacon_otel.delivery.attempt`)
knows no other.
"""

from __future__ import annotations

from typing import Protocol

from beacon_otel.delivery.outcome import Outcome


class Transport(Protocol):
    """Anything that can take an encoded batch: the HTTP transport or the dry-run sink."""

    def send(self, body: bytes, batch_id: str) -> Outcome: ...

    def reset(self) -> None: ...

    def close(self) -> None: ...
