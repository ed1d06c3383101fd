"""The Flask site of the Flask-Limiter end-to-end test (test_flask_gunicorn.py).

Two Flask apps behind one WSGI entry, each with its own Flask-Limiter on the
storage named by $E2E_STORAGE_URI ("memory://" or "shmlimit:///..."):
/fixed/... limits with the fixed-window strategy, /moving/... with the
moving-window strategy. The routes are written as any Flask-Limiter user
writes them; nothing but the storage URI differs between the runs.
"""
from __future__ import annotations

import os
import time

from flask import Flask, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from werkzeug.middleware.dispatcher import DispatcherMiddleware

import shmlimit.limits_storage  # noqa: F401  (registers shmlimit://)

STORAGE_URI = os.environ["E2E_STORAGE_URI"]
ALLOWANCE = int(os.environ.get("E2E_ALLOWANCE", "20"))


def make_app(strategy: str) -> Flask:
    app = Flask("e2e_" + strategy.replace("-", "_"))
    limiter = Limiter(get_remote_address, app=app, storage_uri=STORAGE_URI, strategy=strategy,
                      headers_enabled=True)

    @app.route("/limited")
    @limiter.limit("%d per hour" % ALLOWANCE)
    def limited():
        return "ok", 200, {"X-Worker-Pid": str(os.getpid())}

    @app.route("/pid")
    @limiter.exempt
    def pid():
        time.sleep(float(request.args.get("sleep", "0")))
        return str(os.getpid())

    return app


root = Flask("e2e_root")


@root.route("/pid")
def root_pid():
    time.sleep(float(request.args.get("sleep", "0")))
    return str(os.getpid())


application = DispatcherMiddleware(root, {
    "/fixed": make_app("fixed-window"),
    "/moving": make_app("moving-window"),
})
