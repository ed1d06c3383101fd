"""The DRF throttles: DRF's keys and settings, wait() and Retry-After, scopes,
all-or-nothing rate lists, per-scope algorithms, fail-open."""
from __future__ import annotations

import logging
import math

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import Client, override_settings
from rest_framework import throttling as drf
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory, force_authenticate
from rest_framework.views import APIView

import shmlimit
from conftest import unique_name
from shmlimit.django import conf
from shmlimit.django import throttling as sl

factory = APIRequestFactory()


class User:
    """Enough of a Django user for DRF's throttles and force_authenticate."""

    is_authenticated = True

    def __init__(self, pk):
        self.pk = pk


@pytest.fixture
def segment():
    """A fresh SHMLIMIT segment for one test."""
    name = unique_name("drf")
    with override_settings(SHMLIMIT={"SEGMENT": name}):
        yield name
    shmlimit.Limiter.remove(name)


def view_with(throttle_classes, scope=None):
    class View(APIView):
        def get(self, request):
            return Response({"ok": True})

    View.throttle_classes = throttle_classes
    if scope:
        View.throttle_scope = scope
    return View.as_view()


def get(view, remote="10.0.0.1", xff=None, user=None):
    extra = {"REMOTE_ADDR": remote}
    if xff is not None:
        extra["HTTP_X_FORWARDED_FOR"] = xff
    request = factory.get("/x", **extra)
    if user is not None:
        force_authenticate(request, user=user)
    return view(request)


@pytest.fixture
def throttle_rates(monkeypatch):
    """Throttle classes read DEFAULT_THROTTLE_RATES at import, as DRF's do."""

    def set_rates(**r):
        monkeypatch.setattr(drf.SimpleRateThrottle, "THROTTLE_RATES", r)

    return set_rates


def test_anon_throttle_admits_the_rate_then_429_with_retry_after(segment, throttle_rates):
    throttle_rates(anon="3/hour")
    view = view_with([sl.AnonRateThrottle])
    codes = [get(view).status_code for _ in range(5)]
    assert codes == [200, 200, 200, 429, 429]
    r = get(view)
    # sliding_window 3/h (the default): the next request fits when the window ends
    lim = conf.get_limiter()
    d = lim.peek("drf:anon", "throttle_anon_10.0.0.1")
    assert int(r["Retry-After"]) == math.ceil(d.retry_after)
    assert r.data["detail"] == shmlimit.drf_throttled_detail(d.retry_after)
    assert get(view, remote="10.0.0.2").status_code == 200  # another client


def test_keys_are_exactly_drfs_including_num_proxies(segment, throttle_rates):
    throttle_rates(anon="100/hour")
    with override_settings(REST_FRAMEWORK={"NUM_PROXIES": 1, "UNAUTHENTICATED_USER": None}):
        for xff in ("198.51.100.1, 203.0.113.7", "spoofed, 203.0.113.7", None):
            request = factory.get("/x", REMOTE_ADDR="10.0.0.1", **({"HTTP_X_FORWARDED_FOR": xff} if xff else {}))
            ours, theirs = sl.AnonRateThrottle(), drf.AnonRateThrottle()
            req = Request(request)
            assert ours.allow_request(req, None)
            assert ours.key == theirs.get_cache_key(req, None)
        keys = {row["key"] for row in conf.get_limiter().dump()}
        # the client is the hop the one proxy appended: rotating the spoofable
        # part of the header does not give a new bucket
        assert keys == {b"throttle_anon_203.0.113.7", b"throttle_anon_10.0.0.1"}


