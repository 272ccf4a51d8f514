"""The store port's contract (pymsm/stores/base.py), run against every store, sync and async.

Each test is written once against a blocking view of the store: async stores are driven on an
event loop owned by the test (support/store_harness.py, fixtures in conftest.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from pymsm.exceptions import ItemTooLarge, StoreError, StoreUnavailable
from pymsm.stores.base import ITEM_OVERHEAD
from support.store_harness import Harness


def test_get_many_returns_only_present_keys(store: Any, key: Callable[[str], str]) -> None:
    a, b, missing = key("a"), key("b"), key("missing")
    store.set(a, b"\x00alpha\xff", 0)
    store.set(b, b"beta", 60)
    assert store.get_many([a, b, missing]) == {a: b"\x00alpha\xff", b: b"beta"}
    assert store.get_many([missing]) == {}
    assert store.get_many([]) == {}
    assert store.gets_many([]) == {}


def test_pymsm_key_shapes_round_trip(store: Any, key: Callable[[str], str]) -> None:
    record, validity, lock = key(""), key("validity:"), key("lock:")
    backup = "bak:" + validity
    for k in (record, validity, lock, backup):
        store.set(k, k.encode(), 60)
    found = store.get_many([record, validity, lock, backup])
    assert found == {k: k.encode() for k in (record, validity, lock, backup)}


def test_set_overwrites_and_noreply_is_visible_to_the_next_read(
    store: Any, key: Callable[[str], str]
) -> None:
    k = key("k")
    store.set(k, b"one", 60)
    store.set(k, b"two", 60, True)
    assert store.get_many([k]) == {k: b"two"}


def test_add_stores_only_when_absent(store: Any, key: Callable[[str], str]) -> None:
    k = key("lock:")
    assert store.add(k, b"owner-1", 5) is True
    assert store.add(k, b"owner-2", 5) is False
    assert store.get_many([k]) == {k: b"owner-1"}


def test_replace_stores_only_when_present(store: Any, key: Callable[[str], str]) -> None:
    k = key("k")
    assert store.replace(k, b"ghost", 60) is False
    assert store.get_many([k]) == {}
    store.set(k, b"one", 60)
    assert store.replace(k, b"two", 60) is True
    assert store.get_many([k]) == {k: b"two"}


def test_delete_says_whether_the_key_was_there(store: Any, key: Callable[[str], str]) -> None:
    k = key("k")
    store.set(k, b"v", 60)
    assert store.delete(k) is True
    assert store.get_many([k]) == {}
    assert store.delete(k) is False


def test_touch_says_whether_the_key_was_there(store: Any, key: Callable[[str], str]) -> None:
    k = key("k")
    assert store.touch(k, 60) is False
    store.set(k, b"v", 60)
    assert store.touch(k, 120) is True
    assert store.touch(k, 0) is True
    assert store.get_many([k]) == {k: b"v"}


def test_cas_stores_only_while_the_token_is_current(store: Any, key: Callable[[str], str]) -> None:
    k = key("k")
    store.set(k, b"v1", 60)
    (value, token) = store.gets_many([k, key("missing")])[k]
    assert value == b"v1"
    assert store.cas(k, b"v2", 60, token) is True
    assert store.get_many([k]) == {k: b"v2"}
    assert store.cas(k, b"v3", 60, token) is False  # written since the token was read
    assert store.get_many([k]) == {k: b"v2"}


def test_cas_loses_to_a_concurrent_writer(store: Any, key: Callable[[str], str]) -> None:
    k = key("k")
    store.set(k, b"base", 60)
    token = store.gets_many([k])[k][1]
    store.set(k, b"theirs", 60)
    assert store.cas(k, b"mine", 60, token) is False
    assert store.get_many([k]) == {k: b"theirs"}


def test_cas_on_an_absent_key_is_none(store: Any, key: Callable[[str], str]) -> None:
    k = key("k")
    store.set(k, b"v", 60)
    token = store.gets_many([k])[k][1]
    store.delete(k)
    assert store.cas(k, b"v2", 60, token) is None
    assert store.get_many([k]) == {}


def test_delete_if_releases_only_the_owners_lock(store: Any, key: Callable[[str], str]) -> None:
    k = key("lock:")
    assert store.delete_if(k, b"owner-1") is False
    store.add(k, b"owner-1", 5)
    assert store.delete_if(k, b"owner-2") is False
    assert store.get_many([k]) == {k: b"owner-1"}
    assert store.delete_if(k, b"owner-1") is True
    assert store.get_many([k]) == {}


def test_ttls_expire_extend_and_clear(store: Any, key: Callable[[str], str]) -> None:
    short, forever, lock, touched, persisted = (key(n) for n in "abcde")
    store.set(short, b"v", 1)
    store.set(forever, b"v", 0)
    store.add(lock, b"owner", 1)
    store.set(touched, b"v", 1)
    store.set(persisted, b"v", 1)
    assert store.touch(touched, 60) is True
    assert store.touch(persisted, 0) is True
    deadline = time.monotonic() + 3  # memcached's clock ticks in whole seconds
    while store.get_many([short]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store.get_many([short, lock]) == {}
    assert store.add(lock, b"next-owner", 5) is True  # an orphaned lock freed itself
    assert store.get_many([forever, touched, persisted]) == {
        forever: b"v",
        touched: b"v",
        persisted: b"v",
    }


def test_item_size_limit_is_counted_as_memcached_counts_it(
    harness: Harness, store: Any, key: Callable[[str], str]
) -> None:
    """Key, value and memcached's per-item overhead against 1 MB (memcached -I): the largest
    item that fits is stored (real memcached takes 5 bytes more), one byte more is refused
    before it is sent, with or without noreply. Redis has no such limit (512 MB)."""
    k = key("big")
    fits = b"x" * (1024 * 1024 - len(k) - ITEM_OVERHEAD)
    store.set(k, fits, 60)
    assert store.get_many([k]) == {k: fits}
    if harness.client.startswith("redis"):
        store.set(k, fits + b"y", 60, True)
        assert store.get_many([k]) == {k: fits + b"y"}
        return
    for noreply in (False, True):
        with pytest.raises(ItemTooLarge, match="item_size_limit"):
            store.set(k, fits + b"y", 60, noreply)
    with pytest.raises(ItemTooLarge):
        store.add(key("other"), fits + b"y", 60)
    assert store.get_many([k]) == {k: fits}


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.get_many(["k"]),
        lambda s: s.gets_many(["k"]),
        lambda s: s.set("k", b"v", 0),
        lambda s: s.add("k", b"v", 0),
        lambda s: s.replace("k", b"v", 0),
        lambda s: s.delete("k"),
        lambda s: s.touch("k", 10),
        lambda s: s.cas("k", b"v", 0, "1"),
        lambda s: s.delete_if("k", b"v"),
    ],
    ids=["get_many", "gets_many", "set", "add", "replace", "delete", "touch", "cas", "delete_if"],
)
def test_an_unreachable_server_raises_store_unavailable(
    harness: Harness, call: Callable[[Any], Any]
) -> None:
    dead = harness.unreachable()
    with pytest.raises(StoreUnavailable) as caught:
        call(dead)
    assert isinstance(caught.value, StoreError)
