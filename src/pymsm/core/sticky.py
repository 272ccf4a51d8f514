"""Sticky mode: the app process keeps sessions in memory, the store is the backup.

Decisions only (generators yielding store operations, as in flows.py); the manager keeps the
`Entry` objects in a bounded LRU cache and runs these flows.

Load (`load`):
- the id names another route: take the session over (read it from the store, new route in the
  id, forced write under the new id, old keys deleted after that write);
- a local copy exists: read the 20-byte validity from the session's node and compare its
  `this_accessed` stamp with the one this process last wrote or read. Equal: the local copy is
  current. Greater: another process wrote since: reload from the store. Smaller or missing: the
  store is behind this process (a node restarted, or an async write was dropped): serve the local
  copy and force a write. A tombstone (see `TOMBSTONE`) means the session was invalidated
  elsewhere: never serve it again;
- no local copy: the non-sticky load (flows.load).
A session whose id names one of this app's failover nodes moves to a live primary node.

Save (`save`): write the record only when the session changed, a write is forced (new home,
takeover, the store lost it), or half the idle timeout passed since the last write (that extends
its store lifetime); always write the validity (extends it too). A dead node relocates the
session (new node id); when no node takes the write the session stays in memory under its id and
is written once a node is back. With `later` (session_backup_async) the deletes of the ids the save
ends or moves away from are left to the background writer as flows of their own (`Later`).

Stamps: every validity this process writes has `this_accessed` greater than any stamp it saw
for that session, so two writers never leave the same stamp and "equal" proves "unchanged".
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Any

from pymsm.exceptions import CodecError, ItemTooLarge, RecordError

from .context import Context, Flow, _ms
from .flows import Loaded
from .flows import load as store_load
from .ids import SessionId
from .ops import Add, Get, Op, Replace, Set, _failed
from .records import TOMBSTONE, Record, Validity, before_move, moved_at
from .session import Session
from .writes import Saved, _payload, _quiet_home, _write_backup, delete

MEMORY_PER_PAYLOAD_BYTE = 7  # see Entry.size
ENTRY_OVERHEAD = 550


@dataclass(slots=True)
class Entry:
    """A session as this process holds it. `record` is the last encoding (stored unless
    `force`); `stamp` the validity's this_accessed (ms) last written or read for it.

    Treated as immutable (changes make a new Entry with `dataclasses.replace`) except for
    `last_accessed`, which an unchanged request moves forward in place: the cached entry then
    stays where it is instead of being rebuilt and re-cached on every read."""

    sid: SessionId
    data: dict[str, Any]
    record: Record
    last_accessed: float  # s: when the latest request used it
    stamp: int
    force: bool = False  # the store may not hold this copy: the next save writes the record
    replaces: SessionId | None = None  # old id (takeover, move): deleted once this one is stored

    @property
    def size(self) -> int:
        """What the entry takes in memory, estimated for `sticky_cache_bytes`. Decoded
        attributes take several times their encoding (Python objects): measured (tenth session,
        tests/core/test_lru.py), an entry holding a session of dicts, lists, numbers and short
        strings takes about 7 bytes per byte of JSON payload plus 550 (0.5 and 8.5 KB
        payloads); one long string about 2.7 times less. Counting the payload alone, as before,
        let a 64 MiB cache take some 400 MiB."""
        return MEMORY_PER_PAYLOAD_BYTE * len(self.record.payload) + ENTRY_OVERHEAD

    def expired(self, now_ms: int) -> bool:
        mi = self.record.max_inactive
        return mi > 0 and now_ms >= _ms(self.last_accessed) + mi * 1000


@dataclass(slots=True)
class Found:
    """What a sticky load found. status: local, found, relocated, taken_over, missing, expired,
    invalidated, corrupt, unavailable. `entry` is set when a session is served."""

    status: str
    entry: Entry | None = None
    reason: str = ""


# -- load -------------------------------------------------------------------------------------


def load(ctx: Context, sid: SessionId, entry: Entry | None) -> Flow[Found]:
    if ctx.route is not None and sid.route != ctx.route:
        return (yield from _take_over(ctx, sid))
    if entry is not None:
        return (yield from _check_local(ctx, sid, entry))
    return (yield from _from_store(ctx, sid))


def _from_store(ctx: Context, sid: SessionId) -> Flow[Found]:
    loaded = yield from store_load(ctx, sid)
    if loaded.status != "found":
        return Found(loaded.status, None, loaded.reason)
    status = "relocated" if loaded.relocated else "found"
    return Found(status, _prefer_primary(ctx, _entry_of(loaded)))


def _take_over(ctx: Context, sid: SessionId) -> Flow[Found]:
    """Another app node's session: ours now, under our route (written by the next save)."""
    found = yield from _from_store(ctx, sid)
    if found.entry is None:
        return found
    entry = found.entry
    new = entry.sid.with_route(ctx.route)
    ctx.events.append(f"taking over {sid} as {new}")
    entry = dataclasses.replace(entry, sid=new, force=True, replaces=entry.replaces or entry.sid)
    return Found("taken_over", entry)


