"""A DRF router (list, detail, create, format suffixes), a failing view, a legacy re_path and a
streamed response."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from django.http import HttpRequest, JsonResponse, StreamingHttpResponse
from django.urls import include, path, re_path
from rest_framework import routers, serializers, viewsets
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

BOOKS = {1: "Dune", 2: "Solaris"}


class BookSerializer(serializers.Serializer):
    title = serializers.CharField(max_length=50)
    year = serializers.IntegerField()


class BookViewSet(viewsets.ViewSet):
    def list(self, request: Request, format: str | None = None) -> Response:
        return Response([{"id": k, "title": v} for k, v in BOOKS.items()])

    def retrieve(self, request: Request, pk: str | None = None, format: str | None = None) -> Response:
        return Response({"id": pk, "title": BOOKS.get(int(pk or 0), "?")})

    def create(self, request: Request, format: str | None = None) -> Response:
        serializer = BookSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)  # a 400 with the serializer's errors
        return Response(serializer.validated_data, status=201)


class Boom(APIView):
    def get(self, request: Request) -> Response:
        raise RuntimeError("kaboom")


router = routers.DefaultRouter()
router.register(r"books", BookViewSet, basename="book")


def legacy(request: HttpRequest, year: str) -> JsonResponse:
    return JsonResponse({"year": year})


def download(request: HttpRequest) -> StreamingHttpResponse:
    seconds = float(request.GET.get("duration", "1"))

    def chunks() -> Iterator[bytes]:
        for _ in range(4):
            time.sleep(seconds / 4)
            yield b"*"

    return StreamingHttpResponse(chunks())


urlpatterns: list[Any] = [
    path("api/boom/", Boom.as_view()),
    path("api/", include(router.urls)),
    re_path(r"^legacy/(?P<year>[0-9]{4})/$", legacy),
    path("download", download),
]
