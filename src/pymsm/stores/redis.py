"""Redis store on redis-py: one server, Sentinel or Cluster; `RedisStore` and `AsyncRedisStore`.

One store is one logical node (`default`): Redis provides the high availability (Sentinel
promotes a replica, Cluster moves slots), so pymsm writes no backup copies there.

- Keys: a store receives pymsm's full keys (`P S`, `validity:P S`, `lock:P S`, `bak:...`) and
  wraps the part after pymsm's own prefixes in a hash tag (`validity:{P S}`), so every key of one
  session lands in one Cluster slot and a multi-get is one round trip. The same layout is used on
  every deployment, so data moves between single, Sentinel and Cluster unchanged.
- TTLs: the port's seconds become milliseconds (`SET ... PX`, `PEXPIRE`); 0 means no expiry.
  memcached's absolute-time rule for TTLs over 30 days does not apply to Redis.
- CAS token: the value as read (no extra key or field). `cas` compares it on the server in
  a Lua script; equal bytes mean equal state, so an A-B-A change loses nothing.
- `noreply` (sync, one server or Sentinel): the write is sent and its reply read before the
  thread's next command, so nothing waits for it (redis_links.py). Elsewhere it is waited for.
- Timeouts: connect and socket timeouts are `operation_timeout`. A dropped connection is
  reconnected once, immediately (a connection to a master that failed over or a cluster node
  that restarted); a timeout is never retried.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis import exceptions as rex

from pymsm.core.redis_url import RedisUrl
from pymsm.exceptions import ItemTooLarge, StoreError, StoreTimeout, StoreUnavailable

from . import redis_clients
from .base import check_busy_poll
from .redis_links import ClientLink, DirectLink

OWN_PREFIXES = ("bak:", "validity:", "lock:", "tomb:")

# KEYS[1] key; ARGV token, value, ttl in ms (0: none) -> 1 stored, 0 changed, -1 absent.
# The token is the value as read (gets_many hands it out as such), compared byte for byte.
CAS = """
local current = redis.call('GET', KEYS[1])
if not current then return -1 end
if current ~= ARGV[1] then return 0 end
if ARGV[3] == '0' then redis.call('SET', KEYS[1], ARGV[2])
else redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end
return 1
"""
# KEYS[1] key; ARGV[1] the value it must still hold (a lock's owner token) -> 1 deleted, else 0
DELETE_IF = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# KEYS[1] key -> 1 if present (now without expiry), else 0; PERSIST alone cannot tell
PERSIST = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('PERSIST', KEYS[1])
return 1
"""


def wire_key(key: str) -> str:
    """pymsm key -> Redis key: the part after pymsm's own prefixes goes in a hash tag."""
    if not key.startswith(OWN_PREFIXES):  # a record key: the common case, one C call
        return f"{{{key}}}"
    head = 0
    while True:
        for prefix in OWN_PREFIXES:
            if key.startswith(prefix, head):
                head += len(prefix)
                break
        else:
            return f"{key[:head]}{{{key[head:]}}}"


def store_key(wire: str) -> str:
    """Redis key -> pymsm key (for tools that list keys)."""
    return wire.replace("{", "", 1).removesuffix("}")


def _px(ttl: int) -> int | None:
    return ttl * 1000 if ttl > 0 else None


# RedisClusterException (no startup node answers) is not a RedisError
_MAPPED = (rex.RedisError, rex.RedisClusterException, OSError)


