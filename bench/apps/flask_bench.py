"""The Flask app the framework benchmark serves; BENCH_SESSION picks the session back end:
none, cookie (Flask's default), flask-session (Flask-Session on memcached), pymsm."""

from __future__ import annotations

import os

import flask

variant = os.environ["BENCH_SESSION"]
app = flask.Flask(__name__)
app.secret_key = "bench-only"

if variant == "flask-session":
    from flask_session import Session
    from pymemcache.client.base import Client

    host, port = os.environ["BENCH_MEMCACHED"].split(":")
    app.config["SESSION_TYPE"] = "memcached"
    # no_delay: without it Nagle + delayed ACKs add ~40 ms per request (unfair to the peer)
    app.config["SESSION_MEMCACHED"] = Client((host, int(port)), no_delay=True)
    Session(app)
elif variant == "pymsm":
    from pymsm.adapters.flask import init_app

    init_app(app)  # MSM_MEMCACHED_NODES from the environment


@app.get("/count")
def count() -> str:
    if variant == "none":
        return "0"
    flask.session["count"] = flask.session.get("count", 0) + 1
    return str(flask.session["count"])
