"""End to end: 8 forked workers call a stub vendor on loopback through
``Limiter.wait`` under one shared GCRA quota, 50/s with a burst of 5
(doc/outbound.md, "Proof").

The stub is an HTTP/1.1 server run by the test process itself (one thread,
``selectors``); each worker keeps one connection and, in a loop, waits for
its turn, then sends a request carrying the turn it was granted
(``WaitDecision.time_to_act_ns``) and when it woke. The stub stamps each
request's arrival with ``Limiter.now_ns()`` (CLOCK_MONOTONIC, the clock of
the turns). The workers always have a call queued, so the quota is the
bottleneck.

GCRA's bound, with T = 20 ms and B = 5: a reservation that stores TAT_k is
granted the turn act_k = max(now_k, TAT_k - B*T), so
act_k + T <= TAT_k <= act_k + B*T, and TATs grow by at least T in the order
of their CAS. Hence any n turns within a window [s, s + w] satisfy
(n - 1) * T <= (s + w + B*T) - (s + T), i.e.

    n <= B + floor(w / T).

It is checked pair by pair (the n turns between the i-th and j-th in time
order, w = t_j - t_i): exactly (L = 0) on the granted turns, and with
w + L on the stub's arrivals, L being the largest measured delay from a
turn to its arrival (an arrival in [a_i, a_j] has its turn in
[a_i - L, a_j]). A loaded machine makes L larger and the bound on arrivals
looser, never wrong; a limiter that hands out one turn too many fails the
exact check on the turns.

The second test SIGKILLs waiting workers at random moments and forks
replacements: the bound still holds, `check` is clean afterwards and the
bucket is full again once every turn has passed.

Run by ctest as e2e.outbound_quota (label e2e; about 30 s). The summary is
printed and written to $SHMLIMIT_TEST_OUT/e2e_outbound_quota.json.
"""
from __future__ import annotations

import http.client
import json
import os
import random
import selectors
import signal
import socket
import statistics
import sys
import time
import traceback


RATE = 50  # per second
T_NS = 1_000_000_000 // RATE  # GCRA's emission interval: 20 ms, exact
BURST = 5
WORKERS = 8
RUN_S = 20.0
KILL_RUN_S = 8.0
MAX_WAIT = 30.0  # a worker's turn is at most ~(WORKERS + BURST) * T away
GRACE_S = 90.0  # after the run, how long the workers get to finish


class Stub:
    """The vendor: a one-thread HTTP/1.1 server on 127.0.0.1 (keep-alive),
    answering 200 to every GET and recording (arrival_ns, headers)."""

    def __init__(self, lim):
        self.lim = lim
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.listener, selectors.EVENT_READ, None)
        self.arrivals = []  # (arrival_ns, worker, seq, turn_ns, woke_ns)
        self.connections = 0
        self.open = 0
        self.broken = 0  # connections that ended inside a request (a killed worker)

    def poll(self, timeout):
        for key, _ in self.sel.select(timeout):
            if key.data is None:
                conn, _ = self.listener.accept()
                conn.setblocking(False)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.sel.register(conn, selectors.EVENT_READ, bytearray())
                self.connections += 1
                self.open += 1
            else:
                self._serve(key.fileobj, key.data)

    def _close(self, conn, buf):
        if buf:
            self.broken += 1
        self.sel.unregister(conn)
        conn.close()
        self.open -= 1

    def _serve(self, conn, buf):
        try:
            data = conn.recv(65536)
        except BlockingIOError:
            return
        except ConnectionResetError:
            data = None
        if not data:
            self._close(conn, buf)
            return
        buf += data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            arrival = self.lim.now_ns()
            head = bytes(buf[:end]).decode("latin-1").split("\r\n")
            del buf[: end + 4]
            fields = {}
            for line in head[1:]:
                name, _, value = line.partition(":")
                fields[name.strip().lower()] = value.strip()
            assert head[0].startswith("GET /v1/charge "), head[0]
            self.arrivals.append((arrival, int(fields["x-worker"]), int(fields["x-seq"]),
                                  int(fields["x-turn"]), int(fields["x-woke"])))
            try:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            except OSError:  # the worker was killed meanwhile
                self._close(conn, bytearray())
                return

    def forget(self):
        """In a forked worker: closes the copies of the stub's sockets and
        selector (the parent's stay open and registered)."""
        for key in list(self.sel.get_map().values()):
            key.fileobj.close()
        self.sel.close()

    def close(self):
        for key in list(self.sel.get_map().values()):
            self.sel.unregister(key.fileobj)
            key.fileobj.close()
        self.sel.close()


