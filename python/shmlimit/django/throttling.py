"""Django REST framework throttles backed by one shared-memory segment.

Drop-in replacements for ``rest_framework.throttling``: the same settings
(``DEFAULT_THROTTLE_CLASSES``, ``DEFAULT_THROTTLE_RATES``, ``NUM_PROXIES``,
a view's ``throttle_scope``), DRF's own ``get_ident`` and cache keys
(``throttle_<scope>_<ident>``), and ``wait()`` so DRF sends ``Retry-After``.
The difference: every gunicorn / uWSGI worker decides on one exact counter,
where DRF's cache-based throttles admit up to N times the rate with N workers
and a local-memory cache, and race on a shared cache.

    REST_FRAMEWORK = {
        "DEFAULT_THROTTLE_CLASSES": [
            "shmlimit.django.throttling.AnonRateThrottle",
            "shmlimit.django.throttling.UserRateThrottle",
        ],
        "DEFAULT_THROTTLE_RATES": {"anon": "100/hour", "user": "1000/day"},
    }

A rate may be a list, ``"60/min;1000/day"``: every rate is then checked all
or nothing (a request refused by one rate is charged to none), which DRF's
separate burst and sustained throttle classes do not do. The algorithm of a
scope (default ``sliding_window``), its burst and its on-full behaviour come
from ``SHMLIMIT["SCOPES"]`` (doc/django.md).
"""
from __future__ import annotations

import math
from typing import Any, Optional, Tuple

from django.core.exceptions import ImproperlyConfigured
from rest_framework import throttling as drf

from .._shmlimit import Decision, parse_rates
from ..errors import InvalidArgumentError
from . import conf

__all__ = [
    "AnonRateThrottle",
    "BurstRateThrottle",
    "ShmlimitThrottleMixin",
    "ScopedRateThrottle",
    "SimpleRateThrottle",
    "SustainedRateThrottle",
    "UserRateThrottle",
]


class ShmlimitThrottleMixin:
    """Replaces the cache history of ``SimpleRateThrottle`` by a shared
    bucket. Put it before a DRF throttle class in the bases.

    ``algorithm`` (class attribute) overrides the scope's algorithm."""

    algorithm: Optional[str] = None
    decision: Optional[Decision] = None

    def parse_rate(self, rate: Optional[str]) -> Tuple[Optional[int], Optional[int]]:
        """DRF's ``(num_requests, duration)`` of the first rate; accepts
        shmlimit's syntax as well (``"10/5m"``, ``"10/h;100/d"``)."""
        if rate is None:
            return (None, None)
        try:
            count, period = parse_rates(rate)[0]
        except InvalidArgumentError as e:
            raise ImproperlyConfigured("shmlimit: %s" % e) from e
        duration = int(period) if float(period).is_integer() else period
        return (int(count), duration)  # type: ignore[return-value]

    def _policy_scope(self) -> str:
        return getattr(self, "scope", None) or type(self).__name__

    def allow_request(self, request: Any, view: Any) -> bool:
        if getattr(self, "rate", None) is None:
            return True
        self.key = self.get_cache_key(request, view)  # type: ignore[attr-defined]
        if self.key is None:
            return True
        try:
            policies = conf.registry.bind(self._policy_scope(), self.rate, self.algorithm)  # type: ignore[attr-defined]
            combined, each = conf.registry.acquire(policies, str(self.key))
        except Exception as e:  # the segment cannot be used: FAIL_OPEN decides
            if isinstance(e, ImproperlyConfigured) or not conf.settings()["FAIL_OPEN"]:
                raise
            conf.registry.log_failure("throttle %r" % self._policy_scope(), e)
            return True
        self.decision = combined
        conf.record(request, policies, combined, each)
        if combined.allowed:
            return self.throttle_success()  # type: ignore[attr-defined,no-any-return]
        return self.throttle_failure()  # type: ignore[attr-defined,no-any-return]

    def throttle_success(self) -> bool:
        return True

    def throttle_failure(self) -> bool:
        return False

    def wait(self) -> Optional[float]:
        """Seconds until the refused request would be admitted: the bucket's
        exact retry_after (DRF's own formula on a ``sliding_log`` scope with
        ``"WAIT": "drf"``); DRF rounds it up for Retry-After. None when no
        wait can help (cost above the capacity) or none is known (a
        fail-closed denial of a full table)."""
        d = self.decision
        if d is None or d.allowed:
            return None
        if math.isinf(d.retry_after) or d.retry_after <= 0:
            return None
        return d.retry_after


class SimpleRateThrottle(ShmlimitThrottleMixin, drf.SimpleRateThrottle):
    """``rest_framework.throttling.SimpleRateThrottle`` on a shared bucket:
    subclass it and override ``get_cache_key`` as with DRF's."""


class AnonRateThrottle(ShmlimitThrottleMixin, drf.AnonRateThrottle):
    """Anonymous requests by client address (DRF's ``get_ident``, honouring
    ``NUM_PROXIES``); scope ``anon``."""


class UserRateThrottle(ShmlimitThrottleMixin, drf.UserRateThrottle):
    """Authenticated requests by user id, anonymous ones by address; scope ``user``."""


class ScopedRateThrottle(ShmlimitThrottleMixin, drf.ScopedRateThrottle):
    """Views with a ``throttle_scope``, by user id or address."""

    def allow_request(self, request: Any, view: Any) -> bool:
        # As DRF: the scope and its rate are known only once the view is.
        self.scope = getattr(view, self.scope_attr, None)
        if not self.scope:
            return True
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return ShmlimitThrottleMixin.allow_request(self, request, view)


class BurstRateThrottle(UserRateThrottle):
    """DRF's documented burst/sustained pair: scope ``burst``. Each of the
    pair is charged on its own, as in DRF; for all-or-nothing use one scope
    with a rate list (``"60/min;1000/day"``)."""

    scope = "burst"


class SustainedRateThrottle(UserRateThrottle):
    """The other half of the pair: scope ``sustained``."""

    scope = "sustained"
