"""Load, save and delete as generators that yield store operations (see ops.py).

A driver (manager.py, sync and async) runs each yielded operation against the store of its node
and sends back the result or the StoreError. The flows hold every decision: which node, what to
write, what a failure means. They never retry endlessly: backup lookups are bounded by
`Context.backup_lookups`, relocations by the number of nodes.
"""

from __future__ import annotations

import contextlib
import random
import re
from collections import defaultdict
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pymsm.exceptions import CodecError, ItemTooLarge, RecordError, StoreError

from . import optimistic
from .codecs import Codec
from .ids import SessionId
from .nodes import Health, NodeList
from .ops import Add, Cas, Delete, Get, Gets, Op, Replace, Set
from .records import Record, RecordFormat, Validity
from .session import Session

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
        key = prefix + str(sid)
        return cls(key, "validity:" + key, "bak:" + key, "bak:validity:" + key)

    @property
    def lock(self) -> str:
        return "lock:" + self.record

    @property
    def tomb(self) -> str:
        """Written on delete, on every node that held a copy: no load may bring the id back."""
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

    @property
    def now_ms(self) -> int:
        return int(self.now * 1000)

    def keys(self, sid: SessionId) -> Keys:
        return Keys.of(self.prefix, sid)

    def node_of(self, sid: SessionId) -> str | None:
        if not self.nodes.has_ids:
            return self.nodes.nodes[0].name
        return sid.node if sid.node in self.nodes else None

    def up(self, node: str) -> bool:
        return self.health.is_up(node, self.now)

    def backup_of(self, primary: str) -> str | None:
        """The next node in the ring that is up, or None (one node, or no other is up)."""
        if not self.nodes.has_ids:
            return None
        return next((n for n in self.nodes.after(primary) if self.up(n)), None)

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


def _run(op: Op) -> Flow[Any]:
    """Yield one op; the result, or the StoreError it raised."""
    result = yield op
    return result


def _failed(result: Any) -> bool:
    return isinstance(result, StoreError)


# -- load -------------------------------------------------------------------------------------


@dataclass(slots=True)
class Loaded:
    """What a load found. status: found, missing, expired, corrupt, unavailable."""

    status: str
    sid: SessionId | None = None
    data: dict[str, Any] | None = None
    record: Record | None = None
    validity: Validity | None = None
    relocated: bool = False
    reason: str = ""
    token: Any = None  # the record's CAS token, when read with Gets from its own node


def load(ctx: Context, sid: SessionId) -> Flow[Loaded]:
    """Read record + validity from the node in the id (one multi-get); if the node is down or
    lost the keys, read the backup from the next nodes in the ring (at most `backup_lookups`),
    then refill the primary, or re-home the session on the backup's node (new id)."""
    primary = ctx.node_of(sid)
    if primary is None:
        return Loaded("missing", reason=f"node id {sid.node!r} is not configured")
    keys = ctx.keys(sid)
    errors: list[str] = []
    primary_reachable = False
    if ctx.up(primary):
        found, token = yield from _read(ctx, primary, (keys.record, keys.validity, keys.tomb))
        if _failed(found):
            errors.append(f"{primary}: {found}")
        elif keys.record in found:
            loaded = yield from _open(ctx, sid, found[keys.record], found.get(keys.validity), keys)
            loaded.token = token
            return loaded
        elif keys.tomb in found:
            return Loaded("missing", reason="invalidated")
        else:
            primary_reachable = True
    else:
        errors.append(f"{primary} is down")
    if not ctx.nodes.has_ids:
        return _nothing(errors)
    looked = 0
    for node in ctx.nodes.after(primary):
        if looked >= ctx.backup_lookups:
            break
        if not ctx.up(node):
            continue
        looked += 1
        found = yield from _run(Get(node, (keys.backup, keys.backup_validity, keys.tomb)))
        if _failed(found):
            errors.append(f"{node}: {found}")
            continue
        if keys.tomb in found:
            return Loaded("missing", reason="invalidated")
        if keys.backup not in found:
            continue
        loaded = yield from _open(
            ctx, sid, found[keys.backup], found.get(keys.backup_validity), None
        )
        if loaded.status != "found":
            return loaded
        if primary_reachable:
            yield from _refill(ctx, sid, primary, found[keys.backup], loaded)
            return loaded
        return (yield from _rehome(ctx, sid, node, loaded))
    return _nothing(errors)


