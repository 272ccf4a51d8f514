"""SessionManager and AsyncSessionManager: drive the core flows against the stores.

The adapters call `open(cookie)` at the start of a request (a lazy session: nothing is read until
the app touches it; async code calls `await load(cookie)` instead, since loading cannot be lazy
there), `save(session)` before the response leaves, and `set_cookie(session, sent)` (or
`cookie_update` for frameworks that write cookies themselves) for the header to send. Everything a
request decides lives in `pymsm.core.flows`; the two drivers only run its store operations.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
import secrets
import time
from collections import Counter
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from pymsm import cookies
from pymsm.config import Config
from pymsm.cookies import Sent
from pymsm.core import flows, locking, owed
from pymsm.core.codecs import Codec, JsonCodec, MsgpackCodec, PickleCodec, codec_by_name
from pymsm.core.ids import SessionId
from pymsm.core.nodes import Health
from pymsm.core.ops import Op, Sleep, call_args
from pymsm.core.records import RecordFormat
from pymsm.core.session import Session
from pymsm.exceptions import ConfigError, InvalidSessionId, ItemTooLarge, LockTimeout, StoreError
from pymsm.locks import Guard, LocalLocks
from pymsm.stores.base import Store

if TYPE_CHECKING:
    from pymsm.sticky import StickySessions, _StickyCache

T = TypeVar("T")
S = TypeVar("S", bound=Session)
log = logging.getLogger("pymsm")
_BASE = re.compile(r"\b([0-9A-F]{6})[0-9A-F]{26}\b")


@dataclass(frozen=True, slots=True)
class CookieUpdate:
    """The session cookie must be set to `value` (or deleted)."""

    value: str
    delete: bool = False


def redact(text: str) -> str:
    """Session ids in log lines keep 6 hex digits: enough to correlate, useless to hijack."""
    return _BASE.sub(r"\1…", text)


class _Base:
    """What the sync and async managers share: configuration, health, codecs, contexts."""

    def __init__(
        self, config: Config | None, clock: Callable[[], float], settings: dict[str, Any]
    ) -> None:
        self.config = Config.from_settings(config, **settings)
        self.clock = clock
        cfg = self.config
        self.health = Health(dead_timeout=cfg.node_dead_timeout)
        self.format = RecordFormat(cfg.secret_keys, cfg.compress_threshold)
        self.codec = codec_by_name(cfg.codec, cfg.secret_keys[0] if cfg.secret_keys else None)
        self.decoders = _decoders(self.codec, bool(cfg.secret_keys))
        self._ignore = (
            re.compile(cfg.request_uri_ignore_pattern) if cfg.request_uri_ignore_pattern else None
        )
        self._filter = (
            re.compile(cfg.session_attribute_filter) if cfg.session_attribute_filter else None
        )
        self.stats: Counter[str] = Counter()
        self.locking = locking.LockingMode.parse(cfg.locking_mode)
        self.learner = locking.ReadOnlyLearner()
        self.owed = owed.Owed()  # deletes a node missed while unreachable (core/owed.py)
        nodes = cfg.nodes
        self._node_ids = frozenset(n.id for n in nodes.nodes) if nodes.has_ids else frozenset()

    @property
    def retry_after(self) -> int:
        """Seconds for Retry-After when a request gave up waiting for the session's lock."""
        return max(1, round(self.config.lock_wait_timeout or 1))

    def ignores(self, path: str) -> bool:
        """Requests whose path matches `request_uri_ignore_pattern` never touch a session."""
        return self._ignore is not None and self._ignore.fullmatch(path) is not None

    def context(self) -> flows.Context:
        cfg = self.config
        return flows.Context(
            cfg.nodes,
            self.health,
            self.format,
            self.codec,
            self.decoders,
            cfg.key_prefix,
            cfg.max_inactive_interval,
            self.clock(),
            route=cfg.route,
            backup_lookups=cfg.backup_lookups,
            attribute_filter=self._filter,
            access_resolution=cfg.access_time_resolution,
            owed=self.owed,
        )

    def owed_batches(
        self, closing: bool = False
    ) -> Sequence[tuple[flows.Context, str, list[owed.Debt]]]:
        """Deletes a node missed, to make now (`settle_owed`). When a request ends: some of
        those of the first node that is healthy again (none in the common case: nothing owed,
        or the node is not back yet). When `closing`: every owed node's, whatever its health,
        before the debts go with the process (a node that still cannot be reached fails the
        first delete and keeps its debts, which `warn_owed` then names)."""
        if closing:
            return [
                (self.context(), node, self.owed.take(node, self.owed.limit))
                for node in self.owed.nodes()
            ]
        node = self.owed.due(self.health)
        if node is None:
            return ()
        return [(self.context(), node, self.owed.take(node))]

    def owed_settled(self, ctx: flows.Context, node: str, left: list[owed.Debt]) -> None:
        self.owed.give_back(node, left)
        self.merge(ctx)

    def delete_flows(
        self, cookie: str | None, sticky: _StickyCache[Any] | None
    ) -> list[flows.Flow[None]]:
        """What `delete(cookie)` runs: the deletes of every stored copy of the session in
        `cookie` (none for a malformed id); in sticky mode (`sticky`, the process's cache) this
        process's copy goes too, and the id a takeover of it came from is deleted as well if
        that one still holds it (the takeover was not saved yet)."""
        sid = self.parse_id(cookie)
        if sid is None:
            return []
        if sticky is None:
            return [flows.delete(self.context(), sid)]
        return [flows.delete(self.context(), old, sticky=True) for old in sticky.forget(sid)]

    def warn_owed(self) -> None:
        """On close: the deletes still owed live only in this process; say so, per node."""
        for node in self.owed.nodes():
            count = len(self.owed.of(node))
            log.warning(
                "closing with %d %s still owed to cache node %s (unreachable when they were "
                "made): they are made only if this process serves requests once %s answers "
                "again. If the process ends now, restart %s empty, or the old session ids it "
                "holds stay readable until they expire (docs/design.md, 'A partition and the "
                "ids it leaves behind')",
                count,
                "delete" if count == 1 else "deletes",
                node,
                node,
                node,
            )

    def sticky_write_config(self, default_stores: bool) -> Config | None:
        """The configuration of sticky mode's own write stores (synchronous backup): the same
        kind of store as the reads (memcached, or Redis for a Redis URL), with
        `session_backup_timeout` as their operation timeout, so a write that times out closes
        only its own connection. None: writes use the manager's stores (stores passed in, or
        asynchronous backup)."""
        cfg = self.config
        if not default_stores or cfg.session_backup_async:
            return None
        return dataclasses.replace(cfg, operation_timeout=cfg.session_backup_timeout)

    def save_context(self, session: Session) -> flows.Context:
        """The context for saving `session`: its load's, with the clock read again."""
        guard = session.lock
        if not isinstance(guard, Guard):
            return self.context()
        ctx = guard.context
        if ctx is None:
            ctx = guard.context = self.context()
        else:
            ctx.now = self.clock()
        ctx.cas = guard.plan.cas
        return ctx

    def candidates(self, cookies: tuple[str, ...]) -> list[SessionId]:
        """The well-formed ids among the cookies the client sent, in its order."""
        return [sid for sid in map(self.parse_id, cookies) if sid is not None]

    def passed_over(self, sid: SessionId, status: str) -> None:
        """The client sent several session cookies and `sid` names no session we can serve:
        the next one is tried (pymsm.cookies.MAX_COOKIES)."""
        self.stats["cookie_passed_over"] += 1
        log.info(
            "the client sent several session cookies; %s: %s, trying the next",
            redact(str(sid)),
            status,
        )

    def parse_id(self, cookie: str | None) -> SessionId | None:
        if not cookie:
            return None
        try:
            sid = SessionId.parse(cookie)
        except InvalidSessionId as exc:
            self.stats["invalid_id"] += 1
            log.info("ignoring session cookie: %s; starting a new session", redact(str(exc)))
            return None
        if self._node_ids and sid.node not in self._node_ids:
            self._unconfigured(sid)
        return sid

    def _unconfigured(self, sid: SessionId) -> None:
        """An id naming a node memcached_nodes does not list: its load finds nothing (the
        client's id is never adopted). Most often the node was taken out of the list, which
        loses its sessions although their backup copies are on the other nodes: say so, on the
        first such id and then on every thousandth (a forged-cookie flood must not flood the
        log)."""
        self.stats["unconfigured_node"] += 1
        count = self.stats["unconfigured_node"]
        if count != 1 and count % 1000 != 0:
            return
        if sid.node is None:
            advice = "it was made while memcached_nodes was one host:port, without node ids"
        else:
            advice = (
                f"if {sid.node!r} was taken out of memcached_nodes, list it again, stopped or "
                "not, until max_inactive_interval has passed: its sessions then move to their "
                "backup copies as they are used (docs/ops.md, 'Retiring a cache node')"
            )
        log.warning(
            "session %s names %s, which memcached_nodes does not list (%d such ids so far): "
            "it gets a new session; %s",
            redact(str(sid)),
            "no node" if sid.node is None else f"node {sid.node!r}",
            count,
            advice,
        )

    def _loaded(self, ctx: flows.Context, session: Session, loaded: flows.Loaded) -> None:
        self.stats["load_" + loaded.status] += 1
        if loaded.status in ("corrupt", "unavailable"):
            log.warning(
                "session could not be read (%s): %s; serving a new session, the stored "
                "one is left as it is",
                loaded.status,
                redact(loaded.reason),
            )
        elif loaded.status == "expired":
            log.info("session expired: %s", loaded.reason)
        flows.fill(ctx, session, loaded)
        self._log_events(ctx)

    def _saved(self, ctx: flows.Context, session: Session, saved: flows.Saved) -> flows.Saved:
        self.stats["save_" + saved.status] += 1
        if saved.status == "failed":
            log.error(
                "session %s was not stored: %s", redact(str(session._sid)), redact(saved.reason)
            )
        elif saved.status == "gone":
            log.info("session %s %s", redact(str(session._sid)), saved.reason)
        self.merge(ctx)  # (the context may serve another save of this request)
        return saved

    def merge(self, ctx: flows.Context) -> None:
        """Count what `ctx`'s flows counted and log their events: a save's, the owed deletes',
        the background writer's deletes' (core/sticky.Later)."""
        if ctx.counts:
            self.stats.update(ctx.counts)
            ctx.counts.clear()
        self._log_events(ctx)

    def _log_events(self, ctx: flows.Context) -> None:
        for event in ctx.events:
            log.warning("%s", redact(event))
        ctx.events.clear()

    def cookie_update(self, session: Session, sent: Sent) -> CookieUpdate | None:
        """What the client's cookie must become, or None: the new id once stored (created,
        rotated, relocated), or a deletion after logout. Adapters whose framework writes cookies
        (Flask, Django) translate this into the framework's own cookie call."""
        if not session.loaded:
            return None
        if isinstance(sent, tuple):
            sent = session.sent_id  # the cookie it was loaded from
        if session.record is not None and session.id != sent:
            return CookieUpdate(session.id)
        if session.invalidated and session.record is None and sent:
            return CookieUpdate("", delete=True)
        return None

    def set_cookie(self, session: Session, sent: Sent) -> str | None:
        """The Set-Cookie value to send, or None: a new id once stored, a deletion after logout."""
        update = self.cookie_update(session, sent)
        if update is None:
            return None
        return cookies.set_cookie(self.config, update.value, delete=update.delete)

    def end_if_emptied(self, session: Session) -> None:
        """A session the request emptied is not kept: a stored one ends (it is deleted, the
        cookie goes), a new one is not stored (no record, no cookie). That is what Flask's and
        Starlette's cookie sessions do with an empty session, so logout code that clears the
        session keeps working, and a new visitor's `flash()` read in the same request leaves
        nothing behind. Call before `save`."""
        if not session.loaded or not session.modified or session.data:
            return
        if session.record is not None:
            session.invalidate()
        elif session.is_new:
            session.modified = False  # nothing to store: the save skips it

    def read_cookie(self, header: str | None) -> Sent:
        return cookies.read_cookie(header, self.config.cookie_name)

    # -- locking (shared by the sync and async managers) ----------------------------------------

    def guard(self, method: str, path: str, declared: str | None) -> Guard:
        """This request's plan: take the lock or not, write with cas or not."""
        plan = locking.decide(self.locking, method, path, declared, self.learner, self.clock())
        return Guard(method, path, plan)

    def lock_flow(
        self, ctx: flows.Context, sid: SessionId
    ) -> Generator[Op, Any, tuple[str, locking.Lock | None]]:
        """Acquire `lock:P S` on the node in S with a fresh owner token, within the wait."""
        node = ctx.node_of(sid)
        if node is None or not ctx.up(node):
            return "unavailable", None
        cfg = self.config
        assert cfg.lock_wait_timeout is not None
        token = secrets.token_hex(16).encode()
        deadline = ctx.now + cfg.lock_wait_timeout
        return (
            yield from locking.acquire(
                node, ctx.keys(sid).lock, token, cfg.lock_expiration, deadline, ctx.now
            )
        )

    def lock_failed(self, sid: SessionId, status: str) -> None:
        """Apply `lock_failure` after a lock timeout: raise LockTimeout, or log and proceed
        (the request still writes with cas + merge). An unreachable node always proceeds."""
        self.stats["lock_" + status] += 1
        name = redact(str(sid))
        if status == "timeout" and self.config.lock_failure == "error":
            raise LockTimeout(
                f"session {name} stayed locked for lock_wait_timeout="
                f"{self.config.lock_wait_timeout}s; raise lock_wait_timeout, or set "
                "lock_failure='proceed' to continue without the lock"
            )
        log.warning("proceeding without the lock of session %s: lock %s", name, status)

    def observe(self, session: Session, guard: Guard) -> None:
        """Teach the `auto` learner what this request did (once, when it ends)."""
        if self.locking.name != "auto" or guard.observed or not session.loaded:
            return
        guard.observed = True
        self.learner.observe(guard.method, guard.path, guard.wrote, self.clock())

    def lock_released(self, lock: locking.Lock, ours: bool) -> None:
        if not ours:
            self.stats["lock_lost"] += 1
            log.warning("lock %s had expired and was taken over", redact(lock.key))

    def _note_save(self, session: Session, saved: flows.Saved) -> None:
        guard = session.lock
        wrote = session.invalidated or saved.status not in ("unchanged", "skipped")
        if isinstance(guard, Guard) and wrote:
            guard.wrote = True


