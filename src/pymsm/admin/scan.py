"""Listing the keys a memcached node holds, and telling pymsm's keys apart.

`scan_node` is a generator: it reads `lru_crawler metadump all` (memcached >= 1.4.31) line by line
and yields one KeyInfo per key, so memory stays bounded whatever the number of keys. Servers
without metadump fall back to `stats cachedump` per slab class, which memcached caps at about
2 MB of answer per class, and with a segmented LRU (memcached >= 1.5 with its crawler off)
walks only one segment of each class: such listings can be partial (`ScanInfo.partial`).

Key kinds (see DESIGN.md, storage layout), `P` the storage prefix and `S` a valid session id:
`P S` primary, `validity:P S`, `bak:P S` backup, `bak:validity:P S`, `lock:P S`, `tomb:P S` (the
tombstone of an id that ended or that a session moved away from); anything else is `other` (not
pymsm's, or not this prefix's).
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from urllib.parse import unquote

from pymsm.core.ids import SessionId
from pymsm.core.nodes import Node
from pymsm.exceptions import InvalidSessionId, StoreError

from .wire import Connection, Unsupported

KINDS = ("primary", "validity", "backup", "backup_validity", "lock", "tomb", "other")
_TAGS = (
    ("lock:", "lock"),
    ("tomb:", "tomb"),
    ("bak:validity:", "backup_validity"),
    ("bak:", "backup"),
    ("validity:", "validity"),
)
BUSY_RETRIES = 50  # x 0.1 s: metadump waits while memcached's own crawler runs


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """One key on one node. `ttl`: seconds left (None: never expires); `idle`: seconds since
    the server last served it (None: unknown); `size`: bytes as the server counts them."""

    node: str
    key: str
    kind: str
    session_id: str | None
    size: int | None
    ttl: int | None
    idle: int | None


@dataclass
class ScanInfo:
    """What a scan learnt besides the keys: filled in while it runs."""

    method: str = ""  # metadump or cachedump
    partial: bool = False
    server_time: int = 0
    estimated: int = 0  # curr_items when the scan began (for progress)


def classify(key: str, prefix: str = "") -> tuple[str, str | None]:
    """(kind, session id) of a key; ("other", None) when it is not a pymsm key of `prefix`."""
    kind, rest = "primary", key
    for tag, name in _TAGS:
        if key.startswith(tag):
            kind, rest = name, key[len(tag) :]
            break
    if not rest.startswith(prefix):
        return "other", None
    try:
        sid = SessionId.parse(rest[len(prefix) :], remember=False)
    except InvalidSessionId:
        return "other", None
    return kind, str(sid)


def scan_node(
    node: Node, prefix: str = "", timeout: float = 2.0, info: ScanInfo | None = None
) -> Generator[KeyInfo, None, None]:
    """Every key of `node`, one at a time. Raises StoreError if the node cannot be read; the
    connection is closed when the generator finishes or is closed early."""
    info = info if info is not None else ScanInfo()
    with Connection(node, timeout) as conn:
        stats = conn.stats()
        info.server_time = int(stats.get("time", "0") or 0) or int(time.time())
        info.estimated = int(stats.get("curr_items", "0") or 0)
        try:
            items = _metadump(conn)
            first = next(items, None)
            info.method = "metadump"
        except Unsupported:
            items, first = _cachedump(conn, info), None
            info.method = "cachedump"
        if first is not None:
            yield _info(node.name, prefix, info.server_time, *first)
        for item in items:
            yield _info(node.name, prefix, info.server_time, *item)


_Raw = tuple[str, int | None, int | None, int | None]  # key, size, expires at, last access


def _info(
    node: str, prefix: str, now: int, key: str, size: int | None, exp: int | None, la: int | None
) -> KeyInfo:
    kind, sid = classify(key, prefix)
    ttl = None if exp is None else max(0, exp - now)
    idle = None if la is None else max(0, now - la)
    return KeyInfo(node, key, kind, sid, size, ttl, idle)


def _metadump(conn: Connection) -> Iterator[_Raw]:
    for _ in range(BUSY_RETRIES):
        conn.send(b"lru_crawler metadump all\r\n")
        line = conn.readline()
        if not line.startswith(b"BUSY"):
            break
        time.sleep(0.1)
    else:
        raise StoreError(
            f"{conn.node.name}: the LRU crawler stayed busy; try again", conn.node.name
        )
    while line != b"END":
        if not line.startswith(b"key="):
            raise Unsupported(f"{conn.node.name}: metadump answered {line[:60]!r}", conn.node.name)
        yield _metadump_line(line)
        line = conn.readline()


def _metadump_line(line: bytes) -> _Raw:
    fields = dict(part.partition(b"=")[::2] for part in line.split(b" "))
    exp = int(fields.get(b"exp", b"-1"))
    la = fields.get(b"la")
    size = fields.get(b"size")
    return (
        unquote(fields[b"key"].decode()),
        int(size) if size is not None else None,
        None if exp < 0 else exp,
        int(la) if la is not None else None,
    )


CACHEDUMP_CAP = 2 * 1024 * 1024  # memcached answers at most this much per slab class


def _cachedump(conn: Connection, info: ScanInfo) -> Iterator[_Raw]:
    classes = sorted({int(k.split(":")[1]) for k in conn.stats("items") if k.endswith(":number")})
    started = info.server_time - int(conn.stats().get("uptime", "0") or 0)
    listed = 0
    for slab in classes:
        answered = 0
        for line in conn.lines(f"stats cachedump {slab} 0"):
            answered += len(line) + 2
            # ITEM <key> [<bytes> b; <expires at> s]
            _, key, rest = line.decode(errors="replace").split(" ", 2)
            size, _, exp = rest.strip("[]").replace(" b;", "").replace(" s", "").partition(" ")
            expires = int(exp)
            never = expires == 0 or abs(expires - started) <= 1  # old servers add start time
            listed += 1
            yield key, int(size), None if never else expires, None
        info.partial = info.partial or answered >= CACHEDUMP_CAP - 1024
    # with a segmented LRU (memcached 1.5+) cachedump walks only one segment of each class
    info.partial = info.partial or listed < info.estimated
