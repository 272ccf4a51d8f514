"""Sticky mode for SessionManager and AsyncSessionManager: the in-memory cache and the backup
writes.

Both managers delegate loading and saving here when `config.sticky`. Decisions are in
`pymsm.core.sticky`; this module holds the state (an LRU cache guarded by a lock) and the I/O
side. `_StickyCache` does everything around the flows (cache look-ups, the bookkeeping of what a
load or save found, eviction); `StickySessions` (threads) and `AsyncStickySessions` (asyncio)
only run the flows: synchronous writes bounded by `session_backup_timeout`, or with
`session_backup_async` a background writer (pymsm.backup) fed with the writes of a save flow
whose reads alone went to the store (`_deferring`), and with the deletes that save left for
after its writes (core/sticky.Later), run there as flows on real answers.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from pymsm.async_manager import close_stores
from pymsm.backup import AsyncBackupWriter, BackupWriter, Batch
from pymsm.cookies import Sent
from pymsm.core import flows, sticky
from pymsm.core.context import Context
from pymsm.core.ids import SessionId
from pymsm.core.lru import LruCache
from pymsm.core.ops import Add, Delete, Get, Op, Replace
from pymsm.core.session import Session
from pymsm.locks import Guard
from pymsm.manager import _Base, drive, execute
from pymsm.stores.base import AsyncStore, Store

if TYPE_CHECKING:
    from pymsm.async_manager import AsyncSessionManager
    from pymsm.manager import SessionManager

T = TypeVar("T")
M = TypeVar("M", bound=_Base)
log = logging.getLogger("pymsm")


class _Writer(Protocol):
    def submit(self, batch: Batch) -> bool: ...


@dataclass(slots=True)
class _Saving:
    """One save in progress: the flow to run and what its end needs. `batch` collects the
    writes for the background writer (session_backup_async), None when writes are run; `later`
    then holds the deletes the save leaves to the writer."""

    ctx: Context
    flow: Generator[Op, Any, sticky.Stored]
    entry: sticky.Entry | None
    before: str
    retired: list[str]
    batch: list[Op] | None = field(default=None)
    later: sticky.Later | None = field(default=None)


class _StickyCache(Generic[M]):
    """What the sync and async sticky halves share: the cache (guarded by a lock, never held
    across a flow or an await), and the bookkeeping before and after the load and save flows.
    Flows run outside the lock: two requests of one session in one process each get their own
    top-level copy of the attributes, and the later save wins, as in non-sticky mode."""

    writer: _Writer | None

    def __init__(self, manager: M) -> None:
        cfg = manager.config
        self.manager = manager
        self.cache: LruCache[str, sticky.Entry] = LruCache(
            cfg.sticky_cache_size, cfg.sticky_cache_bytes
        )
        self.lock = threading.Lock()

    # -- load -------------------------------------------------------------------------------

    def _load_start(self, session: Session, cookie: Sent) -> _Loading | None:
        """The load flow's inputs; None when there is nothing to load (the session is new)."""
        m = self.manager
        ctx = m.context()
        if isinstance(session.lock, Guard):
            session.lock.context = ctx  # the save reuses it
        if isinstance(cookie, tuple):
            sids = m.candidates(cookie)
            if sids:
                return self._loading(ctx, sids[0], tuple(sids[1:]), True)
            sid = None
        else:
            sid = m.parse_id(cookie)
        if sid is None:
            m._loaded(ctx, session, flows.Loaded("new"))
            return None
        return self._loading(ctx, sid)

    def _loading(
        self, ctx: Context, sid: SessionId, rest: tuple[SessionId, ...] = (), several: bool = False
    ) -> _Loading:
        with self.lock:
            entry = self.cache.get(str(sid))
        return _Loading(ctx, sid, entry, rest, several)

    def _load_end(
        self, loading: _Loading, session: Session, found: sticky.Found
    ) -> _Loading | None:
        """Fill `session` from what the load found, or return the load of the client's next
        cookie when this one names no session it can serve."""
        m, ctx, sid = self.manager, loading.ctx, loading.sid
        if loading.several:
            session.sent_id = str(sid)
        if found.entry is None:
            with self.lock:
                self.cache.pop(str(sid))
            if loading.rest:
                m.passed_over(sid, found.status)
                return self._loading(ctx, loading.rest[0], loading.rest[1:], True)
            m._loaded(ctx, session, flows.Loaded(found.status, reason=found.reason))
            return None
        if found.entry is not loading.entry:  # an unchanged local copy is cached already
            self._keep(found.entry, str(sid))
        m.stats["load_" + found.status] += 1
        sticky.fill(ctx, session, found.entry, found.status)
        m._log_events(ctx)
        return None

    def forget(self, sid: SessionId) -> list[SessionId]:
        """Drop `sid` from memory, its session being deleted: the ids to delete, `sid` and the
        id a takeover or move of it came from, if that one is not deleted yet."""
        with self.lock:
            entry = self.cache.pop(str(sid))
        return [sid] if entry is None or entry.replaces is None else [sid, entry.replaces]

    # -- save -------------------------------------------------------------------------------

    def _save_start(self, session: Session) -> _Saving | flows.Saved:
        """The save to run, or what the save did when it has nothing to write (`settled`)."""
        before = str(session.sid)
        ctx = self.manager.save_context(session)
        with self.lock:
            entry = self.cache.get(before)
        quiet = sticky.settled(ctx, session, entry)
        if quiet is not None:
            return self.manager._saved(ctx, session, quiet.saved)
        retired = [str(old) for old in session.retired]
        later = sticky.Later() if self.writer is not None else None
        flow = sticky.save(ctx, session, entry, later)
        saving = _Saving(ctx, flow, entry, before, retired)
        if later is not None:
            saving.batch, saving.later = [], later
            saving.flow = _deferring(flow, saving.batch)
        return saving

    def _queued(self, saving: _Saving, stored: sticky.Stored) -> Batch | None:
        """Hand the save's writes and deletes to the background writer; answers the batch if
        the queue was full (counted, logged): the caller then runs its `after(False)` at once,
        so the deletes of ids that ended are made (a logout is never dropped) and the ids the
        session moved from keep their copies (the writes under the new id were not made)."""
        if self.writer is None or saving.batch is None or saving.later is None:
            return None
        home = None  # the node the session is stored on once the batch's writes there succeed
        if stored.entry is not None and stored.saved.status == "stored":
            home = saving.ctx.node_of(stored.entry.sid)  # (the only node when ids name none)
        after = self._after(saving.later, saving.ctx.fork()) if saving.later else None
        batch = Batch(saving.batch, home, after)
        if self.writer.submit(batch):
            return None
        self.manager.stats["backup_dropped"] += 1
        return batch

    def _after(self, later: sticky.Later, ctx: Context) -> Callable[[bool], Any]:
        raise NotImplementedError  # each driver runs the deletes its own way

    def _save_end(self, saving: _Saving, session: Session, stored: sticky.Stored) -> flows.Saved:
        m = self.manager
        with self.lock:
            for key in saving.retired:
                self.cache.pop(key)
        if stored.entry is None:
            if stored.saved.status != "skipped":
                with self.lock:
                    self.cache.pop(saving.before)
        elif stored.entry is not saving.entry:  # unchanged: the cached one was updated in place
            self._keep(stored.entry, saving.before)
        return m._saved(saving.ctx, session, stored.saved)

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


