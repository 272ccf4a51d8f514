"""Server settings: memcached's own flags and defaults, parsed once at the edge."""

from __future__ import annotations

import re
from dataclasses import dataclass

MB = 1024 * 1024
VERSION = "1.6.18"
KEY_MAX_LENGTH = 250
# memcached 1.6: a command line without "\n" after this many bytes closes the connection
LINE_MAX = 2048
# memcached lets multi-key get lines grow without bound; we stop at this many bytes (bounded memory)
GET_LINE_MAX = 1 * MB


@dataclass(frozen=True)
class Settings:
    """What `memcached` takes on its command line (the subset this server honours)."""

    port: int = 11211
    listen: str = "127.0.0.1"
    memory_limit: int = 64 * MB  # -m, in bytes
    no_evict: bool = False  # -M
    max_connections: int = 1024  # -c
    item_size_max: int = 1 * MB  # -I
    threads: int = 4  # -t (accepted; asyncio serves every connection on one thread)
    udp_port: int = 0  # -U (accepted; UDP is not served)
    user: str = ""  # -u (accepted; we never change user)
    verbosity: int = 0  # -v / -vv
    growth_factor: float = 1.25  # -f
    chunk_size: int = 48  # -n
    # "auto": uvloop when installed (about 1.5x the throughput), else asyncio's own loop
    event_loop: str = "auto"

    # memcached keeps 1 MB slab pages whatever -I says; larger items are chained across chunks
    slab_page_size: int = MB

    @property
    def slab_chunk_max(self) -> int:
        """Largest chunk: half a page, as memcached; never above the item limit (-I below 512k)."""
        return min(self.slab_page_size // 2, self.item_size_max)


_SIZE = re.compile(r"^(\d+)([kKmM]?)$")


def parse_size(text: str) -> int:
    """Parse memcached's `-I` value: bytes, or with a k/m suffix (`512k`, `1m`).

    Raises ValueError with memcached's limits (1 KB .. 1 GB) in the message.
    """
    match = _SIZE.match(text.strip())
    if match is None:
        raise ValueError(f"invalid size {text!r}: use bytes or a k/m suffix, e.g. 1m")
    value = int(match.group(1))
    unit = match.group(2).lower()
    value *= {"": 1, "k": 1024, "m": MB}[unit]
    if value < 1024:
        raise ValueError(f"item size {text!r} too small: minimum is 1k")
    if value > 1024 * MB:
        raise ValueError(f"item size {text!r} too large: maximum is 1024m")
    return value
