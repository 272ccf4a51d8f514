"""A model-based test of sticky mode on the crossed-over layout (tests/support/sticky_memory):
hypothesis sends random requests (reads, writes, writes whose node times out, logins, logouts) of
several clients to three app processes (two behind route app1, one behind app2; a load balancer may
send any request anywhere, which makes takeovers), restarts processes (their memory is lost), and
cuts one cache node off and heals it. After every request the client sees what it last wrote,
whichever process serves it (invariants 2 and 5: no process serves a stale local copy); a logged-
out or expired id never loads again (invariant 6); a forged id is never adopted (invariant 7).

It runs twice: through SessionManager and through AsyncSessionManager (the async sticky driver).
Memory stores keep this fast and deterministic; tests/integration/test_sticky_cluster.py proves
the layout against real memcached and app processes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import hypothesis.strategies as st
from hypothesis.stateful import Bundle, consumes, precondition, rule

from pymsm import AsyncSessionManager, SessionManager
from pymsm.backup import AsyncBackupWriter, BackupWriter, Batch
from pymsm.core.ids import SessionId
from pymsm.core.session import Session
from pymsm.exceptions import StoreTimeout
from pymsm.stores.memory import AsyncMemoryStore, MemoryStore
from support.clock import Clock
from support.models import SETTINGS, OnOneLoop, SeededMachine
from support.sticky_memory import cookie_after, sticky_settings

ROUTES = ("app1", "app1", "app2")  # three processes: two behind route app1, one behind app2
PROCESSES = st.integers(0, len(ROUTES) - 1)


class StickyCluster(SeededMachine):
    cookies = Bundle("cookies")
    ended = Bundle("ended")

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.stores = {name: MemoryStore(name, self.clock) for name in ("n1", "n2")}
        self.apps = [self._start(p) for p in range(len(ROUTES))]
        # the cookie a client holds -> its data; None once it expired (nothing may be served)
        self.expected: dict[str, dict[str, Any] | None] = {}
        # sessions last written while a node was cut off: with two nodes, their only stored
        # copy is on the other one until their next write (design.md, "What a second failure
        # can still do"), so no node is cut off again until they are written
        self.single: set[str] = set()
        self.exposed: set[str] = set()  # logged out while a node was cut off (see logout)
        self.forfeited: set[str] = set()  # owed deletes a process took with it (see restart)
        self.rotated_out: list[str] = []  # ids a login replaced: ended, as after a logout
        # ids the client held before a takeover or a move gave it another (a replayed or
        # stolen cookie, a request that was in flight may still carry them)
        self.left_behind: list[str] = []
        # ids left behind whose copies stay by design (AsyncBackupStickyCluster below)
        self.kept: set[str] = set()

    cache_size: dict[str, int] = {}  # (the default sticky cache)

    # the manager calls, overridden by the async twin below
    def _start(self, process: int) -> Any:
        return SessionManager(
            stores=self.stores,  # type: ignore[arg-type]
            clock=self.clock,
            **sticky_settings(ROUTES[process]),
            **self.cache_size,
        )

    def _load(self, process: int, cookie: str | None) -> Session:
        session: Session = self.apps[process].load(cookie)
        return session

    def _save(self, process: int, session: Session) -> None:
        """The save, then the request's end (as the adapters do: owed deletes are made there)."""
        self.apps[process].save(session)
        self.apps[process].release(session)

    def _close(self, process: int) -> None:
        self.apps[process].close()

    def _kept(self, sid: str) -> bool:
        """An id left behind that may still load by design (see AsyncBackupStickyCluster)."""
        return sid in self.kept

    def _settle_writes(self) -> None:
        """Writes still waiting in a background queue are made now (AsyncBackupStickyCluster):
        before the clock jumps past the idle timeout (no real queue waits that long), and
        before a replay decides what it may expect."""

    def _serve(
        self, process: int, cookie: str | None, change: int | None, data: Any = None
    ) -> tuple[Any, str]:
        """One request: load (checking `data`, what the client last wrote), maybe write, save;
        the client keeps the cookie the response leaves it with."""
        self.clock.now += 0.002
        session = self._load(process, cookie)
        if cookie is not None:
            self._check(cookie, session, data, process)
        if change is not None:
            session["v"] = change
        self._save(process, session)
        new = cookie_after(self.apps[process], session, cookie)
        assert new is not None, "a session that was written keeps a cookie"
        return session, new

    def _check(self, cookie: str, session: Session, data: Any, process: int) -> None:
        """What the client last wrote, or a new empty session once it expired (invariant 6)."""
        if data is None:
            assert session.is_new and dict(session) == {}, f"expired {cookie} read {dict(session)}"
        else:
            assert dict(session) == data, f"{cookie} read {dict(session)} on process {process}"

    # -- requests -------------------------------------------------------------------------------

    @rule(target=cookies, process=PROCESSES, value=st.integers())
    def create(self, process: int, value: int) -> str:
        _, cookie = self._serve(process, None, value)
        self.expected[cookie] = {"v": value}
        self._written(None, cookie)
        return cookie

    def _written(self, old: str | None, new: str) -> None:
        self.single.discard(old or "")
        if self.cut is not None:
            self.single.add(new)

    @rule(
        target=cookies,
        cookie=consumes(cookies),
        process=PROCESSES,
        value=st.none() | st.integers(),
    )
    def request(self, cookie: str, process: int, value: int | None) -> str:
        data = self.expected.pop(cookie)
        _, new = self._serve(process, cookie, value, data)
        self.expected[new] = data if value is None else {"v": value}
        if new != cookie:
            self.left_behind.append(cookie)
        if value is not None or self.cut is not None:
            self._written(cookie, new)  # (a takeover or a move writes an unchanged session too)
        elif cookie in self.single:  # unchanged: as exposed as before, under its new id
            self.single.discard(cookie)
            self.single.add(new)
        return new

    @rule(target=cookies, cookie=consumes(cookies), process=PROCESSES, value=st.integers())
    def log_in(self, cookie: str, process: int, value: int) -> str:
        """A login: the id is rotated (against session fixation), the data kept and changed;
        the old id ends as after a logout."""
        self.clock.now += 0.002
        session = self._load(process, cookie)
        self._check(cookie, session, self.expected.pop(cookie), process)
        loaded, stored = str(session.id), not session.is_new
        if loaded != cookie:
            self.left_behind.append(cookie)  # a takeover on this request
        session.rotate_id()
        session["v"] = value
        self._save(process, session)
        new = cookie_after(self.apps[process], session, cookie)
        assert new is not None and new != loaded
        self.expected[new] = {"v": value}
        self._written(cookie, new)
        if stored:
            self._ended(loaded)
            self.rotated_out.append(loaded)
        return new

    @rule(target=cookies, cookie=consumes(cookies), process=PROCESSES, value=st.integers())
    def write_as_its_node_times_out(self, cookie: str, process: int, value: int) -> str:
        """The session's node times out on the record's write: the save moves the session to
        the other node (a new node id; a failover node if no primary is up), and with two
        nodes it has one copy until its next write once the failed one is back (as after a
        cut). Not while a node is cut off: no node would take the write (all nodes down:
        tested on its own). The process that saw the timeout may use the node again after its
        dead time, which passes here: the next cut must leave it a node, as `heal` does."""
        data = self.expected.pop(cookie)
        self.clock.now += 0.002
        session = self._load(process, cookie)
        self._check(cookie, session, data, process)
        session["v"] = value
        node = session.sid.node
        assert node is not None
        if self.cut is None:
            self.stores[node].fail_next(1, StoreTimeout(f"{node}: injected timeout", node))
        self._save(process, session)
        self.stores[node].clear_failures()  # (a save that never reached the node: no timeout)
        self.clock.now += 11
        new = cookie_after(self.apps[process], session, cookie)
        assert new is not None, "a session that was written keeps a cookie"
        self.expected[new] = {"v": value}
        self._written(cookie, new)
        if self.cut is None:
            self.single.add(new)
        if new != cookie:
            self.left_behind.append(cookie)
        return new

    @rule(target=ended, cookie=consumes(cookies), process=PROCESSES)
    def logout(self, cookie: str, process: int) -> str:
        self.clock.now += 0.002
        session = self._load(process, cookie)
        self._check(cookie, session, self.expected.pop(cookie), process)
        self.single.discard(cookie)
        ended = str(session.id)  # a takeover on this request gave it this process's route
        if ended != cookie:
            self.left_behind.append(cookie)
        session.invalidate()
        self._save(process, session)
        self._ended(ended)
        return ended

    def _ended(self, sid: str) -> None:
        if self.cut is not None:
            # the cut-off node keeps its copy (the record, or the backup copy) and gets no
            # tombstone: the process owes it the delete, made once the node is back
            # (core/owed.py); until then, and for good if that process restarts first, the
            # copy can be served again (design.md, "A partition and the ids it leaves behind")
            self.exposed.add(sid)

    def _owed(self, sid: str) -> bool:
        """Some process still owes a reachable node the delete of a copy of `sid`."""
        return any(
            str(debt.sid) == sid
            for app in self.apps
            for node in self.stores
            if node != self.cut
            for debt in app.owed.of(node)
        )

    @rule(sid=ended, process=PROCESSES)
    def replay_a_logged_out_id(self, sid: str, process: int) -> None:
        self._replay_ended(sid, process)

    @precondition(lambda self: self.rotated_out)
    @rule(process=PROCESSES, pick=st.integers(0))
    def replay_an_id_a_login_replaced(self, process: int, pick: int) -> None:
        self._replay_ended(self.rotated_out[pick % len(self.rotated_out)], process)

    @precondition(lambda self: self.left_behind)
    @rule(process=PROCESSES, pick=st.integers(0))
    def replay_an_id_left_behind(self, process: int, pick: int) -> None:
        """An id the session moved away from (a takeover, a move off a failover node or a
        node that failed) never loads again, in any process, memory or not, once no live
        process owes a reachable node a delete of it (invariants 5 and 6). The session may
        have come back to it (ids keep their base): then it is the live session."""
        sid = self.left_behind[pick % len(self.left_behind)]
        self._settle_writes()  # (before the exemptions: it may add some)
        if sid in self.expected or sid in self.forfeited or self._kept(sid) or self._owed(sid):
            return
        self.clock.now += 0.002
        session = self._load(process, sid)
        assert session.is_new and dict(session) == {}, f"{sid} loaded {dict(session)} on {process}"

    def _replay_ended(self, sid: str, process: int) -> None:
        self._settle_writes()  # (before the exemptions: it may add some)
        if sid in self.exposed and (sid in self.forfeited or self._owed(sid)):
            return
        self.clock.now += 0.002
        session = self._load(process, sid)
        assert session.is_new and dict(session) == {} and session.id != sid

    @rule(process=PROCESSES, base=st.text("0123456789ABCDEF", min_size=32, max_size=32))
    def forged_id(self, process: int, base: str) -> None:
        forged = f"{base}-n1.app1"
        if forged not in self.expected:
            session = self._load(process, forged)
            assert session.is_new and session.id != forged

    # -- processes and nodes --------------------------------------------------------------------

    @rule(process=PROCESSES)
    def restart(self, process: int) -> None:
        """The process dies (its memory with it, and the deletes it owes) and a new one takes
        its place."""
        app = self.apps[process]
        self._close(process)  # (which drains a background queue: its deletes may owe too)
        self.forfeited.update(str(d.sid) for node in self.stores for d in app.owed.of(node))
        self.apps[process] = self._start(process)

    @precondition(lambda self: self.cut is None and not self.single)
    @rule(node=st.sampled_from(("n1", "n2")))
    def cut_off(self, node: str) -> None:
        """Unreachable, data kept; healed below. The other node stays up, so every write has a
        node (all nodes down keeps sessions in memory only: tested on its own)."""
        self.cut_off_node(node)

    @rule(seconds=st.floats(0.001, 5))
    def time_passes(self, seconds: float) -> None:
        self.clock.now += seconds

    @rule()
    def idle_timeout_passes(self) -> None:
        """No request for longer than the idle timeout (600 s): every session expired, in every
        process's memory and on every node (invariant 6)."""
        self._settle_writes()
        self.clock.now += 601
        for cookie in self.expected:
            self.expected[cookie] = None
        self.single.clear()  # nothing left to lose

    def teardown(self) -> None:
        for process in range(len(self.apps)):
            self._close(process)
        super().teardown()


