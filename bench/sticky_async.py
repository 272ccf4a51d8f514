"""Per-request cost of an unchanged 10 KB session in AsyncSessionManager: sticky vs non-sticky,
same memcached cluster (the asyncio twin of bench/sticky.py, whose cluster start, options and
two session shapes it reuses).

In-process, no HTTP: each request loads the session, reads one attribute, saves and builds the
cookie header, as the ASGI middleware does; one request at a time on one event loop. Two
memcached nodes on loopback. Prints the median time per request over interleaved rounds and the
ratio sticky / non-sticky.

    python bench/sticky_async.py [--requests 2000] [--rounds 7]
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from sticky import SHAPES, arguments, memcached_cluster

from pymsm import AsyncSessionManager


async def request(m: AsyncSessionManager, cookie: str) -> Any:
    session = await m.load(cookie)
    value = session["user"]
    await m.save(session)
    m.set_cookie(session, cookie)
    await m.release(session)
    return value


async def measure(m: AsyncSessionManager, cookie: str, requests: int) -> float:
    start = time.perf_counter()
    for _ in range(requests):
        await request(m, cookie)
    return (time.perf_counter() - start) / requests


async def run(nodes: str, requests: int, rounds: int) -> dict[tuple[str, str], float]:
    managers: dict[tuple[str, str], AsyncSessionManager] = {}
    cookies = {}
    for shape in SHAPES:
        managers[shape, "async non-sticky"] = AsyncSessionManager(memcached_nodes=nodes)
        managers[shape, "async sticky"] = AsyncSessionManager(
            memcached_nodes=nodes, failover_nodes="n1", sticky=True, route="app1"
        )
    for case, m in managers.items():
        session = await m.load(None)
        session.update(SHAPES[case[0]]())
        await m.save(session)
        cookies[case] = session.id
        await measure(m, session.id, 200)  # warm up connections
    times: dict[tuple[str, str], list[float]] = {case: [] for case in managers}
    for _ in range(rounds):  # interleaved rounds: drift hits every case alike
        for case, m in managers.items():
            times[case].append(await measure(m, cookies[case], requests))
    for m in managers.values():
        await m.close()
    return {case: statistics.median(values) for case, values in times.items()}


def main() -> None:
    args = arguments(__doc__ or "")
    with memcached_cluster() as nodes:
        medians = asyncio.run(run(nodes, args.requests, args.rounds))
    print(f"medians of {args.rounds} rounds x {args.requests} requests")
    for shape in SHAPES:
        print(f"{shape} session:")
        for mode in ("async non-sticky", "async sticky"):
            print(f"  {mode:>17}: {medians[shape, mode] * 1e6:7.1f} us/request")
        ratio = medians[shape, "async sticky"] / medians[shape, "async non-sticky"]
        print(f"  async sticky / async non-sticky = {ratio:.2f}")


if __name__ == "__main__":
    main()
