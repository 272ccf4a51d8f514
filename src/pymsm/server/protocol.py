"""One client connection as a sans-I/O state machine: bytes in, answers out.

`Connection.feed()` takes whatever the socket delivered and leaves the answers in `take_output()`;
it never raises on client input and never buffers more than one command line (2 KB; a multi-key
`get` line up to 1 MB) or one data block (up to -I). The asyncio layer in server.py only pumps
bytes, so tests and the fuzzer can drive this class directly.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from pymsm.server.settings import GET_LINE_MAX, KEY_MAX_LENGTH, LINE_MAX, Settings
from pymsm.server.stats import Stats
from pymsm.server.storage import Storage

log = logging.getLogger("pymsm.server")

ERROR = b"ERROR\r\n"
BAD_FORMAT = b"CLIENT_ERROR bad command line format\r\n"
BAD_CHUNK = b"CLIENT_ERROR bad data chunk\r\n"
UINT64 = (1 << 64) - 1
OUTPUT_CHUNK = 256 * 1024  # hand answers to the transport at least this often
_NUMBER = re.compile(rb"[\t\n\v\f\r ]*([+-]?)(\d+)\Z")

Handler = Callable[["Connection", list[bytes]], None]
DataHandler = Callable[["Connection", bytes], None]


@dataclass
class Cache:
    """What every connection of one server shares."""

    settings: Settings
    storage: Storage = field(init=False)
    stats: Stats = field(init=False)

    def __post_init__(self) -> None:
        self.storage = Storage(self.settings)
        self.stats = Stats(self.settings, self.storage)


class Connection:
    """Parses one client's byte stream and runs its commands against the shared Cache."""

    handlers: dict[bytes, Handler] = {}  # filled by commands.py and meta.py

    def __init__(self, cache: Cache) -> None:
        self.cache = cache
        self.buf = bytearray()
        self.out: list[bytes] = []
        self.closing = False
        self.paused = False  # set by the transport while the client does not read
        self.swallow = 0  # bytes of a refused data block still to discard
        self.expect: tuple[int, DataHandler] | None = None  # a data block we wait for
        self.started = False
        self.out_bytes = 0  # value bytes queued in `out` since the last flush
        self.on_output: Callable[[], None] | None = None  # lets the transport drain `out`
        self.counters = cache.stats.counters

    # input

    def feed(self, data: bytes) -> None:
        if not self.started:
            self.started = True
            if data[:1] == b"\x80":
                log.info("closing a binary-protocol client: only the text protocol is served")
                self.closing = True
                return
        self.counters["bytes_read"] += len(data)
        if self.buf:
            self.buf += data
            self.process()
            return
        # the usual case (whole commands per read): parse the bytes as received, no buffer copy
        pos = self._run(data)
        if pos < len(data):
            self.buf += memoryview(data)[pos:]

    def process(self) -> None:
        """Run every complete command in the buffer (stops early while paused or closing)."""
        del self.buf[: self._run(self.buf)]

    def _run(self, buf: bytes | bytearray) -> int:
        """Run the complete commands of `buf`; returns how many bytes were consumed."""
        pos = 0
        size = len(buf)
        while pos < size and not self.closing and not self.paused:
            if self.swallow:
                taken = min(self.swallow, size - pos)
                pos += taken
                self.swallow -= taken
            elif self.expect is not None:
                length, handler = self.expect
                if size - pos < length:
                    break
                self.expect = None
                handler(self, bytes(buf[pos : pos + length]))  # bytes(bytes) is no copy
                pos += length
            else:
                end = buf.find(b"\n", pos)
                if end < 0:
                    self._check_partial_line(buf, pos)
                    break
                line = bytes(buf[pos : end - 1 if end > pos and buf[end - 1] == 13 else end])
                pos = end + 1
                self.execute(line)
            if self.out_bytes > OUTPUT_CHUNK and self.on_output is not None:
                self.on_output()  # may pause us (backpressure) before the next command
        return pos

    def _check_partial_line(self, buf: bytes | bytearray, pos: int) -> None:
        """memcached closes on 2 KB without a newline, unless it is a (long) multi-key get."""
        size = len(buf) - pos
        if size <= LINE_MAX:
            return
        head = bytes(buf[pos : pos + 110]).lstrip(b" ")
        is_get = head.startswith((b"get ", b"gets ")) and size - len(head) <= 100
        if not is_get or size > GET_LINE_MAX:
            log.info("closing a connection: command line of %d bytes without a newline", size)
            self.closing = True

    def execute(self, line: bytes) -> None:
        nul = line.find(b"\0")
        if nul >= 0:
            line = line[:nul]  # memcached reads the line as a C string: it ends at a NUL
        words = line.split(b" ")
        if b"" in words:
            words = [word for word in words if word]
        if not words or len(words[0]) < 2:
            self.out.append(ERROR)
            return
        handler = self.handlers.get(words[0])
        if handler is not None:
            handler(self, words)
        elif words[-1].startswith(b"HTTP/"):
            self.closing = True  # an HTTP client found the port: hang up, as memcached
        else:
            self.out.append(ERROR)

    # output

    def reply(self, message: bytes, noreply: bool = False) -> None:
        if not noreply:
            self.out.append(message + b"\r\n")

    def take_output(self) -> bytes:
        data = b"".join(self.out)
        self.out.clear()
        self.out_bytes = 0
        self.counters["bytes_written"] += len(data)
        return data


# memcached's number parsers (util.c), so edge cases answer the same


def strtoull(token: bytes) -> int | None:
    """safe_strtoull: unsigned 64-bit; a '-' is refused unless the result stays small."""
    if token.isdigit() and len(token) < 20:  # the common case; isdigit() is ASCII-only on bytes
        return int(token)
    match = _NUMBER.match(token)
    if match is None:
        return None
    number = int(match.group(2))
    if number > UINT64:
        return None
    if match.group(1) == b"-":
        number = -number & UINT64
        if number >= 1 << 63:
            return None
    return number


def strtol32(token: bytes) -> int | None:
    """safe_strtol: a signed long, then stored in an int32 (so it wraps, as in memcached)."""
    if token.isdigit() and len(token) < 10:  # the common case: fits an int32 as it is
        return int(token)
    match = _NUMBER.match(token)
    if match is None:
        return None
    number = int(match.group(2))
    if match.group(1) == b"-":
        number = -number
    if not -(1 << 63) <= number < 1 << 63:
        return None
    return (number + (1 << 31)) % (1 << 32) - (1 << 31)


def key_ok(key: bytes) -> bool:
    return len(key) <= KEY_MAX_LENGTH
