"""End to end: a real gunicorn with 4 sync workers serving a DRF site
(e2e_site/), driven by 16 client threads.

* With shmlimit's throttles every scope admits exactly its allowance across
  the workers, and every 429 carries a correct Retry-After and rate-limit
  headers. The segment is opened in gunicorn's master before it forks
  (--preload), so the workers use a Limiter opened before fork().
* With DRF's own throttles and its default per-process cache (LocMemCache),
  the same load admits more: each worker counts on its own. That figure
  depends on how the kernel spreads connections over the workers, so it is
  only required to exceed the allowance; it is printed and written to
  $SHMLIMIT_TEST_OUT/e2e_gunicorn.json.

No assertion depends on timing: periods are an hour or a day, so nothing
refills during the run, and the Retry-After bounds below hold however slow
the machine is.
"""
from __future__ import annotations

import atexit
import concurrent.futures
import http.client
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

import shmlimit

HERE = os.path.dirname(os.path.abspath(__file__))
WORKERS = 4
THREADS = 16
REQUESTS = 120  # per scenario
BOOT_TIMEOUT = 90.0

# name, path, request headers for request i, allowance, policy and key to peek
SCENARIOS = [
    # anonymous by address: NUM_PROXIES = 1, so the client is the last
    # X-Forwarded-For entry; the spoofable part rotates and must not matter
    ("anon", "/anon", lambda i: {"X-Forwarded-For": "198.51.100.%d, 203.0.113.7" % (i % 250)}, 20,
     "drf:anon", "throttle_anon_203.0.113.7"),
    ("user", "/user", lambda i: {"X-User": "42"}, 25, "drf:user", "throttle_user_42"),
    ("scoped", "/uploads", lambda i: {"X-Forwarded-For": "203.0.113.8"}, 15,
     "drf:uploads", "throttle_uploads_203.0.113.8"),
    ("burst+sustained", "/burst", lambda i: {"X-Forwarded-For": "203.0.113.9"}, 12,
     "drf:api", "throttle_api_203.0.113.9"),
]

RESULTS: dict = {}


def _results_path():
    out = os.environ.get("SHMLIMIT_TEST_OUT") or HERE
    return os.path.join(out, "e2e_gunicorn.json")


def _record(mode, name, admitted, allowance, workers_seen):
    RESULTS.setdefault(mode, {})[name] = {
        "admitted": admitted,
        "allowance": allowance,
        "requests": REQUESTS,
        "workers_serving": workers_seen,
    }
    with open(_results_path(), "w") as f:
        json.dump({"workers": WORKERS, "threads": THREADS, "results": RESULTS}, f, indent=2, sort_keys=True)


class Gunicorn:
    """gunicorn on a listening socket we made (no port race), in its own
    process group; stop() kills the group whatever happened."""

    def __init__(self, mode, segment):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        fd = self.sock.fileno()
        env = dict(os.environ)
        env.update(
            E2E_MODE=mode,
            E2E_SEGMENT=segment,
            DJANGO_SETTINGS_MODULE="e2e_site.settings",
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
            "e2e_site.wsgi:application",
        ]
        self.proc = subprocess.Popen(cmd, env=env, cwd=HERE, pass_fds=[fd], start_new_session=True)
        # gunicorn holds the socket now; without our copy, connections are
        # refused (not left waiting) if it dies
        self.sock.close()
        atexit.register(self.stop)

    def stop(self):
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGTERM)  # the master stops its workers
                self.proc.wait(timeout=15)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # workers left behind, if any
        except ProcessLookupError:
            pass
        if self.proc.poll() is None:
            self.proc.wait(timeout=15)

    def get(self, path, headers=None, timeout=60.0):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("GET", path, headers=headers or {})
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


@pytest.fixture(params=["shmlimit", "drf"])
def server(request):
    mode = request.param
    segment = "/shmlimit-e2e-%d-%s" % (os.getpid(), mode)
    shmlimit.Limiter.remove(segment)
    g = Gunicorn(mode, segment)
    try:
        workers = g.wait_for_workers()
        yield mode, g, segment, workers
    finally:
        g.stop()
        shmlimit.Limiter.remove(segment)


def drive(g, path, headers_of):
    with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
        return list(pool.map(lambda i: g.get(path, headers_of(i)), range(REQUESTS)))


def test_gunicorn_workers_share_one_exact_limit(server):
    mode, g, segment, workers = server
    assert len(workers) == WORKERS
    rows = []
    for name, path, headers_of, allowance, policy, key in SCENARIOS:
        start = time.monotonic()
        responses = drive(g, path, headers_of)
        elapsed = time.monotonic() - start
        statuses = [s for s, _, _ in responses]
        assert set(statuses) <= {200, 429}, statuses
        admitted = statuses.count(200)
        serving = {h["x-worker-pid"] for _, h, _ in responses}
        _record(mode, name, admitted, allowance, len(serving))
        rows.append((name, allowance, admitted, len(serving)))
        refused = [(h, body) for s, h, body in responses if s == 429]
        for h, body in refused:  # DRF's own Retry-After and message, in both modes
            assert int(h["retry-after"]) >= 1
            assert "Expected available in %s second" % h["retry-after"] in body
        if mode == "shmlimit":
            assert admitted == allowance, (name, admitted)
            check_headers(segment, name, policy, key, allowance, refused, elapsed)
        else:
            # each worker counts alone: more than the allowance as soon as two
            # workers served this key, up to WORKERS times the allowance
            assert len(serving) >= 2, (name, serving)
            assert allowance < admitted <= WORKERS * allowance, (name, admitted)
    print("\n%s throttles, %d gunicorn workers, %d threads x %d requests:" % (mode, WORKERS, THREADS, REQUESTS))
    for name, allowance, admitted, serving in rows:
        print("  %-16s allowance %3d  admitted %3d  (%.2fx, %d workers served)"
              % (name, allowance, admitted, admitted / allowance, serving))


def check_headers(segment, name, policy, key, allowance, refused, elapsed):
    """Every 429 of the shmlimit run: Retry-After between the bucket's wait
    now (after the run) and that wait plus the run's length (a wait only
    shrinks as time passes); the X-RateLimit and RateLimit fields."""
    lim = shmlimit.Limiter.open(segment, read_only=True)
    now = lim.peek(policy, key)
    assert not now.allowed
    lo = math.ceil(now.retry_after)
    hi = math.ceil(now.retry_after + elapsed) + 1
    assert len(refused) == REQUESTS - allowance
    for h, _ in refused:
        assert lo <= int(h["retry-after"]) <= hi, (name, h["retry-after"], lo, hi)
        assert h["x-ratelimit-limit"] == str(allowance)
        assert h["x-ratelimit-remaining"] == "0"
        assert int(h["x-ratelimit-reset"]) >= int(h["retry-after"])
        assert h["ratelimit-policy"].startswith('"%s";q=%d;w=' % (policy, allowance))
        assert h["ratelimit"].startswith('"%s";r=0;t=' % policy)
    if name == "burst+sustained":
        # all or nothing: the refusals by the hourly rate charged nothing
        # to the daily one (30/day), which holds exactly 30 - 12
        assert lim.peek(policy + ".2", key, 0).remaining == 30 - allowance
        assert "%s.2" % policy in refused[0][0]["ratelimit-policy"]
    lim.close()