class Mapped:
    """redis-py's errors -> pymsm's: timeout, unavailable, too large, other, naming `where`
    (the stores, and the operations tools on Redis). A reusable context manager object rather
    than a @contextmanager generator, which cost a few µs per call."""

    __slots__ = ("name", "timeout", "where")

    def __init__(self, where: str, name: str, timeout: float) -> None:
        self.where = where
        self.name = name
        self.timeout = timeout

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        if exc is None or not isinstance(exc, _MAPPED):
            return  # nothing raised, or not a Redis or socket error (those pass unchanged)
        where = self.where
        if isinstance(exc, (rex.TimeoutError, TimeoutError)):
            raise StoreTimeout(f"{where} did not answer in {self.timeout}s", self.name) from exc
        if isinstance(exc, (rex.ConnectionError, rex.ClusterDownError, rex.RedisClusterException)):
            raise StoreUnavailable(f"{where}: {exc or type(exc).__name__}", self.name) from exc
        if isinstance(exc, rex.ResponseError):
            if "maximum allowed size" in str(exc) or "max-bulk-len" in str(exc):
                raise ItemTooLarge(f"{where}: {exc}", self.name) from exc
            raise StoreError(f"{where}: server error: {exc}", self.name) from exc
        if isinstance(exc, rex.RedisError):
            raise StoreError(f"{where}: {type(exc).__name__}: {exc}", self.name) from exc
        raise StoreUnavailable(f"{where}: {exc}", self.name) from exc


class _Base:
    """What both twins share: the URL, the node name and the mapping of redis-py's errors."""

    def __init__(self, url: RedisUrl | str, operation_timeout: float, name: str) -> None:
        self.url = url if isinstance(url, RedisUrl) else RedisUrl.parse(url)
        self.timeout = operation_timeout
        self.name = name
        self.cluster = self.url.kind == "cluster"
        self._mapped = Mapped(f"{name} ({self.url})", name, operation_timeout)  # wraps every call

    @staticmethod
    def _found(keys: Sequence[str], values: Sequence[bytes | None]) -> dict[str, bytes]:
        return {k: v for k, v in zip(keys, values, strict=True) if v is not None}

    @staticmethod
    def _cas_result(code: int) -> bool | None:
        return None if code < 0 else code == 1


class RedisStore(_Base):
    """Sync store on redis-py; thread-safe (one connection per thread, see redis_links.py).
    Raises only StoreError and its subclasses (see stores/base.py)."""

    def __init__(
        self,
        url: RedisUrl | str,
        operation_timeout: float = 1.0,
        name: str = "default",
        busy_poll: float = 0.0,
    ) -> None:
        """`busy_poll` (seconds, default off; one server or Sentinel, not TLS): wait for a reply
        by polling the socket for up to that long before blocking. It saves the thread's sleep
        and wake-up per round trip (~45 µs per round trip on the 2-core build VM) for CPU spent
        spinning: worth it only with spare cores and Redis close by (see docs/redis.md)."""
        super().__init__(url, operation_timeout, name)
        check_busy_poll(busy_poll)
        self._link: DirectLink | ClientLink
        if self.cluster:  # made on first use (redis_links.ClientLink)
            self._link = ClientLink(lambda: redis_clients.sync_client(self.url, operation_timeout))
        else:
            self._client = redis_clients.sync_client(self.url, operation_timeout)
            self._link = DirectLink(self._client.connection_pool, busy_poll)

    def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        if not keys:
            return {}
        with self._mapped:
            return self._found(keys, self._link.mget([wire_key(k) for k in keys]))

    def gets_many(self, keys: Sequence[str]) -> dict[str, tuple[bytes, bytes]]:
        if not keys:
            return {}
        with self._mapped:
            values = self._link.mget([wire_key(k) for k in keys])
        return {k: (v, v) for k, v in zip(keys, values, strict=True) if v is not None}

    def cas(self, key: str, value: bytes, ttl: int, token: bytes) -> bool | None:
        with self._mapped:
            code = self._link.script(CAS, [wire_key(key)], [token, value, _px(ttl) or 0])
        return self._cas_result(int(code))

    def delete_if(self, key: str, value: bytes) -> bool:
        with self._mapped:
            return bool(self._link.script(DELETE_IF, [wire_key(key)], [value]))

    def set(self, key: str, value: bytes, ttl: int, noreply: bool = False) -> None:
        with self._mapped:
            if noreply:
                self._link.send(*_set(key, value, ttl))
            else:
                self._link.command(*_set(key, value, ttl))

    def add(self, key: str, value: bytes, ttl: int) -> bool:
        """SET NX PX: also how a lock is taken (owner token as value, lock_expiration as ttl)."""
        with self._mapped:
            return bool(self._link.command(*_set(key, value, ttl), "NX"))

    def replace(self, key: str, value: bytes, ttl: int) -> bool:
        with self._mapped:
            return bool(self._link.command(*_set(key, value, ttl), "XX"))

    def delete(self, key: str, noreply: bool = False) -> bool:
        with self._mapped:
            if noreply:
                self._link.send("DEL", wire_key(key))
                return False  # not known (stores/base.py)
            return bool(self._link.command("DEL", wire_key(key)))

    def touch(self, key: str, ttl: int, noreply: bool = False) -> bool:
        with self._mapped:
            if ttl > 0:
                found = self._link.command("PEXPIRE", wire_key(key), ttl * 1000)
            else:
                found = self._link.script(PERSIST, [wire_key(key)], [])
        return bool(found) and not noreply  # waited for, but as the other stores answer

    def close(self) -> None:
        self._link.close()
        if not self.cluster:  # the cluster client is the link's (made on first use)
            redis_clients.close_sync(self._client)


