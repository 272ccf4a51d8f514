"""Deletes a node missed, made once it is back.

When a session moves off a node that cannot be reached (a re-home or relocation to another
node, a sticky takeover), or ends (logout, rotation, expiry) while its node cannot be reached,
the record under the old id stays on that node. If the node comes back with its data instead of
empty (a network partition, a paused process), a request carrying the old id would read it: the
session as it was before it moved, also after a logout (invariant 6). A normal request reads
only the id's own node (one round trip), so nothing else can tell.

So the process that could not make the delete remembers it (`Owed`, one per manager, in memory)
and makes it once the node is healthy again (`settle`, run by the managers when a request ends):

- an id that **ended** is deleted whatever the node holds under it, and gets its logout
  tombstone and the sticky tombstone validity: an ended id never comes back, and a write under
  it made since (by a process on the other side of a partition) is a write to a logged-out
  session;
- an id the session **moved** from gets the move's tombstone the node missed (unless it holds
  a logout's or a later move's), and is deleted only if the copy there was written before the
  move (`Debt.at`): ids keep their base when they move, so the session can come back to the
  same id (`S-n1` -> `S-n2` -> `S-n1` when n2 dies in turn), and that copy is the live one.
  The delete is conditional on the bytes read (`DeleteIf`), so a write in between survives.

What this does not cover (docs/design.md, "A partition and the ids it leaves behind"): the debts
live in the process, so a restart or a deploy loses them; each process settles only its own; the
copy's age is judged by the clock of the host that wrote it.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .ids import SessionId
from .nodes import Health
from .ops import Delete, DeleteIf, Get, Set, _failed
from .records import TOMBSTONE, before_move, moved_at, written_at

if TYPE_CHECKING:  # context.py holds an Owed: it imports this module
    from .context import Context, Flow

OWED_LIMIT = 10_000  # debts kept per node; past it the oldest are dropped and counted
SETTLE_BATCH = 16  # debts settled per request, so no one request pays for a whole outage


@dataclass(frozen=True, slots=True)
class Debt:
    """A delete of `sid`'s copy that its node missed, made at `at` (ms): the record and its
    validity, or with `backup` the backup copy and its validity. `ended`: the id is over
    (delete whatever is there); else the session moved away from it (delete only a copy
    written before `at`)."""

    sid: SessionId
    at: int
    ended: bool
    backup: bool = False

    @property
    def name(self) -> str:
        return ("bak:" if self.backup else "") + str(self.sid)


class Owed:
    """The debts of one process, by node, oldest first. Thread-safe under the GIL: each step is
    one dict operation, and a debt two threads settle at once is settled twice, harmlessly."""

    def __init__(self, limit: int = OWED_LIMIT) -> None:
        self.limit = limit
        self._by_node: dict[str, OrderedDict[str, Debt]] = {}

    # every walk over the nodes copies the dict first (one step, under the GIL): another thread
    # may add a node meanwhile, and iterating a dict that grows raises
    def __bool__(self) -> bool:
        return any(list(self._by_node.values()))

    def __len__(self) -> int:
        return sum(len(debts) for debts in list(self._by_node.values()))

    def add(self, node: str, debt: Debt) -> int:
        """Owe `debt` on `node`; answers how many older debts the limit pushed out."""
        debts = self._by_node.setdefault(node, OrderedDict())
        old = debts.pop(debt.name, None)
        if old is not None and old.ended and not debt.ended:
            debt = old  # an ended id stays ended
        debts[debt.name] = debt
        dropped = 0
        while len(debts) > self.limit:
            debts.popitem(last=False)
            dropped += 1
        return dropped

    def due(self, health: Health) -> str | None:
        """A node that is owed deletes and healthy again (an operation on it succeeded since it
        failed): its debts can be settled now. None otherwise (the common case: nothing owed)."""
        for node, debts in list(self._by_node.items()):
            if debts and health.healthy(node):
                return node
        return None

    def take(self, node: str, count: int = SETTLE_BATCH) -> list[Debt]:
        """Up to `count` of `node`'s debts, oldest first, removed (give back what failed)."""
        debts = self._by_node.get(node)
        taken: list[Debt] = []
        while debts and len(taken) < count:
            try:
                taken.append(debts.popitem(last=False)[1])
            except KeyError:  # another thread took the last one
                break
        return taken

    def give_back(self, node: str, debts: list[Debt]) -> None:
        for debt in debts:
            self.add(node, debt)  # (a limit reached meanwhile drops the oldest, as in `owe`)

    def nodes(self) -> list[str]:
        """The nodes owed at least one delete."""
        return [node for node, debts in list(self._by_node.items()) if debts]

    def of(self, node: str) -> list[Debt]:
        """`node`'s debts, oldest first (for tests, and for a look from a debugger)."""
        return list(self._by_node.get(node, {}).values())