class SessionManager(_Base):
    """Sessions over the configured nodes, for threaded or single-threaded servers.

    `stores` maps node names to stores (tests pass memory stores); by default one memcached
    store per node. `clock` gives seconds since the epoch.
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        stores: Mapping[str, Store] | None = None,
        clock: Callable[[], float] = time.time,
        **settings: Any,
    ) -> None:
        super().__init__(config, clock, settings)
        self.stores: Mapping[str, Store] = (
            stores if stores is not None else self._memcached_stores()
        )
        self._sticky = self._sticky_sessions(stores is None) if self.config.sticky else None
        self.local_locks = LocalLocks()

    def _memcached_stores(self) -> dict[str, Store]:
        from pymsm.stores import make_stores

        return make_stores(self.config)  # memcached, or Redis for a Redis URL

    def _sticky_sessions(self, default_stores: bool) -> StickySessions:
        """Sticky mode; synchronous backup writes get their own connections, bounded by
        `session_backup_timeout` instead of `operation_timeout`."""
        from pymsm.sticky import StickySessions
        from pymsm.stores import make_stores

        config = self.sticky_write_config(default_stores)
        return StickySessions(self, make_stores(config) if config else None)

    def run(self, flow: Generator[Op, Any, T]) -> T:
        """The sync driver: run each operation on its node's store, send back result or error."""
        return drive(flow, self._execute)

    def _execute(self, op: Op) -> Any:
        return execute(op, self.stores, self.health, self.clock)

    def open(
        self,
        cookie: Sent,
        method: str = "GET",
        path: str = "/",
        access: Callable[[], str | None] | None = None,
    ) -> Session:
        """A lazy session for the id in `cookie`: loaded on first use, new if absent or invalid.

        `method` and `path` feed the locking decision; `access()` is asked at load time for a
        declared "read" or "write" (see pymsm.core.locking). With a locking mode that covers the
        request, the load takes the session's lock: call `release(session)` when the request
        ends, also on errors. Loading raises LockTimeout with `lock_failure='error'`.
        """
        return self.open_as(cookie, Session, method, path, access)

    def open_as(
        self,
        cookie: Sent,
        session_class: type[S],
        method: str = "GET",
        path: str = "/",
        access: Callable[[], str | None] | None = None,
    ) -> S:
        """`open` with a Session subclass, for adapters whose framework wants its own type."""

        def loader(session: Session) -> None:
            session.lock = self.guard(method, path, access() if access else None)
            self._load_into(session, cookie)

        return session_class.lazy(loader)

    def load(self, cookie: Sent) -> Session:
        session = self.open(cookie)
        session._ensure()
        return session

    def delete(self, cookie: str | None) -> None:
        """Delete every stored copy of the session in `cookie` (see `delete_flows`)."""
        for flow in self.delete_flows(cookie, self._sticky):
            self.run(flow)

    def _load_into(self, session: Session, cookie: Sent) -> None:
        if self._sticky is not None:
            return self._sticky.load_into(session, cookie)
        ctx = self.context()
        guard = session.lock if isinstance(session.lock, Guard) else None
        if guard is not None:
            guard.context = ctx
            ctx.cas = guard.plan.cas
        if isinstance(cookie, tuple):
            loaded = self._load_several(ctx, session, guard, cookie)
        elif (sid := self.parse_id(cookie)) is None:
            loaded = flows.Loaded("new")
        else:
            loaded = self._load_one(ctx, guard, sid)
        self._loaded(ctx, session, loaded)

    def _load_one(self, ctx: flows.Context, guard: Guard | None, sid: SessionId) -> flows.Loaded:
        if guard is not None and guard.plan.lock:
            self._lock(ctx, sid, guard)
            ctx.now = self.clock()  # waiting for the lock took time
        return self.run(flows.load(ctx, sid))

    def _load_several(
        self, ctx: flows.Context, session: Session, guard: Guard | None, cookie: tuple[str, ...]
    ) -> flows.Loaded:
        """The client sent several cookies: the first that names a stored session (cookies.py)."""
        loaded = flows.Loaded("new")
        sids = self.candidates(cookie)
        for sid in sids:
            loaded = self._load_one(ctx, guard, sid)
            session.sent_id = str(sid)
            if loaded.record is not None or sid is sids[-1]:
                break
            self.passed_over(sid, loaded.status)
            if guard is not None:
                self.release_guard(guard)
        return loaded

    def _lock(self, ctx: flows.Context, sid: SessionId, guard: Guard) -> None:
        """Local lock first (one process never races itself), then the store's lock."""
        assert self.config.lock_wait_timeout is not None
        local = sid.base
        if not self.local_locks.acquire(local, self.config.lock_wait_timeout):
            self.lock_failed(sid, "timeout")
            return
        guard.local = local
        try:
            status, guard.lock = self.run(self.lock_flow(ctx, sid))
            if guard.lock is None:
                self.lock_failed(sid, status)
        except BaseException:
            self.release_guard(guard)
            raise

    def release(self, session: Session) -> None:
        """The request is over: release its locks (only ours: owner token) and let the `auto`
        learner observe it. Idempotent; call it after the last save, also on errors."""
        guard = session.lock
        if not isinstance(guard, Guard):
            return
        self.observe(session, guard)
        self.release_guard(guard)
        self.settle_owed()

    def settle_owed(self, closing: bool = False) -> None:
        """Make deletes a node missed while unreachable (see `owed_batches` and core/owed.py);
        `release` calls it when a request ends, `close` with `closing`. Never raises for store
        trouble."""
        for ctx, node, debts in self.owed_batches(closing):
            self.owed_settled(ctx, node, self.run(owed.settle(ctx, node, debts)))

    def release_guard(self, guard: Guard) -> None:
        lock, guard.lock = guard.lock, None
        try:
            if lock is not None:
                self.lock_released(lock, self.run(locking.release(lock)))
        finally:
            local, guard.local = guard.local, None
            if local is not None:
                self.local_locks.release(local)

    def save(self, session: Session) -> flows.Saved:
        """Write what the request changed. Never raises for store trouble: it logs and counts."""
        if not session.loaded:
            return flows.Saved("skipped")
        if self._sticky is not None:
            return self._sticky.save(session)
        ctx = self.save_context(session)
        saved = flows.settled(ctx, session)  # nothing to write: no flow to run
        if saved is None:
            saved = self.run(flows.save(ctx, session))
        self._note_save(session, saved)
        return self._saved(ctx, session, saved)

    def close(self) -> None:
        """Drain the sticky backup queue (session_backup_async), make the deletes owed to nodes
        that answer again (core/owed.py), close every store's connections, and name the nodes
        still owed some."""
        if self._sticky is not None:
            self._sticky.close()  # drains the async backup queue first (it may owe deletes)
        self.settle_owed(closing=True)
        for store in self.stores.values():
            store.close()
        self.warn_owed()


