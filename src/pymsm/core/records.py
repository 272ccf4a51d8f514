"""Binary layouts of what pymsm stores: the session record and the 20-byte validity record.

Record (version 1), big-endian:

    offset size  field
    0      2     magic b"MS"
    2      1     layout version (1)
    3      1     codec id (1 json, 2 msgpack, 3 pickle)
    4      1     flags (1 zlib-compressed payload, 2 signed)
    5      1     reserved (0)
    6      8     created, ms since the epoch
    14     8     written: when this copy was written, ms (its store lifetime counts from here)
    22     4     max inactive interval, s (signed; <= 0 never expires)
    26     n     attributes encoded by the codec (compressed when flag 1)
    26+n   32    HMAC-SHA256 over everything before it (when flag 2)

Validity (MSM's layout widened to 32-bit timeout): idle timeout s (int32), last accessed ms
(int64), this accessed ms (int64): 20 bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import zlib
from collections.abc import Sequence
from typing import NamedTuple

from pymsm.exceptions import RecordError, SignatureError

MAGIC = b"MS"
VERSION = 1
FLAG_COMPRESSED = 1
FLAG_SIGNED = 2
_HEADER = struct.Struct(">2sBBBxqqi")
HEADER_SIZE = _HEADER.size
SIGNATURE_SIZE = 32
_VALIDITY = struct.Struct(">iqq")
VALIDITY_SIZE = _VALIDITY.size


# Record and Validity are NamedTuples: immutable like a frozen dataclass, built in a third of the
# time (every load builds one of each)
class Record(NamedTuple):
    codec_id: int
    created: int
    written: int
    max_inactive: int
    payload: bytes  # encoded attributes, decompressed and verified


class Validity(NamedTuple):
    max_inactive: int
    last_accessed: int
    this_accessed: int

    def expires_at(self) -> int | None:
        """Expiry time in ms, or None when the session never expires."""
        return None if self.max_inactive <= 0 else self.this_accessed + self.max_inactive * 1000

    def encode(self) -> bytes:
        return _VALIDITY.pack(self.max_inactive, self.last_accessed, self.this_accessed)

    @classmethod
    def decode(cls, data: bytes) -> Validity:
        if len(data) != VALIDITY_SIZE:
            raise RecordError(f"validity record has {len(data)} bytes, expected {VALIDITY_SIZE}")
        return cls(*_VALIDITY.unpack(data))


# Written in place of the validity when a session is deleted: readers of either mode see it as
# long expired; a sticky process tells it from a validity its node lost (restart), which must
# not end the session it holds in memory (core/sticky.py).
TOMBSTONE = Validity(1, 0, 0)


# The value of a tombstone key (`Keys.tomb`). An id that ended (logout, rotation, expiry): never
# a session again. An id a session moved away from (relocation, re-home, takeover) under an id
# that keeps its base, so the session may come back to it: the time of the move, and only
# copies written before then are the session's past (`moved_at`).
ENDED = b"1"


def moved_mark(at_ms: int) -> bytes:
    return b"m%d" % at_ms


def moved_at(value: bytes) -> int | None:
    """When the session moved away from the id (ms) if `value` is a move's tombstone; None if
    the id ended (anything that is not a move's mark reads as ended)."""
    if value[:1] == b"m" and value[1:].isdigit():
        return int(value[1:])
    return None


def before_move(written: int, moved: int) -> bool:
    """Was a copy written at `written` (ms) before the session moved away from its id at
    `moved`, so the id's past? One written in the move's millisecond counts as live: a tie
    keeps data."""
    return written < moved


def written_at(data: bytes) -> int | None:
    """When a stored record was written (ms), read from its header alone; None if `data` is not
    a record of this layout. Unverified: for deciding whether a copy predates a move."""
    if len(data) < HEADER_SIZE:
        return None
    magic, version, _, _, _, written, _ = _HEADER.unpack_from(data)
    return written if magic == MAGIC and version == VERSION else None


MAX_PAYLOAD = 64 * 1024 * 1024  # a corrupt or hostile record must not inflate without bound


def _decompress(data: bytes) -> bytes:
    inflater = zlib.decompressobj()
    try:
        payload = inflater.decompress(data, MAX_PAYLOAD)
    except zlib.error as exc:
        raise RecordError(f"compressed payload is corrupt: {exc}") from exc
    if inflater.unconsumed_tail or not inflater.eof:
        raise RecordError("compressed payload is truncated or inflates past 64 MiB")
    return payload


class RecordFormat:
    """Encodes and decodes records: compression above a threshold, HMAC signing with key rotation.

    `secret_keys`: the first key signs; every key verifies (rotate by putting the new key first).
    """

    def __init__(
        self,
        secret_keys: Sequence[bytes] = (),
        compress_threshold: int | None = None,
    ) -> None:
        self._keys = [hashlib.sha256(b"pymsm-record-hmac:" + k).digest() for k in secret_keys]
        self.signed = bool(self._keys)
        self.compress_threshold = compress_threshold

    def encode(
        self, codec_id: int, created: int, written: int, max_inactive: int, payload: bytes
    ) -> bytes:
        flags = 0
        if self.compress_threshold is not None and len(payload) >= self.compress_threshold:
            payload = zlib.compress(payload, 1)
            flags |= FLAG_COMPRESSED
        if self.signed:
            flags |= FLAG_SIGNED
        data = (
            _HEADER.pack(MAGIC, VERSION, codec_id, flags, created, written, max_inactive) + payload
        )
        if self.signed:
            data += hmac.digest(self._keys[0], data, "sha256")
        return data

    def decode(self, data: bytes, require_signature: bool = False) -> Record:
        """Raises RecordError (or SignatureError) for anything that is not a valid record."""
        if len(data) < HEADER_SIZE:
            raise RecordError(f"record too short ({len(data)} bytes)")
        magic, version, codec_id, flags, created, written, max_inactive = _HEADER.unpack_from(data)
        if magic != MAGIC:
            raise RecordError("not a pymsm record (bad magic)")
        if version != VERSION:
            raise RecordError(
                f"record layout version {version} is not supported (expected {VERSION})"
            )
        end = len(data)
        if flags & FLAG_SIGNED:
            end -= SIGNATURE_SIZE
            if end < HEADER_SIZE:
                raise RecordError("signed record too short")
            self._verify(data[:end], data[end:])
        elif require_signature:
            raise SignatureError("record is not signed but its codec needs a verified signature")
        payload = data[HEADER_SIZE:end]
        if flags & FLAG_COMPRESSED:
            payload = _decompress(payload)
        return Record(codec_id, created, written, max_inactive, payload)

    def _verify(self, signed: bytes, signature: bytes) -> None:
        if not self._keys:
            raise SignatureError("record is signed but no secret_key is configured to verify it")
        for key in self._keys:
            if hmac.compare_digest(hmac.digest(key, signed, "sha256"), signature):
                return
        raise SignatureError("record signature does not verify (tampered, or another secret_key)")
