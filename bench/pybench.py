"""What the Python benchmarks (bench_drf.py, bench_integrations.py) share:
finding the built shmlimit package."""

from __future__ import annotations

import os
import sys


def find_module(build: str | None, prog: str) -> str:
    """The directory holding the built shmlimit package: `build`/python, or
    the first of build/bench, build/ci, build/dev that has one; exits with
    `prog`'s message when none does."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    candidates = [build] if build else [os.path.join(root, "build", p) for p in ("bench", "ci", "dev")]
    for c in candidates:
        path = os.path.join(c, "python")
        if os.path.isdir(os.path.join(path, "shmlimit")):
            return path
    sys.exit("%s: no built Python module in %s (build the target shmlimit_python)" % (prog, ", ".join(candidates)))
