"""session_backup_async: bounded queue, drops counted, drained on close."""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

import pytest

from pymsm import SessionManager
from pymsm.core.records import RecordFormat
from pymsm.stores.memory import MemoryStore
from support.clock import Clock
from support.sticky_memory import cookie_after, put, request, sticky_settings

Manager = SessionManager

NODES = "n1:127.0.0.1:1,n2:127.0.0.1:2"


class GatedStore(MemoryStore):
    """Writes wait until the gate opens: a cache node that stopped answering quickly."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.gate = threading.Event()

    def set(self, key: str, value: bytes, ttl: int, noreply: bool = False) -> None:
        self.gate.wait(10)
        super().set(key, value, ttl, noreply)

    def add(self, key: str, value: bytes, ttl: int) -> bool:
        self.gate.wait(10)
        return super().add(key, value, ttl)


def stored_data(store: MemoryStore, sid: str) -> dict[str, object]:
    record = RecordFormat().decode(store.items[sid][0])
    data: dict[str, object] = json.loads(record.payload)
    return data


def manager(stores: dict[str, MemoryStore], size: int) -> SessionManager:
    return SessionManager(
        stores=stores,
        memcached_nodes=NODES,
        failover_nodes="n1",
        sticky=True,
        route="app1",
        session_backup_async=True,
        backup_queue_size=size,
    )


def test_full_queue_drops_are_counted_and_the_next_save_catches_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stores: dict[str, MemoryStore] = {"n1": GatedStore("n1"), "n2": GatedStore("n2")}
    m = manager(stores, size=2)
    session = m.load(None)
    session["n"] = 0
    m.save(session)
    sid = session.id
    with caplog.at_level(logging.WARNING, logger="pymsm"):
        for i in range(1, 20):
            session = m.load(sid)
            session["n"] = i
            m.save(session)
            assert session.id == sid
    assert m.stats["backup_dropped"] >= 15
    assert "backup queue is full" in caplog.text
    for store in stores.values():
        assert isinstance(store, GatedStore)
        store.gate.set()
    assert m._sticky is not None
    m._sticky.flush()
    # the latest write was dropped; memory still serves it, and the next request writes it
    session = m.load(sid)
    assert session["n"] == 19
    m.save(session)
    m.close()
    assert stored_data(stores["n2"], sid) == {"n": 19}


def test_close_drains_the_queue() -> None:
    stores = {"n1": MemoryStore("n1"), "n2": MemoryStore("n2")}
    m = manager(stores, size=1000)
    sids = []
    for i in range(50):
        session = m.load(None)
        session["i"] = i
        m.save(session)
        sids.append(session.id)
    m.close()
    assert m.stats["backup_dropped"] == 0
    assert [stored_data(stores["n2"], sid)["i"] for sid in sids] == list(range(50))


def test_background_write_failure_is_counted_and_repaired() -> None:
    stores = {"n1": MemoryStore("n1"), "n2": MemoryStore("n2")}
    m = manager(stores, size=10)
    assert m._sticky is not None and m._sticky.writer is not None
    session = m.load(None)
    session["x"] = 1
    m.save(session)
    m._sticky.flush()
    sid = session.id
    session = m.load(sid)
    stores["n2"].fail_next(1)  # the record write in the background
    session["x"] = 2
    m.save(session)
    m._sticky.flush()
    assert m._sticky.writer.failed == 1
    assert stored_data(stores["n2"], sid) == {"x": 1}
    session = m.load(sid)  # the store's validity is behind: memory wins, the write is forced
    assert session["x"] == 2
    m.save(session)
    m.close()
    assert stored_data(stores["n2"], sid) == {"x": 2}


# -- the deletes a save leaves to the writer (core/sticky.Later) ----------------------------------
# On the crossed-over layout of tests/support/sticky_memory: app1 keeps its sessions on n2 (copy
# on n1), app2 on n1 (copy on n2). A node fails after the request's load read it, so the
# request's own flow still takes it for up: only the background writer meets the failure.


def queued(route: str, stores: dict[str, MemoryStore], clock: Clock, **settings: Any) -> Manager:
    return SessionManager(
        stores=stores,  # type: ignore[arg-type]
        clock=clock,
        session_backup_async=True,
        **sticky_settings(route),
        **settings,
    )


def flushed(m: Manager) -> None:
    assert m._sticky is not None
    m._sticky.flush()


def test_a_logout_whose_node_fails_after_the_load_ends_the_session_everywhere(
    stores: dict[str, MemoryStore], clock: Clock
) -> None:
    """The writer makes a logout's deletes as a flow on real answers: the node that failed is
    owed the delete, the backup copy goes (after its tombstone), and the debt is paid once the
    node is back. It used to stop at the first failed write, so the backup copy stayed and the
    logged-out session was served again at once, by every process."""
    app1 = queued("app1", stores, clock)
    other = SessionManager(stores=stores, clock=clock, **sticky_settings("app1"))  # same route
    _, cookie = request(app1, None, put("v", 1))
    flushed(app1)
    assert cookie is not None and request(other, cookie)[0]["v"] == 1  # held in its memory too
    clock.now += 1
    session = app1.open(cookie)
    assert session["v"] == 1
    stores["n2"].down = True  # cut off now
    session.invalidate()
    app1.save(session)
    app1.release(session)
    flushed(app1)
    assert [str(debt.sid) for debt in app1.owed.of("n2")] == [cookie]
    assert "bak:" + cookie not in stores["n1"].items and "tomb:" + cookie in stores["n1"].items
    for m in (app1, other):
        again, _ = request(m, cookie)
        assert again.is_new and dict(again) == {} and again.id != cookie
    stores["n2"].down = False
    clock.now += 11  # past the dead time
    request(app1, None, put("w", 1))  # its background write reaches n2 again
    flushed(app1)
    request(app1, None, put("w", 2))  # and this request's end pays the debt
    assert app1.owed.of("n2") == [] and cookie not in stores["n2"].items
    app1.close()
    other.close()


def test_a_takeover_deletes_the_old_id_once_the_new_one_is_written(
    stores: dict[str, MemoryStore], clock: Clock
) -> None:
    app1 = SessionManager(stores=stores, clock=clock, **sticky_settings("app1"))
    app2 = queued("app2", stores, clock)
    _, old = request(app1, None, put("v", 1))
    clock.now += 1
    _, new = request(app2, old, put("v", 2))
    flushed(app2)
    assert old is not None and new is not None and new.endswith(".app2")
    assert stored_data(stores["n1"], new) == {"v": 2}
    assert old not in stores["n2"].items and "tomb:" + old in stores["n2"].items
    assert "bak:" + old not in stores["n1"].items and "tomb:" + old in stores["n1"].items
    replayed, _ = request(app1, old)  # held in app1's memory: the tombstone validity ends it
    assert replayed.is_new and dict(replayed) == {}
    app1.close()
    app2.close()


def test_with_one_node_a_takeover_deletes_the_old_id_too(clock: Clock) -> None:
    """Ids name no node when there is only one: the writes to it decide all the same."""
    stores = {"default": MemoryStore("default", clock)}  # (an unnamed node's name)
    one = {"memcached_nodes": "127.0.0.1:1", "sticky": True, "session_backup_async": True}
    app1 = SessionManager(stores=stores, clock=clock, route="app1", **one)  # type: ignore[arg-type]
    app2 = SessionManager(stores=stores, clock=clock, route="app2", **one)  # type: ignore[arg-type]
    _, old = request(app1, None, put("v", 1))
    flushed(app1)
    _, new = request(app2, old, put("v", 2))
    flushed(app2)
    assert old is not None and new is not None and new.endswith(".app2") and "-" not in new
    assert old not in stores["default"].items and "tomb:" + old in stores["default"].items
    assert request(app1, old)[0].is_new
    app1.close()
    app2.close()


def test_a_takeover_whose_old_node_fails_after_the_load_moves_the_session_for_good(
    stores: dict[str, MemoryStore], clock: Clock
) -> None:
    """The old id's delete runs once the record under the new id is stored, also when the
    backup copy's write failed: its node is owed the delete, and the backup copy the old id
    left on the new home gets the move's tombstone, so the process still holding the old id
    in memory stops serving it."""
    app1 = SessionManager(stores=stores, clock=clock, **sticky_settings("app1"))
    app2 = queued("app2", stores, clock)
    _, old = request(app1, None, put("v", 1))
    assert old is not None and ".app1" in old
    clock.now += 1
    session = app2.open(old)
    assert session["v"] == 1  # the takeover: its new id names n1 and app2
    stores["n2"].down = True  # the old home, and the new id's backup node
    session["v"] = 2
    app2.save(session)
    app2.release(session)
    new = cookie_after(app2, session, old)
    flushed(app2)
    assert new is not None and new.endswith("-n1.app2")
    assert stored_data(stores["n1"], new) == {"v": 2}
    assert [str(debt.sid) for debt in app2.owed.of("n2")] == [old]
    assert "bak:" + old not in stores["n1"].items and "tomb:" + old in stores["n1"].items
    replayed, _ = request(app1, old)  # app1 holds the old id in memory; its node is down
    assert replayed.is_new and dict(replayed) == {}
    assert request(app2, new)[0]["v"] == 2
    app1.close()
    app2.close()


def test_the_old_id_keeps_its_copies_when_the_write_under_the_new_id_fails(
    stores: dict[str, MemoryStore], clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing stored is lost: a takeover whose new home fails in the background leaves the
    old id's copies in place (the only stored ones) and says so; the process's memory serves
    the session and its next save writes it (forced)."""
    app1 = SessionManager(stores=stores, clock=clock, **sticky_settings("app1"))
    app2 = queued("app2", stores, clock)
    _, old = request(app1, None, put("v", 1))
    assert old is not None
    clock.now += 1
    session = app2.open(old)
    assert session["v"] == 1
    stores["n1"].down = True  # app2's home for the new id
    with caplog.at_level(logging.WARNING, logger="pymsm"):
        app2.save(session)
        app2.release(session)
        flushed(app2)
    assert "keeps its copies (the only stored ones)" in caplog.text
    assert stored_data(stores["n2"], old) == {"v": 1} and "tomb:" + old not in stores["n2"].items
    assert app2.owed.of("n1") == [] and app2.owed.of("n2") == []
    new = cookie_after(app2, session, old)
    session, moved = request(app2, new, put("v", 2))  # memory serves it; n1 down: relocated
    flushed(app2)
    assert session["v"] == 2 and moved is not None and stored_data(stores["n2"], moved)["v"] == 2
    app1.close()
    app2.close()


