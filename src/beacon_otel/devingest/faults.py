"""A scripted fault: how the dev ingest misbehaves on purpose, for client tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from beacon_otel.devingest.validation import _int_problem


@dataclass(frozen=True)
class Fault:
    """One scripted answer to an ingest POST: hang, then drop the connection or send a status."""

    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    hang: float = 0.0
    drop: bool = False

    def __post_init__(self) -> None:
        if self.status is not None and _int_problem(self.status, 200, 599):
            raise ValueError(f"Expected status to be an integer in 200..599, got {self.status!r}")
        if self.drop and (self.status is not None or self.headers):
            raise ValueError("A dropped connection sends no status or headers")
        if not isinstance(self.hang, (int, float)) or self.hang < 0:
            raise ValueError(f"Expected hang to be seconds >= 0, got {self.hang!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fault:
        """Build a fault from its JSON form, e.g. {"status": 429, "headers": {...}}."""
        if unknown := set(data) - {"status", "headers", "hang", "drop"}:
            raise ValueError(f"Unknown fault keys: {sorted(unknown)}")
        return cls(**data)