class AsyncStickyCluster(StickyCluster):
    """The same model through AsyncSessionManager (its own sticky driver and async stores over
    the same memory nodes), on one event loop for the run."""

    def __init__(self) -> None:
        self.on_loop = OnOneLoop()
        super().__init__()

    def _start(self, process: int) -> Any:
        stores = {name: AsyncMemoryStore(store) for name, store in self.stores.items()}
        return AsyncSessionManager(
            stores=stores,  # type: ignore[arg-type]
            clock=self.clock,
            **sticky_settings(ROUTES[process]),
        )

    def _load(self, process: int, cookie: str | None) -> Session:
        return self.on_loop.load(self.apps[process], cookie)

    def _save(self, process: int, session: Session) -> None:
        self.on_loop.save(self.apps[process], session)

    def _close(self, process: int) -> None:
        self.on_loop.close(self.apps[process])

    def teardown(self) -> None:
        super().teardown()
        self.on_loop.stop()


class Holding:
    """What the held writers share: a save's batch waits in `held`, in order, until the model
    flushes it; past the queue's size it is dropped, counted and logged, as the real ones do."""

    held: list[Batch]
    size: int
    _drop: Callable[[], bool]  # (the writers' own, from pymsm.backup)

    def submit(self, batch: Batch) -> bool:
        if len(self.held) >= self.size:
            return self._drop()
        self.held.append(batch)
        return True


