"""Connections a server closed while they sat unused: memcached's `-o idle_timeout`, a restart.

The node is up (again) and answers, so the next request must not find it down: before the
tenth session its first command on each such connection failed. With memcached's idle_timeout
a user's session was read as unavailable on both nodes and the user got a new, empty session;
a noreply write sent on such a connection was lost without a word.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from pymsm import AsyncSessionManager, SessionManager
from pymsm.core.nodes import Node
from pymsm.stores import base
from pymsm.stores.memcached import MemcachedStore
from pymsm.stores.memcached_async import AsyncMemcachedStore
from pymsm.stores.redis import RedisStore
from support.redis_servers import redis_server, wait_until
from support.servers import HOST, ServerProcess, memcached_server

pytestmark = pytest.mark.integration
Nodes = Callable[..., list[ServerProcess]]


class _ClosedByServer:
    """A probe connection opened now; true once the server has closed it (its idle sweep).

    It stays true when asked again (it is polled with others until all are closed), and
    close() lets a test that gave up waiting free it."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((HOST, port))
        self.sock.setblocking(False)

    def __call__(self) -> bool:
        if self.sock.fileno() == -1:  # seen closed and closed here before
            return True
        try:
            gone = self.sock.recv(1, socket.MSG_PEEK) == b""
        except BlockingIOError:
            return False
        except ConnectionResetError:
            gone = True
        if gone:
            self.sock.close()
        return gone

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def idle_closing() -> Callable[[int], list[ServerProcess]]:
    """Real memcached nodes that close connections unused for a second (`-o idle_timeout=1`;
    the embedded server has no such option)."""
    started: list[ServerProcess] = []

    def start(count: int) -> list[ServerProcess]:
        for i in range(count):
            server = memcached_server("memcached", ("-o", "idle_timeout=1"), name=f"n{i + 1}")
            started.append(server.start())
        return started[-count:]

    yield start
    for server in started:
        server.kill()


def test_a_session_outlives_the_server_closing_idle_connections(
    idle_closing: Callable[[int], list[ServerProcess]],
) -> None:
    nodes = idle_closing(2)
    spec = ",".join(f"{n.name}:{n.address}" for n in nodes)
    app = SessionManager(memcached_nodes=spec)
    aapp = AsyncSessionManager(memcached_nodes=spec)
    loop = asyncio.new_event_loop()
    probes: list[_ClosedByServer] = []
    try:
        session = app.load(None)
        session["n"] = 1
        assert app.save(session).status == "stored"
        sid = session.id
        asession = loop.run_until_complete(aapp.load(sid))  # the async store's connections too
        assert asession["n"] == 1
        probes += [_ClosedByServer(n.port) for n in nodes]

        def closed() -> bool:
            loop.run_until_complete(asyncio.sleep(0.02))  # an ASGI server's loop keeps running
            return all(p() for p in probes)

        wait_until(closed, 10, "memcached closing idle connections")

        session = app.load(sid)
        assert (session.load_status, session.id, session["n"]) == ("found", sid, 1)
        session["n"] = 2
        assert app.save(session).status == "stored"
        asession = loop.run_until_complete(aapp.load(sid))
        assert (asession.load_status, asession.id, asession["n"]) == ("found", sid, 2)
        assert app.stats["load_unavailable"] == aapp.stats["load_unavailable"] == 0
    finally:
        for probe in probes:
            probe.close()
        app.close()
        loop.run_until_complete(aapp.close())
        loop.close()


def test_a_noreply_write_after_the_server_closed_the_connection_is_not_lost(
    memcached_nodes: Nodes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restart closes every connection; a noreply write sent on one went nowhere."""
    monkeypatch.setattr(base, "STALE_AFTER", 0.0)  # check before every use: no waiting
    server = memcached_nodes(1)[0]
    store = MemcachedStore(Node("n1", HOST, server.port), operation_timeout=0.5)
    store.set("before", b"v", 60)
    server.kill()
    server.start()
    store.set("after", b"v", 60, True)
    assert store.get_many(["after"]) == {"after": b"v"}
    server.kill()
    server.start()
    assert store.add("lock:after", b"owner", 5) is True  # a waited command: no error either
    store.close()


def test_a_redis_noreply_write_after_the_idle_timeout_is_not_lost(tmp_path: Path) -> None:
    """Redis closes clients idle for `timeout` seconds; the sync store's noreply write sent on
    such a connection was lost (waited commands were already retried once)."""
    server = redis_server(tmp_path, "--timeout", "1").start()
    store = RedisStore(f"redis://{server.address}/0", 0.5)
    probe = _ClosedByServer(server.port)
    try:
        store.set("before", b"v", 60)
        wait_until(probe, 10, "redis closing idle connections")
        store.set("after", b"v", 60, True)
        assert store.get_many(["after"]) == {"after": b"v"}
    finally:
        probe.close()
        store.close()
        server.kill()


def test_the_async_store_reopens_a_connection_the_server_closed(memcached_nodes: Nodes) -> None:
    server = memcached_nodes(1)[0]

    async def run() -> None:
        store = AsyncMemcachedStore(Node("n1", HOST, server.port), operation_timeout=0.5)
        try:
            await store.set("before", b"v", 60)
            server.kill()
            server.start()
            await asyncio.sleep(0.05)  # the loop reads the server's FIN
            await store.set("after", b"v", 60, True)
            assert await store.get_many(["after"]) == {"after": b"v"}
        finally:
            await store.close()

    asyncio.run(run())


def _keepalive(sock: socket.socket) -> tuple[int, int]:
    return (
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
    )


def test_every_store_keeps_its_connections_alive(
    memcached_nodes: Nodes, redis_single: ServerProcess
) -> None:
    """TCP keepalive (stores/base.keepalive_options): a NAT or firewall that forgets silent
    connections after a few minutes would otherwise make a quiet thread's next command wait a
    whole operation_timeout and count its node as failed."""
    expected = (1, base.KEEPALIVE_IDLE)
    node = Node("n1", HOST, memcached_nodes(1)[0].port)
    store = MemcachedStore(node, 0.5)
    store.set("k", b"v", 60)
    assert _keepalive(store._local.conn.sock) == expected
    store.close()

    async def run() -> tuple[int, int]:
        astore = AsyncMemcachedStore(node, 0.5)
        await astore.set("k", b"v", 60)
        assert astore._conn is not None
        found = _keepalive(astore._conn.writer.get_extra_info("socket"))
        await astore.close()
        return found

    assert asyncio.run(run()) == expected

    redis_store = RedisStore(f"redis://{redis_single.address}/0", 0.5)
    redis_store.set("k", b"v", 60)
    assert _keepalive(redis_store._link._wire().sock) == expected
    redis_store.close()
