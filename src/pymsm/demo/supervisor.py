"""The demo supervisor: starts the store nodes, the app nodes and the balancer, knows their
state, kills and restarts them on demand, and stops everything.

    with Demo(DemoConfig(port=0)) as demo:        # port 0: a free balancer port (tests)
        demo.url, demo.state()
        demo.kill("memcached", "n1"); demo.start_node("memcached", "n1")

Thread-safe: the control API calls `kill`/`start_node`/`state` from its own threads.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from pymsm.balancer import BalancerConfig, BalancerThread, HealthCheck, parse_backends
from pymsm.balancer.nginx import full_config
from pymsm.demo import control
from pymsm.demo.config import DemoConfig
from pymsm.demo.processes import (
    HOST,
    DemoError,
    NodeProcess,
    Watchdog,
    free_port,
    gunicorn_argv,
    memcached_argv,
    nginx_argv,
    port_in_use,
    redis_argv,
)

STATUS_PATH = "/_balancer"
HEALTH_PATH = "/healthz"


class Demo:
    """A local cluster: `config.memcached` store nodes, `config.apps` app nodes, a balancer."""

    def __init__(self, config: DemoConfig, workdir: Path | None = None) -> None:
        self.config = config
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="pymsm-demo-"))
        self.port = config.port or free_port()
        self.watchdog = Watchdog()  # the nodes die with the demo, even when it is SIGKILLed
        self.stores = [self._store(name) for name in config.memcached_names]
        self.apps: list[NodeProcess] = []
        self.balancer: BalancerThread | None = None
        self.nginx: NodeProcess | None = None
        self.control = control.ControlServer(self)
        self._lock = threading.RLock()
        self._started = 0.0

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> Demo:
        """Start everything; on any failure stop what was started and raise DemoError."""
        try:
            if port_in_use(self.port):
                raise DemoError(busy_message(self.port))
            self.control.start()
            self.apps = [self._app(name) for name in self.config.app_names]
            for group in (self.stores, self.apps):  # apps connect to stores lazily, but
                for node in group:  # a first request must find them listening
                    node.spawn()
                for node in group:
                    node.wait_ready()
            self._start_balancer()
        except BaseException:
            self.stop()
            raise
        self._started = time.time()
        control.state_file(self.port).write_text(
            json.dumps({"pid": os.getpid(), "control": self.control.url, "url": self.url})
        )
        return self

    def stop(self) -> None:
        """Stop every child; safe to call twice or after a failed start."""
        with self._lock:
            info = control.state_file(self.port)
            if self._started and info.exists():
                info.unlink()
            if self.balancer is not None:
                self.balancer.stop()
            # apps before stores, so no app writes to a store that is going away
            for group in ([self.nginx] if self.nginx else [], self.apps, self.stores):
                for node in group:
                    node.send_stop()
                for node in group:
                    node.wait_stopped()
            self.watchdog.close()  # every node is stopped: nothing for it to kill
            if self.control.thread.is_alive():
                self.control.stop()
            if self._own_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Demo:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- nodes ------------------------------------------------------------------------------

    def _store(self, name: str) -> NodeProcess:
        port = free_port()
        log = self.workdir / f"{name}.log"
        if self.config.backend == "redis":
            argv = redis_argv(port, self.workdir)
            return NodeProcess("memcached", name, port, argv, log, watchdog=self.watchdog)
        argv = memcached_argv(
            port, self.config.memcached_binary, embedded=self.config.embedded_memcached
        )
        return NodeProcess("memcached", name, port, argv, log, watchdog=self.watchdog)

    def store_setting(self) -> str:
        """The `memcached_nodes` value every app node gets."""
        if self.config.backend == "redis":
            return f"redis://{self.stores[0].address}/0"
        return ",".join(f"{node.name}:{node.address}" for node in self.stores)

    def _app(self, name: str) -> NodeProcess:
        cfg = self.config
        env = {
            "APP_NAME": name,
            "MSM_MEMCACHED_NODES": self.store_setting(),
            "MSM_STICKY": "true" if cfg.sticky else "false",
            "MSM_LOCKING_MODE": cfg.locking,
            "MSM_NODE_DEAD_TIMEOUT": "2s",  # a restarted node is used again soon: it's a demo
            "MSM_DEMO_CONTROL": self.control.url,
        }
        if cfg.failover_nodes:
            env["MSM_FAILOVER_NODES"] = cfg.failover_nodes
        if cfg.routes:
            env["MSM_ROUTE"] = name
        port = free_port()
        argv = gunicorn_argv(port, cfg.app_threads)
        log = self.workdir / f"{name}.log"
        return NodeProcess("app", name, port, argv, log, env, watchdog=self.watchdog)

    def node(self, kind: str, name: str) -> NodeProcess:
        """Raises KeyError with a message listing the known nodes."""
        kind = "memcached" if kind == "redis" else kind
        nodes = {"memcached": self.stores, "app": self.apps}.get(kind)
        if nodes is None:
            raise KeyError(f"unknown kind {kind!r}: use memcached or app")
        for node in nodes:
            if node.name == name:
                return node
        names = ", ".join(n.name for n in nodes)
        raise KeyError(f"no {kind} node {name!r}: the nodes are {names}")

    def kill(self, kind: str, name: str) -> str:
        with self._lock:
            node = self.node(kind, name)
            if not node.running:
                return f"{node.kind} {name} is already down"
            node.kill()
            return f"killed {node.kind} {name} ({node.address})"

    def start_node(self, kind: str, name: str) -> str:
        with self._lock:
            node = self.node(kind, name)
            if node.running:
                return f"{node.kind} {name} is already up"
            node.start()
            if node.kind == "app":
                self._balancer_sees_up(name)
            return f"started {node.kind} {name} on {node.address}"

    def _balancer_sees_up(self, name: str) -> None:
        """After a restart, wait (bounded) until the embedded balancer routes to the app again:
        its connection failure is forgotten at once, its failed health check at the next one."""
        if self.balancer is None:
            return
        self.balancer.mark_up(name)
        deadline = time.monotonic() + 2 * self.config.health_interval + 1.0
        while time.monotonic() < deadline:
            backends = self.balancer.state()["backends"]
            if any(b["name"] == name and b["up"] for b in backends):
                return
            time.sleep(0.05)

    # -- balancer ---------------------------------------------------------------------------

    def backends(self) -> list[str]:
        return [f"{node.name}={node.address}" for node in self.apps]

    def _start_balancer(self) -> None:
        cfg = self.config
        backends = parse_backends(self.backends())
        if cfg.uses_nginx:
            conf = self.workdir / "nginx.conf"
            listen = f"{HOST}:{self.port}"
            conf.write_text(full_config(backends, cfg.strategy, listen, workers="1"))
            self.nginx = NodeProcess(
                "balancer",
                "nginx",
                self.port,
                nginx_argv(self.workdir, conf),
                self.workdir / "nginx.log",
                watchdog=self.watchdog,
            )
            self.nginx.start()
            return
        # a dead app is seen at once (connection refused); the check's timeout only catches a
        # hung one, and 1 s marked live apps down on a loaded 2-CPU machine
        health = HealthCheck(HEALTH_PATH, cfg.health_interval, 5.0, cfg.fail_timeout)
        config = BalancerConfig(
            backends,
            host=HOST,
            port=self.port,
            strategy=cfg.strategy,
            status_path=STATUS_PATH,
            health=health,
            access_log=False,
        )
        self.balancer = BalancerThread(config).start()

    # -- state ------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """JSON-ready: the settings, each node's process state, and the balancer's view."""
        cfg = self.config
        # no lock: a node starting (seconds) must not stall the pages asking for the state
        stores = [node.state() for node in self.stores]
        apps = [node.state() for node in self.apps]
        view = self.balancer.state() if self.balancer is not None else None
        if view is not None:
            by_name = {b["name"]: b for b in view["backends"]}
            for app in apps:
                backend = by_name.get(app["name"], {})
                app["balancer"] = {"up": backend.get("up"), "reason": backend.get("reason", "")}
        return {
            "url": self.url,
            "mode": cfg.mode,
            "backend": cfg.backend,
            "locking": cfg.locking,
            "failover_nodes": cfg.failover_nodes,
            "balancer": {
                "kind": "nginx" if cfg.uses_nginx else "pymsm",
                "strategy": cfg.strategy,
                "url": self.url,
                "status": f"{self.url}{STATUS_PATH}" if view is not None else None,
                "requests": view["requests"] if view is not None else None,
            },
            "memcached": stores,
            "apps": apps,
            "control": self.control.url,
            "logs": str(self.workdir),
        }


def busy_message(port: int) -> str:
    hint = f"`msm demo --port {port + 1}`"
    running = control.state_file(port)
    if running.exists():
        return (
            f"port {port} is in use: a demo seems to run there already ({running}); "
            f"stop it with Ctrl-C, or start another with {hint}"
        )
    return f"port {port} on {HOST} is in use by another program: pick another with {hint}"
