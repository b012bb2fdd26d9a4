"""Pyramid: the public path of ``instrument_config`` and of the tween.

``beacon_otel.pyramid_support.beacon_tween_factory`` is the tween's dotted name, which Pyramid
settings store (``pyramid.tweens``): it must keep resolving.

Re-exported from :mod:`beacon_otel.frameworks.pyramid`, where it lives now.
"""

from beacon_otel.frameworks.pyramid import (
    beacon_tween_factory as beacon_tween_factory,
)
from beacon_otel.frameworks.pyramid import (
    instrument_config as instrument_config,
)