def drive(flow: Generator[Op, Any, T], run_op: Callable[[Op], Any]) -> T:
    """Run a flow to its end: each yielded op goes to `run_op`, its result back into the flow."""
    try:
        op = next(flow)
        while True:
            op = flow.send(run_op(op))
    except StopIteration as stop:
        result: T = stop.value
        return result


def execute(op: Op, stores: Mapping[str, Store], health: Health, clock: Callable[[], float]) -> Any:
    """Carry out one op: a Sleep sleeps (and answers the clock); a store op runs on its node's
    store, records the node's health, and answers the result or the StoreError."""
    if isinstance(op, Sleep):
        time.sleep(op.seconds)
        return clock()
    method, args = call_args(op)
    try:
        result = getattr(stores[op.node], method)(*args)
    except StoreError as exc:
        result = exc
    return settle(op.node, result, health, clock)


def settle(node: str, result: Any, health: Health, clock: Callable[[], float]) -> Any:
    """Record a store operation's outcome in its node's health (an item refused for its size
    says nothing about the node); returns the result or the StoreError, for the flow."""
    if isinstance(result, StoreError):
        if not isinstance(result, ItemTooLarge):
            health.failed(node, clock())
    else:
        health.succeeded(node, clock())
    return result


def _decoders(codec: Codec, signed: bool) -> dict[int, Codec]:
    decoders: dict[int, Codec] = {JsonCodec.id: JsonCodec(), codec.id: codec}
    with contextlib.suppress(ConfigError):
        decoders[MsgpackCodec.id] = MsgpackCodec()
    if signed:
        decoders[PickleCodec.id] = PickleCodec()
    return decoders
