"""Starlette's routing (FastAPI's too): the template of a request routed into a mount or a ``Host``.

The span's ``http.route`` is right for a route of the top-level app, and Beacon keeps it then.
Two cases need the request's scope after routing:

- a request routed into a ``Mount``: the contrib instrumentations stop at the mount (``/api``),
  FastAPI's own telemetry stops at a Starlette sub-app (``/api/{path}``);
- a ``Host(...)`` route: the instrumentations report the concrete path. The host pattern is not
  part of the route (the route is a path template, as the contract's examples are); the inner
  template is, with any mount prefix before it (``Host("{tenant}.example.com", app)`` with
  ``/t/{name}`` inside reports ``/t/{name}``).

Django regular-expression routes are normalised by :mod:`beacon_otel.mapping.templates`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

_MAX_DEPTH = 16  # mounts nest a few levels at most; never loop on a cyclic tree


def was_mounted(scope: Mapping[str, Any]) -> bool:
    """True when Starlette routed the request into a ``Mount`` (it then sets ``app_root_path``)."""
    app_root = scope.get("app_root_path")
    return app_root is not None and scope.get("root_path", "") != app_root


def asgi_route(scope: Mapping[str, Any]) -> tuple[str | None, bool]:
    """``(template, matched)`` of a request Starlette or FastAPI routed; ``(None, True)`` to keep the span's.

    ``matched`` is False when the template is a mount's catch-all that nothing inside matched.
    """
    router = scope.get("router")  # the top-level router: Starlette sets it once per request
    if router is None:
        return None, True
    app_root = scope.get("app_root_path")  # was_mounted(scope), inline: this runs per request
    if (app_root is None or scope.get("root_path", "") == app_root) and not _has_hosts(router):
        return None, True
    return full_template(getattr(router, "routes", None), scope)


_hosts_seen: dict[int, tuple[int, bool]] = {}


def _has_hosts(router: Any) -> bool:
    # Per router and route count, so the scan runs once per app, not once per request.
    routes = getattr(router, "routes", None) or ()
    known = _hosts_seen.get(id(router))
    if known is not None and known[0] == len(routes):
        return known[1]
    from starlette.routing import Host

    found = any(isinstance(route, Host) for route in routes)
    if len(_hosts_seen) < 1_000:
        _hosts_seen[id(router)] = (len(routes), found)
    return found


def full_template(routes: Any, scope: Mapping[str, Any]) -> tuple[str | None, bool]:
    """Walk the route tree again: every prefix as declared, not as requested.

    For example ``/api/orders/{order_id}`` where the stock instrumentation says ``/api``.
    """
    from starlette.routing import Host, Match, Mount

    probe = {
        "type": scope.get("type", "http"),
        "path": scope.get("path", ""),
        "method": scope.get("method", "GET"),
        "headers": scope.get("headers", ()),
        "root_path": scope.get("app_root_path", ""),
        "path_params": {},
    }
    template = ""
    for _ in range(_MAX_DEPTH):
        if not routes:
            # A mounted app without routes of its own (static files, a bare ASGI app).
            return (template + "/{path:path}", True) if template else (None, True)
        matched = _match(routes, probe, Match)
        if matched is None:
            # Nothing inside the mount matched: a 404 (or 405) reports the concrete path.
            return (template + "/{path:path}", False) if template else (None, True)
        route, child_scope = matched
        if not isinstance(route, Host):
            template += _template_of(route)
        if not isinstance(route, (Mount, Host)):
            return template or None, True
        probe = {**probe, **child_scope}
        routes = getattr(route, "routes", None)
    return None, True


def _match(routes: Sequence[Any], scope: dict[str, Any], match: Any) -> tuple[Any, Any] | None:
    # Like Starlette's router: the first full match, else the first partial one (a 405).
    partial = None
    for entry in _matchable(routes):
        # FastAPI's route contexts wrap the effective route, which has the full path.
        route = getattr(entry, "route", entry)
        try:
            result, child_scope = route.matches(scope)
        except Exception:  # a custom route that cannot match a probe matches nothing
            continue
        if result == match.FULL:
            return route, child_scope
        if result == match.PARTIAL and partial is None:
            partial = (route, child_scope)
    return partial


def _matchable(routes: Sequence[Any]) -> Iterable[Any]:
    # FastAPI >= 0.137 nests routes added by include_router(); its public helper flattens them
    # into contexts that carry the full path.
    try:
        from fastapi.routing import iter_route_contexts  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        return routes
    return iter_route_contexts(routes)


def _template_of(route: Any) -> str:
    # The declared path, converters included, exactly as the stock instrumentation reports it.
    path = getattr(route, "path", None) or getattr(route, "path_format", None) or ""
    return str(path)


# -- regular-expression routes (Django re_path, Django REST framework routers) ------------------
