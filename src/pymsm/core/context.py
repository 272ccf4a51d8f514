"""What every flow shares: the per-request Context (nodes, health, clock, key prefix, codecs),
the key layout, and the one-op helpers. Pure: callers pass `now`."""

from __future__ import annotations

import dataclasses
import random
import re
from collections import defaultdict
from collections.abc import Generator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, TypeVar

from .codecs import Codec
from .ids import SessionId
from .nodes import Health, NodeList
from .ops import Op, Set
from .owed import Owed
from .records import ENDED, RecordFormat, moved_mark

T = TypeVar("T")
Flow = Generator[Op, Any, T]

TTL_SLACK = 60  # s: store lifetimes outlast the idle timeout a little; expiry is judged by time
_rng = random.SystemRandom()


@dataclass(frozen=True, slots=True)
class Keys:
    record: str
    validity: str
    backup: str
    backup_validity: str

    @classmethod
    def of(cls, prefix: str, sid: SessionId) -> Keys:
        return _keys(prefix, str(sid)) if cls is Keys else cls._build(prefix, str(sid))

    @classmethod
    def _build(cls, prefix: str, sid: str) -> Keys:
        key = prefix + sid
        return cls(key, "validity:" + key, "bak:" + key, "bak:validity:" + key)

    @property
    def lock(self) -> str:
        return "lock:" + self.record

    @property
    def tomb(self) -> str:
        """Written on delete, on every node that held a copy: no load may bring the id back
        (`Context.tombstone`)."""
        return "tomb:" + self.record


@dataclass(slots=True)
class Context:
    """What a flow needs to decide, for one request. `now` is seconds since the epoch."""

    nodes: NodeList
    health: Health
    format: RecordFormat
    codec: Codec
    decoders: dict[int, Codec]
    prefix: str
    max_inactive: int
    now: float
    route: str | None = None
    backup_lookups: int = 2
    attribute_filter: re.Pattern[str] | None = None
    access_resolution: float | None = None  # s; None: 1% of the idle timeout, at most 60 s
    events: list[str] = field(default_factory=list)  # reasons worth a log line
    cas: bool = False  # read with CAS tokens and write with cas + merge (see optimistic.py)
    counts: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))  # stats
    owed: Owed = field(default_factory=Owed)  # the process's deletes its nodes missed (owed.py)

    @property
    def now_ms(self) -> int:
        return int(self.now * 1000)

    def fork(self) -> Context:
        """This request's context for work that outlives the request (the deletes a save leaves
        to the background writer, sticky.Later): the same time and state, its own counts and
        events, so neither thread changes what the other reads."""
        return dataclasses.replace(self, events=[], counts=defaultdict(int))

    def keys(self, sid: SessionId) -> Keys:
        return Keys.of(self.prefix, sid)

    def tombstone(self, node: str, sid: SessionId, moved_at: int | None = None) -> Set:
        """The tombstone of `sid` on `node`, not waited for: the id ended, or, if the session
        only moved away from it, the time of the move (`moved_at`, ms): the session may come
        back to the id (ids keep their base), and only the copies written before the move are
        its past (records.moved_at)."""
        value = ENDED if moved_at is None else moved_mark(moved_at)
        ttl = self.record_ttl(self.max_inactive)
        return Set(node, self.keys(sid).tomb, value, ttl, noreply=True)

    def node_of(self, sid: SessionId) -> str | None:
        if not self.nodes.has_ids:
            return self.nodes.nodes[0].name
        return sid.node if sid.node in self.nodes else None

    def up(self, node: str) -> bool:
        return self.health.is_up(node, self.now)

    def window(self, primary: str) -> list[str]:
        """The nodes that hold `primary`'s backup copies: the first `backup_lookups` live ones
        after it in ring order. Copies go to the first that takes them, a load searches all of
        them, and a delete leaves its tombstone on all of them."""
        if not self.nodes.has_ids:
            return []
        return [n for n in self.nodes.after(primary) if self.up(n)][: self.backup_lookups]

    def choose_node(self, exclude: frozenset[str] = frozenset()) -> str | None:
        """A random live primary node; a failover node only when no primary is up."""
        if not self.nodes.has_ids:
            return self.nodes.nodes[0].name
        for group in (self.nodes.primary_ids, sorted(self.nodes.failover)):
            live = [n for n in group if n not in exclude and self.up(n)]
            if live:
                return _rng.choice(live)
        return None

    def new_sid(self) -> SessionId:
        node = self.choose_node() or (self.nodes.primary_ids or self.nodes.ids)[0]
        return SessionId.new(node if self.nodes.has_ids else None, self.route)

    def access_resolution_ms(self, max_inactive: int) -> int:
        """How stale a stored access time may get before an unchanged request rewrites it:
        `access_time_resolution`, by default 1% of the idle timeout and at most 60 s."""
        if self.access_resolution is not None:
            return int(self.access_resolution * 1000)
        return 0 if max_inactive <= 0 else min(60_000, max_inactive * 10)

    def record_ttl(self, max_inactive: int) -> int:
        # rewritten once half the idle timeout has passed, so 1.5x covers the worst case
        return 0 if max_inactive <= 0 else max_inactive + max_inactive // 2 + TTL_SLACK

    def validity_ttl(self, max_inactive: int) -> int:
        return 0 if max_inactive <= 0 else max_inactive + TTL_SLACK


@lru_cache(maxsize=4096)
def _keys(prefix: str, sid: str) -> Keys:
    """A request builds its session's keys several times (load, save, backup): once is enough.
    Keyed by the id's text, whose hash Python caches (a SessionId hashes its fields each time)."""
    return Keys._build(prefix, sid)


def _run(op: Op) -> Flow[Any]:
    """Yield one op; the result, or the StoreError it raised."""
    result = yield op
    return result


def _ms(seconds: float) -> int:
    return int(seconds * 1000)
