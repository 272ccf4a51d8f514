"""Failover against real memcached processes, killed with SIGKILL or cut off by a proxy (DESIGN
invariants 1, 3, 5, 6, 7)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pymemcache.client.base import Client

from pymsm import SessionManager
from pymsm.core.flows import Keys
from pymsm.core.ids import SessionId
from support.partition import PartitionProxy
from support.servers import ServerProcess

pytestmark = pytest.mark.integration
Nodes = Callable[[int], list[ServerProcess]]
_open: list[SessionManager | Client] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _open:
        _open.pop().close()


def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Backup copies are written without waiting for the answer: give the server a moment."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def manager_for(servers: list[ServerProcess], **settings: object) -> SessionManager:
    nodes = ",".join(f"{s.name}:{s.address}" for s in servers)
    settings.setdefault("operation_timeout", 500)
    manager = SessionManager(memcached_nodes=nodes, **settings)  # type: ignore[arg-type]
    _open.append(manager)
    return manager


def raw(server: ServerProcess) -> Client:
    client = Client(("127.0.0.1", server.port), timeout=2)
    _open.append(client)
    return client


def new_session(manager: SessionManager, **data: object) -> str:
    session = manager.open(None)
    session.update(data)
    assert manager.save(session).status == "stored"
    return session.id


def by_name(servers: list[ServerProcess], name: str | None) -> ServerProcess:
    return next(s for s in servers if s.name == name)


@pytest.mark.parametrize("count", [2, 3])
def test_killing_the_node_in_the_id_moves_the_session_to_its_backup(
    memcached_nodes: Nodes, count: int
) -> None:
    servers = memcached_nodes(count)
    app1, app2 = manager_for(servers), manager_for(servers)  # two app processes' managers
    sid = new_session(app1, user="ann", cart=[1, 2])
    primary = SessionId.parse(sid).node
    by_name(servers, primary).kill()
    session = app2.load(sid)
    assert dict(session) == {"user": "ann", "cart": [1, 2]}
    assert session.sid.node != primary and session.sid.base == SessionId.parse(sid).base
    cookie = app2.set_cookie(session, sid)
    assert cookie is not None and f"-{session.sid.node}" in cookie
    session["cart"].append(3)
    app2.save(session)
    # the other app process follows the new cookie, and the new home has a backup again
    assert app1.load(session.id)["cart"] == [1, 2, 3]
    home = by_name(servers, session.sid.node)
    keys = Keys.of("", session.sid)
    assert raw(home).get(keys.record) is not None
    if count == 3:
        backup = next(s for s in servers if s.running and s.name != session.sid.node)
        assert raw(backup).get(keys.backup) is not None


def test_killing_the_backup_node_moves_the_backup_to_the_next_live_node(
    memcached_nodes: Nodes,
) -> None:
    servers = memcached_nodes(3)
    manager = manager_for(servers)
    sid = SessionId.parse(new_session(manager, a=1))
    ring = [s.name for s in servers]
    backup_name = ring[(ring.index(sid.node) + 1) % 3]
    third_name = ring[(ring.index(sid.node) + 2) % 3]
    by_name(servers, backup_name).kill()
    # backup writes do not wait for an answer: the first to a killed node is lost silently in
    # the socket, the next ones fail and mark the node dead; then writes go to the next node
    writes = 0
    while manager.health.is_up(backup_name, manager.clock()) and writes < 5:
        session = manager.load(str(sid))
        session["a"] = session["a"] + 1
        manager.save(session)
        writes += 1
    assert not manager.health.is_up(backup_name, manager.clock())
    session = manager.load(str(sid))
    assert manager.save(session).status == "stored"  # refill: written before the failure
    keys = Keys.of("", sid)
    assert eventually(lambda: raw(by_name(servers, third_name)).get(keys.backup) is not None)
    # now lose the primary too: the session survives on the third node
    by_name(servers, sid.node).kill()
    other = manager_for(servers)
    assert other.load(str(sid))["a"] == 1 + writes


Cluster = tuple[list[ServerProcess], list[PartitionProxy]]


def _behind_proxies(memcached_nodes: Nodes, count: int) -> Iterator[Cluster]:
    servers = memcached_nodes(count)
    proxies = [PartitionProxy(server.port) for server in servers]
    yield servers, proxies
    for proxy in proxies:
        proxy.stop()


@pytest.fixture
def partitionable(memcached_nodes: Nodes) -> Iterator[Cluster]:
    """Three nodes, each reached through a proxy a test can cut off and heal (support/partition)."""
    yield from _behind_proxies(memcached_nodes, 3)


@pytest.fixture
def partitionable_pair(memcached_nodes: Nodes) -> Iterator[Cluster]:
    """Two such nodes."""
    yield from _behind_proxies(memcached_nodes, 2)


def through(cluster: Cluster, **settings: Any) -> SessionManager:
    """An app process's manager that reaches the nodes through the proxies."""
    servers, proxies = cluster
    nodes = ",".join(f"{s.name}:{p.address}" for s, p in zip(servers, proxies, strict=True))
    manager = SessionManager(memcached_nodes=nodes, operation_timeout=500, **settings)
    _open.append(manager)
    return manager


