"""The ASGI adapter honours the locking modes: the lock is held for the request and released
after it; a lock timeout with lock_failure='error' answers 503 with Retry-After."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pymsm import AsyncSessionManager
from pymsm.adapters.asgi import SessionMiddleware
from pymsm.stores.memory import AsyncMemoryStore, MemoryStore


async def call(app: Any, path: str, cookie: str | None = None) -> tuple[int, dict[bytes, bytes]]:
    headers = [(b"cookie", f"MSMSESSIONID={cookie}".encode())] if cookie else []
    scope = {"type": "http", "method": "GET", "path": path, "headers": headers}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = sent[0]
    return start["status"], dict(start["headers"])


def test_locks_are_released_and_timeouts_answer_503() -> None:
    stores = {"n1": AsyncMemoryStore(MemoryStore("n1")), "n2": AsyncMemoryStore(MemoryStore("n2"))}
    manager = AsyncSessionManager(
        memcached_nodes="n1:127.0.0.1:1,n2:127.0.0.1:2",
        stores=stores,
        locking_mode="all",
        lock_wait_timeout="50ms",
        lock_failure="error",
    )
    release = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scope["session"]["n"] = scope["session"].get("n", 0) + 1
        if scope["path"] == "/slow":
            await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    wrapped = SessionMiddleware(app, manager=manager)

    async def scenario() -> None:
        status, headers = await call(wrapped, "/")
        cookie = headers[b"set-cookie"].decode().split(";")[0].split("=", 1)[1]
        slow = asyncio.create_task(call(wrapped, "/slow", cookie))
        await asyncio.sleep(0.01)
        status, headers = await call(wrapped, "/", cookie)
        assert status == 503 and headers[b"retry-after"] == b"1"
        release.set()
        assert (await slow)[0] == 200
        assert (await call(wrapped, "/", cookie))[0] == 200  # the lock was released
        assert not any(k.startswith("lock:") for s in stores.values() for k in s.sync.items)

    asyncio.run(scenario())


@pytest.mark.parametrize("mode", ["all", "auto", "uriPattern:.*"])
def test_an_open_websocket_holds_no_lock(mode: str) -> None:
    """A websocket reads the session at connect and never saves it, and it stays open for
    minutes or hours: before the tenth session it took the lock there, and the user's other
    requests waited for it and then proceeded unlocked or answered 503."""
    stores = {"n1": AsyncMemoryStore(MemoryStore("n1")), "n2": AsyncMemoryStore(MemoryStore("n2"))}
    manager = AsyncSessionManager(
        memcached_nodes="n1:127.0.0.1:1,n2:127.0.0.1:2",
        stores=stores,
        locking_mode=mode,
        lock_wait_timeout="50ms",
        lock_failure="error",
    )
    closing = asyncio.Event()
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            seen.append(scope["session"].get("n"))
            await send({"type": "websocket.accept"})
            await closing.wait()
            await send({"type": "websocket.close", "code": 1000})
            return
        scope["session"]["n"] = scope["session"].get("n", 0) + 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    wrapped = SessionMiddleware(app, manager=manager)

    async def websocket(cookie: str) -> None:
        headers = [(b"cookie", f"MSMSESSIONID={cookie}".encode())]
        scope = {"type": "websocket", "path": "/ws", "headers": headers}

        async def receive() -> dict[str, Any]:
            return {"type": "websocket.connect"}

        async def send(message: dict[str, Any]) -> None:
            pass

        await wrapped(scope, receive, send)

    async def scenario() -> None:
        _, headers = await call(wrapped, "/")
        cookie = headers[b"set-cookie"].decode().split(";")[0].split("=", 1)[1]
        socket = asyncio.create_task(websocket(cookie))
        await asyncio.sleep(0.01)
        assert seen == [1]
        assert not any(k.startswith("lock:") for s in stores.values() for k in s.sync.items)
        assert (await call(wrapped, "/", cookie))[0] == 200  # not held up by the websocket
        closing.set()
        await socket

    asyncio.run(scenario())
