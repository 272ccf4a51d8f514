"""How a request picks a backend. Pure: backends, request facts and the clock in, a choice out.

Every strategy skips backends that are down or already tried for this request (`exclude`), and
returns None when nothing is left (the balancer answers 503).

- `round_robin`: nginx's default, unweighted.
- `least_conn`: fewest requests in flight, ties broken round robin (nginx `least_conn`).
- `ip_hash`: nginx's `ip_hash` exactly: the first three octets of an IPv4 address (the whole
  address for IPv6), rehashed up to 20 times past down backends, then round robin.
- `sticky_cookie`: Tengine `session_sticky` insert mode: a route cookie names the backend; it is
  followed while that backend is up and (re)set whenever the balancer picks another one.
- `route`: mod_jk's jvmRoute: the route suffix of the session id (`<32 hex>-<node>.<route>`)
  names the backend; without one, or when that backend is down, round robin (the app node that
  gets the request takes the session over and issues an id with its own route).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pymsm.balancer.backends import Backend
from pymsm.core.ids import SessionId
from pymsm.exceptions import InvalidSessionId


@dataclass(frozen=True)
class RequestInfo:
    client_ip: str
    cookies: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Choice:
    backend: Backend
    set_cookie: str | None = None  # value for the route cookie, sticky_cookie only


class Strategy(Protocol):
    def choose(
        self,
        backends: Sequence[Backend],
        request: RequestInfo,
        exclude: Collection[str],
        now: float,
    ) -> Choice | None: ...


def _usable(backend: Backend, exclude: Collection[str], now: float) -> bool:
    return backend.name not in exclude and backend.available(now)


class RoundRobin:
    def __init__(self) -> None:
        self._next = 0

    def choose(
        self,
        backends: Sequence[Backend],
        request: RequestInfo,
        exclude: Collection[str],
        now: float,
    ) -> Choice | None:
        count = len(backends)
        for step in range(count):
            index = (self._next + step) % count
            if _usable(backends[index], exclude, now):
                self._next = (index + 1) % count
                return Choice(backends[index])
        return None


class LeastConn:
    def __init__(self) -> None:
        self._next = 0

    def choose(
        self,
        backends: Sequence[Backend],
        request: RequestInfo,
        exclude: Collection[str],
        now: float,
    ) -> Choice | None:
        count = len(backends)
        best: int | None = None
        for step in range(count):
            index = (self._next + step) % count
            backend = backends[index]
            if _usable(backend, exclude, now) and (
                best is None or backend.active < backends[best].active
            ):
                best = index
        if best is None:
            return None
        self._next = (best + 1) % count
        return Choice(backends[best])


def ip_hash_key(client_ip: str) -> bytes:
    """The bytes nginx hashes: 3 octets of IPv4 (also IPv4-mapped IPv6), 16 of IPv6."""
    try:
        address = ipaddress.ip_address(client_ip)
    except ValueError:
        return client_ip.encode()
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if isinstance(address, ipaddress.IPv4Address):
        return address.packed[:3]
    return address.packed


class IpHash:
    def __init__(self) -> None:
        self._fallback = RoundRobin()

    def choose(
        self,
        backends: Sequence[Backend],
        request: RequestInfo,
        exclude: Collection[str],
        now: float,
    ) -> Choice | None:
        key = ip_hash_key(request.client_ip)
        hash_ = 89
        for _ in range(21):
            for octet in key:
                hash_ = (hash_ * 113 + octet) % 6271
            backend = backends[hash_ % len(backends)]
            if _usable(backend, exclude, now):
                return Choice(backend)
        return self._fallback.choose(backends, request, exclude, now)


class StickyCookie:
    def __init__(self, cookie: str) -> None:
        self.cookie = cookie
        self._fallback = RoundRobin()

    def choose(
        self,
        backends: Sequence[Backend],
        request: RequestInfo,
        exclude: Collection[str],
        now: float,
    ) -> Choice | None:
        wanted = request.cookies.get(self.cookie)
        for backend in backends:
            if backend.name == wanted and _usable(backend, exclude, now):
                return Choice(backend)
        choice = self._fallback.choose(backends, request, exclude, now)
        return choice and Choice(choice.backend, set_cookie=choice.backend.name)


def session_route(session_id: str | None) -> str | None:
    """The route suffix of a session id (`<base>-<node>.<route>`, or `<base>.<route>` without
    node ids), or None when there is none or the id is malformed."""
    if not session_id:
        return None
    try:
        return SessionId.parse(session_id).route
    except InvalidSessionId:
        return None


class Route:
    def __init__(self, cookie: str) -> None:
        self.cookie = cookie
        self._fallback = RoundRobin()

    def choose(
        self,
        backends: Sequence[Backend],
        request: RequestInfo,
        exclude: Collection[str],
        now: float,
    ) -> Choice | None:
        route = session_route(request.cookies.get(self.cookie))
        for backend in backends:
            if backend.name == route and _usable(backend, exclude, now):
                return Choice(backend)
        return self._fallback.choose(backends, request, exclude, now)


def make_strategy(name: str, route_cookie: str, session_cookie: str) -> Strategy:
    strategies: dict[str, Strategy] = {
        "round_robin": RoundRobin(),
        "least_conn": LeastConn(),
        "ip_hash": IpHash(),
        "sticky_cookie": StickyCookie(route_cookie),
        "route": Route(session_cookie),
    }
    return strategies[name]


def parse_cookies(values: Sequence[bytes]) -> dict[str, str]:
    """Cookie header values -> {name: value}; the first occurrence of a name wins (RFC 6265)."""
    cookies: dict[str, str] = {}
    for value in values:
        for pair in value.decode("latin-1").split(";"):
            name, sep, cookie = pair.strip().partition("=")
            if sep and name not in cookies:
                cookies[name] = cookie.strip().strip('"')
    return cookies
