"""Fuzzing the message decoders (hypothesis): `ivs.consumer.decode_message` (JSON and
MessagePack, events and frame records) and `ivs.events.decode_event` (JSON events).

Whatever the bytes, a decoder returns a valid message or raises msgspec.DecodeError (or its
subclass msgspec.ValidationError) whose message says what was expected; never anything else,
never a crash. Every valid message comes back exactly as it was encoded.

The strategies are built from the message types themselves (msgspec.inspect), so a new event
kind or field is fuzzed without touching this file. IVS_FUZZ_EXAMPLES raises the example
counts for a longer session (docs/testing.md).
"""

from __future__ import annotations

import math
import os
import re
from typing import Any

import msgspec
import msgspec.inspect as mi
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ivs.consumer import Message, decode_message
from ivs.events import EVENT_KINDS, decode_event
from ivs.records import FrameRecord, ModelRef, Timings

EXAMPLES = int(os.environ.get("IVS_FUZZ_EXAMPLES", "200"))
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
INT64 = 2**63 - 1
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=20)  # lone surrogates are not UTF-8
FLOATS = st.floats(allow_nan=False, allow_infinity=False)

EXPLAINS = re.compile(
    r"[Ee]xpected|missing required field|out of range|Invalid enum value|unknown schema|cannot decode|nested too"
)
"""What a rejection names: the expected type or value, the missing field, the range broken."""


def strategy(info: mi.Type) -> st.SearchStrategy[Any]:
    """Values of a msgspec type as the sensor would produce them (finite floats, int64 ints)."""
    if isinstance(info, mi.IntType):
        return st.integers(-INT64 - 1, INT64)
    if isinstance(info, mi.FloatType):
        return FLOATS
    if isinstance(info, mi.StrType):
        return TEXT
    if isinstance(info, mi.BoolType):
        return st.booleans()
    if isinstance(info, mi.NoneType):
        return st.none()
    if isinstance(info, mi.LiteralType):
        return st.sampled_from(info.values)
    if isinstance(info, mi.UnionType):
        return st.one_of([strategy(t) for t in info.types])
    if isinstance(info, mi.TupleType):
        return st.tuples(*(strategy(t) for t in info.item_types))
    if isinstance(info, mi.ListType):
        return st.lists(strategy(info.item_type), max_size=4)
    if isinstance(info, mi.DictType):
        return st.dictionaries(strategy(info.key_type), strategy(info.value_type), max_size=3)
    if isinstance(info, mi.StructType):
        kwargs = {
            f.name: strategy(f.type)
            for f in info.fields
            # `schema` names the message type: decode_message needs it as it is
            if f.name != "schema"
        }
        return st.builds(info.cls, **kwargs)
    raise AssertionError(f"no strategy for {info!r}: extend tests/test_fuzz_decode.py")


EVENTS = st.one_of([strategy(mi.type_info(kind)) for kind in EVENT_KINDS])
FRAMES = strategy(mi.type_info(FrameRecord))
MESSAGES = st.one_of(EVENTS, FRAMES)

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | FLOATS | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=20,
)


def rejected_well(decode: Any, payload: bytes) -> Message | None:
    """Decode; a rejection must be msgspec.DecodeError saying what was expected. Any other
    exception propagates and fails the test."""
    try:
        message: Message = decode(payload)
    except msgspec.DecodeError as err:
        assert EXPLAINS.search(str(err)), f"{type(err).__name__} does not say what was expected: {err}"
        return None
    assert isinstance(message, (*EVENT_KINDS, FrameRecord))
    return message


@FUZZ
@given(MESSAGES)
def test_every_valid_message_round_trips_through_json_and_msgpack(message: Message) -> None:
    assert decode_message(msgspec.json.encode(message)) == message
    assert decode_message(msgspec.msgpack.encode(message)) == message
    assert decode_message(b" \n\t" + msgspec.json.encode(message)) == message  # leading whitespace is JSON's


@FUZZ
@given(EVENTS)
def test_every_valid_event_round_trips_through_decode_event(event: Any) -> None:
    data = msgspec.json.encode(event)
    assert decode_event(data) == event
    assert decode_event(data.decode()) == event


@FUZZ
@given(st.binary(max_size=512))
def test_random_bytes_are_refused_with_a_reason(payload: bytes) -> None:
    rejected_well(decode_message, payload)
    rejected_well(decode_event, payload)


