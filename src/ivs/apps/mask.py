"""Mask check: one yes/no ping per tracked face, decided over several frames.

Needs a face detector as the model and the `mask` classifier as the second stage
(`classify_with: mask`), which puts `mask.class_id` / `mask.confidence` on every face. Each
track collects one vote per frame; once it has `min_frames` votes and one answer has at
least `min_share` of them, the ping is sent, once per track.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field

from ivs.apps import App, FrameContext
from ivs.apps.registry import AppBase, AppEnv, AppSettings, Entity, register
from ivs.errors import ConfigError
from ivs.events import Event, MaskPing


@dataclass
class MaskCheck(AppBase):
    name: str
    classifier: str = "mask"
    mask_class: int = 0
    """The classifier's class id that means "wearing a mask"."""
    min_frames: int = 3
    min_share: float = 0.7
    totals: dict[str, int] = field(default_factory=lambda: {"mask": 0, "no_mask": 0})
    _votes: dict[int, list[bool]] = field(default_factory=dict)
    _done: set[int] = field(default_factory=set)

    def update(self, ctx: FrameContext) -> list[Event]:
        det = ctx.tracked
        key = f"{self.classifier}.class_id"
        if key not in det.data:
            raise ValueError(
                f"mask app {self.name!r}: detections carry no {key!r}: expected the "
                f"{self.classifier!r} classifier as the second stage (classify_with: {self.classifier})"
            )
        events: list[Event] = []
        for i in range(len(det)):
            tid, answer = int(det.tracker_id[i]), int(det.data[key][i])
            if tid in self._done or answer < 0:
                continue
            votes = self._votes.setdefault(tid, [])
            votes.append(answer == self.mask_class)
            if len(votes) < self.min_frames:
                continue
            share_mask = sum(votes) / len(votes)
            for verdict, share in ((True, share_mask), (False, 1 - share_mask)):
                if share >= self.min_share:
                    self._done.add(tid)
                    del self._votes[tid]
                    self.totals["mask" if verdict else "no_mask"] += 1
                    events.append(
                        MaskPing(
                            **ctx.event_fields(self.name),
                            track_id=tid,
                            mask=verdict,
                            score=round(share, 3),
                            frames=len(votes),
                            totals=dict(self.totals),
                        )
                    )
                    break
        return events

    def state(self) -> dict[str, Any]:
        return dict(self.totals)

    def ha_entities(self) -> list[Entity]:
        return [
            Entity.sensor("masks", "masks", self.totals.get("mask", 0), "total_increasing"),
            Entity.sensor("no_masks", "no masks", self.totals.get("no_mask", 0), "total_increasing"),
        ]

    def ha_states(self, event: Event) -> dict[str, str]:
        if not isinstance(event, MaskPing):
            return {}
        return {"masks": str(event.totals.get("mask", 0)), "no_masks": str(event.totals.get("no_mask", 0))}


class MaskSettings(AppSettings):
    type: Literal["mask"]
    classifier: str = Field("mask", description="Name of the second-stage classifier (model.classify_with).")
    mask_label: str = Field("mask", description="The classifier's label that means a mask is worn.")
    min_frames: int = Field(3, ge=1, description="Votes a face needs before its ping.")
    min_share: float = Field(0.7, gt=0.5, le=1, description="Share of votes the answer needs.")

    def problems(self, has_classifier: bool) -> list[tuple[str, str]]:
        if has_classifier:
            return []
        return [("type", "the mask app needs a second-stage classifier: set model.classify_with: mask")]


@register(MaskSettings)
def _build(s: MaskSettings, env: AppEnv) -> App:
    classifier = env.classifier
    if classifier is None or s.mask_label not in classifier.labels:
        raise ConfigError(f"mask app {s.name!r}: expected a second-stage classifier with label {s.mask_label!r}")
    return MaskCheck(s.name, classifier.manifest.name, classifier.labels.index(s.mask_label), s.min_frames,
                     s.min_share)  # fmt: skip
