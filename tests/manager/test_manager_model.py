"""A model-based test of the non-sticky manager: hypothesis drives random sequences of requests
(create, read, write, a write whose node times out, login, logout, replayed and forged cookies,
the idle timeout passing) against three memory nodes while nodes are cut off and healed, one at a time,
and at most one node is lost for good. After every request the client sees exactly what it last wrote (invariants 1 and
5), a logged-out or expired id never loads again (invariant 6) and an id the store does not hold
is never adopted (invariant 7).
It runs through SessionManager and through AsyncSessionManager (the async driver) in the default
locking mode (optimistic), and through SessionManager in the modes `all` and `none`. Every
request ends as the adapters end it (save, then release), which is where a process pays the
deletes it owes a node that was cut off (core/owed.py).

Memory stores keep this fast and deterministic; the failover paths it walks are proven against
real memcached in tests/integration.
"""

from __future__ import annotations

from typing import Any

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import (
    Bundle,
    consumes,
    precondition,
    rule,
)

from pymsm import AsyncSessionManager, SessionManager
from pymsm.core.flows import Keys
from pymsm.core.ids import SessionId
from pymsm.core.session import Session
from pymsm.exceptions import StoreTimeout
from pymsm.stores.memory import AsyncMemoryStore, MemoryStore
from support.clock import Clock
from support.models import SETTINGS, OnOneLoop, SeededMachine
from support.sticky_memory import stored_data

NODES = ("n1", "n2", "n3")


