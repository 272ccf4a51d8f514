"""Sticky mode in AsyncSessionManager on AsyncMemoryStore: the same core flows as the sync
manager (tests/core/test_sticky_flows.py), driven by the async driver. Two hosts crossed over:
app1 keeps its sessions on n2 and lists n1 as failover node, app2 the other way round."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from pymsm import AsyncSessionManager
from pymsm.core.session import Session
from pymsm.stores.memcached_async import AsyncMemcachedStore
from pymsm.stores.memory import AsyncMemoryStore, MemoryStore
from support.clock import Clock
from support.sticky_memory import NODES, calls, cookie_after, put, sticky_settings, stored_data

Work = Callable[[Session], Any]


def app(
    route: str,
    stores: dict[str, MemoryStore],
    clock: Clock,
    wrap: Callable[[MemoryStore], AsyncMemoryStore] = AsyncMemoryStore,
    **settings: Any,
) -> AsyncSessionManager:
    async_stores = {name: wrap(store) for name, store in stores.items()}
    return AsyncSessionManager(
        stores=async_stores, clock=clock, **sticky_settings(route), **settings
    )


async def request(
    manager: AsyncSessionManager, cookie: str | None, work: Work = lambda s: None
) -> tuple[Session, str | None]:
    """One request, as the ASGI middleware runs it: the session and the client's cookie after."""
    session = await manager.load(cookie)
    work(session)
    await manager.save(session)
    await manager.release(session)
    return session, cookie_after(manager, session, cookie)


def bump(s: Session) -> None:
    s["n"] += 1


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(scenario())


def test_local_copy_is_served_after_a_validity_read_only(
    stores: dict[str, MemoryStore], clock: Clock
) -> None:
    async def scenario() -> None:
        app1 = app("app1", stores, clock)
        _, cookie = await request(app1, None, put("user", "ann"))
        assert cookie is not None and cookie.endswith("-n2.app1")
        calls(stores)
        clock.now += 5
        session, same = await request(app1, cookie, lambda s: s["user"])
        assert same == cookie and session.load_status == "local" and session["user"] == "ann"
        assert calls(stores) == {"get_many": 1}  # the 20-byte validity; no record read
        stores["n2"].items[cookie] = (b"garbage", 0.0)  # the record is never read
        session, _ = await request(app1, cookie, lambda s: s["user"])
        assert session["user"] == "ann" and app1.stats["load_local"] == 2

    run(scenario)


def test_another_writers_newer_stamp_reloads(stores: dict[str, MemoryStore], clock: Clock) -> None:
    async def scenario() -> None:
        a, b = app("app1", stores, clock), app("app1", stores, clock)
        _, cookie = await request(a, None, put("n", 0))
        for i in range(1, 8):  # alternate, no time passing: stamps alone order the writes
            manager = (b, a)[i % 2]
            session, cookie = await request(manager, cookie, bump)
            assert session["n"] == i
            # a's own copy is current at i=1; from then on the other one wrote since: reload
            assert session.load_status == ("local" if i == 1 else "found")
        session, _ = await request(b, cookie, lambda s: s["n"])  # a wrote last
        assert session["n"] == 7 and session.load_status == "found"
        session, _ = await request(b, cookie, lambda s: s["n"])
        assert session["n"] == 7 and session.load_status == "local"
        await request(a, cookie, lambda s: s.invalidate())  # logout on a
        session, _ = await request(b, cookie, lambda s: s.get("n"))
        assert session.is_new and b.stats["load_invalidated"] == 1

    run(scenario)


def test_takeover_to_our_route(stores: dict[str, MemoryStore], clock: Clock) -> None:
    async def scenario() -> None:
        app1, app2 = app("app1", stores, clock), app("app2", stores, clock)
        _, cookie = await request(app1, None, put("user", "ann"))
        assert cookie is not None
        clock.now += 1
        session, taken = await request(app2, cookie, lambda s: s["user"])
        assert session["user"] == "ann" and session.load_status == "taken_over"
        assert taken is not None and taken.endswith("-n1.app2")  # n2 is app2's failover node
        assert taken.split("-")[0] == cookie.split("-")[0]  # same base: the user keeps it
        assert cookie not in stores["n2"].items and taken in stores["n1"].items
        assert app2._sticky is not None and taken in app2._sticky.cache
        session, _ = await request(app1, cookie, lambda s: s.get("user"))
        assert session.is_new and app1.stats["load_invalidated"] == 1  # tombstone seen

    run(scenario)


