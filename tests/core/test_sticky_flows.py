"""Sticky flows on memory stores: two hosts crossed over (app1 keeps its sessions on n2 and
lists n1 as failover node, app2 the other way round)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import pytest

from pymsm import SessionManager
from pymsm.core import sticky
from pymsm.core.session import Session
from pymsm.stores.memory import MemoryStore
from support.clock import Clock
from support.flows import run_recorded
from support.sticky_memory import calls, put, request, sticky_settings


def app(
    route: str, stores: dict[str, MemoryStore], clock: Clock, **settings: Any
) -> SessionManager:
    return SessionManager(stores=stores, clock=clock, **sticky_settings(route), **settings)


def keys(store: MemoryStore) -> set[str]:
    return {k for k in store.items if not k.startswith("validity:")}


def test_new_session_carries_route_and_lives_on_the_other_hosts_node(
    stores: dict[str, MemoryStore], clock: Clock
) -> None:
    app1 = app("app1", stores, clock)
    _, cookie = request(app1, None, put("user", "ann"))
    assert cookie is not None and cookie.endswith("-n2.app1")
    assert keys(stores["n2"]) == {cookie}
    # the backup copy on the next node, as in non-sticky mode (sticky.md, "Backup copies")
    assert keys(stores["n1"]) == {f"bak:{cookie}", f"bak:validity:{cookie}"}


def test_unchanged_request_reads_only_the_validity_and_writes_no_record(
    stores: dict[str, MemoryStore], clock: Clock
) -> None:
    app1 = app("app1", stores, clock)
    _, cookie = request(app1, None, put("user", "ann"))
    calls(stores)
    clock.now += 5
    session, again = request(app1, cookie, lambda s: s["user"])
    assert again == cookie and session.load_status == "local"
    assert calls(stores) == {"get_many": 1}  # validity read; its stamp is fresh enough
    clock.now += 10  # past the access time resolution (1% of 600 s)
    request(app1, cookie, lambda s: s["user"])
    assert calls(stores) == {"get_many": 1, "set": 1}  # validity read, validity write


def test_access_time_resolution_zero_writes_the_validity_every_request(
    stores: dict[str, MemoryStore], clock: Clock
) -> None:
    app1 = app("app1", stores, clock, access_time_resolution=0)
    _, cookie = request(app1, None, put("user", "ann"))
    calls(stores)
    clock.now += 1
    request(app1, cookie, lambda s: s["user"])
    assert calls(stores) == {"get_many": 1, "set": 1}


def test_validity_refresh_skips_fresh_validity_writes(
    stores: dict[str, MemoryStore], clock: Clock
) -> None:
    app1 = app("app1", stores, clock)
    _, cookie = request(app1, None, put("user", "ann"))
    calls(stores)
    clock.now += 5  # under 1% of the 600 s idle timeout: the stored validity is fresh enough
    request(app1, cookie, lambda s: s["user"])
    assert calls(stores) == {"get_many": 1}
    clock.now += 5  # now it is 10 s old: rewritten (no record write)
    request(app1, cookie, lambda s: s["user"])
    assert calls(stores) == {"get_many": 1, "set": 1}


def test_takeover_by_another_route_keeps_data_and_deletes_old_key(
    stores: dict[str, MemoryStore], clock: Clock
) -> None:
    app1, app2 = app("app1", stores, clock), app("app2", stores, clock)
    _, cookie = request(app1, None, put("user", "ann"))
    assert cookie is not None
    clock.now += 1
    session, taken = request(app2, cookie, lambda s: s["user"])
    assert session["user"] == "ann" and session.load_status == "taken_over"
    assert taken is not None and taken.endswith("-n1.app2")  # n2 is app2's failover node
    assert taken.split("-")[0] == cookie.split("-")[0]  # same base: takeover keeps the id
    assert cookie not in stores["n2"].items and taken in stores["n1"].items
    # app1 still holds the old id in memory, but the store says it was deleted: not served
    session, _ = request(app1, cookie, lambda s: s.get("user"))
    assert session.is_new and session.get("user") is None
    assert app1.stats["load_invalidated"] == 1


def test_two_processes_behind_one_route_never_serve_stale_data(
    stores: dict[str, MemoryStore], clock: Clock
) -> None:
    a, b = app("app1", stores, clock), app("app1", stores, clock)
    _, cookie = request(a, None, put("n", 0))
    for i in range(1, 8):
        manager = (b, a)[i % 2]
        session, cookie = request(manager, cookie, lambda s: s.__setitem__("n", s["n"] + 1))
        assert session["n"] == i
    # no time passes between requests: stamps still order the writes
    session, _ = request(b, cookie, lambda s: s["n"])
    assert session["n"] == 7


def test_logout_elsewhere_is_never_served_again(
    stores: dict[str, MemoryStore], clock: Clock
) -> None:
    a, b = app("app1", stores, clock), app("app1", stores, clock)
    _, cookie = request(a, None, put("user", "ann"))
    request(b, cookie, lambda s: s.invalidate())
    session, _ = request(a, cookie, lambda s: s.get("user"))
    assert session.is_new and session.get("user") is None


def test_dead_node_relocates_to_the_failover_node_and_back(
    stores: dict[str, MemoryStore], clock: Clock
) -> None:
    app1 = app("app1", stores, clock)
    _, cookie = request(app1, None, put("user", "ann"))
    stores["n2"].down = True
    clock.now += 1
    session, moved = request(app1, cookie, lambda s: s["user"])
    assert session["user"] == "ann"
    assert moved is not None and moved.endswith("-n1.app1") and moved in stores["n1"].items
    stores["n2"].down = False
    clock.now += 11  # past node_dead_timeout: n2 is up again
    session, back = request(app1, moved, lambda s: s["user"])
    assert session["user"] == "ann" and back is not None and back.endswith("-n2.app1")
    assert back in stores["n2"].items and moved not in stores["n1"].items


def test_all_nodes_down_keeps_the_id_and_writes_once_a_node_is_back(
    stores: dict[str, MemoryStore], clock: Clock
) -> None:
    app1 = app("app1", stores, clock)
    _, cookie = request(app1, None, put("n", 1))
    for store in stores.values():
        store.down = True
    for i in range(2, 5):
        clock.now += 1
        session, same = request(app1, cookie, lambda s: s.__setitem__("n", s["n"] + 1))
        assert same == cookie and session["n"] == i
    for store in stores.values():
        store.down = False
        store.items.clear()  # restarted empty
    clock.now += 11
    session, same = request(app1, cookie, lambda s: s["n"])
    assert session["n"] == 4 and same == cookie
    assert cookie in stores["n2"].items  # re-homed under its own id


def test_new_session_while_all_nodes_are_down_is_kept_in_memory(
    stores: dict[str, MemoryStore], clock: Clock
) -> None:
    app1 = app("app1", stores, clock)
    for store in stores.values():
        store.down = True
    _, cookie = request(app1, None, put("user", "ann"))
    assert cookie is not None
    for store in stores.values():
        store.down = False
    clock.now += 11
    session, same = request(app1, cookie, lambda s: s["user"])
    assert session["user"] == "ann" and same is not None
    assert same in stores["n1"].items or same in stores["n2"].items


def test_node_restarted_empty_is_refilled_from_memory(
    stores: dict[str, MemoryStore], clock: Clock
) -> None:
    app1 = app("app1", stores, clock)
    _, cookie = request(app1, None, put("user", "ann"))
    stores["n2"].items.clear()
    session, same = request(app1, cookie, lambda s: s["user"])
    assert session["user"] == "ann" and same == cookie and cookie in stores["n2"].items


def test_reads_alone_keep_the_stored_copy_alive(
    stores: dict[str, MemoryStore], clock: Clock
) -> None:
    app1 = app("app1", stores, clock)
    _, cookie = request(app1, None, put("user", "ann"))
    assert cookie is not None
    for _ in range(10):  # 10 x 400 s = 6.7 idle timeouts, only reads
        clock.now += 400
        session, _ = request(app1, cookie, lambda s: s["user"])
        assert session.load_status == "local"
        assert cookie in stores["n2"].items and "validity:" + cookie in stores["n2"].items
    # the app process dies: the other app finds it in the store
    session, _ = request(app("app2", stores, clock), cookie, lambda s: s["user"])
    assert session["user"] == "ann"


def test_idle_timeout_ends_the_local_copy(stores: dict[str, MemoryStore], clock: Clock) -> None:
    app1 = app("app1", stores, clock)
    _, cookie = request(app1, None, put("user", "ann"))
    clock.now += 601
    session, _ = request(app1, cookie, lambda s: s.get("user"))
    assert session.is_new and session.get("user") is None
    assert app1.stats["load_expired"] == 1


def test_another_process_refreshing_the_session_keeps_it_alive_here(
    stores: dict[str, MemoryStore], clock: Clock
) -> None:
    a, b = app("app1", stores, clock), app("app1", stores, clock)
    _, cookie = request(a, None, put("user", "ann"))
    for _ in range(3):  # b serves it for 900 s; a's own copy looks idle but is not
        clock.now += 300
        request(b, cookie, lambda s: s["user"])
    session, _ = request(a, cookie, lambda s: s["user"])
    assert session["user"] == "ann" and session.load_status == "found"


def test_unknown_id_is_not_adopted(stores: dict[str, MemoryStore], clock: Clock) -> None:
    app1 = app("app1", stores, clock)
    forged = "0" * 32 + "-n2.app1"
    session, cookie = request(app1, forged, put("x", 1))
    assert session.id != forged and cookie != forged


def read(session: Session) -> None:
    session.get("user")  # loads the lazy session


def test_a_session_no_process_holds_survives_its_nodes_death(
    stores: dict[str, MemoryStore], clock: Clock
) -> None:
    """Invariant 1 in sticky mode: memory is no second copy for a session the process evicted
    or lost in a restart; the backup copy on the next node is."""
    _, cookie = request(app("app1", stores, clock), None, put("user", "ann"))
    assert cookie is not None and cookie.endswith("-n2.app1")
    restarted = app("app1", stores, clock)  # the process restarted: nothing in memory
    stores["n2"].down = True
    stores["n2"].items.clear()  # and n2 died
    session, moved = request(restarted, cookie, read)
    assert dict(session) == {"user": "ann"}
    assert moved is not None and moved.endswith("-n1.app1")


@pytest.mark.parametrize("goes", ["dies", "restarts empty"])
def test_another_process_s_write_is_seen_when_the_home_node_goes(
    stores: dict[str, MemoryStore], clock: Clock, goes: str
) -> None:
    """Two processes behind one route: p1 cached the session, p0 changed it, then its node
    died or restarted empty (it answers without the validity). p1 must not serve its older
    copy (invariant 5): the backup copy's stamp says there is a newer one."""
    p0, p1 = app("app1", stores, clock), app("app1", stores, clock)
    _, cookie = request(p1, None, put("n", 0))
    clock.now += 1
    _, cookie = request(p0, cookie, put("n", 1))
    if goes == "dies":
        stores["n2"].down = True
    else:
        stores["n2"].items.clear()
    clock.now += 1
    session, _ = request(p1, cookie, read)
    assert session["n"] == 1


