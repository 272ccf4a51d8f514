"""Child processes of the demo: one `NodeProcess` per memcached/redis node, app node or nginx,
each on a fixed loopback port so a killed node comes back where the others expect it.

Every child runs in its own process group: `kill` is a SIGKILL to the whole group (gunicorn's
worker dies with its master, as when a host dies), `stop` a SIGINT then SIGKILL after a grace
period. Output goes to a log file per node, whose tail is quoted when a node fails to start.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pymsm.exceptions import SessionError

HOST = "127.0.0.1"


class DemoError(SessionError):
    """The demo could not start or control a node; the message says which and why."""


def free_port(host: str = HOST) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_in_use(port: int, host: str = HOST) -> bool:
    """True when something listens on host:port or the port cannot be bound."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def listening(port: int, host: str = HOST, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class Watchdog:
    """The demo's side of `pymsm.demo.watchdog`: a child process that SIGKILLs the process groups
    it watches if the demo dies without a clean stop (the pipe to it closes). Started with the
    first node; `close()` after a clean stop lets it exit without killing anything."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self._write: int | None = None
        self._lock = threading.Lock()

    def watch(self, pgid: int) -> None:
        self._say(f"+{pgid}")

    def forget(self, pgid: int) -> None:
        """The group is gone (reaped): its id may be reused and must never be killed later."""
        self._say(f"-{pgid}")

    def _say(self, line: str) -> None:
        with self._lock:
            if self._write is None:
                if line.startswith("-"):
                    return
                self._start()
            assert self._write is not None
            with contextlib.suppress(OSError):  # the watchdog died: the demo runs on without it
                os.write(self._write, line.encode() + b"\n")

    def _start(self) -> None:
        read, write = os.pipe()  # not inheritable: only the watchdog's stdin is this pipe
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pymsm.demo.watchdog"],
                stdin=read,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C in the terminal must not reach it
            )
        except BaseException:
            os.close(write)
            raise
        finally:
            os.close(read)
        self._write = write

    def close(self) -> None:
        """After a clean stop: the watchdog exits and kills nothing."""
        with self._lock:
            if self._write is None:
                return
            with contextlib.suppress(OSError):
                os.write(self._write, b"done\n")
            os.close(self._write)
            self._write = None
        if self.process is not None:
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


class NodeProcess:
    """One node. `argv` and `env` are fixed at creation; `start()` returns once the port
    accepts connections (raises DemoError with the log tail if the process exits first)."""

    def __init__(
        self,
        kind: str,
        name: str,
        port: int,
        argv: Sequence[str],
        log_path: Path,
        env: dict[str, str] | None = None,
        watchdog: Watchdog | None = None,
    ) -> None:
        self.kind, self.name, self.port = kind, name, port
        self.argv, self.env, self.log_path = list(argv), env, log_path
        self.watchdog = watchdog  # kills this node's group if the demo dies without stopping it
        self.process: subprocess.Popen[bytes] | None = None
        self.status = "not started"

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 20.0) -> None:
        if not self.running:
            self.spawn()
            self.wait_ready(timeout)

    def spawn(self) -> None:
        """Start the process without waiting (several nodes start in parallel)."""
        self._forget_exited()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env} if self.env else None,
                start_new_session=True,  # own process group: Ctrl-C in the terminal is ours
            )
        if self.watchdog is not None:
            self.watchdog.watch(self.process.pid)  # the group's id is the leader's pid
        self.status = "starting"

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Return once the port accepts connections; raises DemoError (with the log's tail)
        if the process exits first or nothing listens within `timeout` s."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.status = f"exited ({self.process.returncode})"
                raise DemoError(
                    f"{self.kind} {self.name} exited with status {self.process.returncode} "
                    f"while starting on {self.address}; its log ({self.log_path}):\n"
                    + self.log_tail()
                )
            if listening(self.port):
                self.status = "running"
                return
            time.sleep(0.03)
        self.kill()
        raise DemoError(
            f"{self.kind} {self.name} did not listen on {self.address} within {timeout:g}s; "
            f"its log ({self.log_path}):\n" + self.log_tail()
        )

    def kill(self) -> None:
        """SIGKILL to the process group: a crash, no goodbye to clients."""
        self._send(signal.SIGKILL)
        self._reap(5.0)
        self.status = "killed"

    def stop(self, grace: float = 5.0) -> None:
        self.send_stop()
        self.wait_stopped(grace)

    def send_stop(self) -> None:
        """SIGINT (a quick, clean stop for memcached, redis, gunicorn and nginx); several
        nodes are signalled first and waited for after, so stopping takes the slowest one's
        time, not the sum."""
        if self.running:
            self._send(signal.SIGINT)
            self.status = "stopped"

    def wait_stopped(self, grace: float = 5.0) -> None:
        """Wait up to `grace` s, then SIGKILL whatever of the group is left."""
        self._reap(grace)

    def _send(self, sig: int) -> None:
        proc = self.process
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)

    def _reap(self, grace: float) -> None:
        proc = self.process
        if proc is None:
            return
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            self._send(signal.SIGKILL)
            proc.wait(5)
        # a group member that outlived its leader (it ignored the signal) must not hold the port
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        self._forget_exited()

    def _forget_exited(self) -> None:
        """A leader that has exited and been reaped frees its group id for reuse: the watchdog
        must never kill it later."""
        proc = self.process
        if self.watchdog is not None and proc is not None and proc.poll() is not None:
            self.watchdog.forget(proc.pid)

    def state(self) -> dict[str, Any]:
        running = self.running
        if not running and self.status in ("running", "starting") and self.process is not None:
            self.status = f"exited ({self.process.returncode})"  # died on its own
            self._forget_exited()
        return {
            "kind": self.kind,
            "name": self.name,
            "address": self.address,
            "pid": self.process.pid if running and self.process else None,
            "up": running,
            "status": self.status,
            "program": self.program,
        }

    @property
    def program(self) -> str:
        """What runs: `memcached`, `pymsm memcached` (embedded), `gunicorn`, `nginx` ..."""
        if len(self.argv) > 2 and self.argv[1] == "-m":
            return " ".join(self.argv[2:4]) if self.argv[2] == "pymsm" else self.argv[2]
        return Path(self.argv[0]).name

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


# -- argv of each kind of node ---------------------------------------------------------------


def memcached_argv(port: int, binary: str | None = None, embedded: bool = False) -> list[str]:
    """Real memcached when installed (or given), else pymsm's embedded server."""
    binary = None if embedded else binary or shutil.which("memcached")
    if binary:
        user = ["-u", "root"] if os.geteuid() == 0 else []  # memcached refuses root without -u
        return [binary, "-l", HOST, "-p", str(port), "-U", "0", "-t", "1", "-m", "64", *user]
    return [sys.executable, "-m", "pymsm", "memcached", "-l", HOST, "-p", str(port)]


def redis_argv(port: int, workdir: Path) -> list[str]:
    binary = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/bin")
    if binary is None:
        raise DemoError("--backend redis needs redis-server: apt-get install redis-server")
    return [
        binary,
        *("--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no"),
        *("--dir", str(workdir)),
    ]


def gunicorn_argv(port: int, threads: int, app: str = "pymsm.demo.app:app") -> list[str]:
    """One gunicorn master with one threaded worker: one process per app node, so a node's
    sticky cache is one cache, and killing the node is killing one process group."""
    return [
        sys.executable,
        *("-m", "gunicorn", "--bind", f"{HOST}:{port}"),
        *("--workers", "1", "--worker-class", "gthread", "--threads", str(threads)),
        *("--graceful-timeout", "1", "--log-level", "warning", app),
    ]


def nginx_argv(prefix: Path, conf: Path) -> list[str]:
    binary = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/bin")
    if binary is None:
        raise DemoError("--balancer nginx needs nginx: apt-get install nginx")
    return [binary, "-e", "stderr", "-p", str(prefix), "-c", str(conf)]
