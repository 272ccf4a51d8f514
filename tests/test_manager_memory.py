"""The manager and its flows against memory stores: logic only (failover claims are proven
against real memcached in tests/integration)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from pymsm import SessionManager
from pymsm.core import flows
from pymsm.core.flows import Keys
from pymsm.core.records import moved_at, moved_mark
from pymsm.exceptions import StoreTimeout
from pymsm.stores.memory import MemoryStore
from support.clock import Clock
from support.flows import run_recorded


@pytest.fixture
def clock() -> Clock:
    return Clock()


def cluster(
    clock: Clock, count: int = 2, **settings: object
) -> tuple[SessionManager, dict[str, MemoryStore]]:
    stores = {f"n{i}": MemoryStore(f"n{i}", clock=clock) for i in range(1, count + 1)}
    nodes = ",".join(f"n{i}:127.0.0.1:{i}" for i in range(1, count + 1))
    settings.setdefault("max_inactive_interval", 600)
    manager = SessionManager(memcached_nodes=nodes, stores=stores, clock=clock, **settings)  # type: ignore[arg-type]
    return manager, stores


def session_keys(stores: dict[str, MemoryStore]) -> list[str]:
    return [k for s in stores.values() for k in s.items if not k.startswith("tomb:")]


def stored_session(manager: SessionManager, **data: object) -> str:
    session = manager.open(None)
    session.update(data)
    assert manager.save(session).status == "stored"
    return session.id


def test_a_new_session_is_stored_only_when_written(clock: Clock) -> None:
    manager, stores = cluster(clock)
    session = manager.open(None)
    assert session.get("x") is None
    assert manager.save(session).status == "skipped"
    assert manager.set_cookie(session, None) is None
    assert all(not s.items for s in stores.values())


def test_record_and_backup_land_where_the_id_says(clock: Clock) -> None:
    manager, stores = cluster(clock)
    session = manager.open(None)
    session["user"] = "ann"
    manager.save(session)
    cookie = manager.set_cookie(session, None)
    assert cookie is not None and cookie.startswith(f"MSMSESSIONID={session.id};")
    primary, backup = session.sid.node, ({"n1", "n2"} - {session.sid.node}).pop()
    keys = Keys.of("", session.sid)
    # a changed request writes the record only: its write time is the access time
    assert set(stores[primary].items) == {keys.record}
    assert set(stores[backup].items) == {keys.backup}
    assert stores[primary].items[keys.record][0] == stores[backup].items[keys.backup][0]


def test_unchanged_requests_write_only_validity(clock: Clock) -> None:
    manager, stores = cluster(clock)
    sid = stored_session(manager, user="ann")
    before = {k: v[0] for s in stores.values() for k, v in s.items.items() if "validity" not in k}
    clock.now += 5
    session = manager.load(sid)
    assert session["user"] == "ann"
    assert manager.save(session).status == "unchanged"
    after = {k: v[0] for s in stores.values() for k, v in s.items.items() if "validity" not in k}
    assert before == after
    again = manager.load(sid)
    assert again.last_accessed == pytest.approx(clock.now)


def test_in_place_changes_of_nested_values_are_saved(clock: Clock) -> None:
    manager, _ = cluster(clock)
    sid = stored_session(manager, cart=[1])
    session = manager.load(sid)
    session["cart"].append(2)
    assert manager.save(session).status == "stored"
    assert manager.load(sid)["cart"] == [1, 2]


def test_the_record_is_rewritten_once_half_its_idle_time_passed(clock: Clock) -> None:
    manager, _stores = cluster(clock)
    sid = stored_session(manager, a=1)
    clock.now += 301
    session = manager.load(sid)
    assert session["a"] == 1
    assert manager.save(session).status == "stored"
    clock.now += 599  # would have expired from the first write's lifetime, not from the last use
    assert manager.load(sid)["a"] == 1


def test_primary_down_loads_the_backup_and_rehomes_with_a_new_id(clock: Clock) -> None:
    manager, stores = cluster(clock)
    sid = stored_session(manager, user="ann")
    old_node = sid.split("-")[1]
    stores[old_node].down = True
    session = manager.load(sid)
    assert session["user"] == "ann"
    assert session.sid.node != old_node and session.sid.base == sid.split("-")[0]
    assert manager.set_cookie(session, sid) == manager.set_cookie(session, None)
    new_keys, old_keys = Keys.of("", session.sid), Keys.of("", manager.parse_id(sid))  # type: ignore[arg-type]
    home = stores[session.sid.node]
    assert new_keys.record in home.items and old_keys.backup not in home.items
    manager.save(session)
    stores[old_node].down = False
    # the old primary came back: it is the new session's backup node again
    clock.now += 30
    manager.health.succeeded(old_node, clock.now)
    assert manager.load(session.id)["user"] == "ann"


def test_a_restarted_primary_is_refilled_from_the_backup(clock: Clock) -> None:
    manager, stores = cluster(clock)
    sid = stored_session(manager, user="ann")
    primary = stores[sid.split("-")[1]]
    primary.items.clear()  # restarted empty
    session = manager.load(sid)
    assert session.id == sid and session["user"] == "ann"
    assert Keys.of("", session.sid).record in primary.items


def test_backup_search_is_bounded(clock: Clock) -> None:
    manager, stores = cluster(clock, count=5)
    sid = stored_session(manager, a=1)
    node = sid.split("-")[1]
    for store in stores.values():
        store.items.clear()
        store.calls.clear()
    stores[node].down = True
    session = manager.load(sid)
    assert session.load_status == "unavailable" and session.id != sid
    lookups = sum(s.calls.get("get_many", 0) for name, s in stores.items() if name != node)
    assert lookups == 2


def test_an_unknown_id_is_never_adopted(clock: Clock) -> None:
    manager, _ = cluster(clock)
    forged = "0123456789ABCDEF0123456789ABCDEF-n1"
    session = manager.load(forged)
    assert session.id != forged and session.load_status == "missing"
    session["x"] = 1
    manager.save(session)
    assert manager.set_cookie(session, forged) is not None


@pytest.mark.parametrize(
    "cookie", ["nope", "A" * 500, "0123456789ABCDEF0123456789ABCDEF-n1\r\nflush_all"]
)
def test_malformed_cookies_start_a_new_session_with_a_log_line(
    clock: Clock, cookie: str, caplog: pytest.LogCaptureFixture
) -> None:
    manager, stores = cluster(clock)
    with caplog.at_level(logging.INFO, "pymsm"):
        session = manager.load(cookie)
    assert (session.is_new and "malformed" in caplog.text) or "ignoring" in caplog.text
    assert all(not s.calls for s in stores.values())


def test_a_corrupt_record_is_left_alone_and_a_new_session_served(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    manager, stores = cluster(clock)
    sid = stored_session(manager, a=1)
    store = stores[sid.split("-")[1]]
    key = Keys.of("", manager.parse_id(sid)).record  # type: ignore[arg-type]
    store.items[key] = (b"garbage that is long enough for a header", 0.0)
    with caplog.at_level(logging.WARNING, "pymsm"):
        session = manager.load(sid)
    assert session.load_status == "corrupt" and "bad magic" in caplog.text
    session["b"] = 2
    manager.save(session)
    assert store.items[key][0] == b"garbage that is long enough for a header"


def test_expired_sessions_are_deleted_and_never_served(clock: Clock) -> None:
    manager, stores = cluster(clock)
    sid = stored_session(manager, a=1)
    clock.now += 601
    stores["n1"].clock = stores["n2"].clock = lambda: 0.0  # the store still holds the items
    session = manager.load(sid)
    assert session.load_status == "expired" and "a" not in session
    assert not session_keys(stores)  # only logout tombstones remain


def test_invalidate_deletes_every_copy_and_the_cookie(clock: Clock) -> None:
    manager, stores = cluster(clock)
    sid = stored_session(manager, a=1)
    session = manager.load(sid)
    session.invalidate()
    manager.save(session)
    assert not session_keys(stores)  # only logout tombstones remain
    assert "Max-Age=0" in (manager.set_cookie(session, sid) or "")
    assert manager.load(sid).load_status == "missing"


def test_rotate_moves_the_data_to_a_new_id(clock: Clock) -> None:
    manager, _ = cluster(clock)
    sid = stored_session(manager, a=1)
    session = manager.load(sid)
    session.rotate_id()
    manager.save(session)
    assert session.id != sid
    assert manager.load(sid).load_status == "missing"
    assert manager.load(session.id)["a"] == 1


def test_a_session_deleted_meanwhile_is_not_resurrected(clock: Clock) -> None:
    manager, stores = cluster(clock)
    sid = stored_session(manager, a=1)
    slow = manager.load(sid)
    slow["b"] = 2
    logout = manager.load(sid)
    logout.invalidate()
    manager.save(logout)
    assert manager.save(slow).status == "gone"
    assert not session_keys(stores)  # only logout tombstones remain


def test_too_large_sessions_keep_the_stored_version(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    manager, _stores = cluster(clock)
    sid = stored_session(manager, a=1)
    session = manager.load(sid)
    session["big"] = "x" * (2 * 1024 * 1024)
    with caplog.at_level(logging.ERROR, "pymsm"):
        assert manager.save(session).status == "failed"
    assert "too large" in caplog.text
    assert dict(manager.load(sid)) == {"a": 1}


def test_a_value_nested_too_deep_fails_the_save_and_keeps_the_stored_version(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    manager, _stores = cluster(clock)
    sid = stored_session(manager, a=1)
    session = manager.load(sid)
    deep: dict[str, object] = {}
    inner = deep
    for _ in range(5000):
        inner["a"] = inner = {}
    session["deep"] = deep
    with caplog.at_level(logging.ERROR, "pymsm"):
        assert manager.save(session).status == "failed"
    assert "nests too deep" in caplog.text
    assert dict(manager.load(sid)) == {"a": 1}


def test_all_nodes_down_serves_a_fresh_session_without_cookie(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    manager, stores = cluster(clock)
    sid = stored_session(manager, a=1)
    for store in stores.values():
        store.down = True
    with caplog.at_level(logging.WARNING, "pymsm"):
        session = manager.load(sid)
        session["b"] = 2
        assert manager.save(session).status == "failed"
    assert session.load_status == "unavailable"
    assert manager.set_cookie(session, sid) is None
    for store in stores.values():
        store.down = False
    clock.now += 60
    assert dict(manager.load(sid)) == {"a": 1}


def test_a_timeout_on_the_primary_write_relocates(clock: Clock) -> None:
    manager, stores = cluster(clock)
    sid = stored_session(manager, a=1)
    session = manager.load(sid)
    session["a"] = 2
    stores[session.sid.node].fail_next(1, StoreTimeout("slow", session.sid.node))
    assert manager.save(session).status == "stored"
    assert session.id != sid
    assert manager.load(session.id)["a"] == 2


def test_a_session_that_moves_back_to_an_id_it_left_survives_the_next_failover(
    clock: Clock,
) -> None:
    """`S-n1` relocates to `S-n2` when n1 times out, then back to `S-n1` when n2 does (ids
    keep their base). When n1 dies, n2's backup copy of `S-n1` is served: the first move
    left only a move's tombstone for `S-n1`, which sets aside the copies written before it,
    not a logout's, which would end the session."""
    manager, stores = cluster(clock)
    sid = _on(manager, "n1", v=1)
    current = sid
    for v, node in ((2, "n1"), (3, "n2")):
        clock.now += 5
        session = manager.load(current)
        session["v"] = v
        stores[node].fail_next(1, StoreTimeout("slow", node))
        assert manager.save(session).status == "stored"
        current = session.id
    assert current == sid
    tombs = [v for s in stores.values() for k, (v, _) in s.items.items() if k.startswith("tomb:")]
    assert tombs and all(moved_at(v) is not None for v in tombs)
    stores["n1"].down = True
    assert dict(manager.load(sid)) == {"v": 3}


