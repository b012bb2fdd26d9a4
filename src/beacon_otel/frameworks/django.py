"""Django: its request in the hooks, streamed responses, and what Ninja and REST framework add.

The hooks keep Django's ``HttpRequest`` (its decoded path, ``request.user`` for a resolver) and
hold a streamed response's event until its last byte (:func:`watch_django_stream`). What
Django's instrumentation misses in the API frameworks built on Django:

- **Django Ninja** declares ``/items/{item_id}`` and registers it with Django as
  ``items/<item_id>``; the instrumentation reports Django's form. A Ninja view's route is given
  back in the form it was written in, mount prefix included: ``/api/items/{item_id}``.
- **Validation errors**: Ninja answers a request that fails validation with a 422 and REST
  framework a serializer failure with a 400, both inside the view, so the span only sees the
  status. What they answered with is recorded on the request as the contract's
  ``validation_errors``: Ninja's ``loc`` joined like FastAPI's (``body.item.price``), REST
  framework's field path (``items.0.price``, ``non_field_errors``) with its error code as type.

When Beacon is the only reader of the spans (no trace or metrics exporter), auto-run installs
:class:`ServerSpans` instead of the contrib instrumentation (:func:`install_server_spans`): a
middleware that opens the same kind of SERVER span through the configured tracer provider and
sets only what an HTTP server span is made of, without the contrib middleware's per-request
metrics, semantic-convention helpers and header capture.
"""

from __future__ import annotations

import contextvars
import functools
import importlib
import importlib.util
import os
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator, Mapping
from contextvars import Token
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.instrumentation import propagators as _propagators
from opentelemetry.trace import SpanKind, Status, StatusCode

from beacon_otel.common import guard, patching
from beacon_otel.contract.event import STANDARD_METHODS
from beacon_otel.frameworks.base import Hook, hook, validation_items
from beacon_otel.frameworks.wsgi import BodySent, IncomingContext, body_closer
from beacon_otel.request.context import RequestContext
from beacon_otel.request.registry import RequestRegistry, current_request

_NINJA_VIEWS = "ninja.operation"
NINJA_PATCH = patching.site(
    "django ninja: validation errors recorded",
    package="django-ninja",
    target="ninja.NinjaAPI.on_exception",
    when="with Beacon's Django hooks, from the first request",
)
REST_FRAMEWORK_PATCH = patching.site(
    "rest framework: validation errors recorded",
    package="djangorestframework",
    target="rest_framework.views.APIView.handle_exception",
    when="with Beacon's Django hooks, from the first request",
)
_SERVER, _INTERNAL = SpanKind.SERVER, SpanKind.INTERNAL
"""Read once: ``SpanKind.SERVER`` looks its member up through the enum class, about 900
instructions each time (measured on a Flask request)."""
_install_lock = threading.Lock()
installed = False
"""Whether the first request installed the observers (read on every Django request)."""


def ninja_route(request: Any) -> str | None:
    """The route of a request a Django Ninja view served, in Ninja's notation; else ``None``."""
    match = getattr(request, "resolver_match", None)
    if match is None or getattr(match.func, "__module__", None) != _NINJA_VIEWS:
        return None
    # Ninja turned each {name} into <name> (and {int:name} into <int:name>): turned back.
    return "/" + str(match.route).replace("<", "{").replace(">", "}")


def capture_validation_errors() -> None:
    """Record Ninja's and REST framework's validation failures on the request, once per process.

    Called by the first request, not when the hooks are made: both read Django's settings when
    imported, which are not configured yet when instrumentation starts.
    """
    global installed
    with _install_lock:
        if installed:
            return
        installed = True  # tried once: a failure is logged, not retried on every request
        if importlib.util.find_spec("ninja") is not None:
            with guard.contained("observing Django Ninja's validation errors"):
                _observe_ninja()
        if importlib.util.find_spec("rest_framework") is not None:
            with guard.contained("observing REST framework's validation errors"):
                _observe_rest_framework()


