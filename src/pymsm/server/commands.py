"""memcached's classic text commands, answering as memcached 1.6.18 answers.

Each handler takes the connection and the command's words (split on spaces, as memcached's
tokenizer does) and appends its answer; storage commands ask the connection for their data block.
"""

from __future__ import annotations

from urllib.parse import quote_from_bytes

from pymsm.server import stats as stats_module
from pymsm.server.protocol import (
    BAD_CHUNK,
    BAD_FORMAT,
    ERROR,
    Connection,
    key_ok,
    strtol32,
    strtoull,
)
from pymsm.server.settings import VERSION
from pymsm.server.storage import CAS, STORED, Item, Mode, Result, Storage, item_size

MODES = {
    b"set": Mode.SET,
    b"add": Mode.ADD,
    b"replace": Mode.REPLACE,
    b"append": Mode.APPEND,
    b"prepend": Mode.PREPEND,
    b"cas": Mode.CAS,
}
INT_MAX = (1 << 31) - 1
# every storage answer with its CRLF, built once (Enum .value is a slow property in 3.11)
RESULT_LINES = {result: result.value + b"\r\n" for result in Result}
CAS_COUNTER = {Result.STORED: "cas_hits", Result.EXISTS: "cas_badval"}


def retrieve(conn: Connection, words: list[bytes]) -> None:
    """get / gets / gat / gats."""
    name = words[0]
    if len(words) < 2:
        conn.out.append(ERROR)
        return
    touch = name in (b"gat", b"gats")
    with_cas = name in (b"gets", b"gats")
    keys = words[1:]
    exptime = 0
    if touch:
        parsed = strtol32(words[1])
        if parsed is None:
            conn.out.append(b"CLIENT_ERROR invalid exptime argument\r\n")
            return
        exptime = conn.cache.storage.clock.realtime(parsed)
        keys = words[2:]
    emit_values(conn, keys, with_cas, touch, exptime)


def emit_values(
    conn: Connection, keys: list[bytes], with_cas: bool, touch: bool, exptime: int
) -> None:
    storage, counters, out = conn.cache.storage, conn.counters, conn.out
    for key in keys:
        if len(key) > 250:
            out.append(BAD_FORMAT)
            return
        item = storage.get(key)
        if touch:
            counters["cmd_touch"] += 1
            counters["touch_hits" if item else "touch_misses"] += 1
        else:
            counters["cmd_get"] += 1
        if item is None:
            counters["get_misses"] += 1
            continue
        if touch:
            item.exptime = exptime
        counters["get_hits"] += 1
        storage.classes[item.clsid - 1].count("touch_hits" if touch else "get_hits")
        item.fetched = True
        value = item.value
        if with_cas:
            out.append(b"VALUE %s %d %d %d\r\n" % (key, item.flags, len(value), item.cas))
        else:
            out.append(b"VALUE %s %d %d\r\n" % (key, item.flags, len(value)))
        out.append(value)
        out.append(b"\r\n")
        conn.out_bytes += len(value)
    out.append(b"END\r\n")


def update(conn: Connection, words: list[bytes]) -> None:
    """set / add / replace / append / prepend / cas: parse, then wait for the data block."""
    mode = MODES[words[0]]
    arity = 6 if mode is CAS else 5
    if len(words) != arity and len(words) != arity + 1:
        conn.out.append(ERROR)
        return
    noreply = words[-1] == b"noreply"
    key = words[1]
    flags, exptime, length = strtoull(words[2]), strtol32(words[3]), strtol32(words[4])
    cas = strtoull(words[5]) if mode is CAS else 0
    if len(key) > 250 or flags is None or exptime is None or length is None or cas is None:
        conn.reply(BAD_FORMAT[:-2], noreply)
        return
    if length < 0 or length > INT_MAX - 2:
        conn.reply(BAD_FORMAT[:-2], noreply)
        return
    storage = conn.cache.storage
    expires = storage.clock.realtime(exptime) if exptime else 0

    def complete(conn: Connection, data: bytes) -> None:
        if data[-2:] != b"\r\n":
            conn.reply(BAD_CHUNK[:-2], noreply)
            return
        result, item = storage.store(mode, key, flags, expires, data[:-2], cas)
        count_store(conn, mode, result, item)
        if not noreply:
            # identity first: an Enum's __hash__ is Python code
            conn.out.append(b"STORED\r\n" if result is STORED else RESULT_LINES[result])

    if storage.class_for(item_size(len(key), flags & 0xFFFFFFFF, length)) is None:
        refuse_too_large(conn, mode, key, length + 2, noreply)
        return
    conn.expect = (length + 2, complete)


