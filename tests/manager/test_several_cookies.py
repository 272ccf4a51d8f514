"""A client that sends several session cookies (one per path or domain: an app moved from
/shop to /, cookie_domain changed from the host to .example.com). The browser sends them all,
the longest path first, then the oldest; the first may name a session that is gone. Like
Tomcat, pymsm uses the first that names a stored session, so the user is not stuck with a new
session on every request (a login that never holds). Memory stores, every manager and mode."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from pymsm import AsyncSessionManager, SessionManager
from pymsm.cookies import MAX_COOKIES, read_cookie, sent_values
from pymsm.core.session import Session
from pymsm.stores.memory import AsyncMemoryStore, MemoryStore
from support.clock import Clock
from support.sticky_memory import NODES, cookie_after, request, sticky_settings

GONE = "0123456789ABCDEF0123456789ABCDEF-n1"  # well-formed, not stored


def read(session: Session) -> None:
    session.get("user")  # sessions load lazily: the request uses it


def header(*ids: str, name: str = "MSMSESSIONID") -> str:
    return "; ".join(f"{name}={i}" for i in ids)


def managers(clock: Clock, **settings: Any) -> tuple[SessionManager, dict[str, MemoryStore]]:
    stores = {name: MemoryStore(name, clock) for name in ("n1", "n2")}
    settings.setdefault("memcached_nodes", NODES)
    manager = SessionManager(stores=stores, clock=clock, **settings)  # type: ignore[arg-type]
    return manager, stores


def stored(manager: SessionManager, **data: Any) -> str:
    _, cookie = request(manager, None, lambda s: s.update(data))
    assert cookie is not None
    return cookie


# -- reading the header ---------------------------------------------------------------------


def test_read_cookie_keeps_every_distinct_value_in_order() -> None:
    assert read_cookie(None, "MSMSESSIONID") is None
    assert read_cookie("other=1", "MSMSESSIONID") is None
    assert read_cookie('other=1; MSMSESSIONID="a"', "MSMSESSIONID") == "a"
    assert read_cookie(header("a", "a"), "MSMSESSIONID") == "a"  # the same id twice is one
    assert read_cookie(header("a", "b", "a"), "MSMSESSIONID") == ("a", "b")
    assert read_cookie(header("", "b"), "MSMSESSIONID") == "b"
    assert read_cookie(header(""), "MSMSESSIONID") is None
    many = [f"v{i}" for i in range(10)]  # a forged header cannot make a request read more
    assert read_cookie(header(*many), "MSMSESSIONID") == tuple(many[:MAX_COOKIES])
    assert sent_values([]) is None and sent_values(["x", "", "y"]) == ("x", "y")


# -- non-sticky -----------------------------------------------------------------------------


def test_the_first_cookie_naming_a_stored_session_wins(
    caplog: pytest.LogCaptureFixture,
) -> None:
    manager, _ = managers(Clock())
    good = stored(manager, user="ann")
    sent = manager.read_cookie(header(GONE, good))
    with caplog.at_level(logging.INFO, logger="pymsm"):
        session, cookie = request(manager, sent, read)
    assert session["user"] == "ann" and session.id == good
    assert cookie == sent  # no Set-Cookie: the client keeps what it has
    assert manager.stats["cookie_passed_over"] == 1
    assert "several session cookies" in caplog.text and GONE[:6] in caplog.text
    other = stored(manager, user="bob")
    session, _ = request(manager, manager.read_cookie(header(other, good)), read)
    assert session["user"] == "bob"  # both stored: the first (the longest path) wins


def test_malformed_cookies_are_skipped_and_none_stored_gives_a_new_session() -> None:
    manager, _ = managers(Clock())
    good = stored(manager, user="ann")
    session, _ = request(manager, manager.read_cookie(header("../etc", good)), read)
    assert session["user"] == "ann"
    sent = manager.read_cookie(header(GONE, GONE.replace("0", "F")))
    session, cookie = request(manager, sent, lambda s: s.__setitem__("user", "new"))
    assert session.id not in (GONE, GONE.replace("0", "F")) and cookie == session.id
    assert request(manager, cookie, read)[0]["user"] == "new"


def test_logout_of_the_session_in_the_second_cookie_deletes_that_cookie() -> None:
    manager, _ = managers(Clock())
    good = stored(manager, user="ann")
    sent = manager.read_cookie(header(GONE, good))
    session = manager.open(sent)
    session.invalidate()
    manager.save(session)
    manager.release(session)
    assert "Max-Age=0" in (manager.set_cookie(session, sent) or "")
    assert request(manager, good, read)[0].is_new


def test_a_lock_taken_for_a_passed_over_cookie_is_released() -> None:
    manager, stores = managers(Clock(), locking_mode="all")
    good = stored(manager, user="ann")
    session = manager.open(manager.read_cookie(header(GONE, good)), "POST", "/")
    assert session["user"] == "ann"
    locks = [k for s in stores.values() for k in s.items if k.startswith("lock:")]
    assert locks == [f"lock:{good}"]  # the passed-over id's lock is gone, the session's held
    manager.save(session)
    manager.release(session)
    assert not [k for s in stores.values() for k in s.items if k.startswith("lock:")]


def test_async_manager_tries_the_cookies_in_turn() -> None:
    clock = Clock()
    stores = {name: MemoryStore(name, clock) for name in ("n1", "n2")}
    sync = SessionManager(memcached_nodes=NODES, stores=stores, clock=clock)  # type: ignore[arg-type]
    good = stored(sync, user="ann")
    manager = AsyncSessionManager(
        memcached_nodes=NODES,
        stores={n: AsyncMemoryStore(s) for n, s in stores.items()},  # type: ignore[arg-type]
        clock=clock,
        locking_mode="all",
    )

    async def scenario() -> None:
        sent = manager.read_cookie(header(GONE, good))
        session = await manager.load(sent, "POST", "/")
        assert session["user"] == "ann" and manager.set_cookie(session, sent) is None
        await manager.save(session)
        await manager.release(session)
        assert not [k for s in stores.values() for k in s.items if k.startswith("lock:")]

    asyncio.run(scenario())


# -- sticky ---------------------------------------------------------------------------------


def test_sticky_tries_the_cookies_in_turn() -> None:
    clock = Clock()
    stores = {name: MemoryStore(name, clock) for name in ("n1", "n2")}
    app1 = SessionManager(stores=stores, clock=clock, **sticky_settings("app1"))  # type: ignore[arg-type]
    good = stored(app1, user="ann")
    gone = GONE.replace("-n1", "-n2.app1")
    sent = app1.read_cookie(header(gone, good))
    session, cookie = request(app1, sent, read)
    assert session["user"] == "ann" and cookie == sent
    assert app1.stats["cookie_passed_over"] == 1
    # another route takes the session over from the second cookie, and says so in a cookie
    app2 = SessionManager(stores=stores, clock=clock, **sticky_settings("app2"))  # type: ignore[arg-type]
    session, cookie = request(app2, app2.read_cookie(header(gone, good)), read)
    assert session["user"] == "ann" and cookie is not None and cookie.endswith(".app2")


def test_async_sticky_tries_the_cookies_in_turn() -> None:
    clock = Clock()
    stores = {name: MemoryStore(name, clock) for name in ("n1", "n2")}
    async_stores = {n: AsyncMemoryStore(s) for n, s in stores.items()}
    app1 = AsyncSessionManager(stores=async_stores, clock=clock, **sticky_settings("app1"))  # type: ignore[arg-type]
    gone = GONE.replace("-n1", "-n2.app1")

    async def scenario() -> None:
        first = await app1.load(None)
        first["user"] = "ann"
        await app1.save(first)
        sent = app1.read_cookie(header(gone, first.id))
        session: Session = await app1.load(sent)
        assert session["user"] == "ann" and cookie_after(app1, session, sent) == sent  # type: ignore[arg-type]
        await app1.close()

    asyncio.run(scenario())
