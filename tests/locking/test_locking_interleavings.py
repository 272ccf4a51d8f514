"""Invariant 4 under any interleaving: hypothesis generates several concurrent requests on one
session, each setting, changing in place or deleting some keys, and an order in which their
loads and saves happen. In the default mode (optimistic) no update to a key another request
left alone is lost, and per key the request that saved last wins; with `locking_mode="none"`
(plain writes) the last request that wrote replaces the record, which the test also pins, so
it can tell the two apart.

Memory stores, two nodes: the merge is decided in core (core/optimistic.py); the stores only
answer compare-and-set.
"""

from __future__ import annotations

from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from pymsm import SessionManager
from pymsm.stores.memory import MemoryStore

NODES = "n1:127.0.0.1:1,n2:127.0.0.1:2"
KEYS = ("a", "b", "c", "d")
# one change: set a key to a value, append to the list under it (in place), or delete it
CHANGE = st.tuples(st.sampled_from(KEYS), st.sampled_from(("set", "append", "del")), st.integers())
REQUESTS = st.lists(st.lists(CHANGE, min_size=1, max_size=3), min_size=2, max_size=4)


def apply(data: dict[str, Any], changes: list[tuple[str, str, int]]) -> set[str]:
    """Apply one request's changes to `data`; the keys it changed (deleting a key the request
    does not see is no change)."""
    touched = set()
    for key, kind, value in changes:
        if kind == "set":
            data[key] = [value]
        elif kind == "append":
            data[key] = [*data.get(key, []), value]  # what an in-place append stores
        elif key in data:
            del data[key]
        else:
            continue
        touched.add(key)
    return touched


INITIAL = {"a": [0], "b": [0], "c": [0]}


def run(
    requests: list[list[tuple[str, str, int]]], events: list[int], mode: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the requests' loads and saves in the order `events` gives (a request's first
    occurrence is its load, the second its save); return the stored data and the model's."""
    stores = {"n1": MemoryStore("n1"), "n2": MemoryStore("n2")}
    manager = SessionManager(memcached_nodes=NODES, stores=stores, locking_mode=mode)
    first = manager.load(None)
    first.update(INITIAL)
    assert manager.save(first).status == "stored"
    model: dict[str, Any] = {k: list(v) for k, v in INITIAL.items()}
    sessions: dict[int, Any] = {}
    views: dict[int, dict[str, Any]] = {}
    for index in events:
        changes = requests[index]
        if index not in sessions:  # load, and make the request's changes
            session = sessions[index] = manager.load(first.id)
            assert dict(session) == model  # it sees every save that finished before (inv. 5)
            views[index] = {k: list(v) for k, v in model.items()}
            for key, kind, value in changes:
                if kind == "set":
                    session[key] = [value]
                elif kind == "append":
                    if key in session:
                        session[key].append(value)  # in place: found by re-encoding at save
                    else:
                        session[key] = [value]
                elif key in session:
                    del session[key]
            continue
        assert manager.save(sessions[index]).status in ("stored", "unchanged")
        own = views[index]
        touched = apply(own, changes)
        if mode == "none":
            if touched:
                model = own  # a plain write replaces the record with the request's view
        else:
            for key in touched:  # per key, the request that saved last wins
                if key in own:
                    model[key] = own[key]
                else:
                    model.pop(key, None)
    return dict(manager.load(first.id)), model


def interleavings(count: int) -> st.SearchStrategy[list[int]]:
    """Orders of `count` loads and saves: each request index twice, load first."""
    return st.permutations([i for i in range(count) for _ in range(2)])


@pytest.mark.parametrize(
    "mode",
    ["optimistic", "none"],
    ids=["optimistic: no update lost, last save wins per key", "none: last write replaces"],
)
@settings(max_examples=300, deadline=None)
@given(requests=REQUESTS, data=st.data())
def test_any_interleaving_stores_what_the_model_says(
    mode: str, requests: list[list[tuple[str, str, int]]], data: st.DataObject
) -> None:
    stored, model = run(requests, data.draw(interleavings(len(requests))), mode)
    assert stored == model
