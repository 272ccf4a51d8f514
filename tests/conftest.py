from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from support.servers import MEMCACHED_KINDS, ServerProcess, memcached_server

pytest_plugins = [
    "support.redis_servers",  # redis_single, redis_sentinel, redis_cluster
    "support.sticky_memory",  # clock, stores (memory nodes n1, n2)
]


@pytest.fixture(params=sorted(MEMCACHED_KINDS))
def memcached_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture
def memcached_nodes(memcached_kind: str) -> Iterator[Callable[[int], list[ServerProcess]]]:
    """Factory: `memcached_nodes(n)` starts n servers named n1..nN; all are stopped afterwards."""
    started: list[ServerProcess] = []

    def start(count: int, extra: tuple[str, ...] = ()) -> list[ServerProcess]:
        servers = [memcached_server(memcached_kind, extra, name=f"n{i + 1}") for i in range(count)]
        for server in servers:
            started.append(server.start())
        return servers

    yield start
    for server in started:
        server.kill()  # nothing on them to keep, and memcached takes ~1 s to stop on SIGINT
