"""A WSGI app behind pymsm's middleware: shows the app node, the session id and a counter.

Run it on two app processes against two memcached nodes (both started for you):

    python examples/run_wsgi_counter.py

or by hand: MSM_MEMCACHED_NODES=n1:127.0.0.1:11211,n2:127.0.0.1:11212 APP_NAME=app1 \
    gunicorn --bind 127.0.0.1:9001 --chdir examples wsgi_counter:app
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

from pymsm.adapters.wsgi import SessionMiddleware

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

APP_NAME = os.environ.get("APP_NAME", f"pid{os.getpid()}")


def counter(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "/")
    if path == "/healthz" or path.startswith("/static/"):
        # static files match request_uri_ignore_pattern: no session is loaded for them
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]
    session = environ["pymsm.session"]
    if path == "/logout":
        session.invalidate()
        start_response("302 Found", [("Location", "/")])
        return [b""]
    if path == "/login":
        session.rotate_id()
        session["user"] = "demo"
        start_response("302 Found", [("Location", "/")])
        return [b""]
    session["count"] = session.get("count", 0) + 1
    info = {
        "node": APP_NAME,
        "session_id": session.id,
        "cache_node": session.sid.node,
        "route": session.sid.route,
        "count": session["count"],
        "created": session.created,
        "user": session.get("user"),
    }
    if path == "/api/session":
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(info).encode()]
    rows = "".join(f"<tr><th>{k}</th><td>{html.escape(str(v))}</td></tr>" for k, v in info.items())
    page = f"<!doctype html><title>pymsm {APP_NAME}</title><h1>{APP_NAME}</h1><table>{rows}</table>"
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
    return [page.encode()]


app = SessionMiddleware(counter)
