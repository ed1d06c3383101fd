"""DRF's throttle contract on shmlimit's drop-ins: an overridden timer
decides (injected clock), DRF's attributes (key, now, history, num_requests,
duration), throttle_success/throttle_failure/wait as DRF's for subclasses
that override allow_request, BaseThrottle, one policy per (scope, rate), and
the fresh-segment test helper."""
from __future__ import annotations

import time

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import TestCase, override_settings
from rest_framework import throttling as drf
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

import shmlimit
from shmlimit.django import conf
from shmlimit.django import throttling as sl
from shmlimit.django.testing import FreshSegmentMixin, fresh_segment, reset

factory = APIRequestFactory()
DRF_EXACT = {"ALGORITHM": "sliding_log", "WAIT": "drf", "LOG_ENTRIES": 16}


def view_of(*classes, scope=None):
    class View(APIView):
        throttle_classes = classes

        def get(self, request):
            return Response("ok")

    if scope:
        View.throttle_scope = scope
    return View.as_view()


def hit(view, remote="10.1.1.1"):
    return view(factory.get("/", REMOTE_ADDR=remote))


def timed(base, rate, scope="timed"):
    """A throttle class whose timer a test moves, as DRF's tests do."""

    class T(base):
        t = 0.0

        def timer(self):
            return type(self).t

    T.rate, T.scope = rate, scope
    return T


@pytest.fixture
def exact():
    with fresh_segment(**DRF_EXACT) as lim:
        yield lim


@pytest.fixture
def default():
    with fresh_segment() as lim:
        yield lim


def test_an_overridden_timer_decides_not_the_clock(exact):
    T = timed(sl.AnonRateThrottle, "3/sec")
    view = view_of(T)
    assert [hit(view).status_code for _ in range(4)] == [200, 200, 200, 429]
    assert hit(view)["Retry-After"] == "1"
    T.t = 0.999  # still inside the second
    assert hit(view).status_code == 429
    T.t = 1.0  # DRF: an entry exactly one period old has expired
    assert hit(view).status_code == 200


def test_a_followed_retry_after_keeps_the_rate_constant(exact):
    T = timed(sl.AnonRateThrottle, "3/min")
    view = view_of(T)
    for t in (0, 20, 40, 60, 80, 100):
        T.t = t
        r = hit(view)
        assert r.status_code == 200 and not r.has_header("Retry-After"), t


def test_drf_wait_formula_from_the_segment(exact):
    T = timed(sl.AnonRateThrottle, "6/min")
    view = view_of(T)
    for _ in range(6):
        assert hit(view).status_code == 200
    T.t = 2
    # DRF: (60 - (2 - 0)) / (6 - 6 + 1) = 58
    assert hit(view)["Retry-After"] == "58"


def test_a_wall_clock_timer_is_mapped_inside_the_horizon(exact):
    T = timed(sl.AnonRateThrottle, "2/min")
    T.t = time.time()
    view = view_of(T)
    assert [hit(view).status_code for _ in range(3)] == [200, 200, 429]
    T.t += 60.0
    assert hit(view).status_code == 200
    ns = conf.registry.clock_ns(T.t)
    assert 0 <= ns < (1 << 56)


def test_a_mocked_timer_on_an_instance_decides(exact, monkeypatch):
    monkeypatch.setattr(drf.SimpleRateThrottle, "THROTTLE_RATES", {"anon": "1/min"})
    t = sl.AnonRateThrottle()
    t.timer = lambda: 5.0
    req = factory.get("/", REMOTE_ADDR="10.9.9.9")
    from rest_framework.request import Request

    r = Request(req)
    assert t.allow_request(r, None) and t.now == 5.0
    assert not t.allow_request(r, None)
    t.timer = lambda: 65.0
    assert t.allow_request(r, None)


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), "soon", None])
def test_a_timer_returning_garbage_is_a_clear_error(exact, bad):
    T = timed(sl.AnonRateThrottle, "3/min")
    T.t = bad
    with pytest.raises(ImproperlyConfigured, match="timer"):
        hit(view_of(T))


