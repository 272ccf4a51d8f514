"""The demo's control API: a small JSON HTTP server the supervisor runs on a free loopback port,
and the client side used by the app page and `msm demo ctl`.

    GET  /state                      the cluster state (Demo.state())
    POST /kill/<kind>/<name>         SIGKILL a node (kind: memcached or app)
    POST /start/<kind>/<name>        start it again on its port

A POST answers `{"ok": true, "message": ..., "state": ...}` or, for an unknown node, 404 with
`{"ok": false, "message": ...}`. `?caller=<app>` names the app asking: an app that kills itself
gets its answer first, the kill follows a moment later (so its page can still redirect).

`msm demo ctl --port 8080` finds the control API of the demo whose balancer listens on 8080 in
the state file `<tmp>/pymsm-demo-<port>.json` that the supervisor writes while it runs.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from pymsm.demo.processes import HOST, DemoError

if TYPE_CHECKING:
    from pymsm.demo.supervisor import Demo

log = logging.getLogger("pymsm.demo")

SELF_KILL_DELAY = 0.3  # seconds: time for the asking app to send its redirect


def state_file(port: int) -> Path:
    return Path(tempfile.gettempdir()) / f"pymsm-demo-{port}.json"


class ControlServer:
    """Serves `demo`'s control API in a daemon thread; `url` once started."""

    def __init__(self, demo: Demo) -> None:
        handler = type("Handler", (_Handler,), {"demo": demo})
        self.httpd = ThreadingHTTPServer((HOST, 0), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, name="pymsm-demo-control", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.httpd.server_address[1]}"

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    demo: Demo
    server_version = "pymsm-demo-control"

    def do_GET(self) -> None:
        if urlsplit(self.path).path.rstrip("/") in ("", "/state"):
            self._answer(200, self.demo.state())
        else:
            self._answer(404, {"ok": False, "message": "GET /state, POST /kill|start/KIND/NAME"})

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        parts = url.path.strip("/").split("/")
        caller = parse_qs(url.query).get("caller", [""])[0]
        if len(parts) != 3 or parts[0] not in ("kill", "start"):
            self._answer(404, {"ok": False, "message": "POST /kill/KIND/NAME or /start/KIND/NAME"})
            return
        action, kind, name = parts
        try:
            if action == "kill" and kind == "app" and name == caller:
                self.demo.node(kind, name)  # unknown names fail now, not in the timer
                timer = threading.Timer(SELF_KILL_DELAY, self.demo.kill, (kind, name))
                timer.daemon = True
                timer.start()
                message = f"killing app {name} (it asked)"
            elif action == "kill":
                message = self.demo.kill(kind, name)
            else:
                message = self.demo.start_node(kind, name)
        except KeyError as exc:
            self._answer(404, {"ok": False, "message": str(exc.args[0])})
            return
        except DemoError as exc:
            self._answer(500, {"ok": False, "message": str(exc)})
            return
        self._answer(200, {"ok": True, "message": message, "state": self.demo.state()})

    def _answer(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload, indent=1).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("control: " + format, *args)


# -- client side -------------------------------------------------------------------------------


def call(url: str, method: str = "GET", path: str = "/state", timeout: float = 30.0) -> Any:
    """One request to a control API; returns the decoded JSON (also of a 404/500 answer).
    Raises DemoError when nothing answers."""
    request = urllib.request.Request(
        url + path, method=method, data=b"" if method == "POST" else None
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read() or b"{}")
    except (OSError, ValueError) as exc:
        raise DemoError(f"the demo's control API at {url} does not answer: {exc}") from exc


def find(port: int) -> str:
    """The control URL of the demo whose balancer listens on `port` (raises DemoError)."""
    path = state_file(port)
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        raise DemoError(
            f"no demo runs with its balancer on port {port} (no {path}): start one with "
            f"`msm demo --port {port}`, or name its port with --port"
        ) from None
    url: str = info["control"]
    if not _alive(int(info.get("pid", 0))):
        raise DemoError(f"the demo on port {port} is gone (stale {path}); start it again")
    return url


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
