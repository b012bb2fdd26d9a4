"""URLs of the Django app used by the in-process framework tests."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from django.http import Http404, HttpRequest, JsonResponse, StreamingHttpResponse
from django.urls import path, re_path
from django.views.decorators.http import require_GET

import beacon_otel

CHILD_TRACER: list[Any] = []
"""The test's tracer, for the child span the nested view opens."""


def home(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True})


def user(request: HttpRequest, pk: int) -> JsonResponse:
    if pk == 404:
        raise Http404("No user 404")
    return JsonResponse({"id": pk})


def explode(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"value": 1 / 0})


def stream(request: HttpRequest) -> StreamingHttpResponse:
    def chunks() -> Iterator[bytes]:
        for _ in range(3):
            time.sleep(0.1)
            yield b"x"

    return StreamingHttpResponse(chunks())


def nested(request: HttpRequest) -> JsonResponse:
    """A child span around the app's own auth step, which names the caller."""
    with CHILD_TRACER[0].start_as_current_span("load user"):
        beacon_otel.set_consumer("user-42")
    return JsonResponse({"ok": True})


@require_GET
def only_get(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True})


def interrupt(request: HttpRequest) -> JsonResponse:
    raise KeyboardInterrupt


def legacy(request: HttpRequest, year: str) -> JsonResponse:
    return JsonResponse({"year": year})


urlpatterns = [
    path("", home),
    path("users/<int:pk>", user),
    path("explode", explode),
    path("stream", stream),
    path("nested", nested),
    path("only-get", only_get),
    path("interrupt", interrupt),
    re_path(r"^legacy/(?P<year>[0-9]{4})/$", legacy),
]
