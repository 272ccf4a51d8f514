"""Two gunicorn app processes behind two real memcached nodes, many clients on one session."""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pymemcache.client.base import Client

from support.servers import HOST, ServerProcess

pytestmark = pytest.mark.integration
APP_DIR = str(Path(__file__).parent)


class Cluster:
    def __init__(self, nodes: list[ServerProcess], apps: list[ServerProcess]) -> None:
        self.nodes, self.apps = nodes, apps
        self.clients: list[Client] = []

    def request(self, app: int, path: str, cookie: str | None = None) -> tuple[int, Any, str]:
        """(status, JSON body, the session cookie in effect afterwards)."""
        conn = http.client.HTTPConnection(HOST, self.apps[app].port, timeout=30)
        try:
            headers = {"Cookie": f"MSMSESSIONID={cookie}"} if cookie else {}
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            raw = response.read()
            set_cookie = response.getheader("Set-Cookie") or ""
        finally:
            conn.close()
        if set_cookie.startswith("MSMSESSIONID="):
            cookie = set_cookie.split(";")[0].split("=", 1)[1] or None
        body = json.loads(raw) if response.status == 200 else raw
        return response.status, body, cookie or ""

    def memcached(self, sid: str) -> Client:
        """A raw client to the node holding `sid` (closed when the cluster stops)."""
        node = self.nodes[int(sid.rsplit("-", 1)[1][1:]) - 1]
        return self.client(node)

    def client(self, node: ServerProcess) -> Client:
        client = Client((HOST, node.port), no_delay=True)
        self.clients.append(client)
        return client

    def stats(self) -> list[dict[str, int]]:
        return [self.request(i, "/stats")[1] for i in range(len(self.apps))]


def app_server(nodes: str, settings: dict[str, Any]) -> ServerProcess:
    args = ", ".join(f"{k}={v!r}" for k, v in {"memcached_nodes": nodes, **settings}.items())
    return ServerProcess(
        lambda port: [
            sys.executable,
            "-m",
            "gunicorn",
            "-b",
            f"{HOST}:{port}",
            "-w",
            "1",
            "-k",
            "gthread",
            "--threads",
            "12",
            "--chdir",
            APP_DIR,
            "--graceful-timeout",
            "1",
            f"locking_app:create({args})",
        ]
    )


@pytest.fixture
def cluster(
    memcached_nodes: Callable[[int], list[ServerProcess]],
) -> Iterator[Callable[..., Cluster]]:
    apps: list[ServerProcess] = []
    started: list[Cluster] = []

    def start(*per_app: dict[str, Any], **settings: Any) -> Cluster:
        nodes = memcached_nodes(2)
        spec = ",".join(f"{n.name}:{n.address}" for n in nodes)
        for extra in per_app or ({}, {}):
            apps.append(app_server(spec, {**settings, **extra}).start())
        started.append(Cluster(nodes, apps))
        return started[-1]

    yield start
    for c in started:
        for client in c.clients:
            client.close()
    for app in apps:
        app.stop()