def test_a_logout_elsewhere_is_seen_when_the_home_node_dies(
    stores: dict[str, MemoryStore], clock: Clock
) -> None:
    """p1 holds the session in memory; p0 logs it out; then the home node dies. The logout's
    tombstone on the backup node ends the session in p1 too (invariant 6)."""
    p0, p1 = app("app1", stores, clock), app("app1", stores, clock)
    _, cookie = request(p1, None, put("user", "ann"))
    assert cookie is not None
    request(p0, cookie, lambda s: s.invalidate())
    stores["n2"].down = True
    session, _ = request(p1, cookie, read)
    assert session.is_new and dict(session) == {}


def taken_over(
    owner: SessionManager, taker: SessionManager, clock: Clock, ids: tuple[str, str]
) -> tuple[str, str]:
    """ann's session stored by `owner`, then, a second later, a request of hers to `taker`,
    which takes it over: her id before and after, checked to end as `ids` say."""
    _, first = request(owner, None, put("user", "ann"))
    assert first is not None and first.endswith(ids[0])
    clock.now += 1
    _, taken = request(taker, first, read)
    assert taken is not None and taken.endswith(ids[1])
    return first, taken


def test_a_session_taken_back_under_its_old_id_keeps_its_backup(
    stores: dict[str, MemoryStore], clock: Clock
) -> None:
    """Takeovers keep the id's base, so app2 taking back what app1 took over writes the id it
    started with: the moved-away id got no logout tombstone, so a failover still finds it."""
    app1, app2 = app("app1", stores, clock), app("app2", stores, clock)
    first, taken = taken_over(app2, app1, clock, ("-n1.app2", "-n2.app1"))
    _, back = request(app2, taken, read)
    assert back == first
    stores["n1"].down = True
    session, _ = request(app("app2", stores, clock), back, read)  # without it in memory
    assert dict(session) == {"user": "ann"}


