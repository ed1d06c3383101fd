#!/usr/bin/env python3
"""Runs Django REST framework's own tests/test_throttling.py against
shmlimit.django.throttling: the module's throttle import is swapped and
nothing else changes (a fresh segment per test comes from
drf_suite_plugin.py).

    run_drf_suite.py DRF_CHECKOUT [--shmlimit-mode drf-exact|default] [pytest args...]

DRF_CHECKOUT is a checkout of DRF's repository (tag 3.14.0 is the version
tested); it is not part of this project and is not downloaded here. The
swapped module is written next to the original as
tests/test_throttling_shmlimit.py. Needs pytest-django. PYTHONPATH must
hold the shmlimit package (e.g. build/ci/python).
"""
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
IMPORT = re.compile(r"from rest_framework\.throttling import \(")


def main(argv):
    if len(argv) < 2 or argv[1].startswith("-"):
        sys.exit(__doc__)
    checkout = os.path.abspath(argv[1])
    src = os.path.join(checkout, "tests", "test_throttling.py")
    if not os.path.isfile(src):
        sys.exit("run_drf_suite.py: no tests/test_throttling.py in %s" % checkout)
    with open(src) as f:
        text = f.read()
    swapped, n = IMPORT.subn("from shmlimit.django.throttling import (", text)
    if n != 1:
        sys.exit("run_drf_suite.py: expected one 'from rest_framework.throttling import (' in %s, found %d" % (src, n))
    dst = os.path.join(checkout, "tests", "test_throttling_shmlimit.py")
    with open(dst, "w") as f:
        f.write(swapped)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([HERE, checkout] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "drf_suite_plugin", "-q",
           "tests/test_throttling_shmlimit.py"] + argv[2:]
    return subprocess.call(cmd, cwd=checkout, env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