def _observe_ninja() -> None:
    from ninja import NinjaAPI
    from ninja.errors import ValidationError

    # Every exception a Ninja operation raises passes here, before its handler answers it.
    def observed(original: Any) -> Any:
        @functools.wraps(original)
        def on_exception(api: Any, request: Any, exc: Any) -> Any:
            if isinstance(exc, ValidationError):
                with guard.contained("recording Django Ninja validation errors"):
                    _record(validation_items(exc.errors))
            return original(api, request, exc)

        return on_exception

    patching.patch(NinjaAPI, "on_exception", observed, site=NINJA_PATCH)


def _observe_rest_framework() -> None:
    from rest_framework.exceptions import ValidationError  # type: ignore[import-untyped]
    from rest_framework.views import APIView  # type: ignore[import-untyped]

    # The exception a REST framework view raised, before the exception handler answers it
    # (a ValidationError made and caught inside a serializer never gets here).
    def observed(original: Any) -> Any:
        @functools.wraps(original)
        def handle_exception(view: Any, exc: Any) -> Any:
            if isinstance(exc, ValidationError):
                with guard.contained("recording REST framework validation errors"):
                    _record(list(rest_framework_items(exc.detail)))
            return original(view, exc)

        return handle_exception

    patching.patch(APIView, "handle_exception", observed, site=REST_FRAMEWORK_PATCH)


def _record(items: list[dict[str, str]]) -> None:
    context = current_request()
    if context is not None and items:
        context.validation_errors = items


def rest_framework_items(detail: Any, field: str = "") -> Iterator[dict[str, str]]:
    """REST framework's error detail (nested dicts and lists of ``ErrorDetail``) as the contract's items."""
    if isinstance(detail, Mapping):
        for key, value in detail.items():
            yield from rest_framework_items(value, f"{field}.{key}" if field else str(key))
    elif isinstance(detail, list):
        if all(isinstance(item, str) for item in detail):
            for message in detail:
                yield _item(field, message)
        else:  # a nested serializer with many=True: one entry per item, empty when it passed
            for index, item in enumerate(detail):
                yield from rest_framework_items(item, f"{field}.{index}" if field else str(index))
    elif isinstance(detail, str):
        yield _item(field, detail)


def _item(field: str, message: str) -> dict[str, str]:
    # ErrorDetail is a str carrying the error's code ("required", "blank", "invalid").
    return {"field": field, "message": str(message), "type": str(getattr(message, "code", "") or "")}


def django_hooks(registry: RequestRegistry) -> dict[str, Hook]:
    """Django: its ``HttpRequest`` (decoded path, ``request.user`` for a resolver); Ninja, REST framework."""

    @hook("the Django request hook")
    def request_hook(span: Any, request: Any) -> None:
        context = registry.open(span)
        if context is not None:
            context.request = request
            context.environ = request.META
            context.path = request.path
            if not installed:
                capture_validation_errors()  # Ninja, REST framework

    resolve = registry.rules.has_resolver

    # Always a response hook: a streamed response's event waits for its last byte.
    @hook("the Django response hook")
    def response_hook(span: Any, request: Any, response: Any) -> None:
        context = registry.get(span)
        if context is None:
            return
        context.route = ninja_route(request)  # after routing: the view is known
        if resolve and not context.resolved:  # set_consumer() wins
            # After the middleware chain: request.user and friends are set by now.
            context.consumer = registry.rules.from_environ(request.META, request)
            context.resolved = True
        watch_django_stream(context, response, registry.body_sent)

    return {"request_hook": request_hook, "response_hook": response_hook}


def watch_django_stream(context: RequestContext, response: Any, body_sent: BodySent) -> None:
    """When Django's response is streamed, keep the event until the server closes its body."""
    if getattr(response, "streaming", False):
        closers = getattr(response, "_resource_closers", None)
        # Django calls these from response.close(), which the WSGI server calls at the end.
        if isinstance(closers, list):
            closers.append(body_closer(context, body_sent))


# -- the contrib Django instrumentation's resolution (beacon_otel.frameworks.route_lookup) --------

ROUTE_LOOKUP_PATCH = patching.site(
    "django instrumentation: its resolution serves Django's",
    package="opentelemetry-instrumentation-django",
    target="opentelemetry.instrumentation.django.middleware.otel_middleware.resolve",
    when="under auto-run, or after beacon_otel.route_lookup.install()",
)

