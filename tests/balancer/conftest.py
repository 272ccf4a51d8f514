"""Fixtures for the balancer tests: three real app nodes (app1..app3) and HTTP helpers."""

from __future__ import annotations

import http.client
import json
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pymsm.balancer import BalancerConfig, BalancerThread, HealthCheck, parse_backends
from support.servers import HOST, ServerProcess

BACKEND_SCRIPT = str(Path(__file__).with_name("balancer_backend.py"))


def backend_process(name: str) -> ServerProcess:
    return ServerProcess(lambda port: [sys.executable, BACKEND_SCRIPT, name, str(port)], name=name)


@pytest.fixture(scope="session")
def _nodes() -> Iterator[list[ServerProcess]]:
    nodes = [backend_process(f"app{i}") for i in (1, 2, 3)]
    yield nodes
    for node in nodes:
        node.stop()


@pytest.fixture
def nodes(_nodes: list[ServerProcess]) -> list[ServerProcess]:
    """app1..app3, all running at the start of each test (a test may kill some)."""
    for node in _nodes:
        node.start()
    return _nodes


def backend_args(nodes: list[ServerProcess]) -> list[str]:
    return [f"{node.name}={node.address}" for node in nodes]


@pytest.fixture
def balancer(nodes: list[ServerProcess]) -> Iterator[Callable[..., BalancerThread]]:
    """Factory: `balancer(strategy="route", ...)` starts one in a thread on a free port."""
    started: list[BalancerThread] = []

    def start(
        strategy: str = "round_robin",
        backends: list[ServerProcess] | None = None,
        health_path: str | None = None,
        **options: Any,
    ) -> BalancerThread:
        health = HealthCheck(
            path=health_path,
            interval=options.pop("health_interval", 0.1),
            timeout=0.5,
            fail_timeout=options.pop("fail_timeout", 30.0),
        )
        config = BalancerConfig(
            parse_backends(backend_args(backends or nodes)),
            port=0,
            strategy=strategy,
            health=health,
            **options,
        )
        lb = BalancerThread(config).start()
        started.append(lb)
        return lb

    yield start
    for lb in started:
        lb.stop()


_clients: list[Client] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _clients:
        _clients.pop().close()


class Client:
    """http.client over one keep-alive connection, with a minimal cookie jar; closed at the end
    of the test."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        _clients.append(self)
        self.port = port
        self.timeout = timeout
        self.cookies: dict[str, str] = {}
        self.conn = http.client.HTTPConnection(HOST, port, timeout=timeout)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> tuple[http.client.HTTPResponse, bytes]:
        headers = dict(headers or {})
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        self.conn.request(method, path, body=body, headers=headers, **kwargs)
        response = self.conn.getresponse()
        data = response.read()
        for value in response.headers.get_all("Set-Cookie") or []:
            name, _, rest = value.partition("=")
            self.cookies[name] = rest.split(";", 1)[0]
        if response.will_close:
            self.conn.close()
        return response, data

    def get_json(self, path: str = "/", **kwargs: Any) -> dict[str, Any]:
        response, data = self.request("GET", path, **kwargs)
        assert response.status == 200, (response.status, data)
        payload: dict[str, Any] = json.loads(data)
        return payload

    def backend(self, path: str = "/") -> str:
        name: str = self.get_json(path)["backend"]
        return name

    def close(self) -> None:
        self.conn.close()


def raw_exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes, return everything until the balancer closes the connection."""
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)
