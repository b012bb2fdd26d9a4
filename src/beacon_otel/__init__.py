"""beacon-otel: Beacon API analytics from the HTTP server spans OpenTelemetry already makes."""

from beacon_otel.config import BeaconConfig, BeaconConfigError
from beacon_otel.distro import configure
from beacon_otel.processor import BeaconSpanProcessor
from beacon_otel.sampling import BeaconSampler
from beacon_otel.stats import DeliveryError
from beacon_otel.version import __version__

__all__ = [
    "BeaconConfig",
    "BeaconConfigError",
    "BeaconSampler",
    "BeaconSpanProcessor",
    "DeliveryError",
    "__version__",
    "configure",
]
