"""Flask: its request (for a consumer resolver), the rule of a 405, streamed bodies, and
beacon-otel's lean SERVER spans.

Under the contrib Flask instrumentation, Beacon's hooks (:func:`flask_hooks`) keep the request
on its context. Where Beacon alone reads the spans, auto-run installs :func:`install_lean_source`
instead: the span is made here, with the few attributes an event needs, and the request's
context is filled in directly.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from types import GeneratorType
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode

from beacon_otel.common import guard, patching
from beacon_otel.common.spans import CURRENT_SPAN_KEY
from beacon_otel.frameworks.base import Hook, hook, record_once
from beacon_otel.frameworks.wsgi import (
    BodySent,
    IncomingContext,
    body_closer,
    server_span_attributes,
)
from beacon_otel.request.context import RequestContext
from beacon_otel.request.registry import RequestRegistry
from beacon_otel.version import __version__


def flask_hooks(registry: RequestRegistry) -> dict[str, Hook]:
    """Flask: the environ, the route of a 405, and the resolver inside the request context."""
    import flask  # noqa: F401  (without Flask, fail here at set-up rather than on a request)

    def request_hook(span: Any, environ: Mapping[str, Any]) -> None:
        try:  # inline, as in the ASGI hook
            context = registry.open(span)
            if context is None:
                return
            context.environ = environ
            if EARLY_CONSUMER in environ:  # set_consumer() in an earlier before_request
                context.consumer, context.resolved = environ[EARLY_CONSUMER], True
            request = current_flask_request()
            if request is not None:
                context.request = request
                if request.routing_exception is not None:
                    context.route = flask_rule_of_405(request)
                watch_flask_stream(context, registry.body_sent)
        except Exception:
            guard.internal_error("the Flask request hook")

    hooks = {"request_hook": request_hook}
    if registry.rules.has_resolver:

        @hook("the Flask response hook")
        def response_hook(span: Any, *_: Any) -> None:
            context = registry.get(span)
            if context is None or context.resolved:  # set_consumer() wins
                return
            # Called from start_response, inside the request context: the resolver sees
            # flask.request with whatever the app's auth layer attached to it.
            request = current_flask_request()
            environ = request.environ if request is not None else context.environ
            context.consumer = registry.rules.from_environ(environ or {}, request)
            context.resolved = True

        hooks["response_hook"] = response_hook
    return hooks


EARLY_CONSUMER = "beacon_otel.consumer"
"""The environ key of a consumer named before the Flask request's span started."""


def keep_early_flask_consumer(consumer: str | None) -> bool:
    """Keep ``set_consumer()``'s value on the Flask request whose span has not started yet.

    FlaskInstrumentor starts the span in a ``before_request`` function added when the app is
    instrumented: by hand, after the app's own, which may already know the user. The request
    hook finds the value in the environ. False outside a Flask request.
    """
    if "flask" not in sys.modules:
        return False
    request = current_flask_request()
    if request is None:
        return False
    request.environ[EARLY_CONSUMER] = consumer
    return True


def flask_rule_of_405(request: Any) -> str | None:
    """The rule of a Flask request refused with 405: the rule that matched its path, not its method.

    Only called when routing failed (``request.routing_exception``), so this costs nothing on
    the usual request.
    """
    from werkzeug.exceptions import MethodNotAllowed

    error = request.routing_exception
    if not isinstance(error, MethodNotAllowed) or not error.valid_methods:
        return None
    import flask

    adapter = flask.current_app.url_map.bind_to_environ(request.environ)
    rule, _ = adapter.match(method=next(iter(error.valid_methods)), return_rule=True)
    return str(rule.rule)


def current_flask_request() -> Any:
    """The request Flask is serving in this context, or ``None`` outside a request."""
    import flask

    # Flask's own context variable (Flask 2.3+): one lookup, where flask.has_request_context()
    # and flask.request._get_current_object() go through two LocalProxy look-ups each.
    variable = getattr(flask.globals, "_cv_request", None)
    if variable is not None:
        flask_context = variable.get(None)
        return flask_context.request if flask_context is not None else None
    return flask.request._get_current_object() if flask.has_request_context() else None  # type: ignore[attr-defined]


