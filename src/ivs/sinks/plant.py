"""What a plant reads from a sensor: each app's state as a few typed values (a stop flag per
safety zone, counts, occupancy), kept from the events as they are written. The Modbus and OPC
UA servers (`ivs.sinks.modbus`, `ivs.sinks.opcua`) serve these values; which values there are
follows from the sensor's `apps:`, in their order, so a PLC's map stays put as long as the apps do.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import msgspec

from ivs.events import Clear, Count, CrowdCleared, Crowded, Stop, ZoneEnter, ZoneLeave

Kind = Literal["bool", "uint32"]

FIELDS: dict[str, tuple[tuple[str, Kind], ...]] = {
    "safety": (("stop", "bool"),),
    "crowding": (("crowded", "bool"),),
    "line": (("in", "uint32"), ("out", "uint32")),
    "zone": (("occupancy", "uint32"), ("entered", "uint32")),
}
"""The values each app type offers (other apps offer none)."""


@dataclass(frozen=True)
class Point:
    app: str
    field: str
    kind: Kind
    app_type: str


def points_of(apps: Sequence[tuple[str, str]]) -> list[Point]:
    """(name, type) of a sensor's apps -> its plant values, in the apps' order."""
    return [Point(name, f, kind, t) for name, t in apps for f, kind in FIELDS.get(t, ())]


class PlantState:
    """The current value of every point; `apply` takes each message the sensor writes and
    calls `on_change(point, value)` for each value it changed (on the writer's thread)."""

    def __init__(self, points: list[Point], on_change: Callable[[Point, int], None] | None = None) -> None:
        self.points = points
        self.values: dict[tuple[str, str], int] = {(p.app, p.field): 0 for p in points}
        self._by_key = {(p.app, p.field): p for p in points}
        self.on_change = on_change
        self._lock = threading.Lock()

    def apply(self, message: msgspec.Struct) -> None:
        for key, value in _updates(message):
            point = self._by_key.get(key)
            if point is None:
                continue
            with self._lock:
                if key == (point.app, "entered"):
                    value = self.values[key] + 1
                if self.values[key] == value:
                    continue
                self.values[key] = value
            if self.on_change is not None:
                self.on_change(point, value)

    def value(self, point: Point) -> int:
        return self.values[(point.app, point.field)]


def _updates(message: msgspec.Struct) -> list[tuple[tuple[str, str], int]]:
    if isinstance(message, Stop | Clear):
        return [((message.app, "stop"), int(isinstance(message, Stop)))]
    if isinstance(message, Crowded | CrowdCleared):
        return [((message.app, "crowded"), int(isinstance(message, Crowded)))]
    if isinstance(message, Count):
        return [((message.app, d), sum(message.totals.get(d, {}).values())) for d in ("in", "out")]
    if isinstance(message, ZoneEnter):
        return [((message.app, "occupancy"), message.occupancy), ((message.app, "entered"), 1)]
    if isinstance(message, ZoneLeave):
        return [((message.app, "occupancy"), message.occupancy)]
    return []


T = TypeVar("T")


class LoopThread:
    """An asyncio loop on a thread of its own: where the Modbus and OPC UA servers (asyncio
    libraries) run beside the sensor's threads, which hand them work with `run` or `submit`."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        """Run `coro` in the loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def submit(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run `coro` in the loop without waiting for it."""
        asyncio.run_coroutine_threadsafe(coro, self.loop)

    @property
    def closed(self) -> bool:
        return self.loop.is_closed()

    def stop(self) -> None:
        """Stop the loop and close it (idempotent)."""
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self.loop.close()
