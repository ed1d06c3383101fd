"""Settings of the end-to-end site served by gunicorn (test_gunicorn.py).

E2E_MODE selects the throttles: "shmlimit" (shmlimit.django.throttling on the
segment E2E_SEGMENT) or "drf" (rest_framework.throttling with the per-process
local-memory cache, DRF's default). Everything else is the same.
"""
import os

MODE = os.environ["E2E_MODE"]
assert MODE in ("shmlimit", "drf"), MODE

DEBUG = False
SECRET_KEY = "shmlimit-e2e"
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "e2e_site.urls"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "rest_framework"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
USE_TZ = True
MIDDLEWARE = ["e2e_site.site.WorkerPidMiddleware"]

# Exact allowances over a run of a few seconds: every period is an hour or a
# day, so nothing refills during the test.
RATES = {
    "anon": "20/hour",
    "user": "25/hour",
    "uploads": "15/hour",
    "burst": "12/hour",
    "sustained": "30/day",
    "api": "12/hour;30/day",
}

pkg = "shmlimit.django.throttling" if MODE == "shmlimit" else "rest_framework.throttling"
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["e2e_site.site.HeaderUserAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": [],
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_THROTTLE_CLASSES": [pkg + ".AnonRateThrottle"],
    "DEFAULT_THROTTLE_RATES": RATES,
    # one proxy in front: the client is the last X-Forwarded-For entry
    "NUM_PROXIES": 1,
}

if MODE == "shmlimit":
    MIDDLEWARE.append("shmlimit.django.middleware.RateLimitHeadersMiddleware")
    SHMLIMIT = {
        "SEGMENT": os.environ["E2E_SEGMENT"],
        "CAPACITY": 4096,
        "ON_FULL": "deny",
        # a worker descheduled mid-claim on a loaded machine is waited for,
        # not answered with on_full
        "CLAIM_TIMEOUT": 30.0,
        # one algorithm per scope: the allowance is exact with each
        "ALGORITHM": "sliding_window",
        "SCOPES": {
            "user": {"ALGORITHM": "gcra"},
            "uploads": {"ALGORITHM": "fixed_window"},
            "api": {"ALGORITHM": "gcra"},
        },
    }
