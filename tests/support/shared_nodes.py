"""Memcached nodes shared by the tests of one module (module-scoped), for in-process adapter
tests that never kill a node: memcached takes ~1 s to stop once a client has connected, so one
cluster per module instead of one per test keeps the suite fast. Failover tests start their
own nodes with the `memcached_nodes` fixture."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from support.servers import memcached_server


@contextmanager
def shared_nodes(kind: str, count: int = 2) -> Iterator[str]:
    """Start `count` servers of `kind`; yield the `memcached_nodes` setting naming them n1..nN."""
    servers = [memcached_server(kind, name=f"n{i + 1}") for i in range(count)]
    try:
        for server in servers:
            server.start()
        yield ",".join(f"{s.name}:{s.address}" for s in servers)
    finally:
        for server in servers:
            server.stop()