def _check_local(ctx: Context, sid: SessionId, entry: Entry) -> Flow[Found]:
    node = ctx.node_of(sid)
    if node is None:
        return Found("missing", None, f"node id {sid.node!r} is not configured")
    validity: Validity | None = None
    reachable = False
    if ctx.up(node):
        key = ctx.keys(sid).validity
        found = yield Get(node, (key,))
        reachable = not _failed(found)
        if reachable and key in found:
            try:
                validity = Validity.decode(found[key])
            except RecordError:
                validity = None
    if not reachable or validity is None:
        # the home node is down, or answered without the validity (it restarted empty):
        # another process may have written or ended the session since this one cached it,
        # and only the backup copies (written with every record) can tell
        seen = yield from _backup_stamp(ctx, sid, entry.stamp)
        if seen == "ended":
            return Found("invalidated", None, "deleted by another process (logout)")
        if seen == "moved":
            return Found("missing", None, "moved to another id by another process")
        if isinstance(seen, int) and seen > entry.stamp:
            return (yield from _from_store(ctx, sid))  # newer elsewhere: the backup's copy
    if validity == TOMBSTONE:
        return Found("invalidated", None, "deleted by another process (logout)")
    if validity is not None and validity.this_accessed > entry.stamp:
        return (yield from _from_store(ctx, sid))  # another process wrote since: reload
    if entry.expired(ctx.now_ms):
        yield from delete(ctx, sid, sticky=True)
        return Found("expired", None, "idle timeout passed")
    if validity is None or validity.this_accessed < entry.stamp:
        # node down or restarted, or an async write was dropped: memory holds the truth
        entry = dataclasses.replace(entry, force=True)
    return Found("local", _prefer_primary(ctx, entry))


def _backup_stamp(ctx: Context, sid: SessionId, mine: int) -> Flow[int | str | None]:
    """The newest stamp of `sid`'s backup copies on the nodes a load searches; "ended" if one
    of them holds its logout tombstone; "moved" if one holds the tombstone of a move made
    since `mine` (the stamp of the local copy: another process moved the session away from
    this id) and no copy is newer than ours (a newer one: the session came back to the id
    since, and the caller reloads it); None if none answers with any of these."""
    node = ctx.node_of(sid)
    if node is None:
        return None
    keys = ctx.keys(sid)
    newest: int | None = None
    left = 0  # the latest move away from the id these nodes know of
    for other in ctx.window(node):
        found = yield Get(other, (keys.backup_validity, keys.tomb))
        if _failed(found):
            continue
        if keys.tomb in found:
            at = moved_at(found[keys.tomb])
            if at is None:
                return "ended"
            left = max(left, at)
        with contextlib.suppress(RecordError):
            if keys.backup_validity in found:
                stamp = Validity.decode(found[keys.backup_validity]).this_accessed
                newest = stamp if newest is None else max(newest, stamp)
    if before_move(mine, left) and (newest is None or newest <= mine):
        return "moved"
    return newest


def _prefer_primary(ctx: Context, entry: Entry) -> Entry:
    """On one of this app's failover nodes while a primary is up: move to a primary."""
    if entry.sid.node not in ctx.nodes.failover:
        return entry
    primary = ctx.choose_node()
    if primary is None or primary in ctx.nodes.failover:
        return entry
    moved = entry.sid.with_node(primary)
    ctx.events.append(f"moving {entry.sid} to {moved}: {entry.sid.node} is a failover node here")
    return dataclasses.replace(entry, sid=moved, force=True, replaces=entry.replaces or entry.sid)


def _entry_of(loaded: Loaded) -> Entry:
    assert loaded.sid and loaded.record and loaded.validity and loaded.data is not None
    return Entry(
        loaded.sid,
        loaded.data,
        loaded.record,
        loaded.validity.this_accessed / 1000,
        loaded.validity.this_accessed,
        force=loaded.relocated,
    )


def fill(ctx: Context, session: Session, entry: Entry, status: str) -> None:
    """Fill a lazy session from an entry. The session gets its own top-level dict, so a request
    that fails half-way leaves the cached copy as it was."""
    session._fill(
        entry.sid,
        dict(entry.data),
        is_new=False,
        created=entry.record.created / 1000,
        last_accessed=entry.last_accessed,
        this_accessed=ctx.now,
        max_inactive_interval=entry.record.max_inactive,
        record=entry.record,
        status=status,
    )
    session.replaces = entry.replaces


