"""Redis-only behaviour: URLs at the config edge, the key mapping, TTL precision, error mapping."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
import uuid
from collections.abc import Iterator

import pytest
from redis.cluster import key_slot

from pymsm.config import Config
from pymsm.core.redis_url import RedisUrl
from pymsm.exceptions import ConfigError, StoreError, StoreTimeout
from pymsm.stores import make_async_stores, make_stores
from pymsm.stores.memcached import MemcachedStore
from pymsm.stores.redis import AsyncRedisStore, RedisStore, store_key, wire_key
from support.redis_servers import client
from support.servers import HOST, ServerProcess

# -- URLs -------------------------------------------------------------------------------------


def test_single_url_with_password_and_db() -> None:
    url = RedisUrl.parse("redis://user:p%40ss@10.0.0.1:6380/2")
    assert (url.kind, url.tls, url.hosts, url.db) == ("single", False, (("10.0.0.1", 6380),), 2)
    assert (url.username, url.password) == ("user", "p@ss")


def test_tls_url_defaults_port_and_db() -> None:
    url = RedisUrl.parse("rediss://cache.internal?ssl_cert_reqs=none")
    assert (url.kind, url.tls, url.hosts, url.db) == (
        "single",
        True,
        (("cache.internal", 6379),),
        0,
    )
    assert url.options == {"ssl_cert_reqs": "none"}


def test_sentinel_url_names_service_sentinels_and_password() -> None:
    url = RedisUrl.parse("redis+sentinel://:secret@host1:26379,host2,[::1]:26380/mymaster/3")
    assert url.kind == "sentinel"
    assert url.hosts == (("host1", 26379), ("host2", 26379), ("::1", 26380))
    assert (url.service, url.db, url.password) == ("mymaster", 3, "secret")


def test_cluster_url_lists_startup_nodes() -> None:
    url = RedisUrl.parse("redis+cluster://a:7000,b:7001")
    assert (url.kind, url.hosts) == ("cluster", (("a", 7000), ("b", 7001)))


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("http://host:6379", "unknown scheme"),
        ("redis+sentinel://h1:26379", "Sentinel service"),
        ("redis+cluster://a:7000/1", "only database 0"),
        ("redis://a:6379,b:6379", "several hosts"),
        ("redis://host:99999", "not in 1..65535"),
        ("redis://host/zero", "database"),
        ("redis://host?socket_timeout=5", "unknown option"),
        ("rediss://host?ssl_cert_reqs=maybe", "ssl_cert_reqs"),
        ("redis://", "names no host"),
    ],
)
def test_bad_urls_are_refused_with_the_fix(text: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says) as caught:
        RedisUrl.parse(text)
    assert "memcached_nodes" in str(caught.value)


def test_passwords_stay_out_of_messages_and_repr() -> None:
    url = RedisUrl.parse("redis+sentinel://:hunter2@h1/mymaster")
    assert "hunter2" not in str(url) and "hunter2" not in repr(url)
    with pytest.raises(ConfigError) as caught:
        RedisUrl.parse("redis://:hunter2@h1/notadb")
    assert "hunter2" not in str(caught.value)


def test_a_redis_url_is_one_node_without_ids() -> None:
    config = Config(memcached_nodes="redis+sentinel://h1:26379,h2:26379/mymaster/0")
    assert config.nodes.names == ["default"]
    assert not config.nodes.has_ids
    assert config.nodes.redis is not None and config.nodes.redis.service == "mymaster"


def test_store_is_an_alias_of_memcached_nodes() -> None:
    config = Config(store="redis://127.0.0.1:6379/0")
    assert config.memcached_nodes == "redis://127.0.0.1:6379/0"
    assert config.nodes.redis is not None
    with pytest.raises(ConfigError, match="alias"):
        Config(store="redis://a", memcached_nodes="n1:b:11211")


def test_failover_nodes_make_no_sense_with_redis() -> None:
    with pytest.raises(ConfigError, match="remove failover_nodes"):
        Config(memcached_nodes="redis://a:6379", failover_nodes="n1")


def test_make_stores_picks_the_store_for_the_url() -> None:
    redis_config = Config(memcached_nodes="redis://127.0.0.1:1/0", operation_timeout=250)
    stores = make_stores(redis_config)
    assert list(stores) == ["default"] and isinstance(stores["default"], RedisStore)
    assert isinstance(make_async_stores(redis_config)["default"], AsyncRedisStore)
    memcached = make_stores(Config(memcached_nodes="n1:127.0.0.1:1,n2:127.0.0.1:2"))
    assert {n: type(s) for n, s in memcached.items()} == {
        "n1": MemcachedStore,
        "n2": MemcachedStore,
    }


# -- keys -------------------------------------------------------------------------------------

SID = "2A19B1EB6D9649C9FED3E7277FDFD470"


@pytest.mark.parametrize(
    ("key", "wire"),
    [
        (f"app_{SID}", f"{{app_{SID}}}"),
        (f"validity:app_{SID}", f"validity:{{app_{SID}}}"),
        (f"lock:{SID}", f"lock:{{{SID}}}"),
        (f"bak:validity:{SID}", f"bak:validity:{{{SID}}}"),
    ],
)
def test_wire_keys_hash_tag_the_session_part(key: str, wire: str) -> None:
    assert wire_key(key) == wire
    assert store_key(wire) == key


def test_every_key_of_a_session_shares_one_cluster_slot() -> None:
    keys = [SID, "validity:" + SID, "lock:" + SID, "bak:" + SID, "bak:validity:" + SID]
    assert len({key_slot(wire_key(k).encode()) for k in keys}) == 1


# -- against a server -------------------------------------------------------------------------


@pytest.fixture
def store(redis_single: ServerProcess) -> Iterator[RedisStore]:
    store = RedisStore(f"redis://{redis_single.address}/0", 0.5)
    yield store
    store.close()


def test_ttls_are_milliseconds_and_always_relative(
    store: RedisStore, redis_single: ServerProcess
) -> None:
    key, month = uuid.uuid4().hex, 31 * 24 * 3600
    store.set(key, b"v", 90)
    assert 89_000 < client(redis_single.port).pttl(wire_key(key)) <= 90_000
    store.set(key, b"v", month)  # memcached would read this as a Unix time; Redis must not
    assert (month - 1) * 1000 < client(redis_single.port).pttl(wire_key(key)) <= month * 1000
    store.touch(key, 0)
    assert client(redis_single.port).pttl(wire_key(key)) == -1


def test_a_lock_is_taken_with_set_nx_px(store: RedisStore, redis_single: ServerProcess) -> None:
    key = "lock:" + uuid.uuid4().hex
    assert store.add(key, b"owner", 5)
    assert 4_000 < client(redis_single.port).pttl(wire_key(key)) <= 5_000


def test_server_errors_become_store_errors(store: RedisStore, redis_single: ServerProcess) -> None:
    key = uuid.uuid4().hex
    client(redis_single.port).hset(wire_key(key), "field", "value")  # not a string key
    with pytest.raises(StoreError, match="WRONGTYPE"):
        store.cas(key, b"v", 0, "0" * 40)


def test_a_hung_server_raises_store_timeout(silent_port: int) -> None:
    store = RedisStore(f"redis://{HOST}:{silent_port}/0", 0.2)
    with pytest.raises(StoreTimeout, match=r"did not answer in 0.2s"):
        store.get_many(["k"])
    store.close()


def test_a_hung_server_raises_store_timeout_async(silent_port: int) -> None:
    async def run() -> None:
        store = AsyncRedisStore(f"redis://{HOST}:{silent_port}/0", 0.2)
        try:
            with pytest.raises(StoreTimeout):
                await store.set("k", b"v", 0)
        finally:
            await store.close()

    asyncio.run(run())


def test_busy_poll_still_times_out_on_a_hung_server(silent_port: int) -> None:
    store = RedisStore(f"redis://{HOST}:{silent_port}/0", 0.2, busy_poll=0.001)
    started = time.monotonic()
    with pytest.raises(StoreTimeout, match=r"did not answer in 0.2s"):
        store.get_many(["k"])
    assert time.monotonic() - started < 1.0  # one timeout (the socket's), never retried
    store.close()


def test_busy_poll_is_checked() -> None:
    with pytest.raises(ConfigError, match="busy_poll must be 0"):
        RedisStore(f"redis://{HOST}:1/0", busy_poll=-1)


def test_the_socket_blocks_with_the_timeout_in_the_kernel(redis_single: ServerProcess) -> None:
    """As the memcached store: no poll() before each send and receive (see kernel_timeouts)."""
    store = RedisStore(f"redis://{HOST}:{redis_single.port}/0", 0.25)
    store.set(uuid.uuid4().hex, b"v", 60)
    sock = store._link._wire().sock  # type: ignore[union-attr]
    assert sock.gettimeout() is None
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16)
    seconds, micros = struct.unpack("ll", raw)
    assert 0.25 <= seconds + micros / 1e6 < 0.26  # the kernel rounds up to its tick
    store.close()
