"""Items, slab classes, per-class LRU and memory accounting, as memcached 1.6 lays them out.

Memory is accounted the way memcached does it, not by Python object sizes: an item takes one
chunk of the smallest slab class that fits its memcached size (header + key + value + CAS), each
class grows by 1 MB pages, and when a page cannot be had within `-m` the tail of that class's LRU
is evicted (or, with `-M`, the store fails). Not thread-safe: one event loop owns a Storage.
"""

from __future__ import annotations

import re
import time
from bisect import bisect_left
from collections import OrderedDict
from dataclasses import dataclass, field
from enum import Enum

from pymsm.server.settings import Settings

ITEM_HEADER = 48  # sizeof(item) on 64-bit builds
CAS_SIZE = 8
FLAGS_SIZE = 4  # stored only when the flags are non-zero
CHUNK_ALIGN = 8
MAX_CLASSES = 64
REALTIME_MAXDELTA = 60 * 60 * 24 * 30  # relative TTLs above 30 days are absolute Unix times
UINT64 = (1 << 64) - 1


class Result(Enum):
    STORED = b"STORED"
    NOT_STORED = b"NOT_STORED"
    EXISTS = b"EXISTS"
    NOT_FOUND = b"NOT_FOUND"
    TOO_LARGE = b"SERVER_ERROR object too large for cache"
    NO_MEMORY = b"SERVER_ERROR out of memory storing object"
    NON_NUMERIC = b"CLIENT_ERROR cannot increment or decrement non-numeric value"


class Mode(Enum):
    SET = "set"
    ADD = "add"
    REPLACE = "replace"
    APPEND = "append"
    PREPEND = "prepend"
    CAS = "cas"


# module-level aliases: an Enum member lookup (Mode.SET) costs ~0.1 µs on the hot path in 3.11
SET, ADD, REPLACE, APPEND, PREPEND, CAS = Mode
STORED, NOT_STORED, EXISTS, NOT_FOUND = list(Result)[:4]
NEEDS_OLD = (REPLACE, APPEND, PREPEND)


class Item:
    """One stored value; `exptime` and `time` are server-relative seconds (0 = never)."""

    __slots__ = ("cas", "clsid", "exptime", "fetched", "flags", "key", "size", "time", "value")

    def __init__(self, key: bytes, value: bytes, flags: int, exptime: int) -> None:
        self.key = key
        self.value = value
        self.flags = flags
        self.exptime = exptime
        self.cas = 0
        self.time = 0
        self.clsid = 0
        self.fetched = False
        self.size = item_size(len(key), flags, len(value))


def item_size(nkey: int, flags: int, nvalue: int) -> int:
    """memcached's ITEM_ntotal: header, key + NUL, flags if set, value + CRLF, CAS."""
    return ITEM_HEADER + nkey + 1 + (FLAGS_SIZE if flags else 0) + nvalue + 2 + CAS_SIZE


@dataclass
class SlabClass:
    """One slab class: its chunk size, pages, LRU and the per-class counters stats print."""

    id: int
    size: int
    perslab: int
    pages: int = 0
    used: int = 0  # chunks in use
    lru: OrderedDict[bytes, Item] = field(default_factory=OrderedDict)
    requested: int = 0  # sum of item sizes (mem_requested)
    counters: dict[str, int] = field(default_factory=dict)

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n


def slab_sizes(settings: Settings) -> list[int]:
    """Chunk sizes of classes 1..N: 96 bytes growing by -f (1.25), 8-byte aligned, then the max."""
    sizes: list[int] = []
    size = ITEM_HEADER + settings.chunk_size
    limit = settings.slab_chunk_max / settings.growth_factor
    while len(sizes) < MAX_CLASSES - 2 and size < limit:
        if size % CHUNK_ALIGN:
            size += CHUNK_ALIGN - size % CHUNK_ALIGN
        sizes.append(size)
        size = int(size * settings.growth_factor)
    sizes.append(settings.slab_chunk_max)
    return sizes


class Clock:
    """memcached's clock: whole seconds since start; absolute TTLs are converted at the edge."""

    def __init__(self) -> None:
        # as memcached: the process "started" 2 s ago, so relative times are never 0
        self.started = int(time.time()) - 2

    def now(self) -> int:
        return int(time.time()) - self.started

    def realtime(self, exptime: int) -> int:
        """Server-relative expiry for a client exptime (memcached's realtime())."""
        if exptime == 0:
            return 0
        if exptime < 0:
            return 1  # already past: expired immediately
        if exptime > REALTIME_MAXDELTA:
            return 1 if exptime <= self.started else exptime - self.started
        return exptime + self.now()


