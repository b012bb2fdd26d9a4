"""The project's URLconf: the apps' URLconfs included, a converter of its own, a legacy re_path
and a streamed download."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from django.http import HttpRequest, JsonResponse, StreamingHttpResponse
from django.urls import include, path, re_path, register_converter


class HexConverter:
    regex = "[0-9a-f]+"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(HexConverter, "hex")


def archive(request: HttpRequest, year: str, month: str) -> JsonResponse:
    return JsonResponse({"year": year, "month": month})


def blob(request: HttpRequest, digest: str) -> JsonResponse:
    return JsonResponse({"digest": digest})


def stack(request: HttpRequest) -> JsonResponse:
    """The middleware Django runs, outermost first (the tests read which span source is in)."""
    from django.conf import settings

    return JsonResponse({"middleware": list(settings.MIDDLEWARE)})


def download(request: HttpRequest) -> StreamingHttpResponse:
    seconds = float(request.GET.get("duration", "1"))

    def chunks() -> Iterator[bytes]:
        for _ in range(4):
            time.sleep(seconds / 4)
            yield b"*"

    return StreamingHttpResponse(chunks())


urlpatterns: list[Any] = [
    path("shop/", include("siteproject.shop.urls")),
    path("api/", include("siteproject.api.urls")),
    path("accounts/", include(("siteproject.accounts.urls", "accounts"), namespace="accounts")),
    re_path(r"^archive/(?P<year>[0-9]{4})/(?P<month>[0-9]{2})/$", archive),
    path("blobs/<hex:digest>", blob),
    path("download", download),
    path("stack", stack),
]