def _read(ctx: Context, node: str, keys: tuple[str, ...]) -> Flow[tuple[Any, Any]]:
    """Multi-get `keys` -> (values or the StoreError, the first key's CAS token or None)."""
    if not ctx.cas:
        return (yield from _run(Get(node, keys))), None
    found = yield from _run(Gets(node, keys))
    if _failed(found):
        return found, None
    token = found[keys[0]][1] if keys[0] in found else None
    return {k: v for k, (v, _) in found.items()}, token


def _nothing(errors: list[str]) -> Loaded:
    if errors:
        return Loaded("unavailable", reason="; ".join(errors))
    return Loaded("missing", reason="not in the store")


def _open(
    ctx: Context, sid: SessionId, raw: bytes, raw_validity: bytes | None, keys: Keys | None
) -> Flow[Loaded]:
    try:
        record = ctx.format.decode(raw, require_signature=_needs_signature(ctx, raw))
        decoder = ctx.decoders.get(record.codec_id)
        if decoder is None:
            raise RecordError(f"record codec id {record.codec_id} is not enabled here")
        data = decoder.decode(record.payload)
    except RecordError as exc:
        return Loaded("corrupt", reason=str(exc))
    validity = _validity(raw_validity, record)
    expires = validity.expires_at()
    if expires is not None and ctx.now_ms >= expires:
        if keys is not None:
            yield from delete(ctx, sid)
        return Loaded("expired", reason="idle timeout passed")
    return Loaded("found", sid, data, record, validity)


def _needs_signature(ctx: Context, raw: bytes) -> bool:
    codec = ctx.decoders.get(raw[3]) if len(raw) > 3 else None
    return codec is not None and codec.needs_signature


def _validity(raw: bytes | None, record: Record) -> Validity:
    """The access times: from the validity record, or from the record when it was written later
    (a request that changed the session writes only the record; its write time is its access)."""
    validity = None
    if raw is not None:
        with contextlib.suppress(RecordError):
            validity = Validity.decode(raw)
    if validity is not None and validity.this_accessed > record.written:
        return validity
    previous = validity.this_accessed if validity is not None else record.written
    return Validity(record.max_inactive, previous, record.written)


def _refill(ctx: Context, sid: SessionId, primary: str, raw: bytes, loaded: Loaded) -> Flow[None]:
    """The primary answered but lost the keys (restarted): put the backup's copy back."""
    assert loaded.record is not None and loaded.validity is not None
    keys = ctx.keys(sid)
    ttl = ctx.record_ttl(loaded.record.max_inactive)
    yield Set(primary, keys.record, raw, ttl, noreply=True)
    vttl = ctx.validity_ttl(loaded.record.max_inactive)
    yield Set(primary, keys.validity, loaded.validity.encode(), vttl, noreply=True)
    ctx.events.append(f"refilled {sid} on {primary} from its backup")


def _rehome(ctx: Context, sid: SessionId, node: str, loaded: Loaded) -> Flow[Loaded]:
    """The primary is down: the session moves to the node that held its backup (new id)."""
    assert loaded.record is not None and loaded.validity is not None
    old = ctx.keys(sid)
    new_sid = sid.with_node(node)
    rec = loaded.record
    raw = ctx.format.encode(rec.codec_id, rec.created, ctx.now_ms, rec.max_inactive, rec.payload)
    stored = yield from _write_copies(ctx, new_sid, node, raw, rec.max_inactive)
    if not stored:
        # cannot write the new home: serve what we read, keep the old id (nothing is lost)
        return loaded
    yield Delete(node, old.backup)
    yield Delete(node, old.backup_validity)
    ctx.events.append(f"re-homed {sid} to {new_sid}: node {sid.node} is down")
    record = Record(rec.codec_id, rec.created, ctx.now_ms, rec.max_inactive, rec.payload)
    return Loaded("found", new_sid, loaded.data, record, loaded.validity, relocated=True)


def _write_copies(
    ctx: Context, sid: SessionId, node: str, raw: bytes, max_inactive: int
) -> Flow[bool]:
    """The record on `node` (waiting for the answer), then its copy on the backup node."""
    result = yield Set(node, ctx.keys(sid).record, raw, ctx.record_ttl(max_inactive))
    if _failed(result):
        return False
    yield from _write_backup(ctx, sid, node, raw, max_inactive)
    return True


def _write_backup(
    ctx: Context, sid: SessionId, node: str, raw: bytes, max_inactive: int
) -> Flow[None]:
    backup = ctx.backup_of(node)
    if backup is not None:
        ttl = ctx.record_ttl(max_inactive)
        yield Set(backup, ctx.keys(sid).backup, raw, ttl, noreply=True)


