"""memcached's meta commands (mg ms md ma mn me), as 1.6.18 answers them.

Supported flags: mg `b c f h k l O q s t u v T` (C F ignored); ms `b c C F I k O q s T M`;
md `b C k O q`; ma `b c C N J D T M O q t v k`.
Every token after the key is one flag letter plus its argument.
Stale-while-revalidate (mg N/R, md I) is not served: those flags are refused as invalid.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable

from pymsm.server.commands import count_store
from pymsm.server.protocol import BAD_FORMAT, ERROR, Connection, key_ok, strtol32, strtoull
from pymsm.server.storage import Item, Mode, Result, item_size

Flags = dict[str, bytes]
MS_MODES = {b"S": Mode.SET, b"E": Mode.ADD, b"R": Mode.REPLACE, b"A": Mode.APPEND,
            b"P": Mode.PREPEND}  # fmt: skip
OPAQUE_MAX = 32  # bytes of the whole O token, as memcached's MFLAG_MAX_OPAQUE_LENGTH


class MetaError(Exception):
    """A refused meta command; the message is the CLIENT_ERROR text."""


def parse_flags(tokens: list[bytes], allowed: str, invalid: str, duplicate: str) -> Flags:
    """Flag letter -> argument, in request order (dicts keep it); raises MetaError."""
    flags: Flags = {}
    for token in tokens:
        letter = chr(token[0])
        if letter not in allowed:
            raise MetaError(invalid)
        if letter in flags:
            raise MetaError(duplicate)
        if letter == "O" and len(token) > OPAQUE_MAX:
            raise MetaError("opaque token too long")
        flags[letter] = token[1:]
    return flags


def number(flags: Flags, letter: str, parse: Callable[[bytes], int | None], error: str) -> int:
    value = parse(flags[letter])
    if value is None:
        raise MetaError(error)
    return value


def decode_key(key: bytes, flags: Flags) -> bytes:
    if not key_ok(key):
        raise MetaError(BAD_FORMAT[13:-2].decode())
    if "b" not in flags:
        return key
    try:
        return base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raise MetaError("error decoding key") from None


def echo(
    flags: Flags,
    key: bytes,
    item: Item | None,
    now: int,
    letters: str = "kO",
    no_item_cas: bool = False,
) -> bytes:
    """The return flags, in request order: k and O always; c f h l s t only with an item (c as
    c0 without one when `no_item_cas`, as memcached's ms answers)."""
    parts = []
    for letter, arg in flags.items():
        if letter not in letters:
            continue
        if letter == "k":
            parts.append(b" k" + key + (b" b" if "b" in flags else b""))
        elif letter == "O":
            parts.append(b" O" + arg)
        elif item is None and letter == "c" and no_item_cas:
            parts.append(b" c0")
        elif item is not None:
            parts.append(b" " + letter.encode() + item_flag(letter, item, now))
    return b"".join(parts)


def item_flag(letter: str, item: Item, now: int) -> bytes:
    if letter == "c":
        return b"%d" % item.cas
    if letter == "f":
        return b"%d" % item.flags
    if letter == "s":
        return b"%d" % len(item.value)
    if letter == "t":
        return b"%d" % (item.exptime - now if item.exptime else -1)
    if letter == "h":
        return b"1" if item.fetched else b"0"
    return b"%d" % (now - item.time)  # l: seconds since last access


def meta_command(run: Callable[[Connection, list[bytes]], None]) -> Callable[..., None]:
    def handler(conn: Connection, words: list[bytes]) -> None:
        if len(words) < 2:
            conn.out.append(ERROR)
            return
        conn.cache.stats.counters["cmd_meta"] += 1
        try:
            run(conn, words)
        except MetaError as exc:
            conn.out.append(b"CLIENT_ERROR " + str(exc).encode() + b"\r\n")

    return handler


@meta_command
def mg(conn: Connection, words: list[bytes]) -> None:
    # C and F mean nothing to mg; memcached accepts and ignores them
    flags = parse_flags(words[2:], "bcCfFhklOqstuvT", "invalid flag", "duplicate flag")
    key = decode_key(words[1], flags)
    ttl = None
    if "T" in flags:
        ttl = number(flags, "T", strtol32, "bad token in command line format")
    storage, counters = conn.cache.storage, conn.cache.stats.counters
    item = storage.get(key, bump="u" not in flags)
    counters["cmd_get"] += 1
    now = storage.clock.now()
    if item is None:
        counters["get_misses"] += 1
        if "q" not in flags:
            conn.out.append(b"EN" + echo(flags, words[1], None, now) + b"\r\n")
        return
    counters["get_hits"] += 1
    storage.classes[item.clsid - 1].count("get_hits")
    expires = None if ttl is None else storage.clock.realtime(ttl)
    letters = list(flags)
    # memcached reads the flags in order: t shows the TTL T sets only when T comes first
    if expires is not None and "t" in flags and letters.index("T") < letters.index("t"):
        item.exptime = expires
    returned = echo(flags, words[1], item, now, "cfhklOst")
    if expires is not None:
        item.exptime = expires
        counters["cmd_touch"] += 1
        counters["touch_hits"] += 1
    if "u" not in flags:  # as memcached: u leaves the item as unfetched as unbumped
        item.fetched = True
    if "v" in flags:
        conn.out.append(b"VA %d%s\r\n%s\r\n" % (len(item.value), returned, item.value))
        conn.out_bytes += len(item.value)
    else:
        conn.out.append(b"HD" + returned + b"\r\n")


@meta_command
def ms(conn: Connection, words: list[bytes]) -> None:
    if len(words) < 3:
        raise MetaError(BAD_FORMAT[13:-2].decode())
    if not key_ok(words[1]):
        raise MetaError(BAD_FORMAT[13:-2].decode())
    length = strtol32(words[2])
    if length is None or length < 0:
        raise MetaError(BAD_FORMAT[13:-2].decode())
    try:
        plan = ms_plan(conn, words)
    except MetaError:
        conn.swallow = length + 2  # memcached discards the block of a refused ms
        raise
    key, mode, item_flags, ttl, cas, flags = plan
    storage = conn.cache.storage
    if storage.class_for(item_size(len(key), item_flags, length)) is None:
        conn.cache.stats.counters["store_too_large"] += 1
        conn.out.append(Result.TOO_LARGE.value + b"\r\n")
        conn.swallow = length + 2
        return

    def complete(conn: Connection, data: bytes) -> None:
        if data[-2:] != b"\r\n":
            conn.out.append(b"CLIENT_ERROR bad data chunk\r\n")
            return
        # as memcached: C turns set and replace into cas; append and prepend compare a
        # non-zero C themselves (storage.store); add ignores it
        stored_mode = Mode.CAS if cas is not None and mode in (Mode.SET, Mode.REPLACE) else mode
        result, item = storage.store(stored_mode, key, item_flags, ttl, data[:-2], cas or 0)
        count_store(conn, stored_mode, result, item)
        code = {Result.STORED: b"HD", Result.EXISTS: b"EX", Result.NOT_FOUND: b"NF"}.get(
            result, b"NS"
        )
        if result in (Result.TOO_LARGE, Result.NO_MEMORY):
            conn.out.append(result.value + b"\r\n")
        elif not (code == b"HD" and "q" in flags):
            now = storage.clock.now()
            # memcached answers c0 when nothing was stored
            conn.out.append(
                code + echo(flags, words[1], item, now, "kOc", no_item_cas=True) + b"\r\n"
            )

    conn.expect = (length + 2, complete)


def ms_plan(
    conn: Connection, words: list[bytes]
) -> tuple[bytes, Mode, int, int, int | None, Flags]:
    flags = parse_flags(words[3:], "bcCFIkOqsTM", "invalid flag", "duplicate flag")
    key = decode_key(words[1], flags)
    item_flags = 0
    if "F" in flags:
        item_flags = number(flags, "F", strtoull, BAD_FORMAT[13:-2].decode()) & 0xFFFFFFFF
    ttl = 0
    if "T" in flags:
        ttl = number(flags, "T", strtol32, "bad token in command line format")
    cas = None
    if "C" in flags:
        cas = number(flags, "C", strtoull, "bad token in command line format")
    mode = Mode.SET
    if "M" in flags:
        if len(flags["M"]) != 1:
            raise MetaError("incorrect length for M token")
        if flags["M"] not in MS_MODES:
            raise MetaError("invalid mode for ms M token")
        mode = MS_MODES[flags["M"]]
    return key, mode, item_flags, conn.cache.storage.clock.realtime(ttl), cas, flags


@meta_command
def md(conn: Connection, words: list[bytes]) -> None:
    flags = parse_flags(
        words[2:], "bCkOq", "invalid or duplicate flag", "invalid or duplicate flag"
    )
    key = decode_key(words[1], flags)
    cas = None  # C0 compares too, and fails: memcached checks any C it is given
    if "C" in flags:
        cas = number(flags, "C", strtoull, "bad token in command line format")
    storage, counters = conn.cache.storage, conn.cache.stats.counters
    item = storage.peek(key)
    if item is None:
        counters["delete_misses"] += 1
        code = b"NF"
    elif cas is not None and item.cas != cas:
        code = b"EX"
    else:
        counters["delete_hits"] += 1
        storage.classes[item.clsid - 1].count("delete_hits")
        storage.unlink(item)
        code = b"HD"
    if not (code == b"HD" and "q" in flags):
        conn.out.append(code + echo(flags, words[1], None, 0) + b"\r\n")


@meta_command
def ma(conn: Connection, words: list[bytes]) -> None:
    bad = "invalid or duplicate flag"
    flags = parse_flags(words[2:], "bcCNJDTMOqtvk", bad, bad)
    key = decode_key(words[1], flags)
    delta = number(flags, "D", strtoull, bad) if "D" in flags else 1
    initial = number(flags, "J", strtoull, bad) if "J" in flags else 0
    vivify = number(flags, "N", strtol32, bad) if "N" in flags else None
    ttl = number(flags, "T", strtol32, bad) if "T" in flags else None
    cas = number(flags, "C", strtoull, bad) if "C" in flags else 0
    incr = True
    if "M" in flags:
        if flags["M"] not in (b"I", b"i", b"+", b"D", b"d", b"-"):
            raise MetaError("invalid mode for ma M token")
        incr = flags["M"] in (b"I", b"i", b"+")
    storage, counters = conn.cache.storage, conn.cache.stats.counters
    result, item = storage.arithmetic(key, delta, incr, cas)
    name = "incr" if incr else "decr"
    created = False
    if result is Result.NOT_FOUND and vivify is not None:
        expires = storage.clock.realtime(vivify)
        result, item = storage.store(Mode.ADD, key, 0, expires, b"%d" % initial)
        created = result is Result.STORED
    if result is Result.NON_NUMERIC:
        raise MetaError(Result.NON_NUMERIC.value[13:].decode())
    if result is Result.NOT_FOUND:
        counters[f"{name}_misses"] += 1
        conn.out.append(b"NF" + echo(flags, words[1], None, 0) + b"\r\n")
        return
    if result is not Result.STORED or item is None:
        conn.out.append((b"EX" if result is Result.EXISTS else b"NS") + b"\r\n")
        return
    counters[f"{name}_hits"] += 1
    if ttl is not None:
        item.exptime = storage.clock.realtime(ttl)
    returned = echo(flags, words[1], item, storage.clock.now(), "ctkO")
    value = item.value.rstrip(b" ")
    if "q" in flags and not created:  # memcached answers a created item despite q
        return
    if "v" in flags:
        conn.out.append(b"VA %d%s\r\n%s\r\n" % (len(value), returned, value))
    else:
        conn.out.append(b"HD" + returned + b"\r\n")


def mn(conn: Connection, words: list[bytes]) -> None:
    conn.out.append(b"MN\r\n")


@meta_command
def me(conn: Connection, words: list[bytes]) -> None:
    storage = conn.cache.storage
    item = storage.peek(words[1])
    if item is None:
        conn.out.append(b"EN\r\n")
        return
    now = storage.clock.now()
    exp = item.exptime - now if item.exptime else -1
    fetched = b"yes" if item.fetched else b"no"
    conn.out.append(
        b"ME %s exp=%d la=%d cas=%d fetch=%s cls=%d size=%d\r\n"
        % (words[1], exp, now - item.time, item.cas, fetched, item.clsid, item.size)
    )


Connection.handlers.update({b"mg": mg, b"ms": ms, b"md": md, b"ma": ma, b"mn": mn, b"me": me})
