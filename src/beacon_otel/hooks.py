"""The public path of :func:`compose` (your own instrumentation hooks beside Beacon's).

Re-exported from :mod:`beacon_otel.common.compose`, where it lives now.
"""

from beacon_otel.common.compose import (
    compose as compose,
)
