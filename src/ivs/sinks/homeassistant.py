"""Home Assistant MQTT discovery (opt-in): a sensor and its apps appear in Home Assistant by
themselves, as one device with a few entities.

For a sensor `S`, with `node` its id made safe for Home Assistant (`[a-z0-9_]`) and `app` an
app's name made safe the same way (and unique within the sensor):

    <prefix>/<component>/<node>/<app>_<entity>/config    discovery config (JSON, retained)
    ivs/S/ha/<app>/<entity>                              the entity's state (retained, QoS 1)

Entities, per app (each app's `ha_entities`, `ha_states`: ivs.apps.registry):

    Zone         sensor        <app>_occupancy   objects in the zone (state_class measurement)
                 binary_sensor <app>_occupied    ON while anyone is in it (device_class occupancy)
    SafetyZone   binary_sensor <app>_stop        ON on `stop`, OFF on `clear` (device_class safety)
    LineCounter  sensor        <app>_count_in    in-crossings, all labels (total_increasing)
                 sensor        <app>_count_out   out-crossings, all labels (total_increasing)
    MaskCheck    sensor        <app>_masks       faces with a mask (total_increasing)
                 sensor        <app>_no_masks    faces without one (total_increasing)

Other apps (the heatmap) have no entity. The configs and the current states are published
again on every (re)connect; each relevant event updates its entities' states.

Availability: every entity names `ivs/S/availability` ("online" / "offline") as its
availability topic. That topic belongs to the MQTT sink (`ivs.sinks.mqtt.MqttSink`), which
says "online" on connect and has "offline" as its last will; this sink sets no will and never
writes it. Used without the MQTT sink, nothing says "online" and Home Assistant shows the
entities as unavailable: run it beside an MQTT sink on the same broker.
"""

from __future__ import annotations

import json
import logging
import queue
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import paho.mqtt.client as mqtt

import ivs
from ivs.apps import App
from ivs.apps.registry import AppBase
from ivs.events import Event
from ivs.mqtt_client import MqttSettings

log = logging.getLogger(__name__)


def slug(text: str) -> str:
    """`text` as a Home Assistant id: lower case, runs of anything but [a-z0-9_] made one `_`."""
    out = re.sub(r"[^a-z0-9_]+", "_", text.lower())
    out = re.sub(r"_+", "_", out).strip("_")
    return out or "x"


@dataclass(frozen=True)
class Entity:
    """One Home Assistant entity of a sensor."""

    component: str
    """"sensor" or "binary_sensor"."""
    app: str
    """The app's name, as configured (events carry it)."""
    app_slug: str
    key: str
    """What the entity is about, within its app ("occupancy", "count_in", ...)."""
    name: str
    state_topic: str
    initial: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def object_id(self) -> str:
        return f"{self.app_slug}_{self.key}"


def entities(sensor_id: str, apps: Sequence[App]) -> list[Entity]:
    """The entities of a sensor's apps, in app order (each app says its own: `ha_entities`);
    apps without entities are skipped."""
    out: list[Entity] = []
    taken: set[str] = set()
    for app in apps:
        specs = app.ha_entities() if isinstance(app, AppBase) else []
        if not specs:
            continue
        base = app_slug = slug(app.name)
        n = 2
        while app_slug in taken:
            app_slug, n = f"{base}_{n}", n + 1
        taken.add(app_slug)
        for spec in specs:
            out.append(
                Entity(
                    component=spec.component,
                    app=app.name,
                    app_slug=app_slug,
                    key=spec.key,
                    name=f"{app.name} {spec.name}",
                    state_topic=f"ivs/{sensor_id}/ha/{app_slug}/{spec.key}",
                    initial=spec.initial,
                    extra=dict(spec.extra),
                )
            )
    return out


def discovery_config(
    sensor_id: str, entity: Entity, *, discovery_prefix: str = "homeassistant", model_name: str = ""
) -> tuple[str, dict[str, Any]]:
    """The discovery topic and config (to publish as JSON, retained) of one entity."""
    node = slug(sensor_id)
    topic = f"{discovery_prefix}/{entity.component}/{node}/{entity.object_id}/config"
    config: dict[str, Any] = {
        "unique_id": f"ivs_{node}_{entity.object_id}",
        "name": entity.name,
        "state_topic": entity.state_topic,
        "availability_topic": f"ivs/{sensor_id}/availability",
        "payload_available": "online",
        "payload_not_available": "offline",
        "qos": 1,
        **entity.extra,
        "device": {
            "identifiers": [f"ivs_{sensor_id}"],
            "name": sensor_id,
            "manufacturer": "ivs",
            "model": model_name,
        },
        "origin": {"name": "ivs", "sw_version": ivs.__version__},
    }
    return topic, config


def discovery_messages(
    sensor_id: str, apps: Sequence[App], *, discovery_prefix: str = "homeassistant", model_name: str = ""
) -> list[tuple[str, dict[str, Any]]]:
    """Every discovery (topic, config) of a sensor's apps."""
    return [
        discovery_config(sensor_id, e, discovery_prefix=discovery_prefix, model_name=model_name)
        for e in entities(sensor_id, apps)
    ]


