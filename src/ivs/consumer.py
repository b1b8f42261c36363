"""The receiving end: subscribe to sensors' messages, validate them, drop duplicates.

`Consumer` is what the hub's MQTT ingest and `ivs listen` are built on. A message is
accepted once per `(sensor_id, seq)`; anything that is not a valid `ivs.event/1` event or
`ivs.frame/1` record is rejected with its reason and counted, and the consumer keeps going.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import paho.mqtt.client as mqtt

from ivs.events import EVENT_SCHEMA, AnyEvent, explained
from ivs.mqtt_client import MqttSettings
from ivs.records import FrameRecord

log = logging.getLogger(__name__)

Message = AnyEvent | FrameRecord


class _Head(msgspec.Struct):
    schema: str


_JSON = {
    "head": msgspec.json.Decoder(_Head),
    "ivs.event/1": msgspec.json.Decoder(AnyEvent),
    "ivs.frame/1": msgspec.json.Decoder(FrameRecord),
}
_MSGPACK = {
    "head": msgspec.msgpack.Decoder(_Head),
    "ivs.event/1": msgspec.msgpack.Decoder(AnyEvent),
    "ivs.frame/1": msgspec.msgpack.Decoder(FrameRecord),
}


_EXPECTED = "expected an ivs.event/1 or ivs.frame/1 message: a JSON object or a MessagePack map"


def _is_msgpack_map(first: bytes) -> bool:
    return bool(first) and (0x80 <= first[0] <= 0x8F or first[0] in (0xDE, 0xDF))


def decode_message(payload: bytes) -> Message:
    """JSON or MessagePack bytes -> a validated event or frame record. Anything else raises
    msgspec.DecodeError (msgspec.ValidationError, a subclass, for a well-formed document of the
    wrong shape) saying what is wrong and what was expected; never another exception."""
    msgpack = payload.lstrip()[:1] != b"{"
    if msgpack and not _is_msgpack_map(payload[:1]):
        # Any other first byte is neither encoding's object/map; msgpack would read it as a
        # number and say "expected `object`, got `int`" about, say, a JSON array.
        raise msgspec.DecodeError(f"{_EXPECTED}, got {payload[:24]!r}")
    decoders: dict[str, Any] = _MSGPACK if msgpack else _JSON
    try:
        schema = decoders["head"].decode(payload).schema
        decoder = decoders.get(schema)
        if decoder is None:
            raise msgspec.ValidationError(f"unknown schema {schema[:64]!r}: expected 'ivs.event/1' or 'ivs.frame/1'")
        message: Message = decoder.decode(payload)
    except msgspec.ValidationError as err:
        raise explained(err) from None
    except msgspec.DecodeError as err:
        raise msgspec.DecodeError(f"cannot decode ({err}): {_EXPECTED}") from None
    except RecursionError:
        raise msgspec.DecodeError(f"nested too deeply to decode: {_EXPECTED} of plain fields") from None
    if msgpack:
        where = _non_finite(message, "$")
        if where is not None:
            # JSON has no NaN or infinity, and the hub stores and serves JSON: refuse them here too
            raise msgspec.ValidationError(f"a NaN or infinite number at `{where}`: expected finite numbers")
    return message


_EVENT_ARRAYS: dict[str, Any] = {
    "json": msgspec.json.Decoder(list[AnyEvent]),
    "msgpack": msgspec.msgpack.Decoder(list[AnyEvent]),
}
_ARRAYS: dict[str, Any] = {
    "json": msgspec.json.Decoder(list[msgspec.Raw]),
    "msgpack": msgspec.msgpack.Decoder(list[msgspec.Raw]),
}


def split_batch(payload: bytes) -> list[bytes]:
    """A batch (`ivs/S/batch`: a JSON array, or a MessagePack array, of messages) -> each
    message's bytes, undecoded (each goes to `decode_message`, so one bad message is refused
    alone). msgspec.DecodeError for anything but an array."""
    encoding = "json" if payload.lstrip()[:1] == b"[" else "msgpack"
    first = payload[:1]
    if encoding == "msgpack" and not (first and (0x90 <= first[0] <= 0x9F or first[0] in (0xDC, 0xDD))):
        raise msgspec.DecodeError(
            f"expected a batch: a JSON array or a MessagePack array of messages, got {payload[:24]!r}"
        )
    try:
        return [bytes(raw) for raw in _ARRAYS[encoding].decode(payload)]
    except msgspec.DecodeError as err:
        raise msgspec.DecodeError(f"cannot decode the batch ({err}): expected an array of messages") from None


def decode_batch(payload: bytes) -> list[Message]:
    """A batch -> its messages, each validated as `decode_message` would. Decodes a batch of
    events in one pass (a tenth of the time of message by message); a batch holding frame
    records, or anything invalid, is decoded message by message, so that the first bad one
    raises msgspec.DecodeError (or ValidationError) saying which and why."""
    msgpack = payload.lstrip()[:1] != b"["
    try:
        events: list[AnyEvent] = _EVENT_ARRAYS["msgpack" if msgpack else "json"].decode(payload)
    except (msgspec.DecodeError, RecursionError):
        events = []
    else:
        if all(e.schema == EVENT_SCHEMA for e in events) and not (msgpack and _non_finite(events, "$")):
            return [*events]
    out: list[Message] = []
    for n, item in enumerate(split_batch(payload)):
        try:
            out.append(decode_message(item))
        except msgspec.DecodeError as err:  # ValidationError too
            raise type(err)(f"message {n} of the batch: {err}") from None
    return out


def _non_finite(value: Any, path: str) -> str | None:
    """The path to the first NaN or infinite float in a decoded message, or None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else path
    if isinstance(value, msgspec.Struct):
        fields = ((name, getattr(value, name)) for name in value.__struct_fields__)
        return next((p for name, v in fields if (p := _non_finite(v, f"{path}.{name}")) is not None), None)
    if isinstance(value, list | tuple):
        return next((p for i, v in enumerate(value) if (p := _non_finite(v, f"{path}[{i}]")) is not None), None)
    if isinstance(value, dict):
        return next((p for k, v in value.items() if (p := _non_finite(v, f"{path}.{k}")) is not None), None)
    return None


