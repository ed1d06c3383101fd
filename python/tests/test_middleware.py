"""RateLimitMiddleware on plain Django views: 429 + headers, skip rules,
keys, allow/deny lists, dry run, fail-open."""
from __future__ import annotations

import logging

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import Client, override_settings

import shmlimit
from conftest import unique_name
from shmlimit.django import conf

MW = ["shmlimit.django.middleware.RateLimitMiddleware"]


def key_by_header(request):
    """A custom KEY (dotted path): the API key header, None = not limited."""
    return request.META.get("HTTP_X_API_KEY")


@pytest.fixture
def site():
    """Runs a client against SHMLIMIT = base | overrides on a fresh segment."""
    names = []

    def make(rules, **extra):
        name = unique_name("mw")
        names.append(name)
        settings = {"SEGMENT": name, "MIDDLEWARE": rules}
        settings.update(extra)
        ctx = override_settings(MIDDLEWARE=MW, SHMLIMIT=settings)
        ctx.enable()
        contexts.append(ctx)
        return Client(REMOTE_ADDR="192.0.2.1")

    contexts = []
    yield make
    for ctx in reversed(contexts):
        ctx.disable()
    for n in names:
        shmlimit.Limiter.remove(n)


def test_refuses_with_429_and_headers_after_the_rate(site):
    client = site({"SCOPE": "pages", "RATE": "2/hour"})
    first = client.get("/plain")
    assert first.status_code == 200 and first.content == b"plain"
    assert (first["X-RateLimit-Limit"], first["X-RateLimit-Remaining"]) == ("2", "1")
    assert first["RateLimit-Policy"] == '"mw:pages";q=2;w=3600'
    assert "Retry-After" not in first
    client.get("/plain")
    refused = client.get("/plain")
    assert refused.status_code == 429 and refused.content == b"Too Many Requests\n"
    d = conf.get_limiter().peek("mw:pages", "throttle_pages_192.0.2.1")
    assert refused["Retry-After"] == str(shmlimit.ceil_seconds(d.retry_after_ns))
    assert refused["X-RateLimit-Remaining"] == "0"
    assert Client(REMOTE_ADDR="192.0.2.2").get("/plain").status_code == 200


def test_skip_methods_paths_and_callables(site):
    client = site(
        {
            "SCOPE": "pages",
            "RATE": "1/hour",
            "SKIP_METHODS": ["post"],
            "SKIP_PATHS": ["/static/"],
            "SKIP": lambda request: request.META.get("HTTP_X_HEALTH") == "1",
        }
    )
    assert client.get("/plain").status_code == 200
    assert client.get("/plain").status_code == 429
    assert client.post("/plain").status_code == 200  # POST is not counted
    assert client.get("/static/logo").status_code == 200
    assert client.get("/plain", HTTP_X_HEALTH="1").status_code == 200
    assert "X-RateLimit-Limit" not in client.get("/static/logo")


def test_methods_whitelist_and_dotted_key(site):
    client = site(
        {"SCOPE": "api", "RATE": "1/hour", "METHODS": ["GET"], "KEY": "test_middleware.key_by_header"}
    )
    assert client.get("/plain", HTTP_X_API_KEY="a").status_code == 200
    assert client.get("/plain", HTTP_X_API_KEY="a").status_code == 429
    assert client.get("/plain", HTTP_X_API_KEY="b").status_code == 200
    assert client.head("/plain", HTTP_X_API_KEY="a").status_code == 200  # only GET counts
    assert client.get("/plain").status_code == 200  # key None: not limited


def test_several_rules_are_all_or_nothing(site):
    client = site(
        [
            {"SCOPE": "per-ip", "RATE": "2/hour"},
            {"SCOPE": "site", "RATE": "3/hour", "KEY": "global"},
        ]
    )
    other = Client(REMOTE_ADDR="192.0.2.9")
    assert [client.get("/plain").status_code for _ in range(3)] == [200, 200, 429]
    # the per-ip refusal charged nothing to the site-wide rule: one left
    assert other.get("/plain").status_code == 200
    assert other.get("/plain").status_code == 429
    lim = conf.get_limiter()
    assert lim.peek("mw:site", "throttle_site_*", 0).remaining == 0


def test_identity_from_x_forwarded_for_and_access_lists(site):
    site(
        {"SCOPE": "pages", "RATE": "1/hour"},
        IDENTITY={"NUM_PROXIES": 1, "ALLOW": ["10.0.0.0/8"], "DENY": ["10.6.6.6", "198.51.100.0/24"]},
    )
    via_proxy = Client(REMOTE_ADDR="192.0.2.200")
    assert via_proxy.get("/plain", HTTP_X_FORWARDED_FOR="anything, 203.0.113.5").status_code == 200
    assert via_proxy.get("/plain", HTTP_X_FORWARDED_FOR="rotated, 203.0.113.5").status_code == 429
    assert via_proxy.get("/plain", HTTP_X_FORWARDED_FOR="x, 198.51.100.7").status_code == 403
    trusted = Client(REMOTE_ADDR="10.1.2.3")
    assert all(trusted.get("/plain").status_code == 200 for _ in range(3))
    assert Client(REMOTE_ADDR="10.6.6.6").get("/plain").status_code == 403