def refuse_too_large(conn: Connection, mode: Mode, key: bytes, length: int, noreply: bool) -> None:
    """Answer at once and swallow the block, as memcached does for items over -I."""
    conn.cache.stats.counters["store_too_large"] += 1
    conn.reply(Result.TOO_LARGE.value, noreply)
    conn.swallow = length
    if mode is Mode.SET:  # a failed set must not leave the old value readable
        item = conn.cache.storage.peek(key)
        if item is not None:
            conn.cache.storage.unlink(item)


def count_store(conn: Connection, mode: Mode, result: Result, item: Item | None) -> None:
    counters = conn.counters
    counters["cmd_set"] += 1
    if item is not None:  # stored: the common case
        cls = conn.cache.storage.classes[item.clsid - 1]
        cls.count("cmd_set")
        if mode is CAS:
            counters["cas_hits"] += 1
            cls.count("cas_hits")
        return
    if result is Result.NO_MEMORY:
        counters["store_no_memory"] += 1
    if mode is CAS:
        counters[CAS_COUNTER.get(result, "cas_misses")] += 1


def delete(conn: Connection, words: list[bytes]) -> None:
    if not 2 <= len(words) <= 4:
        conn.out.append(ERROR)
        return
    noreply = words[-1] == b"noreply"
    if len(words) > 2:
        hold_is_zero = words[2] == b"0"
        if not ((len(words) == 3 and (hold_is_zero or noreply)) or (hold_is_zero and noreply)):
            usage = b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]"
            conn.reply(usage, noreply)
            return
    key = words[1]
    if not key_ok(key):
        conn.reply(BAD_FORMAT[:-2], noreply)
        return
    storage, counters = conn.cache.storage, conn.cache.stats.counters
    item = storage.peek(key)
    if item is None:
        counters["delete_misses"] += 1
        conn.reply(b"NOT_FOUND", noreply)
        return
    counters["delete_hits"] += 1
    storage.classes[item.clsid - 1].count("delete_hits")
    storage.unlink(item)
    conn.reply(b"DELETED", noreply)


def arithmetic(conn: Connection, words: list[bytes]) -> None:
    if len(words) not in (3, 4):
        conn.out.append(ERROR)
        return
    incr = words[0] == b"incr"
    noreply = words[-1] == b"noreply"
    key = words[1]
    if not key_ok(key):
        conn.reply(BAD_FORMAT[:-2], noreply)
        return
    delta = strtoull(words[2])
    if delta is None:
        conn.reply(b"CLIENT_ERROR invalid numeric delta argument", noreply)
        return
    storage, counters = conn.cache.storage, conn.cache.stats.counters
    result, item = storage.arithmetic(key, delta, incr)
    name = "incr" if incr else "decr"
    if result is Result.NOT_FOUND:
        counters[f"{name}_misses"] += 1
        conn.reply(b"NOT_FOUND", noreply)
    elif result is Result.STORED and item is not None:
        counters[f"{name}_hits"] += 1
        storage.classes[item.clsid - 1].count(f"{name}_hits")
        conn.reply(item.value.rstrip(b" "), noreply)
    else:
        conn.reply(result.value, noreply)


def touch(conn: Connection, words: list[bytes]) -> None:
    if len(words) not in (3, 4):
        conn.out.append(ERROR)
        return
    noreply = words[-1] == b"noreply"
    key = words[1]
    if not key_ok(key):
        conn.reply(BAD_FORMAT[:-2], noreply)
        return
    exptime = strtol32(words[2])
    if exptime is None:
        conn.reply(b"CLIENT_ERROR invalid exptime argument", noreply)
        return
    storage, counters = conn.cache.storage, conn.cache.stats.counters
    counters["cmd_touch"] += 1
    item = storage.touch(key, storage.clock.realtime(exptime))
    if item is None:
        counters["touch_misses"] += 1
        conn.reply(b"NOT_FOUND", noreply)
        return
    counters["touch_hits"] += 1
    storage.classes[item.clsid - 1].count("touch_hits")
    item.fetched = True  # as memcached: a touched item counts as fetched (mg h, *_unfetched)
    conn.reply(b"TOUCHED", noreply)


