"""Locking modes and the decision "lock this request or not", plus the lock protocol as flows.

Modes (setting `locking_mode`):
- `none`: no lock, plain get/replace (MSM's behaviour: concurrent requests may lose updates).
- `optimistic` (default): no lock; read with CAS tokens, write with `cas`, merge per key on a
  conflict (see core/optimistic.py).
- `all`: every request that uses the session holds its lock from load to the end of the request.
- `uriPattern:<regex>`: lock when the regex matches the request path (`re.search` on the path
  only: no method, no query string).
- `auto`: lock unless the (method, path) pair is known read-only, declared or learned.

Requests that run without the lock in a locking mode still write with `cas` and merge, so a
request wrongly judged read-only, or one that proceeded after a lock timeout, loses no update
to other keys.

Declaring routes: `@readonly` / `@writes` set `__pymsm_access__` on a view (Flask, Django,
Starlette endpoints or a whole WSGI app); apps and adapters can also put "read" or "write" under
`ACCESS_KEY` in the WSGI environ or the ASGI scope before the session is first touched. A
declaration wins over what was learned; only `auto` consults either.

This module is pure: the learner takes `now` from its caller; the flows yield operations.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pymsm.exceptions import ConfigError, StoreError

from .ops import Add, DeleteIf, Op, Sleep

F = TypeVar("F", bound=Callable[..., Any])
ACCESS_KEY = "pymsm.access"  # WSGI environ / ASGI scope key: "read" or "write"
ACCESS_ATTR = "__pymsm_access__"
READ, WRITE = "read", "write"
NEVER_SAVED = "never-saved"
"""Declared by an adapter for a request whose session is never saved (an ASGI websocket): no
lock in any mode, no CAS. A websocket lives for minutes or hours, and a lock taken at its
connect held the user's other requests up to `lock_expiration` (tenth session)."""
FIRST_BACKOFF, MAX_BACKOFF = 0.01, 0.5  # s: lock polling starts at 10 ms, doubles up to 500 ms


def readonly(view: F) -> F:
    """Declare a view (or a whole WSGI/ASGI app) as never writing the session: `auto` mode does
    not lock it. Returns the view itself, so it stacks with any framework decorator."""
    setattr(view, ACCESS_ATTR, READ)
    return view


def writes(view: F) -> F:
    """Declare a view as writing the session: `auto` mode always locks it."""
    setattr(view, ACCESS_ATTR, WRITE)
    return view


def declared_access(view: object) -> str | None:
    """What `readonly` / `writes` declared on `view`, or None."""
    value = getattr(view, ACCESS_ATTR, None)
    return value if value in (READ, WRITE) else None


@dataclass(frozen=True, slots=True)
class LockingMode:
    """A parsed `locking_mode` setting."""

    name: str  # none, optimistic, all, auto, uriPattern
    pattern: re.Pattern[str] | None = None

    @classmethod
    def parse(cls, text: str) -> LockingMode:
        if text.startswith("uriPattern:"):
            source = text.partition(":")[2]
            try:
                return cls("uriPattern", re.compile(source))
            except re.error as exc:
                raise ConfigError(f"locking_mode: {source!r} is not a valid regex: {exc}") from exc
        if text not in ("none", "optimistic", "all", "auto"):
            raise ConfigError(
                f"locking_mode: unknown mode {text!r}; choose none, all, auto, optimistic "
                "or uriPattern:<regex>"
            )
        return cls(text)


@dataclass(frozen=True, slots=True)
class Plan:
    """What one request does: take the lock, and write with compare-and-set."""

    lock: bool
    cas: bool


@dataclass(slots=True)
class _Route:
    reads: int = 0  # read-only observations in a row
    seen: float = 0.0
    learned: float | None = None  # when it became read-only