def test_dry_run_reports_but_never_refuses(site):
    client = site({"SCOPE": "pages", "RATE": "1/hour"}, DRY_RUN=True, HEADERS=["x-ratelimit"])
    responses = [client.get("/plain") for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert [r["X-RateLimit-Remaining"] for r in responses] == ["0", "0", "0"]
    assert all("Retry-After" not in r and "RateLimit" not in r for r in responses)


def test_cost_that_can_never_fit_is_refused_without_retry_after(site):
    # A COST above the rate's count can never fit: 429, but no Retry-After
    # (it was "Retry-After: 9223372037").
    client = site({"SCOPE": "pages", "RATE": "2/hour", "COST": 3})
    refused = client.get("/plain")
    assert refused.status_code == 429
    assert "Retry-After" not in refused
    assert "9223372037" not in str(refused.items())


def test_internal_error_fails_open_with_one_log_line(site, caplog):
    conf.registry.last_log = 0.0
    client = site({"SCOPE": "pages", "RATE": "1/hour"})
    with override_settings(SHMLIMIT={"SEGMENT": "bad name", "MIDDLEWARE": {"RATE": "1/hour"}}):
        with caplog.at_level(logging.ERROR, logger="shmlimit.django"):
            codes = [client.get("/plain").status_code for _ in range(4)]
    assert codes == [200] * 4
    lines = [r.getMessage() for r in caplog.records if r.name == "shmlimit.django"]
    assert len(lines) == 1 and "fail open" in lines[0] and "GET /plain" in lines[0]


@pytest.mark.parametrize(
    "rules,match",
    [
        ({"RATE": "1/hour", "SKIP_PATH": ["/x"]}, "SKIP_PATH"),
        ({"SCOPE": "x"}, "RATE is required"),
        ({"RATE": "1/fortnight"}, "fortnight"),
        ({"RATE": "1/hour", "KEY": "ipaddress"}, "ipaddress"),
        ({"RATE": "1/hour", "KEY": "no.such.module"}, "cannot import"),
    ],
)
def test_bad_rules_are_improperly_configured(site, rules, match):
    client = site(rules)
    with pytest.raises(ImproperlyConfigured, match=match):
        client.get("/plain")


_HOSTILE = {"cl\u00e9": "cl\u00e9", "surrogate-escape": "\udc80", "lone-surrogate": "\ud800", "empty": "",
            "long": "x" * 500, "bytes": b"x", "int": 5, "none": None}


def hostile_key(request):
    """A KEY returning the value named by the X-Kind header."""
    return _HOSTILE[request.META["HTTP_X_KIND"]]


@pytest.mark.parametrize("fail_open", [True, False])
def test_hostile_keys_are_limited_or_refused_as_before(site, fail_open):
    """A key of any kind is limited on its own bucket (str() of it; a long
    one by its digest); a str with a surrogate (even one that
    surrogateescape would encode) cannot be a key: FAIL_OPEN admits,
    otherwise the error propagates; None is not limited. The statuses,
    headers, per-policy totals and denials are those of acquire_many."""
    for cost in (1, 0):
        client = site({"SCOPE": "h", "RATE": "2/hour", "KEY": hostile_key, "COST": cost, "ALGORITHM": "quiet_period"},
                      FAIL_OPEN=fail_open)
        for kind in _HOSTILE:
            if "surrogate" in kind and not fail_open:
                with pytest.raises(TypeError):
                    client.get("/plain", HTTP_X_KIND=kind)
                continue
            got = [client.get("/plain", HTTP_X_KIND=kind) for _ in range(3)]
            statuses = [r.status_code for r in got]
            if "surrogate" in kind or kind == "none":
                assert statuses == [200, 200, 200] and "X-RateLimit-Limit" not in got[0], kind
            elif cost == 1:
                assert statuses == [200, 200, 429], kind
                assert [r["X-RateLimit-Remaining"] for r in got] == ["1", "0", "0"]
                assert 3590 <= int(got[2]["Retry-After"]) <= 3601
            else:  # a cost of 0 never fills the bucket
                assert statuses == [200, 200, 200], kind
                assert [r["X-RateLimit-Remaining"] for r in got] == ["2", "2", "2"]
        lim = conf.get_limiter()
        admitted = 5 * 2 if cost == 1 else 5 * 3  # five kinds are limited
        assert lim.stats()["policy_counters"]["mw:h"] == {"admitted": admitted, "denied": 5 if cost == 1 else 0}
        ring = [e["key"] for e in lim.recent_denials()["denials"]]
        if cost == 1:
            assert len(ring) == 5 and ring[0].endswith("cl\u00e9".encode()) and ring[-1].endswith(b"5")