def test_the_id_a_relocation_left_is_not_refilled_from_a_copy_older_than_the_move(
    clock: Clock,
) -> None:
    """n1, which holds the backup copy of `S-n3`, is cut off when n3 times out on a write: the
    session relocates to n2, and the copy on n1 cannot be deleted (it is owed). Once n1 is
    back, a request with the old cookie to another process finds no record on n3 and that
    copy on n1: it must not refill `S-n3` from it (the session lives under a new id now)."""
    manager, stores = cluster(clock, count=3)
    sid = _on(manager, "n3", v=1)
    assert Keys.of("", manager.parse_id(sid)).backup in stores["n1"].items  # type: ignore[arg-type]
    clock.now += 1
    stores["n1"].down = True
    session = manager.load(sid)
    session["v"] = 2
    stores["n3"].fail_next(1, StoreTimeout("slow", "n3"))
    assert manager.save(session).status == "stored"
    assert session.sid.node == "n2"
    stores["n1"].down = False
    clock.now += 30
    other = SessionManager(
        memcached_nodes="n1:127.0.0.1:1,n2:127.0.0.1:2,n3:127.0.0.1:3",
        stores=stores,  # type: ignore[arg-type]
        clock=clock,
        max_inactive_interval=600,
    )
    replayed = other.load(sid)
    assert replayed.is_new and dict(replayed) == {}
    assert manager.load(session.id)["v"] == 2


