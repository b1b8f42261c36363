"""A node's YAML: a site's cameras in one file, each entry a sensor's config.

    node:
      id: store-berlin
      metrics_port: 9108
    defaults:                       # merged into every sensor (a sensor's own keys win)
      model: {name: person}
      sinks:
        - {type: mqtt, host: 127.0.0.1, outbox: "outbox/{id}.sqlite"}
    sensors:
      - id: entrance
        source: {url: rtsp://cam1.local/stream}
        apps: [{type: line, name: door, p1: [384, 575], p2: [384, 100]}]
      - id: till
        source: {url: rtsp://cam2.local/stream}

Each merged entry is validated as a sensor file is (`ivs.config.SensorConfig`), so every
sensor keeps what makes it itself: its id, seq, outbox, sinks, apps and hub registration.
Mappings merge key by key; a list or value in the sensor replaces the default's. `{id}` in
an outbox, a JSON lines path or a deploy folder becomes the sensor's id, so one default
serves every camera; two sensors sharing an outbox file is an error.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError

from ivs.config import (
    Problem,
    SensorConfig,
    _line_of,
    read_yaml,
    validation_problems,
)
from ivs.config_base import Settings as _Model
from ivs.errors import ConfigError
from ivs.sink_config import HttpSinkConfig, MqttSinkConfig


class NodeMqttSettings(_Model):
    host: str = Field("127.0.0.1", description="The broker the hub publishes on.")
    port: int = Field(1883, ge=1, le=65535, description="Its port.")
    username: str | None = Field(None, description="MQTT user: the node's device name, with `ivs hub mqtt-auth`.")
    password_env: str | None = Field(
        None, description="Environment variable holding the MQTT password (the node's device token)."
    )
    tls_ca: str | None = Field(None, description="CA certificate (PEM) to verify the broker; enables TLS.")


class NodeHubSettings(_Model):
    hub: str = Field(description="The hub's base URL: where the node's desired site file is (`ivs hub node-deploy`).")
    token_env: str = Field(
        "IVS_NODE_TOKEN", description="Environment variable holding the node's device token (never the token itself)."
    )
    ca_file: str | None = Field(None, description="CA certificate (PEM) to verify an https hub against.")
    interval_s: float = Field(
        30.0, gt=0, le=86400, description="How often to ask the hub and report the sensors' health."
    )
    mqtt: NodeMqttSettings | None = Field(
        None,
        description="Also act at once when the hub publishes a new site revision (retained `ivs/NODE/desired`) "
        "on this broker; polling stays as the fallback.",
    )


class NodeSettings(_Model):
    id: str = Field("node", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", description="This node's id.")
    metrics_port: int | None = Field(
        None, ge=1, le=65535, description="Serve Prometheus /metrics for every sensor on 127.0.0.1 at this port."
    )
    workers: int | None = Field(
        None, ge=1, le=64, description="Inference workers per network (default: the machine's cores)."
    )
    threads: int = Field(1, ge=1, le=64, description="Intra-op threads of each inference worker.")
    restart_s: float = Field(
        5.0, gt=0, le=3600, description="Wait before restarting a sensor whose run failed (seconds)."
    )
    stuck_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="A sensor whose inference has not answered for this long is reported stuck and restarted "
        "(seconds).",
    )
    stop_s: float = Field(
        10.0,
        gt=0,
        le=600,
        description="On SIGTERM/SIGINT, wait this long for the sensors to stop; a part still running then is named "
        "and the node exits with status 3 (seconds).",
    )
    hub: NodeHubSettings | None = Field(
        None, description="Take the site file the hub deploys to this node (its id is a device on the hub)."
    )


class NodeConfig(_Model):
    """Many sensors in one process, sharing each network's inference service."""

    node: NodeSettings = Field(default_factory=lambda: NodeSettings(), description="The node itself.")
    defaults: dict[str, Any] = Field(
        default_factory=dict, description="Sensor settings merged into every entry of `sensors` (an entry's win)."
    )
    sensors: list[SensorConfig] = Field(min_length=1, description="The sensors, each as a sensor file holds it.")


def merge(base: Any, over: Any) -> Any:
    """`over` on top of `base`: mappings key by key, anything else replaced."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = copy.deepcopy(base)
        for key, value in over.items():
            out[key] = merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    return copy.deepcopy(over)


def _with_id(entry: dict[str, Any]) -> dict[str, Any]:
    """`{id}` in the per-sensor file names replaced by the entry's id."""
    sid = entry.get("id")
    if not isinstance(sid, str):
        return entry
    for sink in entry.get("sinks") or []:
        if isinstance(sink, dict):
            for key in ("outbox", "path"):
                if isinstance(sink.get(key), str):
                    sink[key] = sink[key].replace("{id}", sid)
    deploy = entry.get("deploy")
    if isinstance(deploy, dict) and isinstance(deploy.get("folder"), str):
        deploy["folder"] = deploy["folder"].replace("{id}", sid)
    return entry