def _write_validity(
    ctx: Context, sid: SessionId, node: str, validity: Validity, max_inactive: int
) -> Flow[None]:
    """The access times, on `node` and the backup node (an unchanged request's only write)."""
    keys = ctx.keys(sid)
    vttl = ctx.validity_ttl(max_inactive)
    encoded = validity.encode()
    yield Set(node, keys.validity, encoded, vttl, noreply=True)
    backup = ctx.backup_of(node)
    if backup is not None:
        yield Set(backup, keys.backup_validity, encoded, vttl, noreply=True)


# -- save -------------------------------------------------------------------------------------


@dataclass(slots=True)
class Saved:
    """What a save did. status: stored, unchanged, skipped, gone, failed."""

    status: str
    reason: str = ""
    merged: bytes | None = None  # the record written after merging onto a fresher copy


def save(ctx: Context, session: Session) -> Flow[Saved]:
    """Write the session if it changed (record first, waiting for the answer), then validity and
    the backup copies without waiting. Unchanged sessions only get their validity written, and
    the record again once half its idle timeout has passed (that extends its store lifetime) or
    when its backup node came back since it was written (refill)."""
    rotated = bool(session.retired) and not session.is_new  # the current id is not stored yet
    for old in session.retired:
        yield from delete(ctx, old)
    session.retired.clear()
    if session.is_new and not session.modified:
        return Saved("skipped")
    try:
        payload, changed = _payload(ctx, session)
    except CodecError as exc:
        return Saved("failed", str(exc))
    sid = session.sid
    max_inactive = session.max_inactive_interval
    validity = Validity(max_inactive, _ms(session.last_accessed), _ms(session.this_accessed))
    primary = ctx.node_of(sid)
    record = session.record
    if (
        not changed
        and record is not None
        and primary is not None
        and ctx.up(primary)
        and not _needs_rewrite(ctx, record, primary)
    ):
        if ctx.now_ms - _ms(session.last_accessed) < ctx.access_resolution_ms(max_inactive):
            return Saved("unchanged")  # the stored access time is recent enough: no write
        yield from _write_validity(ctx, sid, primary, validity, max_inactive)
        return Saved("unchanged")
    created = _ms(session.created)
    raw = ctx.format.encode(ctx.codec.id, created, ctx.now_ms, max_inactive, payload)
    saved, node = yield from _store(ctx, session, raw, primary, max_inactive, rotated)
    if saved.status != "stored" or node is None:
        return saved
    if saved.merged is not None:
        raw, payload = saved.merged, ctx.format.decode(saved.merged).payload
    yield from _write_backup(
        ctx, session.sid, node, raw, max_inactive
    )  # no validity: see _validity
    session.record = Record(ctx.codec.id, created, ctx.now_ms, max_inactive, payload)
    session.is_new = False
    session.mark_saved()
    return saved


def _payload(ctx: Context, session: Session) -> tuple[bytes, bool]:
    record = session.record
    if record is not None and not session.modified and not session.mutable_read:
        return record.payload, False
    data = session.data
    if ctx.attribute_filter is not None:
        data = {k: v for k, v in data.items() if ctx.attribute_filter.fullmatch(k)}
    payload = ctx.codec.encode(data)
    changed = record is None or session.modified or payload != record.payload
    return payload, changed


def _needs_rewrite(ctx: Context, record: Record, primary: str) -> bool:
    """Half its idle time passed since the record was written (extend its lifetime), or a node
    that holds or should hold its backup failed or came back since (refill the backup)."""
    if record.max_inactive > 0 and ctx.now_ms - record.written >= record.max_inactive * 500:
        return True
    if not ctx.nodes.has_ids:
        return False
    written = record.written / 1000
    changed_at = ctx.health.changed_at
    return any(changed_at(n) > written for n in ctx.nodes.after(primary)[: ctx.backup_lookups])


