"""The public path of :func:`install`: the contrib route lookups at the same cost in any app.

Re-exported from :mod:`beacon_otel.frameworks.route_lookup`, where it lives now.
"""

from beacon_otel.frameworks.route_lookup import (
    install as install,
)
