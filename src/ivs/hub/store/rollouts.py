"""Device tags, sensor health and staged rollouts (the tables; the logic is `ivs.hub.rollouts`)."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, delete, select
from sqlalchemy.orm import Session

from ivs.hub.store.schema import (
    DeviceTag,
    HubError,
    HubNotFound,
    RolloutDeviceRow,
    RolloutRow,
    SensorHealth,
)


@dataclass(frozen=True)
class Health:
    """A sensor's last health report (its retained MQTT state)."""

    sensor: str
    fps: float
    frames: int
    dropped: int
    model: str | None
    version: str | None
    time: float


@dataclass(frozen=True)
class Rollout:
    id: int
    name: str
    package: str
    target: str
    waves: str
    gate_s: float
    min_fps_ratio: float
    priority: int
    state: str
    wave: int
    reason: str | None
    created: float
    updated: float


@dataclass(frozen=True)
class RolloutDevice:
    device: str
    wave: int
    previous: str | None
    revision: int | None
    state: str
    baseline_fps: float | None
    healthy_since: float | None
    reason: str | None


_ROLLOUT_FIELDS = tuple(Rollout.__dataclass_fields__)
_DEVICE_FIELDS = tuple(RolloutDevice.__dataclass_fields__)


class RolloutStore:
    """The store's tag, health and rollout methods (`Store` has them)."""

    engine: Engine
    _write_lock: contextlib.AbstractContextManager[Any]

    # tags
    def set_tags(self, device: str, tags: dict[str, str | None]) -> dict[str, str]:
        """Set (a value) or remove (None) tags of a device; its tags after."""
        with self._write_lock, Session(self.engine) as session, session.begin():
            for key, value in tags.items():
                if value is None:
                    session.execute(delete(DeviceTag).where(DeviceTag.device == device, DeviceTag.key == key))
                else:
                    session.merge(DeviceTag(device=device, key=key, value=value))
        return self.tags().get(device, {})

    def tags(self) -> dict[str, dict[str, str]]:
        """Every tagged device -> its tags."""
        out: dict[str, dict[str, str]] = {}
        with Session(self.engine) as session:
            for row in session.scalars(select(DeviceTag)):
                out.setdefault(row.device, {})[row.key] = row.value
        return out

    # health
    def set_health(
        self, sensor: str, fps: float, frames: int, dropped: int, model: str | None, version: str | None
    ) -> None:
        with self._write_lock, Session(self.engine) as session, session.begin():
            session.merge(SensorHealth(sensor=sensor, fps=fps, frames=frames, dropped=dropped, model=model,
                                       version=version, time=time.time()))  # fmt: skip

    def health(self, sensor: str) -> Health | None:
        with Session(self.engine) as session:
            row = session.get(SensorHealth, sensor)
            return None if row is None else Health(row.sensor, row.fps, row.frames, row.dropped, row.model,
                                                   row.version, row.time)  # fmt: skip

    # rollouts
    def add_rollout(self, **fields: Any) -> Rollout:
        now = time.time()
        with self._write_lock, Session(self.engine) as session, session.begin():
            if session.scalar(select(RolloutRow).where(RolloutRow.name == fields["name"])) is not None:
                raise HubError(f"a rollout named {fields['name']!r} exists: expected a new name")
            row = RolloutRow(**fields, state="running", wave=0, reason=None, created=now, updated=now)
            session.add(row)
            session.flush()
            return _rollout(row)

    def rollouts(self) -> list[Rollout]:
        with Session(self.engine) as session:
            return [_rollout(r) for r in session.scalars(select(RolloutRow).order_by(RolloutRow.id))]

    def rollout(self, name: str) -> Rollout:
        with Session(self.engine) as session:
            row = session.scalar(select(RolloutRow).where(RolloutRow.name == name))
            if row is None:
                raise HubNotFound(f"no rollout named {name!r}: expected one of `GET /api/v1/rollouts`")
            return _rollout(row)

    def update_rollout(self, rollout_id: int, **fields: Any) -> None:
        with self._write_lock, Session(self.engine) as session, session.begin():
            row = session.get(RolloutRow, rollout_id)
            if row is None:
                raise HubNotFound(f"no rollout {rollout_id}")
            for key, value in fields.items():
                setattr(row, key, value)
            row.updated = time.time()

    def rollout_devices(self, rollout_id: int) -> list[RolloutDevice]:
        with Session(self.engine) as session:
            rows = session.scalars(
                select(RolloutDeviceRow).where(RolloutDeviceRow.rollout == rollout_id).order_by(RolloutDeviceRow.device)
            )
            return [RolloutDevice(*(getattr(r, f) for f in _DEVICE_FIELDS)) for r in rows]

    def set_rollout_device(self, rollout_id: int, device: str, **fields: Any) -> None:
        with self._write_lock, Session(self.engine) as session, session.begin():
            row = session.get(RolloutDeviceRow, (rollout_id, device))
            if row is None:
                row = RolloutDeviceRow(rollout=rollout_id, device=device, state="pending", wave=0)
                session.add(row)
            for key, value in fields.items():
                setattr(row, key, value)


def _rollout(row: RolloutRow) -> Rollout:
    return Rollout(*(getattr(row, f) for f in _ROLLOUT_FIELDS))
