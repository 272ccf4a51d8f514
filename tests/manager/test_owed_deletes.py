"""Deletes a node missed while it was cut off, made by the process that owes them once the node
is back (core/owed.py): the ids a partition leaves behind stop loading (invariant 6), and a
session that came back to its old id is left alone. Memory stores; the partition against real
memcached is in tests/integration/test_integration_failover.py."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from pymsm import AsyncSessionManager, SessionManager
from pymsm.core import owed
from pymsm.core.flows import Keys
from pymsm.core.ids import SessionId
from pymsm.core.ops import DeleteIf, Op
from pymsm.core.owed import Debt
from pymsm.core.records import TOMBSTONE
from pymsm.core.session import Session
from pymsm.stores.memory import AsyncMemoryStore, MemoryStore
from support.clock import Clock
from support.flows import run_recorded
from support.sticky_memory import put, request, sticky_settings


@pytest.fixture
def clock() -> Clock:
    return Clock()


def nodes(clock: Clock, count: int) -> tuple[str, dict[str, MemoryStore]]:
    stores = {f"n{i}": MemoryStore(f"n{i}", clock=clock) for i in range(1, count + 1)}
    return ",".join(f"n{i}:127.0.0.1:{i}" for i in range(1, count + 1)), stores


def app(clock: Clock, spec: str, stores: dict[str, MemoryStore], **settings: Any) -> SessionManager:
    settings.setdefault("max_inactive_interval", 600)
    return SessionManager(memcached_nodes=spec, stores=stores, clock=clock, **settings)  # type: ignore[arg-type]


def on_node(manager: SessionManager, node: str) -> str:
    """A stored session whose id names `node` (new sessions land on a random live node)."""
    for _ in range(200):
        _, cookie = request(manager, None, put("other", 1))
        assert cookie is not None
        if SessionId.parse(cookie).node == node:
            return cookie
    raise AssertionError(f"no new session landed on {node}")


def ann_and_a_neighbour(manager: SessionManager) -> tuple[str, str, str]:
    """A stored session (its cookie), its node, and another session on that node, whose
    requests make a later request reach the node."""
    _, cookie = request(manager, None, put("user", "ann"))
    assert cookie is not None
    home = SessionId.parse(cookie).node
    assert home is not None
    return cookie, home, on_node(manager, home)


def record_key(cookie: str) -> str:
    return Keys.of("", SessionId.parse(cookie)).record


def test_the_id_a_session_moved_from_stops_loading_once_its_node_is_back(clock: Clock) -> None:
    spec, stores = nodes(clock, 3)
    a = app(clock, spec, stores)
    # (the neighbour: a session that makes a later request touch the node)
    old, home, neighbour = ann_and_a_neighbour(a)
    clock.now += 1  # later: copies written before a move are told by their time
    stores[home].down = True  # cut off: it keeps its data
    moved, new = request(a, old, lambda s: s["user"])
    assert new != old and moved.load_status == "relocated"
    assert [d.sid for d in a.owed.of(home)] == [SessionId.parse(old)]
    stores[home].down = False
    clock.now += 11  # past the dead time
    assert record_key(old) in stores[home].items  # back with the old copy
    replayed, _ = request(app(clock, spec, stores), old)  # another process, before the settle
    assert replayed["user"] == "ann"  # the gap this closes (design.md)
    request(a, neighbour, lambda s: s["other"])  # touches the node: it is back, a's debt paid
    assert record_key(old) not in stores[home].items
    validity = stores[home].items["validity:" + record_key(old)][0]
    assert validity == TOMBSTONE.encode()
    assert a.owed.of(home) == [] and a.stats["owed_settled"] == 1
    replayed, _ = request(app(clock, spec, stores), old)
    assert replayed.is_new and dict(replayed) == {}
    session, _ = request(a, new, lambda s: s["user"])
    assert session["user"] == "ann"  # the session itself lives on


def test_a_copy_written_under_the_old_id_after_the_move_is_left_alone(clock: Clock) -> None:
    """The session came back to its old id (ids keep their base when they move): that copy,
    written after the move, is the live one."""
    spec, stores = nodes(clock, 3)
    a = app(clock, spec, stores)
    old, home, neighbour = ann_and_a_neighbour(a)
    stores[home].down = True
    request(a, old, lambda s: s["user"])
    stores[home].down = False
    clock.now += 11
    key = record_key(old)
    later = a.format.encode(1, 0, int(clock.now * 1000), 600, b'{"user":"bob"}')
    stores[home].set(key, later, 900)  # the session, back under its old id, written now
    request(a, neighbour, lambda s: s["other"])
    assert stores[home].items[key][0] == later
    assert a.owed.of(home) == [] and a.stats["owed_settled"] == 1


def test_a_write_between_the_read_and_the_delete_survives(clock: Clock) -> None:
    spec, stores = nodes(clock, 3)
    a = app(clock, spec, stores)
    sid = SessionId.parse("0123456789ABCDEF0123456789ABCDEF-n1")
    key = record_key(str(sid))
    old = a.format.encode(1, 0, 1000, 600, b"{}")
    stores["n1"].set(key, old, 900)
    newer = a.format.encode(1, 0, 3000, 600, b'{"v":1}')

    def racing(op: Op) -> Any:
        if isinstance(op, DeleteIf):
            stores["n1"].set(key, newer, 900)  # another process writes it right now
        return a._execute(op)

    debt = Debt(sid, 2000, ended=False)
    _, left = run_recorded(owed.settle(a.context(), "n1", [debt]), racing)
    assert left == [] and stores["n1"].items[key][0] == newer


def test_a_node_that_fails_again_keeps_its_debts(clock: Clock) -> None:
    spec, stores = nodes(clock, 3)
    a = app(clock, spec, stores)
    debts = [Debt(SessionId.parse(f"{i:032X}-n1"), 1000, ended=True) for i in range(3)]
    stores["n1"].down = True
    _, left = run_recorded(owed.settle(a.context(), "n1", debts), a._execute)
    assert left == debts


@pytest.mark.parametrize("seen_down", [False, True], ids=["refused", "known-dead"])
def test_a_logout_the_backup_node_missed_is_made_there_once_it_is_back(
    clock: Clock, seen_down: bool
) -> None:
    """Two nodes: the logout's tombstone and backup delete cannot reach the cut-off node, so if
    the primary died after it came back, its copy would bring the session back ("What a second
    failure can still do" in design.md). The process that logged out pays that debt first,
    whether the node refused the delete or was known to be dead and skipped."""
    spec, stores = nodes(clock, 2)
    a = app(clock, spec, stores)
    _, cookie = request(a, None, put("user", "ann"))
    assert cookie is not None
    sid = SessionId.parse(cookie)
    primary = sid.node
    backup = "n2" if primary == "n1" else "n1"
    keys = Keys.of("", sid)
    neighbour = on_node(a, backup)
    stores[backup].down = True
    if seen_down:  # this process saw it fail twice (marked dead): the logout skips it
        a.health.failed(backup, clock.now)
        a.health.failed(backup, clock.now)
    request(a, cookie, lambda s: s.invalidate())
    assert [(d.sid, d.backup, d.ended) for d in a.owed.of(backup)] == [(sid, True, True)]
    stores[backup].down = False
    clock.now += 11
    assert keys.backup in stores[backup].items  # it missed the logout
    request(a, neighbour, lambda s: s["other"])
    assert keys.backup not in stores[backup].items and keys.tomb in stores[backup].items
    stores[str(primary)].down = True  # the primary dies: the old cookie finds nothing
    replayed, _ = request(app(clock, spec, stores), cookie)
    assert replayed.is_new and dict(replayed) == {}


def test_sticky_a_logout_its_home_node_missed_reaches_the_processes_holding_it(
    stores: dict[str, MemoryStore], clock: Clock
) -> None:
    """p0 logs out while the session's node is cut off; p1 holds the session in memory. Once
    the node is back and p0 paid its debt, p1 sees the tombstone validity there."""
    p0, p1 = (SessionManager(stores=stores, clock=clock, **sticky_settings("app1")) for _ in "ab")
    _, cookie = request(p0, None, put("user", "ann"))
    assert cookie is not None and cookie.endswith("-n2.app1")
    held, _ = request(p1, cookie, lambda s: s["user"])
    assert held.load_status in ("found", "local")
    _, neighbour = request(p0, None, put("other", 1))  # app1 keeps its sessions on n2 too
    assert neighbour is not None
    stores["n2"].down = True
    request(p0, cookie, lambda s: s.invalidate())
    stores["n2"].down = False
    clock.now += 11
    assert record_key(cookie) in stores["n2"].items  # it missed the logout
    request(p0, neighbour, lambda s: s["other"])
    assert record_key(cookie) not in stores["n2"].items
    replayed, _ = request(p1, cookie)
    assert replayed.is_new and dict(replayed) == {}


def test_the_async_manager_pays_its_debts_when_a_request_ends(clock: Clock) -> None:
    spec, stores = nodes(clock, 3)
    sync = app(clock, spec, stores)
    old, home, neighbour = ann_and_a_neighbour(sync)
    a = AsyncSessionManager(
        memcached_nodes=spec,
        stores={n: AsyncMemoryStore(s) for n, s in stores.items()},  # type: ignore[arg-type]
        clock=clock,
        max_inactive_interval=600,
    )

    async def serve(cookie: str) -> Session:
        session = await a.load(cookie)
        await a.save(session)
        await a.release(session)
        return session

    clock.now += 1
    stores[home].down = True
    assert asyncio.run(serve(old)).load_status == "relocated"
    stores[home].down = False
    clock.now += 11
    assert record_key(old) in stores[home].items
    asyncio.run(serve(neighbour))
    assert record_key(old) not in stores[home].items and a.owed.of(home) == []


def test_closing_with_deletes_owed_says_which_node_to_restart_empty(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """The debts live in the process: an operator shutting it down before the node is back must
    learn which node still holds ids that should be gone."""
    spec, stores = nodes(clock, 3)
    a = app(clock, spec, stores)
    old, home, _ = ann_and_a_neighbour(a)
    with caplog.at_level(logging.WARNING, logger="pymsm"):
        a.close()
        assert not [r for r in caplog.records if "still owed" in r.getMessage()]
        stores[home].down = True
        request(a, old, lambda s: s["user"])  # moves the session: the node is owed a delete
        caplog.clear()
        a.close()
    warnings = [r.getMessage() for r in caplog.records if "still owed" in r.getMessage()]
    assert len(warnings) == 1 and f"1 delete still owed to cache node {home}" in warnings[0]
    assert f"restart {home} empty" in warnings[0]


def test_closing_pays_what_a_node_that_answers_again_is_owed(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """The node came back but no request reached it since (the debts are due only once an
    operation on it succeeded): `close` still tries each owed node once before the debts go
    with the process, so a shutdown after the partition healed leaves no old id behind."""
    spec, stores = nodes(clock, 3)
    a = app(clock, spec, stores)
    old, home, _ = ann_and_a_neighbour(a)
    clock.now += 1
    stores[home].down = True
    request(a, old, lambda s: s["user"])  # moves the session: the node is owed a delete
    assert [str(d.sid) for d in a.owed.of(home)] == [old]
    stores[home].down = False  # back, and still marked failed in this process
    with caplog.at_level(logging.WARNING, logger="pymsm"):
        a.close()
    assert a.owed.of(home) == [] and a.stats["owed_settled"] == 1
    assert record_key(old) not in stores[home].items
    assert not [r for r in caplog.records if "still owed" in r.getMessage()]


def test_async_closing_pays_what_a_node_that_answers_again_is_owed(clock: Clock) -> None:
    spec, stores = nodes(clock, 3)
    a = AsyncSessionManager(
        memcached_nodes=spec,
        stores={name: AsyncMemoryStore(store) for name, store in stores.items()},  # type: ignore[arg-type]
        clock=clock,
        max_inactive_interval=600,
    )

    async def scenario() -> str:
        session = await a.load(None)
        session["user"] = "ann"
        await a.save(session)
        await a.release(session)
        old, home = session.id, str(session.sid.node)
        clock.now += 1
        stores[home].down = True
        moved = await a.load(old)  # re-homed: the node is owed a delete
        assert moved["user"] == "ann" and moved.id != old
        await a.save(moved)
        await a.release(moved)
        stores[home].down = False
        await a.close()
        return old

    old = asyncio.run(scenario())
    home = str(SessionId.parse(old).node)
    assert a.owed.of(home) == [] and record_key(old) not in stores[home].items
