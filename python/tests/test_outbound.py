"""Waiting for a turn at a rate-limited API: Limiter.reserve, wait,
wait_async and @throttled, in one process and across forked workers.

Times are asserted from below only (a loaded machine sleeps longer, never
shorter) or through the segment's clock."""
from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import pytest
from forking import run_forked

import shmlimit


def test_reserve_queues_turns_and_cancel_gives_back_the_last(limiter):
    limiter.add_policy("vendor", "gcra", "1/h", burst=1)
    first = limiter.reserve("vendor", "acct")
    assert first and first.ok and first.delay == 0
    refused = limiter.reserve("vendor", "acct", max_wait=1)
    assert not refused and refused.delay > 3500
    assert refused.decision.retry_after == pytest.approx(refused.delay)
    assert not refused.cancel()
    second = limiter.reserve("vendor", "acct")  # no limit: queued about 1 h away
    third = limiter.reserve("vendor", "acct")
    assert 3500 < second.delay < 3601 and 7100 < third.delay < 7201
    assert third.time_to_act_ns > second.time_to_act_ns
    assert not second.cancel()  # third depends on it
    assert third.cancel() and not third.cancel()
    again = limiter.reserve("vendor", "acct")
    assert again.delay == pytest.approx(third.delay, abs=1)
    assert "granted" in repr(again)


def test_reserve_and_wait_reject_bad_arguments(limiter):
    limiter.add_policy("vendor", "gcra", "10/s")
    with pytest.raises(ValueError):
        limiter.reserve("vendor", "k", max_wait=-1)
    with pytest.raises(ValueError):
        limiter.wait("vendor", "k", max_wait=float("nan"))
    with pytest.raises(ValueError):
        limiter.reserve("vendor", "k", -1)
    assert limiter.reserve("nope", "k").decision.reason == "unknown_policy"
    assert limiter.wait("nope", "k").reason == "unknown_policy"
    huge = limiter.reserve("vendor", "k", 10**9)
    assert not huge and huge.decision.reason == "cost_too_high" and huge.delay == float("inf")
    assert limiter.wait("vendor", "k", 10**9).reason == "cost_too_high"
    limiter.add_policy("conn", "concurrency", "2/s")
    assert limiter.wait("conn", "k", max_wait=5).reason == "needs_lease"


def test_wait_sleeps_until_the_turn_and_releases_the_gil(limiter):
    limiter.add_policy("fast", "gcra", "20/s", burst=1)  # T = 50 ms
    ticks = []
    stop = threading.Event()

    def ticker():
        while not stop.is_set():
            ticks.append(1)
            time.sleep(0.001)

    t = threading.Thread(target=ticker)
    t.start()
    start = time.monotonic()
    try:
        for _ in range(4):
            assert limiter.wait("fast", "k", max_wait=30).allowed
    finally:
        stop.set()
        t.join()
    assert time.monotonic() - start >= 0.15  # 3 turns after the first
    assert len(ticks) > 3  # the other thread ran while wait slept
    # A turn past max_wait: refused at once.
    limiter.reserve("fast", "k")
    assert not limiter.wait("fast", "k", max_wait=0).allowed


def test_wait_reports_the_turn_it_granted(limiter):
    limiter.add_policy("fast", "gcra", "20/s", burst=1)  # T = 50 ms
    first = limiter.wait("fast", "k", max_wait=30)
    assert isinstance(first, shmlimit.WaitDecision) and isinstance(first, shmlimit.Decision)
    assert first.allowed and first.delay == 0 and first.retry_after == 0
    assert first.time_to_act_ns <= limiter.now_ns()
    second = limiter.wait("fast", "k", max_wait=30)
    woke = limiter.now_ns()
    assert second.allowed and 0 <= second.delay <= 0.05
    # The turn is one T after the first (later only if this process was
    # descheduled for longer than T), and the wake-up is never before it.
    assert second.time_to_act_ns >= first.time_to_act_ns + 50_000_000
    assert woke >= second.time_to_act_ns
    assert "WaitDecision(" in repr(second) and "time_to_act_ns=" in repr(second)
    # Refused: the delay it would have needed, as Reservation.delay.
    assert limiter.reserve("fast", "k")
    refused = limiter.wait("fast", "k", max_wait=0)
    assert not refused and refused.delay > 0 and refused.delay == pytest.approx(refused.retry_after)
    assert limiter.wait("fast", "k", 10**9).delay == float("inf")
    unknown = limiter.wait("nope", "k")
    assert isinstance(unknown, shmlimit.WaitDecision) and unknown.reason == "unknown_policy"
    # wait_async returns the same; WaitDecision(reservation) is what both build.
    d = asyncio.run(limiter.wait_async("fast", "k", max_wait=30))
    assert isinstance(d, shmlimit.WaitDecision) and d.allowed
    assert limiter.now_ns() >= d.time_to_act_ns
    r = limiter.reserve("fast", "k")
    w = shmlimit.WaitDecision(r)
    assert w.allowed == r.ok and w.delay == r.delay and w.time_to_act_ns == r.time_to_act_ns
    with pytest.raises(TypeError):
        shmlimit.WaitDecision(None)


