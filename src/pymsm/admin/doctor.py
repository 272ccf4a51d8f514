"""`msm doctor`'s checks: configuration, nodes, features, clocks, memory, item size, backups.

Each check returns Findings (level ok, warning or problem; the check's name; a message that
names the setting or node and the fix). Problems are what breaks an invariant or will soon;
warnings are choices worth a second look.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pymsm.config import Config
from pymsm.core.nodes import Node
from pymsm.exceptions import ConfigError, StoreError

from .scan import scan_node
from .stats import NodeStats
from .wire import Connection, supports

PLACEHOLDER_NODES = "n1:127.0.0.1:11211"
# settings whose validity depends on others: checked together
_WITH = {
    "failover_nodes": ("memcached_nodes",),
    "cookie_samesite": ("cookie_secure",),
    "storage_key_prefix": ("context", "app_version"),
    "codec": ("secret_key",),
}
SKEW_LIMIT = 2  # s: memcached's clock ticks once a second
BACKUP_BATCH = 100


@dataclass
class Finding:
    level: str  # ok, warning, problem
    check: str
    message: str


def check_settings(settings: dict[str, Any]) -> tuple[Config | None, list[Finding]]:
    """Each setting is tried alone first, so every bad one is named, not just the first."""
    findings: list[Finding] = []
    seen: set[str] = set()
    for name, value in settings.items():
        trial = {"memcached_nodes": PLACEHOLDER_NODES, name: value}
        trial.update((k, settings[k]) for k in _WITH.get(name, ()) if k in settings)
        try:
            Config(**trial)
        except ConfigError as exc:
            if str(exc) not in seen:
                seen.add(str(exc))
                findings.append(Finding("problem", name, str(exc)))
    if findings:
        return None, findings
    try:
        config = Config(**settings)
    except ConfigError as exc:
        return None, [Finding("problem", "config", str(exc))]
    return config, advice(config)


def advice(config: Config) -> list[Finding]:
    """What a valid configuration still gets wrong for high availability."""
    nodes = config.nodes
    mode = "sticky" if config.sticky else "non-sticky"
    where = (
        f"{len(nodes)} node(s) ({', '.join(nodes.names)})"
        if nodes.redis is None
        else f"Redis {nodes.redis.kind} ({nodes.redis})"
    )
    found = [
        Finding(
            "ok",
            "config",
            f"{where}, {mode}, locking_mode {config.locking_mode}, "
            f"storage prefix {config.key_prefix or '(none)'}",
        )
    ]
    if nodes.redis is None and (len(nodes) < 2 or not nodes.has_ids):
        found.append(
            Finding(
                "warning",
                "memcached_nodes",
                "one node: sessions have no backup and are lost when it restarts; list two "
                "or more as n1:host:port,n2:host:port",
            )
        )
    if config.session_backup_async:
        found.append(
            Finding(
                "warning",
                "session_backup_async",
                "true: a request may not see the previous request's write; set it to false "
                "unless you measured that you need it",
            )
        )
    if config.max_inactive_interval <= 0:
        found.append(
            Finding(
                "warning",
                "max_inactive_interval",
                f"{config.max_inactive_interval}: sessions never expire and fill memory; "
                "set an idle timeout such as 1800",
            )
        )
    pattern = config.request_uri_ignore_pattern
    missed = ignore_pattern_misses(pattern, re.compile(pattern)) if pattern else []
    if missed:
        found.append(
            Finding(
                "warning",
                "request_uri_ignore_pattern",
                f"{pattern!r} names file types but does not match {', '.join(missed[:2])}: "
                "static requests load sessions; did you mean \\. where it says /.?",
            )
        )
    if config.operation_timeout > 5:
        found.append(
            Finding(
                "warning",
                "operation_timeout",
                f"{config.operation_timeout * 1000:.0f}ms: a dead node holds each request "
                "that long; 1000ms or less is usual",
            )
        )
    return found


_STATIC = ("ico", "png", "gif", "jpg", "jpeg", "css", "js", "svg", "webp")


def ignore_pattern_misses(text: str, pattern: re.Pattern[str]) -> list[str]:
    """Paths of the file types an ignore pattern names that it does not match. A common slip,
    copied from article to article, writes `/.` for `\\.` (`.*/.(png|css)$`): it matches
    `/xpng`, not `/logo.png`, so static requests load sessions, in Tomcat as in pymsm."""
    return [
        f"/static/a.{ext}"
        for ext in _STATIC
        if re.search(rf"\b{ext}\b", text) and not pattern.search(f"/static/a.{ext}")
    ]


@dataclass
class NodeFeatures:
    node: str
    meta: bool
    touch: bool


def features(node: Node, timeout: float) -> NodeFeatures:
    """Meta commands (`mn`, memcached >= 1.6) and `touch` (>= 1.4.8), asked without side effects."""
    with Connection(node, timeout) as conn:
        meta = supports(conn, "mn", [b"MN"])
        touch = supports(conn, "touch pymsm:doctor:probe 0", [b"NOT_FOUND", b"TOUCHED"])
    return NodeFeatures(node.name, meta, touch)


def check_nodes(stats: list[NodeStats], feats: dict[str, NodeFeatures]) -> list[Finding]:
    found = []
    for s in stats:
        if not s.up:
            found.append(Finding("problem", s.node, f"unreachable: {s.error}"))
            continue
        f = feats.get(s.node)
        meta = "?" if f is None else ("yes" if f.meta else "no")
        touch = "?" if f is None else ("yes" if f.touch else "no")
        found.append(
            Finding("ok", s.node, f"{s.address}: version {s.version}, meta {meta}, touch {touch}")
        )
        if f is not None and not f.touch:
            found.append(
                Finding("problem", s.node, "no touch command: upgrade to memcached 1.4.8 or later")
            )
        if f is not None and not f.meta:
            found.append(
                Finding(
                    "warning",
                    s.node,
                    "no meta commands: lock release cannot compare-and-delete; use memcached 1.6+",
                )
            )
    return found


def check_clocks(stats: list[NodeStats]) -> list[Finding]:
    """Server `time` vs this host's clock when the answer came, and between nodes."""
    skews = {s.node: s.get("time") - int(s.sampled_at) for s in stats if s.up and s.get("time")}
    if not skews:
        return []
    text = ", ".join(f"{n} {v:+d}s" for n, v in skews.items())
    spread = max(skews.values()) - min(skews.values())
    worst = max(abs(v) for v in skews.values())
    if spread > SKEW_LIMIT or worst > SKEW_LIMIT:
        return [
            Finding(
                "problem",
                "clock",
                f"clock skew vs this host: {text} (spread {spread}s); run NTP on the cache and "
                "app hosts: idle timeouts and TTLs over 30 days depend on agreeing clocks",
            )
        ]
    return [Finding("ok", "clock", f"skew vs this host: {text}")]


