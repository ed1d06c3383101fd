"""Test helpers: a fresh, empty segment per test.

The segment outlives the processes that use it (that is its point), so a
test suite run twice would otherwise find the first run's buckets, full.
Each helper points the ``SHMLIMIT`` setting at a new segment (same other
keys), and removes that segment afterwards::

    from shmlimit.django.testing import FreshSegmentMixin, fresh_segment

    class ApiTests(FreshSegmentMixin, TestCase):
        def test_throttled(self): ...

    def test_with_pytest(client):
        with fresh_segment() as limiter:
            ...

    @pytest.fixture(autouse=True)
    def _shmlimit_segment():
        with fresh_segment():
            yield

``reset()`` empties the buckets of the configured segment instead (every
process using it sees the change).
"""
from __future__ import annotations

import contextlib
import itertools
import os
from typing import Any, Iterator, Optional

from django.conf import settings as django_settings
from django.test.utils import override_settings

from .._shmlimit import Limiter, PolicyId
from . import conf

__all__ = ["FreshSegmentMixin", "fresh_segment", "reset"]

_counter = itertools.count()


@contextlib.contextmanager
def fresh_segment(**overrides: Any) -> Iterator[Limiter]:
    """Within the block, ``SHMLIMIT`` names a new segment (created on entry,
    removed on exit) and has ``overrides`` applied on top of the current
    setting (e.g. ``ALGORITHM="sliding_log"``); ``CONFIG`` is dropped. Yields
    the segment's Limiter. Works with ``override_settings`` (nests inside and
    outside it) and with forked worker processes opened within the block."""
    current = dict(getattr(django_settings, "SHMLIMIT", None) or {})
    current.pop("CONFIG", None)
    current.update(overrides)
    name = "/shmlimit-test-%d-%d" % (os.getpid(), next(_counter))
    current["SEGMENT"] = name
    Limiter.remove(name)
    try:
        with override_settings(SHMLIMIT=current):
            yield conf.get_limiter()
    finally:
        conf.registry.clear()
        Limiter.remove(name)


class FreshSegmentMixin:
    """A ``unittest``/Django ``TestCase`` mixin: every test runs on a fresh
    segment (:func:`fresh_segment`). ``shmlimit_overrides`` (a dict class
    attribute) is applied to the setting; ``self.shmlimit`` is the Limiter."""

    shmlimit_overrides: dict = {}
    shmlimit: Limiter

    def setUp(self) -> None:
        cm = fresh_segment(**self.shmlimit_overrides)
        self.shmlimit = cm.__enter__()
        self.addCleanup(cm.__exit__, None, None, None)  # type: ignore[attr-defined]
        super().setUp()  # type: ignore[misc]


def reset(policy: Optional[str] = None, key: Optional[str] = None) -> int:
    """Empties the buckets of the configured segment: all, one policy's
    (``"drf:anon"``) or one key's of a policy. Returns how many were reset."""
    lim = conf.get_limiter()
    ref: Optional[PolicyId] = None
    if policy is not None:
        ref = lim.find_policy(policy)
        if ref is None:
            return 0
    return lim.reset(ref, key)