@pytest.mark.parametrize(
    ("moved", "served"),
    [(+1, False), (-1, True)],
    ids=["a copy older than the move is not refilled", "a copy newer than the move is live"],
)
def test_the_primary_s_move_tombstone_decides_a_refill_its_backup_nodes_cannot(
    clock: Clock, moved: int, served: bool
) -> None:
    """The state a move leaves when the backup node missed it (cut off then; the process owes
    it the delete): on the id's node, the move's tombstone and no record; on the backup node,
    the old copy and no tombstone. A load of the old id finds that copy, and only the primary's
    tombstone can tell it from a copy the session wrote after coming back to the id (ids keep
    their base): older than the move, it is not refilled; newer, it is the live session."""
    manager, stores = cluster(clock)
    sid = manager.parse_id(stored_session(manager, v=1))
    assert sid is not None and sid.node is not None
    keys = Keys.of("", sid)
    home = stores[sid.node]
    backup = next(s for name, s in stores.items() if name != sid.node)
    assert keys.backup in backup.items
    written = int(clock.now * 1000)
    clock.now += 5
    home.delete(keys.record)
    home.delete(keys.validity)
    home.set(keys.tomb, moved_mark(written + moved), 600)
    loaded = manager.load(str(sid))
    assert (dict(loaded) == {"v": 1}) is served and loaded.is_new is not served
    assert (keys.record in home.items) is served  # refilled only when live
    assert keys.backup in backup.items  # nothing deleted either way


