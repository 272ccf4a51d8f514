"""Each example app in two server processes (gunicorn for WSGI, uvicorn for ASGI) against two
real memcached nodes: one session seen by both processes, id rotation on login, logout, ignored
static paths, cookie attributes, and failover when the node named in the id is killed."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from pymemcache.client.base import Client as MemcacheClient

from support.servers import ServerProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]
Nodes = Callable[[int], list[ServerProcess]]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@dataclass(frozen=True)
class Framework:
    name: str
    cookie: str
    argv: Callable[[int], list[str]]
    attributes: tuple[str, ...]  # the framework's defaults (Flask sets no SameSite)


def gunicorn(chdir: Path, app: str) -> Callable[[int], list[str]]:
    return lambda port: [
        *(sys.executable, "-m", "gunicorn", "-w", "1", "-b", f"127.0.0.1:{port}"),
        *("--chdir", str(chdir), app),
    ]


def uvicorn(port: int) -> list[str]:
    return [
        *(sys.executable, "-m", "uvicorn", "--app-dir", str(EXAMPLES), "--port", str(port)),
        *("--log-level", "warning", "fastapi_app:app"),
    ]


FRAMEWORKS = {
    "flask": Framework(
        "flask", "session", gunicorn(EXAMPLES, "flask_app:app"), ("path=/", "httponly")
    ),
    "django": Framework(
        "django",
        "sessionid",
        gunicorn(EXAMPLES / "django_project", "project.wsgi"),
        ("path=/", "httponly", "samesite=lax", "max-age=1209600"),
    ),
    "fastapi": Framework(
        "fastapi", "MSMSESSIONID", uvicorn, ("path=/", "httponly", "samesite=lax")
    ),
}


@dataclass
class Cluster:
    framework: Framework
    nodes: list[ServerProcess]
    apps: list[ServerProcess]

    def url(self, app: int, path: str) -> str:
        return f"http://127.0.0.1:{self.apps[app].port}{path}"

    def node_of(self, client: httpx.Client) -> int:
        node = client.cookies[self.framework.cookie].split("-")[1]
        return int(node[1:]) - 1


@pytest.fixture(params=sorted(FRAMEWORKS))
def cluster(
    request: pytest.FixtureRequest, memcached_nodes: Nodes, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Cluster]:
    framework = FRAMEWORKS[request.param]
    nodes = memcached_nodes(2)
    setting = ",".join(f"{n.name}:{n.address}" for n in nodes)
    monkeypatch.setenv("MSM_MEMCACHED_NODES", setting)  # the app servers inherit it
    monkeypatch.setenv("MSM_NODE_DEAD_TIMEOUT", "30s")
    apps = [ServerProcess(framework.argv, name=f"app{i}").start() for i in (1, 2)]
    yield Cluster(framework, nodes, apps)
    for app in apps:
        app.stop()


def gets(node: ServerProcess) -> int:
    client = MemcacheClient(("127.0.0.1", node.port))
    try:
        return int(client.stats()[b"cmd_get"])
    finally:
        client.close()


def test_one_session_across_processes(cluster: Cluster) -> None:
    name = cluster.framework.cookie
    with httpx.Client() as client:
        first = client.get(cluster.url(0, "/count"))
        assert first.json()["count"] == 1
        header = first.headers["set-cookie"]
        assert header.startswith(f"{name}=")
        parts = {part.strip().lower() for part in header.split(";")[1:]}
        assert set(cluster.framework.attributes) <= parts and "secure" not in parts
        assert client.get(cluster.url(1, "/count")).json()["count"] == 2
        before = client.cookies[name]
        # ignored static path: no session work at all, no cookie
        counts = [gets(node) for node in cluster.nodes]
        static = client.get(cluster.url(1, "/static/app.css"))
        assert static.status_code == 200 and "set-cookie" not in static.headers
        assert [gets(node) for node in cluster.nodes] == counts
        # login rotates the id (same node), data kept, the old id is dead
        client.get(cluster.url(1, "/login"))
        after = client.cookies[name]
        assert after != before and after.split("-")[1] == before.split("-")[1]
        assert client.get(cluster.url(0, "/count")).json() == {"count": 3, "user": "ann"}
        stale = httpx.get(cluster.url(0, "/count"), cookies={name: before})
        assert stale.json()["count"] == 1
        # logout ends it everywhere
        bye = client.get(cluster.url(0, "/logout"))
        assert name not in client.cookies or bye.headers["set-cookie"].startswith(f"{name}=")
        gone = httpx.get(cluster.url(1, "/count"), cookies={name: after})
        assert gone.json() == {"count": 1, "user": None}


def test_failover_of_the_node_in_the_id(cluster: Cluster) -> None:
    name = cluster.framework.cookie
    with httpx.Client() as client:
        client.get(cluster.url(0, "/count"))
        assert client.get(cluster.url(1, "/count")).json()["count"] == 2
        node = cluster.node_of(client)
        before = client.cookies[name]
        cluster.nodes[node].kill()
        moved = client.get(cluster.url(1, "/count"))
        assert moved.json()["count"] == 3  # same data, from the backup copy
        assert f"{name}=" in moved.headers.get("set-cookie", "")
        assert cluster.node_of(client) == 1 - node  # the new cookie names the other node
        assert client.cookies[name].split("-")[0] == before.split("-")[0]  # only the node moved
        assert client.get(cluster.url(0, "/count")).json()["count"] == 4