_resolved: contextvars.ContextVar[tuple[Any, str, Any] | None] = contextvars.ContextVar(
    "beacon_otel_resolved", default=None
)
"""The instrumentation's last resolution in this context: (resolver, path, match)."""


def remembered_resolve(path: str, urlconf: str | None = None) -> Any:
    """``django.urls.resolve``, remembering the match for Django's own resolution of ``path``."""
    from django.urls import get_resolver, get_urlconf  # type: ignore[import-untyped,unused-ignore]

    resolver = get_resolver(get_urlconf() if urlconf is None else urlconf)
    match = type(resolver).resolve(resolver, path)
    if "resolve" not in vars(resolver):
        # On this resolver only: the nested resolvers of include() never pay for the check.
        resolver.resolve = types.MethodType(_resolve_once, resolver)
    _resolved.set((resolver, path, match))
    return match


def _resolve_once(resolver: Any, path: str) -> Any:
    remembered = _resolved.get()
    if remembered is not None and remembered[0] is resolver and remembered[1] == path:
        _resolved.set(None)
        return remembered[2]
    return type(resolver).resolve(resolver, path)


def install_route_lookup() -> None:
    """Let the Django instrumentation's resolution of the path serve Django's own."""
    try:
        module = importlib.import_module("opentelemetry.instrumentation.django.middleware.otel_middleware")
    except ImportError:
        return
    if getattr(module, "resolve", None) is not None:
        patching.patch(module, "resolve", lambda _: remembered_resolve, site=ROUTE_LOOKUP_PATCH)


# -- the lean SERVER span (auto-run, when Beacon is the only reader of the spans) ----------------

SERVER_SPANS_MIDDLEWARE = "beacon_otel.frameworks.django.ServerSpans"
"""The dotted path :func:`install_server_spans` puts into ``settings.MIDDLEWARE``."""
SCOPE_NAME = "beacon_otel.frameworks.django"
"""The instrumentation scope of the lean source's spans."""
_EXCEPTION = "_beacon_exception"
"""Where :meth:`ServerSpans.process_exception` keeps the view's exception on the request."""


