"""memcached store: memcached's text protocol on a blocking socket, one connection per node and
thread, TCP_NODELAY on.

Written on the socket (memcached_text.py holds the protocol, shared with the async store)
rather than on pymemcache, which the first versions used: pymemcache's per-call Python (key
checks, command assembly, line-by-line reads in 4 KB pieces, serde hooks) cost 9 µs of a 67 µs
`gets` of two keys on the build VM, more than everything else an unchanged request adds (see
docs/design.md, "The memcached store"). What pymemcache taught stays:

- TCP_NODELAY: with Nagle's algorithm on and delayed ACKs on the server, a request that writes
  then reads waits ~40 ms (a Flask-Session set-up measured 40x slower);
- the operation timeout is the kernel's (SO_RCVTIMEO / SO_SNDTIMEO on a blocking socket,
  `kernel_timeouts`): a socket with a Python timeout polls before every send and receive,
  doubling the system calls of a round trip;
- a connection that timed out or read something unexpected is closed, so a late answer is never
  read as the reply to the next command;
- noreply commands are written and not read; sizes are checked first, so "too large" never
  comes back unasked.

Connections are per thread (threading.local): a threaded server holds one connection per node
and thread. `busy_poll` (seconds, default off) waits for a reply by polling before blocking
(`polled_recv`; docs/design.md, "Busy-polling").
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Sequence

from pymsm import forks
from pymsm.core.nodes import Node
from pymsm.exceptions import StoreError, StoreTimeout, StoreUnavailable

from . import memcached_text as text
from .base import (
    check_busy_poll,
    check_item_size,
    closed_while_idle,
    keepalive,
    kernel_timeouts,
    memcached_ttl,
    polled_recv,
)

RECV_SIZE = 65536


class _Connection:
    """One blocking socket, what has been read from it but not parsed yet, and when it was
    last used (time.monotonic)."""

    __slots__ = ("buf", "sock", "spin", "used")

    def __init__(self, sock: socket.socket, spin: float) -> None:
        self.sock = sock
        self.spin = spin
        self.buf = b""
        self.used = time.monotonic()

    def _recv(self) -> bytes:
        sock, spin = self.sock, self.spin
        chunk = polled_recv(sock, RECV_SIZE, spin) if spin else sock.recv(RECV_SIZE)
        if not chunk:
            raise ConnectionResetError("memcached closed the connection")
        return chunk

    def _more(self, buf: bytes, pos: int) -> bytes:
        """`buf` and what comes next, while a line that starts at `pos` is still unfinished: a
        reply line is short (a key is at most 250 bytes), so a longer one is out of step."""
        if len(buf) - pos > text.MAX_LINE:
            self.buf = b""
            raise text.ProtocolError(
                f"reply line over {text.MAX_LINE} bytes: {buf[pos : pos + 80]!r}"
            )
        return buf + self._recv()

    def reply(self, command: bytes) -> bytes:
        """Send `command`, return its one-line reply."""
        self.sock.sendall(command)
        buf = self.buf
        end = buf.find(b"\r\n")
        while end < 0:
            buf = self._more(buf, 0)
            end = buf.find(b"\r\n")
        self.buf = buf[end + 2 :]
        return buf[:end]

    def values(self, command: bytes) -> dict[str, tuple[bytes, bytes]]:
        """Send a retrieval command; {key: (data, cas unique or b"")} of its reply, up to END."""
        self.sock.sendall(command)
        buf = self.buf
        found: dict[str, tuple[bytes, bytes]] = {}
        pos = 0
        while True:
            end = buf.find(b"\r\n", pos)
            if end < 0:
                buf = self._more(buf, pos)
                continue
            if end - pos == 3 and buf.startswith(b"END", pos):
                self.buf = buf[end + 2 :]
                return found
            key, size, cas = text.value_header(buf[pos:end])
            start = end + 2
            pos = start + size + 2
            if len(buf) < pos:  # the rest of a big value: chunks joined once, not re-copied
                chunks, have = [buf], len(buf)
                while have < pos:
                    chunk = self._recv()
                    chunks.append(chunk)
                    have += len(chunk)
                buf = b"".join(chunks)
            if buf[pos - 2 : pos] != b"\r\n":
                self.buf = b""
                raise text.ProtocolError(f"value of {key[:60]!r} not followed by CRLF")
            found[key] = (buf[start : pos - 2], cas)


class MemcachedStore:
    """The store port over one memcached node (see stores/base.py for the contract). Thread-safe:
    each thread uses its own connection."""

    def __init__(
        self,
        node: Node,
        operation_timeout: float = 1.0,
        connect_timeout: float | None = None,
        item_size_limit: int = 1024 * 1024,
        clock: Callable[[], float] = time.time,
        busy_poll: float = 0.0,
    ) -> None:
        check_busy_poll(busy_poll)
        self.node = node
        self.timeout = operation_timeout
        self.connect_timeout = connect_timeout or operation_timeout
        self.item_size_limit = item_size_limit
        self.clock = clock
        self.busy_poll = busy_poll
        self._local = threading.local()
        self._connections: list[_Connection] = []
        self._connections_lock = threading.Lock()
        forks.forget_in_child(self)

    def after_fork(self) -> None:
        """In a forked child: the parent's connections stay the parent's (pymsm/forks.py).
        Closing the child's copies of their sockets sends nothing; the parent's stay open."""
        for conn in self._connections:
            conn.sock.close()
        self._local = threading.local()
        self._connections = []
        self._connections_lock = threading.Lock()

    # -- connection ---------------------------------------------------------------------------

    def _connection(self) -> _Connection:
        """This thread's connection; one unused for STALE_AFTER seconds is checked first
        (`closed_while_idle`): a server that closed it meanwhile would otherwise fail this
        request's first command, or lose its noreply write, though the node is up."""
        conn: _Connection | None = getattr(self._local, "conn", None)
        now = time.monotonic()
        if conn is not None and closed_while_idle(conn.sock, conn.used, now):
            self._drop()
            conn = None
        if conn is None:
            conn = self._local.conn = self._open()
            with self._connections_lock:
                self._connections.append(conn)
        conn.used = now
        return conn

    def _open(self) -> _Connection:
        node = self.node
        try:
            sock = socket.create_connection((node.host, node.port), self.connect_timeout)
        except TimeoutError as exc:
            raise StoreTimeout(
                f"{node.name} ({node.address}): no connection in {self.connect_timeout}s",
                node.name,
            ) from exc
        except OSError as exc:
            raise StoreUnavailable(f"{node.name} ({node.address}): {exc}", node.name) from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        keepalive(sock)
        kernel_timeouts(sock, self.timeout)
        return _Connection(sock, self.busy_poll)

    def _drop(self) -> None:
        """Close this thread's connection: its stream may be out of step with its commands."""
        conn: _Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            self._local.conn = None
            with self._connections_lock:
                if conn in self._connections:
                    self._connections.remove(conn)
            conn.sock.close()

    def _mapped(self, exc: OSError) -> StoreError:
        """The pymsm error for a socket error or a reply out of step (the connection dropped)."""
        self._drop()
        name, address = self.node.name, self.node.address
        if isinstance(exc, TimeoutError | BlockingIOError):  # BlockingIOError: SO_RCVTIMEO ran out
            return StoreTimeout(f"{name} ({address}) did not answer in {self.timeout}s", name)
        if isinstance(exc, text.ProtocolError):
            return StoreError(f"{name} ({address}): {exc}", name)
        return StoreUnavailable(f"{name} ({address}): {exc or type(exc).__name__}", name)

    def _reply(self, command: bytes) -> bytes:
        # a plain try, not a context manager: this wraps most store operations of every request
        conn = self._connection()
        try:
            return conn.reply(command)
        except OSError as exc:
            raise self._mapped(exc) from exc

    def _values(self, verb: str, keys: Sequence[str]) -> dict[str, tuple[bytes, bytes]]:
        if not keys:
            return {}  # "get" without a key is an ERROR
        for key in keys:
            text.check_key(self.node.name, key)
        command = f"{verb} {' '.join(keys)}\r\n".encode()
        conn = self._connection()
        try:
            return conn.values(command)
        except OSError as exc:
            raise self._mapped(exc) from exc

    def _send(self, command: bytes) -> None:
        """Write a noreply command."""
        conn = self._connection()
        try:
            conn.sock.sendall(command)
        except OSError as exc:
            raise self._mapped(exc) from exc

    def _store(
        self, verb: str, key: str, value: bytes, ttl: int, noreply: bool, *extra: str
    ) -> bytes | None:
        name = self.node.name
        text.check_key(name, key)
        check_item_size(name, key, value, self.item_size_limit)
        exptime = memcached_ttl(ttl, self.clock())
        command = text.storage(verb, key, value, exptime, noreply, *extra)
        if noreply:
            self._send(command)
            return None
        reply = self._reply(command)
        error = text.storage_error(name, reply)
        if error is not None:
            if type(error) is StoreError:
                self._drop()  # after a refused data block the stream may be out of step
            raise error
        return reply

    # -- the store port -------------------------------------------------------------------------

    def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        return {k: v for k, (v, _) in self._values("get", keys).items()}

    def gets_many(self, keys: Sequence[str]) -> dict[str, tuple[bytes, bytes]]:
        return self._values("gets", keys)

    def cas(self, key: str, value: bytes, ttl: int, token: bytes) -> bool | None:
        unique = text.cas_unique(self.node.name, token)
        reply = self._store("cas", key, value, ttl, False, unique)
        return None if reply == b"NOT_FOUND" else reply == b"STORED"

    def delete_if(self, key: str, value: bytes) -> bool:
        """gets, compare, then meta-delete with the CAS unique: atomic on memcached >= 1.6."""
        found = self.gets_many([key])
        if key not in found or found[key][0] != value:
            return False
        unique = text.cas_unique(self.node.name, found[key][1])
        return self._reply(text.line("md", key, "C" + unique)) == b"HD"

    def set(self, key: str, value: bytes, ttl: int, noreply: bool = False) -> None:
        self._store("set", key, value, ttl, noreply)

    def add(self, key: str, value: bytes, ttl: int) -> bool:
        return self._store("add", key, value, ttl, False) == b"STORED"

    def replace(self, key: str, value: bytes, ttl: int) -> bool:
        return self._store("replace", key, value, ttl, False) == b"STORED"

    def delete(self, key: str, noreply: bool = False) -> bool:
        key = text.check_key(self.node.name, key)
        if noreply:
            self._send(text.line("delete", key, "noreply"))
            return False
        return self._reply(text.line("delete", key)) == b"DELETED"

    def touch(self, key: str, ttl: int, noreply: bool = False) -> bool:
        key = text.check_key(self.node.name, key)
        exptime = str(memcached_ttl(ttl, self.clock()))
        if noreply:
            self._send(text.line("touch", key, exptime, "noreply"))
            return False
        return self._reply(text.line("touch", key, exptime)) == b"TOUCHED"

    def close(self) -> None:
        with self._connections_lock:
            for conn in self._connections:
                conn.sock.close()
            self._connections.clear()
        self._local = threading.local()
