"""Redis Cluster: sessions spread over three masters, a slot moves, a node restarts."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from redis.cluster import key_slot

from pymsm import AsyncSessionManager, SessionManager
from pymsm.stores.redis import AsyncRedisStore, wire_key
from support.redis_servers import ClusterSetup, client

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SESSIONS = 30


def _slot(app: SessionManager, sid: str) -> int:
    return key_slot(wire_key(app.config.key_prefix + sid).encode())


def _create(app: SessionManager, count: int) -> list[str]:
    sids = []
    for i in range(count):
        session = app.load(None)
        session["i"] = i
        assert app.save(session).status == "stored"
        sids.append(session.id)
    return sids


def _read_all(app: SessionManager, sids: list[str], bump: bool = True) -> None:
    for i, sid in enumerate(sids):
        session = app.load(sid)
        assert (session.load_status, session.id) == ("found", sid)
        assert session["i"] == i
        if bump:
            session["seen"] = session.get("seen", 0) + 1
            assert app.save(session).status == "stored"


def test_a_session_read_is_one_mget_on_one_node(redis_cluster: ClusterSetup) -> None:
    app = SessionManager(memcached_nodes=redis_cluster.url, operation_timeout=500)
    sid = _create(app, 1)[0]
    owner = redis_cluster.owner(_slot(app, sid))
    before = {n.port: _mgets(n.port) for n in redis_cluster.nodes}
    assert app.load(sid).load_status == "found"
    after = {n.port: _mgets(n.port) for n in redis_cluster.nodes}
    assert {p: after[p] - before[p] for p in after} == {
        n.port: int(n is owner) for n in redis_cluster.nodes
    }
    app.close()


def test_sessions_survive_slot_migration_and_node_restart(redis_cluster: ClusterSetup) -> None:
    app = SessionManager(
        memcached_nodes=redis_cluster.url, operation_timeout=500, node_dead_timeout=0.2
    )
    sids = _create(app, SESSIONS)
    owners = {redis_cluster.owner(_slot(app, sid)).port for sid in sids}
    assert owners == {n.port for n in redis_cluster.nodes}  # spread over all three masters

    # move the slot of the first session to another master, as a reshard does
    slot = _slot(app, sids[0])
    source = redis_cluster.owner(slot)
    target = next(n for n in redis_cluster.nodes if n is not source)
    assert redis_cluster.migrate_slot(slot, source, target) == 1  # the record
    assert redis_cluster.owner(slot) is target
    _read_all(app, sids)  # this client's slot map is stale: it follows MOVED

    # crash a master and start it again on its append-only file
    victim = redis_cluster.owner(_slot(app, sids[1]))
    victim.kill()
    victim.start()
    redis_cluster.wait_ok()
    _read_all(app, sids)
    fresh = SessionManager(memcached_nodes=redis_cluster.url, operation_timeout=500)
    _read_all(fresh, sids, bump=False)
    assert all(fresh.load(sid)["seen"] == 2 for sid in sids)
    fresh.close()
    app.close()


def test_an_app_started_while_the_cluster_is_down_serves_once_it_is_up(tmp_path: Path) -> None:
    """RedisCluster connects in its constructor: the store used to raise redis-py's
    RedisClusterException there, so the app could not even start, and the async store let it
    out of every call (it is not a RedisError). Now the nodes are down as any store's are."""
    setup = ClusterSetup(tmp_path)  # not started
    app = SessionManager(memcached_nodes=setup.url, operation_timeout=500, node_dead_timeout=0.1)
    aapp = AsyncSessionManager(
        memcached_nodes=setup.url, operation_timeout=500, node_dead_timeout=0.1
    )
    loop = asyncio.new_event_loop()  # the async store's loop, throughout
    run = loop.run_until_complete
    try:
        session = app.load(None)
        session["a"] = 1
        assert app.save(session).status == "failed"  # all nodes down: documented, no raise
        asession = run(aapp.load(None))
        asession["a"] = 1
        assert run(aapp.save(asession)).status == "failed"
        setup.start()
        time.sleep(0.2)  # past node_dead_timeout: the next request probes the node
        sid = _create(app, 1)[0]
        assert app.load(sid)["i"] == 0
        asession = run(aapp.load(sid))
        assert (asession.load_status, asession["i"]) == ("found", 0)
    finally:
        app.close()
        run(aapp.close())
        loop.close()
        setup.stop()


def test_the_async_store_on_a_cluster(redis_cluster: ClusterSetup) -> None:
    keys = [f"validity:S{i}" for i in range(10)] + [f"S{i}" for i in range(10)]

    async def run() -> None:
        store = AsyncRedisStore(redis_cluster.url, 0.5)
        try:
            for key in keys:
                assert await store.add(key, key.encode(), 60) is True
            assert await store.get_many(keys) == {k: k.encode() for k in keys}
            found = await store.gets_many(["S1"])
            assert await store.cas("S1", b"new", 60, found["S1"][1]) is True
            assert await store.delete_if("S1", b"new") is True
        finally:
            await store.close()

    asyncio.run(run())


def _mgets(port: int) -> int:
    stats = client(port).info("commandstats")
    return int(stats.get("cmdstat_mget", {}).get("calls", 0))
