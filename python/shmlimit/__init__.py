"""shmlimit: one rate limiter shared by every worker process on a host.

A :class:`Limiter` is a handle on a named POSIX shared-memory segment of
buckets, one per (policy, key), updated with lock-free atomics, so every
worker of a prefork server (gunicorn, uWSGI) sees one exact counter::

    import shmlimit

    lim = shmlimit.Limiter.open_or_create("/myapp", capacity=65536)
    lim.add_policy("api", "gcra", "100/m", burst=20)
    d = lim.acquire("api", client_ip)
    if not d:
        ...  # 429, Retry-After: math.ceil(d.retry_after)

Decisions never raise; setup calls raise :class:`Error` subclasses. Client
identity (``client_identity``, ``IdentityOptions``, ``AccessList``) and
response headers (``rate_limit_headers``, ``http_verdict``) are the C++
functions of identity.hpp and http.hpp. Where the build has the Redis tier
(``HAS_REDIS``), ``RedisLimiter`` decides in Redis and ``HybridLimiter``
serves the host from tokens leased from Redis (doc/redis.md); their
decisions are ``TierDecision``, a ``Decision`` with a ``source``. The
Django / DRF integration is in :mod:`shmlimit.django`, the decorators in
:mod:`shmlimit.decorators` and :mod:`shmlimit.outbound` (waiting for a turn
at a rate-limited API: ``Limiter.reserve``, ``wait``, ``wait_async``,
``throttled``), the error-mail filter in :mod:`shmlimit.logging`, the
``shmlimit://`` storage of the ``limits`` library (Flask-Limiter, SlowAPI)
in :mod:`shmlimit.limits_storage`.
doc/python.md has the whole API.
"""
from __future__ import annotations

from ._shmlimit import (
    HAS_REDIS,
    HEADERS_ALL,
    HEADERS_RATELIMIT,
    HEADERS_RETRY_AFTER,
    HEADERS_X_RATELIMIT,
    AccessList,
    Cidr,
    Decision,
    HttpOptions,
    HttpVerdict,
    Identity,
    IdentityOptions,
    IpAddress,
    Lease,
    Limiter,
    PolicyId,
    Reservation,
    WaitDecision,
    ceil_seconds,
    client_identity,
    drf_throttled_detail,
    fit_key,
    format_rate,
    http_verdict,
    parse_algorithm,
    parse_cidrs,
    parse_rate,
    parse_rates,
    policy_window,
    rate_limit_headers,
    throttle_key,
)
from ._version import __version__
from .decorators import RateLimited, limit, set_default_limiter
from .outbound import throttled, wait_async
from .errors import (
    AccessError,
    CorruptError,
    Error,
    ErrorCode,
    ExistsError,
    IncompatibleError,
    InvalidArgumentError,
    NoSpaceError,
    NotFoundError,
    OpenTimeoutError,
    PolicyConflictError,
    ReadOnlyError,
    SystemFailureError,
    TableFullError,
)

# The Redis and hybrid tiers (doc/redis.md), in a build with shmlimit_redis.
if HAS_REDIS:
    from ._shmlimit import HybridLimiter, RedisLimiter, TierDecision

ALGORITHMS = (
    "gcra",
    "token_bucket",
    "fixed_window",
    "sliding_window",
    "quiet_period",
    "leaky_bucket",
    "concurrency",
    "sliding_log",
)

__all__ = [
    "__version__",
    "ALGORITHMS",
    "HAS_REDIS",
    "HEADERS_ALL",
    "HEADERS_RATELIMIT",
    "HEADERS_RETRY_AFTER",
    "HEADERS_X_RATELIMIT",
    "AccessError",
    "AccessList",
    "Cidr",
    "HttpOptions",
    "HttpVerdict",
    "Identity",
    "IdentityOptions",
    "IpAddress",
    "Lease",
    "ceil_seconds",
    "client_identity",
    "drf_throttled_detail",
    "fit_key",
    "http_verdict",
    "parse_cidrs",
    "policy_window",
    "rate_limit_headers",
    "throttle_key",
    "CorruptError",
    "Decision",
    "Error",
    "ErrorCode",
    "ExistsError",
    "IncompatibleError",
    "InvalidArgumentError",
    "Limiter",
    "NoSpaceError",
    "NotFoundError",
    "OpenTimeoutError",
    "PolicyConflictError",
    "PolicyId",
    "RateLimited",
    "Reservation",
    "ReadOnlyError",
    "SystemFailureError",
    "TableFullError",
    "WaitDecision",
    "format_rate",
    "limit",
    "parse_algorithm",
    "parse_rate",
    "parse_rates",
    "set_default_limiter",
    "throttled",
    "wait_async",
]

if HAS_REDIS:
    __all__ += ["HybridLimiter", "RedisLimiter", "TierDecision"]
