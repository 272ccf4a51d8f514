"""Sticky mode through the ASGI middleware (httpx's ASGITransport) against real memcached: the
session is served from memory after a validity read, two app processes behind one route never
serve stale data, a cache node's death moves the session, and the async backup queue is drained
at lifespan shutdown."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from contextlib import closing
from typing import Any

import httpx
import pytest
from pymemcache.client.base import Client
from starlette.applications import Starlette
from starlette.routing import Route

from pymsm.adapters.asgi import Message, SessionMiddleware
from pymsm.core.records import RecordFormat
from support.asgi_routes import client, count, logout
from support.servers import HOST, ServerProcess

pytestmark = pytest.mark.integration
Nodes = Callable[[int], list[ServerProcess]]


def sticky_app(servers: list[ServerProcess], route: str, **settings: Any) -> SessionMiddleware:
    """app1 keeps its sessions on n2 (n1 is its failover node), app2 the other way round."""
    nodes = ",".join(f"n{i + 1}:{s.address}" for i, s in enumerate(servers))
    failover = {"app1": "n1", "app2": "n2"}[route]
    app = Starlette(routes=[Route("/count", count), Route("/logout", logout)])
    return SessionMiddleware(
        app, memcached_nodes=nodes, failover_nodes=failover, sticky=True, route=route, **settings
    )


def memcached(server: ServerProcess) -> closing[Client]:
    return closing(Client((HOST, server.port), timeout=2))


def stored_count(server: ServerProcess, sid: str) -> Any:
    with memcached(server) as mc:
        raw = mc.get(sid)
    assert raw is not None, f"{sid} is not on {server.name}"
    return json.loads(RecordFormat().decode(raw).payload)["count"]


async def get_count(c: httpx.AsyncClient, cookie: str) -> int:
    response = await c.get("/count", headers={"cookie": f"MSMSESSIONID={cookie}"})
    value: int = response.json()["count"]
    return value


async def shut_down(app: SessionMiddleware) -> None:
    """Run the ASGI lifespan protocol to its shutdown (the middleware closes the manager)."""
    messages: list[str] = []

    async def receive() -> Message:
        return {"type": "lifespan.startup" if not messages else "lifespan.shutdown"}

    async def send(message: Message) -> None:
        messages.append(message["type"])

    await app({"type": "lifespan"}, receive, send)
    assert messages == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


def test_sticky_session_is_served_from_memory(memcached_nodes: Nodes) -> None:
    servers = memcached_nodes(2)
    app = sticky_app(servers, "app1")

    async def scenario() -> None:
        async with client(app) as c:
            first = await c.get("/count")
            cookie = first.cookies["MSMSESSIONID"]
            assert cookie.endswith("-n2.app1") and stored_count(servers[1], cookie) == 1
            # overwrite the stored record behind the app's back: only the validity is read,
            # so memory serves the session, and the next write replaces the record
            with memcached(servers[1]) as mc:
                mc.set(cookie, b"not a record", noreply=False)
            assert await get_count(c, cookie) == 2
            assert app.manager.stats["load_local"] == 1
            assert app.manager.stats["load_corrupt"] == 0
            assert stored_count(servers[1], cookie) == 2
            servers[1].kill()  # the session's cache node dies: memory moves it to n1
            moved = await c.get("/count", headers={"cookie": f"MSMSESSIONID={cookie}"})
            assert moved.json() == {"count": 3}
            new = moved.cookies["MSMSESSIONID"]
            assert new.endswith("-n1.app1") and new.split("-")[0] == cookie.split("-")[0]
            assert stored_count(servers[0], new) == 3
        await shut_down(app)

    asyncio.run(scenario())


def test_two_processes_behind_one_route_never_serve_stale_data(memcached_nodes: Nodes) -> None:
    servers = memcached_nodes(2)
    a, b = sticky_app(servers, "app1"), sticky_app(servers, "app1")

    async def scenario() -> None:
        async with client(a) as ca, client(b) as cb:
            cookie = (await ca.get("/count")).cookies["MSMSESSIONID"]
            for i in range(2, 12):  # alternating, each one's memory is stale every other time
                assert await get_count((cb, ca)[i % 2], cookie) == i
            assert a.manager.stats["load_found"] + b.manager.stats["load_found"] == 10
            await ca.get("/logout", headers={"cookie": f"MSMSESSIONID={cookie}"})
            assert await get_count(cb, cookie) == 1  # logged out elsewhere: never served again
            assert b.manager.stats["load_invalidated"] == 1
        await shut_down(a)
        await shut_down(b)

    asyncio.run(scenario())


def test_async_backup_queue_is_drained_at_lifespan_shutdown(memcached_nodes: Nodes) -> None:
    servers = memcached_nodes(2)
    app = sticky_app(servers, "app2", session_backup_async=True)

    async def scenario() -> None:
        cookies = []
        async with client(app) as c:
            for _ in range(30):
                c.cookies.clear()
                cookies.append((await c.get("/count")).cookies["MSMSESSIONID"])
            assert await get_count(c, cookies[0]) == 2
        await shut_down(app)
        assert app.manager.stats["backup_dropped"] == 0
        assert [stored_count(servers[0], sid) for sid in cookies] == [2] + [1] * 29

    asyncio.run(scenario())
