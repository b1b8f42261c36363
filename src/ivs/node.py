"""A node: a site's cameras in one process (`ivs node --config site.yaml`).

Each sensor is built by `ivs.build.build_sensor` from its entry, as `ivs run --config` builds
one, and runs on a thread of its own (`ivs-sensor-ID`), with its own source, pacing, drops,
tracker, apps, seq, outbox and sinks. What the sensors share is each network's inference
service (`ivs.runtime.shared.RunnerPool`): one copy of the network and one set of threads
sized to the machine, whatever the number of cameras.

Isolation: a sensor whose build or run fails (a camera that is not there, a reconnect that
gave up, an app that raised) is logged, marked `failed` and restarted after `restart_s` by
itself; the others run on. A watchdog thread (`ivs-node-watchdog`) marks a sensor `stuck` when
its inference has not answered for `stuck_s`, wakes it with an error and so restarts it (a
runtime that never answers would otherwise hold the sensor, and `stop`, forever). `reload`
applies a changed file while the rest keep running:
sensors added start, removed stop, changed restart; an unchanged one is not touched, so its
frames and seq go on without a gap.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any, Literal

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ivs.build import BuiltSensor, RunOptions, build_sensor
from ivs.config import SensorConfig
from ivs.metrics import SensorCollector, serve_collectors
from ivs.node_config import NodeConfig
from ivs.runtime.shared import RunnerPool, SensorRunners
from ivs.sensor import Sensor

log = logging.getLogger(__name__)

State = Literal["starting", "running", "stuck", "failed", "ended", "stopped"]


@dataclass(frozen=True)
class SensorHealth:
    """What the node says about one of its sensors (in /metrics, and `ivs node`'s summary)."""

    id: str
    state: State
    frames: int
    dropped: int
    late: int
    """Frames captured a period or more after their time (the sensor fell behind its source)."""
    fps: float
    last_frame_age_s: float | None
    """Seconds since the sensor last finished a frame (None: none yet)."""
    restarts: int
    error: str | None
    seconds: float = 0.0
    """Wall seconds of its current (or last) run, so far."""
    stuck: int = 0
    """Times its inference was found stuck (each one restarted it)."""


class _Slot:
    """One sensor of the node: its config, the sensor now built, and the thread that runs it."""

    def __init__(self, config: SensorConfig) -> None:
        self.config = config
        self.built: BuiltSensor | None = None
        self.sensor: Sensor | None = None
        """The sensor built last (kept after it ends, for its counters)."""
        self.state: State = "starting"
        self.error: str | None = None
        self.restarts = 0
        self.stop = threading.Event()
        self.restart = threading.Event()
        """Asked to restart (the `restart` command): stop the run, build it again at once."""
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()
        self.runners: SensorRunners | None = None
        """The runners the sensor now built was handed (the watchdog reads how long they wait)."""
        self.stuck = 0


class Node:
    """Many sensors in one process; `start`, then `wait` or `stop`."""

    def __init__(self, config: NodeConfig, options: RunOptions | None = None) -> None:
        self.config = config
        self.pool = RunnerPool(config.node.workers, config.node.threads)
        self.options = replace(options or RunOptions(), runners=self.pool)
        self._slots: dict[str, _Slot] = {}
        self._lock = threading.Lock()
        self._reload_lock = threading.Lock()
        self._closing = threading.Event()
        self._watchdog = threading.Thread(target=self._watch, name="ivs-node-watchdog", daemon=True)

    def start(self) -> Node:
        for sensor in self.config.sensors:
            self._start(sensor)
        self._watchdog.start()
        return self

    def sensors(self) -> list[Sensor]:
        """The sensors built now, in the file's order."""
        with self._lock:
            slots = list(self._slots.values())
        return [s.sensor for s in slots if s.sensor is not None]

    def health(self) -> list[SensorHealth]:
        with self._lock:
            slots = list(self._slots.values())
        now = time.monotonic()
        out = []
        for s in slots:
            st = s.sensor.stats if s.sensor is not None else None
            last = st.rate_meter.last() if st is not None else None
            out.append(
                SensorHealth(
                    id=s.config.id, state=s.state, frames=st.frames_processed if st else 0,
                    dropped=st.dropped if st else 0, late=st.late if st else 0,
                    fps=round(st.recent_fps(), 2) if st else 0.0,
                    last_frame_age_s=None if last is None else round(now - last, 3),
                    restarts=s.restarts, error=s.error, seconds=round(st.elapsed(), 2) if st else 0.0, stuck=s.stuck,
                )
            )  # fmt: skip
        return out

    def reload(self, config: NodeConfig) -> dict[str, list[str]]:
        """Apply a new file: start the sensors it adds, stop those it removes, restart those it
        changes; the others run on untouched. Returns the ids by what happened to them."""
        with self._reload_lock:  # SIGHUP and the hub's agent may ask at once: one after the other
            return self._reload(config)

    def _reload(self, config: NodeConfig) -> dict[str, list[str]]:
        old = {s.id: s for s in self.config.sensors}
        new = {s.id: s for s in config.sensors}
        removed = [i for i in old if i not in new]
        changed = [i for i in new if i in old and new[i] != old[i]]
        added = [i for i in new if i not in old]
        if config.node != self.config.node:
            log.warning("node settings changed: they take effect when the node restarts")
        self.config = config.model_copy(update={"node": self.config.node})
        for sid in removed + changed:
            self._stop_one(sid)
        for sid in changed + added:
            self._start(new[sid])
        log.info("node reload: added %s, removed %s, restarted %s", added, removed, changed)
        return {"added": added, "removed": removed, "restarted": changed}

    def stop(self, timeout: float | None = None) -> list[str]:
        """Stop every sensor after its frame in hand, and wait for them (at most `timeout`
        seconds in all). Returns what still runs then: one line per sensor that did not stop,
        saying where it is, and one per inference worker still inside its runtime."""
        self._closing.set()
        with self._lock:
            slots = list(self._slots.values())
        for slot in slots:
            slot.stop.set()
            with slot.lock:
                if slot.built is not None:
                    slot.built.sensor.stop()
        if timeout is None:
            for slot in slots:
                if slot.thread is not None:
                    slot.thread.join()
            return []
        deadline = time.monotonic() + timeout
        # Half the time to finish the frame in hand; then a sensor still waiting on inference is
        # woken with an error (a runtime that never answers would hold it past any deadline).
        self._join_all(slots, time.monotonic() + timeout / 2)
        for slot in slots:
            if slot.thread is not None and slot.thread.is_alive() and slot.runners is not None:
                slot.runners.abandon("the node is stopping")
        self._join_all(slots, deadline)
        left = [self._where(s) for s in slots if s.thread is not None and s.thread.is_alive()]
        return left + [f"inference worker {name} (never answered)" for name in self.pool.stuck()]

    @staticmethod
    def _join_all(slots: list[_Slot], deadline: float) -> None:
        for slot in slots:
            if slot.thread is not None:
                slot.thread.join(max(0.0, deadline - time.monotonic()))

    def _where(self, slot: _Slot) -> str:
        """Where a sensor that does not stop is (its state, and an inference it waits on)."""
        waiting = slot.runners.waiting() if slot.runners is not None else None
        where = f"{slot.config.id} ({slot.state}"
        if waiting is not None:
            where += f"; inference on {waiting[0].service.name} unanswered for {waiting[1]:.0f} s"
        return where + ")"

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every sensor has ended or stopped; False if `timeout` passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                threads = [s.thread for s in self._slots.values() if s.thread is not None]
            alive = [t for t in threads if t.is_alive()]
            if not alive:
                return True
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            alive[0].join(timeout=left if left is None else min(left, 1.0))

    def _start(self, config: SensorConfig) -> None:
        slot = _Slot(config)
        slot.thread = threading.Thread(target=self._supervise, args=(slot,), name=f"ivs-sensor-{config.id}")
        with self._lock:
            self._slots[config.id] = slot
        slot.thread.start()

    def _stop_one(self, sid: str) -> None:
        with self._lock:
            slot = self._slots.get(sid)
        if slot is None:
            return
        slot.stop.set()
        with slot.lock:
            if slot.built is not None:
                slot.built.sensor.stop()
        self._join(sid)
        with self._lock:
            if self._slots.get(sid) is slot:
                del self._slots[sid]

    def _join(self, sid: str) -> None:
        slot = self._slots.get(sid)
        if slot is not None and slot.thread is not None:
            slot.thread.join()

    def _supervise(self, slot: _Slot) -> None:
        """Build and run one sensor until it ends or is stopped; a failure restarts it later."""
        sid = slot.config.id

        def restart() -> None:
            slot.restart.set()
            with slot.lock:
                if slot.built is not None:
                    slot.built.sensor.stop()

        while not slot.stop.is_set():
            slot.state = "starting"
            runners = SensorRunners(self.pool)
            options = replace(self.options, on_message=lambda msg: log.warning("%s: %s", sid, msg), restart=restart,
                              runners=runners)  # fmt: skip
            slot.runners = runners
            try:
                built = build_sensor(slot.config, options)
            except Exception as err:  # a camera not up yet, a package that will not load: retry
                self._failed(slot, err)
                if slot.stop.wait(self.config.node.restart_s):
                    break
                slot.restarts += 1
                continue
            with slot.lock:
                slot.built, slot.sensor = built, built.sensor
                if slot.stop.is_set():
                    built.sensor.stop()
            slot.state, slot.error = "running", None
            log.info("%s: running %s on %s", sid, slot.config.model.name, slot.config.source.url)
            try:
                built.sensor.run()
                slot.state = "stopped" if slot.stop.is_set() or slot.restart.is_set() else "ended"
            except Exception as err:  # its source gave up, an app raised: this sensor only
                self._failed(slot, err)
            finally:
                with slot.lock:
                    slot.built = None
                built.close()
            if slot.restart.is_set() and not slot.stop.is_set():
                slot.restart.clear()
                slot.restarts += 1
                log.warning("%s: restarting, as a command asked", sid)
                continue
            if slot.state == "ended" or slot.stop.wait(self.config.node.restart_s):
                break
            slot.restarts += 1
        if slot.state in ("starting", "running"):
            slot.state = "stopped"
        if slot.state == "ended":
            log.info("%s: source ended", sid)

    def _watch(self) -> None:
        """Every second: a sensor whose inference has waited past `stuck_s` is marked stuck and
        woken with an error, so that its supervisor restarts it."""
        limit = self.config.node.stuck_s
        while not self._closing.wait(min(1.0, limit / 4)):
            with self._lock:
                slots = list(self._slots.values())
            for slot in slots:
                waiting = slot.runners.waiting() if slot.runners is not None else None
                if waiting is None or waiting[1] < limit or slot.stop.is_set():
                    continue
                runner, waited = waiting
                why = f"inference on {runner.service.name} has not answered for {waited:.0f} s"
                log.error("%s: stuck: %s; restarting it", slot.config.id, why)
                slot.stuck += 1
                slot.state, slot.error = "stuck", why
                runner.abandon(f"{why} (stuck_s {limit:g})")

    def _failed(self, slot: _Slot, err: BaseException) -> None:
        if slot.state == "stuck":  # the watchdog woke it: keep its state and reason until it restarts
            return
        slot.state, slot.error = "failed", str(err) or type(err).__name__
        if slot.stop.is_set():
            return
        log.error("%s: %s; restarting in %g s", slot.config.id, slot.error, self.config.node.restart_s)


class NodeCollector(Collector):
    """The node's own metrics: each sensor's state, last-frame age and restarts, and each
    shared inference service's clients and requests served."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self) -> Iterator[Metric]:
        state = GaugeMetricFamily(
            "ivs_node_sensor_state", "1 for the state each sensor is in.", labels=["sensor", "state"]
        )
        age = GaugeMetricFamily(
            "ivs_node_sensor_last_frame_age_seconds",
            "Seconds since the sensor last finished a frame.",
            labels=["sensor"],
        )
        restarts = CounterMetricFamily("ivs_node_sensor_restarts", "Restarts after a failure.", labels=["sensor"])
        stuck = CounterMetricFamily(
            "ivs_node_sensor_stuck", "Times the sensor's inference did not answer within stuck_s.", labels=["sensor"]
        )
        for h in self.node.health():
            state.add_metric([h.id, h.state], 1)
            if h.last_frame_age_s is not None:
                age.add_metric([h.id], h.last_frame_age_s)
            restarts.add_metric([h.id], h.restarts)
            stuck.add_metric([h.id], h.stuck)
        clients = GaugeMetricFamily(
            "ivs_node_inference_clients", "Models (sensors) sharing an inference service.", labels=["service"]
        )
        served = CounterMetricFamily(
            "ivs_node_inference_requests", "Inputs an inference service has run.", labels=["service"]
        )
        for service in self.node.pool.services():
            clients.add_metric([service.name], service.clients)
            served.add_metric([service.name], service.total_served)
        yield state
        yield age
        yield restarts
        yield stuck
        yield clients
        yield served


def serve_node_metrics(node: Node, port: int, host: str = "127.0.0.1") -> Any:
    """/metrics for every sensor of the node and the node itself, on host:port."""
    return serve_collectors(port, host, SensorCollector(node.sensors), NodeCollector(node))