class Storage:
    """The cache: key lookup, expiry, LRU, slab accounting, eviction."""

    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock = clock or Clock()
        self.items: dict[bytes, Item] = {}
        self.classes = [
            SlabClass(i + 1, size, max(1, settings.slab_page_size // size))
            for i, size in enumerate(slab_sizes(settings))
        ]
        self._sizes = [cls.size for cls in self.classes]  # for class_for's bisection
        self._class_of: dict[int, SlabClass | None] = {}  # class_for's memo, bounded
        self.malloced = 0  # bytes of pages handed out
        self.next_cas = 1
        self.flush_at = 0  # pending delayed flush_all (relative time), 0 = none
        self.stats: dict[str, int] = dict.fromkeys(
            ("total_items", "evictions", "reclaimed", "expired_unfetched", "evicted_unfetched",
             "get_expired", "get_flushed"), 0,
        )  # fmt: skip

    # lookup

    def get(self, key: bytes, bump: bool = True) -> Item | None:
        """The live item for `key`, or None; expired or flushed items are reclaimed here."""
        item = self.items.get(key)
        if item is None:
            return None
        now = int(time.time()) - self.clock.started  # Clock.now(), inlined: the hot path
        if self.flush_at and self.flush_at <= now:
            self.flush_at = 0
            self.flush()
            self.stats["get_flushed"] += 1
            return None
        if item.exptime and item.exptime <= now:
            self.stats["get_expired"] += 1
            self._reclaim(item)
            return None
        if bump:
            self.classes[item.clsid - 1].lru.move_to_end(key)
            item.time = now
        return item

    def peek(self, key: bytes) -> Item | None:
        return self.get(key, bump=False)

    # writes

    def store(self, mode: Mode, key: bytes, flags: int, exptime: int, value: bytes,
              cas: int = 0) -> tuple[Result, Item | None]:  # fmt: skip
        """Apply a storage command; `exptime` is server-relative (see Clock.realtime)."""
        old = self.get(key, bump=False)
        if mode is not SET:
            if mode is ADD and old is not None:
                self._bump(old)  # memcached refreshes an item that add found
                return NOT_STORED, None
            if old is None and mode in NEEDS_OLD:
                return NOT_STORED, None
            if mode is CAS:
                if old is None:
                    return NOT_FOUND, None
                if old.cas != cas:
                    return EXISTS, None
            if mode in (APPEND, PREPEND) and cas and old is not None and old.cas != cas:
                return EXISTS, None  # memcached's ms with a C compares it (0: no compare)
            if mode is APPEND and old is not None:
                value, flags, exptime = old.value + value, old.flags, old.exptime
            elif mode is PREPEND and old is not None:
                value, flags, exptime = value + old.value, old.flags, old.exptime
        item = Item(key, value, flags & 0xFFFFFFFF, exptime)
        result = self.link(item)
        if result is not STORED:
            if mode is SET and old is not None:
                self.unlink(old)  # as memcached: a failed set must not leave stale data behind
            return result, None
        return result, item

    def link(self, item: Item) -> Result:
        """Insert `item` (replacing any item with its key), making room in its slab class."""
        cls = self.class_for(item.size)
        if cls is None:
            return Result.TOO_LARGE
        key = item.key
        old = self.items.get(key)
        if old is not None:
            self.unlink(old)
        chunks = 1 if item.size <= cls.size else -(-item.size // cls.size)
        if cls.used + chunks > cls.pages * cls.perslab and not self._make_room(cls, chunks):
            return Result.NO_MEMORY
        item.clsid = cls.id
        item.cas = self.next_cas
        self.next_cas += 1
        item.time = int(time.time()) - self.clock.started
        cls.used += chunks
        cls.requested += item.size
        cls.lru[key] = item
        self.items[key] = item
        self.stats["total_items"] += 1
        return STORED

    def unlink(self, item: Item) -> None:
        cls = self.classes[item.clsid - 1]
        del self.items[item.key]
        del cls.lru[item.key]
        cls.used -= 1 if item.size <= cls.size else -(-item.size // cls.size)
        cls.requested -= item.size

    def delete(self, key: bytes, cas: int = 0) -> Result:
        item = self.get(key, bump=False)
        if item is None:
            return Result.NOT_FOUND
        if cas and item.cas != cas:
            return Result.EXISTS
        self.unlink(item)
        return Result.STORED

    def touch(self, key: bytes, exptime: int) -> Item | None:
        item = self.get(key)
        if item is not None:
            item.exptime = exptime
        return item

    def arithmetic(self, key: bytes, delta: int, incr: bool, cas: int = 0
                   ) -> tuple[Result, Item | None]:  # fmt: skip
        """incr/decr: 64-bit unsigned, wrapping on incr, floored at 0 on decr, as memcached."""
        item = self.get(key)
        if item is None:
            return Result.NOT_FOUND, None
        if not item.value:  # as memcached: an empty value is refused before the CAS check
            return Result.NON_NUMERIC, item
        if cas and item.cas != cas:
            return Result.EXISTS, item
        current = parse_counter(item.value)
        if current is None:
            return Result.NON_NUMERIC, item
        number = (current + delta) & UINT64 if incr else max(current - delta, 0)
        text = str(number).encode()
        in_place = len(text) <= len(item.value)
        if in_place:  # memcached rewrites in place, padding with spaces
            text = text.ljust(len(item.value))
        new = Item(key, text, item.flags, item.exptime)
        new.fetched = in_place and item.fetched  # (a new item, when longer, starts unfetched)
        if self.link(new) is not Result.STORED:
            return Result.NO_MEMORY, None
        return Result.STORED, new

    def flush(self, delay: int = 0) -> None:
        """flush_all: drop every item now, or at `delay` seconds from now."""
        if delay > 0:
            self.flush_at = self.clock.realtime(delay)
            return
        self.flush_at = 0
        for item in list(self.items.values()):
            self.unlink(item)

    # slab accounting

    def class_for(self, size: int) -> SlabClass | None:
        """The class whose chunks hold an item of `size` bytes; None above -I."""
        try:
            return self._class_of[size]  # sizes repeat (same-shaped values): skip the search
        except KeyError:
            pass
        if len(self._class_of) >= 4096:
            self._class_of.clear()
        cls = self._class_of[size] = self._search_class(size)
        return cls

    def _search_class(self, size: int) -> SlabClass | None:
        if size > self.settings.item_size_max:
            return None
        classes = self.classes
        index = bisect_left(self._sizes, size)  # the first class whose chunks fit `size`
        # past the largest: chained across chunks of the largest class
        return classes[index] if index < len(classes) else classes[-1]

    def chunks(self, size: int, cls: SlabClass) -> int:
        return -(-size // cls.size)

    def _make_room(self, cls: SlabClass, chunks: int) -> bool:
        while cls.used + chunks > cls.pages * cls.perslab:
            if self._new_page(cls):
                continue
            if not cls.lru:
                return False
            tail = next(iter(cls.lru.values()))
            if tail.exptime and tail.exptime <= self.clock.now():
                self._reclaim(tail)
                continue
            if self.settings.no_evict:
                cls.count("outofmemory")
                return False
            self._evict(tail, cls)
        return True

    def _new_page(self, cls: SlabClass) -> bool:
        page = self.settings.slab_page_size
        # as memcached: every class may take its first page even past the limit
        if cls.pages and self.malloced + page > self.settings.memory_limit:
            return False
        cls.pages += 1
        self.malloced += page
        return True

    def _evict(self, item: Item, cls: SlabClass) -> None:
        now = self.clock.now()
        self.stats["evictions"] += 1
        cls.count("evicted")
        cls.counters["evicted_time"] = now - item.time
        if item.exptime:
            cls.count("evicted_nonzero")
        if not item.fetched:
            self.stats["evicted_unfetched"] += 1
            cls.count("evicted_unfetched")
        self.unlink(item)

    def _reclaim(self, item: Item) -> None:
        cls = self.classes[item.clsid - 1]
        self.stats["reclaimed"] += 1
        cls.count("reclaimed")
        if not item.fetched:
            self.stats["expired_unfetched"] += 1
            cls.count("expired_unfetched")
        self.unlink(item)

    def _bump(self, item: Item) -> None:
        self.classes[item.clsid - 1].lru.move_to_end(item.key)
        item.time = self.clock.now()


def parse_counter(value: bytes) -> int | None:
    """A stored counter as memcached's safe_strtoull reads it: whitespace, an optional sign,
    digits, then the end or whitespace (whatever follows is ignored: `5 abc` is 5). strtoull
    negates a minus, and memcached refuses the result only when it is negative as a signed
    number: `-0` is 0 and `-18446744073709551615` is 1, as in memcached."""
    found = _COUNTER.match(value)
    if found is None:
        return None
    digits = found[2].lstrip(b"0") or b"0"
    if len(digits) > 20 or int(digits) > UINT64:
        return None  # ERANGE
    number = int(digits)
    if found[1] == b"-":
        number = -number & UINT64
        if number > INT64_MAX:
            return None
    return number


_COUNTER = re.compile(rb"[ \t\n\v\f\r]*([+-]?)([0-9]+)(?:[ \t\n\v\f\r]|\Z)")
INT64_MAX = 2**63 - 1
