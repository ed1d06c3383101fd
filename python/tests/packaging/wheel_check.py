"""ctest python.wheel: the pip-installable package, end to end.

1. `python3 -m build --wheel --no-isolation <source>/python`, with the
   extension built by the project's CMake in the already configured build
   tree (SHMLIMIT_CMAKE_BUILD_DIR): nothing is compiled again.
2. A fresh `python3 -m venv` (no system site-packages) installs the wheel
   with its own pip, offline (`--no-index`).
3. The venv's interpreter, isolated (-I: no PYTHONPATH, no current
   directory), imports shmlimit from the venv and only from there; checks
   that shmlimit.__version__, importlib.metadata.version("shmlimit") and
   CMake's project version agree; 4 forked processes share one exact
   limit through the installed extension; and shmlimit.limits_storage,
   without `limits` in the venv, says what to install.

    python3 wheel_check.py <source dir> <configured build dir> <scratch dir> <cmake version>
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import time

SMOKE = r'''
import importlib.metadata, os, sys
import shmlimit
prefix = os.path.realpath(sys.prefix)
for mod in (shmlimit, shmlimit._shmlimit):
    assert os.path.realpath(mod.__file__).startswith(prefix + os.sep), (mod.__file__, prefix)
want = sys.argv[1]
meta = importlib.metadata.version("shmlimit")
assert shmlimit.__version__ == meta == want, (shmlimit.__version__, meta, want)

# 4 forked processes, 500 attempts each, one key under 100/h: exactly 100.
name = "/shmlimit-wheel-test-%d" % os.getpid()
lim = shmlimit.Limiter.create(name, capacity=64, claim_timeout=30.0)
try:
    lim.add_policy("p", "gcra", "100/h")
    pipes = []
    for _ in range(4):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            n = sum(1 for _ in range(500) if lim.acquire("p", "k"))
            os.write(w, b"%d" % n)
            os._exit(0)
        os.close(w)
        pipes.append((pid, r))
    total = 0
    for pid, r in pipes:
        total += int(os.read(r, 64))
        os.close(r)
        _, status = os.waitpid(pid, 0)
        assert status == 0, status
    assert total == 100, total
finally:
    lim.close()
    shmlimit.Limiter.remove(name)
# The limits storage names what it needs when the venv has no `limits`.
try:
    import shmlimit.limits_storage
except ImportError as e:
    assert "python3-limits" in str(e) and "shmlimit[limits]" in str(e), e
else:
    raise AssertionError("the venv has limits: the test expects a venv without it")
print("wheel OK: shmlimit", shmlimit.__version__, "from", os.path.dirname(shmlimit.__file__),
      "; 4 forked processes admitted", total, "of 100")
'''


def run(cmd, **kw):
    print("+", " ".join(c if len(c) < 200 else "<smoke test>" for c in cmd), flush=True)
    subprocess.run(cmd, check=True, **kw)


def main() -> int:
    source, build_dir, scratch, version = sys.argv[1:5]
    t0 = time.monotonic()
    shutil.rmtree(scratch, ignore_errors=True)
    os.makedirs(scratch)
    dist = os.path.join(scratch, "dist")
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.update(SHMLIMIT_CMAKE_BUILD_DIR=build_dir,
               SHMLIMIT_BUILD_BASE=os.path.join(scratch, "setuptools"),
               PYTHONDONTWRITEBYTECODE="1")
    run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", dist,
         os.path.join(source, "python")], env=env)
    wheels = glob.glob(os.path.join(dist, "shmlimit-%s-*.whl" % version))
    assert len(wheels) == 1, os.listdir(dist)
    wheel = wheels[0]
    tags = os.path.basename(wheel)[:-4].split("-")[2:]
    assert tags[0].startswith("cp") and tags[2] != "any", tags  # a binary wheel for this CPython
    t1 = time.monotonic()

    venv = os.path.join(scratch, "venv")
    run([sys.executable, "-m", "venv", venv], env=env)
    py = os.path.join(venv, "bin", "python")
    run([py, "-m", "pip", "install", "--no-index", "--no-cache-dir",
         "--disable-pip-version-check", wheel], env=env)
    run([py, "-I", "-c", SMOKE, version], env=env, cwd=scratch)
    t2 = time.monotonic()
    print("wheel %s: built in %.1f s, venv + install + smoke test in %.1f s"
          % (os.path.basename(wheel), t1 - t0, t2 - t1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
