"""End to end under uWSGI: the DRF site of test_gunicorn.py served by
``uwsgi --master --processes 4`` (the application loaded in the master, then
forked), with ``--max-requests`` low enough that workers are recycled (a new
worker forked from the master) in the middle of the load.

* shmlimit's throttles: every scope admits exactly its allowance across the
  workers, recycled ones included, with correct Retry-After and headers.
* DRF's throttles with its default per-process cache: more than the
  allowance (each worker counts alone, and a recycled worker starts from
  nothing). Figures in $SHMLIMIT_TEST_OUT/e2e_uwsgi.json.

No assertion depends on timing (periods of an hour or a day).
"""
from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

import shmlimit
from test_gunicorn import HERE, REQUESTS, SCENARIOS, WORKERS, Gunicorn, check_headers, drive

UWSGI_BIN = shutil.which("uwsgi")
MAX_REQUESTS = 40  # 4 x 120 requests over 4 workers: some worker is recycled mid-load
RESULTS: dict = {}

pytestmark = pytest.mark.skipif(UWSGI_BIN is None, reason="uwsgi (Debian uwsgi-core, uwsgi-plugin-python3) is not installed")


def _record(mode, name, admitted, allowance, pids):
    RESULTS.setdefault(mode, {})[name] = {"admitted": admitted, "allowance": allowance, "requests": REQUESTS,
                                          "worker_pids_serving": pids}
    out = os.environ.get("SHMLIMIT_TEST_OUT") or HERE
    with open(os.path.join(out, "e2e_uwsgi.json"), "w") as f:
        json.dump({"processes": WORKERS, "max_requests": MAX_REQUESTS, "results": RESULTS}, f, indent=2, sort_keys=True)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class UWSGI(Gunicorn):
    """uwsgi --master --processes 4 in its own process group (get(),
    wait_for_workers() and stop() are the gunicorn harness's)."""

    def __init__(self, mode, segment):  # noqa: D107 - replaces Gunicorn's
        env = dict(os.environ)
        env.update(
            E2E_MODE=mode,
            E2E_SEGMENT=segment,
            DJANGO_SETTINGS_MODULE="e2e_site.settings",
            PYTHONPATH=os.pathsep.join([HERE] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]),
        )
        # uWSGI binds by address (it adopts no listening socket of ours):
        # retry if another process took the free port in between
        for _ in range(5):
            self.port = _free_port()
            cmd = [
                UWSGI_BIN, "--plugin", "python3", "--master", "--processes", str(WORKERS),
                "--http-socket", "127.0.0.1:%d" % self.port,
                "--module", "e2e_site.wsgi:application", "--chdir", HERE,
                "--need-app", "--die-on-term", "--max-requests", str(MAX_REQUESTS),
                # uWSGI recycles no worker younger than this (default 10 s)
                "--min-worker-lifetime", "1",
                "--listen", "100", "--disable-logging", "--logto", os.devnull,
            ]
            self.proc = subprocess.Popen(cmd, env=env, cwd=HERE, start_new_session=True)
            atexit.register(self.stop)
            if self._listening():
                return
            self.stop()
        pytest.fail("uwsgi did not start (see its output)")

    def _listening(self):
        deadline = time.monotonic() + 60.0
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1.0).close()
                return True
            except OSError:
                time.sleep(0.1)
        return False


@pytest.fixture(params=["shmlimit", "drf"])
def server(request):
    mode = request.param
    segment = "/shmlimit-e2e-uwsgi-%d-%s" % (os.getpid(), mode)
    shmlimit.Limiter.remove(segment)
    u = UWSGI(mode, segment)
    try:
        workers = u.wait_for_workers()
        yield mode, u, segment, workers
    finally:
        u.stop()
        shmlimit.Limiter.remove(segment)


def test_uwsgi_workers_share_one_exact_limit_across_recycling(server):
    mode, u, segment, workers = server
    assert len(workers) == WORKERS
    all_pids = set()
    rows = []
    for name, path, headers_of, allowance, policy, key in SCENARIOS:
        start = time.monotonic()
        responses = drive(u, path, headers_of)
        elapsed = time.monotonic() - start
        statuses = [s for s, _, _ in responses]
        assert set(statuses) <= {200, 429}, statuses
        admitted = statuses.count(200)
        pids = {h["x-worker-pid"] for _, h, _ in responses}
        all_pids |= pids
        _record(mode, name, admitted, allowance, len(pids))
        rows.append((name, allowance, admitted, len(pids)))
        refused = [(h, body) for s, h, body in responses if s == 429]
        for h, body in refused:
            assert int(h["retry-after"]) >= 1
            assert "Expected available in %s second" % h["retry-after"] in body
        if mode == "shmlimit":
            assert admitted == allowance, (name, admitted)
            check_headers(segment, name, policy, key, allowance, refused, elapsed)
    if mode != "shmlimit":
        # The control: DRF's per-process cache over-admits in aggregate. A
        # single scenario may happen to be served by one worker (the kernel
        # hands connections to whichever worker accepts first), so the
        # comparison is over the whole run.
        assert len(all_pids) >= 2, all_pids
        assert sum(r[2] for r in rows) > sum(r[1] for r in rows), rows
    # more worker processes served than there are slots: workers were
    # recycled by --max-requests during the load (480 requests > 4 x 40)
    assert len(all_pids | set(workers)) > WORKERS, all_pids
    print("\n%s throttles, uwsgi --processes %d --max-requests %d (%d worker pids served):"
          % (mode, WORKERS, MAX_REQUESTS, len(all_pids | set(workers))))
    for name, allowance, admitted, serving in rows:
        print("  %-16s allowance %3d  admitted %3d  (%.2fx, %d workers served)"
              % (name, allowance, admitted, admitted / allowance, serving))
