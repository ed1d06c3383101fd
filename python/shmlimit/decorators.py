"""``@limit``: rate-limit calls of a function across every process.

::

    from shmlimit import Limiter, limit, RateLimited, set_default_limiter

    set_default_limiter(Limiter.open_or_create("/myapp"))

    @limit("10/m", key=lambda user, *a, **kw: str(user.id))
    def send_sms(user, text): ...

    try:
        send_sms(user, "hi")
    except RateLimited as e:
        print("try again in", e.retry_after, "s")

The policy is registered in the segment on the first call (so a module may be
imported before the segment exists, and before a fork), under ``policy`` or a
name derived from the function's qualified name. The rate written in the code
is authoritative: a policy of that name with other parameters is replaced
(its buckets are kept).
"""
from __future__ import annotations

import functools
import inspect
import os
import threading
from typing import Any, Callable, Optional, TypeVar, Union, cast

from ._shmlimit import Decision, Limiter, PolicyId, _acquire
from ._util import fit_key, policy_name

F = TypeVar("F", bound=Callable[..., Any])
LimiterSource = Union[Limiter, Callable[[], Limiter], None]

_default_lock = threading.Lock()
_default: Optional[Limiter] = None


class RateLimited(Exception):
    """Raised by a ``@limit``-decorated function when the call is refused.

    ``decision`` is the :class:`shmlimit.Decision` (``retry_after`` seconds,
    ``limit``, ``remaining``, ``reset_after``, ``reason``)."""

    def __init__(self, decision: Decision, policy: str = "", key: bytes = b"") -> None:
        self.decision = decision
        self.policy = policy
        self.key = key
        super().__init__(
            "rate limited by policy %r: retry after %.3f s (limit %d, reason %s)"
            % (policy, decision.retry_after, decision.limit, decision.reason)
        )

    @property
    def retry_after(self) -> float:
        """Seconds to wait before the same call fits."""
        return self.decision.retry_after


def set_default_limiter(limiter: Optional[Limiter]) -> None:
    """Sets the Limiter that ``@limit`` uses when given none."""
    global _default
    with _default_lock:
        _default = limiter


def default_limiter() -> Limiter:
    """The Limiter set by :func:`set_default_limiter`, else the segment named
    by the environment variable ``SHMLIMIT_SEGMENT`` (opened or created)."""
    global _default
    with _default_lock:
        if _default is None:
            name = os.environ.get("SHMLIMIT_SEGMENT")
            if not name:
                raise RuntimeError(
                    "shmlimit.limit: no limiter: pass limiter=..., call shmlimit.set_default_limiter(), "
                    "or set SHMLIMIT_SEGMENT"
                )
            _default = Limiter.open_or_create(name)
        return _default


def resolved_once(limiter: LimiterSource, bind: Callable[[Limiter], PolicyId]) -> Callable[[], "tuple[Limiter, PolicyId]"]:
    """A resolver for a decorator: on its first call (not at decoration,
    which may run before the segment exists or before a fork) it takes the
    Limiter from ``limiter`` (a Limiter, a callable returning one, or None
    for :func:`default_limiter`) and the policy from ``bind(limiter)``; once,
    under a lock; later calls return the same pair. A failure is not
    remembered: the next call tries again."""
    state: dict = {}
    lock = threading.Lock()

    def resolve() -> "tuple[Limiter, PolicyId]":
        got = state.get("resolved")
        if got is not None:
            return got
        with lock:
            got = state.get("resolved")
            if got is None:
                if limiter is None:
                    lim = default_limiter()
                elif isinstance(limiter, Limiter):
                    lim = limiter
                else:
                    lim = limiter()
                got = (lim, bind(lim))
                state["resolved"] = got
            return got

    return resolve


def limit(
    rate: Union[str, "tuple[int, float]"],
    *,
    key: Optional[Callable[..., Union[str, bytes]]] = None,
    policy: Optional[str] = None,
    limiter: LimiterSource = None,
    algorithm: str = "gcra",
    burst: int = 0,
    cost: Union[int, Callable[..., int]] = 1,
    on_full: str = "allow",
) -> Callable[[F], F]:
    """Decorates a function (or coroutine function) so that each call first
    takes ``cost`` from the bucket of (policy, key(*args, **kwargs)); a
    refused call raises :class:`RateLimited` without running the function.

    :param rate: ``"10/m"``, ``"1000/hour"``, ``"10/5m"`` or ``(count, seconds)``.
    :param key: called with the function's arguments; returns the bucket's
        key. Default: one bucket for every call.
    :param policy: policy name in the segment (default: ``fn:`` and the
        function's qualified name).
    :param limiter: a Limiter, a callable returning one (called once, on the
        first call), or None for :func:`default_limiter`.
    :param algorithm: any of :data:`shmlimit.ALGORITHMS`; ``burst`` (0 =
        the rate's count) and ``on_full`` as in ``Limiter.add_policy``.
    :param cost: units per call, or a callable of the arguments giving them.
    """

    def decorate(fn: F) -> F:
        name = policy or policy_name("fn:", getattr(fn, "__module__", "") + "." + fn.__qualname__)
        resolve = resolved_once(
            limiter, lambda lim: lim.add_policy(name, algorithm, rate, burst=burst, on_full=on_full, replace=True)
        )

        def check(args: Any, kwargs: Any) -> None:
            lim, pid = resolve()
            k = fit_key(key(*args, **kwargs) if key is not None else b"*", lim.max_key_bytes)
            c = cost(*args, **kwargs) if callable(cost) else cost
            d = _acquire(lim, pid, k, c)  # lim.acquire(pid, k, c), faster
            if not d.allowed:
                raise RateLimited(d, name, k)

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                check(args, kwargs)
                return await fn(*args, **kwargs)

            wrapper: Any = async_wrapper
        else:

            @functools.wraps(fn)
            def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
                check(args, kwargs)
                return fn(*args, **kwargs)

            wrapper = sync_wrapper
        wrapper.shmlimit_policy = name
        return cast(F, wrapper)

    return decorate
