"""Django: Ninja routes in Ninja's notation, REST framework's error detail as the contract's items,
and a streamed body counted until its last byte."""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace
from typing import Any

from beacon_otel.frameworks.django import ninja_route, rest_framework_items
from tests.conftest import configure_django, make_pipeline


def request_served_by(module: str, route: str) -> Any:
    view = SimpleNamespace(__module__=module)
    return SimpleNamespace(resolver_match=SimpleNamespace(func=view, route=route))


def test_ninja_route_is_given_back_in_ninja_notation() -> None:
    """A Ninja view's Django route (<name>, <int:name>) reads as declared ({name}, {int:name})."""
    assert ninja_route(request_served_by("ninja.operation", "api/items/<item_id>")) == "/api/items/{item_id}"
    assert ninja_route(request_served_by("ninja.operation", "v2/<int:pk>/tags")) == "/v2/{int:pk}/tags"


def test_other_django_views_keep_djangos_route() -> None:
    """Only Ninja's views are rewritten; an unresolved request (a 404) has no route here."""
    assert ninja_route(request_served_by("shop.views", "api/items/<item_id>")) is None
    assert ninja_route(SimpleNamespace(resolver_match=None)) is None
    assert ninja_route(SimpleNamespace()) is None


def test_rest_framework_detail_flattens_to_field_paths_with_codes() -> None:
    """Nested serializers and many=True lists give dotted paths; each ErrorDetail's code is the type."""
    from rest_framework.exceptions import ErrorDetail, ValidationError

    detail = ValidationError(
        {
            "title": [ErrorDetail("This field may not be blank.", code="blank")],
            "author": {"name": [ErrorDetail("This field is required.", code="required")]},
            "items": [{}, {"price": [ErrorDetail("A valid number is required.", code="invalid")]}],
            "non_field_errors": [ErrorDetail("Bad pair.", code="invalid")],
        }
    ).detail
    assert list(rest_framework_items(detail)) == [
        {"field": "title", "message": "This field may not be blank.", "type": "blank"},
        {"field": "author.name", "message": "This field is required.", "type": "required"},
        {"field": "items.1.price", "message": "A valid number is required.", "type": "invalid"},
        {"field": "non_field_errors", "message": "Bad pair.", "type": "invalid"},
    ]


def test_rest_framework_detail_without_fields() -> None:
    """ValidationError("...") raised by a view has no field: the contract's field is empty."""
    from rest_framework.exceptions import ValidationError

    assert list(rest_framework_items(ValidationError("Out of stock.").detail)) == [
        {"field": "", "message": "Out of stock.", "type": "invalid"}
    ]


def test_django_hooks_import_neither_api_framework_before_a_request() -> None:
    """Made before Django's settings exist (instrumentation starts first): nothing reads them yet.

    Ninja reads the settings when imported and raises without them; the observers are installed
    by the first request instead.
    """
    script = (
        "import sys\n"
        "from beacon_otel import BeaconConfig, BeaconSpanProcessor\n"
        "from beacon_otel.frameworks import django as django_support\n"
        "BeaconSpanProcessor(BeaconConfig(dry_run=True)).hooks('django')\n"
        "imported = sorted(m for m in ('ninja', 'rest_framework') if m in sys.modules)\n"
        "print(imported, django_support.installed)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert (done.returncode, done.stdout.strip()) == (0, "[] False"), done.stderr


def test_django_streamed_body_counts_until_its_last_byte() -> None:
    """StreamingHttpResponse: the event's duration runs until the server closes the body."""
    configure_django()
    from django.test import Client
    from opentelemetry.instrumentation.django import DjangoInstrumentor

    pipeline = make_pipeline()
    DjangoInstrumentor().instrument(tracer_provider=pipeline.provider, **pipeline.processor.hooks("django"))
    try:
        response = Client().get("/stream")
        assert pipeline.events() == []
        assert b"".join(response.streaming_content) == b"xxx"
        response.close()
        (event,) = pipeline.events()
        assert (event["route"], event["status"]) == ("/stream", 200)
        assert event["duration_ms"] >= 300
    finally:
        DjangoInstrumentor().uninstrument()
        pipeline.provider.shutdown()
