"""Codecs turn session attributes (a dict) into bytes and back.

`json` (the default) tags the types JSON lacks, in the manner of Flask's tagged JSON: a one-key
object whose key starts with a space, e.g. `{" dt": "2024-05-01T12:00:00+00:00"}`. `msgpack`
carries the same types as extension types. `pickle` can run code when read, so it is only offered
with a `secret_key`, and records are verified (HMAC) before they are unpickled (see records.py).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import pickle
import uuid
from collections.abc import Callable, Iterable
from decimal import Decimal
from types import ModuleType
from typing import Any, Protocol

from pymsm.exceptions import CodecError, ConfigError, RecordError

_orjson: ModuleType | None
try:  # a C JSON parser and writer: a third of the stdlib's decode time, a tenth of its encode
    import orjson as _orjson
except ImportError:  # pragma: no cover - a platform without its wheels: the stdlib does it all
    _orjson = None

Attributes = dict[str, Any]


class Codec(Protocol):
    name: str
    id: int
    needs_signature: bool

    def encode(self, attributes: Attributes) -> bytes: ...
    def decode(self, data: bytes) -> Attributes: ...


_PLAIN = (str, int, float, bool, type(None))

# tag -> (type, to JSON-able, from JSON-able); order matters: datetime is a date subclass.
# "To JSON-able" gets the walk too (`tag`), for the containers whose items are tagged in turn.
_Dump = Callable[[Any, Callable[[Any], Any]], Any]
_TAGS: list[tuple[str, type, _Dump, Callable[[Any], Any]]] = [
    (" dt", dt.datetime, lambda v, tag: v.isoformat(), dt.datetime.fromisoformat),
    (" d", dt.date, lambda v, tag: v.isoformat(), dt.date.fromisoformat),
    (" u", uuid.UUID, lambda v, tag: v.hex, uuid.UUID),
    (" dec", Decimal, lambda v, tag: str(v), Decimal),
    (" b", bytes, lambda v, tag: base64.b64encode(v).decode(), base64.b64decode),
    (" s", set, lambda v, tag: [tag(x) for x in v], lambda v: set(v)),
    (" fs", frozenset, lambda v, tag: [tag(x) for x in v], lambda v: frozenset(v)),
    (" t", tuple, lambda v, tag: [tag(x) for x in v], tuple),
]
_FROM_TAG = {tag: load for tag, _, _, load in _TAGS}
# A real one-key dict whose key starts with a space is stored as {" di": [key, value]}: as a
# pair, not as the dict itself, since the JSON decoder's hook sees inner objects first and would
# take a stored {" dt": "2020-01-01"} for a tagged datetime before seeing the escape around it.
_ESCAPE = " di"


def _tag(value: Any) -> Any:
    """`value` as JSON can carry it: tagged types as one-key objects, a real one-key dict with
    a tag-like key escaped (see _ESCAPE). Raises CodecError for what the codec cannot store."""
    return _Tagger()(value)


class _Tagger:
    """One tagging walk, which also notes whether it met NaN or an infinity (`nonfinite`: orjson
    writes those as null, so such a session takes the stdlib's writer). Containers that need no
    change are returned as they are, not copied: most of a session's dicts and lists hold plain
    values only."""

    __slots__ = ("nonfinite",)

    def __init__(self) -> None:
        self.nonfinite = False

    def __call__(self, value: Any) -> Any:
        kind = type(value)
        if kind in _ORJSON_SAFE:
            return value
        if kind is dict:
            return self._dict(value)
        if kind is list:
            return self._list(value)
        if kind is float:
            self.nonfinite = self.nonfinite or not math.isfinite(value)
            return value
        return self._other(value)

    def _dict(self, value: dict[Any, Any]) -> Any:
        if not _STR.issuperset(map(type, value)):
            for key in value:
                _check_key(key)  # a str subclass passes; anything else is refused
        kinds = set(map(type, value.values()))
        if float in kinds:
            self._floats(value.values())
        tagged = value
        if not kinds <= _FLAT:  # copied on the first value the walk changes
            for key, item in value.items():
                if type(item) not in _FLAT:
                    new = self(item)
                    if new is not item:
                        if tagged is value:
                            tagged = dict(value)
                        tagged[key] = new
        if len(tagged) == 1:
            ((key, item),) = tagged.items()
            if key.startswith(" "):
                return {_ESCAPE: [key, item]}
        return tagged

    def _list(self, value: list[Any]) -> list[Any]:
        kinds = set(map(type, value))
        if float in kinds:
            self._floats(value)
        if kinds <= _FLAT:
            return value
        return [item if type(item) in _FLAT else self(item) for item in value]

    def _floats(self, values: Iterable[Any]) -> None:
        if not self.nonfinite:
            self.nonfinite = not all(math.isfinite(v) for v in values if type(v) is float)

    def _other(self, value: Any) -> Any:
        """Subclasses of the plain types, dicts and lists; the tagged types."""
        if isinstance(value, _PLAIN):
            if isinstance(value, float):
                self.nonfinite = self.nonfinite or not math.isfinite(value)
            return value
        if isinstance(value, dict):
            return self._dict({_check_key(k): v for k, v in value.items()})
        if isinstance(value, list):
            return [self(v) for v in value]
        for tag, cls, dump, _ in _TAGS:
            if isinstance(value, cls):
                return {tag: dump(value, self)}
        raise CodecError(
            f"the json codec cannot store {type(value).__name__} values; store plain data, "
            "or choose codec='pickle' with a secret_key"
        )


_TOO_DEEP = (
    "the {} codec cannot store this session: a value nests too deep (hundreds of levels) or "
    "holds itself; store flatter data"
)


def _check_key(key: Any) -> str:
    if not isinstance(key, str):
        raise CodecError(f"the json codec needs string dict keys, not {type(key).__name__} {key!r}")
    return key


def _untag(obj: dict[str, Any]) -> Any:
    if len(obj) == 1:
        ((key, value),) = obj.items()
        if key == _ESCAPE:
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                return {value[0]: value[1]}
            if isinstance(value, dict):
                return value  # written before 2026-11-21: the dict itself
            raise ValueError(f"malformed escaped object {value!r:.40}")
        load = _FROM_TAG.get(key)
        if load is not None:
            return load(value)
    return obj


# one decoder for every record: json.loads(bytes, object_hook=...) builds a new JSONDecoder and
# sniffs the encoding on each call, a measurable share of an unchanged request
_JSON_DECODER = json.JSONDecoder(object_hook=_untag)
_JSON_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_FLAT = frozenset(_PLAIN)  # exact types whose values need no tag
_STR = frozenset((str,))
# the plain types without float: what orjson reads exactly as the stdlib does (it reads an
# integer beyond 64 bits as a float, so a decoded float may not have been one); to the tagging
# walk, the values that need no look at all (a float is checked for NaN and infinity)
_ORJSON_SAFE = frozenset((str, int, bool, type(None)))


def _escaped(attributes: Attributes) -> bool:
    """A one-key dict whose key starts with a space: written as the escape (or, read back, a
    tag or the escape itself), never as plain JSON."""
    return len(attributes) == 1 and next(iter(attributes)).startswith(" ")


def _stdlib_encode(value: Any) -> bytes:
    try:
        return _JSON_ENCODER.encode(value).encode()
    except UnicodeEncodeError as exc:
        raise CodecError(
            f"the json codec cannot store a string with a lone surrogate ({exc.reason} at "
            f"{exc.start}); store text that is valid Unicode"
        ) from exc


class JsonCodec:
    """JSON with tagged types. With orjson installed, sessions are written by orjson after the
    tagging walk, unless they hold NaN or an infinity, and flat sessions of strings, integers,
    booleans and None are read by orjson (the same JSON, read back to the same values;
    tests/core check both against the stdlib); everything else takes the stdlib path."""

    name = "json"
    id = 1
    needs_signature = False

    def encode(self, attributes: Attributes) -> bytes:
        tagger = _Tagger()
        try:
            tagged = tagger(attributes)  # a flat session comes back as it is, after one look
        except RecursionError:
            raise CodecError(_TOO_DEEP.format("json")) from None
        if _orjson is not None and not tagger.nonfinite:
            try:
                encoded: bytes = _orjson.dumps(tagged)
                return encoded
            except TypeError:  # an integer beyond 64 bits, a lone surrogate: the stdlib's way
                pass
        try:
            return _stdlib_encode(tagged)
        except RecursionError:
            raise CodecError(_TOO_DEEP.format("json")) from None

    def decode(self, data: bytes) -> Attributes:
        # orjson only for what may be flat: a nested session (a "{" or "[" past the opening
        # brace; a string holding one also takes the stdlib) would be decoded twice otherwise
        if _orjson is not None and data.find(b"{", 1) < 0 and data.find(b"[") < 0:
            try:
                obj = _orjson.loads(data)
            except _orjson.JSONDecodeError:
                pass  # NaN, 1e400, a lone surrogate, bad bytes: the stdlib reads or refuses it
            else:
                if (
                    type(obj) is dict
                    and _ORJSON_SAFE.issuperset(map(type, obj.values()))
                    and not _escaped(obj)
                ):
                    return obj
        try:
            obj = _JSON_DECODER.decode(data.decode())  # pymsm writes UTF-8
        except (ValueError, TypeError, ArithmeticError, RecursionError) as exc:
            raise RecordError(f"json attributes do not decode: {exc}") from exc
        if not isinstance(obj, dict):
            raise RecordError("json attributes are not an object")
        return obj


class MsgpackCodec:
    name = "msgpack"
    id = 2
    needs_signature = False

    def __init__(self) -> None:
        try:
            import msgpack
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ConfigError(
                "codec='msgpack' needs msgpack: pip install 'pymsm[msgpack]'"
            ) from exc
        self._msgpack = msgpack

    def encode(self, attributes: Attributes) -> bytes:
        # msgpack has no native set/tuple/datetime: reuse the JSON tagging, which is lossless
        try:
            data: bytes = self._msgpack.packb(_tag(attributes), use_bin_type=True)
        except RecursionError:
            raise CodecError(_TOO_DEEP.format("msgpack")) from None
        except (OverflowError, ValueError, TypeError) as exc:
            raise CodecError(
                f"the msgpack codec cannot store this session: {exc} (msgpack integers are "
                "64-bit); store smaller values, or choose codec='json'"
            ) from exc
        return data

    def decode(self, data: bytes) -> Attributes:
        try:
            obj = self._msgpack.unpackb(data, raw=False, object_hook=_untag, strict_map_key=True)
        except Exception as exc:  # msgpack raises several unrelated types for bad input
            raise RecordError(f"msgpack attributes do not decode: {exc}") from exc
        if not isinstance(obj, dict):
            raise RecordError("msgpack attributes are not a map")
        return obj


class PickleCodec:
    """Only ever given bytes whose HMAC verified (records.py checks before calling decode)."""

    name = "pickle"
    id = 3
    needs_signature = True

    def encode(self, attributes: Attributes) -> bytes:
        try:
            return pickle.dumps(attributes, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise CodecError(f"pickle cannot store the session: {exc}") from exc

    def decode(self, data: bytes) -> Attributes:
        try:
            obj = pickle.loads(data)
        except Exception as exc:
            raise RecordError(f"pickled attributes do not load: {exc}") from exc
        if not isinstance(obj, dict):
            raise RecordError("pickled attributes are not a dict")
        return obj


CODECS: dict[str, type[JsonCodec] | type[MsgpackCodec] | type[PickleCodec]] = {
    "json": JsonCodec,
    "msgpack": MsgpackCodec,
    "pickle": PickleCodec,
}


def codec_by_name(name: str, secret_key: bytes | None) -> Codec:
    cls = CODECS.get(name)
    if cls is None:
        raise ConfigError(f"codec: unknown codec {name!r}; choose one of {', '.join(CODECS)}")
    if cls.needs_signature and not secret_key:
        raise ConfigError(
            "codec='pickle' can run code when read, so it needs secret_key (records are signed "
            "and verified before unpickling); set secret_key or use codec='json'"
        )
    return cls()
