"""Active health checks: GET the health path of every backend every `interval` seconds.

A 2xx or 3xx answer within `timeout` marks the backend up (and clears a passive failure); any
other status, a refused connection or a timeout marks it down until a later check passes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import h11

from pymsm.balancer.backends import Backend
from pymsm.balancer.config import HealthCheck
from pymsm.balancer.upstream import BackendError, BackendFailed, Pool

if TYPE_CHECKING:
    from pymsm.balancer.server import Balancer

log = logging.getLogger("pymsm.balancer.health")


async def check_forever(balancer: Balancer) -> None:
    health = balancer.config.health
    while True:
        await asyncio.gather(*(check(b, health) for b in balancer.backends))
        await asyncio.sleep(health.interval)


async def check(backend: Backend, health: HealthCheck) -> bool:
    """One check; updates `backend` and returns whether it passed."""
    assert health.path is not None
    was_up = backend.check_ok
    try:
        status = await probe(Pool(backend.spec, 0, health.timeout), health.path, health.timeout)
        ok, reason = status < 400, f"health check answered {status}"
    except BackendError as exc:
        ok, reason = False, f"health check failed: {exc}"
    backend.checked(ok, reason)
    if ok != was_up:
        log.warning("backend %s is %s (%s)", backend.name, "up" if ok else "down", reason)
    return ok


async def probe(pool: Pool, path: str, timeout: float) -> int:
    upstream = await pool.connect()
    try:
        headers = [(b"host", pool.spec.address.encode()), (b"connection", b"close")]
        upstream.write(h11.Request(method=b"GET", target=path.encode(), headers=headers))
        upstream.write(h11.EndOfMessage())
        await upstream.drain()
        while True:
            event = await upstream.next_event(timeout)
            if isinstance(event, h11.Response):
                return event.status_code
            if not isinstance(event, h11.InformationalResponse):
                raise BackendFailed(f"expected a response, got {type(event).__name__}")
    finally:
        upstream.close()