class ServerSpanSource:
    """What :class:`ServerSpans` opens each request's span with: the tracer, the hooks, the exclusions."""

    def __init__(
        self,
        tracer: trace.Tracer,
        request_hook: Hook | None = None,
        response_hook: Hook | None = None,
        excluded_urls: Any = None,
        registry: RequestRegistry | None = None,
    ) -> None:
        self.tracer = tracer
        self.registry = registry
        """Beacon's requests, to hand a plain request's facts to (``RequestContext.handed_over``);
        else ``None``."""
        self.request_hook = request_hook
        self.response_hook = response_hook
        self.excluded_urls = excluded_urls
        """The contrib instrumentation's ``ExcludeList``, or ``None`` when nothing is excluded."""
        self.parent = IncomingContext()
        """The incoming trace context of a request's ``META`` (its ``HTTP_`` keys, under WSGI and ASGI)."""

    def excluded(self, request: Any) -> bool:
        """Whether the user excluded the request's URL, matched as the contrib instrumentation does."""
        try:
            url = request.build_absolute_uri("?")
        except Exception:  # a Host outside ALLOWED_HOSTS (DisallowedHost)
            # No URL to match: the request is counted as whatever Django answers (400 from its
            # host check), as when nothing is excluded. The contrib check raises here instead.
            return False
        return bool(self.excluded_urls.url_disabled(url))

    def start(self, request: Any) -> tuple[Any, Token[otel_context.Context], str] | None:
        """Open and make current the request's span: ``(span, token, name)``; ``None`` if excluded."""
        excluded = self.excluded_urls
        if excluded is not None and self.excluded(request):
            return None
        meta = request.META
        method = request.method or ""
        known = method in STANDARD_METHODS
        # Only what an event needs, as the Flask source: each attribute costs the SDK about
        # 6,000 instructions to check and store, a twentieth of all beaconhq's work per request.
        # Never the query string, which may carry credentials (?api_key=...).
        attributes: dict[str, Any] = {
            "http.request.method": method if known else "_OTHER",
            "url.scheme": request.scheme,
            "url.path": request.path,
        }
        if not known:
            attributes["http.request.method_original"] = method
        name = method if known else "HTTP"
        current = otel_context.get_current()
        if current and trace.get_current_span(current).get_span_context().is_valid:
            # Inside a span already (an app wrapped in a WSGI or ASGI middleware of its own): a
            # child of it, as the contrib instrumentation does, not a second request.
            span = self.tracer.start_span(name, kind=_INTERNAL, attributes=attributes)
            token = otel_context.attach(trace.set_span_in_context(span))
        else:
            parent = self.parent(meta)
            span = self.tracer.start_span(name, parent, kind=_SERVER, attributes=attributes)
            token = otel_context.attach(trace.set_span_in_context(span, parent))
        if self.request_hook is not None:
            self.request_hook(span, request)
        return span, token, name

    def finish(
        self, span: Any, token: Token[otel_context.Context], name: str, request: Any, response: Any
    ) -> None:
        """Complete the span from the response (or the exception), run the hooks, end it."""
        end_ns: int | None = None  # set for a plain request: its facts were handed to Beacon
        route = None
        try:
            exception = vars(request).pop(_EXCEPTION, None)
            status = None if response is None else response.status_code
            if status is None and exception is None:
                exception = sys.exc_info()[1]  # a BaseException no middleware turned into a response
            if span.is_recording():
                # One set_attribute per value: set_attributes checks its mapping against the
                # collections ABCs first, which costs more than a second call (about 5,000
                # instructions per request).
                if status is not None:
                    span.set_attribute("http.response.status_code", status)
                match = getattr(request, "resolver_match", None)
                route = getattr(match, "route", None) if match is not None else None
                if route:
                    # Django's own notation, as the contrib instrumentation reports it:
                    # "users/<int:pk>", a re_path's pattern as written.
                    span.set_attribute("http.route", route)
                    span.update_name(f"{name} {route}")
                if exception is not None:
                    span.record_exception(exception)
                if exception is not None and (status is None or status >= 500):
                    span.set_attribute("error.type", type(exception).__qualname__)
                    span.set_status(Status(StatusCode.ERROR, f"{type(exception).__name__}: {exception}"))
                elif status is not None and status >= 500:
                    span.set_attribute("error.type", str(status))
                    span.set_status(Status(StatusCode.ERROR))
            if response is not None:
                if self.response_hook is not None:
                    self.response_hook(span, request, response)
                # set by the app (traceresponse), if at all
                propagator = _propagators.get_global_response_propagator()  # type: ignore[no-untyped-call]
                if propagator is not None:
                    propagator.inject(response)
                if exception is None and self.registry is not None:
                    end_ns = self._hand_over(span, name, route, status)
        except Exception:
            guard.internal_error("completing a Django request's span")
        finally:
            otel_context.detach(token)
            span.end(end_ns)

    def _hand_over(self, span: Any, method: str, template: str | None, status: int | None) -> int | None:
        """Hand Beacon a plain request's facts for when its span ends: the end time; else ``None``.

        Plain: a SERVER span with Beacon's context, no exception, no route of Ninja's, no
        validation errors, no streamed body. Beacon then makes the event from the facts, without
        reading the span, if the fields are plain too (a standard method, a plain path, a status
        below 500, a route template mapped once already; measured: about 8,000 instructions a
        request less, the span's reading and the mapping's checks). Other processors see the
        span as ever.
        """
        registry = self.registry
        context = registry.get(span) if registry is not None else None
        if context is None or context.scope is not None or context.inner_open:
            return None
        if context.route is not None or context.validation_errors is not None or context.error is not None:
            return None
        if context.body_sent_ns is not None or span.kind is not _SERVER:
            return None
        end_ns = time.time_ns()
        context.handed_over = (method, template, status, span.start_time, end_ns)
        return end_ns


_source: ServerSpanSource | None = None
"""The source the middleware reads when Django builds it; ``None`` when not installed."""


