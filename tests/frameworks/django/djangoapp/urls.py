"""Routes with a converter, a failure and a JSON answer."""

from __future__ import annotations

import os

from django.http import HttpRequest, JsonResponse
from django.urls import path


def get_user(request: HttpRequest, pk: int) -> JsonResponse:
    return JsonResponse({"id": pk, "pid": os.getpid()})


def boom(request: HttpRequest) -> JsonResponse:
    raise RuntimeError("kaboom")


urlpatterns = [
    path("users/<int:pk>", get_user),
    path("boom", boom),
]
