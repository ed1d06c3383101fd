"""@shmlimit.limit: lazy policy registration, keys, costs, RateLimited."""
from __future__ import annotations

import asyncio

import pytest

import shmlimit
from shmlimit.decorators import default_limiter


def test_limit_raises_rate_limited_with_the_decision(limiter):
    ran = []

    @shmlimit.limit("2/h", limiter=limiter, key=lambda user, text: user)
    def send(user, text):
        ran.append((user, text))
        return len(text)

    assert send("alice", "hi") == 2 and send("alice", "yo") == 2
    assert send("bob", "hey") == 3  # another key, another bucket
    with pytest.raises(shmlimit.RateLimited) as e:
        send("alice", "again")
    assert ran == [("alice", "hi"), ("alice", "yo"), ("bob", "hey")]  # not run when refused
    d = e.value.decision
    assert not d.allowed and d.limit == 2 and e.value.retry_after == d.retry_after
    assert 1799 < d.retry_after <= 1800
    assert e.value.policy == send.shmlimit_policy and e.value.key == b"alice"
    assert send.__name__ == "send"  # functools.wraps


def test_policy_is_registered_on_first_call_under_a_derived_name(limiter):
    @shmlimit.limit("5/m", limiter=lambda: limiter)
    def task():
        return "done"

    assert limiter.find_policy(task.shmlimit_policy) is None
    assert task() == "done"
    [p] = [p for p in limiter.policies() if p["name"] == task.shmlimit_policy]
    assert (p["rate"], p["algorithm"]) == ("5/m", "gcra")
    assert task.shmlimit_policy.startswith("fn:") and len(task.shmlimit_policy) <= 31


def test_cost_callable_and_explicit_policy(limiter):
    @shmlimit.limit("10/h", limiter=limiter, policy="uploads", cost=lambda size: size)
    def upload(size):
        return size

    assert upload(6) == 6
    with pytest.raises(shmlimit.RateLimited):
        upload(5)
    assert upload(4) == 4
    assert limiter.find_policy("uploads") is not None


def test_coroutine_functions_are_limited(limiter):
    @shmlimit.limit("1/h", limiter=limiter)
    async def fetch():
        return 42

    assert asyncio.run(fetch()) == 42
    with pytest.raises(shmlimit.RateLimited):
        asyncio.run(fetch())


def test_a_changed_rate_in_code_replaces_the_segments_policy(limiter):
    @shmlimit.limit("1/h", limiter=limiter, policy="jobs", key=lambda tag: tag)
    def one(tag):
        return 1

    @shmlimit.limit("3/h", limiter=limiter, policy="jobs", key=lambda tag: tag)
    def three(tag):
        return 3

    one("a")
    assert [three("b") for _ in range(3)] == [3, 3, 3]
    assert [p["rate"] for p in limiter.policies() if p["name"] == "jobs"] == ["3/h"]


def test_default_limiter_from_the_environment(monkeypatch, segment_name):
    shmlimit.set_default_limiter(None)
    monkeypatch.delenv("SHMLIMIT_SEGMENT", raising=False)
    with pytest.raises(RuntimeError, match="SHMLIMIT_SEGMENT"):
        default_limiter()
    monkeypatch.setenv("SHMLIMIT_SEGMENT", segment_name)
    try:

        @shmlimit.limit("1/h")
        def f():
            return "ok"

        assert f() == "ok"
        with pytest.raises(shmlimit.RateLimited):
            f()
        assert default_limiter().name == segment_name
    finally:
        shmlimit.set_default_limiter(None)