def _worker(lim, port, index, end_ns):
    """A forked worker: wait for the turn, call the vendor; until end_ns."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    seq = 0
    while lim.now_ns() < end_ns:
        d = lim.wait("vendor", "acct", max_wait=MAX_WAIT)
        woke = lim.now_ns()
        if not d:
            raise AssertionError("worker %d: wait refused: %r" % (index, d))
        conn.request("GET", "/v1/charge", headers={
            "X-Worker": str(index), "X-Seq": str(seq),
            "X-Turn": str(d.time_to_act_ns), "X-Woke": str(woke)})
        r = conn.getresponse()
        r.read()
        if r.status != 200:
            raise AssertionError("worker %d: status %d" % (index, r.status))
        seq += 1
    conn.close()


def _spawn(lim, stub, index, end_ns):
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 0
        try:
            stub.forget()
            _worker(lim, stub.port, index, end_ns)
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    return pid


def _excess(times, slack_ns):
    """max over pairs i <= j (time order) of (j - i + 1) - (B + floor((t_j - t_i + slack) / T)),
    with the pair: <= 0 when every window conforms."""
    best = (-(10**9), 0, 0)
    n = len(times)
    for i in range(n):
        ti = times[i]
        for j in range(i, n):
            over = (j - i + 1) - (BURST + (times[j] - ti + slack_ns) // T_NS)
            if over > best[0]:
                best = (over, i, j)
    return best


def _max_in_window(times, window_ns):
    """The most events in any window [t_i, t_i + window_ns]."""
    most, j = 0, 0
    for i in range(len(times)):
        while j < len(times) and times[j] <= times[i] + window_ns:
            j += 1
        most = max(most, j - i)
    return most


def _percentile(values, q):
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def _run(lim, run_s, kill=False, seed=None):
    """Runs the workers for run_s seconds against a fresh stub; with kill,
    SIGKILLs a random worker every 0.1-0.5 s and forks a replacement.
    Returns (stub, kills)."""
    stub = Stub(lim)
    rng = random.Random(seed)
    end_ns = lim.now_ns() + int(run_s * 1e9)
    live = {}
    next_index = 0
    for _ in range(WORKERS):
        live[_spawn(lim, stub, next_index, end_ns)] = next_index
        next_index += 1
    kills = 0
    failures = []
    next_kill = time.monotonic() + rng.uniform(0.1, 0.5)
    deadline = time.monotonic() + run_s + GRACE_S
    try:
        while live or stub.open:
            assert time.monotonic() < deadline, "workers still running %.0f s after the run" % GRACE_S
            stub.poll(0.02)
            if kill and live and time.monotonic() >= next_kill and lim.now_ns() < end_ns - T_NS:
                victim = rng.choice(sorted(live))
                os.kill(victim, signal.SIGKILL)
                _, status = os.waitpid(victim, 0)
                if status != 0 and not (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL):
                    failures.append("worker %d exited with status %d" % (live[victim], status))
                del live[victim]
                kills += 1
                live[_spawn(lim, stub, next_index, end_ns)] = next_index
                next_index += 1
                next_kill = time.monotonic() + rng.uniform(0.1, 0.5)
            for pid in list(live):
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    if status != 0:
                        failures.append("worker %d exited with status %d" % (live[pid], status))
                    del live[pid]
    finally:
        for pid in live:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        stub.close()
    assert not failures, failures
    return stub, kills


def _figures(stub, run_s):
    arrivals = sorted(a[0] for a in stub.arrivals)
    turns = sorted(a[3] for a in stub.arrivals)
    wake_late = [a[4] - a[3] for a in stub.arrivals]
    arrival_late = [a[0] - a[3] for a in stub.arrivals]
    L = max(arrival_late)
    n = len(arrivals)
    return {
        "calls": n,
        "quota_per_s": RATE,
        "burst": BURST,
        "run_s": run_s,
        "achieved_per_s": (n - BURST) / run_s,
        "throughput_ratio": (n - BURST) / (run_s * RATE),
        # the same past the burst, over the span the turns actually took
        "turns_per_s_over_span": (n - BURST) / ((turns[-1] - turns[0]) / 1e9),
        "arrivals_per_s_over_span": (n - BURST) / ((arrivals[-1] - arrivals[0]) / 1e9),
        "turns_excess": _excess(turns, 0),
        "arrivals_excess": _excess(arrivals, L),
        "max_turns_in_1s": _max_in_window(turns, 10**9),
        "max_arrivals_in_1s": _max_in_window(arrivals, 10**9),
        "bound_turns_1s": BURST + 10**9 // T_NS,
        "bound_arrivals_1s": BURST + (10**9 + L) // T_NS,
        "min_wake_lateness_ms": min(wake_late) / 1e6,
        "median_wake_lateness_ms": statistics.median(wake_late) / 1e6,
        "p99_wake_lateness_ms": _percentile(wake_late, 0.99) / 1e6,
        "max_wake_lateness_ms": max(wake_late) / 1e6,
        "max_arrival_lateness_L_ms": L / 1e6,
    }


def _report(tag, f):
    line = ("outbound %s: %d calls in %.0f s, %.2f/s of %d/s (%.1f%%; over their span: turns "
            "%.2f/s, arrivals %.2f/s); max in 1 s: turns %d (bound %d), arrivals %d (bound %d "
            "with L = %.1f ms); wake lateness median %.2f ms, p99 %.2f ms, max %.2f ms" % (
                tag, f["calls"], f["run_s"], f["achieved_per_s"], RATE,
                100 * f["throughput_ratio"], f["turns_per_s_over_span"],
                f["arrivals_per_s_over_span"], f["max_turns_in_1s"], f["bound_turns_1s"],
                f["max_arrivals_in_1s"], f["bound_arrivals_1s"], f["max_arrival_lateness_L_ms"],
                f["median_wake_lateness_ms"], f["p99_wake_lateness_ms"],
                f["max_wake_lateness_ms"]))
    print("\n" + line)
    sys.stdout.flush()
    out = os.environ.get("SHMLIMIT_TEST_OUT") or os.path.dirname(os.path.abspath(__file__))
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "e2e_outbound_quota.json")
    try:
        with open(path) as fh:
            saved = json.load(fh)
    except (OSError, ValueError):
        saved = {}
    saved[tag] = dict(f, summary=line)
    with open(path, "w") as fh:
        json.dump(saved, fh, indent=2)


def _assert_bound(f):
    over, i, j = f["turns_excess"]
    assert over <= 0, "turns %d..%d in time order exceed GCRA's bound by %d" % (i, j, over)
    over, i, j = f["arrivals_excess"]
    assert over <= 0, "arrivals %d..%d exceed GCRA's bound (L = %.1f ms) by %d" % (
        i, j, f["max_arrival_lateness_L_ms"], over)


def test_saturated_quota_at_the_vendor(limiter):
    limiter.add_policy("vendor", "gcra", "%d/s" % RATE, burst=BURST)
    stub, _ = _run(limiter, RUN_S)
    f = _figures(stub, RUN_S)
    _report("saturated", f)
    # Every request the stub saw came from a granted turn, each once, and
    # every turn granted (the policy's exact count) reached the stub.
    assert len({(a[1], a[2]) for a in stub.arrivals}) == len(stub.arrivals)
    counters = limiter.stats()["policy_counters"]["vendor"]
    assert counters == {"admitted": len(stub.arrivals), "denied": 0}, counters
    assert stub.connections == WORKERS and stub.broken == 0
    # 1. GCRA's bound: exact on the turns, with the measured lateness on arrivals.
    _assert_bound(f)
    # 2. The quota is used: the queue never ran dry.
    assert f["throughput_ratio"] >= 0.95, f
    # 3. Never early; late by little.
    assert f["min_wake_lateness_ms"] >= 0, f
    assert f["median_wake_lateness_ms"] < 50, f
    assert limiter.check(repair=False)["clean"]


def test_killed_waiters_cost_only_their_turns(limiter):
    limiter.add_policy("vendor", "gcra", "%d/s" % RATE, burst=BURST)
    seed = random.randrange(2**32)
    stub, kills = _run(limiter, KILL_RUN_S, kill=True, seed=seed)
    f = _figures(stub, KILL_RUN_S)
    turns = sorted(a[3] for a in stub.arrivals)
    slots = (turns[-1] - turns[0]) // T_NS
    f["kills"] = kills
    f["seed"] = seed
    f["turns_lost"] = BURST + slots - len(turns)
    _report("killed", f)
    print("outbound killed: %d workers SIGKILLed (seed %d), %d turns of their span unused"
          % (kills, seed, f["turns_lost"]))
    assert kills >= 5, "too few kills to mean anything: %d" % kills
    assert len({(a[1], a[2]) for a in stub.arrivals}) == len(stub.arrivals)
    _assert_bound(f)
    # A dead worker costs at most the one turn it held: the turns fill their
    # span but for one slot per kill (and the 5% allowed above).
    assert len(turns) - BURST >= 0.95 * slots - kills, (len(turns), slots, kills)
    assert f["min_wake_lateness_ms"] >= 0, f
    # Healthy afterwards: nothing to repair, a fresh call is decided at once
    # when its turn is due, and the bucket is full again once every turn
    # has passed (time only moves forward: the sleep cannot be too short).
    assert limiter.check(repair=False)["clean"]
    d = limiter.wait("vendor", "acct", max_wait=MAX_WAIT)
    assert d.allowed and d.reason == "ok", d
    time.sleep(limiter.peek("vendor", "acct").reset_after + 0.001)
    full = limiter.acquire("vendor", "acct", BURST)
    assert full.allowed and full.remaining == 0, full
    assert limiter.check(repair=False)["clean"]
