"""The node's side of its twin: apply the site file the hub deploys, report how it went and
every sensor's health (`node.hub` in the site file; the hub's side is `ivs.hub.node_routes`).

Every `interval_s` the agent asks the hub for the node's desired site file. A new revision is
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
import threading

from ivs.deploy import DeployError, HubClient
from ivs.errors import ConfigError
from ivs.node import Node
from ivs.node_config import NodeHubSettings, parse_node

log = logging.getLogger(__name__)


class NodeAgent:
    """Keeps a node on the site file the hub wants (see the module's docstring)."""

    def __init__(self, node: Node, settings: NodeHubSettings) -> None:
        token = os.environ.get(settings.token_env)
        if not token:
            raise ConfigError(
                f"node.hub: token_env {settings.token_env!r} is not set in the environment: expected the node's"
                " device token (`ivs hub device add NODE`, or `ivs enrol`)"
            )
        self.node, self.settings = node, settings
        self.client = HubClient(settings.hub, token, ca_file=settings.ca_file)
        self.revision = 0
        self.status = "ok"
        self.error: str | None = None
        self.applied = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ivs-node-agent", daemon=True)

    def start(self) -> NodeAgent:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.client.timeout + 5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except DeployError as err:
                log.warning("node: the hub: %s; trying again in %g s", err, self.settings.interval_s)
            except Exception:  # the agent must outlive a bug in one poll: the sensors keep running
                log.exception("node: poll failed")
            self._stop.wait(self.settings.interval_s)

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
