from __future__ import annotations

import secrets
import sys
from collections.abc import Callable

import pytest

from pymsm import SessionManager
from pymsm.core.lru import LruCache
from pymsm.stores.memory import MemoryStore


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


def _deep_size(obj: object, seen: set[int]) -> int:
    """Bytes of `obj` and everything it holds (sys.getsizeof over the object graph)."""
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    size = sys.getsizeof(obj)
    if isinstance(obj, dict):
        size += sum(_deep_size(k, seen) + _deep_size(v, seen) for k, v in obj.items())
    elif isinstance(obj, list | tuple | set):
        size += sum(_deep_size(item, seen) for item in obj)
    elif hasattr(obj, "__slots__"):
        size += sum(_deep_size(getattr(obj, n), seen) for n in obj.__slots__ if hasattr(obj, n))
    elif hasattr(obj, "__dict__"):
        size += _deep_size(vars(obj), seen)
    return size


def _order(i: int) -> dict[str, object]:
    lines = [{"sku": f"SKU{j}", "qty": j, "price": 9.99} for j in range(8)]
    return {"user_id": i, "name": f"user{i}", "roles": ["reader"], "cart": lines, "csrf": "ab" * 16}


@pytest.mark.parametrize(
    ("shape", "lowest", "highest"),
    [
        (lambda i: _order(i), 0.6, 1.5),  # ~0.4 KB of JSON
        (lambda i: {f"k{j}": _order(i) for j in range(18)}, 0.6, 1.5),  # ~7 KB
        (lambda i: {"blob": secrets.token_hex(512)}, 1.0, 3.0),  # one long string: over-counted
    ],
    ids=["structured", "structured-10kb", "flat-string"],
)
def test_sticky_cache_bytes_count_about_what_the_entries_take(
    shape: Callable[[int], dict[str, object]], lowest: float, highest: float
) -> None:
    """sticky_cache_bytes bounds memory: the size an entry is counted at (Entry.size) against
    what it takes (its decoded attributes, its record, its id). Counting only the encoded
    payload let the cache take 2.3-6.8 times its bound."""
    stores = {"n1": MemoryStore("n1"), "n2": MemoryStore("n2")}
    app = SessionManager(
        memcached_nodes="n1:127.0.0.1:1,n2:127.0.0.1:2", sticky=True, route="a", stores=stores
    )
    for i in range(50):
        session = app.load(None)
        session.update(shape(i))
        app.save(session)
    cache = app._sticky.cache
    entries = [entry for entry, _ in cache._items.values()]
    taken = sum(_deep_size(entry, set()) for entry in entries)
    assert lowest <= cache.bytes / taken <= highest, (cache.bytes, taken)
