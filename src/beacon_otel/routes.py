"""Route templates the stock instrumentation leaves out: requests served by mounted sub-apps."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def was_mounted(scope: Mapping[str, Any]) -> bool:
    """True when Starlette routed the request into a ``Mount`` (it then sets ``app_root_path``)."""
    app_root = scope.get("app_root_path")
    return app_root is not None and scope.get("root_path", "") != app_root


def mounted_route_template(app: Any, scope: Mapping[str, Any]) -> str | None:
    """The full template, mount prefixes included, e.g. ``/api/orders/{order_id}``.

    The stock FastAPI instrumentation stops at the mount (``/api``); Starlette's router keeps
    only the innermost route in the scope. Walking the route tree again, once per mounted
    request, gives the whole template with every prefix as declared, not as requested.
    """
    try:
        from starlette.routing import Match, Mount
    except ImportError:  # pragma: no cover - only reached with a Starlette-less ASGI app
        return None
    probe = {
        "type": scope.get("type", "http"),
        "path": scope.get("path", ""),
        "method": scope.get("method", "GET"),
        "root_path": scope.get("app_root_path", ""),
        "path_params": {},
    }
    template = ""
    routes = getattr(app, "routes", None)
    for _ in range(16):  # mounts nest a few levels at most; never loop on a cyclic tree
        if not routes:
            return template + "/{path:path}" if template else None
        matched = _first_full_match(routes, probe, Match)
        if matched is None:
            return None
        route, child_scope = matched
        template += _template_of(route)
        if not isinstance(route, Mount):
            return template
        probe = {**probe, **child_scope}
        routes = getattr(route, "routes", None)
    return None


def _first_full_match(routes: Iterable[Any], scope: dict[str, Any], match: Any) -> Any:
    for entry in _matchable(routes):
        # FastAPI's route contexts wrap the effective route, which has the full path.
        route = getattr(entry, "route", entry)
        try:
            result, child_scope = route.matches(scope)
        except Exception:
            continue
        if result == match.FULL:
            return route, child_scope
    return None


def _matchable(routes: Iterable[Any]) -> Iterable[Any]:
    # FastAPI >= 0.137 nests routes added by include_router(); its public helper flattens them
    # into contexts that carry the full path.
    try:
        from fastapi.routing import iter_route_contexts  # type: ignore[attr-defined]
    except ImportError:
        return routes
    return iter_route_contexts(routes)  # type: ignore[no-any-return]


def _template_of(route: Any) -> str:
    # The declared path, converters included, exactly as the stock instrumentation reports it.
    path = getattr(route, "path", None) or getattr(route, "path_format", None) or ""
    return str(path)