@pytest.mark.parametrize("num_proxies", [None, 0, 1, 2, 5])
def test_idents_and_keys_are_drfs_for_every_request_kind(segment, throttle_rates, num_proxies):
    # get_ident reads META from the Django request a DRF Request wraps, and
    # the keys are formatted positionally: neither may change an answer
    throttle_rates(anon="100/hour", user="100/hour", uploads="100/hour")

    class Custom(sl.UserRateThrottle):
        cache_format = "custom:%(ident)s:%(scope)s"

    class DrfCustom(drf.UserRateThrottle):
        cache_format = "custom:%(ident)s:%(scope)s"

    class ScopedView:
        throttle_scope = "uploads"

    pairs = [(sl.AnonRateThrottle, drf.AnonRateThrottle), (sl.UserRateThrottle, drf.UserRateThrottle),
             (sl.ScopedRateThrottle, drf.ScopedRateThrottle), (Custom, DrfCustom)]
    settings = {"NUM_PROXIES": num_proxies, "UNAUTHENTICATED_USER": None}
    with override_settings(REST_FRAMEWORK=settings):
        for xff in (None, "", "198.51.100.1", "198.51.100.1, 203.0.113.7", " a , b ,c ", "x,"):
            for user in (None, User(7), User((1, "composite"))):
                extra = {"REMOTE_ADDR": "10.0.0.9"}
                if xff is not None:
                    extra["HTTP_X_FORWARDED_FOR"] = xff
                django_request = factory.get("/x", **extra)
                shadowed = Request(factory.get("/x", **extra))
                shadowed.META = {"REMOTE_ADDR": "192.0.2.99"}  # set on the Request itself
                for request in (Request(django_request), django_request, shadowed):
                    if user is not None:
                        request.user = user
                    for ours, theirs in pairs:
                        a, b = ours(), theirs()
                        if ours is sl.ScopedRateThrottle:
                            a.scope = b.scope = "uploads"
                        assert a.get_ident(request) == b.get_ident(request), (xff, request)
                        assert a.get_cache_key(request, ScopedView()) == b.get_cache_key(request, ScopedView())
                        assert a.allow_request(request, ScopedView())


def test_a_rate_changed_within_one_segment_rebinds_and_timers_inject_their_time(segment, throttle_rates):
    throttle_rates(anon="2/hour")
    request = Request(factory.get("/x", REMOTE_ADDR="10.0.0.3"))
    assert [sl.AnonRateThrottle().allow_request(request, None) for _ in range(3)] == [True, True, False]
    throttle_rates(anon="4/hour")  # the same scope and segment, a new rate: replaced, the count kept
    assert [sl.AnonRateThrottle().allow_request(request, None) for _ in range(3)] == [True, True, False]
    assert [p["rate"] for p in conf.get_limiter().policies()] == ["4/h"]
    # the throttle finds its bound policies by bind()'s own cache key, without the call
    assert ("drf:", "anon", "4/hour", None, False) in conf.registry.policies

    # a timer overridden on the class, then on the instance: the bucket
    # decides at the timer's time, not the segment's clock
    class Timed(sl.AnonRateThrottle):
        scope = "timed"
        rate = "1/min"
        algorithm = "gcra"
        timer = lambda self: 1000.0  # noqa: E731

    throttle = Timed()
    other = Request(factory.get("/x", REMOTE_ADDR="10.0.0.4"))
    assert [throttle.allow_request(other, None) for _ in range(2)] == [True, False]
    assert throttle.wait() == pytest.approx(60.0)
    throttle.timer = lambda: 1060.0
    assert throttle.allow_request(other, None)
    assert not throttle.allow_request(other, None) and throttle.wait() == pytest.approx(60.0)


def test_user_throttle_counts_users_and_skips_anon_in_anon_throttle(segment, throttle_rates):
    throttle_rates(anon="1/hour", user="2/hour")
    view = view_with([sl.AnonRateThrottle, sl.UserRateThrottle])
    alice, bob = User(1), User(2)
    assert [get(view, user=alice).status_code for _ in range(3)] == [200, 200, 429]
    assert get(view, user=bob).status_code == 200
    # anonymous: both throttles apply, the anon one (1/h) first refuses
    assert [get(view).status_code for _ in range(2)] == [200, 429]
    keys = {row["key"] for row in conf.get_limiter().dump()}
    assert keys == {b"throttle_user_1", b"throttle_user_2", b"throttle_anon_10.0.0.1", b"throttle_user_10.0.0.1"}


def test_scoped_throttle_uses_the_views_scope(segment, throttle_rates):
    throttle_rates(uploads="2/day", search="1/day")
    uploads = view_with([sl.ScopedRateThrottle], scope="uploads")
    search = view_with([sl.ScopedRateThrottle], scope="search")
    unscoped = view_with([sl.ScopedRateThrottle])
    assert [get(uploads).status_code for _ in range(3)] == [200, 200, 429]
    assert [get(search).status_code for _ in range(2)] == [200, 429]
    assert all(get(unscoped).status_code == 200 for _ in range(5))


