"""The composition root: a typed `SensorConfig` (plus what a run adds) -> a sensor ready to run.

Every way of starting a sensor comes through `build_sensor`: `ivs run --config FILE`, `ivs run
--source ... --model ...` (the CLI turns its flags into the same `SensorConfig`), the soak
benchmark and the tests. It opens the source, loads the model (on the CPU, or the IMX500's
when the source is the sensor) and the second stage, builds the tracker, apps and sinks
(`ivs.assemble`), wires the retained MQTT state to the sensor, and starts the package watcher
(hot swap) and the deploy agent when asked. `BuiltSensor.close` releases all of it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ivs.artifacts import ArtifactWriter, Mode
from ivs.assemble import assemble, build_app, open_configured_source, source_size
from ivs.commands import Commands
from ivs.config import SensorConfig
from ivs.deploy import DeployAgent, HubClient, LiveApps, LiveConfig
from ivs.errors import ConfigError
from ivs.hotswap import PackageWatcher
from ivs.imx500 import check_run_options, is_sensor_source
from ivs.imx500.model import attach, load_sensor_model
from ivs.isp import Roi
from ivs.model import Model, load_model
from ivs.package.signing import Keyring
from ivs.package.zoo import resolve
from ivs.runtime.shared import Runners
from ivs.sensor import Sensor
from ivs.sinks import Sink
from ivs.sinks.mqtt import MqttSink
from ivs.sources import Source

log = logging.getLogger(__name__)

MODES = ("metadata", "image", "roi", "tensor")


@dataclass(frozen=True)
class RunOptions:
    """What a run adds to a sensor's config: how it is run here, not what the sensor is."""

    mode: Mode = "metadata"
    """metadata (no pixel leaves), or a pixel output written to `artifacts`."""
    artifacts: Path = Path("ivs-artifacts")
    allow_unsigned: bool = False
    """DEVELOPMENT ONLY: load unsigned packages."""
    watch: bool = True
    """Hot-swap the model when its package file is replaced."""
    retime: bool = False
    """`runtime: auto`: time the runtimes again instead of taking the remembered choice."""
    ledger_period_s: float | None = 60.0
    """Send a `ledger` event this often (None: never)."""
    sinks: Sequence[Sink] = ()
    """Sinks besides the config's (the console's, a test's)."""
    on_record: Callable[[Any, Any], None] | None = None
    on_message: Callable[[str], None] = field(default=lambda msg: log.warning("%s", msg))
    """Where a swap, a refused package or a deploy is said (the console, a log)."""
    source: Source | None = None
    """An already open source to use instead of the config's (a benchmark's looped video)."""
    runners: Runners | None = None
    """A node's shared inference services: the sensor's networks run there, not on runners of its own."""
    restart: Callable[[], None] | None = None
    """How the `restart` command restarts this sensor (a node's); None: it cannot (`ivs run`)."""


@dataclass
class BuiltSensor:
    """A sensor and what runs beside it; `close` after `sensor.run()` returns."""

    sensor: Sensor
    package: Path
    second_stage: list[Model]
    watcher: PackageWatcher | None = None
    agent: DeployAgent | None = None

    def reload(self) -> None:
        """Check the package file now (SIGHUP)."""
        if self.watcher is not None:
            self.watcher.reload()

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.close()
        if self.agent is not None:
            self.agent.close()
        self.sensor.model.close()
        for extra in self.second_stage:
            extra.close()


def check_config(config: SensorConfig, options: RunOptions) -> None:
    """What a run refuses before it opens anything, with the reason (a `ConfigError`)."""
    if options.mode not in MODES:
        raise ConfigError(f"unknown mode {options.mode!r}: expected one of {', '.join(MODES)}")
    if is_sensor_source(config.source.url):
        check_run_options(options.mode, config.model.classify_with, config.model.tiles)


