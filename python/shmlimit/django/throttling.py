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

import calendar
import json
import math
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from django.core.exceptions import ImproperlyConfigured
from rest_framework import throttling as drf
from rest_framework.request import Request
from rest_framework.settings import api_settings

from .._shmlimit import Decision, _acquire, parse_rates
from .._util import fit_key
from ..errors import InvalidArgumentError
from . import conf

BaseThrottle = drf.BaseThrottle

__all__ = [
    "AnonRateThrottle",
    "BaseThrottle",
    "BurstRateThrottle",
    "ShmlimitThrottleMixin",
    "ScopedRateThrottle",
    "SimpleRateThrottle",
    "SustainedRateThrottle",
    "UserRateThrottle",
]


_UNSET: Any = object()

# parse_rate()'s answers by rate text
_PARSED_RATES: Dict[str, Tuple[int, Any]] = {}


class ShmlimitThrottleMixin:
    """Replaces the cache history of ``SimpleRateThrottle`` by a shared
    bucket. Put it before a DRF throttle class in the bases.

    ``algorithm`` (class attribute) overrides the scope's algorithm.

    As DRF's ``allow_request``, it sets ``key``, ``now`` (``timer()``) and
    ``history`` (read from the bucket on first access) and ends in
    ``throttle_success()`` or ``throttle_failure()``. DRF's ``timer`` is
    replaced by the segment's monotonic clock; a ``timer`` overridden or
    mocked by a subclass or a test decides instead (``acquire_at``)."""

    algorithm: Optional[str] = None
    decision: Optional[Decision] = None
    # DRF's attributes, set as DRF sets them
    key: Optional[str] = None
    now: Optional[float] = None

    def parse_rate(self, rate: Optional[str]) -> Tuple[Optional[int], Optional[int]]:
        """DRF's ``(num_requests, duration)`` of the first rate; accepts
        shmlimit's syntax as well (``"10/5m"``, ``"10/h;100/d"``)."""
        if rate is None:
            return (None, None)
        # DRF builds its throttles per request: a rate is parsed once
        parsed = _PARSED_RATES.get(rate) if type(rate) is str else None
        if parsed is not None:
            return parsed
        try:
            count, period = parse_rates(rate)[0]
        except InvalidArgumentError as e:
            raise ImproperlyConfigured("shmlimit: %s" % e) from e
        duration = int(period) if float(period).is_integer() else period
        parsed = (int(count), duration)
        if type(rate) is str and len(_PARSED_RATES) < 1024:  # the settings' few rates
            _PARSED_RATES[rate] = parsed
        return parsed  # type: ignore[return-value]

    def _policy_scope(self) -> str:
        return getattr(self, "scope", None) or type(self).__name__

    def get_ident(self, request: Any) -> Optional[str]:
        """DRF's ``get_ident`` (``X-Forwarded-For`` and ``NUM_PROXIES``, read
        on every call), reading ``META`` from the Django request a DRF
        ``Request`` wraps rather than through ``Request.__getattr__``, which
        reaches it only after a failed lookup: the same value, a third of
        the cost."""
        if type(request) is Request and "META" not in request.__dict__ and "_request" in request.__dict__:
            meta = request.__dict__["_request"].META
        else:
            meta = request.META
        xff = meta.get("HTTP_X_FORWARDED_FOR")
        remote_addr = meta.get("REMOTE_ADDR")
        num_proxies = api_settings.NUM_PROXIES
        if num_proxies is not None:
            if num_proxies == 0 or xff is None:
                return remote_addr  # type: ignore[no-any-return]
            addrs = xff.split(",")
            client_addr = addrs[-min(num_proxies, len(addrs))]
            return client_addr.strip()  # type: ignore[no-any-return]
        return "".join(xff.split()) if xff else remote_addr  # type: ignore[no-any-return]

    def _policies(self) -> Tuple[conf.BoundPolicy, ...]:
        """The policies of (scope, rate): ``drf:<scope>`` when the rate is
        the scope's rate in the settings (``THROTTLE_RATES``), else one named
        after the rate too, so that classes sharing a scope with different
        rates never share a limit. Once bound, one dict lookup (the
        registry's, emptied when ``SHMLIMIT`` changes)."""
        scope = self._policy_scope()
        rate = self.rate  # type: ignore[attr-defined]
        if type(rate) is not str:
            rate = str(rate)
        variant = rate != (getattr(self, "THROTTLE_RATES", None) or {}).get(scope)
        registry = conf.registry
        # registry.bind()'s own cache key, looked up without the call
        got = registry.policies.get(("drf:", scope, rate, self.algorithm, variant))
        if got is not None:
            return got
        return registry.bind(scope, rate, self.algorithm, variant=variant)

    def _now_ns(self) -> Optional[int]:
        """The injected time of an overridden timer, else None (the segment's clock)."""
        if getattr(type(self), "timer", None) is time.time and "timer" not in self.__dict__:
            return None
        return conf.registry.clock_ns(self.now)

    def allow_request(self, request: Any, view: Any) -> bool:
        # The steady state, the cost of every request: the bound policies by
        # one dict lookup (_policies()), one rate on the segment's clock by
        # one binding call (registry.acquire() otherwise).
        self.decision = None
        if getattr(self, "rate", None) is None:
            return True
        key = self.key = self.get_cache_key(request, view)  # type: ignore[attr-defined]
        if key is None:
            return True
        self.now = self.timer()  # type: ignore[attr-defined]
        state = self.__dict__
        if "_history" in state:
            del state["_history"]  # read from the bucket when asked
        registry = conf.registry
        try:
            policies = self._policies()
            if type(key) is not str:
                key = str(key)
            lim = registry.limiter
            if (
                len(policies) == 1
                and lim is not None
                and getattr(type(self), "timer", None) is time.time
                and "timer" not in state
            ):
                k = key.encode("utf-8", "surrogateescape")
                if len(k) > registry.key_bytes:
                    k = fit_key(k, registry.key_bytes)
                combined = _acquire(lim, policies[0].id, k)  # lim.acquire(id, k), faster
                each: Sequence[Decision] = (combined,)
            else:
                combined, each = registry.acquire(policies, key, now_ns=self._now_ns())
        except Exception as e:  # the segment cannot be used: FAIL_OPEN decides
            if isinstance(e, ImproperlyConfigured) or not conf.settings()["FAIL_OPEN"]:
                raise
            registry.log_failure("throttle %r" % self._policy_scope(), e)
            return True
        self.decision = combined
        conf.record(request, policies, combined, each)
        if combined.allowed:
            state["_charged"] = True
            return self.throttle_success()
        return self.throttle_failure()

    @property
    def history(self) -> List[float]:
        """DRF's history of the key: the times (in ``timer()`` units, newest
        first) of the requests the bucket holds in the current period. Exact
        for ``sliding_log``; for the other algorithms, as many entries as the
        bucket counts, all at ``now``. Assignable, as DRF's."""
        h = self.__dict__.get("_history")
        if h is None:
            h = self._read_history()
            self.__dict__["_history"] = h
        return h  # type: ignore[no-any-return]

    @history.setter
    def history(self, value: List[float]) -> None:
        self.__dict__["_history"] = value

    def _read_history(self) -> List[float]:
        if self.key is None or getattr(self, "rate", None) is None:
            return []
        if self.now is None:
            self.now = self.timer()  # type: ignore[attr-defined]
        try:
            policy = self._policies()[0]
            lim = conf.get_limiter()
            now_ns = self._now_ns()
            key = fit_key(str(self.key), lim.max_key_bytes)
            if policy.algorithm == "sliding_log":
                return self._log_history(lim, policy, key, now_ns)
            d = lim.acquire_at(policy.id, key, 0, now_ns) if now_ns is not None else lim.acquire(policy.id, key, 0)
            return [self.now] * max(d.limit - d.remaining, 0)  # type: ignore[list-item]
        except ImproperlyConfigured:
            raise
        except Exception:  # noqa: BLE001 - no bucket to read: no history
            return []

    def _log_history(self, lim: Any, policy: conf.BoundPolicy, key: bytes, now_ns: Optional[int]) -> List[float]:
        state = json.loads(lim.export_state(policy.id, key))
        # the export's times are the segment's plus (CLOCK_REALTIME - segment
        # clock), which two back-to-back readings give to within microseconds
        offset_ns = time.time_ns() - lim.now_ns()
        now_seg = now_ns if now_ns is not None else lim.now_ns()
        period_ns = int(round(float(self.duration) * 1e9))  # type: ignore[attr-defined]
        times: List[int] = []
        for bucket in state.get("buckets", ()):
            for t in bucket.get("state", {}).get("admissions", ()):
                # to the ms: the two clock readings differ by microseconds
                ns = int(round((_iso_ns(t) - offset_ns) / 1e6)) * 1000000
                if ns > now_seg - period_ns:
                    times.append(ns)
        times.sort(reverse=True)
        return [conf.registry.timer_seconds(ns, self.now) if now_ns is not None else
                ns / 1e9 + conf.registry.wall_clock_epoch() for ns in times]

    def throttle_success(self) -> bool:
        """As DRF's: records the request (``now`` first in ``history``) and
        admits it. Called by a subclass's own ``allow_request``, it charges
        the bucket at ``now`` and returns the bucket's answer: the shared
        limit is never exceeded."""
        if self.__dict__.pop("_charged", False):
            if "_history" in self.__dict__:
                self.__dict__["_history"].insert(0, self.now)
            return True
        if self.key is None or getattr(self, "rate", None) is None:
            return True
        if self.now is None:
            self.now = self.timer()  # type: ignore[attr-defined]
        policies = self._policies()
        combined, each = conf.registry.acquire(policies, str(self.key), now_ns=self._now_ns())
        self.decision = combined
        if combined.allowed and "_history" in self.__dict__:
            self.__dict__["_history"].insert(0, self.now)
        return combined.allowed

    def throttle_failure(self) -> bool:
        """As DRF's: refuses, recording nothing."""
        return False

    def wait(self) -> Optional[float]:
        """Seconds until the refused request would be admitted, which DRF
        rounds up for Retry-After. After a refusal by the bucket: its exact
        retry_after (DRF's own formula on a ``sliding_log`` scope with
        ``"WAIT": "drf"``), None when no wait can help (cost above the
        capacity) or none is known (a fail-closed denial of a full table).
        Otherwise (a subclass refused by itself): DRF's formula over
        ``history``, ``now``, ``num_requests`` and ``duration``."""
        d = self.decision
        if d is not None and not d.allowed:
            if math.isinf(d.retry_after) or d.retry_after <= 0:
                return None
            return d.retry_after
        history = self.history
        if history:
            remaining_duration = self.duration - (self.now - history[-1])  # type: ignore[attr-defined,operator]
        else:
            remaining_duration = self.duration  # type: ignore[attr-defined]
        available_requests = self.num_requests - len(history) + 1  # type: ignore[attr-defined]
        if available_requests <= 0:
            return None
        return remaining_duration / float(available_requests)  # type: ignore[no-any-return]