class Cluster(SeededMachine):
    ids = Bundle("ids")
    ended = Bundle("ended")
    locking_mode = "optimistic"  # the default: reads with CAS tokens, writes with cas + merge
    failover = ""  # failover_nodes

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.stores = {n: MemoryStore(n, clock=self.clock) for n in NODES}
        # the id the client holds -> its data; None once it expired (nothing may be served)
        self.expected: dict[str, dict[str, Any] | None] = {}
        self.lost: str | None = None
        self.apps = [self._app(), self._app()]  # two app processes, each with its own health
        # ids the client held before its session moved (a node was cut off): the copy on that
        # node outlives the move until a process that owes its delete settles it (core/owed.py)
        self.left_behind: list[str] = []
        self.rotated_out: list[str] = []  # ids a login replaced: ended, as after a logout
        # sessions a node's restart left with one copy, until their next write (restart_empty)
        self.at_risk: set[str] = set()

    # the manager calls, overridden by the async twin below
    def _app(self) -> Any:
        return SessionManager(
            memcached_nodes="n1:127.0.0.1:1,n2:127.0.0.1:2,n3:127.0.0.1:3",
            stores=self.stores,  # type: ignore[arg-type]
            clock=self.clock,
            max_inactive_interval=3600,
            node_dead_timeout=10,
            locking_mode=self.locking_mode,
            failover_nodes=self.failover,
        )

    def _load(self, app: int, cookie: str | None) -> Session:
        session: Session = self.apps[app].load(cookie)
        return session

    def _save(self, app: int, session: Session) -> str:
        """The save, then the request's end (as the adapters do: owed deletes are made there)."""
        status: str = self.apps[app].save(session).status
        self.apps[app].release(session)
        return status

    def _tick(self) -> None:
        """A new request: requests are at least 2 ms apart, as copies are ranked by the time
        they were written, in ms (design.md, "Load")."""
        self.clock.now += 0.002

    def _follow(self, old: str, session: Any, data: dict[str, Any], wrote: bool = True) -> str:
        """The client keeps the id the response's cookie names (a re-home changes it)."""
        del self.expected[old]
        self.expected[session.id] = data
        if session.id != old:
            self.left_behind.append(old)
        if old in self.at_risk:
            self.at_risk.discard(old)
            if not wrote:
                self.at_risk.add(str(session.id))
        return str(session.id)

    # -- requests -------------------------------------------------------------------------------

    @rule(target=ids, app=st.integers(0, 1), value=st.integers())
    def create(self, app: int, value: int) -> str:
        self._tick()
        session = self._load(app, None)
        session["v"] = value
        assert self._save(app, session) == "stored"
        self.expected[session.id] = {"v": value}
        return str(session.id)

    @rule(target=ids, sid=consumes(ids), app=st.integers(0, 1))
    def read(self, sid: str, app: int) -> str:
        self._tick()
        session = self._load(app, sid)
        self._check(sid, session)
        self._save(app, session)
        if self.expected[sid] is None:
            return sid  # a new session the request did not write: no Set-Cookie, the id stays
        return self._follow(sid, session, dict(session), wrote=False)

    def _check(self, sid: str, session: Session) -> None:
        """What the client last wrote, or a new empty session once it expired (invariant 6)."""
        want = self.expected[sid]
        if want is None:
            assert session.is_new and dict(session) == {}, f"expired {sid} read {dict(session)}"
        else:
            assert dict(session) == want, f"{sid} read {dict(session)}"

    @rule(target=ids, sid=consumes(ids), app=st.integers(0, 1), value=st.integers())
    def write(self, sid: str, app: int, value: int) -> str:
        self._tick()
        session = self._load(app, sid)
        self._check(sid, session)
        session["v"] = value
        assert self._save(app, session) == "stored"
        return self._follow(sid, session, {"v": value})

    @rule(target=ids, sid=consumes(ids), app=st.integers(0, 1), value=st.integers())
    def write_as_its_node_times_out(self, sid: str, app: int, value: int) -> str:
        """The session's node times out on the record's write: the save moves the session to
        another node under a new id (relocation; the id keeps its base, so a later relocation
        can bring it back to this one). The app may use the node again after its dead time,
        which passes here, as after `heal`: a later cut must leave it two nodes."""
        self._tick()
        session = self._load(app, sid)
        self._check(sid, session)
        session["v"] = value
        node = session.sid.node
        reachable = node not in (self.cut, self.lost)  # (else the save relocates anyway)
        if reachable:
            self.stores[node].fail_next(1, StoreTimeout(f"{node}: injected timeout", node))
        assert self._save(app, session) == "stored"
        assert not reachable or session.sid.node != node, "the timed-out write was the record's"
        self.stores[node].clear_failures()  # (a save that never reached the node: no timeout)
        self.clock.now += 11
        return self._follow(sid, session, {"v": value})

    @rule(target=ids, sid=consumes(ids), app=st.integers(0, 1), value=st.integers())
    def log_in(self, sid: str, app: int, value: int) -> str:
        """A login: the id is rotated (against session fixation), the data kept and changed."""
        self._tick()
        session = self._load(app, sid)
        self._check(sid, session)
        loaded, stored = str(session.id), not session.is_new
        session.rotate_id()
        session["v"] = value
        assert self._save(app, session) == "stored"
        if stored:
            self.rotated_out.append(loaded)
        return self._follow(sid, session, {"v": value})

    @rule(target=ended, sid=consumes(ids), app=st.integers(0, 1))
    def logout(self, sid: str, app: int) -> str:
        self._tick()
        session = self._load(app, sid)
        self._check(sid, session)
        del self.expected[sid]
        # the id that is logged out: the load may have moved the session (primary cut off); the
        # old id's copy on the unreachable node outlives the move until a process pays that
        # delete (core/owed.py), so it is replayed by `replay_an_id_left_behind`, not below
        ended = str(session.id)
        if ended != sid:
            self.left_behind.append(sid)
        session.invalidate()
        self._save(app, session)
        return ended

    @rule(sid=ended, app=st.integers(0, 1))
    def replay_a_logged_out_id(self, sid: str, app: int) -> None:
        self._replay_ended(sid, app)

    @precondition(lambda self: self.rotated_out)
    @rule(app=st.integers(0, 1), pick=st.integers(0))
    def replay_an_id_a_login_replaced(self, app: int, pick: int) -> None:
        self._replay_ended(self.rotated_out[pick % len(self.rotated_out)], app)

    def _replay_ended(self, sid: str, app: int) -> None:
        self._tick()
        session = self._load(app, sid)
        assert session.is_new and dict(session) == {} and session.id != sid
        self._save(app, session)  # (the request's end: nothing to store; locks released)

    @precondition(lambda self: self.left_behind)
    @rule(app=st.integers(0, 1), pick=st.integers(0))
    def replay_an_id_left_behind(self, app: int, pick: int) -> None:
        """An id the session moved away from (a replayed or stolen cookie, a request that was in
        flight) never loads again once no process owes its node the delete: the node is
        unreachable, or the delete was made when it came back (invariants 5 and 6)."""
        sid = self.left_behind[pick % len(self.left_behind)]
        node = sid.rsplit("-", 1)[1]
        if sid in self.expected:
            return  # the session came back to this id (its base is kept when it moves)
        owed = any(str(d.sid) == sid for a in self.apps for d in a.owed.of(node))
        if owed and node not in (self.cut, self.lost):
            return  # not settled yet: the process has not seen the node back
        self._tick()
        session = self._load(app, sid)
        assert session.is_new and dict(session) == {}, f"{sid} loaded {dict(session)}"
        self._save(app, session)

    @rule(app=st.integers(0, 1), base=st.text("0123456789ABCDEF", min_size=32, max_size=32))
    def forged_id(self, app: int, base: str) -> None:
        for node in NODES:
            forged = f"{base}-{node}"
            if forged in self.expected:
                continue
            self._tick()
            session = self._load(app, forged)
            assert session.is_new and session.id != forged
            self._save(app, session)

    # -- the cluster ----------------------------------------------------------------------------

    @precondition(lambda self: self.cut is None and self.lost is None)
    @rule(node=st.sampled_from(NODES))
    def cut_off(self, node: str) -> None:
        """Unreachable, data kept (a partition); healed below."""
        if not self._takes_a_last_copy(node):
            self.cut_off_node(node)

    @precondition(lambda self: self.cut is None and self.lost is None)
    @rule(node=st.sampled_from(NODES))
    def lose(self, node: str) -> None:
        """Down for good: the one failure the rest of the run must survive."""
        if not self._takes_a_last_copy(node):
            self.lost = node
            self.stores[node].down = True

    @precondition(lambda self: self.cut is None and self.lost is None)
    @rule(node=st.sampled_from(NODES))
    def restart_empty(self, node: str) -> None:
        """The node restarts between two requests, its data lost; no process sees it go. Each
        session keeps a copy on another node; those that had one there are refilled or copied
        again by their next requests, and until their next write no failure is made that would
        take their last current copy (`_takes_a_last_copy`)."""
        if self._takes_a_last_copy(node):
            return
        self.stores[node].items.clear()
        self.at_risk.update(sid for sid, data in self.expected.items() if data is not None)

    def _takes_a_last_copy(self, node: str) -> bool:
        """Would losing `node` take the last copy holding what a client last wrote of a session
        a restart left with one copy (`at_risk`)? Sessions written since have two copies again
        and are not asked about: that they do is what the model checks."""
        return any(
            self._holders(sid) <= {node}
            for sid in self.at_risk
            if self.expected.get(sid) is not None
        )

    def _holders(self, sid: str) -> set[str]:
        """The nodes holding the record or a backup copy of `sid` with the client's data."""
        keys = Keys.of("", SessionId.parse(sid))
        held = set()
        for name, store in self.stores.items():
            for key in (keys.record, keys.backup):
                item = store.items.get(key)
                if item is None or (item[1] and item[1] <= self.clock()):
                    continue
                if stored_data(store, key) == self.expected[sid]:
                    held.add(name)
        return held

    @rule(seconds=st.floats(0.001, 5))
    def time_passes(self, seconds: float) -> None:
        self.clock.now += seconds

    @rule()
    def idle_timeout_passes(self) -> None:
        """No request for longer than the idle timeout: every session expired, whatever node
        holds a copy of it, cut off or not (invariant 6)."""
        self.clock.now += 3601
        for sid in self.expected:
            self.expected[sid] = None