def test_sticky_cache_is_bounded(stores: dict[str, MemoryStore], clock: Clock) -> None:
    app1 = app("app1", stores, clock, sticky_cache_size=3)
    cookies = [request(app1, None, put("i", i))[1] for i in range(5)]
    assert app1._sticky is not None and len(app1._sticky.cache) == 3
    assert app1.stats["sticky_evicted"] == 2
    session, _ = request(app1, cookies[0], lambda s: s["i"])  # evicted: read from the store
    assert session["i"] == 0 and session.load_status == "found"


@pytest.mark.parametrize("later", [3, 15, 400], ids=["fresh", "validity due", "half-lived"])
def test_settled_answers_exactly_what_the_save_flow_would(
    stores: dict[str, MemoryStore], clock: Clock, monkeypatch: pytest.MonkeyPatch, later: int
) -> None:
    """`sticky.settled` is the drivers' shortcut past the save flow. Compared with the flow run
    without it (its own first step patched out), on a copy of the cached entry: when the
    shortcut answers, the flow answers the same, moves the entry's access time the same way
    and writes nothing; it answers only for an unchanged session whose validity is fresh."""
    app1 = app("app1", stores, clock)
    assert app1._sticky is not None

    def loaded(work: Callable[[Session], Any]) -> Session:
        _, cookie = request(app1, None, lambda s: s.update(user="ann", items=[1]))
        session = app1.open(cookie)
        work(session)
        return session

    states = {
        "unchanged": loaded(lambda s: s["user"]),
        "mutable read": loaded(lambda s: s["items"]),
        "changed": loaded(put("user", "bob")),
        "rotated": loaded(lambda s: s.rotate_id()),
        "invalidated": loaded(lambda s: s.invalidate()),
        "new, written": app1.open(None),
    }
    states["new, written"]["x"] = 1
    clock.now += later
    shortcut = set()
    for name, session in states.items():
        ctx = app1.save_context(session)
        entry = app1._sticky.cache.get(str(session.sid))
        copy = None if entry is None else dataclasses.replace(entry)
        quick = sticky.settled(ctx, session, entry)
        with monkeypatch.context() as patched:
            patched.setattr(sticky, "settled", lambda *args: None)
            ops, stored = run_recorded(sticky.save(ctx, session, copy), app1._execute)
        if quick is not None:
            shortcut.add(name)
            assert quick.entry is entry and stored.entry is copy, name
            assert (quick.saved.status, ops) == (stored.saved.status, []), name
            assert entry is not None and copy is not None
            assert entry.last_accessed == copy.last_accessed == session.this_accessed
    assert shortcut == ({"unchanged"} if later == 3 else set())


