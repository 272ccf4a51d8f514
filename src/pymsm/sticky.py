"""Sticky mode for SessionManager: the in-memory cache, its lock, and the backup writes.

`SessionManager` delegates `open`'s loading and `save` here when `config.sticky`. Decisions are
in `pymsm.core.sticky`; this module holds the state (an LRU cache guarded by a lock) and the I/O
side: synchronous writes bounded by `session_backup_timeout`, or with `session_backup_async`
a background writer (pymsm.backup) fed by a driver that defers every write.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Generator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from pymsm.backup import BackupWriter
from pymsm.core import flows, sticky
from pymsm.core.lru import LruCache
from pymsm.core.ops import Add, Delete, Get, Op, Replace
from pymsm.core.session import Session
from pymsm.locks import Guard
from pymsm.manager import drive, execute
from pymsm.stores.base import Store

if TYPE_CHECKING:
    from pymsm.manager import SessionManager

T = TypeVar("T")
log = logging.getLogger("pymsm")


class StickySessions:
    """The sticky half of a SessionManager. Thread-safe: the cache is guarded by a lock, the
    flows run outside it (two requests of one session in one process each get their own
    top-level copy of the attributes; the later save wins, as in non-sticky mode)."""

    def __init__(
        self, manager: SessionManager, backup_stores: Mapping[str, Store] | None = None
    ) -> None:
        cfg = manager.config
        self.manager = manager
        self.cache: LruCache[str, sticky.Entry] = LruCache(
            cfg.sticky_cache_size, cfg.sticky_cache_bytes
        )
        self.lock = threading.Lock()
        self.backup_stores = backup_stores if backup_stores is not None else manager.stores
        self._write = self._on(self.backup_stores)  # the synchronous backup driver's runner
        self.writer = (
            BackupWriter(self._on(self.backup_stores), cfg.backup_queue_size)
            if cfg.session_backup_async
            else None
        )

    # -- drivers ----------------------------------------------------------------------------

    def _on(self, stores: Mapping[str, Store]) -> Callable[[Op], Any]:
        """Run one op on `stores`, recording node health as the manager's driver does."""
        health, clock = self.manager.health, self.manager.clock
        return lambda op: execute(op, stores, health, clock)

    _drive = staticmethod(drive)

    def _deferred(self, flow: Generator[Op, Any, T]) -> tuple[T, list[Op]]:
        """Run a save flow with every write answered as done and collected for the writer;
        reads (none in a save today) go to the store at once."""
        batch: list[Op] = []
        read = self._on(self.manager.stores)

        def defer(op: Op) -> Any:
            if isinstance(op, Get):
                return read(op)
            batch.append(op)
            if isinstance(op, Add | Replace):
                return True
            return True if isinstance(op, Delete) and not op.noreply else None

        return self._drive(flow, defer), batch

    # -- the request cycle ------------------------------------------------------------------

    def load_into(self, session: Session, cookie: str | None) -> None:
        m = self.manager
        ctx = m.context()
        if isinstance(session.lock, Guard):
            session.lock.context = ctx  # the save reuses it
        sid = m.parse_id(cookie)
        if sid is None:
            m._loaded(ctx, session, flows.Loaded("new"))
            return
        with self.lock:
            entry = self.cache.get(str(sid))
        found = m.run(sticky.load(ctx, sid, entry))
        if found.entry is None:
            with self.lock:
                self.cache.pop(str(sid))
            m._loaded(ctx, session, flows.Loaded(found.status, reason=found.reason))
            return
        if found.entry is not entry:  # an unchanged local copy is cached already
            self._keep(found.entry, str(sid))
        m.stats["load_" + found.status] += 1
        sticky.fill(ctx, session, found.entry, found.status)
        m._log_events(ctx)

    def save(self, session: Session) -> flows.Saved:
        m = self.manager
        retired = [str(old) for old in session.retired]
        before = str(session.sid)
        ctx = m.save_context(session)
        with self.lock:
            entry = self.cache.get(before)
        flow = sticky.save(ctx, session, entry)
        if self.writer is None:
            stored = self._drive(flow, self._write)
        else:
            stored, batch = self._deferred(flow)
            if not self.writer.submit(batch):
                m.stats["backup_dropped"] += 1
        with self.lock:
            for key in retired:
                self.cache.pop(key)
        if stored.entry is entry:
            pass  # unchanged: the cached entry was updated in place
        elif stored.entry is not None:
            self._keep(stored.entry, before)
        elif stored.saved.status != "skipped":
            with self.lock:
                self.cache.pop(before)
        return m._saved(ctx, session, stored.saved)

    def _keep(self, entry: sticky.Entry, old_key: str) -> None:
        key = str(entry.sid)
        with self.lock:
            if key != old_key:
                self.cache.pop(old_key)
            evicted = self.cache.put(key, entry, entry.size)
        for evicted_key, old in evicted:
            self.manager.stats["sticky_evicted"] += 1
            if old.force:
                log.warning(
                    "session %s left the sticky cache (sticky_cache_size/sticky_cache_bytes) "
                    "before any cache node took it: its latest changes are lost",
                    evicted_key[:6] + "…",
                )

    def flush(self) -> None:
        """Wait for queued backup writes (async mode); a no-op when writes are synchronous."""
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.backup_stores is not self.manager.stores:
            for store in self.backup_stores.values():
                store.close()
