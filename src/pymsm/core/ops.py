"""The store operations flows yield. A driver runs each on the store of `op.node` and sends back
the result, or the StoreError it raised (flows decide what a failure means; stores never do).
`Sleep` is the one operation that is not a store call: drivers carry it out themselves.

Operations are plain (not frozen) dataclasses: a request builds several, and a frozen
dataclass's __init__ costs three times as much; nothing keeps or shares them after the driver
ran them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

from pymsm.exceptions import StoreError


@dataclass(slots=True)
class Get:
    """Multi-get in one round trip -> {key: value} for the keys present."""

    node: str
    keys: tuple[str, ...]


@dataclass(slots=True)
class Set:
    """Store unconditionally -> None. `noreply` does not wait (and cannot see errors)."""

    node: str
    key: str
    value: bytes
    ttl: int
    noreply: bool = False


@dataclass(slots=True)
class Add:
    """Store only if absent -> bool (stored)."""

    node: str
    key: str
    value: bytes
    ttl: int


@dataclass(slots=True)
class Replace:
    """Store only if present -> bool (stored). A session deleted meanwhile is not resurrected."""

    node: str
    key: str
    value: bytes
    ttl: int


@dataclass(slots=True)
class Delete:
    """Delete -> bool (was present); False with noreply (not known)."""

    node: str
    key: str
    noreply: bool = True


@dataclass(slots=True)
class Touch:
    """Set a new lifetime -> bool (was present); False with noreply (not known)."""

    node: str
    key: str
    ttl: int
    noreply: bool = False


@dataclass(slots=True)
class Gets:
    """Multi-get with CAS tokens -> {key: (value, token)} for the keys present."""

    node: str
    keys: tuple[str, ...]


@dataclass(slots=True)
class Cas:
    """Store only if the key still has `token` -> True stored, False changed meanwhile, None
    absent (deleted meanwhile: never resurrected)."""

    node: str
    key: str
    value: bytes
    ttl: int
    token: Any


@dataclass(slots=True)
class DeleteIf:
    """Delete only while the key holds exactly `value` (a lock's owner token) -> bool."""

    node: str
    key: str
    value: bytes


@dataclass(slots=True)
class Sleep:
    """Not a store operation: the driver sleeps (time.sleep or asyncio.sleep) and sends back its
    clock (seconds since the epoch) afterwards, so flows can wait without doing I/O."""

    seconds: float


def _failed(result: Any) -> bool:
    """A flow's test of an op's result: the StoreError the driver sent back instead."""
    return isinstance(result, StoreError)


def call_args(op: StoreOp) -> tuple[str, tuple[Any, ...]]:
    """The store method and its arguments for `op`: one table for the sync and async drivers."""
    return _CALLS[type(op)](op)


# looked up by exact type: every store operation of every request passes through here
_CALLS: dict[type, Callable[[Any], tuple[str, tuple[Any, ...]]]] = {
    Get: lambda op: ("get_many", (op.keys,)),
    Gets: lambda op: ("gets_many", (op.keys,)),
    Set: lambda op: ("set", (op.key, op.value, op.ttl, op.noreply)),
    Add: lambda op: ("add", (op.key, op.value, op.ttl)),
    Replace: lambda op: ("replace", (op.key, op.value, op.ttl)),
    Cas: lambda op: ("cas", (op.key, op.value, op.ttl, op.token)),
    Delete: lambda op: ("delete", (op.key, op.noreply)),
    DeleteIf: lambda op: ("delete_if", (op.key, op.value)),
    Touch: lambda op: ("touch", (op.key, op.ttl, op.noreply)),
}


StoreOp: TypeAlias = Get | Set | Add | Replace | Delete | Touch | Gets | Cas | DeleteIf
Op: TypeAlias = StoreOp | Sleep
Result: TypeAlias = Any
