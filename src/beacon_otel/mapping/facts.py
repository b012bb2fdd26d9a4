"""What mapping needs from the request side: a finished request's facts, and its exception text.

Mapping owns its input type: the request side (:mod:`beacon_otel.request.context`) makes a
:class:`RequestFacts` when the span ends, and mapping reads it, without ever importing the
request side.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple


class RequestFacts(NamedTuple):
    """One finished request as its hooks saw it; every field ``None`` when they did not see it.

    A named tuple rather than a frozen dataclass: one is made per request, and a frozen
    dataclass's ``__init__`` (an ``object.__setattr__`` per field) costs about ten times as much.
    """

    method: str | None = None
    """The method as sent (the instrumentations fold unknown ones such as PURGE into ``_OTHER``)."""
    path: str | None = None
    """The path as the server received it, without the query: exact where span attributes are not."""
    route: str | None = None
    """A template the span does not know (mounted sub-apps, ``Host`` routes, a Flask 405)."""
    route_matched: bool = True
    """False when ``route`` is a mount's catch-all that nothing inside matched: a 404 or 405
    there reports the concrete path, as the contract asks for unmatched requests."""
    consumer: str | None = None
    validation_errors: Sequence[Mapping[str, str]] | None = None
    error: str | None = None
    """``"ExcType: message"`` of an unhandled exception the span did not record as an event."""
    body_sent_ns: int | None = None
    """When the last byte of a streamed body went to the server, if after the span ended."""


NO_FACTS = RequestFacts()


def exception_text(events: Iterable[Any]) -> str | None:
    """``"ExcType: message"`` of the first ``exception`` span event (the contract's error form)."""
    for event in events:
        if event.name == "exception":
            attributes = event.attributes or {}
            # exception.type is module-qualified; the contract wants the class name.
            exc_type = str(attributes.get("exception.type") or "Exception").rsplit(".", 1)[-1]
            message = attributes.get("exception.message")
            return f"{exc_type}: {message}" if message else exc_type
    return None
