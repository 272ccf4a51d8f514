"""The balancer: listening socket, backends and their pools, health checks, state and control.

Everything runs on one asyncio event loop; `state()`, `mark_down()` and `mark_up()` may be
called from another thread (they read or set plain attributes, no I/O). With a shared `Board`
(one `Balancer` per worker process, see `runner.run` and shared.py) health is shared by all
workers and `state()` sums every worker's counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from typing import Any

from pymsm.balancer.backends import Backend
from pymsm.balancer.config import BalancerConfig
from pymsm.balancer.health import check_forever
from pymsm.balancer.proxy import ClientConnection
from pymsm.balancer.shared import CLASSES, PUBLISH_INTERVAL, Board, SharedBackend
from pymsm.balancer.strategies import make_strategy
from pymsm.balancer.upstream import Pool, read_within

log = logging.getLogger("pymsm.balancer")
STOP_ROUNDS = 10  # stop(): cancel what is left this many times, this far apart, at most
STOP_ROUND_SECONDS = 0.2


class Balancer:
    """An HTTP/1.1 reverse proxy in front of `config.backends`.

    `await start()` binds (port 0 picks a free port, see `port`), `await stop()` closes the
    listener, client connections and pools. For a blocking or threaded use see
    `pymsm.balancer.run` and `BalancerThread`.
    """

    def __init__(self, config: BalancerConfig, board: Board | None = None, worker: int = 0) -> None:
        self.config = config
        self.board = board
        self.worker = worker
        self.backends: list[Backend] = (
            [Backend(spec) for spec in config.backends]
            if board is None
            else [SharedBackend(spec, board, i) for i, spec in enumerate(config.backends)]
        )
        self.strategy = make_strategy(config.strategy, config.route_cookie, config.session_cookie)
        self.pools = {
            spec.name: Pool(spec, config.limits.pool_size, config.timeouts.connect)
            for spec in config.backends
        }
        self.requests = 0
        self.connections = 0
        self.rejected = 0
        self.port = config.port
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._health: asyncio.Task[None] | None = None
        self._publish: asyncio.Task[None] | None = None
        self._started = 0.0

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._accept,
            self.config.host,
            self.config.port,
            backlog=1024,
            reuse_port=self.board is not None or None,  # workers: the kernel spreads connections
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._started = time.monotonic()
        if self.config.health.path is not None and self.worker == 0:
            # with workers, one of them checks for all: the health cells are shared
            self._health = asyncio.create_task(check_forever(self))
        if self.board is not None:
            self._publish = asyncio.create_task(self._publish_forever(self.board))
        names = ", ".join(f"{b.name}={b.spec.address}" for b in self.backends)
        log.info(
            "balancer listening on %s:%d, strategy %s, backends %s",
            self.config.host,
            self.port,
            self.config.strategy,
            names,
        )

    async def serve_forever(self) -> None:
        if self._server is None:
            await self.start()
        assert self._server is not None
        try:
            await self._server.serve_forever()
        finally:
            await self.stop()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        background = [task for task in (self._health, self._publish) if task is not None]
        pending: set[asyncio.Task[Any]] = {*background, *self._tasks}
        for _ in range(STOP_ROUNDS):
            if not pending:
                break
            # cancel again while any is left: a task that survives one cancel (code that
            # catches it to clean up, a cancel lost in a timeout race) must not keep this
            # worker, and so its supervisor, from ever exiting
            for task in pending:
                task.cancel()
            done, pending = await asyncio.wait(pending, timeout=STOP_ROUND_SECONDS)
            for task in done:
                if not task.cancelled():
                    task.exception()  # retrieved: connection tasks log their own errors
        if pending:
            log.warning("balancer stopping with %d task(s) that would not end", len(pending))
        for pool in self.pools.values():
            pool.close()
        self._server = None
        self._health = self._publish = None

    async def _publish_forever(self, board: Board) -> None:
        """Publish counters; stop (SIGTERM to ourselves) when the parent died, so a killed
        supervisor leaves no workers holding the port."""
        pid, parent = os.getpid(), os.getppid()
        while True:
            board.publish(self.worker, pid, self)
            if os.getppid() != parent:
                log.warning("balancer worker %d: parent %d exited; stopping", self.worker, parent)
                os.kill(pid, signal.SIGTERM)
                return
            await asyncio.sleep(PUBLISH_INTERVAL)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.connections >= self.config.limits.max_connections:
            await self._refuse(reader, writer)
            return
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            await ClientConnection(self, reader, writer).run()
        except asyncio.CancelledError:
            # stop() cancels open keep-alive connections. Ending the task cancelled would make
            # Python 3.11's asyncio.streams log a CancelledError traceback (it calls
            # task.exception() on it); this task is ours and nobody awaits its result.
            writer.close()
        except Exception:  # a bug must cost one connection, not the balancer
            log.exception("connection from %s failed", writer.get_extra_info("peername"))
        finally:
            self.connections -= 1
            self._tasks.discard(task)

    async def _refuse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Over `max_connections`: a 503, without parsing. The request is read (briefly) before
        closing, as closing a socket with unread data sends a reset instead of our answer."""
        self.rejected += 1
        writer.write(
            b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\nconnection: close\r\n"
            b"content-length: 21\r\n\r\ntoo many connections\n"
        )
        with contextlib.suppress(OSError, asyncio.TimeoutError):
            await writer.drain()
            await read_within(reader, 0.5)
        writer.close()

    # --- health and control

    def backend(self, name: str) -> Backend:
        for backend in self.backends:
            if backend.name == name:
                return backend
        raise KeyError(name)

    def backend_failed(self, backend: Backend, reason: str) -> None:
        fail_timeout = self.config.health.fail_timeout
        log.warning("backend %s failed (%s); skipped for %gs", backend.name, reason, fail_timeout)
        backend.fail(time.monotonic(), fail_timeout, reason)
        self.pools[backend.name].close()

    def set_admin(self, name: str, down: bool) -> None:
        backend = self.backend(name)
        backend.admin_down = down
        if not down:
            backend.failed_until = 0.0
        log.info("backend %s marked %s", name, "down" if down else "up")

    def mark_down(self, name: str) -> None:
        """Take a backend out of rotation until `mark_up` (raises KeyError for unknown names)."""
        self.set_admin(name, down=True)

    def mark_up(self, name: str) -> None:
        """Put a backend back, also clearing a passive failure; active checks still apply."""
        self.set_admin(name, down=False)

    def state(self) -> dict[str, Any]:
        """A JSON-ready snapshot: listener, strategy, totals and one entry per backend (summed
        over all workers when there are several, plus a `workers` list)."""
        state = self._local_state()
        if self.board is not None:
            add_workers(state, self.board, self.worker, self)
        return state

    def _local_state(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "name": self.config.name,
            "listen": f"{self.config.host}:{self.port}",
            "strategy": self.config.strategy,
            "health_path": self.config.health.path,
            "uptime": round(now - self._started, 3) if self._started else 0.0,
            "connections": self.connections,
            "requests": self.requests,
            "rejected": self.rejected,
            "backends": [
                {**b.state(now), "idle_connections": self.pools[b.name].idle} for b in self.backends
            ],
        }


def add_workers(state: dict[str, Any], board: Board, me: int, balancer: Balancer) -> None:
    """Replace this process's counters in `state` by the sums over every worker's slot."""
    board.publish(me, os.getpid(), balancer)
    totals = {"connections": 0, "requests": 0, "rejected": 0}
    workers = []
    for backend in state["backends"]:
        backend.update(active=0, requests=0, failures=0, responses={})
    for worker in range(board.workers):
        (pid, connections, requests, rejected), counts = board.worker(worker)
        if pid == 0:
            continue  # not started yet, or restarting
        workers.append({"pid": pid, "connections": connections, "requests": requests})
        for key, value in zip(totals, (connections, requests, rejected), strict=True):
            totals[key] += value
        for backend, (active, sent, failures, *responses) in zip(
            state["backends"], counts, strict=True
        ):
            backend["active"] += active
            backend["requests"] += sent
            backend["failures"] += failures
            for key, count in zip(CLASSES, responses, strict=True):
                if count:
                    backend["responses"][key] = backend["responses"].get(key, 0) + count
    state.update(totals, workers=workers)
