"""Connections to backends: one h11 client connection per socket, and a keep-alive pool each.

Errors are mapped here, at the I/O boundary: `ConnectFailed` (nothing was sent; always safe to
try another backend), `BackendFailed` (reset or closed mid-exchange), `BackendTimeout` (no
answer within the read timeout).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import h11

from pymsm.balancer.config import BackendSpec

READ_SIZE = 64 * 1024
POOL_IDLE_TIMEOUT = 30.0  # seconds an idle backend connection is kept


class BackendError(Exception):
    """A backend exchange failed; the message says how."""


class ConnectFailed(BackendError, ConnectionError):
    """The connection was refused or timed out; nothing was sent."""


class BackendFailed(BackendError, ConnectionError):
    """The backend reset or closed the connection, or spoke broken HTTP."""


class BackendTimeout(BackendError, TimeoutError):
    """The backend did not answer within the read timeout."""


async def read_within(reader: asyncio.StreamReader, timeout: float) -> bytes:
    async with asyncio.timeout(timeout):
        return await reader.read(READ_SIZE)


class Upstream:
    """One keep-alive connection to a backend."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.CLIENT)
        self.reused = False
        self.idle_since = 0.0

    def write(self, event: h11.Event) -> None:
        """Queue an event's bytes; `drain()` sends them."""
        try:
            data = self.h11.send(event)
        except h11.LocalProtocolError as exc:
            raise BackendFailed(f"cannot forward: {exc}") from exc
        if data:
            self.writer.write(data)

    async def drain(self) -> None:
        try:
            await self.writer.drain()
        except OSError as exc:
            raise BackendFailed(f"write failed: {exc!r}") from exc

    async def next_event(
        self, timeout: float, before_read: Callable[[], Awaitable[None]] | None = None
    ) -> h11.Event:
        """The next response event; `before_read` is awaited each time the backend has to be
        waited for (the proxy sends what it queued for the client then)."""
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                raise BackendFailed(f"bad response: {exc}") from exc
            if isinstance(event, h11.Event):
                return event
            if event is h11.PAUSED:  # never: we stop reading at the end of the response
                raise BackendFailed("data after the response")
            if before_read is not None:
                await before_read()
            try:
                data = await read_within(self.reader, timeout)
            except TimeoutError as exc:
                raise BackendTimeout(f"no answer within {timeout:g}s") from exc
            except OSError as exc:
                raise BackendFailed(f"read failed: {exc!r}") from exc
            if not data and self.h11.their_state is h11.SEND_RESPONSE:
                # closed before a response: for a reused connection, the keep-alive race
                raise BackendFailed("connection closed before a response")
            self.h11.receive_data(data)

    @property
    def alive(self) -> bool:
        return not self.writer.is_closing() and not self.reader.at_eof()

    def reusable(self) -> bool:
        return self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE

    def close(self) -> None:
        self.writer.close()


class Pool:
    """Idle keep-alive connections to one backend, newest first (they are the least likely to
    have been closed by the backend's own keep-alive timeout)."""

    def __init__(self, spec: BackendSpec, size: int, connect_timeout: float) -> None:
        self.spec = spec
        self.size = size
        self.connect_timeout = connect_timeout
        self._idle: list[Upstream] = []

    async def acquire(self, fresh: bool = False) -> Upstream:
        now = time.monotonic()
        while self._idle and not fresh:
            upstream = self._idle.pop()
            if upstream.alive and now - upstream.idle_since < POOL_IDLE_TIMEOUT:
                upstream.reused = True
                return upstream
            upstream.close()
        return await self.connect()

    async def connect(self) -> Upstream:
        try:
            async with asyncio.timeout(self.connect_timeout):  # cheaper than wait_for's task
                reader, writer = await asyncio.open_connection(
                    self.spec.host, self.spec.port, limit=READ_SIZE
                )
        except TimeoutError as exc:
            raise ConnectFailed(f"connect timed out after {self.connect_timeout:g}s") from exc
        except OSError as exc:
            raise ConnectFailed(f"connect failed: {exc.strerror or exc!r}") from exc
        return Upstream(reader, writer)

    def release(self, upstream: Upstream) -> None:
        if upstream.reusable() and len(self._idle) < self.size:
            upstream.h11.start_next_cycle()
            upstream.idle_since = time.monotonic()
            self._idle.append(upstream)
        else:
            upstream.close()

    def close(self) -> None:
        for upstream in self._idle:
            upstream.close()
        self._idle.clear()

    @property
    def idle(self) -> int:
        return len(self._idle)
