"""Flask honours the locking modes: the lock is released after each request (also when the view
raises), and a lock timeout with lock_failure='error' answers 503 with Retry-After."""

from __future__ import annotations

import threading

import flask

from pymsm.adapters.flask import init_app
from pymsm.stores.memory import MemoryStore


def test_locks_are_released_and_timeouts_answer_503() -> None:
    app = flask.Flask(__name__)
    stores = {"n1": MemoryStore("n1"), "n2": MemoryStore("n2")}
    manager = init_app(
        app,
        memcached_nodes="n1:127.0.0.1:1,n2:127.0.0.1:2",
        locking_mode="all",
        lock_wait_timeout="100ms",
        lock_failure="error",
    )
    manager.stores = stores
    entered, release = threading.Event(), threading.Event()

    @app.route("/")
    def index() -> str:
        flask.session["n"] = flask.session.get("n", 0) + 1
        return str(flask.session["n"])

    @app.route("/slow")
    def slow() -> str:
        flask.session["slow"] = True
        entered.set()
        release.wait(5)
        return "slow"

    @app.route("/boom")
    def boom() -> str:
        flask.session["x"] = 1
        raise RuntimeError("view failed")

    client = app.test_client()
    assert client.get("/").text == "1"
    cookie = client.get_cookie("session")
    assert cookie is not None
    other = app.test_client()
    other.set_cookie("session", cookie.value)
    worker = threading.Thread(target=lambda: other.get("/slow"))
    worker.start()
    assert entered.wait(5)
    busy = client.get("/")
    assert busy.status_code == 503 and busy.headers["Retry-After"] == "1"
    release.set()
    worker.join(5)
    app.config["PROPAGATE_EXCEPTIONS"] = False
    assert client.get("/boom").status_code == 500
    assert client.get("/").status_code == 200  # neither request left its lock behind
    assert not any(k.startswith("lock:") for s in stores.values() for k in s.items)