def build_sensor(config: SensorConfig, options: RunOptions | None = None) -> BuiltSensor:
    """Everything `config` describes, built and wired; nothing runs until `sensor.run()`."""
    options = options or RunOptions()
    check_config(config, options)
    mc = config.model
    ring = Keyring.load(Path(config.keyring)) if config.keyring else None
    region = Roi(*mc.roi) if mc.roi else None
    on_sensor = is_sensor_source(config.source.url)

    def load(path: Path) -> Model:
        if on_sensor:  # the network runs on the IMX500; the package gives decoder and labels
            return load_sensor_model(path, roi=region, keyring=ring, allow_unsigned=options.allow_unsigned)
        return load_model(path, runtime=mc.runtime, roi=region, tiles=mc.tiles, full_frame=mc.full_frame,
                          threads=mc.threads, keyring=ring, allow_unsigned=options.allow_unsigned,
                          retime=options.retime, pool=options.runners)  # fmt: skip

    package = resolve(mc.name)
    model = load(package)
    second: list[Model] = []
    try:
        if mc.classify_with is not None:
            second.append(_second_stage(mc.classify_with, config, ring, options))
        source = options.source or open_configured_source(config.source)
        if region is not None and source.width and source.height:
            region.check_inside(source.width, source.height)
        if on_sensor:
            attach(source, model)
        assembly = assemble(config, source=source, model=model, second_stage=second)
    except BaseException:
        # Nothing half-built stays behind: a node retries a sensor whose camera is not up yet.
        for m in (model, *second):
            m.close()
        raise
    live_apps = LiveApps(assembly.apps) if config.deploy is not None else None  # a deploy replaces them
    writer = ArtifactWriter(options.mode, options.artifacts, model.labels) if options.mode != "metadata" else None
    sensor = Sensor(
        source, model, [*options.sinks, *assembly.sinks], sensor_id=config.id, fps=config.source.fps,
        max_frames=config.source.max_frames, mode=options.mode, artifacts=writer, on_record=options.on_record,
        second_stage=second, detection_filter=assembly.detection_filter, tracker=assembly.tracker,
        stationary=assembly.stationary, evidence=assembly.evidence,
        apps=[live_apps] if live_apps else assembly.apps,
        emit_frames=config.frames, seq_start=assembly.seq_start, ledger_period_s=options.ledger_period_s,
        heartbeat_s=config.heartbeat_s,
    )  # fmt: skip
    for sink in sensor.sinks:
        if isinstance(sink, MqttSink):
            sink.state = sensor.state  # the retained state topic says what this sensor runs and did
    if live_apps is not None:
        live_apps.disabled = sensor.disabled_apps  # one set: a command turns an app off in either

    def swap(new: Model) -> None:
        nm = new.manifest
        options.on_message(f"model swap: {nm.name} {nm.version} ({new.runner.name}) from the next frame")
        sensor.swap_model(new)

    built = BuiltSensor(sensor, package, second)
    if options.watch:
        built.watcher = PackageWatcher(package, load, swap, on_error=options.on_message).start()
    if live_apps is not None:
        try:
            built.agent = _deploy_agent(config, sensor, live_apps, load, swap, second, options.on_message)
        except Exception:
            built.close()
            raise
    mqtt = next((s for s in sensor.sinks if isinstance(s, MqttSink)), None)
    if mqtt is not None:
        if built.agent is not None and config.deploy is not None and config.deploy.push:
            mqtt.listen(f"ivs/{config.id}/desired", built.agent.nudge)
        _listen_for_commands(built, mqtt, live_apps, options)
    return built


def _listen_for_commands(built: BuiltSensor, mqtt: MqttSink, live_apps: LiveApps | None, options: RunOptions) -> None:
    """The hub's direct methods (`ivs.commands`) on the sensor's MQTT connection."""
    sensor, agent = built.sensor, built.agent

    def reload() -> None:
        built.reload()
        if agent is not None:
            agent.wake()

    def app_names() -> list[str]:
        return [a.name for a in (live_apps.apps if live_apps is not None else sensor.apps)]

    def respond(payload: bytes) -> None:
        mqtt.publish(f"ivs/{sensor.sensor_id}/responses", payload)

    handler = Commands(sensor, respond, reload=reload, app_names=app_names, restart=options.restart)
    mqtt.listen(f"ivs/{sensor.sensor_id}/commands", handler)


def _second_stage(name: str, config: SensorConfig, ring: Keyring | None, options: RunOptions) -> Model:
    mc = config.model
    model = load_model(name, runtime=mc.runtime, threads=mc.threads, keyring=ring,
                       allow_unsigned=options.allow_unsigned, roi=None, tiles=(1, 1), pool=options.runners)  # fmt: skip
    if model.manifest.task != "classification":
        model.close()
        raise ConfigError(
            f"classify_with {name}: a {model.manifest.task} model; expected a classification model (e.g. mask)"
        )
    return model


def _deploy_agent(
    config: SensorConfig,
    sensor: Sensor,
    live_apps: LiveApps,
    load: Callable[[Path], Model],
    swap: Callable[[Model], None],
    second: list[Model],
    on_message: Callable[[str], None],
) -> DeployAgent:
    """Start the deploy agent of a config with a `deploy:` section (see ivs.deploy)."""
    d = config.deploy
    assert d is not None
    token = os.environ.get(d.token_env)
    if not token:
        raise ConfigError(
            f"deploy: token_env {d.token_env!r} is not set in the environment: expected the device token"
            " that `ivs hub device add` printed"
        )
    size = source_size(sensor.source, config)
    classifier = second[0] if second else None

    def build(new: SensorConfig) -> list[Any]:
        if size is None:
            raise ConfigError("the source does not say its frame size: expected source.frame_size: [w, h]")
        return [build_app(a, sensor.model.labels, size, classifier) for a in new.apps]

    return DeployAgent(
        HubClient(d.hub, token, ca_file=d.ca_file),
        Path(d.folder),
        current=lambda: sensor.model,
        load=load,
        swap=swap,
        apply_config=LiveConfig(config, live_apps, build, frame_size=size, labels=lambda: sensor.model.labels),
        interval_s=d.interval_s,
        on_message=lambda msg: on_message(f"deploy: {msg}"),
    ).start()