def test_failover_node_move_and_back(stores: dict[str, MemoryStore], clock: Clock) -> None:
    async def scenario() -> None:
        app1 = app("app1", stores, clock)
        _, cookie = await request(app1, None, put("user", "ann"))
        stores["n2"].down = True
        clock.now += 1
        session, moved = await request(app1, cookie, lambda s: s["user"])
        assert session["user"] == "ann"
        assert moved is not None and moved.endswith("-n1.app1") and moved in stores["n1"].items
        stores["n2"].down = False
        clock.now += 11  # past node_dead_timeout: n2 is tried again
        session, back = await request(app1, moved, lambda s: s["user"])
        assert session["user"] == "ann" and back is not None and back.endswith("-n2.app1")
        assert back in stores["n2"].items and moved not in stores["n1"].items

    run(scenario)


def test_all_nodes_down_keeps_the_session_in_memory_and_writes_it_later(
    stores: dict[str, MemoryStore], clock: Clock
) -> None:
    async def scenario() -> None:
        app1 = app("app1", stores, clock)
        _, cookie = await request(app1, None, put("n", 1))
        for store in stores.values():
            store.down = True
        for i in range(2, 5):
            clock.now += 1
            session, same = await request(app1, cookie, bump)
            assert same == cookie and session["n"] == i
        assert app1.stats["save_kept"] == 3
        _, fresh = await request(app1, None, put("new", True))  # a new one is kept too
        assert fresh is not None
        for store in stores.values():
            store.down = False
            store.items.clear()  # restarted empty
        clock.now += 11
        session, same = await request(app1, cookie, lambda s: s["n"])
        assert session["n"] == 4 and same == cookie
        assert cookie is not None and stored_data(stores["n2"], cookie) == {"n": 4}
        session, now = await request(app1, fresh, lambda s: s["new"])
        assert session["new"] is True and now is not None
        assert any(now in store.items for store in stores.values())

    run(scenario)


class Yielding(AsyncMemoryStore):
    """Every call gives the loop away first, as a network round trip does."""

    def __getattribute__(self, name: str) -> Any:
        attr = super().__getattribute__(name)
        if name in ("sync",) or name.startswith("_") or not callable(attr):
            return attr

        async def call(*args: Any) -> Any:
            await asyncio.sleep(0)
            return await attr(*args)

        return call


def test_a_newer_write_or_a_logout_elsewhere_is_seen_when_the_home_node_dies(
    stores: dict[str, MemoryStore], clock: Clock
) -> None:
    """The async driver runs the same home-down check as the sync one (test_sticky_flows):
    the backup copies' stamps and tombstones decide, not this process's memory."""

    async def scenario() -> None:
        p0, p1 = app("app1", stores, clock), app("app1", stores, clock)
        _, cookie = await request(p1, None, put("n", 0))
        clock.now += 1
        _, cookie = await request(p0, cookie, bump)
        stores["n2"].down = True
        clock.now += 1
        session, cookie = await request(p1, cookie, lambda s: s.get("n"))
        assert session["n"] == 1  # p1 held n=0
        stores["n2"].down = False
        clock.now += 30
        _, other = await request(p1, None, put("user", "ann"))
        await request(p0, other, lambda s: s.invalidate())
        stores["n2"].down = True
        replayed, _ = await request(p1, other, lambda s: s.get("user"))
        assert replayed.is_new and dict(replayed) == {}
        stores["n2"].down = False
        clock.now += 30
        _, third = await request(p0, None, put("user", "bob"))  # on n2, its copy on n1
        assert third is not None and third.endswith("-n2.app1")
        restarted = app("app1", stores, clock)  # nothing in memory, and n2 is gone for good
        stores["n2"].down = True
        stores["n2"].items.clear()
        kept, _ = await request(restarted, third, lambda s: s.get("user"))
        assert kept["user"] == "bob"

    run(scenario)


def test_interleaved_requests_of_one_session_each_get_their_copy_and_the_later_save_wins(
    stores: dict[str, MemoryStore], clock: Clock
) -> None:
    async def scenario() -> None:
        app1 = app("app1", stores, clock, wrap=Yielding)
        _, cookie = await request(app1, None, put("n", 0))
        started = asyncio.Event()

        async def slow(key: str) -> Session:
            session = await app1.load(cookie)
            session[key] = True
            started.set()
            await asyncio.sleep(0.01)  # the other request runs meanwhile
            await app1.save(session)
            return session

        async def fast(key: str) -> Session:
            await started.wait()
            session, _ = await request(app1, cookie, put(key, True))
            assert "slow" not in session  # not the other request's half-done change
            return session

        await asyncio.gather(slow("slow"), fast("fast"))
        session, _ = await request(app1, cookie, dict)
        assert dict(session) == {"n": 0, "slow": True}  # the later save wins
        assert cookie is not None and stored_data(stores["n2"], cookie) == dict(session)

    run(scenario)


