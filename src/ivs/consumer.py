"""The receiving end: subscribe to sensors' messages, validate them, drop duplicates.

`Consumer` is what the hub's MQTT ingest and `ivs listen` are built on. A message is
accepted once per `(sensor_id, seq)`; anything that is not a valid `ivs.event/1` event or
`ivs.frame/1` record is rejected with its reason and counted, and the consumer keeps going.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from ivs.events import AnyEvent
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


def decode_message(payload: bytes) -> Message:
    """JSON or MessagePack bytes -> a validated event or frame record (msgspec.ValidationError
    or msgspec.DecodeError saying what is wrong otherwise)."""
    decoders = _JSON if payload.lstrip()[:1] == b"{" else _MSGPACK
    schema = decoders["head"].decode(payload).schema
    decoder = decoders.get(schema)
    if decoder is None:
        raise msgspec.ValidationError(f"unknown schema {schema!r}: expected 'ivs.event/1' or 'ivs.frame/1'")
    message: Message = decoder.decode(payload)
    return message


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
        self._client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id or "",
            clean_session=client_id is None,
        )
        if username is not None:
            self._client.username_pw_set(username, password)
        self._client.reconnect_delay_set(min_delay=1, max_delay=10)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = lambda *a: self.connected.clear()
        self._client.on_message = self._on_message
        self._client.connect_async(host, port, keepalive=10)
        self._client.loop_start()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            return
        for topic in self.topics:
            client.subscribe(topic, qos=1)
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
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "ivs messages: ivs.event/1 events and ivs.frame/1 frame records",
        "anyOf": [events, frames],
        "$defs": defs,
    }
