"""The binding itself: Limiter setup, decisions (at injected times), errors,
identity and headers, all against a real segment."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time

import pytest

import shmlimit
from shmlimit import Limiter

S = 1_000_000_000  # ns per second


# ---- setup and errors -------------------------------------------------------


def test_create_open_and_open_or_create_share_one_segment(segment_name):
    a = Limiter.create(segment_name, capacity=100)
    b = Limiter.open(segment_name)
    c = Limiter.open_or_create(segment_name, capacity=128)
    a.add_policy("p", "gcra", "2/h")
    assert [b.acquire("p", "k").allowed, c.acquire("p", "k").allowed, a.acquire("p", "k").allowed] == [
        True,
        True,
        False,
    ]
    assert a.stats()["capacity"] == 128  # rounded up to a power of two
    assert b.name == segment_name and not b.read_only and b.max_key_bytes == 88


def test_stats_decision_clock_is_the_calling_process(segment_name):
    # Each interpreter is a fresh process: it chooses its clock from its own
    # SHMLIMIT_CLOCK, and stats() reports that choice, not the segment's.
    Limiter.create(segment_name, capacity=64)
    script = (
        "import json, sys, shmlimit\n"
        "print(json.dumps(shmlimit.Limiter.open(sys.argv[1]).stats()['decision_clock']))"
    )
    cases = {
        "exact": {"clock": "exact", "reason": "SHMLIMIT_CLOCK=exact"},
        "garbage": {"clock": "exact", "reason": 'SHMLIMIT_CLOCK="garbage" is not auto, tsc or exact'},
    }
    for value, want in cases.items():
        r = subprocess.run([sys.executable, "-c", script, segment_name], capture_output=True, text=True,
                           timeout=120, env={**os.environ, "SHMLIMIT_CLOCK": value})
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout) == want, (value, r.stdout)
    own = Limiter.open(segment_name).stats()["decision_clock"]
    assert own["clock"] in ("tsc", "exact") and (own["reason"] == "") == (own["clock"] == "tsc"), own


def test_errors_map_to_their_classes_and_builtin_bases(segment_name):
    with pytest.raises(shmlimit.NotFoundError) as nf:
        Limiter.open(segment_name)
    assert isinstance(nf.value, FileNotFoundError) and nf.value.code == shmlimit.ErrorCode.NOT_FOUND
    assert segment_name in str(nf.value)
    Limiter.create(segment_name, capacity=64)
    with pytest.raises(shmlimit.ExistsError) as ex:
        Limiter.create(segment_name, capacity=64)
    assert isinstance(ex.value, FileExistsError)
    with pytest.raises(shmlimit.IncompatibleError):
        Limiter.open(segment_name, capacity=4096)
    with pytest.raises(shmlimit.InvalidArgumentError) as bad:
        Limiter.create("no-slash", capacity=64)
    assert isinstance(bad.value, ValueError)


def test_open_refuses_a_fifo_without_blocking(segment_name):
    path = "/dev/shm" + segment_name
    os.mkfifo(path, 0o666)
    try:
        start = time.monotonic()
        for kwargs in ({"read_only": True}, {}, {"allow_other_users": True}):
            with pytest.raises(shmlimit.IncompatibleError, match="FIFO"):
                Limiter.open(segment_name, open_timeout=10.0, **kwargs)
        with pytest.raises(shmlimit.IncompatibleError, match="FIFO"):
            Limiter.check_segment(segment_name)
        assert time.monotonic() - start < 5.0
    finally:
        os.unlink(path)


def test_a_segment_writable_by_other_needs_allow_other_users(segment_name):
    with pytest.raises(shmlimit.InvalidArgumentError, match="allow_other_users"):
        Limiter.create(segment_name, capacity=64, mode=0o666)
    assert not os.path.exists("/dev/shm" + segment_name)
    Limiter.create(segment_name, capacity=64, mode=0o666, allow_other_users=True)
    with pytest.raises(shmlimit.AccessError, match="0666") as e:
        Limiter.open(segment_name, read_only=True)
    assert isinstance(e.value, PermissionError) and e.value.code == shmlimit.ErrorCode.PERMISSION
    assert Limiter.open(segment_name, allow_other_users=True).stats()["capacity"] == 64
    assert Limiter.open_or_create(segment_name, capacity=64, allow_other_users=True).name == segment_name


def test_no_space_error_is_an_oserror():
    assert issubclass(shmlimit.NoSpaceError, OSError)
    assert shmlimit.errors.error_class(12) is shmlimit.NoSpaceError


def test_policy_errors(limiter):
    limiter.add_policy("api", "gcra", "3/h")
    assert limiter.add_policy("api", "gcra", "3/h") == limiter.find_policy("api")
    with pytest.raises(shmlimit.PolicyConflictError) as e:
        limiter.add_policy("api", "gcra", "4/h")
    assert "api" in str(e.value) and e.value.code == 8
    pid = limiter.add_policy("api", "gcra", "4/h", replace=True)
    assert [p["rate"] for p in limiter.policies() if p["id"] == pid] == ["4/h"]
    with pytest.raises(shmlimit.InvalidArgumentError, match="fortnight"):
        limiter.add_policy("x", "gcra", "5/fortnight")
    with pytest.raises(shmlimit.InvalidArgumentError, match="known"):
        limiter.add_policy("x", "no_such_algorithm", "5/m")
    with pytest.raises(shmlimit.InvalidArgumentError):
        limiter.add_policy("bad name", "gcra", "5/m")
    with pytest.raises(shmlimit.InvalidArgumentError, match="on_full"):
        limiter.add_policy("x", "gcra", "5/m", on_full="maybe")
    with pytest.raises(ValueError, match="cost"):
        limiter.acquire("api", "k", -1)
    with pytest.raises(TypeError):
        limiter.add_policy("x", "gcra", 5)


def test_a_closed_limiter_raises_instead_of_crashing(segment_name):
    lim = Limiter.create(segment_name, capacity=64)
    lim.add_policy("p", "gcra", "1/s")
    with lim:
        pass
    assert lim.closed
    with pytest.raises(ValueError, match="closed"):
        lim.acquire("p", "k")


def test_rates_parse_like_the_library():
    assert shmlimit.parse_rate("100/m") == (100, 60.0)
    assert shmlimit.parse_rate("10/5m") == (10, 300.0)
    assert shmlimit.parse_rates("10/h;100/d") == [(10, 3600.0), (100, 86400.0)]
    assert shmlimit.format_rate((10, 300)) == "10/5m"
    assert shmlimit.parse_algorithm("sliding-window") == "sliding_window"
    with pytest.raises(shmlimit.InvalidArgumentError, match="column"):
        shmlimit.parse_rate("5/fortnight")


# ---- decisions at injected times --------------------------------------------


@pytest.mark.parametrize(
    "algorithm,rate,burst,steps",
    [
        # (offset ns, cost, allowed, remaining, retry_after ns, reset_after ns)
        (
            "gcra",
            "3/h",
            0,
            [
                (0, 1, True, 2, 0, 1200 * S),
                (0, 1, True, 1, 0, 2400 * S),
                (0, 1, True, 0, 0, 3600 * S),
                (0, 1, False, 0, 1200 * S, 3600 * S),
                (1200 * S, 1, True, 0, 0, 3600 * S),
                (1200 * S, 0, True, 0, 0, 3600 * S),  # a peek (cost 0) of a drained bucket
            ],
        ),
        (
            "fixed_window",
            "2/m",
            0,
            [
                (0, 1, True, 1, 0, 50 * S),
                (0, 1, True, 0, 0, 50 * S),
                (30 * S, 1, False, 0, 20 * S, 20 * S),
                (50 * S, 2, True, 0, 0, 60 * S),
            ],
        ),
        (
            "token_bucket",
            "1/m",
            2,
            [
                (0, 2, True, 0, 0, 110 * S),  # refills at the next two minute boundaries
                (0, 1, False, 0, 50 * S, 110 * S),
                (50 * S, 1, True, 0, 0, 120 * S),
            ],
        ),
    ],
)
def test_decisions_match_the_algorithm_tables(limiter, algorithm, rate, burst, steps):
    pid = limiter.add_policy("p", algorithm, rate, burst=burst)
    t0 = 10 * 60 * S + 10 * S  # 10 s into a minute window since the epoch
    for offset, cost, allowed, remaining, retry_after, reset_after in steps:
        d = limiter.acquire_at(pid, "k", cost, t0 + offset)
        assert (d.allowed, d.remaining, d.retry_after_ns, d.reset_after_ns, d.reason) == (
            allowed,
            remaining,
            retry_after,
            reset_after,
            "ok",
        ), (offset, cost, d)
        assert d.retry_after == retry_after / S and d.reset_after == reset_after / S
        assert bool(d) == allowed


def test_decision_fields_are_read_only_and_only_read_from_decisions(limiter):
    pid = limiter.add_policy("p", "gcra", "1/h")
    limiter.acquire(pid, "k")
    d = limiter.acquire(pid, "k")
    assert (d.allowed, d.limit, d.remaining, d.retry_after_ns, d.reason) == (False, 1, 0, d.retry_after_ns, "ok")
    assert 0 < d.retry_after == d.retry_after_ns / 1e9 and d.reset_after == d.reset_after_ns / 1e9
    assert isinstance(d.allowed, bool) and isinstance(d.limit, int) and isinstance(d.retry_after, float)
    for field in ("allowed", "limit", "remaining", "retry_after", "retry_after_ns", "reset_after", "reset_after_ns"):
        with pytest.raises(AttributeError):
            setattr(d, field, 1)
        with pytest.raises(TypeError):
            getattr(shmlimit.Decision, field).__get__(object())
        assert getattr(shmlimit.Decision, field).__doc__
    # a subclass's decision reads through the same fields
    w = limiter.wait(limiter.add_policy("q", "gcra", "5/h"), "k", max_wait=0.0)
    assert isinstance(w, shmlimit.Decision) and (w.allowed, w.limit) == (True, 5)


def _outcome(call, lim=None):
    """A call's Decision fields, or its exception's type and message (the
    segment's name in it, which differs between twins, replaced)."""
    try:
        d = call()
    except Exception as e:  # noqa: BLE001 - compared, not handled
        return (type(e), str(e).replace(lim.name, "<segment>") if lim is not None else str(e))
    if isinstance(d, tuple):  # acquire_many's (combined, [each])
        return (tuple, _fields(d[0]), type(d[1]), [_fields(e) for e in d[1]])
    return _fields(d)


def _fields(d):
    return (type(d), d.allowed, d.limit, d.remaining, d.reason, d.retry_after > 0, d.retry_after_ns == 2**63 - 1)


# Arguments after the Limiter, hostile ones included: each must give what
# the method gives (the plain calls hand what they do not decide to it).
_KEYS = [b"k", "k", "", b"", "cl\u00e9", "\u00e9" * 60, "\ud800", "\udc80", b"x" * 200, "x" * 200,
         bytearray(b"k"), memoryview(b"k"), None, 5, 5.0, ["k"]]
_COSTS = [0, 1, 2, 3, 4, -1, 2**63 - 1, 2**63, 2**64, True, False, 1.0, None, "1"]


def _twins(segment_name):
    """Two segments alike: one decides by the method, one by the plain call."""
    lims = [Limiter.create(segment_name + s, capacity=64) for s in ("a", "b")]
    for lim in lims:
        lim.add_policy("p", "gcra", "3/h")
        lim.add_policy("q", "quiet_period", "3/h")
    return lims


def _same_counts(a, b):
    assert a.stats()["policy_counters"] == b.stats()["policy_counters"]
    strip = ("at", "unix_ns", "retry_after", "cursor")
    ring = [[{k: v for k, v in e.items() if k not in strip} for e in lim.recent_denials()["denials"]] for lim in (a, b)]
    assert ring[0] == ring[1]
    for lim in (a, b):
        lim.close()


@pytest.mark.parametrize("method", ["acquire", "peek"])
def test_plain_acquire_is_limiter_acquire(segment_name, method):
    from shmlimit import _shmlimit

    _acquire = getattr(_shmlimit, "_" + method)

    a, b = _twins(segment_name)
    try:
        p = a.find_policy("p")
        assert b.find_policy("p") == p
        policies = [p, "p", "nope", 0, None]
        for policy in policies:
            for key in _KEYS:
                want = _outcome(lambda: getattr(a, method)(policy, key), a)
                assert want == _outcome(lambda: _acquire(b, policy, key), b), (policy, key)
                for cost in _COSTS:
                    want = _outcome(lambda: getattr(a, method)(policy, key, cost), a)
                    assert want == _outcome(lambda: _acquire(b, policy, key, cost), b), (policy, key, cost)
        # the same bucket: the method sees what the plain call charged
        assert _acquire(b, p, b"fresh").remaining == 2  # as after this charge (peek: if charged)
        assert b.acquire(p, "fresh").remaining == (1 if method == "acquire" else 2)
        getattr(a, method)(p, b"fresh")
        a.acquire(p, b"fresh")
        _same_counts(a, b)
    finally:
        Limiter.remove(segment_name + "a")
        Limiter.remove(segment_name + "b")


def test_plain_tally_is_limiter_tally(segment_name):
    from shmlimit._shmlimit import _tally

    a, b = _twins(segment_name)
    try:
        q, p = a.find_policy("q"), a.find_policy("p")
        for policy in [q, "q", p, "nope", None]:  # p: InvalidArgumentError, not a quiet_period
            for key in _KEYS:
                for amount in _COSTS:
                    for restart in (False, True, 0, 1, None, "yes"):
                        want = _outcome(lambda: a.tally(policy, key, amount, restart=restart), a)
                        got = _outcome(lambda: _tally(b, policy, key, amount, restart), b)
                        assert want == got, (policy, key, amount, restart)
        _same_counts(a, b)
    finally:
        Limiter.remove(segment_name + "a")
        Limiter.remove(segment_name + "b")


def test_plain_acquire_many_one_is_acquire_many_of_one_request(segment_name):
    """The plain call answers as acquire_many does, with the same counts
    and denials. Over a full table (on_full allow) both report the
    fallback, as acquire does."""
    from shmlimit._shmlimit import _acquire_many_one

    a, b = _twins(segment_name)
    try:
        p, q = a.find_policy("p"), a.find_policy("q")
        for policy in [p, q, "p", "nope", None]:
            for key in _KEYS:
                for cost in _COSTS:
                    want = _outcome(lambda: a.acquire_many([(policy, key, cost)], each=True), a)
                    got = _outcome(lambda: _acquire_many_one(b, policy, key, cost), b)
                    assert want == got, (policy, key, cost)
        combined, each = _acquire_many_one(b, q, "k", 0)
        assert type(each) is list and len(each) == 1
        a.acquire_many([(q, "k", 0)], each=True)
        _same_counts(a, b)
        # A full table: every new key takes on_full ("allow"), reported
        # "table_full" as a whole and in each, by both calls.
        full = Limiter.create(segment_name + "c", capacity=64)
        p = full.add_policy("p", "gcra", "3/h")
        i = 0
        while full.stats()["empty"] > 0:
            full.acquire(p, "fill%d" % i)
            i += 1
        for i in range(20):
            want = _outcome(lambda: full.acquire_many([(p, "new%d" % i, 1)], each=True))
            got = _outcome(lambda: _acquire_many_one(full, p, "other%d" % i, 1))
            assert want == got and got[1][4] == "table_full" and got[3][0][4] == "table_full"
        full.close()
    finally:
        for s in "abc":
            Limiter.remove(segment_name + s)


def test_acquire_many_of_one_request_is_acquire(segment_name):
    """One request of acquire_many is an acquire: the same decision, the
    same bucket afterwards (a refused quiet period blocked and restarted),
    the same counts and recent denials, cost 0 included."""
    a, b = _twins(segment_name)
    try:
        for name in ("p", "q"):
            policy = a.find_policy(name)
            for cost in (0, 1, 3, 4, 2**40, 0, 1):
                for key in ("fresh%d" % cost, "used"):
                    want = a.acquire(policy, key, cost)
                    combined, each = b.acquire_many([(policy, key, cost)], each=True)
                    for d in (combined, each[0]):
                        assert (d.allowed, d.limit, d.remaining, d.reason) == (
                            want.allowed, want.limit, want.remaining, want.reason), (name, key, cost)
                    # a later look at the bucket: the same on both
                    la, lb = a.peek(policy, key, 0), b.peek(policy, key, 0)
                    assert (la.allowed, la.remaining) == (lb.allowed, lb.remaining), (name, key, cost)
        _same_counts(a, b)
    finally:
        Limiter.remove(segment_name + "a")
        Limiter.remove(segment_name + "b")


def test_plain_wait_is_limiter_wait(segment_name):
    from shmlimit._shmlimit import _wait

    a, b = _twins(segment_name)
    try:
        p = a.find_policy("p")
        waits = [0, 0.0, 0.001, None, -1, float("nan"), float("inf"), 1e30, 2**2000, True, "1"]
        for policy in [p, "p", "nope", None]:
            for key in _KEYS:
                for cost in _COSTS:
                    for max_wait in waits:
                        if max_wait is None and cost not in (0, False):
                            continue  # no limit on the wait: only what never waits (not 20 minutes)
                        want = _outcome(lambda: a.wait(policy, key, cost, max_wait=max_wait), a)
                        got = _outcome(lambda: _wait(b, policy, key, cost, max_wait), b)
                        assert want == got, (policy, key, cost, max_wait)
        _same_counts(a, b)
    finally:
        for s in "ab":
            Limiter.remove(segment_name + s)


def test_plain_calls_refuse_what_is_not_a_limiter_call(segment_name):
    from shmlimit._shmlimit import _acquire, _acquire_many_one, _peek, _tally, _wait

    lim = Limiter.create(segment_name, capacity=64)
    pid = lim.add_policy("p", "gcra", "2/h")
    qid = lim.add_policy("q", "quiet_period", "2/h")
    for bad in [(lim, pid), (lim, pid, b"k", 1, 2), (pid, pid, b"k"), (None, pid, b"k"), (b"k", pid, b"k"), ()]:
        with pytest.raises(TypeError, match="_acquire"):
            _acquire(*bad)
        with pytest.raises(TypeError, match="_peek"):
            _peek(*bad)
    for bad in [(lim, qid, b"k", 1), (lim, qid, b"k", 1, False, 0), (None, qid, b"k", 1, False)]:
        with pytest.raises(TypeError, match="_tally"):
            _tally(*bad)
    for bad in [(lim, pid, b"k"), (lim, pid, b"k", 1, 2), (None, pid, b"k", 1)]:
        with pytest.raises(TypeError, match="_acquire_many_one"):
            _acquire_many_one(*bad)
    for bad in [(lim, pid, b"k", 1), (lim, pid, b"k", 1, None, 0), (None, pid, b"k", 1, None)]:
        with pytest.raises(TypeError, match="_wait"):
            _wait(*bad)
    lim.close()
    with pytest.raises(ValueError, match="closed"):
        _acquire_many_one(lim, pid, b"k", 1)
    with pytest.raises(ValueError, match="closed"):
        _wait(lim, pid, b"k", 1, None)
    with pytest.raises(ValueError, match="closed"):
        _acquire(lim, pid, b"k")
    with pytest.raises(ValueError, match="closed"):
        _tally(lim, qid, "k", 1, False)


def test_cost_above_the_capacity_never_fits(limiter):
    limiter.add_policy("p", "gcra", "3/h")
    d = limiter.acquire("p", "k", 4)
    assert not d.allowed and d.reason == "cost_too_high"
    assert math.isinf(d.retry_after) and d.retry_after_ns == 2**63 - 1


def test_unknown_policy_is_denied_not_raised(limiter):
    d = limiter.acquire("nope", "k")
    assert not d.allowed and d.reason == "unknown_policy"
    assert limiter.acquire_many([("nope", "k")]).reason == "unknown_policy"


def test_key_too_long_follows_on_full(limiter):
    limiter.add_policy("open", "gcra", "1/h")
    limiter.add_policy("closed", "gcra", "1/h", on_full="deny")
    long_key = "x" * (limiter.max_key_bytes + 1)
    for _ in range(3):
        assert limiter.acquire("open", long_key).allowed
    d = limiter.acquire("closed", long_key)
    assert (d.allowed, d.reason) == (False, "key_too_long")


def test_str_and_bytes_keys_are_the_same_bucket(limiter):
    limiter.add_policy("p", "gcra", "2/h")
    assert limiter.acquire("p", "é").allowed
    assert limiter.acquire("p", "é".encode()).allowed
    assert not limiter.acquire("p", "é").allowed
    assert [row["key"] for row in limiter.dump()] == ["é".encode()]


def test_peek_refund_and_reset(limiter):
    pid = limiter.add_policy("p", "gcra", "3/h")
    # peek(cost) says what acquire(cost) would, remaining included; cost 0
    # reports what is available
    assert limiter.peek(pid, "k").remaining == 2
    assert limiter.peek(pid, "k", 0).remaining == 3  # peeking charged nothing
    limiter.acquire(pid, "k", 3)
    assert not limiter.peek(pid, "k").allowed
    assert limiter.refund(pid, "k", 2).remaining == 2
    assert limiter.acquire(pid, "k", 2).allowed
    limiter.acquire(pid, "other")
    assert limiter.reset(pid, "k") == 1
    assert limiter.peek(pid, "k", 0).remaining == 3
    assert limiter.peek(pid, "other", 0).remaining == 2
    assert limiter.reset() == 1
    with pytest.raises(ValueError):
        limiter.reset(key="k")
    with pytest.raises(shmlimit.InvalidArgumentError):
        limiter.reset("nope")


def test_acquire_many_charges_all_or_nothing(limiter):
    burst = limiter.add_policy("burst", "gcra", "2/h")
    sustained = limiter.add_policy("sustained", "gcra", "3/d")
    reqs = [(burst, "k"), ("sustained", "k", 1)]
    assert limiter.acquire_many(reqs).allowed
    assert limiter.acquire_many(reqs).allowed
    combined, each = limiter.acquire_many(reqs, each=True)
    assert not combined.allowed and [d.allowed for d in each] == [False, True]
    # the refusal charged neither limit: sustained still has its third unit
    assert limiter.peek(sustained, "k", 0).remaining == 1
    assert limiter.acquire(sustained, "k").allowed
    with pytest.raises(ValueError):
        limiter.acquire_many([("burst",)])


def test_stats_dump_and_check(limiter):
    limiter.add_policy("p", "gcra", "2/h")
    for _ in range(3):
        limiter.acquire("p", "a")
    limiter.acquire("p", "b")
    st = limiter.stats()
    assert (st["used"], st["admitted"], st["denied"], st["capacity"]) == (2, 3, 1, 1024)
    rows = {r["key"]: r for r in limiter.dump()}
    assert rows[b"a"]["admitted"] == 2 and rows[b"a"]["denied"] == 1 and rows[b"a"]["policy"] == "p"
    assert not rows[b"a"]["now"].allowed and rows[b"b"]["now"].remaining == 1
    report = limiter.check()
    assert report["clean"] and report["live"] == 2 and report["problems"] == []


def test_open_config_registers_the_files_policies(segment_name, tmp_path):
    path = tmp_path / "shmlimit.toml"
    path.write_text(
        '[segment]\nname = "%s"\ncapacity = 256\n\n'
        '[policies.api]\nalgorithm = "gcra"\nrate = "2/h"\n' % segment_name
    )
    lim = Limiter.open_config(str(path))
    assert [p["name"] for p in lim.policies()] == ["api"]
    assert [lim.acquire("api", "k").allowed for _ in range(3)] == [True, True, False]
    with pytest.raises(shmlimit.NotFoundError):
        Limiter.open_config(str(tmp_path / "missing.toml"))
    bad = tmp_path / "bad.toml"
    bad.write_text("[segment]\nname = 5\n")
    with pytest.raises(shmlimit.InvalidArgumentError, match="bad.toml:2"):
        Limiter.open_config(str(bad))


def test_threads_of_one_process_admit_exactly_the_burst(limiter):
    pid = limiter.add_policy("p", "gcra", "500/h")
    admitted = []

    def worker():
        n = 0
        for _ in range(400):
            n += limiter.acquire(pid, "hot").allowed
        admitted.append(n)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(admitted) == 500


# ---- identity and headers ---------------------------------------------------


@pytest.mark.parametrize(
    "num_proxies,remote,xff,expected",
    [
        # DRF's BaseThrottle.get_ident
        (None, "10.0.0.1", None, "10.0.0.1"),
        (None, "10.0.0.1", "1.1.1.1, 2.2.2.2", "1.1.1.1,2.2.2.2"),
        (0, "10.0.0.1", "1.1.1.1, 2.2.2.2", "10.0.0.1"),
        (1, "10.0.0.1", "1.1.1.1, 2.2.2.2", "2.2.2.2"),
        (2, "10.0.0.1", "1.1.1.1, 2.2.2.2", "1.1.1.1"),
        (5, "10.0.0.1", "1.1.1.1, 2.2.2.2", "1.1.1.1"),
        (1, "10.0.0.1", None, "10.0.0.1"),
    ],
)
def test_client_identity_is_drfs_get_ident(num_proxies, remote, xff, expected):
    who = shmlimit.client_identity(remote, xff, None, shmlimit.IdentityOptions(num_proxies=num_proxies))
    assert who.key == expected


def test_identity_trusted_proxies_and_access_lists():
    opts = shmlimit.IdentityOptions(trusted_proxies=["10.0.0.0/8"], ipv6_prefix=64)
    assert shmlimit.client_identity("10.0.0.1", "2001:db8::1:2:3:4, 10.1.1.1", None, opts).key == "2001:db8::"
    assert shmlimit.client_identity("192.0.2.9", "203.0.113.1", None, opts).key == "192.0.2.9"
    with pytest.raises(shmlimit.InvalidArgumentError, match="10.0.0.1/8"):
        shmlimit.IdentityOptions(trusted_proxies=["10.0.0.1/8"])
    acl = shmlimit.AccessList(allow=["10.0.0.0/8"], deny=["10.6.6.6"])
    assert [acl.classify_text(a) for a in ("10.1.2.3", "10.6.6.6", "192.0.2.1", "junk")] == [
        "allow",
        "deny",
        "limit",
        "limit",
    ]
    assert shmlimit.IpAddress("::ffff:192.0.2.1") == shmlimit.IpAddress("192.0.2.1")
    assert shmlimit.IpAddress("192.0.2.1") in shmlimit.Cidr("192.0.2.0/24")
    assert len(shmlimit.fit_key("x" * 200)) <= 88
    assert shmlimit.throttle_key("anon", "1.2.3.4") == "throttle_anon_1.2.3.4"


def test_headers_of_a_refusal(limiter):
    limiter.add_policy("burst", "gcra", "2/m")
    t0 = limiter.now_ns()
    for _ in range(2):
        limiter.acquire_at("burst", "k", 1, t0)
    d = limiter.acquire_at("burst", "k", 1, t0)
    assert d.retry_after_ns == 30 * S
    window = shmlimit.policy_window("gcra", "2/m", 0)
    assert window == 60.0
    headers = dict(shmlimit.rate_limit_headers(d, [("burst", d, window)]))
    assert headers == {
        "Retry-After": "30",
        "X-RateLimit-Limit": "2",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": "60",
        "RateLimit-Policy": '"burst";q=2;w=60',
        "RateLimit": '"burst";r=0;t=60',
    }
    v = shmlimit.http_verdict(d, shmlimit.HttpOptions(refuse_status=503))
    assert (v.refuse, v.status, v.retry_after_s) == (True, 503, 30)
    dry = shmlimit.http_verdict(d, shmlimit.HttpOptions(dry_run=True))
    assert (dry.refuse, dry.would_refuse) == (False, True)
    assert shmlimit.drf_throttled_detail(29.2) == "Request was throttled. Expected available in 30 seconds."
    assert shmlimit.drf_throttled_detail(0.5) == "Request was throttled. Expected available in 1 second."
    assert shmlimit.ceil_seconds(S + 1) == 2


# ---- leases, the sliding log, state export, recent denials ------------------


def test_leases_cap_what_is_in_flight_and_release_on_exit(limiter):
    limiter.add_policy("uploads", "concurrency", "2/s")
    a = limiter.lease("uploads", "u")
    b = limiter.lease("uploads", "u")
    c = limiter.lease("uploads", "u")
    assert (bool(a), bool(b), bool(c)) == (True, True, False)
    assert c.decision.limit == 2 and c.decision.remaining == 0 and not c.decision.allowed
    assert a.release() and not a.release()  # released once
    with limiter.lease("uploads", "u") as d:
        assert d.held and d.decision.remaining == 0
    assert not d.held
    assert limiter.lease("uploads", "u").held  # the with block gave its unit back
    assert limiter.acquire("uploads", "u").reason == "needs_lease"
    assert not limiter.lease("nope", "u").held


def test_a_lease_keeps_the_mapping_alive_after_close(segment_name):
    lim = Limiter.create(segment_name, capacity=64)
    lim.add_policy("c", "concurrency", "1/s")
    held = lim.lease("c", "k")
    lim.close()
    assert held.held and held.release()  # no crash: the lease owns the mapping too


def test_sliding_log_wait_exact_and_drf(segment_name):
    lim = Limiter.create(segment_name, capacity=64, log_entries=4)
    exact = lim.add_policy("exact", "sliding_log", "3/m")
    drf = lim.add_policy("drf", "sliding_log", "3/m", wait="drf")
    assert [p["wait"] for p in lim.policies()] == ["exact", "drf"]
    t0 = lim.now_ns()
    for pid in (exact, drf):
        for dt in (0, 10, 20):
            assert lim.acquire_at(pid, "k", 1, t0 + dt * S).allowed
    # DRF: (duration - (now - oldest)) / (num_requests - len(history) + 1) = (60 - 30) / 1
    for pid in (exact, drf):
        d = lim.acquire_at(pid, "k", 1, t0 + 30 * S)
        assert not d.allowed and d.retry_after_ns == 30 * S
    with pytest.raises(shmlimit.InvalidArgumentError, match="log_entries"):
        lim.add_policy("big", "sliding_log", "5/m")
    with pytest.raises(shmlimit.InvalidArgumentError, match="wait"):
        lim.add_policy("x", "sliding_log", "3/m", wait="soon")


def test_export_import_and_recent_denials(limiter, segment_name):
    limiter.add_policy("p", "gcra", "2/h")
    for _ in range(3):
        limiter.acquire("p", "k")
    doc = limiter.export_state()
    buckets = json.loads(doc)["buckets"]
    assert [(b["policy"], b["key"], b["admitted"], b["denied"]) for b in buckets] == [("p", "k", 2, 1)]
    ring = limiter.recent_denials()
    assert [(d["policy"], d["key"], d["reason"]) for d in ring["denials"]] == [("p", b"k", "ok")]
    assert limiter.recent_denials(ring["next_cursor"])["denials"] == []
    other = Limiter.create(segment_name + "-copy", capacity=64)
    try:
        other.add_policy("p", "gcra", "2/h")
        assert other.import_state(doc)["imported"] == 1
        assert not other.acquire("p", "k").allowed
        with pytest.raises(shmlimit.InvalidArgumentError):
            other.import_state("{not json")
    finally:
        Limiter.remove(segment_name + "-copy")
    assert Limiter.check_segment(segment_name)["clean"]


def test_type_stub_names_exactly_what_the_module_has():
    import ast
    import os

    import shmlimit._shmlimit as ext

    stub = os.path.join(os.path.dirname(shmlimit.__file__), "_shmlimit.pyi")
    tree = ast.parse(open(stub).read())
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}

    def members(body):
        names = {n.name for n in body if isinstance(n, (ast.ClassDef, ast.FunctionDef))}
        return names | {n.target.id for n in body if isinstance(n, ast.AnnAssign)}

    def declared(cls):  # its own members and those of its bases in the stub
        own = {n for n in members(cls.body) if not n.startswith("__")}
        for base in cls.bases:
            if isinstance(base, ast.Name) and base.id in classes:
                own |= declared(classes[base.id])
        return own

    # The Redis tier's classes exist only in a build that has it.
    tier_only = {"RedisLimiter", "HybridLimiter", "TierDecision"}
    stubbed = members(tree.body) - (set() if ext.HAS_REDIS else tier_only)
    public = {n for n in stubbed if not n.startswith("_")}
    assert public == {n for n in dir(ext) if not n.startswith("_")}
    assert all(hasattr(ext, n) for n in stubbed - public)  # the private names it types exist
    for name in sorted(stubbed & set(classes)):
        assert declared(classes[name]) == {n for n in dir(getattr(ext, name)) if not n.startswith("__")}, name


def test_has_redis_says_whether_the_build_has_the_redis_tier():
    import os

    expected = os.environ.get("SHMLIMIT_TEST_HAS_REDIS")
    if expected is None:
        pytest.skip("run by ctest, which says whether the build has shmlimit_redis")
    assert shmlimit.HAS_REDIS is (expected == "1")
    assert all(hasattr(shmlimit, n) == shmlimit.HAS_REDIS for n in ("RedisLimiter", "HybridLimiter", "TierDecision"))


def test_the_gil_is_released_while_open_waits_for_a_creator(segment_name):
    # a segment whose creator never finishes: open() waits open_timeout
    with open("/dev/shm" + segment_name, "wb") as f:
        f.write(bytes(65536))
    result = {}

    def opener():
        try:
            Limiter.open(segment_name, open_timeout=3.0)
        except shmlimit.OpenTimeoutError as e:
            result["error"] = e

    t = threading.Thread(target=opener)
    t.start()
    ticks = 0
    while t.is_alive():  # with the GIL held by open(), this loop could not run
        ticks += 1
        t.join(0.01)
    assert isinstance(result.get("error"), shmlimit.OpenTimeoutError)
    assert ticks >= 3
