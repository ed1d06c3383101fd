"""Runs a function in forked children (real processes, one real segment)
and collects what each returns (JSON through a pipe)."""
from __future__ import annotations

import json
import os
import traceback
from typing import Any, Callable, List


def run_forked(count: int, fn: Callable[[int], Any], timeout: float = 120.0) -> List[Any]:
    """Forks ``count`` children running ``fn(index)``; returns their results
    in index order. A child that raises fails the caller with its traceback."""
    children = []
    for i in range(count):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: never return into pytest
            os.close(r)
            code = 0
            try:
                payload = {"ok": fn(i)}
            except BaseException:
                payload = {"error": traceback.format_exc()}
                code = 1
            try:
                with os.fdopen(w, "w") as f:
                    json.dump(payload, f)
            finally:
                os._exit(code)
        os.close(w)
        children.append((pid, r))
    results = []
    errors = []
    for pid, r in children:
        with os.fdopen(r) as f:
            text = f.read()
        _, status = os.waitpid(pid, 0)
        payload = json.loads(text) if text else {"error": "child %d exited with status %d" % (pid, status)}
        if "error" in payload:
            errors.append(payload["error"])
        results.append(payload.get("ok"))
    if errors:
        raise AssertionError("a forked child failed:\n" + "\n".join(errors))
    return results
