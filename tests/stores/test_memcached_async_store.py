"""The asyncio memcached store against a real server: the store port's contract."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Callable
from typing import Any

import pytest
import uvloop

from pymsm.core.nodes import Node
from pymsm.exceptions import ItemTooLarge, StoreError, StoreUnavailable
from pymsm.stores.memcached_async import AsyncMemcachedStore
from support.scripted_server import ScriptedServer
from support.servers import ServerProcess, free_port

pytestmark = pytest.mark.integration
Nodes = Callable[[int], list[ServerProcess]]


def store_for(server: ServerProcess) -> AsyncMemcachedStore:
    return AsyncMemcachedStore(Node("n1", "127.0.0.1", server.port), operation_timeout=1.0)


def test_basic_operations(memcached_nodes: Nodes) -> None:
    store = store_for(memcached_nodes(1)[0])

    async def scenario() -> None:
        assert await store.get_many(["a", "b"]) == {}
        await store.set("a", b"1", 60)
        await store.set("b", b"two\r\nlines", 60, noreply=True)
        assert await store.get_many(["a", "b", "c"]) == {"a": b"1", "b": b"two\r\nlines"}
        assert await store.add("a", b"x", 60) is False
        assert await store.add("c", b"3", 60) is True
        assert await store.replace("c", b"33", 60) is True
        assert await store.replace("d", b"4", 60) is False
        assert await store.touch("c", 120) is True
        assert await store.touch("d", 120) is False
        assert await store.delete("c") is True
        assert await store.delete("c") is False
        await store.delete("b", noreply=True)
        assert await store.get_many(["b", "c"]) == {}
        await store.close()

    asyncio.run(scenario())


def test_cas_and_delete_if(memcached_nodes: Nodes) -> None:
    store = store_for(memcached_nodes(1)[0])

    async def scenario() -> None:
        await store.set("k", b"v1", 60)
        (value, token) = (await store.gets_many(["k"]))["k"]
        assert value == b"v1"
        assert await store.cas("k", b"v2", 60, token) is True
        assert await store.cas("k", b"v3", 60, token) is False  # changed meanwhile
        assert await store.cas("missing", b"v", 60, token) is None
        assert await store.get_many(["k"]) == {"k": b"v2"}
        assert await store.delete_if("k", b"other") is False
        assert await store.delete_if("k", b"v2") is True
        assert await store.get_many(["k"]) == {}
        await store.close()

    asyncio.run(scenario())


def test_pipelined_concurrent_calls_get_their_own_replies(memcached_nodes: Nodes) -> None:
    store = store_for(memcached_nodes(1)[0])

    async def one(i: int) -> bytes:
        await store.set(f"key{i}", str(i).encode(), 60, noreply=i % 2 == 0)
        return (await store.get_many([f"key{i}"]))[f"key{i}"]

    async def scenario() -> list[bytes]:
        results = await asyncio.gather(*(one(i) for i in range(200)))
        await store.close()
        return results

    assert asyncio.run(scenario()) == [str(i).encode() for i in range(200)]


def test_cancelled_and_timed_out_calls_never_shift_replies(memcached_nodes: Nodes) -> None:
    """Pipelined calls, some cancelled at random (a client gone), some running out of a short
    timeout on large values: a call may fail, but never gets the reply meant for another."""
    server = memcached_nodes(1)[0]
    store = AsyncMemcachedStore(Node("n1", "127.0.0.1", server.port), operation_timeout=0.05)
    rnd = random.Random(7)
    outcomes = {"own": 0, "failed": 0, "cancelled": 0}

    async def one(i: int) -> None:
        size = rnd.choice([1, 100, 5000, 200_000])
        value = (f"{i}:".encode() * size)[:size]
        try:
            await store.set(f"own{i}", value, 60, rnd.random() < 0.3)
            got = await store.get_many([f"own{i}", f"other{i % 7}"])
        except StoreError:
            outcomes["failed"] += 1
            return
        assert got.get(f"own{i}", value) == value, f"call {i} got another call's reply"
        outcomes["own"] += 1

    async def scenario() -> None:
        for batch in range(10):
            tasks = [asyncio.create_task(one(batch * 1000 + i)) for i in range(100)]
            await asyncio.sleep(rnd.random() * 0.003)
            for task in tasks:
                if rnd.random() < 0.1:
                    task.cancel()
            for result in await asyncio.gather(*tasks, return_exceptions=True):
                if isinstance(result, asyncio.CancelledError):
                    outcomes["cancelled"] += 1
                elif isinstance(result, BaseException):
                    raise result
        await store.close()

    asyncio.run(scenario())
    assert outcomes["own"] > 0 and outcomes["cancelled"] > 0, outcomes


def test_too_large_and_down(memcached_nodes: Nodes) -> None:
    server = memcached_nodes(1)[0]
    store = store_for(server)

    async def scenario() -> None:
        with pytest.raises(ItemTooLarge):
            await store.set("big", b"x" * (1024 * 1024), 60)
        await store.set("small", b"ok", 60)
        server.kill()
        with pytest.raises(StoreUnavailable):
            await store.get_many(["small"])
        server.start()
        assert await store.get_many(["small"]) == {}  # reconnects; the restarted node is empty
        await store.close()

    asyncio.run(scenario())


def test_refused_connection_is_unavailable() -> None:
    store = AsyncMemcachedStore(Node("n1", "127.0.0.1", free_port()), operation_timeout=0.5)
    with pytest.raises(StoreUnavailable, match="n1"):
        asyncio.run(store.get_many(["a"]))


def test_store_follows_a_new_event_loop(memcached_nodes: Nodes) -> None:
    store = store_for(memcached_nodes(1)[0])

    async def write() -> None:
        await store.set("a", b"1", 60)
        await store.close()

    async def read() -> dict[str, bytes]:
        try:
            return await store.get_many(["a"])
        finally:
            await store.close()

    asyncio.run(write())
    assert asyncio.run(read()) == {"a": b"1"}


class Proto0Resolver(asyncio.SelectorEventLoop):
    """A loop whose resolver reports protocol 0, as macOS's getaddrinfo does: asyncio then leaves
    TCP_NODELAY off on the sockets it connects."""

    async def getaddrinfo(self, *args: Any, **kwargs: Any) -> list[Any]:
        infos = await super().getaddrinfo(*args, **kwargs)
        return [(family, kind, 0, name, address) for family, kind, _, name, address in infos]


@pytest.mark.parametrize(
    "loop_factory", [asyncio.new_event_loop, Proto0Resolver, uvloop.new_event_loop]
)
def test_connections_have_tcp_nodelay(
    memcached_nodes: Nodes, loop_factory: Callable[[], asyncio.AbstractEventLoop]
) -> None:
    """Nagle would hold a command written after a noreply one until memcached's delayed ACK."""
    store = AsyncMemcachedStore(Node("n1", "localhost", memcached_nodes(1)[0].port))

    async def scenario() -> int:
        await store.set("k", b"v", 60, noreply=True)
        assert await store.get_many(["k"]) == {"k": b"v"}
        assert store._conn is not None
        sock = store._conn.writer.get_extra_info("socket")
        nodelay: int = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        await store.close()
        return nodelay

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        assert runner.run(scenario()) == 1


def test_a_reply_line_that_never_ends_is_a_store_error() -> None:
    """A line over the stream's limit (asyncio's LimitOverrunError) is a StoreError like any
    reply out of step, never an exception the store port does not name."""
    server = ScriptedServer([b"VALUE " + b"k" * 70_000], piece=4096)
    store = AsyncMemcachedStore(Node("n1", "127.0.0.1", server.port), operation_timeout=30.0)

    async def read() -> None:
        try:
            with pytest.raises(StoreError, match="n1"):
                await store.get_many(["k"])
        finally:
            await store.close()

    asyncio.run(read())
    server.close()
