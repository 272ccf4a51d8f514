"""The WSGI middleware's part in locking: 503 + Retry-After, declarations, release on errors."""

from __future__ import annotations

from typing import Any

import pytest

from pymsm import SessionManager, readonly
from pymsm.adapters.wsgi import SessionMiddleware
from pymsm.stores.memory import MemoryStore


def call(mw: SessionMiddleware, cookie: str | None = None) -> tuple[str, dict[str, str], bytes]:
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        seen["status"], seen["headers"] = status, dict(headers)

    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/page"}
    if cookie:
        environ["HTTP_COOKIE"] = f"MSMSESSIONID={cookie}"
    result = mw(environ, start_response)
    body = b"".join(result)
    getattr(result, "close", lambda: None)()
    return seen["status"], seen["headers"], body


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    session = environ["pymsm.session"]
    session["n"] = session.get("n", 0) + 1
    start_response("200 OK", [])
    return [b"ok"]


def setup(mode: str = "all", **settings: Any) -> tuple[SessionMiddleware, MemoryStore, str]:
    store = MemoryStore("n1")
    mgr = SessionManager(
        memcached_nodes="n1:127.0.0.1:1", stores={"n1": store}, locking_mode=mode, **settings
    )
    session = mgr.load(None)
    session["n"] = 0
    mgr.save(session)
    return SessionMiddleware(app, manager=mgr), store, session.id


def test_a_lock_timeout_answers_503_with_retry_after() -> None:
    mw, store, sid = setup(lock_failure="error", lock_wait_timeout="20ms")
    store.set("lock:" + sid, b"other", 5)
    status, headers, _ = call(mw, sid)
    assert status.startswith("503") and headers["Retry-After"] == "1"
    assert len(mw.manager.local_locks) == 0
    store.delete("lock:" + sid)
    assert call(mw, sid)[0] == "200 OK"
    assert "lock:" + sid not in store.items  # released when the body closed


def test_a_readonly_app_is_not_locked_in_auto_mode() -> None:
    mw, store, sid = setup("auto")

    @readonly
    def reader(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        return app(environ, start_response)

    mw.app = reader
    before = store.calls.get("add", 0)
    assert call(mw, sid)[0] == "200 OK"
    assert store.calls.get("add", 0) == before
    mw.app = app  # undeclared, unknown: locked
    call(mw, sid)
    assert store.calls.get("add", 0) == before + 1


def test_the_lock_is_released_when_the_app_raises() -> None:
    mw, store, sid = setup()

    def failing(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        environ["pymsm.session"]["n"] = 5
        raise RuntimeError("boom")

    mw.app = failing
    with pytest.raises(RuntimeError):
        call(mw, sid)
    assert "lock:" + sid not in store.items and len(mw.manager.local_locks) == 0