def test_attribute_filter_stores_only_matching_names(clock: Clock) -> None:
    manager, _ = cluster(clock, session_attribute_filter=r"user|cart")
    session = manager.open(None)
    session.update(user="ann", cart=[1], scratch="big")
    manager.save(session)
    assert dict(manager.load(session.id)) == {"user": "ann", "cart": [1]}


def test_never_expiring_sessions(clock: Clock) -> None:
    manager, _stores = cluster(clock, max_inactive_interval=0)
    sid = stored_session(manager, a=1)
    clock.now += 10 * 365 * 86400
    assert manager.load(sid)["a"] == 1


def test_unchanged_requests_write_the_access_time_once_per_resolution(clock: Clock) -> None:
    manager, stores = cluster(clock)  # 600 s idle timeout: 6 s resolution
    sid = stored_session(manager, a=1)
    for store in stores.values():
        store.calls.clear()
    clock.now += 2
    assert manager.save(manager.load(sid)).status == "unchanged"
    assert sum(s.calls.get("set", 0) for s in stores.values()) == 0  # one read, no write
    clock.now += 5
    assert manager.save(manager.load(sid)).status == "unchanged"
    assert sum(s.calls.get("set", 0) for s in stores.values()) == 2  # validity + its backup
    assert manager.load(sid).last_accessed == pytest.approx(clock.now)


def test_access_time_resolution_zero_writes_every_request(clock: Clock) -> None:
    manager, stores = cluster(clock, access_time_resolution=0)
    sid = stored_session(manager, a=1)
    for store in stores.values():
        store.calls.clear()
    clock.now += 0.5
    manager.save(manager.load(sid))
    assert sum(s.calls.get("set", 0) for s in stores.values()) == 2


def test_a_changed_request_writes_no_validity_its_record_carries_the_access_time(
    clock: Clock,
) -> None:
    manager, stores = cluster(clock)
    sid = stored_session(manager, n=0)
    clock.now += 100  # past the access time resolution: the next unchanged request writes it
    manager.save(manager.load(sid))
    for step in range(1, 4):
        clock.now += 500  # each step within the idle timeout (600 s) of the previous write
        session = manager.load(sid)
        assert session.load_status == "found" and session["n"] == step - 1
        session["n"] = step
        assert manager.save(session).status == "stored"
    validity_key = Keys.of("", manager.parse_id(sid)).validity  # type: ignore[arg-type]
    assert not any(validity_key in s.items for s in stores.values())  # long outlived by the record
    assert manager.load(sid).last_accessed == pytest.approx(clock.now, abs=0.01)
    clock.now += 601
    assert manager.load(sid).load_status == "expired"


