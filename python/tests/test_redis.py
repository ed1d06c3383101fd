"""The Redis tier and the hybrid tier (doc/redis.md) against a real
redis-server: exact admissions in Redis, all-or-nothing, refund and reset,
the fail-open / fail-closed / local-share answers of a stopped server, and
forked processes of one host sharing one limit through the hybrid tier.

Each test gets its own key prefix on a shared server; the tests that stop a
server start their own. Skipped when redis-server is not installed or the
build has no Redis tier (shmlimit.HAS_REDIS)."""
from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time

import pytest

import shmlimit
from conftest import unique_name
from forking import run_forked

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"

pytestmark = [
    pytest.mark.skipif(not shmlimit.HAS_REDIS, reason="built without the Redis tier (hiredis)"),
    pytest.mark.skipif(not os.access(REDIS_SERVER, os.X_OK), reason="redis-server is not installed"),
]

_prefixes = itertools.count()


class RedisServer:
    """A redis-server of our own, without persistence, on a free loopback
    port (the kernel picks it) or on a unix socket in a fresh directory."""

    def __init__(self, unix: bool = False) -> None:
        self.dir = tempfile.mkdtemp(prefix="shmlimit-redis-")
        self.unix_socket = os.path.join(self.dir, "redis.sock") if unix else None
        self.port = 0 if unix else self._free_port()
        self.proc: "subprocess.Popen[bytes] | None" = None
        self.start()

    @staticmethod
    def _free_port() -> int:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def options(self) -> dict:
        if self.unix_socket:
            return {"unix_socket": self.unix_socket}
        return {"host": "127.0.0.1", "port": self.port}

    def _connect(self) -> socket.socket:
        if self.unix_socket:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(5)
            s.connect(self.unix_socket)
        else:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        return s

    def ping(self) -> bool:
        try:
            with self._connect() as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def start(self) -> None:
        args = [REDIS_SERVER, "--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", self.dir]
        if self.unix_socket:
            args += ["--port", "0", "--unixsocket", self.unix_socket, "--unixsocketperm", "700"]
        else:
            args += ["--port", str(self.port), "--bind", "127.0.0.1"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not self.ping():
            if self.proc.poll() is not None:
                raise RuntimeError("redis-server exited at start with status %d" % self.proc.returncode)
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("redis-server did not answer PING within 30 s")
            time.sleep(0.01)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def server():
    s = RedisServer()
    yield s
    s.close()


@pytest.fixture
def own_server():
    """A server this test may stop (on a unix socket)."""
    s = RedisServer(unix=True)
    yield s
    s.close()


@pytest.fixture
def prefix():
    """Keys of this test only, on the shared server."""
    return "pytest-%d-%d:" % (os.getpid(), next(_prefixes))


@pytest.fixture
def hybrid_name():
    name = unique_name("hybrid")
    yield name
    shmlimit.HybridLimiter.remove(name)


# ---- RedisLimiter -----------------------------------------------------------


def test_five_per_hour_admits_exactly_five_of_eight_in_redis(server, prefix):
    lim = shmlimit.RedisLimiter(prefix=prefix, **server.options())
    api = lim.add_policy("api", "gcra", "5/h")
    got = [lim.acquire(api if i % 2 else "api", "alice") for i in range(8)]
    calls = lim.round_trips
    assert [d.allowed for d in got] == [True] * 5 + [False] * 3
    assert {d.source for d in got} == {"redis"}
    assert all(isinstance(d, shmlimit.Decision) and d.reason == "ok" and d.limit == 5 for d in got)
    assert [d.remaining for d in got] == [4, 3, 2, 1, 0, 0, 0, 0]
    assert got[0].retry_after == 0.0 and 0 < got[0].reset_after <= 720  # one token every 720 s
    for denied in got[5:]:
        assert not denied and 600 < denied.retry_after <= 720
        assert 3000 < denied.reset_after <= 3600 and denied.retry_after_ns > 0
    assert "source='redis'" in repr(got[-1])
    assert calls in (8, 9)  # one call per decision (and SCRIPT LOAD on the new connection)
    assert lim.available and lim.last_error == ""
    # other keys have their own buckets; cost counts; peek charges nothing
    assert lim.peek(api, "bob", 5).allowed and lim.acquire(api, "bob", 5).allowed
    assert not lim.peek(api, "bob").allowed and lim.peek(api, "bob", 0).remaining == 0
    assert lim.round_trips == calls + 4
    assert lim.acquire(api, "carol", 6).reason == "cost_too_high"


def test_unknown_policy_names_are_denied_and_bad_policies_refused(server, prefix):
    lim = shmlimit.RedisLimiter(prefix=prefix, **server.options())
    d = lim.acquire("nope", "k")
    assert not d and d.reason == "unknown_policy" and d.source == "redis"
    assert lim.round_trips == 0  # decided without asking Redis
    lim.add_policy("conc", "concurrency", "3/s")  # its units are taken by leases (C++ only)
    d = lim.acquire("conc", "k")
    assert not d and d.reason == "needs_lease"
    with pytest.raises(shmlimit.InvalidArgumentError):
        lim.add_policy("share", "gcra", "3/s", when_down="local_share", local_share=0.5)  # hybrid only
    with pytest.raises(shmlimit.InvalidArgumentError):
        lim.add_policy("p", "gcra", "3/s", when_down="sometimes")
    with pytest.raises(shmlimit.InvalidArgumentError):
        lim.add_policy("long", "gcra", (1, 20 * 86400))  # a span beyond the script's 2**50 ns
    assert lim.add_policy("p", "gcra", "3/s") == lim.add_policy("p", "gcra", "3/s")
    with pytest.raises(shmlimit.PolicyConflictError):
        lim.add_policy("p", "gcra", "4/s")
    with pytest.raises(shmlimit.InvalidArgumentError):
        lim.reset("nope", "k")
    with pytest.raises(ValueError):
        lim.acquire("p", "k", -1)


@pytest.mark.parametrize(
    "options, error",
    [
        ({"port": 0}, shmlimit.InvalidArgumentError),
        ({"connect_timeout": 0}, shmlimit.InvalidArgumentError),
        ({"backoff_initial": 1.0, "backoff_max": 0.5}, shmlimit.InvalidArgumentError),
        ({"command_timeout": -1}, ValueError),  # not a duration at all
    ],
)
def test_bad_redis_options_raise(options, error):
    with pytest.raises(error):
        shmlimit.RedisLimiter(**options)


def test_cluster_seeds_are_checked_and_a_plain_server_is_not_a_cluster(server, prefix):
    with pytest.raises(shmlimit.InvalidArgumentError):
        shmlimit.RedisLimiter(cluster=["no-port"])
    opts = server.options()
    if "port" not in opts:
        pytest.skip("the test server listens on a unix socket")
    lim = shmlimit.RedisLimiter(prefix=prefix, cluster=["127.0.0.1:%d" % opts["port"]])
    lim.add_policy("p", "gcra", "5/h", on_full="deny")
    d = lim.acquire("p", "k")
    assert not d.allowed and d.source == "fail_closed"
    assert "not a Redis Cluster node" in lim.last_error


def test_concurrency_leases_in_redis_are_taken_renewed_and_released(server, prefix):
    lim = shmlimit.RedisLimiter(prefix=prefix, **server.options())
    lim.add_policy("jobs", "concurrency", "2/s", lease_ttl=60)
    a, b = lim.lease("jobs", "u"), lim.lease("jobs", "u")
    assert a and b and b.decision.remaining == 0 and b.decision.source == "redis"
    c = lim.lease("jobs", "u")
    assert not c and not c.held and c.decision.limit == 2
    assert a.renew()
    with b:
        pass  # released on exit
    assert not b.held and not b.release()
    with lim.lease("jobs", "u") as d:
        assert d.held
    assert a.release() and not a.renew()
    assert not lim.lease("nope", "u") and lim.lease("nope", "u").decision.reason == "unknown_policy"
    with pytest.raises(shmlimit.InvalidArgumentError):
        lim.add_policy("jobs0", "concurrency", "2/s", lease_ttl=0)


def test_acquire_many_is_all_or_nothing(server, prefix):
    lim = shmlimit.RedisLimiter(prefix=prefix, **server.options())
    lim.add_policy("burst", "gcra", "3/h")
    lim.add_policy("day", "gcra", "1/d")
    # one key: both limits in one script call
    assert lim.acquire_many([("burst", "k"), ("day", "k")]).allowed
    combined, each = lim.acquire_many([("burst", "k"), ("day", "k")], each=True)
    assert not combined and combined.source == "redis"
    assert [d.allowed for d in each] == [True, False]  # burst would admit, day refuses
    assert lim.peek("burst", "k", 0).remaining == 2  # ... and burst was not charged
    # several keys: the one that admitted is refunded
    assert not lim.acquire_many([("burst", "other"), ("day", "k")])
    assert lim.peek("burst", "other", 0).remaining == 3
    assert lim.acquire_many([("burst", "other", 2), ("day", "other2")]).allowed
    assert lim.peek("burst", "other", 0).remaining == 1
    assert lim.acquire_many([("nope", "k")]).reason == "unknown_policy"


def test_refund_gives_back_and_reset_forgets(server, prefix):
    lim = shmlimit.RedisLimiter(prefix=prefix, **server.options())
    api = lim.add_policy("api", "leaky_bucket", "3/h")
    assert sum(lim.acquire(api, "k").allowed for _ in range(5)) == 3
    after = lim.refund(api, "k", 2)
    assert after.source == "redis" and after.remaining == 2
    assert [lim.acquire(api, "k").allowed for _ in range(3)] == [True, True, False]
    assert lim.reset(api, "k") is True
    assert lim.peek(api, "k", 0).remaining == 3
    assert sum(lim.acquire("api", "k").allowed for _ in range(5)) == 3


def test_a_stopped_server_gets_each_policys_answer_and_recovery_is_automatic(own_server, prefix):
    lim = shmlimit.RedisLimiter(prefix=prefix, backoff_initial=0.05, backoff_max=0.05, **own_server.options())
    closed = lim.add_policy("closed", "gcra", "5/h")  # when_down="fail_closed" by default
    opened = lim.add_policy("opened", "gcra", "5/h", when_down="fail_open")
    assert lim.acquire(closed, "k").source == "redis" and lim.acquire(opened, "k").source == "redis"

    own_server.stop()
    d = lim.acquire(closed, "k")
    assert not d and d.source == "fail_closed" and d.retry_after > 0
    d = lim.acquire(opened, "k")
    assert d and d.source == "fail_open"
    assert all(lim.acquire(opened, "k").source == "fail_open" for _ in range(10))  # never limited while down
    assert not lim.available and lim.last_error != ""
    assert lim.reset(closed, "k") is False

    own_server.start()  # a fresh, empty server on the same socket
    deadline = time.monotonic() + 60
    while lim.acquire(closed, "k").source != "redis":  # the first call after the backoff reconnects
        assert time.monotonic() < deadline, lim.last_error
        time.sleep(0.02)
    assert lim.available
    assert lim.acquire(opened, "k").source == "redis"


def test_the_gil_is_released_while_a_call_waits_for_redis():
    # a server that accepts connections and never answers: every call waits
    # for command_timeout
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen(8)
        lim = shmlimit.RedisLimiter(port=mute.getsockname()[1], connect_timeout=5.0, command_timeout=1.5)
        api = lim.add_policy("api", "gcra", "5/h")
        result = {}
        t = threading.Thread(target=lambda: result.setdefault("d", lim.acquire(api, "k")))
        t.start()
        ticks = 0
        while t.is_alive():  # with the GIL held by acquire(), this loop could not run
            ticks += 1
            t.join(0.01)
    assert result["d"].source == "fail_closed" and not lim.available
    assert ticks >= 3


def test_threads_share_one_redis_limiter(server, prefix):
    lim = shmlimit.RedisLimiter(prefix=prefix, **server.options())
    api = lim.add_policy("api", "leaky_bucket", "20/h")
    assert lim.peek(api, "hot", 0).remaining == 20  # connected
    calls = lim.round_trips
    admitted = []

    def worker():
        admitted.append(sum(lim.acquire(api, "hot").allowed for _ in range(15)))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(admitted) == 4 and sum(admitted) == 20
    assert lim.round_trips == calls + 60


# ---- HybridLimiter ----------------------------------------------------------


def _hybrid(name, server, prefix, **options):
    return shmlimit.HybridLimiter.open_or_create(name, **{"prefix": prefix, **server.options(), **options})


def test_forked_processes_share_a_limit_through_the_hybrid_tier(server, prefix, hybrid_name):
    _hybrid(hybrid_name, server, prefix, max_batch=1)  # the host's segments exist before the fork

    def child(i):
        own = _hybrid(hybrid_name, server, prefix, max_batch=1)  # each worker opens the host's segments
        api = own.add_policy("api", "gcra", "20/h")
        got = [own.acquire(api, "hot") for _ in range(12)]
        return {"admitted": sum(d.allowed for d in got), "sources": sorted({d.source for d in got if d}),
                "round_trips": own.round_trips}

    results = run_forked(4, child)
    assert sum(r["admitted"] for r in results) == 20
    # max_batch=1: no token is held ahead, every admission is Redis's
    assert all(r["sources"] in ([], ["redis"]) for r in results)
    assert all(r["round_trips"] >= r["admitted"] for r in results)


def test_a_hybrid_limiter_opened_before_fork_works_in_the_children(server, prefix, hybrid_name):
    lim = _hybrid(hybrid_name, server, prefix, max_batch=1)
    api = lim.add_policy("api", "gcra", "20/h")
    assert lim.acquire(api, "hot").source == "redis"  # the parent's connection is open
    admitted = run_forked(3, lambda i: sum(lim.acquire("api", "hot").allowed for _ in range(10)))
    assert sum(admitted) == 19
    assert not lim.acquire(api, "hot")


def test_hybrid_leases_batches_and_still_admits_exactly_the_limit(server, prefix, hybrid_name):
    lim = _hybrid(hybrid_name, server, prefix, max_batch=8, lease_ttl=300.0)
    api = lim.add_policy("api", "gcra", "100/d")
    got = [lim.acquire(api, "k") for _ in range(150)]
    assert sum(d.allowed for d in got) == 100
    sources = {d.source for d in got if d}
    assert sources == {"redis", "lease"}
    assert lim.round_trips < 60  # batches of up to 8: far fewer calls than decisions
    assert 1 <= lim.batch(api, "k") <= 8 and lim.batch(api, "unseen") == 0 and lim.batch("nope", "k") == 0


def test_hybrid_refund_and_reset(server, prefix, hybrid_name):
    lim = _hybrid(hybrid_name, server, prefix, max_batch=1)
    api = lim.add_policy("api", "gcra", "3/h")
    assert sum(lim.acquire(api, "k").allowed for _ in range(5)) == 3
    assert not lim.acquire(api, "k")  # maybe the host's cached denial
    assert lim.refund(api, "k", 1).source == "redis"
    assert lim.acquire(api, "k").allowed and not lim.acquire(api, "k").allowed
    assert lim.reset(api, "k") is True
    assert sum(lim.acquire("api", "k").allowed for _ in range(5)) == 3
    assert lim.acquire("nope", "k").reason == "unknown_policy"


def test_hybrid_acquire_many_is_all_or_nothing(server, prefix, hybrid_name):
    lim = _hybrid(hybrid_name, server, prefix)
    user = lim.add_policy("user", "gcra", "2/h")
    site = lim.add_policy("site", "gcra", "5/h")
    both = [(user, "u1"), (site, "all")]
    assert [lim.acquire_many(both).allowed for _ in range(3)] == [True, True, False]
    combined, each = lim.acquire_many(both, each=True)
    assert not combined and combined.source == "redis"
    assert not each[0].allowed and each[1].allowed and each[1].remaining == 3  # site uncharged
    assert lim.acquire_many([(site, "all"), ("nope", "x")]).reason == "unknown_policy"


def test_hybrid_answers_for_a_stopped_server(own_server, prefix, hybrid_name):
    lim = shmlimit.HybridLimiter.open_or_create(
        hybrid_name, max_batch=1, prefix=prefix, backoff_initial=0.05, backoff_max=0.05, **own_server.options()
    )
    share = lim.add_policy("share", "gcra", "10/h", when_down="local_share", local_share=0.5)
    closed = lim.add_policy("closed", "gcra", "10/h")
    opened = lim.add_policy("opened", "gcra", "10/h", when_down="fail_open")
    assert lim.acquire(share, "k").source == "redis"
    own_server.stop()
    got = [lim.acquire(share, "k") for _ in range(8)]
    assert {d.source for d in got} == {"local_share"}
    assert sum(d.allowed for d in got) == 5  # the host's share: half of 10
    d = lim.acquire(closed, "k")
    assert not d and d.source == "fail_closed"
    d = lim.acquire(opened, "k")
    assert d and d.source == "fail_open"
    # Several limits while down: fail_closed refuses without charging the share.
    assert lim.acquire_many([(opened, "m"), (share, "m")]).source == "local_share"
    refused = lim.acquire_many([(closed, "m"), (share, "m")])
    assert not refused and refused.source == "fail_closed"
    assert sum(lim.acquire(share, "m").allowed for _ in range(6)) == 4


def test_bad_hybrid_options_raise_invalid_argument(server, prefix, hybrid_name):
    for options in ({"max_batch": 0}, {"max_batch": 2**20 + 1}, {"lease_slots": 0}, {"hosts": 0}, {"lease_ttl": 0}):
        with pytest.raises(shmlimit.InvalidArgumentError):
            _hybrid(hybrid_name, server, prefix, **options)
    with pytest.raises(shmlimit.InvalidArgumentError):
        _hybrid(hybrid_name, server, prefix, port=70000)
    with pytest.raises(shmlimit.InvalidArgumentError):
        _hybrid(hybrid_name, server, prefix).add_policy("p", "gcra", "3/s", when_down="local_share")  # no share
    assert shmlimit.HybridLimiter.remove(hybrid_name)
    assert not shmlimit.HybridLimiter.remove(hybrid_name)