def watch_flask_stream(context: RequestContext, body_sent: BodySent) -> None:
    """When Flask's response is streamed, keep the event until the server closes its body."""
    import flask

    # A partial of a module-level function: this runs on every Flask request, and a decorated
    # closure built per request (functools.wraps copying its metadata) costs several times more.
    flask.after_this_request(functools.partial(_after_flask_view, context, body_sent))


def _after_flask_view(context: RequestContext, body_sent: BodySent, response: Any) -> Any:
    # A generator body (Response(gen()), stream_with_context): werkzeug's is_streamed also
    # holds for error pages rendered through an iterator, which are sent at once.
    try:
        if type(response.response) is GeneratorType:
            response.call_on_close(body_closer(context, body_sent))
    except Exception:
        guard.internal_error("watching a streamed Flask response")
    return response


# -- the lean span source -------------------------------------------------------------------

LEAN_SCOPE = __name__
"""The instrumentation scope of the lean source's spans."""
_SCHEMA_URL = "https://opentelemetry.io/schemas/1.21.0"  # the stable HTTP conventions
_SERVED = "beacon_otel.flask.served"
"""The environ key of the request's :class:`_Served`, from ``wsgi_app`` to the dispatch."""
_EXCLUDED_URLS = ("OTEL_PYTHON_FLASK_EXCLUDED_URLS", "OTEL_PYTHON_EXCLUDED_URLS")
_SERVER, _INTERNAL = SpanKind.SERVER, SpanKind.INTERNAL
"""Read once: ``SpanKind.SERVER`` looks its member up through the enum class, about 900
instructions each time (measured on a Flask request)."""

WSGI_APP_PATCH = patching.site(
    "flask: beacon-otel's lean SERVER span around each request",
    package="flask",
    target="flask.Flask.wsgi_app",
    when="under auto-run, instead of the Flask instrumentation, when no trace or metrics exporter is set",
)
DISPATCH_PATCH = patching.site(
    "flask: the lean SERVER span starts once the request is routed",
    package="flask",
    target="flask.Flask.full_dispatch_request",
    when="under auto-run, instead of the Flask instrumentation, when no trace or metrics exporter is set",
)


def install_lean_source(registry: RequestRegistry, tracer_provider: Any = None) -> None:
    """Make every Flask app's SERVER spans here, for ``registry``, instead of the instrumentation.

    Two methods of ``flask.Flask`` are wrapped, so apps built before this runs are served too:
    ``wsgi_app`` times the request, takes its status and ends the span once Flask is done with
    it (teardown included); ``full_dispatch_request`` starts the span once the request is routed
    (the route is in its name and start attributes, for samplers, as with the instrumentation)
    and records an exception that escapes the app's handlers. The span is current meanwhile, so
    the app's own spans, logs and ``set_consumer()`` find it. ``OTEL_PYTHON_FLASK_EXCLUDED_URLS``
    (or ``OTEL_PYTHON_EXCLUDED_URLS``) is honoured as the instrumentation honours it.
    """
    import flask

    tracer = trace.get_tracer(LEAN_SCOPE, __version__, tracer_provider, schema_url=_SCHEMA_URL)
    source = _LeanSource(registry, tracer, _excluded_urls())
    patching.patch(flask.Flask, "full_dispatch_request", source.dispatch_wrapper, site=DISPATCH_PATCH)
    patching.patch(flask.Flask, "wsgi_app", source.wsgi_app_wrapper, site=WSGI_APP_PATCH)


def uninstall_lean_source() -> None:
    """Put Flask's methods back (tests)."""
    patching.undo(WSGI_APP_PATCH)
    patching.undo(DISPATCH_PATCH)


def _excluded_urls() -> Any:
    """The instrumentation's exclusion list, read as it reads it; ``None`` when nothing is excluded."""
    raw = os.environ.get(_EXCLUDED_URLS[0], os.environ.get(_EXCLUDED_URLS[1], ""))
    if not raw:
        return None
    from opentelemetry.util.http import parse_excluded_urls

    return parse_excluded_urls(raw)


