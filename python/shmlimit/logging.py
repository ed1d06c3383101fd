"""At most one log record per period across every worker process.

Meant for Django's ``mail_admins`` handler: during an error storm every
gunicorn worker would mail the admins for every failing request; with this
filter the whole host sends at most one mail per period::

    LOGGING = {
        "version": 1,
        "filters": {
            "one_per_minute": {"()": "shmlimit.logging.OncePerPeriodFilter", "period": 60},
        },
        "handlers": {
            "mail_admins": {
                "level": "ERROR",
                "class": "django.utils.log.AdminEmailHandler",
                "filters": ["one_per_minute"],
            },
        },
        ...
    }

or, around any handler, ``OncePerPeriodHandler(inner_handler, period=60)``.

The algorithm is GCRA with rate 1/period and burst 1: at most one record
per period, and during a storm that goes on for hours one record every
period, so the admins can see it has not stopped. ``algorithm="quiet_period"``
sends one record per storm instead: after a suppressed record the key stays
closed until nothing was logged for a whole period.

Records are counted under ``key(record)`` (default: one key for everything
the filter sees). The segment is ``limiter`` if given, else ``segment``
(opened or created), else the ``SHMLIMIT`` setting's (Django), else
``SHMLIMIT_SEGMENT``. If the limiter cannot be used, records pass: an
error mail is worth more than the quiet.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Optional, Union

from ._shmlimit import Limiter, PolicyId
from ._util import fit_key, policy_name

__all__ = ["OncePerPeriodFilter", "OncePerPeriodHandler"]

LimiterSource = Union[Limiter, Callable[[], Limiter], None]


class OncePerPeriodFilter(logging.Filter):
    """Passes at most one record per ``period`` seconds per key, counted
    across every process that shares the segment.

    :param period: seconds (float allowed).
    :param key: ``record -> str``; records of different keys are counted
        apart. Default: one key.
    :param policy: the policy's name in the segment (default derived from
        the period and algorithm, so filters with equal settings share it).
    :param algorithm: ``"gcra"`` (default) or ``"quiet_period"``.
    :param clock: tests only: ``() -> ns since the segment's epoch``.
    """

    def __init__(
        self,
        period: float = 60.0,
        *,
        key: Optional[Callable[[logging.LogRecord], str]] = None,
        limiter: LimiterSource = None,
        segment: Optional[str] = None,
        policy: Optional[str] = None,
        algorithm: str = "gcra",
        clock: Optional[Callable[[], int]] = None,
        name: str = "",
    ) -> None:
        super().__init__(name)
        if not period > 0:
            raise ValueError("period must be a positive number of seconds")
        if algorithm not in ("gcra", "quiet_period"):
            raise ValueError("algorithm must be 'gcra' or 'quiet_period'")
        self.period = float(period)
        self.key = key
        self.algorithm = algorithm
        self.policy_name = policy or policy_name("log:", "%s.%g" % (algorithm, self.period))
        self.clock = clock
        self._source = limiter
        self._segment = segment
        self._lock = threading.Lock()
        self._resolved: Optional["tuple[Limiter, PolicyId]"] = None
        self.suppressed = 0  # records this process has held back

    def _limiter(self) -> Limiter:
        if isinstance(self._source, Limiter):
            return self._source
        if self._source is not None:
            return self._source()
        if self._segment:
            return Limiter.open_or_create(self._segment, capacity=1024)
        try:
            from django.conf import settings

            if settings.configured:
                from .django.conf import get_limiter

                return get_limiter()
        except ImportError:
            pass
        from .decorators import default_limiter

        return default_limiter()

    def _resolve(self) -> "tuple[Limiter, PolicyId]":
        got = self._resolved
        if got is None:
            with self._lock:
                if self._resolved is None:
                    lim = self._limiter()
                    pid = lim.add_policy(self.policy_name, self.algorithm, (1, self.period), burst=1, replace=True)
                    self._resolved = (lim, pid)
                got = self._resolved
        return got

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            lim, pid = self._resolve()
            k = fit_key(self.key(record) if self.key is not None else "*", lim.max_key_bytes)
            d = lim.acquire_at(pid, k, 1, self.clock()) if self.clock is not None else lim.acquire(pid, k)
        except Exception:  # the limiter is unusable: let the record through
            return True
        if not d.allowed:
            self.suppressed += 1
        return bool(d.allowed)


class OncePerPeriodHandler(logging.Handler):
    """Forwards to ``inner`` at most one record per period across processes
    (an :class:`OncePerPeriodFilter` in front of ``inner``; the keyword
    arguments are the filter's)."""

    def __init__(self, inner: logging.Handler, period: float = 60.0, **kwargs: Any) -> None:
        super().__init__(inner.level)
        self.inner = inner
        self.gate = OncePerPeriodFilter(period, **kwargs)

    def emit(self, record: logging.LogRecord) -> None:
        if self.gate.filter(record):
            self.inner.handle(record)

    def setFormatter(self, fmt: Optional[logging.Formatter]) -> None:
        super().setFormatter(fmt)
        self.inner.setFormatter(fmt)

    def flush(self) -> None:
        self.inner.flush()

    def close(self) -> None:
        self.inner.close()
        super().close()
