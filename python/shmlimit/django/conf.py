"""The ``SHMLIMIT`` Django setting and the per-process segment handle.

Every worker process opens the segment once, on first use (or before the
fork, when the master imports the application with ``--preload``: the
mapping is shared and stays valid in the workers). Policies are registered
on first use of a scope and their ids cached. doc/django.md lists every key.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed

from .. import _shmlimit
from .._shmlimit import Decision, Limiter, PolicyId, _acquire
from .._util import fit_key, policy_name
from ..errors import Error, InvalidArgumentError, PolicyConflictError, TableFullError

logger = logging.getLogger("shmlimit.django")

DEFAULTS: Dict[str, Any] = {
    "SEGMENT": None,  # POSIX shm name; None: "/shmlimit-" + the settings module
    "CONFIG": None,  # a TOML file (doc/config.md) to open instead of SEGMENT
    "CAPACITY": 65536,
    "SLOT_BYTES": 128,
    "MODE": 0o600,
    "OPEN_TIMEOUT": 2.0,
    "CLAIM_TIMEOUT": 0.1,
    "LOG_ENTRIES": 0,  # per slot, for sliding_log scopes: at least their largest count
    "ALLOW_OTHER_USERS": False,  # share the segment with other users' processes (doc/design.md)
    "ALGORITHM": "sliding_window",  # for scopes that SCOPES does not name
    "ON_FULL": "allow",
    "WAIT": "exact",  # sliding_log's wait for scopes that SCOPES does not name: "exact" or "drf"
    "SCOPES": {},  # scope -> {"ALGORITHM", "BURST", "ON_FULL", "WAIT"}
    "REPLACE_POLICIES": True,  # the settings' rate wins over the segment's
    "FAIL_OPEN": True,  # admit (and log) when the segment cannot be used
    "HEADERS": ("retry-after", "x-ratelimit", "ratelimit"),
    "IDENTITY": {},  # the middleware's client identity (doc/django.md)
    "MIDDLEWARE": [],  # the middleware's rules
    "STATUS": 429,  # the middleware's status for a refused request
    "DRY_RUN": False,  # the middleware decides and reports, never refuses
}

_SCOPE_KEYS = {"ALGORITHM", "BURST", "ON_FULL", "WAIT"}


def settings() -> Dict[str, Any]:
    """``SHMLIMIT`` merged over :data:`DEFAULTS`; unknown keys are an error."""
    user = getattr(django_settings, "SHMLIMIT", None) or {}
    if not isinstance(user, dict):
        raise ImproperlyConfigured("SHMLIMIT must be a dict, not %s" % type(user).__name__)
    unknown = sorted(set(user) - set(DEFAULTS))
    if unknown:
        raise ImproperlyConfigured(
            "SHMLIMIT: unknown key(s) %s (known: %s)" % (", ".join(unknown), ", ".join(sorted(DEFAULTS)))
        )
    merged = dict(DEFAULTS)
    merged.update(user)
    for scope, opts in (merged["SCOPES"] or {}).items():
        bad = sorted(set(opts) - _SCOPE_KEYS)
        if bad:
            raise ImproperlyConfigured(
                "SHMLIMIT['SCOPES'][%r]: unknown key(s) %s (known: %s)"
                % (scope, ", ".join(bad), ", ".join(sorted(_SCOPE_KEYS)))
            )
    return merged


def default_segment_name() -> str:
    module = getattr(django_settings, "SETTINGS_MODULE", None) or "django"
    return "/shmlimit-" + "".join(c if c.isalnum() or c in "_.-" else "_" for c in module)[:180]


@dataclass(frozen=True)
class BoundPolicy:
    """One registered policy of a scope: its id, name and what headers need."""

    id: PolicyId
    name: str
    rate: str
    algorithm: str
    burst: int
    window: float  # seconds: RateLimit-Policy's w


class _Registry:
    """The process's segment handle and registered policies."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.limiter: Optional[Limiter] = None
        self.key_bytes = 0  # the open limiter's max_key_bytes, read once
        self.policies: Dict[Tuple[str, str, str, Optional[str], bool], Tuple[BoundPolicy, ...]] = {}
        self.last_log = 0.0
        self.suppressed = 0
        self.wall_epoch: Optional[float] = None  # time.time() at the segment's epoch, read once

    def get_limiter(self) -> Limiter:
        lim = self.limiter
        if lim is not None:
            return lim
        with self.lock:
            if self.limiter is None:
                conf = settings()
                if conf["CONFIG"]:
                    self.limiter = Limiter.open_config(str(conf["CONFIG"]))
                else:
                    self.limiter = Limiter.open_or_create(
                        conf["SEGMENT"] or default_segment_name(),
                        capacity=int(conf["CAPACITY"]),
                        mode=int(conf["MODE"]),
                        slot_bytes=int(conf["SLOT_BYTES"]),
                        log_entries=int(conf["LOG_ENTRIES"]),
                        open_timeout=float(conf["OPEN_TIMEOUT"]),
                        claim_timeout=float(conf["CLAIM_TIMEOUT"]),
                        allow_other_users=bool(conf["ALLOW_OTHER_USERS"]),
                    )
                self.key_bytes = self.limiter.max_key_bytes
            return self.limiter

    def bind(
        self,
        scope: str,
        rate: str,
        algorithm: Optional[str] = None,
        prefix: str = "drf:",
        variant: bool = False,
    ) -> Tuple[BoundPolicy, ...]:
        """The policies of ``scope`` at ``rate`` (one per ';'-separated rate:
        ``drf:<scope>``, ``drf:<scope>.2``, ...; the middleware's rules use
        the prefix ``mw:``), registered on first use. With ``variant`` the
        rate is part of the name (``drf:<scope>@<rate>``, made a valid name):
        classes that share a scope with different rates never share a bucket.
        Raises ImproperlyConfigured for a rate or spec the library refuses,
        a conflicting policy (with REPLACE_POLICIES off) or a full policy table."""
        # the DRF throttles look this key up themselves first (throttling.py)
        cache_key = (prefix, scope, rate, algorithm, variant)
        got = self.policies.get(cache_key)
        if got is not None:
            return got
        lim = self.get_limiter()
        conf = settings()
        opts = (conf["SCOPES"] or {}).get(scope, {})
        algo = algorithm or opts.get("ALGORITHM") or conf["ALGORITHM"]
        on_full = opts.get("ON_FULL", conf["ON_FULL"])
        bursts = opts.get("BURST", 0)
        wait = opts.get("WAIT", conf["WAIT"])
        try:
            rates = [r.strip() for r in rate.split(";")]
            _shmlimit.parse_rates(rate)  # the whole list, for one clear message
            base = policy_name(prefix, "%s@%s" % (scope, rate) if variant else scope)
            bound: List[BoundPolicy] = []
            for i, text in enumerate(rates):
                burst = bursts[i] if isinstance(bursts, (list, tuple)) else int(bursts or 0)
                name = base if i == 0 else policy_name("", "%s.%d" % (base, i + 1))
                pid = lim.add_policy(
                    name,
                    algo,
                    text,
                    burst=burst,
                    on_full=on_full,
                    wait=wait,
                    replace=bool(conf["REPLACE_POLICIES"]),
                )
                window = _shmlimit.policy_window(algo, text, burst)
                bound.append(BoundPolicy(pid, name, text, algo, burst, window))
        except (InvalidArgumentError, PolicyConflictError, TableFullError) as e:
            # the settings ask for what the segment cannot hold: not an
            # internal error to fail open on
            raise ImproperlyConfigured("shmlimit: throttle scope %r, rate %r: %s" % (scope, rate, e)) from e
        result = tuple(bound)
        with self.lock:
            self.policies[cache_key] = result
        return result

    def acquire(
        self, policies: Sequence[BoundPolicy], key: str, cost: int = 1, now_ns: Optional[int] = None
    ) -> Tuple[Decision, Sequence[Decision]]:
        """Charges ``cost`` to every policy, all or nothing; at ``now_ns``
        (the injected clock, :meth:`clock_ns`) when given. A rate list at an
        injected time is checked (cost 0) then charged: all or nothing for
        one caller, not atomic against concurrent ones."""
        lim = self.limiter or self.get_limiter()
        k = key.encode("utf-8", "surrogateescape")
        if len(k) > self.key_bytes:
            k = fit_key(k, self.key_bytes)
        if now_ns is None and len(policies) == 1:  # the common case, first
            d = _acquire(lim, policies[0].id, k, cost)  # lim.acquire(id, k, cost), faster
            return d, (d,)
        if now_ns is not None:
            if len(policies) > 1:
                probe = [lim.acquire_at(p.id, k, 0, now_ns) for p in policies]
                if any(d.remaining < cost for d in probe):
                    # the denial of the tightest rate, with its wait
                    each = [lim.acquire_at(p.id, k, 0, now_ns) if d.remaining >= cost else _denial(lim, p, k, cost, now_ns)
                            for p, d in zip(policies, probe)]
                    denied = [d for d in each if not d.allowed]
                    return max(denied, key=lambda d: d.retry_after_ns), each
            each = [lim.acquire_at(p.id, k, cost, now_ns) for p in policies]
            denied = [d for d in each if not d.allowed]
            if denied:
                return max(denied, key=lambda d: d.retry_after_ns), each
            return min(each, key=lambda d: d.remaining), each
        combined, each = lim.acquire_many([(p.id, k, cost) for p in policies], each=True)
        return combined, list(each)

    def clock_ns(self, t: Any) -> int:
        """The segment time (ns since its epoch) of a throttle's ``timer()``
        value ``t`` (seconds). A value below 2^55 ns (417 days) is seconds
        since the segment's epoch, as a test's mocked timer counts (0, 1,
        60, ...); a larger one is a wall-clock ``time.time()`` value, mapped
        through this process's reading of the wall clock at the segment's
        epoch so that it lands inside the segment's clock horizon.
        ImproperlyConfigured for a value that is not a finite number of
        seconds or maps outside the horizon."""
        try:
            seconds = float(t)
        except (TypeError, ValueError):
            raise ImproperlyConfigured("shmlimit: a throttle's timer() returned %r, not a number of seconds" % (t,))
        if not math.isfinite(seconds) or seconds < 0:
            raise ImproperlyConfigured("shmlimit: a throttle's timer() returned %r: expected seconds >= 0" % (t,))
        if seconds * 1e9 < SMALL_TIMER_NS:
            return int(round(seconds * 1e9))
        ns = int(round((seconds - self.wall_clock_epoch()) * 1e9))
        if ns < 0 or ns >= CLOCK_HORIZON_NS:
            raise ImproperlyConfigured(
                "shmlimit: a throttle's timer() returned %r, which is %s the segment's clock horizon "
                "(a time.time() value between the segment's creation and 834 days later)"
                % (t, "before" if ns < 0 else "past")
            )
        return ns

    def timer_seconds(self, ns: int, like: Any) -> float:
        """The inverse of :meth:`clock_ns`, in the units of the timer value ``like``."""
        try:
            small = float(like) * 1e9 < SMALL_TIMER_NS
        except (TypeError, ValueError):
            small = False
        return ns / 1e9 if small else ns / 1e9 + self.wall_clock_epoch()

    def wall_clock_epoch(self) -> float:
        """``time.time()`` at the segment's epoch, read once per process."""
        if self.wall_epoch is None:
            lim = self.get_limiter()
            self.wall_epoch = time.time() - lim.now_ns() / 1e9
        return self.wall_epoch

    def log_failure(self, what: str, exc: BaseException) -> None:
        """One log line (no traceback) for a fail-open event; at most one a
        minute per process, saying how many were not logged meanwhile."""
        now = time.monotonic()
        with self.lock:
            if self.last_log and now - self.last_log < 60.0:
                self.suppressed += 1
                return
            suppressed, self.suppressed, self.last_log = self.suppressed, 0, now
        extra = " (%d more since the last message)" % suppressed if suppressed else ""
        logger.error("shmlimit: %s failed, request admitted (fail open): %s: %s%s", what, type(exc).__name__, exc, extra)

    def clear(self) -> None:
        with self.lock:
            self.limiter = None
            self.policies = {}
            self.wall_epoch = None