def _set(key: str, value: bytes, ttl: int) -> tuple[Any, ...]:
    if ttl > 0:
        return ("SET", wire_key(key), value, "PX", ttl * 1000)
    return ("SET", wire_key(key), value)


class AsyncRedisStore(_Base):
    """The async twin on `redis.asyncio`. Its connections belong to the event loop that first
    uses them: create one store per loop (per application), and `await close()` on shutdown."""

    def __init__(
        self, url: RedisUrl | str, operation_timeout: float = 1.0, name: str = "default"
    ) -> None:
        super().__init__(url, operation_timeout, name)
        self.client: Any = redis_clients.async_client(self.url, operation_timeout)
        self._cas = self.client.register_script(CAS)
        self._delete_if = self.client.register_script(DELETE_IF)
        self._persist = self.client.register_script(PERSIST)

    async def _mget(self, wire: list[str]) -> list[bytes | None]:
        if self.cluster:
            return list(await self.client.mget_nonatomic(wire))
        return list(await self.client.mget(wire))

    async def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        if not keys:
            return {}
        with self._mapped:
            return self._found(keys, await self._mget([wire_key(k) for k in keys]))

    async def gets_many(self, keys: Sequence[str]) -> dict[str, tuple[bytes, bytes]]:
        return {k: (v, v) for k, v in (await self.get_many(keys)).items()}

    async def cas(self, key: str, value: bytes, ttl: int, token: bytes) -> bool | None:
        with self._mapped:
            code = await self._cas(keys=[wire_key(key)], args=[token, value, _px(ttl) or 0])
        return self._cas_result(int(code))

    async def delete_if(self, key: str, value: bytes) -> bool:
        with self._mapped:
            return bool(await self._delete_if(keys=[wire_key(key)], args=[value]))

    async def set(self, key: str, value: bytes, ttl: int, noreply: bool = False) -> None:
        with self._mapped:
            await self.client.set(wire_key(key), value, px=_px(ttl))

    async def add(self, key: str, value: bytes, ttl: int) -> bool:
        with self._mapped:
            return bool(await self.client.set(wire_key(key), value, px=_px(ttl), nx=True))

    async def replace(self, key: str, value: bytes, ttl: int) -> bool:
        with self._mapped:
            return bool(await self.client.set(wire_key(key), value, px=_px(ttl), xx=True))

    async def delete(self, key: str, noreply: bool = False) -> bool:
        """Waited for even with `noreply`, but answers as the other stores do then."""
        with self._mapped:
            return bool(await self.client.delete(wire_key(key))) and not noreply

    async def touch(self, key: str, ttl: int, noreply: bool = False) -> bool:
        with self._mapped:
            if ttl > 0:
                found = await self.client.pexpire(wire_key(key), ttl * 1000)
            else:
                found = await self._persist(keys=[wire_key(key)])
        return bool(found) and not noreply

    async def close(self) -> None:
        await redis_clients.close_async(self.client)
