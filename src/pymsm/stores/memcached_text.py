"""memcached's text protocol: what the sync and async memcached stores both send and parse.

No I/O here: command lines, the key check, the VALUE header of a retrieval reply and the
errors a storage reply can carry. The stores read sockets their own way (a blocking socket and
a buffer, or an asyncio stream).
"""

from __future__ import annotations

from pymsm.exceptions import ItemTooLarge, StoreError

MAX_KEY = 250  # memcached's key length limit
MAX_LINE = 2048  # a reply line (VALUE header, status) is far shorter: longer is out of step


class ProtocolError(OSError):
    """A reply that is not what the command expects: the connection is out of step and must be
    dropped (stores map it as they map a broken connection)."""


def line(*words: str) -> bytes:
    return " ".join(words).encode() + b"\r\n"


def check_key(node: str, key: str) -> str:
    """`key` if memcached can take it as one word: 1-250 printable ASCII characters, no space or
    control character. Keys are built from checked session ids (core.ids), so this only guards
    against a key prefix or a caller that would otherwise inject a second command."""
    # isprintable: no control character (0-31, 127) among ASCII; a space is printable
    if not (0 < len(key) <= MAX_KEY and key.isascii() and key.isprintable()) or " " in key:
        raise StoreError(f"{node}: invalid memcached key {key[:60]!r}", node)
    return key


def cas_unique(node: str, token: bytes | str) -> str:
    """A CAS token as it goes into `cas` or `md … C<unique>`: memcached's cas unique is a
    number, and nothing else may go out in its place (a token is the store's own, from gets)."""
    unique = token.decode() if isinstance(token, bytes) else str(token)
    if not unique.isdigit():
        raise StoreError(f"{node}: invalid cas token {unique[:30]!r}", node)
    return unique


def storage(verb: str, key: str, value: bytes, exptime: int, noreply: bool, *extra: str) -> bytes:
    """A whole storage command (set, add, replace, cas): header line, data block."""
    tail = (*extra, "noreply") if noreply else extra
    return line(verb, key, "0", str(exptime), str(len(value)), *tail) + value + b"\r\n"


def value_header(header: bytes) -> tuple[str, int, bytes]:
    """(key, data size, cas unique or b"") of a `VALUE <key> <flags> <bytes> [<cas>]` line."""
    parts = header.split(b" ")
    if parts[0] == b"VALUE" and 4 <= len(parts) <= 5 and parts[3].isdigit():
        return parts[1].decode(), int(parts[3]), parts[4] if len(parts) == 5 else b""
    raise ProtocolError(f"unexpected reply {header[:80]!r}")


def storage_error(node: str, reply: bytes) -> StoreError | None:
    """The error an ERROR / CLIENT_ERROR / SERVER_ERROR reply to a command stands for (None for
    any other reply). "too large" is ItemTooLarge: memcached swallowed the data block and the
    connection stays in step; after any other error it may not be."""
    if not reply.startswith((b"ERROR", b"CLIENT_ERROR", b"SERVER_ERROR")):
        return None
    text = f"{node}: {reply.decode(errors='replace')}"
    if b"too large" in reply:
        return ItemTooLarge(text, node)
    return StoreError(text, node)