SMALL_TIMER_NS = 1 << 55
CLOCK_HORIZON_NS = 1 << 56


def _denial(lim: Limiter, policy: BoundPolicy, key: bytes, cost: int, now_ns: int) -> Decision:
    """The decision of ``policy`` for ``cost`` at ``now_ns`` without charging
    it: an acquire_at that is refused charges nothing."""
    return lim.acquire_at(policy.id, key, cost, now_ns)


registry = _Registry()


def get_limiter() -> Limiter:
    """The Limiter of the ``SHMLIMIT`` setting, opened once per process."""
    return registry.get_limiter()


def _on_setting_changed(setting: str, **kwargs: Any) -> None:
    if setting == "SHMLIMIT":
        registry.clear()


setting_changed.connect(_on_setting_changed)


def record(request: Any, policies: Sequence[BoundPolicy], combined: Decision, each: Sequence[Decision]) -> None:
    """Remembers a decision on the Django request for the header middleware
    (which pairs policies and decisions only when it builds headers)."""
    http_request = getattr(request, "_request", request)  # DRF's Request wraps Django's
    try:
        entries = http_request.__dict__.get("shmlimit_decisions")
        if entries is None:
            entries = http_request.__dict__["shmlimit_decisions"] = []
    except AttributeError:  # no __dict__: nothing to remember it on
        return
    entries.append((combined, policies, each))


