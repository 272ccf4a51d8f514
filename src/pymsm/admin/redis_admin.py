"""The operations tools on Redis: stats, key listing and checks for `memcached_nodes=redis://…`.

A Redis URL is one logical node to the app (`default`): Redis keeps the copies, pymsm writes no
backups. The tools look at the servers behind it: the one server, the master Sentinel names, or
every primary of a Cluster (labelled by address, since a session's keys may be on any of them).

- Stats come from INFO and map onto memcached's counters (`used_memory` as bytes,
  `maxmemory` as the limit, `keyspace_hits`/`misses`, `evicted_keys`, GET/MGET and SET calls),
  plus what only Redis has: role and replicas, eviction policy, persistence.
- Listing walks SCAN (1,000 keys a step, so memory stays flat) and asks OBJECT IDLETIME,
  MEMORY USAGE and PTTL per key in one pipeline per step: commands that leave the key's access
  time alone, as memcached's metadump does. (STRLEN would reset every key's idle time and
  make a listing look like traffic to Redis's LRU eviction.) Keys are classified with the
  memcached rules after the store's hash tag is taken off (`validity:{P S}` -> `validity:P S`).
  A key's size is what Redis says it takes in memory, header included, as memcached's is.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator, Iterator
from typing import Any

import redis
import redis.cluster
from redis import exceptions as rex

from pymsm.core.redis_url import RedisUrl
from pymsm.exceptions import StoreError
from pymsm.stores import redis_clients
from pymsm.stores.redis import Mapped, store_key

from .scan import KeyInfo, ScanInfo, classify
from .stats import NodeStats

SCAN_STEP = 1000
NODE = "default"  # the one node a Redis URL is to the app


@contextlib.contextmanager
def servers(url: RedisUrl, timeout: float) -> Iterator[list[tuple[str, str, Any]]]:
    """(label, address, redis.Redis client) for each server holding sessions; clients closed
    afterwards. Raises StoreError when the deployment cannot be reached at all."""
    client = None
    try:
        with Mapped(f"{NODE} ({url})", NODE, timeout):
            client = redis_clients.sync_client(url, timeout)
            if isinstance(client, redis.cluster.RedisCluster):
                cluster: Any = client  # (redis-py leaves get_primaries untyped)
                found = [
                    (n.name, n.name, cluster.get_redis_connection(n))
                    for n in cluster.get_primaries()
                ]
            else:
                found = [(NODE, _address(url, client), client)]
        yield found
    finally:
        if client is not None:
            with contextlib.suppress(Exception):
                redis_clients.close_sync(client)


def _address(url: RedisUrl, client: Any) -> str:
    """host:port of the server behind a single or Sentinel URL (Sentinel: the master now)."""
    if url.kind == "sentinel":
        host, port = client.connection_pool.get_master_address()
        return f"{host}:{port}"
    host, port = url.hosts[0]
    return f"{host}:{port}"


def collect(url: RedisUrl, timeout: float, clock: Any) -> list[NodeStats]:
    """One NodeStats per server (see `servers`); an unreachable deployment gives one row down."""
    try:
        with servers(url, timeout) as found:
            return [server_stats(label, address, c, timeout, clock) for label, address, c in found]
    except StoreError as exc:
        return [NodeStats(NODE, str(url), False, error=str(exc), sampled_at=clock())]


def server_stats(label: str, address: str, client: Any, timeout: float, clock: Any) -> NodeStats:
    try:
        with Mapped(f"{label} ({address})", label, timeout):
            info = client.info("everything")
            sampled = clock()
            seconds, _micros = client.time()
            details = _settings(client)
    except StoreError as exc:
        return NodeStats(label, address, False, error=str(exc), sampled_at=clock())
    commands = {k.removeprefix("cmdstat_"): v for k, v in info.items() if k.startswith("cmdstat_")}

    def calls(*names: str) -> int:
        return sum(int(commands.get(n, {}).get("calls", 0)) for n in names)

    db = f"db{client.connection_pool.connection_kwargs.get('db', 0)}"
    keyspace = info.get(db) if isinstance(info.get(db), dict) else {}
    counters = {
        "uptime": int(info.get("uptime_in_seconds", 0)),
        "time": int(seconds),
        "curr_connections": int(info.get("connected_clients", 0)),
        "curr_items": int(keyspace.get("keys", 0)),
        "bytes": int(info.get("used_memory", 0)),
        "limit_maxbytes": int(info.get("maxmemory", 0)),
        "get_hits": int(info.get("keyspace_hits", 0)),
        "get_misses": int(info.get("keyspace_misses", 0)),
        "cmd_get": calls("get", "mget"),
        "cmd_set": calls("set", "setex", "psetex"),
        "cmd_touch": calls("pexpire", "expire", "persist"),
        "evictions": int(info.get("evicted_keys", 0)),
    }
    details.update(
        role=str(info.get("role", "")),
        replicas=str(info.get("connected_slaves", 0)),
        aof_enabled=str(info.get("aof_enabled", "")),
    )
    return NodeStats(
        label,
        address,
        True,
        version=str(info.get("redis_version", "")),
        counters=counters,
        sampled_at=sampled,
        kind="redis",
        details=details,
    )


def _settings(client: Any) -> dict[str, str | None]:
    """maxmemory-policy and save from CONFIG GET; managed services often refuse CONFIG, which
    leaves them unknown rather than failing the stats."""
    try:
        found = client.config_get("maxmemory-policy") | client.config_get("save")
    except rex.ResponseError:
        return {}
    text = {_text(k): _text(v) for k, v in found.items()}
    return {"maxmemory_policy": text.get("maxmemory-policy", ""), "save": text.get("save")}


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def scan_servers(
    url: RedisUrl, prefix: str, timeout: float
) -> Generator[tuple[str, ScanInfo, Iterator[KeyInfo]], None, None]:
    """For each server: (label, its ScanInfo, its keys). Raises StoreError (for the whole
    deployment) when it cannot be reached; a server failing mid-scan raises from its keys."""
    with servers(url, timeout) as found:
        for label, address, client in found:
            info = ScanInfo(method="scan")
            yield label, info, scan_server(label, address, client, prefix, info, timeout)


def scan_server(
    label: str, address: str, client: Any, prefix: str, info: ScanInfo, timeout: float
) -> Generator[KeyInfo, None, None]:
    """Every key of one server, a SCAN step at a time (see the module docstring)."""
    mapped = Mapped(f"{label} ({address})", label, timeout)
    with mapped:
        info.estimated = int(client.dbsize())
    cursor = None
    while cursor != 0:
        with mapped:
            cursor, keys = client.scan(cursor or 0, count=SCAN_STEP)
            if not keys:
                continue
            pipe = client.pipeline(transaction=False)
            for key in keys:  # none of these touches the key (STRLEN would: idle 0, LRU bumped)
                pipe.object("idletime", key).memory_usage(key).pttl(key)
            answers = pipe.execute(raise_on_error=False)
        for i, raw in enumerate(keys):
            idle, size, pttl = answers[3 * i : 3 * i + 3]
            if isinstance(pttl, int) and pttl == -2:
                continue  # expired or deleted since the SCAN step
            wire = raw.decode(errors="replace")
            kind, sid = classify(store_key(wire), prefix)
            yield KeyInfo(
                label,
                wire,
                kind,
                sid,
                size if isinstance(size, int) else None,
                None if not isinstance(pttl, int) or pttl < 0 else (pttl + 999) // 1000,
                idle if isinstance(idle, int) else None,
            )
