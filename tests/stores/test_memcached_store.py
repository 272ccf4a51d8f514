"""The pymemcache-based store's own behaviour: timeouts in the kernel, late answers dropped."""

from __future__ import annotations

import os
import signal
import socket
import struct
import time
from collections.abc import Callable

import pytest

from pymsm.core.nodes import Node
from pymsm.exceptions import StoreTimeout
from pymsm.stores.memcached import MemcachedStore
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
    sock = store._client().sock
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