def test_a_wall_clock_before_the_segment_is_refused_clearly(exact):
    T = timed(sl.AnonRateThrottle, "3/min")
    T.t = time.time() - 10 * 365 * 86400.0
    with pytest.raises(ImproperlyConfigured, match="clock horizon"):
        hit(view_of(T))


def test_drf_attributes_are_set_as_drf_sets_them(exact):
    T = timed(sl.AnonRateThrottle, "3/min")
    T.t = 7.0
    throttle = T()
    assert (throttle.num_requests, throttle.duration) == (3, 60)
    from rest_framework.request import Request

    req = Request(factory.get("/", REMOTE_ADDR="10.2.2.2"))
    assert throttle.allow_request(req, None)
    assert throttle.key == "throttle_anon_10.2.2.2" or throttle.key.startswith("throttle_timed_")
    assert throttle.now == 7.0
    assert throttle.history == [7.0]
    T.t = 8.0
    assert throttle.allow_request(req, None)
    assert throttle.history == [8.0, 7.0]


def test_history_with_the_real_clock_is_in_time_time_units(exact, monkeypatch):
    monkeypatch.setattr(drf.SimpleRateThrottle, "THROTTLE_RATES", {"anon": "5/min"})
    from rest_framework.request import Request

    t = sl.AnonRateThrottle()
    before = time.time()
    req = Request(factory.get("/", REMOTE_ADDR="10.3.3.3"))
    assert t.allow_request(req, None) and t.allow_request(req, None)
    after = time.time()
    assert len(t.history) == 2
    assert all(before - 0.01 <= h <= after + 0.01 for h in t.history)
    assert t.history[0] >= t.history[1]


def test_history_of_other_algorithms_counts_the_requests(default):
    T = timed(sl.AnonRateThrottle, "5/min")
    T.t = 3.0
    from rest_framework.request import Request

    t = T()
    req = Request(factory.get("/", REMOTE_ADDR="10.4.4.4"))
    for _ in range(3):
        assert t.allow_request(req, None)
    t2 = T()
    t2.key = t.key
    t2.now = 3.0
    assert len(t2.history) == 3


class CustomAllow(sl.SimpleRateThrottle):
    """A subclass written as DRF teaches: reads history, calls
    throttle_success() / throttle_failure()."""

    scope = "custom"
    rate = "2/min"
    t = 0.0

    def timer(self):
        return type(self).t

    def get_cache_key(self, request, view):
        return "custom-key"

    def allow_request(self, request, view):
        self.key = self.get_cache_key(request, view)
        self.now = self.timer()
        while self.history and self.history[-1] <= self.now - self.duration:
            self.history.pop()
        if len(self.history) >= self.num_requests:
            return self.throttle_failure()
        return self.throttle_success()


def test_a_custom_allow_request_works_as_with_drf(exact):
    CustomAllow.t = 0.0
    view = view_of(CustomAllow)
    assert [hit(view).status_code for _ in range(3)] == [200, 200, 429]
    # DRF's wait over history: (60 - 0) / (2 - 2 + 1)
    assert hit(view)["Retry-After"] == "60"
    CustomAllow.t = 60.0
    assert hit(view).status_code == 200


def test_throttle_success_in_a_subclass_never_exceeds_the_shared_limit(exact):
    class Blind(CustomAllow):
        def allow_request(self, request, view):  # never looks: the bucket decides
            self.key, self.now = self.get_cache_key(request, view), self.timer()
            return self.throttle_success()

    Blind.t = 0.0
    view = view_of(Blind)
    assert [hit(view).status_code for _ in range(4)] == [200, 200, 429, 429]


def test_wait_without_a_decision_is_drfs_formula():
    t = sl.SimpleRateThrottle.__new__(sl.SimpleRateThrottle)
    t.num_requests, t.duration, t.history = 1, 60, []
    assert t.wait() == 30.0 and isinstance(t.wait(), float)
    t.now = 10.0
    t.history = [5.0, 5.0, 5.0]
    assert t.wait() is None
    t.num_requests, t.history = 4, [8.0, 5.0]
    assert t.wait() == pytest.approx((60 - (10 - 5)) / 3)