class HeldWriter(Holding, BackupWriter):
    """The background writer of `session_backup_async`, writing only when told (`flush`): the
    model decides when the writes a save queued reach the stores. Same batches, same checks."""

    def __init__(self, real: BackupWriter) -> None:
        real.close()  # (its thread)
        super(BackupWriter, self).__init__(real.size)
        self._execute = real._execute
        self.held = []

    def flush(self) -> None:
        while self.held:
            self._write(self.held.pop(0))

    def close(self, timeout: float = 0) -> None:
        self.flush()


class AsyncBackupStickyCluster(StickyCluster):
    """The same model with `session_backup_async=True`: a save's writes, and the deletes it
    leaves for after them (a logout's, a takeover's), wait in the process's queue until the
    next request starts (in any process) or the process closes. So every cut and heal happens
    while the last request's writes wait: the background writer meets failures its request
    never saw (the window in which a logout whose node failed used to leave the session live).

    What async backup gives up, and so what is not checked: a write that fails in the
    background is in its process's memory only, until that process's next request of the
    session writes it again, so other processes may serve the older stored copy. The data a
    client reads is not checked once its session had writes waiting while a node was cut off
    (`doubt`), and such an id may live on in that memory: another process that found nothing
    stored gave the client a new session, and a logout there ended that one. Invariants 6 and 7
    (ended and forged ids never load) are checked as before for every other id, and an id left
    behind by a move whose writes waited during a cut keeps its copies if the write under the
    new id failed (`kept`, core/sticky.Later)."""

    def __init__(self) -> None:
        self.doubt: set[str] = set()  # cookies whose data the model no longer predicts
        self.waiting: set[str] = set()  # cookies written by requests whose writes wait
        self.waiting_ended: set[str] = set()  # ids ended by requests whose deletes wait
        self.left_flushed = 0  # left_behind[left_flushed:] moved by writes that wait
        super().__init__()

    def _start(self, process: int) -> Any:
        manager = SessionManager(
            stores=self.stores,  # type: ignore[arg-type]
            clock=self.clock,
            session_backup_async=True,
            **sticky_settings(ROUTES[process]),
        )
        manager._sticky.writer = HeldWriter(manager._sticky.writer)
        return manager

    def _settle_writes(self) -> None:
        """Every process's queue is written; what waited while a node was cut off is marked."""
        if self.cut is not None:
            self.doubt |= self.waiting
            self.exposed |= self.waiting_ended
            self.kept.update(self.left_behind[self.left_flushed :])
        for app in self.apps:
            self._flush(app)
        self.waiting.clear()
        self.waiting_ended.clear()
        self.left_flushed = len(self.left_behind)

    def _flush(self, app: Any) -> None:
        app._sticky.writer.flush()

    def _load(self, process: int, cookie: str | None) -> Session:
        self._settle_writes()
        return super()._load(process, cookie)

    def _close(self, process: int) -> None:
        self._settle_writes()
        super()._close(process)

    def _serve(
        self, process: int, cookie: str | None, change: int | None, data: Any = None
    ) -> tuple[Any, str]:
        session, new = super()._serve(process, cookie, change, data)
        if change is not None or new != cookie:
            self.waiting.add(new)
        if cookie in self.doubt and change is None:
            self.doubt.add(new)  # (a change is a fresh write: known again once written)
        return session, new

    def _written(self, old: str | None, new: str) -> None:
        super()._written(old, new)
        self.waiting.add(new)

    @precondition(lambda self: self.cut is None)
    @rule(target=StickyCluster.cookies, cookie=consumes(StickyCluster.cookies), process=PROCESSES)
    def background_write_times_out(self, cookie: str, process: int) -> str:
        """A change whose record write times out in the background (the request never sees
        it): the process keeps the session in memory, and its next request of it writes it
        again (the stored stamp is behind its own). Until then other processes may read the
        older copy, so its data is no longer predicted (`doubt`); its ids are still checked."""
        data = self.expected.pop(cookie)
        self._settle_writes()
        _, new = self._serve(process, cookie, -1, data)
        home = self.stores[str(SessionId.parse(new).node)]
        home.fail_next(1, StoreTimeout("injected timeout in the background", home.name))
        self._flush(self.apps[process])
        home.clear_failures()
        self.clock.now += 11  # past the dead time, as after the sync rule's timeout
        self.expected[new] = {"v": -1}
        self.doubt.add(new)
        if new != cookie:
            self.left_behind.append(cookie)
            self.kept.add(cookie)  # (its move's write failed: the old id keeps its copies)
        return new

    def _ended(self, sid: str) -> None:
        super()._ended(sid)
        self.waiting_ended.add(sid)

    def _kept(self, sid: str) -> bool:
        return sid in self.kept or sid in self.doubt

    def _check(self, cookie: str, session: Session, data: Any, process: int) -> None:
        if cookie not in self.doubt:
            super()._check(cookie, session, data, process)


