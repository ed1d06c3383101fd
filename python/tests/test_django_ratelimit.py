"""shmlimit.django.ratelimit: django-ratelimit's decorator, key and rate
forms, request.limited, is_ratelimited / get_usage, Ratelimited and the
middleware that answers 429."""
from __future__ import annotations

import pytest
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import ImproperlyConfigured, PermissionDenied
from django.http import HttpResponse
from django.test import RequestFactory, override_settings
from django.utils.decorators import method_decorator
from django.views import View

from shmlimit.django.ratelimit import (
    ALL,
    UNSAFE,
    Ratelimited,
    RatelimitMiddleware,
    get_usage,
    is_ratelimited,
    ratelimit,
)
from shmlimit.django.testing import fresh_segment

rf = RequestFactory()


class User:
    is_authenticated = True

    def __init__(self, pk):
        self.pk = pk


@pytest.fixture(autouse=True)
def segment():
    with fresh_segment(ALGORITHM="fixed_window") as lim:
        yield lim


def req(method="get", remote="10.0.0.1", user=None, data=None, **extra):
    r = getattr(rf, method)("/v", data=data or {}, REMOTE_ADDR=remote, **extra)
    r.user = user if user is not None else AnonymousUser()
    return r


def ok(request):
    return HttpResponse("ok:%s" % getattr(request, "limited", None))


def statuses(view, make, n):
    out = []
    for _ in range(n):
        try:
            out.append(view(make()).status_code)
        except Ratelimited:
            out.append("blocked")
    return out


def test_block_raises_ratelimited_a_permission_denied():
    view = ratelimit(key="ip", rate="2/m", block=True)(ok)
    assert statuses(view, req, 3) == [200, 200, "blocked"]
    assert issubclass(Ratelimited, PermissionDenied)
    with pytest.raises(Ratelimited) as e:
        view(req())
    assert e.value.retry_after is not None and 0 < e.value.retry_after <= 60


def test_without_block_request_limited_is_set():
    view = ratelimit(key="ip", rate="1/m", block=False)(ok)
    assert view(req()).content == b"ok:False"
    assert view(req()).content == b"ok:True"


def test_request_limited_stays_true_across_decorators():
    view = ratelimit(key="ip", rate="5/m", block=False, group="b")(ratelimit(key="ip", rate="1/m", block=False, group="a")(ok))
    view(req())
    assert view(req()).content == b"ok:True"  # inner limited; outer not, but True stays


def test_method_filters_which_requests_count():
    view = ratelimit(key="ip", rate="1/m", method="POST")(ok)
    assert statuses(view, lambda: req("get"), 3) == [200, 200, 200]
    assert statuses(view, lambda: req("post"), 2) == [200, "blocked"]
    unsafe = ratelimit(key="ip", rate="1/m", method=UNSAFE, group="u")(ok)
    assert statuses(unsafe, lambda: req("put"), 2) == [200, "blocked"]
    assert ratelimit.UNSAFE == UNSAFE and ratelimit.ALL == ALL


@pytest.mark.parametrize(
    "key, make_a, make_b",
    [
        ("ip", lambda: req(remote="10.0.0.1"), lambda: req(remote="10.0.0.2")),
        ("user", lambda: req(user=User(1)), lambda: req(user=User(2))),
        ("user_or_ip", lambda: req(user=User(1)), lambda: req(remote="10.0.0.9")),
        ("header:x-api-key", lambda: req(HTTP_X_API_KEY="a"), lambda: req(HTTP_X_API_KEY="b")),
        ("get:q", lambda: req(data={"q": "a"}), lambda: req(data={"q": "b"})),
        ("post:u", lambda: req("post", data={"u": "a"}), lambda: req("post", data={"u": "b"})),
        (lambda group, r: r.META["REMOTE_ADDR"][-1], lambda: req(remote="10.0.0.1"), lambda: req(remote="10.0.0.2")),
        ("test_django_ratelimit.key_fn", lambda: req(HTTP_X_T="a"), lambda: req(HTTP_X_T="b")),
    ],
)
def test_key_forms_count_each_value_apart(key, make_a, make_b):
    view = ratelimit(key=key, rate="1/m")(ok)
    assert statuses(view, make_a, 2) == [200, "blocked"]
    assert statuses(view, make_b, 2) == [200, "blocked"]


