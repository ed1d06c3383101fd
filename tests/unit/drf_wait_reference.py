#!/usr/bin/python3
"""Prints DRF SimpleRateThrottle.wait() for the cases of
tests/unit/sliding_log_test.cpp (DrfWait.*), computed by Django REST
framework's own code: each case is run through allow_request() with a fake
cache and timer, and wait() is read after the denial; the "direct" cases
set a history shorter than the limit (what a denied cost > 1 meets) and
call wait() on it.

    apt-get install python3-djangorestframework
    /usr/bin/python3 tests/unit/drf_wait_reference.py

Each line: rate, history (seconds, newest first), now, allowed, wait.
"""
import django
from django.conf import settings

settings.configure(REST_FRAMEWORK={"DEFAULT_THROTTLE_RATES": {}})
django.setup()

from rest_framework.throttling import SimpleRateThrottle  # noqa: E402


class FakeCache:
    def __init__(self, history):
        self.history = list(history)

    def get(self, key, default=None):
        return list(self.history)

    def set(self, key, value, timeout=None):
        self.history = list(value)


def drf_wait(rate, history, now):
    class Throttle(SimpleRateThrottle):
        scope = "case"

        def get_cache_key(self, request, view):
            return "k"

    Throttle.rate = rate
    Throttle.cache = FakeCache(history)
    Throttle.timer = lambda self: now
    t = Throttle()
    allowed = t.allow_request(None, None)
    return allowed, t.wait()


CASES = [
    ("3/m", [30.0, 20.0, 10.0], 50.0),
    ("3/m", [30.0, 20.0, 10.0], 69.5),
    ("3/m", [59.0, 58.0, 1.0], 60.5),
    ("5/s", [0.9, 0.8, 0.7, 0.6, 0.5], 1.0),
    ("1/h", [100.0], 3000.0),
    ("4/m", [50.0, 40.0, 30.0, 20.0], 75.25),
]

DIRECT = [
    ("5/m", [40.0, 20.0], 50.0),
    ("5/m", [], 50.0),
    ("10/s", [0.25, 0.125, 0.0625], 0.5),
    ("3/h", [1800.0], 3600.0),
]

for rate, history, now in CASES:
    allowed, wait = drf_wait(rate, history, now)
    print(f"{rate} {history} {now} {allowed} {wait!r}")


def direct_wait(rate, history, now):
    class Throttle(SimpleRateThrottle):
        scope = "case"

    Throttle.rate = rate
    t = Throttle()
    t.history = list(history)
    t.now = now
    return t.wait()


for rate, history, now in DIRECT:
    print(f"direct {rate} {history} {now} {direct_wait(rate, history, now)!r}")
