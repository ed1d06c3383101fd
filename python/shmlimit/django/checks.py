"""System checks of the ``SHMLIMIT`` setting and the DRF throttle rates.

| id | what |
|---|---|
| shmlimit.E001 | ``SHMLIMIT`` is not a dict, or has an unknown key (also in ``SCOPES``) |
| shmlimit.E002 | a value shmlimit refuses: algorithm, on-full, wait, burst, headers, numbers, the middleware's rules or identity |
| shmlimit.E003 | a rate of ``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]`` that does not parse |
| shmlimit.E004 | the segment (or ``CONFIG`` file) cannot be opened |
| shmlimit.E005 | a ``sliding_log`` scope whose count exceeds ``LOG_ENTRIES`` |
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

from django.conf import settings as django_settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from .. import _shmlimit
from .._shmlimit import Limiter
from ..errors import Error as ShmlimitError
from ..errors import NotFoundError
from . import conf

_ON_FULL = {"allow", "deny", "open", "closed"}
_WAIT = {"exact", "drf"}
_INTS = ("CAPACITY", "SLOT_BYTES", "MODE", "LOG_ENTRIES")
_FLOATS = ("OPEN_TIMEOUT", "CLAIM_TIMEOUT")


def _err(msg: str, n: int, hint: Optional[str] = None) -> checks.Error:
    return checks.Error(msg, hint=hint, id="shmlimit.E%03d" % n)


def _algorithm(value: Any, where: str, errors: List[checks.CheckMessage]) -> Optional[str]:
    try:
        return _shmlimit.parse_algorithm(str(value))
    except ValueError as e:
        errors.append(_err("%s: %s" % (where, e), 2))
        return None


def _drf_rates() -> Dict[str, Any]:
    drf = getattr(django_settings, "REST_FRAMEWORK", None) or {}
    rates = drf.get("DEFAULT_THROTTLE_RATES") if isinstance(drf, dict) else None
    return rates if isinstance(rates, dict) else {}


@checks.register("shmlimit")
def check_settings(app_configs: Any = None, **kwargs: Any) -> List[checks.CheckMessage]:
    errors: List[checks.CheckMessage] = []
    try:
        s = conf.settings()
    except ImproperlyConfigured as e:
        return [_err(str(e), 1, "doc/django.md lists the keys of SHMLIMIT")]

    for k in _INTS:
        if isinstance(s[k], bool) or not isinstance(s[k], int) or s[k] < 0:
            errors.append(_err("SHMLIMIT[%r] = %r: expected an integer >= 0" % (k, s[k]), 2))
    for k in _FLOATS:
        if isinstance(s[k], bool) or not isinstance(s[k], (int, float)) or not s[k] >= 0:
            errors.append(_err("SHMLIMIT[%r] = %r: expected seconds >= 0" % (k, s[k]), 2))
    default_algo = _algorithm(s["ALGORITHM"], "SHMLIMIT['ALGORITHM']", errors)
    if str(s["ON_FULL"]) not in _ON_FULL:
        errors.append(_err("SHMLIMIT['ON_FULL'] = %r: expected one of %s" % (s["ON_FULL"], sorted(_ON_FULL)), 2))
    if str(s["WAIT"]) not in _WAIT:
        errors.append(_err("SHMLIMIT['WAIT'] = %r: expected 'exact' or 'drf'" % (s["WAIT"],), 2))
    scopes = s["SCOPES"] or {}
    if not isinstance(scopes, dict):
        errors.append(_err("SHMLIMIT['SCOPES'] must be a dict of scope -> options", 2))
        scopes = {}
    scope_algo: Dict[str, Optional[str]] = {}
    for scope, opts in scopes.items():
        where = "SHMLIMIT['SCOPES'][%r]" % (scope,)
        if "ALGORITHM" in opts:
            scope_algo[scope] = _algorithm(opts["ALGORITHM"], where + "['ALGORITHM']", errors)
        if "ON_FULL" in opts and str(opts["ON_FULL"]) not in _ON_FULL:
            errors.append(_err("%s['ON_FULL'] = %r: expected one of %s" % (where, opts["ON_FULL"], sorted(_ON_FULL)), 2))
        if "WAIT" in opts and str(opts["WAIT"]) not in _WAIT:
            errors.append(_err("%s['WAIT'] = %r: expected 'exact' or 'drf'" % (where, opts["WAIT"]), 2))
        burst = opts.get("BURST", 0)
        bursts = burst if isinstance(burst, (list, tuple)) else [burst]
        if any(isinstance(b, bool) or not isinstance(b, int) or b < 0 for b in bursts):
            errors.append(_err("%s['BURST'] = %r: expected an integer >= 0 or a list of them" % (where, burst), 2))
    try:
        conf.header_options()
    except ImproperlyConfigured as e:
        errors.append(_err(str(e), 2))
    try:
        from .middleware import _Identity, _rules

        _rules(s["MIDDLEWARE"], _Identity(s["IDENTITY"] or {}))
    except ImproperlyConfigured as e:
        errors.append(_err(str(e), 2))
    except ImportError:  # pragma: no cover - Django without DRF is fine
        pass

    log_entries = s["LOG_ENTRIES"] if isinstance(s["LOG_ENTRIES"], int) else 0
    for scope, rate in _drf_rates().items():
        if rate is None:
            continue
        try:
            parsed = _shmlimit.parse_rates(str(rate))
        except ValueError as e:
            errors.append(_err("REST_FRAMEWORK['DEFAULT_THROTTLE_RATES'][%r] = %r: %s" % (scope, rate, e), 3))
            continue
        algo = scope_algo.get(scope) or default_algo
        top = max(c for c, _ in parsed)
        if algo == "sliding_log" and not s["CONFIG"] and top > log_entries:
            errors.append(
                _err(
                    "throttle scope %r: sliding_log at %r keeps %d entries per key, SHMLIMIT['LOG_ENTRIES'] is %d"
                    % (scope, rate, top, log_entries),
                    5,
                    "set SHMLIMIT['LOG_ENTRIES'] to at least %d (or another algorithm for this scope)" % top,
                )
            )

    if not errors:
        errors.extend(_check_segment(s))
    return errors


def _check_segment(s: Dict[str, Any]) -> List[checks.CheckMessage]:
    if s["CONFIG"]:
        path = str(s["CONFIG"])
        if not os.access(path, os.R_OK):
            return [_err("SHMLIMIT['CONFIG'] = %r: the file cannot be read" % path, 4)]
        return []
    name = s["SEGMENT"] or conf.default_segment_name()
    try:
        Limiter.open(
            name,
            read_only=True,
            open_timeout=float(s["OPEN_TIMEOUT"]),
            allow_other_users=bool(s["ALLOW_OTHER_USERS"]),
        ).close()
    except NotFoundError:
        return []  # created on first use
    except (ShmlimitError, OSError, ValueError) as e:
        return [_err("SHMLIMIT: the segment %r cannot be opened: %s" % (name, e), 4,
                     "remove it (`shmlimit rm %s`) or fix its owner and mode" % name)]
    return []