def test_wait_on_a_window_asks_again_at_the_next_opening(limiter):
    limiter.add_policy("fw", "fixed_window", (2, 0.05))
    for _ in range(5):
        assert limiter.wait("fw", "k", max_wait=30).allowed
    assert limiter.now_ns() >= 100_000_000  # the 5th admission is 2 windows on


def test_wait_on_a_token_bucket_sleeps_once_to_its_turn(limiter):
    # 2 tokens every 100 ms, burst 2: turns are the refill boundaries.
    period = 100_000_000
    limiter.add_policy("tb", "token_bucket", (2, 0.1), burst=2)
    assert limiter.reserve("tb", "k", 2)  # the burst, now
    ahead = limiter.reserve("tb", "k", 2)  # the next refill's two tokens
    assert ahead
    if ahead.delay > 0:
        assert ahead.time_to_act_ns % period == 0
    # wait reserves the refill after that one and sleeps to it, once: no
    # refused attempt is counted, and it never acts before its boundary.
    assert limiter.wait("tb", "k", max_wait=30).allowed
    assert limiter.now_ns() >= ahead.time_to_act_ns
    counts = limiter.stats()["policy_counters"]["tb"]
    assert counts == {"admitted": 3, "denied": 0}
    # Two threads waiting at once take distinct turns in the queue.
    acts = []

    def worker():
        for _ in range(3):
            assert limiter.wait("tb", "k", max_wait=30).allowed
            acts.append(limiter.now_ns())

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert limiter.stats()["policy_counters"]["tb"] == {"admitted": 9, "denied": 0}
    # 9 units at burst 2, 2 per refill: the last act is at least 3 refills on.
    assert max(acts) // period - ahead.time_to_act_ns // period >= 2
    # A turn past max_wait: refused at once, charging nothing; an unlimited
    # reservation queues to the refill an hour on.
    limiter.add_policy("hourly", "token_bucket", "1/h", burst=1)
    assert limiter.reserve("hourly", "k").delay == 0
    refused = limiter.wait("hourly", "k", max_wait=0)
    assert not refused.allowed and refused.retry_after > 3000
    queued = limiter.reserve("hourly", "k")
    assert queued and queued.delay == pytest.approx(refused.retry_after, abs=1)
    assert queued.cancel()  # the last turn, not yet come: given back


def test_wait_async_never_blocks_the_loop(limiter):
    limiter.add_policy("fast", "gcra", "20/s", burst=1)

    async def main():
        beats = 0
        done = asyncio.Event()

        async def heartbeat():
            nonlocal beats
            while not done.is_set():
                beats += 1
                await asyncio.sleep(0.002)

        hb = asyncio.create_task(heartbeat())
        decisions = [await limiter.wait_async("fast", "k", max_wait=30) for _ in range(4)]
        refused = await shmlimit.wait_async(limiter, "fast", "k", max_wait=0)
        done.set()
        await hb
        return decisions, refused, beats

    start = time.monotonic()
    decisions, refused, beats = asyncio.run(main())
    assert all(d.allowed for d in decisions)
    assert not refused.allowed
    assert time.monotonic() - start >= 0.15
    assert beats > 5


def test_wait_async_cancelled_gives_its_turn_back(limiter):
    limiter.add_policy("slow", "gcra", "1/h", burst=1)
    assert limiter.reserve("slow", "k")

    async def main():
        task = asyncio.create_task(limiter.wait_async("slow", "k"))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    # The cancelled turn was the last: the next caller gets the same one.
    assert 3500 < limiter.reserve("slow", "k").delay < 3601


def test_throttled_sync_and_async(limiter):
    calls = []

    @shmlimit.throttled("sms", key=lambda to, text: to, max_wait=30, limiter=limiter, rate="20/s", burst=1)
    def send(to, text):
        calls.append((to, text))
        return len(calls)

    start = time.monotonic()
    assert [send("+1", "hi") for _ in range(3)] == [1, 2, 3]
    assert time.monotonic() - start >= 0.1

    limiter.add_policy("vendor", "gcra", "1/h", burst=1)

    @shmlimit.throttled("vendor", key="acct", max_wait=1, limiter=limiter)
    async def call_vendor():
        return "done"

    async def main():
        first = await call_vendor()
        with pytest.raises(shmlimit.RateLimited) as e:
            await call_vendor()
        return first, e.value

    first, err = asyncio.run(main())
    assert first == "done"
    assert err.retry_after > 3500 and err.policy == "vendor"

    @shmlimit.throttled("missing", limiter=limiter)
    def nothing():
        return None

    with pytest.raises(shmlimit.InvalidArgumentError, match="missing"):
        nothing()
    with pytest.raises(shmlimit.InvalidArgumentError):
        shmlimit.throttled("vendor", max_wait=-1)


