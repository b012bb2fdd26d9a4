"""URLs of the Django app used by the in-process framework tests."""

from __future__ import annotations

from django.http import Http404, HttpRequest, JsonResponse
from django.urls import path


def home(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True})


def user(request: HttpRequest, pk: int) -> JsonResponse:
    if pk == 404:
        raise Http404("No user 404")
    return JsonResponse({"id": pk})


def explode(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"value": 1 / 0})


urlpatterns = [
    path("", home),
    path("users/<int:pk>", user),
    path("explode", explode),
]
