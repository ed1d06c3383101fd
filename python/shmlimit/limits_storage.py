"""The ``shmlimit://`` storage of the ``limits`` library (Flask-Limiter, SlowAPI).

Importing this module registers the scheme, the way ``limits`` registers its
own storages (a ``Storage`` subclass naming ``STORAGE_SCHEME``)::

    import shmlimit.limits_storage  # noqa: F401  (registers shmlimit://)
    from flask_limiter import Limiter
    limiter = Limiter(get_remote_address, app=app, storage_uri="shmlimit:///myapp",
                      strategy="moving-window")

Every worker process that opens ``shmlimit:///myapp`` shares one segment
(``/dev/shm/myapp``), so ``limits``' fixed-window, fixed-window-elastic-expiry
and moving-window strategies are exact across the workers of a prefork
server, with no network round trip. How the storage calls map onto the
segment's policies and keys, what ``capacity`` and ``log_entries`` mean, and
the limits of the mapping: doc/limits.md.

* ``incr(key, expiry, elastic_expiry, amount)`` counts in the policy
  ``limits.fw.<expiry ms>`` (``quiet_period``, count 524,286) with
  ``Limiter.tally``: the count of every hit, the window starting at the
  first and ending ``expiry`` later (elastic: ``expiry`` after the latest).
* ``acquire_entry(key, limit, expiry, amount)`` takes ``amount`` entries of
  the exact sliding log ``limits.mw.<limit>.<expiry ms>`` (``sliding_log``).
* The key is ``limits``' own key (``LIMITER/<identifiers>/<amount>/<multiples>/<granularity>``),
  replaced by ``shmlimit.fit_key``'s digest when longer than the segment's
  ``max_key_bytes``.
"""
from __future__ import annotations

import math
import sys
import time
import urllib.parse
from typing import Any, Dict, List, Optional, Tuple, Union

try:
    from limits.errors import ConfigurationError
    from limits.limits import GRANULARITIES
    from limits.storage import MovingWindowSupport, Storage
except ImportError as _e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "shmlimit.limits_storage needs the limits library (>= 2.8): Debian python3-limits, "
        "or pip install 'shmlimit[limits]' (%s)" % _e) from _e

from ._shmlimit import Decision, Limiter, PolicyId, _acquire, _peek, _tally, fit_key
from .errors import Error, NotFoundError, PolicyConflictError

SCHEME = "shmlimit"
FIXED_PREFIX = "limits.fw."
MOVING_PREFIX = "limits.mw."
#: Largest count a fixed-window counter holds (the quiet period's count).
#: A counter that would pass it stays there and every further hit of its
#: window reports TALLY_MAX + 1, above any limit it can serve.
TALLY_MAX = 524_286

# URI query parameters (and keyword options) -> (type, default) of
# Limiter.open_or_create's arguments.
_OPTIONS: Dict[str, Tuple[type, Any]] = {
    "capacity": (int, 16384),
    "log_entries": (int, 100),
    "slot_bytes": (int, 128),
    "max_probe": (int, 32),
    "mode": (int, 0o600),
    "open_timeout": (float, 2.0),
    "claim_timeout": (float, 0.1),
    "allow_other_users": (bool, False),
}
_ON_FULL = ("allow", "deny")

_SECONDS = {name: item.GRANULARITY.seconds for name, item in GRANULARITIES.items()}


def _parse_bool(name: str, value: Union[str, bool, float]) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError("shmlimit:// option %s=%r is not a boolean (true/false)" % (name, value))


def _parse_option(name: str, value: Union[str, bool, float]) -> Any:
    kind = _OPTIONS[name][0]
    if kind is bool:
        return _parse_bool(name, value)
    try:
        if name == "mode" and isinstance(value, str):
            out: Any = int(value, 8)
        else:
            out = kind(value)
    except (TypeError, ValueError):
        raise ConfigurationError("shmlimit:// option %s=%r is not %s" % (
            name, value, "an octal mode" if name == "mode" else "a number")) from None
    if isinstance(out, float) and not (math.isfinite(out) and out >= 0):
        raise ConfigurationError("shmlimit:// option %s=%r must be a finite number >= 0" % (name, value))
    if isinstance(out, int) and out < 0:
        raise ConfigurationError("shmlimit:// option %s=%r must be >= 0" % (name, value))
    return out


