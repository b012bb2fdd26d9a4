"""Route templates: regex routes (Django re_path, DRF routers) in the form of path converters."""

from __future__ import annotations

import pytest

from beacon_otel.mapping.templates import regex_route_template
from tests.mapping.test_span_to_event import NEW, make_span

# The same table is in docs/routes.md.
REGEX_ROUTES = [
    (r"^api/books/$", "api/books/"),
    (r"^api/books/(?P<pk>[^/.]+)/$", "api/books/<pk>/"),
    (r"^api/books\.(?P<format>[a-z0-9]+)/?$", "api/books.<format>"),
    (r"^api/books/(?P<pk>[^/.]+)\.(?P<format>[a-z0-9]+)/?$", "api/books/<pk>.<format>"),
    (r"^api/books/?$", "api/books"),
    (r"^legacy/(?P<year>[0-9]{4})/$", "legacy/<year>/"),
    (r"^files/(?P<path>.+)$", "files/<path>"),
    (r"^a/(?P<x>(?:foo|bar))/b$", "a/<x>/b"),
    (r"^articles/(\d+)/$", "articles/<arg>/"),
    (r"^(?i)caseless/$", "caseless/"),
    ("users/<int:pk>", "users/<int:pk>"),
]


@pytest.mark.parametrize(("pattern", "template"), REGEX_ROUTES)
def test_regex_routes_read_like_path_converters(pattern: str, template: str) -> None:
    """Named groups become <name>, anchors and escapes go, DRF's format suffix is .<format>."""
    assert regex_route_template(pattern) == template


def test_a_django_regex_route_arrives_normalised() -> None:
    """http.route from a DRF router (prefix and regex joined by Django) becomes a template."""
    from beacon_otel.mapping.span_to_event import span_to_event

    span = make_span({**NEW, "url.path": "/api/books/7/", "http.route": "api/^books/(?P<pk>[^/.]+)/$"})
    assert span_to_event(span).route == "/api/books/<pk>/"
