"""Raw-socket helpers for the server tests: send bytes, read the answer."""

from __future__ import annotations

import socket
import time

from support.servers import HOST


def exchange(port: int, data: bytes, until: bytes = b"MN\r\n", timeout: float = 3.0) -> bytes:
    """Send `data`, read until the answer ends with `until`, the peer closes, or timeout."""
    with socket.create_connection((HOST, port)) as sock:
        return talk(sock, data, until, timeout)


def talk(sock: socket.socket, data: bytes, until: bytes = b"MN\r\n", timeout: float = 3.0) -> bytes:
    if data:
        sock.sendall(data)
    answer = b""
    deadline = time.monotonic() + timeout
    while not answer.endswith(until):
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(1 << 20)
        except (TimeoutError, ConnectionResetError):
            break
        if not chunk:
            break
        answer += chunk
    return answer


def server_stats(port: int, section: str | None = None) -> dict[bytes, object]:
    """`stats` through pymemcache (which parses numbers), closing its socket."""
    from pymemcache.client.base import Client

    client = Client((HOST, port))
    try:
        result: dict[bytes, object] = client.stats(section) if section else client.stats()
        return result
    finally:
        client.close()
