"""What the sync and async sticky tests on memory stores share: two hosts crossed over (app1
keeps its sessions on n2 and lists n1 as failover node, app2 the other way round), the memory
stores and their clock (fixtures `clock` and `stores`, registered in tests/conftest.py; a test
module's own `clock` fixture overrides this one), and helpers that read what the stores hold."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from pymsm.core.records import RecordFormat
from pymsm.core.session import Session
from pymsm.manager import SessionManager, _Base
from pymsm.stores.memory import MemoryStore
from support.clock import Clock

NODES = "n1:127.0.0.1:1,n2:127.0.0.1:2"
FAILOVER = {"app1": "n1", "app2": "n2"}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def stores(clock: Clock) -> dict[str, MemoryStore]:
    """The nodes n1 and n2 as memory stores on `clock`."""
    return {name: MemoryStore(name, clock) for name in ("n1", "n2")}


def sticky_settings(route: str) -> dict[str, Any]:
    """The crossed-over layout's settings for the app node `route`."""
    return {
        "memcached_nodes": NODES,
        "failover_nodes": FAILOVER.get(route, ""),
        "sticky": True,
        "route": route,
        "max_inactive_interval": 600,
    }


def cookie_after(manager: _Base, session: Session, cookie: str | None) -> str | None:
    """The cookie the client holds once the response (with its Set-Cookie, if any) arrived."""
    header = manager.set_cookie(session, cookie)
    if header is not None:
        cookie = header.split(";")[0].partition("=")[2] or None
    return cookie


def request(
    manager: SessionManager, cookie: str | None, work: Callable[[Session], Any] = lambda s: None
) -> tuple[Session, str | None]:
    """One request as the adapters make it: load, work, save, release (a process pays the
    deletes it owes there); the session and the cookie the client holds afterwards. The
    non-sticky memory tests use it too."""
    session = manager.open(cookie)
    work(session)
    manager.save(session)
    manager.release(session)
    return session, cookie_after(manager, session, cookie)


def put(key: str, value: Any) -> Callable[[Session], None]:
    return lambda s: s.__setitem__(key, value)


def calls(stores: dict[str, MemoryStore]) -> dict[str, int]:
    """Operations by name on all stores since the last call (round trips)."""
    total: dict[str, int] = {}
    for store in stores.values():
        for op, n in store.calls.items():
            total[op] = total.get(op, 0) + n
        store.calls.clear()
    return total


def stored_data(store: MemoryStore, sid: str) -> dict[str, Any]:
    """The attributes of the record stored under `sid` (JSON codec)."""
    data: dict[str, Any] = json.loads(RecordFormat().decode(store.items[sid][0]).payload)
    return data
