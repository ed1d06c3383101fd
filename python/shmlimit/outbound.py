"""Calling a rate-limited API from every worker: wait for a turn.

Every worker of a prefork server that calls one vendor API shares one
quota and, rather than being refused, waits for its turn (doc/outbound.md)::

    import shmlimit

    lim = shmlimit.Limiter.open_or_create("/myapp")
    lim.add_policy("payments", "gcra", "25/s", burst=5)

    d = lim.wait("payments", account_id, max_wait=5)        # blocks this thread only
    d = await lim.wait_async("payments", account_id, max_wait=5)  # never blocks the loop

    @shmlimit.throttled("payments", key=lambda acct, *a, **kw: acct, max_wait=5)
    def charge(acct, amount): ...

``Limiter.reserve`` returns the turn without waiting; ``Limiter.wait``
sleeps in C++ with the GIL released; :func:`wait_async` (also
``Limiter.wait_async``) reserves the turn, which is one lock-free CAS, and
sleeps with ``asyncio.sleep``. A refused wait charges nothing.
"""
from __future__ import annotations

import asyncio
import functools
import inspect
from typing import Any, Callable, Optional, TypeVar, Union

from ._shmlimit import Limiter, PolicyId, WaitDecision, _wait
from ._util import fit_key
from .decorators import LimiterSource, RateLimited, resolved_once
from .errors import InvalidArgumentError

F = TypeVar("F", bound=Callable[..., Any])
PolicyRef = Union[str, PolicyId]


async def wait_async(
    limiter: Limiter,
    policy: PolicyRef,
    key: Union[str, bytes],
    cost: int = 1,
    *,
    max_wait: Optional[float] = None,
) -> WaitDecision:
    """``Limiter.wait`` for asyncio: reserves the turn (at most ``max_wait``
    seconds away; None: no limit) and sleeps with ``asyncio.sleep``, so the
    event loop keeps running. Returns the WaitDecision (a Decision with
    ``time_to_act_ns``, the turn, and ``delay``): allowed when the turn has
    come, refused at once (nothing charged) when it lies further. If the
    task is cancelled while it sleeps, the turn is cancelled too (given back
    when nothing queued behind it) and ``CancelledError`` propagates."""
    loop = asyncio.get_running_loop()
    deadline = None if max_wait is None else loop.time() + max_wait
    while True:
        left = None if deadline is None else max(0.0, deadline - loop.time())
        r = limiter.reserve(policy, key, cost, max_wait=left)
        if r.ok:
            try:
                # Sleep on the segment's clock until the turn: asyncio may
                # wake a little early (float rounding); never act before it.
                while True:
                    rest = (r.time_to_act_ns - limiter.now_ns()) / 1e9
                    if rest <= 0:
                        break
                    await asyncio.sleep(rest)
            except asyncio.CancelledError:
                r.cancel()
                raise
            return WaitDecision(r)
        d = r.decision
        # A queued algorithm refuses a turn past the deadline (or, on a
        # token bucket, a queue that fills its state until the refill that
        # makes room); a never-queued one (the windows) is asked again at
        # its next opening.
        if d.reason != "ok" or (left is not None and (left <= 0 or d.retry_after > left)):
            return WaitDecision(r)
        pause = max(d.retry_after, 1e-4)
        await asyncio.sleep(pause if left is None else min(pause, left))


def throttled(
    policy: str,
    *,
    key: Union[None, str, bytes, Callable[..., Union[str, bytes]]] = None,
    max_wait: Optional[float] = None,
    cost: Union[int, Callable[..., int]] = 1,
    limiter: LimiterSource = None,
    rate: Union[None, str, "tuple[int, float]"] = None,
    algorithm: str = "gcra",
    burst: int = 0,
) -> Callable[[F], F]:
    """Decorates an outbound function (or coroutine function) so that each
    call first waits for its turn in the bucket of (policy, key): every
    process calling it shares one quota. A turn further than ``max_wait``
    seconds away raises :class:`RateLimited` at once, without running the
    function and charging nothing.

    :param policy: the policy's name. With ``rate`` (and ``algorithm``,
        ``burst``) it is registered on the first call, replacing another
        spec of that name (its buckets kept when they can be); without,
        it must already be registered (else InvalidArgumentError).
    :param key: the bucket's key: a string, or a callable of the
        function's arguments. Default: one bucket for every call.
    :param max_wait: the longest wait accepted, in seconds (None: any).
    :param cost: units per call, or a callable of the arguments.
    :param limiter: a Limiter, a callable returning one (called once), or
        None for ``shmlimit.decorators.default_limiter()``.
    """
    if max_wait is not None and (max_wait != max_wait or max_wait < 0):
        raise InvalidArgumentError("throttled: max_wait must be None or a number of seconds >= 0")

    def decorate(fn: F) -> F:
        def bind(lim: Limiter) -> PolicyId:
            if rate is not None:
                return lim.add_policy(policy, algorithm, rate, burst=burst, replace=True)
            found = lim.find_policy(policy)
            if found is None:
                raise InvalidArgumentError(
                    "throttled: no policy %r in %s: register it with Limiter.add_policy "
                    "or pass rate=" % (policy, lim.name)
                )
            return found

        resolve = resolved_once(limiter, bind)

        def prepare(args: Any, kwargs: Any) -> "tuple[Limiter, PolicyId, bytes, int]":
            lim, pid = resolve()
            raw = key(*args, **kwargs) if callable(key) else (key if key is not None else b"*")
            k = fit_key(raw, lim.max_key_bytes)
            c = cost(*args, **kwargs) if callable(cost) else cost
            return lim, pid, k, c

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                lim, pid, k, c = prepare(args, kwargs)
                d = await wait_async(lim, pid, k, c, max_wait=max_wait)
                if not d.allowed:
                    raise RateLimited(d, policy, k)
                return await fn(*args, **kwargs)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            lim, pid, k, c = prepare(args, kwargs)
            d = _wait(lim, pid, k, c, max_wait)  # lim.wait(pid, k, c, max_wait=max_wait), faster
            if not d.allowed:
                raise RateLimited(d, policy, k)
            return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


async def _wait_async_method(
    self: Limiter,
    policy: PolicyRef,
    key: Union[str, bytes],
    cost: int = 1,
    *,
    max_wait: Optional[float] = None,
) -> WaitDecision:
    return await wait_async(self, policy, key, cost, max_wait=max_wait)


_wait_async_method.__name__ = "wait_async"
_wait_async_method.__doc__ = wait_async.__doc__
# The extension's Limiter gains the coroutine method (declared in _shmlimit.pyi).
setattr(Limiter, "wait_async", _wait_async_method)
