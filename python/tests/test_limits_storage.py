"""The shmlimit:// storage of `limits` (shmlimit/limits_storage.py, doc/limits.md).

* The storage contract `limits` expects of every storage (its MemoryStorage
  and RedisStorage behave so): incr/get/get_expiry/clear/reset/check and
  acquire_entry/get_moving_window, as tables.
* The same sequences of hits through limits' own strategies on memory://
  and on shmlimit:// give the same answers in one process.
* Across forked processes shmlimit:// admits exactly the limit, where
  memory:// admits it once per process.
* Hostile URIs and arguments: a clear ConfigurationError / ValueError.

No assertion depends on timing: windows are an hour long, except where a
test waits (polling, with a generous deadline) for a 50 ms window to end.
"""
from __future__ import annotations

import os
import time

import pytest

limits = pytest.importorskip("limits")

from limits import RateLimitItemPerHour, RateLimitItemPerMinute  # noqa: E402
from limits.errors import ConfigurationError  # noqa: E402
from limits.storage import MemoryStorage, storage_from_string  # noqa: E402
from limits.strategies import (  # noqa: E402
    FixedWindowElasticExpiryRateLimiter,
    FixedWindowRateLimiter,
    MovingWindowRateLimiter,
)

import shmlimit  # noqa: E402
from conftest import unique_name  # noqa: E402
from forking import run_forked  # noqa: E402
from shmlimit.limits_storage import TALLY_MAX, ShmlimitStorage, expiry_of_key, parse_uri  # noqa: E402


@pytest.fixture
def storage():
    name = unique_name("limits")
    st = storage_from_string("shmlimit://%s?capacity=256&log_entries=16&claim_timeout=30" % name)
    yield st
    st.limiter.close()
    shmlimit.Limiter.remove(name)


def wait_until(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in %.0f s" % timeout
        time.sleep(0.01)


# ---- registration and URIs ------------------------------------------------

def test_scheme_is_registered_the_way_limits_registers_storages(storage):
    assert isinstance(storage, ShmlimitStorage)
    assert limits.storage.SCHEMES["shmlimit"] is ShmlimitStorage
    assert storage.check()


@pytest.mark.parametrize("uri, options, name, expect", [
    ("shmlimit:///myapp", {}, "/myapp", {"capacity": 16384, "log_entries": 100, "mode": 0o600}),
    ("shmlimit:///myapp?capacity=65536", {}, "/myapp", {"capacity": 65536}),
    ("shmlimit:///a?log_entries=8&mode=660&allow_other_users=true", {}, "/a",
     {"log_entries": 8, "mode": 0o660, "allow_other_users": True}),
    ("shmlimit:///a?capacity=64", {"capacity": 128}, "/a", {"capacity": 128}),  # storage_options win
    ("shmlimit:///a%2Db", {}, "/a-b", {}),
])
def test_uri_parsing(uri, options, name, expect):
    got_name, args, on_full = parse_uri(uri, **options)
    assert got_name == name and on_full == "allow"
    for k, v in expect.items():
        assert args[k] == v, k


@pytest.mark.parametrize("uri, options, message", [
    ("shmlimit://host/myapp", {}, "names a host"),
    ("shmlimit://", {}, "one segment name"),
    ("shmlimit:///", {}, "one segment name"),
    ("shmlimit:///a/b", {}, "one segment name"),
    ("shmlimit:///a?capacity=lots", {}, "capacity='lots' is not a number"),
    ("shmlimit:///a?capacity=-1", {}, "must be >= 0"),
    ("shmlimit:///a?claim_timeout=nan", {}, "finite"),
    ("shmlimit:///a?mode=rw", {}, "octal"),
    ("shmlimit:///a?allow_other_users=maybe", {}, "not a boolean"),
    ("shmlimit:///a?on_full=maybe", {}, "on_full"),
    ("shmlimit:///a?bogus=1", {}, "unknown option(s) bogus"),
    ("shmlimit:///a?capacity", {}, "malformed query"),
    ("shmlimit:///a?capacity=", {}, "capacity='' is not a number"),
    ("shmlimit:///a", {"nope": 1}, "unknown option(s) nope"),
    ("redis://localhost", {}, "not a shmlimit:// URI"),
])
def test_bad_uris_are_configuration_errors(uri, options, message):
    with pytest.raises(ConfigurationError, match=None) as e:
        parse_uri(uri, **options)
    assert message in str(e.value), str(e.value)


def test_a_segment_that_cannot_be_made_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="cannot open segment"):
        storage_from_string("shmlimit://%s?capacity=0" % unique_name("zero"))


