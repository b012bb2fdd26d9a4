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
"""

from __future__ import annotations

import contextvars
import functools
import importlib
import importlib.util
import threading
import types
from collections.abc import Iterator, Mapping
from typing import Any

from beacon_otel.common import guard, patching
from beacon_otel.frameworks.base import Hook, hook, validation_items
from beacon_otel.frameworks.wsgi import BodySent, body_closer
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