@dataclass
class ReadOnlyLearner:
    """Learns which (method, path) pairs never write the session, for `auto` mode.

    A pair is read-only after `threshold` read-only observations in a row; one write makes it
    writing again at once. What was learned is forgotten `forget_after` seconds later (then
    re-learned), and pairs unseen for that long are dropped; at most `max_routes` are kept
    (the least recently seen go first). Safe to share between threads: each call is a few dict
    operations, and a race only miscounts one observation (an unlocked write still merges).
    """

    threshold: int = 3
    forget_after: float = 600.0
    max_routes: int = 10_000
    routes: dict[tuple[str, str], _Route] = field(default_factory=dict)

    def is_readonly(self, method: str, path: str, now: float) -> bool:
        route = self.routes.get((method, path))
        if route is None or route.learned is None:
            return False
        if now - route.learned >= self.forget_after:
            route.learned, route.reads = None, 0
            return False
        return True

    def observe(self, method: str, path: str, wrote: bool, now: float) -> None:
        key = (method, path)
        route = self.routes.pop(key, None) or _Route()
        self.routes[key] = route  # re-inserted: dict order is least recently seen first
        route.seen = now
        if wrote:
            route.reads, route.learned = 0, None
            return
        route.reads += 1
        if route.learned is None and route.reads >= self.threshold:
            route.learned = now
        if len(self.routes) > self.max_routes:
            self._evict(now)

    def _evict(self, now: float) -> None:
        for key in [k for k, r in self.routes.items() if now - r.seen >= self.forget_after]:
            del self.routes[key]
        while len(self.routes) > self.max_routes:
            del self.routes[next(iter(self.routes))]


def decide(
    mode: LockingMode,
    method: str,
    path: str,
    declared: str | None,
    learner: ReadOnlyLearner | None,
    now: float,
) -> Plan:
    """Lock or not, and write with CAS or not, for one request."""
    if mode.name == "none" or declared == NEVER_SAVED:
        return _NEITHER
    if mode.name == "optimistic":
        return _CAS
    if mode.name == "all":
        return _LOCK_CAS
    if mode.name == "uriPattern":
        assert mode.pattern is not None
        return _LOCK_CAS if mode.pattern.search(path) is not None else _CAS
    if declared is not None:
        return _LOCK_CAS if declared == WRITE else _CAS
    known = learner is not None and learner.is_readonly(method, path, now)
    return _CAS if known else _LOCK_CAS


_NEITHER = Plan(lock=False, cas=False)  # the only plans there are: built once, not per request
_CAS = Plan(lock=False, cas=True)
_LOCK_CAS = Plan(lock=True, cas=True)


# -- the lock protocol ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Lock:
    """A lock this request took: `key` on `node`, holding our random owner `token`."""

    node: str
    key: str
    token: bytes


def lock_ttl(expiration: float) -> int:
    """memcached counts whole seconds: round up, at least 1."""
    return max(1, int(-(-expiration // 1)))


def acquire(
    node: str, key: str, token: bytes, expiration: float, deadline: float, now: float
) -> Generator[Op, Any, tuple[str, Lock | None]]:
    """Take the lock with `add` (atomic: only one owner), polling with a backoff of 10 ms
    doubling to 500 ms until `deadline` (seconds since the epoch; `now` is the current time).

    Returns ("acquired", lock), ("timeout", None) or ("unavailable", None) when the node failed:
    the caller applies the `lock_failure` policy. The lock expires by itself after `expiration`
    seconds, so a holder that dies never blocks the session for longer than that.
    """
    delay = FIRST_BACKOFF
    while True:
        result = yield Add(node, key, token, lock_ttl(expiration))
        if isinstance(result, StoreError):
            return "unavailable", None
        if result:
            return "acquired", Lock(node, key, token)
        if now >= deadline:
            return "timeout", None
        now = yield Sleep(min(delay, max(deadline - now, 0.0)))
        delay = min(delay * 2, MAX_BACKOFF)


def release(lock: Lock) -> Generator[Op, Any, bool]:
    """Delete the lock only while it still holds our token: a lock that expired and was taken
    by another request is left to its new owner. Returns whether ours was deleted."""
    result = yield DeleteIf(lock.node, lock.key, lock.token)
    return result is True
