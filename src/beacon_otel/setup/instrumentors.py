"""Beacon's hooks into every instrumentor, whichever distro loads them.

Beacon's own distro passes them from its ``load_instrumentor``. When another distro won the
entry-point order (contrib#2144), its ``load_instrumentor`` is wrapped, on that instance only,
so that it passes them too and leaves out an instrumentor that FastAPI's own telemetry or
beacon-otel's lean span source replaces.
Where an instrumentation takes no hooks (Pyramid, aiohttp server), beacon-otel's own tween or
middleware is installed with them instead.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from opentelemetry.instrumentation.distro import BaseDistro  # type: ignore[attr-defined]

from beacon_otel.common import guard, patching
from beacon_otel.common.compose import compose
from beacon_otel.frameworks import fastapi as fastapi_support
from beacon_otel.frameworks import route_lookup
from beacon_otel.frameworks.base import Hook
from beacon_otel.frameworks.table import COMPANIONS
from beacon_otel.setup.environment import exporter_names

logger = logging.getLogger("beacon_otel")

DISTRO_MARKER = "_beacon_otel_distro"
"""Class attribute of Beacon's own distro: its ``load_instrumentor`` already adds the hooks."""
ROUTED_PATCH = patching.site(
    "opentelemetry distro: its instrumentors get Beacon's hooks",
    package="opentelemetry-distro",
    target="opentelemetry.distro.OpenTelemetryDistro.load_instrumentor",
    when="under auto-run, when another distro wins start-up (on that distro object only)",
)


class HookSource(Protocol):
    """What a wrapped ``load_instrumentor`` asks auto-run (``autorun.AutoRun``)."""

    def served_without(self, name: str, kwargs: dict[str, Any]) -> bool: ...

    def instrumentor_kwargs(self, name: str, kwargs: dict[str, Any]) -> dict[str, Any]: ...


def route_hooks_through_foreign(distros: list[BaseDistro], source: HookSource) -> None:
    """Wrap the ``load_instrumentor`` of each distro that is not Beacon's; warn when there is none."""
    foreign = [d for d in distros if not getattr(d, DISTRO_MARKER, False)]
    if not foreign:
        logger.warning(
            "beacon-otel: could not reach the active OpenTelemetry distro, so requests are "
            "counted without their consumer; set OTEL_PYTHON_DISTRO=beacon_otel"
        )
    for distro in foreign:
        route_hooks_through(distro, source)


def route_hooks_through(distro: BaseDistro, source: HookSource) -> None:
    """Wrap one distro instance's ``load_instrumentor`` so it passes Beacon's hooks."""

    def routed(original: Any) -> Any:
        def load_instrumentor(entry_point: Any, **kwargs: Any) -> Any:
            if source.served_without(entry_point.name, kwargs):
                return None
            return original(entry_point, **source.instrumentor_kwargs(entry_point.name, kwargs))

        return load_instrumentor

    # An instance attribute shadows the class's method for this one distro only.
    patching.patch(distro, "load_instrumentor", routed, site=ROUTED_PATCH)


def install_companion(name: str, ours: dict[str, Hook]) -> bool:
    """Where instrumentor ``name`` takes no hooks, install beacon-otel's tween or middleware; True if so."""
    companion = COMPANIONS.get(name)
    if companion is None:
        return False
    companion(ours)
    return True


def with_hooks(name: str, kwargs: dict[str, Any], ours: dict[str, Hook]) -> dict[str, Any]:
    """``kwargs`` for instrumentor ``name`` with Beacon's hooks composed before the user's."""
    if name in ("starlette", "django"):
        # Their route lookup walks the whole route table on every request.
        with guard.contained(f"narrowing the {name} instrumentation's route lookup"):
            route_lookup.install()
    if name in ("fastapi", "starlette"):
        with guard.contained(f"sending the {name} response's last message outside the request"):
            fastapi_support.send_last_message_outside()
    if name == "flask" and kwargs.get("excluded_urls") is None:
        with guard.contained("sparing the Flask instrumentation an empty exclusion check"):
            _no_empty_flask_exclusions()
    merged = dict(kwargs)
    for key, hook in ours.items():
        merged[key] = compose(hook, kwargs.get(key))
    if name == "fastapi" and not exporter_names("traces"):
        # The ASGI "http send"/"http receive" spans are about 40% of the instrumentation's
        # cost and carry nothing Beacon reads; with no exporter nobody else sees them.
        merged.setdefault("exclude_spans", ["receive", "send"])
    return merged


def _no_empty_flask_exclusions() -> None:
    """With no excluded URLs configured, the Flask instrumentation skips its exclusion check.

    It tests ``if excluded_urls and excluded_urls.url_disabled(flask.request.url)``, and an
    empty exclusion list is still a true object: every request builds its full URL (werkzeug's
    IRI decoding, a few microseconds) to match it against nothing. ``None`` is what the
    instrumentation itself takes for "no exclusions", in the same tests: the spans are the same.
    """
    from opentelemetry.instrumentation import flask as flask_instrumentation

    excluded = getattr(flask_instrumentation, "_excluded_urls_from_env", None)
    if excluded is not None and getattr(excluded, "_excluded_urls", None) == []:
        flask_instrumentation._excluded_urls_from_env = None  # type: ignore[assignment]


def active_distros() -> list[BaseDistro]:
    """Every distro instantiated in this process (distros are per-class singletons)."""
    found: list[BaseDistro] = []
    seen: set[type] = set()
    stack: list[type] = [BaseDistro]
    while stack:
        subclasses: list[type] = stack.pop().__subclasses__()
        for cls in subclasses:
            if cls in seen:
                continue
            seen.add(cls)
            stack.append(cls)
            instance = cls.__dict__.get("_instance")
            if isinstance(instance, BaseDistro) and instance not in found:
                found.append(instance)
    return found