class ServerSpans:
    """Django middleware: each request's SERVER span, current while the request runs.

    First in ``settings.MIDDLEWARE``, as the contrib instrumentation puts its own. Synchronous
    only, as that one is: under ASGI, Django runs it in its request thread, so the hooks (and
    a consumer resolver reading ``request.user``) run where synchronous code may touch the
    database.
    """

    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response
        self.source = _source

    def __call__(self, request: Any) -> Any:
        source = self.source
        if source is None:
            return self.get_response(request)
        started = None
        try:
            started = source.start(request)
        except Exception:
            guard.internal_error("starting a Django request's span")
        if started is None:
            return self.get_response(request)
        span, token, name = started
        response = None
        try:
            response = self.get_response(request)
        finally:
            source.finish(span, token, name, request, response)
        return response

    def process_exception(self, request: Any, exception: Exception) -> None:
        """The view raised: kept for its span (Django turns it into a response further in)."""
        vars(request)[_EXCEPTION] = exception


def install_lean_source(registry: RequestRegistry) -> None:
    """Auto-run's lean Django span source (``LEAN_SOURCES``): :class:`ServerSpans` with Beacon's hooks."""
    install_server_spans(django_hooks(registry), registry=registry)


def install_server_spans(
    hooks: Mapping[str, Hook], tracer_provider: Any = None, registry: RequestRegistry | None = None
) -> None:
    """Put :class:`ServerSpans` first in ``settings.MIDDLEWARE``, its spans on ``tracer_provider``.

    Honours what the contrib instrumentation reads from the environment:
    ``OTEL_PYTHON_DJANGO_INSTRUMENT=False``, ``OTEL_PYTHON_DJANGO_MIDDLEWARE_POSITION`` and the
    excluded URLs (``OTEL_PYTHON_DJANGO_EXCLUDED_URLS``, else ``OTEL_PYTHON_EXCLUDED_URLS``). The
    global tracer provider when ``tracer_provider`` is ``None``.
    """
    if os.environ.get("OTEL_PYTHON_DJANGO_INSTRUMENT") == "False":
        return  # the contrib instrumentation would install nothing either
    from django.conf import settings  # type: ignore[import-untyped,unused-ignore]
    from django.core.exceptions import ImproperlyConfigured  # type: ignore[import-untyped,unused-ignore]
    from opentelemetry.util.http import get_excluded_urls

    from beacon_otel.version import __version__

    try:
        middleware = list(getattr(settings, "MIDDLEWARE", None) or [])
    except (ImproperlyConfigured, ModuleNotFoundError):
        # No DJANGO_SETTINGS_MODULE, or a wrong one: empty settings, as the contrib
        # instrumentation makes them (the app then answers 500, which the doctor explains).
        settings.configure()
        middleware = list(getattr(settings, "MIDDLEWARE", None) or [])
    excluded = get_excluded_urls("DJANGO")
    global _source
    _source = ServerSpanSource(
        trace.get_tracer(SCOPE_NAME, __version__, tracer_provider=tracer_provider),
        request_hook=hooks.get("request_hook"),
        response_hook=hooks.get("response_hook"),
        # An empty list would still build each request's absolute URL to match it against nothing.
        excluded_urls=excluded if getattr(excluded, "_excluded_urls", True) else None,
        registry=registry,
    )
    if SERVER_SPANS_MIDDLEWARE not in middleware:
        middleware.insert(_middleware_position(len(middleware)), SERVER_SPANS_MIDDLEWARE)
    settings.MIDDLEWARE = middleware


def uninstall_server_spans() -> None:
    """Take :class:`ServerSpans` out of ``settings.MIDDLEWARE`` (handlers built after this)."""
    global _source
    _source = None
    from django.conf import settings  # type: ignore[import-untyped,unused-ignore]

    middleware = list(getattr(settings, "MIDDLEWARE", None) or [])
    if SERVER_SPANS_MIDDLEWARE in middleware:
        middleware.remove(SERVER_SPANS_MIDDLEWARE)
        settings.MIDDLEWARE = middleware


def _middleware_position(length: int) -> int:
    """``OTEL_PYTHON_DJANGO_MIDDLEWARE_POSITION`` as the contrib instrumentation reads it; else first."""
    try:
        position = int(os.environ.get("OTEL_PYTHON_DJANGO_MIDDLEWARE_POSITION", "0"))
    except ValueError:
        return 0
    return position if 0 <= position <= length else 0
