"""Load, save and delete as generators that yield store operations (see ops.py).

A driver (manager.py, sync and async) runs each yielded operation against the store of its node
and sends back the result or the StoreError. The flows hold every decision: which node, what to
write, what a failure means. They never retry endlessly: backup lookups are bounded by
`Context.backup_lookups`, relocations by the number of nodes.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from pymsm.exceptions import RecordError

from .context import TTL_SLACK, Context, Flow, Keys, T, _run
from .ids import SessionId
from .ops import Get, Gets, Set, _failed
from .owed import missed_by, owe
from .records import Record, Validity, before_move, moved_at
from .session import Session
from .writes import (
    Saved,
    _write_copies,
    delete,
    drop_backup,
    save,
    settled,
)

__all__ = [
    "TTL_SLACK",
    "Context",
    "Flow",
    "Keys",
    "Loaded",
    "Saved",
    "T",
    "delete",
    "fill",
    "load",
    "new_session",
    "save",
    "settled",
]


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
        # record + validity only: the tombstone matters only when a backup copy is about to be
        # used (below), so the common request reads two keys, not three
        read = (keys.record, keys.validity)
        found = yield from _run(Gets(primary, read) if ctx.cas else Get(primary, read))
        if _failed(found):
            errors.append(f"{primary}: {found}")
        elif keys.record in found:
            raw, raw_validity = found[keys.record], found.get(keys.validity)
            token = None
            if ctx.cas:  # Gets answers (value, CAS token) pairs; the token is the record's
                raw, token = raw
                raw_validity = raw_validity[0] if raw_validity is not None else None
            loaded = _open(ctx, sid, raw, raw_validity)
            if loaded.status == "expired":
                yield from delete(ctx, sid)
            loaded.token = token
            return loaded
        else:
            primary_reachable = True
    else:
        errors.append(f"{primary} is down")
    # every node a backup may be on, not just the first that has one: a node that was
    # unreachable for a while missed the writes (and the logout) made meanwhile, and comes
    # back holding an old copy; the newest copy wins, and a tombstone on any node ends it (a
    # move's tombstone: the copies written before the move)
    copies: list[tuple[str, bytes, Loaded]] = []
    left = 0  # when the session last moved away from this id, as far as these nodes know
    for node in ctx.window(primary):
        found = yield from _run(Get(node, (keys.backup, keys.backup_validity, keys.tomb)))
        if _failed(found):
            errors.append(f"{node}: {found}")
            continue
        if keys.tomb in found:
            at = moved_at(found[keys.tomb])
            if at is None:
                return Loaded("missing", reason="invalidated")
            left = max(left, at)
        if keys.backup in found:
            raw = found[keys.backup]
            copies.append((node, raw, _open(ctx, sid, raw, found.get(keys.backup_validity))))
    copies = [copy for copy in copies if not _before(copy[2], left)]
    if not copies:
        return _nothing(errors) if errors or not left else _moved_away()
    node, raw, loaded = _newest(copies)
    if loaded.status != "found":
        return loaded
    if primary_reachable:
        # the primary answered without the record: it restarted, or a logout deleted the
        # session, or it moved away; its tombstone tells, also when the backup nodes missed
        # the logout or the move (were down)
        tomb = yield from _run(Get(primary, (keys.tomb,)))
        if _failed(tomb):
            return _nothing([f"{primary}: {tomb}"])  # refill nothing we cannot check
        if keys.tomb in tomb:
            at = moved_at(tomb[keys.tomb])
            if at is None:
                return Loaded("missing", reason="invalidated")
            if _before(loaded, at):
                return _moved_away()
        yield from _refill(ctx, sid, primary, raw, loaded)
        return loaded
    return (yield from _rehome(ctx, sid, node, loaded, [n for n, _, _ in copies]))


def _before(loaded: Loaded, moved: int) -> bool:
    return loaded.record is not None and before_move(loaded.record.written, moved)


def _moved_away() -> Loaded:
    return Loaded("missing", reason="the session moved to another id")


def _newest(copies: list[tuple[str, bytes, Loaded]]) -> tuple[str, bytes, Loaded]:
    """The backup copy to use: the one written last of those that decode and have not expired
    (ring order breaks a tie); if none does, the first, whose status says why."""
    usable = [copy for copy in copies if copy[2].status == "found"]
    if not usable:
        return copies[0]
    return max(usable, key=lambda copy: copy[2].record.written if copy[2].record else 0)


def _nothing(errors: list[str]) -> Loaded:
    if errors:
        return Loaded("unavailable", reason="; ".join(errors))
    return Loaded("missing", reason="not in the store")


def _open(ctx: Context, sid: SessionId, raw: bytes, raw_validity: bytes | None) -> Loaded:
    """Decode a record and its validity: found, corrupt, or expired (the caller deletes an
    expired primary copy)."""
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


def _rehome(
    ctx: Context, sid: SessionId, node: str, loaded: Loaded, holders: list[str]
) -> Flow[Loaded]:
    """The primary is down: the session moves to the node that held its (newest) backup, under
    a new id; the old id's backup copies go from every node in `holders`."""
    assert loaded.record is not None and loaded.validity is not None
    new_sid = sid.with_node(node)
    rec = loaded.record
    raw = ctx.format.encode(rec.codec_id, rec.created, ctx.now_ms, rec.max_inactive, rec.payload)
    primary = ctx.node_of(sid)
    assert primary is not None  # (load returns earlier for an id naming no configured node)
    missed = missed_by(ctx, primary)
    stored = yield from _write_copies(ctx, new_sid, node, raw, rec.max_inactive)
    if not stored:
        # cannot write the new home: serve what we read, keep the old id (nothing is lost)
        return loaded
    for holder in holders:
        yield from drop_backup(ctx, holder, sid, moved=True)
    # the old id's copies on nodes that cannot be reached go once they are back (owed.py)
    owe(ctx, primary, sid, ended=False)
    for other in missed:
        owe(ctx, other, sid, ended=False, backup=True)
    ctx.events.append(f"re-homed {sid} to {new_sid}: node {sid.node} is down")
    record = Record(rec.codec_id, rec.created, ctx.now_ms, rec.max_inactive, rec.payload)
    return Loaded("found", new_sid, loaded.data, record, loaded.validity, relocated=True)


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
