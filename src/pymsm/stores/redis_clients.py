"""redis-py clients for a parsed RedisUrl, sync and async: pools, timeouts, TLS, one reconnect.

Every connection gets `operation_timeout` as connect and socket timeout. redis-py retries three
times with backoff by default, which would stretch a failing call far beyond the timeout; here a
dropped connection is retried once, at once, and only on ConnectionError: enough to replace a
pooled connection to a master that failed over (Sentinel then names the new one) or to a cluster
node that restarted (the client reloads the slot map), never to hide a server that is down.
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.retry
import redis.asyncio.sentinel
import redis.cluster
import redis.sentinel
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.retry import Retry

from pymsm.core.redis_url import RedisUrl

from .base import keepalive_options


def _common(url: RedisUrl, timeout: float) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "protocol": 2,  # redis-py 8 defaults to RESP3, slower to parse in pure Python
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "socket_keepalive": True,  # (stores/base.keepalive_options says why)
        "socket_keepalive_options": keepalive_options(),
        "username": url.username,
        "password": url.password,
    }
    if url.tls:
        kwargs["ssl"] = True
        kwargs.update({k: v for k, v in url.options.items() if k.startswith("ssl_")})
    return kwargs


def _sentinel_kwargs(url: RedisUrl, timeout: float) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "protocol": 2,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
    }
    if "sentinel_password" in url.options:
        kwargs["password"] = url.options["sentinel_password"]
    if url.tls:
        kwargs["ssl"] = True
        kwargs.update({k: v for k, v in url.options.items() if k.startswith("ssl_")})
    return kwargs


def sync_client(url: RedisUrl, timeout: float) -> Any:
    """A redis.Redis (pooled) or redis.cluster.RedisCluster for `url`."""
    kwargs = _common(url, timeout)
    if url.kind == "cluster":
        nodes = [redis.cluster.ClusterNode(h, p) for h, p in url.hosts]
        retry = Retry(NoBackoff(), 1)
        return redis.cluster.RedisCluster(startup_nodes=nodes, retry=retry, **kwargs)
    kwargs["retry"] = Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))
    if url.kind == "sentinel":
        sentinel = redis.sentinel.Sentinel(
            list(url.hosts), sentinel_kwargs=_sentinel_kwargs(url, timeout), **kwargs
        )
        return sentinel.master_for(url.service or "", db=url.db)
    host, port = url.hosts[0]
    return redis.Redis(host=host, port=port, db=url.db, **kwargs)


def async_client(url: RedisUrl, timeout: float) -> Any:
    """The redis.asyncio twin of `sync_client`."""
    kwargs = _common(url, timeout)
    if url.kind == "cluster":
        nodes = [redis.asyncio.cluster.ClusterNode(h, p) for h, p in url.hosts]
        retry = redis.asyncio.retry.Retry(NoBackoff(), 1)
        return redis.asyncio.cluster.RedisCluster(startup_nodes=nodes, retry=retry, **kwargs)
    kwargs["retry"] = redis.asyncio.retry.Retry(
        NoBackoff(), 1, supported_errors=(RedisConnectionError,)
    )
    if url.kind == "sentinel":
        sentinel = redis.asyncio.sentinel.Sentinel(
            list(url.hosts), sentinel_kwargs=_sentinel_kwargs(url, timeout), **kwargs
        )
        return sentinel.master_for(url.service or "", db=url.db)
    host, port = url.hosts[0]
    return redis.asyncio.Redis(host=host, port=port, db=url.db, **kwargs)


def close_sync(client: Any) -> None:
    if isinstance(client, redis.cluster.RedisCluster):
        client.close()
        return
    client.connection_pool.disconnect()
    sentinel = getattr(client.connection_pool, "sentinel_manager", None)
    for conn in getattr(sentinel, "sentinels", ()):
        conn.connection_pool.disconnect()


async def close_async(client: Any) -> None:
    await client.aclose()
    sentinel = getattr(getattr(client, "connection_pool", None), "sentinel_manager", None)
    for conn in getattr(sentinel, "sentinels", ()):
        await conn.aclose()
