"""URLs of the Django app used by the in-process framework tests."""

from __future__ import annotations

import time
from collections.abc import Iterator

from django.http import Http404, HttpRequest, JsonResponse, StreamingHttpResponse
from django.urls import path


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


urlpatterns = [
    path("", home),
    path("users/<int:pk>", user),
    path("explode", explode),
    path("stream", stream),
]
