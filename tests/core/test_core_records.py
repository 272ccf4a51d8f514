import contextlib
import datetime as dt
import enum
import uuid
from collections import OrderedDict
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pymsm.core import codecs
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


def _nested(depth: int) -> dict[str, Any]:
    top: dict[str, Any] = {}
    inner = top
    for _ in range(depth):
        inner["a"] = inner = {}
    return top


def _cycle() -> dict[str, Any]:
    looped: dict[str, Any] = {}
    looped["me"] = looped
    return looped


@pytest.mark.parametrize("codec", [JsonCodec(), MsgpackCodec()])
@pytest.mark.parametrize("value", [_nested(5000), _cycle()], ids=["deep", "cycle"])
def test_too_deep_or_cyclic_values_are_a_codec_error(codec: Any, value: Any) -> None:
    """They raised RecursionError out of the save: a 500 instead of a failed save and a log."""
    with pytest.raises(CodecError, match=r"nests too deep .* or holds itself"):
        codec.encode({"x": value})
    shared = [[1]] * 3  # one list three times: no cycle, stored
    fine = {"x": _nested(100), "s": shared}
    assert codec.decode(codec.encode(fine)) == fine


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


@contextlib.contextmanager
def _stdlib_json_only() -> Any:
    """The json codec as it runs where orjson is not installed."""
    saved = codecs._orjson
    codecs._orjson = None
    try:
        yield
    finally:
        codecs._orjson = saved


def test_orjson_is_installed_so_the_fast_path_is_what_these_tests_compare() -> None:
    assert codecs._orjson is not None, "pyproject.toml depends on orjson: pip install -e ."


def test_orjson_reads_only_what_may_be_flat(monkeypatch: pytest.MonkeyPatch) -> None:
    """A nested session goes straight to the stdlib: read by orjson first, it would be read
    twice (orjson's result needs tags restored, which the stdlib's object hook does)."""
    assert codecs._orjson is not None
    loads = codecs._orjson.loads
    read: list[bytes] = []

    def spy(data: bytes) -> Any:
        read.append(data)
        return loads(data)

    monkeypatch.setattr(codecs, "_orjson", SimpleNamespace(loads=spy, JSONDecodeError=ValueError))
    codec = JsonCodec()
    nested = {"cart": [{"sku": "a", "qty": 1}], "at": dt.datetime(2026, 11, 21)}
    flat = {"user": "ann", "n": 1, "ok": True}
    with_brace = {"note": "a { or a ["}
    for value in (nested, flat, with_brace):
        assert codec.decode(codecs._stdlib_encode(codecs._tag(value))) == value
    assert read == [codecs._stdlib_encode(flat)]


def _decoded(data: bytes) -> Any:
    """What the json codec reads from `data`: the attributes, or the type of error it raised."""
    try:
        return JsonCodec().decode(data)
    except RecordError as exc:
        return type(exc)


def _assert_decodes_as_the_stdlib_does(data: bytes) -> None:
    with _stdlib_json_only():
        expected = _decoded(data)
    assert repr(_decoded(data)) == repr(expected)  # repr: NaN != NaN, and 1 == 1.0 == True


_JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers()  # beyond 64 bits too: orjson reads those as floats, so they must not reach it
    | st.floats()  # NaN and infinity too: the stdlib writes them, orjson refuses to read them
    | st.text()
    | st.sampled_from(["\ud800", "\udfff x", " dt", " di"])  # lone surrogates, tag-like text
)
_JSON_DOCS = st.dictionaries(
    st.text() | st.sampled_from([" dt", " di", " s"]),
    st.recursive(
        _JSON_LEAVES,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
        max_leaves=8,
    ),
    max_size=4,
)


@given(_JSON_DOCS)
def test_json_decode_reads_what_the_stdlib_reads(doc: Any) -> None:
    """Whatever JSON a record holds (written by any pymsm version, with or without orjson), the
    fast path hands back exactly what the stdlib path does, or leaves the text to it."""
    import json

    data = json.dumps(doc, ensure_ascii=False).encode("utf-8", "surrogatepass")
    _assert_decodes_as_the_stdlib_does(data)


@pytest.mark.parametrize(
    "data",
    [
        b'{"n":123456789012345678901234567890}',
        b'{"n":18446744073709551615,"m":-9223372036854775808}',
        b'{"x":NaN,"y":Infinity,"z":1e400}',
        b'{"s":"\\ud800"}',
        b'{"a":1,"a":2}',
        b'{" dt":"2024-05-01"}',
        b'{" di":[" dt","x"]}',
        b'{"a":{" dt":"2024-05-01T12:00:00+00:00"}}',
        b"\xef\xbb\xbf{}",
        b'{"s":"\xff"}',
        b"[1]",
    ],
)
def test_json_decode_edge_cases_match_the_stdlib(data: bytes) -> None:
    _assert_decodes_as_the_stdlib_does(data)


