"""Optimistic concurrency: compare-and-set writes with a per-key merge on conflict.

A request read the record with a CAS token. Its write is a `cas` with that token; if another
request wrote meanwhile, the write is refused, and this module re-reads the record, applies this
request's own changes (the keys it set, including values changed in place, and the keys it
deleted) onto the fresh data, and tries again with the new token, a bounded number of times.
So concurrent requests lose no update to different keys, and per key the last write wins.

A record that is gone (logout, expiry) is never written again: `cas` on an absent key fails.
"""

from __future__ import annotations

import random
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from pymsm.exceptions import CodecError, RecordError, StoreError

from .ops import Cas, Gets, Op, Sleep
from .session import Session

if TYPE_CHECKING:
    from .context import Context

MAX_RETRIES = 10
MAX_JITTER = 0.05  # s: a retry that conflicted again waits up to 1 ms, 2 ms, ... at most 50 ms
_rng = random.Random()


def own_changes(
    session: Session, base: dict[str, Any] | None
) -> tuple[frozenset[str], frozenset[str]]:
    """(keys set, keys deleted) by this request: what it did through the mapping API, plus what
    differs from `base` (the data as loaded), which catches values changed in place."""
    set_keys, deleted = session.changes
    current = session.data
    if base is None:
        return set_keys, deleted
    in_place = {k for k, v in current.items() if k not in base or base[k] != v}
    gone = {k for k in base if k not in current}
    return set_keys | in_place, deleted | gone


def merge(
    fresh: dict[str, Any],
    current: dict[str, Any],
    changes: tuple[frozenset[str], frozenset[str]],
) -> dict[str, Any]:
    """`fresh` (what the store holds now) with this request's changes applied on top."""
    set_keys, deleted = changes
    merged = dict(fresh)
    for key in set_keys:
        if key in current:
            merged[key] = current[key]
    for key in deleted:
        merged.pop(key, None)
    return merged


def decode_data(ctx: Context, raw: bytes) -> dict[str, Any]:
    """The attributes in a stored record; raises RecordError."""
    codec = ctx.decoders.get(raw[3]) if len(raw) > 3 else None
    record = ctx.format.decode(raw, require_signature=codec is not None and codec.needs_signature)
    decoder = ctx.decoders.get(record.codec_id)
    if decoder is None:
        raise RecordError(f"record codec id {record.codec_id} is not enabled here")
    data: dict[str, Any] = decoder.decode(record.payload)
    return data


def resolve(
    ctx: Context, session: Session, node: str, key: str, ttl: int, created: int
) -> Generator[Op, Any, tuple[str, bytes | None]]:
    """After a refused `cas`: re-read, merge, `cas` again. Returns (status, raw record written):
    ("stored", raw), ("gone", None) when the record disappeared, ("failed", None) when the
    node failed, the fresh record is unreadable, or the retries ran out. From the second retry
    on it waits a random, growing delay (a `Sleep` op) so hot writers stop colliding in step."""
    base = _base(ctx, session)
    changes = own_changes(session, base)
    for attempt in range(MAX_RETRIES):
        if attempt:  # conflicted again: hot session; spread the writers out (full jitter)
            yield Sleep(_rng.uniform(0, min(MAX_JITTER, 0.001 * 2**attempt)))
        ctx.counts["cas_retry"] += 1
        found = yield Gets(node, (key,))
        if isinstance(found, StoreError):
            return "failed", None
        if key not in found:
            return "gone", None
        raw_fresh, token = found[key]
        try:
            fresh = decode_data(ctx, raw_fresh)
        except RecordError as exc:
            ctx.events.append(f"cannot merge {session.sid}: stored record unreadable: {exc}")
            return "failed", None
        merged = merge(fresh, session.data, changes)
        try:
            payload = ctx.codec.encode(_filtered(ctx, merged))
        except CodecError as exc:
            ctx.events.append(f"cannot merge {session.sid}: {exc}")
            return "failed", None
        raw = ctx.format.encode(
            ctx.codec.id, created, ctx.now_ms, session.max_inactive_interval, payload
        )
        result = yield Cas(node, key, raw, ttl, token)
        if isinstance(result, StoreError):
            return "failed", None
        if result is None:
            return "gone", None
        if result:
            session.replace_data(merged)
            return "stored", raw
    ctx.counts["cas_exhausted"] += 1
    return "failed", None


def _base(ctx: Context, session: Session) -> dict[str, Any] | None:
    if session.record is None:
        return None
    decoder = ctx.decoders.get(session.record.codec_id)
    try:
        return None if decoder is None else decoder.decode(session.record.payload)
    except RecordError:
        return None


def _filtered(ctx: Context, data: dict[str, Any]) -> dict[str, Any]:
    if ctx.attribute_filter is None:
        return data
    return {k: v for k, v in data.items() if ctx.attribute_filter.fullmatch(k)}
