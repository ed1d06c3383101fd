#!/usr/bin/python3
"""ngx_http_shmlimit_module against a real nginx (ctest nginx.module, label nginx).

Every case starts Debian's nginx binary with its own prefix and
configuration in a temporary directory, on a free loopback port, loads the
module built by this tree with load_module, drives it with concurrent
clients (threads, http.client), and stops it. Segments are named after this
process and removed at the end.

No assertion depends on timing: the limits asserted exactly are per hour or
per day, so nothing refills during a run however slow the machine is.
limit_req's figures (it has only r/s and r/m) are printed beside them.

    test_nginx.py --nginx /usr/sbin/nginx --module build/ci/nginx/ngx_http_shmlimit_module.so
                  [--python-dir build/ci/python] [-k NAME]
"""
import argparse
import concurrent.futures
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import traceback

ARGS = None
SEGMENTS = []
BOOT_TIMEOUT = 60.0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def segment_name(tag):
    name = "/shmlimit-nginx-%d-%s" % (os.getpid(), tag)
    SEGMENTS.append(name)
    remove_segment(name)
    return name


def remove_segment(name):
    try:
        os.unlink("/dev/shm" + name)
    except FileNotFoundError:
        pass


class Nginx:
    """One nginx master in the foreground (daemon off), in its own session."""

    def __init__(self, http_block, workers=2, extra_main=""):
        self.dir = tempfile.mkdtemp(prefix="shmlimit-nginx-")
        os.chmod(self.dir, 0o755)  # workers run as 'nobody' when the test is root
        os.makedirs(os.path.join(self.dir, "html"))
        os.makedirs(os.path.join(self.dir, "tmp"))
        with open(os.path.join(self.dir, "html", "index.html"), "w") as f:
            f.write("hello\n")
        os.chmod(os.path.join(self.dir, "html", "index.html"), 0o644)
        os.chmod(os.path.join(self.dir, "html"), 0o755)
        self.port = free_port()
        self.conf = os.path.join(self.dir, "nginx.conf")
        self.write_conf(http_block, workers, extra_main)
        self.proc = None

    def write_conf(self, http_block, workers=2, extra_main=""):
        tmp = os.path.join(self.dir, "tmp")
        text = textwrap.dedent("""\
            load_module {module};
            worker_processes {workers};
            pid {dir}/nginx.pid;
            error_log {dir}/error.log notice;
            {extra_main}
            events {{ worker_connections 512; }}
            http {{
              access_log off;
              client_body_temp_path {tmp}; proxy_temp_path {tmp}; fastcgi_temp_path {tmp};
              uwsgi_temp_path {tmp}; scgi_temp_path {tmp};
              root {dir}/html;
            """).format(module=ARGS.module, workers=workers, dir=self.dir, tmp=tmp, extra_main=extra_main)
        text += textwrap.dedent(http_block).replace("PORT", str(self.port)) + "}\n"
        with open(self.conf, "w") as f:
            f.write(text)

    def test_config(self):
        return subprocess.run([ARGS.nginx, "-t", "-q", "-p", self.dir, "-c", self.conf],
                              capture_output=True, text=True, timeout=60)

    def start(self):
        self.proc = subprocess.Popen([ARGS.nginx, "-p", self.dir, "-c", self.conf, "-g", "daemon off;"],
                                     start_new_session=True, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + BOOT_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise AssertionError("nginx exited with %s: %s\n%s" % (self.proc.returncode, self.proc.stderr.read(), self.log()))
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=5):
                    return self
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError("nginx did not listen in %.0f s" % BOOT_TIMEOUT)
                time.sleep(0.05)

    def log(self):
        try:
            with open(os.path.join(self.dir, "error.log")) as f:
                return f.read()
        except OSError:
            return ""

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=20)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def get(self, path, headers=None, timeout=60.0, port=None):
        conn = http.client.HTTPConnection("127.0.0.1", port or self.port, timeout=timeout)
        try:
            conn.request("GET", path, headers=headers or {})
            r = conn.getresponse()
            body = r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, body
        finally:
            conn.close()

    def many(self, path, n, headers_of=lambda i: {}, threads=16):
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            return list(pool.map(lambda i: self.get(path, headers_of(i)), range(n)))

    def worker_pids(self):
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.proc.pid)], capture_output=True, text=True)
        return {int(p) for p in out.stdout.split()}


def statuses(responses):
    return [s for s, _, _ in responses]


# ---------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------

