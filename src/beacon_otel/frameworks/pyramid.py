"""Pyramid: a tween that shows Beacon each request, which OpenTelemetry's instrumentation cannot.

OpenTelemetry's Pyramid instrumentation takes no hooks, so without this tween Beacon never sees
a request's headers and every consumer is null. The tween sits just under OpenTelemetry's own
(over Pyramid's exception view): the request's span is open there, started during routing, and
still open when the tween returns, so the request hook can keep the request beside it.

By hand, after ``PyramidInstrumentor().instrument_config(config)``::

    beacon_otel.frameworks.pyramid.instrument_config(config, **beacon.hooks("pyramid"))

Under ``opentelemetry-instrument`` beacon-otel adds it to every app ``Configurator.make_wsgi_app``
builds (:func:`patch_configurator`). An app with an explicit ``pyramid.tweens`` list names
:data:`TWEEN` there, after OpenTelemetry's tween.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from beacon_otel.common import guard, patching
from beacon_otel.frameworks.base import Hook, hook, record_once
from beacon_otel.request.registry import RequestRegistry

TWEEN = "beacon_otel.pyramid_support.beacon_tween_factory"  # a public path: in users' settings
OTEL_TWEEN = "opentelemetry.instrumentation.pyramid.trace_tween_factory"
SPAN_KEY = "opentelemetry-pyramid.span_key"
TWEEN_PATCH = patching.site(
    "pyramid: Beacon's tween in every app",
    package="pyramid",
    target="pyramid.config.Configurator.make_wsgi_app",
    when="under auto-run, with the Pyramid instrumentation",
)
"""Where OpenTelemetry's instrumentation keeps the request's span in the environ."""
_HOOK_SETTING = "beacon_otel.pyramid_request_hook"

RequestHook = Callable[[Any, Any, Any], None]
"""``request_hook(span, request, response)``; ``response`` is ``None`` when the view raised."""


def instrument_config(config: Any, *, request_hook: RequestHook | None = None, **_: Any) -> None:
    """Add Beacon's tween to ``config``, calling ``request_hook``; once per configurator."""
    from pyramid.tweens import EXCVIEW, INGRESS  # type: ignore[import-untyped]

    if request_hook is None or config.get_settings().get(_HOOK_SETTING) is not None:
        return  # one tween per app, whichever way in came first
    config.add_settings({_HOOK_SETTING: request_hook})
    # Under OpenTelemetry's tween when there is one: its span is open there on the way back.
    config.add_tween(TWEEN, over=EXCVIEW, under=(OTEL_TWEEN, INGRESS))


def beacon_tween_factory(handler: Callable[[Any], Any], registry: Any) -> Callable[[Any], Any]:
    """The tween: after the view (or its exception view) ran, the hook sees request and span."""
    request_hook: RequestHook | None = registry.settings.get(_HOOK_SETTING)
    if request_hook is None:
        return handler

    def beacon_tween(request: Any) -> Any:
        response = None
        try:
            response = handler(request)
            return response
        finally:
            span = request.environ.get(SPAN_KEY)
            if span is not None:
                with guard.contained("showing Beacon a Pyramid request"):
                    request_hook(span, request, response)

    return beacon_tween


def patch_configurator(request_hook: RequestHook) -> None:
    """Zero-code: every app made by ``Configurator.make_wsgi_app`` gets the tween, once.

    ``make_wsgi_app``, not ``__init__`` as OpenTelemetry does: its wrapper finds the app's
    package by counting stack frames, and a second wrapper there would shift them.
    """
    from pyramid.config import Configurator  # type: ignore[import-untyped]

    def with_tween(original: Any) -> Any:
        @functools.wraps(original)
        def make_wsgi_app(config: Any) -> Any:
            with guard.contained("adding Beacon's Pyramid tween"):
                instrument_config(config, request_hook=request_hook)
            return original(config)

        return make_wsgi_app

    patching.patch(Configurator, "make_wsgi_app", with_tween, site=TWEEN_PATCH)


def pyramid_hooks(registry: RequestRegistry) -> dict[str, Hook]:
    """Pyramid (beacon-otel's tween): its request, and the exception an exception view answered."""

    @hook("the Pyramid request hook")
    def request_hook(span: Any, request: Any, response: Any) -> None:
        context = registry.open(span)
        if context is None:
            return
        context.environ = request.environ
        context.request = request  # what a consumer resolver receives
        # An exception view that renders a 500 itself hides the exception from OpenTelemetry's
        # tween, above it; Pyramid keeps what it handled on the request.
        exception = getattr(request, "exception", None)
        status = getattr(response, "status_int", 0)
        if isinstance(exception, Exception) and status >= 500:
            record_once(span, exception)

    return {"request_hook": request_hook}


def install_tween(hooks: dict[str, Hook]) -> None:
    """Under auto-run: Beacon's tween in every Pyramid app configured from now on."""
    patch_configurator(hooks["request_hook"])
