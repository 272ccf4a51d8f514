from __future__ import annotations

import pytest

from pymsm.core.lru import LruCache


def test_count_bound_evicts_least_recently_used() -> None:
    cache: LruCache[str, int] = LruCache(max_items=2, max_bytes=1000)
    cache.put("a", 1, 10)
    cache.put("b", 2, 10)
    assert cache.get("a") == 1  # a is now the most recently used
    evicted = cache.put("c", 3, 10)
    assert evicted == [("b", 2)]
    assert cache.keys() == ["a", "c"]
    assert cache.bytes == 20


def test_byte_bound_evicts_until_it_fits() -> None:
    cache: LruCache[str, int] = LruCache(max_items=100, max_bytes=100)
    for i in range(4):
        cache.put(str(i), i, 30)
    assert cache.keys() == ["1", "2", "3"]
    evicted = cache.put("big", 9, 80)
    assert [k for k, _ in evicted] == ["1", "2", "3"]
    assert cache.keys() == ["big"] and cache.bytes == 80


def test_replacing_a_key_updates_its_size() -> None:
    cache: LruCache[str, int] = LruCache(max_items=10, max_bytes=100)
    cache.put("a", 1, 60)
    assert cache.put("a", 2, 30) == []
    assert cache.bytes == 30 and cache.get("a") == 2 and len(cache) == 1


def test_an_item_over_the_byte_bound_is_handed_back() -> None:
    cache: LruCache[str, int] = LruCache(max_items=10, max_bytes=100)
    cache.put("a", 1, 10)
    assert cache.put("huge", 2, 101) == [("huge", 2)]
    assert "huge" not in cache and cache.keys() == ["a"] and cache.bytes == 10


def test_pop_and_missing_keys() -> None:
    cache: LruCache[str, int] = LruCache(max_items=10, max_bytes=100)
    cache.put("a", 1, 10)
    assert cache.pop("a") == 1 and cache.pop("a") is None
    assert cache.get("a") is None and cache.bytes == 0


def test_bounds_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least one"):
        LruCache(0, 10)
