"""memcached store on pymemcache: one client per node and thread, `no_delay=True`.

pymemcache's defaults leave Nagle's algorithm on; with delayed ACKs on the server side a request
that writes then reads waits ~40 ms. `no_delay=True` removes that (a Flask-Session set-up measured
40x slower without it). Clients are per thread (pymemcache clients are not thread-safe), so a
threaded server holds one connection per node and thread.

The operation timeout is the kernel's (SO_RCVTIMEO / SO_SNDTIMEO on a blocking socket), not
Python's: a socket with a Python timeout polls before every send and every receive, which doubled
the system calls of each round trip (see `_Client`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from pymemcache.client.base import Client
from pymemcache.exceptions import MemcacheError, MemcacheServerError, MemcacheUnexpectedCloseError

from pymsm.core.nodes import Node
from pymsm.exceptions import ItemTooLarge, StoreError, StoreTimeout, StoreUnavailable

from .base import check_item_size, kernel_timeouts, memcached_ttl

T = TypeVar("T")


class _Client(Client):  # type: ignore[misc]  # pymemcache has no py.typed: Any to mypy
    """pymemcache's client, its socket blocking with the operation timeout in the kernel
    (`kernel_timeouts`): one send and one receive a round trip, as the raw client without a
    timeout makes, instead of a poll before each."""

    def __init__(self, server: tuple[str, int], *, operation_timeout: float, **kwargs: Any) -> None:
        super().__init__(server, timeout=None, **kwargs)
        self.operation_timeout = operation_timeout

    def _connect(self) -> None:
        super()._connect()  # connects within connect_timeout, then leaves the socket blocking
        assert self.sock is not None
        kernel_timeouts(self.sock, self.operation_timeout)


class MemcachedStore:
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
        self._local = threading.local()
        self._clients: list[Client] = []
        self._clients_lock = threading.Lock()

    def _client(self) -> Client:
        client: Client | None = getattr(self._local, "client", None)
        if client is None:
            client = _Client(
                (self.node.host, self.node.port),
                operation_timeout=self.timeout,
                connect_timeout=self.connect_timeout,
                no_delay=True,
                allow_unicode_keys=False,
            )
            self._local.client = client
            with self._clients_lock:
                self._clients.append(client)
        return client

    def _mapped(self, exc: Exception) -> StoreError:
        """The pymsm error for what pymemcache or the socket raised (dropping a broken client)."""
        name = self.node.name
        if isinstance(exc, (TimeoutError, BlockingIOError)):  # BlockingIOError: SO_RCVTIMEO ran out
            self._drop()
            return StoreTimeout(
                f"{name} ({self.node.address}) did not answer in {self.timeout}s", name
            )
        if isinstance(exc, (OSError, MemcacheUnexpectedCloseError)):
            self._drop()
            return StoreUnavailable(
                f"{name} ({self.node.address}): {exc or type(exc).__name__}", name
            )
        if isinstance(exc, MemcacheServerError):
            if "too large" in str(exc):
                return ItemTooLarge(f"{name}: {exc}", name)
            return StoreError(f"{name}: server error: {exc}", name)
        self._drop()
        return StoreError(f"{name}: {type(exc).__name__}: {exc}", name)

    def _drop(self) -> None:
        client = getattr(self._local, "client", None)
        if client is not None:
            client.close()

    def _check_size(self, key: str, value: bytes) -> None:
        check_item_size(self.node.name, key, value, self.item_size_limit)

    def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        # a plain try, not a context manager: this wraps every store operation of every request
        try:
            return fn(*args, **kwargs)
        except (OSError, MemcacheError) as exc:
            raise self._mapped(exc) from exc

    def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        client = self._client()
        result: dict[str, bytes] = self._call(client.get_many, keys)
        return result

    def gets_many(self, keys: Sequence[str]) -> dict[str, tuple[bytes, bytes]]:
        client = self._client()
        result: dict[str, tuple[bytes, bytes]] = self._call(client.gets_many, keys)
        return result

    def cas(self, key: str, value: bytes, ttl: int, token: bytes) -> bool | None:
        self._check_size(key, value)
        client = self._client()
        result: bool | None = self._call(
            client.cas, key, value, token, memcached_ttl(ttl, self.clock()), noreply=False
        )
        return result

    def delete_if(self, key: str, value: bytes) -> bool:
        """gets, compare, then meta-delete with the CAS unique: atomic on memcached >= 1.6."""
        client = self._client()
        found = self._call(client.gets, key)
        if found is None or found[0] != value:
            return False
        reply = self._call(client.raw_command, f"md {key} C{found[1].decode()}", b"\r\n")
        return bytes(reply).startswith(b"HD")

    def set(self, key: str, value: bytes, ttl: int, noreply: bool = False) -> None:
        self._check_size(key, value)
        client = self._client()
        self._call(client.set, key, value, memcached_ttl(ttl, self.clock()), noreply=noreply)

    def add(self, key: str, value: bytes, ttl: int) -> bool:
        self._check_size(key, value)
        client = self._client()
        return bool(
            self._call(client.add, key, value, memcached_ttl(ttl, self.clock()), noreply=False)
        )

    def replace(self, key: str, value: bytes, ttl: int) -> bool:
        self._check_size(key, value)
        client = self._client()
        return bool(
            self._call(client.replace, key, value, memcached_ttl(ttl, self.clock()), noreply=False)
        )

    def delete(self, key: str, noreply: bool = False) -> bool:
        client = self._client()
        return bool(self._call(client.delete, key, noreply=noreply))

    def touch(self, key: str, ttl: int, noreply: bool = False) -> bool:
        client = self._client()
        return bool(
            self._call(client.touch, key, memcached_ttl(ttl, self.clock()), noreply=noreply)
        )

    def close(self) -> None:
        with self._clients_lock:
            for client in self._clients:
                client.close()
            self._clients.clear()
        self._local = threading.local()
