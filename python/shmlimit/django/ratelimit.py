"""django-ratelimit's API on the shared segment: ``@ratelimit``,
``is_ratelimited``, ``get_usage``, ``request.limited``, ``Ratelimited``.

Migrating from django-ratelimit is one import::

    # from django_ratelimit.decorators import ratelimit
    from shmlimit.django.ratelimit import ratelimit

    @ratelimit(key="ip", rate="5/m", method="POST", block=True)
    def login(request): ...

The arguments are django-ratelimit's: ``key`` (``"ip"``, ``"user"``,
``"user_or_ip"``, ``"header:NAME"``, ``"get:NAME"``, ``"post:NAME"``, a
callable ``f(group, request)`` or a dotted path to one), ``rate`` (``"5/m"``,
``"100/5m"``, a ``(count, seconds)`` tuple, a callable ``f(group, request)``
or dotted path returning one of those or None for no limit; here also a list
``"5/m;100/h"`` or ``["5/m", "100/h"]``, checked all or nothing), ``method``
(``ALL``, ``UNSAFE``, a method or a list), ``group`` (default: the view's
dotted name) and ``block``. A blocked request raises :class:`Ratelimited`
(a ``PermissionDenied``: 403 by default; ``RatelimitMiddleware`` turns it
into 429 with ``Retry-After`` and the rate-limit headers).

The differences from django-ratelimit: every worker shares one exact count
(not a cache per process, nor a read-then-increment race on a shared one); a
refused request is not counted (django-ratelimit counts it, so a client that
keeps trying stays blocked); the window is the scope's algorithm
(``SHMLIMIT["ALGORITHM"]``, ``sliding_window`` by default) rather than a
fixed window with per-key jitter. A group's policy is ``rl:<group>@<rate>``;
``SHMLIMIT["SCOPES"][group]`` sets its algorithm.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured, PermissionDenied
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

from .. import _shmlimit
from .._shmlimit import Decision, _peek
from .._util import fit_key
from . import conf

__all__ = ["ALL", "UNSAFE", "Ratelimited", "RatelimitMiddleware", "get_usage", "is_ratelimited", "ratelimit"]

ALL = (None,)  # every method, as django_ratelimit.ALL
UNSAFE = ["DELETE", "PATCH", "POST", "PUT"]

_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class Ratelimited(PermissionDenied):
    """A request blocked by ``@ratelimit(block=True)``: a ``PermissionDenied``
    (Django answers 403) unless ``RatelimitMiddleware`` answers 429.
    ``decision`` is the refusing decision, ``retry_after`` its wait in
    seconds (None when unknown)."""

    def __init__(self, *args: Any, decision: Optional[Decision] = None) -> None:
        super().__init__(*args)
        self.decision = decision

    @property
    def retry_after(self) -> Optional[float]:
        d = self.decision
        if d is None or d.retry_after <= 0 or d.retry_after == float("inf"):
            return None
        return d.retry_after


def _method_match(request: Any, method: Any) -> bool:
    if method == ALL or method is None:
        return True
    if not isinstance(method, (list, tuple, set, frozenset)):
        method = [method]
    return str(request.method).upper() in [str(m).upper() for m in method]


def _methods_tag(method: Any) -> str:
    if method == ALL or method is None:
        return ""
    if not isinstance(method, (list, tuple, set, frozenset)):
        method = [method]
    return "".join(sorted(str(m).upper() for m in method))


def _rate_text(rate: Any) -> str:
    """A rate of django-ratelimit's forms (or shmlimit's) as shmlimit's text."""
    if isinstance(rate, tuple) and len(rate) == 2 and not isinstance(rate[0], str):
        try:
            rate = "%d/%ds" % (int(rate[0]), int(rate[1]))
        except (TypeError, ValueError) as e:
            raise ImproperlyConfigured("ratelimit: rate %r: expected (count, seconds)" % (rate,)) from e
    elif isinstance(rate, (list, tuple)):
        rate = ";".join(_rate_text(r) for r in rate)
    if not isinstance(rate, str):
        raise ImproperlyConfigured("ratelimit: rate %r: expected '5/m', '100/5m', (count, seconds) or a list" % (rate,))
    parts = []
    for part in rate.split(";"):
        part = part.strip()
        count, sep, period = part.partition("/")
        # django-ratelimit's "5/m", "100/5m", "10/s"; "5/" alone is per second
        if sep and count.strip().isdigit() and (period == "" or period.isdigit()):
            part = "%s/%ss" % (count.strip(), period or "1")
        parts.append(part)
    text = ";".join(parts)
    try:
        rates = _shmlimit.parse_rates(text)
    except ValueError as e:
        raise ImproperlyConfigured("ratelimit: rate %r: %s" % (rate, e)) from e
    for _n, seconds in rates:
        if seconds <= 0:
            raise ImproperlyConfigured("ratelimit: rate %r: the period must be greater than 0" % (rate,))
    return text


