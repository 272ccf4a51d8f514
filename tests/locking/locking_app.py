"""A tiny WSGI app behind SessionMiddleware, served by gunicorn in the locking tests.

`create(**settings)` is the gunicorn factory. Each response is JSON with `enter` and `exit`
(time.time() right after the session was loaded, i.e. after any lock was taken, and before the
response), so tests assert on ordering and overlap, not on durations.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qs

from pymsm.adapters.wsgi import SessionMiddleware


def create(**settings: Any) -> SessionMiddleware:
    holder: dict[str, SessionMiddleware] = {}

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        session = environ["pymsm.session"]
        pause = float(query.get("sleep", 0))
        action = environ["PATH_INFO"].strip("/")
        body: dict[str, Any] = {}
        if action == "stats":
            body = dict(holder["mw"].manager.stats)
        elif action == "pid":
            body = {"pid": os.getpid()}
        elif action == "get":
            body = {"data": dict(session), "id": session.id, "status": session.load_status}
        else:
            value = session.get(query.get("key", "n"), 0)
            body["enter"] = time.time()
            time.sleep(pause)
            if action in ("incr", "hang"):
                session[query.get("key", "n")] = value + 1
            elif action == "logout":
                session.invalidate()
            body["exit"] = time.time()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(body).encode()]

    holder["mw"] = SessionMiddleware(app, **settings)
    return holder["mw"]
