"""MQTT sink (paho-mqtt 2): QoS 1 through the durable outbox, availability by last will.

Topics, for a sensor `S`:

    ivs/S/events/<kind>    every event (QoS 1)
    ivs/S/frames           per-frame records, when the sensor sends them (QoS 1)
    ivs/S/availability     "online" / "offline", retained; "offline" is the last will
    ivs/S/state            a retained JSON summary (model, frames, events, outbox depth)

A message is committed to the outbox before it is published and removed on its PUBACK. After
a reconnect everything not yet acknowledged is published again, in sequence order, so a
consumer gets every message at least once and removes duplicates by `(sensor_id, seq)`.
paho reconnects by itself, backing off from 1 to 30 seconds.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from ivs.events import Event, kind_of
from ivs.outbox import Outbox

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MqttSettings:
    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    tls_ca: str | None = None
    """CA certificate file; enables TLS."""
    tls_cert: str | None = None
    tls_key: str | None = None
    keepalive: int = 10
    encoding: str = "json"
    """"json" or "msgpack"."""
    max_inflight: int = 100

    def client(self, client_id: str) -> mqtt.Client:
        """A paho client with these credentials and TLS, reconnecting with backoff (1 to 30 s)."""
        client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
        if self.username is not None:
            client.username_pw_set(self.username, self.password)
        if self.tls_ca is not None:
            client.tls_set(
                ca_certs=self.tls_ca, certfile=self.tls_cert, keyfile=self.tls_key, tls_version=ssl.PROTOCOL_TLS_CLIENT
            )
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.max_queued_messages_set(0)
        return client


def topic_for(sensor_id: str, message: msgspec.Struct) -> str:
    if isinstance(message, Event):
        return f"ivs/{sensor_id}/events/{kind_of(message)}"
    return f"ivs/{sensor_id}/frames"


class MqttSink:
    """Publishes a sensor's messages to an MQTT broker, losing none across outages."""

    def __init__(
        self,
        sensor_id: str,
        outbox: Outbox,
        settings: MqttSettings,
        *,
        state: Callable[[], dict[str, Any]] | None = None,
        state_period_s: float = 5.0,
    ) -> None:
        self.sensor_id, self.outbox, self.settings = sensor_id, outbox, settings
        self._state_fn, self._state_period = state, state_period_s
        self._encoder: Callable[[Any], bytes] = (
            msgspec.msgpack.encode if settings.encoding == "msgpack" else msgspec.json.encode
        )
        self.availability = f"ivs/{sensor_id}/availability"
        self.connected = threading.Event()
        self.published = self.acked = self.connects = 0
        self.bytes_sent = 0
        self._inflight: dict[int, int] = {}  # paho mid -> seq
        self._sent_upto = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()

        client = settings.client(f"ivs-sensor-{sensor_id}")
        client.will_set(self.availability, "offline", qos=1, retain=True)
        client.max_inflight_messages_set(settings.max_inflight)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        self._client = client
        client.connect_async(settings.host, settings.port, keepalive=settings.keepalive)
        client.loop_start()
        self._sender = threading.Thread(target=self._send_loop, name=f"ivs-mqtt-{sensor_id}", daemon=True)
        self._sender.start()

    # paho callbacks (its network thread)
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            log.warning("MQTT %s:%s refused the connection: %s", self.settings.host, self.settings.port, reason)
            return
        self.connects += 1
        client.publish(self.availability, "online", qos=1, retain=True)
        with self._lock:
            # Whatever was in flight may be lost: publish everything unacknowledged again.
            self._inflight.clear()
            self._sent_upto = 0
        self.connected.set()
        self._publish_state()
        self._wake.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self.connected.clear()
        if not self._stop.is_set():
            log.warning("MQTT connection lost (%s); reconnecting", reason)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        with self._lock:
            seq = self._inflight.pop(mid, None)
        if seq is not None:
            self.outbox.ack([seq])
            self.acked += 1
            self._wake.set()

    # the sink interface
    def write(self, message: msgspec.Struct) -> None:
        seq = int(getattr(message, "seq", 0)) or None
        payload = self._encoder(message)
        self.outbox.put(topic_for(self.sensor_id, message), payload, seq=seq)
        self._wake.set()

    def _send_loop(self) -> None:
        last_state = time.monotonic()
        while not self._stop.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            if self._state_fn is not None and time.monotonic() - last_state >= self._state_period:
                last_state = time.monotonic()
                self._publish_state()
            if not self.connected.is_set():
                continue
            with self._lock:
                room = self.settings.max_inflight - len(self._inflight)
                after = self._sent_upto
            if room <= 0:
                continue
            for item in self.outbox.pending(limit=room, after=after):
                info = self._client.publish(item.topic, item.payload, qos=1)
                if info.rc != mqtt.MQTT_ERR_SUCCESS:
                    break  # not connected after all: the next connect resends from the outbox
                with self._lock:
                    self._inflight[info.mid] = item.seq
                    self._sent_upto = max(self._sent_upto, item.seq)
                self.published += 1
                self.bytes_sent += len(item.payload)

    def _publish_state(self) -> None:
        if not self.connected.is_set():
            return
        state: dict[str, Any] = {"sensor_id": self.sensor_id, "online": True, "outbox": self.outbox.depth()}
        if self._state_fn is not None:
            try:
                state.update(self._state_fn())
            except Exception:  # a state callback must never stop delivery
                log.debug("state callback failed", exc_info=True)
        self._client.publish(f"ivs/{self.sensor_id}/state", json.dumps(state), qos=1, retain=True)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until the outbox is empty (everything acknowledged) or the timeout passes."""
        return self.outbox.wait_empty(timeout, self._wake.set)

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what can be delivered, say "offline", disconnect. Undelivered messages stay
        in the outbox for the next run."""
        self.flush(timeout)
        self._stop.set()
        self._wake.set()
        self._sender.join(timeout=5)
        if self.connected.is_set():
            self._client.publish(self.availability, "offline", qos=1, retain=True).wait_for_publish(2)
        self._client.disconnect()
        self._client.loop_stop()
