"""A bounded least-recently-used map: bounded by item count and by total bytes.

Pure data structure, no threads: the caller guards it with a lock when threads share it.
`put` returns what it pushed out, so the caller can log or write back evicted items.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class LruCache(Generic[K, V]):
    """At most `max_items` items and `max_bytes` bytes (sizes as given to `put`).

    An item larger than `max_bytes` on its own is not kept: `put` hands it straight back.
    """

    def __init__(self, max_items: int, max_bytes: int) -> None:
        if max_items < 1 or max_bytes < 1:
            raise ValueError("an LruCache needs room for at least one item and one byte")
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: OrderedDict[K, tuple[V, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def get(self, key: K) -> V | None:
        """The value, now the most recently used; None when absent."""
        item = self._items.get(key)
        if item is None:
            return None
        self._items.move_to_end(key)
        return item[0]

    def put(self, key: K, value: V, size: int) -> list[tuple[K, V]]:
        """Insert or replace `key` as the most recently used; returns the evicted items,
        least recently used first (the new item itself when it alone exceeds `max_bytes`)."""
        self.pop(key)
        if size > self.max_bytes:
            return [(key, value)]
        self._items[key] = (value, size)
        self.bytes += size
        evicted: list[tuple[K, V]] = []
        while len(self._items) > self.max_items or self.bytes > self.max_bytes:
            old_key, (old_value, old_size) = self._items.popitem(last=False)
            self.bytes -= old_size
            evicted.append((old_key, old_value))
        return evicted

    def pop(self, key: K) -> V | None:
        item = self._items.pop(key, None)
        if item is None:
            return None
        self.bytes -= item[1]
        return item[0]

    def keys(self) -> list[K]:
        """Keys from least to most recently used."""
        return list(self._items)