@dataclass(slots=True)
class _Loading:
    ctx: Context
    sid: SessionId
    entry: sticky.Entry | None
    rest: tuple[SessionId, ...] = ()  # the client's other cookies, tried in turn (cookies.py)
    several: bool = False  # the client sent several cookies


def _deferring(flow: Generator[Op, Any, T], batch: list[Op]) -> Generator[Op, Any, T]:
    """`flow` with every write answered as done and collected in `batch` (for the background
    writer); reads (none in a save today) still go to the driver, so to the store."""
    try:
        op = next(flow)
        while True:
            if isinstance(op, Get):
                op = flow.send((yield op))
                continue
            batch.append(op)
            done = isinstance(op, Add | Replace) or (isinstance(op, Delete) and not op.noreply)
            op = flow.send(True if done else None)
    except StopIteration as stop:
        result: T = stop.value
        return result


class StickySessions(_StickyCache["SessionManager"]):
    """The sticky half of a SessionManager. Thread-safe."""

    def __init__(
        self, manager: SessionManager, backup_stores: Mapping[str, Store] | None = None
    ) -> None:
        super().__init__(manager)
        self.backup_stores = backup_stores if backup_stores is not None else manager.stores
        self._write = self._on(self.backup_stores)  # the synchronous backup driver's runner
        self.writer: BackupWriter | None = (
            BackupWriter(self._write, manager.config.backup_queue_size)
            if manager.config.session_backup_async
            else None
        )

    def _on(self, stores: Mapping[str, Store]) -> Callable[[Op], Any]:
        """Run one op on `stores`, recording node health as the manager's driver does."""
        health, clock = self.manager.health, self.manager.clock
        return lambda op: execute(op, stores, health, clock)

    def load_into(self, session: Session, cookie: Sent) -> None:
        loading = self._load_start(session, cookie)
        while loading is not None:
            found = self.manager.run(sticky.load(loading.ctx, loading.sid, loading.entry))
            loading = self._load_end(loading, session, found)

    def save(self, session: Session) -> flows.Saved:
        saving = self._save_start(session)
        if not isinstance(saving, _Saving):
            return saving  # nothing to write
        stored = drive(saving.flow, self._write if saving.batch is None else self.manager._execute)
        refused = self._queued(saving, stored)
        if refused is not None and refused.after is not None:
            refused.after(False)
        return self._save_end(saving, session, stored)

    def _after(self, later: sticky.Later, ctx: Context) -> Callable[[bool], None]:
        """The deletes `later` holds, as the background writer runs them after the writes."""

        def after(stored: bool) -> None:
            for flow in later.flows(ctx, stored):
                drive(flow, self._write)
            self.manager.merge(ctx)

        return after

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


