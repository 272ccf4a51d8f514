"""Every store kind behind one blocking view, for the store tests (tests/stores/conftest.py).

Async stores are driven on an event loop owned by the harness, so one test body serves both
twins. To add a store, add a kind to STORE_KINDS and build it in `Harness._open`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from pymsm.core.nodes import Node
from pymsm.stores.memcached import MemcachedStore
from pymsm.stores.memcached_async import AsyncMemcachedStore
from pymsm.stores.memory import AsyncMemoryStore, MemoryStore
from pymsm.stores.redis import AsyncRedisStore, RedisStore
from support.servers import HOST, MEMCACHED_KINDS, free_port

STORE_KINDS = [
    "memory",
    "memory-async",
    "redis",
    "redis-async",
    "redis-cluster",
    "redis-cluster-async",
    *(f"memcached/{kind}" for kind in sorted(MEMCACHED_KINDS)),
    *(f"memcached-async/{kind}" for kind in sorted(MEMCACHED_KINDS)),
    "memcached-busy-poll/memcached",  # replies read by polling (MemcachedStore busy_poll)
]


class Blocking:
    """Calls an async store's methods to completion on `loop`, so one test body serves both."""

    def __init__(self, store: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._store = store
        self._loop = loop

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._store, name)
        return lambda *args: self._loop.run_until_complete(method(*args))


class Harness:
    """Opens stores of one kind: against the live server, or against nothing (`unreachable`)."""

    def __init__(
        self,
        kind: str,
        loop: asyncio.AbstractEventLoop,
        redis_port: Callable[[], int],
        redis_cluster: Callable[[], str],
        memcached: Callable[[], int],
    ) -> None:
        self.kind = kind
        self.client = kind.partition("/")[0]  # memory, redis, memcached... with -async or not
        self.loop = loop
        self._redis_port = redis_port
        self._redis_cluster = redis_cluster
        self._memcached = memcached
        self.opened: list[Any] = []

    def open(self, port: int | None = None) -> Any:
        store = self._open(port)
        self.opened.append(store)
        return Blocking(store, self.loop) if self.client.endswith("-async") else store

    def _open(self, port: int | None) -> Any:
        if self.client.startswith("memory"):
            sync = MemoryStore()
            sync.down = port is not None
            return AsyncMemoryStore(sync) if self.client == "memory-async" else sync
        if self.client.startswith("redis"):
            if not self.client.startswith("redis-cluster"):
                url = f"redis://{HOST}:{port or self._redis_port()}/0"
            elif port:
                url = f"redis+cluster://{HOST}:{port}"
            else:
                url = self._redis_cluster()
            twin = AsyncRedisStore if self.client.endswith("-async") else RedisStore
            return twin(url, 0.5)
        node = Node(None, HOST, port or self._memcached())
        if self.client == "memcached-async":
            return AsyncMemcachedStore(node, 0.5)
        poll = 0.002 if self.client == "memcached-busy-poll" else 0.0
        return MemcachedStore(node, 0.5, busy_poll=poll)

    def unreachable(self) -> Any:
        """A store whose server is not there (a free port nobody listens on)."""
        return self.open(free_port())

    def close(self) -> None:
        for store in self.opened:
            result = store.close()
            if asyncio.iscoroutine(result):
                self.loop.run_until_complete(result)
        self.loop.close()