class HomeAssistantSink:
    """Publishes Home Assistant discovery configs and entity states for a sensor's apps.

    It has its own MQTT client (`ivs-ha-<sensor>`) and sets no last will: availability is the
    MQTT sink's (see the module's docstring). States are published retained at QoS 1; one
    that was in flight across a reconnect is published again, current, once the broker acknowledges
    the old one, so a stale value never stays retained.
    """

    def __init__(
        self,
        sensor_id: str,
        apps: Sequence[App],
        settings: MqttSettings,
        *,
        discovery_prefix: str = "homeassistant",
        model_name: str = "",
    ) -> None:
        self.sensor_id, self.settings = sensor_id, settings
        self.entities = entities(sensor_id, apps)
        self.discovery = [
            discovery_config(sensor_id, e, discovery_prefix=discovery_prefix, model_name=model_name)
            for e in self.entities
        ]
        self._by_app: dict[str, dict[str, Entity]] = {}
        for e in self.entities:
            self._by_app.setdefault(e.app, {})[e.key] = e
        self._apps = {a.name: a for a in apps if isinstance(a, AppBase)}
        self.states: dict[str, str] = {e.state_topic: e.initial for e in self.entities}
        """The current state of every entity, by state topic."""
        self.connected = threading.Event()
        self.connects = 0
        # One thread publishes (`_run`): paho calls on_publish holding its own lock, and a sink
        # that took a lock of its own there while another thread held it and published would
        # deadlock (it did, with events arriving while PUBACKs came back). The callbacks and
        # `write` only queue jobs; the publisher alone touches `_pending` and `_generation`, and
        # registers a message's mid before it can see that mid's acknowledgement.
        self._jobs: queue.Queue[tuple[str, Any] | None] = queue.Queue()
        self._generation = 0
        self._pending: dict[int, tuple[int, str | None]] = {}  # paho mid -> (generation, state topic)
        self._lock = threading.Lock()  # guards `states` (written by `write`, read by the publisher)
        self._closing = False

        client = settings.client(f"ivs-ha-{sensor_id}")
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = lambda c, u, mid, reason, props: self._jobs.put(("ack", mid))
        self._client = client
        self._publisher = threading.Thread(target=self._run, name=f"ivs-ha-{sensor_id}", daemon=True)
        self._publisher.start()
        client.connect_async(settings.host, settings.port, keepalive=settings.keepalive)
        client.loop_start()

    # paho callbacks (its network thread): they only queue work for the publisher
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            log.warning("MQTT %s:%s refused the connection: %s", self.settings.host, self.settings.port, reason)
            return
        self._jobs.put(("connect", None))

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self.connected.clear()
        if not self._closing:
            log.warning("MQTT connection of the Home Assistant sink lost (%s); reconnecting", reason)

    # the publisher thread
    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                self._do(*job)
            except Exception:  # a failed publish must not end the thread: the next connect resends all
                log.warning("Home Assistant sink: %s failed", job[0], exc_info=True)
            finally:
                self._jobs.task_done()
        self._jobs.task_done()

    def _do(self, kind: str, arg: Any) -> None:
        if kind == "connect":
            self.connects += 1
            self._generation += 1
            for topic, config in self.discovery:
                self._publish(topic, json.dumps(config), None)
            for topic in list(self.states):
                self._publish_state(topic)
            self.connected.set()
        elif kind == "state":
            if self.connected.is_set():
                self._publish_state(arg)
            # else: the next connect publishes the current states
        elif kind == "ack":
            generation, acked = self._pending.pop(arg, (self._generation, None))
            if acked is not None and generation < self._generation:
                # Sent before the last reconnect and resent by paho after our fresh state:
                # say the current state once more, last.
                self._publish_state(acked)

    def _publish_state(self, topic: str) -> None:
        with self._lock:
            value = self.states[topic]
        self._publish(topic, value, topic)

    def _publish(self, topic: str, payload: str, state_topic: str | None) -> None:
        """Publish retained at QoS 1 and remember it until acknowledged (publisher thread only)."""
        info = self._client.publish(topic, payload, qos=1, retain=True)
        if info.rc == mqtt.MQTT_ERR_SUCCESS:
            self._pending[info.mid] = (self._generation, state_topic)

    # the sink interface
    def write(self, message: msgspec.Struct) -> None:
        if not isinstance(message, Event):
            return  # a frame record: no entity follows those
        entities, app = self._by_app.get(message.app), self._apps.get(message.app)
        if entities is None or app is None:
            return
        updates = {entities[k].state_topic: v for k, v in app.ha_states(message).items() if k in entities}
        with self._lock:
            self.states.update(updates)
        for topic in updates:
            self._jobs.put(("state", topic))  # published with the value current then: never a stale one last

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until connected and everything published is acknowledged, or the timeout passes."""
        deadline = time.monotonic() + timeout
        while True:
            # Jobs first: an acknowledgement is a job, and the publisher empties `_pending` by them.
            done = self.connected.is_set() and self._jobs.unfinished_tasks == 0 and not self._pending
            if done or time.monotonic() >= deadline:
                return done
            time.sleep(0.02)

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what can be delivered and disconnect. The retained configs and states stay."""
        self.flush(timeout)
        self._closing = True
        self._client.disconnect()
        self._client.loop_stop()
        self._jobs.put(None)
        self._publisher.join(timeout=5)