def check_memory(stats: list[NodeStats]) -> list[Finding]:
    found = []
    for s in stats:
        if not s.up or s.used_ratio is None:
            continue
        used = f"{s.used_ratio * 100:.0f}% of {s.get('limit_maxbytes') // 2**20} MiB used"
        more = "raise maxmemory" if s.kind == "redis" else "raise memcached -m"
        if s.get("evictions"):
            found.append(
                Finding(
                    "problem",
                    f"{s.node} memory",
                    f"{s.get('evictions')} evictions ({used}): live sessions may be dropped; "
                    f"{more} or add nodes",
                )
            )
        elif s.used_ratio > 0.9:
            found.append(Finding("warning", f"{s.node} memory", f"{used}: little headroom; {more}"))
        else:
            found.append(Finding("ok", f"{s.node} memory", used))
    return found


# eviction policies that never evict: a full Redis refuses writes (OOM) instead
_NO_EVICTION = "noeviction"


def check_redis(stats: list[NodeStats], kind: str) -> list[Finding]:
    """The servers behind a Redis URL (`kind`: single, sentinel or cluster): reachable, what
    keeps the sessions when a server is lost (replicas, persistence), and the memory limit.

    Redis holds the copies there, not pymsm (no backup keys), so these replace the backup and
    item size checks; its TTLs are relative, so clock skew does not shorten sessions."""
    found = []
    for s in stats:
        if not s.up:
            found.append(Finding("problem", s.node, f"unreachable: {s.error}"))
            continue
        d = s.details
        replicas = int(d.get("replicas") or 0)
        found.append(
            Finding(
                "ok",
                s.node,
                f"{s.address}: Redis {s.version}, {d.get('role') or '?'}, {replicas} replica(s)",
            )
        )
        if not replicas:
            found.append(
                Finding(
                    "warning",
                    f"{s.node} copies",
                    "no replica: every session on this server is lost with it; add a replica "
                    "(redis+sentinel://… names the master Sentinel promotes)"
                    if kind != "cluster"
                    else "no replica: the sessions of this primary's slots are lost with it; "
                    "give each primary a replica (redis-cli --cluster add-node --cluster-slave)",
                )
            )
        persistent = d.get("aof_enabled") == "1" or bool(d.get("save"))
        if d.get("save") is not None and not persistent:
            found.append(
                Finding(
                    "warning",
                    f"{s.node} persistence",
                    "neither appendonly nor save snapshots: a restart empties this server and "
                    "logs its users out; set appendonly yes",
                )
            )
        policy = d.get("maxmemory_policy")
        if not s.get("limit_maxbytes"):
            found.append(
                Finding(
                    "warning",
                    f"{s.node} memory",
                    "no maxmemory: Redis grows until the host runs out of memory; set maxmemory "
                    "and a volatile-lru or allkeys-lru maxmemory-policy",
                )
            )
        elif policy == _NO_EVICTION:
            found.append(
                Finding(
                    "warning",
                    f"{s.node} memory",
                    "maxmemory-policy noeviction: once memory is full every session save fails "
                    "(OOM); a volatile-lru policy drops the least recently used sessions instead, "
                    "as memcached does",
                )
            )
    return found