def test_a_node_cut_off_during_writes_does_not_bring_back_its_old_copy(
    partitionable: Cluster,
) -> None:
    """The backup node is cut off while the session changes (the copies go to the third node),
    comes back with its old copy, and then the primary dies: the newest copy is served."""
    servers, proxies = partitionable
    app = through(partitionable)
    sid = SessionId.parse(new_session(app, n=0))
    primary = [s.name for s in servers].index(sid.node)
    backup, third = (primary + 1) % 3, (primary + 2) % 3
    keys = Keys.of("", sid)
    # the backup copy is written without waiting: let it arrive before the cut
    assert eventually(lambda: raw(servers[backup]).get(keys.backup) is not None)
    proxies[backup].cut()
    n = 0
    while n < 5:  # the cut-off node refuses the backup copies until it is marked dead
        n += 1
        session = app.load(str(sid))
        session["n"] = n
        assert app.save(session).status == "stored"
        if not app.health.is_up(servers[backup].name, app.clock()):
            break
    assert eventually(lambda: raw(servers[third]).get(keys.backup) is not None)
    assert raw(servers[backup]).get(keys.backup) is not None  # the old copy, still there
    proxies[backup].heal()
    servers[primary].kill()
    session = through(partitionable).load(str(sid))  # another process: it saw no failure
    assert session["n"] == n
    assert session.sid.node == servers[third].name


def test_a_logout_a_cut_off_node_missed_is_not_undone_by_a_failover(
    partitionable: Cluster,
) -> None:
    """Invariant 6: the backup node missed the logout (cut off); once it is back and the
    primary dies, the old cookie must not bring the session back from that node's copy."""
    servers, proxies = partitionable
    app = through(partitionable)
    sid = new_session(app, user="ann")
    primary = [s.name for s in servers].index(SessionId.parse(sid).node)
    backup, third = (primary + 1) % 3, (primary + 2) % 3
    keys = Keys.of("", SessionId.parse(sid))
    copy = keys.backup
    assert eventually(lambda: raw(servers[backup]).get(copy) is not None)
    proxies[backup].cut()
    session = app.load(sid)
    session.invalidate()
    app.save(session)
    # the third node's tombstone is written without waiting: let it land before the failover
    assert eventually(lambda: raw(servers[third]).get(keys.tomb) is not None)
    proxies[backup].heal()
    assert raw(servers[backup]).get(copy) is not None  # it missed the logout
    servers[primary].kill()
    replayed = through(partitionable).load(sid)
    assert replayed.is_new and dict(replayed) == {} and replayed.id != sid


