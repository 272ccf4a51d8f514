"""Memory limit and eviction (-m), no-evict (-M), item size (-I), connections (-c), slow clients."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from pymemcache.client.base import Client
from server_wire import exchange, server_stats, talk

from pymsm.server import MemcachedServer, Settings
from pymsm.server.settings import MB
from support.servers import HOST

pytestmark = pytest.mark.integration
KB_VALUE = b"v" * 1024


@contextmanager
def server(**settings: object) -> Iterator[MemcachedServer]:
    with MemcachedServer(Settings(port=0, listen=HOST, **settings)).running() as running:  # type: ignore[arg-type]
        yield running


def fill(port: int, count: int, value: bytes = KB_VALUE) -> list[bytes]:
    block = b"".join(b"set key%d 0 0 %d\r\n%s\r\n" % (i, len(value), value) for i in range(count))
    answer = exchange(port, block + b"mn\r\n", timeout=20)
    return answer.split(b"\r\n")[:-2]


def test_memory_limit_evicts_oldest_and_counts_evictions() -> None:
    with server(memory_limit=2 * MB) as srv:
        replies = fill(srv.port, 3000)
        assert set(replies) == {b"STORED"}
        stats = server_stats(srv.port)
        assert isinstance(stats[b"evictions"], int) and stats[b"evictions"] > 0
        assert stats[b"curr_items"] + stats[b"evictions"] == 3000
        client = Client((HOST, srv.port))
        assert client.get("key0") is None  # the least recently used went first
        assert client.get("key2999") == KB_VALUE
        client.close()
        assert server_stats(srv.port, "items")[b"items:12:evicted"] == stats[b"evictions"]
        assert stats[b"limit_maxbytes"] == 2 * MB


def test_recently_read_items_survive_eviction() -> None:
    with server(memory_limit=2 * MB) as srv:
        fill(srv.port, 1000)
        exchange(srv.port, b"get key0\r\nmn\r\n")  # key0 becomes most recently used
        exchange(srv.port, b"".join(b"set more%d 0 0 1024\r\n%s\r\n" % (i, KB_VALUE)
                                    for i in range(1500)) + b"mn\r\n", timeout=20)  # fmt: skip
        assert b"VALUE key0" in exchange(srv.port, b"get key0\r\nmn\r\n")
        assert b"VALUE key1 " not in exchange(srv.port, b"get key1\r\nmn\r\n")


def test_no_evict_flag_refuses_with_out_of_memory() -> None:
    with server(memory_limit=1 * MB, no_evict=True) as srv:
        replies = fill(srv.port, 1000)
        assert replies[:885] == [b"STORED"] * 885  # one 1 MB page of 1184-byte chunks
        assert set(replies[885:]) == {b"SERVER_ERROR out of memory storing object"}
        stats = server_stats(srv.port)
        assert stats[b"evictions"] == 0 and stats[b"store_no_memory"] == 115
        assert stats[b"curr_items"] == 885


def test_item_size_limit_refuses_and_swallows_the_data() -> None:
    with server(item_size_max=64 * 1024) as srv:
        big = b"b" * (64 * 1024)
        answer = exchange(srv.port, b"set big 0 0 %d\r\n%s\r\nget big\r\nmn\r\n" % (len(big), big))
        assert answer == b"SERVER_ERROR object too large for cache\r\nEND\r\nMN\r\n"
        fits = b"f" * (64 * 1024 - 100)
        answer = exchange(srv.port, b"set fits 0 0 %d\r\n%s\r\nmn\r\n" % (len(fits), fits))
        assert answer == b"STORED\r\nMN\r\n"
        assert server_stats(srv.port)[b"store_too_large"] == 1


def test_max_connections_rejects_with_memcached_message() -> None:
    with server(max_connections=2) as srv:
        first = socket.create_connection((HOST, srv.port))
        second = socket.create_connection((HOST, srv.port))
        assert talk(first, b"mn\r\n") == talk(second, b"mn\r\n") == b"MN\r\n"
        with socket.create_connection((HOST, srv.port)) as third:
            assert talk(third, b"mn\r\n") == b"ERROR Too many open connections\r\n"
            assert third.recv(10) == b""
        first.close()
        time.sleep(0.2)
        with socket.create_connection((HOST, srv.port)) as again:
            assert talk(again, b"mn\r\n") == b"MN\r\n"
        second.close()
        assert server_stats(srv.port)[b"rejected_connections"] == 1


def test_slow_client_byte_by_byte() -> None:
    with server() as srv, socket.create_connection((HOST, srv.port)) as sock:
        for byte in b"set k 0 0 5\r\nhello\r\nget k\r\n":
            sock.sendall(bytes([byte]))
        assert talk(sock, b"", until=b"END\r\n") == b"STORED\r\nVALUE k 0 5\r\nhello\r\nEND\r\n"


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_half_closed_client_gets_its_answers(loop: str) -> None:
    with server(event_loop=loop) as srv, socket.create_connection((HOST, srv.port)) as sock:
        sock.sendall(b"set k 0 0 1\r\na\r\nget k\r\n")
        sock.shutdown(socket.SHUT_WR)
        assert talk(sock, b"", until=b"\x00") == b"STORED\r\nVALUE k 0 1\r\na\r\nEND\r\n"


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_client_that_does_not_read_cannot_grow_server_memory(loop: str) -> None:
    with server(event_loop=loop) as srv, socket.create_connection((HOST, srv.port)) as sock:
        value = b"z" * 500_000
        assert talk(sock, b"set big 0 0 %d\r\n%s\r\n" % (len(value), value), until=b"\r\n")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(b"get big\r\n" * 200)  # 100 MB of answers, unread
        time.sleep(0.5)
        protocols = list(srv.connections)
        assert protocols
        buffered = sum(p.transport.get_write_buffer_size() for p in protocols if p.transport)
        assert buffered < 16 * MB
        assert any(p.conn.paused for p in protocols)
        size = len(b"VALUE big 0 500000\r\n" + value + b"\r\nEND\r\n") * 200
        received = bytearray()
        while len(received) < size:
            chunk = sock.recv(1 << 20)
            assert chunk
            received += chunk
        assert received.count(b"VALUE big 0 500000\r\n") == 200


def test_line_without_newline_closes_but_long_get_is_served() -> None:
    with server() as srv:
        assert exchange(srv.port, b"x" * 3000) == b""
        keys = b" ".join(b"k%d" % i for i in range(2000))
        assert exchange(srv.port, b"get " + keys + b"\r\n", until=b"END\r\n") == b"END\r\n"
        assert exchange(srv.port, b"\x80\x01\x00\x00") == b""  # binary protocol: closed
