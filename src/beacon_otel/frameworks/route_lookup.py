"""The contrib Starlette and Django instrumentations' route lookups, at the same cost in any app.

Both instrumentations name the SERVER span when the request arrives, before the app has routed
it, by matching the route table themselves: Starlette's walks every route of the app, Django's
resolves the URL once more than Django will. In a 1,000-route app that second matching costs
more than the app's own routing. Beacon keeps their spans exactly as they are (same names, same
attributes, same sampler input at the same moment) and makes only the lookup cheap:

- Starlette: an app's routes are indexed once by the literal first path segment of their
  template (``/orders/{id}`` under ``orders``). A request's lookup runs the instrumentation's
  own lookup over the routes that could match it: those of its first segment and those the
  index cannot place (a template starting with a parameter, a ``Host``, any class but
  Starlette's own ``Route``, ``WebSocketRoute`` and ``Mount``), in the app's order. A route
  left out could only have answered "no match", so the lookup answers the same.
- Django: the instrumentation's resolution of the request path is remembered for the request
  and answers Django's own resolution of the same path by the same resolver: the URL is
  resolved once. A 404 is not remembered (Django resolves it again, as without Beacon).

:func:`install` applies both under auto-run; by hand, call it once after instrumenting.
"""

from __future__ import annotations

import contextvars
import importlib
import re
import types
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from beacon_otel.common import patching
from beacon_otel.common.guard import guarded

_MAX_UNPLACED = 32
"""Routes the index cannot place are walked on every request: past this many, keep the full walk."""

RouteDetails = Callable[[dict[str, Any]], "str | None"]
STARLETTE_PATCH = "starlette instrumentation: route lookup narrowed"
DJANGO_PATCH = "django instrumentation: its resolution serves Django's"


def install() -> None:
    """Make the Starlette and Django instrumentations' lookups cheap, where they are installed."""
    install_starlette()
    install_django()


# -- Starlette ---------------------------------------------------------------------------------


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


def install_starlette() -> None:
    """Narrow the Starlette instrumentation's lookup (it reads its module's function per request)."""
    try:
        module = importlib.import_module("opentelemetry.instrumentation.starlette")
        importlib.import_module("starlette._utils")
    except ImportError:
        return
    if callable(getattr(module, "_get_route_details", None)):
        patching.patch(module, "_get_route_details", narrowed, name=STARLETTE_PATCH)


# -- Django ------------------------------------------------------------------------------------

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


def install_django() -> None:
    """Let the Django instrumentation's resolution of the path serve Django's own."""
    try:
        module = importlib.import_module("opentelemetry.instrumentation.django.middleware.otel_middleware")
    except ImportError:
        return
    if getattr(module, "resolve", None) is not None:
        patching.patch(module, "resolve", lambda _: remembered_resolve, name=DJANGO_PATCH)
