"""MQTT ingest: the hub's subscriber, storing what sensors publish.

Each `MqttIngest` is one worker: an `ivs.consumer.Consumer` on a *shared* subscription
(`$share/<group>/ivs/+/events/#`, `.../frames`, `.../batch`), so the broker splits one stream between every
worker of a group (in one process or many, on one database), plus a plain subscription to
`ivs/+/availability` and `ivs/+/state` (retained: every worker gets them, and they are
idempotent updates of the sensors table).

Accepted messages go to a queue that a writer thread drains into `Store.ingest` in batches
(every `batch_wait_s` or `batch_size` messages). The store is idempotent on
`(sensor_id, seq)`, so a message redelivered by the broker, or to another worker after a
reconnect, is stored once. A batch the database refuses is retried with backoff until it is
stored or the worker is closed.

Limitation: the MQTT client acknowledges a message when it has been queued here, not when it is
stored, so a hub killed mid-batch loses at most the messages still in its queue (at most
`batch_size`, or `batch_wait_s` worth); the HTTP ingest acknowledges only after storing.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import uuid
from collections import Counter
from typing import Any

import paho.mqtt.client as mqtt
from sqlalchemy.exc import SQLAlchemyError

from ivs.consumer import Consumer, Message
from ivs.hub.metrics import HubMetrics
from ivs.hub.store import Store, TextRefused, check_message, check_name
from ivs.mqtt_client import MqttSettings, MqttSetupError, tls_context, tls_problem

log = logging.getLogger(__name__)


MAX_PAYLOAD = 4 * 1024 * 1024
"""Bytes of one MQTT message at most (the largest a sensor sends, a 512x512 heatmap, is about
1.5 MiB as JSON); a larger one is refused before it is decoded."""


class _HubConsumer(Consumer):
    """A Consumer that also reports each rejection to the ingest (bounded reason labels) and
    refuses payloads over `max_payload` bytes unread."""

    def __init__(self, on_reject: Any, max_payload: int, *args: Any, **kwargs: Any) -> None:
        self._on_reject = on_reject  # before super().__init__: it starts the network thread
        self._max_payload = max_payload
        super().__init__(*args, **kwargs)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if len(msg.payload) > self._max_payload:
            self._reject(f"too large: {len(msg.payload)} bytes, expected at most {self._max_payload}", msg.topic)
            return
        parts = msg.topic.split("/")
        shape = (len(parts) == 4 and parts[2] == "events" and parts[3]) or (
            len(parts) == 3 and parts[2] in ("frames", "batch")
        )
        if not shape or parts[0] != "ivs" or check_name(parts[1]) is not None:
            self._reject(
                "unexpected topic: expected ivs/<sensor>/events/<kind>, ivs/<sensor>/frames or ivs/<sensor>/batch",
                msg.topic,
            )
            return
        super()._on_message(client, userdata, msg)

    def _reject(self, reason: str, topic: str) -> None:
        super()._reject(reason, topic)
        if reason.startswith("too large"):
            self._on_reject("too_large")
        elif reason.startswith("unexpected topic"):
            self._on_reject("topic")
        elif reason.startswith("sensor_id"):
            self._on_reject("sensor_mismatch")
        else:
            self._on_reject("schema")


class CommandTimeout(Exception):
    """A device did not answer a command in time."""


class _Waiter:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.answer: dict[str, Any] | None = None


class MqttIngest:
    """One hub worker storing the messages of every sensor on a broker.

    group: the shared-subscription group; workers with the same group split the stream.
    client_id: a fixed id makes the broker keep the subscription and queue messages while this
        worker is away (a persistent session); None: a clean session with a random id.
    metrics: count into these (e.g. the HTTP app's, to expose one /metrics for both).
    max_payload: bytes of one message at most; a larger one is rejected ("too_large") unread.
    tls_ca: CA certificate (PEM) to verify the broker against (ca.pem from `ivs hub certs`);
        enables TLS. tls_cert, tls_key: a client certificate, for a listener that wants one.
        With TLS, one handshake is tried first: a broker whose certificate does not verify (or
        that does not speak TLS) raises ConfigError saying so, instead of a worker that retries
        in silence; a broker that does not answer yet is retried, as without TLS.
    `last_error`: why the last connection attempt failed (None while connected), also logged.

    Counters: `stored` (messages stored by this worker), `duplicates` (already stored),
    `rejected` (by reason label, see `ivs.hub.metrics.REJECT_REASONS`), `batches`.
    """

    def __init__(
        self,
        store: Store,
        host: str,
        port: int,
        group: str = "ivs-hub",
        *,
        client_id: str | None = None,
        username: str | None = None,
        password: str | None = None,
        metrics: HubMetrics | None = None,
        batch_size: int = 5000,
        batch_wait_s: float = 0.1,
        max_payload: int = MAX_PAYLOAD,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
    ) -> None:
        if batch_size < 1 or batch_wait_s <= 0:
            raise ValueError(f"batch_size {batch_size}, batch_wait_s {batch_wait_s}: expected >= 1 and > 0")
        self._settings = settings = MqttSettings(host, port, username, password, tls_ca, tls_cert, tls_key)
        self.last_error: str | None = None
        why = self._tls_problem()  # before any thread starts: a wrong CA is a setup error, said at once
        if why is not None:
            raise MqttSetupError(why)
        self.store, self.metrics = store, metrics
        self.batch_size, self.batch_wait_s = batch_size, batch_wait_s
        self.max_payload = max_payload
        self.stored = self.duplicates = self.batches = 0
        self.rejected: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._waiting: dict[str, tuple[str, _Waiter]] = {}
        """Commands sent and not answered yet: id -> (device, its waiter)."""
        self._queue: queue.Queue[list[Message] | None] = queue.Queue()
        self._closing = threading.Event()
        self._writer = threading.Thread(target=self._write_loop, name=f"ivs-hub-mqtt-{group}", daemon=True)
        self._writer.start()

        self.status_connected = threading.Event()
        status = settings.client("", max_delay=10)
        self._status_mid: int | None = None
        status.on_connect = self._on_status_connect
        status.on_subscribe = self._on_status_subscribe
        status.on_connect_fail = self._on_connect_fail
        status.on_disconnect = lambda *a: self.status_connected.clear()
        status.on_message = self._on_status
        self._status = status
        status.connect_async(host, port, keepalive=10)
        status.loop_start()

        self.consumer = _HubConsumer(
            self._count_reject,
            max_payload,
            host,
            port,
            self._on_message,
            on_batch=self._on_batch,
            client_id=client_id,
            username=username,
            password=password,
            shared_group=group,
            tls_ca=tls_ca,
            tls_cert=tls_cert,
            tls_key=tls_key,
        )

    # receiving (MQTT network threads)
    def _on_message(self, message: Message) -> None:
        why = check_message(message)
        if why is not None:
            log.warning("rejected %s/%s: %s", message.sensor_id, message.seq, why)
            self._count_reject("schema")
            return
        self._queue.put([message])

    def _on_batch(self, messages: list[Message]) -> None:
        good = [m for m in messages if check_message(m) is None]
        if len(good) < len(messages):
            for m in messages:
                if (why := check_message(m)) is not None:
                    log.warning("rejected %s/%s: %s", m.sensor_id, m.seq, why)
            self._count_reject("schema", len(messages) - len(good))
        if good:
            self._queue.put(good)  # one queue entry per batch: per message, the queue costs more than the rest

    def _count_reject(self, reason: str, n: int = 1) -> None:
        with self._lock:
            self.rejected[reason] += n
        if self.metrics is not None:
            self.metrics.reject(reason, n)

    def _tls_problem(self) -> str | None:
        s = self._settings
        if s.tls_ca is None:
            return None
        return tls_problem(s.host, s.port, tls_context(s.tls_ca, s.tls_cert, s.tls_key), client_cert=bool(s.tls_cert))

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        # paho says only that it failed: find out why (once per attempt, 1 to 10 s apart)
        why = self._tls_problem() or f"MQTT {self._settings.host}:{self._settings.port} did not answer"
        if why != self.last_error:
            log.warning("%s; retrying", why)
        self.last_error = why

    def _on_status_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self.last_error = f"MQTT {self._settings.host}:{self._settings.port} refused the hub: {reason}"
            log.warning("MQTT refused the hub's status subscription: %s", reason)
            return
        self.last_error = None
        topics = [("ivs/+/availability", 1), ("ivs/+/state", 1), ("ivs/+/responses", 1)]
        _, self._status_mid = client.subscribe(topics)

    def _on_status_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        # connected = the broker acknowledged the subscriptions (SUBACK): no status is missed after it
        if mid != self._status_mid:
            return
        refused = [str(r) for r in reasons if r.is_failure]
        if refused:
            self.last_error = f"MQTT refused the hub's status subscription: {', '.join(refused)}"
            log.warning("%s", self.last_error)
            return
        self.status_connected.set()

    def _on_status(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        parts = msg.topic.split("/")
        if len(parts) != 3 or check_name(parts[1]) is not None:
            self._count_reject("topic")
            return
        if len(msg.payload) > self.max_payload:
            self._count_reject("too_large")
            return
        sensor, what, payload = parts[1], parts[2], bytes(msg.payload)
        if not payload:
            return  # a retained message being cleared
        if what == "responses":
            self._on_response(sensor, payload)
            return
        fields: dict[str, Any] = {}
        if what == "availability":
            text = payload.decode(errors="replace").strip()
            if text not in ("online", "offline"):
                log.warning("ignored availability %r of %s: expected 'online' or 'offline'", text[:40], sensor)
                self._count_reject("schema")
                return
            fields["online"] = text == "online"
        else:
            fields.update(_state_fields(payload, sensor))
        try:
            self.store.set_sensor(sensor, seen=not msg.retain, **fields)
            health = _health(payload) if what == "state" and not msg.retain else None
            if health is not None:  # fresh only: what gates a rollout (ivs.hub.rollouts)
                self.store.set_health(sensor, *health, fields.get("model"), fields.get("version"))
        except TextRefused as err:  # a NUL or a lone surrogate in what it reported
            log.warning("ignored the %s of %s: %s", what, sensor, err)
            self._count_reject("schema")
        except SQLAlchemyError:
            log.exception("could not record the %s of %s", what, sensor)

    # storing (the writer thread)
    def _write_loop(self) -> None:
        done = False
        while not done:
            first = self._queue.get()
            if first is None:
                break
            batch: list[Message] = first
            deadline = time.monotonic() + self.batch_wait_s
            while len(batch) < self.batch_size:
                try:
                    item = self._queue.get(timeout=max(deadline - time.monotonic(), 0))
                except queue.Empty:
                    break
                if item is None:
                    done = True
                    break
                batch.extend(item)
            self._store(batch)

    def _store(self, batch: list[Message]) -> None:
        backoff = 0.5
        while True:
            started = time.perf_counter()
            try:
                accepted, duplicates = self.store.ingest(batch)
            except TextRefused:  # checked messages should hold none; if one does, it alone is refused
                if len(batch) == 1:
                    log.warning("refused a message of %s: text the store cannot hold", batch[0].sensor_id)
                    self._count_reject("schema")
                    return
                for message in batch:
                    self._store([message])
                return
            except SQLAlchemyError:
                if self._closing.is_set():
                    log.exception("gave up storing %d messages: the hub is closing", len(batch))
                    self._count_reject("storage", len(batch))
                    return
                log.exception("could not store %d messages; retrying in %.1f s", len(batch), backoff)
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            break
        with self._lock:
            self.stored += accepted
            self.duplicates += duplicates
            self.batches += 1
        if self.metrics is not None:
            self.metrics.batch_seconds.observe(time.perf_counter() - started)
            self.metrics.accepted.inc(accepted)
            self.metrics.duplicates.inc(duplicates)

    # control
    def command(self, device: str, name: str, args: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """Send a direct method (`ivs.commands`) to a device and wait for its answer:
        `{"ok": ..., "result" | "error": ...}`. Raises CommandTimeout when none comes in time
        (the device is offline, or busy); the command is not kept for it."""
        cid = uuid.uuid4().hex
        waiter = _Waiter()
        with self._lock:
            self._waiting[cid] = (device, waiter)
        try:
            payload = json.dumps({"id": cid, "name": name, "args": args})
            self._status.publish(f"ivs/{device}/commands", payload, qos=1)
            if not waiter.done.wait(timeout_s):
                raise CommandTimeout(f"{device} did not answer {name!r} within {timeout_s:g} s: it is offline or busy")
            assert waiter.answer is not None
            return waiter.answer
        finally:
            with self._lock:
                self._waiting.pop(cid, None)

    def _on_response(self, device: str, payload: bytes) -> None:
        try:
            doc = json.loads(payload)
            cid = doc["id"]
        except (ValueError, KeyError, TypeError):
            self._count_reject("schema")
            return
        with self._lock:
            waiting = self._waiting.get(cid) if isinstance(cid, str) else None
        # Every hub worker hears every answer; the one that asked takes it, from that device only.
        if waiting is None or waiting[0] != device:
            return
        waiting[1].answer = {k: v for k, v in doc.items() if k in ("ok", "result", "error")}
        waiting[1].done.set()

    def push_desired(self, device: str, revision: int) -> None:
        """Publish a device's new desired revision, retained on `ivs/DEVICE/desired`: a connected
        sensor acts on it at once, one that connects later finds it there. It carries only the
        revision; the sensor fetches the desired state itself over HTTP(S) with its token."""
        payload = json.dumps({"revision": revision, "time": round(time.time(), 3)})
        self._status.publish(f"ivs/{device}/desired", payload, qos=1, retain=True)

    def wait_connected(self, timeout: float = 10.0) -> bool:
        """Wait until both subscriptions are connected; False on timeout."""
        deadline = time.monotonic() + timeout
        return self.consumer.connected.wait(timeout) and self.status_connected.wait(max(deadline - time.monotonic(), 0))

    def pending(self) -> int:
        """Single messages and batches received and not yet stored (approximately)."""
        return self._queue.qsize()

    def close(self, timeout: float = 10.0) -> None:
        """Stop receiving, store what was received, disconnect."""
        self.consumer.close()
        self._status.disconnect()
        self._status.loop_stop()
        self._closing.set()
        self._queue.put(None)
        self._writer.join(timeout)


def _state_fields(payload: bytes, sensor: str) -> dict[str, Any]:
    """model and version from a sensor's retained state JSON ({"model": "name" or
    {"name": ..., "version": ...}, "version": ...}); whatever is missing or malformed is left out."""
    try:
        state = json.loads(payload)
    except ValueError:
        log.warning("ignored the state of %s: expected a JSON object", sensor)
        return {}
    if not isinstance(state, dict):
        return {}
    fields: dict[str, Any] = {}
    model = state.get("model")
    if isinstance(model, dict):
        if isinstance(model.get("name"), str):
            fields["model"] = model["name"]
        if isinstance(model.get("version"), str):
            fields["version"] = model["version"]
    elif isinstance(model, str):
        fields["model"] = model
    if isinstance(state.get("version"), str):
        fields["version"] = state["version"]
    return fields


def _health(payload: bytes) -> tuple[float, int, int] | None:
    """(fps, frames, dropped) from a sensor's state JSON, or None when they are not all there."""
    try:
        state = json.loads(payload)
        fps, frames, dropped = state["fps"], state["frames"], state["dropped"]
    except (ValueError, KeyError, TypeError):
        return None
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (fps, frames, dropped)):
        return None
    return float(fps), int(frames), int(dropped)