class _LeanSource:
    """What every request of the lean source shares: the registry, the tracer, the exclusions."""

    __slots__ = (
        "body_sent",
        "current",
        "excluded",
        "incoming",
        "registry",
        "resolver",
        "response_propagator",
        "serving",
        "tracer",
    )

    def __init__(self, registry: RequestRegistry, tracer: trace.Tracer, excluded: Any) -> None:
        from opentelemetry.instrumentation.propagators import get_global_response_propagator

        self.response_propagator: Callable[[], Any] = get_global_response_propagator
        """The response propagator the app may set (``traceresponse``), as the instrumentation asks."""
        self.registry = registry
        self.tracer = tracer
        self.excluded = excluded
        self.body_sent = registry.body_sent
        self.current = registry.current
        self.resolver = registry.rules.has_resolver
        self.incoming = IncomingContext()
        self.serving = _flask_request_context()
        """The request Flask is serving: one context variable look-up where ``flask.request`` is two."""

    def wsgi_app_wrapper(self, original: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
        source = self

        def wsgi_app(app: Any, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
            served = environ[_SERVED] = _Served(source, start_response)
            try:
                body = original(app, environ, served.start_response)
            except BaseException as error:  # re-raised: Flask propagates it (TESTING, or not an Exception)
                served.end(error)
                environ.pop(_SERVED, None)
                raise
            served.end(None)
            # Its request context holds the environ: left there, the pair is a reference cycle,
            # and the request's objects wait for the garbage collector (twice as many runs).
            environ.pop(_SERVED, None)
            return body

        return wsgi_app

    def dispatch_wrapper(self, original: Callable[[Any], Any]) -> Callable[[Any], Any]:
        serving = self.serving
        import flask

        variable = getattr(flask.globals, "_cv_request", None)

        def full_dispatch_request(app: Any) -> Any:
            served = None
            try:
                if variable is not None:  # serving(), inline: a call less on every request
                    flask_context = variable.get(None)
                    request = flask_context.request if flask_context is not None else None
                else:  # pragma: no cover - Flask before 2.3
                    request = serving()
                if request is not None:
                    served = request.environ.get(_SERVED)
                    if served is not None and served.span is None:
                        served.start(request)
            except Exception:
                guard.internal_error("starting the Flask request's span")
            if served is None or served.span is None:
                return original(app)
            try:
                response = original(app)
            except Exception as error:  # Flask renders it as a 500 (handle_exception)
                served.failed(error)
                raise
            context = served.context
            # A generator body (Response(gen()), stream_with_context): werkzeug's is_streamed also
            # holds for error pages rendered through an iterator, which are sent at once.
            if context is not None and type(getattr(response, "response", None)) is GeneratorType:
                served.streamed(response, context)
            return response

        return full_dispatch_request


def _flask_request_context() -> Callable[[], Any]:
    """A function answering the request Flask is serving in this context, or ``None``."""
    import flask

    variable = getattr(flask.globals, "_cv_request", None)
    if variable is None:  # pragma: no cover - Flask before 2.3
        return current_flask_request

    def serving() -> Any:
        flask_context = variable.get(None)
        return flask_context.request if flask_context is not None else None

    return serving


class _Served:
    """One request of the lean source, from ``wsgi_app`` to the end of its span."""

    __slots__ = (
        "_start_response",
        "context",
        "error",
        "method",
        "own",
        "source",
        "span",
        "start_ns",
        "status",
        "template",
        "token",
    )

    def __init__(self, source: _LeanSource, start_response: Any) -> None:
        self.start_ns = time.time_ns()  # routing is part of the request
        self.source = source
        self._start_response = start_response
        self.span: Any = None
        self.token: Any = None
        self.context: RequestContext | None = None
        self.own = False
        """The context is the span's own, not an outer request's: its facts may go to Beacon."""
        self.error = False
        self.method = ""
        self.template: str | None = None
        self.status: int | None = None

    def start(self, request: Any) -> None:
        """Start the request's span, make it current, and open the request's context for it."""
        source = self.source
        environ = request.environ
        if source.excluded is not None and source.excluded.url_disabled(request.url):
            return
        attributes = server_span_attributes(environ)
        path = attributes["url.path"]
        method = attributes["http.request.method"]
        if method == "_OTHER":
            method = "HTTP"
        rule = request.url_rule
        if rule is not None:
            route = self.template = attributes["http.route"] = rule.rule
            name = f"{method} {route}"
        else:
            name = method  # no route matched: the method alone, as the conventions say
        self.method = method
        # trace.get_current_span() and set_span_in_context(), without their calls and copies
        # (measured: 7,500 instructions less a request, with the garbage collector off).
        outer = otel_context.get_current().get(CURRENT_SPAN_KEY)
        if outer is None or outer is trace.INVALID_SPAN or not isinstance(outer, trace.Span):
            parent = source.incoming(environ)
            kind = _SERVER
        else:
            # Inside another span (an AWS Lambda invocation, a WSGI middleware's): one layer of it.
            parent = None
            kind = _INTERNAL
        span = self.span = source.tracer.start_span(name, parent, kind, attributes, start_time=self.start_ns)
        if parent:
            current = trace.set_span_in_context(span, parent)
        else:  # the usual request, with no trace context, or inside another span
            current = (
                Context({CURRENT_SPAN_KEY: span}) if parent is not None else trace.set_span_in_context(span)
            )
        self.token = otel_context.attach(current)
        # registry.open(span), without the call when the processor has just made the span's
        # request current (it always has, unless it is not on the span's provider).
        opened = source.current.get()
        context = opened[1] if opened is not None and opened[0] is span else source.registry.open(span)
        if context is not None:
            # What Beacon's Flask hooks do under the instrumentation.
            context.environ = environ
            context.path = path
            context.request = request
            if EARLY_CONSUMER in environ:  # set_consumer() before the span started
                context.consumer, context.resolved = environ[EARLY_CONSUMER], True
            if request.routing_exception is not None:
                context.route = flask_rule_of_405(request)
            self.context = context
            # Not a layer of an outer request (an AWS Lambda invocation's, one live here when
            # this span started): only a request's own facts may go to Beacon directly.
            self.own = kind is _SERVER and context.inner_open == 0

    def failed(self, error: BaseException) -> None:
        """An exception escaped the app's handlers: recorded on the span, which is in error."""
        try:
            self.error = True
            record_once(self.span, error)
        except Exception:
            guard.internal_error("recording a Flask request's exception")

    def streamed(self, response: Any, context: RequestContext) -> None:
        """A streamed response keeps the event until the server closes its body."""
        try:
            response.call_on_close(body_closer(context, self.source.body_sent))
        except Exception:
            guard.internal_error("watching a streamed Flask response")

    def start_response(self, status: str, headers: list[tuple[str, str]], *exc_info: Any) -> Any:
        """The server's ``start_response``, after the status is on the span (and the consumer
        resolved, inside the request context, where the app's auth layer left the user)."""
        span = self.span
        if span is not None:
            try:
                code = status[:3]
                if code.isdigit():
                    self.status = int(code)
                    span.set_attribute("http.response.status_code", self.status)
                    if code[0] == "5":
                        span.set_attribute("error.type", code)
                        if not self.error:  # an exception's status says more
                            span.set_status(Status(StatusCode.ERROR))
                source = self.source
                context = self.context
                if source.resolver and context is not None and not context.resolved:  # set_consumer() wins
                    request = source.serving()
                    environ = request.environ if request is not None else context.environ
                    context.consumer = source.registry.rules.from_environ(environ or {}, request)
                    context.resolved = True
                propagator = source.response_propagator()
                if propagator is not None:
                    propagator.inject(headers, setter=_HEADERS_SETTER)
            except Exception:
                guard.internal_error("reading a Flask response's status")
        return self._start_response(status, headers, *exc_info)

    def end(self, error: BaseException | None) -> None:
        """Flask is done with the request: end its span (with ``error``, if one escaped Flask)."""
        span = self.span
        if span is None:
            return
        self.span = None
        try:
            end_ns = time.time_ns()
            if error is not None:
                record_once(span, error)
            if self.token is not None:
                otel_context.detach(self.token)
            context = self.context
            if (
                error is None
                and self.own
                and not self.error
                and context is not None
                and context.route is None  # a 405's rule
                and context.body_sent_ns is None  # streamed
                and context.error is None
            ):
                # Beacon makes the event from these facts when the span ends, without reading the
                # span, if they are plain (measured: 28,000 instructions less a request). Other
                # processors see the span as ever.
                context.handed_over = (self.method, self.template, self.status, self.start_ns, end_ns)
            span.end(end_ns)
        except Exception:
            guard.internal_error("ending the Flask request's span")


class _HeadersSetter:
    """Appends a response header to WSGI's header list."""

    def set(self, carrier: list[tuple[str, str]], key: str, value: str) -> None:
        carrier.append((key, value))


_HEADERS_SETTER = _HeadersSetter()
