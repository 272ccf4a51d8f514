"""A small memcached text-protocol connection for the operations tools.

The tools need commands a cache client does not offer (`stats settings`, `lru_crawler metadump`,
`stats cachedump`, `mn`) and must read long answers line by line without holding them, so they
talk raw protocol on a socket. Every read and write is bounded by the timeout; any socket trouble
becomes `StoreUnavailable`/`StoreTimeout` naming the node, never a traceback.
"""

from __future__ import annotations

import io
import socket
from collections.abc import Iterator, Sequence
from types import TracebackType

from pymsm.core.nodes import Node
from pymsm.exceptions import StoreError, StoreTimeout, StoreUnavailable

_ENDS = (b"END", b"OK", b"ERROR", b"RESET")  # lines that close a multi-line answer


class Unsupported(StoreError):
    """The server does not know the command (old memcached, or another protocol server)."""


class Connection:
    """One connection to one node. Not thread-safe; use one per thread. A context manager."""

    def __init__(self, node: Node, timeout: float = 2.0) -> None:
        self.node = node
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buffered: io.BufferedReader | None = None

    def __enter__(self) -> Connection:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _fail(self, exc: OSError) -> StoreError:
        self.close()
        where = f"{self.node.name} ({self.node.address})"
        if isinstance(exc, TimeoutError):
            return StoreTimeout(f"{where} did not answer in {self.timeout}s", self.node.name)
        return StoreUnavailable(f"{where}: {exc.strerror or exc}", self.node.name)

    def _connect(self) -> io.BufferedReader:
        if self._sock is None or self._buffered is None:
            try:
                self._sock = socket.create_connection(
                    (self.node.host, self.node.port), timeout=self.timeout
                )
            except OSError as exc:
                raise self._fail(exc) from exc
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._buffered = self._sock.makefile("rb")
        return self._buffered

    def send(self, data: bytes) -> None:
        self._connect()
        assert self._sock is not None
        try:
            self._sock.sendall(data)
        except OSError as exc:
            raise self._fail(exc) from exc

    def readline(self) -> bytes:
        """One line without its CRLF. A closed connection is StoreUnavailable."""
        reader = self._connect()
        try:
            line = reader.readline(1 << 20)
        except OSError as exc:
            raise self._fail(exc) from exc
        if not line.endswith(b"\n"):
            raise self._fail(ConnectionResetError(0, "connection closed mid-answer"))
        return line.rstrip(b"\r\n")

    def read_exact(self, size: int) -> bytes:
        reader = self._connect()
        try:
            data = reader.read(size)
        except OSError as exc:
            raise self._fail(exc) from exc
        if len(data) != size:
            raise self._fail(ConnectionResetError(0, "connection closed mid-value"))
        return data

    def lines(self, command: str) -> Iterator[bytes]:
        """Send `command`, yield each line of a multi-line answer up to END/OK (not included).

        Raises Unsupported when the server answers ERROR (unknown command)."""
        self.send(command.encode() + b"\r\n")
        while True:
            line = self.readline()
            if line in _ENDS or line.startswith((b"ERROR ", b"CLIENT_ERROR", b"SERVER_ERROR")):
                if line != b"END" and line != b"OK":
                    raise Unsupported(
                        f"{self.node.name}: {command.split()[0]!r} answered {line.decode(errors='replace')}",
                        self.node.name,
                    )
                return
            yield line

    def line(self, command: str) -> bytes:
        """Send a one-line command and return the one-line answer."""
        self.send(command.encode() + b"\r\n")
        return self.readline()

    def stats(self, group: str = "") -> dict[str, str]:
        """`stats [group]` as a dict of strings."""
        result = {}
        for line in self.lines(f"stats {group}".rstrip()):
            parts = line.decode(errors="replace").split(" ", 2)
            if len(parts) == 3 and parts[0] == "STAT":
                result[parts[1]] = parts[2]
        return result

    def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        """`get k1 k2 ...`: the values found."""
        found: dict[str, bytes] = {}
        if not keys:
            return found
        self.send(("get " + " ".join(keys)).encode() + b"\r\n")
        while True:
            line = self.readline()
            if line == b"END":
                return found
            parts = line.split()
            if len(parts) < 4 or parts[0] != b"VALUE":
                raise StoreError(f"{self.node.name}: unexpected answer {line[:60]!r}")
            found[parts[1].decode()] = self.read_exact(int(parts[3]) + 2)[:-2]

    def delete(self, key: str) -> bool:
        return self.line(f"delete {key}") == b"DELETED"

    def close(self) -> None:
        if self._buffered is not None:
            self._buffered.close()
            self._buffered = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def supports(conn: Connection, command: str, ok: Sequence[bytes]) -> bool:
    """Does the server know `command`? True when its one-line answer starts with one of `ok`."""
    return conn.line(command).startswith(tuple(ok))
