"""The node's side of its twin: apply the site file the hub deploys, report how it went and
every sensor's health (`node.hub` in the site file; the hub's side is `ivs.hub.node_routes`).

Every `interval_s` the agent asks the hub for the node's desired site file, and at once when the
hub publishes a new revision on MQTT (`node.hub.mqtt`: retained `ivs/NODE/desired`). A new revision is
checked as `ivs config check` checks a file (without opening cameras) and applied with
`Node.reload`: sensors added start, removed stop, changed restart, the rest run on. A file
that does not check is not applied: the node runs on as it was and the report says why, with
the problems' lines. Each poll also reports the sensors' health (state, frames, drops, fps,
last frame's age). A hub that cannot be reached is asked again at the next poll.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

from ivs.deploy import HubClient, HubPoller
from ivs.errors import ConfigError
from ivs.mqtt_client import MqttSettings
from ivs.node import Node
from ivs.node_config import NodeHubSettings, NodeMqttSettings, parse_node

log = logging.getLogger(__name__)


class NodeAgent(HubPoller):
    """Keeps a node on the site file the hub wants (see the module's docstring)."""

    def __init__(self, node: Node, settings: NodeHubSettings) -> None:
        token = os.environ.get(settings.token_env)
        if not token:
            raise ConfigError(
                f"node.hub: token_env {settings.token_env!r} is not set in the environment: expected the node's"
                " device token (`ivs hub device add NODE`, or `ivs enrol`)"
            )
        super().__init__(settings.interval_s, "node", "ivs-node-agent")
        self.node, self.settings = node, settings
        self.client = HubClient(settings.hub, token, ca_file=settings.ca_file)
        self.revision = 0
        self.status = "ok"
        self.error: str | None = None
        self.applied = 0
        self._mqtt = self._listen(settings.mqtt, node.config.node.id) if settings.mqtt is not None else None

    def start(self) -> NodeAgent:
        super().start()
        return self

    def close(self, timeout: float | None = None) -> None:
        super().close(self.client.timeout + 5 if timeout is None else timeout)
        if self._mqtt is not None:
            self._mqtt.disconnect()
            self._mqtt.loop_stop()

    def _listen(self, mqtt: NodeMqttSettings, node_id: str) -> Any:
        """A connection of the node's own that hears the hub's pushed revisions (as a sensor's
        deploy agent does on its sink's connection)."""
        password = os.environ.get(mqtt.password_env) if mqtt.password_env else None
        settings = MqttSettings(mqtt.host, mqtt.port, mqtt.username, password, mqtt.tls_ca)
        client = settings.client(f"ivs-node-{node_id}")
        topic = f"ivs/{node_id}/desired"
        client.on_connect = lambda c, u, f, reason, p: None if reason.is_failure else c.subscribe(topic, qos=1)
        client.on_message = lambda c, u, msg: self.nudge(bytes(msg.payload))
        client.connect_async(mqtt.host, mqtt.port, keepalive=settings.keepalive)
        client.loop_start()
        return client

    def poll(self) -> None:
        """Ask for the desired site once, apply a new revision, report."""
        desired = self.client.get("/api/v1/device/node-config")
        revision = int(desired.get("revision", 0))
        if revision and revision != self.revision:
            self._apply(str(desired.get("config") or ""), revision)
        sensors = [dataclasses.asdict(h) for h in self.node.health()]
        report = {"revision": self.revision, "status": self.status, "error": self.error, "sensors": sensors}
        self.client.send("POST", "/api/v1/device/node-report", report)

    def _apply(self, text: str, revision: int) -> None:
        config, problems, _ = parse_node(text)
        self.revision = revision
        if config is None:
            self.status = "failed"
            self.error = "; ".join(p.format(f"revision {revision}") for p in problems[:10])
            log.error("node: the hub's site revision %d is not valid, not applied: %s", revision, self.error)
            return
        done = self.node.reload(config)
        self.status, self.error = "ok", None
        self.applied += 1
        log.warning("node: applied the hub's site revision %d: %s", revision, done)
