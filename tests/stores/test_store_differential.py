"""Differential test of the store port: random operation sequences run on the memory store and
on each real store side by side; every answer, and at the end every key's value and kind of
lifetime, must agree.

The memory store is what every model-based and manager test stands on, so where it and a real
server differ, those tests prove less than they claim. This test is where such a difference
shows. Differences that are by design are normalised, each for a stated reason:
- CAS tokens are opaque (memcached's cas unique, Redis's value as read, the memory store's
  version): only the answers of `cas` are compared, never the tokens.
- Redis's token is the value as read (stores/redis.py), so a cas whose key was written meanwhile
  with the same bytes stores (A-B-A), where memcached and the memory store refuse it. Equal bytes
  are equal state for pymsm's records, so nothing is lost; the reference then applies the write.
- Lifetimes are compared by kind (none, short, long), not to the second: the servers' clocks tick
  while the test runs.
"""

from __future__ import annotations

import socket
import uuid
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pymsm.stores.memory import MemoryStore
from pymsm.stores.redis import wire_key
from support.servers import HOST
from support.store_harness import Blocking, Harness

VALUES = [b"", b"v1", b"v2", b"\r\nEND\r\n", bytes(range(256)) * 6]
TTLS = [0, 60, 40 * 24 * 3600]  # none, short, over memcached's 30 days (an absolute time there)
KEY_SHAPES = ["{}", "validity:{}", "bak:validity:{}", "tomb:{}"]  # pymsm's (stores/redis.py)

key_index = st.integers(0, len(KEY_SHAPES) - 1)
value = st.sampled_from(VALUES)
ttl = st.sampled_from(TTLS)
operation = st.one_of(
    st.tuples(st.just("get_many"), st.lists(key_index, unique=True, max_size=4)),
    st.tuples(st.just("gets_many"), st.lists(key_index, unique=True, max_size=4)),
    st.tuples(st.just("set"), key_index, value, ttl, st.booleans()),
    st.tuples(st.just("add"), key_index, value, ttl),
    st.tuples(st.just("replace"), key_index, value, ttl),
    # the token: the latest one read for the key, or the one before (stale)
    st.tuples(st.just("cas"), key_index, value, ttl, st.sampled_from([-1, -2])),
    st.tuples(st.just("delete_if"), key_index, value),
    st.tuples(st.just("delete"), key_index, st.booleans()),
    st.tuples(st.just("touch"), key_index, ttl, st.booleans()),
)


def lifetime(remaining: float | None) -> str:
    """A key's lifetime by kind: absent, none, short (the 60 s TTL) or long (40 days)."""
    if remaining is None:
        return "absent"
    if remaining < 0:
        return "none"
    return "short" if remaining <= 60 else "long"


class Side:
    """One store under test and what it handed out: the CAS tokens read, per key, in order."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.tokens: dict[str, list[tuple[bytes, Any]]] = {}

    def run(self, op: tuple[Any, ...], keys: list[str]) -> Any:
        name, args = op[0], op[1:]
        if name in ("get_many", "gets_many"):
            found = getattr(self.store, name)([keys[i] for i in args[0]])
            if name == "get_many":
                return found
            for k, pair in found.items():
                self.tokens.setdefault(k, []).append(pair)
            return {k: v for k, (v, _) in found.items()}
        k = keys[args[0]]
        if name == "cas":
            value, ttl, pick = args[1:]
            read = self.tokens.get(k, [])
            if len(read) < -pick:
                return "no token read"
            return self.store.cas(k, value, ttl, read[pick][1])
        return getattr(self.store, name)(k, *args[1:])


def memory_lifetimes(store: MemoryStore, keys: list[str]) -> list[str]:
    now = store.clock()
    found = [store.items.get(k) for k in keys]
    return [lifetime(None if i is None else (i[1] - now if i[1] else -1)) for i in found]


def memcached_lifetimes(port: int, keys: list[str]) -> list[str]:
    """`mg <key> t`: the remaining TTL in seconds, -1 for none (memcached >= 1.6, and ours)."""
    with socket.create_connection((HOST, port)) as sock:
        sock.sendall(b"".join(f"mg {k} t\r\n".encode() for k in keys) + b"mn\r\n")
        reply = b""
        while not reply.endswith(b"MN\r\n"):
            reply += sock.recv(4096)
    lines = reply.decode().split("\r\n")[: len(keys)]
    return [lifetime(int(line.split()[1][1:]) if line.startswith("HD") else None) for line in lines]


def redis_lifetimes(port: int, cluster: bool, keys: list[str]) -> list[str]:
    """PTTL: -2 absent, -1 none, else milliseconds."""
    with redis.RedisCluster(HOST, port) if cluster else redis.Redis(HOST, port) as client:
        found = [client.pttl(wire_key(k)) for k in keys]
    return [lifetime(None if ms == -2 else (-1 if ms == -1 else ms / 1000)) for ms in found]


def real_lifetimes(harness: Harness, store: Any, keys: list[str]) -> list[str]:
    inner = store._store if isinstance(store, Blocking) else store
    if harness.client.startswith("memory"):
        sync = inner.sync if hasattr(inner, "sync") else inner
        return memory_lifetimes(sync, keys)
    if harness.client.startswith("redis"):
        return redis_lifetimes(inner.url.hosts[0][1], inner.cluster, keys)
    return memcached_lifetimes(inner.node.port, keys)


@pytest.mark.integration
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=st.lists(operation, min_size=1, max_size=30))
@example(  # A-B-A: written meanwhile with the bytes the token was read with
    ops=[
        ("set", 0, b"v1", 60, False),
        ("gets_many", [0]),
        ("set", 0, b"v2", 60, True),
        ("set", 0, b"v1", 60, False),
        ("cas", 0, b"v2", 0, -1),
    ]
)
@example(  # lifetimes: touch to none and to over 30 days, a cas and a replace that clear one
    ops=[
        ("set", 0, b"v1", 60, False),
        ("set", 1, b"v1", 60, True),
        ("set", 2, b"v1", 0, False),
        ("touch", 0, 0, False),
        ("touch", 1, 40 * 24 * 3600, True),
        ("gets_many", [2]),
        ("cas", 2, b"v2", 60, -1),
        ("replace", 2, b"v3", 0),
    ]
)
def test_every_store_answers_as_the_memory_store(
    harness: Harness, store: Any, ops: list[tuple[Any, ...]]
) -> None:
    base = uuid.uuid4().hex.upper()
    keys = [shape.format(base) for shape in KEY_SHAPES]
    reference, real = Side(MemoryStore()), Side(store)
    value_tokens = harness.client.startswith("redis")
    for step, op in enumerate(ops):
        expected, got = reference.run(op, keys), real.run(op, keys)
        if value_tokens and op[0] == "cas" and expected is False and got is True:
            k, value, ttl, pick = keys[op[1]], *op[2:]
            current = reference.store.get_many([k]).get(k)
            assert current == reference.tokens[k][pick][0], f"step {step}: {op}: not A-B-A"
            reference.store.set(k, value, ttl)  # Redis stored it: the reference follows
            continue
        assert got == expected, f"step {step}: {op}: {harness.kind} {got!r}, memory {expected!r}"
    assert real.store.get_many(keys) == reference.store.get_many(keys)
    assert real_lifetimes(harness, store, keys) == memory_lifetimes(reference.store, keys)