@dataclass
class Dedup:
    """Remembers which (sensor_id, seq) were seen. Sequence numbers only grow, so per sensor it
    keeps the highest contiguous seq plus the few seen beyond it."""

    _floor: dict[str, int] = field(default_factory=dict)
    _above: dict[str, set[int]] = field(default_factory=dict)

    def first_time(self, sensor_id: str, seq: int) -> bool:
        floor = self._floor.get(sensor_id, 0)
        above = self._above.setdefault(sensor_id, set())
        if seq <= floor or seq in above:
            return False
        above.add(seq)
        while floor + 1 in above:
            floor += 1
            above.discard(floor)
        self._floor[sensor_id] = floor
        if len(above) > 100_000:  # a sensor that skipped numbers (e.g. shed): move on
            self._floor[sensor_id] = min(above)
            above.discard(min(above))
        return True


class Consumer:
    """Subscribes to `ivs/<sensor>/events/#`, `ivs/<sensor>/frames` and `ivs/<sensor>/batch`
    (all sensors by default); each message of a batch is taken as if it came alone.

    on_message: called once per accepted message, on the MQTT network thread.
    on_batch: where given, called instead with a batch's accepted messages together (one call
        per batch: what a consumer that stores in bulk wants).
    client_id + clean_session=False: the broker keeps the subscription and queues QoS 1
        messages while this consumer is away (and across a broker restart, with persistence).
    tls_ca: CA certificate (PEM) to verify the broker against; enables TLS. tls_cert, tls_key:
        a client certificate, for a broker that wants one. ConfigError for a file that cannot be used.
    """

    def __init__(
        self,
        host: str,
        port: int,
        on_message: Callable[[Message], None],
        *,
        on_batch: Callable[[list[Message]], None] | None = None,
        sensors: str = "+",
        client_id: str | None = None,
        username: str | None = None,
        password: str | None = None,
        shared_group: str | None = None,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
    ) -> None:
        self.on_message, self.on_batch = on_message, on_batch
        self.accepted = self.duplicates = 0
        self.rejected: Counter[str] = Counter()
        self.last_reject: str | None = None
        self.dedup = Dedup()
        self._lock = threading.Lock()
        prefix = f"$share/{shared_group}/" if shared_group else ""
        self.topics = [f"{prefix}ivs/{sensors}/{t}" for t in ("events/#", "frames", "batch")]
        self.connected = threading.Event()
        settings = MqttSettings(host, port, username, password, tls_ca, tls_cert, tls_key)
        self._client = settings.client(client_id or "", clean_session=client_id is None, max_delay=10)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_disconnect = lambda *a: self.connected.clear()
        self._client.on_message = self._on_message
        self._subscribe_mid: int | None = None
        self._client.connect_async(host, port, keepalive=10)
        self._client.loop_start()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            return
        _, self._subscribe_mid = client.subscribe([(topic, 1) for topic in self.topics])

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        # `connected` means the broker acknowledged every subscription (SUBACK), not only the
        # connection: from then on nothing published is missed, shared subscriptions included.
        if mid != self._subscribe_mid:
            return
        refused = [str(r) for r in reasons if r.is_failure]
        if refused:
            self._reject(f"subscription refused: {', '.join(refused)}", ", ".join(self.topics))
            return
        self.connected.set()

    def _reject(self, reason: str, topic: str) -> None:
        self.rejected[reason] += 1
        self.last_reject = f"{topic}: {reason}"
        log.warning("rejected a message on %s: %s", topic, reason)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        parts = msg.topic.split("/")
        if len(parts) < 3 or parts[0] != "ivs":
            self._reject("unexpected topic: expected ivs/<sensor>/events/<kind> or ivs/<sensor>/frames", msg.topic)
            return
        payload = bytes(msg.payload)
        if len(parts) == 3 and parts[2] == "batch":
            try:
                messages = decode_batch(payload)
            except msgspec.DecodeError:
                # some message in it is bad: take the others one by one, refusing each bad one alone
                try:
                    items = split_batch(payload)
                except msgspec.DecodeError as err:
                    self._reject(f"malformed payload: {err}", msg.topic)
                    return
                for n, item in enumerate(items):
                    self._take(item, parts[1], f"{msg.topic}[{n}]")
                return
            if self.on_batch is None:
                for n, message in enumerate(messages):
                    self._accept(message, parts[1], f"{msg.topic}[{n}]")
            else:
                fresh = [m for n, m in enumerate(messages) if self._fresh(m, parts[1], f"{msg.topic}[{n}]")]
                if fresh:
                    self.on_batch(fresh)
            return
        self._take(payload, parts[1], msg.topic)

    def _take(self, payload: bytes, sensor: str, topic: str) -> None:
        try:
            message = decode_message(payload)
        except (msgspec.ValidationError, msgspec.DecodeError) as err:
            self._reject(f"malformed payload: {err}", topic)
            return
        self._accept(message, sensor, topic)

    def _accept(self, message: Message, sensor: str, topic: str) -> None:
        if self._fresh(message, sensor, topic):
            self.on_message(message)

    def _fresh(self, message: Message, sensor: str, topic: str) -> bool:
        """Whether a message is new from the sensor its topic names: counts it accepted, a
        duplicate or (another sensor's) rejected."""
        if message.sensor_id != sensor:
            self._reject(f"sensor_id {message.sensor_id!r} does not match the topic's {sensor!r}", topic)
            return False
        with self._lock:
            fresh = self.dedup.first_time(message.sensor_id, message.seq)
            if fresh:
                self.accepted += 1
            else:
                self.duplicates += 1
        return fresh

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def json_schema() -> dict[str, Any]:
    """The JSON Schema of every message a sensor sends (events and frame records), generated
    from the types; docs/schema/ivs-messages.schema.json is this, checked by the tests."""
    (events, frames), defs = msgspec.json.schema_components([AnyEvent, FrameRecord], ref_template="#/$defs/{name}")
    schema: dict[str, Any] = normalise_descriptions(
        {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "ivs messages: ivs.event/1 events and ivs.frame/1 frame records",
            "anyOf": [events, frames],
            "$defs": defs,
        }
    )
    return schema


def normalise_descriptions(node: Any) -> Any:
    """`node` with every `description` dedented and its lines joined into single-spaced text.

    The descriptions come from docstrings, and serialisers disagree on their whitespace
    (msgspec 0.23 started dedenting them): the schema must not change with that."""
    if isinstance(node, dict):
        return {
            k: " ".join(v.split()) if k == "description" and isinstance(v, str) else normalise_descriptions(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [normalise_descriptions(v) for v in node]
    return node