class AsyncHeldWriter(Holding, AsyncBackupWriter):
    """HeldWriter's asyncio twin: AsyncBackupWriter's batches, written when told."""

    def __init__(self, real: AsyncBackupWriter) -> None:
        AsyncBackupWriter.__init__(self, real._execute, real.size)
        self.held = []

    async def flush(self) -> None:
        while self.held:
            await self._write(self.held.pop(0))

    async def close(self, timeout: float = 0) -> None:
        await self.flush()


class AsyncBackupAsyncStickyCluster(AsyncBackupStickyCluster, AsyncStickyCluster):
    """AsyncBackupStickyCluster through AsyncSessionManager (its writer is an asyncio task)."""

    def _start(self, process: int) -> Any:
        stores = {name: AsyncMemoryStore(store) for name, store in self.stores.items()}
        manager = AsyncSessionManager(
            stores=stores,  # type: ignore[arg-type]
            clock=self.clock,
            session_backup_async=True,
            **sticky_settings(ROUTES[process]),
        )
        manager._sticky.writer = AsyncHeldWriter(manager._sticky.writer)
        return manager

    def _flush(self, app: Any) -> None:
        self.on_loop.loop.run_until_complete(app._sticky.writer.flush())


class SmallCacheStickyCluster(StickyCluster):
    """The same model with room for two sessions per process: many requests find their session
    evicted, and load it from the store as a process that never held it."""

    cache_size = {"sticky_cache_size": 2}


StickyCluster.TestCase.settings = SETTINGS
AsyncStickyCluster.TestCase.settings = SETTINGS
SmallCacheStickyCluster.TestCase.settings = SETTINGS
AsyncBackupStickyCluster.TestCase.settings = SETTINGS
AsyncBackupAsyncStickyCluster.TestCase.settings = SETTINGS
test_sticky_model = StickyCluster.TestCase
test_async_sticky_model = AsyncStickyCluster.TestCase
test_small_cache_sticky_model = SmallCacheStickyCluster.TestCase
test_async_backup_sticky_model = AsyncBackupStickyCluster.TestCase
test_async_backup_async_sticky_model = AsyncBackupAsyncStickyCluster.TestCase
