"""Exact sharing across forked processes, and fork safety: a Limiter opened
before fork() (gunicorn --preload, multiprocessing's fork start method)
works in the children."""
from __future__ import annotations

import multiprocessing

import pytest

import shmlimit
from forking import run_forked

_inherited = None  # a Limiter the parent opens before multiprocessing forks


def test_limiter_opened_before_fork_admits_exactly_the_burst_across_children(limiter):
    pid = limiter.add_policy("api", "gcra", "100/h")
    admitted = run_forked(4, lambda i: sum(limiter.acquire(pid, "hot").allowed for _ in range(300)))
    assert sum(admitted) == 100
    # every child was charged in the same bucket the parent sees
    assert limiter.peek(pid, "hot", 0).remaining == 0
    assert limiter.stats()["admitted"] == 100 and limiter.stats()["denied"] == 1100


def test_children_that_open_by_name_share_the_parents_buckets(limiter, segment_name):
    limiter.add_policy("api", "fixed_window", "50/h")

    def child(i):
        own = shmlimit.Limiter.open(segment_name, claim_timeout=30.0)
        return [sum(own.acquire("api", "k%d" % k).allowed for _ in range(40)) for k in range(3)]

    per_child = run_forked(4, child)
    for k in range(3):
        assert sum(c[k] for c in per_child) == 50
    assert limiter.check()["clean"]


def test_new_keys_claimed_concurrently_by_children_get_one_bucket_each(limiter):
    pid = limiter.add_policy("api", "sliding_window", "7/h")
    keys = ["user-%d" % n for n in range(60)]
    per_child = run_forked(4, lambda i: {k: sum(limiter.acquire(pid, k).allowed for _ in range(5)) for k in keys})
    for k in keys:
        assert sum(c[k] for c in per_child) == 7, k
    report = limiter.check()
    assert report["clean"] and report["live"] == 60


def _pool_worker(n):
    return sum(_inherited.acquire("api", "pool").allowed for _ in range(n))


def test_multiprocessing_fork_pool_uses_the_inherited_limiter(limiter):
    global _inherited
    limiter.add_policy("api", "gcra", "25/h")
    _inherited = limiter
    try:
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(4) as pool:
            got = pool.map(_pool_worker, [20] * 8)
    finally:
        _inherited = None
    assert sum(got) == 25


def test_decorated_function_is_limited_across_children(limiter):
    calls = []

    @shmlimit.limit("3/h", limiter=limiter, key=lambda user: user)
    def send(user):
        calls.append(user)
        return True

    def child(i):
        sent = 0
        for _ in range(5):
            try:
                sent += send("alice")
            except shmlimit.RateLimited:
                pass
        return sent

    assert sum(run_forked(3, child)) == 3
    with pytest.raises(shmlimit.RateLimited):
        send("alice")