def owe(ctx: Context, node: str, sid: SessionId, ended: bool, backup: bool = False) -> None:
    """Note that `node` missed the delete of `sid`'s record (or `backup` copy) made now."""
    dropped = ctx.owed.add(node, Debt(sid, ctx.now_ms, ended, backup))
    ctx.counts["owed_added"] += 1
    if dropped:  # their deletes will never be made
        ctx.counts["owed_dropped"] += dropped
        ctx.events.append(
            f"{node} is owed more than {ctx.owed.limit} deletes: the oldest are forgotten"
        )


def settle(ctx: Context, node: str, debts: list[Debt]) -> Flow[list[Debt]]:
    """Make the deletes `node` missed; answers the debts it could not settle (the node failed
    again), which the caller gives back."""
    for index, debt in enumerate(debts):
        done = yield from _settle_one(ctx, node, debt)
        if not done:
            return debts[index:]
        ctx.counts["owed_settled"] += 1
    return []


def _settle_one(ctx: Context, node: str, debt: Debt) -> Flow[bool]:
    keys = ctx.keys(debt.sid)
    key = keys.backup if debt.backup else keys.record
    if debt.ended:
        yield ctx.tombstone(node, debt.sid)
        gone = yield Delete(node, key, noreply=False)
        if _failed(gone):
            return False
    else:
        found = yield Get(node, (key, keys.tomb))
        if _failed(found):
            return False
        if _missed_move(found.get(keys.tomb), debt.at):
            # the move's tombstone, which the node missed too: a load that finds an older copy
            # elsewhere, and a process holding one in memory, learn from it that the session
            # moved (flows.load, sticky._backup_stamp)
            yield ctx.tombstone(node, debt.sid, debt.at)
        raw = found.get(key)
        if raw is None:
            return True  # the node came back empty, or another process deleted it
        written = written_at(raw)
        if written is None or not before_move(written, debt.at):
            return True  # the session came back to this id since: that copy is the live one
        gone = yield DeleteIf(node, key, raw)
        if _failed(gone):
            return False
        if not gone:
            return True  # written again since it was read: the live session
    ctx.events.append(f"deleted {debt.name} on {node}: missed while the node was unreachable")
    if debt.backup:
        yield Delete(node, keys.backup_validity)
    else:
        # a process holding the session in memory (sticky mode) learns from this that the id
        # is over; a write under the id, when the session comes back to it, replaces it
        ttl = ctx.validity_ttl(ctx.max_inactive)
        yield Set(node, keys.validity, TOMBSTONE.encode(), ttl, noreply=True)
    return True


def _missed_move(tomb: bytes | None, at: int) -> bool:
    """Does the node lack the tombstone of a move made at `at`? Not if it holds a logout's, or
    a later move's (the session came back to the id and moved again)."""
    if tomb is None:
        return True
    prior = moved_at(tomb)
    return prior is not None and prior < at


def missed_by(ctx: Context, primary: str) -> list[str]:
    """The nodes that may hold an old backup copy of `primary`'s sessions but cannot be reached
    now: those ahead of the last node of `Context.window` in ring order (a copy goes to the
    first live node, so they held copies before they went down)."""
    missed: list[str] = []
    if not ctx.nodes.has_ids:
        return missed
    live = 0
    for node in ctx.nodes.after(primary):
        if live >= ctx.backup_lookups:
            break
        if ctx.up(node):
            live += 1
        else:
            missed.append(node)
    return missed


__all__ = ["OWED_LIMIT", "SETTLE_BATCH", "Debt", "Owed", "missed_by", "owe", "settle"]