def test_the_id_a_session_moved_from_stops_loading_once_its_node_is_back(
    partitionable: Cluster,
) -> None:
    """The primary is cut off, a request moves the session to a new id; the node comes back
    with the old copy (a replayed old cookie would read it, also after a logout). The process
    that moved the session owes the node that delete and makes it once the node answers again
    (core/owed.py): a conditional delete of a copy older than the move."""
    servers, proxies = partitionable
    app = through(partitionable, node_dead_timeout=0.5)
    old = new_session(app, user="ann")
    sid = SessionId.parse(old)
    primary = [s.name for s in servers].index(sid.node)
    keys = Keys.of("", sid)
    proxies[primary].cut()
    moved = app.load(old)
    assert moved["user"] == "ann" and moved.id != old
    moved["user"] = "bob"
    assert app.save(moved).status == "stored"
    app.release(moved)
    assert [d.sid for d in app.owed.of(sid.node or "")] == [sid]
    proxies[primary].heal()
    assert raw(servers[primary]).get(keys.record) is not None  # back with the old copy
    assert through(partitionable).load(old)["user"] == "ann"  # the gap: before the debt is paid
    # requests go on; once one reaches the node again (the dead time, then a session there
    # or its backup copy), the request's end makes the delete
    time.sleep(app.config.node_dead_timeout + 0.1)
    for _ in range(30):
        session = app.open(None)
        session["other"] = 1
        app.save(session)
        app.release(session)
        if not app.owed.of(sid.node or ""):
            break
    assert app.owed.of(sid.node or "") == [] and app.stats["owed_settled"] == 1
    assert raw(servers[primary]).get(keys.record) is None
    replayed = through(partitionable).load(old)
    assert replayed.is_new and dict(replayed) == {}
    assert through(partitionable).load(moved.id)["user"] == "bob"


def test_a_session_that_moves_back_to_its_first_id_survives_the_next_failover(
    partitionable_pair: Cluster,
) -> None:
    """Ids keep their base when a session moves, so it can come back to an id it left: `S-n1`
    relocated to `S-n2` when n1 failed during a write, and back to `S-n1` when n2 did. The
    first move must leave no logout tombstone for `S-n1`: when n1 then dies, the load finds
    the backup copy on n2, and a tombstone there would end the session (it did before)."""
    servers, proxies = pair = partitionable_pair
    app = through(pair, node_dead_timeout=0.3)
    first = new_session(app, n=1)
    names = [s.name for s in servers]
    a = names.index(SessionId.parse(first).node)
    b = 1 - a

    def write_while_cut(sid: str, n: int, cut: int) -> str:
        """A write whose node is cut off between the load and the save: relocated."""
        session = app.load(sid)
        assert session["n"] == n - 1
        session["n"] = n
        proxies[cut].cut()
        assert app.save(session).status == "stored"
        app.release(session)
        proxies[cut].heal()
        time.sleep(app.config.node_dead_timeout + 0.1)  # the app may try the node again
        return session.id

    moved = write_while_cut(first, 2, cut=a)
    assert SessionId.parse(moved).node == names[b]
    back = write_while_cut(moved, 3, cut=b)
    assert back == first  # the same id again
    session = app.load(back)
    session["n"] = 4  # the copy goes to the other node, which is back
    assert app.save(session).status == "stored"
    app.release(session)
    backup = Keys.of("", SessionId.parse(back)).backup
    assert eventually(lambda: raw(servers[b]).get(backup) is not None)
    servers[a].kill()
    session = through(pair).load(back)  # another process, too: it saw no failure
    assert session["n"] == 4 and session.sid.node == names[b]


