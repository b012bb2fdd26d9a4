"""WSGI: the environ every WSGI framework's hooks keep, and streamed bodies' real duration.

Flask's and Django's instrumentations end the request's span when the view returns, before
the server iterates a streamed body: a 2 s ``stream_with_context``-less download arrives as
2 ms. PEP 3333 servers call the response iterable's ``close()`` after its last byte; both
frameworks let a callback run there (:func:`body_closer`), so the request's event waits for it
and its duration is the time until the last byte was handed to the server.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from beacon_otel.common import guard
from beacon_otel.frameworks.base import Hook, hook
from beacon_otel.request.context import RequestContext
from beacon_otel.request.registry import RequestRegistry

BodySent = Callable[[RequestContext], None]


def wsgi_hooks(registry: RequestRegistry) -> dict[str, Hook]:
    """A WSGI app under OpenTelemetryMiddleware: the environ."""

    def request_hook(span: Any, environ: Mapping[str, Any]) -> None:
        try:  # inline, as in the ASGI hook
            context = registry.open(span)
            if context is not None:
                context.environ = environ
        except Exception:
            guard.internal_error("the WSGI request hook")

    hooks = {"request_hook": request_hook}
    if registry.rules.has_resolver:
        # A resolver may need the request while it is current. Header rules read the environ
        # the request hook kept, when the span ends: no response hook, no cost per response.
        @hook("the WSGI response hook")
        def response_hook(span: Any, environ: Mapping[str, Any], *_: Any) -> None:
            context = registry.get(span)
            if context is not None and not context.resolved:  # set_consumer() wins
                context.consumer = registry.rules.from_environ(environ)
                context.resolved = True

        hooks["response_hook"] = response_hook
    return hooks


def body_closer(context: RequestContext, body_sent: BodySent) -> Callable[[], None]:
    """Hold the request's event until the callback returned runs: the server closed the body."""
    if context.body_sent_ns is None:
        context.body_sent_ns = 0  # streaming: the event waits

    @guard.guarded("ending a streamed request", default=None)
    def closed() -> None:
        context.body_sent_ns = time.time_ns()
        body_sent(context)

    return closed
