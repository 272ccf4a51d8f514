"""Balancer settings: frozen dataclasses, strings like `app1=127.0.0.1:9001` parsed once here.

Defaults follow nginx where nginx has the same knob (`client_max_body_size 1m`,
`keepalive_timeout 75s`, `proxy_read_timeout 60s`, `fail_timeout 10s`), so a user who knows the
nginx setting knows ours. Every parse error is a `ConfigError` naming the value and the fix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pymsm.exceptions import ConfigError

STRATEGIES = ("round_robin", "least_conn", "ip_hash", "sticky_cookie", "route")

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class BackendSpec:
    """One app node: a route-compatible name and its address."""

    name: str
    host: str
    port: int

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class Timeouts:
    """Seconds. `connect` and `read` bound backend I/O (502/504); `idle` a keep-alive client
    waiting for its next request; `client` reading one request's head and body."""

    connect: float = 5.0
    read: float = 60.0
    idle: float = 75.0
    client: float = 60.0


@dataclass(frozen=True)
class Limits:
    """`max_header_size` -> 431, `max_body_size` -> 413, `max_connections` -> 503 for the rest.
    `pool_size` is how many idle keep-alive connections are kept per backend."""

    max_header_size: int = 16 * 1024
    max_body_size: int = 1024 * 1024
    max_connections: int = 1024
    pool_size: int = 32


@dataclass(frozen=True)
class HealthCheck:
    """Active checks GET `path` every `interval` s (disabled when `path` is None); a backend
    that refused a connection is skipped for `fail_timeout` s (passive)."""

    path: str | None = None
    interval: float = 2.0
    timeout: float = 1.0
    fail_timeout: float = 10.0


@dataclass(frozen=True)
class BalancerConfig:
    backends: tuple[BackendSpec, ...]
    host: str = "127.0.0.1"
    port: int = 8080
    strategy: str = "round_robin"
    route_cookie: str = "MSMROUTE"
    session_cookie: str = "MSMSESSIONID"
    name: str = "pymsm-balancer"
    status_path: str | None = None
    access_log: bool = True
    workers: int = 1  # processes sharing the port (SO_REUSEPORT); `run` only, see shared.py
    timeouts: Timeouts = field(default_factory=Timeouts)
    limits: Limits = field(default_factory=Limits)
    health: HealthCheck = field(default_factory=HealthCheck)

    def __post_init__(self) -> None:
        if not self.backends:
            raise ConfigError("no backend: add at least one, e.g. --backend app1=127.0.0.1:9001")
        names = [b.name for b in self.backends]
        if len(set(names)) != len(names):
            raise ConfigError(f"backend names must be unique, got {names}: rename one")
        if self.strategy not in STRATEGIES:
            raise ConfigError(
                f"unknown strategy {self.strategy!r}: use one of {', '.join(STRATEGIES)}"
            )
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1, got {self.workers}")
        for path in (self.health.path, self.status_path):
            if path is not None and not path.startswith("/"):
                raise ConfigError(f"path {path!r} must start with '/', e.g. /healthz")


def parse_address(text: str, what: str = "address") -> tuple[str, int]:
    """`host:port` or `[v6]:port` -> (host, port)."""
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([^:\[\]]+):(\d+)", text.strip())
    if match is None:
        raise ConfigError(f"bad {what} {text!r}: write host:port, e.g. 127.0.0.1:9001")
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if not 0 <= port <= 65535:
        raise ConfigError(f"bad {what} {text!r}: port must be 0..65535")
    return host, port


def parse_backend(text: str, index: int = 0) -> BackendSpec:
    """`name=host:port`, or `host:port` named `app<index+1>`."""
    name, sep, address = text.partition("=")
    if not sep:
        name, address = f"app{index + 1}", text
    if not _NAME.match(name):
        raise ConfigError(
            f"bad backend name {name!r} in {text!r}: use letters, digits, '_' or '-' "
            "(it is the route an app node puts in its session ids)"
        )
    host, port = parse_address(address, "backend address")
    return BackendSpec(name, host, port)


def parse_backends(texts: list[str] | tuple[str, ...]) -> tuple[BackendSpec, ...]:
    return tuple(parse_backend(text, i) for i, text in enumerate(texts))
