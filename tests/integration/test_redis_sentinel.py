"""Sentinel: the master is killed under traffic; after the failover every session is there,
for the sync manager and for the async store alike."""

from __future__ import annotations

import asyncio
import time

import pytest

from pymsm.exceptions import StoreError
from pymsm.manager import SessionManager
from pymsm.stores.redis import AsyncRedisStore
from support.redis_servers import SentinelSetup, client

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SESSIONS = 20


def test_sessions_survive_a_master_failover(redis_sentinel: SentinelSetup) -> None:
    app = SessionManager(
        memcached_nodes=redis_sentinel.url, operation_timeout=300, node_dead_timeout=0.2
    )
    loop = asyncio.new_event_loop()
    async_store = AsyncRedisStore(redis_sentinel.url, 0.3)
    loop.run_until_complete(async_store.set("async-key", b"before", 0))
    sids = []
    for _ in range(SESSIONS):
        session = app.load(None)
        session["hits"] = 0
        assert app.save(session).status == "stored"
        sids.append(session.id)
    # Redis replicates asynchronously: a write the replica has not received dies with the
    # master. WAIT makes the sessions written so far safe before the kill.
    assert client(redis_sentinel.master.port).wait(1, 2000) == 1
    old_master = redis_sentinel.master_port()

    statuses: list[str] = []
    hits = dict.fromkeys(sids, 0)
    found_after_failover: set[str] = set()
    deadline = time.monotonic() + 30  # bounded: down-after is 400 ms, failover ~1-3 s
    for i in range(100_000):
        if time.monotonic() > deadline or len(found_after_failover) == SESSIONS:
            break
        if i == 2 * SESSIONS:
            redis_sentinel.master.kill()
        sid = sids[i % SESSIONS]
        session = app.load(sid)
        statuses.append(session.load_status)
        if session.load_status != "found":
            time.sleep(0.02)  # unavailable: a new empty session is served and not written
            continue
        assert session.id == sid
        session["hits"] += 1
        if app.save(session).status == "stored":
            hits[sid] = session["hits"]
        if not redis_sentinel.master.running and redis_sentinel.master_port() != old_master:
            found_after_failover.add(sid)

    assert not redis_sentinel.master.running
    assert redis_sentinel.master_port() == redis_sentinel.replica.port
    assert "unavailable" in statuses  # the kill did land under traffic
    assert set(statuses) <= {"found", "unavailable"}, statuses  # never "missing": none lost
    assert found_after_failover == set(sids)

    other = SessionManager(memcached_nodes=redis_sentinel.url, operation_timeout=300)
    for sid in sids:
        session = other.load(sid)
        assert session.load_status == "found"
        assert session["hits"] == hits[sid]  # written after the failover, read back as such
    other.close()
    app.close()

    # the async store held a pooled connection to the dead master: it must follow too
    found = loop.run_until_complete(_read_when_available(async_store, "async-key"))
    assert found == {"async-key": b"before"}
    assert loop.run_until_complete(async_store.replace("async-key", b"after", 0)) is True
    loop.run_until_complete(async_store.close())
    loop.close()


async def _read_when_available(store: AsyncRedisStore, key: str) -> dict[str, bytes] | None:
    deadline = time.monotonic() + 10  # the failover is done; this bounds a slow rediscovery
    while time.monotonic() < deadline:
        try:
            return await store.get_many([key])
        except StoreError:
            await asyncio.sleep(0.05)
    return None
