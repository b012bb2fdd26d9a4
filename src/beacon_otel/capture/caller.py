"""The app names the caller of the request it is serving: :func:`set_consumer`.

The request being served is the registry's (:func:`beacon_otel.request.registry.current_request`);
a Flask request whose span has not started yet keeps the name on its environ
(:mod:`beacon_otel.frameworks.flask`).
"""

from __future__ import annotations

import logging

from beacon_otel.common import guard
from beacon_otel.contract.event import MAX_CONSUMER, clean_text
from beacon_otel.frameworks.flask import keep_early_flask_consumer
from beacon_otel.request.registry import current_request

logger = logging.getLogger("beacon_otel")


def set_consumer(identifier: object) -> None:
    """Name the caller of the request being served: its event's ``consumer``.

    For apps whose credentials say nothing stable (a JWT, a session cookie): call it from the
    app's own auth code once the user is known, with the JWT's ``sub`` claim, the session's user
    id or a tenant. It wins over the header rules and the ``consumer_resolver``. Works in any
    framework, on the request's thread or task (a FastAPI dependency, a Flask ``before_request``,
    Django middleware or a view, a Litestar guard). The value is made text, valid UTF-8 and cut
    to 256 characters like any consumer; ``None`` means no consumer. Outside a request that
    Beacon sees it does nothing (one DEBUG line); it never raises.
    """
    try:
        consumer = (None if identifier is None else clean_text(str(identifier), MAX_CONSUMER)) or None
        context = current_request()
        if context is not None:
            context.consumer = consumer
            context.resolved = True  # neither the header rules nor a resolver overwrite it
        elif not keep_early_flask_consumer(consumer):
            logger.debug("beacon-otel: set_consumer() called outside a request Beacon sees; ignored")
    except Exception:
        guard.internal_error("set_consumer()")
