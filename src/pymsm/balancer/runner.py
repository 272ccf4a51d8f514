"""Ways to run a balancer: blocking (`run`, several worker processes when `config.workers` > 1),
in a background thread (`BalancerThread`), or as a subprocess (`command` gives the argv of
`msm balancer` for a config)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from types import TracebackType
from typing import Any

from pymsm.balancer.config import BalancerConfig
from pymsm.balancer.server import Balancer
from pymsm.balancer.shared import Board
from pymsm.exceptions import ConfigError

log = logging.getLogger("pymsm.balancer")
STOP_GRACE = 3.0  # seconds the supervisor waits for its stopped workers before killing them


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when installed (the `balancer` extra; about twice the throughput), else
    asyncio's."""
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def run(config: BalancerConfig) -> None:
    """Serve until Ctrl-C (KeyboardInterrupt) or SIGTERM (a clean stop, then return).

    With `config.workers` > 1 this process forks that many workers, each with its own event
    loop and its own socket on the same port (SO_REUSEPORT: the kernel spreads connections),
    sharing health and counters through a `Board`; it restarts a worker that dies and stops
    them all on SIGTERM or Ctrl-C.
    """
    if config.workers == 1:
        _serve(Balancer(config))
    else:
        _supervise(config)


def _serve(balancer: Balancer) -> None:
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(_serve_until_terminated(balancer))
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def _supervise(config: BalancerConfig) -> None:
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as reserved:
        # bound, never listening: fails early if the address is taken, resolves port 0, and
        # keeps the port ours while workers come and go
        reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        reserved.bind((config.host, config.port))
        config = dataclasses.replace(config, port=reserved.getsockname()[1])
        board = Board(len(config.backends), config.workers)
        children: dict[int, int] = {}  # pid -> worker index

        def terminated(signum: int, frame: object) -> None:
            raise _Terminated  # out of any wait, as Ctrl-C's KeyboardInterrupt

        previous = signal.signal(signal.SIGTERM, terminated)
        try:
            for index in range(config.workers):
                _spawn(children, config, board, index)
            _reap(children, config, board)
        except _Terminated:
            pass  # SIGTERM: a clean stop, then return
        finally:
            # a second signal must not cut the stop short: that would orphan the workers
            interrupt = signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            try:
                for pid in children:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGTERM)
                _wait_or_kill(list(children), STOP_GRACE)
            finally:
                signal.signal(signal.SIGINT, interrupt)
                signal.signal(signal.SIGTERM, previous)


class _Terminated(Exception):
    """SIGTERM reached the supervisor."""


def _wait_or_kill(pids: list[int], grace: float) -> None:
    """Wait up to `grace` seconds for the stopped workers, then SIGKILL what is left: a worker
    that does not finish its clean stop must not keep the supervisor (and the port) forever."""
    deadline = time.monotonic() + grace
    left = set(pids)
    while left and time.monotonic() < deadline:
        for pid in list(left):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                left.discard(pid)
        if left:
            time.sleep(0.02)
    for pid in left:
        log.warning("balancer worker pid %d did not stop within %ss; killing it", pid, grace)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def _reap(children: dict[int, int], config: BalancerConfig, board: Board) -> None:
    """Wait for workers and replace one that died. A worker that exits by itself within a
    second of starting (it could not listen, say) would fail again: then stop with an error
    instead of looping. Returns only when no worker is left; a signal ends it."""
    started = dict.fromkeys(children, time.monotonic())
    while children:
        pid, status = os.wait()
        index = children.pop(pid, None)
        if index is None:
            continue
        board.clear(index)
        if not os.WIFSIGNALED(status) and time.monotonic() - started[pid] < 1.0:
            raise RuntimeError(f"balancer worker {index} exited at start (status {status})")
        log.warning(
            "balancer worker %d (pid %d) exited (status %d); restarting", index, pid, status
        )
        started[_spawn(children, config, board, index)] = time.monotonic()


_STOPPING = {signal.SIGTERM, signal.SIGINT}


def _spawn(children: dict[int, int], config: BalancerConfig, board: Board, index: int) -> int:
    """Fork worker `index` and list it, with the stop signals held meanwhile: a signal must
    neither run the supervisor's handler in the new child nor leave a worker unlisted."""
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOPPING)
    try:
        pid = _fork(config, board, index)
        children[pid] = index
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOPPING)
    return pid


def _fork(config: BalancerConfig, board: Board, index: int) -> int:
    pid = os.fork()
    if pid:
        return pid
    code = 0
    try:  # the child: its own loop, never returns into the parent's code
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOPPING)  # held by _spawn across the fork
        _serve(Balancer(config, board, index))
    except KeyboardInterrupt:
        pass
    except BaseException:
        log.exception("balancer worker %d failed", index)
        code = 1
    finally:
        os._exit(code)


async def _serve_until_terminated(balancer: Balancer) -> None:
    serving = asyncio.ensure_future(balancer.serve_forever())
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):  # not on Windows / main thread
        loop.add_signal_handler(signal.SIGTERM, serving.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await serving


class BalancerThread:
    """A balancer on its own event loop in a daemon thread, for the demo and tests.

    with BalancerThread(config) as lb:      # returns once it listens
        urlopen(f"http://127.0.0.1:{lb.port}/")
        lb.state(); lb.mark_down("app1")
    """

    def __init__(self, config: BalancerConfig) -> None:
        if config.workers != 1:
            raise ConfigError(
                f"BalancerThread runs one balancer, not workers={config.workers}: "
                "use run(config) or a subprocess with command(config) for several workers"
            )
        self.balancer = Balancer(config)
        self._loop = new_event_loop()
        self._thread = threading.Thread(target=self._run, name="pymsm-balancer", daemon=True)
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def port(self) -> int:
        return self.balancer.port

    @property
    def url(self) -> str:
        return f"http://{self.balancer.config.host}:{self.port}"

    def start(self) -> BalancerThread:
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error
        return self

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)

    def state(self) -> dict[str, Any]:
        return self.balancer.state()

    def mark_down(self, name: str) -> None:
        self.balancer.mark_down(name)

    def mark_up(self, name: str) -> None:
        self.balancer.mark_up(name)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self.balancer.start())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.run_until_complete(self.balancer.stop())
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    def __enter__(self) -> BalancerThread:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def command(config: BalancerConfig, python: str = sys.executable) -> list[str]:
    """The argv that runs `config` as a subprocess (`python -m pymsm balancer ...`)."""
    argv = [python, "-m", "pymsm", "balancer", "--listen", f"{config.host}:{config.port}"]
    for spec in config.backends:
        argv += ["--backend", f"{spec.name}={spec.address}"]
    argv += ["--strategy", config.strategy]
    t, lim, h = config.timeouts, config.limits, config.health
    options: dict[str, object] = {
        "--route-cookie": config.route_cookie,
        "--session-cookie": config.session_cookie,
        "--health-path": h.path,
        "--health-interval": h.interval,
        "--health-timeout": h.timeout,
        "--fail-timeout": h.fail_timeout,
        "--status-path": config.status_path,
        "--connect-timeout": t.connect,
        "--read-timeout": t.read,
        "--idle-timeout": t.idle,
        "--client-timeout": t.client,
        "--max-header-size": lim.max_header_size,
        "--max-body-size": lim.max_body_size,
        "--max-connections": lim.max_connections,
        "--pool-size": lim.pool_size,
        "--name": config.name,
        "--workers": config.workers if config.workers != 1 else None,
    }
    for flag, value in options.items():
        if value is not None:
            argv += [flag, str(value)]
    if not config.access_log:
        argv.append("--no-access-log")
    return argv