def test_rate_list_is_all_or_nothing_and_separate_burst_sustained_classes_are_not(segment, throttle_rates):
    throttle_rates(api="2/hour;3/day", burst="2/hour", sustained="3/day")
    lim = lambda: conf.get_limiter()  # noqa: E731
    combined = view_with([sl.ScopedRateThrottle], scope="api")
    assert [get(combined).status_code for _ in range(4)] == [200, 200, 429, 429]
    # the refusals by the hourly rate charged nothing to the daily one
    assert lim().peek("drf:api.2", "throttle_api_10.0.0.1", 0).remaining == 1
    pair = view_with([sl.BurstRateThrottle, sl.SustainedRateThrottle])
    assert [get(pair).status_code for _ in range(4)] == [200, 200, 429, 429]
    # as in DRF, each class of the pair is charged on its own
    assert lim().peek("drf:sustained", "throttle_sustained_10.0.0.1", 0).remaining == 0


def test_algorithm_burst_and_on_full_per_scope(throttle_rates):
    name = unique_name("drf")
    throttle_rates(anon="10/min", user="5/hour")
    settings = {
        "SEGMENT": name,
        "ALGORITHM": "fixed_window",
        "SCOPES": {"anon": {"ALGORITHM": "gcra", "BURST": 2, "ON_FULL": "deny"}},
    }
    try:
        with override_settings(SHMLIMIT=settings):
            view = view_with([sl.AnonRateThrottle, sl.UserRateThrottle])
            assert [get(view).status_code for _ in range(3)] == [200, 200, 429]
            r = get(view)
            assert int(r["Retry-After"]) == 6  # gcra 10/min: one every 6 s
            got = {p["name"]: p for p in conf.get_limiter().policies()}
            assert (got["drf:anon"]["algorithm"], got["drf:anon"]["burst"], got["drf:anon"]["on_full"]) == (
                "gcra",
                2,
                "deny",
            )
            assert got["drf:user"]["algorithm"] == "fixed_window"
    finally:
        shmlimit.Limiter.remove(name)


def test_changed_rate_replaces_the_policy_unless_told_not_to(throttle_rates):
    name = unique_name("drf")
    try:
        with override_settings(SHMLIMIT={"SEGMENT": name}):
            throttle_rates(anon="5/hour")
            assert get(view_with([sl.AnonRateThrottle])).status_code == 200
        with override_settings(SHMLIMIT={"SEGMENT": name}):
            throttle_rates(anon="7/hour")
            assert get(view_with([sl.AnonRateThrottle])).status_code == 200
            assert [p["rate"] for p in conf.get_limiter().policies()] == ["7/h"]
        with override_settings(SHMLIMIT={"SEGMENT": name, "REPLACE_POLICIES": False}):
            throttle_rates(anon="9/hour")
            with pytest.raises(ImproperlyConfigured, match="already registered"):
                get(view_with([sl.AnonRateThrottle]))
    finally:
        shmlimit.Limiter.remove(name)


def test_invalid_rates_and_settings_are_improperly_configured(segment, throttle_rates):
    throttle_rates(anon="5/fortnight")
    with pytest.raises(ImproperlyConfigured, match="fortnight"):
        sl.AnonRateThrottle()
    throttle_rates(anon="100000/s")
    with pytest.raises(ImproperlyConfigured, match="sliding_window"):
        get(view_with([sl.AnonRateThrottle]))
    with override_settings(SHMLIMIT={"SEGMENT": segment, "SEGMNT": "/typo"}):
        with pytest.raises(ImproperlyConfigured, match="SEGMNT"):
            conf.settings()
    assert sl.AnonRateThrottle.parse_rate(sl.AnonRateThrottle.__new__(sl.AnonRateThrottle), "10/5m") == (10, 300)


def test_unusable_segment_fails_open_with_one_log_line(throttle_rates, caplog):
    throttle_rates(anon="1/hour")
    conf.registry.last_log = 0.0
    with override_settings(SHMLIMIT={"SEGMENT": "not a valid name"}):
        view = view_with([sl.AnonRateThrottle])
        with caplog.at_level(logging.ERROR, logger="shmlimit.django"):
            codes = [get(view).status_code for _ in range(5)]
    assert codes == [200] * 5
    lines = [r for r in caplog.records if r.name == "shmlimit.django"]
    assert len(lines) == 1 and "fail open" in lines[0].getMessage() and "\n" not in lines[0].getMessage()
    with override_settings(SHMLIMIT={"SEGMENT": "not a valid name", "FAIL_OPEN": False}):
        with pytest.raises(shmlimit.InvalidArgumentError):
            get(view_with([sl.AnonRateThrottle]))