def test_exact_with_2_and_4_workers_beside_limit_req():
    for workers in (2, 4):
        seg = segment_name("exact%d" % workers)
        conf = """
            limit_req_zone $http_x_key zone=lr:1m rate=20r/m;
            limit_req_status 429;
            shmlimit_segment %s capacity=1024;
            shmlimit_policy api 20/hour burst=20;
            server {
              listen 127.0.0.1:PORT reuseport;
              add_header X-Pid $pid always;
              location /lr/ { limit_req zone=lr burst=19 nodelay; try_files /index.html =404; }
              location /sl/ { shmlimit api key=$http_x_key; try_files /index.html =404; }
            }
        """ % seg
        with Nginx(conf, workers=workers) as n:
            t0 = time.monotonic()
            lr = n.many("/lr/x", 100, lambda i: {"X-Key": "k"}, threads=32)
            lr_elapsed = time.monotonic() - t0
            sl = n.many("/sl/x", 100, lambda i: {"X-Key": "k"}, threads=32)
            assert set(statuses(sl)) <= {200, 429}, statuses(sl)
            admitted = statuses(sl).count(200)
            pids = {h["x-pid"] for _, h, _ in sl}
            assert admitted == 20, "%d workers: shmlimit admitted %d of 100, allowance 20" % (workers, admitted)
            assert len(pids) >= 2, "only worker(s) %s served" % pids
            print("  %d workers (%d served): shmlimit 20/hour admitted %d of 100; "
                  "limit_req 20r/m burst=19 nodelay admitted %d of 100 (%.1f s run)"
                  % (workers, len(pids), admitted, statuses(lr).count(200), lr_elapsed))


def test_per_hour_and_per_day_rates_and_headers():
    seg = segment_name("rates")
    conf = """
        shmlimit_segment %s capacity=1024;
        shmlimit_policy hourly 3r/h;
        shmlimit_policy daily "5 per day";
        server {
          listen 127.0.0.1:PORT;
          add_header X-Remaining $shmlimit_remaining always;
          add_header X-Retry $shmlimit_retry_after always;
          add_header X-Status $shmlimit_status always;
          location /h/ { shmlimit hourly key=$http_x_key; try_files /index.html =404; }
          location /d/ { shmlimit daily key=$http_x_key; shmlimit_status 503; try_files /index.html =404; }
          location /ra/ { shmlimit hourly key=$http_x_key; shmlimit_headers retry-after; try_files /index.html =404; }
          location /off/ { shmlimit hourly key=$http_x_key; shmlimit_headers off; try_files /index.html =404; }
          location /nokey/ { shmlimit hourly key=$http_x_nothing; try_files /index.html =404; }
          location /ep/ { shmlimit hourly key=$http_x_key; error_page 429 /limited; try_files /index.html =404; }
          location = /limited { internal; return 429 "limited: $shmlimit_status $shmlimit_retry_after\n"; }
        }
    """ % seg
    with Nginx(conf) as n:
        h = n.many("/h/", 10, lambda i: {"X-Key": "a"})
        assert statuses(h).count(200) == 3, statuses(h)
        d = n.many("/d/", 10, lambda i: {"X-Key": "a"})
        assert statuses(d).count(200) == 5 and statuses(d).count(503) == 5, statuses(d)

        s, hd, _ = n.get("/h/", {"X-Key": "b"})
        assert s == 200 and hd["x-status"] == "PASSED" and hd["x-remaining"] == "2" and hd["x-retry"] == "0", hd
        assert "retry-after" not in hd
        assert hd["x-ratelimit-limit"] == "3" and hd["x-ratelimit-remaining"] == "2", hd
        assert 1190 <= int(hd["x-ratelimit-reset"]) <= 1200, hd
        assert hd["ratelimit-policy"] == '"hourly";q=3;w=3600', hd
        s, hd, _ = n.get("/h/", {"X-Key": "a"})
        ra = int(hd["retry-after"])
        assert s == 429 and 1190 <= ra <= 1200, (s, hd)  # one more every 1200 s
        assert hd["x-status"] == "REJECTED" and hd["x-retry"] == str(ra) and hd["x-remaining"] == "0", hd
        assert hd["ratelimit"].startswith('"hourly";r=0;t='), hd
        s, hd, _ = n.get("/d/", {"X-Key": "a"})
        assert s == 503 and 17270 <= int(hd["retry-after"]) <= 17280, hd  # 86400 / 5 per request
        assert hd["x-ratelimit-limit"] == "5", hd

        s, hd, _ = n.get("/ra/", {"X-Key": "a"})
        assert s == 429 and "retry-after" in hd and "x-ratelimit-limit" not in hd and "ratelimit" not in hd, hd
        s, hd, _ = n.get("/ra/", {"X-Key": "c"})
        assert s == 200 and not any(k.startswith(("retry-after", "x-ratelimit", "ratelimit")) for k in hd), hd
        s, hd, _ = n.get("/off/", {"X-Key": "a"})
        assert s == 429 and not any(k.startswith(("retry-after", "x-ratelimit", "ratelimit")) for k in hd), hd
        # after an internal redirect (error_page) the decision is still there, not made again
        s, hd, body = n.get("/ep/", {"X-Key": "a"})
        assert s == 429 and body.decode() == "limited: REJECTED %s\n" % hd["retry-after"], (s, hd, body)
        assert hd["x-status"] == "REJECTED" and hd["x-ratelimit-limit"] == "3", hd
        # an empty key is not limited, and no decision was made
        r = n.many("/nokey/", 10)
        assert statuses(r) == [200] * 10 and "x-status" not in r[0][1], r[0][1]
        # an over-long key is limited on its own, as the library hashes it
        long_a, long_b = "a" * 3000, "a" * 2999 + "b"
        assert statuses(n.many("/h/", 5, lambda i: {"X-Key": long_a})).count(200) == 3
        assert statuses(n.many("/h/", 5, lambda i: {"X-Key": long_b})).count(200) == 3