@pytest.mark.parametrize("key, expiry", [
    ("LIMITER/127.0.0.1/10/1/minute", 60),
    ("LIMITER/a/b/c/5/2/hour", 7200),
    ("LIMITER/x/1/1/second", 1),
    ("LIMITER/x/1/1/fortnight", None),
    ("plain", None),
    ("a/b/c", None),
])
def test_expiry_of_limits_keys(key, expiry):
    assert expiry_of_key(key) == expiry


# ---- the Storage contract -------------------------------------------------

# (calls, expected results): each call is (method, args) on a fresh storage.
CONTRACT = [
    ("incr counts every hit", [("incr", ("k", 3600)), ("incr", ("k", 3600)), ("incr", ("k", 3600, False, 3))],
     [1, 2, 5]),
    ("incr counts past any limit", [("incr", ("k", 60, False, 7)), ("incr", ("k", 60, False, 7))], [7, 14]),
    ("get reads without counting", [("get", ("k",)), ("incr", ("k", 3600)), ("get", ("k",)), ("get", ("k",))],
     [0, 1, 1, 1]),
    ("keys are separate", [("incr", ("a", 3600)), ("incr", ("b", 3600)), ("get", ("a",))], [1, 1, 1]),
    ("one key in two windows", [("incr", ("k", 60)), ("incr", ("k", 3600)), ("incr", ("k", 60))], [1, 1, 2]),
    ("clear forgets the key", [("incr", ("k", 3600)), ("clear", ("k",)), ("get", ("k",)), ("incr", ("k", 3600))],
     [1, None, 0, 1]),
    ("clear leaves other keys", [("incr", ("a", 3600)), ("incr", ("b", 3600)), ("clear", ("a",)), ("get", ("b",))],
     [1, 1, None, 1]),
    ("reset forgets everything", [("incr", ("a", 3600)), ("acquire_entry", ("b", 5, 3600)), ("reset", ()),
                                  ("get", ("a",)), ("get_moving_window", ("b", 5, 3600))],
     [1, True, 2, 0, ("now", 0)]),
    ("limits' keys", [("incr", ("LIMITER/1.2.3.4/10/1/minute", 60)), ("get", ("LIMITER/1.2.3.4/10/1/minute",))],
     [1, 1]),
    ("acquire_entry up to the limit", [("acquire_entry", ("k", 3, 3600))] * 4, [True, True, True, False]),
    ("acquire_entry amount all or none", [("acquire_entry", ("k", 5, 3600, 3)), ("acquire_entry", ("k", 5, 3600, 3)),
                                          ("acquire_entry", ("k", 5, 3600, 2)), ("get_moving_window", ("k", 5, 3600))],
     [True, False, True, ("now", 5)]),
    ("acquire_entry amount above the limit", [("acquire_entry", ("k", 2, 3600, 3)), ("get_moving_window", ("k", 2, 3600))],
     [False, ("now", 0)]),
    ("moving windows of other limits are separate", [("acquire_entry", ("k", 1, 3600)), ("acquire_entry", ("k", 2, 3600)),
                                                     ("acquire_entry", ("k", 1, 3600))], [True, True, False]),
    ("get_moving_window of an unseen key", [("get_moving_window", ("k", 3, 60))], [("now", 0)]),
    ("clear forgets the moving window", [("acquire_entry", ("k", 1, 3600)), ("clear", ("k",)),
                                         ("acquire_entry", ("k", 1, 3600))], [True, None, True]),
]


@pytest.mark.parametrize("calls, expected", [c[1:] for c in CONTRACT], ids=[c[0] for c in CONTRACT])
def test_storage_contract(storage, calls, expected):
    for (method, args), want in zip(calls, expected):
        t0 = int(time.time())
        got = getattr(storage, method)(*args)
        t1 = int(time.time()) + 1
        if isinstance(want, tuple) and want[0] == "now":  # (start, count): start is "now" when empty
            assert got[1] == want[1], (method, args, got)
            assert t0 - 3600 <= got[0] <= t1, (method, args, got)
        else:
            assert got == want, (method, args, got)


def test_get_expiry_is_the_end_of_the_window_that_began_at_the_first_hit(storage):
    t0 = time.time()
    storage.incr("k", 3600)
    storage.incr("k", 3600)
    e = storage.get_expiry("k")
    t1 = time.time()
    assert int(t0 + 3600) - 1 <= e <= t1 + 3600
    assert int(t0) - 1 <= storage.get_expiry("unseen") <= time.time()