@FUZZ
@given(st.sampled_from([b"{", b"\x80", b"\x81", b"\xde", b"\xdf"]), st.binary(max_size=256))
def test_random_bytes_after_an_object_or_map_start_are_refused_with_a_reason(start: bytes, rest: bytes) -> None:
    # every JSON object and MessagePack map starts so: the decoders get past the first byte
    rejected_well(decode_message, start + rest)
    rejected_well(decode_event, start + rest)


@FUZZ
@given(JSON_VALUES)
def test_random_json_and_msgpack_documents_are_refused_with_a_reason(value: Any) -> None:
    for payload in (msgspec.json.encode(value), msgspec.msgpack.encode(value)):
        assert rejected_well(decode_message, payload) is None
    assert rejected_well(decode_event, msgspec.json.encode(value)) is None


BAD_VALUES = st.one_of(
    JSON_VALUES,
    st.sampled_from([None, True, "", "x" * 100_000, [], {}, -1, 2**63, 2**64 - 1, -(2**63) - 1, 1e308, -0.0]),
    st.integers(min_value=2**64, max_value=2**200) | st.integers(max_value=-(2**64), min_value=-(2**200)),
)
"""Values put where a field was: wrong types, out-of-range numbers, huge strings."""
RAW_VALUES = [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400", b"1" * 5000, b"[" * 20_000 + b"]" * 20_000]
"""JSON text that no encoder writes: NaN/inf tokens, overflowing numbers, deep nesting."""


def fields_of(doc: dict[str, Any]) -> list[tuple[str | int, ...]]:
    """Every path to a value in a decoded document (keys and list indices)."""
    out: list[tuple[str | int, ...]] = []

    def walk(node: Any, path: tuple[str | int, ...]) -> None:
        out.append(path)
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
        for key, value in items:
            walk(value, (*path, key))

    walk(doc, ())
    return out[1:]


def put(doc: Any, path: tuple[str | int, ...], value: Any) -> None:
    for key in path[:-1]:
        doc = doc[key]
    doc[path[-1]] = value


def at(message: Any, path: tuple[str | int, ...]) -> Any:
    """The value of a decoded message at a path into its document (None: an omitted default)."""
    node = message
    for key in path:
        if isinstance(node, msgspec.Struct):
            node = getattr(node, str(key))
        elif isinstance(node, dict):
            node = node[key]
        else:
            node = node[int(key)]
    return msgspec.to_builtins(node)


def same(decoded: Any, sent: Any) -> bool:
    """An integer sent for a float field arrives as the nearest float; all else as sent."""
    if isinstance(decoded, float) and isinstance(sent, int) and not isinstance(sent, bool):
        return decoded == float(sent)
    if isinstance(decoded, list) and isinstance(sent, list):
        return len(decoded) == len(sent) and all(map(same, decoded, sent))
    if isinstance(decoded, dict) and isinstance(sent, dict):
        return decoded.keys() == sent.keys() and all(same(decoded[k], sent[k]) for k in sent)
    return bool(decoded == sent)


@FUZZ
@given(MESSAGES, st.data())
def test_a_valid_message_with_one_field_broken_is_refused_or_still_valid(message: Message, data: st.DataObject) -> None:
    doc = msgspec.to_builtins(message)
    path = data.draw(st.sampled_from(fields_of(doc)), label="field")
    if data.draw(st.booleans(), label="raw JSON"):
        raw = data.draw(st.sampled_from(RAW_VALUES), label="raw")
        marker = "\x00MARK\x00"
        put(doc, path, marker)
        payload = msgspec.json.encode(doc).replace(msgspec.json.encode(marker), raw)
        for decode in (decode_message, decode_event):
            decoded = rejected_well(decode, payload)
            # only the long integer is a number some field can hold
            assert decoded is None or (raw == b"1" * 5000 and at(decoded, path) == int(raw))
        return
    value = data.draw(BAD_VALUES, label="value")
    put(doc, path, value)
    payloads = [msgspec.json.encode(doc)]
    if _msgpackable(doc):
        payloads.append(msgspec.msgpack.encode(doc))
    for payload in payloads:
        decoded = rejected_well(decode_message, payload)
        if decoded is not None:  # the value was of a type the field takes: it arrived as sent
            assert same(at(decoded, path), value), f"{value!r} at {path} arrived as {at(decoded, path)!r}"
    rejected_well(decode_event, payloads[0])


def _msgpackable(doc: Any) -> bool:
    """MessagePack integers stop at 64 bits."""
    if isinstance(doc, dict):
        return all(_msgpackable(v) for v in doc.values())
    if isinstance(doc, list):
        return all(_msgpackable(v) for v in doc)
    return not isinstance(doc, int) or -(2**63) <= doc < 2**64


MSGPACK_ODDITIES = st.one_of(
    st.builds(msgspec.msgpack.Ext, st.integers(-128, 127), st.binary(max_size=16)),
    st.binary(max_size=16),  # bin where a str is expected
    st.floats(width=32, allow_nan=True),
    st.just(float("nan")),
    st.just(math.inf),
    st.dictionaries(st.integers(-(2**63), 2**63), st.integers(-(2**63), 2**63), min_size=1, max_size=2),  # int keys
)


@FUZZ
@given(MESSAGES, st.data())
def test_msgpack_only_values_in_a_field_are_refused_or_still_valid(message: Message, data: st.DataObject) -> None:
    doc = msgspec.to_builtins(message)
    path = data.draw(st.sampled_from(fields_of(doc)), label="field")
    value = data.draw(MSGPACK_ODDITIES, label="value")
    put(doc, path, value)
    decoded = rejected_well(decode_message, msgspec.msgpack.encode(doc))
    if decoded is not None:
        # JSON cannot carry NaN or infinity, so neither may MessagePack: the hub stores JSON
        assert not (isinstance(value, float) and not math.isfinite(value)), f"{value} accepted at {path}"
        assert same(at(decoded, path), value), f"{value!r} at {path} arrived as {at(decoded, path)!r}"


DEEP = 100_000


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"[" * DEEP + b"]" * DEEP, id="deep-json-array"),
        pytest.param(b'{"schema":"ivs.event/1","x":' + b"[" * DEEP + b"]" * DEEP + b"}", id="deep-json-unknown-field"),
        pytest.param(
            b'{"schema":"ivs.event/1","x":' + b'{"a":' * DEEP + b"1" + b"}" * (DEEP + 1), id="deep-json-object"
        ),
        pytest.param(b"\x82\xa6schema\xabivs.event/1\xa1x" + b"\x91" * DEEP + b"\x01", id="deep-msgpack"),
        pytest.param(b'{"schema":"ivs.event/1","kind":"count","label":"' + b"x" * 20_000_000 + b'"}', id="huge-string"),
    ],
)
def test_deep_or_huge_documents_are_refused_with_a_reason(payload: bytes) -> None:
    assert rejected_well(decode_message, payload) is None
    assert rejected_well(decode_event, payload) is None


