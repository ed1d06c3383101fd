"""pytest plugin for running Django REST framework's own throttling tests
against shmlimit's drop-ins (run_drf_suite.py): the configuration
doc/django.md gives for DRF's exact semantics, and a fresh segment per test
(shmlimit.django.testing.fresh_segment) where DRF's tests clear the cache."""
import pytest

DRF_EXACT = {"ALGORITHM": "sliding_log", "WAIT": "drf", "LOG_ENTRIES": 64}


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    from django.conf import settings

    settings.SHMLIMIT = dict(DRF_EXACT) if config.getoption("shmlimit_mode") == "drf-exact" else {}


def pytest_addoption(parser):
    parser.addoption("--shmlimit-mode", dest="shmlimit_mode", default="drf-exact", choices=["drf-exact", "default"])


@pytest.fixture(autouse=True)
def _shmlimit_fresh_segment():
    from shmlimit.django.testing import fresh_segment

    with fresh_segment():
        yield