def test_a_returning_node_is_refilled_as_sessions_are_used(memcached_nodes: Nodes) -> None:
    servers = memcached_nodes(2)
    manager = manager_for(servers, node_dead_timeout="200ms")
    sid = SessionId.parse(new_session(manager, a=1))
    backup = next(s for s in servers if s.name != sid.node)
    backup.kill()
    for value in (2, 3, 4):  # primary fine; backup writes fail and mark it
        session = manager.load(str(sid))
        session["a"] = value
        manager.save(session)
    assert manager.health.changed_at(backup.name, manager.clock()) > 0
    backup.start()  # empty, same port
    # past node_dead_timeout the next request probes it
    assert eventually(lambda: manager.health.is_up(backup.name, manager.clock()))
    keys = Keys.of("", sid)

    def used_and_refilled() -> bool:
        assert manager.save(manager.load(str(sid))).status in ("stored", "unchanged")
        return eventually(lambda: raw(backup).get(keys.backup) is not None, timeout=1)

    # a couple of requests refill it (more only when a loaded machine times a request out)
    assert any(used_and_refilled() for _ in range(5))
    # and the refilled copy is good: lose the primary, read it from the returned node
    by_name(servers, sid.node).kill()
    assert manager_for(servers).load(str(sid))["a"] == 4


def test_a_restarted_primary_is_refilled_without_changing_the_id(memcached_nodes: Nodes) -> None:
    servers = memcached_nodes(2)
    manager = manager_for(servers)
    sid = new_session(manager, a=1)
    primary = by_name(servers, SessionId.parse(sid).node)
    primary.kill()
    primary.start()
    other = manager_for(servers)
    session = other.load(sid)
    assert session.id == sid and session["a"] == 1
    assert raw(primary).get(Keys.of("", session.sid).record) is not None


def test_all_nodes_down_serves_a_fresh_unsaved_session_and_loses_nothing(
    memcached_nodes: Nodes, caplog: pytest.LogCaptureFixture
) -> None:
    servers = memcached_nodes(2)
    manager = manager_for(servers)
    sid = new_session(manager, a=1)
    for server in servers:
        server.stop()
    with caplog.at_level(logging.WARNING, "pymsm"):
        session = manager.load(sid)
        assert session.load_status == "unavailable" and len(session) == 0
        session["b"] = 2
        assert manager.save(session).status == "failed"
    assert manager.set_cookie(session, sid) is None  # the client keeps its id
    assert "could not be read" in caplog.text and "not stored" in caplog.text


def test_three_nodes_primary_down_and_no_backup_ends_the_search(memcached_nodes: Nodes) -> None:
    servers = memcached_nodes(3)
    manager = manager_for(servers)
    sid = SessionId.parse(new_session(manager, a=1))
    for server in servers:
        raw(server).flush_all()
    by_name(servers, sid.node).kill()
    session = manager.load(str(sid))
    assert session.load_status == "unavailable" and session.id != str(sid)


def test_corrupt_records_in_the_store_are_left_alone(
    memcached_nodes: Nodes, caplog: pytest.LogCaptureFixture
) -> None:
    servers = memcached_nodes(2)
    manager = manager_for(servers)
    sid = SessionId.parse(new_session(manager, a=1))
    key = Keys.of("", sid).record
    primary = raw(by_name(servers, sid.node))
    primary.set(key, b"MS\x01\x01\x00\x00" + b"\x00" * 20 + b"{not json", noreply=False)
    with caplog.at_level(logging.WARNING, "pymsm"):
        session = manager.load(str(sid))
    assert session.load_status == "corrupt" and "do not decode" in caplog.text
    session["b"] = 1
    manager.save(session)
    assert primary.get(key).endswith(b"{not json")


def test_a_session_over_the_item_size_limit_keeps_the_stored_version(
    memcached_nodes: Nodes, caplog: pytest.LogCaptureFixture
) -> None:
    servers = memcached_nodes(2)
    manager = manager_for(servers)
    sid = new_session(manager, a=1)
    session = manager.load(sid)
    session["blob"] = "x" * (1024 * 1024 + 10)
    with caplog.at_level(logging.ERROR, "pymsm"):
        assert manager.save(session).status == "failed"
    assert "item_size_limit" in caplog.text
    assert dict(manager.load(sid)) == {"a": 1}


