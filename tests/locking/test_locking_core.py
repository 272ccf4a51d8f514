"""The pure locking decisions: modes, the auto learner, markers, and the lock flows."""

from __future__ import annotations

from typing import Any

import pytest

from pymsm.core import locking
from pymsm.core.locking import LockingMode, Plan, ReadOnlyLearner, decide
from pymsm.core.ops import Add, DeleteIf, Sleep
from pymsm.exceptions import ConfigError, StoreUnavailable


def plan(mode: str, method: str = "GET", path: str = "/", declared: str | None = None) -> Plan:
    return decide(LockingMode.parse(mode), method, path, declared, ReadOnlyLearner(), 0.0)


def test_fixed_modes() -> None:
    assert plan("none") == Plan(lock=False, cas=False)
    assert plan("optimistic") == Plan(lock=False, cas=True)
    assert plan("all") == Plan(lock=True, cas=True)


def test_uri_pattern_matches_the_path_only() -> None:
    assert plan("uriPattern:^/cart", path="/cart/add").lock
    assert not plan("uriPattern:^/cart", path="/home").lock
    assert not plan("uriPattern:POST", method="POST", path="/home").lock


def test_bad_modes_name_the_setting() -> None:
    with pytest.raises(ConfigError, match="locking_mode"):
        LockingMode.parse("sometimes")
    with pytest.raises(ConfigError, match="locking_mode"):
        LockingMode.parse("uriPattern:(")


def test_auto_locks_unknown_routes_and_honours_declarations() -> None:
    assert plan("auto").lock
    assert not plan("auto", declared="read").lock
    assert plan("auto", declared="write").lock
    assert plan("auto", declared="read").cas  # an unlocked request still merges


def test_learner_needs_a_threshold_of_read_only_observations() -> None:
    learner = ReadOnlyLearner(threshold=3, forget_after=100)
    for _ in range(2):
        learner.observe("GET", "/a", wrote=False, now=1)
    assert not learner.is_readonly("GET", "/a", 1)
    learner.observe("GET", "/a", wrote=False, now=2)
    assert learner.is_readonly("GET", "/a", 2)
    assert not learner.is_readonly("POST", "/a", 2)
    auto = LockingMode.parse("auto")
    assert not decide(auto, "GET", "/a", None, learner, 3).lock
    assert decide(auto, "GET", "/a", "write", learner, 3).lock


def test_one_write_unlearns_at_once() -> None:
    learner = ReadOnlyLearner(threshold=2)
    for _ in range(5):
        learner.observe("GET", "/a", wrote=False, now=1)
    learner.observe("GET", "/a", wrote=True, now=2)
    assert not learner.is_readonly("GET", "/a", 2)
    learner.observe("GET", "/a", wrote=False, now=3)
    assert not learner.is_readonly("GET", "/a", 3)


def test_learned_routes_are_forgotten_and_bounded() -> None:
    learner = ReadOnlyLearner(threshold=1, forget_after=10, max_routes=3)
    learner.observe("GET", "/a", wrote=False, now=0)
    assert learner.is_readonly("GET", "/a", 9.9)
    assert not learner.is_readonly("GET", "/a", 10)
    for i in range(10):
        learner.observe("GET", f"/p{i}", wrote=False, now=20 + i)
    assert len(learner.routes) == 3
    assert ("GET", "/p9") in learner.routes


def test_markers() -> None:
    @locking.readonly
    def view() -> None: ...

    @locking.writes
    def other() -> None: ...

    assert locking.declared_access(view) == "read"
    assert locking.declared_access(other) == "write"
    assert locking.declared_access(print) is None


def drive(flow: Any, answers: list[Any]) -> tuple[list[Any], Any]:
    """Run a flow by hand: send `answers` in turn; Sleep ops get a clock that advances."""
    ops, clock = [], 100.0
    try:
        op = next(flow)
        while True:
            ops.append(op)
            if isinstance(op, Sleep):
                clock += op.seconds
                op = flow.send(clock)
            else:
                op = flow.send(answers.pop(0))
    except StopIteration as stop:
        return ops, stop.value


def test_acquire_backs_off_doubling_up_to_half_a_second() -> None:
    flow = locking.acquire("n1", "lock:S", b"tok", 5.0, deadline=103.0, now=100.0)
    ops, (status, lock) = drive(flow, [False] * 100)
    sleeps = [op.seconds for op in ops if isinstance(op, Sleep)]
    assert status == "timeout" and lock is None
    assert sleeps[:7] == [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.5]
    assert sum(sleeps) == pytest.approx(3.0)  # never sleeps past the deadline
    add = ops[0]
    assert isinstance(add, Add) and add.ttl == 5 and add.value == b"tok"


def test_acquire_gets_the_lock_once_free() -> None:
    flow = locking.acquire("n1", "lock:S", b"tok", 0.2, deadline=101.0, now=100.0)
    ops, (status, lock) = drive(flow, [False, False, True])
    assert status == "acquired" and lock == locking.Lock("n1", "lock:S", b"tok")
    assert isinstance(ops[0], Add) and ops[0].ttl == 1  # whole seconds, at least one


def test_acquire_reports_a_failed_node() -> None:
    flow = locking.acquire("n1", "lock:S", b"t", 5, deadline=101.0, now=100.0)
    _, (status, _) = drive(flow, [StoreUnavailable("down", "n1")])
    assert status == "unavailable"


def test_release_deletes_only_our_token() -> None:
    ops, released = drive(locking.release(locking.Lock("n1", "lock:S", b"tok")), [False])
    assert ops == [DeleteIf("n1", "lock:S", b"tok")] and released is False


def test_markers_are_public() -> None:
    import pymsm

    assert pymsm.readonly is locking.readonly and pymsm.writes is locking.writes
    assert {"readonly", "writes"} <= set(pymsm.__all__)
