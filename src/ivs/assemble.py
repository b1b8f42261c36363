"""The parts of a configured sensor besides its source and models: the tracker, the apps and the
sinks (with their outboxes), for `ivs.build`; and the checks `ivs config check` runs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ivs.apps import App, registry, uses_tracks
from ivs.apps.registry import AppEnv
from ivs.config import (
    AppConfig,
    FiltersConfig,
    ObjectFilterConfig,
    Problem,
    SensorConfig,
    SourceConfig,
    check_against,
    load,
)
from ivs.errors import ConfigError, IvsError
from ivs.evidence.recorder import Recorder
from ivs.evidence.redact import Redaction
from ivs.evidence.spool import EvidenceSpool
from ivs.evidence.upload import Uploader
from ivs.filters import ClassRule, DetectionFilter, Mask
from ivs.model import Model
from ivs.mqtt_client import MqttSettings
from ivs.outbox import Outbox
from ivs.package.reader import read_package
from ivs.package.signing import Keyring
from ivs.package.zoo import resolve
from ivs.sink_config import HttpSinkConfig, ModbusSinkConfig, MqttSinkConfig, OpcUaSinkConfig, WebhookSinkConfig
from ivs.sinks import Sink
from ivs.sinks.homeassistant import HomeAssistantSink
from ivs.sinks.http import HttpSink
from ivs.sinks.jsonl import JsonlSink
from ivs.sinks.mqtt import MqttSink
from ivs.sinks.plant import points_of
from ivs.sinks.webhook import WebhookSink
from ivs.sources import Source, open_source
from ivs.sources.reconnect import Reconnect
from ivs.track import ByteTracker
from ivs.track.stationary import Stationary


def reconnect_policy(config: SourceConfig) -> Reconnect | None:
    """The config's reconnect settings as the policy a live source takes (None: reconnecting is off)."""
    rc = config.reconnect
    if not rc.enabled:
        return None
    return Reconnect(first_s=rc.first_s, max_s=rc.max_s, factor=rc.factor, give_up_s=rc.give_up_s)


def open_configured_source(config: SourceConfig) -> Source:
    """Open the config's source with its reconnect and stall settings."""
    return open_source(config.url, reconnect=reconnect_policy(config), stall_s=config.stall_s)


def source_size(source: Source, config: SensorConfig) -> tuple[int, int] | None:
    if source.width and source.height:
        return source.width, source.height
    return config.source.frame_size


def check_file(path: Path) -> tuple[SensorConfig | None, list[Problem]]:
    """Everything `ivs config check` reports: schema errors, then checks against the source's
    frame size and the model's labels."""
    config, problems, node = load(path)
    if config is None:
        return None, problems
    problems = check_sensor(config, node)
    return (config if not problems else None), problems


def check_sensor(config: SensorConfig, node: Any) -> list[Problem]:
    """The checks that need the world: the source opens and says its frame size, the model's
    package reads and has the labels the apps name, every point is inside the frame."""
    problems: list[Problem] = []
    size = labels = None
    try:
        src = open_configured_source(config.source)
        size = source_size(src, config)
        src.close()
    except IvsError as err:
        problems.append(Problem(("source", "url"), str(err), _line(node, ("source", "url"))))
    try:
        keyring = Keyring.load(Path(config.keyring)) if config.keyring else None
        labels = read_package(resolve(config.model.name), keyring).manifest.labels
    except IvsError as err:
        problems.append(Problem(("model", "name"), str(err), _line(node, ("model", "name"))))
    return problems + check_against(config, node, size, labels)


def _line(node: object, loc: tuple[str | int, ...]) -> int | None:
    from ivs.config import _line_of

    return _line_of(node, loc)  # type: ignore[arg-type]


def build_app(app: AppConfig, labels: list[str], size: tuple[int, int], classifier: Model | None) -> App:
    """The app of one `apps:` entry (its module's factory, ivs.apps.registry)."""
    return registry.build_app(app, AppEnv(labels, size, classifier))