class AddGate(MemoryStore):
    """New sessions' writes (`add`) wait until the gate opens; deletes and sets do not."""

    def __init__(self, name: str, clock: Clock) -> None:
        super().__init__(name, clock)
        self.gate = threading.Event()
        self.waiting = threading.Event()  # a writer waits at the gate

    def add(self, key: str, value: bytes, ttl: int) -> bool:
        self.waiting.set()
        self.gate.wait(10)
        return super().add(key, value, ttl)


def test_a_logout_is_made_at_once_when_the_queue_is_full(clock: Clock) -> None:
    """A full queue drops a save's writes (the session stays in memory, written by its next
    save), never a logout: its deletes run on the request thread."""
    stores: dict[str, MemoryStore] = {name: AddGate(name, clock) for name in ("n1", "n2")}
    for store in stores.values():
        assert isinstance(store, AddGate)
        store.gate.set()
    app1 = queued("app1", stores, clock, backup_queue_size=1)
    _, cookie = request(app1, None, put("v", 1))
    flushed(app1)
    home = stores["n2"]  # app1's sessions live on n2
    assert isinstance(home, AddGate)
    home.gate.clear()
    home.waiting.clear()
    request(app1, None, put("w", 1))
    assert home.waiting.wait(5)  # the writer waits on this one's add
    request(app1, None, put("w", 2))  # queued: the queue is full
    request(app1, cookie, lambda s: s.invalidate())
    assert app1.stats["backup_dropped"] == 1
    assert cookie is not None and cookie not in stores["n2"].items
    other = SessionManager(stores=stores, clock=clock, **sticky_settings("app1"))
    again, _ = request(other, cookie)
    assert again.is_new and dict(again) == {}
    for store in stores.values():
        assert isinstance(store, AddGate)
        store.gate.set()
    app1.close()
    other.close()