@pytest.mark.parametrize("end", ["logout", "login"])
def test_a_takeover_and_a_login_or_logout_in_one_request_end_the_id_it_took_over(
    stores: dict[str, MemoryStore], clock: Clock, end: str
) -> None:
    """app1 takes over app2's session and, in the same request, rotates its id (login) or
    logs it out: the id app2 gave it ends as well. Before, the takeover's pending delete of
    that id was forgotten with the id it was pending on, and the old cookie still loaded the
    session (in app2, from memory, or from the store)."""
    app1, app2 = app("app1", stores, clock), app("app2", stores, clock)
    _, first = request(app2, None, put("user", "ann"))
    assert first is not None and first.endswith(".app2")
    clock.now += 1

    def finish(session: Session) -> None:
        assert session["user"] == "ann" and session.id.endswith(".app1")  # taken over
        if end == "login":
            session.rotate_id()
        else:
            session.invalidate()

    request(app1, first, finish)
    clock.now += 1
    for process in (app2, app("app2", stores, clock), app("app1", stores, clock)):
        replayed, _ = request(process, first, read)
        assert replayed.is_new and dict(replayed) == {}


def test_a_process_does_not_serve_its_copy_of_an_id_another_process_moved_away_from(
    stores: dict[str, MemoryStore], clock: Clock
) -> None:
    """app1 takes over app2's session; then the old id's node goes down, so app2, which still
    holds the session under the old id, cannot read its validity there (the tombstone
    validity the takeover left). The move's tombstone on the other node tells it that its copy
    is from before the move: it serves a new session, not its old copy."""
    app1, app2 = app("app1", stores, clock), app("app2", stores, clock)
    first, taken = taken_over(app2, app1, clock, ("-n1.app2", "-n2.app1"))
    clock.now += 1
    stores["n1"].down = True
    replayed, _ = request(app2, first, read)
    assert replayed.is_new and dict(replayed) == {}
    session, _ = request(app1, taken, read)
    assert session["user"] == "ann"