def build_filter(config: FiltersConfig, labels: list[str], size: tuple[int, int] | None) -> DetectionFilter | None:
    """The detection filter of a `filters:` section (None when it filters nothing). Areas below 1
    are fractions of the frame's area and normalized mask points fractions of its sides, so
    both need the frame size."""
    if not config.objects and not config.exclude:
        return None
    if size is None:
        raise ConfigError("filters: the source does not say its frame size: expected source.frame_size: [w, h]")
    frame_area = float(size[0] * size[1])

    def area(v: float | None) -> float | None:
        return None if v is None else (v * frame_area if v < 1 else v)

    def rule(c: ObjectFilterConfig) -> ClassRule:
        lo, hi = c.aspect if c.aspect is not None else (None, None)
        return ClassRule(area(c.min_area), area(c.max_area), c.min_score, lo, hi)

    rules = {labels.index(name): rule(c) for name, c in config.objects.items() if name != "*" and name in labels}
    default = rule(config.objects["*"]) if "*" in config.objects else None
    scale = (1.0, 1.0) if config.coords == "pixels" else (float(size[0]), float(size[1]))
    masks = [
        Mask(np.asarray([(x * scale[0], y * scale[1]) for x, y in m.polygon], np.float32), m.anchor, m.name or "")
        for m in config.exclude
    ]
    return DetectionFilter(rules, default, masks)


def _plant_sink(sc: ModbusSinkConfig | OpcUaSinkConfig, config: SensorConfig) -> Sink:
    """A Modbus or OPC UA server with the values of the config's apps."""
    points = points_of([(a.name, a.type) for a in config.apps])
    if isinstance(sc, ModbusSinkConfig):
        from ivs.sinks.modbus import ModbusSink

        return ModbusSink(points, sc.host, sc.port)
    from ivs.sinks.opcua import OpcUaSink

    password = os.environ.get(sc.password_env) if sc.password_env else None
    if sc.password_env and password is None:
        raise ConfigError(f"sinks: password_env {sc.password_env!r} is not set in the environment")
    return OpcUaSink(
        config.id, points, sc.host, sc.port, username=sc.username, password=password, cert=sc.cert, key=sc.key,
        client_certs=sc.client_certs,
    )  # fmt: skip


def build_evidence(config: SensorConfig, labels: list[str], size: tuple[int, int] | None) -> Recorder | None:
    """The evidence recorder and its uploader (None with policy none: nothing is kept)."""
    ec = config.evidence
    if ec.policy == "none":
        return None
    if size is None:
        raise ConfigError("evidence: the source does not say its frame size: expected source.frame_size: [w, h]")
    token = os.environ.get(ec.token_env or "")
    if not token:
        raise ConfigError(f"evidence: token_env {ec.token_env!r} is not set in the environment")
    scale = (1.0, 1.0) if ec.coords == "pixels" else (float(size[0]), float(size[1]))
    masks = [np.asarray([(x * scale[0], y * scale[1]) for x, y in m], np.int32) for m in ec.masks]
    persons = frozenset(i for i, name in enumerate(labels) if name == "person") or frozenset({0})
    redaction = Redaction(ec.policy, ec.redact, persons, masks=masks)
    faces = _face_finder() if ec.policy == "redacted" and ec.redact == "faces" else None
    spool = EvidenceSpool(ec.spool, ec.spool_mib)
    recorder = Recorder(
        config.id, spool, redaction, kinds=ec.events, apps=ec.apps, pre_s=ec.pre_s, post_s=ec.post_s,
        memory_mib=ec.memory_mib, snapshot=ec.snapshot, clip=ec.clip, faces=faces,
    )  # fmt: skip
    recorder.uploader = Uploader(spool, str(ec.url), token, ca_file=ec.ca_file)
    return recorder


def _face_finder() -> Any:
    """The zoo's face detector as a `FaceFinder` (for `redact: faces`)."""
    from ivs.model import load_model

    model = load_model("face", runtime="onnxruntime", threads=1)

    def find(image: Any) -> Any:
        return model(image).xyxy

    return find


