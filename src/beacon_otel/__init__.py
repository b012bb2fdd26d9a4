"""beacon-otel: Beacon API analytics from the HTTP server spans OpenTelemetry already makes.

The exported names are imported on first use: the pytest plugin (``beacon_otel.testing``),
the command line and the dev ingest import this package without paying for the SDK.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from beacon_otel.version import __version__

if TYPE_CHECKING:
    from beacon_otel.capture.caller import set_consumer
    from beacon_otel.capture.processor import BeaconSpanProcessor
    from beacon_otel.capture.sampling import BeaconSampler
    from beacon_otel.config.settings import BeaconConfig, BeaconConfigError
    from beacon_otel.delivery.stats import DeliveryError
    from beacon_otel.setup.distro import configure

_HOMES = {
    "BeaconConfig": "beacon_otel.config.settings",
    "BeaconConfigError": "beacon_otel.config.settings",
    "BeaconSampler": "beacon_otel.capture.sampling",
    "BeaconSpanProcessor": "beacon_otel.capture.processor",
    "DeliveryError": "beacon_otel.delivery.stats",
    "configure": "beacon_otel.setup.distro",
    "set_consumer": "beacon_otel.capture.caller",
}

__all__ = [
    "BeaconConfig",
    "BeaconConfigError",
    "BeaconSampler",
    "BeaconSpanProcessor",
    "DeliveryError",
    "__version__",
    "configure",
    "set_consumer",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'beacon_otel' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # imported once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))