def _iso_ns(text: str) -> int:
    """ns since the Unix epoch of an export's ISO 8601 UTC time (9 digits, Z)."""
    head, _, frac = text.rstrip("Z").partition(".")
    secs = calendar.timegm(time.strptime(head, "%Y-%m-%dT%H:%M:%S"))
    return secs * 1000000000 + int((frac + "000000000")[:9])


# DRF's SimpleRateThrottle.cache_format: its keys are then formatted
# positionally, the same text at a third of the cost of the mapping form
_DRF_CACHE_FORMAT = "throttle_%(scope)s_%(ident)s"


class SimpleRateThrottle(ShmlimitThrottleMixin, drf.SimpleRateThrottle):
    """``rest_framework.throttling.SimpleRateThrottle`` on a shared bucket:
    subclass it and override ``get_cache_key`` as with DRF's."""


class AnonRateThrottle(ShmlimitThrottleMixin, drf.AnonRateThrottle):
    """Anonymous requests by client address (DRF's ``get_ident``, honouring
    ``NUM_PROXIES``); scope ``anon``."""

    def get_cache_key(self, request: Any, view: Any) -> Optional[str]:
        """DRF's: None for an authenticated user, else ``throttle_anon_<ident>``
        (``request.user`` read once)."""
        user = request.user
        if user and user.is_authenticated:
            return None  # only unauthenticated requests are throttled
        ident = self.get_ident(request)
        if self.cache_format == _DRF_CACHE_FORMAT:
            return "throttle_%s_%s" % (self.scope, ident)
        return self.cache_format % {"scope": self.scope, "ident": ident}


