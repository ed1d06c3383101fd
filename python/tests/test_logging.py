"""OncePerPeriodFilter / OncePerPeriodHandler: at most one record per period
across every process."""
from __future__ import annotations

import logging
import os

import pytest

import shmlimit
from forking import run_forked
from shmlimit.logging import OncePerPeriodFilter, OncePerPeriodHandler

S = 1_000_000_000


class ListHandler(logging.Handler):
    def __init__(self):
        super().__init__(logging.ERROR)
        self.records = []

    def emit(self, record):
        self.records.append(record.getMessage())


def _storm(limiter, clock_file, algorithm):
    """Each child: 100 errors through one handler; returns what got through."""

    def child(i):
        inner = ListHandler()
        # the shared virtual clock: every child reads the phase's time
        handler = OncePerPeriodHandler(
            inner,
            period=60,
            limiter=limiter,
            algorithm=algorithm,
            clock=lambda: int(open(clock_file).read()),
        )
        log = logging.getLogger("shmlimit-test-storm-%d-%d" % (os.getpid(), i))
        log.propagate = False
        log.addHandler(handler)
        for n in range(100):
            log.error("boom %d from %d", n, i)
        return inner.records

    return child


@pytest.mark.parametrize("algorithm", ["gcra", "quiet_period"])
def test_four_processes_logging_100_errors_each_emit_one_record_per_period(limiter, tmp_path, algorithm):
    clock_file = tmp_path / "now"
    t0 = limiter.now_ns()
    emitted = []
    for phase in range(3):
        # phases 0 and 1 are a period apart; phase 2 follows phase 1 at once
        now = t0 + {0: 0, 1: 61 * S, 2: 62 * S}[phase]
        clock_file.write_text(str(now))
        per_child = run_forked(4, _storm(limiter, str(clock_file), algorithm))
        emitted.append(sum(len(r) for r in per_child))
    assert emitted == [1, 1, 0]


def test_quiet_period_keeps_a_continuing_storm_quiet_where_gcra_reports_it(limiter):
    clocks = {"now": limiter.now_ns()}
    gates = {
        a: OncePerPeriodFilter(60, limiter=limiter, algorithm=a, clock=lambda: clocks["now"])
        for a in ("gcra", "quiet_period")
    }
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "boom", (), None)
    passed = {a: 0 for a in gates}
    start = clocks["now"]
    for second in range(0, 181, 10):  # an error every 10 s for 3 minutes
        clocks["now"] = start + second * S
        for a, g in gates.items():
            passed[a] += g.filter(record)
    assert passed == {"gcra": 4, "quiet_period": 1}  # t = 0, 60, 120, 180 s; only the first


def test_keys_are_counted_apart(limiter):
    gate = OncePerPeriodFilter(60, limiter=limiter, key=lambda r: r.name)
    mk = lambda name: logging.LogRecord(name, logging.ERROR, __file__, 1, "boom", (), None)  # noqa: E731
    assert [gate.filter(mk("a")), gate.filter(mk("b")), gate.filter(mk("a"))] == [True, True, False]
    assert gate.suppressed == 1


def test_an_unusable_limiter_lets_records_through():
    def broken():
        raise shmlimit.NotFoundError("no segment")

    gate = OncePerPeriodFilter(60, limiter=broken)
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "boom", (), None)
    assert gate.filter(record) and gate.filter(record)
    with pytest.raises(ValueError):
        OncePerPeriodFilter(0)
    with pytest.raises(ValueError):
        OncePerPeriodFilter(60, algorithm="fixed_window")


def test_filter_in_dictconfig_form(limiter):
    inner = ListHandler()
    gate = OncePerPeriodFilter(period=3600, limiter=limiter)
    inner.addFilter(gate)
    log = logging.getLogger("shmlimit-test-dictconfig")
    log.propagate = False
    log.addHandler(inner)
    for _ in range(10):
        log.error("boom")
    assert inner.records == ["boom"]


def test_without_a_limiter_the_filter_uses_the_django_segment():
    from django.test import override_settings

    from conftest import unique_name
    from shmlimit.django import conf

    name = unique_name("log")
    try:
        with override_settings(SHMLIMIT={"SEGMENT": name}):
            gate = OncePerPeriodFilter(period=30)
            record = logging.LogRecord("x", logging.ERROR, __file__, 1, "boom", (), None)
            assert [gate.filter(record) for _ in range(3)] == [True, False, False]
            [p] = conf.get_limiter().policies()
            assert (p["name"], p["rate"], p["burst"]) == (gate.policy_name, "1/30s", 1)
            assert conf.get_limiter().name == name
    finally:
        shmlimit.Limiter.remove(name)
