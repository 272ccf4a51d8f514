"""Real Redis servers for integration tests: one server, Sentinel (master, replica, three
sentinels) and a three-master Cluster, all on free loopback ports with files in tmp dirs.

Fixtures here are loaded by tests/conftest.py (`pytest_plugins`).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from support.servers import HOST, ServerProcess, free_port, require_binary

SERVICE = "mymaster"
CLUSTER_CREATE = ("--cluster-replicas", "0", "--cluster-yes")


def redis_argv(workdir: Path, *extra: str) -> Callable[[int], list[str]]:
    """redis-server on loopback, no snapshots unless `extra` asks, files under `workdir`."""
    binary = require_binary("redis-server", "redis-server")
    workdir.mkdir(parents=True, exist_ok=True)
    return lambda port: [
        binary,
        "--port",
        str(port),
        "--bind",
        HOST,
        "--dir",
        str(workdir),
        "--save",
        "",
        "--appendonly",
        "no",
        "--logfile",
        str(workdir / f"redis-{port}.log"),
        *extra,
    ]


def redis_server(workdir: Path, *extra: str, name: str = "") -> ServerProcess:
    return ServerProcess(redis_argv(workdir, *extra), name=name)


def client(port: int) -> redis.Redis:
    return redis.Redis(HOST, port, socket_timeout=2, socket_connect_timeout=2)


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `check` until true; fail naming `what` after `timeout` seconds (bounded wait)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except redis.RedisError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{what}: not reached after {timeout}s")


@pytest.fixture(scope="session")
def redis_single(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One redis-server for the whole run; tests use unique keys (or flush what they own)."""
    server = redis_server(tmp_path_factory.mktemp("redis"), name="redis").start()
    yield server
    server.stop()


# -- Sentinel ---------------------------------------------------------------------------------


class SentinelSetup:
    """A master, a replica and three sentinels watching `mymaster` (quorum 2)."""

    def __init__(self, workdir: Path, down_after_ms: int = 400) -> None:
        self.workdir = workdir
        self.master = redis_server(workdir / "master", name="master")
        self.replica = redis_server(workdir / "replica", name="replica")
        self.sentinels = [self._sentinel(i, down_after_ms) for i in range(3)]

    def _sentinel(self, index: int, down_after_ms: int) -> ServerProcess:
        binary = require_binary("redis-server", "redis-server")
        conf = self.workdir / f"sentinel-{index}.conf"
        port = free_port()

        def argv(port: int) -> list[str]:
            conf.write_text(
                f"port {port}\nbind {HOST}\ndir {self.workdir}\n"
                f"logfile {self.workdir / f'sentinel-{port}.log'}\n"
                f"sentinel monitor {SERVICE} {HOST} {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} {down_after_ms}\n"
                f"sentinel failover-timeout {SERVICE} 4000\n"
            )
            return [binary, str(conf), "--sentinel"]

        return ServerProcess(argv, port=port, name=f"sentinel{index}")

    @property
    def url(self) -> str:
        hosts = ",".join(s.address for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def start(self) -> SentinelSetup:
        self.master.start()
        self.replica.start()
        client(self.replica.port).replicaof(HOST, self.master.port)
        for sentinel in self.sentinels:
            sentinel.start()
        wait_until(self._ready, 15, "replica in sync and sentinels aware of each other")
        return self

    def _ready(self) -> bool:
        info = client(self.replica.port).info("replication")
        if info.get("master_link_status") != "up":
            return False
        return all(
            len(client(s.port).sentinel_sentinels(SERVICE)) == 2
            and len(client(s.port).sentinel_slaves(SERVICE)) == 1
            for s in self.sentinels
        )

    def master_port(self) -> int:
        """The port the sentinels currently name as master."""
        _host, port = client(self.sentinels[0].port).sentinel_get_master_addr_by_name(SERVICE)
        return int(port)

    def stop(self) -> None:
        for server in [*self.sentinels, self.replica, self.master]:
            server.stop()


@pytest.fixture
def redis_sentinel(tmp_path: Path) -> Iterator[SentinelSetup]:
    setup = SentinelSetup(tmp_path)
    try:
        yield setup.start()
    finally:
        setup.stop()


# -- Cluster ----------------------------------------------------------------------------------


class ClusterSetup:
    """Three masters, no replicas, append-only files so a restarted node keeps its data."""

    def __init__(self, workdir: Path, size: int = 3) -> None:
        self.nodes = [self._node(workdir / f"node{i}", f"node{i}") for i in range(size)]

    @staticmethod
    def _node(workdir: Path, name: str) -> ServerProcess:
        # the cluster bus defaults to port + 10000, which a high free port cannot have
        bus = str(free_port())
        return redis_server(
            workdir,
            *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
            *("--cluster-port", bus, "--cluster-node-timeout", "5000"),
            *("--appendonly", "yes", "--appendfsync", "always"),
            name=name,
        )

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(n.address for n in self.nodes)

    def start(self) -> ClusterSetup:
        for node in self.nodes:
            node.start()
        cli = require_binary("redis-cli", "redis-tools")
        subprocess.run(
            [cli, "--cluster", "create", *(n.address for n in self.nodes), *CLUSTER_CREATE],
            check=True,
            capture_output=True,
            timeout=30,
        )
        self.wait_ok()
        return self

    def wait_ok(self) -> None:
        def ok() -> bool:
            infos = [client(n.port).cluster("info") for n in self.nodes]
            return all(
                info["cluster_state"] == "ok"
                and int(info["cluster_slots_ok"]) == 16384
                and int(info["cluster_known_nodes"]) == len(self.nodes)
                for info in infos
            )

        wait_until(ok, 20, "cluster_state:ok on every node")

    def owner(self, slot: int) -> ServerProcess:
        """The node serving `slot`, by asking the first running node."""
        running = next(n for n in self.nodes if n.running)
        slots: list[Any] = client(running.port).cluster("slots")
        for start, end, primary, *_replicas in slots:
            if start <= slot <= end:
                return next(n for n in self.nodes if n.port == int(primary[1]))
        raise AssertionError(f"no node serves slot {slot}")

    def migrate_slot(self, slot: int, source: ServerProcess, target: ServerProcess) -> int:
        """Move `slot` and its keys from `source` to `target` (CLUSTER SETSLOT + MIGRATE, as
        `redis-cli --cluster reshard` does); returns how many keys moved."""
        src, dst = client(source.port), client(target.port)
        src_id, dst_id = src.cluster("myid"), dst.cluster("myid")
        dst.cluster("setslot", slot, "importing", src_id)
        src.cluster("setslot", slot, "migrating", dst_id)
        moved = 0
        while keys := src.cluster("getkeysinslot", slot, 100):
            src.migrate(HOST, target.port, keys, 0, 5000)
            moved += len(keys)
        for node in self.nodes:
            client(node.port).cluster("setslot", slot, "node", dst_id)
        return moved

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterSetup]:
    """One cluster per test module: tests must not depend on which node serves which slot."""
    setup = ClusterSetup(tmp_path_factory.mktemp("cluster"))
    try:
        yield setup.start()
    finally:
        setup.stop()
