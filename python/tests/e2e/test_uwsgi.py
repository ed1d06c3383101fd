"""End to end under uWSGI: the DRF site of test_gunicorn.py served by
``uwsgi --master --processes 4`` (the application loaded in the master, then
forked), with ``--max-requests 20 --min-worker-lifetime 0``: every worker
process serves at most 20 requests, then the master forks its replacement.
The 4 workers alive when a scenario of 120 requests starts serve at most 80
of them, so at least 40 are served by workers forked during the scenario,
after it started counting.

* shmlimit's throttles: every scope admits exactly its allowance across the
  workers, recycled ones included, with correct Retry-After and headers; the
  workers forked mid-scenario refuse.
* DRF's throttles with its default per-process cache: more than the
  allowance (each worker counts alone, and a worker forked mid-scenario
  starts from nothing and admits). Figures in $SHMLIMIT_TEST_OUT/e2e_uwsgi.json.

The workers alive before each scenario, and the count of respawns, are the
master's own (its stats server). No assertion depends on timing (periods of
an hour or a day; the waits poll with generous bounds).
"""
from __future__ import annotations

import atexit
import collections
import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time

import pytest

import shmlimit
from test_gunicorn import HERE, REQUESTS, SCENARIOS, WORKERS, Gunicorn, check_headers, drive

UWSGI_BIN = shutil.which("uwsgi")
# Every worker process serves at most MAX_REQUESTS requests: with
# --min-worker-lifetime 0, uWSGI recycles a worker right after its
# MAX_REQUESTS-th request however young it is. The WORKERS workers alive when
# a scenario starts can therefore serve at most WORKERS * MAX_REQUESTS (80) of
# its REQUESTS (120): the others are served by workers forked during it.
MAX_REQUESTS = 20
# ... and more of them than the largest allowance: under shmlimit, some of
# those refuse
assert REQUESTS - WORKERS * MAX_REQUESTS > max(s[3] for s in SCENARIOS)
SETTLE_TIMEOUT = 90.0  # for the master to replace the workers that reached MAX_REQUESTS
STATS_TIMEOUT = 30.0  # one answer of the stats server
RESULTS: dict = {}

pytestmark = pytest.mark.skipif(UWSGI_BIN is None, reason="uwsgi (Debian uwsgi-core, uwsgi-plugin-python3) is not installed")


def _record(mode, name, admitted, allowance, pids, fresh):
    RESULTS.setdefault(mode, {})[name] = {"admitted": admitted, "allowance": allowance, "requests": REQUESTS,
                                          "worker_pids_serving": pids, "served_by_workers_forked_during_it": fresh}
    out = os.environ.get("SHMLIMIT_TEST_OUT") or HERE
    with open(os.path.join(out, "e2e_uwsgi.json"), "w") as f:
        json.dump({"processes": WORKERS, "max_requests": MAX_REQUESTS, "results": RESULTS}, f, indent=2, sort_keys=True)