@dataclass
class Assembly:
    """What a configured sensor adds to its source and models: filter, tracker, apps, sinks."""

    detection_filter: DetectionFilter | None
    tracker: ByteTracker | None
    """None when no app reads tracks (a safety stop alone) and no deploy may bring one."""
    stationary: Stationary | None
    evidence: Recorder | None
    """None with evidence policy none: no pixel is kept."""
    apps: list[App]
    sinks: list[Sink]
    seq_start: int
    """Where the sensor's sequence continues (the outbox remembers it across restarts)."""


def assemble(
    config: SensorConfig,
    *,
    source: Source,
    model: Model,
    second_stage: list[Model],
) -> Assembly:
    """Build the tracker, apps and sinks of a config for an opened source and loaded models."""
    size = source_size(source, config)
    if size is None and config.apps:  # apps place lines and zones on the frame
        raise ConfigError(
            f"source {config.source.url!r} does not say its frame size: expected source.frame_size: [w, h]"
        )
    tc = config.tracker
    classifier = second_stage[0] if second_stage else None
    apps = [build_app(a, model.labels, size, classifier) for a in config.apps] if size else []
    detection_filter = build_filter(config.filters, model.labels, size)
    tracker = None
    if uses_tracks(apps) or config.deploy is not None:  # a deployed config may bring apps that do
        tracker = ByteTracker(
            high_threshold=tc.high_threshold, low_threshold=tc.low_threshold, lost_frames=tc.lost_frames
        )
    sinks: list[Sink] = []
    seq_start = 0
    for sc in config.sinks:
        if isinstance(sc, MqttSinkConfig):
            box = Outbox(sc.outbox, max_messages=sc.max_messages)
            seq_start = max(seq_start, box.last_seq())
            password = os.environ.get(sc.password_env) if sc.password_env else None
            if sc.password_env and password is None:
                raise ConfigError(f"sinks: password_env {sc.password_env!r} is not set in the environment")
            settings = MqttSettings(
                sc.host, sc.port, sc.username, password, sc.tls_ca, sc.tls_cert, sc.tls_key, encoding=sc.encoding
            )
            sinks.append(
                MqttSink(config.id, box, settings, batch_linger_s=sc.batch_linger_ms / 1000, batch_max=sc.batch_max)
            )
            if sc.home_assistant:
                ha = HomeAssistantSink(
                    config.id, apps, settings, discovery_prefix=sc.discovery_prefix, model_name=config.model.name
                )
                sinks.append(ha)
        elif isinstance(sc, HttpSinkConfig):
            box = Outbox(sc.outbox, max_messages=sc.max_messages)
            seq_start = max(seq_start, box.last_seq())
            token = os.environ.get(sc.token_env) if sc.token_env else None
            if sc.token_env and token is None:
                raise ConfigError(f"sinks: token_env {sc.token_env!r} is not set in the environment")
            sinks.append(
                HttpSink(
                    config.id,
                    box,
                    sc.url,
                    token=token,
                    batch_size=sc.batch_size,
                    batch_wait_s=sc.batch_wait_s,
                    ca_file=sc.ca_file,
                )
            )
        elif isinstance(sc, WebhookSinkConfig):
            box = Outbox(sc.outbox, max_messages=sc.max_messages)
            seq_start = max(seq_start, box.last_seq())
            secret = os.environ.get(sc.secret_env)
            if not secret:
                raise ConfigError(f"sinks: secret_env {sc.secret_env!r} is not set in the environment")
            sinks.append(
                WebhookSink(config.id, box, sc.url, secret=secret.encode(), kinds=sc.kinds, ca_file=sc.ca_file)
            )
        elif isinstance(sc, ModbusSinkConfig | OpcUaSinkConfig):
            sinks.append(_plant_sink(sc, config))
        else:
            sinks.append(JsonlSink(sc.path))
    stationary = Stationary(tc.stationary_px, tc.stationary_s) if tracker is not None and tc.stationary_s else None
    evidence = build_evidence(config, model.labels, size)
    return Assembly(detection_filter, tracker, stationary, evidence, apps, sinks, seq_start)