def _group_of(fn: Any) -> str:
    if isinstance(fn, functools.partial):
        fn = fn.func
    parts = []
    if hasattr(fn, "__module__"):
        parts.append(fn.__module__)
    if hasattr(fn, "__self__"):
        parts.append(fn.__self__.__class__.__name__)
    parts.append(getattr(fn, "__qualname__", getattr(fn, "__name__", repr(fn))))
    return ".".join(parts)


_identity_cache: Dict[str, Any] = {}


def _on_setting_changed(setting: str, **kwargs: Any) -> None:
    if setting in ("SHMLIMIT", "REST_FRAMEWORK"):
        _identity_cache.clear()


setting_changed.connect(_on_setting_changed)


def _ip(request: Any) -> str:
    from .middleware import _Identity

    spec = conf.settings()["IDENTITY"] or {}
    key = repr(sorted(spec.items()))
    ident = _identity_cache.get(key)
    if ident is None:
        ident = _identity_cache[key] = _Identity(spec)
    return str(ident.of(request).key)


def _user(request: Any) -> str:
    return str(request.user.pk)


def _user_or_ip(request: Any) -> str:
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return str(user.pk)
    return _ip(request)


_SIMPLE_KEYS: Dict[str, Callable[[Any], str]] = {"ip": _ip, "user": _user, "user_or_ip": _user_or_ip}


def _header(request: Any, name: str) -> str:
    return str(request.META.get("HTTP_" + name.replace("-", "_").upper(), ""))


_ACCESSOR_KEYS: Dict[str, Callable[[Any, str], str]] = {
    "get": lambda r, k: str(r.GET.get(k, "")),
    "post": lambda r, k: str(r.POST.get(k, "")),
    "header": _header,
}


def _key_value(key: Any, group: str, request: Any) -> Any:
    if not key:
        raise ImproperlyConfigured("ratelimit: a key must be specified")
    if callable(key):
        return key(group, request)
    if not isinstance(key, str):
        raise ImproperlyConfigured("ratelimit: key %r: expected a string or a callable" % (key,))
    if key in _SIMPLE_KEYS:
        return _SIMPLE_KEYS[key](request)
    if ":" in key:
        accessor, name = key.split(":", 1)
        if accessor not in _ACCESSOR_KEYS:
            raise ImproperlyConfigured("ratelimit: unknown key %r (ip, user, user_or_ip, header:, get:, post:)" % key)
        return _ACCESSOR_KEYS[accessor](request, name)
    if "." in key:
        return import_string(key)(group, request)
    raise ImproperlyConfigured("ratelimit: could not understand key %r" % key)


def _resolve_rate(rate: Any, group: str, request: Any) -> Any:
    if callable(rate):
        return rate(group, request)
    if isinstance(rate, str) and "." in rate and "/" not in rate:
        return import_string(rate)(group, request)
    return rate


def get_usage(
    request: Any,
    group: Optional[str] = None,
    fn: Any = None,
    key: Any = None,
    rate: Any = None,
    method: Any = ALL,
    increment: bool = False,
) -> Optional[Dict[str, Any]]:
    """django-ratelimit's ``get_usage``: None when not limited (the method
    does not match, the rate is None, ``RATELIMIT_ENABLE`` is False), else
    ``count``, ``limit``, ``should_limit`` and ``time_left`` (seconds, the
    wait of a refused request or the time until the bucket is empty) of the
    tightest rate, and ``decision``. ``increment=True`` charges the request
    (all rates or none); ``increment=False`` only looks, and ``should_limit``
    says whether a request now would be refused."""
    if group is None and fn is None:
        raise ImproperlyConfigured("ratelimit: get_usage needs a group or fn argument")
    if not getattr(django_settings, "RATELIMIT_ENABLE", True):
        return None
    if not _method_match(request, method):
        return None
    if group is None:
        group = _group_of(fn)
    rate = _resolve_rate(rate, group, request)
    if rate is None:
        return None
    text = _rate_text(rate)
    value = _key_value(key, group, request)
    if value is None:
        return None
    bucket = "%s|%s" % (_methods_tag(method), value)
    try:
        policies = conf.registry.bind(group, text, prefix="rl:", variant=True)
        lim = conf.get_limiter()
        if increment:
            combined, each = conf.registry.acquire(policies, bucket)
            conf.record(request, policies, combined, each)
        else:
            k = fit_key(bucket, lim.max_key_bytes)
            each = [_peek(lim, p.id, k, 1) for p in policies]  # lim.peek(p.id, k, 1), faster
            denied = [d for d in each if not d.allowed]
            combined = max(denied, key=lambda d: d.retry_after_ns) if denied else min(each, key=lambda d: d.remaining)
    except ImproperlyConfigured:
        raise
    except Exception as e:  # the segment cannot be used
        if not conf.settings()["FAIL_OPEN"]:
            raise
        conf.registry.log_failure("ratelimit %r" % group, e)
        return None
    tight = combined
    used = tight.limit - tight.remaining
    return {
        "count": used + (0 if tight.allowed or not increment else 1),
        "limit": tight.limit,
        "should_limit": not combined.allowed,
        "time_left": tight.retry_after if not combined.allowed else tight.reset_after,
        "decision": combined,
    }