def key_fn(group, request):
    assert group.endswith(".ok")
    return request.META.get("HTTP_X_T")


def rate_fn(group, request):
    return None if request.META.get("HTTP_X_VIP") else "1/m"


@pytest.mark.parametrize("rate", ["2/m", "2/60s", "2/1m", (2, 60), "2/M", "2 per minute", "2/60"])
def test_rate_forms(rate):
    view = ratelimit(key="ip", rate=rate)(ok)
    assert statuses(view, req, 3) == [200, 200, "blocked"]


def test_callable_and_dotted_rates_none_means_unlimited():
    for rate in (rate_fn, "test_django_ratelimit.rate_fn"):
        view = ratelimit(key="ip", rate=rate, group=str(rate))(ok)
        assert statuses(view, lambda: req(HTTP_X_VIP="1"), 3) == [200, 200, 200]
        assert statuses(view, req, 2) == [200, "blocked"]


def test_a_rate_list_is_all_or_nothing(segment):
    view = ratelimit(key="ip", rate=["2/m", "3/h"], group="list")(ok)
    assert statuses(view, req, 3) == [200, 200, "blocked"]
    usage = get_usage(req(), group="list", key="ip", rate="2/m;3/h")
    assert usage["count"] == 2 and usage["limit"] == 2 and usage["should_limit"]


def test_is_ratelimited_and_get_usage():
    kw = dict(group="g", key="ip", rate="2/m")
    assert not is_ratelimited(req(), **kw)  # a look, no charge
    assert not is_ratelimited(req(), increment=True, **kw)
    assert not is_ratelimited(req(), increment=True, **kw)
    assert is_ratelimited(req(), **kw)  # the next would be refused
    assert is_ratelimited(req(), increment=True, **kw)
    u = get_usage(req(), **kw)
    assert u["limit"] == 2 and u["count"] == 2 and u["should_limit"] and 0 < u["time_left"] <= 60
    assert get_usage(req("post"), method="GET", **kw) is None
    with pytest.raises(ImproperlyConfigured):
        get_usage(req(), key="ip", rate="1/m")  # neither group nor fn
    assert is_ratelimited.ALL == ALL


def test_ratelimit_enable_false_disables():
    view = ratelimit(key="ip", rate="1/m")(ok)
    with override_settings(RATELIMIT_ENABLE=False):
        assert statuses(view, req, 3) == [200, 200, 200]


def test_exception_class_setting():
    class Mine(Exception):
        pass

    view = ratelimit(key="ip", rate="1/m")(ok)
    view(req())
    with override_settings(RATELIMIT_EXCEPTION_CLASS=Mine):
        with pytest.raises(Mine):
            view(req())


def test_method_decorator_on_a_class_based_view():
    class V(View):
        @method_decorator(ratelimit(key="ip", rate="1/m"))
        def get(self, request):
            return HttpResponse("ok")

    view = V.as_view()
    assert statuses(view, req, 2) == [200, "blocked"]


def test_the_middleware_turns_ratelimited_into_429_with_headers():
    view = ratelimit(key="ip", rate="1/m")(ok)
    mw = RatelimitMiddleware(lambda r: view(r))

    def through(request):
        try:
            return mw(request)
        except Exception as e:
            return mw.process_exception(request, e)

    assert through(req()).status_code == 200
    r = through(req())
    assert r.status_code == 429
    assert 1 <= int(r["Retry-After"]) <= 60
    assert r["X-RateLimit-Limit"] == "1" and r["X-RateLimit-Remaining"] == "0"
    assert mw.process_exception(req(), ValueError()) is None