def test_full_table_never_forgives_a_limited_key():
    seg = segment_name("full")
    conf = """
        limit_req_zone $http_x_key zone=lr:32k rate=1r/m;
        limit_req_status 429;
        shmlimit_segment %s capacity=64;
        shmlimit_policy strict 1/hour;
        server {
          listen 127.0.0.1:PORT;
          location /lr/ { limit_req zone=lr; try_files /index.html =404; }
          location /sl/ { shmlimit strict key=$http_x_key; try_files /index.html =404; }
        }
    """ % seg
    with Nginx(conf) as n:
        results = {}
        for loc in ("lr", "sl"):
            assert n.get("/%s/" % loc, {"X-Key": "victim"})[0] == 200
            assert n.get("/%s/" % loc, {"X-Key": "victim"})[0] == 429
            fresh = n.many("/%s/" % loc, 400, lambda i: {"X-Key": "new-%d" % i})
            results[loc] = (n.get("/%s/" % loc, {"X-Key": "victim"})[0], statuses(fresh).count(200))
        assert results["sl"][0] == 429, results
        assert "table_full" in n.log(), n.log()[-2000:]
        print("  after 400 new keys: the limited key gets %d from shmlimit (table of 64 slots, "
              "%d new keys admitted by on_full=open), %d from limit_req (zone of 32k)"
              % (results["sl"][0], results["sl"][1], results["lr"][0]))


BAD_CONFIGS = [
    ("shmlimit_policy p 18446744073709552r/s;", "too large"),
    ("shmlimit_policy p 0r/s;", "at least 1"),
    ("shmlimit_policy p 10r/ms;", "sub-second"),
    ("shmlimit_policy p 10r/s burst=0;", "invalid burst"),
    ("shmlimit_policy p 10r/s burst=99999999999999999999;", "invalid burst"),
    ("shmlimit_policy p 10r/s algorithm=concurrency;", "unknown algorithm"),
    ("shmlimit_policy p 10r/s on_full=maybe;", "invalid on_full"),
    ("shmlimit_policy p 10r/s nodelay;", "invalid parameter"),
    ("shmlimit_policy 'bad name' 10r/s;", "invalid policy name"),
    ("shmlimit_policy p;", "invalid number of arguments"),
    ("server { listen 127.0.0.1:PORT; location / { shmlimit nosuch key=$remote_addr; } }", "unknown shmlimit policy"),
    ("server { listen 127.0.0.1:PORT; location / { shmlimit ok cost=2; } }", "needs \"key=\""),
    ("server { listen 127.0.0.1:PORT; location / { shmlimit ok key=$remote_addr cost=-1; } }", "invalid cost"),
    ("server { listen 127.0.0.1:PORT; location / { shmlimit ok key=$remote_addr; shmlimit ok key=$remote_addr; } }", "is duplicate"),
    ("server { listen 127.0.0.1:PORT; location / { shmlimit_status 200; } }", "must be between 400 and 599"),
    ("server { listen 127.0.0.1:PORT; location / { shmlimit_headers maybe; } }", "on, off or retry-after"),
    ("server { listen 127.0.0.1:PORT; location / { shmlimit_log_level debug; } }", "invalid value"),
    ("shmlimit_segment /other;", "is duplicate"),
    ("server { listen 127.0.0.1:PORT; location / { shmlimit ok key=$remote_addr max_wait=0; } }", "invalid max_wait \"0\""),
    ("server { listen 127.0.0.1:PORT; location / { shmlimit ok key=$remote_addr max_wait=0s; } }", "invalid max_wait"),
    ("server { listen 127.0.0.1:PORT; location / { shmlimit ok key=$remote_addr max_wait=-1s; } }", "invalid max_wait"),
    ("server { listen 127.0.0.1:PORT; location / { shmlimit ok key=$remote_addr max_wait=soon; } }", "invalid max_wait"),
    ("server { listen 127.0.0.1:PORT; location / { shmlimit ok key=$remote_addr max_wait=; } }", "invalid max_wait"),
    ("server { listen 127.0.0.1:PORT; location / { shmlimit ok key=$remote_addr max_wait=2h; } }", "at most 1h"),
    ("server { listen 127.0.0.1:PORT; location / { shmlimit ok key=$remote_addr max_wait=99999999999999999999; } }", "invalid max_wait"),
    ("shmlimit_policy two 1r/s;\nserver { listen 127.0.0.1:PORT; location / { shmlimit ok key=$remote_addr max_wait=1s; shmlimit two key=$remote_addr; } }",
     "must be the only \"shmlimit\" line"),
    ("shmlimit_policy two 1r/s;\nserver { listen 127.0.0.1:PORT; location / { shmlimit two key=$remote_addr; shmlimit ok key=$remote_addr max_wait=1s; } }",
     "must be the only \"shmlimit\" line"),
    ("shmlimit_policy sw 10r/s algorithm=sliding_window;\nserver { listen 127.0.0.1:PORT; location / { shmlimit sw key=$remote_addr max_wait=1s; } }",
     "gcra, leaky_bucket or token_bucket"),
]