@pytest.mark.parametrize(
    "attributes",
    [
        {"n": 2**64, "m": -(2**63) - 1, "s": "x"},  # orjson refuses these ints: stdlib writes
        {"f": float("nan"), "g": float("inf"), "h": 0.1},  # orjson would write null: stdlib
        {"s": 'é ✓ \x00 "q" \\', "t": True, "n": None, "i": -7},
        {" dt": "2024-05-01"},  # a one-key dict with a tag-like key: the escape
        {},
    ],
)
def test_json_encode_fast_path_round_trips_through_both_decoders(attributes: Any) -> None:
    data = JsonCodec().encode(attributes)
    with _stdlib_json_only():
        assert repr(JsonCodec().decode(data)) == repr(attributes)
        assert repr(JsonCodec().decode(JsonCodec().encode(attributes))) == repr(attributes)
    assert repr(JsonCodec().decode(data)) == repr(attributes)


_NESTED_LEAVES = _LEAVES | st.floats() | st.integers() | st.sampled_from(["\ud800", " dt"])


@given(
    st.dictionaries(
        _TAG_LIKE_KEYS | st.text(),
        st.recursive(
            _NESTED_LEAVES,
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.tuples(inner, inner)
                | st.dictionaries(_TAG_LIKE_KEYS | st.text(), inner, max_size=3)
            ),
            max_leaves=12,
        ),
        max_size=3,
    )
)
def test_json_encode_of_nested_sessions_reads_back_as_the_stdlibs_does(attributes: Any) -> None:
    """Nested sessions are tagged in Python and written by orjson unless they hold NaN or an
    infinity (orjson writes null) or orjson refuses them (big integers, lone surrogates): what
    is written reads back, through either decoder, exactly as the stdlib's own writing does."""
    with _stdlib_json_only():
        try:
            expected = repr(JsonCodec().decode(JsonCodec().encode(attributes)))
        except CodecError:
            expected = "CodecError"
    try:
        data = JsonCodec().encode(attributes)
    except CodecError:
        assert expected == "CodecError"
        return
    with _stdlib_json_only():
        assert repr(JsonCodec().decode(data)) == expected
    assert repr(JsonCodec().decode(data)) == expected


class _Level(enum.IntEnum):
    HIGH = 2


class _Name(str):
    pass


@pytest.mark.parametrize(
    "attributes",
    [
        {"a": [{"f": float("nan")}], "b": [1.5, float("-inf")]},  # nested NaN: the stdlib writes
        {"a": {"n": 2**70}, "b": [1]},  # orjson refuses the integer: the stdlib writes
        {"a": [{" dt": 1}], "t": (1, [2, (3,)]), "s": {frozenset({1})}},  # escape, tuples, sets
        {"a": OrderedDict(x=[1]), "b": [_Level.HIGH], _Name("k"): [_Name("v")]},  # subclasses
        {"cart": [{"sku": "a", "at": dt.datetime(2026, 11, 21), "p": 1.25}]},
    ],
)
def test_json_encode_of_nested_sessions_edge_cases(attributes: Any) -> None:
    data = JsonCodec().encode(attributes)
    with _stdlib_json_only():
        stdlib = JsonCodec().encode(attributes)
        assert repr(JsonCodec().decode(data)) == repr(JsonCodec().decode(stdlib))


def test_json_refuses_what_it_cannot_store_inside_nested_values_too() -> None:
    for attributes in ({"a": [{1: "x"}]}, {"a": {"b": object()}}, {"a": ({"b": bytearray(2)},)}):
        with pytest.raises(CodecError, match="json codec"):
            JsonCodec().encode(attributes)


@pytest.mark.parametrize("fast", [True, False])
def test_json_refuses_lone_surrogates_with_a_codec_error(fast: bool) -> None:
    """It once raised UnicodeEncodeError, which the save does not expect."""
    with contextlib.nullcontext() if fast else _stdlib_json_only():
        for attributes in ({"s": "\ud800"}, {"s": ["\udfff"]}):
            with pytest.raises(CodecError, match="lone surrogate"):
                JsonCodec().encode(attributes)


def test_json_round_trips_the_tagged_types_without_orjson() -> None:
    with _stdlib_json_only():
        assert JsonCodec().decode(JsonCodec().encode(RICH)) == RICH
