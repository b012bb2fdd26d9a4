"""The request side: what a request tells Beacon that its span must not carry.

The consumer comes from credentials (X-API-Key, Authorization) that must never become span
attributes, where every other exporter would ship them. So each request gets a
:class:`~beacon_otel.request.RequestContext` when its SERVER span starts, the framework hooks
keep the request (scope, environ, framework request) in it, and the processor turns it into
one frozen :class:`~beacon_otel.request.RequestFacts` when the span ends.

A request may open more than one SERVER span (a mounted FastAPI app with its own telemetry
inside an instrumented one): the inner spans share the outer span's context, so whatever
layer learns something (the scope, the validation errors, the exception) puts it on the one
request that becomes the one event.

Frameworks are one table, :data:`FRAMEWORKS`: a name (the instrumentor's entry-point name)
to a function giving the hook keyword arguments of that framework's instrumentation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Any

from opentelemetry import trace

from beacon_otel import guard, wsgi_support
from beacon_otel.consumer import ConsumerRules
from beacon_otel.request import RequestContext

Hook = Callable[..., None]
HookTable = Callable[["RequestRegistry"], dict[str, Hook]]

_SERVER = trace.SpanKind.SERVER

_CURRENT: ContextVar[tuple[Any, RequestContext] | None] = ContextVar("beacon_request", default=None)
"""The request being served in this task or thread, with its outermost SERVER span."""


def current_request() -> RequestContext | None:
    """The context of the request this code runs for, while its outermost span is live."""
    current = _CURRENT.get()
    if current is None or not current[0].is_recording():
        return None  # left over from an earlier request on this thread
    return current[1]


class RequestRegistry:
    """Request contexts keyed by server span id, bounded so a span that never ends cannot leak."""

    def __init__(
        self,
        rules: ConsumerRules,
        limit: int = 100_000,
        body_sent: Callable[[RequestContext], None] | None = None,
    ) -> None:
        self.rules = rules
        self.body_sent = body_sent or _nothing
        """Called when a streamed body's last byte went out, with its request's context."""
        self._limit = limit
        self._contexts: dict[int, RequestContext] = {}
        self._nested: dict[int, RequestContext] = {}
        self.evicted = 0

    def started(self, span: Any) -> None:
        """A SERVER span started: a new request, or one more layer of the current one.

        A mounted FastAPI sub-app (its native telemetry) opens a second SERVER span for the
        same request under a fresh OpenTelemetry context, so the current span cannot tell. A
        context variable set when the outer span starts can: same task, or same thread.
        """
        if not self.started_inner(span):
            _CURRENT.set((span, self._add(span.get_span_context().span_id)))

    def started_inner(self, span: Any) -> bool:
        """If a request is being served here, ``span`` becomes one of its inner layers: True.

        Also for the INTERNAL span an instrumented mounted app opens inside the request's
        SERVER span: only that span records the exception escaping the mounted app.
        """
        current = _CURRENT.get()
        if current is None or current[0] is span or not current[0].is_recording():
            return False
        if len(self._nested) < self._limit:  # bounded even if such spans never end
            self._nested[span.get_span_context().span_id] = current[1]
            current[1].inner_open += 1
        return True

    def _add(self, span_id: int) -> RequestContext:
        context = RequestContext()
        contexts = self._contexts
        # No lock: single dict operations are atomic, and eviction only has to be approximate.
        if len(contexts) >= self._limit:
            with contextlib.suppress(StopIteration, KeyError, RuntimeError):
                contexts.pop(next(iter(contexts)))
                self.evicted += 1
        contexts[span_id] = context
        return context

    def open(self, span: Any) -> RequestContext | None:
        """The context of a recording SERVER span, for its hooks; ``None`` for any other span."""
        # NonRecordingSpan has no .kind; sampled-out spans never reach on_end, so keep nothing.
        if getattr(span, "kind", None) is not _SERVER or not span.is_recording():
            return None
        span_id = span.get_span_context().span_id
        context = self._contexts.get(span_id) or self._nested.get(span_id)
        # Opened here when on_start did not see the span: the hooks were given to an
        # instrumentation whose provider does not carry this processor.
        return context if context is not None else self._add(span_id)

    def get(self, span: Any) -> RequestContext | None:
        """The context of a live span, if it has one."""
        span_id = span.get_span_context().span_id
        return self._contexts.get(span_id) or self._nested.get(span_id)

    def pop(self, span_id: int) -> RequestContext | None:
        """Take the context of an ended outermost span."""
        return self._contexts.pop(span_id, None)

    @property
    def has_inner_layers(self) -> bool:
        """Whether any inner layer is open (a dict's truth: the common answer is a quick no)."""
        return bool(self._nested)

    def pop_nested(self, span_id: int) -> RequestContext | None:
        """Take the outer request's context if ``span_id`` was an inner layer; else ``None``."""
        if not self._nested:
            return None
        return self._nested.pop(span_id, None)

    def __len__(self) -> int:
        return len(self._contexts) + len(self._nested)

    def hooks(self, framework: str) -> dict[str, Hook]:
        """Keyword arguments for ``<Framework>Instrumentor().instrument(...)`` or ``instrument_app``."""
        table = FRAMEWORKS.get(framework)
        if table is None:
            raise ValueError(f"Expected framework to be one of {', '.join(FRAMEWORKS)}, got {framework!r}")
        return table(self)


def _nothing(context: RequestContext) -> None:
    pass


# -- each framework's hooks -------------------------------------------------------------------
#
# A hook runs inside the instrumentation, on the request's thread: it only keeps references.
# Each is guarded (WSGI hooks are unprotected upstream: one that raises breaks the request).


def hook(action: str) -> Callable[[Hook], Hook]:
    """A hook whose failure is contained: logged once, never raised into the request."""
    return guard.guarded(action, default=None)


def asgi_hooks(registry: RequestRegistry) -> dict[str, Hook]:
    """ASGI, Starlette and FastAPI: the scope, read when the span ends (after routing)."""

    @hook("the ASGI request hook")
    def server_request_hook(span: Any, scope: Mapping[str, Any]) -> None:
        context = registry.open(span)
        if context is not None and context.scope is None:
            context.scope = scope

    return {"server_request_hook": server_request_hook}


def fastapi_hooks(registry: RequestRegistry) -> dict[str, Hook]:
    """FastAPI: the ASGI hooks, and its request validation errors recorded on the request."""
    from beacon_otel.fastapi_support import capture_validation_errors

    capture_validation_errors()
    return asgi_hooks(registry)


def wsgi_hooks(registry: RequestRegistry) -> dict[str, Hook]:
    """A WSGI app under OpenTelemetryMiddleware: the environ."""

    @hook("the WSGI request hook")
    def request_hook(span: Any, environ: Mapping[str, Any]) -> None:
        context = registry.open(span)
        if context is not None:
            context.environ = environ

    hooks = {"request_hook": request_hook}
    if registry.rules.has_resolver:
        # A resolver may need the request while it is current. Header rules read the environ
        # the request hook kept, when the span ends: no response hook, no cost per response.
        @hook("the WSGI response hook")
        def response_hook(span: Any, environ: Mapping[str, Any], *_: Any) -> None:
            context = registry.get(span)
            if context is not None:
                context.consumer = registry.rules.from_environ(environ)
                context.resolved = True

        hooks["response_hook"] = response_hook
    return hooks


def flask_hooks(registry: RequestRegistry) -> dict[str, Hook]:
    """Flask: the environ, the route of a 405, and the resolver inside the request context."""
    import flask

    @hook("the Flask request hook")
    def request_hook(span: Any, environ: Mapping[str, Any]) -> None:
        context = registry.open(span)
        if context is None:
            return
        context.environ = environ
        if flask.has_request_context():
            request = flask.request._get_current_object()  # type: ignore[attr-defined]
            context.request = request
            if request.routing_exception is not None:
                context.route = wsgi_support.flask_rule_of_405(request)
            wsgi_support.watch_flask_stream(context, registry.body_sent)

    hooks = {"request_hook": request_hook}
    if registry.rules.has_resolver:

        @hook("the Flask response hook")
        def response_hook(span: Any, *_: Any) -> None:
            context = registry.get(span)
            if context is None:
                return
            # Called from start_response, inside the request context: the resolver sees
            # flask.request with whatever the app's auth layer attached to it.
            request = flask.request._get_current_object() if flask.has_request_context() else None  # type: ignore[attr-defined]
            environ = request.environ if request is not None else context.environ
            context.consumer = registry.rules.from_environ(environ or {}, request)
            context.resolved = True

        hooks["response_hook"] = response_hook
    return hooks


def django_hooks(registry: RequestRegistry) -> dict[str, Hook]:
    """Django: its ``HttpRequest`` (decoded path, ``request.user`` for a resolver); Ninja, REST framework."""
    from beacon_otel import django_support

    @hook("the Django request hook")
    def request_hook(span: Any, request: Any) -> None:
        context = registry.open(span)
        if context is not None:
            context.request = request
            context.environ = request.META
            context.path = request.path
            if not django_support.installed:
                django_support.capture_validation_errors()  # Ninja, REST framework

    resolve = registry.rules.has_resolver

    # Always a response hook: a streamed response's event waits for its last byte.
    @hook("the Django response hook")
    def response_hook(span: Any, request: Any, response: Any) -> None:
        context = registry.get(span)
        if context is None:
            return
        context.route = django_support.ninja_route(request)  # after routing: the view is known
        if resolve:
            # After the middleware chain: request.user and friends are set by now.
            context.consumer = registry.rules.from_environ(request.META, request)
            context.resolved = True
        wsgi_support.watch_django_stream(context, response, registry.body_sent)

    return {"request_hook": request_hook, "response_hook": response_hook}


FRAMEWORKS: dict[str, HookTable] = {
    "asgi": asgi_hooks,
    "fastapi": fastapi_hooks,
    "starlette": asgi_hooks,
    "wsgi": wsgi_hooks,
    "flask": flask_hooks,
    "django": django_hooks,
}
"""Instrumentor entry-point name -> the hooks of its instrumentation. Add a framework here."""


def compose(*hooks: Hook | None) -> Hook | None:
    """One hook calling each given hook in turn, each contained; ``None`` when none is given."""
    present = [h for h in hooks if h is not None]
    if not present:
        return None
    if len(present) == 1:
        return present[0]
    # The user's hooks are user code: a failure there is theirs, logged, never re-raised.
    contained_hooks = [
        guard.guarded(f"hook {getattr(h, '__name__', h)!s}", default=None, user_code=True)(h) for h in present
    ]

    def composed(*args: Any, **kwargs: Any) -> None:
        for each in contained_hooks:
            each(*args, **kwargs)

    return composed


# Litestar, Bottle, Falcon, Tornado, Pyramid, aiohttp: built on the hooks above, in a module of
# their own, with the tween and middleware auto-run installs where an instrumentation takes no hooks.
from beacon_otel.framework_hooks import COMPANIONS as COMPANIONS  # noqa: E402
from beacon_otel.framework_hooks import TABLE as _MORE_FRAMEWORKS  # noqa: E402

FRAMEWORKS.update(_MORE_FRAMEWORKS)
