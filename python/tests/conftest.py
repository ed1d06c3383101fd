"""Shared fixtures: a unique segment per test (removed afterwards) and a
configured Django with DRF for the integration tests."""
from __future__ import annotations

import itertools
import os

import django
import pytest
from django.conf import settings

import shmlimit

_counter = itertools.count()


def unique_name(tag: str = "t") -> str:
    return "/shmlimit-pytest-%d-%s-%d" % (os.getpid(), tag, next(_counter))


@pytest.fixture
def segment_name():
    name = unique_name()
    yield name
    shmlimit.Limiter.remove(name)


@pytest.fixture
def limiter(segment_name):
    # A generous claim timeout: on a loaded machine a forked process may be
    # descheduled mid-claim for longer than the default 100 ms, and the
    # others would then apply on_full (reason "contended") instead of waiting.
    lim = shmlimit.Limiter.create(segment_name, capacity=1024, claim_timeout=30.0)
    yield lim
    lim.close()


if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="shmlimit-tests",
        ALLOWED_HOSTS=["*"],
        INSTALLED_APPS=[
            "django.contrib.contenttypes",
            "django.contrib.auth",
            "rest_framework",
            "shmlimit.django",
        ],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        ROOT_URLCONF="drf_app",
        MIDDLEWARE=[],
        REST_FRAMEWORK={
            "DEFAULT_AUTHENTICATION_CLASSES": [],
            "DEFAULT_PERMISSION_CLASSES": [],
            "UNAUTHENTICATED_USER": None,
        },
        SHMLIMIT={"SEGMENT": unique_name("django")},
        USE_TZ=True,
    )
    django.setup()


@pytest.fixture(scope="session", autouse=True)
def _remove_django_segment():
    yield
    shmlimit.Limiter.remove(settings.SHMLIMIT["SEGMENT"])
