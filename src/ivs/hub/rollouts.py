"""Staged rollouts: a package to the devices a target condition on tags selects, in waves, each
gated on the devices' health, rolled back by itself when a gate fails (Azure Device Update's
staged deployments with rollback; the target and priority as IoT Edge's deployments at scale).

    waves "1,10%,100%"    cumulative: one device, then up to 10% of the targets, then all of them

A wave's devices get the package as their desired state (pushed over MQTT where the hub has it;
each keeps its deployed config). The wave passes when each of them, for `gate_s` seconds from
its first health report on the new version: has reported the revision ok and in sync, and
reports at least `min_fps_ratio` of the frames per second it did before the rollout (its
retained MQTT state). It fails when one refuses the package (its report says why), reports
fewer frames per second than that, or does not get there within `gate_s` * 3 + 60 s. A failed
gate stops the rollout and gives every device it updated what it ran before, as a new desired
revision (the package the hub had assigned it, or the uploaded package of the name and version
it reported running); the later waves never receive the package. Pause holds the rollout where it is;
resume goes on; abort stops it and rolls back like a failed gate.

A device targeted by two running rollouts belongs to the one with the higher priority (of
equal priorities, the older one); the other leaves it alone.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import func, select

from ivs.hub.store import HubError, Rollout, RolloutDevice, Store
from ivs.hub.targets import parse_condition

log = logging.getLogger(__name__)

RUNNING, PAUSED, DONE, ROLLED_BACK = "running", "paused", "done", "rolled_back"
_ROLLOUT_LOCK = 0x1F5_0A11
"""PostgreSQL advisory lock key: the rollout controllers of several hub workers step one at a time."""
_WAVE = re.compile(r"^\s*(\d{1,6})(%?)\s*$")


def wave_sizes(spec: str, targets: int) -> list[int]:
    """Cumulative device counts of each wave for `targets` devices: "1,10%,100%" with 20
    devices is [1, 2, 20]. A wave that would add no device is merged into the next."""
    parts = spec.split(",")
    sizes: list[int] = []
    for i, part in enumerate(parts):
        m = _WAVE.match(part)
        if m is None:
            raise HubError(f"wave {i + 1} {part.strip()!r}: expected a count (1) or a share (10%)")
        n = int(m.group(1))
        if m.group(2):
            if not 0 < n <= 100:
                raise HubError(f"wave {i + 1} {part.strip()!r}: expected a share from 1% to 100%")
            n = math.ceil(n * targets / 100)
        sizes.append(min(max(n, 1), targets))
    if not parts or sizes[-1] < targets:
        raise HubError(f"waves {spec!r} end before every target device: expected the last to be 100% (or {targets})")
    out: list[int] = []
    for n in sizes:
        if not out or n > out[-1]:
            out.append(n)
    return out


class RolloutController:
    """Starts rollouts and moves them on (`step`, every `period_s` on its own thread).

    push: tells a device its new desired revision at once (the MQTT ingest's `push_desired`).
    """

    def __init__(
        self,
        store: Store,
        push: Callable[[str, int], None] | None = None,
        *,
        period_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store, self.push, self.period_s, self.clock = store, push, period_s, clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> RolloutController:
        self._thread = threading.Thread(target=self._run, name="ivs-hub-rollouts", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                self.step()
            except Exception:  # a bug in one step must not stop the rollouts for good
                log.exception("rollout step failed")

    # starting
    def create(
        self,
        name: str,
        package: str,
        target: str,
        waves: str = "1,10%,100%",
        gate_s: float = 30.0,
        min_fps_ratio: float = 0.8,
        priority: int = 0,
    ) -> Rollout:
        """Start a rollout; HubError (or HubNotFound) saying what is wrong with it."""
        condition = parse_condition(target)
        if not 0 < gate_s <= 86400 or not 0 <= min_fps_ratio <= 1:
            raise HubError(f"gate_s {gate_s}, min_fps_ratio {min_fps_ratio}: expected 0 < gate_s <= 86400, 0..1")
        pkg = self.store.resolve_package(package)
        with self._lock:
            active = {d.name for d in self.store.devices() if d.revoked is None}
            tags = self.store.tags()
            claimed = self._claimed(priority)
            targets = sorted(d for d in active if condition.matches(tags.get(d, {})) and d not in claimed)
            if not targets:
                raise HubError(f"target {target!r} selects no device (not one claimed by a higher priority rollout)")
            sizes = wave_sizes(waves, len(targets))
            rollout = self.store.add_rollout(name=name, package=pkg.sha256, target=target, waves=waves, gate_s=gate_s,
                                             min_fps_ratio=min_fps_ratio, priority=priority)  # fmt: skip
            for i, device in enumerate(targets):
                wave = next(w for w, n in enumerate(sizes) if i < n)
                health = self.store.health(device)
                self.store.set_rollout_device(rollout.id, device, wave=wave, state="pending",
                                              baseline_fps=health.fps if health else None)  # fmt: skip
        log.info("rollout %s: %s to %d devices in %d waves", name, pkg.name, len(targets), len(sizes))
        self.step()
        return self.store.rollout(name)

    def _claimed(self, priority: int) -> set[str]:
        """Devices in running or paused rollouts of at least this priority."""
        out: set[str] = set()
        for r in self.store.rollouts():
            if r.state in (RUNNING, PAUSED) and r.priority >= priority:
                out |= {d.device for d in self.store.rollout_devices(r.id)}
        return out

    # operator actions
    def pause(self, name: str) -> Rollout:
        return self._set_state(name, RUNNING, PAUSED)

    def resume(self, name: str) -> Rollout:
        return self._set_state(name, PAUSED, RUNNING)

    def abort(self, name: str) -> Rollout:
        with self._lock:
            r = self.store.rollout(name)
            if r.state not in (RUNNING, PAUSED):
                raise HubError(f"rollout {name!r} is {r.state}: expected a running or paused one")
            self._roll_back(r, "aborted by the operator")
        return self.store.rollout(name)

    def _set_state(self, name: str, expected: str, state: str) -> Rollout:
        with self._lock:
            r = self.store.rollout(name)
            if r.state != expected:
                raise HubError(f"rollout {name!r} is {r.state}: expected a {expected} one")
            self.store.update_rollout(r.id, state=state)
        return self.store.rollout(name)

    # moving on
    def step(self) -> None:
        """Start the current wave of every running rollout, judge its gate, move on or roll back.
        Several hub workers on one PostgreSQL each run a controller: one of them steps at a time
        (an advisory lock), or two would assign the same wave twice."""
        with self._lock, self._one_worker() as mine:
            if not mine:
                return
            for r in self.store.rollouts():
                if r.state == RUNNING:
                    self._advance(r)

    @contextlib.contextmanager
    def _one_worker(self) -> Iterator[bool]:
        if self.store.dialect != "postgresql":
            yield True  # SQLite: one hub process
            return
        with self.store.engine.connect() as conn:
            mine = bool(conn.scalar(select(func.pg_try_advisory_lock(_ROLLOUT_LOCK))))
            try:
                yield mine
            finally:
                if mine:
                    conn.scalar(select(func.pg_advisory_unlock(_ROLLOUT_LOCK)))

    def _advance(self, r: Rollout) -> None:
        now = self.clock()
        devices = self.store.rollout_devices(r.id)
        current = [d for d in devices if d.wave == r.wave]
        for d in current:
            if d.state == "pending":
                self._update(r, d)
        for d in self.store.rollout_devices(r.id):
            if d.wave != r.wave or d.state not in ("updating", "running"):
                continue
            why = self._judge(r, d, now)
            if why is not None:
                self._roll_back(r, f"wave {r.wave + 1}: {why}")
                return
        current = [d for d in self.store.rollout_devices(r.id) if d.wave == r.wave]
        if all(d.state == "healthy" for d in current):
            if r.wave + 1 < max(d.wave for d in devices) + 1:
                self.store.update_rollout(r.id, wave=r.wave + 1)
                log.info("rollout %s: wave %d healthy, starting wave %d", r.name, r.wave + 1, r.wave + 2)
            else:
                self.store.update_rollout(r.id, state=DONE)
                log.info("rollout %s: done", r.name)

    def _update(self, r: Rollout, d: RolloutDevice) -> None:
        desired = self.store.desired(d.device)
        report = self.store.deploy_report(d.device)
        previous = desired.package.sha256 if desired is not None else (report.sha256 if report else None)
        if previous is None:
            previous = self._running_package(d.device)
        config = desired.config if desired is not None else None
        assignment = self.store.assign(d.device, r.package, config)
        self.store.set_rollout_device(r.id, d.device, state="updating", previous=previous,
                                      revision=assignment.revision, healthy_since=self.clock())  # fmt: skip
        if self.push is not None:
            self.push(d.device, assignment.revision)

    def _running_package(self, device: str) -> str | None:
        """The uploaded package a device runs from its own config (the hub never assigned it one),
        by the name and version its state reports: what a rollback gives it back."""
        health = self.store.health(device)
        if health is None or health.model is None or health.version is None:
            return None
        try:
            return self.store.resolve_package(f"{health.model}@{health.version}").sha256
        except HubError:  # not uploaded (or uploaded twice under one version): nothing to go back to
            return None

    def _judge(self, r: Rollout, d: RolloutDevice, now: float) -> str | None:
        """None while the device is fine (it may become healthy); the reason when it fails."""
        started = d.healthy_since or now
        report = self.store.deploy_report(d.device)
        if report is not None and report.revision == d.revision and report.status == "failed":
            return f"{d.device} refused the package: {report.error}"
        in_sync = report is not None and report.revision == d.revision and report.status == "ok"
        health = self.store.health(d.device)
        pkg = self.store.resolve_package(r.package)
        fresh = (
            health is not None
            and report is not None
            and in_sync
            and (health.model, health.version) == (pkg.name, pkg.version)
            and health.time >= report.reported
        )
        if fresh and health is not None:
            if d.baseline_fps is not None and health.fps < r.min_fps_ratio * d.baseline_fps:
                return (f"{d.device} runs {health.fps:.1f} fps on {pkg.name} {pkg.version}, under "
                        f"{r.min_fps_ratio:.0%} of its {d.baseline_fps:.1f} fps before")  # fmt: skip
            if d.state == "updating":
                self.store.set_rollout_device(r.id, d.device, state="running", healthy_since=now)
            elif now - started >= r.gate_s:
                self.store.set_rollout_device(r.id, d.device, state="healthy")
            return None
        if now - started > r.gate_s * 3 + 60:
            return f"{d.device} did not run the package and report its health within {r.gate_s * 3 + 60:g} s"
        return None

    def _roll_back(self, r: Rollout, reason: str) -> None:
        """Stop the rollout; every device it updated gets what it ran before."""
        kept: list[str] = []
        for d in self.store.rollout_devices(r.id):
            if d.state in ("pending", "rolled_back"):
                self.store.set_rollout_device(
                    r.id, d.device, state="never_updated" if d.state == "pending" else d.state
                )
                continue
            if d.previous is None:
                kept.append(d.device)
                self.store.set_rollout_device(r.id, d.device, state="kept", reason="it ran no hub package before")
                continue
            desired = self.store.desired(d.device)
            assignment = self.store.assign(d.device, d.previous, desired.config if desired else None)
            self.store.set_rollout_device(r.id, d.device, state="rolled_back", revision=assignment.revision)
            if self.push is not None:
                self.push(d.device, assignment.revision)
        note = f"; kept on the new package (nothing to go back to): {', '.join(kept)}" if kept else ""
        self.store.update_rollout(r.id, state=ROLLED_BACK, reason=reason + note)
        log.warning("rollout %s rolled back: %s", r.name, reason + note)


def rollout_view(store: Store, r: Rollout) -> dict[str, Any]:
    """A rollout with its waves and each device's state, for the API and the dashboard."""
    devices = store.rollout_devices(r.id)
    waves: list[dict[str, Any]] = []
    for w in range(max((d.wave for d in devices), default=-1) + 1):
        members = [d for d in devices if d.wave == w]
        waves.append({"wave": w + 1, "devices": [{"device": d.device, "state": d.state, "reason": d.reason,
                                                  "baseline_fps": d.baseline_fps} for d in members]})  # fmt: skip
    return {"name": r.name, "package": r.package, "target": r.target, "waves_spec": r.waves, "gate_s": r.gate_s,
            "min_fps_ratio": r.min_fps_ratio, "priority": r.priority, "state": r.state, "wave": r.wave + 1,
            "reason": r.reason, "created": r.created, "updated": r.updated, "waves": waves}  # fmt: skip
