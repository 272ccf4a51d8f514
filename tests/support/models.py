"""What the model-based tests (hypothesis state machines over memory stores) share: a base
class that quiets pymsm's failover log lines and seeds the node choice of new sessions for the
length of a run, so hypothesis can replay and shrink it, and the settings they run with."""

from __future__ import annotations

import logging
import random

from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine

from pymsm.core import context

SETTINGS = settings(
    max_examples=300,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


class SeededMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self._logger = logging.getLogger("pymsm")
        self._level = self._logger.level
        self._logger.setLevel(logging.ERROR)  # failover logs a line per step
        # new sessions land on a random live node: seeded, so hypothesis can replay a run
        self._rng, context._rng = context._rng, random.Random(0)

    def teardown(self) -> None:
        context._rng = self._rng
        self._logger.setLevel(self._level)