def is_ratelimited(
    request: Any,
    group: Optional[str] = None,
    fn: Any = None,
    key: Any = None,
    rate: Any = None,
    method: Any = ALL,
    increment: bool = False,
) -> bool:
    """django-ratelimit's ``is_ratelimited``: whether the request is (with
    ``increment``: was charged and) over the limit."""
    usage = get_usage(request, group, fn, key, rate, method, increment)
    return bool(usage and usage["should_limit"])


def ratelimit(group: Optional[str] = None, key: Any = None, rate: Any = None, method: Any = ALL, block: bool = True) -> Callable:
    """django-ratelimit's decorator for a view ``f(request, ...)`` (a
    method's ``request`` too, with ``django.utils.decorators.method_decorator``).
    Sets ``request.limited`` (True if this or an earlier ``@ratelimit`` on the
    request was over); with ``block``, raises ``RATELIMIT_EXCEPTION_CLASS``
    (default :class:`Ratelimited`)."""
    if key is None:
        raise ImproperlyConfigured("ratelimit: a key must be specified")
    if rate is None:
        raise ImproperlyConfigured("ratelimit: a rate must be specified")
    if not callable(rate) and not (isinstance(rate, str) and "." in rate and "/" not in rate):
        _rate_text(rate)  # a bad literal rate fails at import, not at the first request

    def decorator(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def _wrapped(request: Any, *args: Any, **kw: Any) -> Any:
            old_limited = getattr(request, "limited", False)
            usage = get_usage(request, group=group, fn=fn, key=key, rate=rate, method=method, increment=True)
            limited = bool(usage and usage["should_limit"])
            request.limited = limited or old_limited
            if limited and block:
                cls = getattr(django_settings, "RATELIMIT_EXCEPTION_CLASS", Ratelimited)
                cls = import_string(cls) if isinstance(cls, str) else cls
                if issubclass(cls, Ratelimited):
                    raise cls(decision=usage["decision"] if usage else None)
                raise cls()
            return fn(request, *args, **kw)

        return _wrapped

    return decorator


ratelimit.ALL = ALL  # type: ignore[attr-defined]
ratelimit.UNSAFE = UNSAFE  # type: ignore[attr-defined]
is_ratelimited.ALL = ALL  # type: ignore[attr-defined]
is_ratelimited.UNSAFE = UNSAFE  # type: ignore[attr-defined]


class RatelimitMiddleware:
    """Turns :class:`Ratelimited` into ``SHMLIMIT["STATUS"]`` (429) with
    ``Retry-After`` and the rate-limit headers of the request's decisions;
    with ``RATELIMIT_VIEW`` set (django-ratelimit's setting), that view
    answers instead. Other exceptions pass through."""

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response
        self.status = int(conf.settings().get("STATUS", 429))
        conf.header_options()

    def __call__(self, request: Any) -> Any:
        return self.get_response(request)

    def process_exception(self, request: Any, exception: Exception) -> Any:
        if not isinstance(exception, Ratelimited):
            return None
        view = getattr(django_settings, "RATELIMIT_VIEW", None)
        if view:
            return import_string(view)(request, exception) if isinstance(view, str) else view(request, exception)
        from django.http import HttpResponse

        response = HttpResponse("Too Many Requests\n", status=self.status, content_type="text/plain")
        headers: List[Tuple[str, str]] = conf.headers_for(request, self.status)
        for name, value in headers:
            response[name] = value
        if not response.has_header("Retry-After") and exception.retry_after is not None:
            import math

            response["Retry-After"] = str(max(1, math.ceil(exception.retry_after)))
        return response
