"""The accounts app (namespaced): who the request is logged in as, and files under a path converter."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.urls import path


def me(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"user": getattr(request.user, "username", None) or None})


def files(request: HttpRequest, rest: str) -> JsonResponse:
    return JsonResponse({"file": rest})


urlpatterns = [
    path("me", me, name="me"),
    path("files/<path:rest>", files, name="files"),
]