# -- save -------------------------------------------------------------------------------------


@dataclass(slots=True)
class Later:
    """The deletes a save leaves to the background writer (session_backup_async), run there as
    flows of their own on real answers (`flows`): a node that cannot be reached is owed its
    delete (owed.py), and a failed delete on one node does not stop the tombstones and deletes
    on the others, as with synchronous writes. (Run inside a save whose writes are answered
    "done" in advance, they could not decide: a logout whose node failed after the load left
    the backup copy live, and the logged-out session was served again at once.)

    `ended`: ids a logout or login retired, deleted whatever happens to the save's writes.
    `moved`: ids the session moved away from (takeover, relocation), deleted only once the
    session is stored under its new id (its record and validity on its node; a backup copy
    that fails does not count, as with synchronous writes): until then the old id's copies are
    the only stored ones."""

    ended: list[SessionId] = dataclasses.field(default_factory=list)
    moved: list[SessionId] = dataclasses.field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.ended or self.moved)

    def flows(self, ctx: Context, stored: bool) -> list[Flow[None]]:
        """The deletes to make once the save's writes ran; `stored`: the session is stored
        under its new id (its writes on its node succeeded)."""
        todo = [delete(ctx, sid, sticky=True) for sid in self.ended]
        if stored:
            todo += [delete(ctx, sid, moved=True, sticky=True) for sid in self.moved]
        elif self.moved:
            ctx.events.append(
                f"the writes under a new id failed: {', '.join(map(str, self.moved))} keeps its"
                " copies (the only stored ones) until they expire"
            )
        return todo


def _drop(ctx: Context, sid: SessionId, moved: bool, later: Later | None) -> Flow[None]:
    """Delete `sid` (writes.delete, sticky) now, or leave it to `later`."""
    if later is None:
        yield from delete(ctx, sid, moved=moved, sticky=True)
    else:
        (later.moved if moved else later.ended).append(sid)


@dataclass(slots=True)
class Stored:
    """A save's outcome and the entry to cache (None: drop the cached copy).

    status: stored, unchanged, skipped, kept (no node took the write: memory only, retried on
    the next save), gone (deleted meanwhile), failed."""

    saved: Saved
    entry: Entry | None


def save(
    ctx: Context, session: Session, entry: Entry | None, later: Later | None = None
) -> Flow[Stored]:
    """Write what the request changed (see the module docstring). `entry` is the cached copy
    under the session's id, if any; without one the save writes the record. With `later`, the
    deletes of ids the save ends or moves away from are left there (see Later)."""
    for old in session.retired:
        yield from _drop(ctx, old, False, later)
    session.retired.clear()
    if session.is_new and not session.modified:
        return Stored(Saved("skipped"), None)
    quiet = settled(ctx, session, entry)
    if quiet is not None:
        return quiet
    try:
        payload, changed = _payload(ctx, session)
    except CodecError as exc:
        return Stored(Saved("failed", str(exc)), None)
    sid, max_inactive = session.sid, session.max_inactive_interval
    stamp = max(ctx.now_ms, entry.stamp + 1) if entry is not None else ctx.now_ms
    node = ctx.node_of(sid)
    record = session.record
    force = entry is None or entry.force or (entry.sid is not sid and entry.sid != sid)
    home = _quiet_home(ctx, sid, record) if not (changed or force) and record is not None else None
    if home is not None:
        assert entry is not None and record is not None
        if not _validity_due(ctx, entry.stamp, max_inactive):  # (a mutable read, unchanged)
            return _touched(entry, session)
        key = ctx.keys(sid).validity
        validity = Validity(max_inactive, _ms(session.last_accessed), stamp)
        yield Set(home, key, validity.encode(), ctx.validity_ttl(max_inactive), noreply=True)
        return Stored(Saved("unchanged"), _next(entry, session, record, stamp))
    created = _ms(session.created)
    raw = ctx.format.encode(ctx.codec.id, created, ctx.now_ms, max_inactive, payload)
    new_record = Record(ctx.codec.id, created, ctx.now_ms, max_inactive, payload)
    replaces = session.replaces  # (cleared if a rotation or logout retired it)
    was_new = session.is_new
    status, home, reason = yield from _write(ctx, session, raw, node, force)
    if status == "stored" and home is not None:
        keys = ctx.keys(session.sid)
        encoded = Validity(max_inactive, _ms(session.last_accessed), stamp).encode()
        yield Set(home, keys.validity, encoded, _vttl(ctx, session))
        # the copy on the next node, as in non-sticky mode: memory is no second copy for a
        # session this process evicted, lost in a restart, or never held (another process's);
        # its validity goes with it, for the stamp `_backup_stamp` compares
        backup = yield from _write_backup(ctx, session.sid, home, raw, max_inactive)
        if backup is not None:
            yield Set(backup, keys.backup_validity, encoded, _vttl(ctx, session), noreply=True)
        for stale in (replaces, None if was_new else sid):
            if stale is not None and stale != session.sid:
                yield from _drop(ctx, stale, True, later)
        kept = Entry(session.sid, session.data, new_record, session.this_accessed, stamp)
    elif status == "kept":
        ctx.events.append(f"no cache node took {sid}: kept in memory, written when one is back")
        kept = Entry(sid, session.data, new_record, session.this_accessed, stamp, True, replaces)
    else:
        return Stored(Saved(status, reason), None)
    session.record = new_record
    session.is_new = False
    session.mark_saved()
    return Stored(Saved(status), kept)


