"""How the sync Redis store talks to Redis: raw commands in, raw RESP2 replies out.

`DirectLink` (one server, Sentinel) keeps one pooled connection per thread, as the memcached
store keeps one client per thread, and sends commands on it directly: redis-py's per-command
client path (pool checkout, readiness poll, retry wrapper, callbacks) costs about as much CPU as
a loopback round trip. It also lets a `noreply` write go out without waiting: its reply is read
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
import threading
from collections.abc import Sequence
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError


def sha1(script: str) -> str:
    return hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()


class DirectLink:
    """Thread-local connections from `pool` (a redis-py ConnectionPool or SentinelConnectionPool)."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self._local = threading.local()

    def _connection(self) -> Any:
        local = self._local
        if getattr(local, "pid", None) != os.getpid():  # new thread, or a forked worker
            local.conn, local.owed, local.pid = self.pool.get_connection(), 0, os.getpid()
        return local.conn

    def _settle(self, conn: Any) -> None:
        """Read the replies still owed for noreply writes; their errors cannot be reported."""
        while self._local.owed:
            self._local.owed -= 1
            with contextlib.suppress(ResponseError):
                conn.read_response()

    def _round_trip(self, conn: Any, args: tuple[Any, ...]) -> Any:
        self._settle(conn)
        self._reconnect(conn)
        conn.send_command(*args)
        return conn.read_response()

    def _reset(self, conn: Any) -> None:
        conn.disconnect()
        self._local.owed = 0
        self._local.dropped = True

    def _reconnect(self, conn: Any) -> None:
        # connect() explicitly: a Sentinel connection asks for the current master there, while
        # send_command() on a closed connection would dial the old address again
        if getattr(self._local, "dropped", False):
            conn.connect()
            self._local.dropped = False

    def command(self, *args: Any) -> Any:
        """Send a command and return its reply. Error replies raise ResponseError."""
        conn = self._connection()
        try:
            return self._round_trip(conn, args)
        except ResponseError:
            raise  # an error reply leaves the connection in step
        except RedisConnectionError:
            self._reset(conn)  # stale after a failover or restart: one fresh connection
        except BaseException:
            self._reset(conn)  # a timeout or worse: the connection's state is unknown
            raise
        try:
            return self._round_trip(conn, args)
        except ResponseError:
            raise
        except BaseException:
            self._reset(conn)
            raise

    def send(self, *args: Any) -> None:
        """Send without waiting for the reply (noreply)."""
        conn = self._connection()
        try:
            self._reconnect(conn)
            conn.send_command(*args)
        except BaseException:
            self._reset(conn)
            raise
        self._local.owed += 1

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
    """Commands through a redis-py client (RedisCluster): redirects and slot maps are its job."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._scripts: dict[str, Any] = {}

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
