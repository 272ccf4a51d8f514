"""What the model-based tests (hypothesis state machines over memory stores) share: a base
class that quiets pymsm's failover log lines and seeds the node choice of new sessions for the
length of a run, so hypothesis can replay and shrink it, and the settings they run with."""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule

from pymsm.core import context
from pymsm.core.session import Session
from pymsm.stores.memory import MemoryStore
from support.clock import Clock

SETTINGS = settings(
    max_examples=300,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


class SeededMachine(RuleBasedStateMachine):
    """Subclasses set `clock` and `stores`, cut a node off with `cut_off_node` from a rule of
    their own (their preconditions differ), and inherit the `heal` rule."""

    clock: Clock
    stores: dict[str, MemoryStore]
    cut: str | None = None

    def __init__(self) -> None:
        super().__init__()
        self._logger = logging.getLogger("pymsm")
        self._level = self._logger.level
        self._logger.setLevel(logging.ERROR)  # failover logs a line per step
        # new sessions land on a random live node: seeded, so hypothesis can replay a run
        self._rng, context._rng = context._rng, random.Random(0)

    def cut_off_node(self, node: str) -> None:
        """Unreachable, data kept (a partition), until `heal`."""
        self.cut = node
        self.stores[node].down = True

    @precondition(lambda self: self.cut is not None)
    @rule()
    def heal(self) -> None:
        assert self.cut is not None
        self.stores[self.cut].down = False
        self.cut = None
        self.clock.now += 11  # past the dead time: every process may use the node again

    def teardown(self) -> None:
        context._rng = self._rng
        self._logger.setLevel(self._level)


class OnOneLoop:
    """What the async twins of the machines share: one event loop for the run, and a request's
    manager calls as the ASGI middleware makes them (load; save, then release)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def load(self, manager: Any, cookie: str | None) -> Session:
        session: Session = self.loop.run_until_complete(manager.load(cookie))
        return session

    def save(self, manager: Any, session: Session) -> str:
        saved = self.loop.run_until_complete(manager.save(session))
        self.loop.run_until_complete(manager.release(session))
        return str(saved.status)

    def close(self, manager: Any) -> None:
        self.loop.run_until_complete(manager.close())

    def stop(self) -> None:
        self.loop.close()
