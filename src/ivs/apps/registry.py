"""Every app type, registered by its own module: the settings it reads from a sensor's YAML
(`AppSettings`), the factory that builds it (`@register`), and, on the app class, its Home
Assistant entities (`AppBase.ha_entities`, `ha_states`). `ivs.config` builds the `apps:` schema
from here, `ivs.assemble` builds apps with `build_app`, the Home Assistant sink asks each app
for its entities: a new app is one module in `ivs/apps/` (plus docs). The messages it sends
are in `ivs.events`, which owns the wire schema every consumer decodes.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ivs.apps import App, FrameContext
from ivs.apps.schedule import Schedule, Scheduled, ScheduleSettings
from ivs.errors import ConfigError
from ivs.events import Event

if TYPE_CHECKING:
    from ivs.model import Model

Point = tuple[float, float]
ON, OFF = "ON", "OFF"


class AppSettings(BaseModel):
    """What every app's settings have; an app's module subclasses it with `type: Literal[...]`."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # no NaN or infinity (YAML's .nan)

    type: str = Field(description="The app's kind (each app's settings narrow it to their own name).")
    name: str = Field(description="This app's name in every event it sends.")
    coords: Literal["pixels", "normalized"] = Field(
        "pixels", description="Coordinates in pixels, or as fractions of the frame's width and height."
    )
    schedule: ScheduleSettings | None = Field(
        None, description="Active only in these time windows (default: always); outside them it sends nothing."
    )

    def class_names(self) -> list[str] | None:
        """The model labels this app counts (checked against the model's); None: all."""
        return None

    def points(self) -> list[tuple[str, int | None, Point]]:
        """(field, index in it or None, point) of every point that must lie on the frame."""
        return []

    def problems(self, has_classifier: bool) -> list[tuple[str, str]]:
        """(field, message) of what is wrong with these settings in a sensor (beyond the schema)."""
        return []


def three_points(cls: Any, v: list[Point]) -> list[Point]:
    """A polygon's validator: at least three corners."""
    if len(v) < 3:
        raise ValueError(f"a polygon needs at least 3 points, got {len(v)}")
    return v


class PolygonSettings(AppSettings):
    """What an app over an area has (zone, safety, crowding): its corners and the labels it counts."""

    polygon: list[Point] = Field(description="The zone's corners, in order.")
    classes: list[str] | None = Field(None, description="Labels that count (default: all).")

    _three_points = field_validator("polygon")(three_points)

    def class_names(self) -> list[str] | None:
        return self.classes

    def points(self) -> list[tuple[str, int | None, Point]]:
        return [("polygon", k, p) for k, p in enumerate(self.polygon)]


@dataclass(frozen=True)
class AppEnv:
    """What a factory may use: the model's labels, the frame size, the second-stage classifier."""

    labels: list[str]
    size: tuple[int, int]
    classifier: Model | None = None

    def class_ids(self, names: list[str] | None) -> set[int] | None:
        return None if names is None else {self.labels.index(n) for n in names}

    def scale(self, points: Sequence[Point], coords: str) -> list[Point]:
        """Points in frame pixels (normalized ones scaled by the frame size)."""
        if coords == "pixels":
            return list(points)
        return [(x * self.size[0], y * self.size[1]) for x, y in points]


@dataclass(frozen=True)
class Entity:
    """One Home Assistant entity an app offers: what it is and its state now."""

    component: Literal["sensor", "binary_sensor"]
    key: str
    """What the entity is about, within its app ("occupancy", "count_in", ...)."""
    name: str
    initial: str
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def sensor(cls, key: str, name: str, value: int, state_class: str) -> Entity:
        return cls("sensor", key, name, str(value), {"state_class": state_class})

    @classmethod
    def binary(cls, key: str, name: str, on: bool, device_class: str) -> Entity:
        extra = {"device_class": device_class, "payload_on": ON, "payload_off": OFF}
        return cls("binary_sensor", key, name, ON if on else OFF, extra)


class AppBase:
    """What an app does by default: reads tracks, has no summary, owes nothing at the end, and
    offers Home Assistant no entity."""

    name: str
    uses_tracks: ClassVar[bool] = True
    """False for an app that reads only `ctx.detections`: a sensor whose apps all say so runs no tracker."""

    def update(self, ctx: FrameContext) -> list[Event]:
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        return {}

    def finish(self, ctx: FrameContext | None) -> list[Event]:
        return []

    def ha_entities(self) -> list[Entity]:
        """Its Home Assistant entities, with their states now."""
        return []

    def ha_states(self, event: Event) -> dict[str, str]:
        """The entity states (by key) an event of this app changes."""
        return {}

    def describe(self, event: Event) -> str | None:
        """One human line for an event of this app (`ivs run`'s console); None: the generic one."""
        return None


S = TypeVar("S", bound=AppSettings)
Factory = Callable[[Any, AppEnv], App]


@dataclass(frozen=True)
class AppType:
    settings: type[AppSettings]
    build: Factory


_TYPES: dict[str, AppType] = {}
_loaded = False


def register(settings: type[S]) -> Callable[[Callable[[S, AppEnv], App]], Callable[[S, AppEnv], App]]:
    """Register an app type: its settings class (whose `type` Literal names it) and, decorated, its factory."""
    (name,) = get_args(settings.model_fields["type"].annotation)

    def decorate(factory: Callable[[S, AppEnv], App]) -> Callable[[S, AppEnv], App]:
        if name in _TYPES:
            raise ValueError(f"app type {name!r} registered twice")
        _TYPES[name] = AppType(settings, factory)
        return factory

    return decorate


def app_types() -> dict[str, AppType]:
    """Every registered app type by name; the first call imports every module in ivs/apps/
    (some may be imported already, by whoever uses one app directly: all are imported anyway)."""
    global _loaded
    if not _loaded:
        import ivs.apps as package

        for module in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"ivs.apps.{module.name}")
        _loaded = True
    return _TYPES


def build_app(settings: AppSettings, env: AppEnv) -> App:
    """The app a sensor's settings describe."""
    app_type = app_types().get(settings.type)
    if app_type is None or not isinstance(settings, app_type.settings):
        raise ConfigError(f"unknown app type {settings.type!r}: expected one of {', '.join(sorted(app_types()))}")
    app = app_type.build(settings, env)
    return Scheduled(app, Schedule.of(settings.schedule)) if settings.schedule is not None else app