def test_bad_configuration_refused_by_nginx_t():
    seg = segment_name("bad")
    good = "shmlimit_segment %s capacity=1024;\nshmlimit_policy ok 10r/s;\n" % seg
    n = Nginx(good)
    try:
        r = n.test_config()
        assert r.returncode == 0, r.stderr
        for line, message in BAD_CONFIGS:
            n.write_conf(good + line + "\n")
            r = n.test_config()
            assert r.returncode != 0, line
            assert message in r.stderr and "nginx.conf:" in r.stderr, (line, r.stderr)
        # the segment directive itself
        for line, message in [
            ("shmlimit_segment bad;", "invalid parameter \"bad\""),
            ("shmlimit_segment capacity=8;", "takes a segment name"),
            ("shmlimit_segment /a/b;", "invalid segment name"),
            ("shmlimit_segment /x capacity=0;", "invalid capacity"),
            ("shmlimit_segment /x mode=999;", "invalid mode"),
            ("shmlimit_segment /x config=/etc/hosts;", "not both"),
            ("shmlimit_segment config=/nonexistent/shmlimit.toml;", "cannot read config file"),
            ("shmlimit_segment %s capacity=4096;" % seg, "capacity is 1024"),
            ("shmlimit_policy p 1r/s;", "needs a \"shmlimit_segment\" before it"),
        ]:
            n.write_conf(line + "\n")
            r = n.test_config()
            assert r.returncode != 0 and message in r.stderr and "nginx.conf:" in r.stderr, (line, r.stderr)
        # without capacity=: a new segment of the default size, an existing one of any size
        fresh = segment_name("nocap")
        for _ in range(2):
            n.write_conf("shmlimit_segment %s;\nshmlimit_policy p 1r/s;\n" % fresh)
            r = n.test_config()
            assert r.returncode == 0, r.stderr
        n.write_conf("shmlimit_segment %s;\nshmlimit_policy p 1r/s algorithm=sliding_log;\n" % fresh)
        r = n.test_config()
        assert r.returncode != 0 and "log_entries = 0" in r.stderr and "nginx.conf:" in r.stderr, r.stderr
        logged = segment_name("log")
        n.write_conf("shmlimit_segment %s log_entries=8;\nshmlimit_policy p 5/hour algorithm=sliding_log;\n" % logged)
        r = n.test_config()
        assert r.returncode == 0, r.stderr
        # max_wait on a policy from the segment's config file: its algorithm
        # is read back from the segment (shmlimit_policy_describe)
        cfg_seg = segment_name("cfg")
        cfg = os.path.join(n.dir, "shmlimit.toml")
        with open(cfg, "w") as f:
            f.write('[segment]\nname = "%s"\ncapacity = 256\n\n'
                    '[policies.fw]\nalgorithm = "fixed_window"\nrate = "10/s"\n\n'
                    '[policies.tb]\nalgorithm = "token_bucket"\nrate = "10/s"\n\n'
                    '[policies.g]\nrate = "10/s"\n' % cfg_seg)
        for policy, ok in (("fw", False), ("tb", True), ("g", True)):
            n.write_conf("shmlimit_segment config=%s;\nserver { listen 127.0.0.1:PORT; location / { "
                         "shmlimit %s key=$remote_addr max_wait=1s; } }\n" % (cfg, policy))
            r = n.test_config()
            if ok:
                assert r.returncode == 0, r.stderr
            else:
                assert r.returncode != 0 and "gcra, leaky_bucket or token_bucket" in r.stderr \
                    and "nginx.conf:" in r.stderr, r.stderr
        for wait in ("250", "500ms", "1h"):  # a bare number is ms, as nginx's times
            n.write_conf(good + "server { listen 127.0.0.1:PORT; location / { shmlimit ok key=$remote_addr max_wait=%s; } }\n" % wait)
            r = n.test_config()
            assert r.returncode == 0, (wait, r.stderr)
        n.write_conf("shmlimit_segment %s mode=0666;\n" % segment_name("open"))
        r = n.test_config()
        assert r.returncode != 0 and "writable by every user" in r.stderr, r.stderr
        # nginx -t never changes a live policy
        from_api = open_limiter(seg)
        if from_api is not None:
            n.write_conf("shmlimit_segment %s;\nshmlimit_policy ok 99r/s;\n" % seg)
            assert n.test_config().returncode == 0
            assert open_limiter(seg).peek("ok", "k").limit == 10
    finally:
        n.stop()


