"""Optimistic writes with per-key merge, invalidation that wins, and locks, on memory stores."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from pymsm import LockTimeout, SessionManager
from pymsm.core.ids import SessionId
from pymsm.core.ops import Gets
from pymsm.core.optimistic import MAX_RETRIES
from pymsm.locks import AsyncLocalLocks, LocalLocks
from pymsm.stores.memory import MemoryStore

NODES = "n1:127.0.0.1:1,n2:127.0.0.1:2"


def manager(**settings: Any) -> tuple[SessionManager, dict[str, MemoryStore]]:
    stores = {"n1": MemoryStore("n1"), "n2": MemoryStore("n2")}
    return SessionManager(memcached_nodes=NODES, stores=stores, **settings), stores


def created(mgr: SessionManager, **data: Any) -> str:
    session = mgr.load(None)
    session.update(data)
    assert mgr.save(session).status == "stored"
    return session.id


def stored(mgr: SessionManager, sid: str) -> dict[str, Any]:
    session = mgr.load(sid)
    assert session.load_status == "found", session.load_status
    return dict(session.data)


def test_concurrent_writes_to_different_keys_merge() -> None:
    mgr, _ = manager()
    sid = created(mgr, a=0, b=0, gone=1)
    first, second = mgr.load(sid), mgr.load(sid)
    first["a"] = 1
    del first["gone"]
    second["b"] = 2
    assert mgr.save(first).status == "stored"
    saved = mgr.save(second)
    assert (saved.status, saved.reason) == ("stored", "merged")
    assert stored(mgr, sid) == {"a": 1, "b": 2}
    assert dict(second.data) == {"a": 1, "b": 2}  # the app sees the merged data
    assert mgr.stats["cas_conflict"] == 1 and mgr.stats["cas_retry"] == 1


def test_same_key_last_write_wins() -> None:
    mgr, _ = manager()
    sid = created(mgr, n=0)
    first, second = mgr.load(sid), mgr.load(sid)
    first["n"], second["n"] = 1, 2
    mgr.save(first)
    mgr.save(second)
    assert stored(mgr, sid) == {"n": 2}


def test_values_changed_in_place_are_merged() -> None:
    mgr, _ = manager()
    sid = created(mgr, cart=["x"], other=0)
    first, second = mgr.load(sid), mgr.load(sid)
    first["cart"].append("y")
    second["other"] = 5
    mgr.save(second)
    assert mgr.save(first).status == "stored"
    assert stored(mgr, sid) == {"cart": ["x", "y"], "other": 5}


def test_the_merged_backup_copy_matches_the_record() -> None:
    mgr, stores = manager()
    sid = created(mgr, a=0, b=0)
    first, second = mgr.load(sid), mgr.load(sid)
    first["a"], second["b"] = 1, 2
    mgr.save(first)
    mgr.save(second)
    primary, backup = (
        (stores["n1"], stores["n2"]) if sid.endswith("n1") else (stores["n2"], stores["n1"])
    )
    primary.down = True
    mgr.health.failed("n1" if sid.endswith("n1") else "n2", mgr.clock())
    for _ in range(5):  # mark the primary dead
        mgr.health.failed("n1" if sid.endswith("n1") else "n2", mgr.clock())
    session = mgr.load(sid)
    assert dict(session.data) == {"a": 1, "b": 2}
    assert backup.calls.get("get_many", 0) >= 1


def test_none_mode_reads_and_writes_without_cas() -> None:
    mgr, stores = manager(locking_mode="none")
    sid = created(mgr, n=0)
    first, second = mgr.load(sid), mgr.load(sid)
    first["a"], second["b"] = 1, 2
    mgr.save(first)
    mgr.save(second)
    assert stored(mgr, sid) == {"n": 0, "b": 2}  # the documented lost update
    assert sum(s.calls.get("cas", 0) + s.calls.get("gets_many", 0) for s in stores.values()) == 0


def test_a_logout_is_never_undone_by_an_in_flight_write() -> None:
    mgr, stores = manager()
    sid = created(mgr, user="ann")
    in_flight, logout = mgr.load(sid), mgr.load(sid)
    in_flight["cart"] = ["book"]
    logout.invalidate()
    mgr.save(logout)
    assert mgr.save(in_flight).status == "gone"
    assert mgr.load(sid).load_status == "missing"
    assert not any(
        k.endswith(sid) and not k.startswith("tomb:") for s in stores.values() for k in s.items
    )


class Interfering(MemoryStore):
    """Lets a test act as another process at an exact moment: `arm(op, n, act)` runs `act`
    right before the n-th next call of `op` ("gets" or "cas") on this node. `refuse` makes
    every cas fail as if another writer always got there first (a hot session)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.armed: tuple[str, int, Callable[[], None]] | None = None
        self.refuse = False

    def arm(self, op: str, n: int, act: Callable[[], None]) -> None:
        self.armed = (op, n, act)

    def _before(self, op: str) -> None:
        if self.armed is not None and self.armed[0] == op:
            name, n, act = self.armed
            self.armed = (name, n - 1, act) if n > 1 else None
            if n == 1:
                act()

    def gets_many(self, keys: Sequence[str]) -> dict[str, tuple[bytes, int]]:
        self._before("gets")
        return super().gets_many(keys)

    def cas(self, key: str, value: bytes, ttl: int, token: int) -> bool | None:
        self._before("cas")
        if self.refuse and self._live(key) is not None:
            return False
        return super().cas(key, value, ttl, token)