def test_a_record_written_while_its_backup_node_was_dead_gets_its_backup_when_it_returns(
    clock: Clock,
) -> None:
    """Two nodes: a change saved while the other node is dead has no backup copy anywhere.
    Once the node's dead time is over, the next request (even an unchanged one) rewrites the
    record with its backup, which also probes the node."""
    manager, stores = cluster(clock, node_dead_timeout=10)
    sid = stored_session(manager, n=0)
    home = sid.split("-")[1]
    other = "n2" if home == "n1" else "n1"
    stores[other].down = True
    for n in (1, 2, 3):  # the backup writes fail and mark the node dead
        session = manager.load(sid)
        session["n"] = n
        assert manager.save(session).status == "stored"
    assert not manager.health.is_up(other, clock())
    clock.now += 0.001
    session = manager.load(sid)
    session["n"] = 4  # written while the node is dead: no backup copy
    manager.save(session)
    stores[other].down = False
    stores[other].items.clear()  # it comes back empty
    backup = Keys.of("", session.sid).backup
    clock.now += 1
    assert manager.save(manager.load(sid)).status == "unchanged"  # still dead: nothing to do
    assert backup not in stores[other].items
    clock.now += 10  # its dead time is over
    assert manager.save(manager.load(sid)).status == "stored"
    assert manager.health.describe(other, clock()) == "healthy"
    stores[home].down = True  # the refilled copy serves once the home node is gone
    assert manager.load(sid)["n"] == 4


def _on(manager: SessionManager, node: str, **data: object) -> str:
    """A stored session whose id names `node` (new sessions land on a random live node)."""
    while True:
        sid = stored_session(manager, **data)
        if sid.endswith("-" + node):
            return sid


def _write(manager: SessionManager, sid: str, **data: object) -> None:
    session = manager.load(sid)
    session.update(data)
    assert manager.save(session).status == "stored" and session.id == sid


def test_a_backup_its_node_refuses_goes_to_the_next_live_node(clock: Clock) -> None:
    """n2 went down since this process last used it (not marked dead yet): the backup copy it
    refuses is written to n3, so the change has two copies all the same."""
    manager, stores = cluster(clock, count=3)
    sid = _on(manager, "n1", v=1)
    backup = Keys.of("", manager.parse_id(sid)).backup  # type: ignore[arg-type]
    stores["n2"].down = True
    clock.now += 1
    _write(manager, sid, v=2)
    assert manager.health.is_up("n2", clock())  # one failure: not dead yet
    assert stores["n3"].items[backup][0] == stores["n1"].items[sid][0]


def test_failover_takes_the_newest_backup_copy(clock: Clock) -> None:
    """n2 missed a change while unreachable and came back holding the old copy; when n1 dies,
    the session is re-homed from n3's newer copy, not from the first node in ring order."""
    manager, stores = cluster(clock, count=3)
    sid = _on(manager, "n1", v=1)
    stores["n2"].down = True
    clock.now += 1
    _write(manager, sid, v=2)
    stores["n2"].down = False  # back, with its data: a network partition healed
    clock.now += 30
    stores["n1"].down = True
    other = SessionManager(
        memcached_nodes="n1:127.0.0.1:1,n2:127.0.0.1:2,n3:127.0.0.1:3",
        stores=stores,  # type: ignore[arg-type]
        clock=clock,
        max_inactive_interval=600,
    )  # another app process: it never saw n2 fail
    session = other.load(sid)
    assert dict(session) == {"v": 2}
    assert session.sid.node == "n3"
    # the old id's backup copies are gone from both nodes that held one
    old = Keys.of("", manager.parse_id(sid))  # type: ignore[arg-type]
    assert all(old.backup not in stores[n].items for n in ("n2", "n3"))


def test_a_restarted_primary_is_refilled_from_the_newest_backup_copy(clock: Clock) -> None:
    manager, stores = cluster(clock, count=3)
    sid = _on(manager, "n1", v=1)
    stores["n2"].down = True
    clock.now += 1
    _write(manager, sid, v=2)
    stores["n2"].down = False
    stores["n1"].items.clear()  # restarted empty
    clock.now += 30
    session = manager.load(sid)
    assert session.id == sid and dict(session) == {"v": 2}
    assert manager.load(sid)["v"] == 2  # served by the refilled primary now


