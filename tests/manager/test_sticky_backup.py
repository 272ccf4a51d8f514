"""session_backup_async: bounded queue, drops counted, drained on close."""

from __future__ import annotations

import json
import logging
import threading

import pytest

from pymsm import SessionManager
from pymsm.core.records import RecordFormat
from pymsm.stores.memory import MemoryStore

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