def test_manager_delete_in_sticky_mode_drops_memory_and_a_takeover_s_old_id(
    stores: dict[str, MemoryStore], clock: Clock
) -> None:
    """`SessionManager.delete(cookie)` (Django's delete of a key) in sticky mode: the process's
    memory no longer serves the session, and the id a pending takeover came from ends too."""
    app1, app2 = app("app1", stores, clock), app("app2", stores, clock)
    _, first = request(app2, None, put("user", "ann"))
    clock.now += 1
    taken = app1.load(first)  # taken over, not saved yet: app2's id still holds the session
    assert taken["user"] == "ann" and taken.id.endswith(".app1")
    app1.release(taken)
    app1.delete(taken.id)
    assert app1._sticky is not None and not app1._sticky.cache.keys()
    clock.now += 1
    for process in (app2, app1, app("app2", stores, clock)):
        replayed, _ = request(process, first, read)
        assert replayed.is_new and dict(replayed) == {}


def test_a_move_s_tombstone_a_node_missed_is_written_there_when_the_debt_is_paid(
    stores: dict[str, MemoryStore], clock: Clock
) -> None:
    """app1 takes over a session app2 holds in memory while n1, the other node, is cut off:
    n1 misses the move's tombstone. Once n1 is back, app1 pays its debt there, the tombstone
    included; when the session's node n2 then goes down, app2 learns from n1 that its copy
    predates a move and does not serve it."""
    app1, app2 = app("app1", stores, clock), app("app2", stores, clock)
    stores["n1"].down = True
    # on n2, app2's failover node
    first, _ = taken_over(app2, app1, clock, ("-n2.app2", "-n2.app1"))
    assert any(str(d.sid) == first for d in app1.owed.of("n1"))
    stores["n1"].down = False
    clock.now += 60  # past the dead time
    request(app1, None, put("other", 1))  # reaches n1 (its backup copy): the debt is paid
    assert not app1.owed.of("n1")
    stores["n2"].down = True
    replayed, _ = request(app2, first, read)
    assert replayed.is_new and dict(replayed) == {}


