"""The memcached store's own behaviour: timeouts in the kernel, late answers dropped, the wire protocol, busy-polling."""

from __future__ import annotations

import os
import signal
import socket
import struct
import time
from collections.abc import Callable

import pytest

from pymsm.core.nodes import Node
from pymsm.exceptions import ConfigError, StoreError, StoreTimeout, StoreUnavailable
from pymsm.stores.memcached import MemcachedStore
from support.scripted_server import ScriptedServer
from support.servers import HOST, ServerProcess

pytestmark = pytest.mark.integration
Nodes = Callable[[int], list[ServerProcess]]


def test_a_hung_server_raises_store_timeout_within_the_operation_timeout(
    silent_port: int,
) -> None:
    store = MemcachedStore(Node("n1", HOST, silent_port), operation_timeout=0.2)
    for call in (lambda: store.get_many(["k"]), lambda: store.add("k", b"v", 60)):
        started = time.monotonic()
        with pytest.raises(StoreTimeout, match=r"did not answer in 0.2s"):
            call()
        assert 0.15 < time.monotonic() - started < 1.0
    store.close()


def test_the_socket_blocks_with_the_timeout_in_the_kernel(memcached_nodes: Nodes) -> None:
    """A Python-level socket timeout polls before every send and receive: four system calls a
    round trip instead of two. The store's socket is blocking, its timeout SO_RCVTIMEO."""
    server = memcached_nodes(1)[0]
    store = MemcachedStore(Node("n1", HOST, server.port), operation_timeout=0.25)
    store.set("k", b"v", 60)
    sock = store._connection().sock
    assert sock.gettimeout() is None
    for option in (socket.SO_RCVTIMEO, socket.SO_SNDTIMEO):
        seconds, micros = struct.unpack("ll", sock.getsockopt(socket.SOL_SOCKET, option, 16))
        assert 0.25 <= seconds + micros / 1e6 < 0.26  # the kernel rounds up to its tick
    store.close()


def test_a_late_answer_is_never_read_as_the_next_reply(memcached_nodes: Nodes) -> None:
    """The server stops answering (SIGSTOP) mid-request: the request times out and its
    connection is dropped, so once the server resumes, the next request gets its own answer."""
    server = memcached_nodes(1)[0]
    if server.process is None:
        pytest.fail("the memcached fixture gave no process to stop")
    store = MemcachedStore(Node("n1", HOST, server.port), operation_timeout=0.3)
    store.set("first", b"1", 60)
    store.set("second", b"2", 60)
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        with pytest.raises(StoreTimeout):
            store.get_many(["first"])
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
    assert store.get_many(["second"]) == {"second": b"2"}
    store.close()


@pytest.mark.parametrize("busy_poll", [0.0, 0.001])
def test_replies_are_read_whatever_pieces_they_come_in(busy_poll: float) -> None:
    data = b"\r\nEND\r\nVALUE x 0 3\r\n"  # a value that looks like the end of a reply
    server = ScriptedServer(
        [
            b"VALUE k 0 %d 77\r\n%s\r\nVALUE v 0 0 78\r\n\r\nEND\r\n" % (len(data), data),
            b"STORED\r\n",
            b"EXISTS\r\n",
        ]
    )
    store = MemcachedStore(Node("n1", HOST, server.port), 2.0, busy_poll=busy_poll)
    assert store.gets_many(["k", "v"]) == {"k": (data, b"77"), "v": (b"", b"78")}
    assert store.cas("k", b"new", 60, b"77") is True
    assert store.cas("k", b"newer", 60, b"77") is False
    assert server.commands == [b"gets k v\r\n", b"cas k 0 60 3 77\r\n", b"cas k 0 60 5 77\r\n"]
    store.close()
    server.close()


def test_a_reply_out_of_step_drops_the_connection() -> None:
    """An answer that is not what the command expects (here an error where values belong, then
    a value without its CRLF) is a StoreError naming the reply, and the next call starts on a
    new connection: the old stream may hold the rest of a reply meant for another command."""
    server = ScriptedServer(
        [b"SERVER_ERROR out of memory\r\n", b"VALUE k 0 2\r\nabcd\r\nEND\r\n", b"END\r\n"]
    )
    store = MemcachedStore(Node("n1", HOST, server.port), 2.0)
    with pytest.raises(StoreError, match="unexpected reply b'SERVER_ERROR out of memory'"):
        store.get_many(["k"])
    with pytest.raises(StoreError, match="not followed by CRLF"):
        store.get_many(["k"])
    assert store.get_many(["k"]) == {}
    assert server.connections == 3
    store.close()
    server.close()


def test_a_reply_line_that_never_ends_is_out_of_step() -> None:
    """A broken server that sends a line without end: refused once it is longer than any reply
    line can be, not read until the timeout into an ever longer buffer."""
    server = ScriptedServer([b"VALUE " + b"k" * 5000], piece=1000)
    store = MemcachedStore(Node("n1", HOST, server.port), 5.0)
    started = time.monotonic()
    with pytest.raises(StoreError, match="reply line over 2048 bytes"):
        store.get_many(["k"])
    assert time.monotonic() - started < 4.0  # refused on the length, not the 5 s timeout
    store.close()
    server.close()


def test_a_connection_closed_mid_reply_is_unavailable() -> None:
    server = ScriptedServer([b"VALUE k 0 10\r\nabc"])
    store = MemcachedStore(Node("n1", HOST, server.port), 2.0)
    with pytest.raises(StoreUnavailable, match="closed the connection"):
        store.get_many(["k"])
    store.close()
    server.close()


def test_keys_that_would_inject_a_command_never_reach_the_server(memcached_nodes: Nodes) -> None:
    server = memcached_nodes(1)[0]
    store = MemcachedStore(Node("n1", HOST, server.port), 1.0)
    store.set("victim", b"kept", 60)
    for key in ("a b", "k\r\nflush_all", "k\x00", "é", "x" * 251, ""):
        calls: list[Callable[[str], object]] = [
            lambda k: store.get_many([k]),
            lambda k: store.set(k, b"v", 60),
            lambda k: store.delete(k, noreply=True),
            lambda k: store.touch(k, 60),
        ]
        for call in calls:
            with pytest.raises(StoreError, match="invalid memcached key"):
                call(key)
    assert store.get_many(["victim"]) == {"victim": b"kept"}
    store.close()


def test_busy_poll_still_times_out_and_rejects_a_negative_budget(silent_port: int) -> None:
    store = MemcachedStore(Node("n1", HOST, silent_port), operation_timeout=0.2, busy_poll=0.05)
    started = time.monotonic()
    with pytest.raises(StoreTimeout, match=r"did not answer in 0.2s"):
        store.get_many(["k"])
    assert 0.2 < time.monotonic() - started < 1.0  # the budget, then the kernel's timeout
    store.close()
    with pytest.raises(ConfigError, match=r"busy_poll must be 0 \(off\) or a positive number"):
        MemcachedStore(Node("n1", HOST, silent_port), busy_poll=-1)