def test_headers_middleware_adds_rate_limit_headers_to_drf_responses(segment, throttle_rates):
    throttle_rates(anon="2/hour", uploads="1/hour")
    with override_settings(MIDDLEWARE=["shmlimit.django.middleware.RateLimitHeadersMiddleware"]):
        client = Client(REMOTE_ADDR="192.0.2.5")
        ok = client.get("/anon")
        assert ok.status_code == 200
        assert (ok["X-RateLimit-Limit"], ok["X-RateLimit-Remaining"]) == ("2", "1")
        assert ok["RateLimit-Policy"] == '"drf:anon";q=2;w=3600'
        client.get("/anon")
        refused = client.get("/anon")
        assert refused.status_code == 429
        d = conf.get_limiter().peek("drf:anon", "throttle_anon_192.0.2.5")
        assert refused["Retry-After"] == str(math.ceil(d.retry_after))
        assert refused["X-RateLimit-Remaining"] == "0"
        assert int(refused["X-RateLimit-Reset"]) >= int(refused["Retry-After"])
        assert refused["RateLimit"].startswith('"drf:anon";r=0;t=')
        assert "X-RateLimit-Limit" not in client.get("/plain")
        scoped = client.get("/scoped")
        assert scoped.status_code == 200 and scoped["RateLimit-Policy"] == '"drf:uploads";q=1;w=3600'


def test_long_drf_key_is_hashed_and_still_limited_on_its_own(segment, throttle_rates):
    throttle_rates(anon="2/hour")
    view = view_with([sl.AnonRateThrottle])
    chain = ", ".join("198.51.100.%d" % i for i in range(60))  # NUM_PROXIES unset: the whole header
    assert [get(view, xff=chain).status_code for _ in range(3)] == [200, 200, 429]
    [row] = conf.get_limiter().dump()
    expected = shmlimit.fit_key("throttle_anon_" + "".join(chain.split()), 88)
    assert row["key"] == expected.encode() and row["key"].startswith(b"~") and len(row["key"]) <= 88


def test_sliding_log_scope_with_drfs_wait(throttle_rates):
    name = unique_name("drf")
    throttle_rates(anon="3/hour")
    settings = {"SEGMENT": name, "LOG_ENTRIES": 8, "SCOPES": {"anon": {"ALGORITHM": "sliding_log", "WAIT": "drf"}}}
    try:
        with override_settings(SHMLIMIT=settings):
            view = view_with([sl.AnonRateThrottle])
            responses = [get(view) for _ in range(4)]
            assert [r.status_code for r in responses] == [200, 200, 200, 429]
            [p] = conf.get_limiter().policies()
            assert (p["algorithm"], p["wait"]) == ("sliding_log", "drf")
            # DRF's wait with a full log: the oldest entry's remaining time, under an hour
            assert 3500 < int(responses[3]["Retry-After"]) <= 3600
    finally:
        shmlimit.Limiter.remove(name)


def test_allow_other_users_setting_shares_a_segment_writable_by_other(throttle_rates):
    throttle_rates(anon="2/hour")
    name = unique_name("drf")
    shmlimit.Limiter.create(name, capacity=64, mode=0o666, allow_other_users=True)
    try:
        with override_settings(SHMLIMIT={"SEGMENT": name, "CAPACITY": 64, "FAIL_OPEN": False}):
            with pytest.raises(shmlimit.AccessError, match="ALLOW_OTHER_USERS|allow_other_users"):
                get(view_with([sl.AnonRateThrottle]))
        settings = {"SEGMENT": name, "CAPACITY": 64, "MODE": 0o666, "ALLOW_OTHER_USERS": True, "FAIL_OPEN": False}
        with override_settings(SHMLIMIT=settings):
            view = view_with([sl.AnonRateThrottle])
            assert [get(view).status_code for _ in range(3)] == [200, 200, 429]
    finally:
        shmlimit.Limiter.remove(name)
