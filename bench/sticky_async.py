"""Per-request cost of an unchanged 10 KB session in AsyncSessionManager: sticky vs non-sticky,
same memcached cluster (the asyncio twin of bench/sticky.py, whose cluster start and options it reuses).

In-process, no HTTP: each request loads the session, reads one attribute, saves and builds the
cookie header, as the ASGI middleware does; one request at a time on one event loop. Two
memcached nodes on loopback. Prints the median time per request over interleaved rounds and the
ratio sticky / non-sticky.

    python bench/sticky_async.py [--requests 2000] [--rounds 7]
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
import time
from typing import Any

from sticky import arguments, memcached_cluster

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


async def run(nodes: str, requests: int, rounds: int) -> dict[str, float]:
    managers = {
        "async non-sticky": AsyncSessionManager(memcached_nodes=nodes),
        "async sticky": AsyncSessionManager(
            memcached_nodes=nodes, failover_nodes="n1", sticky=True, route="app1"
        ),
    }
    cookies = {}
    for name, m in managers.items():
        session = await m.load(None)
        session["user"] = "ann"
        session["blob"] = secrets.token_hex(5000)  # 10 KB of attributes
        await m.save(session)
        cookies[name] = session.id
        await measure(m, session.id, 200)  # warm up connections
    times: dict[str, list[float]] = {name: [] for name in managers}
    for _ in range(rounds):  # interleaved rounds: drift hits both alike
        for name, m in managers.items():
            times[name].append(await measure(m, cookies[name], requests))
    for m in managers.values():
        await m.close()
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    args = arguments(__doc__ or "")
    with memcached_cluster() as nodes:
        medians = asyncio.run(run(nodes, args.requests, args.rounds))
    for name, median in medians.items():
        print(
            f"{name:>17}: {median * 1e6:7.1f} us/request "
            f"(median of {args.rounds} rounds x {args.requests})"
        )
    ratio = medians["async sticky"] / medians["async non-sticky"]
    print(f"async sticky / async non-sticky = {ratio:.2f}")


if __name__ == "__main__":
    main()