def parse_uri(uri: str, **options: Union[str, bool, float]) -> Tuple[str, Dict[str, Any], str]:
    """``shmlimit:///name?capacity=...`` -> (segment name, open_or_create
    arguments, on_full). Keyword options (Flask-Limiter's ``storage_options``)
    override the query. Raises ConfigurationError with the reason."""
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme != SCHEME:
        raise ConfigurationError("not a shmlimit:// URI: %r" % uri)
    if parts.netloc:
        raise ConfigurationError(
            "shmlimit:// URI %r names a host (%r): a segment is local; write shmlimit:///%s"
            % (uri, parts.netloc, parts.netloc + parts.path.lstrip("/")))
    name = urllib.parse.unquote(parts.path)
    if not name.startswith("/") or len(name) < 2 or "/" in name[1:]:
        raise ConfigurationError(
            "shmlimit:// URI %r: the path must be one segment name, as in shmlimit:///myapp" % uri)
    given: Dict[str, Union[str, bool, float]] = {}
    try:
        pairs = urllib.parse.parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise ConfigurationError("shmlimit:// URI %r: malformed query %r" % (uri, parts.query)) from None
    for key, value in pairs:
        given[key] = value
    given.update(options)
    on_full = str(given.pop("on_full", "allow"))
    if on_full not in _ON_FULL:
        raise ConfigurationError("shmlimit:// option on_full=%r is not 'allow' or 'deny'" % on_full)
    unknown = sorted(set(given) - set(_OPTIONS))
    if unknown:
        raise ConfigurationError("shmlimit:// URI %r: unknown option(s) %s; known: %s"
                                 % (uri, ", ".join(unknown), ", ".join(sorted(list(_OPTIONS) + ["on_full"]))))
    args: Dict[str, Any] = {k: default for k, (_, default) in _OPTIONS.items()}
    for option, setting in given.items():
        args[option] = _parse_option(option, setting)
    return name, args, on_full


def _gives_capacity(uri: str, options: Dict[str, Any]) -> bool:
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(uri).query, keep_blank_values=True)
    return "capacity" in options or "capacity" in query


def _open(name: str, args: Dict[str, Any], explicit_capacity: bool) -> Limiter:
    """Opens the segment as it is (checking the capacity only when the URI
    gives one), or creates it with `args` when there is none."""
    try:
        return Limiter.open(name, capacity=args["capacity"] if explicit_capacity else 0,
                            open_timeout=args["open_timeout"], claim_timeout=args["claim_timeout"],
                            allow_other_users=args["allow_other_users"])
    except NotFoundError:
        return Limiter.open_or_create(name, **args)


def _ms(expiry: Union[int, float]) -> int:
    """An expiry in seconds as whole ms (>= 1), for the policy's name and period."""
    if isinstance(expiry, bool) or not isinstance(expiry, (int, float)) or not math.isfinite(expiry):
        raise ValueError("expiry must be a number of seconds, not %r" % (expiry,))
    ms = round(expiry * 1000)
    if ms < 1:
        raise ValueError("expiry must be at least 1 ms, not %r s" % (expiry,))
    return ms


def _amount(amount: int) -> int:
    if isinstance(amount, bool) or not isinstance(amount, int) or not 0 <= amount < 2**63:
        raise ValueError("amount must be an int between 0 and 2^63 - 1, not %r" % (amount,))
    return amount


def expiry_of_key(key: str) -> Optional[int]:
    """The expiry (s) that ``limits`` builds into a key
    (``.../<amount>/<multiples>/<granularity>``), or None."""
    parts = key.rsplit("/", 3)
    if len(parts) == 4 and parts[1].isdigit() and parts[2].isdigit() and parts[3] in _SECONDS:
        return int(parts[2]) * _SECONDS[parts[3]]
    return None


