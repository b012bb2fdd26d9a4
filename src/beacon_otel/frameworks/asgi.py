"""ASGI (and Starlette, FastAPI, Falcon's ASGI app): the scope, read when the span ends.

Also the server's ``send`` for the response's last message, called outside the request's
context (:func:`send_outside_request`).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace

from beacon_otel.common import guard
from beacon_otel.frameworks.base import Hook
from beacon_otel.request import registry as requests
from beacon_otel.request.registry import RequestRegistry

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def asgi_hooks(registry: RequestRegistry) -> dict[str, Hook]:
    """ASGI, Starlette and FastAPI: the scope, read when the span ends (after routing)."""

    def server_request_hook(span: Any, scope: Mapping[str, Any]) -> None:
        # Inline try rather than ``@hook``: one call less on every request.
        try:
            context = registry.open(span)
            if context is not None and context.scope is None:
                context.scope = scope
        except Exception:
            guard.internal_error("the ASGI request hook")

    return {"server_request_hook": server_request_hook}


_NO_CONTEXT = otel_context.Context()


def send_outside_request(send: Send) -> Send:
    """The server's ``send``, given the response's last message outside the request's context.

    A server schedules callbacks from inside that ``send``: uvicorn starts its keep-alive timer
    there (``loop.call_later``), and asyncio keeps a copy of the caller's context variables in
    the timer even once the next request cancels it, until it purges cancelled timers. Sent
    from inside the request, that copy holds the SERVER span, its attributes and Beacon's
    request (about 40 tracked objects per request) for seconds after the response. They then
    outlive young collections into the oldest generation, and full collections of a large
    process follow every few thousand requests: 90 to 180 ms each under
    ``opentelemetry-instrument`` with FastAPI, the p99 of a loaded server
    (``bench/RESULTS.md``). The span and Beacon's request are put back as soon as the server
    returns, before anything that ends the span or reads the request.
    """

    async def send_last_outside(message: MutableMapping[str, Any]) -> None:
        if message["type"] != "http.response.body" or message.get("more_body", False):
            await send(message)
            return
        span_token = otel_context.attach(_NO_CONTEXT)
        request_token = requests.leave()
        try:
            await send(message)
        finally:
            requests.come_back(request_token)
            otel_context.detach(span_token)

    return send_last_outside


def is_sent_outside(send: Any) -> bool:
    """Whether ``send`` is :func:`send_outside_request`'s already (an app mounted in another)."""
    return getattr(send, "__code__", None) is _SEND_LAST_OUTSIDE


async def _no_server(message: MutableMapping[str, Any]) -> None:
    """Stands for a server's ``send`` once, to learn the wrapper's code (never awaited)."""


_SEND_LAST_OUTSIDE = send_outside_request(_no_server).__code__


def outermost_sends_outside(original_call: Any) -> Any:
    """Patch factory for an ASGI app class's ``__call__`` (Starlette's, FastAPI's).

    Only the app the server calls wraps the server's ``send``: an app mounted in another finds
    ``scope["app"]`` set by its parent, and FastAPI's ``__call__`` hands Starlette's a ``send``
    already wrapped. An app called inside a span already (the contrib ASGI middleware wrapped
    around it by hand) is left alone: that middleware's ``send`` opens its ``http send`` spans
    under the current span, and outside the request they would start traces of their own.
    """

    @functools.wraps(original_call)
    async def __call__(self: Any, scope: MutableMapping[str, Any], receive: Any, send: Send) -> None:
        if (
            scope["type"] == "http"
            and "app" not in scope
            and not is_sent_outside(send)
            and trace.get_current_span() is trace.INVALID_SPAN
        ):
            send = send_outside_request(send)
        await original_call(self, scope, receive, send)

    return __call__
