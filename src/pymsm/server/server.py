"""The asyncio TCP server: one Protocol per connection pumping bytes through `Connection`.

Backpressure: when a client stops reading, the transport's buffer passes its high-water mark,
we stop reading *and* stop executing that client's pipelined commands until it drains, so a
client can never make the server hold more than a bounded amount of output for it.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast

from pymsm.server import commands, meta  # noqa: F401  (they register the command handlers)
from pymsm.server.protocol import Cache, Connection
from pymsm.server.settings import Settings

log = logging.getLogger("pymsm.server")
WRITE_HIGH_WATER = 4 * 1024 * 1024
EVENT_LOOPS = ("auto", "asyncio", "uvloop")


def new_event_loop(kind: str = "auto") -> asyncio.AbstractEventLoop:
    """An event loop of `kind` (see Settings.event_loop): "auto" takes uvloop when installed.

    Under memcaslap most of the server's time goes to the loop and the socket calls, which
    uvloop runs in C; the protocol code is the same on both. Raises ValueError for an unknown
    kind or for "uvloop" when it is not installed.
    """
    if kind not in EVENT_LOOPS:
        raise ValueError(f"event_loop={kind!r}: use one of {', '.join(EVENT_LOOPS)}")
    if kind != "asyncio":
        try:
            uvloop = importlib.import_module("uvloop")
        except ImportError:
            if kind == "uvloop":
                raise ValueError(
                    "event_loop='uvloop' but uvloop is not installed: "
                    "pip install 'pymsm[balancer]' or use event_loop='auto'"
                ) from None
        else:
            loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
            return loop
    return asyncio.new_event_loop()


class MemcachedProtocol(asyncio.Protocol):
    def __init__(self, server: MemcachedServer) -> None:
        self.server = server
        self.conn = Connection(server.cache)
        self.conn.on_output = self._write
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # not isinstance: uvloop's TCPTransport implements the interface without subclassing it
        self.transport = transport = cast(asyncio.Transport, transport)
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        stats = self.server.cache.stats
        if stats.curr_connections >= self.server.settings.max_connections:
            stats.rejected_connections += 1
            transport.write(b"ERROR Too many open connections\r\n")
            transport.close()
            log.warning("rejecting a connection: -c %d reached", stats.curr_connections)
            self.conn.closing = True
            return
        stats.curr_connections += 1
        stats.total_connections += 1
        self.server.connections.add(self)
        if self.server.settings.verbosity > 1:
            log.info("<%d new auto-negotiating client connection", id(self) % 10000)

    def data_received(self, data: bytes) -> None:
        """Run what arrived; all the answers to one read leave in one transport.write."""
        conn = self.conn
        if conn.closing:
            return
        try:
            conn.feed(data)
        except Exception:  # a bug must cost one connection, never the server
            log.exception("closing a connection after an internal error")
            conn.out.append(b"SERVER_ERROR internal error\r\n")
            conn.closing = True
        transport = self.transport
        if transport is not None:  # set by connection_made, before any data
            if conn.out:
                transport.write(conn.take_output())
            if conn.closing:
                transport.close()

    def _write(self) -> None:
        if self.transport is not None and self.conn.out:
            self.transport.write(self.conn.take_output())

    def _flush(self) -> None:
        self._write()
        if self.conn.closing and self.transport is not None:
            self.transport.close()

    def pause_writing(self) -> None:
        self.conn.paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.conn.paused = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()
            self.conn.process()
            self._flush()

    def eof_received(self) -> bool:
        return False  # half-close: answers already written are flushed, then we close

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.server.connections:
            self.server.connections.discard(self)
            self.server.cache.stats.curr_connections -= 1


class MemcachedServer:
    """A memcached-compatible server on `settings.listen:settings.port`.

    `await start()` / `await stop()` inside a loop, `serve_forever()` to block, or `running()`
    (a context manager) to run it in a background thread for tests.
    """

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.cache = Cache(self.settings)
        self.connections: set[MemcachedProtocol] = set()
        self._server: asyncio.base_events.Server | None = None

    @property
    def port(self) -> int:
        if self._server is not None and self._server.sockets:
            port: int = self._server.sockets[0].getsockname()[1]
            return port
        return self.settings.port

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: MemcachedProtocol(self),
            self.settings.listen,
            self.settings.port,
            family=socket.AF_UNSPEC,
            backlog=1024,
            reuse_address=True,
        )
        log.info("memcached-compatible server on %s:%d", self.settings.listen, self.port)
        if self.settings.udp_port:
            log.warning("-U %d ignored: UDP is not served", self.settings.udp_port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for protocol in list(self.connections):
                if protocol.transport is not None:
                    protocol.transport.abort()
            await self._server.wait_closed()
            self._server = None

    async def serve_forever(self) -> None:
        await self.start()
        assert self._server is not None
        try:
            await self._server.serve_forever()
        finally:
            await self.stop()

    @contextmanager
    def running(self) -> Iterator[MemcachedServer]:
        """Serve in a daemon thread for the duration of the block (port 0 picks a free port)."""
        loop = new_event_loop(self.settings.event_loop)
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self.start())
            ready.set()
            loop.run_forever()

        thread = threading.Thread(target=run, name="pymsm-memcached", daemon=True)
        thread.start()
        ready.wait(10)
        try:
            yield self
        finally:
            asyncio.run_coroutine_threadsafe(self.stop(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()


def serve(settings: Settings | None = None) -> None:
    """Run a server in this thread until interrupted (Ctrl-C or SIGTERM)."""
    settings = settings or Settings()
    with asyncio.Runner(loop_factory=lambda: new_event_loop(settings.event_loop)) as runner:
        runner.run(MemcachedServer(settings).serve_forever())
