"""Views of the end-to-end site: one throttle that can refuse per view, so
that each view's allowance is exact."""
import os
import time

from django.conf import settings
from django.http import HttpResponse
from django.utils.module_loading import import_string
from rest_framework.response import Response
from rest_framework.views import APIView

PKG = "shmlimit.django.throttling" if settings.MODE == "shmlimit" else "rest_framework.throttling"


def throttle(name):
    return import_string(PKG + "." + name)


def pid(request):
    # a short pause spreads concurrent requests over the workers
    time.sleep(float(request.GET.get("sleep", "0")))
    return HttpResponse(str(os.getpid()))


class Base(APIView):
    def get(self, request):
        time.sleep(0.002)
        return Response({"pid": os.getpid()})


class Anon(Base):
    pass  # DEFAULT_THROTTLE_CLASSES: AnonRateThrottle


class UserView(Base):
    throttle_classes = [throttle("UserRateThrottle")]


class Uploads(Base):
    throttle_classes = [throttle("ScopedRateThrottle")]
    throttle_scope = "uploads"


if settings.MODE == "shmlimit":

    class Burst(Base):
        # burst + sustained as one all-or-nothing rate list: "12/hour;30/day"
        throttle_classes = [throttle("ScopedRateThrottle")]
        throttle_scope = "api"

else:

    class Burst(Base):
        # DRF's documented pair of classes
        class BurstRateThrottle(throttle("UserRateThrottle")):
            scope = "burst"

        class SustainedRateThrottle(throttle("UserRateThrottle")):
            scope = "sustained"

        throttle_classes = [BurstRateThrottle, SustainedRateThrottle]