def sensor_node(node: yaml.Node | None, index: int) -> yaml.Node | None:
    """The YAML tree of the `index`-th entry of `sensors:` (for a sensor's own line numbers)."""
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if key.value == "sensors" and isinstance(value, yaml.SequenceNode) and index < len(value.value):
                return value.value[index]  # type: ignore[no-any-return]
    return None


def _line(node: yaml.Node | None, loc: tuple[str | int, ...]) -> int | None:
    """The line of a location: in the sensor's own entry, or in `defaults` when the entry does
    not set that key (the value came from there)."""
    if len(loc) >= 2 and loc[0] == "sensors" and isinstance(loc[1], int):
        rest = loc[2:]
        if rest and not _has(node, loc) and _has(node, ("defaults", *rest)):
            return _line_of(node, ("defaults", *rest))
    return _line_of(node, loc)


def _has(node: yaml.Node | None, loc: tuple[str | int, ...]) -> bool:
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if k.value == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            return False
        if node is None:
            return False
    return True


def parse_node(text: str) -> tuple[NodeConfig | None, list[Problem], yaml.Node | None]:
    """A node file's config (None if invalid), every problem with its line, the YAML tree."""
    data, node, problems = read_yaml(text)
    if problems:
        return None, problems, None
    if not isinstance(data, dict) or "sensors" not in data:
        return None, [Problem((), "expected a mapping with `sensors:`, a list of sensors", 1)], node
    defaults = data.get("defaults") or {}
    sensors = data["sensors"]
    if not isinstance(defaults, dict):
        return None, [Problem(("defaults",), "expected a mapping of sensor settings", _line(node, ("defaults",)))], node
    if not isinstance(sensors, list) or not all(isinstance(s, dict) for s in sensors):
        why = "expected a list of sensors, each a mapping of its settings (id, source, ...)"
        return None, [Problem(("sensors",), why, _line(node, ("sensors",)))], node
    merged = {**data, "sensors": [_with_id(merge(defaults, s)) for s in sensors]}
    try:
        config = NodeConfig.model_validate(merged)
    except ValidationError as err:
        return None, validation_problems(err, lambda loc: _line(node, loc)), node
    problems = _clashes(config, node)
    return (config if not problems else None), problems, node


def _clashes(config: NodeConfig, node: yaml.Node | None) -> list[Problem]:
    """What two sensors of one node must not share: an id, an outbox file, a deploy folder."""
    problems: list[Problem] = []
    seen: dict[tuple[str, str], int] = {}
    for i, s in enumerate(config.sensors):
        owned: list[tuple[tuple[str | int, ...], str, str]] = [(("id",), "id", s.id)]
        owned += [(("sinks", k, "outbox"), "outbox", str(Path(x.outbox).resolve()))
                  for k, x in enumerate(s.sinks) if isinstance(x, MqttSinkConfig | HttpSinkConfig)]  # fmt: skip
        if s.deploy is not None:
            owned.append((("deploy", "folder"), "deploy folder", str(Path(s.deploy.folder).resolve())))
        for loc, what, value in owned:
            first = seen.setdefault((what, value), i)
            if first != i:
                hint = " (put {id} in it: one file per sensor)" if what != "id" else ""
                why = f"{what} {value!r} is taken by sensor {config.sensors[first].id!r}: expected one per sensor{hint}"
                problems.append(Problem(("sensors", i, *loc), why, _line(node, ("sensors", i, *loc))))
    return problems


def is_node_file(path: Path) -> bool:
    """Whether a YAML file is a node's (it has `sensors:` at the top) rather than one sensor's."""
    try:
        data, _, problems = read_yaml(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return False
    return not problems and isinstance(data, dict) and "sensors" in data


def load_node(path: Path) -> tuple[NodeConfig | None, list[Problem], yaml.Node | None]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the node config ({err.strerror}): expected a YAML file") from None
    except UnicodeDecodeError:
        return None, [Problem((), "not UTF-8: expected a YAML file in UTF-8", None)], None
    return parse_node(text)


def check_node_file(path: Path) -> tuple[NodeConfig | None, list[Problem]]:
    """Everything `ivs config check` reports for a node file: the schema of every merged entry,
    what sensors may not share, then each sensor's checks against its source and model."""
    from ivs.assemble import check_sensor

    config, problems, node = load_node(path)
    if config is None:
        return None, problems
    for i, sensor in enumerate(config.sensors):
        for p in check_sensor(sensor, sensor_node(node, i)):
            problems.append(Problem(("sensors", i, *p.loc), p.message, p.line))
    return (config if not problems else None), problems
