"""Fixtures shared by the store tests: every store kind behind one blocking view, and a hung
server."""

from __future__ import annotations

import asyncio
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from support.redis_servers import ClusterSetup
from support.servers import HOST, ServerProcess, memcached_server
from support.store_harness import STORE_KINDS, Harness


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers (a hung server)."""
    listener = socket.create_server((HOST, 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    listener.close()


@pytest.fixture(params=STORE_KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture
def harness(store_kind: str, request: pytest.FixtureRequest) -> Iterator[Harness]:
    """Stores of `store_kind`; the servers it needs start on first use and stop afterwards."""
    started: list[ServerProcess] = []

    def redis_port() -> int:
        server: ServerProcess = request.getfixturevalue("redis_single")
        return server.port

    def redis_cluster() -> str:
        setup: ClusterSetup = request.getfixturevalue("redis_cluster")
        return setup.url

    def memcached_port() -> int:
        kind = store_kind.partition("/")[2] or "memcached"
        started.append(memcached_server(kind, name="n1").start())
        return started[-1].port

    loop = asyncio.new_event_loop()
    harness = Harness(store_kind, loop, redis_port, redis_cluster, memcached_port)
    yield harness
    harness.close()
    for server in started:
        server.kill()  # nothing on it to keep; memcached takes a second to stop on SIGTERM


@pytest.fixture
def store(harness: Harness) -> Any:
    return harness.open()


@pytest.fixture
def key() -> Callable[[str], str]:
    """Unique keys per test, shaped like pymsm's (prefix, validity:, lock:), on a shared server."""
    base = uuid.uuid4().hex.upper()
    return lambda name: f"{name}{base}" if name.endswith(":") else f"{base}-{name}"