def test_get_moving_window_start_is_the_latest_entry(storage):
    t0 = time.time()
    storage.acquire_entry("k", 5, 3600)
    storage.acquire_entry("k", 5, 3600)
    start, n = storage.get_moving_window("k", 5, 3600)
    assert n == 2 and int(t0) - 1 <= start <= time.time() + 1


def test_a_window_ends_and_the_count_starts_again(storage):
    assert storage.incr("k", 0.05) == 1
    assert storage.incr("k", 0.05) == 2
    wait_until(lambda: storage.get("k") == 0)
    assert storage.incr("k", 0.05) == 1


@pytest.mark.parametrize("elastic", [False, True])
def test_elastic_expiry_moves_the_end_at_every_hit(storage, elastic):
    storage.incr("k", 3600, elastic_expiry=elastic)
    e1 = storage.get_expiry("k")
    wait_until(lambda: time.time() >= e1 - 3600 + 2)  # whole seconds later
    assert storage.incr("k", 3600, elastic_expiry=elastic) == 2
    e2 = storage.get_expiry("k")
    if elastic:
        assert e2 >= e1 + 1
    else:
        assert e2 == e1


def test_moving_window_entries_leave_the_window(storage):
    assert storage.acquire_entry("k", 2, 0.05)
    assert storage.acquire_entry("k", 2, 0.05)
    assert not storage.acquire_entry("k", 2, 0.05)
    wait_until(lambda: storage.get_moving_window("k", 2, 0.05)[1] == 0)
    assert storage.acquire_entry("k", 2, 0.05)


def test_the_counter_saturates_above_any_limit_it_serves(storage):
    assert storage.incr("k", 3600, amount=TALLY_MAX - 1) == TALLY_MAX - 1
    assert storage.incr("k", 3600) == TALLY_MAX
    assert storage.incr("k", 3600) == TALLY_MAX + 1
    assert storage.incr("k", 3600, amount=5) == TALLY_MAX + 1
    assert storage.get("k") == TALLY_MAX


def test_long_keys_are_limited_each_on_their_own(storage):
    a, b = "LIMITER/" + "x" * 300 + "a", "LIMITER/" + "x" * 300 + "b"
    assert [storage.acquire_entry(a, 1, 3600), storage.acquire_entry(a, 1, 3600)] == [True, False]
    assert storage.acquire_entry(b, 1, 3600)
    assert storage.incr(a, 3600) == 1 and storage.incr(a, 3600) == 2 and storage.get(b) == 0


def test_hostile_keys_are_counted_or_refused_as_before(storage):
    """limits passes str keys; any str UTF-8 encodes is a key of its own
    (longer than max_key_bytes: its digest), a lone surrogate or a key that
    is not str or bytes is a TypeError; bytes keys are counted too."""
    for key in ["cl\u00e9", "", "x" * 500]:
        got = [storage.acquire_entry(key, 2, 60), storage.acquire_entry(key, 2, 60, 2)]
        got += [storage.incr(key, 60), storage.incr(key, 60, True, 3), storage.get(key)]
        got += [storage.get_moving_window(key, 2, 60)[1], storage.get_expiry(key) > time.time() + 50]
        assert got == [True, False, 1, 4, 4, 1, True], key
    for key in ["\udc80", "\ud800", 5, None, 1.5]:
        for call in (lambda: storage.acquire_entry(key, 2, 60), lambda: storage.incr(key, 60), lambda: storage.get(key),
                     lambda: storage.get_moving_window(key, 2, 60)):
            with pytest.raises(TypeError):
                call()
    assert [storage.acquire_entry(b"b" * 500, 2, 60), storage.incr(b"b" * 500, 60), storage.incr(b"b" * 500, 60)] == [True, 1, 2]
    counts = storage.limiter.stats()["policy_counters"]
    assert counts["limits.mw.2.60000"] == {"admitted": 4, "denied": 3}
    assert counts["limits.fw.60000"] == {"admitted": 0, "denied": 0}  # tallies are not decisions


