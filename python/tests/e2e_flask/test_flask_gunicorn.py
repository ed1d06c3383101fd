"""End to end: Flask-Limiter under a real gunicorn with 4 sync workers,
driven by 16 client threads, with the fixed-window and the moving-window
strategies (flask_site.py).

* storage_uri="shmlimit:///...": every worker shares one segment, so each
  strategy admits exactly its allowance (20 per hour) across the workers.
* storage_uri="memory://" (limits' own default): each worker counts alone,
  so the same load admits up to 4x the allowance. How far above depends on
  how the kernel spreads connections over the workers, so it is required
  only to exceed the allowance when at least two workers served; the figure
  is printed and written to $SHMLIMIT_TEST_OUT/e2e_flask_gunicorn.json.

No assertion depends on timing: the period is an hour, so nothing refills
during the run.
"""
from __future__ import annotations

import atexit
import concurrent.futures
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

import shmlimit

pytest.importorskip("flask_limiter")
pytest.importorskip("limits")

HERE = os.path.dirname(os.path.abspath(__file__))
WORKERS = 4
THREADS = 16
REQUESTS = 120  # per strategy
ALLOWANCE = 20
BOOT_TIMEOUT = 90.0
STRATEGIES = ["fixed", "moving"]
RESULTS: dict = {}


def _record(storage, strategy, admitted, serving):
    RESULTS.setdefault(storage, {})[strategy] = {
        "admitted": admitted, "allowance": ALLOWANCE, "requests": REQUESTS, "workers_serving": serving}
    out = os.environ.get("SHMLIMIT_TEST_OUT") or HERE
    with open(os.path.join(out, "e2e_flask_gunicorn.json"), "w") as f:
        json.dump({"workers": WORKERS, "threads": THREADS, "results": RESULTS}, f, indent=2, sort_keys=True)


class Gunicorn:
    """gunicorn on a listening socket we made (no port race), in its own
    process group; stop() kills the group whatever happened."""

    def __init__(self, storage_uri):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        fd = self.sock.fileno()
        env = dict(os.environ)
        env.update(
            E2E_STORAGE_URI=storage_uri,
            E2E_ALLOWANCE=str(ALLOWANCE),
            PYTHONPATH=os.pathsep.join([HERE] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]),
        )
        cmd = [
            "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable,
            "-m", "gunicorn",
            "--workers", str(WORKERS),
            "--worker-class", "sync",
            "--bind", "fd://%d" % fd,
            "--timeout", "120",
            "--graceful-timeout", "5",
            "--log-level", "warning",
            "--preload",
            "flask_site:application",
        ]
        self.proc = subprocess.Popen(cmd, env=env, cwd=HERE, pass_fds=[fd], start_new_session=True)
        self.sock.close()
        atexit.register(self.stop)

    def stop(self):
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=15)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self.proc.poll() is None:
            self.proc.wait(timeout=15)

    def get(self, path, timeout=60.0):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read().decode()
        finally:
            conn.close()

    def wait_for_workers(self):
        """Until WORKERS distinct worker pids have answered."""
        seen = set()
        deadline = time.monotonic() + BOOT_TIMEOUT
        with concurrent.futures.ThreadPoolExecutor(2 * WORKERS) as pool:
            while len(seen) < WORKERS:
                if self.proc.poll() is not None:
                    pytest.fail("gunicorn exited with status %s while booting" % self.proc.returncode)
                if time.monotonic() > deadline:
                    pytest.fail("only %d of %d gunicorn workers answered in %.0f s" % (len(seen), WORKERS, BOOT_TIMEOUT))
                try:
                    got = list(pool.map(lambda _: self.get("/pid?sleep=0.2", timeout=10.0), range(2 * WORKERS)))
                except OSError:
                    time.sleep(0.2)
                    continue
                seen.update(body for status, _, body in got if status == 200)
        return seen


@pytest.fixture(params=["shmlimit", "memory"])
def server(request):
    storage = request.param
    segment = "/shmlimit-e2e-flask-%d" % os.getpid()
    shmlimit.Limiter.remove(segment)
    uri = "shmlimit://%s?capacity=1024&log_entries=%d" % (segment, ALLOWANCE) if storage == "shmlimit" else "memory://"
    g = Gunicorn(uri)
    try:
        workers = g.wait_for_workers()
        yield storage, g, segment, workers
    finally:
        g.stop()
        shmlimit.Limiter.remove(segment)


def test_flask_limiter_under_gunicorn(server):
    storage, g, segment, workers = server
    assert len(workers) == WORKERS
    rows = []
    for strategy in STRATEGIES:
        with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
            responses = list(pool.map(lambda _: g.get("/%s/limited" % strategy), range(REQUESTS)))
        statuses = [s for s, _, _ in responses]
        assert set(statuses) <= {200, 429}, statuses
        admitted = statuses.count(200)
        serving = len({h.get("x-worker-pid") for s, h, _ in responses if s == 200})
        _record(storage, strategy, admitted, serving)
        rows.append((strategy, admitted, serving))
        for s, h, _ in responses:  # Flask-Limiter's headers, from the storage's answers
            assert h["x-ratelimit-limit"] == str(ALLOWANCE), h
            if s == 429:
                assert int(h["retry-after"]) >= 1, h
                assert h["x-ratelimit-remaining"] == "0", h
        if storage == "shmlimit":
            assert admitted == ALLOWANCE, (strategy, admitted)
        else:
            assert ALLOWANCE <= admitted <= WORKERS * ALLOWANCE, (strategy, admitted)
            if serving >= 2:
                assert admitted > ALLOWANCE, (strategy, admitted, serving)
    if storage == "shmlimit":
        # the segment holds what the workers counted: one counter at 20 or
        # more (denied hits count too) and one moving window of 20 entries
        lim = shmlimit.Limiter.open(segment, read_only=True)
        buckets = {b["policy"]: b for b in lim.dump() if b["policy"].startswith("limits.")}
        assert set(buckets) == {"limits.fw.3600000", "limits.mw.%d.3600000" % ALLOWANCE}, buckets
        fixed = lim.peek("limits.fw.3600000", buckets["limits.fw.3600000"]["key"], 0)
        moving = lim.peek("limits.mw.%d.3600000" % ALLOWANCE, buckets["limits.mw.%d.3600000" % ALLOWANCE]["key"], 0)
        assert fixed.limit - fixed.remaining == REQUESTS, fixed
        assert moving.remaining == 0 and moving.limit == ALLOWANCE, moving
        lim.close()
    print("\nFlask-Limiter on %s://, %d gunicorn workers, %d threads x %d requests, %d per hour:"
          % (storage, WORKERS, THREADS, REQUESTS, ALLOWANCE))
    for strategy, admitted, serving in rows:
        print("  %-7s window: admitted %3d of %d (%.2fx; %d workers admitted)"
              % (strategy, admitted, ALLOWANCE, admitted / ALLOWANCE, serving))
