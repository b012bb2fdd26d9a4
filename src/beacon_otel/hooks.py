"""Instrumentation hooks: what a request tells us that its span must not carry.

The consumer comes from credentials (X-API-Key, Authorization) that must never become span
attributes, where every other exporter would ship them. So the hooks keep a reference to the
request beside the span, keyed by span id, and the processor reads it when the span ends.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry import trace

from beacon_otel.consumer import ConsumerRules
from beacon_otel.routes import mounted_route_template, was_mounted

logger = logging.getLogger("beacon_otel")

Hook = Callable[..., None]

_SERVER = trace.SpanKind.SERVER

FRAMEWORKS = ("asgi", "fastapi", "starlette", "wsgi", "flask", "django")


class RequestContext:
    """What the hooks learned about one request, until its server span ends."""

    __slots__ = ("consumer", "request", "resolved", "scope", "top_app", "validation_errors")

    def __init__(self) -> None:
        self.consumer: str | None = None
        self.resolved = False
        self.scope: Mapping[str, Any] | None = None
        self.top_app: Any = None
        self.request: Any = None
        self.validation_errors: list[dict[str, str]] | None = None

    def route(self) -> str | None:
        """For a request routed into a mounted sub-app, the full route template; else ``None``."""
        scope = self.scope
        if scope is not None and self.top_app is not None and was_mounted(scope):
            return mounted_route_template(self.top_app, scope)
        return None

    def path(self) -> str | None:
        """The request's path as the server received it, without the query string.

        Exact where span attributes are not: ``url.path`` is percent-decoded (an encoded
        ``?`` looks like a query), WSGI's is latin-1 mojibake of UTF-8 bytes, old-convention
        ``http.target`` is cut at a decoded ``?``, and new-convention WSGI spans have no path
        at all when the server gives neither RAW_URI nor REQUEST_URI.
        """
        if self.scope is not None:
            path = self.scope.get("path")
            return path if isinstance(path, str) else None
        request = self.request
        if request is None:
            return None
        path = getattr(request, "path", None)  # Django's HttpRequest: already decoded
        if isinstance(path, str):
            return path
        environ = _environ_of(request)
        if environ is None:
            return None
        raw = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
        # PEP 3333 strings are the raw bytes decoded as latin-1; the bytes are UTF-8 URLs.
        return raw.encode("latin-1", "replace").decode("utf-8", "replace") or None

    def method(self) -> str | None:
        """The method as sent: the instrumentations fold unknown ones (PURGE) into ``_OTHER``."""
        if self.scope is not None:
            method = self.scope.get("method")
        else:
            request = self.request
            method = getattr(request, "method", None)  # Django
            if not isinstance(method, str):
                environ = _environ_of(request)
                method = environ.get("REQUEST_METHOD") if environ is not None else None
        return method if isinstance(method, str) else None


class RequestRegistry:
    """Request contexts keyed by server span id, bounded so a span that never ends cannot leak."""

    def __init__(self, rules: ConsumerRules, limit: int = 100_000) -> None:
        self.rules = rules
        self._limit = limit
        self._contexts: dict[int, RequestContext] = {}
        self.evicted = 0
        _REGISTRIES.add(self)

    def open(self, span: Any) -> RequestContext | None:
        """A new context for a recording SERVER span; ``None`` for any other span."""
        # NonRecordingSpan has no .kind; sampled-out spans never reach on_end, so keep nothing.
        if getattr(span, "kind", None) is not _SERVER or not span.is_recording():
            return None
        context = RequestContext()
        contexts = self._contexts
        # No lock: single dict operations are atomic, and eviction only has to be approximate.
        if len(contexts) >= self._limit:
            with contextlib.suppress(StopIteration, KeyError, RuntimeError):
                contexts.pop(next(iter(contexts)))
                self.evicted += 1
        contexts[span.get_span_context().span_id] = context
        return context

    def get(self, span: Any) -> RequestContext | None:
        """The context of a live span, if the hooks opened one."""
        return self._contexts.get(span.get_span_context().span_id)

    def pop(self, span_id: int) -> RequestContext | None:
        """Take the context of an ended span."""
        return self._contexts.pop(span_id, None)

    def __len__(self) -> int:
        return len(self._contexts)

    def consumer(self, context: RequestContext) -> str | None:
        """The consumer of a finished request, resolved once (a response hook may have already)."""
        if not context.resolved:
            scope = context.scope
            if scope is not None:
                # Resolved at the end, so the resolver sees what the app's auth layer set.
                context.consumer = self.rules.from_asgi(scope)
            elif context.request is not None:
                request = context.request
                context.consumer = self.rules.from_environ(_environ_of(request) or {}, request)
            context.resolved = True
        return context.consumer

    # -- hooks, one set per instrumentation's signature ----------------------------------

    def hooks(self, framework: str) -> dict[str, Hook]:
        """Keyword arguments for ``<Framework>Instrumentor().instrument(...)`` or ``instrument_app``."""
        if framework in ("asgi", "fastapi", "starlette"):
            if framework == "fastapi":
                capture_fastapi_validation_errors()
            return {"server_request_hook": failsafe(self._asgi_request)}
        request_and_response = {
            "wsgi": (self._wsgi_request, self._wsgi_response),
            "flask": (self._wsgi_request, self._flask_response),
            "django": (self._django_request, self._django_response),
        }
        if framework not in request_and_response:
            raise ValueError(f"Expected framework to be one of {', '.join(FRAMEWORKS)}, got {framework!r}")
        request_hook, response_hook = request_and_response[framework]
        hooks = {"request_hook": failsafe(request_hook)}
        if self.rules.has_resolver:
            # A resolver may need the framework's request while it is current (flask.request,
            # Django's request.user). Header rules read the environ the request hook kept,
            # when the span ends: no response hook, no cost per response.
            hooks["response_hook"] = failsafe(response_hook)
        return hooks

    def _asgi_request(self, span: Any, scope: Mapping[str, Any]) -> None:
        context = self.open(span)
        if context is not None:
            context.scope = scope
            context.top_app = scope.get("app")

    def _wsgi_request(self, span: Any, environ: Mapping[str, Any]) -> None:
        context = self.open(span)
        if context is not None:
            context.request = environ

    def _wsgi_response(self, span: Any, environ: Mapping[str, Any], *_: Any) -> None:
        context = self.get(span)
        if context is not None:
            context.consumer = self.rules.from_environ(environ)
            context.resolved = True

    def _flask_response(self, span: Any, *_: Any) -> None:
        context = self.get(span)
        if context is None:
            return
        import flask

        # Called from start_response, inside the request context: the resolver sees
        # flask.request with whatever the app's auth layer attached to it.
        request = flask.request._get_current_object() if flask.has_request_context() else None
        environ = request.environ if request is not None else context.request
        context.consumer = self.rules.from_environ(environ, request)
        context.resolved = True

    def _django_request(self, span: Any, request: Any) -> None:
        context = self.open(span)
        if context is not None:
            context.request = request

    def _django_response(self, span: Any, request: Any, response: Any) -> None:
        context = self.get(span)
        if context is not None:
            # After the middleware chain: request.user and friends are set by now.
            context.consumer = self.rules.from_environ(request.META, request)
            context.resolved = True

    def record_validation_errors(self, span: Any, errors: list[dict[str, str]]) -> bool:
        """Attach FastAPI validation errors to the request whose span is ``span``."""
        context = self.get(span)
        if context is None:
            return False
        context.validation_errors = errors
        return True


_REGISTRIES: weakref.WeakSet[RequestRegistry] = weakref.WeakSet()


def _environ_of(request: Any) -> Mapping[str, Any] | None:
    """The WSGI environ of what a hook kept: the environ itself, Flask's or Django's request."""
    environ = getattr(request, "META", None) or getattr(request, "environ", None) or request
    return environ if isinstance(environ, Mapping) else None


def failsafe(hook: Hook) -> Hook:
    """Wrap a hook so that nothing it raises reaches the request (WSGI hooks are unprotected)."""

    @functools.wraps(hook)
    def guarded(*args: Any, **kwargs: Any) -> None:
        try:
            hook(*args, **kwargs)
        except Exception:
            logger.debug("beacon-otel hook %s failed", hook.__name__, exc_info=True)

    return guarded


def compose(*hooks: Hook | None) -> Hook | None:
    """One hook calling each given hook in turn, each failsafe; ``None`` when none is given."""
    present = [hook for hook in hooks if hook is not None]
    if not present:
        return None
    if len(present) == 1:
        return present[0]
    guarded = [failsafe(hook) for hook in present]

    def composed(*args: Any, **kwargs: Any) -> None:
        for hook in guarded:
            hook(*args, **kwargs)

    return composed


_validation_capture_installed = False


def capture_fastapi_validation_errors() -> None:
    """Record FastAPI's request validation errors on the request's context, once per process.

    The 422 response is FastAPI's own, untouched: only the construction of
    ``RequestValidationError`` is observed, so custom exception handlers keep working.
    """
    global _validation_capture_installed
    if _validation_capture_installed:
        return
    try:
        from fastapi.exceptions import RequestValidationError
    except ImportError:
        return
    original_init = RequestValidationError.__init__

    @functools.wraps(original_init)
    def observed_init(self: Any, errors: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, errors, *args, **kwargs)
        try:
            _record_validation_errors(errors)
        except Exception:
            logger.debug("could not record validation errors", exc_info=True)

    RequestValidationError.__init__ = observed_init  # type: ignore[method-assign]
    _validation_capture_installed = True


def _record_validation_errors(errors: Any) -> None:
    span = trace.get_current_span()
    if not span.is_recording() or not _REGISTRIES:
        return
    items = [
        {
            "field": ".".join(str(part) for part in error.get("loc", ())),
            "message": str(error.get("msg", "")),
            "type": str(error.get("type", "")),
        }
        for error in errors
        if isinstance(error, Mapping)
    ]
    for registry in list(_REGISTRIES):
        if registry.record_validation_errors(span, items):
            return
