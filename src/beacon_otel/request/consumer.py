"""Who called: the contract's header rules, Authorization hashing and the user's resolver."""

from __future__ import annotations

import hashlib
import inspect
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from beacon_otel.common import guard
from beacon_otel.config.settings import ConsumerResolver
from beacon_otel.contract.event import MAX_CONSUMER, clean_text

API_KEY_HEADER = "x-api-key"
AUTHORIZATION_HEADER = "authorization"
AUTHORIZATION_BYTES = AUTHORIZATION_HEADER.encode("ascii")


def hash_authorization(value: bytes) -> str:
    """``hash_`` + 12 hex chars of SHA-256: stable per credential, useless to an attacker."""
    return "hash_" + hashlib.sha256(value).hexdigest()[:12]


def consumer_from_values(
    configured: bytes | None, api_key: bytes | None, authorization: bytes | None
) -> str | None:
    """Apply the contract's precedence to the three candidate raw header values."""
    # Raw bytes, so that ASGI and WSGI servers give the same consumer for the same header.
    if configured and (text := _header_text(configured)):
        return text
    if api_key and (text := _header_text(api_key)):
        return text
    if authorization:
        return hash_authorization(authorization)
    return None


def _header_text(value: bytes) -> str:
    # The usual value (short ASCII, no NUL, no comma) is its own clean text: skip the general path.
    # ``0 in value`` (an int) is a memchr; ``b"\x00" in value`` costs ten times as much.
    if len(value) <= MAX_CONSUMER and value.isascii() and 0 not in value and _COMMA not in value:
        return value.decode("ascii")
    if _COMMA in value:
        value = first_value(value)
    return clean_text(value, MAX_CONSUMER)


_COMMA = ord(",")


def first_value(value: bytes) -> bytes:
    """The first of a header's comma-separated values: the one rule for a header sent twice.

    WSGI servers join repeated headers with commas (``first,second``) while ASGI servers pass
    each one: both give the first value.
    """
    for part in value.split(b","):
        if part.strip():
            return part.strip()
    return b""


class ConsumerRules:
    """Identifies the caller of one request from its headers, or from the user's resolver."""

    __slots__ = ("_asgi_names", "_asgi_wanted", "_configured", "_resolver", "_wsgi_keys", "timeout")

    def __init__(
        self, header: str | None, resolver: ConsumerResolver | None, *, timeout: float = 1.0
    ) -> None:
        self._configured = header.lower() if header else None
        self._resolver = resolver
        self.timeout = timeout
        """Seconds a resolver may take for one request (an awaitable answer is awaited that long)."""
        names = [self._configured, API_KEY_HEADER, AUTHORIZATION_HEADER]
        self._asgi_names = tuple(n.encode("latin-1") if n else b"" for n in names)
        self._asgi_wanted = frozenset(n for n in self._asgi_names if n)
        self._wsgi_keys = tuple(_wsgi_key(n) if n else "" for n in names)

    @property
    def has_resolver(self) -> bool:
        """True when the user's resolver decides, rather than the header rules."""
        return self._resolver is not None

    def from_asgi(self, scope: Mapping[str, Any]) -> str | None:
        """The consumer of an ASGI request (``scope`` is what a resolver receives).

        The header rules read the scope's raw ``(name, value)`` byte pairs (names lower case).
        """
        if self._resolver is not None:
            return self.resolve(scope)
        headers: Iterable[tuple[bytes, bytes]] = scope.get("headers") or ()
        wanted = self._asgi_wanted
        found: dict[bytes, bytes] | None = None
        for name, value in headers:  # one pass, one set lookup per header: this runs per request
            if name in wanted:
                if found is None:
                    found = {name: value}
                elif name not in found:
                    found[name] = value
        if found is None:
            return None
        if len(found) == 1 and self._configured is None:
            # One credential header, no configured one: the usual request, in one step.
            ((name, value),) = found.items()
            if name != AUTHORIZATION_BYTES:
                return _header_text(value) or None  # an empty header names nobody
            return hash_authorization(value) if value else None
        configured_name, key_name, auth_name = self._asgi_names
        return consumer_from_values(
            found.get(configured_name) if configured_name else None,
            found.get(key_name),
            found.get(auth_name),
        )

    def from_environ(self, environ: Mapping[str, Any], request: object = None) -> str | None:
        """The consumer of a WSGI or Django request; ``request`` is what a resolver receives."""
        if self._resolver is not None:
            return self.resolve(environ if request is None else request)
        configured_key, key_key, auth_key = self._wsgi_keys
        if not configured_key:
            api_key = environ.get(key_key)
            # What _header_text would return unchanged (WSGI strings are latin-1: ASCII is the
            # same), checked inline: a call costs about 1,000 instructions on every request.
            if (
                type(api_key) is str
                and 0 < len(api_key) <= MAX_CONSUMER
                and api_key.isascii()
                and "\x00" not in api_key
                and "," not in api_key
            ):
                return api_key  # the usual request: an ASCII key is its own consumer, no copy
        return consumer_from_values(
            _raw(environ.get(configured_key)) if configured_key else None,
            _raw(environ.get(key_key)),
            _raw(environ.get(auth_key)),
        )

    @property
    def resolver(self) -> ConsumerResolver | None:
        """The user's resolver, if any (run off the event loop under ASGI: ``capture.off_loop``)."""
        return self._resolver

    def resolve(self, request: object) -> str | None:
        """Ask the user's resolver; one that raises or returns a non-string counts as none.

        An ``async def`` resolver called here (WSGI, or no event loop) is run to completion on
        this thread within ``timeout``.
        """
        assert self._resolver is not None
        text: str | None = None
        # The user's code: a failure there is logged at DEBUG (it may raise on every request)
        # and the request is counted without a consumer. Turning the answer into text is the
        # user's code too: a Django SimpleLazyObject whose database is down raises in str().
        with guard.contained("the consumer_resolver", user_code=True, level=logging.DEBUG):
            value = self._resolver(request)
            if inspect.isawaitable(value):
                value = _run_awaitable(value, self.timeout)
            text = answer_text(value)
        return text


def answer_text(value: object) -> str | None:
    """A resolver's answer as a consumer: cleaned text, or ``None``; ``str()`` may raise (user code)."""
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    return clean_text(text, MAX_CONSUMER) or None


def is_async_resolver(resolver: object) -> bool:
    """Whether calling ``resolver`` gives a coroutine (``async def``, or an imported one that is)."""
    target = resolver.target() if hasattr(resolver, "target") else resolver
    return inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(
        getattr(target, "__call__", None)  # noqa: B004 - an object whose __call__ is async
    )


def _run_awaitable(value: Any, timeout: float) -> object:
    import asyncio  # only for an async resolver: asyncio imports ssl (see delivery.transports.guarded)

    try:
        asyncio.get_running_loop()
    except RuntimeError:

        async def bounded() -> object:
            return await asyncio.wait_for(value, timeout)

        return asyncio.run(bounded())
    # On an event loop this thread cannot wait: the processor runs ASGI resolvers off the loop.
    if inspect.iscoroutine(value):
        value.close()
    return None


def _raw(value: object) -> bytes | None:
    # PEP 3333: WSGI (and Django) header strings are the raw bytes decoded as latin-1.
    if not isinstance(value, str):
        return None
    return value.encode("latin-1", "replace")


def _wsgi_key(header: str) -> str:
    return "HTTP_" + header.upper().replace("-", "_")
