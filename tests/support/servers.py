"""Real servers for integration tests: started on free loopback ports, killed to test failover."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

import pytest

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(
    port: int, timeout: float = 10.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {process.returncode}")
        try:
            with socket.create_connection((HOST, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on {HOST}:{port} after {timeout}s")


def require_binary(name: str, package: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if path is None:
        pytest.fail(f"{name} is not installed: `apt-get install {package}` (.ci/run does this)")
    return path


class ServerProcess:
    """One server process on a fixed port; `kill()` and `start()` again on the same port."""

    def __init__(
        self,
        argv: Callable[[int], Sequence[str]],
        port: int | None = None,
        name: str = "",
        env: dict[str, str] | None = None,
    ) -> None:
        self._argv = argv
        self.env = env
        self.port = port or free_port()
        self.name = name
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> ServerProcess:
        if self.running:
            return self
        env = {**os.environ, **self.env} if self.env else None
        self.process = subprocess.Popen(
            list(self._argv(self.port)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        wait_for_port(self.port, process=self.process)
        return self

    def kill(self) -> None:
        """SIGKILL, as a crashed node: no goodbye to clients."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(5)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # quick shutdown for memcached and gunicorn
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def memcached_argv(extra: Sequence[str] = ()) -> Callable[[int], list[str]]:
    binary = require_binary("memcached", "memcached")
    user = ["-u", "root"] if os.geteuid() == 0 else []
    return lambda port: [
        binary,
        "-l",
        HOST,
        "-p",
        str(port),
        "-U",
        "0",
        "-t",
        "1",
        "-m",
        "64",
        *user,
        *extra,
    ]


def embedded_argv(extra: Sequence[str] = ()) -> Callable[[int], list[str]]:
    return lambda port: [
        sys.executable,
        "-m",
        "pymsm",
        "memcached",
        "-l",
        HOST,
        "-p",
        str(port),
        *extra,
    ]


# The kinds of memcached-protocol server the integration suite runs against.
MEMCACHED_KINDS: dict[str, Callable[..., Callable[[int], list[str]]]] = {
    "memcached": memcached_argv,
    "embedded": embedded_argv,
}


def memcached_server(
    kind: str = "memcached", extra: Sequence[str] = (), name: str = ""
) -> ServerProcess:
    return ServerProcess(MEMCACHED_KINDS[kind](extra), name=name)


def gunicorn_app(
    target: str,
    chdir: str,
    env: dict[str, str],
    name: str = "",
    workers: int = 1,
    extra: Sequence[str] = (),
) -> ServerProcess:
    """A WSGI app `module:attr` under gunicorn (sync workers) on a free port; `extra` are more
    gunicorn options (`--preload`)."""

    def argv(port: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "gunicorn",
            "--bind",
            f"{HOST}:{port}",
            "--workers",
            str(workers),
            "--chdir",
            chdir,
            "--log-level",
            "warning",
            *extra,
            target,
        ]

    return ServerProcess(argv, name=name, env=env)


async def curr_connections(address: str) -> int:
    """A memcached server's `curr_connections` (open client connections, the asking one too)."""
    host, port = address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(b"stats\r\n")
        stats = (await reader.readuntil(b"END\r\n")).decode()
    finally:
        writer.close()
        await writer.wait_closed()
    return next(int(line.split()[2]) for line in stats.splitlines() if " curr_connections " in line)
