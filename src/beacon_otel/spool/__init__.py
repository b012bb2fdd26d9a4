"""What cannot be delivered yet, on disk: per destination, in files several processes share safely.

:func:`destinations` (``beacon_otel.spool.destinations(root)``) lists a spool root read-only.
"""

from beacon_otel.spool.files import destinations as destinations