@pytest.mark.parametrize("method, args, exc, message", [
    ("incr", ("k", 0), ValueError, "at least 1 ms"),
    ("incr", ("k", -5), ValueError, "at least 1 ms"),
    ("incr", ("k", float("inf")), ValueError, "number of seconds"),
    ("incr", ("k", "60"), ValueError, "number of seconds"),
    ("incr", ("k", 60, False, -1), ValueError, "amount must be an int"),
    ("incr", ("k", 60, False, 2**64), ValueError, "amount must be an int"),
    ("incr", ("k", 60, False, 1.5), ValueError, "amount must be an int"),
    ("acquire_entry", ("k", 3, 60, 10**30), ValueError, "amount must be an int"),
    ("acquire_entry", ("k", 0, 60), ValueError, "limit must be an int >= 1"),
    ("acquire_entry", ("k", 2.5, 60), ValueError, "limit must be an int >= 1"),
    ("acquire_entry", ("k", 17, 60), ConfigurationError, "log_entries >= N"),  # the segment has 16
    ("acquire_entry", ("k", 3, 20 * 365 * 86400), ConfigurationError, "between 0 and 10 years"),
    ("incr", ("k", 20 * 365 * 86400), ConfigurationError, "between 0 and 10 years"),
])
def test_bad_arguments_are_clear_errors(storage, method, args, exc, message):
    with pytest.raises(exc) as e:
        getattr(storage, method)(*args)
    assert message in str(e.value), str(e.value)


def test_another_process_opens_the_segment_as_it_is(storage):
    name = storage.segment
    other = storage_from_string("shmlimit://%s" % name)  # defaults differ from the segment's: opened as it is
    assert other.incr("k", 3600) == 1 and storage.get("k") == 1
    other.limiter.close()
    with pytest.raises(ConfigurationError, match="capacity is 256 slots, not the 512 asked for"):
        storage_from_string("shmlimit://%s?capacity=512" % name)


def test_processes_giving_another_on_full_are_told(storage):
    deny = storage_from_string("shmlimit://%s?on_full=deny" % storage.segment)
    storage.incr("k", 60)
    with pytest.raises(ConfigurationError, match="must give the same on_full; this one gives 'deny'"):
        deny.incr("k", 60)
    deny.limiter.close()


def test_tally_is_only_for_quiet_period_policies_and_never_counts_read_only(storage):
    lim = storage.limiter
    lim.add_policy("g", "gcra", "1/h")
    with pytest.raises(shmlimit.InvalidArgumentError, match="quiet_period"):
        lim.tally("g", "k")
    assert lim.tally("nope", "k").reason == "unknown_policy"
    assert storage.incr("k", 3600, amount=2) == 2
    ro = shmlimit.Limiter.open(storage.segment, read_only=True)
    ro.tally("limits.fw.3600000", "k", 5)
    ro.close()
    assert storage.get("k") == 2


# ---- limits' strategies: memory:// and shmlimit:// agree in one process ----

STRATEGY_CASES = [
    (FixedWindowRateLimiter, [1] * 12),
    (FixedWindowRateLimiter, [3, 3, 3, 2, 1]),
    (FixedWindowElasticExpiryRateLimiter, [1] * 12),
    (MovingWindowRateLimiter, [1] * 12),
    (MovingWindowRateLimiter, [4, 4, 3, 1, 1]),
]


@pytest.mark.parametrize("strategy, costs", STRATEGY_CASES,
                         ids=["%s-%s" % (s.__name__, "-".join(map(str, c))) for s, c in STRATEGY_CASES])
def test_strategies_answer_as_on_memory(storage, strategy, costs):
    memory = MemoryStorage()
    item = RateLimitItemPerMinute(10)
    got = {}
    for name, st in (("memory", memory), ("shmlimit", storage)):
        lim = strategy(st)
        trace = []
        for cost in costs:
            trace.append((lim.hit(item, "user", cost=cost), lim.test(item, "user"),
                          lim.get_window_stats(item, "user")[1]))
        lim.clear(item, "user")
        trace.append((lim.test(item, "user"), lim.hit(item, "user")))
        got[name] = trace
    assert got["shmlimit"] == got["memory"]
    memory.reset()


# ---- across processes -----------------------------------------------------

@pytest.mark.parametrize("strategy", [FixedWindowRateLimiter, MovingWindowRateLimiter])
def test_forked_processes_share_one_exact_limit(storage, strategy):
    item = RateLimitItemPerHour(10)
    memory = MemoryStorage()

    def child(st):
        lim = strategy(st)
        return lambda _: sum(1 for _ in range(200) if lim.hit(item, "user"))

    shm_total = sum(run_forked(4, child(storage)))
    mem_total = sum(run_forked(4, child(memory)))
    assert shm_total == 10
    assert mem_total == 40  # each process counts alone
    if strategy is FixedWindowRateLimiter:  # every hit counted once: none lost to a race
        assert storage.get(item.key_for("user")) == 4 * 200