def interfering() -> tuple[SessionManager, SessionManager, dict[str, Interfering]]:
    """A manager, another process's manager on the same nodes, and the nodes."""
    stores = {"n1": Interfering("n1"), "n2": Interfering("n2")}
    mine = SessionManager(memcached_nodes=NODES, stores=stores)
    return mine, SessionManager(memcached_nodes=NODES, stores=stores), stores


def logout_by(other: SessionManager, sid: str) -> Callable[[], None]:
    def act() -> None:
        session = other.load(sid)
        session.invalidate()
        other.save(session)

    return act


@pytest.mark.parametrize(
    ("op", "n"),
    [("gets", 1), ("cas", 2)],
    ids=["before the re-read", "between the re-read and the second cas"],
)
def test_a_logout_during_the_merge_of_a_refused_cas_is_not_undone(op: str, n: int) -> None:
    """The write conflicted (another request saved first) and is being merged when another
    process logs out: the merge answers "gone" and nothing comes back (invariant 6)."""
    mine, other, stores = interfering()
    sid = created(mine, user="ann", n=0)
    first, second = mine.load(sid), mine.load(sid)
    first["n"] = 1
    assert mine.save(first).status == "stored"
    second["cart"] = ["book"]  # its cas is refused (first saved since its load): a merge
    stores[str(SessionId.parse(sid).node)].arm(op, n, logout_by(other, sid))
    saved = mine.save(second)
    assert (saved.status, saved.reason) == (
        "gone",
        "deleted meanwhile (logout or expiry); not resurrected",
    )
    assert mine.stats["cas_conflict"] == 1 and mine.stats["save_gone"] == 1
    assert mine.load(sid).load_status == "missing" and other.load(sid).is_new
    assert not any(
        k.endswith(sid) and not k.startswith("tomb:") for s in stores.values() for k in s.items
    )