def test_a_logout_a_backup_node_missed_is_not_undone_by_a_failover(clock: Clock) -> None:
    """n2 was unreachable during the logout and kept its backup copy; n3 got the tombstone.
    When n1 dies, the old cookie must not bring the session back from n2 (invariant 6)."""
    manager, stores = cluster(clock, count=3)
    sid = _on(manager, "n1", user="ann")
    stores["n2"].down = True
    session = manager.load(sid)
    session.invalidate()
    manager.save(session)
    stores["n2"].down = False
    clock.now += 30
    stores["n1"].down = True
    replayed = manager.load(sid)
    assert replayed.is_new and dict(replayed) == {} and replayed.id != sid


def test_a_logout_reaches_every_node_a_copy_may_have_gone_to(clock: Clock) -> None:
    """Four nodes, n2 dead and n3 refusing once: the backup copy lands on n4. The logout must
    delete it and leave its tombstone there too (the live window, not the first two nodes by
    position), or n4 hands the session back once n1 and n3 are gone."""
    manager, stores = cluster(clock, count=4)
    sid = _on(manager, "n1", user="ann")
    stores["n2"].down = True
    for _ in range(2):  # two failed backup writes mark n2 dead
        clock.now += 1
        _write(manager, sid, user="ann")
    assert not manager.health.is_up("n2", clock())
    stores["n3"].fail_next(1)  # refuses the next backup copy: it goes to n4
    clock.now += 1
    _write(manager, sid, user="bob")
    backup = Keys.of("", manager.parse_id(sid)).backup  # type: ignore[arg-type]
    assert backup in stores["n4"].items
    session = manager.load(sid)
    session.invalidate()
    manager.save(session)
    keys = Keys.of("", manager.parse_id(sid))  # type: ignore[arg-type]
    assert keys.tomb in stores["n4"].items and keys.backup not in stores["n4"].items
    stores["n1"].down = True
    stores["n3"].down = True  # n4 alone answers now: it must not hand the session back
    replayed = manager.load(sid)
    assert replayed.is_new and dict(replayed) == {}


def _states(clock: Clock, manager: SessionManager, stores: dict[str, MemoryStore]) -> list[Any]:
    """Sessions in every state a save can meet, each as (name, loaded session)."""
    sid = stored_session(manager, user="ann", items=[1])
    out: list[Any] = [("new, untouched", manager.load(None))]
    fresh = manager.load(None)
    fresh["x"] = 1
    out.append(("new, written", fresh))
    out.append(("unchanged, access recent", manager.load(sid)))
    read = manager.load(sid)
    _ = read["items"]  # a mutable value handed out: the save must re-encode to know
    out.append(("mutable read", read))
    changed = manager.load(sid)
    changed["user"] = "bob"
    out.append(("changed", changed))
    rotated = manager.load(sid)
    rotated.rotate_id()
    out.append(("rotated", rotated))
    ended = manager.load(sid)
    ended.invalidate()
    out.append(("invalidated", ended))
    return out


@pytest.mark.parametrize(
    ("later", "resolution"),
    [(0, None), (30, None), (400, None), (400, 1000)],  # s; the default resolution here is 6 s
    ids=["access recent", "access due", "half-lived", "half-lived, access recent"],
)
def test_settled_answers_exactly_what_save_would_without_writing(
    clock: Clock, later: int, resolution: int | None
) -> None:
    """`settled` is the drivers' shortcut past the save flow: when it answers, the flow would
    have answered the same and written nothing; otherwise it leaves the session to the flow."""
    manager, stores = cluster(clock, access_time_resolution=resolution)  # idle timeout 600 s
    shortcut = set()
    for name, session in _states(clock, manager, stores):
        clock.now += later
        ctx = manager.save_context(session)
        quick = flows.settled(ctx, session)
        ops, saved = run_recorded(flows.save(ctx, session), manager._execute)
        if quick is not None:
            shortcut.add(name)
            assert (quick.status, ops) == (saved.status, []), name
        clock.now -= later
    expected = {"new, untouched", "unchanged, access recent"} if later == 0 else {"new, untouched"}
    assert shortcut == expected
