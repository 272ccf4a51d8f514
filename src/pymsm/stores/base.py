"""The store port: what a node must do, sync and async. Stores never choose nodes or retry.

Every method raises StoreUnavailable (connection refused/reset), StoreTimeout (no answer within
`operation_timeout`) or ItemTooLarge (the server refused the size); nothing else escapes.
`ttl` is in seconds relative to now, 0 for no expiry; a store converts it to its server's rules.
`noreply` (set, delete, touch): the store need not wait for the answer, so it cannot know it:
delete and touch return False then, on every store.

Conditional operations:
- `gets_many` returns each present key's value and an opaque CAS token (memcached's cas unique,
  a version for Redis); `cas` stores only if the key still has that token: True stored, False
  changed meanwhile, None absent.
- `delete_if(key, value)` deletes the key only while it still holds exactly `value` (a lock's
  owner token), atomically where the server allows it; returns whether it deleted.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import sys
import time
from collections.abc import Sequence
from typing import Any, Protocol, TypeAlias

from pymsm.exceptions import ConfigError, ItemTooLarge

CasToken: TypeAlias = Any


class Store(Protocol):
    def get_many(self, keys: Sequence[str]) -> dict[str, bytes]: ...
    def gets_many(self, keys: Sequence[str]) -> dict[str, tuple[bytes, CasToken]]: ...
    def cas(self, key: str, value: bytes, ttl: int, token: CasToken) -> bool | None: ...
    def delete_if(self, key: str, value: bytes) -> bool: ...
    def set(self, key: str, value: bytes, ttl: int, noreply: bool = False) -> None: ...
    def add(self, key: str, value: bytes, ttl: int) -> bool: ...
    def replace(self, key: str, value: bytes, ttl: int) -> bool: ...
    def delete(self, key: str, noreply: bool = False) -> bool: ...
    def touch(self, key: str, ttl: int, noreply: bool = False) -> bool: ...
    def close(self) -> None: ...


class AsyncStore(Protocol):
    async def get_many(self, keys: Sequence[str]) -> dict[str, bytes]: ...
    async def gets_many(self, keys: Sequence[str]) -> dict[str, tuple[bytes, CasToken]]: ...
    async def cas(self, key: str, value: bytes, ttl: int, token: CasToken) -> bool | None: ...
    async def delete_if(self, key: str, value: bytes) -> bool: ...
    async def set(self, key: str, value: bytes, ttl: int, noreply: bool = False) -> None: ...
    async def add(self, key: str, value: bytes, ttl: int) -> bool: ...
    async def replace(self, key: str, value: bytes, ttl: int) -> bool: ...
    async def delete(self, key: str, noreply: bool = False) -> bool: ...
    async def touch(self, key: str, ttl: int, noreply: bool = False) -> bool: ...
    async def close(self) -> None: ...


MEMCACHED_MAX_RELATIVE_TTL = 60 * 60 * 24 * 30


def memcached_ttl(ttl: int, now: float) -> int:
    """memcached reads expiry times over 30 days as absolute Unix times."""
    if ttl <= 0:
        return 0
    return int(now) + ttl if ttl > MEMCACHED_MAX_RELATIVE_TTL else ttl


ITEM_OVERHEAD = 64  # bytes memcached counts besides key and value (item header, suffix)


def check_item_size(node: str, key: str, value: bytes, limit: int) -> None:
    """Raise ItemTooLarge before sending an item memcached would refuse (-I, default 1 MB):
    a noreply write would otherwise fail silently."""
    size = len(key) + len(value) + ITEM_OVERHEAD
    if size > limit:
        raise ItemTooLarge(
            f"{node}: item {key[:60]!r} needs {size} bytes, over item_size_limit={limit}; "
            "store less in the session, or raise memcached's -I and item_size_limit with it",
            node,
        )


def kernel_timeouts(sock: socket.socket, seconds: float) -> None:
    """Make `sock` blocking with `seconds` as the kernel's receive and send timeouts.

    A socket with a Python timeout (`settimeout`) waits in poll() before every send and every
    receive: a request and its answer cost four system calls instead of two. With SO_RCVTIMEO /
    SO_SNDTIMEO each call is bounded the same way, and a call that runs out raises
    BlockingIOError (EAGAIN) instead of TimeoutError: stores map both to StoreTimeout. Where the
    options cannot be set, the socket keeps Python's timeout.
    """
    whole = int(seconds)
    micros = int((seconds - whole) * 1_000_000)
    if whole == 0 and micros == 0:
        micros = 1  # a zero timeval means no timeout at all
    if sys.platform == "win32":  # pragma: no cover - Windows takes milliseconds as a DWORD
        timeval = struct.pack("I", max(int(seconds * 1000), 1))
    else:  # struct timeval: two longs on Linux, the BSDs and macOS (little-endian)
        timeval = struct.pack("ll", whole, micros)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
    except OSError:  # pragma: no cover - a platform without these options
        sock.settimeout(seconds)
        return
    sock.settimeout(None)


def check_busy_poll(seconds: float) -> None:
    """The stores' `busy_poll` option: 0 (off) or a positive budget in seconds."""
    if seconds < 0:
        raise ConfigError(
            f"busy_poll must be 0 (off) or a positive number of seconds, got {seconds}"
        )