def test_item_size_limit_follows_memcached_i(memcached_nodes: Nodes) -> None:
    """Nodes started with -I 2m take a 1.5 MB session once item_size_limit says so; before the
    setting, pymsm refused it at 1 MB whatever the nodes took."""
    servers = memcached_nodes(2, ("-I", "2m"))
    spec = ",".join(f"{s.name}:{s.address}" for s in servers)
    blob = "x" * (1536 * 1024)
    for limit, status in ((1024 * 1024, "failed"), (2 * 1024 * 1024, "stored")):
        manager = SessionManager(memcached_nodes=spec, item_size_limit=limit)
        session = manager.load(None)
        session["blob"] = blob
        assert manager.save(session).status == status
        if status == "stored":
            assert manager.load(session.id)["blob"] == blob
        manager.close()


@pytest.mark.parametrize(
    "cookie",
    [
        "0123456789ABCDEF0123456789ABCDEF-n1 x",
        "0123456789ABCDEF0123456789ABCDEF-n1\r\nflush_all\r\n",
        "0123456789ABCDEF0123456789ABCDEF-n1." + "a" * 300,
        "bak:0123456789ABCDEF0123456789ABCDEF-n1",
    ],
)
def test_key_injection_never_reaches_the_store(memcached_nodes: Nodes, cookie: str) -> None:
    servers = memcached_nodes(2)
    manager = manager_for(servers)
    sid = new_session(manager, a=1)
    session = manager.load(cookie)
    assert session.is_new and session.load_status == "new"
    assert manager.load(sid)["a"] == 1  # nothing was flushed or overwritten


def test_async_backup_a_logout_whose_node_is_cut_off_after_the_load_ends_the_session(
    partitionable_pair: Cluster,
) -> None:
    """Sticky mode with `session_backup_async`: the session's node is cut off between the
    logout's load and its background write. The writer makes the logout's deletes on real
    answers (core/sticky.Later): the backup copy on the other node goes, after its tombstone,
    so neither this process nor another one behind the route that holds the session in memory
    serves it again; the node that missed the delete is owed it, and gets it once back."""
    servers, proxies = partitionable_pair
    crossed = {"sticky": True, "route": "app1", "failover_nodes": "n1", "node_dead_timeout": 0.5}
    app = through(partitionable_pair, session_backup_async=True, **crossed)
    other = through(partitionable_pair, **crossed)  # a second process behind the route
    assert app._sticky is not None
    cookie = new_session(app, user="ann")
    app._sticky.flush()
    assert other.load(cookie)["user"] == "ann"  # now in its memory too
    sid = SessionId.parse(cookie)
    home, backup = (by_name(servers, name) for name in ("n2", "n1"))
    assert sid.node == "n2"  # app1 keeps its sessions on the other host's node
    keys = Keys.of("", sid)
    session = app.load(cookie)
    assert session["user"] == "ann"
    proxies[servers.index(home)].cut()
    session.invalidate()
    app.save(session)
    app.release(session)
    app._sticky.flush()
    # (the backup copy's deletes are not waited for: give the server a moment)
    assert eventually(lambda: raw(backup).get(keys.backup) is None)
    assert raw(backup).get(keys.tomb) is not None
    assert [d.sid for d in app.owed.of("n2")] == [sid]
    for manager in (app, other):
        again = manager.load(cookie)
        assert again.is_new and dict(again) == {}
    proxies[servers.index(home)].heal()
    time.sleep(app.config.node_dead_timeout + 0.1)

    def a_request_pays() -> bool:  # requests go on; one reaches n2 again and its end pays
        session = app.open(None)
        session["other"] = 1
        app.save(session)
        app._sticky.flush()
        app.release(session)
        return not app.owed.of("n2")

    assert eventually(a_request_pays) and raw(home).get(keys.record) is None
