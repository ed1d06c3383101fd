"""@shmlimit.limit: lazy policy registration, keys, costs, RateLimited."""
from __future__ import annotations

import asyncio

import pytest

import shmlimit
from shmlimit._util import fit_key
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


_HOSTILE_KEYS = ["cl\u00e9", "\udc80", "\ud800", "", b"", "x" * 500, b"x" * 500, bytearray(b"ba"), 5, None, 1.5]
_HOSTILE_COSTS = [1, 0, 2, 3, -1, 2**63, 2**64, 1.5, True, None, "1"]


def _outcome(call, name):
    try:
        return call()
    except Exception as e:  # noqa: BLE001 - compared, not handled
        return (type(e), str(e).replace(name, "<segment>"))


def test_keys_and_costs_get_what_limiter_acquire_gives_them(segment_name):
    """Each call's outcome is Limiter.acquire's on the key as @limit fits
    it: the admitted call runs, a refused one raises RateLimited, a key or
    cost the binding refuses raises its error (non-ASCII, lone surrogates,
    empty, longer than max_key_bytes, bytes and str, wrong types)."""
    lim = shmlimit.Limiter.create(segment_name, capacity=256)
    twin_name = segment_name + "-twin"
    twin = shmlimit.Limiter.create(twin_name, capacity=256)
    try:
        for i, cost in enumerate(_HOSTILE_COSTS):
            @shmlimit.limit("3/h", limiter=lim, policy="p%d" % i, key=lambda k: k, cost=cost)
            def f(k):
                return "ran"

            pid = twin.add_policy("p%d" % i, "gcra", "3/h", replace=True)

            def expect(key):
                k = fit_key(key, twin.max_key_bytes)
                d = twin.acquire(pid, k, cost)
                return "ran" if d.allowed else ("refused", d.limit, d.remaining, d.reason, k)

            def got(key):
                try:
                    return f(key)
                except shmlimit.RateLimited as e:
                    return ("refused", e.decision.limit, e.decision.remaining, e.decision.reason, e.key)

            for key in _HOSTILE_KEYS:
                for _ in range(2):
                    assert _outcome(lambda: got(key), lim.name) == _outcome(lambda: expect(key), twin.name), (key, cost)
        assert lim.stats()["policy_counters"] == twin.stats()["policy_counters"]
        strip = ("at", "unix_ns", "retry_after", "cursor")
        rings = [[{k: v for k, v in e.items() if k not in strip} for e in x.recent_denials()["denials"]] for x in (lim, twin)]
        assert rings[0] == rings[1] and rings[0]
    finally:
        lim.close()
        twin.close()
        shmlimit.Limiter.remove(twin_name)
