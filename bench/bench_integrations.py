"""Per-call cost of each Python integration's hot path, one key on one policy.

Cases, in one process, each on a segment of its own and a rate that admits
every timed call (the admitted steady state, the common one), except where
a case says otherwise:
  binding acquire        Limiter.acquire(policy_id, key) (pybind11), for reference
  binding _acquire       _shmlimit._acquire(limiter, policy_id, key), the plain
                         CPython call the integrations use
  middleware             shmlimit.django.middleware.RateLimitMiddleware, one
                         rule (KEY "ip"), a request through it to a view that
                         returns a prepared response (the headers included)
  django-ratelimit       a view decorated with shmlimit.django.ratelimit.ratelimit
                         (key "ip"), called with a request
  @limit                 a function decorated with shmlimit.limit, str key
  limits fixed-window    limits' FixedWindowRateLimiter.hit on shmlimit://
  limits moving-window   limits' MovingWindowRateLimiter.hit on shmlimit://
                         (refused steady state: 10 per minute, spent first)
  limits ... stats       get_window_stats of either (what Flask-Limiter's
                         headers read: a count of 0 and a peek)
  outbound throttled     a function decorated with shmlimit.throttled whose
                         turn is always now (Limiter.wait)

Requests are built before the timing, one per call, as a server builds one
per request (the integrations note their decisions on it). Each figure is
the CPU time of this thread for the fastest of --rounds rounds of --calls
calls, in microseconds per call. Prints a markdown table on stdout.

Run (the built module is found as python/tests find it, PYTHONPATH=<build>/python):
  /usr/bin/python3 bench/bench_integrations.py --build build/ci
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import time

from pybench import find_module
from typing import Any, Callable, List


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=None, help="a CMake build directory holding python/shmlimit (default: the first of build/bench, build/ci, build/dev)")
    ap.add_argument("--module-dir", default=None, help="a directory holding the shmlimit package itself (overrides --build)")
    ap.add_argument("--calls", type=int, default=2000, help="calls per round (default 2000)")
    ap.add_argument("--rounds", type=int, default=7, help="rounds per case; the fastest counts (default 7)")
    return ap.parse_args()


def main() -> int:
    args = parse_args()
    sys.path.insert(0, args.module_dir or find_module(args.build, "bench_integrations.py"))

    import django
    from django.conf import settings

    tag = "/shmlimit-bench-%d-" % os.getpid()
    settings.configure(
        DEBUG=False,
        SECRET_KEY="shmlimit-bench",
        ALLOWED_HOSTS=["*"],
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth"],
        DATABASES={},
        SHMLIMIT={
            "SEGMENT": tag + "django",
            "MIDDLEWARE": [{"SCOPE": "pages", "RATE": "60000/h", "KEY": "ip"}],
        },
    )
    django.setup()

    from django.http import HttpResponse
    from django.test import RequestFactory

    import shmlimit
    from shmlimit import _shmlimit
    from shmlimit.django import middleware, ratelimit

    factory = RequestFactory()
    created: List[str] = []

    def segment(name: str) -> Any:
        created.append(tag + name)
        return shmlimit.Limiter.open_or_create(tag + name, capacity=4096, log_entries=16)

    def timed(call: Callable[[Any], Any], inputs: List[Any]) -> float:
        """ns per call of call(x) over inputs."""
        gc.disable()
        try:
            t0 = time.thread_time_ns()
            for x in inputs:
                call(x)
            return (time.thread_time_ns() - t0) / len(inputs)
        finally:
            gc.enable()

    def best(call: Callable[[Any], Any], make: Callable[[], Any]) -> float:
        return min(timed(call, [make() for _ in range(args.calls)]) for _ in range(args.rounds)) / 1000.0

    def request() -> Any:
        return factory.get("/x", REMOTE_ADDR="192.0.2.7")

    rows = []
    lim = segment("binding")
    pid = lim.add_policy("p", "gcra", "1000000/h")
    fast = getattr(_shmlimit, "_acquire", None)
    rows.append(("binding acquire", best(lambda k: lim.acquire(pid, k), lambda: b"k")))
    if fast is not None:
        rows.append(("binding _acquire", best(lambda k: fast(lim, pid, k), lambda: b"k")))

    prepared = HttpResponse("ok")
    mw = middleware.RateLimitMiddleware(lambda r: prepared)
    rows.append(("middleware", best(mw, request)))

    @ratelimit.ratelimit(key="ip", rate="60000/h", block=True)
    def view(r: Any) -> Any:
        return prepared

    rows.append(("django-ratelimit", best(view, request)))

    lim_dec = segment("decorator")

    @shmlimit.limit("1000000/h", key=lambda user: user, limiter=lim_dec)
    def decorated(user: str) -> None:
        return None

    rows.append(("@limit", best(decorated, lambda: "user-7")))

    try:
        import limits
        from shmlimit.limits_storage import ShmlimitStorage

        created.append(tag + "limits")
        storage = ShmlimitStorage("shmlimit://%slimits?log_entries=16" % tag)
        fixed = limits.strategies.FixedWindowRateLimiter(storage)
        moving = limits.strategies.MovingWindowRateLimiter(storage)
        big = limits.parse("1000000/hour")
        small = limits.parse("10/minute")
        rows.append(("limits fixed-window", best(lambda k: fixed.hit(big, k), lambda: "user-7")))
        for _ in range(10):
            moving.hit(small, "user-7")
        rows.append(("limits moving-window (refused)", best(lambda k: moving.hit(small, k), lambda: "user-7")))
        rows.append(("limits fixed-window stats", best(lambda k: fixed.get_window_stats(big, k), lambda: "user-7")))
        rows.append(("limits moving-window stats", best(lambda k: moving.get_window_stats(small, k), lambda: "user-7")))
    except ImportError as e:
        print("limits cases skipped: %s" % e, file=sys.stderr)

    lim_out = segment("outbound")

    @shmlimit.throttled("vendor", key=lambda acct: acct, rate="1000000/s", max_wait=1.0, limiter=lim_out)
    def call_vendor(acct: str) -> None:
        return None

    rows.append(("outbound throttled", best(call_vendor, lambda: "acct-7")))

    for name in created + [tag + "django"]:
        shmlimit.Limiter.remove(name)

    print("| case | us per call |")
    print("|---|---:|")
    for name, us in rows:
        print("| %s | %.2f |" % (name, us))
    print()
    print("Thread CPU time, fastest of %d rounds of %d calls." % (args.rounds, args.calls))
    return 0


if __name__ == "__main__":
    sys.exit(main())