class AsyncCluster(Cluster):
    """The same model through AsyncSessionManager and async stores over the same memory nodes,
    on one event loop for the run."""

    def __init__(self) -> None:
        self.on_loop = OnOneLoop()
        super().__init__()

    def _app(self) -> Any:
        return AsyncSessionManager(
            memcached_nodes="n1:127.0.0.1:1,n2:127.0.0.1:2,n3:127.0.0.1:3",
            stores={n: AsyncMemoryStore(s) for n, s in self.stores.items()},  # type: ignore[arg-type]
            clock=self.clock,
            max_inactive_interval=3600,
            node_dead_timeout=10,
        )

    def _load(self, app: int, cookie: str | None) -> Session:
        return self.on_loop.load(self.apps[app], cookie)

    def _save(self, app: int, session: Session) -> str:
        return self.on_loop.save(self.apps[app], session)

    def teardown(self) -> None:
        super().teardown()
        self.on_loop.stop()


class LockingCluster(Cluster):
    """The same model with every request taking the session's lock (`all`): the lock key lives
    on the session's node, so cut-off nodes and moves go through the locking flows too."""

    locking_mode = "all"


class PlainCluster(Cluster):
    """The same model with plain replace writes (`none`: no CAS tokens, no merge)."""

    locking_mode = "none"


class FailoverCluster(Cluster):
    """The same model with n3 as a failover node: new sessions and relocations go to n1 and
    n2 while one of them is up; n3 holds backup copies, and sessions only when both are not."""

    failover = "n3"


Cluster.TestCase.settings = SETTINGS
AsyncCluster.TestCase.settings = SETTINGS
# the other locking modes share all but the first read and the write: fewer examples
LockingCluster.TestCase.settings = settings(SETTINGS, max_examples=100)
PlainCluster.TestCase.settings = settings(SETTINGS, max_examples=100)
FailoverCluster.TestCase.settings = settings(SETTINGS, max_examples=100)
test_manager_model = Cluster.TestCase
test_async_manager_model = AsyncCluster.TestCase
test_manager_model_locking_all = LockingCluster.TestCase
test_manager_model_locking_none = PlainCluster.TestCase
test_manager_model_failover_node = FailoverCluster.TestCase
