"""Django middleware: rate limits for any view, and headers for DRF's throttles.

``RateLimitMiddleware`` applies the rules of ``SHMLIMIT["MIDDLEWARE"]`` to
every request before the view runs::

    MIDDLEWARE = [
        ...,
        "django.contrib.auth.middleware.AuthenticationMiddleware",  # before, for "user_or_ip"
        "shmlimit.django.middleware.RateLimitMiddleware",
    ]
    SHMLIMIT = {
        "SEGMENT": "/mysite",
        "MIDDLEWARE": [
            {"SCOPE": "pages", "RATE": "120/m", "KEY": "ip",
             "SKIP_METHODS": ["POST"], "SKIP_PATHS": ["/static/", "/healthz"]},
        ],
    }

A refused request gets status ``SHMLIMIT["STATUS"]`` (429) with
``Retry-After`` and the rate-limit headers; an admitted one gets the
headers on its response. All the rules that apply to a request are checked
all or nothing. If the segment cannot be used (an internal error), the request
is admitted and one line is logged (at most one a minute per process) on the
``shmlimit.django`` logger: limiting must not take the site down.

``RateLimitHeadersMiddleware`` only adds the headers of decisions made by
the DRF throttles of :mod:`shmlimit.django.throttling` during the request.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence, Tuple

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpResponse
from django.utils.module_loading import import_string

from .. import _shmlimit
from .._shmlimit import _acquire_many_one
from . import conf

__all__ = ["RateLimitHeadersMiddleware", "RateLimitMiddleware"]

_RULE_KEYS = {"SCOPE", "RATE", "KEY", "METHODS", "SKIP_METHODS", "SKIP_PATHS", "SKIP", "COST", "ALGORITHM"}
_IDENTITY_KEYS = {
    "NUM_PROXIES",
    "NORMALIZE",
    "TRUSTED_PROXIES",
    "TRUST_UNIX_PEER",
    "USE_FORWARDED",
    "IPV4_PREFIX",
    "IPV6_PREFIX",
    "ALLOW",
    "DENY",
}


def _callable(value: Any, what: str) -> Optional[Callable[..., Any]]:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = import_string(value)
        except ImportError as e:
            raise ImproperlyConfigured("%s: cannot import %r: %s" % (what, value, e)) from e
    if not callable(value):
        raise ImproperlyConfigured("%s must be callable or a dotted path to a callable" % what)
    return value  # type: ignore[no-any-return]


@dataclass
class Rule:
    scope: str
    rate: str
    key: Callable[[Any], Optional[str]]
    methods: Optional[frozenset]
    skip_methods: frozenset
    skip_paths: Tuple[str, ...]
    skip: Optional[Callable[[Any], bool]]
    cost: int
    algorithm: Optional[str]

    def applies(self, request: Any) -> bool:
        method = request.method.upper()
        if self.methods is not None and method not in self.methods:
            return False
        if method in self.skip_methods:
            return False
        if self.skip_paths and request.path.startswith(self.skip_paths):
            return False
        if self.skip is not None and self.skip(request):
            return False
        return True


class _Identity:
    """Client identity (shmlimit.client_identity) and the allow/deny lists."""

    def __init__(self, spec: dict) -> None:
        bad = sorted(set(spec) - _IDENTITY_KEYS)
        if bad:
            raise ImproperlyConfigured(
                "SHMLIMIT['IDENTITY']: unknown key(s) %s (known: %s)" % (", ".join(bad), ", ".join(sorted(_IDENTITY_KEYS)))
            )
        drf = getattr(django_settings, "REST_FRAMEWORK", None) or {}
        num_proxies = spec.get("NUM_PROXIES", drf.get("NUM_PROXIES"))
        try:
            self.options = _shmlimit.IdentityOptions(
                num_proxies=num_proxies,
                normalize=bool(spec.get("NORMALIZE", False)),
                trusted_proxies=list(spec.get("TRUSTED_PROXIES", ())),
                trust_unix_peer=bool(spec.get("TRUST_UNIX_PEER", False)),
                use_forwarded=bool(spec.get("USE_FORWARDED", False)),
                ipv4_prefix=int(spec.get("IPV4_PREFIX", 32)),
                ipv6_prefix=int(spec.get("IPV6_PREFIX", 64)),
            )
            allow, deny = list(spec.get("ALLOW", ())), list(spec.get("DENY", ()))
            self.access = _shmlimit.AccessList(allow=allow, deny=deny) if (allow or deny) else None
        except (ValueError, TypeError) as e:
            raise ImproperlyConfigured("SHMLIMIT['IDENTITY']: %s" % e) from e

    def of(self, request: Any) -> Any:
        meta = request.META
        return _shmlimit.client_identity(
            meta.get("REMOTE_ADDR") or "",
            meta.get("HTTP_X_FORWARDED_FOR"),
            meta.get("HTTP_FORWARDED"),
            self.options,
        )


def _builtin_key(name: str, identity: _Identity) -> Callable[[Any], Optional[str]]:
    if name == "ip":
        return lambda request: identity.of(request).key
    if name == "user_or_ip":

        def user_or_ip(request: Any) -> Optional[str]:
            user = getattr(request, "user", None)
            if user is not None and user.is_authenticated:
                return str(user.pk)
            return identity.of(request).key  # type: ignore[no-any-return]

        return user_or_ip
    if name == "global":
        return lambda request: "*"
    raise ImproperlyConfigured(
        "SHMLIMIT['MIDDLEWARE'] KEY %r: expected 'ip', 'user_or_ip', 'global', a callable or a dotted path" % name
    )


def _rules(spec: Any, identity: _Identity) -> List[Rule]:
    if isinstance(spec, dict):
        spec = [spec]
    rules = []
    for i, r in enumerate(spec or ()):
        where = "SHMLIMIT['MIDDLEWARE'][%d]" % i
        bad = sorted(set(r) - _RULE_KEYS)
        if bad:
            raise ImproperlyConfigured(
                "%s: unknown key(s) %s (known: %s)" % (where, ", ".join(bad), ", ".join(sorted(_RULE_KEYS)))
            )
        if not r.get("RATE"):
            raise ImproperlyConfigured("%s: RATE is required (e.g. '100/m')" % where)
        try:
            _shmlimit.parse_rates(str(r["RATE"]))
        except ValueError as e:
            raise ImproperlyConfigured("%s: %s" % (where, e)) from e
        key_spec = r.get("KEY", "ip")
        if isinstance(key_spec, str) and "." not in key_spec:
            key = _builtin_key(key_spec, identity)
        else:
            key = _callable(key_spec, where + " KEY")  # type: ignore[assignment]
        methods = r.get("METHODS")
        rules.append(
            Rule(
                scope=str(r.get("SCOPE") or "middleware%d" % i),
                rate=str(r["RATE"]),
                key=key,
                methods=frozenset(m.upper() for m in methods) if methods is not None else None,
                skip_methods=frozenset(m.upper() for m in r.get("SKIP_METHODS", ())),
                skip_paths=tuple(r.get("SKIP_PATHS", ())),
                skip=_callable(r.get("SKIP"), where + " SKIP"),
                cost=int(r.get("COST", 1)),
                algorithm=r.get("ALGORITHM"),
            )
        )
    return rules


def _add_headers(response: Any, headers: Sequence[Tuple[str, str]]) -> None:
    for name, value in headers:
        if name.lower() == "retry-after" and response.has_header("Retry-After"):
            continue  # DRF's own (the same value, from the same wait)
        response[name] = value


class RateLimitMiddleware:
    """Limits every request by the rules of ``SHMLIMIT["MIDDLEWARE"]``."""

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response
        settings = conf.settings()
        self.identity = _Identity(settings["IDENTITY"] or {})
        self.rules = _rules(settings["MIDDLEWARE"], self.identity)
        self.status = int(settings.get("STATUS", 429))
        self.dry_run = bool(settings.get("DRY_RUN", False))
        conf.header_options()  # validate HEADERS now

    def __call__(self, request: Any) -> Any:
        refused = self._check(request)
        if refused is not None:
            return refused
        response = self.get_response(request)
        _add_headers(response, conf.headers_for(request, self.status, self.dry_run))
        return response

    def _check(self, request: Any) -> Optional[HttpResponse]:
        try:
            if self.identity.access is not None:
                access = self.identity.access.classify(self.identity.of(request).address)
                if access == "deny":
                    return HttpResponse("Forbidden\n", status=403, content_type="text/plain")
                if access == "allow":
                    return None
            rules = [r for r in self.rules if r.applies(request)]
            if not rules:
                return None
            requests = []
            policies: List[conf.BoundPolicy] = []
            for rule in rules:
                ident = rule.key(request)
                if ident is None:
                    continue
                bucket = _shmlimit.throttle_key(rule.scope, str(ident), conf.get_limiter().max_key_bytes)
                for p in conf.registry.bind(rule.scope, rule.rate, rule.algorithm, prefix="mw:"):
                    policies.append(p)
                    requests.append((p.id, bucket, rule.cost))
            if not requests:
                return None
            lim = conf.get_limiter()
            if len(requests) == 1:  # one rule of one rate: lim.acquire_many(requests, each=True), faster
                combined, each = _acquire_many_one(lim, *requests[0])
            else:
                combined, each = lim.acquire_many(requests, each=True)
        except ImproperlyConfigured:
            raise
        except Exception as e:
            if not conf.settings()["FAIL_OPEN"]:
                raise
            conf.registry.log_failure("rate limiting %s %s" % (request.method, request.path), e)
            return None
        conf.record(request, policies, combined, each)
        options = _shmlimit.HttpOptions(refuse_status=self.status, dry_run=self.dry_run)
        verdict = _shmlimit.http_verdict(combined, options)
        if not verdict.refuse:
            return None
        response = HttpResponse("Too Many Requests\n", status=verdict.status, content_type="text/plain")
        _add_headers(response, conf.headers_for(request, self.status, self.dry_run))
        return response


class RateLimitHeadersMiddleware:
    """Adds Retry-After, X-RateLimit-* and RateLimit-Policy / RateLimit to
    responses of views throttled by :mod:`shmlimit.django.throttling`."""

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response
        conf.header_options()

    def __call__(self, request: Any) -> Any:
        response = self.get_response(request)
        try:
            _add_headers(response, conf.headers_for(request))
        except Exception as e:  # headers are advisory: never fail a response for them
            conf.registry.log_failure("rate-limit headers", e)
        return response
