"""Dry-run console: each event a dry run would have sent, one line each, so Beacon is seen working.

Lines go to the ``beacon_otel.dry_run`` logger at INFO. An app that has not configured logging
(a plain ``opentelemetry-instrument uvicorn app:app``) would never show them, so then they are
written to stderr directly. Field names, consumer, route and path are the requests' own: each line
goes through the dev ingest's terminal sanitiser first, so none can forge a log line or drive
the terminal.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from beacon_otel.delivery.outcome import Outcome
    from beacon_otel.delivery.transports.base import Transport

logger = logging.getLogger("beacon_otel.dry_run")


def event_line(event: dict[str, Any]) -> str:
    """One event as a line: method, route, path, status, duration, consumer, what went wrong."""
    parts = [f"{event['method']} {event['route']}"]
    if event["path"] != event["route"]:
        parts.append(f"path={event['path']}")
    parts += [str(event["status"]), f"{event['duration_ms']}ms", f"consumer={event['consumer'] or '-'}"]
    if event.get("error"):
        parts.append(f"error={event['error']!r}")
    if invalid := event.get("validation_errors"):
        parts.append("invalid=" + ",".join(item["field"] for item in invalid))
    # Imported here: only a dry run needs it, and importing the dev ingest costs every app ~20 ms.
    from beacon_otel.devingest.terminal import printable

    return "beacon-otel dry run: " + printable(" ".join(parts))


class ConsoleEcho:
    """A dry-run sink that also shows every event of every batch it is given."""

    def __init__(self, sink: Transport) -> None:
        self._sink = sink

    def send(self, body: bytes, batch_id: str) -> Outcome:
        for event in json.loads(body)["events"]:
            _show(event_line(event))
        return self._sink.send(body, batch_id)

    def reset(self) -> None:
        self._sink.reset()

    def close(self) -> None:
        self._sink.close()


def _show(line: str) -> None:
    # The app's logging when it configured some (Beacon's own stderr handler does not count).
    if logging.getLogger().handlers:
        logger.info(line)
    else:
        print(line, file=sys.stderr, flush=True)
