import contextlib
import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pymsm.core.codecs import JsonCodec, MsgpackCodec, PickleCodec, codec_by_name
from pymsm.core.records import RecordFormat, Validity
from pymsm.exceptions import CodecError, ConfigError, RecordError, SignatureError

RICH: dict[str, Any] = {
    "when": dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC),
    "day": dt.date(2024, 5, 1),
    "id": uuid.UUID("12345678123456781234567812345678"),
    "price": Decimal("10.25"),
    "raw": b"\x00\xff",
    "tags": {"a", "b"},
    "pair": (1, "x"),
    "nested": {"list": [1, (2, 3)], " tricky": 1},
    "plain": None,
}


@pytest.mark.parametrize("codec", [JsonCodec(), MsgpackCodec(), PickleCodec()])
def test_codecs_round_trip_the_tagged_types(codec: Any) -> None:
    assert codec.decode(codec.encode(RICH)) == RICH


def test_json_refuses_what_it_cannot_store_with_a_hint() -> None:
    with pytest.raises(CodecError, match="pickle"):
        JsonCodec().encode({"x": object()})
    with pytest.raises(CodecError, match="string dict keys"):
        JsonCodec().encode({"x": {1: 2}})


def test_pickle_needs_a_secret_key() -> None:
    with pytest.raises(ConfigError, match="secret_key"):
        codec_by_name("pickle", None)


def test_record_round_trip_with_compression_and_signature() -> None:
    fmt = RecordFormat([b"new", b"old"], compress_threshold=10)
    raw = fmt.encode(1, 1000, 2000, 1800, b'{"a":"' + b"x" * 100 + b'"}')
    assert len(raw) < 100
    record = fmt.decode(raw)
    assert (record.created, record.written, record.max_inactive) == (1000, 2000, 1800)
    assert record.payload.startswith(b'{"a":"xxx')
    # rotation: a record signed with the old key still verifies
    old = RecordFormat([b"old"]).encode(1, 1, 1, 1, b"{}")
    assert fmt.decode(old).payload == b"{}"


def test_tampered_or_unsigned_records_are_refused_when_a_signature_is_needed() -> None:
    fmt = RecordFormat([b"key"])
    raw = bytearray(fmt.encode(3, 1, 1, 1, b"payload"))
    raw[30] ^= 1
    with pytest.raises(SignatureError):
        fmt.decode(bytes(raw))
    unsigned = RecordFormat().encode(3, 1, 1, 1, b"payload")
    with pytest.raises(SignatureError):
        fmt.decode(unsigned, require_signature=True)


def test_validity_is_twenty_bytes() -> None:
    validity = Validity(1800, 1_000, 2_000)
    assert len(validity.encode()) == 20
    assert Validity.decode(validity.encode()) == validity
    assert validity.expires_at() == 2_000 + 1_800_000
    assert Validity(0, 1, 2).expires_at() is None
    with pytest.raises(RecordError):
        Validity.decode(b"short")


@given(st.binary(max_size=300))
def test_decoder_raises_only_record_errors(data: bytes) -> None:
    fmt = RecordFormat([b"k"], compress_threshold=1)
    try:
        record = fmt.decode(data)
    except RecordError:
        return
    assert record.created is not None


@given(st.binary(max_size=200))
def test_json_decoder_raises_only_record_errors(data: bytes) -> None:
    with contextlib.suppress(RecordError):
        JsonCodec().decode(data)


_TAG_LIKE_KEYS = st.sampled_from([" dt", " d", " u", " dec", " b", " s", " fs", " t", " di", " x"])
_INTS = st.integers(-(2**63), 2**64 - 1)  # msgpack's range (json has none: see the test below)
_LEAVES = (
    st.none()
    | st.booleans()
    | _INTS
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary()
    | st.datetimes()
    | st.dates()
    | st.uuids()
    | st.decimals(allow_nan=False, allow_infinity=False)
    | st.frozensets(_INTS)
    | st.sets(st.text())
)
_VALUES = st.recursive(
    _LEAVES,
    lambda inner: (
        st.lists(inner)
        | st.tuples(inner, inner)
        | st.dictionaries(_TAG_LIKE_KEYS | st.text(), inner, max_size=3)
    ),
    max_leaves=12,
)


@pytest.mark.parametrize("codec", [JsonCodec(), MsgpackCodec()])
@given(data=st.dictionaries(_TAG_LIKE_KEYS | st.text(), _VALUES, max_size=3))
def test_attributes_round_trip_even_with_keys_that_look_like_tags(codec: Any, data: Any) -> None:
    """A stored {" dt": "2020-01-01"} stays a dict of a string (it once came back a datetime,
    and a top-level one made the whole session unreadable)."""
    assert codec.decode(codec.encode(data)) == data


def test_json_reads_the_escape_written_before_the_pair_form() -> None:
    assert JsonCodec().decode(b'{"a":{" di":{" x":1}}}') == {"a": {" x": 1}}


def test_msgpack_refuses_integers_beyond_64_bits_with_a_codec_error() -> None:
    with pytest.raises(CodecError, match="64-bit"):
        MsgpackCodec().encode({"n": 2**64})
    assert JsonCodec().decode(JsonCodec().encode({"n": 2**64})) == {"n": 2**64}
