"""MQTT sink (paho-mqtt 2): QoS 1 through the durable outbox, availability by last will.

Topics, for a sensor `S`:

    ivs/S/events/<kind>    every event (QoS 1)
    ivs/S/frames           per-frame records, when the sensor sends them (QoS 1)
    ivs/S/batch            with `batch_linger_s` > 0: many of the above in one message, a JSON
                           array (a MessagePack array with msgpack encoding) in seq order
    ivs/S/availability     "online" / "offline", retained; "offline" is the last will
    ivs/S/state            a retained JSON summary (outbox depth, and the sensor's `state`: model,
                           frames, events), on connect, every `state_period_s` and at close

A message is committed to the outbox before it is published and removed on its PUBACK. After
a reconnect everything not yet acknowledged is published again, in sequence order, so a
consumer gets every message at least once and removes duplicates by `(sensor_id, seq)`.
paho reconnects by itself, backing off from 1 to 30 seconds.

Batching (`batch_linger_s` > 0): the sender waits up to the linger for more messages and
publishes up to `batch_max` of them as one MQTT message on `ivs/S/batch`, so a busy sensor
(or a hub taking a whole fleet) handles one message per batch instead of one per event. Each
message in it keeps its own seq, and the batch is removed from the outbox on its PUBACK, so
delivery stays exactly-once by `(sensor_id, seq)` at the consumer. A `stop` or `clear` never
waits for the linger: a safety stop goes out at once, with whatever is pending before it.

`write` does not wait for the disk: it queues the message, and the sink's sender thread
commits everything queued in one transaction (one fsync for a frame's record and its events
together), then publishes what it committed. The sensor's frame loop never waits on an fsync,
and a `stop` event waits for one commit, not one per message before it. What `write` accepted
but the sender had not committed yet (a few milliseconds' worth) is lost if the process dies:
it was never published either, so its seqs are reused after a restart without a consumer
ever seeing them twice. `flush` and `close` wait for the queue to be committed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import msgspec
import paho.mqtt.client as mqtt

from ivs.events import Event, kind_of
from ivs.mqtt_client import MqttSettings
from ivs.outbox import Outbox, Pending

log = logging.getLogger(__name__)

URGENT_TOPICS = ("/events/stop", "/events/clear")
"""Messages published at once even when batching: a safety stop must not wait for the linger."""

BATCH_BYTES = 1024 * 1024
"""Bytes of messages in one batch at most (a larger message goes alone): well under the hub's
limit on one MQTT message (4 MiB, `ivs.hub.mqtt_ingest.MAX_PAYLOAD`)."""

MAX_QUEUED = 10_000
"""Messages `write` may queue ahead of the sender's commits; past it `write` waits (a stalled
disk slows the sensor down instead of filling its memory)."""


def batch_payload(payloads: list[bytes], encoding: str) -> bytes:
    """Encoded messages -> one array of them, in the same encoding (without decoding them)."""
    if encoding == "msgpack":
        n = len(payloads)  # a MessagePack array header: fixarray, array 16 or array 32
        if n < 16:
            head = bytes([0x90 | n])
        elif n < 1 << 16:
            head = b"\xdc" + n.to_bytes(2, "big")
        else:
            head = b"\xdd" + n.to_bytes(4, "big")
        return head + b"".join(payloads)
    return b"[" + b",".join(payloads) + b"]"


def _chunks(items: list[Pending], most: int, most_bytes: int) -> Iterator[list[Pending]]:
    """`items` in order, in runs of at most `most` messages and `most_bytes` bytes (a single
    larger message is a run of its own)."""
    chunk: list[Pending] = []
    size = 0
    for item in items:
        if chunk and (len(chunk) >= most or size + len(item.payload) > most_bytes):
            yield chunk
            chunk, size = [], 0
        chunk.append(item)
        size += len(item.payload)
    if chunk:
        yield chunk


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
        batch_linger_s: float = 0.0,
        batch_max: int = 500,
    ) -> None:
        if batch_linger_s < 0 or batch_max < 1:
            raise ValueError(f"batch_linger_s {batch_linger_s}, batch_max {batch_max}: expected >= 0 and >= 1")
        self.sensor_id, self.outbox, self.settings = sensor_id, outbox, settings
        self.batch_linger_s, self.batch_max = batch_linger_s, batch_max
        self.batch_topic = f"ivs/{sensor_id}/batch"
        self._pending_since: float | None = None  # when the sender first saw an unsent message
        self._flushing = False
        self.state = state
        """What the sensor reports in its retained state (set by the composition root once the
        sensor exists: `Sensor.state`); the outbox depth is added."""
        self._state_period = state_period_s
        self._encoder: Callable[[Any], bytes] = (
            msgspec.msgpack.encode if settings.encoding == "msgpack" else msgspec.json.encode
        )
        self.availability = f"ivs/{sensor_id}/availability"
        self.connected = threading.Event()
        self.published = self.acked = self.connects = 0
        self.refusals = 0
        """Connections the broker answered and refused (bad credentials, not authorised)."""
        self.connect_failures = 0
        """Connection attempts that ended without a connection (nothing listening, TLS mismatch, refused)."""
        self.bytes_sent = 0
        self.lost = 0
        """Messages the outbox could not commit (a full or read-only disk); the reason is logged."""
        self._inflight: dict[int, list[int]] = {}  # paho mid -> the seqs it carries
        self._sent_upto = 0
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._queue: deque[tuple[str, bytes, int | None]] = deque()  # written, not yet committed
        self._acks: deque[int] = deque()  # mids PUBACKed, not yet matched to their seq (appends are atomic)
        self._acked_seqs: list[int] = []  # PUBACKed, not yet deleted from the outbox
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._listeners: dict[str, Callable[[bytes], None]] = {}

        client = settings.client(f"ivs-sensor-{sensor_id}")
        client.will_set(self.availability, "offline", qos=1, retain=True)
        client.max_inflight_messages_set(settings.max_inflight)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
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
            self.refusals += 1
            log.warning("MQTT %s:%s refused the connection: %s", self.settings.host, self.settings.port, reason)
            return
        self.connects += 1
        client.publish(self.availability, "online", qos=1, retain=True)
        for topic in list(self._listeners):  # a new session has no subscriptions: ask again
            client.subscribe(topic, qos=1)
        with self._lock:
            # Whatever was in flight may be lost: publish everything unacknowledged again.
            self._inflight.clear()
            self._sent_upto = 0
        self.connected.set()
        self._publish_state()
        self._wake.set()

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self.connect_failures += 1

    def publish(self, topic: str, payload: bytes) -> None:
        """Publish now, at QoS 1, outside the outbox: an answer to the hub (a command's), which is
        worth nothing later. Under this sensor's own `ivs/ID/`."""
        if not topic.startswith(f"ivs/{self.sensor_id}/"):
            raise ValueError(f"topic {topic!r}: expected one under ivs/{self.sensor_id}/")
        self._client.publish(topic, payload, qos=1)

    def listen(self, topic: str, callback: Callable[[bytes], None]) -> None:
        """Call `callback(payload)` (on paho's thread) for every message on `topic`, a topic
        filter under this sensor's own `ivs/ID/`, subscribed again at every reconnect. What the
        hub pushes to the sensor (its desired state) arrives on this connection."""
        if not topic.startswith(f"ivs/{self.sensor_id}/"):
            raise ValueError(
                f"topic {topic!r}: expected one under ivs/{self.sensor_id}/ (the broker lets a sensor only there)"
            )

        def deliver(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
            try:
                callback(bytes(msg.payload))
            except Exception:  # a listener's bug must not take paho's network thread down
                log.exception("MQTT listener for %s failed", topic)

        self._listeners[topic] = callback
        self._client.message_callback_add(topic, deliver)
        # Not connected yet: a no-op, and the connect callback subscribes it (it is in the map
        # first, so a connect racing with this call cannot miss it; twice is harmless).
        self._client.subscribe(topic, qos=1)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if not self.connected.is_set() and not self._stop.is_set():
            self.connect_failures += 1  # closed before CONNACK: e.g. plain MQTT to a TLS listener
        self.connected.clear()
        if not self._stop.is_set():
            log.warning("MQTT connection lost (%s); reconnecting", reason)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        # Only noted here; the sender thread matches it to its message. A PUBACK can be read
        # before `publish` has even returned the mid to the sender: matched here, it would find
        # no message yet and be lost (the message kept, and sent again, for ever). The sender
        # registers each mid before it looks at the acknowledgements. The outbox delete runs
        # there too, batched: this network thread never waits on SQLite.
        self._acks.append(mid)
        self._wake.set()

    # the sink interface
    def write(self, message: msgspec.Struct) -> None:
        seq = int(getattr(message, "seq", 0)) or None
        payload = self._encoder(message)
        with self._room:
            while len(self._queue) >= MAX_QUEUED and not self._stop.is_set():
                self._room.wait(0.1)
            self._queue.append((topic_for(self.sensor_id, message), payload, seq))
        self._wake.set()

    def _commit_queued(self) -> None:
        """Commit what `write` queued, in one transaction, before any of it is published."""
        with self._lock:
            batch = list(self._queue)
        if not batch:
            return
        try:
            self.outbox.put_many(batch)
        except OSError as err:
            log.error("MQTT sink %s: %d messages lost: %s", self.sensor_id, len(batch), err)
            self.lost += len(batch)
        with self._room:
            for _ in batch:
                self._queue.popleft()
            self._room.notify_all()

    def _forget_acked(self) -> None:
        """Match the PUBACKs received to their messages and delete those from the outbox (sender thread)."""
        with self._lock:
            while self._acks:
                seqs = self._inflight.pop(self._acks.popleft(), None)  # None: availability, state, or resent
                if seqs is not None:
                    self._acked_seqs.extend(seqs)
                    self.acked += len(seqs)
            seqs, self._acked_seqs = self._acked_seqs, []
        if seqs:
            self.outbox.ack(seqs)

    def _send_loop(self) -> None:
        last_state = time.monotonic()
        wait = 0.5
        while not self._stop.is_set():
            self._wake.wait(wait)
            self._wake.clear()
            wait = 0.5
            self._commit_queued()
            self._forget_acked()
            if time.monotonic() - last_state >= self._state_period:
                last_state = time.monotonic()
                self._publish_state()
            if not self.connected.is_set():
                continue
            with self._lock:
                room = self.settings.max_inflight - len(self._inflight)
                after = self._sent_upto
            if room <= 0:
                continue
            if self.batch_linger_s > 0:
                wait = self._send_batches(room, after)
            else:
                self._send_each(room, after)
        self._commit_queued()  # written before close: kept in the outbox for the next run
        self._forget_acked()

    def _send_each(self, room: int, after: int) -> None:
        """One MQTT message per message (sender thread)."""
        for item in self.outbox.pending(limit=room, after=after):
            info = self._client.publish(item.topic, item.payload, qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                break  # not connected after all: the next connect resends from the outbox
            with self._lock:
                self._inflight[info.mid] = [item.seq]
                self._sent_upto = max(self._sent_upto, item.seq)
            self.published += 1
            self.bytes_sent += len(item.payload)

    def _send_batches(self, room: int, after: int) -> float:
        """Up to `room` batches of up to `batch_max` messages, once the linger is over, the
        batch full, a stop pending or a flush asked for; returns how long the sender may sleep
        (sender thread)."""
        items = list(self.outbox.pending(limit=room * self.batch_max, after=after))
        now = time.monotonic()
        if not items:
            self._pending_since = None
            return 0.5
        if self._pending_since is None:
            self._pending_since = now
        due = self._pending_since + self.batch_linger_s
        urgent = any(item.topic.endswith(URGENT_TOPICS) for item in items)
        if len(items) < self.batch_max and now < due and not urgent and not self._flushing:
            return due - now
        self._pending_since = None
        for chunk in _chunks(items, self.batch_max, BATCH_BYTES):
            payload = batch_payload([item.payload for item in chunk], self.settings.encoding)
            info = self._client.publish(self.batch_topic, payload, qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                break
            with self._lock:
                self._inflight[info.mid] = [item.seq for item in chunk]
                self._sent_upto = max(self._sent_upto, chunk[-1].seq)
            self.published += len(chunk)
            self.bytes_sent += len(payload)
        return 0.5

    def _publish_state(self, online: bool = True) -> mqtt.MQTTMessageInfo | None:
        if not self.connected.is_set():
            return None
        state: dict[str, Any] = {
            "sensor_id": self.sensor_id,
            "online": online,
            "outbox": self.outbox.depth() + len(self._queue),
        }
        if self.state is not None:
            try:
                state.update(self.state())
            except Exception:  # a state callback must never stop delivery
                log.debug("state callback failed", exc_info=True)
        return self._client.publish(f"ivs/{self.sensor_id}/state", json.dumps(state), qos=1, retain=True)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything written is committed and acknowledged, or the timeout passes."""
        deadline = time.monotonic() + timeout
        self._flushing = True  # nothing waits for the linger meanwhile
        try:
            while self._queue and time.monotonic() < deadline and self._sender.is_alive():
                self._wake.set()
                time.sleep(0.005)
            return not self._queue and self.outbox.wait_empty(max(0.0, deadline - time.monotonic()), self._wake.set)
        finally:
            self._flushing = False

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what can be delivered, say "offline", disconnect. Undelivered messages stay
        in the outbox for the next run."""
        self.flush(timeout)
        self._stop.set()
        self._wake.set()
        self._sender.join(timeout=5)
        final = self._publish_state(online=False)  # the run's totals, and the outbox as it is left
        if final is not None:
            with contextlib.suppress(RuntimeError, ValueError):  # the connection went meanwhile
                final.wait_for_publish(2)
        if self.connected.is_set():
            self._client.publish(self.availability, "offline", qos=1, retain=True).wait_for_publish(2)
        self._client.disconnect()
        self._client.loop_stop()
