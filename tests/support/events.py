"""Events as the ingest receives them, for tests that send the dev ingest batches of their own."""

from __future__ import annotations

from typing import Any

DELETE = object()
"""Marks a key to leave out of the event (a missing field, for the contract's checks)."""


def wire_event(**changes: Any) -> dict[str, Any]:
    """A contract-valid event (``GET /users/42``, 200, consumer ``acme``) with some keys changed."""
    event: dict[str, Any] = {
        "ts": "2026-06-03T12:00:00.000+00:00",
        "method": "GET",
        "route": "/users/{user_id}",
        "path": "/users/42",
        "status": 200,
        "duration_ms": 12,
        "consumer": "acme",
        "error": None,
        **changes,
    }
    return {key: value for key, value in event.items() if value is not DELETE}
