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

from ivs.events import AnyEvent, explained
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
    """Subscribes to `ivs/<sensor>/events/#` and `ivs/<sensor>/frames` (all sensors by default).

    on_message: called once per accepted message, on the MQTT network thread.
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
        sensors: str = "+",
        client_id: str | None = None,
        username: str | None = None,
        password: str | None = None,
        shared_group: str | None = None,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
    ) -> None:
        self.on_message = on_message
        self.accepted = self.duplicates = 0
        self.rejected: Counter[str] = Counter()
        self.last_reject: str | None = None
        self.dedup = Dedup()
        self._lock = threading.Lock()
        prefix = f"$share/{shared_group}/" if shared_group else ""
        self.topics = [f"{prefix}ivs/{sensors}/events/#", f"{prefix}ivs/{sensors}/frames"]
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
        try:
            message = decode_message(bytes(msg.payload))
        except (msgspec.ValidationError, msgspec.DecodeError) as err:
            self._reject(f"malformed payload: {err}", msg.topic)
            return
        if message.sensor_id != parts[1]:
            self._reject(f"sensor_id {message.sensor_id!r} does not match the topic's {parts[1]!r}", msg.topic)
            return
        with self._lock:
            fresh = self.dedup.first_time(message.sensor_id, message.seq)
            if fresh:
                self.accepted += 1
            else:
                self.duplicates += 1
        if fresh:
            self.on_message(message)

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
