"""Save and delete as generators that yield store operations (see flows.py for the drivers'
contract). Decisions only: which node, which conditional write, what a failure means."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pymsm.exceptions import CodecError, ItemTooLarge

from . import optimistic
from .context import Context, Flow, _ms
from .ids import SessionId
from .ops import Add, Cas, Delete, Op, Replace, Set, _failed
from .owed import missed_by, owe
from .records import TOMBSTONE, Record, Validity
from .session import Session


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
) -> Flow[str | None]:
    """The record's backup copy; the node that took it (None: none did)."""
    return (
        yield from _to_backup(ctx, node, ctx.keys(sid).backup, raw, ctx.record_ttl(max_inactive))
    )


def _to_backup(ctx: Context, node: str, key: str, value: bytes, ttl: int) -> Flow[str | None]:
    """Write `key` (noreply) on the first live node after `node`; the node that took it. A node
    that refuses it (down since this process last looked: not marked dead yet) passes it to the
    next live one, within the `backup_lookups` nodes a load searches; otherwise the session's
    only fresh copy would be its primary's until the next write, and the old copy on the
    refusing node would be what a later failover finds (flows.load prefers the newest copy, but
    only of those it finds)."""
    for backup in ctx.window(node):
        result = yield Set(backup, key, value, ttl, noreply=True)
        if not _failed(result):
            return backup
    return None


def _write_validity(
    ctx: Context, sid: SessionId, node: str, validity: Validity, max_inactive: int
) -> Flow[None]:
    """The access times, on `node` and the backup node (an unchanged request's only write)."""
    keys = ctx.keys(sid)
    vttl = ctx.validity_ttl(max_inactive)
    encoded = validity.encode()
    yield Set(node, keys.validity, encoded, vttl, noreply=True)
    yield from _to_backup(ctx, node, keys.backup_validity, encoded, vttl)


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
    quiet = settled(ctx, session)
    if quiet is not None:
        return quiet
    try:
        payload, changed = _payload(ctx, session)
    except CodecError as exc:
        return Saved("failed", str(exc))
    sid = session.sid
    max_inactive = session.max_inactive_interval
    primary = ctx.node_of(sid)
    record = session.record
    home = _quiet_home(ctx, sid, record) if not changed and record is not None else None
    if home is not None:
        if _access_fresh(ctx, session):
            return Saved("unchanged")  # the stored access time is recent enough: no write
        accessed = _ms(session.last_accessed), _ms(session.this_accessed)
        yield from _write_validity(ctx, sid, home, Validity(max_inactive, *accessed), max_inactive)
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


def settled(ctx: Context, session: Session) -> Saved | None:
    """What `save` answers when it has nothing to do, found without running it (most requests
    change nothing, and a flow costs a generator and a driver): a new session the request did not
    write to, or a stored one that did not change, whose record needs no rewrite and whose
    stored access time is recent enough. None when `save` may have work to do."""
    if session.retired:
        return None
    if session.is_new:
        return None if session.modified else Saved("skipped")
    record = session.record
    if record is None or session.modified or session.mutable_read:
        return None  # (a mutable read is settled by `save`, once it re-encoded the data)
    if _quiet_home(ctx, session.sid, record) is None:
        return None
    return Saved("unchanged") if _access_fresh(ctx, session) else None


def _quiet_home(ctx: Context, sid: SessionId, record: Record) -> str | None:
    """The node holding `sid`'s stored `record` when a save that changed nothing may leave that
    record as it is: configured, up, and no rewrite due (`_needs_rewrite`). None otherwise."""
    node = ctx.node_of(sid)
    if node is None or not ctx.up(node) or _needs_rewrite(ctx, record, node):
        return None
    return node


