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

import contextlib
import functools
import importlib
import re
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from beacon_otel.common import patching
from beacon_otel.common.guard import guarded
from beacon_otel.frameworks.asgi import outermost_sends_outside

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


_hosts_seen: dict[int, tuple[weakref.ref[Any], int, bool]] = {}
"""Per router, by ``id``: (a weak reference to it, its route count, whether a ``Host`` route is
among them). Keyed by ``id`` because Starlette's ``Router`` defines ``__eq__`` and so has no hash
(a ``WeakKeyDictionary`` cannot hold it); the weak reference makes sure the entry is this
router's (a collected router's ``id`` can be a new one's), and its callback drops the entry."""


def _has_hosts(router: Any) -> bool:
    # Per router and route count, so the scan runs once per app, not once per request.
    routes = getattr(router, "routes", None) or ()
    known = _hosts_seen.get(id(router))
    if known is not None and known[0]() is router and known[1] == len(routes):
        return known[2]
    from starlette.routing import Host

    found = any(isinstance(route, Host) for route in routes)
    if len(_hosts_seen) < 1_000:
        key = id(router)
        # A router of the app's own that takes no weak reference is scanned each time.
        with contextlib.suppress(TypeError):
            _hosts_seen[key] = (
                weakref.ref(router, functools.partial(_forget_router, key)),
                len(routes),
                found,
            )
    return found


def _forget_router(key: int, _: object) -> None:
    _hosts_seen.pop(key, None)


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


# -- the contrib Starlette instrumentation's route lookup (beacon_otel.frameworks.route_lookup) ---

_MAX_UNPLACED = 32
"""Routes the index cannot place are walked on every request: past this many, keep the full walk."""

RouteDetails = Callable[[dict[str, Any]], "str | None"]
ROUTE_LOOKUP_PATCH = patching.site(
    "starlette instrumentation: route lookup narrowed",
    package="opentelemetry-instrumentation-starlette",
    target="opentelemetry.instrumentation.starlette._get_route_details",
    when="under auto-run, or after beacon_otel.route_lookup.install()",
)


class _RouteTable:
    """What the instrumentation's lookup reads of ``scope["app"]``: the routes to walk."""

    __slots__ = ("routes",)

    def __init__(self, routes: list[Any]) -> None:
        self.routes = routes


class RouteIndex:
    """An app's routes by the literal first segment of their template; the rest walked always."""

    def __init__(self, routes: Sequence[Any]) -> None:
        self.source, self.size = routes, len(routes)
        keys = [_first_segment(route) for route in routes]
        unplaced = [route for route, key in zip(routes, keys, strict=True) if key is None]
        self.usable = len(unplaced) <= _MAX_UNPLACED
        self.unplaced = _RouteTable(unplaced)
        by_segment: dict[str, list[Any]] = {}
        for key in {key for key in keys if key is not None}:
            # In the app's order: the first full match wins, as in the full walk.
            by_segment[key] = [route for route, k in zip(routes, keys, strict=True) if k in (key, None)]
        self.tables = {key: _RouteTable(table) for key, table in by_segment.items()}

    def fits(self, routes: Sequence[Any]) -> bool:
        """Still the routes indexed (routes added since make the list longer)."""
        return routes is self.source and len(routes) == self.size

    def table_for(self, route_path: str) -> _RouteTable | None:
        """The routes that could match ``route_path``; None to walk them all."""
        # Starlette's patterns end in "$", which also matches before a trailing newline.
        if not self.usable or not route_path.startswith("/") or "\n" in route_path:
            return None
        segment = route_path[1:].split("/", 1)[0]
        return self.tables.get(segment, self.unplaced)


def _first_segment(route: Any) -> str | None:
    """The first path segment every path ``route`` matches starts with; None when not fixed."""
    from starlette.routing import Mount, Route, WebSocketRoute

    kind = type(route)
    if kind is Mount:
        template = str(route.path) + "/{path:path}"
    elif kind is Route or kind is WebSocketRoute:
        template = str(route.path)
    else:
        return None
    literal = template.split("{", 1)[0]
    pattern = getattr(getattr(route, "path_regex", None), "pattern", "")
    if not literal.startswith("/") or not pattern.startswith("^" + re.escape(literal)):
        return None  # a pattern that is not the template's: the index cannot tell
    segment, slash, _ = literal[1:].partition("/")
    if not slash and "{" in template:
        return None  # a parameter inside the first segment (/v{version})
    return segment


_indexes: weakref.WeakKeyDictionary[Any, RouteIndex] = weakref.WeakKeyDictionary()
_WALK_ALL: _RouteTable | None = None


@guarded("indexing the app's routes for the Starlette instrumentation", default=_WALK_ALL)
def route_table(scope: dict[str, Any]) -> _RouteTable | None:
    """The routes the instrumentation need walk for this request; None to walk all of them."""
    from starlette._utils import get_route_path

    app = scope.get("app")
    routes = getattr(app, "routes", None)
    if app is None or type(app) is _RouteTable or not isinstance(routes, list):
        return None  # not an app, or a lookup narrowed already
    index = _indexes.get(app)
    if index is None or not index.fits(routes):
        index = _indexes[app] = RouteIndex(routes)
    return index.table_for(get_route_path(scope))


def narrowed(original: RouteDetails) -> RouteDetails:
    """``original`` (the instrumentation's route lookup) over the routes that could match only."""

    def route_details(scope: dict[str, Any]) -> str | None:
        table = route_table(scope)
        if table is None:
            return original(scope)
        return original({**scope, "app": table})

    route_details.__wrapped__ = original  # type: ignore[attr-defined]
    return route_details


def install_route_lookup() -> None:
    """Narrow the Starlette instrumentation's lookup (it reads its module's function per request)."""
    try:
        module = importlib.import_module("opentelemetry.instrumentation.starlette")
        importlib.import_module("starlette._utils")
    except ImportError:
        return
    if callable(getattr(module, "_get_route_details", None)):
        patching.patch(module, "_get_route_details", narrowed, site=ROUTE_LOOKUP_PATCH)


SEND_OUTSIDE_PATCH = patching.site(
    "starlette: the response's last message sent outside the request's context",
    package="starlette",
    target="starlette.applications.Starlette.__call__",
    when="under auto-run, with Beacon's FastAPI or Starlette hooks",
)


def send_last_message_outside() -> None:
    """Starlette apps give the server the response's last message outside the request's context.

    See :func:`beacon_otel.frameworks.asgi.send_outside_request` for why (uvicorn's keep-alive
    timer keeps the request's span alive otherwise).
    """
    try:
        from starlette.applications import Starlette
    except ImportError:
        return
    patching.patch(Starlette, "__call__", outermost_sends_outside, site=SEND_OUTSIDE_PATCH)
