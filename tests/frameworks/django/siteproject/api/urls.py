"""The API app (Django REST framework): a serializer that refuses what it is sent."""

from __future__ import annotations

from django.urls import path
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView


class BookSerializer(serializers.Serializer):
    title = serializers.CharField(max_length=50)
    year = serializers.IntegerField()


class Books(APIView):
    def post(self, request: Request) -> Response:
        serializer = BookSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)  # a 400 with the serializer's errors
        return Response(serializer.validated_data, status=201)


urlpatterns = [path("books/", Books.as_view())]