def test_a_hot_session_gives_up_after_its_retries_and_keeps_what_is_stored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every retry conflicts again: after MAX_RETRIES the save fails, counted and logged with
    the reason, and the stored record is the last one that was stored (nothing is lost)."""
    mine, _, stores = interfering()
    sid = created(mine, user="ann")
    session = mine.load(sid)
    session["cart"] = ["book"]
    stores[str(SessionId.parse(sid).node)].refuse = True
    with caplog.at_level(logging.ERROR, logger="pymsm"):
        saved = mine.save(session)
    assert saved.status == "failed" and "concurrent writes could not be merged" in saved.reason
    assert mine.stats["cas_retry"] == MAX_RETRIES and mine.stats["cas_exhausted"] == 1
    assert "was not stored" in caplog.text
    for store in stores.values():
        store.refuse = False
    assert stored(mine, sid) == {"user": "ann"}


def test_a_backup_written_after_the_logout_is_not_brought_back() -> None:
    mgr, stores = manager()
    sid = created(mgr, user="ann")
    backups = {k: v for s in stores.values() for k, v in s.items.items() if k.startswith("bak:")}
    session = mgr.load(sid)
    session.invalidate()
    mgr.save(session)
    for store in stores.values():  # a late backup write from a request that began earlier
        for key, (value, _) in backups.items():
            if key.startswith("bak:" + sid) and ("tomb:" + sid) in store.items:
                store.set(key, value, 60)
    assert mgr.load(sid).load_status == "missing"
    assert not any(k == sid for s in stores.values() for k in s.items)


def logged_out() -> tuple[SessionManager, dict[str, MemoryStore], str, str, str, dict[str, Any]]:
    """A session logged out: (manager, stores, id, its node, the other node, that other node's
    items as they were before the logout)."""
    mgr, stores = manager()
    sid = created(mgr, user="ann")
    home = sid.rsplit("-", 1)[1]
    other = "n2" if home == "n1" else "n1"
    before = dict(stores[other].items)
    session = mgr.load(sid)
    session.invalidate()
    mgr.save(session)
    return mgr, stores, sid, home, other, before


def test_a_backup_is_not_rehomed_after_the_logout() -> None:
    mgr, stores, sid, home, other, before = logged_out()
    stores[other].items.update({k: v for k, v in before.items() if k.startswith("bak:")})
    stores[home].down = True
    for _ in range(5):
        mgr.health.failed(home, mgr.clock())
    assert mgr.load(sid).load_status == "missing"
    assert not any(k.startswith(sid[:32]) for k in stores[other].items)


def test_optimistic_load_reads_with_cas_tokens_in_one_round_trip() -> None:
    mgr, stores = manager()
    sid = created(mgr, a=1)
    home = stores[sid.rsplit("-", 1)[1]]
    before = dict(home.calls)
    mgr.load(sid)["a"]
    assert home.calls["gets_many"] == before.get("gets_many", 0) + 1
    assert home.calls.get("get_many", 0) == before.get("get_many", 0)
    assert Gets("n1", ("k",)) == Gets("n1", ("k",))


def test_all_mode_holds_the_lock_until_release() -> None:
    mgr, stores = manager(locking_mode="all")
    sid = created(mgr, n=0)
    home = stores[sid.rsplit("-", 1)[1]]
    session = mgr.load(sid)
    assert "lock:" + sid in home.items
    session["n"] = 1
    mgr.save(session)
    assert "lock:" + sid in home.items
    mgr.release(session)
    mgr.release(session)  # idempotent
    assert "lock:" + sid not in home.items
    assert len(mgr.local_locks) == 0


def test_lock_timeout_with_error_policy_raises_and_leaves_the_session_lazy() -> None:
    mgr, stores = manager(locking_mode="all", lock_failure="error", lock_wait_timeout="50ms")
    sid = created(mgr, n=0)
    home = stores[sid.rsplit("-", 1)[1]]
    home.set("lock:" + sid, b"someone else", 5)
    session = mgr.open(sid)
    with pytest.raises(LockTimeout, match="lock_wait_timeout"):
        session["n"]
    assert not session.loaded
    mgr.release(session)
    assert home.items["lock:" + sid][0] == b"someone else"
    assert len(mgr.local_locks) == 0 and mgr.stats["lock_timeout"] == 1


def test_lock_timeout_with_proceed_policy_counts_and_merges() -> None:
    mgr, stores = manager(locking_mode="all", lock_wait_timeout="30ms")
    sid = created(mgr, n=0)
    home = stores[sid.rsplit("-", 1)[1]]
    home.set("lock:" + sid, b"someone else", 5)
    session = mgr.load(sid)
    session["n"] = 1
    assert mgr.save(session).status == "stored"
    mgr.release(session)
    assert mgr.stats["lock_timeout"] == 1
    assert home.items["lock:" + sid][0] == b"someone else"


def test_a_late_release_leaves_the_new_owners_lock() -> None:
    mgr, stores = manager(locking_mode="all")
    sid = created(mgr, n=0)
    home = stores[sid.rsplit("-", 1)[1]]
    session = mgr.load(sid)
    home.items["lock:" + sid] = (b"new owner", 0.0)  # ours expired; another request took it
    mgr.release(session)
    assert home.items["lock:" + sid][0] == b"new owner"
    assert mgr.stats["lock_lost"] == 1


def test_auto_learns_read_only_routes() -> None:
    mgr, stores = manager(locking_mode="auto")
    sid = created(mgr, n=0)
    home = stores[sid.rsplit("-", 1)[1]]
    adds = []
    for _ in range(5):
        session = mgr.open(sid, "GET", "/show")
        session["n"]
        mgr.save(session)
        adds.append(home.calls.get("add", 0))
        mgr.release(session)
    assert adds[:3] == [adds[0], adds[0] + 1, adds[0] + 2]  # locked while learning
    assert adds[3] == adds[4] == adds[2]  # then not
    declared = mgr.open(sid, "GET", "/show", lambda: "write")
    declared["n"]
    assert "lock:" + sid in home.items
    mgr.release(declared)


def test_local_locks_are_reference_counted() -> None:
    locks = LocalLocks()
    assert locks.acquire("s", 1)
    assert not locks.acquire("s", 0.01)
    assert len(locks) == 1
    locks.release("s")
    assert len(locks) == 0


def test_async_local_locks() -> None:
    async def main() -> list[str]:
        locks, order = AsyncLocalLocks(), []

        async def task(name: str) -> None:
            assert await locks.acquire("s", 1)
            order.append(name + " in")
            await asyncio.sleep(0.01)
            order.append(name + " out")
            locks.release("s")

        await asyncio.gather(task("a"), task("b"))
        assert not locks._entries
        assert await locks.acquire("s", 1)
        assert not await locks.acquire("s", 0.01)
        locks.release("s")
        return order

    assert asyncio.run(main()) == ["a in", "a out", "b in", "b out"]


def test_a_backup_node_that_missed_the_logout_does_not_bring_it_back() -> None:
    """The backup node was away during the logout: it kept its backup copy and got no
    tombstone. The primary's tombstone still stops the refill."""
    mgr, stores, sid, home, other, before = logged_out()
    stores[other].items.clear()
    stores[other].items.update(before)  # as it was before the logout: backup copy, no tombstone
    assert ("tomb:" + sid) in stores[home].items and ("bak:" + sid) in stores[other].items
    assert mgr.load(sid).load_status == "missing"
    assert sid not in stores[home].items  # not refilled
