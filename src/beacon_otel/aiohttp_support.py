"""aiohttp server: the public path of ``instrument_app``.

Re-exported from :mod:`beacon_otel.frameworks.aiohttp`, where it lives now.
"""

from beacon_otel.frameworks.aiohttp import (
    instrument_app as instrument_app,
)
