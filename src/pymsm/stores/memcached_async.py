"""asyncio memcached store: a thin pipelined text-protocol client, one connection per node and loop.

Chosen by measurement over aiomcache and emcache (docs/adapters.md, bench/async_clients.py):
neither offers everything the store port needs (aiomcache has no noreply and no meta commands,
emcache no meta delete for `delete_if`), and pipelining on one connection beats a pool of
connections used one request at a time.

Pipelining: a command is written to the socket and its caller then queues (FIFO, asyncio.Lock is
fair) to read its reply; memcached answers in order, so the n-th reader gets the n-th reply.
Writing and queueing happen with no `await` between them, so the two orders match. A timeout or
cancellation while a reply is outstanding would shift every later reply, so the connection is
closed then and the next call opens a new one. `noreply` commands are written and not read
(as pymemcache does; sizes are checked first, so "too large" never comes back unasked).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from pymsm.core.nodes import Node
from pymsm.exceptions import StoreError, StoreTimeout, StoreUnavailable

from . import memcached_text as text
from .base import check_item_size, keepalive, memcached_ttl

T = TypeVar("T")
Reader = Callable[[asyncio.StreamReader], Awaitable[T]]


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.turn = asyncio.Lock()  # FIFO: replies are read in the order commands were written
        self.broken = False

    def close(self) -> None:
        self.broken = True
        self.writer.close()


class AsyncMemcachedStore:
    """The async store port over one memcached node (see stores/base.py for the contract)."""

    def __init__(
        self,
        node: Node,
        operation_timeout: float = 1.0,
        connect_timeout: float | None = None,
        item_size_limit: int = 1024 * 1024,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.node = node
        self.timeout = operation_timeout
        self.connect_timeout = connect_timeout or operation_timeout
        self.item_size_limit = item_size_limit
        self.clock = clock
        self._conn: _Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connecting: asyncio.Lock | None = None

    # -- connection ---------------------------------------------------------------------------

    async def _connection(self) -> _Connection:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a connection belongs to the loop that opened it
            if self._conn is not None:
                with contextlib.suppress(RuntimeError):  # that loop may be closed already
                    self._conn.close()
            self._conn, self._loop, self._connecting = None, loop, asyncio.Lock()
        conn = self._conn
        if conn is not None and not conn.broken:
            if not (conn.reader.at_eof() or conn.writer.is_closing()):
                return conn
            conn.close()  # the server closed it while unused (idle_timeout, a restart)
        assert self._connecting is not None
        async with self._connecting:
            if self._conn is None or self._conn.broken:
                self._conn = await self._open()
            return self._conn

    async def _open(self) -> _Connection:
        name, address = self.node.name, self.node.address
        try:
            async with asyncio.timeout(self.connect_timeout):
                reader, writer = await asyncio.open_connection(self.node.host, self.node.port)
        except TimeoutError as exc:
            raise StoreTimeout(
                f"{name} ({address}): no connection in {self.connect_timeout}s", name
            ) from exc
        except OSError as exc:
            raise StoreUnavailable(f"{name} ({address}): {exc}", name) from exc
        _no_delay(writer)
        return _Connection(reader, writer)

    async def _call(self, command: bytes, read: Reader[T] | None) -> T | None:
        """Write `command`; then, unless noreply (`read` None), read its reply in turn."""
        conn = await self._connection()
        name = self.node.name
        conn.writer.write(command)
        if read is None:
            return None
        try:
            async with asyncio.timeout(self.timeout), conn.turn:
                if conn.broken:
                    raise StoreUnavailable(f"{name}: connection closed by an earlier error", name)
                return await read(conn.reader)
        except TimeoutError as exc:
            conn.close()
            raise StoreTimeout(
                f"{name} ({self.node.address}) did not answer in {self.timeout}s", name
            ) from exc
        except (asyncio.LimitOverrunError, text.ProtocolError) as exc:
            conn.close()  # a reply line over the stream's limit, or not what was asked for
            raise StoreError(f"{name} ({self.node.address}): {exc}", name) from exc
        except (OSError, asyncio.IncompleteReadError) as exc:
            conn.close()
            raise StoreUnavailable(
                f"{name} ({self.node.address}): {exc or type(exc).__name__}", name
            ) from exc
        except asyncio.CancelledError:
            conn.close()  # our reply is still coming: the stream would be off by one
            raise

    # -- the store port -------------------------------------------------------------------------

    async def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        if not keys:
            return {}  # "get" without a key is an ERROR, as in the sync store
        found = await self._call(text.line("get", *map(self._key, keys)), _values)
        return {k: v for k, (v, _) in (found or {}).items()}

    async def gets_many(self, keys: Sequence[str]) -> dict[str, tuple[bytes, bytes]]:
        if not keys:
            return {}
        found = await self._call(text.line("gets", *map(self._key, keys)), _values)
        return found or {}

    async def cas(self, key: str, value: bytes, ttl: int, token: bytes) -> bool | None:
        unique = text.cas_unique(self.node.name, token)
        reply = await self._store("cas", key, value, ttl, False, unique)
        return None if reply == b"NOT_FOUND" else reply == b"STORED"

    async def delete_if(self, key: str, value: bytes) -> bool:
        """gets, compare, then meta-delete with the CAS unique: atomic on memcached >= 1.6."""
        found = await self.gets_many([key])
        if key not in found or found[key][0] != value:
            return False
        unique = text.cas_unique(self.node.name, found[key][1])
        reply = await self._call(text.line("md", key, "C" + unique), _status)
        return reply == b"HD"

    async def set(self, key: str, value: bytes, ttl: int, noreply: bool = False) -> None:
        await self._store("set", key, value, ttl, noreply)

    async def add(self, key: str, value: bytes, ttl: int) -> bool:
        return await self._store("add", key, value, ttl, False) == b"STORED"

    async def replace(self, key: str, value: bytes, ttl: int) -> bool:
        return await self._store("replace", key, value, ttl, False) == b"STORED"

    async def delete(self, key: str, noreply: bool = False) -> bool:
        command = text.line("delete", self._key(key), *(["noreply"] if noreply else []))
        return await self._call(command, None if noreply else _status) == b"DELETED"

    async def touch(self, key: str, ttl: int, noreply: bool = False) -> bool:
        exptime = str(memcached_ttl(ttl, self.clock()))
        command = text.line("touch", self._key(key), exptime, *(["noreply"] if noreply else []))
        return await self._call(command, None if noreply else _status) == b"TOUCHED"

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
            # the socket closes on the loop's next turn: wait, so "closed" means closed (a
            # reset or broken pipe while closing is the end we wanted anyway)
            with contextlib.suppress(OSError):
                await conn.writer.wait_closed()

    # -- helpers ----------------------------------------------------------------------------------

    async def _store(
        self, verb: str, key: str, value: bytes, ttl: int, noreply: bool, *extra: str
    ) -> bytes | None:
        self._key(key)
        check_item_size(self.node.name, key, value, self.item_size_limit)
        exptime = memcached_ttl(ttl, self.clock())
        command = text.storage(verb, key, value, exptime, noreply, *extra)
        reply = await self._call(command, None if noreply else _status)
        error = None if reply is None else text.storage_error(self.node.name, reply)
        if error is not None:
            if type(error) is StoreError:
                await self.close()  # after a refused data block the stream may be out of step
            raise error
        return reply

    def _key(self, key: str) -> str:
        return text.check_key(self.node.name, key)


def _no_delay(writer: asyncio.StreamWriter) -> None:
    """TCP_NODELAY, set here rather than trusted to the loop: asyncio sets it only when the
    resolver reports IPPROTO_TCP (macOS's getaddrinfo reports 0), and with Nagle on, a command
    written after a `noreply` one waits for memcached's delayed ACK (~40 ms): it sends no reply."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        keepalive(sock)  # (base.keepalive_options says why)


async def _status(reader: asyncio.StreamReader) -> bytes:
    return (await reader.readuntil(b"\r\n"))[:-2]


async def _values(reader: asyncio.StreamReader) -> dict[str, tuple[bytes, bytes]]:
    """VALUE <key> <flags> <bytes> [<cas>] lines with their data, up to END."""
    found: dict[str, tuple[bytes, bytes]] = {}
    while True:
        line = (await reader.readuntil(b"\r\n"))[:-2]
        if line == b"END":
            return found
        key, size, cas = text.value_header(line)
        data = await reader.readexactly(size + 2)
        found[key] = (data[:-2], cas)