def test_forked_workers_share_one_queue(limiter, segment_name):
    """6 workers x 5 waits under 100/s, burst 2: the k-th call (sorted) is
    never earlier than start + (k + 1 - B) * T on the segment's clock."""
    limiter.add_policy("vendor", "gcra", "100/s", burst=2)
    start = limiter.now_ns()

    def worker(i):
        lim = shmlimit.Limiter.open(segment_name)
        out = []
        for _ in range(5):
            d = lim.wait("vendor", "acct", max_wait=60)
            assert d.allowed
            out.append(lim.now_ns())
        return out

    acts = sorted(t for ts in run_forked(6, worker) for t in ts)
    T = 10_000_000
    for k, t in enumerate(acts):
        assert t >= start + (k + 1 - 2) * T, "call %d ran ahead of the policy" % k


def test_a_killed_waiter_costs_only_its_turn(limiter, segment_name):
    limiter.add_policy("slow", "gcra", "1/s", burst=1)
    assert limiter.reserve("slow", "k")
    before = limiter.peek("slow", "k").retry_after
    pid = os.fork()
    if pid == 0:
        try:
            shmlimit.Limiter.open(segment_name).wait("slow", "k", max_wait=60)
        finally:
            os._exit(0)
    deadline = time.monotonic() + 60
    while limiter.peek("slow", "k").retry_after < before + 0.5 and time.monotonic() < deadline:
        time.sleep(0.001)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    r = limiter.reserve("slow", "k")
    assert r.ok and 1.0 <= r.delay <= before + 1.0 + 0.01
    assert limiter.check(repair=False)["clean"]


def test_a_signal_during_wait_raises_and_gives_the_turn_back(limiter):
    limiter.add_policy("slow", "gcra", "1/h", burst=1)
    assert limiter.reserve("slow", "k")

    class Interrupted(Exception):
        pass

    def handler(signum, frame):
        raise Interrupted()

    old = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        with pytest.raises(Interrupted):
            limiter.wait("slow", "k")  # its turn is an hour away: only the signal ends it
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    # The interrupted turn was the last: given back, the next caller gets it.
    assert 3500 < limiter.reserve("slow", "k").delay < 3601


def test_throttled_keys_and_costs_get_what_limiter_wait_gives_them(segment_name):
    """@throttled's call for every key and cost, hostile ones included, is
    Limiter.wait's on the key as it fits it: the admitted call runs, a
    refused one raises RateLimited, a key or cost the binding refuses
    raises its error."""
    from shmlimit._util import fit_key

    keys = ["cl\u00e9", "\udc80", "\ud800", "", b"", "x" * 500, b"x" * 500, bytearray(b"ba"), 5, None]
    costs = [1, 0, 2, 4, -1, 2**64, 1.5, True, None]
    lim = shmlimit.Limiter.create(segment_name, capacity=256)
    twin_name = segment_name + "-twin"
    twin = shmlimit.Limiter.create(twin_name, capacity=256)

    def outcome(call, name):
        try:
            return call()
        except Exception as e:  # noqa: BLE001 - compared, not handled
            return (type(e), str(e).replace(name, "<segment>"))

    try:
        for i, cost in enumerate(costs):
            name = "v%d" % i

            @shmlimit.throttled(name, key=lambda k: k, cost=cost, rate="3/h", max_wait=0.01, limiter=lim)
            def call(k):
                return "ran"

            pid = twin.add_policy(name, "gcra", "3/h", replace=True)

            def expect(key):
                k = fit_key(key, twin.max_key_bytes)
                d = twin.wait(pid, k, cost, max_wait=0.01)
                return "ran" if d.allowed else ("refused", d.limit, d.remaining, d.reason, k)

            def got(key):
                try:
                    return call(key)
                except shmlimit.RateLimited as e:
                    return ("refused", e.decision.limit, e.decision.remaining, e.decision.reason, e.key)

            for key in keys:
                for _ in range(2):
                    assert outcome(lambda: got(key), lim.name) == outcome(lambda: expect(key), twin.name), (key, cost)
        assert lim.stats()["policy_counters"] == twin.stats()["policy_counters"]
    finally:
        lim.close()
        twin.close()
        shmlimit.Limiter.remove(twin_name)