def flush_all(conn: Connection, words: list[bytes]) -> None:
    if len(words) > 3:
        conn.out.append(ERROR)
        return
    noreply = words[-1] == b"noreply"
    delay = 0
    if len(words) == 3 or (len(words) == 2 and not noreply):
        parsed = strtol32(words[1])
        if parsed is None:
            conn.reply(b"CLIENT_ERROR invalid exptime argument", noreply)
            return
        delay = parsed
    conn.cache.stats.counters["cmd_flush"] += 1
    conn.cache.storage.flush(delay)
    conn.reply(b"OK", noreply)


def version(conn: Connection, words: list[bytes]) -> None:
    conn.out.append(b"VERSION " + VERSION.encode() + b"\r\n")


def verbosity(conn: Connection, words: list[bytes]) -> None:
    if len(words) not in (2, 3):
        conn.out.append(ERROR)
        return
    noreply = words[-1] == b"noreply"
    level = strtoull(words[1])
    if level is None:
        conn.reply(BAD_FORMAT[:-2], noreply)
        return
    conn.cache.stats.verbosity = level
    conn.reply(b"OK", noreply)


def quit_(conn: Connection, words: list[bytes]) -> None:
    conn.closing = True


def stats(conn: Connection, words: list[bytes]) -> None:
    st = conn.cache.stats
    sub = words[1] if len(words) > 1 else b""
    if sub == b"":
        conn.out.append(stats_module.render(st.general()))
    elif sub == b"reset":
        st.reset()
        conn.out.append(b"RESET\r\n")
    elif sub == b"detail":
        conn.out.append(b"CLIENT_ERROR usage: stats detail on|off|dump\r\n")
    elif sub == b"cachedump":
        cachedump(conn, words)
    else:
        section = {
            b"settings": st.settings_stats,
            b"items": st.items,
            b"slabs": st.slabs,
            b"sizes": st.sizes,
        }.get(sub)
        conn.out.append(ERROR if section is None else stats_module.render(section()))


def cachedump(conn: Connection, words: list[bytes]) -> None:
    if len(words) < 4:
        conn.out.append(b"CLIENT_ERROR bad command line\r\n")
        return
    clsid, limit = strtoull(words[2]), strtoull(words[3])
    storage = conn.cache.storage
    if clsid is None or limit is None:
        conn.out.append(b"CLIENT_ERROR bad command line\r\n")
        return
    if not 1 <= clsid <= len(storage.classes):
        conn.out.append(b"CLIENT_ERROR Illegal slab id\r\n")
        return
    lines: list[bytes] = []
    for item in reversed(storage.classes[clsid - 1].lru.values()):
        if limit and len(lines) >= limit:
            break
        exp = item.exptime + storage.clock.started if item.exptime else 0
        lines.append(b"ITEM %s [%d b; %d s]\r\n" % (item.key, len(item.value), exp))
    conn.out.append(b"".join(lines) + b"END\r\n")


def lru_crawler(conn: Connection, words: list[bytes]) -> None:
    if words[1:3] != [b"metadump", b"all"] and words[1:2] != [b"metadump"]:
        conn.out.append(b"CLIENT_ERROR bad command line format\r\n")
        return
    storage = conn.cache.storage
    lines = [metadump_line(storage, item) + b"\n" for item in list(storage.items.values())]
    conn.out.append(b"".join(lines) + b"END\r\n")


def metadump_line(storage: Storage, item: Item) -> bytes:
    """One `lru_crawler metadump` line (also `me`): URL-encoded key, absolute times."""
    started = storage.clock.started
    exp = item.exptime + started if item.exptime else -1
    key = quote_from_bytes(item.key, safe="").encode()
    fetched = b"yes" if item.fetched else b"no"
    return b"key=%s exp=%d la=%d cas=%d fetch=%s cls=%d size=%d" % (
        key,
        exp,
        item.time + started,
        item.cas,
        fetched,
        item.clsid,
        item.size,
    )


for _name in MODES:
    Connection.handlers[_name] = update
Connection.handlers.update(
    {
        b"get": retrieve,
        b"gets": retrieve,
        b"gat": retrieve,
        b"gats": retrieve,
        b"delete": delete,
        b"incr": arithmetic,
        b"decr": arithmetic,
        b"touch": touch,
        b"flush_all": flush_all,
        b"version": version,
        b"verbosity": verbosity,
        b"quit": quit_,
        b"stats": stats,
        b"lru_crawler": lru_crawler,
    }
)