def test_base_throttle_is_drfs():
    assert sl.BaseThrottle is drf.BaseThrottle
    with pytest.raises(NotImplementedError):
        sl.BaseThrottle().allow_request(None, None)


def test_classes_sharing_a_scope_with_different_rates_never_share_a_limit(exact):
    Six = timed(sl.UserRateThrottle, "6/min", scope="minutes")
    Three = timed(sl.UserRateThrottle, "3/min", scope="minutes")
    six, three = view_of(Six), view_of(Three)
    assert [hit(six, "10.5.5.5").status_code for _ in range(7)] == [200] * 6 + [429]
    assert [hit(three, "10.5.5.6").status_code for _ in range(4)] == [200] * 3 + [429]
    names = {p["name"] for p in exact.policies()}
    assert len([n for n in names if n.startswith("drf:minutes")]) == 2


def test_the_settings_rate_keeps_the_plain_policy_name(default, monkeypatch):
    monkeypatch.setattr(drf.SimpleRateThrottle, "THROTTLE_RATES", {"anon": "4/min"})
    assert hit(view_of(sl.AnonRateThrottle)).status_code == 200
    assert "drf:anon" in {p["name"] for p in default.policies()}


def test_a_rate_list_at_an_injected_time_is_all_or_nothing(exact):
    T = timed(sl.AnonRateThrottle, "2/min;3/hour", scope="listy")
    view = view_of(T)
    assert [hit(view).status_code for _ in range(3)] == [200, 200, 429]
    T.t = 60
    assert hit(view).status_code == 200
    r = hit(view)  # the minute admits one more, the hour (3) refuses: nothing charged
    assert r.status_code == 429
    T.t = 120
    assert hit(view).status_code == 429  # the hourly rate is full: 3 charged, never 4


def test_default_algorithm_retry_after_differs_from_drf_as_documented(default, monkeypatch):
    monkeypatch.setattr(drf.SimpleRateThrottle, "THROTTLE_RATES", {"anon": "3/hour"})
    view = view_of(sl.AnonRateThrottle)
    codes = [hit(view, "10.6.6.6").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    # sliding_window: until the weighted count falls below 3, > DRF's 3600
    assert int(hit(view, "10.6.6.6")["Retry-After"]) > 3600


def test_fresh_segment_gives_each_block_an_empty_segment(monkeypatch):
    monkeypatch.setattr(drf.SimpleRateThrottle, "THROTTLE_RATES", {"anon": "1/hour"})
    view = view_of(sl.AnonRateThrottle)
    names = []
    for _ in range(2):
        with fresh_segment() as lim:
            names.append(lim.name)
            assert [hit(view).status_code for _ in range(2)] == [200, 429]
    assert names[0] != names[1]
    for n in names:
        with pytest.raises(shmlimit.errors.NotFoundError):
            shmlimit.Limiter.open(n)


def test_reset_empties_the_configured_segment(default, monkeypatch):
    monkeypatch.setattr(drf.SimpleRateThrottle, "THROTTLE_RATES", {"anon": "1/hour"})
    view = view_of(sl.AnonRateThrottle)
    assert [hit(view).status_code for _ in range(2)] == [200, 429]
    assert reset("drf:anon") == 1
    assert hit(view).status_code == 200
    assert reset("no-such-policy") == 0
    assert reset() >= 1


class MixinTests(FreshSegmentMixin, TestCase):
    shmlimit_overrides = {"ALGORITHM": "fixed_window"}

    def test_one(self):
        self._run()

    def test_two(self):  # the same allowance again: a fresh segment
        self._run()

    def _run(self):
        with override_settings():
            drf.SimpleRateThrottle.THROTTLE_RATES, saved = {"anon": "2/hour"}, drf.SimpleRateThrottle.THROTTLE_RATES
            try:
                view = view_of(sl.AnonRateThrottle)
                assert [hit(view).status_code for _ in range(3)] == [200, 200, 429]
                assert conf.settings()["ALGORITHM"] == "fixed_window"
                assert self.shmlimit.name == conf.settings()["SEGMENT"]
            finally:
                drf.SimpleRateThrottle.THROTTLE_RATES = saved
