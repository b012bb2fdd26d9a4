"""Litestar (beacon-otel's instrumentor or Litestar's own plugin): the scope and validation errors."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from beacon_otel.frameworks.asgi import asgi_hooks
from beacon_otel.frameworks.base import Hook, hook
from beacon_otel.request.registry import RequestRegistry


def litestar_hooks(registry: RequestRegistry) -> dict[str, Hook]:
    """Litestar (beacon-otel's instrumentor or Litestar's own plugin): the scope, validation errors."""
    hooks = asgi_hooks(registry)

    @hook("the Litestar exception hook")
    def exception_hook(span: Any, scope: Mapping[str, Any], exception: BaseException) -> None:
        from beacon_otel.instrumentation.litestar import validation_errors

        errors = validation_errors(exception)
        context = registry.get(span)
        if errors is not None and context is not None:
            context.validation_errors = errors

    hooks["exception_hook"] = exception_hook
    return hooks