def test_max_wait_delays_then_refuses():
    """limit_req's burst=N delay=M: 10r/s, policy burst 1, max_wait=1s. Of
    20 concurrent requests the first passes at once, the next 10 (at least)
    are delayed to turns 100 ms apart and all served, the rest are refused
    with a Retry-After. Arrivals spread over S ms let S/100 more turns fit;
    the bound used is what the server's own clock says S was."""
    seg = segment_name("wait")
    conf = """
        shmlimit_segment %s capacity=1024;
        shmlimit_policy q 10r/s burst=1;
        server {
          listen 127.0.0.1:PORT reuseport;
          add_header X-Status $shmlimit_status always;
          add_header X-Delay $shmlimit_delay always;
          add_header X-Msec $msec always;
          location /q/ { shmlimit q key=$http_x_key max_wait=1s; try_files /index.html =404; }
        }
    """ % seg
    T, n_req = 0.1, 20
    with Nginx(conf, workers=2) as n:
        barrier = threading.Barrier(n_req)

        def one(i):
            barrier.wait(timeout=60)
            s, h, _ = n.get("/q/", {"X-Key": "k"})
            return s, h, time.monotonic()

        t_start = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(n_req) as pool:
            r = list(pool.map(one, range(n_req)))
        served = [(h, t) for s, h, t in r if s == 200]
        refused = [h for s, h, _ in r if s != 200]
        assert {s for s, _, _ in r} <= {200, 429}, [s for s, _, _ in r]
        passed = [h for h, _ in served if h["x-status"] == "PASSED"]
        delayed = sorted(((int(h["x-delay"]), t) for h, t in served if h["x-status"] == "DELAYED"))
        assert len(passed) == 1 and len(passed) + len(delayed) == len(served), [h["x-status"] for h, _ in served]
        # arrivals on the server's clock: answered at $msec, having waited $shmlimit_delay
        arrivals = [float(h["x-msec"]) - int(h["x-delay"]) / 1000.0 for _, h, _ in r]
        spread = max(arrivals) - min(arrivals)
        assert 11 <= len(served) <= 11 + int(spread / T) + 1, (len(served), spread)
        assert all(0 < d <= 1000 for d, _ in delayed), delayed
        # the turns are 100 ms apart: the last one served is (served - 1) turns after the start
        last = max(t for _, t in served)
        assert last - t_start >= (len(served) - 1) * T * 0.8, (last - t_start, len(served))
        # on the server's clock, the k-th answer is at least k - 1 turns after the first: no bunching
        answered = sorted(float(h["x-msec"]) for h, _ in served)
        for k, at in enumerate(answered):
            assert at - answered[0] >= (k - 1) * T, (k, [round(a - answered[0], 3) for a in answered])
        for h in refused:
            assert h["x-status"] == "REJECTED" and int(h["retry-after"]) >= 1, h
        assert len(refused) == n_req - len(served)
        assert all(h["x-ratelimit-remaining"] == "0" and h["x-ratelimit-limit"] == "1"
                   for h, _ in served if h["x-status"] == "DELAYED")
        print("  10r/s burst=1 max_wait=1s, %d concurrent: 1 passed, %d delayed (%d..%d ms), %d refused; "
              "last served %.2f s after the start (arrivals spread %.0f ms)"
              % (n_req, len(delayed), delayed[0][0], delayed[-1][0], len(refused), last - t_start, spread * 1000))
        assert "delaying request by" in n.log()

        # pipelined requests on one connection take their turns one after another
        with socket.create_connection(("127.0.0.1", n.port), timeout=60) as c:
            c.sendall(b"GET /q/ HTTP/1.1\r\nHost: x\r\nX-Key: p\r\n\r\n" * 2 +
                      b"GET /q/ HTTP/1.1\r\nHost: x\r\nX-Key: p\r\nConnection: close\r\n\r\n")
            buf = b""
            while True:
                d = c.recv(65536)
                if not d:
                    break
                buf += d
        got = re.findall(rb"X-Status: (\w+)\r\nX-Delay: (\d+)", buf)
        # each is reserved when nginx reaches it, after the one before was served: at most one
        # turn away (three reserved at once would wait 100 and 200 ms)
        assert len(got) == 3 and got[0] == (b"PASSED", b"0") and b"DELAYED" in [g[0] for g in got], buf
        assert all(int(g[1]) <= 100 for g in got), got