def _access_fresh(ctx: Context, session: Session) -> bool:
    """The stored access time is recent enough (`access_time_resolution`): no validity write."""
    max_inactive = session.max_inactive_interval
    return ctx.now_ms - _ms(session.last_accessed) < ctx.access_resolution_ms(max_inactive)


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
    that holds or should hold its backup failed, came back, or ran out its dead time since
    (refill the backup; a record written while that node was dead has no copy there, and the
    rewrite's backup write is what probes it)."""
    if record.max_inactive > 0 and ctx.now_ms - record.written >= record.max_inactive * 500:
        return True
    if not ctx.nodes.has_ids:
        return False
    written = record.written / 1000
    if ctx.health.last_change <= written:
        return False  # no node failed or came back since: the common case, no per-node look
    changed_at, now = ctx.health.changed_at, ctx.now
    window = ctx.nodes.after(primary)[: ctx.backup_lookups]
    return any(changed_at(n, now) > written for n in window)


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
                # no stale backup of the old id may be found later
                yield from delete(ctx, old, moved=True)
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


def delete(ctx: Context, sid: SessionId, moved: bool = False, sticky: bool = False) -> Flow[None]:
    """Delete every copy of `sid`: on its node the record (`drop_record`), and the backup
    copies on every node a load would look at (`drop_backups`).

    A tombstone goes first on each of those nodes: a load that finds no record checks them
    before it uses a backup copy (flows.load), so an in-flight request cannot refill or
    re-home the session from a backup copy (or from a backup written after this delete). It
    lives as long as a record could. For an id the session only `moved` away from
    (relocation, re-home; in sticky mode also takeover and failover-node move) it holds the
    time of the move instead of ending the id (`Context.tombstone`): ids keep their base when
    they move, so the same id can come back (`S-n1` relocated to `S-n2`, then back to `S-n1`
    when n2 fails in turn; app1 takes over `S-n1.app2` as `S-n2.app1` and app2 takes it back),
    and only the copies written before the move are its past.

    A node that cannot be reached is owed the delete (owed.py): made once it is back, in full
    for an id that ended, and only for a copy older than now if the session `moved` (the id
    keeps its base, so the session may come back to it)."""
    primary = ctx.node_of(sid)
    if primary is None:
        return
    gone = (yield from drop_record(ctx, primary, sid, moved, sticky)) if ctx.up(primary) else None
    if gone is None or _failed(gone):
        owe(ctx, primary, sid, ended=not moved)
    yield from drop_backups(ctx, primary, sid, moved)


def drop_record(ctx: Context, node: str, sid: SessionId, moved: bool, sticky: bool) -> Flow[Any]:
    """On `node`: the tombstone (of a move if the session only `moved`), the record, and its
    validity; in sticky mode the validity becomes the tombstone validity instead, from which a
    process holding the session in memory learns that the id is over. Only the record's
    delete is waited for, so the next request cannot read it; its answer is returned. The
    tombstone needs no answer: it goes first on the same connection, so the node has it
    before it deletes the record."""
    keys = ctx.keys(sid)
    yield ctx.tombstone(node, sid, ctx.now_ms if moved else None)
    gone = yield Delete(node, keys.record, noreply=False)
    if sticky:
        ttl = ctx.validity_ttl(ctx.max_inactive)
        yield Set(node, keys.validity, TOMBSTONE.encode(), ttl, noreply=True)
    else:
        yield Delete(node, keys.validity)
    return gone


def drop_backups(ctx: Context, primary: str, sid: SessionId, moved: bool = False) -> Flow[None]:
    """Delete the backup keys on every node a load would search for a copy (also when the
    primary is down: those nodes must not hand the session back once it is), each after a
    tombstone (see `delete`).
    A node that cannot be reached may keep an old copy: it is owed the delete (owed.py; for an
    id the session `moved` from, of a copy older than now)."""
    missed = missed_by(ctx, primary)  # (before the deletes: a node they find down owes itself)
    for node in ctx.window(primary):
        yield from drop_backup(ctx, node, sid, moved)
    for node in missed:
        owe(ctx, node, sid, ended=not moved, backup=True)


def drop_backup(ctx: Context, node: str, sid: SessionId, moved: bool) -> Flow[None]:
    """Delete `sid`'s backup copy on `node`, after its tombstone (see `delete`); owe it if
    refused."""
    keys = ctx.keys(sid)
    yield ctx.tombstone(node, sid, ctx.now_ms if moved else None)
    gone = yield Delete(node, keys.backup)
    yield Delete(node, keys.backup_validity)
    if _failed(gone):
        owe(ctx, node, sid, ended=not moved, backup=True)