def _user_cache_key(throttle: Any, request: Any) -> str:
    """DRF's key of UserRateThrottle and ScopedRateThrottle: the user's pk
    when authenticated, else the client's address (``request.user`` read once)."""
    user = request.user
    ident = user.pk if user and user.is_authenticated else throttle.get_ident(request)
    if throttle.cache_format == _DRF_CACHE_FORMAT:
        return "throttle_%s_%s" % (throttle.scope, ident)
    return throttle.cache_format % {"scope": throttle.scope, "ident": ident}  # type: ignore[no-any-return]


class UserRateThrottle(ShmlimitThrottleMixin, drf.UserRateThrottle):
    """Authenticated requests by user id, anonymous ones by address; scope ``user``."""

    def get_cache_key(self, request: Any, view: Any) -> Optional[str]:
        return _user_cache_key(self, request)


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

    def get_cache_key(self, request: Any, view: Any) -> Optional[str]:
        return _user_cache_key(self, request)


class BurstRateThrottle(UserRateThrottle):
    """DRF's documented burst/sustained pair: scope ``burst``. Each of the
    pair is charged on its own, as in DRF; for all-or-nothing use one scope
    with a rate list (``"60/min;1000/day"``)."""

    scope = "burst"


class SustainedRateThrottle(UserRateThrottle):
    """The other half of the pair: scope ``sustained``."""

    scope = "sustained"