class UWSGI(Gunicorn):
    """uwsgi --master --processes 4 in its own process group, with its stats
    server on a Unix socket: the master's own list of its workers (get() and
    stop() are the gunicorn harness's)."""

    def __init__(self, mode, segment):  # noqa: D107 - replaces Gunicorn's
        env = dict(os.environ)
        env.update(
            E2E_MODE=mode,
            E2E_SEGMENT=segment,
            DJANGO_SETTINGS_MODULE="e2e_site.settings",
            PYTHONPATH=os.pathsep.join([HERE] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]),
        )
        self.tmp = tempfile.mkdtemp(prefix="shmlimit-e2e-uwsgi-")
        self.stats_path = os.path.join(self.tmp, "stats")
        cmd = [
            UWSGI_BIN, "--plugin", "python3", "--master", "--processes", str(WORKERS),
            # a port chosen by the kernel, read back from the stats server
            "--http-socket", "127.0.0.1:0",
            "--stats", self.stats_path,
            "--module", "e2e_site.wsgi:application", "--chdir", HERE,
            "--need-app", "--die-on-term", "--max-requests", str(MAX_REQUESTS),
            # uWSGI recycles no worker younger than this (10 s by default,
            # counted from a whole second): with 1, a load of a second or less
            # could end before any worker was allowed to go
            "--min-worker-lifetime", "0",
            # uWSGI pauses 2 s when more than --processes workers are
            # respawned within about a second; a SIGTERM during that pause
            # leaves the worker respawned after it running, so uwsgi only
            # stops when stop() kills its group 15 s later
            "--forkbomb-delay", "0",
            "--listen", "100", "--disable-logging", "--logto", os.devnull,
        ]
        self.proc = subprocess.Popen(cmd, env=env, cwd=HERE, start_new_session=True)
        atexit.register(self.stop)
        stats = self.settled()
        self.port = int(stats["sockets"][0]["name"].rsplit(":", 1)[1])

    def stop(self):
        super().stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def stats(self):
        """The master's stats, or None while it serves none yet."""
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(STATS_TIMEOUT)
                s.connect(self.stats_path)
                chunks = []
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    chunks.append(chunk)
        except (FileNotFoundError, ConnectionRefusedError):
            return None
        return json.loads(b"".join(chunks))

    def settled(self):
        """The master's stats once each of its WORKERS workers is accepting,
        idle and below MAX_REQUESTS (the master has replaced those that
        reached it): every worker listed then exits only after serving
        another request. Polls the stats server, which also wakes the master
        (it otherwise looks for dead workers once a second)."""
        deadline = time.monotonic() + SETTLE_TIMEOUT
        workers = None
        while True:
            if self.proc.poll() is not None:
                pytest.fail("uwsgi exited with status %s" % self.proc.returncode)
            stats = self.stats()
            if stats is not None:
                workers = [(w["pid"], w["accepting"], w["status"], w["delta_requests"]) for w in stats["workers"]]
                if len(workers) == WORKERS and all(pid > 0 and accepting and status == "idle" and served < MAX_REQUESTS
                                                   for pid, accepting, status, served in workers):
                    return stats
            if time.monotonic() > deadline:
                pytest.fail("uwsgi's workers (pid, accepting, status, requests) not all ready in %.0f s: %s"
                            % (SETTLE_TIMEOUT, workers))
            time.sleep(0.02)

    @contextlib.contextmanager
    def master_awake(self):
        """Asks the master for its stats every 20 ms meanwhile. Each request
        wakes it, and it then replaces the workers that reached MAX_REQUESTS
        at once rather than at its next once-a-second check (a speed-up:
        without it, each round of recycling stalls the load up to a second)."""
        done = threading.Event()

        def poke():
            while not done.wait(0.02):
                try:
                    self.stats()
                except (OSError, ValueError):
                    pass  # settled() reports a master that stopped answering

        thread = threading.Thread(target=poke, daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()

    def worker_pids(self):
        """The pids of the workers once settled()."""
        return {w["pid"] for w in self.settled()["workers"]}


@pytest.fixture(params=["shmlimit", "drf"])
def server(request):
    mode = request.param
    segment = "/shmlimit-e2e-uwsgi-%d-%s" % (os.getpid(), mode)
    shmlimit.Limiter.remove(segment)
    u = UWSGI(mode, segment)
    try:
        yield mode, u, segment
    finally:
        u.stop()
        shmlimit.Limiter.remove(segment)


def test_uwsgi_workers_share_one_exact_limit_across_recycling(server):
    mode, u, segment = server
    first = u.settled()["workers"]
    assert len(first) == WORKERS
    served = collections.Counter()  # responses per worker pid over the run
    rows = []
    for name, path, headers_of, allowance, policy, key in SCENARIOS:
        # the workers alive now, each below MAX_REQUESTS: any other pid that
        # answers below was forked during the scenario, after one of these
        # reached MAX_REQUESTS on one of its requests
        alive = u.worker_pids()
        start = time.monotonic()
        with u.master_awake():
            responses = drive(u, path, headers_of)
        elapsed = time.monotonic() - start
        statuses = [s for s, _, _ in responses]
        assert set(statuses) <= {200, 429}, statuses
        admitted = statuses.count(200)
        pids = [int(h["x-worker-pid"]) for _, h, _ in responses]
        served.update(pids)
        # --max-requests recycles every worker process after exactly that many
        assert max(served.values()) <= MAX_REQUESTS, served
        fresh = [s for s, pid in zip(statuses, pids) if pid not in alive]
        # hence at least 120 - 4 x 20 of the requests were served by workers
        # forked mid-scenario
        assert len(fresh) >= REQUESTS - WORKERS * MAX_REQUESTS, (name, len(fresh))
        _record(mode, name, admitted, allowance, len(set(pids)), len(fresh))
        rows.append((name, allowance, admitted, len(set(pids)), len(fresh), fresh.count(429)))
        refused = [(h, body) for s, h, body in responses if s == 429]
        for h, body in refused:
            assert int(h["retry-after"]) >= 1
            assert "Expected available in %s second" % h["retry-after"] in body
        if mode == "shmlimit":
            assert admitted == allowance, (name, admitted)
            check_headers(segment, name, policy, key, allowance, refused, elapsed)
            # the workers forked mid-scenario refused (they served more than
            # the allowance): they decided on the counts of the workers they
            # replaced
            assert fresh.count(429) > 0, (name, fresh)
        else:
            # a worker forked mid-scenario starts with an empty cache and
            # admits its first request
            assert fresh.count(200) > 0, (name, fresh)
    if mode != "shmlimit":
        # The control: DRF's per-process cache over-admits in aggregate. A
        # single scenario may happen to be served by few workers (the kernel
        # hands connections to whichever worker accepts first), so the
        # comparison is over the whole run.
        assert sum(r[2] for r in rows) > sum(r[1] for r in rows), rows
    # more worker processes served than there are slots, each a worker the
    # master respawned (its own count of spawns, from its stats)
    last = u.settled()["workers"]
    respawned = sum(w["respawn_count"] for w in last) - sum(w["respawn_count"] for w in first)
    newcomers = set(served) - {w["pid"] for w in first}
    assert len(served) > WORKERS, served
    assert 0 < len(newcomers) <= respawned, (newcomers, respawned)
    print("\n%s throttles, uwsgi --processes %d --max-requests %d (%d worker pids served, %d respawns):"
          % (mode, WORKERS, MAX_REQUESTS, len(served), respawned))
    for name, allowance, admitted, serving, fresh, fresh_refused in rows:
        print("  %-16s allowance %3d  admitted %3d  (%.2fx, %2d workers served; %3d requests by workers forked "
              "during it, %3d refused)" % (name, allowance, admitted, admitted / allowance, serving, fresh, fresh_refused))
