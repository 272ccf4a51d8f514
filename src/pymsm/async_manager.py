"""AsyncSessionManager: the asyncio twin of SessionManager, running the same core flows with an
async driver (`run` mirrors `manager.drive`/`manager.execute`, awaiting each operation)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Generator, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from pymsm.config import Config
from pymsm.cookies import Sent
from pymsm.core import flows, locking, owed
from pymsm.core.ids import SessionId
from pymsm.core.ops import Op, Sleep, call_args
from pymsm.core.session import Session
from pymsm.exceptions import StoreError
from pymsm.locks import AsyncLocalLocks, Guard
from pymsm.manager import _Base, settle
from pymsm.stores.base import AsyncStore

if TYPE_CHECKING:
    from pymsm.sticky import AsyncStickySessions

T = TypeVar("T")
S = TypeVar("S", bound=Session)
log = logging.getLogger("pymsm")


class AsyncSessionManager(_Base):
    """The asyncio twin of SessionManager: the same flows, run by an async driver.

    Loading cannot be lazy in async code: adapters `await load(cookie)` up front (unless the
    path is ignored). `stores` maps node names to async stores (tests pass AsyncMemoryStore);
    by default one asyncio memcached store per node. One instance serves one event loop at a
    time; it reconnects when used from another loop. With `sticky=True` loading and saving go
    to `pymsm.sticky.AsyncStickySessions` (docs/sticky.md).
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        stores: Mapping[str, AsyncStore] | None = None,
        clock: Callable[[], float] = time.time,
        **settings: Any,
    ) -> None:
        super().__init__(config, clock, settings)
        self.stores: Mapping[str, AsyncStore] = (
            stores if stores is not None else self._memcached_stores()
        )
        self.local_locks = AsyncLocalLocks()
        self._sticky = self._sticky_sessions(stores is None) if self.config.sticky else None

    def _memcached_stores(self) -> dict[str, AsyncStore]:
        from pymsm.stores import make_async_stores

        return make_async_stores(self.config)  # memcached, or Redis for a Redis URL

    def _sticky_sessions(self, default_stores: bool) -> AsyncStickySessions:
        """Sticky mode; synchronous backup writes get stores of their own (own connections)
        whose operation timeout is `session_backup_timeout`, as SessionManager does: a write
        that times out then closes only its own connection, not the one requests read on."""
        from pymsm.sticky import AsyncStickySessions
        from pymsm.stores import make_async_stores

        config = self.sticky_write_config(default_stores)
        return AsyncStickySessions(self, make_async_stores(config) if config else None)

    async def run(
        self, flow: Generator[Op, Any, T], stores: Mapping[str, AsyncStore] | None = None
    ) -> T:
        """The async driver: the same loop as `drive`, awaiting each operation (on `stores`,
        by default the manager's)."""
        try:
            op = next(flow)
            while True:
                op = flow.send(await self._execute(op, stores))
        except StopIteration as stop:
            result: T = stop.value
            return result

    async def _execute(self, op: Op, stores: Mapping[str, AsyncStore] | None = None) -> Any:
        if isinstance(op, Sleep):
            await asyncio.sleep(op.seconds)
            return self.clock()
        method, args = call_args(op)
        try:
            result = await getattr((stores or self.stores)[op.node], method)(*args)
        except StoreError as exc:
            result = exc
        return settle(op.node, result, self.health, self.clock)

    async def load(
        self, cookie: Sent, method: str = "GET", path: str = "/", declared: str | None = None
    ) -> Session:
        """The session for the id in `cookie`, loaded now; new if absent or invalid. With a
        locking mode that covers the request it holds the lock: `await release(session)`."""
        return await self.load_as(cookie, Session, method, path, declared)

    async def load_as(
        self,
        cookie: Sent,
        session_class: type[S],
        method: str = "GET",
        path: str = "/",
        declared: str | None = None,
    ) -> S:
        session = session_class()
        guard = session.lock = self.guard(method, path, declared)
        if self._sticky is not None:
            await self._sticky.load_into(session, cookie)
            return session
        ctx = guard.context = self.context()
        ctx.cas = guard.plan.cas
        if isinstance(cookie, tuple):
            loaded = await self._load_several(ctx, session, guard, cookie)
        elif (sid := self.parse_id(cookie)) is None:
            loaded = flows.Loaded("new")
        else:
            loaded = await self._load_one(ctx, guard, sid)
        self._loaded(ctx, session, loaded)
        return session

    async def _load_one(self, ctx: flows.Context, guard: Guard, sid: SessionId) -> flows.Loaded:
        if guard.plan.lock:
            await self._lock(ctx, sid, guard)
            ctx.now = self.clock()
        return await self.run(flows.load(ctx, sid))

    async def _load_several(
        self, ctx: flows.Context, session: Session, guard: Guard, cookie: tuple[str, ...]
    ) -> flows.Loaded:
        """The client sent several cookies: the first that names a stored session (cookies.py)."""
        loaded = flows.Loaded("new")
        sids = self.candidates(cookie)
        for sid in sids:
            loaded = await self._load_one(ctx, guard, sid)
            session.sent_id = str(sid)
            if loaded.record is not None or sid is sids[-1]:
                break
            self.passed_over(sid, loaded.status)
            await self.release_guard(guard)
        return loaded

    async def _lock(self, ctx: flows.Context, sid: SessionId, guard: Guard) -> None:
        assert self.config.lock_wait_timeout is not None
        if not await self.local_locks.acquire(sid.base, self.config.lock_wait_timeout):
            self.lock_failed(sid, "timeout")
            return
        guard.local = sid.base
        try:
            status, guard.lock = await self.run(self.lock_flow(ctx, sid))
            if guard.lock is None:
                self.lock_failed(sid, status)
        except BaseException:
            await self.release_guard(guard)
            raise

    async def release(self, session: Session) -> None:
        """The request is over: release its locks and let the `auto` learner observe it."""
        guard = session.lock
        if isinstance(guard, Guard):
            self.observe(session, guard)
            await self.release_guard(guard)
            await self.settle_owed()

    async def settle_owed(self, closing: bool = False) -> None:
        """`SessionManager.settle_owed`: the deletes a node missed, once it is back."""
        for ctx, node, debts in self.owed_batches(closing):
            self.owed_settled(ctx, node, await self.run(owed.settle(ctx, node, debts)))

    async def release_guard(self, guard: Guard) -> None:
        lock, guard.lock = guard.lock, None
        try:
            if lock is not None:
                self.lock_released(lock, await self.run(locking.release(lock)))
        finally:
            local, guard.local = guard.local, None
            if local is not None:
                self.local_locks.release(local)

    async def save(self, session: Session) -> flows.Saved:
        """Write what the request changed. Never raises for store trouble: it logs and counts."""
        if not session.loaded:
            return flows.Saved("skipped")
        if self._sticky is not None:
            return await self._sticky.save(session)
        ctx = self.save_context(session)
        saved = flows.settled(ctx, session)  # nothing to write: no flow to run
        if saved is None:
            saved = await self.run(flows.save(ctx, session))
        self._note_save(session, saved)
        return self._saved(ctx, session, saved)

    async def delete(self, cookie: str | None) -> None:
        """Delete every stored copy of the session in `cookie` (see `delete_flows`)."""
        for flow in self.delete_flows(cookie, self._sticky):
            await self.run(flow)

    async def close(self) -> None:
        """Drain the sticky backup queue (session_backup_async), make the deletes owed to nodes
        that answer again (core/owed.py), then close every store's connections (a store
        reconnects when used again). One failing does not leave the others open: the first
        error is raised once all were tried."""
        try:
            if self._sticky is not None:
                await self._sticky.close()
            await self.settle_owed(closing=True)
        finally:
            await close_stores(self.stores.values())
            self.warn_owed()


async def close_stores(stores: Iterable[AsyncStore]) -> None:
    """Close every store; one failing does not leave the others open (first error raised)."""
    errors: list[Exception] = []
    for store in stores:
        try:
            await store.close()
        except Exception as exc:
            errors.append(exc)
    if errors:
        raise errors[0]