def test_nesting_too_deep_is_said_so() -> None:
    """msgspec gives up on deep nesting with RecursionError: the decoders turn it into theirs."""
    deep = b'{"schema":"ivs.event/1","x":' + b"[" * DEEP + b"]" * DEEP + b"}"
    with pytest.raises(msgspec.DecodeError, match="nested too deeply"):
        decode_message(deep)
    with pytest.raises(msgspec.DecodeError, match="nested too deeply"):
        decode_event(deep)
    with pytest.raises(msgspec.DecodeError, match="nested too deeply"):
        decode_message(b"\x82\xa6schema\xabivs.event/1\xa1x" + b"\x91" * DEEP + b"\x01")


def test_nan_or_infinity_over_msgpack_is_refused_with_where() -> None:
    frame = msgspec.to_builtins(_a_frame())
    frame["timings_ms"]["infer"] = math.nan
    with pytest.raises(msgspec.ValidationError, match=r"NaN or infinite number at `\$\.timings_ms\.infer`"):
        decode_message(msgspec.msgpack.encode(frame))


def _a_frame() -> FrameRecord:
    return FrameRecord(
        sensor_id="cam-1",
        seq=1,
        frame=1,
        time=1.0,
        t_capture_ns=1,
        source="synthetic",
        width=64,
        height=48,
        model=ModelRef(name="m", version="1", task="detect", runtime="onnxruntime"),
        detections=[],
        timings_ms=Timings(read=1, queue=0, isp=1, infer=5, decode=1, total=8),
        dropped=0,
        dropped_total=0,
        mode="realtime",
    )
