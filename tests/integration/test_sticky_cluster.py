"""Sticky mode end to end: gunicorn app processes and real memcached nodes, crossed over as
two hosts (host 1 runs app1 and n1, host 2 runs app2 and n2; app1 keeps its sessions on n2
and lists n1 as failover node, app2 the other way round). Nodes die by SIGKILL."""

from __future__ import annotations

import http.client
import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pymemcache.client.base import Client

from support.partition import PartitionProxy
from support.servers import HOST, ServerProcess

pytestmark = pytest.mark.integration
TESTS = str(Path(__file__).resolve().parents[1])
Nodes = Callable[[int], list[ServerProcess]]


def gunicorn(route: str, nodes: list[ServerProcess] | list[Via], failover: str) -> ServerProcess:
    env = [
        f"MSM_MEMCACHED_NODES={','.join(f'{n.name}:{n.address}' for n in nodes)}",
        f"MSM_FAILOVER_NODES={failover}",
        "MSM_STICKY=true",
        f"MSM_ROUTE={route}",
        "MSM_NODE_DEAD_TIMEOUT=0.3",
    ]
    argv = ["env", *env, sys.executable, "-m", "gunicorn", "-w", "1", "--pythonpath", TESTS]
    return ServerProcess(
        lambda port: [*argv, "-b", f"{HOST}:{port}", "support.sticky_wsgi:app"], name=route
    )


@pytest.fixture
def apps() -> Iterator[Callable[..., ServerProcess]]:
    started: list[ServerProcess] = []

    def start(route: str, nodes: list[ServerProcess] | list[Via], failover: str) -> ServerProcess:
        server = gunicorn(route, nodes, failover).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


class Browser:
    """Keeps the session cookie like a browser does."""

    def __init__(self, cookie: str | None = None) -> None:
        self.cookie = cookie

    def get(self, app: ServerProcess, path: str = "/") -> dict[str, Any]:
        conn = http.client.HTTPConnection(HOST, app.port, timeout=10)
        headers = {"Cookie": f"MSMSESSIONID={self.cookie}"} if self.cookie else {}
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        body: dict[str, Any] = json.loads(response.read())
        set_cookie = response.getheader("Set-Cookie")
        if set_cookie:
            self.cookie = set_cookie.split(";")[0].partition("=")[2] or None
        conn.close()
        assert response.status == 200
        return body


def crossed(memcached_nodes: Nodes, apps: Any) -> tuple[ServerProcess, ...]:
    """The crossed-over layout: two nodes, app1 and app2 each listing the other host's node
    as its failover node. Returns m1, m2, app1, app2."""
    m1, m2 = memcached_nodes(2)
    return m1, m2, apps("app1", [m1, m2], "n1"), apps("app2", [m1, m2], "n2")


def stored(node: ServerProcess, key: str) -> bytes | None:
    client = Client((HOST, node.port), timeout=2)
    try:
        value: bytes | None = client.get(key)
        return value
    finally:
        client.close()


def test_takeover_moves_the_session_to_the_other_route(memcached_nodes: Nodes, apps: Any) -> None:
    m1, m2, app1, app2 = crossed(memcached_nodes, apps)
    user = Browser()
    user.get(app1, "/set?user=ann")
    old = user.cookie
    assert old is not None and old.endswith("-n2.app1") and stored(m2, old) is not None
    body = user.get(app2)
    assert body["data"] == {"user": "ann"}
    assert user.cookie is not None and user.cookie.endswith("-n1.app2")
    assert user.cookie.split("-")[0] == old.split("-")[0]
    assert stored(m2, old) is None and stored(m1, user.cookie) is not None
    assert user.get(app2, "/set?more=1")["data"] == {"user": "ann", "more": "1"}


@pytest.mark.parametrize("path", ["/login", "/logout"])
def test_a_takeover_and_a_login_or_logout_in_one_request_end_the_old_id(
    memcached_nodes: Nodes, apps: Any, path: str
) -> None:
    """The load balancer sends the user to the other route for a login (id rotated) or a
    logout: the id the session had there ends too, in the process that still holds it in
    memory and in the store (before, the takeover's delete of that id was forgotten)."""
    m1, _, app1, app2 = crossed(memcached_nodes, apps)
    user = Browser()
    user.get(app2, "/set?user=ann")
    old = user.cookie
    assert old is not None and old.endswith("-n1.app2")
    body = user.get(app1, path)
    assert body["data"] == ({"user": "ann"} if path == "/login" else {})
    assert body["id"].split("-")[0] != old.split("-")[0]  # a new base: rotated or a new session
    for app in (app2, app1):
        assert Browser(old).get(app)["data"] == {}  # the old cookie, replayed
    assert stored(m1, old) is None


def test_dead_cache_node_relocates_and_a_dead_host_loses_nothing(
    memcached_nodes: Nodes, apps: Any
) -> None:
    _, m2, app1, app2 = crossed(memcached_nodes, apps)
    users = []
    for i in range(4):
        for app in (app1, app2):
            user = Browser()
            user.get(app, f"/set?user=u{i}{app.name}")
            users.append((user, app))
    m2.kill()  # app1's sessions live on n2: they move to n1, app1's failover node
    for user, app in users:
        if app is app1:
            assert user.get(app1)["data"] == {"user": f"u{user_index(users, user)}app1"}
            assert user.cookie is not None and user.cookie.endswith("-n1.app1")
    app2.kill()  # host 2 is gone entirely: app1 serves every session
    for user, app in users:
        expected = {"user": f"u{user_index(users, user)}{app.name}"}
        assert user.get(app1)["data"] == expected
        assert user.cookie is not None and user.cookie.endswith("-n1.app1")