def test_a_process_reloads_a_session_that_came_back_to_an_id_it_had_moved_from(
    stores: dict[str, MemoryStore], clock: Clock
) -> None:
    """Process a holds `S-n2.app1`; app2 takes it over (a move's tombstone for that id), and b,
    a second app1 worker, takes it back under the same id with a change. With n2 down, a finds
    the move's tombstone on n1 but also a backup copy newer than its own: the session came back,
    and a serves that copy, not a new session."""
    a, b, c = app("app1", stores, clock), app("app1", stores, clock), app("app2", stores, clock)
    first, taken = taken_over(a, c, clock, ("-n2.app1", "-n1.app2"))
    clock.now += 1
    _, back = request(b, taken, put("user", "bob"))
    assert back == first
    clock.now += 1
    stores["n2"].down = True
    session, _ = request(a, first, read)
    assert dict(session) == {"user": "bob"}


# -- the save's outcomes other than "stored" (coverage found them untested in sticky mode) --------


def test_a_logout_elsewhere_between_the_load_and_the_save_is_not_undone(
    stores: dict[str, MemoryStore], clock: Clock
) -> None:
    """The process serves its copy (the validity read before the logout), another process
    logs the session out, then the first saves a change: its write is a replace, refused, so
    the save answers "gone", nothing comes back, and the process drops its copy."""
    app1, other = app("app1", stores, clock), app("app1", stores, clock)
    _, cookie = request(app1, None, put("user", "ann"))
    session = app1.open(cookie)
    assert session["user"] == "ann" and session.load_status == "local"
    request(other, cookie, lambda s: s.invalidate())
    session["cart"] = "book"
    assert app1.save(session).status == "gone"
    app1.release(session)
    assert cookie is not None and not any(
        k.endswith(cookie) and not k.startswith(("tomb:", "validity:"))
        for store in stores.values()
        for k in store.items
    )
    again, _ = request(app1, cookie)
    assert again.is_new and dict(again) == {}


@pytest.mark.parametrize(
    ("value", "says"),
    [("x" * (2 * 1024 * 1024), "too large"), (object(), "")],
    ids=["over the item size limit", "a value the codec cannot encode"],
)
def test_a_change_that_cannot_be_stored_keeps_the_stored_version(
    stores: dict[str, MemoryStore],
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
    value: Any,
    says: str,
) -> None:
    """The save fails with the reason in the log; the stored version stays, and the process
    drops its copy (the change is not served as if stored): the next request reads the stored
    version, here and in another process."""
    app1 = app("app1", stores, clock)
    _, cookie = request(app1, None, put("user", "ann"))
    session = app1.open(cookie)
    session["big"] = value
    with caplog.at_level(logging.ERROR, logger="pymsm"):
        assert app1.save(session).status == "failed"
    app1.release(session)
    assert "was not stored" in caplog.text and says in caplog.text
    for process in (app1, app("app1", stores, clock)):
        again, same = request(process, cookie)
        assert same == cookie and dict(again) == {"user": "ann"}


def test_a_corrupt_validity_is_read_as_missing(
    stores: dict[str, MemoryStore], clock: Clock
) -> None:
    """A validity record that fails to decode counts as absent (as after a node restarted
    empty): the backup copies decide, memory is served, and the next save writes it again."""
    app1 = app("app1", stores, clock)
    _, cookie = request(app1, None, put("user", "ann"))
    assert cookie is not None
    stores["n2"].set("validity:" + cookie, b"garbage", 600)
    session, same = request(app1, cookie, put("n", 1))
    assert same == cookie and dict(session) == {"user": "ann", "n": 1}
    fresh, _ = request(app("app1", stores, clock), cookie)  # a process that never held it
    assert dict(fresh) == {"user": "ann", "n": 1}


def test_sessions_that_never_expire_never_rewrite_their_validity(
    stores: dict[str, MemoryStore], clock: Clock
) -> None:
    """max_inactive_interval <= 0: the stored validity has no lifetime to extend, so an
    unchanged request only reads it, however much time passes."""
    settings = {**sticky_settings("app1"), "max_inactive_interval": 0}
    app1 = SessionManager(stores=stores, clock=clock, **settings)
    _, cookie = request(app1, None, put("user", "ann"))
    calls(stores)
    clock.now += 40 * 24 * 3600
    session, same = request(app1, cookie, lambda s: s["user"])
    assert same == cookie and session["user"] == "ann"
    assert calls(stores) == {"get_many": 1}
