"""In-process coordination before the distributed lock, and the per-request lock state.

Concurrent requests of one process on one session (threads, or asyncio tasks) queue on a local
lock first, so one process never races itself and never waits on a lock it holds itself; only
the head of the local queue polls the store's lock. Entries are reference-counted and removed
when nobody holds or awaits them, so memory is bounded by the requests in flight.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from pymsm.core.context import Context
from pymsm.core.locking import Lock, Plan

L = TypeVar("L", threading.Lock, asyncio.Lock)


@dataclass
class _Entry(Generic[L]):
    lock: L
    refs: int = 0


class LocalLocks:
    """Per-session locks for threads. `acquire` waits at most `timeout` seconds."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._entries: dict[str, _Entry[threading.Lock]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def acquire(self, key: str, timeout: float) -> bool:
        with self._guard:
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = _Entry(threading.Lock())
            entry.refs += 1
        if entry.lock.acquire(timeout=max(timeout, 0.0)):
            return True
        self._unref(key, entry)
        return False

    def release(self, key: str) -> None:
        """Release a lock `acquire` returned True for (exactly once)."""
        with self._guard:
            entry = self._entries[key]
        entry.lock.release()
        self._unref(key, entry)

    def _unref(self, key: str, entry: _Entry[threading.Lock]) -> None:
        with self._guard:
            entry.refs -= 1
            if entry.refs == 0:
                del self._entries[key]


class AsyncLocalLocks:
    """Per-session locks for the tasks of one event loop (no thread may share an instance)."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry[asyncio.Lock]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    async def acquire(self, key: str, timeout: float) -> bool:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry(asyncio.Lock())
        entry.refs += 1
        try:
            await asyncio.wait_for(entry.lock.acquire(), max(timeout, 0.0))
            return True
        except TimeoutError:
            self._unref(key, entry)
            return False
        except BaseException:  # cancelled: give the reference back, then propagate
            self._unref(key, entry)
            raise

    def release(self, key: str) -> None:
        entry = self._entries[key]
        entry.lock.release()
        self._unref(key, entry)

    def _unref(self, key: str, entry: _Entry[asyncio.Lock]) -> None:
        entry.refs -= 1
        if entry.refs == 0:
            del self._entries[key]


@dataclass
class Guard:
    """One request's concurrency state, kept on `Session.lock` by the managers.

    `local` is the local lock key while held, `lock` the store lock while held; `wrote` says
    whether the request wrote the session (what the `auto` learner observes). `context` is the
    load's flows.Context: the save reuses it with a fresh clock instead of building another.
    """

    method: str
    path: str
    plan: Plan
    local: str | None = None
    lock: Lock | None = None
    wrote: bool = False
    observed: bool = field(default=False, repr=False)
    context: Context | None = field(default=None, repr=False)
