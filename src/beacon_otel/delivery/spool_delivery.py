"""``beacon-otel spool-deliver``: send one destination's spooled batches now, with its own key.

A running processor replays only the batches of its own destination (ingest URL and key), so
after a key rotation or a change of ingest URL the batches spooled before wait under the earlier
destination, and are never sent with another key. Run this with that destination's
``BEACON_INGEST_KEY`` and ``BEACON_INGEST_URL`` (the other settings as usual): each batch goes
through the processor's own transport with the key it was spooled under, once, oldest first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from beacon_otel.config.settings import BeaconConfig
from beacon_otel.contract.batch import Batch
from beacon_otel.delivery.outbound import ingest_transport
from beacon_otel.delivery.outcome import Verdict
from beacon_otel.spool.files import earlier_fingerprints
from beacon_otel.spool.store import Spool, destination_fingerprint


@dataclass
class SpoolDelivery:
    """What one run did, in events."""

    sent: int = 0
    refused: int = 0
    left: int = 0
    """Batches still spooled (the ingest stopped answering)."""
    stopped: str | None = None
    """Why the run stopped before the spool was empty."""


def deliver_spooled(config: BeaconConfig, say: Callable[[str], None]) -> SpoolDelivery:
    """Send every batch spooled for ``config``'s destination; stop at the first transient failure."""
    result = SpoolDelivery()
    spool = Spool(
        config.spool_directory,
        destination=destination_fingerprint(config.ingest_url, config.ingest_key or ""),
        max_bytes=max(config.max_storage_bytes, 1),
        earlier=tuple(earlier_fingerprints(config.ingest_url, config.ingest_key or "")),
    )
    say(f"spool {spool.directory}: {spool.pending()} batches")
    transport = ingest_transport(config)
    try:
        while (lease := spool.claim()) is not None:
            outcome = transport.send(lease.body, lease.batch_id)
            if outcome.verdict is Verdict.ACCEPTED:
                lease.ack()
                result.sent += lease.events
            elif outcome.verdict is Verdict.RETRY:
                lease.release()
                result.stopped = outcome.detail
                break
            elif outcome.verdict is Verdict.SPLIT and lease.events > 1:
                # The halves go back to the spool as batches of their own, and are sent in turn.
                batch = Batch.from_spool(lease)
                halves = batch.split((len(batch) + 1) // 2)
                if len(halves) > 1 and all(spool.write(h.body(), len(h), h.batch_id) for h in halves):
                    lease.ack()
                else:
                    lease.release()
                    result.stopped = f"{outcome.detail}; the batch could not be split on disk"
                    break
            else:
                lease.ack()
                result.refused += lease.events
                say(f"refused, {lease.events} events dropped: {outcome.detail}")
    finally:
        transport.close()
    result.left = spool.pending()
    return result
