"""Embedded memcached-compatible server (text and meta protocol), standard library only.

    from pymsm.server import MemcachedServer, Settings
    with MemcachedServer(Settings(port=0)).running() as server:
        ...  # talk to 127.0.0.1:server.port

See docs/server.md for what it supports and where it departs from memcached.
"""

from pymsm.server.server import MemcachedServer, serve
from pymsm.server.settings import Settings

__all__ = ["MemcachedServer", "Settings", "serve"]