@dataclass
class Sample:
    """What a scan of one node found for the remaining checks."""

    node: str
    largest: int = 0
    largest_id: str | None = None
    primaries: int = 0
    picked: list[str] = field(default_factory=list)  # reservoir of primary session ids


def sample_node(node: Node, prefix: str, timeout: float, size: int) -> Sample:
    """One pass over the node's keys: largest record, and up to `size` random primary ids."""
    sample = Sample(node.name)
    rng = random.Random(0)
    for key in scan_node(node, prefix, timeout):
        if key.kind not in ("primary", "backup"):
            continue
        if key.size is not None and key.size > sample.largest:
            sample.largest, sample.largest_id = key.size, key.session_id
        if key.kind == "primary" and key.session_id:
            sample.primaries += 1
            if len(sample.picked) < size:
                sample.picked.append(key.session_id)
            elif (j := rng.randrange(sample.primaries)) < size:
                sample.picked[j] = key.session_id
    return sample


def check_item_size(
    samples: list[Sample], stats: list[NodeStats], setting: int = 1024 * 1024
) -> list[Finding]:
    """Each node's item size limit (memcached -I) against pymsm's `item_size_limit` (`setting`),
    and the largest session sampled on it against the smaller of the two."""
    found = []
    limits = {s.node: s.item_size_max for s in stats if s.item_size_max}
    for node, limit in limits.items():
        if limit < setting:
            found.append(
                Finding(
                    "problem",
                    f"{node} item size",
                    f"the node refuses items over {limit} bytes (memcached -I) but "
                    f"item_size_limit is {setting}: a session between the two fails to save, and "
                    "its backup copy (written without waiting) fails unseen; set "
                    f"item_size_limit={limit} or raise -I",
                )
            )
        elif limit > setting:
            found.append(
                Finding(
                    "ok",
                    f"{node} item size",
                    f"the node takes items up to {limit} bytes; pymsm stores at most "
                    f"item_size_limit={setting}",
                )
            )
    for sample in samples:
        limit = min(limits.get(sample.node) or setting, setting)
        if not sample.largest:
            continue
        ratio = sample.largest / limit
        text = f"largest session {sample.largest} bytes of {limit} ({ratio * 100:.0f}%)"
        if ratio > 0.5:
            found.append(
                Finding(
                    "problem" if ratio > 0.9 else "warning",
                    f"{sample.node} item size",
                    f"{text}, session {sample.largest_id}: store less in sessions, or raise "
                    "memcached -I and item_size_limit with it",
                )
            )
        else:
            found.append(Finding("ok", f"{sample.node} item size", text))
    return found


def missing_backups(
    config: Config, sample: Sample, timeout: float, unreachable: Iterable[str]
) -> list[str]:
    """The sampled primaries of one node whose `bak:` key is on no other reachable node."""
    missing = {"bak:" + config.key_prefix + sid: sid for sid in sample.picked}
    others = [n for n in config.nodes if n.name != sample.node and n.name not in set(unreachable)]
    for node in others:
        with Connection(node, timeout) as conn:
            for batch in _batches(list(missing), BACKUP_BATCH):
                for key in conn.get_many(batch):
                    missing.pop(key, None)
    return sorted(missing.values())


def check_backups(
    config: Config, samples: list[Sample], timeout: float, unreachable: list[str]
) -> list[Finding]:
    if config.sticky or len(config.nodes) < 2:
        return []
    found = []
    for sample in samples:
        if not sample.picked:
            continue
        try:
            missing = missing_backups(config, sample, timeout, unreachable)
        except StoreError as exc:
            found.append(
                Finding("problem", f"{sample.node} backups", f"backup check failed: {exc}")
            )
            continue
        checked = f"{len(sample.picked)} of {sample.primaries} sessions checked"
        why = (
            f"{', '.join(unreachable)} unreachable (each use of a session writes its backup again)"
            if unreachable
            else "a backup node was down when they were last written, or session_backup_async "
            "dropped writes"
        )
        if missing:
            found.append(
                Finding(
                    "problem",
                    f"{sample.node} backups",
                    f"{len(missing)} sessions without a backup ({checked}), e.g. {missing[0]}: "
                    f"they are lost if this node dies; {why}",
                )
            )
        else:
            found.append(
                Finding("ok", f"{sample.node} backups", f"every session has a backup ({checked})")
            )
    return found


def _batches(items: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