class GatedStore(AsyncMemoryStore):
    """Writes wait until the gate opens: a cache node that stopped answering quickly."""

    def __init__(self, sync: MemoryStore) -> None:
        super().__init__(sync)
        self.gate = asyncio.Event()

    async def set(self, key: str, value: bytes, ttl: int, noreply: bool = False) -> None:
        await self.gate.wait()
        await super().set(key, value, ttl, noreply)

    async def add(self, key: str, value: bytes, ttl: int) -> bool:
        await self.gate.wait()
        return await super().add(key, value, ttl)


def test_async_backup_queue_overflow_is_counted_and_the_next_save_catches_up(
    stores: dict[str, MemoryStore], clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        m = app("app1", stores, clock, GatedStore, session_backup_async=True, backup_queue_size=2)
        _, cookie = await request(m, None, put("n", 0))
        with caplog.at_level(logging.WARNING, logger="pymsm"):
            for i in range(1, 20):
                session, same = await request(m, cookie, bump)
                assert same == cookie and session["n"] == i  # served from memory meanwhile
        assert m.stats["backup_dropped"] >= 15
        assert "backup queue is full (backup_queue_size=2)" in caplog.text
        for store in m.stores.values():
            assert isinstance(store, GatedStore)
            store.gate.set()
        assert m._sticky is not None
        await m._sticky.flush()
        assert cookie is not None and stored_data(stores["n2"], cookie)["n"] < 19
        session, _ = await request(m, cookie, lambda s: s["n"])  # store behind: forced write
        assert session["n"] == 19
        await m.close()  # drains the queue
        assert stored_data(stores["n2"], cookie) == {"n": 19}

    run(scenario)


def test_close_drains_the_async_backup_queue(stores: dict[str, MemoryStore], clock: Clock) -> None:
    async def scenario() -> None:
        m = app("app1", stores, clock, session_backup_async=True)
        cookies = [(await request(m, None, put("i", i)))[1] for i in range(50)]
        await m.close()
        assert m.stats["backup_dropped"] == 0
        assert [stored_data(stores["n2"], str(c))["i"] for c in cookies] == list(range(50))
        assert m._sticky is not None and m._sticky.writer is not None
        assert m._sticky.writer.written == 50
        _, again = await request(m, cookies[0], put("i", -1))  # usable after close
        await m.close()
        assert stored_data(stores["n2"], str(again)) == {"i": -1}

    run(scenario)


def test_background_write_failure_is_counted_and_repaired(
    stores: dict[str, MemoryStore], clock: Clock
) -> None:
    async def scenario() -> None:
        m = app("app1", stores, clock, session_backup_async=True)
        assert m._sticky is not None and m._sticky.writer is not None
        _, cookie = await request(m, None, put("x", 1))
        await m._sticky.flush()
        session = await m.load(cookie)
        stores["n2"].fail_next(1)  # the record write, in the background
        session["x"] = 2
        await m.save(session)
        await m._sticky.flush()
        assert m._sticky.writer.failed == 1
        assert stored_data(stores["n2"], str(cookie)) == {"x": 1}
        session, _ = await request(m, cookie, lambda s: s["x"])  # memory wins: forced write
        assert session["x"] == 2
        await m.close()
        assert stored_data(stores["n2"], str(cookie)) == {"x": 2}

    run(scenario)


def test_synchronous_backup_writes_get_stores_bounded_by_session_backup_timeout() -> None:
    m = AsyncSessionManager(memcached_nodes=NODES, sticky=True, session_backup_timeout=50)
    assert m._sticky is not None
    backup = m._sticky.backup_stores
    assert backup is not m.stores and set(backup) == {"n1", "n2"}
    for name, store in backup.items():
        assert isinstance(store, AsyncMemcachedStore) and store.timeout == 0.05
        reads = m.stores[name]
        assert isinstance(reads, AsyncMemcachedStore) and reads.timeout == 1.0
    queued = AsyncSessionManager(memcached_nodes=NODES, sticky=True, session_backup_async=True)
    assert queued._sticky is not None and queued._sticky.backup_stores is queued.stores


def test_non_sticky_async_manager_is_unchanged(
    stores: dict[str, MemoryStore], clock: Clock
) -> None:
    async def scenario() -> None:
        m = AsyncSessionManager(
            stores={n: AsyncMemoryStore(s) for n, s in stores.items()},
            clock=clock,
            memcached_nodes=NODES,
        )
        assert m._sticky is None
        _, cookie = await request(m, None, put("x", 1))
        session, _ = await request(m, cookie, lambda s: s["x"])
        assert session["x"] == 1 and session.load_status == "found"

    run(scenario)


def test_delete_drops_memory_and_a_takeover_s_old_id(
    stores: dict[str, MemoryStore], clock: Clock
) -> None:
    """The async twin of `SessionManager.delete` in sticky mode (tests/core/test_sticky_flows)."""

    async def scenario() -> None:
        app1, app2 = app("app1", stores, clock), app("app2", stores, clock)
        _, first = await request(app2, None, put("user", "ann"))
        clock.now += 1
        taken = await app1.load(first)  # taken over, not saved: app2's id holds the session
        assert taken["user"] == "ann" and taken.id.endswith(".app1")
        await app1.release(taken)
        await app1.delete(taken.id)
        assert app1._sticky is not None and not app1._sticky.cache.keys()
        clock.now += 1
        for process in (app2, app1):
            replayed, _ = await request(process, first, lambda s: s.get("user"))
            assert replayed.is_new and dict(replayed) == {}

    run(scenario)


# -- the deletes a save leaves to the background writer (core/sticky.Later), async twin of
# tests/manager/test_sticky_backup.py: the node fails after the request's load read it


def test_async_a_logout_whose_node_fails_after_the_load_ends_the_session_everywhere(
    stores: dict[str, MemoryStore], clock: Clock
) -> None:
    async def scenario() -> None:
        app1 = app("app1", stores, clock, session_backup_async=True)
        other = app("app1", stores, clock)  # a second process behind the route
        _, cookie = await request(app1, None, put("v", 1))
        assert app1._sticky is not None and cookie is not None
        await app1._sticky.flush()
        assert (await request(other, cookie))[0]["v"] == 1  # held in its memory too
        clock.now += 1
        session = await app1.load(cookie)
        stores["n2"].down = True  # app1's home, cut off after the load
        session.invalidate()
        await app1.save(session)
        await app1.release(session)
        await app1._sticky.flush()
        assert [str(debt.sid) for debt in app1.owed.of("n2")] == [cookie]
        assert "bak:" + cookie not in stores["n1"].items
        for m in (app1, other):
            again, _ = await request(m, cookie)
            assert again.is_new and dict(again) == {}
        await app1.close()
        await other.close()

    run(scenario)


def test_async_a_takeover_whose_old_node_fails_after_the_load_moves_the_session_for_good(
    stores: dict[str, MemoryStore], clock: Clock
) -> None:
    async def scenario() -> None:
        app1 = app("app1", stores, clock)
        app2 = app("app2", stores, clock, session_backup_async=True)
        _, old = await request(app1, None, put("v", 1))
        assert old is not None and app2._sticky is not None
        clock.now += 1
        session = await app2.load(old)  # the takeover: the new id names n1 and app2
        stores["n2"].down = True  # the old home, and the new id's backup node
        session["v"] = 2
        await app2.save(session)
        await app2.release(session)
        await app2._sticky.flush()
        new = cookie_after(app2, session, old)
        assert new is not None and stored_data(stores["n1"], new) == {"v": 2}
        assert [str(debt.sid) for debt in app2.owed.of("n2")] == [old]
        assert "tomb:" + old in stores["n1"].items
        replayed, _ = await request(app1, old)  # held in app1's memory; its node is down
        assert replayed.is_new and dict(replayed) == {}
        await app1.close()
        await app2.close()

    run(scenario)


class AddGate(AsyncMemoryStore):
    """New sessions' writes (`add`) wait until the gate opens; deletes and sets do not."""

    def __init__(self, sync: MemoryStore) -> None:
        super().__init__(sync)
        self.gate = asyncio.Event()
        self.waiting = asyncio.Event()

    async def add(self, key: str, value: bytes, ttl: int) -> bool:
        self.waiting.set()
        await self.gate.wait()
        return await super().add(key, value, ttl)


def test_async_a_logout_is_made_at_once_when_the_queue_is_full(
    stores: dict[str, MemoryStore], clock: Clock
) -> None:
    async def scenario() -> None:
        m = app("app1", stores, clock, AddGate, session_backup_async=True, backup_queue_size=1)
        home = m.stores["n2"]
        assert isinstance(home, AddGate) and m._sticky is not None
        home.gate.set()
        _, cookie = await request(m, None, put("v", 1))
        await m._sticky.flush()
        home.gate.clear()
        home.waiting.clear()
        await request(m, None, put("w", 1))
        await home.waiting.wait()  # the writer waits on this one's add
        await request(m, None, put("w", 2))  # queued: the queue is full
        await request(m, cookie, lambda s: s.invalidate())
        assert m.stats["backup_dropped"] == 1
        assert cookie is not None and cookie not in stores["n2"].items
        again, _ = await request(app("app1", stores, clock), cookie)
        assert again.is_new and dict(again) == {}
        home.gate.set()
        await m.close()

    run(scenario)