class AsyncStickySessions(_StickyCache["AsyncSessionManager"]):
    """The sticky half of an AsyncSessionManager: the same cache and flows, awaited. One event
    loop serves the cache; tasks interleave at every await, never while the cache is used."""

    def __init__(
        self, manager: AsyncSessionManager, backup_stores: Mapping[str, AsyncStore] | None = None
    ) -> None:
        super().__init__(manager)
        self.backup_stores = backup_stores if backup_stores is not None else manager.stores
        self.writer: AsyncBackupWriter | None = (
            AsyncBackupWriter(self._write, manager.config.backup_queue_size)
            if manager.config.session_backup_async
            else None
        )

    def _write(self, op: Op) -> Awaitable[Any]:
        return self.manager._execute(op, self.backup_stores)

    async def load_into(self, session: Session, cookie: Sent) -> None:
        loading = self._load_start(session, cookie)
        while loading is not None:
            found = await self.manager.run(sticky.load(loading.ctx, loading.sid, loading.entry))
            loading = self._load_end(loading, session, found)

    async def save(self, session: Session) -> flows.Saved:
        saving = self._save_start(session)
        if not isinstance(saving, _Saving):
            return saving  # nothing to write
        stores = self.backup_stores if saving.batch is None else self.manager.stores
        stored = await self.manager.run(saving.flow, stores)
        refused = self._queued(saving, stored)
        if refused is not None and refused.after is not None:
            await refused.after(False)
        return self._save_end(saving, session, stored)

    def _after(self, later: sticky.Later, ctx: Context) -> Callable[[bool], Awaitable[None]]:
        """The deletes `later` holds, as the background writer runs them after the writes."""

        async def after(stored: bool) -> None:
            for flow in later.flows(ctx, stored):
                await self.manager.run(flow, self.backup_stores)
            self.manager.merge(ctx)

        return after

    async def flush(self) -> None:
        """Wait for queued backup writes (async mode); a no-op when writes are synchronous."""
        if self.writer is not None:
            await self.writer.flush()

    async def close(self) -> None:
        """Drain the backup queue, then close the backup stores' own connections (if any)."""
        if self.writer is not None:
            await self.writer.close()
        if self.backup_stores is not self.manager.stores:
            await close_stores(self.backup_stores.values())
