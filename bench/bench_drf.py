"""Per-call cost of a DRF throttle: shmlimit's against DRF's own.

Cases, in one process, rate "60/min" (scope "anon"), each as one
``allow_request(request, view)`` call on a throttle built once:
  shmlimit   shmlimit.django.throttling.AnonRateThrottle (one segment for
             every worker; the scope's default algorithm, sliding_window)
  drf        rest_framework.throttling.AnonRateThrottle on Django's default
             cache, LocMemCache (per process: N workers allow N times the rate)
Workloads:
  one client    the same address on every call: 60 admitted, then every call
                is refused (DRF's history holds 60 timestamps); timed after
                the first 60, so both sides are in that steady state. Timed
                three ways: on fresh requests (allow_request runs DRF's
                authentication, the first read of request.user); with
                request.user already resolved, as DRF calls it
                (APIView.initial() runs perform_authentication before
                check_throttles): the headline and the target's row; and the
                same with a throttle built per request, as APIView.get_throttles()
                builds them
  new clients   a new address on every call: always admitted (DRF writes its
                cache; shmlimit claims a slot). Addresses are not reused
                within a run, and a run stays below both tables' capacity
                (LocMemCache culls past 300 entries: part of DRF's cost)

Each side's get_cache_key is timed alone too, on fresh requests and on
requests whose user is resolved: what a throttle pays before deciding
(request.user, which runs DRF's authentication once per request; get_ident
reads the address). shmlimit's subclasses compute DRF's keys more cheaply
(META read from the Django request rather than through
Request.__getattr__, request.user read once); the report gives each side's
cost beyond its own get_cache_key.

Each figure is the CPU time (this thread's, as the C++ benchmarks' ratios
use CPU time) of the fastest of --rounds rounds of --calls calls (the round
least disturbed by other processes), in microseconds per call; the ratio is
shmlimit / drf (target <= 1/3, on the row with request.user resolved).
Prints a markdown section on stdout.

Run (the built module is found as python/tests find it, PYTHONPATH=<build>/python):
  /usr/bin/python3 bench/bench_drf.py --build build/bench
  bash scripts/bench.sh             builds the module and puts this section into bench/results.md
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import time

from pybench import find_module


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=None, help="a CMake build directory holding python/shmlimit (default: the first of build/bench, build/ci, build/dev)")
    ap.add_argument("--calls", type=int, default=2000, help="calls per round (default 2000)")
    ap.add_argument("--rounds", type=int, default=7, help="rounds per case; the fastest counts (default 7)")
    ap.add_argument("--rate", default="60/min", help="the anon rate (default 60/min)")
    return ap.parse_args()


def main() -> int:
    args = parse_args()
    sys.path.insert(0, find_module(args.build, "bench_drf.py"))

    import django
    from django.conf import settings

    segment = "/shmlimit-bench-%d-drf" % os.getpid()
    settings.configure(
        DEBUG=False,
        SECRET_KEY="shmlimit-bench",
        ALLOWED_HOSTS=["*"],
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "rest_framework"],
        DATABASES={},
        # CACHES unset: Django's default, one LocMemCache per process.
        REST_FRAMEWORK={
            "DEFAULT_AUTHENTICATION_CLASSES": [],
            "DEFAULT_PERMISSION_CLASSES": [],
            "UNAUTHENTICATED_USER": None,
            "DEFAULT_THROTTLE_RATES": {"anon": args.rate},
        },
        SHMLIMIT={"SEGMENT": segment},
    )
    django.setup()

    import rest_framework
    from django.core.cache import cache
    from rest_framework import throttling as drf
    from rest_framework.request import Request
    from rest_framework.test import APIRequestFactory

    import shmlimit
    from shmlimit.django import conf
    from shmlimit.django import throttling as sl

    factory = APIRequestFactory()

    def request(addr: str) -> Request:
        return Request(factory.get("/x", REMOTE_ADDR=addr))

    def timed(throttle: object, requests: list, expect: bool) -> float:
        """ns per call of allow_request over `requests`; checks every answer."""
        allow = throttle.allow_request  # type: ignore[attr-defined]
        gc.disable()
        try:
            t0 = time.thread_time_ns()
            for r in requests:
                if allow(r, None) is not expect:
                    raise SystemExit("bench_drf.py: %s answered %s, not %s" % (type(throttle).__module__, not expect, expect))
            return (time.thread_time_ns() - t0) / len(requests)
        finally:
            gc.enable()

    count = int(args.rate.split("/")[0])
    next_addr = [0]

    def fresh_addrs(n: int) -> list:
        out = []
        for _ in range(n):
            i = next_addr[0]
            next_addr[0] += 1
            out.append(request("10.%d.%d.%d" % (i >> 16 & 255, i >> 8 & 255, i & 255)))
        return out

    def resolved(reqs: list) -> list:
        for r in reqs:
            r.user  # noqa: B018 - DRF's authentication, outside the timing
        return reqs

    def floor_of(cls: type) -> type:
        class Floor(cls):  # type: ignore[misc, valid-type]
            """cls's get_cache_key alone: what the throttle pays before
            deciding. Decides nothing."""

            def allow_request(self, request: object, view: object) -> bool:
                return self.get_cache_key(request, view) is None

        return Floor

    class PerRequest:
        """A new throttle of cls for every call, as a DRF view builds them."""

        def __init__(self, cls: type) -> None:
            self.cls = cls

        def allow_request(self, request: object, view: object) -> bool:
            return self.cls().allow_request(request, view)  # type: ignore[no-any-return]

    results: dict = {}
    for name, cls in (("shmlimit", sl.AnonRateThrottle), ("drf", drf.AnonRateThrottle)):
        floor = floor_of(cls)()
        results[(name, "floor")] = min(
            timed(floor, [request("192.0.2.3") for _ in range(args.calls)], False) for _ in range(args.rounds)
        )
        results[(name, "floor_authed")] = min(
            timed(floor, resolved([request("192.0.2.3") for _ in range(args.calls)]), False)
            for _ in range(args.rounds)
        )
    try:
        for name, cls in (("shmlimit", sl.AnonRateThrottle), ("drf", drf.AnonRateThrottle)):
            throttle = cls()
            # One client: spend the rate, then time the refusals.
            one = request("192.0.2.%d" % (1 if name == "shmlimit" else 2))
            for i in range(count):
                if not throttle.allow_request(one, None):
                    raise SystemExit("bench_drf.py: %s refused call %d of the first %d" % (name, i + 1, count))
            # A request object per call, built before the timing, as a server
            # builds one per request (the throttle notes its decision on it).
            addr = one.META["REMOTE_ADDR"]
            results[(name, "one")] = min(
                timed(throttle, [request(addr) for _ in range(args.calls)], False) for _ in range(args.rounds)
            )
            # The same, with request.user already resolved, as in a DRF view:
            # APIView.initial() runs perform_authentication before check_throttles.
            results[(name, "authed")] = min(
                timed(throttle, resolved([request(addr) for _ in range(args.calls)]), False)
                for _ in range(args.rounds)
            )
            # The same with a throttle built per request, as APIView.get_throttles() does.
            results[(name, "built")] = min(
                timed(PerRequest(cls), resolved([request(addr) for _ in range(args.calls)]), False)
                for _ in range(args.rounds)
            )
            # New clients: every call admitted. LocMemCache keeps at most
            # 300 keys and culls a third when full, as it does in a server.
            best = float("inf")
            for _ in range(args.rounds):
                best = min(best, timed(throttle, fresh_addrs(args.calls), True))
            results[(name, "new")] = best
            cache.clear()
    finally:
        conf.registry.clear()
        shmlimit.Limiter.remove(segment)

    print("## DRF throttle per call (bench/bench_drf.py)")
    print()
    print("`AnonRateThrottle.allow_request` at `%s`, one process: shmlimit's (`shmlimit.django.throttling`)" % args.rate)
    print("against DRF's own (`rest_framework.throttling`, Django's default LocMemCache). Thread CPU time, fastest of %d" % args.rounds)
    print("rounds of %d calls; Python %s, Django %s, DRF %s, shmlimit module from `%s`." % (
        args.calls, sys.version.split()[0], django.get_version(), rest_framework.VERSION,
        os.path.relpath(os.path.dirname(shmlimit.__file__))))
    print()
    print("| workload | shmlimit (us/call) | DRF LocMemCache (us/call) | shmlimit / DRF |")
    print("|---|---:|---:|---:|")
    rows = (("one", "one client, refused after %d, fresh request (allow_request authenticates)" % count),
            ("authed", "**the same, request.user already resolved (as DRF calls it)**"),
            ("built", "the same, the throttle built per request (as DRF's views build it)"),
            ("new", "a new client every call (admitted), fresh request"))
    for key, label in rows:
        a, b = results[("shmlimit", key)] / 1000, results[("drf", key)] / 1000
        print("| %s | %.2f | %.2f | %.2fx |" % (label, a, b, a / b))
    us = {k: v / 1000 for k, v in results.items()}
    print()
    print("DRF calls allow_request after APIView.initial() has authenticated the request")
    print("(perform_authentication, then check_throttles): the row in bold is that call, and the target's.")
    print("The first row also pays DRF's authentication, the first read of request.user.")
    print()
    print("get_cache_key alone, fresh request / user resolved: DRF's %.2f / %.2f us, shmlimit's %.2f / %.2f us" % (
        us[("drf", "floor")], us[("drf", "floor_authed")], us[("shmlimit", "floor")], us[("shmlimit", "floor_authed")]))
    print("(the same keys: META read from the Django request, request.user read once). Beyond each side's own")
    sl_d = us[("shmlimit", "authed")] - us[("shmlimit", "floor_authed")]
    drf_d = us[("drf", "authed")] - us[("drf", "floor_authed")]
    print("get_cache_key, the decision itself (user resolved): shmlimit %.2f us, DRF %.2f us (%.2fx)." % (
        sl_d, drf_d, sl_d / drf_d if drf_d > 0 else float("nan")))
    print()
    a, b = results[("shmlimit", "authed")], results[("drf", "authed")]
    print("request.user resolved (as DRF calls it): shmlimit / DRF = %.2fx; target <= 0.33x: %s" % (
        a / b, "MET" if a / b <= 1 / 3 else "NOT MET"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
