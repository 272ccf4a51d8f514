"""core/owed.py: the deletes a node missed, kept per process until the node is back."""

from __future__ import annotations

from pymsm import SessionManager
from pymsm.core.ids import SessionId
from pymsm.core.nodes import Health
from pymsm.core.owed import Debt, Owed, _missed_move, owe
from pymsm.core.records import (
    ENDED,
    TOMBSTONE,
    RecordFormat,
    Validity,
    moved_at,
    moved_mark,
    written_at,
)

SID = SessionId.parse("0123456789ABCDEF0123456789ABCDEF-n1")
OTHER = SessionId.parse("FEDCBA9876543210FEDCBA9876543210-n1")


def test_an_ended_id_stays_ended_when_a_move_is_owed_for_it_later() -> None:
    owed = Owed()
    owed.add("n1", Debt(SID, 100, ended=True))
    owed.add("n1", Debt(SID, 200, ended=False))
    assert owed.of("n1") == [Debt(SID, 100, ended=True)]


def test_the_record_and_the_backup_copy_of_one_id_are_two_debts() -> None:
    owed = Owed()
    owed.add("n1", Debt(SID, 100, ended=False))
    owed.add("n1", Debt(SID, 100, ended=False, backup=True))
    assert len(owed) == 2 and {d.name for d in owed.of("n1")} == {str(SID), f"bak:{SID}"}


def test_the_limit_drops_the_oldest_and_says_how_many() -> None:
    owed = Owed(limit=1)
    assert owed.add("n1", Debt(SID, 100, ended=True)) == 0
    assert owed.add("n1", Debt(OTHER, 200, ended=True)) == 1
    assert owed.of("n1") == [Debt(OTHER, 200, ended=True)]


def test_a_node_is_due_only_once_an_operation_on_it_succeeded_again() -> None:
    owed, health = Owed(), Health(dead_timeout=10)
    assert not owed and owed.due(health) is None
    health.failed("n1", 0)
    owed.add("n1", Debt(SID, 0, ended=True))
    assert owed and owed.due(health) is None  # failed once: not back yet
    health.failed("n1", 1)
    assert owed.due(health) is None  # dead
    assert health.is_up("n1", 20) and owed.due(health) is None  # its dead time ran out: unknown
    health.succeeded("n1", 20)
    assert owed.due(health) == "n1"


def test_take_hands_out_the_oldest_first_and_give_back_keeps_them() -> None:
    owed = Owed()
    owed.add("n1", Debt(SID, 100, ended=True))
    owed.add("n1", Debt(OTHER, 200, ended=True))
    taken = owed.take("n1", 1)
    assert taken == [Debt(SID, 100, ended=True)] and len(owed) == 1
    owed.give_back("n1", taken)
    assert len(owed) == 2 and owed.take("n2") == []


def test_written_at_reads_the_header_of_a_record_only() -> None:
    raw = RecordFormat([b"k"]).encode(1, 5, 1234, 60, b"{}")
    assert written_at(raw) == 1234
    assert written_at(b"MS") is None and written_at(b"XX" + raw[2:]) is None
    assert Validity(1, 0, 0) == TOMBSTONE


def test_a_paid_move_writes_its_tombstone_only_where_nothing_stronger_or_newer_is() -> None:
    """Paying a move's debt writes the move's tombstone the node missed, but not over a
    logout's (the id ended) nor over a later move's (the session came back and moved again)."""
    at = 10_000
    assert _missed_move(None, at)
    assert _missed_move(moved_mark(at - 1), at)
    assert not _missed_move(moved_mark(at), at)
    assert not _missed_move(moved_mark(at + 1), at)
    assert not _missed_move(ENDED, at)
    assert moved_at(moved_mark(at)) == at and moved_at(ENDED) is None and moved_at(b"mx") is None


def test_owing_past_the_limit_counts_and_says_the_oldest_are_forgotten() -> None:
    """`owe` (what the flows call) reports what the limit pushed out: counted as owed_dropped
    and a log line naming the node and the limit."""
    manager = SessionManager(memcached_nodes="n1:127.0.0.1:1,n2:127.0.0.1:2")
    manager.owed.limit = 1
    ctx = manager.context()
    owe(ctx, "n1", SID, ended=True)
    owe(ctx, "n1", OTHER, ended=True)
    assert ctx.counts["owed_added"] == 2 and ctx.counts["owed_dropped"] == 1
    assert ctx.events == ["n1 is owed more than 1 deletes: the oldest are forgotten"]
    assert [d.sid for d in manager.owed.of("n1")] == [OTHER]