def test_max_wait_parked_request():
    """One worker: while a request is parked for its turn (30 s away) the
    worker answers others; when its client closes, its turn is given back
    (the next acquire's Retry-After is one turn, not two); dry run never
    parks."""
    seg = segment_name("park")
    conf = """
        shmlimit_segment %s capacity=1024;
        shmlimit_policy slow 2r/m burst=1;
        log_format st "$request_uri $status $shmlimit_status";
        server {
          listen 127.0.0.1:PORT;
          access_log ACCESS st;
          add_header X-Status $shmlimit_status always;
          add_header X-Delay $shmlimit_delay always;
          location /q/ { shmlimit slow key=$http_x_key max_wait=1m; try_files /index.html =404; }
          location /plain/ { shmlimit slow key=$http_x_key; try_files /index.html =404; }
          location /dry/ { shmlimit slow key=$http_x_key max_wait=40s dry_run; try_files /index.html =404; }
          location /free/ { try_files /index.html =404; }
          location /auth/ { auth_request /authq/; try_files /index.html =404; }
          location /authq/ { shmlimit slow key=$http_x_key max_wait=1m; try_files /index.html =404; }
        }
    """ % seg
    n = Nginx(conf, workers=1)
    access = os.path.join(n.dir, "access.log")
    n.write_conf(conf.replace("ACCESS", access), workers=1)
    with n:
        s, h, _ = n.get("/q/", {"X-Key": "k"})
        assert s == 200 and h["x-status"] == "PASSED" and h["x-delay"] == "0", (s, h)
        parked = socket.create_connection(("127.0.0.1", n.port), timeout=60)
        try:
            parked.sendall(b"GET /q/ HTTP/1.1\r\nHost: x\r\nX-Key: k\r\n\r\n")
            deadline = time.monotonic() + BOOT_TIMEOUT
            while "delaying request by" not in n.log():
                assert time.monotonic() < deadline, n.log()[-2000:]
                time.sleep(0.02)
            ms = int(re.search(r"delaying request by (\d+) ms", n.log()).group(1))
            assert 25000 <= ms <= 30000, ms  # one turn (30 s) after the first request
            # the only worker answers while the request is parked
            assert statuses(n.many("/free/", 5)) == [200] * 5
            assert n.get("/q/", {"X-Key": "other"})[0] == 200
            parked.setblocking(False)
            try:
                got = parked.recv(1)
                assert False, "the parked request was answered: %r" % got
            except BlockingIOError:
                pass
        finally:
            parked.close()
        deadline = time.monotonic() + BOOT_TIMEOUT
        while "/q/ 499 DELAYED" not in (open(access).read() if os.path.exists(access) else ""):
            assert time.monotonic() < deadline, n.log()[-2000:]
            time.sleep(0.02)
        # its turn was given back: the bucket is one turn (30 s) ahead, not two
        s, h, _ = n.get("/plain/", {"X-Key": "k"})
        assert s == 429 and 1 <= int(h["retry-after"]) <= 30, (s, h)
        assert n.get("/q/", {"X-Key": "fresh"})[0] == 200

        # dry run: charged as the real one, never parked, never refused
        r = [n.get("/dry/", {"X-Key": "d"}, timeout=20) for _ in range(3)]
        assert statuses(r) == [200] * 3, statuses(r)
        assert [h["x-status"] for _, h, _ in r] == ["PASSED", "DELAYED_DRY_RUN", "REJECTED_DRY_RUN"], r
        assert 29000 <= int(r[1][1]["x-delay"]) <= 30000 and "retry-after" not in r[2][1], r
        assert "delaying request, dry run" in n.log() and "limiting requests, dry run" in n.log()

        # a subrequest is never parked: its turn must be now (auth_request answers 500 to a 429)
        assert n.get("/auth/", {"X-Key": "a"})[0] == 200
        assert n.get("/auth/", {"X-Key": "a"})[0] == 500
        assert 'subrequest: "/authq/"' in n.log()


def test_dry_run():
    seg = segment_name("dry")
    conf = """
        shmlimit_segment %s capacity=1024;
        shmlimit_policy p 2/hour;
        shmlimit_policy q 3/hour;
        server {
          listen 127.0.0.1:PORT;
          add_header X-Status $shmlimit_status always;
          location /all/ { shmlimit_dry_run on; shmlimit p key=$http_x_key; try_files /index.html =404; }
          location /one/ { shmlimit p key=$http_x_key dry_run; shmlimit q key=$http_x_key; try_files /index.html =404; }
        }
    """ % seg
    with Nginx(conf) as n:
        r = [n.get("/all/", {"X-Key": "a"}) for _ in range(4)]
        assert statuses(r) == [200] * 4, statuses(r)
        assert [h["x-status"] for _, h, _ in r] == ["PASSED", "PASSED", "REJECTED_DRY_RUN", "REJECTED_DRY_RUN"]
        assert all("retry-after" not in h for _, h, _ in r)
        assert r[3][1]["x-ratelimit-remaining"] == "0"
        assert "limiting requests, dry run" in n.log()
        # p (dry run) is charged only while q admits; q enforces
        r = [n.get("/one/", {"X-Key": "b"}) for _ in range(5)]
        assert statuses(r) == [200, 200, 200, 429, 429], statuses(r)
        assert [h["x-status"] for _, h, _ in r] == ["PASSED", "PASSED", "REJECTED_DRY_RUN", "REJECTED", "REJECTED"]