def _store(
    ctx: Context,
    session: Session,
    raw: bytes,
    primary: str | None,
    max_inactive: int,
    rotated: bool,
) -> Flow[tuple[Saved, str | None]]:
    """Write the record on its node; if that node is down or fails, relocate to another.
    A new session or a fresh id (rotated) is added: its id must not be taken already."""
    tried: set[str] = set()
    node = primary if primary is not None and ctx.up(primary) else None
    for _ in range(len(ctx.nodes)):
        if node is None:
            node = ctx.choose_node(frozenset(tried))
            if node is None:
                break
            old = session.sid
            session.relocate(old.with_node(node) if ctx.nodes.has_ids else old)
            if not session.is_new:
                ctx.events.append(f"relocating {old} to {session.sid}: node {old.node} is down")
                yield from delete(ctx, old)  # no stale backup of the old id may be found later
        tried.add(node)
        key = ctx.keys(session.sid).record
        ttl = ctx.record_ttl(max_inactive)
        moved = node != primary
        op: Op
        if session.is_new or rotated:
            op = Add(node, key, raw, ttl)
        elif moved:
            op = Set(node, key, raw, ttl)
        elif ctx.cas and session.cas_token is not None:
            op = Cas(node, key, raw, ttl, session.cas_token)
        else:
            op = Replace(node, key, raw, ttl)
        result = yield op
        if isinstance(op, Cas) and result is not True and not _failed(result):
            return (yield from _conflict(ctx, session, op, result))
        if isinstance(result, ItemTooLarge):
            return Saved("failed", f"session {session.sid} is too large to store: {result}"), None
        if _failed(result):
            ctx.events.append(f"writing {session.sid} to {node} failed: {result}")
            node = None
            continue
        if result is False and isinstance(op, Replace):
            return Saved("gone", "deleted meanwhile (logout or expiry); not resurrected"), None
        if result is False:  # Add found the id taken: never share it, take another
            session.relocate(session.sid.rotated())
            node = None
            continue
        return Saved("stored"), node
    return Saved("failed", "no cache node could store the session"), None


def _conflict(
    ctx: Context, session: Session, op: Cas, result: Any
) -> Flow[tuple[Saved, str | None]]:
    """The cas was refused: the record is gone (never resurrected) or changed (merge)."""
    if result is None:
        return Saved("gone", "deleted meanwhile (logout or expiry); not resurrected"), None
    ctx.counts["cas_conflict"] += 1
    status, raw = yield from optimistic.resolve(
        ctx, session, op.node, op.key, op.ttl, _ms(session.created)
    )
    if status == "gone":
        return Saved("gone", "deleted meanwhile (logout or expiry); not resurrected"), None
    if status != "stored" or raw is None:
        return Saved("failed", f"{session.sid}: concurrent writes could not be merged"), None
    return Saved("stored", "merged", raw), op.node


def delete(ctx: Context, sid: SessionId) -> Flow[None]:
    """Delete every copy: the record (waiting, so the next request cannot read it), validity,
    and the backup keys on every node a load would look at.

    A tombstone goes first on each of those nodes: a load that finds the tombstone and no record
    stops there, so an in-flight request cannot refill or re-home the session from a backup
    copy (or from a backup written after this delete). It lives as long as a record could."""
    primary = ctx.node_of(sid)
    if primary is None:
        return
    keys = ctx.keys(sid)
    tomb_ttl = ctx.record_ttl(ctx.max_inactive)
    if ctx.up(primary):
        yield Set(primary, keys.tomb, b"1", tomb_ttl)
        yield Delete(primary, keys.record, noreply=False)
        yield Delete(primary, keys.validity)
    if not ctx.nodes.has_ids:
        return
    for node in ctx.nodes.after(primary)[: ctx.backup_lookups]:
        if ctx.up(node):
            yield Set(node, keys.tomb, b"1", tomb_ttl, noreply=True)
            yield Delete(node, keys.backup)
            yield Delete(node, keys.backup_validity)


def new_session(ctx: Context) -> Session:
    session = Session()
    _fill_new(ctx, session)
    return session


def _fill_new(ctx: Context, session: Session, status: str = "new") -> None:
    now = ctx.now_ms / 1000  # what a stored copy will say
    session._fill(
        ctx.new_sid(),
        {},
        is_new=True,
        created=now,
        last_accessed=now,
        this_accessed=now,
        max_inactive_interval=ctx.max_inactive,
        status=status,
    )


def fill(ctx: Context, session: Session, loaded: Loaded) -> None:
    """Fill a lazy session from what a load found, or as a new session."""
    if loaded.status != "found":
        _fill_new(ctx, session, loaded.status)
        return
    assert loaded.sid and loaded.record and loaded.validity and loaded.data is not None
    session._fill(
        loaded.sid,
        loaded.data,
        is_new=False,
        created=loaded.record.created / 1000,
        last_accessed=loaded.validity.this_accessed / 1000,
        this_accessed=ctx.now,
        max_inactive_interval=loaded.record.max_inactive,
        record=loaded.record,
        status="relocated" if loaded.relocated else "found",
    )
    session.cas_token = loaded.token


def _ms(seconds: float) -> int:
    return int(seconds * 1000)
