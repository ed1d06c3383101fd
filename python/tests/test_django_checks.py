"""The shmlimit.django application: its system checks (manage.py check)."""
from __future__ import annotations

import os

import pytest
from django.apps import apps
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

import shmlimit
from conftest import unique_name
from shmlimit.django.checks import check_settings


def ids(**settings):
    with override_settings(**settings):
        return [m.id for m in check_settings()]


def test_the_app_is_installed_with_its_label():
    assert apps.get_app_config("shmlimit").name == "shmlimit.django"


def test_a_valid_setting_passes():
    assert ids(SHMLIMIT={"SEGMENT": unique_name("chk"), "ALGORITHM": "gcra", "SCOPES": {"api": {"BURST": 5}}}) == []


@pytest.mark.parametrize(
    "setting",
    [
        {"BURTS": 5},
        {"SCOPES": {"api": {"ALGO": "gcra"}}},
        "not a dict",
    ],
)
def test_unknown_keys_are_e001(setting):
    assert ids(SHMLIMIT=setting) == ["shmlimit.E001"]


@pytest.mark.parametrize(
    "setting",
    [
        {"ALGORITHM": "sliding_windw"},
        {"ON_FULL": "maybe"},
        {"WAIT": "soon"},
        {"CAPACITY": "big"},
        {"CLAIM_TIMEOUT": -1},
        {"SCOPES": {"api": {"ALGORITHM": "nope"}}},
        {"SCOPES": {"api": {"BURST": -2}}},
        {"SCOPES": {"api": {"ON_FULL": "x"}}},
        {"HEADERS": ["retry-after", "x-custom"]},
        {"MIDDLEWARE": [{"SCOPE": "p"}]},
        {"MIDDLEWARE": [{"RATE": "5 per fortnight"}]},
        {"IDENTITY": {"TRUSTED_PROXIES": ["not-a-cidr"]}},
    ],
)
def test_bad_values_are_e002(setting):
    assert "shmlimit.E002" in ids(SHMLIMIT=setting)


def test_bad_throttle_rates_are_e003():
    got = ids(
        SHMLIMIT={"SEGMENT": unique_name("chk")},
        REST_FRAMEWORK={"DEFAULT_THROTTLE_RATES": {"anon": "100/fortnight", "user": None, "x": "5/m"}},
    )
    assert got == ["shmlimit.E003"]


def test_a_segment_that_cannot_be_opened_is_e004():
    name = unique_name("chk")
    path = "/dev/shm" + name
    with open(path, "wb") as f:
        f.write(b"not a segment" * 100)
    os.chmod(path, 0o600)
    try:
        assert ids(SHMLIMIT={"SEGMENT": name}) == ["shmlimit.E004"]
    finally:
        shmlimit.Limiter.remove(name)
    assert ids(SHMLIMIT={"SEGMENT": name}) == []  # absent: created on first use
    assert ids(SHMLIMIT={"SEGMENT": "no slash"}) == ["shmlimit.E004"]
    assert ids(SHMLIMIT={"CONFIG": "/nonexistent/shmlimit.toml"}) == ["shmlimit.E004"]


def test_a_sliding_log_rate_above_log_entries_is_e005():
    rates = {"DEFAULT_THROTTLE_RATES": {"anon": "100/hour"}}
    assert ids(SHMLIMIT={"ALGORITHM": "sliding_log", "LOG_ENTRIES": 10}, REST_FRAMEWORK=rates) == ["shmlimit.E005"]
    assert ids(SHMLIMIT={"ALGORITHM": "sliding_log", "LOG_ENTRIES": 100,
                         "SEGMENT": unique_name("chk")}, REST_FRAMEWORK=rates) == []


def test_manage_py_check_fails_on_a_typo():
    with override_settings(SHMLIMIT={"BURTS": 5}):
        with pytest.raises(SystemCheckError, match="shmlimit.E001"):
            call_command("check")