def test_several_policies_all_or_nothing():
    seg = segment_name("multi")
    conf = """
        shmlimit_segment %s capacity=1024;
        shmlimit_policy per_client 2/hour;
        shmlimit_policy per_tenant 5/hour;
        shmlimit_policy heavy 10/hour;
        server {
          listen 127.0.0.1:PORT;
          shmlimit per_client key=$http_x_client;
          shmlimit per_tenant key=$http_x_tenant;
          location / { try_files /index.html =404; }
          location /cost/ { shmlimit heavy key=$http_x_tenant cost=$arg_cost; try_files /index.html =404; }
        }
    """ % seg
    with Nginx(conf) as n:
        got = []
        for c in range(6):
            got += statuses([n.get("/", {"X-Client": "c%d" % c, "X-Tenant": "t"}) for _ in range(3)])
        # per client 2 + 2 + 1 (tenant exhausted) = 5, and a client refused by
        # per_client never spent the tenant's allowance
        assert got.count(200) == 5, got
        assert got == [200, 200, 429, 200, 200, 429, 200, 429, 429] + [429] * 9, got
        s, h, _ = n.get("/", {"X-Client": "c9", "X-Tenant": "t"})
        assert s == 429 and h["ratelimit"].startswith('"per_client";r=2;') and '"per_tenant";r=0;' in h["ratelimit"], h
        # a location with its own shmlimit replaces the inherited ones; cost from a variable
        assert n.get("/cost/?cost=7", {"X-Tenant": "u"})[0] == 200
        assert n.get("/cost/?cost=4", {"X-Tenant": "u"})[0] == 429
        assert n.get("/cost/?cost=3", {"X-Tenant": "u"})[0] == 200
        assert n.get("/cost/?cost=0", {"X-Tenant": "u"})[0] == 200
        assert n.get("/cost/?cost=x", {"X-Tenant": "u"})[0] == 500
        assert n.get("/cost/?cost=99999999999999999999999", {"X-Tenant": "u"})[0] == 500
        assert "is not a whole number" in n.log()


def test_sigkilled_worker_and_reload_keep_state():
    seg = segment_name("kill")
    conf = """
        shmlimit_segment %s capacity=1024;
        shmlimit_policy p 60/hour;
        server {
          listen 127.0.0.1:PORT reuseport;
          add_header X-Pid $pid always;
          location / { shmlimit p key=$http_x_key; try_files /index.html =404; }
        }
    """ % seg
    with Nginx(conf, workers=2) as n:
        before = n.worker_pids()
        assert len(before) == 2, before
        victim = sorted(before)[0]
        ok, failed, codes = 0, 0, []

        def one(i):
            if i == 40:
                os.kill(victim, signal.SIGKILL)
            try:
                return n.get("/", {"X-Key": "k"}, timeout=30)[0]
            except (OSError, http.client.HTTPException):
                return None

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            codes = list(pool.map(one, range(200)))
        ok, failed = codes.count(200), codes.count(None)
        # a request charged by the killed worker may have lost its answer:
        # never more than the allowance, at most `failed` fewer
        assert ok <= 60 and ok + failed >= 60, (ok, failed)
        deadline = time.monotonic() + BOOT_TIMEOUT
        while len(n.worker_pids() - {victim}) < 2:  # the master's replacement
            assert time.monotonic() < deadline, n.worker_pids()
            time.sleep(0.05)
        after = n.many("/", 40, lambda i: {"X-Key": "k"})
        assert statuses(after) == [429] * 40, statuses(after)
        assert statuses(n.many("/", 10, lambda i: {"X-Key": "fresh"})) == [200] * 10
        print("  SIGKILLed worker %d under load: %d admitted, %d requests lost; replacement decides on the same bucket"
              % (victim, ok, failed))

        # reload: new workers, same buckets
        old = n.worker_pids()
        n.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + BOOT_TIMEOUT
        while n.worker_pids() & old or len(n.worker_pids()) < 2:
            assert time.monotonic() < deadline and n.proc.poll() is None, n.log()[-2000:]
            time.sleep(0.05)
        s, h, _ = n.get("/", {"X-Key": "k"})
        assert s == 429 and int(h["retry-after"]) >= 1, (s, h)
        assert statuses(n.many("/", 60, lambda i: {"X-Key": "fresh"})).count(200) == 50


