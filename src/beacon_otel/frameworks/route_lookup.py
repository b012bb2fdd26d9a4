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

:func:`install` applies both under auto-run; by hand, call it once after instrumenting. Each
lookup lives in its framework's module (:mod:`~beacon_otel.frameworks.starlette`,
:mod:`~beacon_otel.frameworks.django`).
"""

from __future__ import annotations

from beacon_otel.frameworks import django, starlette


def install() -> None:
    """Make the Starlette and Django instrumentations' lookups cheap, where they are installed."""
    starlette.install_route_lookup()
    django.install_route_lookup()