def header_options() -> Any:
    """The HttpOptions of the ``HEADERS`` setting."""
    families = settings()["HEADERS"] or ()
    bits = 0
    for f in families:
        f = str(f).lower()
        if f == "retry-after":
            bits |= _shmlimit.HEADERS_RETRY_AFTER
        elif f == "x-ratelimit":
            bits |= _shmlimit.HEADERS_X_RATELIMIT
        elif f == "ratelimit":
            bits |= _shmlimit.HEADERS_RATELIMIT
        else:
            raise ImproperlyConfigured(
                "SHMLIMIT['HEADERS']: unknown family %r (retry-after, x-ratelimit, ratelimit)" % f
            )
    return bits


def headers_for(request: Any, refuse_status: int = 429, dry_run: bool = False) -> List[Tuple[str, str]]:
    """The rate-limit headers of every decision recorded on the request: the
    X-RateLimit-* fields from the tightest decision (a denial with the
    longest wait, else the least remaining), one RateLimit item per policy."""
    http_request = getattr(request, "_request", request)
    entries = getattr(http_request, "shmlimit_decisions", None)
    if not entries:
        return []
    denied = [c for c, _, _ in entries if not c.allowed]
    if denied:
        combined = max(denied, key=lambda d: d.retry_after_ns)
    else:
        combined = min((c for c, _, _ in entries), key=lambda d: d.remaining)
    items = [(p.name, d, p.window) for _, policies, each in entries for p, d in zip(policies, each)]
    options = _shmlimit.HttpOptions(refuse_status=refuse_status, dry_run=dry_run, headers=header_options())
    return list(_shmlimit.rate_limit_headers(combined, items, options))


__all__ = [
    "BoundPolicy",
    "DEFAULTS",
    "Error",
    "get_limiter",
    "headers_for",
    "record",
    "registry",
    "settings",
]
