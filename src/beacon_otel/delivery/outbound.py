"""Where one processor's events go, assembled from its configuration.

The transport (the ingest over HTTP, or in a dry run an in-memory sink echoed to the console),
timed for the self-metrics; the delivery log; this destination's spool and the policy that uses
it; the delivery, and the worker that runs it on its thread. Built once per processor.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from beacon_otel.config.endpoint import shown_url
from beacon_otel.config.settings import BeaconConfig
from beacon_otel.delivery.attempt import Delivery
from beacon_otel.delivery.log import DeliveryLog, make_visible
from beacon_otel.delivery.spooling import SpoolPolicy
from beacon_otel.delivery.stats import DeliveryError, DeliveryStats
from beacon_otel.delivery.transports.base import Transport
from beacon_otel.delivery.transports.console import ConsoleEcho
from beacon_otel.delivery.transports.http import IngestTransport, InMemoryTransport
from beacon_otel.delivery.worker import DeliveryWorker
from beacon_otel.spool.files import earlier_fingerprints
from beacon_otel.spool.store import Spool, destination_fingerprint

logger = logging.getLogger("beacon_otel")


def ingest_transport(config: BeaconConfig) -> IngestTransport:
    """The ingest over HTTP as ``config`` sets it up: the processor's, and the doctor's probe."""
    return IngestTransport(
        url=config.ingest_url,
        key=config.ingest_key,
        timeout=config.timeout,
        compression=config.compression,
        allow_private=config.allow_private_endpoints,
        extra_headers=config.extra_headers,
    )


@dataclass(frozen=True)
class Outbound:
    """The delivery side of one processor: its worker, and what users and tests may look at."""

    worker: DeliveryWorker
    spool: Spool | None
    """This destination's spool, when batches that cannot go may wait on disk."""
    dry_run_sink: InMemoryTransport | None
    """In a dry run, where the events "sent" are kept."""

    @classmethod
    def build(
        cls,
        config: BeaconConfig,
        *,
        stats: DeliveryStats,
        report: Callable[[DeliveryError], None],
        timed: Callable[[Transport], Transport],
    ) -> Outbound:
        """Everything between the processor's ``submit`` and the ingest, and one line saying where."""
        sink = InMemoryTransport() if config.dry_run else None
        transport = sink or ingest_transport(config)
        # Console mode and self-metrics: each wraps the transport, no cost per request.
        sender = timed(ConsoleEcho(transport) if config.dry_run else transport)
        log = DeliveryLog(
            url=shown_url(config.ingest_url),
            host=urlsplit(config.ingest_url).hostname or "the ingest",
            spool_path=None,
        )
        if config.enabled:
            # Before the spool is made: what it removes or refuses at start is logged too.
            make_visible(debug=config.debug)
        spool, policy = None, None
        if config.spool_enabled and not config.dry_run:
            spool = Spool(
                config.spool_directory,
                destination=destination_fingerprint(config.ingest_url, config.ingest_key or ""),
                max_bytes=config.max_storage_bytes,
                lost=stats.drop,
                earlier=tuple(earlier_fingerprints(config.ingest_url, config.ingest_key or "")),
            )
            log.spool_path = str(spool.directory)
            policy = SpoolPolicy(spool, stats=stats, log=log)
        delivery = Delivery(sender, stats=stats, report=report, log=log, spool=policy)
        worker = DeliveryWorker(
            delivery,
            batch_size=config.batch_size,
            flush_interval=config.flush_interval,
            max_buffer_size=config.max_buffer_size,
            shutdown_timeout=config.shutdown_timeout,
        )
        if config.enabled:
            if config.dry_run:
                logger.info("beacon-otel: dry run: nothing is sent")
            else:
                log.started()
        return cls(worker, spool, sink)
