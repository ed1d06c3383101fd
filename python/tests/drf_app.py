"""URLs and views of the Django / DRF tests (ROOT_URLCONF of conftest.py)."""
from __future__ import annotations

from django.http import HttpResponse
from django.urls import path
from rest_framework.response import Response
from rest_framework.views import APIView

from shmlimit.django import throttling


class Anon(APIView):
    throttle_classes = [throttling.AnonRateThrottle]

    def get(self, request):
        return Response({"ok": True})


class Scoped(APIView):
    throttle_classes = [throttling.ScopedRateThrottle]
    throttle_scope = "uploads"

    def get(self, request):
        return Response({"ok": True})


def plain(request):
    return HttpResponse("plain")


urlpatterns = [
    path("anon", Anon.as_view()),
    path("scoped", Scoped.as_view()),
    path("plain", plain),
    path("static/logo", plain),
]
