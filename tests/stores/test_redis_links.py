"""The sync Redis link's own RESP2 packing and parsing, against a real redis-server: every reply
shape the store uses, values split over many reads, noreply ordering, reconnects, error replies."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.exceptions import NoScriptError, ReadOnlyError, ResponseError

from pymsm.stores.redis_links import DirectLink, pack
from support.redis_servers import client, redis_server
from support.servers import HOST, ServerProcess


@pytest.fixture(params=[0.0, 0.0005], ids=["blocking", "busy-poll"])
def link(redis_single: ServerProcess, request: pytest.FixtureRequest) -> Iterator[DirectLink]:
    pool = redis.ConnectionPool(host=HOST, port=redis_single.port, protocol=2, socket_timeout=2)
    yield DirectLink(pool, busy_poll=request.param)
    pool.disconnect()


def test_pack_is_what_redis_py_sends() -> None:
    args = ("SET", "{k}", b"\x00\r\nv", "PX", 1500)
    assert pack(args) == b"".join(redis.Connection().pack_command(*args))


def test_every_reply_shape_the_store_reads(link: DirectLink) -> None:
    key = uuid.uuid4().hex
    assert link.command("SET", key, b"v\r\n\x00", "PX", 60_000) == b"OK"
    assert link.command("SET", key, b"w", "NX") is None  # nil bulk
    assert link.command("PEXPIRE", key, 60_000) == 1
    assert link.mget([key, key + "-absent", key]) == [b"v\r\n\x00", None, b"v\r\n\x00"]
    assert link.command("MGET", key + "-absent") == [None]
    assert link.command("GET", key + "-absent") is None
    assert link.command("EVAL", "return {}", 0) == []
    assert link.command("EVAL", "return {1, {'a', false}}", 0) == [1, [b"a", None]]
    assert link.command("SET", key, b"") == b"OK" and link.command("GET", key) == b""


def test_error_replies_raise_and_leave_the_connection_in_step(link: DirectLink) -> None:
    key = uuid.uuid4().hex
    link.command("HSET", key, "f", "v")
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        link.command("GET", key)
    with pytest.raises(NoScriptError):
        link.command("EVALSHA", "0" * 40, 0)
    assert link.command("HGET", key, "f") == b"v"


def test_values_larger_than_one_read(link: DirectLink) -> None:
    key = uuid.uuid4().hex
    value = bytes(range(256)) * 8192  # 2 MiB: many recv calls, \r\n inside the value
    link.command("SET", key, value)
    assert link.mget([key, key]) == [value, value]


def test_noreply_replies_are_read_before_the_next_command(link: DirectLink) -> None:
    key = uuid.uuid4().hex
    for n in range(5):
        link.send("SET", key, str(n))
    link.send("HSET", key + "h", "f", "v")
    link.send("GET", key + "h")  # an error reply among them is dropped, not handed on
    assert link.command("GET", key) == b"4"
    assert link.command("PING") == b"PONG"


def test_a_killed_connection_is_replaced_once_at_once(
    link: DirectLink, redis_single: ServerProcess
) -> None:
    key = uuid.uuid4().hex
    link.command("CLIENT", "SETNAME", "pymsm-link-test")
    admin = client(redis_single.port)
    assert admin.client_kill_filter(_type="normal", skipme=True) >= 1
    link.send("SET", key, b"sent on a dead connection")  # lost with it, like any noreply
    assert link.command("SET", key, b"v") == b"OK"  # reconnected transparently
    assert link.command("GET", key) == b"v"


def test_a_demoted_sentinel_master_makes_the_link_reconnect(tmp_path: Path) -> None:
    """READONLY from what Sentinel called the master means a failover happened: the link
    reconnects (asking Sentinel again) instead of reporting a server error; a plain server's
    READONLY stays an error reply."""
    replica = redis_server(tmp_path, name="replica").start()
    try:
        client(replica.port).replicaof(HOST, 1)  # a read-only replica of nothing
        pool = redis.ConnectionPool(host=HOST, port=replica.port, protocol=2, socket_timeout=2)
        with pytest.raises(ReadOnlyError, match="read only replica"):
            DirectLink(pool).command("SET", "k", "v")
        pool.is_master = True  # type: ignore[attr-defined]  # as a SentinelConnectionPool
        clients_before = _connections(replica.port)
        with pytest.raises(redis.ConnectionError, match="previous master"):
            DirectLink(pool).command("SET", "k", "v")
        assert _connections(replica.port) > clients_before  # it did reconnect, once
        pool.disconnect()
    finally:
        replica.stop()


def _connections(port: int) -> int:
    return int(client(port).info("stats")["total_connections_received"])
