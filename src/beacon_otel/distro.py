"""Setting beacon-otel up: the public path of ``configure()`` and of the entry points' objects.

Re-exported from :mod:`beacon_otel.setup.distro`, where it lives now.
"""

from beacon_otel.setup.distro import (
    BeaconConfigurator as BeaconConfigurator,
)
from beacon_otel.setup.distro import (
    BeaconDistro as BeaconDistro,
)
from beacon_otel.setup.distro import (
    configure as configure,
)
from beacon_otel.setup.distro import (
    pre_instrument as pre_instrument,
)
