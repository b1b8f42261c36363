"""Heatmap: where objects have been, as a coarse grid of counts (metadata, not pixels).

Every frame adds each tracked object's anchor point to its grid cell. Every `period_s`
seconds of source time (and at the end of the run) the grid since the last event is sent,
and `ivs heatmap` renders the events of a run to a PNG.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import Field

from ivs.apps import App, FrameContext
from ivs.apps.registry import AppBase, AppEnv, AppSettings, register
from ivs.events import Event, Heatmap
from ivs.geometry import Anchor, anchors


@dataclass
class HeatmapGrid(AppBase):
    name: str
    cols: int = 32
    rows: int = 24
    period_s: float = 60.0
    classes: set[int] | None = None
    anchor: Anchor = "bottom_center"
    _grid: npt.NDArray[np.int64] | None = None
    _frames: int = 0
    _since: float | None = None
    _last: FrameContext | None = field(default=None, repr=False)

    def update(self, ctx: FrameContext) -> list[Event]:
        if self._grid is None:
            self._grid = np.zeros((self.rows, self.cols), np.int64)
        if self._since is None:
            self._since = ctx.t_source
        det = ctx.tracked
        if self.classes is not None:
            det = det[np.isin(det.class_id, list(self.classes))]
        pts = anchors(det.xyxy, self.anchor)
        c = np.clip((pts[:, 0] * self.cols / ctx.width).astype(int), 0, self.cols - 1)
        r = np.clip((pts[:, 1] * self.rows / ctx.height).astype(int), 0, self.rows - 1)
        np.add.at(self._grid, (r, c), 1)
        self._frames += 1
        self._last = ctx
        if ctx.t_source - self._since >= self.period_s:
            return self._emit(ctx)
        return []

    def _emit(self, ctx: FrameContext) -> list[Event]:
        assert self._grid is not None
        event = Heatmap(
            **ctx.event_fields(self.name),
            cols=self.cols,
            rows=self.rows,
            width=ctx.width,
            height=ctx.height,
            counts=self._grid.ravel().tolist(),
            frames=self._frames,
        )
        self._grid[:] = 0
        self._frames, self._since = 0, ctx.t_source
        return [event]

    def state(self) -> dict[str, Any]:
        return {"frames": self._frames, "total": int(self._grid.sum()) if self._grid is not None else 0}

    def finish(self, ctx: FrameContext | None) -> list[Event]:
        last = ctx or self._last
        if last is None or self._frames == 0:
            return []
        return self._emit(last)


class HeatmapSettings(AppSettings):
    type: Literal["heatmap"]
    cols: int = Field(32, ge=1, le=512, description="Grid columns.")
    rows: int = Field(24, ge=1, le=512, description="Grid rows.")
    period_s: float = Field(60.0, gt=0, description="Send the grid this often (source seconds).")
    classes: list[str] | None = Field(None, description="Labels that count (default: all).")

    def class_names(self) -> list[str] | None:
        return self.classes


@register(HeatmapSettings)
def _build(s: HeatmapSettings, env: AppEnv) -> App:
    return HeatmapGrid(s.name, s.cols, s.rows, s.period_s, env.class_ids(s.classes))
