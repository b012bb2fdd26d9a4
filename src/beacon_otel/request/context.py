"""What the request itself says, as opposed to what its span says.

The hooks fill a :class:`RequestContext` while the request runs (the ASGI scope, the WSGI
environ, the framework's request object, what FastAPI recorded). When the server span ends,
the context becomes one frozen :class:`~beacon_otel.mapping.facts.RequestFacts`, which is all
mapping needs from the request side: the span gives timing and status, the facts give what
spans must not carry (the consumer) or carry lossily (path, method, route of a mounted app, the
exception text).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from beacon_otel.mapping.facts import RequestFacts
from beacon_otel.request.consumer import ConsumerRules

_facts: Callable[[tuple[Any, ...]], RequestFacts] = functools.partial(tuple.__new__, RequestFacts)
"""``RequestFacts`` from all its fields in order, made in C: one per request, where the named
tuple's own ``__new__`` (Python code, with its defaults) costs about ten times as much."""


HandedOver = tuple[str, "str | None", "int | None", int, int]
"""What a span source hands over of its request (:attr:`RequestContext.handed_over`)."""


class RequestContext:
    """What the hooks learned about one request, until its server span ends."""

    __slots__ = (
        "body_sent_ns",
        "consumer",
        "ended_span",
        "environ",
        "error",
        "handed_over",
        "inner_open",
        "inner_route",
        "matched",
        "path",
        "request",
        "resolved",
        "route",
        "scope",
        "span_context",
        "span_id",
        "validation_errors",
    )

    def __init__(self) -> None:
        self.scope: Mapping[str, Any] | None = None
        """ASGI: the request's scope, read when the span ends (routing has filled it in by then)."""
        self.environ: Mapping[str, Any] | None = None
        """WSGI: the request's environ."""
        self.request: Any = None
        """The framework's request (Flask, Django), handed to a consumer resolver."""
        self.path: str | None = None
        self.route: str | None = None
        """The request's route template; ``None`` keeps the span's ``http.route``. A hook sets it,
        or the frameworks' settle step when the server span ends (an ASGI request's template read
        from its scope after routing, the app's route under an AWS Lambda invocation)."""
        self.matched = True
        """False when ``route`` is a mount's catch-all that nothing inside matched."""
        self.consumer: str | None = None
        self.resolved = False
        self.validation_errors: list[dict[str, str]] | None = None
        self.error: str | None = None
        self.body_sent_ns: int | None = None
        """Set when a streamed body is done: until then the event waits (see ``ended_span``)."""
        self.ended_span: Any = None
        """The request's span, ended before its streamed body was sent or an inner layer
        (a mounted app's own SERVER span) ended: its event waits for both."""
        self.inner_open = 0
        """Inner SERVER spans of this request started and not ended yet."""
        self.inner_route: str | None = None
        """The route an inner layer matched (``""`` when it matched none); ``None`` without one.
        The request's route when its outer span only wraps the app (an AWS Lambda invocation)."""
        self.span_context: Any = None
        """The ``SpanContext`` of the request's outermost SERVER span, once it started."""
        self.span_id = 0
        """Its span id."""
        self.handed_over: HandedOver | None = None
        """``(method, route template, status, start_ns, end_ns)`` of a request whose span source
        knows its facts, set just before it ends the span: the processor makes the event from
        them, without reading the span, if they are plain (``mapping.span_to_event.plain_event``)."""

    @property
    def streaming(self) -> bool:
        """A streamed body is still being sent (a WSGI response iterable not closed yet)."""
        return self.body_sent_ns == 0

    @property
    def waiting(self) -> bool:
        """The event cannot be made yet: a streamed body or an inner layer is not done."""
        return self.body_sent_ns == 0 or self.inner_open > 0

    def facts(self, rules: ConsumerRules) -> RequestFacts:
        """The frozen value mapping takes; the consumer is resolved here unless a hook did.

        Read after the frameworks' settle step, which left the route in ``route`` and
        ``matched``: the request side names no framework and calls none.
        """
        scope = self.scope
        if scope is not None:
            if not self.resolved:
                # Resolved at the end, so a resolver sees what the app's auth layer set.
                self.consumer = rules.from_asgi(scope)
            path = scope.get("path")
            method = scope.get("method")
            return _facts(
                (
                    method if isinstance(method, str) else None,
                    path if isinstance(path, str) else None,
                    self.route,
                    self.matched,
                    self.consumer,
                    self.validation_errors,
                    self.error,
                    self.body_sent_ns or None,
                )
            )
        environ = self.environ
        if environ is None:
            return RequestFacts(consumer=self.consumer, validation_errors=self.validation_errors)
        if not self.resolved:
            self.consumer = rules.from_environ(environ, self.request)
        method = environ.get("REQUEST_METHOD")
        return _facts(
            (
                method if isinstance(method, str) else None,
                self.path or wsgi_path(environ),
                self.route,
                True,
                self.consumer,
                self.validation_errors,
                self.error,
                self.body_sent_ns or None,
            )
        )


def wsgi_path(environ: Mapping[str, Any]) -> str | None:
    """The request's path from a WSGI environ, as the client sent it.

    Exact where span attributes are not: ``url.path`` is percent-decoded (an encoded ``?``
    looks like a query), WSGI's is latin-1 mojibake of UTF-8 bytes, old-convention
    ``http.target`` is cut at a decoded ``?``, and new-convention WSGI spans have no path at
    all when the server gives neither RAW_URI nor REQUEST_URI.
    """
    raw = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    if not isinstance(raw, str):
        return None
    if raw.isascii():
        return raw or None  # nothing to re-decode
    # PEP 3333 strings are the raw bytes decoded as latin-1; the bytes are UTF-8 URLs.
    return raw.encode("latin-1", "replace").decode("utf-8", "replace") or None
