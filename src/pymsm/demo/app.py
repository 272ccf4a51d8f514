"""The demo app: the classic session test page (which node served you, the session id with its
node and route, created / last accessed, a counter, attributes) plus the cluster's state and
buttons to kill and restart nodes. A WSGI app behind pymsm's SessionMiddleware.

    GET  /               the page (counts the visit)
    GET  /api/session    the same as JSON (counts the visit)
    POST /attributes     action=set&name=..&value=.. or action=remove&name=..  -> 303 /
    POST /invalidate     ends the session -> 303 /
    POST /control        action=kill|start&kind=memcached|app&name=..  -> the supervisor -> 303 /
    GET  /healthz        "ok" without touching the session (the balancer's health check)

Settings come from the environment: `APP_NAME`, `MSM_*` (pymsm's settings) and
`MSM_DEMO_CONTROL` (the supervisor's control URL). gunicorn loads `pymsm.demo.app:app`.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote

from pymsm.adapters.wsgi import SessionMiddleware
from pymsm.core.session import Session
from pymsm.demo import control
from pymsm.demo.page import render
from pymsm.demo.processes import DemoError

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

MAX_FORM = 64 * 1024
CLUSTER_TTL = 0.5  # seconds an app reuses the cluster state (one control call per page is a lot)


class DemoApp:
    """The page and its actions. `control_url` None: no cluster section (app run alone)."""

    def __init__(self, name: str, control_url: str | None) -> None:
        self.name = name
        self.control_url = control_url
        self._cluster: tuple[float, dict[str, Any] | None] = (0.0, None)
        self._lock = threading.Lock()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path, method = environ.get("PATH_INFO", "/"), environ.get("REQUEST_METHOD", "GET")
        if path == "/healthz":
            return _send(start_response, "200 OK", b"ok", "text/plain")
        session: Session = environ["pymsm.session"]
        if method == "POST" and path in ("/attributes", "/invalidate", "/control"):
            form = _form(environ)
            message = self._act(path, form, session)
            location = "/" + (f"?message={quote(message)}" if message else "")
            start_response("303 See Other", [("Location", location), ("Content-Length", "0")])
            return [b""]
        if method != "GET" or path not in ("/", "/api/session"):
            return _send(start_response, "404 Not Found", b"not found\n", "text/plain")
        session["count"] = session.get("count", 0) + 1
        if path == "/api/session":
            start_response("200 OK", [("Content-Type", "application/json")])
            # rendered after start_response: the save there may give the session a new id
            return [json.dumps(self.info(environ, session)).encode()]
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
        message = parse_qs(environ.get("QUERY_STRING", "")).get("message", [""])[0]
        # right after an action (the redirect carries its message) show the state it made
        return [render(self.info(environ, session, fresh=bool(message)), message).encode()]

    def _act(self, path: str, form: dict[str, str], session: Session) -> str:
        if path == "/invalidate":
            session.invalidate()
            return "session invalidated"
        if path == "/attributes":
            name = form.get("name", "").strip()
            if not name:
                return "an attribute needs a name"
            if form.get("action") == "remove":
                session.pop(name, None)
                return f"removed {name}"
            session[name] = form.get("value", "")
            return f"set {name}"
        return self.control(form.get("action", ""), form.get("kind", ""), form.get("name", ""))

    def control(self, action: str, kind: str, name: str) -> str:
        """Forward a kill/start to the supervisor; returns its message."""
        if self.control_url is None:
            return "no demo supervisor (MSM_DEMO_CONTROL is not set)"
        if action not in ("kill", "start"):
            return f"unknown action {action!r}"
        path = f"/{action}/{quote(kind)}/{quote(name)}?caller={quote(self.name)}"
        try:
            answer = control.call(self.control_url, "POST", path)
        except DemoError as exc:
            return str(exc)
        if "state" in answer:
            with self._lock:
                self._cluster = (time.monotonic(), answer["state"])
        return str(answer.get("message", ""))

    def cluster(self, fresh: bool = False) -> dict[str, Any] | None:
        """The supervisor's state, at most CLUSTER_TTL old unless `fresh`; None without a
        supervisor."""
        if self.control_url is None:
            return None
        with self._lock:
            fetched, state = self._cluster
            if not fresh and state is not None and time.monotonic() - fetched < CLUSTER_TTL:
                return state
        try:
            state = dict(control.call(self.control_url, timeout=0.5))
        except DemoError as exc:
            return {"error": str(exc)}
        with self._lock:
            self._cluster = (time.monotonic(), state)
        return state

    def info(
        self, environ: WSGIEnvironment, session: Session, fresh: bool = False
    ) -> dict[str, Any]:
        sid = session.sid
        return {
            "node": self.name,
            "address": f"{environ.get('SERVER_NAME', '')}:{environ.get('SERVER_PORT', '')}",
            "pid": os.getpid(),
            "session_id": session.id,
            "id_parts": {"base": sid.base, "node": sid.node, "route": sid.route},
            "is_new": session.is_new,
            "created": session.created,
            "last_accessed": session.last_accessed,
            "count": session.get("count", 0),
            "attributes": {k: v for k, v in session.items() if k != "count"},
            "cluster": self.cluster(fresh),
        }


def _send(start_response: StartResponse, status: str, body: bytes, kind: str) -> list[bytes]:
    start_response(status, [("Content-Type", kind), ("Content-Length", str(len(body)))])
    return [body]


def _form(environ: WSGIEnvironment) -> dict[str, str]:
    try:
        length = min(int(environ.get("CONTENT_LENGTH") or 0), MAX_FORM)
    except ValueError:
        length = 0
    body = environ["wsgi.input"].read(length).decode("utf-8", "replace") if length > 0 else ""
    return {k: v[0] for k, v in parse_qs(body).items()}


def make_app(name: str | None = None, control_url: str | None = None, **settings: Any) -> Any:
    """The demo app behind SessionMiddleware; settings as keyword arguments or `MSM_*`."""
    name = name or os.environ.get("APP_NAME") or f"pid{os.getpid()}"
    control_url = control_url or os.environ.get("MSM_DEMO_CONTROL") or None
    return SessionMiddleware(DemoApp(name, control_url), **settings)


def __getattr__(attr: str) -> Any:
    # `app` is built on first use, from the environment gunicorn's master was given
    if attr == "app":
        globals()["app"] = made = make_app()
        return made
    raise AttributeError(attr)