def hammer(clients: int, job: Callable[[int], None]) -> None:
    """Run job(i) in `clients` threads released together; re-raise the first failure."""
    barrier, errors = threading.Barrier(clients), []

    def run(i: int) -> None:
        try:
            barrier.wait(10)
            job(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors


def test_optimistic_loses_no_update_to_different_keys(cluster: Callable[..., Cluster]) -> None:
    c = cluster(locking_mode="optimistic")
    _, _, sid = c.request(0, "/incr?key=init")
    clients, rounds = 8, 5

    def job(i: int) -> None:
        for r in range(rounds):
            status, _, _ = c.request((i + r) % 2, f"/incr?key=k{i}&sleep=0.02", sid)
            assert status == 200

    hammer(clients, job)
    data = c.request(0, "/get", sid)[1]["data"]
    assert data == {"init": 1, **{f"k{i}": rounds for i in range(clients)}}
    assert sum(s.get("cas_conflict", 0) for s in c.stats()) > 0  # the race did happen


def test_all_mode_loses_no_update_to_one_key(cluster: Callable[..., Cluster]) -> None:
    c = cluster(locking_mode="all", lock_wait_timeout="20s", lock_failure="error")
    _, _, sid = c.request(0, "/incr")
    clients, rounds = 6, 4

    def job(i: int) -> None:
        for r in range(rounds):
            assert c.request((i + r) % 2, "/incr?sleep=0.01", sid)[0] == 200

    hammer(clients, job)
    assert c.request(1, "/get", sid)[1]["data"] == {"n": 1 + clients * rounds}


def test_none_mode_can_lose_updates(cluster: Callable[..., Cluster]) -> None:
    c = cluster(locking_mode="none")
    _, _, sid = c.request(0, "/incr")
    clients = 6

    def job(i: int) -> None:  # all read n=1, sleep, write n=2: the documented lost update
        assert c.request(i % 2, "/incr?sleep=0.3", sid)[0] == 200

    hammer(clients, job)
    assert c.request(0, "/get", sid)[1]["data"]["n"] < 1 + clients


def test_logout_wins_over_in_flight_writes(cluster: Callable[..., Cluster]) -> None:
    c = cluster()
    _, _, sid = c.request(0, "/incr?key=user")
    results: list[int] = []

    def job(i: int) -> None:
        if i == 0:
            time.sleep(0.2)  # the others have loaded the session and are sleeping
            status, _, cookie = c.request(1, "/logout", sid)
            assert status == 200 and cookie == ""
        else:
            results.append(c.request(i % 2, f"/incr?key=k{i}&sleep=0.6", sid)[0])

    hammer(5, job)
    assert results == [200] * 4
    body = c.request(0, "/get", sid)[1]
    assert body["data"] == {} and body["id"] != sid and body["status"] == "missing"
    for node in c.nodes:
        client = c.client(node)
        assert client.get(sid) is None and client.get("bak:" + sid) is None


def test_a_killed_lock_holder_frees_the_session(cluster: Callable[..., Cluster]) -> None:
    c = cluster(
        locking_mode="all", lock_expiration=1, lock_wait_timeout="10s", lock_failure="error"
    )
    _, _, sid = c.request(0, "/incr")
    worker = c.request(0, "/pid")[1]["pid"]
    mc = c.memcached(sid)
    holder = threading.Thread(target=lambda: _quietly(c.request, 0, "/hang?sleep=30", sid))
    holder.start()
    _until(lambda: mc.get("lock:" + sid) is not None)
    os.kill(worker, signal.SIGKILL)  # the process running the request dies mid-request
    c.apps[0].kill()
    assert c.request(1, "/incr", sid)[0] == 200
    assert c.request(1, "/get", sid)[1]["data"] == {"n": 2}
    holder.join(10)


def test_a_late_release_leaves_the_new_owners_lock(cluster: Callable[..., Cluster]) -> None:
    short, long = {"lock_expiration": 1}, {"lock_expiration": 60}
    c = cluster(short, long, locking_mode="all", lock_wait_timeout="10s", lock_failure="error")
    _, _, sid = c.request(0, "/incr")
    mc = c.memcached(sid)
    first = threading.Thread(target=lambda: c.request(0, "/hang?sleep=3", sid))
    first.start()
    _until(lambda: mc.get("lock:" + sid) is not None)
    first_token = mc.get("lock:" + sid)
    second = threading.Thread(target=lambda: c.request(1, "/hang?sleep=5", sid))
    second.start()
    _until(lambda: mc.get("lock:" + sid) not in (None, first_token))  # ours expired, taken
    second_token = mc.get("lock:" + sid)
    first.join(60)  # the first holder ends and releases late
    assert not first.is_alive()
    # the release runs when the server closes the body, just after the client got it
    _until(lambda: c.stats()[0]["lock_lost"] == 1)
    assert mc.get("lock:" + sid) == second_token
    second.join(60)
    assert not second.is_alive()
    _until(lambda: mc.get("lock:" + sid) is None)  # the owner released its own lock


def test_auto_runs_learned_read_only_requests_in_parallel(
    cluster: Callable[..., Cluster],
) -> None:
    c = cluster(locking_mode="auto", lock_wait_timeout="20s")
    _, _, sid = c.request(0, "/incr")
    for app in (0, 1):
        for _ in range(3):  # the learner's threshold, in each process
            c.request(app, "/read", sid)
    spans: dict[str, list[tuple[float, float]]] = {"read": [], "incr": []}

    def job(i: int) -> None:
        action = "read" if i < 4 else "incr"
        status, body, _ = c.request(i % 2, f"/{action}?sleep=0.3", sid)
        assert status == 200
        spans[action].append((body["enter"], body["exit"]))

    hammer(7, job)
    reads, writes = spans["read"], sorted(spans["incr"])
    assert max(e for e, _ in reads) < min(x for _, x in reads)  # all four overlapped
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(writes))  # serialized
    assert c.request(0, "/get", sid)[1]["data"] == {"n": 4}


def _until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def _quietly(fn: Callable[..., Any], *args: Any) -> None:
    with contextlib.suppress(OSError, http.client.HTTPException):
        fn(*args)  # the server is killed under this request
