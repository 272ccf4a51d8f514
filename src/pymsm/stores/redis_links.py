"""How the sync Redis store talks to Redis: raw commands in, raw RESP2 replies out.

`DirectLink` (one server, Sentinel) keeps one pooled connection per thread, as the memcached
store keeps one client per thread, and talks RESP2 on its socket itself (`Wire`): redis-py's
per-command client path (pool checkout, readiness poll, retry wrapper, callbacks) costs about as
much CPU as a loopback round trip, and its general packer and parser still cost twice what the
few reply shapes the store reads need (a request's MGET + cas script: 30 -> 14 µs of Python).
redis-py still opens each connection (TLS, AUTH, SELECT, Sentinel's master lookup). It also lets a `noreply` write go out without waiting: its reply is read
before the thread's next command on that connection (memcached's noreply, done the Redis way:
the command is on the wire before the response leaves, nothing waits for it).

`ClientLink` (Cluster) goes through redis-py's cluster client, which follows MOVED/ASK and
reloads the slot map; `noreply` is waited for there.

Both reconnect once, at once, when a connection turns out dead (a master that failed over, a
node that restarted); a timeout is never retried.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

from redis._parsers import BaseParser
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, NoScriptError, ReadOnlyError, ResponseError

from .base import closed_while_idle, kernel_timeouts, polled_recv
from .redis_clients import close_sync

# redis-py's mapping of error replies to exception classes (NOSCRIPT, READONLY, ...), so an
# error reply raises here exactly what it raises through redis-py
_error: Any = BaseParser.parse_error


@lru_cache(maxsize=16)
def sha1(script: str) -> str:
    """A script's EVALSHA name (a handful of constant scripts: hashed once each)."""
    return hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()


def pack(args: Sequence[Any]) -> bytes:
    """One command in RESP2: str (UTF-8), bytes and int arguments, as redis-py would send them."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode()
        elif isinstance(arg, int):
            arg = b"%d" % arg
        out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)


class Wire:
    """One connection's socket after redis-py connected it (TLS, AUTH, SELECT, Sentinel's
    master lookup are redis-py's): commands packed and replies parsed here. Replies as redis-py's
    RESP2 parser gives them without callbacks; an error reply raises what redis-py would raise."""

    __slots__ = ("buf", "busy_poll", "conn", "owed", "sentinel_master", "sock", "spin", "used")

    def __init__(self, conn: Any, sentinel_master: bool, busy_poll: float = 0.0) -> None:
        self.conn = conn
        self.sentinel_master = sentinel_master
        self.busy_poll = busy_poll
        self.spin = 0.0  # busy_poll on a plain socket; TLS sockets always block
        self.owed = 0  # replies of noreply writes not read yet
        self.sock: Any = None
        self.buf = b""
        self.used = time.monotonic()

    def open(self) -> None:
        """Connect (or reconnect) the connection and take its socket."""
        if self.conn._sock is None:
            self.conn.connect()
        self.sock, self.buf, self.owed = self.conn._sock, b"", 0
        plain = not isinstance(self.sock, ssl.SSLSocket)
        self.spin = self.busy_poll if plain else 0.0
        timeout = self.sock.gettimeout()
        if plain and timeout is not None:
            kernel_timeouts(self.sock, timeout)  # no poll() before each send and receive

    def drop(self) -> None:
        self.conn.disconnect()
        self.sock, self.buf, self.owed = None, b"", 0

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise _socket_error(exc, "writing to") from exc

    def _more(self) -> None:
        try:
            sock, spin = self.sock, self.spin
            chunk = polled_recv(sock, 65536, spin) if spin else sock.recv(65536)
        except OSError as exc:
            raise _socket_error(exc, "reading from") from exc
        if not chunk:
            raise RedisConnectionError("Connection closed by server.")
        self.buf += chunk

    def _line(self, pos: int) -> tuple[bytes, int]:
        end = self.buf.find(b"\r\n", pos)
        while end < 0:
            self._more()
            end = self.buf.find(b"\r\n", pos)
        return self.buf[pos:end], end + 2

    def _reply(self, pos: int) -> tuple[Any, int]:
        line, pos = self._line(pos)
        kind = line[:1]
        if kind == b"$":
            size = int(line[1:])
            if size < 0:
                return None, pos
            while len(self.buf) < pos + size + 2:
                self._more()
            return self.buf[pos : pos + size], pos + size + 2
        if kind == b":":
            return int(line[1:]), pos
        if kind == b"*":
            count = int(line[1:])
            if count < 0:
                return None, pos
            items = []
            for _ in range(count):
                item, pos = self._reply(pos)
                items.append(item)
            return items, pos
        if kind == b"+":
            return line[1:], pos
        if kind == b"-":
            return _error(line[1:].decode(errors="replace")), pos
        raise InvalidResponse(f"Protocol error, got {line[:20]!r} as reply type byte")

    def read(self) -> Any:
        """The next reply; an error reply raises (after the whole reply is consumed)."""
        reply, pos = self._reply(0)
        self.buf = self.buf[pos:]
        if isinstance(reply, ResponseError):
            if self.sentinel_master and isinstance(reply, ReadOnlyError):
                # the master we are connected to was demoted: reconnect through Sentinel
                raise RedisConnectionError("The previous master is now a replica") from reply
            raise reply
        return reply


def _socket_error(exc: OSError, doing: str) -> Exception:
    """What a socket error while `doing` ("reading from", "writing to") becomes: a timeout
    (Python's TimeoutError, or EAGAIN once the kernel's SO_RCVTIMEO / SO_SNDTIMEO ran out, see
    kernel_timeouts) or redis-py's ConnectionError, as the stores map them."""
    if isinstance(exc, TimeoutError | BlockingIOError):
        return TimeoutError(f"Timeout {doing} the socket")
    return RedisConnectionError(f"Error while {doing} the socket: {exc}")


