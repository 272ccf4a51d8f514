"""I/O for one cache node: bytes in and out, sync and async twins, errors mapped to pymsm's."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pymsm.exceptions import ConfigError

from .base import AsyncStore, Store

if TYPE_CHECKING:
    from pymsm.config import Config

__all__ = ["AsyncStore", "Store", "make_async_stores", "make_stores"]


def make_stores(config: Config) -> dict[str, Store]:
    """One store per configured node: memcached, or the one Redis store of a Redis URL."""
    url = config.nodes.redis
    if url is not None:
        try:
            from .redis import RedisStore
        except ImportError as exc:
            raise redis_missing() from exc
        return {"default": RedisStore(url, config.operation_timeout)}
    from .memcached import MemcachedStore

    return {
        n.name: MemcachedStore(n, config.operation_timeout, item_size_limit=config.item_size_limit)
        for n in config.nodes
    }


def make_async_stores(config: Config) -> dict[str, AsyncStore]:
    """The async twin of `make_stores`."""
    url = config.nodes.redis
    if url is not None:
        try:
            from .redis import AsyncRedisStore
        except ImportError as exc:
            raise redis_missing() from exc
        return {"default": AsyncRedisStore(url, config.operation_timeout)}
    from .memcached_async import AsyncMemcachedStore

    limit = config.item_size_limit
    return {
        n.name: AsyncMemcachedStore(n, config.operation_timeout, item_size_limit=limit)
        for n in config.nodes
    }


def redis_missing() -> ConfigError:
    return ConfigError(
        "memcached_nodes is a Redis URL but redis-py is not installed: pip install 'pymsm[redis]'"
    )
