"""Running a core flow by hand in tests: every op it yields, recorded, and its result."""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, TypeVar

from pymsm.core.ops import Op

T = TypeVar("T")


def run_recorded(flow: Generator[Op, Any, T], execute: Callable[[Op], Any]) -> tuple[list[Op], T]:
    """Drive `flow` with `execute` (a manager's `_execute`); (the ops it yielded, its result)."""
    ops: list[Op] = []
    try:
        op = next(flow)
        while True:
            ops.append(op)
            op = flow.send(execute(op))
    except StopIteration as stop:
        result: T = stop.value
        return ops, result