def polled_recv(sock: socket.socket, size: int, budget: float) -> bytes:
    """Busy-poll: read up to `size` bytes from `sock` without blocking for up to `budget`
    seconds, then block as a plain `recv` does (with the socket's kernel timeouts).

    An answer that comes within the budget is read without this thread going to sleep and being
    woken again. On a virtual machine that sleep and wake-up is most of a loopback round trip
    (measured on the 2-core build VM: 52 µs blocking against 25 µs polling per memcached get,
    with the same client CPU per get, since sleeping and waking costs CPU too). The price is a
    CPU kept busy while waiting, which other processes on a saturated host would have used; see
    docs/design.md (Busy-polling). MSG_DONTWAIT leaves the socket's blocking mode (and its
    kernel timeouts) untouched. Raises what `recv` raises; EAGAIN only from the blocking read
    (its timeout ran out)."""
    deadline = time.perf_counter() + budget
    while True:
        try:
            return sock.recv(size, socket.MSG_DONTWAIT)
        except BlockingIOError:
            if time.perf_counter() >= deadline:
                return sock.recv(size)


STALE_AFTER = 1.0
"""Seconds a connection may sit unused before it is checked (`closed_while_idle`) before use."""


def closed_while_idle(sock: socket.socket, used: float, now: float) -> bool:
    """Whether `sock`, with no reply outstanding and unused since `used` (time.monotonic), has
    something to read: the server closed it while it sat unused (memcached's `-o idle_timeout`,
    Redis's `timeout`, a restart, a proxy's idle limit) or sent what nobody asked for. Either
    way it must not carry the next command: a waited one would fail though the node is up, a
    noreply write would be lost without a word. Asked only after STALE_AFTER seconds unused,
    with one zero-timeout poll (plain and TLS sockets alike): a busy connection pays nothing."""
    if now - used <= STALE_AFTER:
        return False
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


KEEPALIVE_IDLE = 30  # s of silence before the first probe
KEEPALIVE_INTERVAL = 10  # s between probes
KEEPALIVE_COUNT = 3  # unanswered probes before the kernel gives the connection up


def keepalive_options() -> dict[int, int]:
    """TCP keepalive timings for this platform (option -> value), for `keepalive` and for
    redis-py's `socket_keepalive_options`.

    Why: a NAT gateway, a cloud load balancer or a firewall between the app and its cache forgets
    a connection that stays silent for a few minutes (AWS NAT: 350 s, Azure: 240 s), usually
    without telling either end. A worker thread that served no request for that long then sent
    its next command into nothing and waited a whole `operation_timeout` for the node it then
    counted as failed. A probe every 30 s of silence keeps the mapping, and a peer that is
    really gone is noticed within about a minute."""
    options = {}
    idle = getattr(socket, "TCP_KEEPIDLE", None) or getattr(socket, "TCP_KEEPALIVE", None)
    for option, value in (
        (idle, KEEPALIVE_IDLE),
        (getattr(socket, "TCP_KEEPINTVL", None), KEEPALIVE_INTERVAL),
        (getattr(socket, "TCP_KEEPCNT", None), KEEPALIVE_COUNT),
    ):
        if option is not None:
            options[option] = value
    return options


def keepalive(sock: socket.socket) -> None:
    """Turn TCP keepalive on for `sock` with `keepalive_options`."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in keepalive_options().items():
        with contextlib.suppress(OSError):  # a platform that refuses one of them
            sock.setsockopt(socket.IPPROTO_TCP, option, value)
