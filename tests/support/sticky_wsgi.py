"""A tiny WSGI app behind SessionMiddleware for the sticky integration tests; settings come
from MSM_* environment variables. GET /set?k=v stores attributes, /incr adds 1 to `n`,
/login rotates the id (keeping the data), /logout invalidates; every response is the session as JSON with the serving process id."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl

from pymsm.adapters.wsgi import SessionMiddleware


def inner(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    session = environ["pymsm.session"]
    path = environ.get("PATH_INFO", "/")
    if path == "/set":
        for key, value in parse_qsl(environ.get("QUERY_STRING", "")):
            session[key] = value
    elif path == "/incr":
        session["n"] = session.get("n", 0) + 1
    elif path == "/login":
        session.rotate_id()
    elif path == "/logout":
        session.invalidate()
    body = json.dumps({"data": dict(session), "id": session.id, "pid": os.getpid()}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


app = SessionMiddleware(inner)