def user_index(users: list[tuple[Browser, ServerProcess]], user: Browser) -> int:
    return [u for u, _ in users].index(user) // 2


def test_all_nodes_down_and_back(memcached_nodes: Nodes, apps: Any) -> None:
    m1, m2 = memcached_nodes(2)
    app1 = apps("app1", [m1, m2], "n1")
    user = Browser()
    user.get(app1, "/incr")
    cookie = user.cookie
    m1.kill()
    m2.kill()
    for n in range(2, 5):
        assert user.get(app1, "/incr")["data"] == {"n": n}
        assert user.cookie == cookie  # no cookie churn while nothing can store it
    m1.start()
    m2.start()
    assert cookie is not None
    for _ in range(50):  # the nodes are retried once node_dead_timeout (0.3 s) passed
        assert user.get(app1)["data"] == {"n": 4}
        if stored(m2, user.cookie or "") or stored(m1, user.cookie or ""):
            break
        time.sleep(0.1)
    home = m2 if user.cookie == cookie else m1  # n2, or n1 if n1 answered first
    assert stored(home, user.cookie or "") is not None


def test_two_processes_behind_one_route_never_serve_stale_data(
    memcached_nodes: Nodes, apps: Any
) -> None:
    m1, m2 = memcached_nodes(2)
    a = apps("app1", [m1, m2], "n1")
    b = apps("app1", [m1, m2], "n1")
    user = Browser()
    pids = set()
    for n in range(1, 13):
        body = user.get((a, b)[n % 2], "/incr")
        assert body["data"] == {"n": n}
        pids.add(body["pid"])
    assert len(pids) == 2
    user.get(a, "/logout")
    assert user.get(b)["data"] == {}


def test_a_restarted_app_process_keeps_its_sessions_when_their_node_dies(
    memcached_nodes: Nodes, apps: Any
) -> None:
    """Invariant 1 when memory holds nothing: app1 restarted (a deploy), then n2, where its
    sessions live, dies. The backup copies on n1 serve them."""
    m1, m2 = memcached_nodes(2)
    app1 = apps("app1", [m1, m2], "n1")
    user = Browser()
    user.get(app1, "/set?user=ann")
    assert user.cookie is not None and user.cookie.endswith("-n2.app1")
    app1.stop()
    app1.start()  # a new process: nothing in memory
    m2.kill()
    assert user.get(app1)["data"] == {"user": "ann"}
    assert user.cookie is not None and user.cookie.endswith("-n1.app1")


def test_two_processes_behind_one_route_serve_no_stale_copy_when_the_node_dies(
    memcached_nodes: Nodes, apps: Any
) -> None:
    """b holds an older copy than a wrote; once the session's node is dead, b must not serve
    its own copy (invariant 5): the backup copy's stamp tells it a newer one exists."""
    m1, m2 = memcached_nodes(2)
    a = apps("app1", [m1, m2], "n1")
    b = apps("app1", [m1, m2], "n1")
    user = Browser()
    assert user.get(a, "/incr")["data"] == {"n": 1}
    assert user.get(b, "/incr")["data"] == {"n": 2}  # b holds n=2 in memory
    copy = f"bak:validity:{user.cookie}"
    before = stored(m1, copy)
    assert user.get(a, "/incr")["data"] == {"n": 3}
    # the backup copy is written without waiting for an answer: a primary that dies before it
    # lands takes the change with it (as in non-sticky mode); let it land, then kill
    deadline = time.monotonic() + 5
    while stored(m1, copy) == before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stored(m1, copy) != before
    m2.kill()
    assert user.get(b)["data"] == {"n": 3}
    assert user.get(a, "/incr")["data"] == {"n": 4}  # and nothing is lost either way
    assert user.get(b)["data"] == {"n": 4}


def test_a_logout_its_node_missed_is_made_there_once_it_is_back(
    memcached_nodes: Nodes, apps: Any
) -> None:
    """Invariant 6 across a partition: a logs the user out while n2, the session's node, is cut
    off (its data kept); b holds the session in memory. a owes n2 that delete (core/owed.py)
    and makes it at the end of its first request that reaches n2 again; b then sees the
    tombstone validity there and does not serve its copy."""
    m1, m2 = memcached_nodes(2)
    proxies = [PartitionProxy(m1.port), PartitionProxy(m2.port)]
    try:
        via = [Via(m.name, p.address) for m, p in zip((m1, m2), proxies, strict=True)]
        a = apps("app1", via, "n1")
        b = apps("app1", via, "n1")
        user = Browser()
        user.get(a, "/set?user=ann")
        cookie = user.cookie
        assert cookie is not None and cookie.endswith("-n2.app1")
        assert user.get(b)["data"] == {"user": "ann"}  # b holds it in memory now
        proxies[1].cut()
        assert user.get(a, "/logout")["data"] == {}
        proxies[1].heal()
        assert stored(m2, cookie) is not None  # n2 missed the logout
        time.sleep(0.5)  # past the dead time (0.3 s)
        deadline = time.monotonic() + 10
        while stored(m2, cookie) is not None and time.monotonic() < deadline:
            Browser().get(a, "/set?other=1")  # new sessions live on n2: a reaches it again
        assert stored(m2, cookie) is None
        replayed = Browser(cookie).get(b)
        assert replayed["data"] == {} and replayed["id"] != cookie
    finally:
        for proxy in proxies:
            proxy.stop()


@dataclass
class Via:
    """A node as the apps see it: its name, and the address of the proxy in front of it."""

    name: str
    address: str
