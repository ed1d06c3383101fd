"""Every input error is an error, and reading never raises an encoding error."""
from __future__ import annotations

import pytest

import shmlimit

# The first policy entry's name: the policy table starts at byte 4096, the
# name 8 bytes into an entry (doc/segment-format.md).
POLICY_NAME_OFFSET = 4096 + 8


def printable(text: str) -> bool:
    return bool(text) and all(" " <= c <= "~" for c in text)


def test_non_ascii_policy_name_error_has_the_bytes_escaped(limiter):
    # Row 7: the message held half of "é" and arrived empty.
    with pytest.raises(shmlimit.InvalidArgumentError) as e:
        limiter.add_policy("pé", "gcra", "5/m")
    assert printable(str(e.value)), repr(str(e.value))
    assert 'invalid policy name "p\\xc3\\xa9"' in str(e.value)
    with pytest.raises(shmlimit.InvalidArgumentError, match=r"byte \\xff at byte 1 is not UTF-8"):
        limiter.add_policy(b"p\xff", "gcra", "5/m")


@pytest.mark.parametrize(
    "call",
    [
        lambda lim: lim.add_policy("p", "gcra", "5/fortnighté"),
        lambda lim: lim.add_policy("p", "gcrá", "5/m"),
        lambda lim: lim.add_policy("p", "fixed_window", "10/s", burst=5),
        lambda lim: lim.add_policy("p", "gcra", "10/s", wait="drf"),
        lambda lim: lim.add_policy("p\n", "gcra", "10/s"),
        lambda lim: lim.import_state("\xff"),
        lambda lim: shmlimit.Limiter.create("/pé"),
        lambda lim: shmlimit.Limiter.create(lim.name + "-zero", capacity=0),
        lambda lim: shmlimit.parse_rate("é/m"),
    ],
)
def test_every_error_message_is_non_empty_and_printable(limiter, call):
    with pytest.raises(shmlimit.Error) as e:
        call(limiter)
    assert printable(str(e.value)), repr(str(e.value))


def test_burst_an_algorithm_does_not_use_is_refused_not_dropped(limiter):
    # Row 6, in the API: burst 0 is the rate's count, the count itself is
    # what policies() reports; anything else is refused.
    with pytest.raises(shmlimit.InvalidArgumentError, match="burst 5 does not apply to fixed_window"):
        limiter.add_policy("w", "fixed_window", "10/s", burst=5)
    limiter.add_policy("w", "fixed_window", "10/s")
    assert limiter.policies()[0]["burst"] == 10
    limiter.add_policy("w", "fixed_window", "10/s", burst=10)  # the same policy
    assert len(limiter.policies()) == 1


def test_capacity_zero_is_refused_at_create(segment_name):
    with pytest.raises(shmlimit.InvalidArgumentError, match="capacity 0"):
        shmlimit.Limiter.create(segment_name, capacity=0)
    with pytest.raises(shmlimit.InvalidArgumentError, match="capacity 0"):
        shmlimit.Limiter.open_or_create(segment_name, capacity=0)
    assert not shmlimit.Limiter.remove(segment_name)


def test_reading_a_segment_with_undecodable_names_and_keys_never_raises(limiter, segment_name):
    # Row 8: a policy name holding \xff\xfe made dump() raise UnicodeDecodeError.
    api = limiter.add_policy("api", "gcra", "1/h")
    key = b"\xff\xfe-key"
    assert limiter.acquire(api, key).allowed
    assert not limiter.acquire(api, key).allowed  # a denial: the ring holds the key too
    with open("/dev/shm" + segment_name, "r+b") as f:
        f.seek(POLICY_NAME_OFFSET)
        f.write(b"a\xff\xfe\x00")
    reader = shmlimit.Limiter.open(segment_name, read_only=True)
    try:
        (row,) = reader.dump()
        assert row["policy"] == "a\\xff\\xfe" and row["key"] == key
        assert reader.policies()[0]["name"] == "a\\xff\\xfe"
        (denial,) = reader.recent_denials()["denials"]
        assert denial["policy"] == "a\\xff\\xfe" and denial["key"] == key
        report = reader.check(repair=False)
        assert not report["clean"]
        assert any("invalid name" in p and "\\xff" in p for p in report["problems"]), report
        assert all(printable(p) for p in report["problems"]), report
        assert isinstance(reader.export_state(), str)
        check = shmlimit.Limiter.check_segment(segment_name)
        assert not check["clean"]
    finally:
        reader.close()


def test_cost_that_can_never_fit_carries_no_retry_after(limiter):
    # Row 10: "Retry-After: 9223372037", "Expected available in 9223372037 seconds."
    api = limiter.add_policy("api", "gcra", "5/m")
    d = limiter.acquire(api, "k", 6)
    assert not d.allowed and d.reason == "cost_too_high"
    verdict = shmlimit.http_verdict(d)
    assert verdict.refuse and verdict.retry_after_s == 0
    headers = dict(shmlimit.rate_limit_headers(d, [("api", d, 60.0)]))
    assert "Retry-After" not in headers
    assert not any("9223372037" in v for v in headers.values()), headers
    assert shmlimit.drf_throttled_detail(d.retry_after) == "Request was throttled."
    assert shmlimit.drf_throttled_detail(float("inf")) == "Request was throttled."
