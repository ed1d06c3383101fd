#!/usr/bin/python3
"""`shmlimit exporter` scraped over HTTP, as Prometheus would.

Starts the exporter on a free port (--listen 127.0.0.1:0; its first line
names the port) for three segments, two that exist and one that does not,
and scrapes it with urllib while other processes (`shmlimit acquire`)
change the segments. Every scrape is parsed by prometheus_client's text
parser (Debian's python3-prometheus-client) and must have every family
once, shmlimit_up 1 for a segment that exists and 0 otherwise, and per-
policy counters that grow by exactly the decisions made, never decreasing
(not across `shmlimit reset`). A segment created after the start is seen;
a removed one goes to 0. 404 and 405 for other paths and methods; 400
for garbage and an oversized header; a client that sends nothing holds
the next scrape only until the exporter's deadline (10 s).

    exporter.py path/to/shmlimit
"""
import collections
import os
import select
import socket
import subprocess
import sys
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

CLI = sys.argv[1]
PID = os.getpid()
A, B, C = (f"/shmlimit-test-exporter-{PID}-{s}" for s in "abc")


def cli(*args, ok=(0,)):
    r = subprocess.run([CLI, *args], capture_output=True, text=True, timeout=120)
    assert r.returncode in ok, (args, r.returncode, r.stdout, r.stderr)
    return r


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4"), resp.headers
        text = resp.read().decode()
    types = collections.Counter(l.split()[2] for l in text.splitlines() if l.startswith("# TYPE"))
    assert types and all(n == 1 for n in types.values()), types
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    up = {s.labels["segment"]: s.value for s in fams["shmlimit_up"].samples}
    totals = {}
    for fam, kind in (("shmlimit_policy_admitted", "admitted"), ("shmlimit_policy_denied", "denied")):
        for s in fams.get(fam, type("F", (), {"samples": []})).samples:
            if s.name.endswith("_total"):
                totals[(s.labels["segment"], s.labels["policy"], kind)] = s.value
    return up, totals


def status(port, path, method="GET"):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


def main():
    for seg in (A, B):
        cli("create", seg, "--capacity", "64")
        cli("policy", seg, "api", "3/h")
    proc = subprocess.Popen([CLI, "exporter", "--listen", "127.0.0.1:0", A, B, C],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        assert ready, "the exporter printed nothing in 120 s"
        line = proc.stdout.readline()
        assert line.startswith("shmlimit exporter: serving 3 segments on http://127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1].split("/")[0])

        up, totals = scrape(port)
        assert up == {A: 1, B: 1, C: 0}, up
        assert totals[(A, "api", "admitted")] == 0 and totals[(A, "api", "denied")] == 0, totals
        assert not any(seg == C for seg, _, _ in totals), "samples for a missing segment"

        # Five decisions on one key of A: 3 admitted, 2 denied.
        codes = [cli("acquire", A, "api", "k", ok=(0, 1)).returncode for _ in range(5)]
        assert codes == [0, 0, 0, 1, 1], codes
        up, after = scrape(port)
        assert after[(A, "api", "admitted")] == 3 and after[(A, "api", "denied")] == 2, after
        assert after[(B, "api", "admitted")] == 0, after

        # Counters never decrease: reset forgets the bucket, not the totals.
        cli("reset", A)
        cli("acquire", A, "api", "k")
        _, again = scrape(port)
        assert again[(A, "api", "admitted")] == 4 and again[(A, "api", "denied")] == 2, again
        for k, v in after.items():
            assert again[k] >= v, (k, v, again[k])

        # A segment created after the start is seen; a removed one is down.
        cli("create", C, "--capacity", "16")
        cli("rm", B)
        up, _ = scrape(port)
        assert up == {A: 1, B: 0, C: 1}, up

        # Hostile clients: garbage, an oversized header, one that says
        # nothing (dropped at the exporter's deadline), one that leaves at
        # once. Each gets an answer or is dropped; the next scrape works.
        def raw(data, read=True):
            with socket.create_connection(("127.0.0.1", port), timeout=120) as s:
                if data:
                    s.sendall(data)
                if not read:
                    return b""
                out = b""
                while chunk := s.recv(65536):
                    out += chunk
                return out.split(b"\r\n", 1)[0]
        assert raw(b"HELLO\r\n\r\n") == b"HTTP/1.1 400 Bad Request"
        assert raw(b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 100000 + b"\r\n\r\n") == \
            b"HTTP/1.1 400 Bad Request"
        raw(b"GET /metrics HTTP/1.1\r\n\r\n", read=False)
        with socket.create_connection(("127.0.0.1", port), timeout=120):
            up, _ = scrape(port)  # waits for the silent client's deadline
        assert up == {A: 1, B: 0, C: 1}, up

        assert status(port, "/nothing") == 404
        assert status(port, "/metrics", "POST") == 405
        assert status(port, "/") == 200
        assert proc.poll() is None, "the exporter exited"
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        for seg in (A, B, C):
            subprocess.run([CLI, "rm", seg], capture_output=True)
    print("exporter: ok")


if __name__ == "__main__":
    main()
