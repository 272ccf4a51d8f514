"""Cache nodes: the node list, failover nodes, the backup ring and per-node health.

`NodeList.parse` reads MSM's `memcached_nodes` syntax: `n1:host:port,n2:host:port` (commas or
spaces), IPv6 as `n1:[::1]:port`, or a single `host:port` without node id (no ids, no backup),
or a Redis URL (see redis_url.py): one node named `default`, no ids, the parsed URL in `redis`.

Health is a small state machine per node with an injected clock (`now` in seconds):

    healthy --failure--> failed(1) --...--> failed(n) --n == max_failures--> dead(until now+t)
    dead --now >= until--> probing (one request lets through) --success--> healthy
                                                           --failure--> dead(until now+t)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from pymsm.exceptions import ConfigError

from .ids import NODE_ID_PATTERN
from .redis_url import RedisUrl, is_url

DEFAULT_NODE = "default"
_HOST_PORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):([0-9]{1,5})")


@dataclass(frozen=True, slots=True)
class Node:
    id: str | None
    host: str
    port: int

    @property
    def name(self) -> str:
        """The node id, or `default` for a single node configured without one."""
        return self.id or DEFAULT_NODE

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.id}:{self.address}" if self.id else self.address


def _parse_host_port(text: str, setting: str) -> tuple[str, int]:
    match = _HOST_PORT.fullmatch(text)
    if match is None:
        raise ConfigError(
            f"{setting}: cannot read {text!r}; write host:port, e.g. 10.0.0.1:11211 or [::1]:11211"
        )
    host, port = match[1].strip("[]"), int(match[2])
    if not 0 < port < 65536:
        raise ConfigError(f"{setting}: port {port} in {text!r} is not between 1 and 65535")
    return host, port


@dataclass(frozen=True)
class NodeList:
    """The configured cache nodes in ring order, and which of them are failover nodes."""

    nodes: tuple[Node, ...]
    failover: frozenset[str] = frozenset()
    _by_id: dict[str, Node] = field(init=False, repr=False, compare=False)
    _after: dict[str, list[str]] = field(init=False, repr=False, compare=False)
    # whether ids name nodes (n1:host:port); asked several times per request, so computed once
    has_ids: bool = field(init=False, repr=False, compare=False)
    redis: RedisUrl | None = None

    def __post_init__(self) -> None:
        by_id = {n.id: n for n in self.nodes if n.id}
        ids = list(by_id)
        after = {i: ids[k + 1 :] + ids[:k] for k, i in enumerate(ids)}
        object.__setattr__(self, "_by_id", by_id)
        object.__setattr__(self, "_after", after)
        object.__setattr__(self, "has_ids", self.nodes[0].id is not None)

    @classmethod
    def parse(cls, text: str, failover_nodes: str | Iterable[str] = "") -> NodeList:
        setting = "memcached_nodes"
        items = [item for item in re.split(r"[\s,]+", text.strip()) if item]
        if not items:
            raise ConfigError(
                f"{setting} is empty; give e.g. 'n1:10.0.0.1:11211,n2:10.0.0.2:11211'"
            )
        if is_url(text):
            return cls._parse_url(text, failover_nodes)
        if len(items) == 1 and _HOST_PORT.fullmatch(items[0]):
            return cls((Node(None, *_parse_host_port(items[0], setting)),))
        nodes = []
        for item in items:
            node_id, sep, rest = item.partition(":")
            if not sep or not NODE_ID_PATTERN.fullmatch(node_id):
                raise ConfigError(
                    f"{setting}: {item!r} needs a node id (letters, digits, _), as n1:host:port"
                )
            nodes.append(Node(node_id, *_parse_host_port(rest, setting)))
        ids = [n.id for n in nodes]
        duplicates = sorted({i for i in ids if ids.count(i) > 1 and i})
        if duplicates:
            raise ConfigError(
                f"{setting}: node id {duplicates[0]!r} is used twice; ids must be unique"
            )
        return cls(tuple(nodes), _parse_failover(failover_nodes, ids))

    @classmethod
    def _parse_url(cls, text: str, failover_nodes: str | Iterable[str]) -> NodeList:
        url = RedisUrl.parse(text)
        names = (
            re.split(r"[\s,]+", failover_nodes)
            if isinstance(failover_nodes, str)
            else failover_nodes
        )
        if any(names):
            raise ConfigError(
                f"failover_nodes is set but memcached_nodes is a Redis URL ({url}); Redis fails "
                "over by itself (Sentinel or Cluster): remove failover_nodes"
            )
        host, port = url.hosts[0]
        return cls((Node(None, host, port),), redis=url)

    @property
    def ids(self) -> list[str]:
        return list(self._by_id)

    @property
    def primary_ids(self) -> list[str]:
        return [i for i in self._by_id if i not in self.failover]

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._by_id

    def get(self, name: str) -> Node:
        return self._by_id[name] if self.has_ids else self.nodes[0]

    @property
    def names(self) -> list[str]:
        return [n.name for n in self.nodes]

    def after(self, node_id: str) -> list[str]:
        """The other node ids in ring order, starting with the one after `node_id`."""
        return self._after[node_id]


def _parse_failover(value: str | Iterable[str], ids: list[str | None]) -> frozenset[str]:
    names = re.split(r"[\s,]+", value.strip()) if isinstance(value, str) else list(value)
    failover = frozenset(n for n in names if n)
    unknown = sorted(failover - set(i for i in ids if i))
    if unknown:
        raise ConfigError(
            f"failover_nodes: {unknown[0]!r} is not a node id of memcached_nodes ({', '.join(map(str, ids))})"
        )
    if failover and failover >= set(ids):
        raise ConfigError("failover_nodes lists every node; leave at least one primary node")
    return failover


@dataclass(slots=True)
class _State:
    failures: int = 0
    dead_until: float = 0.0
    probing: bool = False
    changed_at: float = 0.0


class Health:
    """Per-node health with an injected clock. Thread-compatible: races only let an extra probe in."""

    def __init__(self, max_failures: int = 2, dead_timeout: float = 10.0) -> None:
        self.max_failures = max_failures
        self.dead_timeout = dead_timeout
        self._states: dict[str, _State] = {}
        # no node's `changed_at` can be later than this, now or once a dead time runs out: a
        # cheap "nothing changed since" for the refill check
        self.last_change = 0.0

    def _state(self, node_id: str) -> _State:
        state = self._states.get(node_id)
        if state is None:
            state = self._states[node_id] = _State()
        return state

    def available(self, node_id: str, now: float) -> bool:
        """May a request go to this node now? A dead node past its time lets one probe through."""
        state = self._states.get(node_id)
        if state is None or state.dead_until == 0.0:
            return True
        if now < state.dead_until or state.probing:
            return False
        state.probing = True
        return True

    def is_up(self, node_id: str, now: float) -> bool:
        """Like `available` but without taking the probe: for choosing nodes."""
        state = self._states.get(node_id)
        return (
            state is None
            or state.dead_until == 0.0
            or (now >= state.dead_until and not state.probing)
        )

    def healthy(self, node_id: str) -> bool:
        """Never seen failing, or an operation succeeded since it last failed."""
        state = self._states.get(node_id)
        return state is None or (state.failures == 0 and state.dead_until == 0.0)

    def succeeded(self, node_id: str, now: float) -> None:
        state = self._states.get(node_id)
        if state is None or (state.failures == 0 and state.dead_until == 0.0):
            return
        if state.dead_until:
            state.changed_at = now
            self.last_change = max(self.last_change, now)
        state.failures, state.dead_until, state.probing = 0, 0.0, False

    def failed(self, node_id: str, now: float) -> None:
        state = self._state(node_id)
        state.failures += 1
        state.probing = False
        state.changed_at = now  # writes may have been lost: refill sessions
        if state.dead_until or state.failures >= self.max_failures:
            state.dead_until = now + self.dead_timeout
        self.last_change = max(self.last_change, state.dead_until or now)

    def changed_at(self, node_id: str, now: float) -> float:
        """Since when the node may lack what was written to it: when it last failed or came
        back, or, once the dead time of a node marked dead has run out, that moment (it may be
        back and empty: nobody sent it a write since). 0 if never seen failing."""
        state = self._states.get(node_id)
        if state is None:
            return 0.0
        if 0.0 < state.dead_until <= now:
            return max(state.changed_at, state.dead_until)
        return state.changed_at

    def describe(self, node_id: str, now: float) -> str:
        state = self._states.get(node_id)
        if state is None or (state.failures == 0 and not state.dead_until):
            return "healthy"
        if not state.dead_until:
            return f"failed {state.failures}x"
        if now < state.dead_until:
            return f"dead for {state.dead_until - now:.1f}s"
        return "probing"