def have_binding():
    d = os.path.join(ARGS.python_dir, "shmlimit") if ARGS.python_dir else ""
    return bool(d) and os.path.isdir(d) and any(f.startswith("_shmlimit") and f.endswith(".so") for f in os.listdir(d))


def open_limiter(seg):
    if not have_binding():
        return None
    if ARGS.python_dir not in sys.path:
        sys.path.insert(0, ARGS.python_dir)
    import shmlimit  # noqa: E402
    return shmlimit.Limiter.open(seg)


APP = '''
import os, shmlimit
limiter = shmlimit.Limiter.open(os.environ["SEGMENT"])
policy = limiter.find_policy("shared")

def application(environ, start_response):
    d = limiter.acquire(policy, environ.get("HTTP_X_KEY", ""))
    status = "200 OK" if d.allowed else "429 Too Many Requests"
    start_response(status, [("Content-Type", "text/plain"), ("X-Served-By", "app")])
    return [b"app\\n"]
'''


def test_nginx_and_gunicorn_share_one_policy():
    if not have_binding():
        print("  SKIP: the Python binding is not built")
        return
    if subprocess.run(["/usr/bin/python3", "-c", "import gunicorn"], capture_output=True).returncode != 0:
        print("  SKIP: gunicorn is not installed")
        return
    seg = segment_name("shared")
    app_port = free_port()
    conf = """
        shmlimit_segment %s capacity=1024;
        shmlimit_policy shared 30/hour;
        server {
          listen 127.0.0.1:PORT reuseport;
          location /static/ { shmlimit shared key=$http_x_key; try_files /index.html =404; }
          location /app/ { proxy_pass http://127.0.0.1:%d; }
        }
    """ % (seg, app_port)
    with Nginx(conf, workers=2) as n:  # nginx's master creates the segment and the policy
        appdir = os.path.join(n.dir, "app")
        os.makedirs(appdir)
        with open(os.path.join(appdir, "shared_app.py"), "w") as f:
            f.write(APP)
        env = dict(os.environ, SEGMENT=seg, PYTHONDONTWRITEBYTECODE="1",
                   PYTHONPATH=os.pathsep.join([appdir, ARGS.python_dir]))
        app = subprocess.Popen(["/usr/bin/python3", "-m", "gunicorn", "--workers", "2", "--preload",
                                "--bind", "127.0.0.1:%d" % app_port, "--log-level", "warning",
                                "shared_app:application"], env=env, cwd=appdir, start_new_session=True)
        try:
            deadline = time.monotonic() + BOOT_TIMEOUT
            while True:
                assert app.poll() is None, "gunicorn exited with %s" % app.returncode
                try:
                    if n.get("/app/", {"X-Key": "probe"}, timeout=10)[0] == 200:
                        break
                except OSError:
                    pass
                assert time.monotonic() < deadline, "gunicorn did not answer"
                time.sleep(0.1)
            with concurrent.futures.ThreadPoolExecutor(16) as pool:
                r = list(pool.map(lambda i: (i % 2, n.get("/app/" if i % 2 else "/static/", {"X-Key": "k"})[0]),
                                  range(120)))
            by_nginx = sum(1 for side, s in r if side == 0 and s == 200)
            by_app = sum(1 for side, s in r if side == 1 and s == 200)
            assert {s for _, s in r} <= {200, 429}, r
            assert by_nginx + by_app == 30, (by_nginx, by_app)
            assert by_nginx > 0 and by_app > 0, (by_nginx, by_app)
            print("  one policy 30/hour: nginx admitted %d, gunicorn admitted %d, together %d"
                  % (by_nginx, by_app, by_nginx + by_app))
        finally:
            app.send_signal(signal.SIGTERM)
            try:
                app.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(app.pid, signal.SIGKILL)
                app.wait()


def main():
    global ARGS
    p = argparse.ArgumentParser()
    p.add_argument("--nginx", default="/usr/sbin/nginx")
    p.add_argument("--module", required=True)
    p.add_argument("--python-dir", default="")
    p.add_argument("-k", default="")
    ARGS = p.parse_args()
    ARGS.module = os.path.abspath(ARGS.module)
    ARGS.python_dir = os.path.abspath(ARGS.python_dir) if ARGS.python_dir else ""
    tests = [(k, v) for k, v in globals().items() if k.startswith("test_") and callable(v) and ARGS.k in k]
    failed = []
    t_all = time.monotonic()
    try:
        for name, fn in tests:
            t0 = time.monotonic()
            print("%s ..." % name, flush=True)
            try:
                fn()
                print("  ok (%.1f s)" % (time.monotonic() - t0), flush=True)
            except Exception:
                traceback.print_exc()
                failed.append(name)
    finally:
        for seg in SEGMENTS:
            remove_segment(seg)
    print("%d of %d passed in %.1f s" % (len(tests) - len(failed), len(tests), time.monotonic() - t_all))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
