"""An in-process store implementing both twins, with failure injection. For unit tests and
single-process development; it proves nothing about failover."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from pymsm.exceptions import StoreError, StoreUnavailable

from .base import check_item_size


class MemoryStore:
    """Sync store over a dict. `clock` gives seconds; items over `item_size_limit` are refused,
    counted as the memcached stores count them (key, value and memcached's item overhead).

    Failure injection: `down = True` makes every call raise StoreUnavailable; `fail_next(n, exc)`
    makes the next n calls raise exc. `calls` counts operations by name (round trips in tests).
    """

    def __init__(
        self,
        name: str = "memory",
        clock: Callable[[], float] = time.time,
        item_size_limit: int = 1024 * 1024,
    ) -> None:
        self.name = name
        self.clock = clock
        self.item_size_limit = item_size_limit
        self.items: dict[str, tuple[bytes, float]] = {}
        self.versions: dict[str, int] = {}
        self._version = 0
        self.down = False
        self.calls: dict[str, int] = {}
        self._failures: list[StoreError] = []
        self._lock = threading.Lock()

    def fail_next(self, count: int = 1, error: StoreError | None = None) -> None:
        self._failures.extend(
            [error or StoreUnavailable(f"{self.name}: injected failure", self.name)] * count
        )

    def clear_failures(self) -> None:
        """Forget the injected failures no call has met yet."""
        self._failures.clear()

    def _enter(self, op: str) -> None:
        self.calls[op] = self.calls.get(op, 0) + 1
        if self.down:
            raise StoreUnavailable(f"{self.name} is down", self.name)
        if self._failures:
            raise self._failures.pop(0)

    def _live(self, key: str) -> bytes | None:
        item = self.items.get(key)
        if item is None:
            return None
        if item[1] and item[1] <= self.clock():
            del self.items[key]
            return None
        return item[0]

    def _put(self, key: str, value: bytes, ttl: int) -> None:
        check_item_size(self.name, key, value, self.item_size_limit)  # as memcached counts
        self.items[key] = (bytes(value), self.clock() + ttl if ttl > 0 else 0.0)
        self._version += 1
        self.versions[key] = self._version

    def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        with self._lock:
            self._enter("get_many")
            found = {k: self._live(k) for k in keys}
            return {k: v for k, v in found.items() if v is not None}

    def gets_many(self, keys: Sequence[str]) -> dict[str, tuple[bytes, int]]:
        with self._lock:
            self._enter("gets_many")
            found = {k: self._live(k) for k in keys}
            return {k: (v, self.versions[k]) for k, v in found.items() if v is not None}

    def cas(self, key: str, value: bytes, ttl: int, token: int) -> bool | None:
        with self._lock:
            self._enter("cas")
            if self._live(key) is None:
                return None
            if self.versions[key] != token:
                return False
            self._put(key, value, ttl)
            return True

    def delete_if(self, key: str, value: bytes) -> bool:
        with self._lock:
            self._enter("delete_if")
            if self._live(key) != value:
                return False
            del self.items[key]
            return True

    def set(self, key: str, value: bytes, ttl: int, noreply: bool = False) -> None:
        with self._lock:
            self._enter("set")
            self._put(key, value, ttl)

    def add(self, key: str, value: bytes, ttl: int) -> bool:
        with self._lock:
            self._enter("add")
            if self._live(key) is not None:
                return False
            self._put(key, value, ttl)
            return True

    def replace(self, key: str, value: bytes, ttl: int) -> bool:
        with self._lock:
            self._enter("replace")
            if self._live(key) is None:
                return False
            self._put(key, value, ttl)
            return True

    def delete(self, key: str, noreply: bool = False) -> bool:
        with self._lock:
            self._enter("delete")
            present = self._live(key) is not None
            self.items.pop(key, None)
            return present and not noreply  # a real store does not wait to know

    def touch(self, key: str, ttl: int, noreply: bool = False) -> bool:
        with self._lock:
            self._enter("touch")
            value = self._live(key)
            if value is None:
                return False
            self.items[key] = (value, self.clock() + ttl if ttl > 0 else 0.0)
            return not noreply

    def close(self) -> None:
        pass


class AsyncMemoryStore:
    """The async twin over the same MemoryStore (share `sync` to see one state from both)."""

    def __init__(self, sync: MemoryStore | None = None) -> None:
        self.sync = sync or MemoryStore()

    async def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        return self.sync.get_many(keys)

    async def gets_many(self, keys: Sequence[str]) -> dict[str, tuple[bytes, int]]:
        return self.sync.gets_many(keys)

    async def cas(self, key: str, value: bytes, ttl: int, token: int) -> bool | None:
        return self.sync.cas(key, value, ttl, token)

    async def delete_if(self, key: str, value: bytes) -> bool:
        return self.sync.delete_if(key, value)

    async def set(self, key: str, value: bytes, ttl: int, noreply: bool = False) -> None:
        self.sync.set(key, value, ttl, noreply)

    async def add(self, key: str, value: bytes, ttl: int) -> bool:
        return self.sync.add(key, value, ttl)

    async def replace(self, key: str, value: bytes, ttl: int) -> bool:
        return self.sync.replace(key, value, ttl)

    async def delete(self, key: str, noreply: bool = False) -> bool:
        return self.sync.delete(key, noreply)

    async def touch(self, key: str, ttl: int, noreply: bool = False) -> bool:
        return self.sync.touch(key, ttl, noreply)

    async def close(self) -> None:
        self.sync.close()
