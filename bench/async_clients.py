"""Async memcached clients for the asyncio store, compared on a session-shaped workload.

One "request" = multi-get of 2 keys (record + validity) then 2 sets (record, validity), the second
with noreply where the client has it; `--concurrency` tasks on one event loop, one memcached.
Prints requests/s per client, the median of `--rounds` rounds, and the ratio to ours.

    python bench/async_clients.py            # starts its own memcached on a free port
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from pymsm.core.nodes import Node
from pymsm.stores.memcached_async import AsyncMemcachedStore
from support.servers import memcached_server

Request = Callable[[int], Awaitable[None]]
VALUE = b"x" * 300


async def ours(port: int) -> tuple[Request, Callable[[], Awaitable[None]]]:
    store = AsyncMemcachedStore(Node("n1", "127.0.0.1", port))

    async def request(i: int) -> None:
        await store.get_many([f"s{i % 1000}", f"validity:s{i % 1000}"])
        await store.set(f"s{i % 1000}", VALUE, 600)
        await store.set(f"validity:s{i % 1000}", b"v" * 20, 600, noreply=True)

    return request, store.close


async def aiomcache_client(port: int) -> tuple[Request, Callable[[], Awaitable[None]]]:
    import aiomcache

    client = aiomcache.Client("127.0.0.1", port, pool_size=32)

    async def request(i: int) -> None:
        await client.multi_get(f"s{i % 1000}".encode(), f"validity:s{i % 1000}".encode())
        await client.set(f"s{i % 1000}".encode(), VALUE, 600)
        await client.set(f"validity:s{i % 1000}".encode(), b"v" * 20, 600)  # no noreply

    return request, client.close


async def emcache_client(port: int) -> tuple[Request, Callable[[], Awaitable[None]]]:
    import emcache

    # timeout=None: with its default of 1 s per operation, 64 tasks on 32 connections ended in
    # TimeoutError in two runs in a row on 2026-11-21 (the run stopped); a throughput benchmark
    # must not fail on the peer's timer
    client = await emcache.create_client(
        [emcache.MemcachedHostAddress("127.0.0.1", port)], max_connections=32, timeout=None
    )

    async def request(i: int) -> None:
        await client.get_many([f"s{i % 1000}".encode(), f"validity:s{i % 1000}".encode()])
        await client.set(f"s{i % 1000}".encode(), VALUE, exptime=600)
        await client.set(f"validity:s{i % 1000}".encode(), b"v" * 20, exptime=600, noreply=True)

    return request, client.close


async def measure(
    factory: Callable[[int], Awaitable[tuple[Request, Callable[[], Awaitable[None]]]]],
    port: int,
    total: int,
    concurrency: int,
) -> float:
    request, close = await factory(port)
    counter = iter(range(total))

    async def worker() -> None:
        for i in counter:
            await request(i)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    await close()
    return total / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    server = memcached_server().start()
    try:
        clients = {
            "pymsm (pipelined)": ours,
            "aiomcache": aiomcache_client,
            "emcache": emcache_client,
        }
        results: dict[str, list[float]] = {name: [] for name in clients}
        for _ in range(args.rounds):  # interleaved, so drift hits every client alike
            for name, factory in clients.items():
                rate = asyncio.run(measure(factory, server.port, args.requests, args.concurrency))
                results[name].append(rate)
        base = statistics.median(results["pymsm (pipelined)"])
        print(f"{args.requests} requests x {args.rounds} rounds, concurrency {args.concurrency}")
        for name, rates in results.items():
            median = statistics.median(rates)
            print(f"{name:20s} {median:9.0f} req/s  {median / base:5.2f}x")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
