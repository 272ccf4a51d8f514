"""Per-node statistics: what `msm stats` shows and `msm doctor` judges.

`collect(nodes)` asks every node for `stats` (and `stats settings`) and returns one NodeStats per
node; a node that cannot be reached gives `up=False` and the reason, never an exception.
`rates(before, after)` turns two samples into per-second rates for `msm stats --watch`.
`collect_config(config)` does either, or asks Redis (admin/redis_admin.py) for a Redis URL.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from pymsm.config import Config
from pymsm.core.nodes import Node
from pymsm.exceptions import StoreError

from .wire import Connection, Unsupported

# `stats` fields kept, as ints
COUNTERS = (
    "uptime",
    "time",
    "curr_connections",
    "curr_items",
    "bytes",
    "limit_maxbytes",
    "get_hits",
    "get_misses",
    "cmd_get",
    "cmd_set",
    "cmd_touch",
    "evictions",
)
RATED = ("cmd_get", "cmd_set", "get_hits", "get_misses", "evictions")


@dataclass
class NodeStats:
    """One node's answer. `counters` holds the ints of COUNTERS the server reported."""

    node: str
    address: str
    up: bool
    error: str = ""
    version: str = ""
    counters: dict[str, int] = field(default_factory=dict)
    item_size_max: int | None = None
    sampled_at: float = 0.0  # local time of the sample, s
    kind: str = "memcached"  # or redis
    details: dict[str, str | None] = field(default_factory=dict)  # Redis: role, policy, ...

    def get(self, name: str) -> int:
        return self.counters.get(name, 0)

    @property
    def hit_ratio(self) -> float | None:
        """Hits over lookups (hits + misses), None before the first lookup."""
        lookups = self.get("get_hits") + self.get("get_misses")
        return self.get("get_hits") / lookups if lookups else None

    @property
    def used_ratio(self) -> float | None:
        limit = self.get("limit_maxbytes")
        return self.get("bytes") / limit if limit else None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(hit_ratio=self.hit_ratio, used_ratio=self.used_ratio)
        return data


def parse_stats(raw: dict[str, str]) -> dict[str, int]:
    """The integer counters of a `stats` answer; absent or non-numeric ones are left out."""
    counters = {}
    for name in COUNTERS:
        value = raw.get(name, "")
        if value.isdigit():
            counters[name] = int(value)
    return counters


def node_stats(node: Node, timeout: float, clock: Any) -> NodeStats:
    try:
        with Connection(node, timeout) as conn:
            raw = conn.stats()
            sampled = clock()
            try:
                settings = conn.stats("settings")
            except Unsupported:
                settings = {}
    except StoreError as exc:
        return NodeStats(node.name, node.address, False, error=str(exc), sampled_at=clock())
    size_max = settings.get("item_size_max", "")
    return NodeStats(
        node.name,
        node.address,
        True,
        version=raw.get("version", ""),
        counters=parse_stats(raw),
        item_size_max=int(size_max) if size_max.isdigit() else None,
        sampled_at=sampled,
    )


def collect(nodes: Iterable[Node], timeout: float, clock: Any) -> list[NodeStats]:
    """Stats of every node, asked in parallel (a dead node costs one timeout, not one each)."""
    nodes = list(nodes)
    with ThreadPoolExecutor(max_workers=min(16, len(nodes) or 1)) as pool:
        return list(pool.map(lambda n: node_stats(n, timeout, clock), nodes))


def collect_config(config: Config, timeout: float, clock: Any) -> list[NodeStats]:
    """Stats of the configured nodes: memcached nodes, or the servers behind a Redis URL."""
    if config.nodes.redis is not None:
        found: list[NodeStats] = redis_admin().collect(config.nodes.redis, timeout, clock)
        return found
    return collect(config.nodes, timeout, clock)


def redis_admin() -> Any:
    """admin/redis_admin.py, which needs redis-py (the `redis` extra): a ConfigError without."""
    try:
        from . import redis_admin as module
    except ImportError as exc:
        from pymsm.stores import redis_missing

        raise redis_missing() from exc
    return module


def rates(before: NodeStats, after: NodeStats) -> dict[str, float]:
    """Per-second rates of the RATED counters between two samples of one node.

    Empty when either sample is down or the node restarted in between (counters went back)."""
    elapsed = after.sampled_at - before.sampled_at
    if not (before.up and after.up) or elapsed <= 0 or after.get("uptime") < before.get("uptime"):
        return {}
    return {name: max(0, after.get(name) - before.get(name)) / elapsed for name in RATED}