def ratelimited_view(request, exception):
    return HttpResponse("slow down", status=418)


def test_the_middleware_honours_ratelimit_view():
    with override_settings(RATELIMIT_VIEW="test_django_ratelimit.ratelimited_view"):
        mw = RatelimitMiddleware(ok)
        assert mw.process_exception(req(), Ratelimited()).status_code == 418


@pytest.mark.parametrize("rate", ["0/m", "abc", "5/0s", "-1/m", (0, 60), 12])
def test_bad_literal_rates_fail_at_decoration(rate):
    with pytest.raises(ImproperlyConfigured):
        ratelimit(key="ip", rate=rate)


@pytest.mark.parametrize("key", ["nope", "cookie:x", 42])
def test_bad_keys_are_clear_errors(key):
    view = ratelimit(key=key, rate="1/m")(ok)
    with pytest.raises(ImproperlyConfigured):
        view(req())


def test_missing_key_or_rate_is_an_error():
    with pytest.raises(ImproperlyConfigured):
        ratelimit(rate="1/m")
    with pytest.raises(ImproperlyConfigured):
        ratelimit(key="ip")


def test_a_callable_rate_returning_garbage_is_a_clear_error():
    view = ratelimit(key="ip", rate=lambda g, r: "lots")(ok)
    with pytest.raises(ImproperlyConfigured, match="lots"):
        view(req())


def test_the_segment_is_shared_by_forked_processes(segment):
    import os

    view = ratelimit(key="ip", rate="10/h", group="forked")(ok)
    reads = []
    for _ in range(4):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            n = sum(1 for s in statuses(view, req, 5) if s == 200)
            os.write(w, str(n).encode())
            os._exit(0)
        os.close(w)
        reads.append((pid, r))
    total = 0
    for pid, r in reads:
        os.waitpid(pid, 0)
        total += int(os.read(r, 16) or b"0")
        os.close(r)
    assert total == 10


@pytest.mark.parametrize("fail_open", [True, False])
def test_hostile_keys_are_limited_or_refused_as_before(fail_open):
    """A key's value of any kind: non-ASCII, a surrogate escape, empty,
    longer than the segment's max_key_bytes (its digest), bytes, an int:
    each its own exact count; a lone surrogate cannot be a key: FAIL_OPEN
    admits (None), otherwise UnicodeEncodeError; None: not limited."""
    keys = ["cl\u00e9", "\udc80", "", "x" * 500, b"x" * 500, 5]
    with fresh_segment(ALGORITHM="fixed_window", FAIL_OPEN=fail_open) as lim:
        for key in keys + ["\ud800", None]:
            r = req()

            def usage(increment=True):
                u = get_usage(r, group="g", key=lambda g, request: key, rate="2/m", increment=increment)
                return None if u is None else (u["count"], u["limit"], u["should_limit"], u["decision"].reason)

            if key == "\ud800" and not fail_open:
                with pytest.raises(UnicodeEncodeError):
                    usage()
            elif key == "\ud800" or key is None:
                assert [usage(), usage(), usage(False)] == [None, None, None]
            else:
                assert [usage(), usage(), usage(), usage(False)] == [
                    (1, 2, False, "ok"), (2, 2, False, "ok"), (3, 2, True, "ok"), (2, 2, True, "ok")], key
        [counts] = lim.stats()["policy_counters"].values()
        assert counts == {"admitted": 2 * len(keys), "denied": len(keys)}
        ring = [e["key"] for e in lim.recent_denials()["denials"]]
        assert ring[:3] == [b"|cl\xc3\xa9", b"|\x80", b"|"] and ring[-1] == b"|5"
        assert [k[:1] for k in ring[3:5]] == [b"~", b"~"] and ring[3] != ring[4]  # the long keys' digests
