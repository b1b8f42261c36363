"""Schedules: an app active only in time windows (days, hours, a time zone).

Any app's settings take `schedule:`. Outside its windows the app sees no frames and sends
nothing; each change between active and inactive is a `schedule` event (and the first frame
says which it starts in). Windows are judged on the frame's wall-clock time in the schedule's
time zone (IANA names, e.g. Europe/Berlin; daylight saving included); a window whose end is
before its start runs past midnight, into the next day.

While inactive an app keeps its state: a safety zone that was stopped stays stopped (no
`clear` was sent, so the machine stays stopped, the safe side) and clears or stops again by
what it sees once active.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ivs.apps import App, FrameContext
from ivs.events import Event, ScheduleChange

Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _minutes(text: str) -> int:
    try:
        t = dt.time.fromisoformat(text)
    except ValueError:
        raise ValueError(f"time {text!r}: expected HH:MM (24-hour), e.g. 08:00") from None
    return t.hour * 60 + t.minute


class WindowSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    days: list[Day] = Field(list(DAYS), min_length=1, description="Days it starts on (mon ... sun; default every day).")
    start: str = Field(description="HH:MM it starts at.")
    end: str = Field(description="HH:MM it ends at (before `start`: the next day).")

    @field_validator("start", "end")
    @classmethod
    def _time(cls, v: str) -> str:
        _minutes(v)
        return v


class ScheduleSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timezone: str = Field("UTC", description="IANA time zone the windows are in (e.g. Europe/Berlin).")
    windows: list[WindowSettings] = Field(min_length=1, description="When the app is active.")

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            zoneinfo.ZoneInfo(v)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r}: expected an IANA name such as Europe/Berlin or UTC") from None
        return v


@dataclass(frozen=True)
class Window:
    days: frozenset[int]
    """Weekdays it starts on (0 = Monday)."""
    start: int
    end: int
    """Minutes after midnight."""
    text: str

    def contains(self, local: dt.datetime) -> bool:
        minute = local.hour * 60 + local.minute
        if self.start < self.end:
            return local.weekday() in self.days and self.start <= minute < self.end
        # past midnight: the evening of a listed day, or the morning after one
        return (local.weekday() in self.days and minute >= self.start) or (
            (local.weekday() - 1) % 7 in self.days and minute < self.end
        )


@dataclass(frozen=True)
class Schedule:
    zone: zoneinfo.ZoneInfo
    windows: tuple[Window, ...]

    @classmethod
    def of(cls, s: ScheduleSettings) -> Schedule:
        windows = []
        for w in s.windows:
            days = ",".join(w.days) if len(w.days) < 7 else "every day"
            windows.append(
                Window(frozenset(DAYS.index(d) for d in w.days), _minutes(w.start), _minutes(w.end),
                       f"{days} {w.start}-{w.end} {s.timezone}")
            )  # fmt: skip
        return cls(zoneinfo.ZoneInfo(s.timezone), tuple(windows))

    def window_at(self, wall_time: float) -> Window | None:
        """The window that wall-clock time (epoch seconds) is in, or None."""
        local = dt.datetime.fromtimestamp(wall_time, self.zone)
        return next((w for w in self.windows if w.contains(local)), None)


class Scheduled:
    """`app`, active only in `schedule`'s windows (see the module's docstring)."""

    def __init__(self, app: App, schedule: Schedule) -> None:
        self.app, self.schedule = app, schedule
        self.name = app.name
        self.active: bool | None = None

    @property
    def uses_tracks(self) -> bool:
        return bool(getattr(self.app, "uses_tracks", True))

    def update(self, ctx: FrameContext) -> list[Event]:
        window = self.schedule.window_at(ctx.time)
        events: list[Event] = []
        if (window is not None) != self.active:
            self.active = window is not None
            text = window.text if window is not None else None
            events.append(ScheduleChange(**ctx.event_fields(self.name), active=self.active, window=text))
        if self.active:
            events += self.app.update(ctx)
        return events

    def state(self) -> dict[str, Any]:
        return {**self.app.state(), "active": bool(self.active)}

    def finish(self, ctx: FrameContext | None) -> list[Event]:
        return self.app.finish(ctx) if self.active else []

    def __getattr__(self, name: str) -> Any:
        # what else the app offers (Home Assistant entities, describe, its settings) is its own
        return getattr(self.app, name)