class ShmlimitStorage(Storage, MovingWindowSupport):
    """``limits`` storage in a shmlimit segment, shared by every process
    that opens the same ``shmlimit:///name``. Process- and thread-safe; a
    storage opened before ``fork()`` works in the children."""

    STORAGE_SCHEME = [SCHEME]

    def __init__(self, uri: str = "shmlimit:///limits", **options: Union[str, bool, float]) -> None:
        name, args, on_full = parse_uri(uri, **options)
        try:
            self._lim = _open(name, args, explicit_capacity=_gives_capacity(uri, options))
        except Error as e:
            raise ConfigurationError("shmlimit:// cannot open segment %s: %s" % (name, e)) from e
        self._on_full = on_full
        self._ids: Dict[str, PolicyId] = {}
        self.segment = name
        super().__init__(uri, **options)

    # ---- helpers ---------------------------------------------------------
    @property
    def limiter(self) -> Limiter:
        """The segment's Limiter (shmlimit's own API on the same buckets)."""
        return self._lim

    def _key(self, key: str) -> str:
        return fit_key(key, self._lim.max_key_bytes)

    def _policy(self, name: str, algorithm: str, count: int, ms: int) -> PolicyId:
        pid = self._ids.get(name)
        if pid is None:
            try:
                pid = self._lim.add_policy(name, algorithm, (count, ms / 1000.0), on_full=self._on_full)
            except (Error, ValueError) as e:  # shmlimit's errors; a rate out of range
                if algorithm == "sliding_log":
                    raise ConfigurationError(
                        "shmlimit:// moving window of %d per %g s: %s (a moving window of N needs "
                        "the segment's log_entries >= N: shmlimit:///name?log_entries=N, "
                        "given when the segment is created)" % (count, ms / 1000.0, e)) from e
                hint = ""
                if isinstance(e, PolicyConflictError):
                    hint = " (every process sharing the segment must give the same on_full; this one gives %r)" % (
                        self._on_full,)
                raise ConfigurationError("shmlimit:// policy %s: %s%s" % (name, e, hint)) from e
            self._ids[name] = pid
        return pid

    def _fixed(self, expiry: Union[int, float]) -> PolicyId:
        ms = _ms(expiry)
        return self._policy("%s%d" % (FIXED_PREFIX, ms), "quiet_period", TALLY_MAX, ms)

    def _moving(self, limit: int, expiry: Union[int, float]) -> PolicyId:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError("limit must be an int >= 1, not %r" % (limit,))
        ms = _ms(expiry)
        return self._policy("%s%d.%d" % (MOVING_PREFIX, limit, ms), "sliding_log", limit, ms)

    def _find(self, name: str) -> Optional[PolicyId]:
        """A policy registered by this or another process, or None."""
        pid = self._ids.get(name)
        if pid is None:
            pid = self._lim.find_policy(name)
            if pid is not None:
                self._ids[name] = pid
        return pid

    def _ours(self, prefix: Tuple[str, ...] = (FIXED_PREFIX, MOVING_PREFIX)) -> List[str]:
        return [p["name"] for p in self._lim.policies() if p["name"].startswith(prefix)]

    def _fixed_candidates(self, key: str) -> List[str]:
        expiry = expiry_of_key(key)
        if expiry is not None:
            return ["%s%d" % (FIXED_PREFIX, expiry * 1000)]
        return self._ours((FIXED_PREFIX,))

    def _open_counter(self, key: str) -> Optional[Decision]:
        """The report of the fixed-window counter holding `key`, if any."""
        k = self._key(key)
        for name in self._fixed_candidates(key):
            pid = self._find(name)
            if pid is None:
                continue
            d = _tally(self._lim, pid, k, 0, False)  # self._lim.tally(pid, k, 0), faster
            if d.reason == "ok" and d.remaining < d.limit:
                return d
        return None

    @staticmethod
    def _count(d: Decision, amount: int) -> int:
        if d.reason != "ok":  # table full, key too long, ...: the policy's on_full
            return amount if d.allowed else sys.maxsize
        return d.limit - d.remaining if d.allowed else TALLY_MAX + 1

    # ---- Storage ---------------------------------------------------------
    def incr(self, key: str, expiry: int, elastic_expiry: bool = False, amount: int = 1) -> int:
        """Counts `amount` hits of `key` in its window of `expiry` seconds,
        which starts at the first hit (elastic: restarts at every hit), and
        returns the count: one CAS in the segment, exact across processes."""
        # self._lim.tally(id, key, amount, restart=...), faster
        d = _tally(self._lim, self._fixed(expiry), self._key(key), _amount(amount), bool(elastic_expiry))
        return self._count(d, amount)

    def get(self, key: str) -> int:
        d = self._open_counter(key)
        return 0 if d is None else d.limit - d.remaining

    def get_expiry(self, key: str) -> int:
        d = self._open_counter(key)
        now = time.time()
        return int(now if d is None else now + d.reset_after_ns / 1e9)

    def check(self) -> bool:
        return not self._lim.closed

    def reset(self) -> Optional[int]:
        """Forgets every counter and moving window of this storage's
        policies in the segment; returns how many buckets held state."""
        return sum(self._lim.reset(name) for name in self._ours())

    def clear(self, key: str) -> None:
        k = self._key(key)
        for name in self._ours():
            self._lim.reset(name, k)

    # ---- MovingWindowSupport ---------------------------------------------
    def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        """Takes `amount` entries of `key`'s moving window if fewer than
        `limit` would then be younger than `expiry` seconds: all or none,
        exact across processes."""
        # self._lim.acquire(id, key, amount), faster
        return bool(_acquire(self._lim, self._moving(limit, expiry), self._key(key), _amount(amount)))

    def get_moving_window(self, key: str, limit: int, expiry: int) -> Tuple[int, int]:
        """(time of the latest entry still in the window, entries in the
        window), as ``limits``' memory and Redis storages report it;
        (now, 0) when the window is empty."""
        now = time.time()
        ms = _ms(expiry)
        name = "%s%d.%d" % (MOVING_PREFIX, limit, ms)
        pid = self._find(name)
        if pid is None:
            return int(now), 0
        d = _peek(self._lim, pid, self._key(key), 0)  # self._lim.peek(pid, key, 0), faster
        live = d.limit - d.remaining if d.reason == "ok" else 0
        if live <= 0:
            return int(now), 0
        return int(now + d.reset_after_ns / 1e9 - ms / 1000.0), live

    def __repr__(self) -> str:
        return "ShmlimitStorage(%r)" % self.segment
