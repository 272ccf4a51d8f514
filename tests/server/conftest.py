"""Fixtures for the embedded server's tests: one real memcached 1.6 and one embedded server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pymsm.server import MemcachedServer, Settings
from support.servers import HOST, ServerProcess, memcached_argv


@pytest.fixture(scope="session")
def real_port() -> Iterator[int]:
    server = ServerProcess(memcached_argv(), name="real").start()
    yield server.port
    server.stop()


@pytest.fixture(scope="session", params=["asyncio", "uvloop"])
def embedded_port(request: pytest.FixtureRequest) -> Iterator[int]:
    """One embedded server per event loop it can run on (uvloop is the default when installed)."""
    settings = Settings(port=0, listen=HOST, threads=1, event_loop=request.param)
    with MemcachedServer(settings).running() as server:
        yield server.port


@pytest.fixture
def embedded() -> Iterator[MemcachedServer]:
    """A fresh in-thread server per test (for state-dependent tests)."""
    with MemcachedServer(Settings(port=0, listen=HOST)).running() as server:
        yield server