def settled(ctx: Context, session: Session, entry: Entry | None) -> Stored | None:
    """What `save` answers when it writes nothing, found without running it (most requests
    change nothing, and a flow costs a generator and a driver): a stored session the request
    did not change, cached here as stored (`entry`, not forced, same id), whose record needs
    no rewrite and whose validity is recent enough. Its entry then moves its last access time
    forward in place (see Entry). None when `save` may have work to do."""
    if session.retired or session.is_new or session.modified or session.mutable_read:
        return None
    record = session.record
    if entry is None or entry.force or record is None or entry.sid != session.sid:
        return None
    if _quiet_home(ctx, entry.sid, record) is None:
        return None
    if _validity_due(ctx, entry.stamp, session.max_inactive_interval):
        return None
    return _touched(entry, session)


def _touched(entry: Entry, session: Session) -> Stored:
    """An unchanged save that writes nothing: the cached entry moves its last access time
    forward in place (see Entry: the one in-place change)."""
    entry.last_accessed = session.this_accessed
    return Stored(Saved("unchanged"), entry)


def _validity_due(ctx: Context, stamp: int, max_inactive: int) -> bool:
    """Must an unchanged request rewrite the validity? Only once the stored one is older than
    `access_time_resolution` (as in non-sticky mode; by default 1% of the idle timeout, at most
    60 s): the stored key then always outlives the session, and another node judges it idle at
    most that much early."""
    if max_inactive <= 0:
        return False  # never expires: the stored validity has no lifetime to extend
    return ctx.now_ms - stamp >= ctx.access_resolution_ms(max_inactive)


def _next(entry: Entry, session: Session, record: Record, stamp: int) -> Entry:
    return Entry(session.sid, session.data, record, session.this_accessed, stamp)


def _vttl(ctx: Context, session: Session) -> int:
    return ctx.validity_ttl(session.max_inactive_interval)


def _write(
    ctx: Context, session: Session, raw: bytes, node: str | None, force: bool
) -> Flow[tuple[str, str | None, str]]:
    """Write the record at home, or on another live node (primary first) when home fails.
    Returns (status, node written, reason); status is stored, gone, failed, or kept when no
    node took the write. The session's id changes only when a write succeeded elsewhere."""
    sid = session.sid
    tried: set[str] = set()
    candidate = node if node is not None and ctx.up(node) else None
    ttl = ctx.record_ttl(session.max_inactive_interval)
    for _ in range(len(ctx.nodes)):
        if candidate is None:
            candidate = ctx.choose_node(frozenset(tried))
            if candidate is None:
                break
        tried.add(candidate)
        target = sid.with_node(candidate) if ctx.nodes.has_ids else sid
        key = ctx.keys(target).record
        op: Op
        if session.is_new:
            op = Add(candidate, key, raw, ttl)
        elif force or target != sid:
            op = Set(candidate, key, raw, ttl)
        else:
            op = Replace(candidate, key, raw, ttl)
        result = yield op
        if isinstance(result, ItemTooLarge):
            return "failed", None, f"session {sid} is too large to store: {result}"
        if _failed(result):
            ctx.events.append(f"writing {target} to {candidate} failed: {result}")
            candidate = None
            continue
        if result is False and isinstance(op, Replace):
            return "gone", None, "deleted meanwhile (logout or expiry); not resurrected"
        if result is False:  # Add found the id taken: never share it, take another
            sid = sid.rotated()
            session.relocate(sid)
            candidate = None
            continue
        if target != session.sid:
            if not session.is_new:
                ctx.events.append(f"relocated {session.sid} to {target}")
            session.relocate(target)
        return "stored", candidate, ""
    return "kept", None, "no cache node could store the session"