class DirectLink:
    """Thread-local connections from `pool` (a redis-py ConnectionPool or SentinelConnectionPool)."""

    def __init__(self, pool: Any, busy_poll: float = 0.0) -> None:
        self.pool = pool
        self.busy_poll = busy_poll
        self._sentinel_master = bool(getattr(pool, "is_master", False))
        self._local = threading.local()

    def _wire(self) -> Wire:
        local = self._local
        if getattr(local, "pid", None) != os.getpid():  # new thread, or a forked worker
            local.wire, local.pid = (
                Wire(self.pool.get_connection(), self._sentinel_master, self.busy_poll),
                os.getpid(),
            )
        wire: Wire = local.wire
        now = time.monotonic()
        if (
            wire.sock is not None
            and not wire.owed  # (an owed reply makes it readable; reading it finds out)
            and closed_while_idle(wire.sock, wire.used, now)
        ):
            wire.drop()  # Redis's `timeout`, a restart: reopened below, before any command
        wire.used = now
        if wire.sock is None:
            # first use, or dropped: connect() explicitly, since a Sentinel connection asks for
            # the current master there
            wire.open()
        return wire

    @staticmethod
    def _settle(wire: Wire) -> None:
        """Read the replies still owed for noreply writes; their errors cannot be reported."""
        while wire.owed:
            wire.owed -= 1
            with contextlib.suppress(ResponseError):
                wire.read()

    def _round_trip(self, data: bytes) -> Any:
        wire = self._wire()
        try:
            if wire.owed:
                self._settle(wire)
            wire.send(data)
            return wire.read()
        except ResponseError:
            raise  # an error reply leaves the connection in step
        except BaseException:
            wire.drop()  # stale after a failover or restart, a timeout, or worse
            raise

    def command(self, *args: Any) -> Any:
        """Send a command and return its reply. Error replies raise ResponseError."""
        data = pack(args)
        try:
            return self._round_trip(data)
        except RedisConnectionError:
            return self._round_trip(data)  # one fresh connection, at once

    def send(self, *args: Any) -> None:
        """Send without waiting for the reply (noreply)."""
        wire = self._wire()
        try:
            wire.send(pack(args))
        except BaseException:
            wire.drop()
            raise
        wire.owed += 1

    def script(self, lua: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            return self.command("EVALSHA", sha1(lua), len(keys), *keys, *args)
        except NoScriptError:  # a new or restarted server: EVAL also caches the script
            return self.command("EVAL", lua, len(keys), *keys, *args)

    def mget(self, keys: list[str]) -> list[bytes | None]:
        return list(self.command("MGET", *keys))

    def close(self) -> None:
        """Forget this link's connections (closing the pool closes them)."""
        self._local = threading.local()


class ClientLink:
    """Commands through a redis-py client (RedisCluster): redirects and slot maps are its job.

    The client is made on first use, not when the store is: RedisCluster connects in its
    constructor to learn the slot map, so a cluster unreachable while the app starts would
    otherwise stop the app from starting, where every other store starts and reports its node
    down (StoreUnavailable) until it answers."""

    def __init__(self, connect: Callable[[], Any]) -> None:
        self._connect = connect
        self._client: Any = None
        self._made = threading.Lock()
        self._scripts: dict[str, Any] = {}

    @property
    def client(self) -> Any:
        client = self._client
        if client is None:
            with self._made:
                if self._client is None:
                    self._client = self._connect()  # raises while no startup node answers
                client = self._client
        return client

    def command(self, *args: Any) -> Any:
        return self.client.execute_command(*args)

    def send(self, *args: Any) -> None:
        self.client.execute_command(*args)

    def script(self, lua: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        script = self._scripts.get(lua)
        if script is None:
            script = self._scripts[lua] = self.client.register_script(lua)
        return script(keys=list(keys), args=list(args))

    def mget(self, keys: list[str]) -> list[bytes | None]:
        # groups keys by slot: one MGET per session, whose keys share its hash tag
        return list(self.client.mget_nonatomic(keys))

    def close(self) -> None:
        self._scripts.clear()
        if self._client is not None:
            close_sync(self._client)
